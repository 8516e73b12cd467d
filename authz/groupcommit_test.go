package authz_test

import (
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
	for i, err := range errs {
		if err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
		if d := w.check(fmt.Sprintf("user:g%d", i), "join-call", "call:livestream:42"); !d.Allowed {
			t.Errorf("grant %d acknowledged at revision %d but not in the index: %+v", i, revs[i], d)
		}
	}
	slices.Sort(revs)
	for i, rev := range revs {
		if rev != start+authz.Revision(i+1) {
			t.Fatalf("revisions %v, want %d..%d once each", revs, start+1, start+n)
		}
	}
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
