package authz

import (
	"slices"
	"strings"
)

// putRole stores a role definition at its scope.
func (x *Index) putRole(r Role) {
	scope := x.lookupNode(r.Scope)
	role := x.internRole(r.Name)
	k := roleKey(scope, role)
	if x.roleDefs[k] == nil {
		x.roleScopes[role] = insertSorted(x.roleScopes[role], scope)
		list := x.rolesAt[scope]
		i, _ := x.searchRolesAt(list, r.Name)
		x.rolesAt[scope] = slices.Insert(list, i, role)
		x.nodes[scope].flags |= nodeRoles
	}
	d := &roleDef{Role: cloneRole(r), perms: x.cat.closure(r.Permissions)}
	if !slices.IsSorted(d.AssignableRoles) {
		// lists searches it: a change set written to the store by other
		// means than PutRole and ApplyPolicy (normalizeRole) may not be.
		d.AssignableRoles = sortedSet(d.AssignableRoles)
	}
	if old := x.roleDefs[k]; old != nil {
		x.unlist(old, role)
	}
	x.roleDefs[k] = d
	for _, name := range d.AssignableRoles {
		x.listedBy[name] = append(x.listedBy[name], role)
	}
}

// unlist removes d, a definition of role, from listedBy. A name's list is
// in no order, so that loading a hundred thousand definitions that list one
// name appends to it rather than insert in it: one entry of role goes, the
// last taking its place.
func (x *Index) unlist(d *roleDef, role uint32) {
	for _, name := range d.AssignableRoles {
		list := x.listedBy[name]
		if i := slices.Index(list, role); i >= 0 {
			list[i] = list[len(list)-1]
			list = list[:len(list)-1]
		}
		if len(list) == 0 {
			delete(x.listedBy, name)
		} else {
			x.listedBy[name] = list
		}
	}
}

// lists reports whether d lists name in assignable_roles. The list is a
// sorted set (see normalizeRole), of up to a thousand names, and the roles
// an actor holds on the way to a resource are a hundred on each level: it is
// searched, not scanned, for each role a write or a page looks at.
func (d *roleDef) lists(name string) bool { return sortedHas(d.AssignableRoles, name) }

// deleteRole removes the definition of name at scope, if there is one.
func (x *Index) deleteRole(scope, name string) {
	id, role := x.lookupNode(scope), x.roleID(name)
	if id == noNode || role == noName || x.roleDefs[roleKey(id, role)] == nil {
		return
	}
	x.unlist(x.roleDefs[roleKey(id, role)], role)
	delete(x.roleDefs, roleKey(id, role))
	x.roleScopes[role] = removeSorted(x.roleScopes[role], id)
	if len(x.roleScopes[role]) == 0 {
		delete(x.roleScopes, role)
	}
	if i, found := x.searchRolesAt(x.rolesAt[id], name); found {
		x.rolesAt[id] = slices.Delete(x.rolesAt[id], i, i+1)
	}
	if len(x.rolesAt[id]) == 0 {
		delete(x.rolesAt, id)
		x.nodes[id].flags &^= nodeRoles
	}
}

// searchRolesAt finds name in a list of rolesAt, which is sorted by name.
func (x *Index) searchRolesAt(list []uint32, name string) (int, bool) {
	return slices.BinarySearchFunc(list, name, func(role uint32, name string) int { return strings.Compare(x.roleNames[role], name) })
}

// resolve returns the definition of role that applies at path[0]: the
// nearest one on the path up to root.
func (x *Index) resolve(path []uint32, role uint32) *roleDef {
	if i := x.definitionOn(path, role); i >= 0 {
		return x.roleDefs[roleKey(path[i], role)]
	}
	return nil
}

// definitionOn is where on path resolve finds role's definition; -1 where
// none is. On a long path, a role defined on fewer resources than the path
// holds is looked for where it is defined, each a scan of the path, rather
// than at each resource of the path, each a lookup in a map: a subject
// holding a hundred roles on each level of a deep path, each defined on
// its level, costs a lookup a grant, not one a level.
func (x *Index) definitionOn(path []uint32, role uint32) int {
	if len(path) > shortPath {
		if scopes := x.roleScopes[role]; len(scopes) < len(path) {
			return nearestOf(path, nil, scopes)
		}
	}
	for i, a := range path {
		if x.nodes[a].flags&nodeRoles != 0 && x.roleDefs[roleKey(a, role)] != nil {
			return i
		}
	}
	return -1
}

// nearestOf is the first place on path of a scope of lists that defines
// (nil: every one) holds for; -1 where none is on it.
func nearestOf(path []uint32, defines func(scope uint32) bool, lists ...[]uint32) int {
	best := -1
	for _, list := range lists {
		for _, scope := range list {
			if i := slices.Index(path, scope); i >= 0 && (best < 0 || i < best) && (defines == nil || defines(scope)) {
				best = i
			}
		}
	}
	return best
}

// shortPath is the longest path definitionOn walks whatever the role: the
// levels of a platform's usual tree (account, workspace, call type, call)
// and some, where the walk costs no more than reading the role's scopes.
const shortPath = 8

// resolveAt is resolve from a resource id.
func (x *Index) resolveAt(id, role uint32) *roleDef {
	for a := id; a != noNode; a = x.nodes[a].parent {
		if x.nodes[a].flags&nodeRoles != 0 {
			if d := x.roleDefs[roleKey(a, role)]; d != nil {
				return d
			}
		}
	}
	return nil
}

// visibleRoles returns the definitions that apply at id, by name.
func (x *Index) visibleRoles(id uint32) []Role {
	seen := map[uint32]bool{}
	var out []Role
	for a := id; a != noNode; a = x.nodes[a].parent {
		for _, role := range x.rolesAt[a] {
			if !seen[role] {
				seen[role] = true
				out = append(out, cloneRole(x.roleDefs[roleKey(a, role)].Role))
			}
		}
	}
	slices.SortFunc(out, func(a, b Role) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// definedAt returns the definitions made at id itself, by name.
func (x *Index) definedAt(id uint32) []Role {
	out := make([]Role, 0, len(x.rolesAt[id]))
	for _, role := range x.rolesAt[id] {
		out = append(out, cloneRole(x.roleDefs[roleKey(id, role)].Role))
	}
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

func insertSorted(list []uint32, v uint32) []uint32 {
	i := searchUint32(list, v)
	if i < len(list) && list[i] == v {
		return list
	}
	return slices.Insert(list, i, v)
}

func removeSorted(list []uint32, v uint32) []uint32 {
	i := searchUint32(list, v)
	if i < len(list) && list[i] == v {
		return slices.Delete(list, i, i+1)
	}
	return list
}
