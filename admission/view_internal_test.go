package admission

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage/memory"
)

// viewWorld is an engine on a memory backend with one call a member role
// joins, and a manager over it, on a manual clock.
func viewWorld(t testing.TB) (*Manager, *authz.Engine, *authz.ManualClock) {
	t.Helper()
	clock := authz.NewManualClock(time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC))
	eng, err := authz.Start(t.Context(), memory.New(), authz.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}, {Name: "send-audio"}},
		Resources:   []authz.Resource{{Name: "account:acme"}, {Name: "call:acme:1", Parent: "account:acme"}},
		Roles: []authz.Role{
			{Name: "member", Scope: "root", Permissions: []string{"call.join", "send-audio"}},
			{Name: "listener", Scope: "root", Permissions: []string{"call.join"}},
		},
		Admissions: []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: time.Minute}},
	}
	if _, _, err := eng.ApplyPolicy(t.Context(), authz.Author{Caller: "test"}, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	m := New(eng, Options{Store: NewMemoryStore(MemoryOptions{Clock: clock})})
	t.Cleanup(func() { m.Close() })
	return m, eng, clock
}

// The view looks again at a session when one of its subject's grants
// expires: one due entry per session, however many writes touch it, and
// none once it ends, so an ended session is not held in memory.
func TestTheViewKeepsOneDueEntryPerSession(t *testing.T) {
	m, eng, clock := viewWorld(t)
	ctx, by := context.Background(), authz.Author{Caller: "test"}
	// An expiring grant gives the session a time to be looked at again.
	if _, err := eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: "call:acme:1", Expires: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r, err := m.Join(ctx, "user:a", "call:acme:1", 0)
	if err != nil || r.Outcome != Admitted {
		t.Fatalf("Join = %+v, %v", r, err)
	}
	dues := func() int {
		m.v.mu.Lock()
		defer m.v.mu.Unlock()
		return m.v.dues.Len()
	}
	w, err := m.Watch("call:acme:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next := func(kind EventKind) {
		t.Helper()
		for {
			select {
			case ev, ok := <-w.C:
				if !ok {
					t.Fatalf("the watch ended: %v", w.Err())
				}
				if ev.Kind == kind {
					return
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no event of kind %d", kind)
			}
		}
	}
	const writes = 4_000
	for i := range writes {
		// Each write touches user:a in the call and changes nothing it
		// holds; the earliest expiry stays the first grant's.
		g := authz.Grant{Subject: "user:a", Role: "listener", Resource: "call:acme:1", Expires: clock.Now().Add(2*time.Hour + time.Duration(i)*time.Second)}
		if _, err := eng.Grant(ctx, by, g); err != nil {
			t.Fatal(err)
		}
	}
	// A mute, after them, changes what user:a holds: once the watch tells
	// of it, the view has looked at every write before.
	if _, _, err := eng.Block(ctx, by, authz.Block{Subject: "user:a", Resource: "call:acme:1", Permissions: []string{"send-audio"}}); err != nil {
		t.Fatal(err)
	}
	next(EventChanged)
	if got := dues(); got != 1 {
		t.Errorf("after %d writes touching one session: %d due entries, want 1", writes, got)
	}
	if err := m.Leave(ctx, r.Session); err != nil {
		t.Fatal(err)
	}
	next(EventLeft)
	if got := dues(); got != 0 {
		t.Errorf("after the session ended: %d due entries hold it, want 0", got)
	}
}

// stuckStore is a store out of reach: End and Mark wait for their context,
// and count the calls.
type stuckStore struct {
	Store
	ends, marks *atomic.Int32
}

func (s stuckStore) End(ctx context.Context, _ string, _ Ending) (Session, error) {
	s.ends.Add(1)
	<-ctx.Done()
	return Session{}, ctx.Err()
}

func (s stuckStore) Mark(ctx context.Context, _ string, _ bool, _ []string) (Session, error) {
	s.marks.Add(1)
	<-ctx.Done()
	return Session{}, ctx.Err()
}

// The view's own writes to a store that does not answer, ejections and
// sessions' marks, give up after Options.StoreWait, and the first to give
// up ends the pass: the Join it runs on returns after one wait, not one for
// each write, and the marks are kept for a later pass.
func TestViewWritesToAStoreOutOfReachGiveUp(t *testing.T) {
	_, eng, clock := viewWorld(t)
	if got := New(eng, Options{}).v.storeWait; got != DefaultStoreWait {
		t.Errorf("a view of no StoreWait waits %s on the store, want %s", got, DefaultStoreWait)
	}
	store := stuckStore{Store: NewMemoryStore(MemoryOptions{Clock: clock}), ends: new(atomic.Int32), marks: new(atomic.Int32)}
	m := New(eng, Options{Store: store, StoreWait: 20 * time.Millisecond})
	t.Cleanup(func() { m.Close() })
	v := m.v
	v.mu.Lock()
	for _, id := range []string{"s-1", "s-2"} {
		v.add(&tracked{s: Session{ID: id, Subject: "user:" + id, Call: "call:acme:1", Counted: true}})
		v.remarks[id] = true
	}
	v.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		v.followUp([]ejection{{id: "s-1", why: Ending{Why: Ejected}}, {id: "s-2", why: Ending{Why: Ejected}}})
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second): // DefaultStoreWait is 5 s
		t.Fatal("the view's writes to a store out of reach did not give up after StoreWait")
	}
	if ends := store.ends.Load(); ends != 1 {
		t.Errorf("the pass tried %d ejections of a store out of reach, want 1", ends)
	}
	// The view's own passes may be trying the marks: once none is, they
	// are kept.
	v.markMu.Lock()
	defer v.markMu.Unlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.remarks["s-1"] || !v.remarks["s-2"] {
		t.Errorf("the marks left are %v, want both kept for the next pass", v.remarks)
	}
}
