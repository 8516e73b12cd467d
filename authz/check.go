package authz

import (
	"context"
	"strconv"
	"time"
)

// Reason says why a check was decided the way it was.
type Reason uint8

// The reasons of DESIGN.md's Check.
const (
	ReasonGranted Reason = iota + 1
	ReasonBlocked
	ReasonNoGrant
	ReasonUnknownResource
)

// Decision is the answer to one check.
type Decision struct {
	Allowed bool
	Reason  Reason
	// Role is the granting role (ReasonGranted).
	Role string
	// Scope is the resource the deciding grant or block is on.
	Scope string
	// BlockReason and BlockID are the deciding block's (ReasonBlocked).
	BlockReason string
	BlockID     string
}

// Query is one check: may Subject hold Permission on Resource?
type Query struct {
	Subject    string
	Permission string
	Resource   string
}

// Check decides q as DESIGN.md's Check says: an undeclared permission is an
// Invalid error; an unknown resource is a denial; a block on the way to root
// that covers the permission denies; else the nearest unexpired grant whose
// role, resolved at the checked resource, holds the permission allows.
func (x *Index) Check(q Query) (Decision, Revision, error) {
	now := instant{clock: x.clock}
	x.mu.RLock()
	d, err := x.check(q, &now)
	rev := x.rev
	x.mu.RUnlock()
	return d, rev, err
}

// CheckBatch decides every query at one revision. A query that is not valid
// gets its own error, naming its position; the others are answered.
func (x *Index) CheckBatch(qs []Query) ([]Decision, []error, Revision) {
	out, errs, rev, _ := x.CheckBatchContext(context.Background(), qs)
	return out, errs, rev
}

// CheckBatchContext is CheckBatch for a caller that may go away: once ctx
// is done, the batch stops within lookupStride queries and returns ctx's
// error.
//
// A batch starts under the lock Check takes, as a Check does, and one that
// has held it for maxBatchHold leaves it as soon as that holds no one back
// (see batchHold.yield).
func (x *Index) CheckBatchContext(ctx context.Context, qs []Query) ([]Decision, []error, Revision, error) {
	now := instant{clock: x.clock}
	out := make([]Decision, len(qs))
	var errs []error
	x.mu.RLock()
	h := batchHold{x: x, start: time.Now()}
	defer h.release()
	rev := x.rev
	// The queries go lookupStride at a time: their names are looked up
	// together, and their subjects' grant lists read, before any is
	// decided, so that the cache misses of different queries overlap.
	var keys [lookupStride]string
	var hashes [lookupStride]uint64
	var subjects, resources [lookupStride]uint32
	var grants [lookupStride][]subjectGrant
strides:
	for at := 0; at < len(qs); at += lookupStride {
		if err := ctx.Err(); err != nil {
			return nil, nil, x.rev, err
		}
		part := qs[at:min(at+lookupStride, len(qs))]
		for i, q := range part {
			keys[i] = q.Subject
		}
		read := uint64(x.subj.lookupBatch(keys[:len(part)], subjects[:len(part)], hashes[:len(part)]))
		for i, q := range part {
			keys[i] = q.Resource
		}
		read += uint64(x.res.lookupBatch(keys[:len(part)], resources[:len(part)], hashes[:len(part)]))
		for i := range part {
			resources[i] = x.liveNode(resources[i])
			grants[i] = nil
			if s := subjects[i]; s != noName {
				grants[i] = x.bySubject.get(s)
			}
		}
		for i := range part {
			if len(grants[i]) > 0 {
				read += uint64(grants[i][0].res)
			}
		}
		touched(read)
		for i, q := range part {
			if i%yieldEvery == yieldEvery-1 && h.yield() {
				// An Apply went first: every check is asked again, at the
				// revision it left.
				rev, errs, now = x.rev, nil, instant{clock: x.clock}
				clear(out)
				at = -lookupStride
				continue strides
			}
			d, err := x.decide(q, resources[i], "", subjects[i], grants[i], &now)
			if err != nil {
				if errs == nil {
					errs = make([]error, len(qs))
				}
				errs[at+i] = err.(*Error).WithField(checkField(at + i))
				continue
			}
			out[at+i] = d
		}
	}
	return out, errs, rev, nil
}

// batchHold is the lock a CheckBatch holds: the one Check takes (mu) until
// the batch has held it for maxBatchHold, and then, as soon as it may, the
// one of the index's long readers (view), which Apply takes before mu and
// Check never takes.
type batchHold struct {
	x     *Index
	start time.Time
	long  bool // view is held, not mu
}

// yield moves a batch that has held mu for maxBatchHold to view, where an
// Apply waits for it and no Check does; it reports whether the index
// changed meanwhile, for the batch to start again. While an Apply waits
// for view behind another of its readers (an admin read), Checks go on and
// the batch stays where it is, waiting for no one. Once an Apply holds view
// and waits for mu, every Check queues behind it: the batch lets it go
// first, waits for it alone, and goes on under view. Nothing applies under
// view, so a batch starts again at most once.
func (h *batchHold) yield() (changed bool) {
	if h.long || time.Since(h.start) < maxBatchHold {
		return false
	}
	x := h.x
	batchYields()
	if x.view.TryRLock() {
		x.mu.RUnlock()
		h.long = true
		batchMoved(false)
		return false
	}
	if x.mu.TryRLock() {
		// No Apply waits for mu.
		x.mu.RUnlock()
		return false
	}
	rev := x.rev
	x.mu.RUnlock()
	batchMoved(true)
	x.view.RLock()
	h.long = true
	return x.rev != rev
}

func (h *batchHold) release() {
	if h.long {
		h.x.view.RUnlock()
	} else {
		h.x.mu.RUnlock()
	}
}

// yieldEvery is how many checks a CheckBatch decides between two looks at
// how long it has held mu: a look costs a reading of the clock, and a check
// of a subject with thousands of grants on its path up to a millisecond.
const yieldEvery = 8

// maxBatchHold is how long a CheckBatch holds the lock Check takes before
// it moves to view: a batch of a thousand checks of a subject holding a
// hundred roles on each level of a deep path costs a second, which no
// Check should wait for behind an Apply. A variable for the tests.
var maxBatchHold = time.Millisecond

// batchYields is called as a batch that has held mu for maxBatchHold
// looks whether it may leave it, and batchMoved as it moves to view:
// holding it, or (waiting) about to wait for the Apply that holds it.
// Variables for the tests.
var (
	batchYields = func() {}
	batchMoved  = func(waiting bool) {}
)

// touched keeps a read whose only purpose is to bring memory into the cache
// from being compiled away.
//
//go:noinline
func touched(uint64) {}

// lookupStride is how many queries CheckBatch looks up together.
const lookupStride = 64

func checkField(i int) string {
	return "checks[" + strconv.Itoa(i) + "]."
}

func (x *Index) check(q Query, now *instant) (Decision, error) {
	res, resName := x.res.lookupInterned(q.Resource)
	res, s := x.liveNode(res), noName
	if res != noNode {
		s = x.subj.lookup(q.Subject)
	}
	return x.decide(q, res, resName, s, x.bySubject.get(s), now)
}

// decide decides q, whose resource is res (noNode when not registered),
// named resName when the caller has its name at hand ("" when not), and
// whose subject is s (noName when unknown) with the grant list grants.
func (x *Index) decide(q Query, res uint32, resName string, s uint32, grants []subjectGrant, now *instant) (Decision, error) {
	perm := x.cat.id(q.Permission)
	if perm < 0 {
		return Decision{}, errorf(Invalid, "permission", q.Permission, "permission is not declared in the catalog").as(KindUndeclaredPermission)
	}
	if res == noNode {
		return Decision{Reason: ReasonUnknownResource}, nil
	}
	if s == noName {
		return Decision{Reason: ReasonNoGrant}, nil
	}
	var buf [MaxDepth + 1]uint32
	path, flags := x.pathFlags(res, buf[:0])
	if flags&nodeBlocks != 0 {
		if b, at := x.blockingAt(s, path, perm, now); b != nil {
			return Decision{Reason: ReasonBlocked, Scope: x.name(at), BlockReason: b.Reason, BlockID: b.ID}, nil
		}
	}
	if g, ok := x.grantingIn(grants, path, perm, now); ok {
		scope := resName
		if g.res != res || scope == "" {
			scope = x.name(g.res)
		}
		return Decision{Allowed: true, Reason: ReasonGranted, Role: x.roleNames[g.role], Scope: scope}, nil
	}
	return Decision{Reason: ReasonNoGrant}, nil
}

// maxScanned is the longest grant list grantingIn reads in one pass rather
// than searched resource by resource: a position in it fits in a byte.
const maxScanned = 64

// instant is the time a call judges expiries against: the clock is read
// when an expiry first needs it, and that reading serves the rest of the
// call, so a check that meets only grants and blocks that never expire
// does not read the clock at all.
type instant struct {
	clock Clock
	now   int64
	read  bool
}

// readAt is an instant whose clock was read at now.
func readAt(now int64) instant { return instant{now: now, read: true} }

// live reports whether something that expires at exp (0 for never) is
// live at t.
func (t *instant) live(exp int64) bool {
	if exp == 0 {
		return true
	}
	if !t.read {
		t.now, t.read = t.clock.Now().UnixNano(), true
	}
	return exp > t.now
}

// blocking returns the first live block of s on path that covers perm, and
// the resource it is on.
func (x *Index) blocking(s uint32, path []uint32, perm int32, now int64) (*blockEntry, uint32) {
	t := readAt(now)
	return x.blockingAt(s, path, perm, &t)
}

// blockingAt is blocking at the instant now.
func (x *Index) blockingAt(s uint32, path []uint32, perm int32, now *instant) (*blockEntry, uint32) {
	for _, a := range path {
		for _, b := range x.blocksOn(s, a) {
			if b.covers(perm, now) {
				return b, a
			}
		}
	}
	return nil, noNode
}

// granting returns the nearest live grant of s on path whose role, resolved
// at path[0], holds perm.
func (x *Index) granting(s uint32, path []uint32, perm int32, now int64) (subjectGrant, bool) {
	t := readAt(now)
	return x.grantingIn(x.bySubject.get(s), path, perm, &t)
}

// grantingIn is granting for the subject whose grant list is grants, at
// the instant now.
func (x *Index) grantingIn(grants []subjectGrant, path []uint32, perm int32, now *instant) (subjectGrant, bool) {
	if len(grants) == 0 {
		return subjectGrant{}, false
	}
	if len(grants) <= maxScanned {
		// One pass over the list, which reads its memory in order, finds
		// the grants on the path; they are then tried as the walk below
		// tries them: nearest resource first, and in the list's order on
		// one resource.
		var found [maxScanned]uint16 // level<<8 | position in the list
		n := 0
		// A grant whose resource's bit is not set is not on the path.
		var on uint64
		for _, a := range path {
			on |= 1 << (a & 63)
		}
		for i := range grants {
			r := grants[i].res
			if on&(1<<(r&63)) == 0 {
				continue
			}
			for level, a := range path {
				if a == r {
					k := uint16(level)<<8 | uint16(i)
					j := n
					for ; j > 0 && found[j-1] > k; j-- {
						found[j] = found[j-1]
					}
					found[j] = k
					n++
					break
				}
			}
		}
		for _, k := range found[:n] {
			g := grants[k&0xff]
			if now.live(g.exp) {
				if d := x.resolve(path, g.role); d != nil && d.perms.has(perm) {
					return g, true
				}
			}
		}
		return subjectGrant{}, false
	}
	for _, a := range path {
		for _, g := range grantsAt(grants, a) {
			if now.live(g.exp) {
				if d := x.resolve(path, g.role); d != nil && d.perms.has(perm) {
					return g, true
				}
			}
		}
	}
	return subjectGrant{}, false
}

// ListPermissions returns the subject's effective permissions on resource,
// by name, and whether the resource is registered. Usher's own reserved
// permissions (usher.*) are left out unless reserved is true. The list is
// shared by every holder of the same permissions: read it, append to it,
// but do not write its elements.
func (x *Index) ListPermissions(subject, resource string, reserved bool) ([]string, bool, Revision) {
	now := x.now()
	x.mu.RLock()
	defer x.mu.RUnlock()
	res := x.lookupNode(resource)
	if res == noNode {
		return nil, false, x.rev
	}
	set := x.effective(x.subj.lookup(subject), res, now)
	if !reserved {
		set.subtract(x.cat.reserved)
	}
	return x.cat.names(set), true, x.rev
}

// effective is the set Check would allow for subject s at res.
func (x *Index) effective(s, res uint32, now int64) bitset {
	var buf [MaxDepth + 1]uint32
	return x.effectiveOn(s, x.path(res, buf[:0]), now)
}

// effectiveOn is effective for the resource path[0] with its path to root.
func (x *Index) effectiveOn(s uint32, path []uint32, now int64) bitset {
	set := newBitset(len(x.cat.perms))
	if s == noName {
		return set
	}
	for _, a := range path {
		for _, g := range x.grantsOn(s, a) {
			if live(g.exp, now) {
				if d := x.resolve(path, g.role); d != nil {
					set.union(d.perms)
				}
			}
		}
	}
	for _, a := range path {
		for _, b := range x.blocksOn(s, a) {
			if !live(b.exp, now) {
				continue
			}
			if b.perms == nil {
				return newBitset(len(x.cat.perms))
			}
			set.subtract(b.perms)
		}
	}
	return set
}
