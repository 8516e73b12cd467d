package authz

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// Index is the in-memory state that answers checks without touching disk. It
// is built from a snapshot and kept current only by Apply, with the change
// sets a backend has committed, so any backend that can stream its commits
// can feed it.
//
// Subjects, resources and resource types are interned to integers, and
// grants kept in pointer-free lists by subject and by resource, so that the
// garbage collector has almost nothing to scan however large the index
// grows (see names and lists).
//
// Two locks guard it. Check and the other short reads take mu. Planning a
// write and reading a page of an admin list take view, which may be held
// for longer. Apply takes view and then mu, so it changes nothing under
// either kind of reader; a slow admin read therefore delays the next Apply,
// but never a Check, which waits only for Apply's own short section.
type Index struct {
	mu       sync.RWMutex
	view     sync.RWMutex
	rev      Revision
	changed  chan struct{} // closed and replaced at every Apply
	replaced chan struct{} // closed when the engine switches to a fresh index
	once     sync.Once
	clock    Clock
	broken   error // set when a change set could not be applied

	cat *catalog

	res        *names // resource names; the id is the index into nodes
	nodes      []node
	types      *names            // resource types
	typeRefs   []uint32          // resources of each type
	typeCounts map[uint64]uint32 // descendants of each type below a resource: typeKey(rid, type)
	root       uint32

	subj     *names
	subjRefs []uint32 // what refers to each subject: grants, blocks, creations, quotas

	roleIDs     map[string]uint32
	roleNames   []string
	roleDefs    map[uint64]*roleDef // roleKey(scope, role)
	roleScopes  map[uint32][]uint32 // role -> resources that define it
	rolesAt     map[uint32][]uint32 // resource -> roles defined there, by name
	roleHolders []int               // grants of each role, expired or not
	// listedBy are, for each name some definition lists in
	// assignable_roles, the roles of the definitions listing it, one entry
	// a definition, in no order: a write that changes a role's definition finds
	// the roles whose holders may hand it out here, not by reading every
	// definition's list.
	listedBy map[string][]uint32

	bySubject  lists[subjectGrant]  // sorted by resource, then role name
	byResource lists[resourceGrant] // sorted by role, then subject
	grants     int
	created    lists[uint32] // by subject: resources it registered, sorted

	blocks     map[uint64][]*blockEntry // pairKey(subject, resource), sorted by ID
	subjBlocks map[uint32][]uint32      // subject -> resources where it is blocked, sorted
	blockedOn  map[uint32][]uint32      // resource -> subjects blocked there, sorted
	nblocks    int

	quotas        map[uint32][]Quota        // scope -> its quotas, by type and subject
	subjectUse    map[subjectQuotaKey]int   // what counts against each quota that names a subject
	creators      map[string]string         // resource type -> creator role
	defaultQuotas map[string][]DefaultQuota // scope type -> its default quotas

	admissions map[string]map[uint32]*Admission // resource type -> scope -> rule
	stages     map[uint32]stage                 // calls' schedules, where set

	huge hugeArrays // where the arrays were when huge pages were last asked for

	// epoch tells this index apart from any other built of the same data
	// (on another replica, after a restart or a reload), which numbers its
	// names otherwise: a page token that holds such numbers holds it too.
	epoch string
	// sealKey seals the page tokens of lookups, which hold a revision and
	// a time that a caller must not choose: only this index can make one
	// it accepts (see pageToken.seal).
	sealKey []byte
}

// node is a registered resource. Children form a doubly linked list through
// first, next and prev, so that a subtree is walked in what it holds and a
// move relinks in constant time.
type node struct {
	parent, first, next, prev uint32
	children                  uint32
	creator                   uint32 // subject id + 1; 0 when none
	typ                       uint32
	flags                     uint8
}

const (
	nodeLive   uint8 = 1 << iota
	nodeRoles        // role definitions are made here
	nodeBlocks       // some subject is blocked here
	nodeQuotas       // quotas are set here
)

// subjectGrant is a grant as its subject's list holds it.
type subjectGrant struct {
	res  uint32
	role uint32
	exp  int64 // unix nanoseconds; 0 for never
}

// resourceGrant is a grant as its resource's list holds it.
type resourceGrant struct {
	role uint32
	subj uint32
	exp  int64
}

type roleDef struct {
	Role
	perms bitset
}

type blockEntry struct {
	Block
	perms bitset // nil: every permission
	exp   int64
}

func typeKey(rid, typ uint32) uint64     { return uint64(rid)<<32 | uint64(typ) }
func roleKey(rid, role uint32) uint64    { return uint64(rid)<<32 | uint64(role) }
func pairKey(subject, rid uint32) uint64 { return uint64(subject)<<32 | uint64(rid) }

func expiry(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func live(expires, now int64) bool { return expires == 0 || expires > now }

// expiredNote says, for a refusal that names a grant, that it has expired
// at now, the write's instant: no listing shows it, and a Revoke still
// removes it.
func expiredNote(exp, now int64) string {
	if live(exp, now) {
		return ""
	}
	return fmt.Sprintf(" (expired at %s: listings leave it out, and Revoke removes it)", expiryTime(exp).UTC().Format(time.RFC3339))
}

func expiryTime(exp int64) time.Time {
	if exp == 0 {
		return time.Time{}
	}
	return time.Unix(0, exp).UTC()
}

// NewIndex builds an index from a snapshot, reading time from the system
// clock.
func NewIndex(s Snapshot) (*Index, error) {
	b := NewBuilder(SystemClock{})
	if err := s.Load(b); err != nil {
		return nil, err
	}
	return b.Build(s.Revision)
}

func newIndex(clock Clock) *Index {
	x := &Index{
		epoch:         strconv.FormatUint(rand.Uint64(), 36),
		sealKey:       newSealKey(),
		changed:       make(chan struct{}),
		replaced:      make(chan struct{}),
		clock:         clock,
		res:           newNames(),
		types:         newNames(),
		typeCounts:    map[uint64]uint32{},
		subj:          newNames(),
		roleIDs:       map[string]uint32{},
		roleDefs:      map[uint64]*roleDef{},
		roleScopes:    map[uint32][]uint32{},
		rolesAt:       map[uint32][]uint32{},
		listedBy:      map[string][]uint32{},
		blocks:        map[uint64][]*blockEntry{},
		subjBlocks:    map[uint32][]uint32{},
		blockedOn:     map[uint32][]uint32{},
		quotas:        map[uint32][]Quota{},
		subjectUse:    map[subjectQuotaKey]int{},
		creators:      map[string]string{},
		defaultQuotas: map[string][]DefaultQuota{},
		admissions:    map[string]map[uint32]*Admission{},
		stages:        map[uint32]stage{},
	}
	x.cat, _ = newCatalog(nil, "permissions")
	x.root = x.addNode(RootName, noNode)
	return x
}

// Revision is the revision of the last change set applied.
func (x *Index) Revision() Revision {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.rev
}

// Broken returns the error of a change set the index could not apply, or
// nil. A broken index must be rebuilt from a snapshot.
func (x *Index) Broken() error {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.broken
}

// Apply brings committed change sets into the index, in revision order. A
// change set at or below the index's revision is skipped, so a feed may
// replay. A change set that does not fit the index (it names a resource that
// is not registered, a move that would form a cycle) is an error that marks
// the index broken: it keeps answering at the revision it had, and refuses
// every later change set.
func (x *Index) Apply(css ...ChangeSet) error {
	moved, err := x.applyAll(css)
	// Huge pages for the arrays that grew, once readers may read again.
	collapseAll(moved)
	return err
}

// applyAll is Apply, but for huge pages: it returns the arrays that moved.
func (x *Index) applyAll(css []ChangeSet) ([]hugeArray, error) {
	x.view.Lock()
	defer x.view.Unlock()
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.broken != nil {
		return nil, x.broken
	}
	applied := false
	for i := range css {
		cs := &css[i]
		if cs.Revision <= x.rev {
			continue
		}
		if err := x.fits(cs); err != nil {
			x.broken = fmt.Errorf("change set at revision %d: %w", cs.Revision, err)
			break
		}
		if err := x.apply(cs); err != nil {
			x.broken = fmt.Errorf("change set at revision %d: %w", cs.Revision, err)
			break
		}
		x.rev = cs.Revision
		applied = true
	}
	if !applied {
		return nil, x.broken
	}
	close(x.changed)
	x.changed = make(chan struct{})
	return x.huge.moved(x), x.broken
}

// fits refuses a change set before any of it is applied when it names a
// resource that neither is registered nor is registered earlier in the set.
func (x *Index) fits(cs *ChangeSet) error {
	created := map[string]bool{} // registered (true) or deleted (false) earlier in the set
	exists := func(name string) bool {
		if v, ok := created[name]; ok {
			return v
		}
		return x.lookupNode(name) != noNode
	}
	need := func(what, name string) error {
		if !exists(name) {
			return fmt.Errorf("%s names resource %q, which is not registered", what, name)
		}
		return nil
	}
	for _, c := range cs.Changes {
		if err := c.Check(); err != nil {
			return err
		}
		var err error
		switch c.Op {
		case OpPutResource:
			if c.Resource.Name == RootName {
				err = fmt.Errorf("root cannot be put")
			} else if err = need("put_resource's parent", c.Resource.Parent); err == nil {
				created[c.Resource.Name] = true
			}
		case OpDeleteResource:
			if c.Resource.Name == RootName {
				err = fmt.Errorf("root cannot be deleted")
			}
			created[c.Resource.Name] = false
		case OpPutRole:
			err = need("put_role", c.Role.Scope)
		case OpPutGrant:
			err = need("put_grant", c.Grant.Resource)
		case OpPutBlock:
			err = need("put_block", c.Block.Resource)
		case OpPutQuota:
			err = need("put_quota", c.Quota.Scope)
		case OpPutAdmission:
			if c.Admission.Scope != "" {
				err = need("put_admission", c.Admission.Scope)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (x *Index) apply(cs *ChangeSet) error {
	// Catalog changes are gathered first and the catalog rebuilt once.
	var catalogChanges map[string]*Permission // nil value: deleted
	for _, c := range cs.Changes {
		if c.Permission != nil {
			if catalogChanges == nil {
				catalogChanges = map[string]*Permission{}
			}
			if c.Op == OpPutPermission {
				catalogChanges[c.Permission.Name] = c.Permission
			} else {
				catalogChanges[c.Permission.Name] = nil
			}
		}
	}
	if catalogChanges != nil {
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
		cat, err := newCatalog(perms, "permissions")
		if err != nil {
			return err
		}
		x.cat = cat
	}
	for _, c := range cs.Changes {
		var err error
		switch c.Op {
		case OpPutResource:
			err = x.putResource(*c.Resource)
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
			x.deleteBlock(*c.Block)
		case OpPutQuota:
			x.putQuota(*c.Quota)
		case OpDeleteQuota:
			x.deleteQuota(*c.Quota)
		case OpPutCreatorRole:
			x.creators[c.CreatorRole.ResourceType] = c.CreatorRole.Role
		case OpDeleteCreatorRole:
			delete(x.creators, c.CreatorRole.ResourceType)
		case OpPutDefaultQuota:
			x.putDefaultQuota(*c.DefaultQuota)
		case OpDeleteDefaultQuota:
			x.deleteDefaultQuota(*c.DefaultQuota)
		case OpPutAdmission:
			x.putAdmission(*c.Admission)
		case OpDeleteAdmission:
			x.deleteAdmission(c.Admission.Scope, c.Admission.ResourceType)
		}
		if err != nil {
			return err
		}
	}
	if catalogChanges != nil {
		x.rebuildPermissionSets()
	}
	return nil
}

// Counts returns how many resources (root aside), grants and blocks the
// index holds.
func (x *Index) Counts() (resources, grants, blocks int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.res.Len() - 1, x.grants, x.nblocks
}

// ErrReplaced is WaitFor's answer once the engine has switched to a fresh
// index: this one applies nothing more, and the revision is to be awaited
// on the engine's current index.
var ErrReplaced = errors.New("the index was replaced by one loaded from a snapshot")

// WaitFor returns once the index has applied rev, or with ctx's error, or
// with ErrReplaced when a fresh index takes its place.
func (x *Index) WaitFor(ctx context.Context, rev Revision) error {
	for {
		x.mu.RLock()
		cur, ch, broken := x.rev, x.changed, x.broken
		x.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		if broken != nil {
			return broken
		}
		// An index replaced after a compaction is not broken, and is
		// never applied to again: without this a waiter would sleep until
		// its deadline while the fresh index already has its revision.
		select {
		case <-ch:
		case <-x.replaced:
			return ErrReplaced
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// changedSince returns a channel closed at the next Apply, and the revision
// until then.
func (x *Index) changedSince() (<-chan struct{}, Revision) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.changed, x.rev
}

// markReplaced tells whoever waits on x that a fresh index took its place.
func (x *Index) markReplaced() { x.once.Do(func() { close(x.replaced) }) }

// now is the index clock's reading in unix nanoseconds.
func (x *Index) now() int64 { return x.clock.Now().UnixNano() }

// rebuildPermissionSets recomputes every bitset after the catalog changed,
// since permission numbers follow the catalog's order.
func (x *Index) rebuildPermissionSets() {
	for k, d := range x.roleDefs {
		x.roleDefs[k] = &roleDef{Role: d.Role, perms: x.cat.closure(d.Permissions)}
	}
	for k, list := range x.blocks {
		for i, b := range list {
			list[i] = x.blockEntry(b.Block)
		}
		x.blocks[k] = list
	}
}

// internRole returns a role name's number, adding it if needed.
func (x *Index) internRole(name string) uint32 {
	if id, ok := x.roleIDs[name]; ok {
		return id
	}
	id := uint32(len(x.roleNames))
	name = cloneString(name)
	x.roleIDs[name] = id
	x.roleNames = append(x.roleNames, name)
	x.roleHolders = append(x.roleHolders, 0)
	return id
}

// roleID returns a role name's number, or noName.
func (x *Index) roleID(name string) uint32 {
	if id, ok := x.roleIDs[name]; ok {
		return id
	}
	return noName
}

// refSubject returns a subject's id, adding it if needed, and counts one
// more reference to it.
func (x *Index) refSubject(name string) uint32 { return ref(x.subj, &x.subjRefs, name) }

// ref interns name in t and counts one more reference to it in refs.
func ref(t *names, refs *[]uint32, name string) uint32 {
	id, added := t.intern(name)
	if added {
		for int(id) >= len(*refs) {
			*refs = append(*refs, 0)
		}
		(*refs)[id] = 0
	}
	(*refs)[id]++
	return id
}

// unref drops one reference to id, forgetting it in t at the last.
func unref(t *names, refs []uint32, id uint32) {
	if refs[id]--; refs[id] == 0 {
		t.release(id)
	}
}

// unrefSubject drops one reference, forgetting the subject at the last.
func (x *Index) unrefSubject(id uint32) { unref(x.subj, x.subjRefs, id) }

func cloneString(s string) string { return string([]byte(s)) }
