package authz

import "slices"

// Reserved permissions govern Usher's own data. A policy declares them and
// implies them from its domain permissions through the permission tree; an
// actor needs them at the scope a write concerns.
//
// usher.resources.write may be narrowed to one resource type by a suffix:
// usher.resources.write.room lets its holder register, move and delete rooms
// only. usher.resources.delete on a resource lets its holder delete that
// resource itself, as an event's owner may delete the event.
const (
	PermResourcesWrite  = "usher.resources.write"
	PermResourcesDelete = "usher.resources.delete"
	PermRolesWrite      = "usher.roles.write"
	PermBlocksWrite     = "usher.blocks.write"
	PermQuotasWrite     = "usher.quotas.write"
)

// requirePermission refuses a write by an actor who lacks perm at n, as Check
// would see it. Without an actor the caller acts on its own authority.
func (x *Index) requirePermission(by Author, n *node, perm, what string) error {
	if by.Actor == "" {
		return nil
	}
	if x.holds(by.Actor, n, perm) {
		return nil
	}
	return errorf(PermissionDenied, "actor", by.Actor,
		"actor lacks %q on %q, which %s requires", perm, n.name, what)
}

// requireResourceWrite refuses a write of a resource of type typ under scope
// by an actor who holds neither usher.resources.write nor
// usher.resources.write.<typ> there.
func (x *Index) requireResourceWrite(by Author, scope *node, typ, what string) error {
	if by.Actor == "" {
		return nil
	}
	if x.holds(by.Actor, scope, PermResourcesWrite+"."+typ) {
		return nil
	}
	return x.requirePermission(by, scope, PermResourcesWrite, what)
}

// holds reports whether subject's effective permissions at n include perm.
func (x *Index) holds(subject string, n *node, perm string) bool {
	id := x.cat.id(perm)
	return id >= 0 && x.effective(subject, n, nowNano()).has(id)
}

// mayGrant applies DESIGN.md's Grant rule for an actor: some role the actor
// holds at n lists role in assignable_roles, or lists "*" and role's
// permissions at n are a subset of the actor's effective permissions there.
func (x *Index) mayGrant(actor, role string, n *node, now int64) error {
	target := x.resolve(n, x.roleID(role))
	if target == nil {
		return errorf(NotFound, "role", role, "no role of that name is defined at %q or above it", n.name)
	}
	effective := x.effective(actor, n, now)
	wildcard := false
	if !x.blockedFromAll(actor, n, now) {
		for _, d := range x.heldRoles(actor, n, now) {
			if slices.Contains(d.AssignableRoles, role) {
				return nil
			}
			wildcard = wildcard || slices.Contains(d.AssignableRoles, Wildcard)
		}
	}
	if !wildcard {
		return errorf(PermissionDenied, "actor", actor,
			"may not grant role %q on %q: no role the actor holds there lists it in assignable_roles", role, n.name)
	}
	if missing := x.firstMissing(target, effective); missing != "" {
		return errorf(PermissionDenied, "actor", actor,
			"may not grant role %q on %q: only permissions the actor has can be granted, and the actor lacks %q there",
			role, n.name, missing)
	}
	return nil
}

// heldRoles returns the definitions, resolved at n, of the actor's unexpired
// grants on n and its ancestors.
func (x *Index) heldRoles(actor string, n *node, now int64) []*roleDef {
	si := x.subjects[actor]
	if si == nil {
		return nil
	}
	var out []*roleDef
	for a := n; a != nil; a = a.parent {
		for _, g := range si.grants[a] {
			if live(g.expires, now) {
				if d := x.resolve(n, g.role); d != nil {
					out = append(out, d)
				}
			}
		}
	}
	return out
}

// blockedFromAll reports whether a block of every permission covers subject
// at n.
func (x *Index) blockedFromAll(subject string, n *node, now int64) bool {
	for a := n; a != nil; a = a.parent {
		if b := a.blocks[subject]; b != nil && b.perms == nil && live(b.expires, now) {
			return true
		}
	}
	return false
}

// firstMissing names a permission of role that have lacks, or "": the first
// one the role lists whose implied set is not all held, so that a refusal
// names "company.settings" rather than one of its many children.
func (x *Index) firstMissing(role *roleDef, have bitset) string {
	for _, name := range role.Permissions {
		if name != Wildcard && !x.cat.closure([]string{name}).subsetOf(have) {
			return name
		}
	}
	missing := ""
	role.perms.each(func(i int32) {
		if missing == "" && !have.has(i) {
			missing = x.cat.perms[i].Name
		}
	})
	return missing
}

// mayRevoke applies the Revoke rule: the actor could grant that binding now,
// and it is not the actor's own.
func (x *Index) mayRevoke(actor string, g Grant, n *node, now int64) error {
	if g.Subject == actor {
		return errorf(PermissionDenied, "actor", actor,
			"may not revoke role %q on %q: it is not possible to revoke your own grants", g.Role, n.name)
	}
	if err := x.mayGrant(actor, g.Role, n, now); err != nil {
		e := err.(*Error)
		return errorf(e.Code, e.Field, e.Value, "may not revoke: %s", e.Reason)
	}
	return nil
}

// AssignableRoles returns the roles visible at resource that actor may grant
// there: those mayGrant allows and whose bindable_on admits the resource.
func (x *Index) AssignableRoles(resource, actor string) ([]Role, Revision, error) {
	now := nowNano()
	x.mu.RLock()
	defer x.mu.RUnlock()
	n, err := x.registered("resource", resource)
	if err != nil {
		return nil, x.rev, err
	}
	var out []Role
	for _, r := range x.visibleRoles(n) {
		if r.bindableOn(n.typ) && x.mayGrant(actor, r.Name, n, now) == nil {
			out = append(out, r)
		}
	}
	return out, x.rev, nil
}
