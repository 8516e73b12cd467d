package authz

import (
	"context"
	"fmt"
	"time"
)

// PutResource registers r under r.Parent ("root" when empty), or moves it
// there if it is registered already. The parent must be registered
// (NotFound) and must not be r or below it (FailedPrecondition); the quotas
// above the parent must have room (ResourceExhausted). An actor needs
// usher.resources.write, or usher.resources.write.<type>, on the parent (and,
// for a move, on the old parent too); registering as an actor records the actor as creator and grants it
// the policy's creator role for the type, in the same write.
func (e *Engine) PutResource(ctx context.Context, by Author, r Resource) (Revision, error) {
	if r.Parent == "" {
		r.Parent = RootName
	}
	return e.write(ctx, by, func(time.Time) ([]Change, error) {
		x := e.idx
		if r.Name == RootName {
			return nil, errorf(Invalid, "name", r.Name, "root is reserved and always registered")
		}
		parent, err := x.registered("parent", r.Parent)
		if err != nil {
			return nil, err
		}
		if n := x.nodes[r.Name]; n != nil {
			return x.planMove(by, n, parent)
		}
		if err := x.requireResourceWrite(by, parent, TypeOf(r.Name), "registering a resource under it"); err != nil {
			return nil, err
		}
		r.Creator = by.Actor
		placed := &node{name: r.Name, typ: TypeOf(r.Name), creator: r.Creator}
		if err := x.checkQuotas(placing(placed), nil, parent); err != nil {
			return nil, err
		}
		changes := []Change{{Op: OpPutResource, Resource: &r}}
		if role := x.creators[placed.typ]; role != "" && by.Actor != "" {
			def := x.resolve(parent, x.roleID(role))
			if def == nil || !def.bindableOn(placed.typ) {
				return nil, errorf(FailedPrecondition, "name", r.Name,
					"the creator role %q of %s resources cannot be granted on it: it is not defined at %q or above, or not bindable on %s",
					role, placed.typ, r.Parent, placed.typ)
			}
			changes = append(changes, Change{Op: OpPutGrant, Grant: &Grant{Subject: by.Actor, Role: role, Resource: r.Name}})
		}
		return changes, nil
	})
}

// planMove moves n under parent.
func (x *Index) planMove(by Author, n, parent *node) ([]Change, error) {
	if n.parent == parent {
		// Nothing moves, but an actor who could not register it there is
		// refused, as every other write checks the actor before comparing.
		return nil, x.requireResourceWrite(by, parent, n.typ, "registering a resource under it")
	}
	if isUnder(parent, n) {
		return nil, errorf(FailedPrecondition, "parent", parent.name,
			"moving %q under %q would form a cycle: the parent is the resource itself or below it", n.name, parent.name)
	}
	if err := x.requireResourceWrite(by, n.parent, n.typ, "moving a resource out of it"); err != nil {
		return nil, err
	}
	if err := x.requireResourceWrite(by, parent, n.typ, "moving a resource under it"); err != nil {
		return nil, err
	}
	if orphan := x.orphanedByMove(n, parent); orphan != "" {
		return nil, errorf(FailedPrecondition, "parent", parent.name,
			"moving %q under %q would leave %s with no definition of its role; revoke it first", n.name, parent.name, orphan)
	}
	if err := x.checkQuotas(placing(x.subtree(n)...), n, parent); err != nil {
		return nil, err
	}
	return []Change{{Op: OpPutResource, Resource: &Resource{Name: n.name, Parent: parent.name, Creator: n.creator}}}, nil
}

// orphanedByMove describes a grant in n's subtree whose role resolves today
// but would not once n hangs under parent; "" when there is none.
func (x *Index) orphanedByMove(n, parent *node) string {
	for _, m := range x.nodes {
		if len(m.grants) == 0 || !isUnder(m, n) {
			continue
		}
		for h := range m.grants {
			if x.resolve(m, h.role) != nil && resolveMoved(m, h.role, n, parent) == nil {
				return fmt.Sprintf("the grant of %q to %q on %q", x.roleNames[h.role], h.subject, m.name)
			}
		}
	}
	return ""
}

// resolveMoved resolves role at m as if moved hung under parent.
func resolveMoved(m *node, role int32, moved, parent *node) *roleDef {
	for a := m; a != nil; {
		if d := a.roles[role]; d != nil {
			return d
		}
		if a == moved {
			a = parent
		} else {
			a = a.parent
		}
	}
	return nil
}

// DeleteResource removes a resource with no children, and with it the
// grants, blocks, role definitions and quotas on it. An actor needs
// usher.resources.write (or .<type>) on the parent, or usher.resources.delete
// on the resource itself.
func (e *Engine) DeleteResource(ctx context.Context, by Author, name string) (Revision, error) {
	return e.write(ctx, by, func(time.Time) ([]Change, error) {
		x := e.idx
		if name == RootName {
			return nil, errorf(Invalid, "name", name, "root cannot be deleted")
		}
		n, err := x.registered("name", name)
		if err != nil {
			return nil, err
		}
		if by.Actor != "" && !x.holds(by.Actor, n, PermResourcesDelete) {
			if err := x.requireResourceWrite(by, n.parent, n.typ, "deleting a resource under it"); err != nil {
				return nil, err
			}
		}
		if n.children > 0 {
			return nil, errorf(FailedPrecondition, "name", name,
				"resource has %d children; delete or move them first", n.children)
		}
		var changes []Change
		for _, g := range x.grantsOn(n) {
			changes = append(changes, Change{Op: OpDeleteGrant, Grant: &Grant{Subject: g.Subject, Role: g.Role, Resource: name}})
		}
		for _, b := range sortedBlocks(n) {
			changes = append(changes, Change{Op: OpDeleteBlock, Block: &Block{Subject: b.Subject, Resource: name}})
		}
		for _, r := range x.rolesAt(n) {
			changes = append(changes, Change{Op: OpDeleteRole, Role: &Role{Name: r.Name, Scope: name}})
		}
		for _, q := range x.quotasAt(n) {
			changes = append(changes, Change{Op: OpDeleteQuota, Quota: &Quota{Scope: name, ResourceType: q.ResourceType, Subject: q.Subject}})
		}
		changes = append(changes, Change{Op: OpDeleteResource, Resource: &Resource{Name: name}})
		return changes, nil
	})
}

// ResourceInfo is a registered resource with its place in the tree.
type ResourceInfo struct {
	Resource
	Ancestors []string // from the parent up to root
	Children  int
}

// GetResource returns a registered resource, or NotFound.
func (x *Index) GetResource(name string) (ResourceInfo, Revision, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	n, err := x.registered("name", name)
	if err != nil {
		return ResourceInfo{}, x.rev, err
	}
	info := ResourceInfo{Resource: Resource{Name: name, Creator: n.creator}, Children: n.children}
	if n.parent != nil {
		info.Parent = n.parent.name
	}
	for a := n.parent; a != nil; a = a.parent {
		info.Ancestors = append(info.Ancestors, a.name)
	}
	return info, x.rev, nil
}
