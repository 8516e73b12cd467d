package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Index is the in-memory state that answers checks without touching disk. It
// is built from a Snapshot and kept current only by Apply, with the change
// sets a backend has committed, so any backend that can stream its commits
// can feed it.
type Index struct {
	mu      sync.RWMutex
	rev     Revision
	changed chan struct{} // closed and replaced at every Apply

	cat       *catalog
	nodes     map[string]*node
	root      *node
	roleIDs   map[string]int32 // interned role names
	roleNames []string
	subjects  map[string]*subjectIndex
	creators  map[string]string // resource type -> creator role
}

// node is a registered resource.
type node struct {
	name     string
	typ      string
	creator  string
	parent   *node
	children int
	roles    map[int32]*roleDef       // role definitions at this scope
	grants   map[holder]int64         // grants on this resource: expiry in unix ns, 0 for never
	blocks   map[string]*blockEntry   // blocks on this resource, by subject
	quotas   map[quotaKey]*quotaEntry // quotas on this resource's subtree
}

type holder struct {
	subject string
	role    int32
}

type roleDef struct {
	Role
	perms bitset
}

type blockEntry struct {
	Block
	perms   bitset // nil: every permission
	expires int64
}

// subjectIndex holds one subject's grants by resource, each resource's list
// sorted by role name so that Check's answer is deterministic.
type subjectIndex struct {
	name   string // the one copy of the subject's name the index keeps
	grants map[*node][]binding
}

type binding struct {
	role    int32
	expires int64
}

func expiry(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func live(expires, now int64) bool { return expires == 0 || expires > now }

// NewIndex builds an index from a snapshot.
func NewIndex(s Snapshot) (*Index, error) {
	x := &Index{
		rev:      s.Revision,
		changed:  make(chan struct{}),
		nodes:    make(map[string]*node, len(s.Resources)+1),
		roleIDs:  make(map[string]int32),
		subjects: make(map[string]*subjectIndex),
		creators: make(map[string]string),
	}
	cat, err := newCatalog(s.Permissions, "permissions")
	if err != nil {
		return nil, fmt.Errorf("loading the permission catalog: %w", err)
	}
	x.cat = cat
	x.root = &node{name: RootName, typ: RootName}
	x.nodes[RootName] = x.root
	for _, r := range s.Resources {
		x.nodes[r.Name] = &node{name: r.Name, typ: TypeOf(r.Name), creator: r.Creator}
	}
	for _, r := range s.Resources {
		p := x.nodes[r.Parent]
		if p == nil {
			return nil, fmt.Errorf("resource %q: parent %q is not registered", r.Name, r.Parent)
		}
		n := x.nodes[r.Name]
		n.parent = p
		p.children++
	}
	for _, r := range s.Roles {
		if x.nodes[r.Scope] == nil {
			return nil, fmt.Errorf("role %q: scope %q is not registered", r.Name, r.Scope)
		}
		x.putRole(r)
	}
	for _, g := range s.Grants {
		if x.nodes[g.Resource] == nil {
			return nil, fmt.Errorf("grant of %q to %q: resource %q is not registered", g.Role, g.Subject, g.Resource)
		}
		x.putGrant(g)
	}
	for _, b := range s.Blocks {
		if x.nodes[b.Resource] == nil {
			return nil, fmt.Errorf("block of %q: resource %q is not registered", b.Subject, b.Resource)
		}
		x.putBlock(b)
	}
	for _, q := range s.Quotas {
		n := x.nodes[q.Scope]
		if n == nil {
			return nil, fmt.Errorf("quota on %q: scope is not registered", q.Scope)
		}
		if n.quotas == nil {
			n.quotas = make(map[quotaKey]*quotaEntry)
		}
		n.quotas[quotaKey{q.ResourceType, q.Subject}] = &quotaEntry{Quota: q}
	}
	// One pass counts every quota's use.
	for _, n := range x.nodes {
		x.count(n, 1)
	}
	for _, c := range s.CreatorRoles {
		x.creators[c.ResourceType] = c.Role
	}
	return x, nil
}

// Revision is the revision of the last change set applied.
func (x *Index) Revision() Revision {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.rev
}

// Apply brings a committed change set into the index. Change sets must arrive
// in revision order; one at or below the index's revision is ignored, so a
// feed may replay.
func (x *Index) Apply(cs ChangeSet) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if cs.Revision <= x.rev {
		return
	}
	// Catalog changes are gathered first and the catalog rebuilt once.
	var catalogChanges map[string]*Permission // nil value: deleted
	for _, c := range cs.Changes {
		switch c.Op {
		case OpPutPermission:
			if catalogChanges == nil {
				catalogChanges = map[string]*Permission{}
			}
			catalogChanges[c.Permission.Name] = c.Permission
		case OpDeletePermission:
			if catalogChanges == nil {
				catalogChanges = map[string]*Permission{}
			}
			catalogChanges[c.Permission.Name] = nil
		}
	}
	catalogChanged := catalogChanges != nil
	if catalogChanged {
		perms := make([]Permission, 0, len(x.cat.perms)+len(catalogChanges))
		for _, p := range x.cat.perms {
			if _, changed := catalogChanges[p.Name]; !changed {
				perms = append(perms, p)
			}
		}
		for _, p := range catalogChanges {
			if p != nil {
				perms = append(perms, *p)
			}
		}
		// The engine validated the catalog before committing it.
		if cat, err := newCatalog(perms, "permissions"); err == nil {
			x.cat = cat
		}
	}
	for _, c := range cs.Changes {
		switch c.Op {
		case OpPutResource:
			x.putResource(*c.Resource)
		case OpDeleteResource:
			x.deleteResource(c.Resource.Name)
		case OpPutRole:
			x.putRole(*c.Role)
		case OpDeleteRole:
			x.deleteRole(c.Role.Scope, c.Role.Name)
		case OpPutGrant:
			x.putGrant(*c.Grant)
		case OpDeleteGrant:
			x.deleteGrant(*c.Grant)
		case OpPutBlock:
			x.putBlock(*c.Block)
		case OpDeleteBlock:
			x.deleteBlock(c.Block.Subject, c.Block.Resource)
		case OpPutQuota:
			x.putQuota(*c.Quota)
		case OpDeleteQuota:
			x.deleteQuota(*c.Quota)
		case OpPutCreatorRole:
			x.creators[c.CreatorRole.ResourceType] = c.CreatorRole.Role
		case OpDeleteCreatorRole:
			delete(x.creators, c.CreatorRole.ResourceType)
		}
	}
	if catalogChanged {
		x.rebuildPermissionSets()
	}
	x.rev = cs.Revision
	close(x.changed)
	x.changed = make(chan struct{})
}

// Counts returns how many resources (root aside) and grants the index holds.
func (x *Index) Counts() (resources, grants int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, n := range x.nodes {
		grants += len(n.grants)
	}
	return len(x.nodes) - 1, grants
}

// WaitFor returns once the index has applied rev, or with ctx's error.
func (x *Index) WaitFor(ctx context.Context, rev Revision) error {
	for {
		x.mu.RLock()
		cur, ch := x.rev, x.changed
		x.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (x *Index) internRole(name string) int32 {
	if id, ok := x.roleIDs[name]; ok {
		return id
	}
	id := int32(len(x.roleNames))
	x.roleIDs[name] = id
	x.roleNames = append(x.roleNames, name)
	return id
}

func (x *Index) roleID(name string) int32 {
	if id, ok := x.roleIDs[name]; ok {
		return id
	}
	return -1
}

func (x *Index) putResource(r Resource) {
	n := x.nodes[r.Name]
	var subtree []*node
	if n == nil {
		n = &node{name: r.Name, typ: TypeOf(r.Name), creator: r.Creator}
		x.nodes[r.Name] = n
		subtree = []*node{n}
	} else {
		subtree = x.subtree(n)
		for _, m := range subtree {
			x.count(m, -1)
		}
		n.parent.children--
	}
	n.parent = x.nodes[r.Parent]
	n.parent.children++
	for _, m := range subtree {
		x.count(m, 1)
	}
}

// subtree returns n and every resource below it.
func (x *Index) subtree(n *node) []*node {
	var out []*node
	for _, m := range x.nodes {
		if isUnder(m, n) {
			out = append(out, m)
		}
	}
	return out
}

func (x *Index) deleteResource(name string) {
	n := x.nodes[name]
	if n == nil {
		return
	}
	for h := range n.grants {
		x.deleteGrant(Grant{Subject: h.subject, Role: x.roleNames[h.role], Resource: name})
	}
	x.count(n, -1)
	n.parent.children--
	delete(x.nodes, name)
}

func (x *Index) putRole(r Role) {
	n := x.nodes[r.Scope]
	if n.roles == nil {
		n.roles = make(map[int32]*roleDef)
	}
	n.roles[x.internRole(r.Name)] = &roleDef{Role: r, perms: x.cat.closure(r.Permissions)}
}

func (x *Index) deleteRole(scope, name string) {
	if n := x.nodes[scope]; n != nil {
		delete(n.roles, x.roleID(name))
	}
}

func (x *Index) putGrant(g Grant) {
	n := x.nodes[g.Resource]
	role := x.internRole(g.Role)
	exp := expiry(g.Expires)
	si := x.subjects[g.Subject]
	if si == nil {
		// A fresh copy, so that the name does not pin the buffer it was
		// sliced from (a storage key, a request).
		name := strings.Clone(g.Subject)
		si = &subjectIndex{name: name, grants: make(map[*node][]binding, 1)}
		x.subjects[name] = si
	}
	if n.grants == nil {
		n.grants = make(map[holder]int64)
	}
	n.grants[holder{si.name, role}] = exp
	list := si.grants[n]
	i, found := slices.BinarySearchFunc(list, g.Role, func(b binding, name string) int {
		return strings.Compare(x.roleNames[b.role], name)
	})
	if found {
		list[i].expires = exp
		return
	}
	si.grants[n] = slices.Insert(list, i, binding{role: role, expires: exp})
}

func (x *Index) deleteGrant(g Grant) {
	n := x.nodes[g.Resource]
	role := x.roleID(g.Role)
	if n == nil || role < 0 {
		return
	}
	delete(n.grants, holder{g.Subject, role})
	si := x.subjects[g.Subject]
	if si == nil {
		return
	}
	list := slices.DeleteFunc(si.grants[n], func(b binding) bool { return b.role == role })
	if len(list) == 0 {
		delete(si.grants, n)
		if len(si.grants) == 0 {
			delete(x.subjects, g.Subject)
		}
		return
	}
	si.grants[n] = list
}

func (x *Index) putBlock(b Block) {
	n := x.nodes[b.Resource]
	if n.blocks == nil {
		n.blocks = make(map[string]*blockEntry)
	}
	n.blocks[b.Subject] = x.blockEntry(b)
}

func (x *Index) blockEntry(b Block) *blockEntry {
	e := &blockEntry{Block: b, expires: expiry(b.Expires)}
	if len(b.Permissions) > 0 {
		e.perms = x.cat.closure(b.Permissions)
	}
	return e
}

func (x *Index) deleteBlock(subject, resource string) {
	if n := x.nodes[resource]; n != nil {
		delete(n.blocks, subject)
	}
}

// rebuildPermissionSets recomputes every bitset after the catalog changed,
// since permission numbers follow the catalog's order.
func (x *Index) rebuildPermissionSets() {
	for _, n := range x.nodes {
		for id, d := range n.roles {
			n.roles[id] = &roleDef{Role: d.Role, perms: x.cat.closure(d.Permissions)}
		}
		for s, b := range n.blocks {
			n.blocks[s] = x.blockEntry(b.Block)
		}
	}
}

// resolve returns the definition of role that applies at n: the nearest one
// on the way from n up to root.
func (x *Index) resolve(n *node, role int32) *roleDef {
	for ; n != nil; n = n.parent {
		if n.roles != nil {
			if d := n.roles[role]; d != nil {
				return d
			}
		}
	}
	return nil
}

// isUnder reports whether n is anc or one of its descendants.
func isUnder(n, anc *node) bool {
	for ; n != nil; n = n.parent {
		if n == anc {
			return true
		}
	}
	return false
}
