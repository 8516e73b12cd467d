package authz

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// The bounds of an Admission rule.
const (
	DefaultLease = 30 * time.Second
	MinLease     = time.Second
	MaxLease     = 24 * time.Hour
	MaxJoinAhead = 7 * 24 * time.Hour
	// MaxParticipants bounds max_participants: sessions are held in memory.
	MaxParticipants = 1_000_000
	// MaxRuleRoles bounds uncounted_roles, exclusive_roles,
	// exclusive_permissions and the permissions a LiveKit mapping's
	// room_admin, room_record and can_publish_sources list.
	MaxRuleRoles = 64
)

// mediaSources are the LiveKit track sources a MediaMapping may name.
var mediaSources = []string{"camera", "microphone", "screen_share", "screen_share_audio"}

// IsMediaSource reports whether name is a LiveKit track source a
// MediaMapping may name.
func IsMediaSource(name string) bool { return slices.Contains(mediaSources, name) }

// ValidateAdmission checks the shape of a: names well formed, durations
// within bounds, the lobby complete. Whether its permissions are declared
// and its scope registered is the write's to check. field prefixes the
// field names of errors, e.g. "policy.admissions[2]".
func ValidateAdmission(field string, a Admission) error {
	if field != "" {
		field += "."
	}
	if a.Scope != "" && a.Scope != RootName {
		if err := ValidateResource(field+"scope", a.Scope); err != nil {
			return err
		}
	}
	if err := ValidateType(field+"resource_type", a.ResourceType); err != nil {
		return err
	}
	if a.Join == "" {
		return errorf(Invalid, field+"join_permission", "", "an admission rule must name the permission that joins")
	}
	perms := []struct{ name, value string }{
		{"join_permission", a.Join}, {"backstage_permission", a.Backstage}, {"stage_permission", a.Stage},
	}
	if l := a.Lobby; l != nil {
		if l.Admit == "" {
			return errorf(Invalid, field+"lobby.admit_permission", "", "a lobby must name the permission that admits")
		}
		if l.Role == "" {
			return errorf(Invalid, field+"lobby.admit_role", "", "a lobby must name the role an admission grants")
		}
		if err := ValidateRoleName(field+"lobby.admit_role", l.Role); err != nil {
			return err
		}
		perms = append(perms, struct{ name, value string }{"lobby.admit_permission", l.Admit},
			struct{ name, value string }{"lobby.bypass_permission", l.Bypass})
	}
	for _, p := range perms {
		if p.value == "" {
			continue
		}
		if err := ValidatePermission(field+p.name, p.value); err != nil {
			return err
		}
		// What let a participant in is read from its capabilities when it
		// joined, which a mute since does not take it out by.
		if by := p.name != "join_permission" && p.name != "stage_permission"; by && IsReserved(p.value) {
			return errorf(Invalid, field+p.name, p.value,
				"a participant's session keeps the capabilities it joined with, which say whether it came in backstage or past the lobby by this permission; Usher's reserved permissions (%s*) are none of them", ReservedPrefix)
		}
	}
	if len(a.ExclusivePermissions) > MaxRuleRoles {
		return errorf(Invalid, field+"exclusive_permissions", fmt.Sprint(len(a.ExclusivePermissions)), "at most %d permissions", MaxRuleRoles)
	}
	for i, p := range a.ExclusivePermissions {
		if err := ValidatePermission(fmt.Sprintf("%sexclusive_permissions[%d]", field, i), p); err != nil {
			return err
		}
	}
	if a.MaxParticipants > MaxParticipants {
		return errorf(Invalid, field+"max_participants", fmt.Sprint(a.MaxParticipants),
			"at most %d participants; 0 for no limit", MaxParticipants)
	}
	for _, list := range []struct {
		name  string
		roles []string
	}{{"uncounted_roles", a.UncountedRoles}, {"exclusive_roles", a.ExclusiveRoles}} {
		if len(list.roles) > MaxRuleRoles {
			return errorf(Invalid, field+list.name, fmt.Sprint(len(list.roles)), "at most %d roles", MaxRuleRoles)
		}
		for i, r := range list.roles {
			if err := ValidateRoleName(fmt.Sprintf("%s%s[%d]", field, list.name, i), r); err != nil {
				return err
			}
		}
	}
	if a.Lease != 0 && (a.Lease < MinLease || a.Lease > MaxLease) {
		return errorf(Invalid, field+"lease", a.Lease.String(), "a lease is from %s to %s; unset for %s", MinLease, MaxLease, DefaultLease)
	}
	if a.JoinAhead < 0 || a.JoinAhead > MaxJoinAhead {
		return errorf(Invalid, field+"join_ahead", a.JoinAhead.String(), "from 0 to %s", MaxJoinAhead)
	}
	if m := a.Media; m != nil {
		if m.RoomJoin == "" {
			return errorf(Invalid, field+"livekit.room_join", "", "a LiveKit mapping must name the permission that gives roomJoin")
		}
		single := []struct{ name, value string }{
			{"room_join", m.RoomJoin}, {"can_publish", m.CanPublish}, {"can_subscribe", m.CanSubscribe},
			{"can_publish_data", m.CanPublishData}, {"hidden", m.Hidden},
		}
		for _, f := range single {
			if f.value == "" {
				continue
			}
			if err := validateMediaPermission(field+"livekit."+f.name, f.value); err != nil {
				return err
			}
		}
		for _, f := range []struct{ name, value string }{{"room_admin", m.RoomAdmin}, {"room_record", m.RoomRecord}} {
			if err := validateMediaList(field+"livekit."+f.name, f.value); err != nil {
				return err
			}
		}
		for _, src := range slices.Sorted(maps.Keys(m.CanPublishSources)) {
			f := field + "livekit.can_publish_sources." + src
			if !slices.Contains(mediaSources, src) {
				return errorf(Invalid, field+"livekit.can_publish_sources", src, "not a LiveKit track source; one of %v", mediaSources)
			}
			// A source names at least one permission.
			if perms := m.CanPublishSources[src]; perms == "" {
				return validateMediaPermission(f, perms)
			} else if err := validateMediaList(f, perms); err != nil {
				return err
			}
		}
	}
	return nil
}

// validateMediaList checks a LiveKit mapping's value that names one
// permission, or several separated by commas (MediaPermissions); "" names
// none. It is counted before it is split: every Join and every change a
// WatchCall reports reads the list again.
func validateMediaList(field, value string) error {
	if n := strings.Count(value, ",") + 1; value != "" && n > MaxRuleRoles {
		return errorf(Invalid, field, fmt.Sprint(n), "at most %d permissions", MaxRuleRoles)
	}
	for _, perm := range MediaPermissions(value) {
		if err := validateMediaPermission(field, perm); err != nil {
			return err
		}
	}
	return nil
}

// validateMediaPermission checks a permission a LiveKit mapping names. The
// mapping reads a participant's capabilities, which Usher's reserved
// permissions are not part of: one of them would never be found held, and
// its field never given.
func validateMediaPermission(field, perm string) error {
	if err := ValidatePermission(field, perm); err != nil {
		return err
	}
	if IsReserved(perm) {
		return errorf(Invalid, field, perm, "a LiveKit mapping names capabilities, and Usher's reserved permissions (%s*) are none of a participant's capabilities", ReservedPrefix)
	}
	return nil
}

// LeaseOf is the rule's lease, its default when unset.
func (a *Admission) LeaseOf() time.Duration {
	if a.Lease == 0 {
		return DefaultLease
	}
	return a.Lease
}

// permissions lists every permission a names, with the field naming each.
func (a *Admission) permissions() [][2]string {
	out := [][2]string{{"join_permission", a.Join}, {"backstage_permission", a.Backstage}, {"stage_permission", a.Stage}}
	if l := a.Lobby; l != nil {
		out = append(out, [2]string{"lobby.admit_permission", l.Admit}, [2]string{"lobby.bypass_permission", l.Bypass})
	}
	for i, p := range a.ExclusivePermissions {
		out = append(out, [2]string{fmt.Sprintf("exclusive_permissions[%d]", i), p})
	}
	if m := a.Media; m != nil {
		out = append(out, [2]string{"livekit.room_join", m.RoomJoin}, [2]string{"livekit.can_publish", m.CanPublish},
			[2]string{"livekit.can_subscribe", m.CanSubscribe}, [2]string{"livekit.can_publish_data", m.CanPublishData},
			[2]string{"livekit.hidden", m.Hidden})
		for _, perm := range MediaPermissions(m.RoomAdmin) {
			out = append(out, [2]string{"livekit.room_admin", perm})
		}
		for _, perm := range MediaPermissions(m.RoomRecord) {
			out = append(out, [2]string{"livekit.room_record", perm})
		}
		for _, src := range slices.Sorted(maps.Keys(m.CanPublishSources)) {
			for _, perm := range MediaPermissions(m.CanPublishSources[src]) {
				out = append(out, [2]string{"livekit.can_publish_sources." + src, perm})
			}
		}
	}
	return slices.DeleteFunc(out, func(p [2]string) bool { return p[1] == "" })
}

// normalizeAdmission gives a the form the index keeps: root for an empty
// scope, role lists sorted without repeats, the lease's default spelled out
// as unset.
func normalizeAdmission(a Admission) Admission {
	if a.Scope == "" {
		a.Scope = RootName
	}
	a.UncountedRoles = sortedSet(a.UncountedRoles)
	a.ExclusiveRoles = sortedSet(a.ExclusiveRoles)
	a.ExclusivePermissions = sortedSet(a.ExclusivePermissions)
	if a.Lease == DefaultLease {
		a.Lease = 0
	}
	if a.Lobby != nil {
		l := *a.Lobby
		a.Lobby = &l
	}
	if a.Media != nil {
		m := *a.Media
		m.CanPublishSources = maps.Clone(m.CanPublishSources)
		if len(m.CanPublishSources) == 0 {
			m.CanPublishSources = nil
		}
		a.Media = &m
	}
	return a
}

func sameAdmission(a, b Admission) bool {
	a, b = normalizeAdmission(a), normalizeAdmission(b)
	sameLobby := (a.Lobby == nil) == (b.Lobby == nil) && (a.Lobby == nil || *a.Lobby == *b.Lobby)
	return sameLobby && SameMedia(a.Media, b.Media) && a.Scope == b.Scope && a.ResourceType == b.ResourceType &&
		a.Join == b.Join && a.Backstage == b.Backstage && a.RequireLive == b.RequireLive &&
		a.JoinAhead == b.JoinAhead && a.Stage == b.Stage && a.MaxParticipants == b.MaxParticipants &&
		slices.Equal(a.UncountedRoles, b.UncountedRoles) && slices.Equal(a.ExclusiveRoles, b.ExclusiveRoles) &&
		slices.Equal(a.ExclusivePermissions, b.ExclusivePermissions) &&
		a.Lease == b.Lease
}

// SameMedia reports whether a and b map capabilities to LiveKit's grant
// alike; nil is no mapping. A rule written anew holds a mapping of its own,
// even where it maps as the one it replaces did.
func SameMedia(a, b *MediaMapping) bool {
	if a == nil || b == nil {
		return a == b
	}
	ma, mb := *a, *b
	same := maps.Equal(ma.CanPublishSources, mb.CanPublishSources)
	ma.CanPublishSources, mb.CanPublishSources = nil, nil
	return same && ma.RoomJoin == mb.RoomJoin && ma.CanPublish == mb.CanPublish &&
		ma.CanSubscribe == mb.CanSubscribe && ma.CanPublishData == mb.CanPublishData &&
		ma.RoomAdmin == mb.RoomAdmin && ma.RoomRecord == mb.RoomRecord && ma.Hidden == mb.Hidden
}

// undeclaredIn returns the field and permission of the first permission a
// names that cat does not declare.
func (a *Admission) undeclaredIn(cat *catalog) (string, string) {
	for _, p := range a.permissions() {
		if cat.id(p[1]) < 0 {
			return p[0], p[1]
		}
	}
	return "", ""
}

func (x *Index) putAdmission(a Admission) {
	a = normalizeAdmission(a)
	scope := x.lookupNode(a.Scope)
	if scope == noNode {
		return
	}
	byScope := x.admissions[a.ResourceType]
	if byScope == nil {
		byScope = map[uint32]*Admission{}
		x.admissions[a.ResourceType] = byScope
	}
	byScope[scope] = &a
}

func (x *Index) deleteAdmission(scope, typ string) {
	if scope == "" {
		scope = RootName
	}
	id := x.lookupNode(scope)
	if byScope := x.admissions[typ]; byScope != nil && id != noNode {
		delete(byScope, id)
		if len(byScope) == 0 {
			delete(x.admissions, typ)
		}
	}
}

// admissionsAt returns the rules whose scope is id, sorted by type.
func (x *Index) admissionsAt(id uint32) []Admission {
	var out []Admission
	for _, typ := range sortedKeys(x.admissions) {
		if a := x.admissions[typ][id]; a != nil {
			out = append(out, *a)
		}
	}
	return out
}

// Admissions returns every admission rule in force, by scope name and type.
func (x *Index) Admissions() []Admission { return x.allAdmissions() }

// allAdmissions returns every rule, by scope name and type.
func (x *Index) allAdmissions() []Admission {
	var out []Admission
	for _, typ := range sortedKeys(x.admissions) {
		for _, a := range x.admissions[typ] {
			out = append(out, *a)
		}
	}
	slices.SortFunc(out, func(a, b Admission) int {
		return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.ResourceType, b.ResourceType))
	})
	return out
}

// admissionOn returns the rule that governs path[0]: the one for its type
// at the nearest scope on path.
func (x *Index) admissionOn(path []uint32) *Admission {
	if len(path) == 0 {
		return nil
	}
	return x.admissionFor(x.typeName(path[0]), path)
}

// admissionFor returns the rule for resources of typ at the nearest scope
// on path.
func (x *Index) admissionFor(typ string, path []uint32) *Admission {
	r, _ := x.admissionAt(typ, path)
	return r
}

// admissionAt is admissionFor, with where on path the rule is.
func (x *Index) admissionAt(typ string, path []uint32) (*Admission, int) {
	byScope := x.admissions[typ]
	if len(byScope) == 0 {
		return nil, -1
	}
	for i, a := range path {
		if r := byScope[a]; r != nil {
			return r, i
		}
	}
	return nil, -1
}

// stage is a call's schedule: StartsAt and Live of its Resource.
type stage struct {
	startsAt int64
	live     bool
}

func (x *Index) setStage(id uint32, r Resource) {
	if s := (stage{expiry(r.StartsAt), r.Live}); s != (stage{}) {
		x.stages[id] = s
	} else {
		delete(x.stages, id)
	}
}

// withStage returns r with the stage of id.
func (x *Index) withStage(id uint32, r Resource) Resource {
	s := x.stages[id]
	r.StartsAt, r.Live = expiryTime(s.startsAt), s.live
	return r
}

// Presence is what Join decides from: a subject's standing at a resource
// and the rule that governs it, read at one revision.
type Presence struct {
	Revision Revision
	// Known: the resource is registered.
	Known bool
	// Rule governs the resource; nil when none does.
	Rule *Admission
	// StartsAt and Live are the resource's stage.
	StartsAt time.Time
	Live     bool
	// Blocked: a block covers Rule.Join; BlockID and Scope say which.
	Blocked bool
	BlockID string
	// Joins: a grant holds Rule.Join; Role and Scope say which.
	Joins bool
	Role  string
	Scope string
	// Capabilities are the subject's effective permissions there, Usher's
	// reserved ones left out: what ListPermissions returns, shared as it
	// is.
	Capabilities []string
	// Roles are the roles of the subject's live grants on the way to root
	// as defined where the rule is or above it, sorted: the roles its
	// uncounted_roles name. A role of the same name defined below the rule
	// is another role, which they do not name: a tenant that may define
	// roles on its account cannot make its users uncounted under a rule
	// above the account by naming a role "host"; under a rule on one of its
	// events, the account's definitions are the rule's roles. None when a
	// block of everything covers the subject.
	Roles []string
	// Exclusive is what the subject holds of the rule's exclusive roles and
	// permissions, as "role NAME" and "permission NAME". An exclusive role
	// is held by its name, wherever it is defined: a restriction, which a
	// tenant that may define roles does not lift by defining the role again
	// below the rule.
	Exclusive []string
	// Backstage: the subject holds Rule.Backstage.
	Backstage bool
	// SkipsLobby: the subject holds the lobby's admit or bypass permission,
	// or a grant of its admit role on the resource itself.
	SkipsLobby bool
	// GrantedBackstage, GrantedAdmit and GrantedBypass: a live grant of
	// the subject's gives it Rule.Backstage, the lobby's admit permission,
	// its bypass permission, whatever blocks a part of them. For a
	// participant that joined holding one, a block of it since (a mute,
	// which an actor that may not block the join permission may write)
	// keeps it from joining again by it, not in the call. True where the
	// subject holds it; otherwise read only where it can matter, for a
	// call that may be closed (not live, and kept backstage until it goes
	// live or scheduled) and a subject that does not skip the lobby, and
	// false elsewhere: a Join pays for no more.
	GrantedBackstage, GrantedAdmit, GrantedBypass bool
	// Until is the earliest expiry of a live grant or block of the subject
	// on the way to root: when its standing may change with no write. Zero
	// when nothing expires.
	Until time.Time
}

// Presence reads subject's standing at resource. Unknown resources and
// subjects are not errors: Known is false, or the subject holds nothing.
func (x *Index) Presence(subject, resource string) Presence {
	now := x.now()
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := Presence{Revision: x.rev}
	res := x.lookupNode(resource)
	if res == noNode {
		return out
	}
	out.Known = true
	var buf [MaxDepth + 1]uint32
	path := x.path(res, buf[:0])
	st := x.stages[res]
	out.StartsAt, out.Live = expiryTime(st.startsAt), st.live
	var ruleAt int
	out.Rule, ruleAt = x.admissionAt(x.typeName(res), path)
	s := x.subj.lookup(subject)
	if s == noName {
		return out
	}
	set := x.effectiveOn(s, path, now)
	holds := func(perm string) bool {
		i := x.cat.id(perm)
		return i >= 0 && set.has(i)
	}
	if r := out.Rule; r != nil {
		if perm := x.cat.id(r.Join); perm >= 0 {
			if b, at := x.blocking(s, path, perm, now); b != nil {
				out.Blocked, out.BlockID, out.Scope = true, b.ID, x.name(at)
			} else if g, ok := x.granting(s, path, perm, now); ok {
				out.Joins, out.Role, out.Scope = true, x.roleNames[g.role], x.name(g.res)
			}
		}
		// granted reads the grants alone, for what a block of perm does not
		// take from a participant; asked only when holds said no.
		granted := func(perm string) bool {
			i := x.cat.id(perm)
			if i < 0 {
				return false
			}
			_, ok := x.granting(s, path, i, now)
			return ok
		}
		out.Backstage = r.Backstage != "" && holds(r.Backstage)
		mayBeClosed := !st.live && (r.RequireLive || st.startsAt != 0)
		out.GrantedBackstage = out.Backstage || r.Backstage != "" && mayBeClosed && granted(r.Backstage)
		if l := r.Lobby; l != nil {
			out.SkipsLobby = holds(l.Admit) || (l.Bypass != "" && holds(l.Bypass))
			if role := x.roleID(l.Role); !out.SkipsLobby && role != noName {
				if i, found := x.findSubjectGrant(s, res, role); found && live(x.bySubject.get(s)[i].exp, now) {
					out.SkipsLobby = true
				}
			}
			out.GrantedAdmit = holds(l.Admit) || !out.SkipsLobby && granted(l.Admit)
			out.GrantedBypass = l.Bypass != "" && (holds(l.Bypass) || !out.SkipsLobby && granted(l.Bypass))
		}
	}
	set.subtract(x.cat.reserved) // in place: nothing reads set again
	out.Capabilities = x.cat.names(set)
	var until int64
	soonest := func(exp int64) {
		if exp != 0 && exp > now && (until == 0 || exp < until) {
			until = exp
		}
	}
	whole := false
	for _, a := range path {
		for _, b := range x.blocksOn(s, a) {
			if live(b.exp, now) {
				soonest(b.exp)
				whole = whole || b.perms == nil
			}
		}
	}
	for _, a := range path {
		for _, g := range x.grantsOn(s, a) {
			if !live(g.exp, now) {
				continue
			}
			soonest(g.exp)
			if !whole && out.Rule != nil && x.definitionOn(path, g.role) >= ruleAt {
				out.Roles = append(out.Roles, x.roleNames[g.role])
			}
		}
	}
	out.Roles = sortedSet(out.Roles)
	if r := out.Rule; r != nil {
		for _, role := range r.ExclusiveRoles {
			if !whole && x.holdsRole(s, path, role, now) {
				out.Exclusive = append(out.Exclusive, RoleMark+role)
			}
		}
		for _, perm := range r.ExclusivePermissions {
			if x.namedBy(s, path, perm, now) {
				out.Exclusive = append(out.Exclusive, PermissionMark+perm)
			}
		}
		if len(r.ExclusivePermissions) > 0 && x.namedBy(s, path, r.Join, now) {
			out.Exclusive = append(out.Exclusive, OccupantMark)
		}
	}
	out.Until = expiryTime(until)
	return out
}

// holdsRole reports whether s holds a live grant of the role named role on
// path, wherever the role is defined.
func (x *Index) holdsRole(s uint32, path []uint32, role string, now int64) bool {
	id := x.roleID(role)
	if id == noName {
		return false
	}
	for _, a := range path {
		for _, g := range x.grantsOn(s, a) {
			if g.role == id && live(g.exp, now) {
				return true
			}
		}
	}
	return false
}

// RoleMark and PermissionMark begin the marks, in Presence.Exclusive, of
// the exclusive roles and permissions a subject holds.
const (
	RoleMark       = "role "
	PermissionMark = "permission "
)

// OccupantMark marks, in Presence.Exclusive, a subject that holds the join
// permission of a rule with exclusive permissions through a role whose
// definition names it (or a permission that implies it): a sub-user in
// Livebox's words, which a role of "*" (the master admin) is not. A holder
// of an exclusive permission enters only a call no other occupant is in;
// the mark refuses no one by itself, so occupants without one share.
const OccupantMark = "occupant"

// namedBy reports whether s holds perm at path[0] through a role whose
// definition there names it, or a permission that implies it: an exclusive
// permission marks a mode a role gives, and a role of "*", which holds
// everything, gives no mode.
func (x *Index) namedBy(s uint32, path []uint32, perm string, now int64) bool {
	i := x.cat.id(perm)
	if i < 0 {
		return false
	}
	if b, _ := x.blocking(s, path, i, now); b != nil {
		return false
	}
	for _, a := range path {
		for _, g := range x.grantsOn(s, a) {
			if !live(g.exp, now) {
				continue
			}
			if d := x.resolve(path, g.role); d != nil && !slices.Contains(d.Permissions, Wildcard) && d.perms.has(i) {
				return true
			}
		}
	}
	return false
}

// Under reports whether resource is at or below scope; false when either
// is not registered.
func (x *Index) Under(resource, scope string) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	r, s := x.lookupNode(resource), x.lookupNode(scope)
	return r != noNode && s != noNode && x.under(r, s)
}

// Below calls visit with scope and each resource below it, parents before
// children, and reports whether it visited them all: it stops after limit
// of them (0: no limit). Nothing is below a scope that is not registered.
// visit runs under the index's read lock and must not call the index.
func (x *Index) Below(scope string, limit int, visit func(resource string)) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	id := x.lookupNode(scope)
	if id == noNode {
		return true
	}
	n := 0
	return x.walk(id, func(m uint32) bool {
		if n++; limit > 0 && n > limit {
			return false
		}
		visit(x.name(m))
		return true
	})
}

// Schedule sets when resource starts (zero clears it). The resource must be
// governed by an Admission rule (FailedPrecondition), and an actor must
// hold the rule's stage permission there.
func (e *Engine) Schedule(ctx context.Context, by Author, resource string, startsAt time.Time) (Revision, error) {
	if err := checkStart("start_time", startsAt); err != nil {
		return 0, err
	}
	return e.setStage(ctx, by, resource, "schedule", "scheduling it", func(r *Resource) { r.StartsAt = startsAt.UTC() })
}

// ValidateStart checks that t, a resource's start time, is one Usher keeps
// (checkStart).
func ValidateStart(field string, t time.Time) error { return checkStart(field, t) }

// checkStart refuses a start time that cannot be stored: the zero time is
// none, and any other is after the Unix epoch (which would read as none)
// and before 2262.
func checkStart(field string, t time.Time) error {
	if !t.IsZero() && (!t.After(time.Unix(0, 0)) || t.After(latestExpiry)) {
		return errorf(Invalid, field, t.UTC().Format(time.RFC3339Nano),
			"a start time is after the Unix epoch and at or before %s; leave it unset for none", latestExpiry.Format(time.RFC3339Nano))
	}
	return nil
}

// GoLive takes resource live, or back to backstage, under the same rules as
// Schedule.
func (e *Engine) GoLive(ctx context.Context, by Author, resource string, live bool) (Revision, error) {
	verb, doing := "take live", "taking it live"
	if !live {
		verb, doing = "take backstage", "taking it backstage"
	}
	return e.setStage(ctx, by, resource, verb, doing, func(r *Resource) { r.Live = live })
}

// setStage sets resource's stage with set: verb names the write in
// refusals, doing what requires the rule's stage permission.
func (e *Engine) setStage(ctx context.Context, by Author, resource, verb, doing string, set func(*Resource)) (Revision, error) {
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		p.does("%s %q", verb, resource)
		id, err := x.registered("resource", resource)
		if err != nil {
			return err
		}
		if id == x.root {
			return errorf(Invalid, "resource", resource, "root has no stage")
		}
		p.guard(resourceKey(resource), keyCatalog, keyTree)
		var buf [MaxDepth + 1]uint32
		rule := x.admissionOn(x.path(id, buf[:0]))
		if rule == nil {
			return errorf(FailedPrecondition, "resource", resource, "no admission rule governs %s resources at %q", x.typeName(id), resource).as(KindNoAdmissionRule)
		}
		if by.Actor != "" && rule.Stage == "" {
			return platformOnlyError(p.by.Actor, "may not %s %q: its admission rule (at %q) names no stage permission, so only the platform may", verb, resource, rule.Scope)
		}
		if err := p.require(id, rule.Stage, doing); err != nil {
			return err
		}
		cur := x.resourceAt(id)
		next := cur
		set(&next)
		if next.StartsAt.Equal(cur.StartsAt) && next.Live == cur.Live {
			return nil
		}
		p.change(Change{Op: OpPutResource, Resource: &next})
		return nil
	})
}

// mayStage refuses a registration of name under parent with a stage when
// no admission rule will govern it, and an actor who may not set one: the
// rule must name a stage permission, held at parent.
func (p *plan) mayStage(typ string, parent uint32, name string) error {
	var buf [MaxDepth + 1]uint32
	p.guard(keyCatalog)
	rule := p.x.admissionFor(typ, p.x.path(parent, buf[:0]))
	switch {
	case rule == nil:
		return errorf(FailedPrecondition, "name", name, "no admission rule governs %s resources there, so a stage means nothing", typ).as(KindNoAdmissionRule)
	case p.by.Actor == "":
		return nil
	case rule.Stage == "":
		return platformOnlyError(p.by.Actor, "may not register %q with a stage: its admission rule (at %q) names no stage permission, so only the platform may", name, rule.Scope)
	}
	return p.require(parent, rule.Stage, "registering a resource with a stage under it")
}

// resourceAt returns the registered resource id as a Resource, with its
// stage.
func (x *Index) resourceAt(id uint32) Resource {
	r := Resource{Name: x.name(id), Creator: x.creatorName(id)}
	if p := x.nodes[id].parent; p != noNode {
		r.Parent = x.name(p)
	}
	return x.withStage(id, r)
}

// Admit lets subject into resource from its lobby: it grants the lobby's
// admit role on resource, until expires (zero: never). An actor must hold
// the lobby's admit permission there; the grant is then judged as any
// actor's grant is (no escalation, no overreach, no self-service), with the
// admit permission in place of usher.grants.write and of a role listing the
// admit role: what the role lets the admitted subject hand out, other than
// the admit role itself, must be the actor's to give. A subject that a block
// keeps from the rule's join permission there is let in by no one
// (FailedPrecondition). A refusal over the lobby's role (not defined there,
// not bindable there, at its max_holders) names resource, with the role in
// its Meta.
func (e *Engine) Admit(ctx context.Context, by Author, resource, subject string, expires time.Time) (Revision, error) {
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		p.does("admit %q to %q", subject, resource)
		id, err := x.registered("resource", resource)
		if err != nil {
			return err
		}
		p.guard(resourceKey(resource), keyCatalog, keyTree, keyRoles)
		var buf [MaxDepth + 1]uint32
		path := x.path(id, buf[:0])
		rule := x.admissionOn(path)
		if rule == nil {
			// As Join, Deny and ListLobby refuse it.
			return errorf(FailedPrecondition, "resource", resource, "no admission rule governs %s resources there, so it has no lobby", x.typeName(id)).as(KindNoAdmissionRule)
		}
		if rule.Lobby == nil {
			return errorf(FailedPrecondition, "resource", resource, "%q has no lobby: the admission rule at %q has none", resource, rule.Scope).as(KindNoLobby)
		}
		if by.Actor != "" {
			if subject == by.Actor {
				return p.selfService("admit", "admit itself")
			}
			if err := p.require(id, rule.Lobby.Admit, "admitting to it"); err != nil {
				return err
			}
		}
		if err := p.blockedFrom(path, rule.Join, subject); err != nil {
			return err
		}
		if p.judge != nil {
			p.judge.admits = rule.Lobby.Role
		}
		// An admission lets in: it never cuts short one that lasts longer,
		// which only a revoke, or a grant by who may give the role, may.
		return lobbyRole(p.bind(Grant{Subject: subject, Role: rule.Lobby.Role, Resource: resource, Expires: expires}, id, true), resource, rule.Lobby.Role)
	})
}

// lobbyRole names resource, which an Admit names, in a refusal of the grant
// of the lobby's role that names the role, which it does not: the role is
// the rule's, and goes in the metadata.
func lobbyRole(err error, resource, role string) error {
	e, ok := err.(*Error)
	if !ok || e.Field != "role" {
		return err
	}
	c := *e
	c.Field, c.Value = "resource", resource
	c.Reason = fmt.Sprintf("the lobby's admit role %q: %s", role, e.Reason)
	c.Meta = maps.Clone(e.Meta)
	if c.Meta == nil {
		c.Meta = map[string]string{}
	}
	c.Meta["role"] = role
	return &c
}

// blockedFrom refuses to admit subject where a live block on path covers
// the join permission: the block overrides every grant, so the admission
// would let no one in now, and would lie in wait to let the subject skip
// the lobby once the block is lifted or runs out.
func (p *plan) blockedFrom(path []uint32, join, subject string) error {
	x := p.x
	p.guard(subjectKey(subject))
	s, perm := x.subj.lookup(subject), x.cat.id(join)
	if s == noName || perm < 0 {
		return nil
	}
	b, at := x.blocking(s, path, perm, p.now)
	if b == nil {
		return nil
	}
	e := errorf(FailedPrecondition, "subject", subject, "is blocked from %q on %q (block %q), and an admission lets in no one a block keeps out",
		join, x.name(at), b.ID).as(KindSubjectBlocked)
	e.Meta = map[string]string{"resource": x.name(path[0]), "permission": join, "scope": x.name(at), "block": b.ID}
	return e
}

// PutAdmission sets the admission rule for a's resource type at its scope.
// Rules are the platform's: an actor may not write them, for a rule decides
// who may join what (PermissionDenied). The scope must be registered
// (NotFound) and the rule's permissions declared (Invalid).
func (e *Engine) PutAdmission(ctx context.Context, by Author, a Admission) (Revision, error) {
	if err := ValidateAdmission("admission", a); err != nil {
		return 0, err
	}
	asked := a // errors index the request's lists, not the sorted ones
	a = normalizeAdmission(a)
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		p.does("set the admission rule for %s at %q", a.ResourceType, a.Scope)
		if err := p.platformOnly("admission rules"); err != nil {
			return err
		}
		id, err := x.registered("admission.scope", a.Scope)
		if err != nil {
			return err
		}
		p.guard(keyCatalog, resourceKey(a.Scope))
		if f, perm := asked.undeclaredIn(x.cat); f != "" {
			return errorf(Invalid, "admission."+f, perm, "permission is not declared in the catalog").as(KindUndeclaredPermission)
		}
		if l := a.Lobby; l != nil && l.Role != "" {
			// An Admit grants it on a call below: it must be defined.
			p.guard(keyRoles)
			if r := x.roleID(l.Role); r == noName || len(x.roleScopes[r]) == 0 {
				return errorf(NotFound, "admission.lobby.admit_role", l.Role, "no role of that name is defined, which an Admit would grant").as(KindRoleNotFound)
			}
		}
		if old := x.admissions[a.ResourceType][id]; old != nil && sameAdmission(*old, a) {
			return nil
		}
		p.change(Change{Op: OpPutAdmission, Admission: &a})
		return nil
	})
}

// DeleteAdmission removes the admission rule for typ at scope; NotFound
// when there is none. Like PutAdmission, it is the platform's.
func (e *Engine) DeleteAdmission(ctx context.Context, by Author, scope, typ string) (Revision, error) {
	if scope == "" {
		scope = RootName
	}
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		p.does("delete the admission rule for %s at %q", typ, scope)
		if err := p.platformOnly("admission rules"); err != nil {
			return err
		}
		id, err := x.registered("scope", scope)
		if err != nil {
			return err
		}
		p.guard(keyCatalog)
		if x.admissions[typ][id] == nil {
			return errorf(NotFound, "resource_type", typ, "no admission rule for it is set at %q", scope).as(KindAdmissionRuleNotFound)
		}
		p.change(Change{Op: OpDeleteAdmission, Admission: &Admission{Scope: scope, ResourceType: typ}})
		return nil
	})
}

// platformOnly refuses a write by an actor of what only the platform
// writes.
func (p *plan) platformOnly(what string) error {
	if p.by.Actor == "" {
		return nil
	}
	return platformOnlyError(p.by.Actor, "may not %s: %s are the platform's, written on the caller's own authority; omit actor", p.doing, what)
}

// platformOnlyError refuses actor a write that only the platform may make,
// saying why.
func platformOnlyError(actor, format string, args ...any) *Error {
	e := errorf(PermissionDenied, "actor", actor, format, args...)
	e.Rule = RulePlatformOnly
	return e
}
