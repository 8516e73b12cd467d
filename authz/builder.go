package authz

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
)

// Sink receives every entity of a snapshot, as a backend loads them:
// permissions first, then resources (in any order), then everything that
// names resources. Strings passed to a Sink may alias the backend's buffers
// and are valid only during the call.
type Sink interface {
	Permission(Permission) error
	Resource(Resource) error
	Role(Role) error
	Grant(Grant) error
	Block(Block) error
	Quota(Quota) error
	CreatorRole(CreatorRole) error
	DefaultQuota(DefaultQuota) error
	Admission(Admission) error
}

// Load sends every entity of s to sink, in the order Sink asks for.
func (s Snapshot) Load(sink Sink) error {
	for _, p := range s.Permissions {
		if err := sink.Permission(p); err != nil {
			return err
		}
	}
	for _, r := range s.Resources {
		if err := sink.Resource(r); err != nil {
			return err
		}
	}
	for _, r := range s.Roles {
		if err := sink.Role(r); err != nil {
			return err
		}
	}
	for _, g := range s.Grants {
		if err := sink.Grant(g); err != nil {
			return err
		}
	}
	for _, b := range s.Blocks {
		if err := sink.Block(b); err != nil {
			return err
		}
	}
	for _, q := range s.Quotas {
		if err := sink.Quota(q); err != nil {
			return err
		}
	}
	for _, c := range s.CreatorRoles {
		if err := sink.CreatorRole(c); err != nil {
			return err
		}
	}
	for _, d := range s.DefaultQuotas {
		if err := sink.DefaultQuota(d); err != nil {
			return err
		}
	}
	for _, a := range s.Admissions {
		if err := sink.Admission(a); err != nil {
			return err
		}
	}
	return nil
}

// BatchSink is a Sink that also takes grants many at a time, which lets it
// look their resources up together rather than one after the other. A
// backend may hand a BatchSink its grants either way: GrantBatch(gs) is Grant
// of each of gs in turn, up to the first error. The strings of gs may alias
// the backend's buffers and are valid only during the call.
type BatchSink interface {
	Sink
	GrantBatch(gs []Grant) error
}

// Builder is a Sink that builds an Index. A subject's grants, which a
// backend loads together, are kept as they come and sorted once by Build;
// the lists by resource are made by Build from them, each allocated once at
// its size, so that loading millions of grants costs a sort rather than
// millions of insertions.
type Builder struct {
	x       *Index
	perms   []Permission
	parents []uint32 // by resource id: its parent's id, noNode for none yet
	catalog bool     // the catalog is built
	err     error

	one      [1]Grant // what Grant hands GrantBatch
	keys     []string // GrantBatch's scratch: its grants' resources
	ids      []uint32
	subjects []uint32
	hashes   []uint64
	touched  [grantBlock / grantChunk]byte

	// run is the grants of subject runSubject (named runName) that are not
	// yet in its list: a subject's grants usually come one after another.
	run        []subjectGrant
	runSubject uint32
	runName    string
	// ordered is whether every subject's grants have come together, and the
	// subjects in order of name; then order lists them as they came.
	ordered bool
	order   []uint32
}

// GrantBatch looks the resources of grantBlock grants up, then loads them;
// it looks up grantChunk of them together (see names.lookupBatch).
const (
	grantBlock = 1024
	grantChunk = 256
)

// NewBuilder returns an empty builder whose index reads time from clock.
func NewBuilder(clock Clock) *Builder {
	return &Builder{x: newIndex(clock), runSubject: noName, ordered: true}
}

func (b *Builder) buildCatalog() error {
	if b.catalog {
		return nil
	}
	cat, err := newCatalog(b.perms, "permissions")
	if err != nil {
		return fmt.Errorf("loading the permission catalog: %w", err)
	}
	b.x.cat, b.catalog, b.perms = cat, true, nil
	return nil
}

// Permission implements Sink.
func (b *Builder) Permission(p Permission) error {
	if b.catalog {
		return fmt.Errorf("permission %q: permissions must come before every other entity", p.Name)
	}
	p.Name, p.Parents, p.Description = cloneString(p.Name), cloneStrings(p.Parents), cloneString(p.Description)
	b.perms = append(b.perms, p)
	return nil
}

// Resource implements Sink. Parents may arrive after their children.
func (b *Builder) Resource(r Resource) error {
	if err := b.buildCatalog(); err != nil {
		return err
	}
	x := b.x
	if r.Name == RootName {
		return fmt.Errorf("resource %q is reserved", r.Name)
	}
	parentName := r.Parent
	if parentName == "" {
		parentName = RootName
	}
	if x.lookupNode(r.Name) != noNode {
		return fmt.Errorf("resource %q is loaded twice", r.Name)
	}
	id := x.addNode(r.Name, noNode)
	parent, _ := x.res.intern(parentName)
	for int(id) >= len(b.parents) {
		b.parents = append(b.parents, noNode)
	}
	b.parents[id] = parent
	x.setStage(id, r)
	if r.Creator != "" {
		s := x.refSubject(r.Creator)
		x.nodes[id].creator = s + 1
		x.created.insert(s, x.created.count(s), id)
	}
	return nil
}

// Role implements Sink.
func (b *Builder) Role(r Role) error {
	if err := b.buildCatalog(); err != nil {
		return err
	}
	if b.x.lookupNode(r.Scope) == noNode {
		return fmt.Errorf("role %q: scope %q is not registered", r.Name, r.Scope)
	}
	r.Name, r.Scope, r.Description = cloneString(r.Name), cloneString(r.Scope), cloneString(r.Description)
	r.Permissions, r.AssignableRoles, r.BindableOn = cloneStrings(r.Permissions), cloneStrings(r.AssignableRoles), cloneStrings(r.BindableOn)
	b.x.putRole(r)
	return nil
}

// Grant implements Sink.
func (b *Builder) Grant(g Grant) error {
	b.one[0] = g
	err := b.GrantBatch(b.one[:])
	b.one[0] = Grant{}
	return err
}

// GrantBatch implements BatchSink.
func (b *Builder) GrantBatch(gs []Grant) error {
	if err := b.buildCatalog(); err != nil {
		return err
	}
	for len(gs) > 0 {
		n := min(len(gs), grantBlock)
		if err := b.grants(gs[:n]); err != nil {
			return err
		}
		gs = gs[n:]
	}
	return nil
}

// grants loads up to grantBlock grants.
func (b *Builder) grants(gs []Grant) error {
	x := b.x
	if b.keys == nil {
		b.keys, b.ids, b.hashes = make([]string, grantBlock), make([]uint32, grantBlock), make([]uint64, grantBlock)
		b.subjects = make([]uint32, grantBlock)
	}
	ids := b.ids[:len(gs)]
	b.resolve(gs, ids)
	for i := range gs {
		g := &gs[i]
		res := ids[i]
		if res == noNode {
			return fmt.Errorf("grant of %q to %q: resource %q is not registered", g.Role, g.Subject, g.Resource)
		}
		role := x.internRole(g.Role)
		b.subject(g.Subject)
		b.run = append(b.run, subjectGrant{res: res, role: role, exp: expiry(g.Expires)})
		x.roleHolders[role]++
		x.grants++
	}
	return nil
}

// resolve sets ids[i] to the node of gs[i]'s resource, noNode when it is
// not registered. Looking resources up is most of what loading grants
// costs, and only reads the index: the chunks of a block are shared out.
func (b *Builder) resolve(gs []Grant, ids []uint32) {
	share((len(gs)+grantChunk-1)/grantChunk, func(c int) { b.resolveChunk(gs, ids, c) })
}

// share runs work(0) to work(n-1) on the calling goroutine and one more,
// each by whichever takes it first, so that a second goroutine that does
// not get to run holds nothing up. The works must touch nothing in common
// but what they only read.
func share(n int, work func(int)) {
	if n < 2 || runtime.GOMAXPROCS(0) < 2 {
		for i := range n {
			work(i)
		}
		return
	}
	var next atomic.Int32
	done := make(chan struct{}, n)
	go func() {
		for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
			work(i)
			done <- struct{}{}
		}
	}()
	mine := 0
	for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
		work(i)
		mine++
	}
	for range n - mine {
		<-done
	}
}

// resolveChunk is resolve of chunk c of gs.
func (b *Builder) resolveChunk(gs []Grant, ids []uint32, c int) {
	x := b.x
	lo, hi := c*grantChunk, min(len(gs), (c+1)*grantChunk)
	keys, ids := b.keys[lo:hi], ids[lo:hi]
	for i := range keys {
		keys[i] = gs[lo+i].Resource
	}
	b.touched[c] = x.res.lookupBatch(keys, ids, b.hashes[lo:hi])
	// A loop of its own, as lookupBatch's, for the nodes' reads.
	for i, res := range ids {
		ids[i] = x.liveNode(res)
	}
	// The subjects are interned one after another, later, where the
	// lookup of each new one would wait on memory in turn: looking them up
	// together here brings what they read into the caches first.
	n := 0
	for i := lo; i < hi; i++ {
		if i == lo || gs[i].Subject != gs[i-1].Subject {
			keys[n] = gs[i].Subject
			n++
		}
	}
	b.touched[c] ^= x.subj.lookupBatch(keys[:n], b.subjects[lo:lo+n], b.hashes[lo:lo+n])
	clear(keys)
}

// subject returns the id of a grant's subject, counting one more reference
// to it. A subject other than the last one's ends the last one's run.
func (b *Builder) subject(name string) uint32 {
	x := b.x
	if b.runSubject != noName && name == b.runName && name != "" {
		x.subjRefs[b.runSubject]++
		return b.runSubject
	}
	b.flushRun()
	s := x.refSubject(name)
	if b.ordered {
		if b.runSubject != noName && name <= b.runName {
			b.ordered, b.order = false, nil
		} else {
			b.order = append(b.order, s)
		}
	}
	b.runSubject, b.runName = s, x.subj.name(s)
	return s
}

// flushRun puts the run's grants in its subject's list.
func (b *Builder) flushRun() {
	if len(b.run) == 0 {
		return
	}
	x, s := b.x, b.runSubject
	if x.bySubject.count(s) == 0 {
		x.bySubject.appendList(s, b.run)
	} else {
		for _, g := range b.run {
			x.bySubject.insert(s, x.bySubject.count(s), g)
		}
	}
	b.run = b.run[:0]
}

// Block implements Sink.
func (b *Builder) Block(bl Block) error {
	if err := b.buildCatalog(); err != nil {
		return err
	}
	if b.x.lookupNode(bl.Resource) == noNode {
		return fmt.Errorf("block of %q: resource %q is not registered", bl.Subject, bl.Resource)
	}
	bl.Subject, bl.Resource, bl.ID, bl.Reason = cloneString(bl.Subject), cloneString(bl.Resource), cloneString(bl.ID), cloneString(bl.Reason)
	bl.Permissions = cloneStrings(bl.Permissions)
	b.x.putBlock(bl)
	return nil
}

// Quota implements Sink.
func (b *Builder) Quota(q Quota) error {
	if err := b.buildCatalog(); err != nil {
		return err
	}
	if b.x.lookupNode(q.Scope) == noNode {
		return fmt.Errorf("quota on %q: scope is not registered", q.Scope)
	}
	q.Scope, q.ResourceType, q.Subject = cloneString(q.Scope), cloneString(q.ResourceType), cloneString(q.Subject)
	b.x.placeQuota(q, false)
	return nil
}

// CreatorRole implements Sink.
func (b *Builder) CreatorRole(c CreatorRole) error {
	if err := b.buildCatalog(); err != nil {
		return err
	}
	b.x.creators[cloneString(c.ResourceType)] = cloneString(c.Role)
	return nil
}

// DefaultQuota implements Sink.
func (b *Builder) DefaultQuota(d DefaultQuota) error {
	if err := b.buildCatalog(); err != nil {
		return err
	}
	d.ScopeType, d.ResourceType = cloneString(d.ScopeType), cloneString(d.ResourceType)
	b.x.putDefaultQuota(d)
	return nil
}

// Admission implements Sink.
func (b *Builder) Admission(a Admission) error {
	if err := b.buildCatalog(); err != nil {
		return err
	}
	if a.Scope != "" && b.x.lookupNode(a.Scope) == noNode {
		return fmt.Errorf("admission rule for %s: scope %q is not registered", a.ResourceType, a.Scope)
	}
	b.x.putAdmission(cloneAdmission(a))
	return nil
}

// cloneAdmission copies the strings of a, which may alias a backend's
// buffers.
func cloneAdmission(a Admission) Admission {
	a.Scope, a.ResourceType = cloneString(a.Scope), cloneString(a.ResourceType)
	a.Join, a.Backstage, a.Stage = cloneString(a.Join), cloneString(a.Backstage), cloneString(a.Stage)
	a.UncountedRoles, a.ExclusiveRoles = cloneStrings(a.UncountedRoles), cloneStrings(a.ExclusiveRoles)
	a.ExclusivePermissions = cloneStrings(a.ExclusivePermissions)
	if l := a.Lobby; l != nil {
		a.Lobby = &Lobby{Admit: cloneString(l.Admit), Role: cloneString(l.Role), Bypass: cloneString(l.Bypass)}
	}
	if m := a.Media; m != nil {
		c := MediaMapping{RoomJoin: cloneString(m.RoomJoin), CanPublish: cloneString(m.CanPublish),
			CanSubscribe: cloneString(m.CanSubscribe), CanPublishData: cloneString(m.CanPublishData),
			RoomAdmin: cloneString(m.RoomAdmin), RoomRecord: cloneString(m.RoomRecord), Hidden: cloneString(m.Hidden)}
		if len(m.CanPublishSources) > 0 {
			c.CanPublishSources = make(map[string]string, len(m.CanPublishSources))
			for k, v := range m.CanPublishSources {
				c.CanPublishSources[cloneString(k)] = cloneString(v)
			}
		}
		a.Media = &c
	}
	return a
}

// buildTree makes the catalog, links the tree, refuses a tree that does not
// hang from root and counts the types below each resource.
func (b *Builder) buildTree() (*Index, error) {
	if err := b.buildCatalog(); err != nil {
		return nil, err
	}
	x := b.x
	for id, parent := range b.parents {
		if parent == noNode {
			continue
		}
		if int(parent) >= len(x.nodes) || x.nodes[parent].flags&nodeLive == 0 {
			return nil, fmt.Errorf("resource %q: parent %q is not registered", x.name(uint32(id)), x.res.name(parent))
		}
		x.link(uint32(id), parent)
	}
	// Every resource must hang from root: a stored cycle would make every
	// walk to root endless.
	reached := 0
	x.walk(x.root, func(uint32) bool { reached++; return true })
	if reached != x.res.Len() {
		return nil, fmt.Errorf("%d resources do not hang from root: their parents form a cycle", x.res.Len()-reached)
	}
	for id := range x.nodes {
		n := &x.nodes[id]
		if n.flags&nodeLive == 0 || uint32(id) == x.root {
			continue
		}
		for a := n.parent; a != noNode; a = x.nodes[a].parent {
			x.typeCounts[typeKey(a, n.typ)]++
		}
	}
	return x, nil
}

// Build links the tree, sorts the grant lists and returns the index at rev.
// The builder must not be used afterwards.
func (b *Builder) Build(rev Revision) (*Index, error) {
	x, err := b.buildTree()
	if err != nil {
		return nil, err
	}
	b.flushRun()
	// Roles compare by name; their ranks in name order say the same.
	rank := roleRanks(x.roleNames)
	for s := range x.subj.maxID() {
		list := x.bySubject.get(uint32(s))
		slices.SortFunc(list, func(a, b subjectGrant) int {
			if a.res != b.res {
				return cmpUint32(a.res, b.res)
			}
			return cmpUint32(rank[a.role], rank[b.role])
		})
		if i := duplicateGrant(list); i >= 0 {
			return nil, fmt.Errorf("grant of %q to %q on %q is loaded twice", x.roleNames[list[i].role], x.subj.name(uint32(s)), x.name(list[i].res))
		}
		created := x.created.get(uint32(s))
		slices.Sort(created)
	}
	// The quotas naming a subject were loaded before the tree was linked.
	x.countSubjectQuotas()
	b.listByResource(rank)
	x.rev = rev
	b.x = nil
	collapseAll(x.huge.moved(x))
	return x, nil
}

// listByResource makes every resource's list of grants from the subjects'
// lists, sorted by role and subject name as resourceGrants keeps them. When
// the subjects came in name order, each resource's list is filled in that
// order and only the roles need sorting. The lists of even and odd shards
// are made apart (see share): each half reads every subject's list, and
// writes and sorts only its own.
func (b *Builder) listByResource(rank []uint32) {
	x := b.x
	counts := make([]uint32, len(x.nodes))
	for s := range x.subj.maxID() {
		for _, g := range x.bySubject.get(uint32(s)) {
			counts[g.res]++
		}
	}
	x.byResource.layout(counts)
	share(2, func(half int) {
		mine := func(res uint32) bool { return int(res%listShards%2) == half }
		if b.ordered {
			for _, s := range b.order {
				for _, g := range x.bySubject.get(s) {
					if mine(g.res) {
						x.byResource.push(g.res, resourceGrant{role: g.role, subj: s, exp: g.exp})
					}
				}
			}
			for id := range uint32(len(x.nodes)) {
				if mine(id) {
					slices.SortStableFunc(x.byResource.get(id), func(a, b resourceGrant) int {
						return cmpUint32(rank[a.role], rank[b.role])
					})
				}
			}
			return
		}
		for s := range uint32(x.subj.maxID()) {
			for _, g := range x.bySubject.get(s) {
				if mine(g.res) {
					x.byResource.push(g.res, resourceGrant{role: g.role, subj: s, exp: g.exp})
				}
			}
		}
		for id := range uint32(len(x.nodes)) {
			if mine(id) {
				slices.SortFunc(x.byResource.get(id), func(a, b resourceGrant) int {
					if a.role != b.role {
						return cmpUint32(rank[a.role], rank[b.role])
					}
					return strings.Compare(x.subj.name(a.subj), x.subj.name(b.subj))
				})
			}
		}
	})
}

// roleRanks numbers the roles in order of name.
func roleRanks(names []string) []uint32 {
	byName := make([]uint32, len(names))
	for i := range byName {
		byName[i] = uint32(i)
	}
	slices.SortFunc(byName, func(a, b uint32) int { return strings.Compare(names[a], names[b]) })
	rank := make([]uint32, len(names))
	for r, id := range byName {
		rank[id] = uint32(r)
	}
	return rank
}

func duplicateGrant(list []subjectGrant) int {
	for i := 1; i < len(list); i++ {
		if list[i].res == list[i-1].res && list[i].role == list[i-1].role {
			return i
		}
	}
	return -1
}

func cmpUint32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cloneStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = cloneString(v)
	}
	return out
}

// Collector is a Sink that keeps every entity in a Snapshot, copying what
// it keeps: for tests, tools and backups that want the values themselves.
type Collector struct {
	Snapshot Snapshot
}

// Permission implements Sink.
func (c *Collector) Permission(p Permission) error {
	p.Name, p.Parents, p.Description = cloneString(p.Name), cloneStrings(p.Parents), cloneString(p.Description)
	c.Snapshot.Permissions = append(c.Snapshot.Permissions, p)
	return nil
}

// Resource implements Sink.
func (c *Collector) Resource(r Resource) error {
	r.Name, r.Parent, r.Creator = cloneString(r.Name), cloneString(r.Parent), cloneString(r.Creator)
	c.Snapshot.Resources = append(c.Snapshot.Resources, r)
	return nil
}

// Role implements Sink.
func (c *Collector) Role(r Role) error {
	r.Name, r.Scope, r.Description = cloneString(r.Name), cloneString(r.Scope), cloneString(r.Description)
	r.Permissions, r.AssignableRoles, r.BindableOn = cloneStrings(r.Permissions), cloneStrings(r.AssignableRoles), cloneStrings(r.BindableOn)
	c.Snapshot.Roles = append(c.Snapshot.Roles, r)
	return nil
}

// Grant implements Sink.
func (c *Collector) Grant(g Grant) error {
	g.Subject, g.Role, g.Resource = cloneString(g.Subject), cloneString(g.Role), cloneString(g.Resource)
	c.Snapshot.Grants = append(c.Snapshot.Grants, g)
	return nil
}

// Block implements Sink.
func (c *Collector) Block(b Block) error {
	b.Subject, b.Resource, b.ID, b.Reason = cloneString(b.Subject), cloneString(b.Resource), cloneString(b.ID), cloneString(b.Reason)
	b.Permissions = cloneStrings(b.Permissions)
	c.Snapshot.Blocks = append(c.Snapshot.Blocks, b)
	return nil
}

// Quota implements Sink.
func (c *Collector) Quota(q Quota) error {
	q.Scope, q.ResourceType, q.Subject = cloneString(q.Scope), cloneString(q.ResourceType), cloneString(q.Subject)
	c.Snapshot.Quotas = append(c.Snapshot.Quotas, q)
	return nil
}

// CreatorRole implements Sink.
func (c *Collector) CreatorRole(cr CreatorRole) error {
	cr.ResourceType, cr.Role = cloneString(cr.ResourceType), cloneString(cr.Role)
	c.Snapshot.CreatorRoles = append(c.Snapshot.CreatorRoles, cr)
	return nil
}

// DefaultQuota implements Sink.
func (c *Collector) DefaultQuota(d DefaultQuota) error {
	d.ScopeType, d.ResourceType = cloneString(d.ScopeType), cloneString(d.ResourceType)
	c.Snapshot.DefaultQuotas = append(c.Snapshot.DefaultQuotas, d)
	return nil
}

// Admission implements Sink.
func (c *Collector) Admission(a Admission) error {
	c.Snapshot.Admissions = append(c.Snapshot.Admissions, cloneAdmission(a))
	return nil
}
