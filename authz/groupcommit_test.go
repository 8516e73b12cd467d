package authz_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// "concurrent writes are group-committed" (DESIGN.md, Storage): grants that
// touch different bindings share backend transactions, each still answered
// with its own revision after its commit.
func TestConcurrentGrantsAreGroupCommitted(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.be.setDelay(2 * time.Millisecond)
	start, batches := w.idx.Revision(), w.be.transactions()
	const n = 64
	revs := make([]authz.Revision, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			revs[i], errs[i] = w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: fmt.Sprintf("user:g%d", i), Role: "call-member", Resource: "call:livestream:42"})
		})
	}
	wg.Wait()
	acknowledged(w, "user:g", start, revs, errs)
	if used := w.be.transactions() - batches; used >= n/2 {
		t.Errorf("%d grants took %d backend transactions; want them grouped", n, used)
	}
}

// Writes that touch the same binding, or an exclusive write, wait for the
// batch in flight, so each is planned on what the others did: the last of
// many grants and revokes of one binding decides, and a resource deleted
// while grants on it stream in takes them all with it.
func TestConflictingWritesSeeEachOther(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.be.setDelay(time.Millisecond)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			g := authz.Grant{Subject: "user:flip", Role: "call-member", Resource: "call:livestream:42"}
			if i%2 == 0 {
				w.eng.Grant(w.ctx, w.by, g)
			} else {
				w.eng.Revoke(w.ctx, w.by, g)
			}
		})
	}
	w.put("call:livestream:77", "calltype:livestream")
	for i := range 16 {
		wg.Go(func() {
			w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: fmt.Sprintf("user:d%d", i), Role: "call-member", Resource: "call:livestream:77"})
		})
	}
	wg.Go(func() {
		if _, err := w.eng.DeleteResource(w.ctx, w.by, "call:livestream:77"); err != nil {
			t.Errorf("DeleteResource: %v", err)
		}
	})
	wg.Wait()
	// In commit order, every committed change must make sense on the state
	// before it: no grant of a binding already held, no revoke of one not
	// held, no grant on a resource already deleted.
	held, deleted := false, false
	for _, cs := range w.be.committed() {
		for _, c := range cs.Changes {
			switch {
			case c.Op == authz.OpPutGrant && c.Grant.Subject == "user:flip":
				if held {
					t.Errorf("revision %d grants user:flip again while held: planned on a stale view", cs.Revision)
				}
				held = true
			case c.Op == authz.OpDeleteGrant && c.Grant.Subject == "user:flip":
				if !held {
					t.Errorf("revision %d revokes user:flip while not held: planned on a stale view", cs.Revision)
				}
				held = false
			case c.Op == authz.OpDeleteResource && c.Resource.Name == "call:livestream:77":
				deleted = true
			case c.Op == authz.OpPutGrant && c.Grant.Resource == "call:livestream:77" && deleted:
				t.Errorf("revision %d grants on call:livestream:77 after its deletion", cs.Revision)
			}
		}
	}
	if got := w.check("user:flip", "join-call", "call:livestream:42").Allowed; got != held {
		t.Errorf("the index says user:flip holds the binding: %v; the log says %v", got, held)
	}
	if grants, _, _, err := w.idx.ListGrants(authz.GrantFilter{Resource: "call:livestream:77"}, 0, ""); err == nil || len(grants) != 0 {
		t.Errorf("grants on the deleted resource: %v, %v", grants, err)
	}
}

// newGatheringWorld is newWorld whose engine gathers writes for up to
// gather: a second engine on the world's backend, once the policy is in.
func newGatheringWorld(t *testing.T, p authz.Policy, gather time.Duration) *world {
	w := newWorld(t, p)
	eng, err := authz.Start(t.Context(), w.be, authz.Options{Clock: w.clock, Gather: gather})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(eng.Close)
	w.eng, w.idx = eng, eng.Index()
	return w
}

// grantEvery starts n grants of distinct subjects, one every gap, and
// returns what each answered once all have.
func grantEvery(w *world, ctxs []context.Context, gap time.Duration) ([]authz.Revision, []error) {
	revs := make([]authz.Revision, len(ctxs))
	errs := make([]error, len(ctxs))
	var wg sync.WaitGroup
	for i, ctx := range ctxs {
		if i > 0 {
			time.Sleep(gap)
		}
		wg.Go(func() {
			revs[i], errs[i] = w.eng.Grant(ctx, w.by, authz.Grant{Subject: fmt.Sprintf("user:s%d", i), Role: "call-member", Resource: "call:livestream:42"})
			// Acknowledged only once the backend has committed it.
			if errs[i] == nil && authz.Revision(w.be.count()) < revs[i] {
				w.t.Errorf("grant %d acknowledged at revision %d before the backend committed it", i, revs[i])
			}
		})
	}
	wg.Wait()
	return revs, errs
}

// With Options.Gather, writes that arrive one after another within the
// window share one transaction, each acknowledged with its own revision
// after the transaction committed.
func TestGatheredWritesShareATransaction(t *testing.T) {
	w := newGatheringWorld(t, streamPolicy(), 500*time.Millisecond)
	start, batches := w.idx.Revision(), w.be.transactions()
	ctxs := slices.Repeat([]context.Context{w.ctx}, 8)
	revs, errs := grantEvery(w, ctxs, 5*time.Millisecond)
	acknowledged(w, "user:s", start, revs, errs)
	// Sent one by one, 5 ms apart, each would be a transaction of its own.
	// The first finds the engine idle and goes at once; the others gather.
	if used := w.be.transactions() - batches; used > 3 {
		t.Errorf("8 grants 5 ms apart took %d transactions; want them gathered into two or three", used)
	}
}

// A write that finds the engine idle is not held for the window: gathering
// is for writes that stream in.
func TestALoneWriteIsNotGathered(t *testing.T) {
	w := newGatheringWorld(t, streamPolicy(), time.Hour)
	ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
	defer cancel()
	if _, errs := grantEvery(w, []context.Context{ctx}, 0); errs[0] != nil {
		t.Fatalf("a lone grant with an hour's window: %v; want it committed at once", errs[0])
	}
}

// warm commits one grant, so that the writes that follow within the window
// stream in and are gathered.
func warm(w *world) {
	w.t.Helper()
	if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:warm", Role: "call-member", Resource: "call:livestream:42"}); err != nil {
		w.t.Fatal(err)
	}
}

// A full batch goes to the backend at once, without waiting out the window.
func TestGatherEndsWhenTheBatchIsFull(t *testing.T) {
	w := newGatheringWorld(t, streamPolicy(), time.Hour)
	warm(w)
	const n = 64 // maxBatch
	began := time.Now()
	_, errs := grantEvery(w, slices.Repeat([]context.Context{w.ctx}, n), 0)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
	}
	if took := time.Since(began); took > time.Minute {
		t.Errorf("a full batch took %v with an hour's window; want it sent once full", took)
	}
}

// Writes that come many at a time batch by themselves while one batch
// commits: after a batch of many, the next write is not held for the
// window, which would only add to every caller's wait.
func TestAfterALargeBatchWritesAreNotGathered(t *testing.T) {
	w := newGatheringWorld(t, streamPolicy(), time.Hour)
	warm(w)
	if _, errs := grantEvery(w, slices.Repeat([]context.Context{w.ctx}, 64), 0); errs[0] != nil {
		t.Fatal(errs[0])
	}
	ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
	defer cancel()
	if _, err := w.eng.Grant(ctx, w.by, authz.Grant{Subject: "user:after", Role: "call-member", Resource: "call:livestream:42"}); err != nil {
		t.Fatalf("a grant after a full batch, with an hour's window: %v; want it committed at once", err)
	}
}

// A caller that gives up while its write is being gathered gets its
// context's error and is not written; the others of the batch are.
func TestGatheredWriteCancelledAlone(t *testing.T) {
	w := newGatheringWorld(t, streamPolicy(), time.Second)
	warm(w)
	start := w.idx.Revision()
	gone, cancel := context.WithCancel(w.ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	_, errs := grantEvery(w, []context.Context{w.ctx, gone, w.ctx}, 5*time.Millisecond)
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("the grants not cancelled: %v, %v; want both committed", errs[0], errs[2])
	}
	if !errors.Is(errs[1], context.Canceled) {
		t.Errorf("the grant cancelled while gathered = %v, want context.Canceled", errs[1])
	}
	if got := w.idx.Revision(); got != start+2 {
		t.Errorf("revision %d after two grants from %d", got, start)
	}
	if d := w.check("user:s1", "join-call", "call:livestream:42"); d.Allowed {
		t.Errorf("the cancelled grant was written: %+v", d)
	}
}

// A gathered batch whose transaction fails fails every write in it, and
// none is in the index: as for any batch.
func TestGatheredBatchFailsWhole(t *testing.T) {
	w := newGatheringWorld(t, streamPolicy(), time.Second)
	warm(w)
	start, batches := w.idx.Revision(), w.be.transactions()
	diskFull := errors.New("disk full")
	w.be.failNextCommit(diskFull)
	_, errs := grantEvery(w, slices.Repeat([]context.Context{w.ctx}, 3), 5*time.Millisecond)
	if used := w.be.transactions() - batches; used != 1 {
		t.Fatalf("3 grants 5 ms apart took %d transactions; want one", used)
	}
	for i, err := range errs {
		if authz.CodeOf(err) != authz.Unavailable || !errors.Is(err, diskFull) {
			t.Errorf("grant %d of the failed batch = %v, want UNAVAILABLE wrapping the cause", i, err)
		}
	}
	if got := w.idx.Revision(); got != start {
		t.Errorf("revision %d after a failed batch, want %d", got, start)
	}
}

// acknowledged fails the test unless every grant of call-member on
// call:livestream:42 to prefix+i succeeded, is in the index, and the
// grants took the revisions after start once each.
func acknowledged(w *world, prefix string, start authz.Revision, revs []authz.Revision, errs []error) {
	w.t.Helper()
	for i, err := range errs {
		if err != nil {
			w.t.Fatalf("grant %d: %v", i, err)
		}
		if d := w.check(fmt.Sprintf("%s%d", prefix, i), "join-call", "call:livestream:42"); !d.Allowed {
			w.t.Errorf("grant %d acknowledged at revision %d but not in the index: %+v", i, revs[i], d)
		}
	}
	revs = slices.Sorted(slices.Values(revs))
	for i, rev := range revs {
		if rev != start+authz.Revision(i+1) {
			w.t.Fatalf("revisions %v, want %d..%d once each", revs, start+1, start+authz.Revision(len(revs)))
		}
	}
}
