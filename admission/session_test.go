package admission_test

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage/memory"
)

// newWorldWith is newWorld with the manager's options, its store on the
// world's clock when opts names none.
func newWorldWith(t *testing.T, opts admission.Options, mem admission.MemoryOptions) (*world, admission.Store) {
	t.Helper()
	clock := authz.NewManualClock(start)
	eng, err := authz.Start(t.Context(), memory.New(), authz.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	w := &world{t: t, ctx: t.Context(), eng: eng, clock: clock, by: authz.Author{Caller: "test"}}
	if _, _, err := eng.ApplyPolicy(w.ctx, w.by, policy(), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if opts.Store == nil {
		mem.Clock = clock
		opts.Store = admission.NewMemoryStore(mem)
	}
	w.m = admission.New(eng, opts)
	t.Cleanup(func() { w.m.Close() })
	return w, opts.Store
}

func (w *world) block(subject, resource string, perms ...string) string {
	w.t.Helper()
	_, id, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: subject, Resource: resource, Permissions: perms})
	if err != nil {
		w.t.Fatal(err)
	}
	return id
}

func (w *world) watch(call string) *admission.Watch {
	w.t.Helper()
	watch, err := w.m.Watch(call, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(watch.Close)
	return watch
}

// nextEvent is the next event of watch that match accepts, skipping others;
// the test fails after 2 s without one.
func nextEvent(t *testing.T, watch *admission.Watch, what string, match func(admission.Event) bool) admission.Event {
	t.Helper()
	deadline := time.After(2 * time.Second)
	for {
		select {
		case ev, ok := <-watch.C:
			if !ok {
				t.Fatalf("waiting for %s: the watch ended: %v", what, watch.Err())
			}
			if match(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no event: %s", what)
		}
	}
}

func kindOf(kind admission.EventKind, subject string) func(admission.Event) bool {
	return func(ev admission.Event) bool { return ev.Kind == kind && ev.Subject == subject }
}

// unheardStore keeps one subject's sessions from the manager's view: their
// beginnings are not reported, and Session denies them until reveal. It
// stands for a store whose events lag, as another node's on a cluster
// would, so that only KeepAlive's own look at the index can end them.
type unheardStore struct {
	*admission.MemoryStore
	subject  string
	revealed atomic.Bool
	events   chan []admission.StoreEvent
}

func newUnheardStore(clock authz.Clock, subject string) *unheardStore {
	s := &unheardStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: clock}), subject: subject,
		events: make(chan []admission.StoreEvent)}
	go func() {
		defer close(s.events)
		for batch := range s.MemoryStore.Events() {
			kept := batch[:0:0]
			for _, e := range batch {
				if e.Session != nil && e.Ended == nil && e.Session.Subject == subject {
					continue
				}
				kept = append(kept, e)
			}
			if len(kept) > 0 {
				s.events <- kept
			}
		}
	}()
	return s
}

func (s *unheardStore) Events() <-chan []admission.StoreEvent { return s.events }

func (s *unheardStore) Session(id string) (admission.Session, bool) {
	sess, ok := s.MemoryStore.Session(id)
	if ok && sess.Subject == s.subject && !s.revealed.Load() {
		return admission.Session{}, false
	}
	return sess, ok
}

func TestJoiningAgainReplacesTheSession(t *testing.T) {
	w, _ := newWorldWith(t, admission.Options{}, admission.MemoryOptions{})
	// call:acme:1 holds one counted participant.
	if _, err := w.eng.PutAdmission(w.ctx, w.by, authz.Admission{Scope: "call:acme:1", ResourceType: "call", Join: "call.join", MaxParticipants: 1}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:member", "member", "account:acme")
	w.grant("user:other", "member", "account:acme")
	watch := w.watch("call:acme:1")
	first := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	nextEvent(t, watch, "JOINED (first)", kindOf(admission.EventJoined, "user:member"))
	// Its own old session does not count against it.
	second := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	if second.Session == first.Session {
		t.Fatal("joining again kept the session id")
	}
	ev := nextEvent(t, watch, "an event after the second join", func(ev admission.Event) bool { return ev.Subject == "user:member" })
	if ev.Kind != admission.EventJoined || ev.Session != second.Session {
		t.Errorf("after the second join the watch saw %+v, want JOINED of %q and nothing of the old one", ev, second.Session)
	}
	if _, err := w.m.KeepAlive(w.ctx, first.Session); authz.CodeOf(err) != authz.NotFound {
		t.Errorf("KeepAlive of the replaced session = %v, want NotFound", err)
	}
	if err := w.m.Leave(w.ctx, first.Session); authz.CodeOf(err) != authz.NotFound {
		t.Errorf("Leave of the replaced session = %v, want NotFound", err)
	}
	if ren, err := w.m.KeepAlive(w.ctx, second.Session); err != nil || ren.Outcome != admission.Admitted {
		t.Errorf("KeepAlive of the new session = %+v, %v", ren, err)
	}
	w.wantJoin("user:other", "call:acme:1", admission.Full)
	again := w.watch("call:acme:1")
	var present []string
	for _, ev := range again.Initial {
		if ev.Kind == admission.EventPresent {
			present = append(present, ev.Session)
		}
	}
	if !slices.Equal(present, []string{second.Session}) {
		t.Errorf("present after the replace: %v, want only %q", present, second.Session)
	}
}

func TestASubUserWhoRejoinsKeepsTheRoomInUse(t *testing.T) {
	w := newWorld(t)
	w.grant("user:sub1", "unshared", "account:acme")
	w.grant("user:sub2", "unshared", "account:acme")
	w.wantJoin("user:sub1", "room:acme:a", admission.Admitted)
	// Its media server reconnects it: the second join replaces the first
	// session, and the room is still in use.
	w.wantJoin("user:sub1", "room:acme:a", admission.Admitted)
	w.wantJoin("user:sub2", "room:acme:a", admission.InUse)
	if err := w.m.LeaveCall(w.ctx, "user:sub1", "room:acme:a"); err != nil {
		t.Fatalf("LeaveCall of the rejoined sub-user: %v", err)
	}
	w.wantJoin("user:sub2", "room:acme:a", admission.Admitted)
}

func TestASubjectWhoJoinsFromTheLobbyIsInTheCall(t *testing.T) {
	w := newWorld(t)
	w.grant("user:guest", "guest", "account:acme")
	w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	// Let in by a grant rather than Admit, it joins while its knock is
	// still there: the knock ends and the session is the call's.
	w.grant("user:guest", "member", "call:acme:1")
	r := w.wantJoin("user:guest", "call:acme:1", admission.Admitted)
	watch := w.watch("call:acme:1")
	if len(watch.Initial) != 2 || watch.Initial[0].Kind != admission.EventPresent || watch.Initial[0].Session != r.Session {
		t.Errorf("a watch of the call starts with %+v, want the guest present", watch.Initial)
	}
	if err := w.m.LeaveCall(w.ctx, "user:guest", "call:acme:1"); err != nil {
		t.Errorf("LeaveCall of the guest: %v", err)
	}
}

func TestAKnockingSubjectWhoMayJoinIsNotRefusedForItsOwnKnock(t *testing.T) {
	w, _ := newWorldWith(t, admission.Options{}, admission.MemoryOptions{MaxSessions: 2})
	w.grant("user:guest", "guest", "account:acme")
	w.grant("user:member", "member", "account:acme")
	w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	// The node is at its bound: the member's session and the guest's knock.
	// The guest is let in by a grant; joining ends its knock, so the count
	// stays at two.
	w.grant("user:guest", "member", "call:acme:1")
	w.wantJoin("user:guest", "call:acme:1", admission.Admitted)
	if list, _ := w.m.Lobby(w.ctx, "call:acme:1", ""); len(list) != 0 {
		t.Errorf("lobby after the join = %+v", list)
	}
}
