package policy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// Check reports what is wrong with a document's policy beyond its schema,
// all at once: names of the wrong shape, and every reference the policy
// makes to itself.
//
// Errors: a permission, role, resource or rule given twice; a permission
// parent, a role's permission or an admission rule's permission that is
// not declared; permissions that imply themselves in a cycle; an usher.*
// permission Usher does not check; an assignable role, creator role or
// admission rule role that the policy does not define; a creator role that
// is not bindable on its type; a resource listed before its parent.
//
// Warnings, which do not make the file invalid, are what may be right on
// a server but not in the file alone: a scope or parent the policy does not
// list (it may be registered already), and a resource type in bindable_on,
// a creator role, a quota, a default quota or an admission rule that
// nothing else in the policy names and that is a letter or two from one
// that something does (a misspelling, most likely; resource types are not
// declared, so a type named nowhere else may be one registered only at run
// time).
func Check(d *Document) Diagnostics {
	c := &checker{doc: d, p: d.Policy, declared: map[string]int{}, roles: map[string][]int{},
		listed: map[string]int{}, types: map[string]map[string]bool{}, warnedScope: map[string]bool{},
		suggested: map[[2]string]string{}}
	c.index()
	c.permissions()
	c.resources()
	c.roleDefs()
	c.creatorRoles()
	c.quotas()
	c.defaultQuotas()
	c.admissions()
	return c.diags
}

type checker struct {
	doc   *Document
	p     *usherv1.Policy
	diags Diagnostics

	declared map[string]int   // permission -> its first index
	roles    map[string][]int // role name -> the indexes of its definitions
	listed   map[string]int   // resource -> its first index
	// types holds where each resource type is named: "resources",
	// "scopes", "permissions" (usher.resources.create.TYPE), and each
	// field that names types.
	types       map[string]map[string]bool
	warnedScope map[string]bool
	// suggested memoizes didYouMean by what is named (permission or role)
	// and the name: a file's aliases may name one misspelling a million
	// times, and each suggestion measures every candidate, which
	// permNames and roleNames hold sorted once.
	suggested            map[[2]string]string
	permNames, roleNames []string
}

// maxSuggestions bounds the distinct names a check measures against the
// candidates for a "did you mean": past it, findings carry none.
const maxSuggestions = 1000

// suggest is didYouMean(name, *among), memoized, with *among sorted from
// set once, and bounded by maxSuggestions.
func suggest[V any](c *checker, what string, among *[]string, set map[string]V, name string) string {
	key := [2]string{what, name}
	if s, ok := c.suggested[key]; ok || len(c.suggested) >= maxSuggestions {
		return s
	}
	if *among == nil {
		*among = keys(set)
	}
	s := didYouMean(name, *among)
	c.suggested[key] = s
	return s
}

func (c *checker) suggestPermission(name string) string {
	return suggest(c, "permission", &c.permNames, c.declared, name)
}

func (c *checker) suggestRole(name string) string {
	return suggest(c, "role", &c.roleNames, c.roles, name)
}

// Where resource types are named, for types: a type is known when it is
// named somewhere other than the field being checked.
const (
	inResources   = "resources"
	inScopes      = "scopes"
	inPermissions = "permissions"
	inBindable    = "bindable_on"
	inCreators    = "creator_roles"
	inQuotas      = "quotas"
	inDefaults    = "default_quotas"
	inAdmissions  = "admissions"
)

func (c *checker) index() {
	for i, perm := range c.p.GetPermissions() {
		if _, dup := c.declared[perm.GetName()]; !dup {
			c.declared[perm.GetName()] = i
		}
		if typ, ok := authz.NarrowedType(perm.GetName()); ok {
			c.namesType(typ, inPermissions)
		}
	}
	for i, r := range c.p.GetResources() {
		if _, dup := c.listed[r.GetName()]; !dup {
			c.listed[r.GetName()] = i
		}
		c.namesType(authz.TypeOf(r.GetName()), inResources)
		if r.GetParent() != "" {
			c.namesType(authz.TypeOf(r.GetParent()), inResources)
		}
	}
	for i, r := range c.p.GetRoles() {
		c.roles[r.GetName()] = append(c.roles[r.GetName()], i)
		c.namesType(authz.TypeOf(r.GetScope()), inScopes)
		for _, t := range r.GetBindableOn() {
			c.namesType(t, inBindable)
		}
	}
	for _, cr := range c.p.GetCreatorRoles() {
		c.namesType(cr.GetResourceType(), inCreators)
	}
	for _, q := range c.p.GetQuotas() {
		c.namesType(authz.TypeOf(q.GetScope()), inScopes)
		c.namesType(q.GetResourceType(), inQuotas)
	}
	for _, d := range c.p.GetDefaultQuotas() {
		c.namesType(d.GetScopeType(), inDefaults)
		c.namesType(d.GetResourceType(), inDefaults)
	}
	for _, a := range c.p.GetAdmissions() {
		if a.GetScope() != "" {
			c.namesType(authz.TypeOf(a.GetScope()), inScopes)
		}
		c.namesType(a.GetResourceType(), inAdmissions)
	}
}

func (c *checker) namesType(typ, where string) {
	// root, the scope of most roles, is a resource and no type of them:
	// no misspelt type (room) is taken for it.
	if typ == "" || typ == authz.RootName {
		return
	}
	if c.types[typ] == nil {
		c.types[typ] = map[string]bool{}
	}
	c.types[typ][where] = true
}

// report adds a finding about the value at path: `"VALUE": reason`.
func (c *checker) report(path, value string, warning bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if value != "" {
		msg = fmt.Sprintf("%q: %s", value, msg)
	}
	c.diags = append(c.diags, c.doc.Diagnose(path, warning, "%s", msg))
}

func (c *checker) errorf(path, value, format string, args ...any) {
	c.report(path, value, false, format, args...)
}

func (c *checker) warnf(path, value, format string, args ...any) {
	c.report(path, value, true, format, args...)
}

// shape reports a malformed name, as authz's validators judge it; it
// reports whether the name was well formed.
func (c *checker) shape(err error) bool {
	if err == nil {
		return true
	}
	var e *authz.Error
	if !errors.As(err, &e) {
		c.diags = append(c.diags, c.doc.Diagnose("", false, "%v", err))
		return false
	}
	c.errorf(e.Field, e.Value, "%s", e.Reason)
	return false
}

// line says where an earlier entry is, for "given twice" messages.
func (c *checker) line(path string) string {
	if p := c.doc.Position(path); p.Line > 0 {
		return fmt.Sprintf(" (first at line %d)", p.Line)
	}
	return ""
}

// didYouMean suggests the nearest of candidates to a misspelt name.
func didYouMean(name string, candidates []string) string {
	if s := closest(name, candidates); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (c *checker) permissions() {
	for i, perm := range c.p.GetPermissions() {
		path := fmt.Sprintf("permissions[%d]", i)
		name := perm.GetName()
		if c.shape(authz.ValidatePermission(path+".name", name)) {
			if narrowed, ok := strings.CutPrefix(name, authz.PermBlocksWrite+"."); ok {
				if _, declared := c.declared[narrowed]; !declared || authz.IsReserved(narrowed) {
					c.errorf(path+".name", name, "usher.blocks.write may be narrowed only to a permission the policy declares (usher.blocks.write.send-audio), and %q is not one%s",
						narrowed, c.suggestPermission(narrowed))
				}
			} else if _, ok := authz.NarrowedType(name); authz.IsReserved(name) && !ok && !slices.Contains(authz.ReservedNames, name) {
				if s := didYouMean(name, authz.ReservedNames); s != "" {
					c.errorf(path+".name", name, "Usher checks no permission of this name%s", s)
				} else {
					c.errorf(path+".name", name, "Usher checks no permission of this name; its own are %s, the last three optionally narrowed to a resource type (usher.resources.create.room)",
						strings.Join(authz.ReservedNames, ", "))
				}
			}
		}
		if first := c.declared[name]; first != i {
			c.errorf(path+".name", name, "permission is declared twice%s", c.line(fmt.Sprintf("permissions[%d]", first)))
		}
		for j, parent := range perm.GetParents() {
			ppath := fmt.Sprintf("%s.parents[%d]", path, j)
			if !c.shape(authz.ValidatePermission(ppath, parent)) {
				continue
			}
			if _, ok := c.declared[parent]; !ok && !c.doc.broken["permissions"] {
				c.errorf(ppath, parent, "parent is not declared in the policy%s", c.suggestPermission(parent))
			}
		}
	}
	c.permissionCycles()
}

// permissionCycles reports each cycle of the permission tree once, at the
// parent that closes it.
func (c *checker) permissionCycles() {
	perms := c.p.GetPermissions()
	state := make([]uint8, len(perms)) // 0 unvisited, 1 on the path, 2 done
	var path []string
	var visit func(i int)
	visit = func(i int) {
		state[i] = 1
		path = append(path, perms[i].GetName())
		for j, parent := range perms[i].GetParents() {
			pi, ok := c.declared[parent]
			if !ok {
				continue
			}
			switch state[pi] {
			case 0:
				visit(pi)
			case 1:
				cycle := path[slices.Index(path, parent):]
				var b strings.Builder
				for k, name := range cycle {
					if k > 0 {
						b.WriteString(", which is below ")
					}
					b.WriteString(name)
				}
				c.errorf(fmt.Sprintf("permissions[%d].parents[%d]", i, j), parent,
					"permissions imply themselves in a cycle: %s, which is below %s", b.String(), parent)
			}
		}
		path = path[:len(path)-1]
		state[i] = 2
	}
	for i := range perms {
		if state[i] == 0 && c.declared[perms[i].GetName()] == i {
			visit(i)
		}
	}
}

func (c *checker) resources() {
	for i, r := range c.p.GetResources() {
		path := fmt.Sprintf("resources[%d]", i)
		name := r.GetName()
		if c.shape(authz.ValidateResource(path+".name", name)) && name == authz.RootName {
			c.errorf(path+".name", name, "root is reserved and always registered")
		}
		if first := c.listed[name]; first != i {
			c.errorf(path+".name", name, "resource is listed twice%s", c.line(fmt.Sprintf("resources[%d]", first)))
		}
		if parent := r.GetParent(); parent != "" && parent != authz.RootName && c.shape(authz.ValidateResource(path+".parent", parent)) {
			switch at, ok := c.listed[parent]; {
			case parent == name:
				c.errorf(path+".parent", parent, "a resource cannot be its own parent")
			case ok && at > i:
				c.errorf(path+".parent", parent, "parent is listed after the resource%s; list parents first",
					strings.Replace(c.line(fmt.Sprintf("resources[%d]", at)), "first ", "", 1))
			case !ok:
				c.unlisted(path+".parent", parent)
			}
		}
		if r.GetCreator() != "" {
			c.shape(authz.ValidateSubject(path+".creator", r.GetCreator()))
		}
		if st := r.GetStartTime(); st != nil && st.AsTime().IsZero() {
			// Given, it would read as none.
			c.errorf(path+".start_time", st.AsTime().Format(time.RFC3339Nano), "a start time is after the Unix epoch; leave it unset for none")
		} else if st != nil {
			c.shape(authz.ValidateStart(path+".start_time", st.AsTime()))
		}
	}
}

// unlisted warns, once per resource, of a scope or parent the policy does
// not list.
func (c *checker) unlisted(path, resource string) {
	if resource == "" || resource == authz.RootName || c.warnedScope[resource] || c.doc.broken["resources"] {
		return
	}
	if _, ok := c.listed[resource]; ok {
		return
	}
	c.warnedScope[resource] = true
	c.warnf(path, resource, "resource is not listed in the policy; applying the policy needs it registered already")
}

// scope checks a role's, quota's or rule's scope.
func (c *checker) scope(path, scope string) {
	if c.shape(authz.ValidateResource(path, scope)) {
		c.unlisted(path, scope)
	}
}

// knownType warns of a resource type that only the field where names and
// that is a letter or two away from a type named elsewhere: a misspelling.
// A type named nowhere else is not reported otherwise, for resources of
// that type may be registered only at run time (accounts, say).
func (c *checker) knownType(path, typ, where string) {
	if !c.shape(authz.ValidateType(path, typ)) || typ == authz.RootName {
		return
	}
	for w := range c.types[typ] {
		if w != where {
			return
		}
	}
	// A type counts as named when something other than this field's kind
	// or a bindable_on names it: bindable_on is where misspellings are
	// looked for, not evidence of a type.
	var named []string
	for t, wheres := range c.types {
		for w := range wheres {
			if t != typ && w != where && w != inBindable {
				named = append(named, t)
				break
			}
		}
	}
	if s := closest(typ, named); s != "" {
		c.warnf(path, typ, "nothing else in the policy names this resource type; did you mean %q?", s)
	}
}

// role checks a reference to a role by name.
func (c *checker) role(path, name string) bool {
	if !c.shape(authz.ValidateRoleName(path, name)) {
		return false
	}
	if len(c.roles[name]) == 0 {
		if c.doc.broken["roles"] {
			return false // it may be among the roles that could not be read
		}
		c.errorf(path, name, "role is not defined in the policy%s", c.suggestRole(name))
		return false
	}
	return true
}

// permission checks a reference to a permission.
func (c *checker) permission(path, name string) {
	if !c.shape(authz.ValidatePermission(path, name)) {
		return
	}
	if _, ok := c.declared[name]; !ok && !c.doc.broken["permissions"] {
		c.errorf(path, name, "permission is not declared in the policy%s", c.suggestPermission(name))
	}
}

func (c *checker) roleDefs() {
	seen := map[[2]string]int{}
	for i, r := range c.p.GetRoles() {
		path := fmt.Sprintf("roles[%d]", i)
		c.shape(authz.ValidateRoleName(path+".name", r.GetName()))
		scope := r.GetScope()
		c.scope(path+".scope", scope)
		key := [2]string{scope, r.GetName()}
		if first, dup := seen[key]; dup {
			c.errorf(path+".name", r.GetName(), "role is defined twice at %q%s", scope, c.line(fmt.Sprintf("roles[%d]", first)))
		} else {
			seen[key] = i
		}
		for j, perm := range r.GetPermissions() {
			if perm != authz.Wildcard {
				c.permission(fmt.Sprintf("%s.permissions[%d]", path, j), perm)
			}
		}
		for j, a := range r.GetAssignableRoles() {
			if a != authz.Wildcard {
				c.role(fmt.Sprintf("%s.assignable_roles[%d]", path, j), a)
			}
		}
		for j, t := range r.GetBindableOn() {
			c.knownType(fmt.Sprintf("%s.bindable_on[%d]", path, j), t, inBindable)
		}
	}
}

func (c *checker) creatorRoles() {
	seen := map[string]int{}
	for i, cr := range c.p.GetCreatorRoles() {
		path := fmt.Sprintf("creator_roles[%d]", i)
		typ := cr.GetResourceType()
		c.knownType(path+".resource_type", typ, inCreators)
		if first, dup := seen[typ]; dup {
			c.errorf(path+".resource_type", typ, "resource type has two creator roles%s", c.line(fmt.Sprintf("creator_roles[%d]", first)))
		} else {
			seen[typ] = i
		}
		if !c.role(path+".role", cr.GetRole()) {
			continue
		}
		// Registering a resource as an actor grants its creator role on it
		// in the same write; a role that cannot be bound there fails it.
		var where []string
		bindable := false
		for _, j := range c.roles[cr.GetRole()] {
			def := c.p.GetRoles()[j]
			if len(def.GetBindableOn()) == 0 || slices.Contains(def.GetBindableOn(), typ) {
				bindable = true
				break
			}
			where = append(where, fmt.Sprintf("%v at %s", def.GetBindableOn(), def.GetScope()))
		}
		if !bindable {
			c.errorf(path+".role", cr.GetRole(), "role may not be granted on %s resources (bindable_on %s), so registering one as an actor would fail",
				typ, strings.Join(where, ", "))
		}
	}
}

func (c *checker) quotas() {
	seen := map[[3]string]int{}
	for i, q := range c.p.GetQuotas() {
		path := fmt.Sprintf("quotas[%d]", i)
		c.scope(path+".scope", q.GetScope())
		c.knownType(path+".resource_type", q.GetResourceType(), inQuotas)
		if q.GetSubject() != "" {
			c.shape(authz.ValidateSubject(path+".subject", q.GetSubject()))
		}
		key := [3]string{q.GetScope(), q.GetResourceType(), q.GetSubject()}
		if first, dup := seen[key]; dup {
			c.errorf(path+".resource_type", q.GetResourceType(), "quota is listed twice for scope %q and subject %q%s",
				q.GetScope(), q.GetSubject(), c.line(fmt.Sprintf("quotas[%d]", first)))
		} else {
			seen[key] = i
		}
	}
}

func (c *checker) defaultQuotas() {
	seen := map[[2]string]int{}
	for i, d := range c.p.GetDefaultQuotas() {
		path := fmt.Sprintf("default_quotas[%d]", i)
		c.knownType(path+".scope_type", d.GetScopeType(), inDefaults)
		c.knownType(path+".resource_type", d.GetResourceType(), inDefaults)
		key := [2]string{d.GetScopeType(), d.GetResourceType()}
		if first, dup := seen[key]; dup {
			c.errorf(path+".resource_type", d.GetResourceType(), "default quota is listed twice for scope type %q%s",
				d.GetScopeType(), c.line(fmt.Sprintf("default_quotas[%d]", first)))
		} else {
			seen[key] = i
		}
	}
}

func (c *checker) admissions() {
	seen := map[[2]string]int{}
	for i, a := range c.p.GetAdmissions() {
		path := fmt.Sprintf("admissions[%d]", i)
		if faults := admissionFaults(path, AdmissionToAuthz(a)); len(faults) > 0 {
			// A rule's faults hide none of the names it gets wrong
			// elsewhere; a field at fault is reported once.
			skip := map[string]bool{}
			for _, err := range faults {
				c.shape(err)
				if e := (*authz.Error)(nil); errors.As(err, &e) {
					skip[e.Field] = true
				}
			}
			c.references(path, a, skip)
			continue
		}
		scope := a.GetScope()
		if scope == "" {
			scope = authz.RootName
		}
		c.unlisted(path+".scope", scope)
		c.knownType(path+".resource_type", a.GetResourceType(), inAdmissions)
		key := [2]string{scope, a.GetResourceType()}
		if first, dup := seen[key]; dup {
			c.errorf(path+".resource_type", a.GetResourceType(), "admission rule is listed twice for scope %q%s",
				scope, c.line(fmt.Sprintf("admissions[%d]", first)))
		} else {
			seen[key] = i
		}
		c.references(path, a, nil)
		if rec := a.GetLivekit().GetRoomRecord(); rec != "" {
			c.warnf(path+".livekit.room_record", rec, "LiveKit checks roomRecord against no room: a token that carries it lets its bearer start and stop the egress of every room of the LiveKit server; map it only where each holder of %s may record every room there, or start recordings from the platform's backend", rec)
		}
	}
}

// admissionFaults is every fault authz.ValidateAdmission finds in the rule
// at path, not only the first it stops at: each field at fault is given a
// value of the right shape, or cleared, and the rule judged again.
func admissionFaults(path string, a authz.Admission) []error {
	var out []error
	seen := map[string]bool{}
	for {
		err := authz.ValidateAdmission(path, a)
		if err == nil {
			return out
		}
		out = append(out, err)
		var e *authz.Error
		if !errors.As(err, &e) || seen[e.Field] || !repairAdmission(&a, strings.TrimPrefix(e.Field, path+"."), e.Value) {
			return out
		}
		seen[e.Field] = true
	}
}

// standIn is a permission or role name of the right shape, put in the
// place of one at fault.
const standIn = "x"

// repairAdmission sets field of a, at fault with value, to what judges
// well, and reports whether it knows the field. The rule's lists and
// mappings are copied before they are changed: they are the message's.
func repairAdmission(a *authz.Admission, field, value string) bool {
	list := func(s []string, name string) ([]string, bool) {
		if field == name {
			return slices.Clone(s[:min(len(s), authz.MaxRuleRoles)]), true
		}
		var i int
		if _, err := fmt.Sscanf(strings.TrimPrefix(field, name), "[%d]", &i); err != nil || i < 0 || i >= len(s) {
			return s, false
		}
		s = slices.Clone(s)
		s[i] = standIn
		return s, true
	}
	switch field {
	case "scope":
		a.Scope = ""
	case "resource_type":
		a.ResourceType = standIn
	case "join_permission":
		a.Join = standIn
	case "backstage_permission":
		a.Backstage = ""
	case "stage_permission":
		a.Stage = ""
	case "lease":
		a.Lease = 0
	case "join_ahead":
		a.JoinAhead = 0
	case "max_participants":
		a.MaxParticipants = 0
	default:
		var ok bool
		switch {
		case strings.HasPrefix(field, "exclusive_permissions"):
			a.ExclusivePermissions, ok = list(a.ExclusivePermissions, "exclusive_permissions")
		case strings.HasPrefix(field, "uncounted_roles"):
			a.UncountedRoles, ok = list(a.UncountedRoles, "uncounted_roles")
		case strings.HasPrefix(field, "exclusive_roles"):
			a.ExclusiveRoles, ok = list(a.ExclusiveRoles, "exclusive_roles")
		case strings.HasPrefix(field, "lobby.") && a.Lobby != nil:
			l := *a.Lobby
			ok = true
			switch field {
			case "lobby.admit_permission":
				l.Admit = standIn
			case "lobby.admit_role":
				l.Role = standIn
			case "lobby.bypass_permission":
				l.Bypass = ""
			default:
				ok = false
			}
			a.Lobby = &l
		case strings.HasPrefix(field, "livekit.") && a.Media != nil:
			m := *a.Media
			m.CanPublishSources = maps.Clone(m.CanPublishSources)
			ok = true
			switch name := strings.TrimPrefix(field, "livekit."); name {
			case "room_join":
				m.RoomJoin = standIn
			case "can_publish":
				m.CanPublish = ""
			case "can_subscribe":
				m.CanSubscribe = ""
			case "can_publish_data":
				m.CanPublishData = ""
			case "room_admin":
				m.RoomAdmin = ""
			case "room_record":
				m.RoomRecord = ""
			case "hidden":
				m.Hidden = ""
			case "can_publish_sources":
				delete(m.CanPublishSources, value)
			default:
				src, found := strings.CutPrefix(name, "can_publish_sources.")
				delete(m.CanPublishSources, src)
				ok = found
			}
			a.Media = &m
		}
		return ok
	}
	return true
}

// references checks the permissions and roles an admission rule at path
// names, but for those at the paths in skip.
func (c *checker) references(path string, a *usherv1.Admission, skip map[string]bool) {
	for _, f := range admissionPermissions(a) {
		if p := path + "." + f[0]; !skip[p] {
			c.permission(p, f[1])
		}
	}
	for _, f := range admissionRoles(a) {
		if p := path + "." + f[0]; !skip[p] {
			c.role(p, f[1])
		}
	}
}

// admissionPermissions lists the permissions an admission rule names, each
// with its field's path within the rule.
func admissionPermissions(a *usherv1.Admission) [][2]string {
	var out [][2]string
	add := func(field, perm string) {
		if perm != "" {
			out = append(out, [2]string{field, perm})
		}
	}
	add("join_permission", a.GetJoinPermission())
	add("backstage_permission", a.GetBackstagePermission())
	add("stage_permission", a.GetStagePermission())
	if l := a.GetLobby(); l != nil {
		add("lobby.admit_permission", l.GetAdmitPermission())
		add("lobby.bypass_permission", l.GetBypassPermission())
	}
	for j, p := range a.GetExclusivePermissions() {
		add(fmt.Sprintf("exclusive_permissions[%d]", j), p)
	}
	if m := a.GetLivekit(); m != nil {
		add("livekit.room_join", m.GetRoomJoin())
		add("livekit.can_publish", m.GetCanPublish())
		for _, src := range keys(m.GetCanPublishSources()) {
			for _, perm := range authz.MediaPermissions(m.GetCanPublishSources()[src]) {
				add("livekit.can_publish_sources."+src, perm)
			}
		}
		add("livekit.can_subscribe", m.GetCanSubscribe())
		add("livekit.can_publish_data", m.GetCanPublishData())
		for _, perm := range authz.MediaPermissions(m.GetRoomAdmin()) {
			add("livekit.room_admin", perm)
		}
		for _, perm := range authz.MediaPermissions(m.GetRoomRecord()) {
			add("livekit.room_record", perm)
		}
		add("livekit.hidden", m.GetHidden())
	}
	return out
}

// admissionRoles lists the roles an admission rule names.
func admissionRoles(a *usherv1.Admission) [][2]string {
	var out [][2]string
	if l := a.GetLobby(); l != nil && l.GetAdmitRole() != "" {
		out = append(out, [2]string{"lobby.admit_role", l.GetAdmitRole()})
	}
	for j, r := range a.GetUncountedRoles() {
		out = append(out, [2]string{fmt.Sprintf("uncounted_roles[%d]", j), r})
	}
	for j, r := range a.GetExclusiveRoles() {
		out = append(out, [2]string{fmt.Sprintf("exclusive_roles[%d]", j), r})
	}
	return out
}
