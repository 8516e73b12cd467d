package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ApplyPolicy makes the permission catalog exactly p's and puts p's resources
// (in order, so parents come first) and roles, in one write. What p does not
// list is left alone, so roles and blocks already stored must name only
// permissions p declares. Applying a policy already in force writes nothing
// and reports changed false.
func (e *Engine) ApplyPolicy(ctx context.Context, by Author, p Policy) (rev Revision, changed bool, err error) {
	if by.Actor != "" {
		return 0, false, errorf(Invalid, "actor", by.Actor, "a policy is applied on the caller's own authority; omit actor")
	}
	rev, err = e.write(ctx, by, func(time.Time) ([]Change, error) {
		changes, err := e.idx.planPolicy(p)
		changed = len(changes) > 0
		return changes, err
	})
	return rev, changed, err
}

func (x *Index) planPolicy(p Policy) ([]Change, error) {
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
		for j, parent := range perm.Parents {
			if !seen[parent] {
				return nil, errorf(Invalid, fmt.Sprintf("policy.permissions[%d].parents[%d]", i, j), parent, "parent is not declared in the policy")
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

	// parents overlays the tree with the policy's resources, in order.
	parents := map[string]string{}
	parentOf := func(name string) (string, bool) {
		if p, ok := parents[name]; ok {
			return p, true
		}
		if n := x.nodes[name]; n != nil {
			if n.parent == nil {
				return "", true
			}
			return n.parent.name, true
		}
		return "", false
	}
	for i, r := range p.Resources {
		field := fmt.Sprintf("policy.resources[%d]", i)
		if r.Parent == "" {
			r.Parent = RootName
		}
		if r.Name == RootName {
			return nil, errorf(Invalid, field+".name", r.Name, "root is reserved and always registered")
		}
		if _, ok := parentOf(r.Parent); !ok {
			return nil, errorf(NotFound, field+".parent", r.Parent, "resource is neither registered nor listed before %q", r.Name)
		}
		for a, ok := r.Parent, true; ok && a != ""; a, ok = parentOf(a) {
			if a == r.Name {
				return nil, errorf(FailedPrecondition, field+".parent", r.Parent,
					"moving %q under %q would form a cycle: the parent is the resource itself or below it", r.Name, r.Parent)
			}
		}
		if cur, ok := parentOf(r.Name); ok && cur == r.Parent {
			continue
		}
		if n := x.nodes[r.Name]; n != nil {
			r.Creator = n.creator // a move keeps who registered it
		}
		parents[r.Name] = r.Parent
		changes = append(changes, Change{Op: OpPutResource, Resource: &r})
	}
	changes = x.dropResourceRoundTrips(changes)

	redefined := map[[2]string]bool{}
	for i, r := range p.Roles {
		field := fmt.Sprintf("policy.roles[%d]", i)
		asked := r.Permissions // errors index the policy's list, not the sorted one
		r = normalizeRole(r)
		key := [2]string{r.Scope, r.Name}
		if redefined[key] {
			return nil, errorf(Invalid, field+".name", r.Name, "role is defined twice at %q", r.Scope)
		}
		redefined[key] = true
		if _, ok := parentOf(r.Scope); !ok {
			return nil, errorf(NotFound, field+".scope", r.Scope, "resource is neither registered nor listed in the policy")
		}
		if j := cat.undeclared(asked, true); j >= 0 {
			return nil, errorf(Invalid, fmt.Sprintf("%s.permissions[%d]", field, j), asked[j], "permission is not declared in the policy")
		}
		if n := x.nodes[r.Scope]; n != nil {
			if old := n.roles[x.roleID(r.Name)]; old != nil && sameRole(old.Role, r) {
				continue
			}
		}
		changes = append(changes, Change{Op: OpPutRole, Role: &r})
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
	quotas := map[Quota]bool{}
	for i, q := range p.Quotas {
		field := fmt.Sprintf("policy.quotas[%d]", i)
		key := Quota{Scope: q.Scope, ResourceType: q.ResourceType, Subject: q.Subject}
		if quotas[key] {
			return nil, errorf(Invalid, field+".resource_type", q.ResourceType, "quota is listed twice for scope %q and subject %q", q.Scope, q.Subject)
		}
		quotas[key] = true
		if _, ok := parentOf(q.Scope); !ok {
			return nil, errorf(NotFound, field+".scope", q.Scope, "resource is neither registered nor listed in the policy")
		}
		if n := x.nodes[q.Scope]; n != nil {
			if old := n.quotas[quotaKey{q.ResourceType, q.Subject}]; old != nil && old.Quota == q {
				continue
			}
		}
		changes = append(changes, Change{Op: OpPutQuota, Quota: &q})
	}

	// What the policy leaves alone must still make sense under its catalog.
	for _, n := range x.nodes {
		for _, d := range n.roles {
			if redefined[[2]string{d.Scope, d.Name}] {
				continue
			}
			if j := cat.undeclared(d.Permissions, true); j >= 0 {
				return nil, errorf(Invalid, "policy.permissions", d.Permissions[j],
					"permission is missing from the policy but named by role %q at %q", d.Name, d.Scope)
			}
		}
		for _, b := range n.blocks {
			if j := cat.undeclared(b.Permissions, false); j >= 0 {
				return nil, errorf(Invalid, "policy.permissions", b.Permissions[j],
					"permission is missing from the policy but named by the block of %q on %q", b.Subject, b.Resource)
			}
		}
	}
	return changes, nil
}

// dropResourceRoundTrips removes the resource changes of a policy that
// registers a resource and then moves it back where it already is: when
// every resource they touch ends under the parent it has now, they change
// nothing, and applying the policy again must write nothing.
func (x *Index) dropResourceRoundTrips(changes []Change) []Change {
	final := map[string]string{}
	for _, c := range changes {
		if c.Op == OpPutResource {
			final[c.Resource.Name] = c.Resource.Parent
		}
	}
	for name, parent := range final {
		n := x.nodes[name]
		if n == nil || n.parent == nil || n.parent.name != parent {
			return changes
		}
	}
	return slices.DeleteFunc(changes, func(c Change) bool { return c.Op == OpPutResource })
}

func samePermission(a, b Permission) bool {
	return a.Name == b.Name && a.Description == b.Description && slices.Equal(a.Parents, b.Parents)
}

// ExportPolicy returns the catalog, every resource (parents before
// children) and every role definition, so that applying it to an empty
// store rebuilds the same tree and roles.
func (x *Index) ExportPolicy() (Policy, Revision) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	p := Policy{Permissions: slices.Clone(x.cat.perms)}
	for i := range p.Permissions {
		p.Permissions[i].Parents = slices.Clone(p.Permissions[i].Parents)
	}
	children := map[*node][]*node{}
	for _, n := range x.nodes {
		if n.parent != nil {
			children[n.parent] = append(children[n.parent], n)
		}
	}
	queue := []*node{x.root}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if n != x.root {
			p.Resources = append(p.Resources, Resource{Name: n.name, Parent: n.parent.name, Creator: n.creator})
		}
		p.Roles = append(p.Roles, x.rolesAt(n)...)
		for _, q := range x.quotasAt(n) {
			p.Quotas = append(p.Quotas, q.Quota)
		}
		kids := children[n]
		slices.SortFunc(kids, func(a, b *node) int { return strings.Compare(a.name, b.name) })
		queue = append(queue, kids...)
	}
	for typ, role := range x.creators {
		p.CreatorRoles = append(p.CreatorRoles, CreatorRole{ResourceType: typ, Role: role})
	}
	slices.SortFunc(p.CreatorRoles, func(a, b CreatorRole) int { return strings.Compare(a.ResourceType, b.ResourceType) })
	return p, x.rev
}
