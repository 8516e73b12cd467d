package authz

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
)

// ApplyOptions change what ApplyPolicy does.
type ApplyOptions struct {
	// Prune removes what the policy does not list: creator roles, default
	// quotas, and the role definitions, quotas and admission rules at the
	// scopes the policy manages, which are root and the resources it lists.
	// What is defined on other resources (an account's custom roles, the
	// quotas of its plan) is left alone, as are resources, grants and
	// blocks, and a quota that its scope's type's default quota gives it.
	// A role that would leave grants with no definition is not
	// pruned: the policy is refused (FailedPrecondition), naming the grants.
	Prune bool
	// DryRun plans and validates the policy and reports what it would
	// change, writing nothing.
	DryRun bool
}

// ApplyPolicy makes the permission catalog exactly p's and puts p's
// resources (in order, so parents come first), roles, creator roles, quotas
// and default quotas, in one write. Without Prune, what p does not list is
// left alone, so roles and blocks already stored must name only permissions p
// declares. The write is held to these rules a write of its parts would
// be: quotas, the depth of the tree, no grant left without a definition of
// its role, and no creator role or lobby naming a role defined nowhere;
// not to the max_holders and bindable_on of the roles it redefines, which
// the README says. It returns the changes it made (or, dry, would make);
// applying a policy already in force writes nothing and returns none. A policy is the
// platform's, as admission rules are: an actor may not apply one
// (PermissionDenied), for it rewrites the catalog every scope shares.
func (e *Engine) ApplyPolicy(ctx context.Context, by Author, p Policy, opts ApplyOptions) (Revision, []Change, error) {
	if by.Actor != "" {
		return 0, nil, platformOnlyError(by.Actor, "may not apply a policy: policies are the platform's, written on the caller's own authority; omit actor")
	}
	var changes []Change
	rev, err := e.write(ctx, by, func(pl *plan) error {
		cs, err := pl.x.planPolicy(p, opts, pl.now, pl.guard)
		if err != nil {
			return err
		}
		// A dry run writes nothing, so the limits write would check are
		// checked here; a write checks them itself.
		if opts.DryRun {
			if err := pl.scopeLimits(cs); err != nil {
				return err
			}
		}
		// A policy reads nearly everything: it is planned on a quiet world.
		pl.guard(keyCatalog, keyRoles, keyTree)
		for _, c := range cs {
			pl.change(c)
			for _, k := range pl.x.touches(c) {
				pl.guard(k)
			}
			switch c.Op {
			case OpPutRole:
				// Nor a delete of the resource it is defined on.
				pl.guard(resourceKey(c.Role.Scope))
			case OpPutAdmission:
				pl.guard(resourceKey(c.Admission.Scope))
			case OpDeleteRole:
				// No grant of the role may commit meanwhile: it would be
				// left with no definition.
				pl.guard(holdersKey(c.Role.Name))
			case OpDeletePermission:
				// Nor a block naming the permission.
				pl.guard(keyBlocks)
			}
		}
		changes = cs
		if opts.DryRun {
			// Nor does it commit: what the backend would refuse as too
			// large to commit at once is refused here.
			if err := e.fits(pl); err != nil {
				return err
			}
			pl.changes = nil
		}
		return nil
	})
	return rev, changes, err
}

// policyView is the tree and roles as a policy being planned leaves them:
// the index with the policy's resources and role definitions laid over it.
type policyView struct {
	x        *Index
	parents  map[string]string          // resource -> parent, for resources the policy puts
	children map[string]map[string]bool // parent -> the resources the policy puts under it
	roles    map[[2]string]*Role
	// guard records what the policy's checks read beyond what its
	// changes touch: the holders and quotas along the paths of the
	// resources it places.
	guard func(keys ...string)
	// looked counts the grants policyOrphans has looked at, and walked
	// the resources it has walked past: what its search for orphans cost.
	looked, walked int
	now            int64 // the write's instant
}

// place puts name under parent in the view.
func (v *policyView) place(name, parent string) {
	if old, ok := v.parents[name]; ok {
		delete(v.children[old], name)
	}
	v.parents[name] = parent
	if v.children[parent] == nil {
		v.children[parent] = map[string]bool{}
	}
	v.children[parent][name] = true
}

// height is how many levels name's subtree spans below it in the view, as
// the policy's resources placed so far leave it; a walk that finds it past
// limit stops there and returns more than limit.
func (v *policyView) height(name string, limit int) int {
	h := 0
	below := func(child string) bool {
		if limit == 0 {
			h = 1
		} else {
			h = max(h, 1+v.height(child, limit-1))
		}
		return h > limit
	}
	if id := v.x.lookupNode(name); id != noNode {
		for c := v.x.nodes[id].first; c != noNode; c = v.x.nodes[c].next {
			// A child the policy placed is counted where it placed it.
			if child := v.x.name(c); !v.moved(child) && below(child) {
				return h
			}
		}
	}
	for child := range v.children[name] {
		if below(child) {
			return h
		}
	}
	return h
}

func (v *policyView) parentOf(name string) (string, bool) {
	if p, ok := v.parents[name]; ok {
		return p, true
	}
	if id := v.x.lookupNode(name); id != noNode {
		if v.x.nodes[id].parent == noNode {
			return "", true
		}
		return v.x.name(v.x.nodes[id].parent), true
	}
	return "", false
}

// moved reports whether the policy already places name.
func (v *policyView) moved(name string) bool {
	_, ok := v.parents[name]
	return ok
}

func (v *policyView) exists(name string) bool {
	_, ok := v.parentOf(name)
	return ok
}

// resolve finds the definition of role that applies at name in the view.
func (v *policyView) resolve(name, role string) bool {
	for a, ok := name, true; ok && a != ""; a, ok = v.parentOf(a) {
		if d, changed := v.roles[[2]string{a, role}]; changed {
			if d != nil {
				return true
			}
		} else if id := v.x.lookupNode(a); id != noNode {
			if r := v.x.roleID(role); r != noName && v.x.roleDefs[roleKey(id, r)] != nil {
				return true
			}
		}
	}
	return false
}

func (v *policyView) depth(name string) int {
	d := 0
	for a, ok := v.parentOf(name); ok && a != ""; a, ok = v.parentOf(a) {
		d++
	}
	return d
}

func (x *Index) planPolicy(p Policy, opts ApplyOptions, now int64, guard func(keys ...string)) ([]Change, error) {
	perms := make([]Permission, len(p.Permissions))
	seen := map[string]bool{}
	for i, perm := range p.Permissions {
		if seen[perm.Name] {
			return nil, errorf(Invalid, fmt.Sprintf("policy.permissions[%d].name", i), perm.Name, "permission is declared twice")
		}
		seen[perm.Name] = true
		perm.Parents = sortedSet(perm.Parents)
		perms[i] = perm
	}
	for i, perm := range p.Permissions {
		if !checkedByUsher(perm.Name, func(name string) bool { return seen[name] }) {
			return nil, errorf(Invalid, fmt.Sprintf("policy.permissions[%d].name", i), perm.Name,
				"Usher checks no permission of this name; its own are %s, the resource ones optionally narrowed to a resource type (usher.resources.create.room) and usher.blocks.write to a permission the policy declares (usher.blocks.write.send-audio)",
				strings.Join(ReservedNames, ", "))
		}
		for j, parent := range perm.Parents {
			if !seen[parent] {
				return nil, errorf(Invalid, fmt.Sprintf("policy.permissions[%d].parents[%d]", i, j), parent, "parent is not declared in the policy").as(KindUndeclaredPermission)
			}
		}
	}
	cat, err := newCatalog(perms, "policy.permissions")
	if err != nil {
		return nil, err
	}
	var changes []Change
	for _, perm := range cat.perms {
		if i := x.cat.id(perm.Name); i >= 0 && samePermission(x.cat.perms[i], perm) {
			continue
		}
		changes = append(changes, Change{Op: OpPutPermission, Permission: &perm})
	}
	for _, old := range x.cat.perms {
		if cat.id(old.Name) < 0 {
			changes = append(changes, Change{Op: OpDeletePermission, Permission: &Permission{Name: old.Name}})
		}
	}

	v := &policyView{x: x, parents: map[string]string{}, children: map[string]map[string]bool{}, roles: map[[2]string]*Role{}, guard: guard, now: now}
	var placed []string             // resources the policy registers or moves, in order
	creators := map[string]string{} // who the policy says registered the resources it registers
	for i, r := range p.Resources {
		field := fmt.Sprintf("policy.resources[%d]", i)
		if r.Parent == "" {
			r.Parent = RootName
		}
		if r.Name == RootName {
			return nil, errorf(Invalid, field+".name", r.Name, "root is reserved and always registered")
		}
		if err := checkStart(field+".start_time", r.StartsAt); err != nil {
			return nil, err
		}
		if !v.exists(r.Parent) {
			return nil, errorf(NotFound, field+".parent", r.Parent, "resource is neither registered nor listed before %q", r.Name).as(KindResourceNotFound)
		}
		for a, ok := r.Parent, true; ok && a != ""; a, ok = v.parentOf(a) {
			if a == r.Name {
				return nil, errorf(FailedPrecondition, field+".parent", r.Parent,
					"moving %q under %q would form a cycle: the parent is the resource itself or below it", r.Name, r.Parent).as(KindCycle)
			}
		}
		cur, known := v.parentOf(r.Name)
		if known && cur == r.Parent {
			if id := x.lookupNode(r.Name); id != noNode && !v.moved(r.Name) && !x.sameStage(id, r) {
				r.Creator = x.creatorName(id)
				changes = append(changes, Change{Op: OpPutResource, Resource: &r})
			}
			continue
		}
		// Each resource placed keeps the tree within MaxDepth as the
		// resources before it left it, counting what earlier entries
		// placed below it: so every walk up the view stays short, and the
		// tree the policy leaves is within it too.
		d := v.depth(r.Parent) + 1
		if d > MaxDepth {
			return nil, errorf(ResourceExhausted, field+".parent", r.Parent,
				"a resource under %q would be %d levels deep; the tree may be at most %d deep", r.Parent, d, MaxDepth).as(KindMaxDepth).limited(MaxDepth)
		}
		if h := v.height(r.Name, MaxDepth-d); d+h > MaxDepth {
			return nil, errorf(ResourceExhausted, field+".parent", r.Parent,
				"moving %q under %q would make the tree %d or more levels deep; it may be at most %d deep", r.Name, r.Parent, d+h, MaxDepth).as(KindMaxDepth).limited(MaxDepth)
		}
		if id := x.lookupNode(r.Name); id != noNode {
			if c := x.nodes[id].creator; c != 0 {
				r.Creator = x.subj.name(c - 1) // a move keeps who registered it
			}
		}
		if id := x.lookupNode(r.Name); id != noNode && r.StartsAt.IsZero() && !r.Live {
			r = x.withStage(id, r) // a move keeps the stage, unless the policy sets one
		}
		v.place(r.Name, r.Parent)
		placed = append(placed, r.Name)
		if x.lookupNode(r.Name) == noNode {
			creators[r.Name] = r.Creator
		}
		move := Change{Op: OpPutResource, Resource: &r}
		if known {
			move.PreviousParent = cur // it leaves cur
		}
		changes = append(changes, move)
	}
	changes = x.dropResourceRoundTrips(changes)

	// The scopes the policy manages: root and the resources it lists. Prune
	// removes only what is defined there; roles, quotas and rules defined on
	// resources registered at run time (an account's custom roles, its
	// plan's quotas) are the platform's data, not the policy's.
	managed := map[string]bool{RootName: true}
	for _, r := range p.Resources {
		managed[r.Name] = true
	}

	listed := map[[2]string]bool{}
	for i, r := range p.Roles {
		field := fmt.Sprintf("policy.roles[%d]", i)
		asked := r.Permissions // errors index the policy's list, not the sorted one
		r = normalizeRole(r)
		key := [2]string{r.Scope, r.Name}
		if listed[key] {
			return nil, errorf(Invalid, field+".name", r.Name, "role is defined twice at %q", r.Scope)
		}
		listed[key] = true
		if !v.exists(r.Scope) {
			return nil, errorf(NotFound, field+".scope", r.Scope, "resource is neither registered nor listed in the policy").as(KindResourceNotFound)
		}
		if j := cat.undeclared(asked, true); j >= 0 {
			return nil, errorf(Invalid, fmt.Sprintf("%s.permissions[%d]", field, j), asked[j], "permission is not declared in the policy").as(KindUndeclaredPermission)
		}
		v.roles[key] = &r
		if id := x.lookupNode(r.Scope); id != noNode {
			if role := x.roleID(r.Name); role != noName {
				if old := x.roleDefs[roleKey(id, role)]; old != nil && sameRole(old.Role, r) {
					continue
				}
			}
		}
		changes = append(changes, Change{Op: OpPutRole, Role: &r})
	}
	if opts.Prune {
		for _, k := range x.sortedRoleKeys() {
			d := x.roleDefs[k]
			key := [2]string{d.Scope, d.Name}
			if !listed[key] && managed[d.Scope] {
				v.roles[key] = nil
				changes = append(changes, Change{Op: OpDeleteRole, Role: &Role{Name: d.Name, Scope: d.Scope}})
			}
		}
	}

	creatorTypes := map[string]bool{}
	for i, c := range p.CreatorRoles {
		if creatorTypes[c.ResourceType] {
			return nil, errorf(Invalid, fmt.Sprintf("policy.creator_roles[%d].resource_type", i), c.ResourceType,
				"resource type has two creator roles")
		}
		creatorTypes[c.ResourceType] = true
		if x.creators[c.ResourceType] != c.Role {
			changes = append(changes, Change{Op: OpPutCreatorRole, CreatorRole: &CreatorRole{ResourceType: c.ResourceType, Role: c.Role}})
		}
	}
	if opts.Prune {
		for _, typ := range sortedKeys(x.creators) {
			if !creatorTypes[typ] {
				changes = append(changes, Change{Op: OpDeleteCreatorRole, CreatorRole: &CreatorRole{ResourceType: typ, Role: x.creators[typ]}})
			}
		}
	}

	defaults := map[[2]string]bool{}
	for i, d := range p.DefaultQuotas {
		key := [2]string{d.ScopeType, d.ResourceType}
		if defaults[key] {
			return nil, errorf(Invalid, fmt.Sprintf("policy.default_quotas[%d].resource_type", i), d.ResourceType,
				"default quota is listed twice for scope type %q", d.ScopeType)
		}
		defaults[key] = true
		if slices.Contains(x.defaultQuotas[d.ScopeType], d) {
			continue
		}
		changes = append(changes, Change{Op: OpPutDefaultQuota, DefaultQuota: &d})
	}
	if opts.Prune {
		for _, typ := range sortedKeys(x.defaultQuotas) {
			for _, d := range x.defaultQuotas[typ] {
				if !defaults[[2]string{d.ScopeType, d.ResourceType}] {
					changes = append(changes, Change{Op: OpDeleteDefaultQuota, DefaultQuota: &DefaultQuota{ScopeType: d.ScopeType, ResourceType: d.ResourceType}})
				}
			}
		}
	}

	rules := map[[2]string]bool{}
	for i, a := range p.Admissions {
		field := fmt.Sprintf("policy.admissions[%d]", i)
		if err := ValidateAdmission(field, a); err != nil {
			return nil, err
		}
		asked := a // errors index the policy's lists, not the sorted ones
		a = normalizeAdmission(a)
		key := [2]string{a.Scope, a.ResourceType}
		if rules[key] {
			return nil, errorf(Invalid, field+".resource_type", a.ResourceType, "admission rule is listed twice for scope %q", a.Scope)
		}
		rules[key] = true
		if !v.exists(a.Scope) {
			return nil, errorf(NotFound, field+".scope", a.Scope, "resource is neither registered nor listed in the policy").as(KindResourceNotFound)
		}
		if f, perm := asked.undeclaredIn(cat); f != "" {
			return nil, errorf(Invalid, field+"."+f, perm, "permission is not declared in the policy").as(KindUndeclaredPermission)
		}
		if id := x.lookupNode(a.Scope); id != noNode {
			if old := x.admissions[a.ResourceType][id]; old != nil && sameAdmission(*old, a) {
				continue
			}
		}
		changes = append(changes, Change{Op: OpPutAdmission, Admission: &a})
	}
	for _, old := range x.allAdmissions() {
		if rules[[2]string{old.Scope, old.ResourceType}] {
			continue
		}
		if opts.Prune && managed[old.Scope] {
			changes = append(changes, Change{Op: OpDeleteAdmission, Admission: &Admission{Scope: old.Scope, ResourceType: old.ResourceType}})
			continue
		}
		if f, perm := old.undeclaredIn(cat); f != "" {
			return nil, errorf(Invalid, "policy.permissions", perm,
				"permission is missing from the policy but named by %s of the admission rule for %s at %q", f, old.ResourceType, old.Scope).as(KindPermissionInUse)
		}
	}

	quotas := map[Quota]Quota{} // key fields -> the policy's quota, for the quota check below
	for i, q := range p.Quotas {
		field := fmt.Sprintf("policy.quotas[%d]", i)
		key := Quota{Scope: q.Scope, ResourceType: q.ResourceType, Subject: q.Subject}
		if _, dup := quotas[key]; dup {
			return nil, errorf(Invalid, field+".resource_type", q.ResourceType, "quota is listed twice for scope %q and subject %q", q.Scope, q.Subject)
		}
		quotas[key] = q
		if !v.exists(q.Scope) {
			return nil, errorf(NotFound, field+".scope", q.Scope, "resource is neither registered nor listed in the policy").as(KindResourceNotFound)
		}
		if id := x.lookupNode(q.Scope); id != noNode {
			if old, ok := x.quotaAt(id, q.ResourceType, q.Subject); ok && old == q {
				continue
			}
		}
		changes = append(changes, Change{Op: OpPutQuota, Quota: &q})
	}
	if opts.Prune {
		// A quota of a type that its scope's type has a default quota for,
		// in the policy, is the policy's own whatever its limit now:
		// registering the scope gave it, a plan may have changed it since,
		// and removing it would leave the scope with no limit at all.
		// Judged by the policy's defaults alone, not those it prunes, so
		// that applying the policy again removes nothing more.
		isDefault := func(q Quota) bool {
			typ := TypeOf(q.Scope)
			return q.Subject == "" && slices.ContainsFunc(p.DefaultQuotas, func(d DefaultQuota) bool {
				return d.ScopeType == typ && d.ResourceType == q.ResourceType
			})
		}
		for _, scope := range x.sortedQuotaScopes() {
			for _, q := range x.quotas[scope] {
				key := Quota{Scope: q.Scope, ResourceType: q.ResourceType, Subject: q.Subject}
				if _, ok := quotas[key]; !ok && managed[q.Scope] && !isDefault(q) {
					quotas[key] = Quota{} // removed: no limit
					changes = append(changes, Change{Op: OpDeleteQuota, Quota: &key})
				}
			}
		}
	}

	// What the policy leaves alone must still make sense under its catalog.
	for _, k := range x.sortedRoleKeys() {
		d := x.roleDefs[k]
		if _, changed := v.roles[[2]string{d.Scope, d.Name}]; changed {
			continue
		}
		if j := cat.undeclared(d.Permissions, true); j >= 0 {
			return nil, errorf(Invalid, "policy.permissions", d.Permissions[j],
				"permission is missing from the policy but named by role %q at %q", d.Name, d.Scope).as(KindPermissionInUse)
		}
	}
	for _, list := range x.blocks {
		for _, b := range list {
			if j := cat.undeclared(b.Permissions, false); j >= 0 {
				return nil, errorf(Invalid, "policy.permissions", b.Permissions[j],
					"permission is missing from the policy but named by the block of %q on %q", b.Subject, b.Resource).as(KindPermissionInUse)
			}
		}
	}
	if err := x.policyRoleNames(p, opts, v, rules, creatorTypes, managed); err != nil {
		return nil, err
	}
	if err := x.policyOrphans(v, placed); err != nil {
		return nil, err
	}
	if err := x.policyQuotas(v, placed, creators, quotas); err != nil {
		return nil, err
	}
	return changes, nil
}

// policyRoleNames refuses a policy that would leave a creator role, or the
// admit_role of an admission rule's lobby, naming a role defined nowhere:
// no actor could register a resource of that type, and no Admit let
// anyone in. Those the policy lists are INVALID_ARGUMENT, as a policy
// file's check finds them; those it leaves alone, whose role it prunes,
// are ROLE_IN_USE.
func (x *Index) policyRoleNames(p Policy, opts ApplyOptions, v *policyView, rules map[[2]string]bool, creatorTypes, managed map[string]bool) error {
	defined := func(name string) bool {
		for key, d := range v.roles {
			if key[1] == name && d != nil {
				return true
			}
		}
		if r := x.roleID(name); r != noName {
			for _, s := range x.roleScopes[r] {
				if d, changed := v.roles[[2]string{x.name(s), name}]; !changed || d != nil {
					return true
				}
			}
		}
		return false
	}
	for i, c := range p.CreatorRoles {
		if !defined(c.Role) {
			return errorf(Invalid, fmt.Sprintf("policy.creator_roles[%d].role", i), c.Role, "role is defined neither in the policy nor on the server").as(KindRoleNotFound)
		}
	}
	for i, a := range p.Admissions {
		if a.Lobby != nil && a.Lobby.Role != "" && !defined(a.Lobby.Role) {
			return errorf(Invalid, fmt.Sprintf("policy.admissions[%d].lobby.admit_role", i), a.Lobby.Role, "role is defined neither in the policy nor on the server").as(KindRoleNotFound)
		}
	}
	for _, typ := range sortedKeys(x.creators) {
		if role := x.creators[typ]; !creatorTypes[typ] && !opts.Prune && !defined(role) {
			return errorf(FailedPrecondition, "policy.roles", role,
				"role is missing from the policy but named by the creator role of %s", typ).as(KindRoleInUse)
		}
	}
	for _, a := range x.allAdmissions() {
		if rules[[2]string{a.Scope, a.ResourceType}] || (opts.Prune && managed[a.Scope]) {
			continue
		}
		if a.Lobby != nil && a.Lobby.Role != "" && !defined(a.Lobby.Role) {
			return errorf(FailedPrecondition, "policy.roles", a.Lobby.Role,
				"role is missing from the policy but named by the admission rule for %s at %q, as its lobby's admit_role", a.ResourceType, a.Scope).as(KindRoleInUse)
		}
	}
	return nil
}

// policyOrphans refuses a policy that would leave a grant with no
// definition of its role: one whose definition the policy prunes, or below a
// resource the policy moves away from its definition. The refusal names
// every such role and the grants that hold it, so that one reading tells
// what to revoke.
func (x *Index) policyOrphans(v *policyView, placed []string) error {
	var (
		roles  []string            // in the order found
		grants map[string][]string // role -> "subject on resource"
		seen   = map[[3]uint32]bool{}
		total  int
	)
	grants = map[string][]string{}
	// orphaned records the grants of role on at if the role would resolve
	// nowhere at res once the policy is applied.
	orphaned := func(res, at, role uint32) {
		holders := x.holdersOf(at, role)
		v.looked += len(holders)
		if len(holders) == 0 {
			return // nothing to orphan: no need to resolve anything
		}
		name, roleName := x.name(res), x.roleNames[role]
		if x.resolveAt(res, role) == nil || v.resolve(name, roleName) {
			return
		}
		for _, g := range holders {
			if key := [3]uint32{role, g.subj, at}; !seen[key] {
				seen[key] = true
				if len(grants[roleName]) == 0 {
					roles = append(roles, roleName)
				}
				grants[roleName] = append(grants[roleName], fmt.Sprintf("%s on %s%s", x.subj.name(g.subj), x.name(at), expiredNote(g.exp, v.now)))
				total++
			}
		}
	}
	pruned := map[uint32][]uint32{} // scope -> the roles pruned there that someone holds
	for key, d := range v.roles {
		if d != nil {
			continue
		}
		scope, role := x.lookupNode(key[0]), x.roleID(key[1])
		if scope == noNode || role == noName || x.roleHolders[role] == 0 {
			continue
		}
		pruned[scope] = append(pruned[scope], role)
		// A holder above the scope resolves at the scope too.
		for a := x.nodes[scope].parent; a != noNode; a = x.nodes[a].parent {
			orphaned(scope, a, role)
		}
	}
	// One walk of each scope, whatever the number of roles pruned there:
	// it costs the resources and grants below, not those times the roles.
	for scope, roles := range pruned {
		sorted := sortedUnique(roles)
		set := make(map[uint32]bool, len(sorted))
		for _, r := range sorted {
			set[r] = true
		}
		x.walk(scope, func(n uint32) bool {
			v.walked++
			last := noName
			holdersOfAny(x, n, sorted, set, func(g resourceGrant) {
				if g.role != last {
					last = g.role
					orphaned(n, n, g.role)
				}
			})
			return true
		})
	}
	walked := map[string]bool{}
	for _, name := range placed {
		id := x.lookupNode(name)
		if id == noNode || walked[name] {
			continue // listed again: where the policy leaves it is judged once
		}
		walked[name] = true
		// A grant below it of a role defined above it, committed
		// meanwhile, would be orphaned too.
		for a := x.nodes[id].parent; a != noNode; a = x.nodes[a].parent {
			for _, role := range x.rolesAt[a] {
				v.guard(holdersKey(x.roleNames[role]))
			}
		}
		x.walk(id, func(n uint32) bool {
			// The grants on n come by role: one look at a role's
			// holders finds them all.
			list := x.byResource.get(n)
			for i, g := range list {
				if i == 0 || list[i-1].role != g.role {
					orphaned(n, n, g.role)
				}
			}
			return true
		})
	}
	if total == 0 {
		return nil
	}
	slices.Sort(roles)
	const shown = 5 // grants named per role
	parts := make([]string, len(roles))
	for i, r := range roles {
		list := grants[r]
		slices.Sort(list)
		held := strings.Join(list[:min(len(list), shown)], ", ")
		if len(list) > shown {
			held += fmt.Sprintf(" and %d more", len(list)-shown)
		}
		parts[i] = fmt.Sprintf("%q, held by %s", r, held)
	}
	grantsText := fmt.Sprintf("%d grants", total)
	if total == 1 {
		grantsText = "1 grant"
	}
	e := errorf(FailedPrecondition, "policy.roles", roles[0],
		"the policy would leave %s with no definition of their role: %s; revoke them first or keep the roles",
		grantsText, strings.Join(parts, "; ")).as(KindRoleInUse)
	e.Meta = map[string]string{"roles": strings.Join(roles, ","), "grants": fmt.Sprint(total)}
	return e
}

// policyQuotas refuses a policy whose resources would take a quota past its
// limit, counting the quotas as the policy leaves them. creators names who
// registered each resource the policy registers, as quotas naming a subject
// count them.
func (x *Index) policyQuotas(v *policyView, placed []string, creators map[string]string, quotas map[Quota]Quota) error {
	limit := func(scope, typ, subject string) (uint32, bool) {
		if q, ok := quotas[Quota{Scope: scope, ResourceType: typ, Subject: subject}]; ok {
			// Counted against a quota that is not set yet, what is
			// registered below meanwhile touches no quota key.
			v.guard(subtreeKey(scope))
			return q.Limit, q != Quota{}
		}
		if id := x.lookupNode(scope); id != noNode {
			if q, ok := x.quotaAt(id, typ, subject); ok {
				return q.Limit, true
			}
		}
		return 0, false
	}
	used := func(scope, typ, subject string) int {
		if id := x.lookupNode(scope); id != noNode {
			return x.used(Quota{Scope: scope, ResourceType: typ, Subject: subject})
		}
		return 0
	}
	// delta is what the policy does to each quota's count, as it leaves
	// the tree: what it places below a scope, less what it moves out from
	// below one; the write is one, so only where it ends is judged.
	delta := map[Quota]int{}
	var counted []Quota // delta's keys, in the order they were first counted
	count := func(scope string, add placement, sign int) {
		for key, n := range add {
			if _, ok := limit(scope, key[0], key[1]); !ok {
				continue
			}
			k := Quota{Scope: scope, ResourceType: key[0], Subject: key[1]}
			if _, seen := delta[k]; !seen {
				counted = append(counted, k)
			}
			delta[k] += sign * n
		}
	}
	for _, name := range placed {
		var add placement
		oldAncestors := map[string]bool{}
		if id := x.lookupNode(name); id != noNode {
			add = x.placementOf(id)
			for a := x.nodes[id].parent; a != noNode; a = x.nodes[a].parent {
				oldAncestors[x.name(a)] = true
			}
		} else {
			add = placement{}
			add.add(TypeOf(name), creators[name])
		}
		newAncestors := map[string]bool{}
		for a, ok := v.parentOf(name); ok && a != ""; a, ok = v.parentOf(a) {
			newAncestors[a] = true
			if oldAncestors[a] {
				continue
			}
			// Where no quota is set, none may be set meanwhile either.
			v.guard(quotaScopeKey(a))
			count(a, add, 1)
		}
		for _, a := range sortedKeys(oldAncestors) {
			if !newAncestors[a] {
				count(a, add, -1) // moved out from below a
			}
		}
	}
	for _, k := range counted {
		max, _ := limit(k.Scope, k.ResourceType, k.Subject)
		if u := used(k.Scope, k.ResourceType, k.Subject) + delta[k]; delta[k] > 0 && u > int(max) {
			whose := ""
			if k.Subject != "" {
				whose = fmt.Sprintf(" registered by %q", k.Subject)
			}
			e := errorf(ResourceExhausted, "quota", fmt.Sprintf("%s/%s", k.Scope, k.ResourceType),
				"the policy would put %d %s resources%s below %q, where at most %d may exist", u, k.ResourceType, whose, k.Scope, max).as(KindQuotaExceeded)
			e.Meta = map[string]string{"scope": k.Scope, "resource_type": k.ResourceType, "limit": fmt.Sprint(max), "used": fmt.Sprint(u)}
			if k.Subject != "" {
				e.Meta["subject"] = k.Subject
			}
			return e
		}
	}
	return nil
}

// dropResourceRoundTrips removes the resource changes of a policy that
// registers a resource and then moves it back where it already is: when
// every resource they touch ends under the parent it has now, they change
// nothing, and applying the policy again must write nothing.
func (x *Index) dropResourceRoundTrips(changes []Change) []Change {
	final := map[string]Resource{}
	for _, c := range changes {
		if c.Op == OpPutResource {
			final[c.Resource.Name] = *c.Resource
		}
	}
	for name, r := range final {
		id := x.lookupNode(name)
		if id == noNode || x.nodes[id].parent == noNode || x.name(x.nodes[id].parent) != r.Parent || !x.sameStage(id, r) {
			return changes
		}
	}
	return slices.DeleteFunc(changes, func(c Change) bool { return c.Op == OpPutResource })
}

// sameStage reports whether r's stage is id's; a policy resource without a
// stage leaves the stage alone.
func (x *Index) sameStage(id uint32, r Resource) bool {
	if r.StartsAt.IsZero() && !r.Live {
		return true
	}
	cur := x.withStage(id, Resource{})
	return cur.StartsAt.Equal(r.StartsAt) && cur.Live == r.Live
}

func samePermission(a, b Permission) bool {
	return a.Name == b.Name && a.Description == b.Description && slices.Equal(a.Parents, b.Parents)
}

func (x *Index) sortedRoleKeys() []uint64 {
	keys := make([]uint64, 0, len(x.roleDefs))
	for k := range x.roleDefs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b uint64) int {
		da, db := x.roleDefs[a], x.roleDefs[b]
		return cmp.Or(strings.Compare(da.Scope, db.Scope), strings.Compare(da.Name, db.Name))
	})
	return keys
}

func (x *Index) sortedQuotaScopes() []uint32 {
	scopes := make([]uint32, 0, len(x.quotas))
	for s := range x.quotas {
		scopes = append(scopes, s)
	}
	slices.SortFunc(scopes, func(a, b uint32) int { return strings.Compare(x.name(a), x.name(b)) })
	return scopes
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
