package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// PutRole defines r at r.Scope, replacing an earlier definition of the same
// name there. The scope must be registered (NotFound) and every permission
// declared or "*" (Invalid).
func (e *Engine) PutRole(ctx context.Context, by Author, r Role) (Revision, error) {
	asked := r // errors index the request's lists, not the sorted ones
	r = normalizeRole(r)
	return e.write(ctx, by, func(time.Time) ([]Change, error) {
		x := e.idx
		n, err := x.registered("role.scope", r.Scope)
		if err != nil {
			return nil, err
		}
		if err := x.requirePermission(by, n, PermRolesWrite, "defining a role at it"); err != nil {
			return nil, err
		}
		if err := x.checkRolePermissions(asked, "role."); err != nil {
			return nil, err
		}
		if old := n.roles[x.roleID(r.Name)]; old != nil && sameRole(old.Role, r) {
			return nil, nil
		}
		return []Change{{Op: OpPutRole, Role: &r}}, nil
	})
}

func (x *Index) checkRolePermissions(r Role, prefix string) error {
	if i := x.cat.undeclared(r.Permissions, true); i >= 0 {
		return errorf(Invalid, fmt.Sprintf("%spermissions[%d]", prefix, i), r.Permissions[i],
			"permission is not declared in the catalog")
	}
	return nil
}

// DeleteRole removes the definition of name at scope. It is refused while
// a grant of that role would be left with no definition visible at its
// resource.
func (e *Engine) DeleteRole(ctx context.Context, by Author, scope, name string) (Revision, error) {
	return e.write(ctx, by, func(time.Time) ([]Change, error) {
		x := e.idx
		n, err := x.registered("scope", scope)
		if err != nil {
			return nil, err
		}
		if err := x.requirePermission(by, n, PermRolesWrite, "deleting a role defined at it"); err != nil {
			return nil, err
		}
		id := x.roleID(name)
		def := n.roles[id]
		if def == nil {
			return nil, errorf(NotFound, "name", name, "no role of that name is defined at %q", scope)
		}
		orphans, example := 0, ""
		for _, m := range x.nodes {
			if len(m.grants) == 0 || !isUnder(m, n) {
				continue
			}
			for h := range m.grants {
				if h.role == id && x.resolveWithout(m, id, n) == nil {
					orphans++
					example = fmt.Sprintf("%s on %s", h.subject, m.name)
				}
			}
		}
		if orphans > 0 {
			return nil, errorf(FailedPrecondition, "name", name,
				"role at %q is still held by %d grants that no other definition would cover (e.g. %s); revoke them first",
				scope, orphans, example)
		}
		return []Change{{Op: OpDeleteRole, Role: &Role{Name: name, Scope: scope}}}, nil
	})
}

// resolveWithout resolves role at n as if skip had no definition of it.
func (x *Index) resolveWithout(n *node, role int32, skip *node) *roleDef {
	for ; n != nil; n = n.parent {
		if n != skip && n.roles != nil {
			if d := n.roles[role]; d != nil {
				return d
			}
		}
	}
	return nil
}

// ListRoles returns the roles visible at resource, by name, each as the
// definition that applies there (its Scope says where that is).
func (x *Index) ListRoles(resource string) ([]Role, Revision, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	n, err := x.registered("resource", resource)
	if err != nil {
		return nil, x.rev, err
	}
	return x.visibleRoles(n), x.rev, nil
}

// visibleRoles returns the definitions that apply at n, by name.
func (x *Index) visibleRoles(n *node) []Role {
	seen := map[int32]bool{}
	var out []Role
	for a := n; a != nil; a = a.parent {
		for id, d := range a.roles {
			if !seen[id] {
				seen[id] = true
				out = append(out, cloneRole(d.Role))
			}
		}
	}
	slices.SortFunc(out, func(a, b Role) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// rolesAt returns the definitions made at n itself, by name.
func (x *Index) rolesAt(n *node) []Role {
	out := make([]Role, 0, len(n.roles))
	for _, d := range n.roles {
		out = append(out, cloneRole(d.Role))
	}
	slices.SortFunc(out, func(a, b Role) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// cloneRole copies a role's lists, so that what leaves the index cannot
// change it.
func cloneRole(r Role) Role {
	r.Permissions = slices.Clone(r.Permissions)
	r.AssignableRoles = slices.Clone(r.AssignableRoles)
	r.BindableOn = slices.Clone(r.BindableOn)
	return r
}

// normalizeRole sorts and de-duplicates a role's lists, so that equal
// definitions compare equal.
func normalizeRole(r Role) Role {
	r.Permissions = sortedSet(r.Permissions)
	r.AssignableRoles = sortedSet(r.AssignableRoles)
	r.BindableOn = sortedSet(r.BindableOn)
	return r
}

func sortedSet(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

func sameRole(a, b Role) bool {
	return a.Name == b.Name && a.Scope == b.Scope && a.MaxHolders == b.MaxHolders && a.Description == b.Description &&
		slices.Equal(a.Permissions, b.Permissions) && slices.Equal(a.AssignableRoles, b.AssignableRoles) &&
		slices.Equal(a.BindableOn, b.BindableOn)
}
