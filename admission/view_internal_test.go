package admission

import (
	"context"
	"fmt"
	"math/rand/v2"
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
	r, err := m.Join(ctx, "", "user:a", "call:acme:1", 0)
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
	// A re-join takes the session's place, and its entry: one record of
	// it is current, not the one it had before as well.
	r, err = m.Join(ctx, "", "user:a", "call:acme:1", 0)
	if err != nil || r.Outcome != Admitted {
		t.Fatalf("Join again = %+v, %v", r, err)
	}
	m.v.mu.Lock()
	current := 0
	for i := range m.v.dues.recs {
		if m.v.dues.recs[i].current() {
			current++
		}
	}
	m.v.mu.Unlock()
	if got := dues(); got != 1 || current != 1 {
		t.Errorf("after a re-join: %d due entries with %d current records, want 1 and 1", got, current)
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

func (s stuckStore) Mark(ctx context.Context, _ string, _ bool, _ []string, _ authz.Revision) (Session, error) {
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
	// The sessions' subjects may be there: the view's own passes, which a
	// change set applied late may start, eject no one.
	for _, id := range []string{"s-1", "s-2"} {
		if _, err := eng.Grant(t.Context(), authz.Author{Caller: "test"}, authz.Grant{Subject: "user:" + id, Role: "member", Resource: "call:acme:1"}); err != nil {
			t.Fatal(err)
		}
	}
	store := stuckStore{Store: NewMemoryStore(MemoryOptions{Clock: clock}), ends: new(atomic.Int32), marks: new(atomic.Int32)}
	m := New(eng, Options{Store: store, StoreWait: 20 * time.Millisecond})
	t.Cleanup(func() { m.Close() })
	v := m.v
	v.mu.Lock()
	for _, id := range []string{"s-1", "s-2"} {
		v.add(&tracked{s: place{ID: id, Subject: "user:" + id, Call: "call:acme:1", Counted: true}})
		v.toMark(id, 1)
	}
	v.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		v.followUp(context.Background(), []ejection{{id: "s-1", why: Ending{Why: Ejected}}, {id: "s-2", why: Ending{Why: Ejected}}})
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
	v.markMu.lock(context.Background())
	defer v.markMu.unlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.remarks["s-1"] != 1 || v.remarks["s-2"] != 1 {
		t.Errorf("the marks left are %v, want both kept for the next pass", v.remarks)
	}
}

// Random joins, re-joins, leaves and bans of a few subjects in a few calls
// keep the view's picture the store's: the same live sessions, each in its
// call's and its subject's lists where it says it is, and a banned subject
// out of every call.
func TestTheViewFollowsTheStore(t *testing.T) {
	m, eng, _ := viewWorld(t)
	ctx, by := context.Background(), authz.Author{Caller: "test"}
	calls := []string{"call:acme:1", "call:acme:2", "call:acme:3"}
	for _, c := range calls[1:] {
		if _, err := eng.PutResource(ctx, by, authz.Resource{Name: c, Parent: "account:acme"}); err != nil {
			t.Fatal(err)
		}
	}
	subjects := []string{"user:a", "user:b", "user:c", "user:d"}
	for _, s := range subjects {
		if _, err := eng.Grant(ctx, by, authz.Grant{Subject: s, Role: "member", Resource: "account:acme"}); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 2_000 {
		s, c := subjects[rng.IntN(len(subjects))], calls[rng.IntN(len(calls))]
		switch rng.IntN(10) {
		case 0, 1:
			m.LeaveCall(ctx, s, c) // NotFound when s is not there
		case 2:
			// Banned from one call, then let back in.
			if _, _, err := eng.Block(ctx, by, authz.Block{ID: "ban", Subject: s, Resource: c}); err != nil {
				t.Fatal(err)
			}
			// The view's loop may be sifting the ban already.
			m.v.sift(context.Background())
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
				if _, ok := m.store.SessionOf(c, s); !ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("step %d: %s banned from %s keeps its session", step, s, c)
				}
			}
			if _, err := eng.Unblock(ctx, by, s, c, "ban"); err != nil {
				t.Fatal(err)
			}
		default:
			if r, err := m.Join(ctx, "", s, c, 0); err != nil || r.Outcome != Admitted {
				t.Fatalf("step %d: Join(%s, %s) = %+v, %v", step, s, c, r, err)
			}
		}
		m.v.storeEvents()
		m.v.mu.Lock()
		live := 0
		for _, c := range calls {
			for _, s := range m.store.Sessions(c) {
				live++
				if m.v.sessions[s.ID] == nil {
					t.Fatalf("step %d: the view lacks %s's session %s in %s", step, s.Subject, s.ID, c)
				}
			}
		}
		if err := m.v.listed(live); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		m.v.mu.Unlock()
	}
}

// listed checks that the view holds n sessions, each in its call's and its
// subject's lists where it says it is, and nothing else in the lists. v.mu
// is held.
func (v *view) listed(n int) error {
	// walk counts a list, and checks that it links both ways and holds
	// only sessions of key.
	walk := func(heads map[string]*tracked, l func(*tracked) *links, keyOf func(*tracked) string) (int, error) {
		count, seen := 0, map[*tracked]bool{}
		for key, first := range heads {
			if first == nil || l(first).prev != nil {
				return 0, fmt.Errorf("the list of %s starts with %v, which is not first", key, first)
			}
			for t := first; t != nil; t = l(t).next {
				if next := l(t).next; next != nil && l(next).prev != t {
					return 0, fmt.Errorf("the list of %s does not link back from %s to %s", key, next.s.ID, t.s.ID)
				}
				if keyOf(t) != key || seen[t] || v.sessions[t.s.ID] != t {
					return 0, fmt.Errorf("the list of %s holds session %s of %s in %s, listed twice or not tracked", key, t.s.ID, t.s.Subject, t.s.Call)
				}
				seen[t] = true
				if count++; count > len(v.sessions) {
					return 0, fmt.Errorf("the lists hold more than the %d sessions tracked", len(v.sessions))
				}
			}
		}
		return count, nil
	}
	byCall, err := walk(v.byCall, (*tracked).callLinks, func(t *tracked) string { return t.s.Call })
	if err != nil {
		return err
	}
	bySubject, err := walk(v.bySubject, (*tracked).subjectLinks, func(t *tracked) string { return t.s.Subject })
	if err != nil {
		return err
	}
	if len(v.sessions) != n || byCall != n || bySubject != n {
		return fmt.Errorf("the view holds %d sessions and lists %d by call and %d by subject; want %d", len(v.sessions), byCall, bySubject, n)
	}
	for id, t := range v.sessions {
		if t.s.ID != id {
			return fmt.Errorf("session %s is tracked under %s", t.s.ID, id)
		}
	}
	return nil
}

// scriptedStore hands the view the events it is given, as a store that
// batches them would: the etcd store's watch sends a batch's endings before
// its beginnings, and a replaced session's ending may come with no
// beginning after it.
type scriptedStore struct {
	*MemoryStore
	events []StoreEvent
}

func (s *scriptedStore) Take() []StoreEvent {
	e := s.events
	s.events = nil
	return e
}

// However a store orders a re-join's ending and beginning, the view ends up
// with the sessions that are live, each in its lists once.
func TestTheViewTakesReJoinsInAnyOrder(t *testing.T) {
	_, eng, clock := viewWorld(t)
	ctx, by := context.Background(), authz.Author{Caller: "test"}
	for _, s := range []string{"user:a", "user:b", "user:c"} {
		if _, err := eng.Grant(ctx, by, authz.Grant{Subject: s, Role: "member", Resource: "call:acme:1"}); err != nil {
			t.Fatal(err)
		}
	}
	st := &scriptedStore{MemoryStore: NewMemoryStore(MemoryOptions{Clock: clock})}
	m := New(eng, Options{Store: st})
	t.Cleanup(func() { m.Close() })
	session := func(id, subject string) *Session {
		return &Session{ID: id, Subject: subject, Call: "call:acme:1", Joined: clock.Now(), Expires: clock.Now().Add(time.Minute), Counted: true}
	}
	begin := func(s *Session) StoreEvent { return StoreEvent{Session: s, Time: clock.Now()} }
	end := func(s *Session, why Why) StoreEvent {
		return StoreEvent{Session: s, Ended: &Ending{Why: why}, Time: clock.Now()}
	}
	a1, b1, c1 := session("a1", "user:a"), session("b1", "user:b"), session("c1", "user:c")
	a2, b2, a3 := session("a2", "user:a"), session("b2", "user:b"), session("a3", "user:a")
	for _, step := range []struct {
		name   string
		events []StoreEvent
		live   []string
	}{
		{"three join", []StoreEvent{begin(a1), begin(b1), begin(c1)}, []string{"a1", "b1", "c1"}},
		{"two re-join, the endings first", []StoreEvent{end(a1, Replaced), end(b1, Replaced), begin(a2), begin(b2)}, []string{"a2", "b2", "c1"}},
		{"a replaced session with no beginning after it", []StoreEvent{end(a2, Replaced)}, []string{"b2", "c1"}},
		{"a beginning before the ending it replaces", []StoreEvent{begin(a3), end(b2, Left), end(c1, Replaced)}, []string{"a3"}},
	} {
		st.events = step.events
		m.v.storeEvents()
		m.v.mu.Lock()
		err := m.v.listed(len(step.live))
		for _, id := range step.live {
			if m.v.sessions[id] == nil {
				err = fmt.Errorf("session %s is not in the view", id)
			}
		}
		m.v.mu.Unlock()
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
	}
}

// A watch resuming reads a call's remembered endings through the call's
// links in the ring: the same endings, in the same order, as a pass over
// the whole ring would find, however the ring has wrapped.
func TestTheEndingsOfACallAreThoseTheRingHolds(t *testing.T) {
	calls := []string{"call:a", "call:b", "call:cc", "call:dd"}
	start := time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC)
	for seed := range uint64(500) {
		rng := rand.New(rand.NewPCG(seed, 7))
		v := &view{rememberN: 1 + rng.IntN(8), lastEnded: map[string]endedRef{}}
		rev, at := authz.Revision(1), start
		for i := range rng.IntN(40) {
			rev += authz.Revision(rng.IntN(2))
			at = at.Add(time.Duration(rng.IntN(3)) * time.Second)
			v.remember(calls[rng.IntN(len(calls))], Event{Kind: EventLeft, Revision: rev, Time: at, Session: fmt.Sprint(i)})
		}
		for _, call := range calls {
			for after := authz.Revision(1); after <= rev+1; after++ {
				for _, since := range []time.Time{{}, start, at.Add(-time.Second)} {
					var want []Event
					for i := range v.ended {
						e := v.ended[(v.endedNext+i)%len(v.ended)]
						if e.call == call && (e.ev.Revision >= after || !since.IsZero() && e.ev.Time.After(since)) {
							want = append(want, e.ev)
						}
					}
					got := v.endingsOf(call, after, since)
					if fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("seed %d: the endings of %s at %d or later or since %v = %v; the ring holds %v", seed, call, after, since, got, want)
					}
				}
			}
		}
		if len(v.lastEnded) > len(v.ended) {
			t.Fatalf("seed %d: %d calls' last endings kept for a ring of %d", seed, len(v.lastEnded), len(v.ended))
		}
	}
}

// heldMarks holds every Mark until letGo is closed, and says on entered
// when one has begun.
type heldMarks struct {
	*MemoryStore
	entered chan struct{}
	letGo   chan struct{}
}

func (s heldMarks) Mark(ctx context.Context, id string, counted bool, exclusive []string, at authz.Revision) (Session, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.letGo
	return s.MemoryStore.Mark(ctx, id, counted, exclusive, at)
}

// A pass whose marks another pass took, and is still telling the store,
// returns once the store has them: the pass a Join waits for has its marks
// in the store when it returns, whoever wrote them.
func TestAPassReturnsOnceTheMarksAnotherTookAreStored(t *testing.T) {
	_, eng, clock := viewWorld(t)
	if _, err := eng.Grant(t.Context(), authz.Author{Caller: "test"}, authz.Grant{Subject: "user:a", Role: "member", Resource: "call:acme:1"}); err != nil {
		t.Fatal(err)
	}
	store := heldMarks{MemoryStore: NewMemoryStore(MemoryOptions{Clock: clock}), entered: make(chan struct{}, 1), letGo: make(chan struct{})}
	m := New(eng, Options{Store: store})
	t.Cleanup(func() { m.Close() })
	r, err := m.Join(t.Context(), "", "user:a", "call:acme:1", 0)
	if err != nil || r.Outcome != Admitted {
		t.Fatalf("Join = %+v, %v", r, err)
	}
	v := m.v
	v.mu.Lock()
	v.sessions[r.Session].s.Counted = false
	v.toMark(r.Session, r.Revision)
	v.mu.Unlock()
	go v.mark(context.Background())
	select {
	case <-store.entered:
	case <-time.After(2 * time.Second):
		t.Fatal("the first pass never told the store the marks")
	}
	time.AfterFunc(100*time.Millisecond, func() { close(store.letGo) })
	v.mark(context.Background())
	if s, ok := store.Session(r.Session); !ok || s.Counted {
		t.Errorf("the second pass returned with the session %+v (live %v) in the store, want it no longer counted", s, ok)
	}
}

// A call registered again under the name of a deleted one is another: a
// participant of the first, though it may join the second, is not in it,
// even when the view takes the deletion and the registration in one pass.
func TestASessionEndsWithItsCallThoughANewOneTakesTheName(t *testing.T) {
	m, eng, clock := viewWorld(t)
	ctx, by := context.Background(), authz.Author{Caller: "test"}
	// A member everywhere: it may join a call of the name wherever it is.
	if _, err := eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: authz.RootName}); err != nil {
		t.Fatal(err)
	}
	r, err := m.Join(ctx, "", "user:a", "call:acme:1", 0)
	if err != nil || r.Outcome != Admitted {
		t.Fatalf("Join = %+v, %v", r, err)
	}
	// Both writes committed before the view takes either.
	m.v.siftMu.lock(context.Background())
	if _, err := eng.DeleteResource(ctx, by, "call:acme:1"); err != nil {
		m.v.siftMu.unlock()
		t.Fatal(err)
	}
	// Another account's call of the name, which opens tomorrow.
	for _, res := range []authz.Resource{{Name: "account:other"}, {Name: "call:acme:1", Parent: "account:other", StartsAt: clock.Now().Add(24 * time.Hour)}} {
		if _, err := eng.PutResource(ctx, by, res); err != nil {
			m.v.siftMu.unlock()
			t.Fatal(err)
		}
	}
	m.v.siftMu.unlock()
	got, err := m.KeepAlive(ctx, r.Session)
	if err == nil && got.Outcome == Admitted {
		t.Errorf("KeepAlive of the deleted call's session = %+v: it is in the call registered again under the name", got)
	}
	if sessions := m.store.Sessions("call:acme:1"); len(sessions) != 0 {
		t.Errorf("the call registered again holds %d sessions of the deleted one: %+v", len(sessions), sessions)
	}
}

// A Deny in a call registered again under the name of a deleted one is
// judged in the new call: a subject that waited only in the lobby of the
// deleted one is not waiting, though the view has yet to act on the
// deletion when the Deny comes.
func TestADenyIsNotOfTheKnockOfADeletedCallOfTheName(t *testing.T) {
	clock := authz.NewManualClock(time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC))
	eng, err := authz.Start(t.Context(), memory.New(), authz.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	ctx, by := context.Background(), authz.Author{Caller: "test"}
	p := authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}, {Name: "call.admit"}},
		Resources:   []authz.Resource{{Name: "account:acme"}, {Name: "call:acme:1", Parent: "account:acme"}},
		Roles:       []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions:  []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: time.Minute, Lobby: &authz.Lobby{Admit: "call.admit", Role: "member"}}},
	}
	if _, _, err := eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Grant(ctx, by, authz.Grant{Subject: "user:a", Role: "member", Resource: authz.RootName}); err != nil {
		t.Fatal(err)
	}
	m := New(eng, Options{Store: NewMemoryStore(MemoryOptions{Clock: clock})})
	t.Cleanup(func() { m.Close() })
	if r, err := m.Join(ctx, "", "user:a", "call:acme:1", 0); err != nil || r.Outcome != Lobby {
		t.Fatalf("Join = %+v, %v; want LOBBY", r, err)
	}
	// The view's loop stops: the writes below come before it acts.
	m.v.close()
	if _, err := eng.DeleteResource(ctx, by, "call:acme:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.PutResource(ctx, by, authz.Resource{Name: "call:acme:1", Parent: "account:acme"}); err != nil {
		t.Fatal(err)
	}
	err = m.Deny(ctx, by, "call:acme:1", "user:a")
	if e, ok := err.(*authz.Error); !ok || e.Code != authz.NotFound || e.Kind != authz.KindKnockNotFound || e.Field != "subject" || e.Value != "user:a" {
		t.Errorf("Deny of user:a, who waited only in the deleted call's lobby, = %v; want NOT_FOUND (KNOCK_NOT_FOUND) naming the subject", err)
	}
}
