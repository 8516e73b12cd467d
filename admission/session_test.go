package admission_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
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
}

func newUnheardStore(clock authz.Clock, subject string) *unheardStore {
	return &unheardStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: clock}), subject: subject}
}

// Take leaves out the beginnings of the subject's sessions.
func (s *unheardStore) Take() []admission.StoreEvent {
	batch := s.MemoryStore.Take()
	kept := batch[:0:0]
	for _, e := range batch {
		if e.Session != nil && e.Ended == nil && e.Session.Subject == s.subject {
			continue
		}
		kept = append(kept, e)
	}
	return kept
}

func (s *unheardStore) Session(id string) (admission.Session, bool) {
	sess, ok := s.MemoryStore.Session(id)
	if ok && sess.Subject == s.subject && !s.revealed.Load() {
		return admission.Session{}, false
	}
	return sess, ok
}

// lapsingStore ends a session as soon as SessionOf finds it, as a lease
// that lapses at that moment would.
type lapsingStore struct{ *admission.MemoryStore }

func (s lapsingStore) SessionOf(call, subject string) (admission.Session, bool) {
	got, ok := s.MemoryStore.SessionOf(call, subject)
	if ok {
		s.MemoryStore.End(context.Background(), got.ID, admission.Ending{Why: admission.Lapsed})
	}
	return got, ok
}

// A LeaveCall whose session ends between being found and being ended is
// refused as one with no session there: NOT_FOUND naming the subject, not
// a session id the caller never gave.
func TestLeaveCallOfASessionThatEndsMeanwhileNamesTheSubject(t *testing.T) {
	store := lapsingStore{admission.NewMemoryStore(admission.MemoryOptions{})}
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:member", "member", "call:acme:1")
	w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	err := w.m.LeaveCall(w.ctx, "user:member", "call:acme:1")
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.NotFound || e.Field != "subject" || e.Value != "user:member" {
		t.Fatalf("LeaveCall = %v (%#v), want NOT_FOUND naming subject user:member", err, e)
	}
}

func TestKeepAliveEndsTheSessionOfABlockedParticipant(t *testing.T) {
	store := newUnheardStore(nil, "user:member")
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:member", "member", "call:acme:1")
	r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	watch := w.watch("call:acme:1")
	blockID := w.block("user:member", "call:acme:1")
	// The view never heard of the session, so nothing but KeepAlive can
	// end it.
	time.Sleep(50 * time.Millisecond)
	if _, live := store.MemoryStore.Session(r.Session); !live {
		t.Fatal("the session ended before KeepAlive: the test does not isolate KeepAlive")
	}
	store.revealed.Store(true)
	ren, err := w.m.KeepAlive(w.ctx, r.Session)
	if err != nil {
		t.Fatal(err)
	}
	if ren.Outcome != admission.Blocked || !ren.Expires.IsZero() {
		t.Errorf("KeepAlive of a blocked participant = %+v, want BLOCKED and no renewal", ren)
	}
	if _, live := store.MemoryStore.Session(r.Session); live {
		t.Error("the blocked participant's session outlived its KeepAlive")
	}
	ev := nextEvent(t, watch, "EJECTED of the blocked participant", kindOf(admission.EventEjected, "user:member"))
	if ev.Outcome != admission.Blocked || ev.BlockID != blockID || ev.Session != r.Session {
		t.Errorf("ejected = %+v, want outcome BLOCKED, block %q, session %q", ev, blockID, r.Session)
	}
	// Later KeepAlives still say why the session ended.
	if again, err := w.m.KeepAlive(w.ctx, r.Session); err != nil || again.Outcome != admission.Blocked || !again.Expires.IsZero() {
		t.Errorf("KeepAlive after the session ended = %+v, %v; want BLOCKED and no renewal", again, err)
	}
	if _, err := w.m.KeepAlive(w.ctx, "0123456789abcdef0123456789abcdef"); authz.CodeOf(err) != authz.NotFound {
		t.Errorf("KeepAlive of a session that never was = %v, want NotFound", err)
	}
}

func TestKeepAliveEndsTheSessionOfAParticipantWhoseGrantWasRevoked(t *testing.T) {
	store := newUnheardStore(nil, "user:member")
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:member", "member", "call:acme:1")
	r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:member", Role: "member", Resource: "call:acme:1"}); err != nil {
		t.Fatal(err)
	}
	store.revealed.Store(true)
	ren, err := w.m.KeepAlive(w.ctx, r.Session)
	if err != nil || ren.Outcome != admission.NoGrant {
		t.Fatalf("KeepAlive after the revoke = %+v, %v; want NO_GRANT", ren, err)
	}
	// Later KeepAlives still say why the session ended, and renew nothing.
	if again, err := w.m.KeepAlive(w.ctx, r.Session); err != nil || again.Outcome != admission.NoGrant || !again.Expires.IsZero() {
		t.Errorf("KeepAlive after the session ended = %+v, %v; want NO_GRANT and no renewal", again, err)
	}
	if _, live := store.MemoryStore.Session(r.Session); live {
		t.Error("the session of the revoked participant outlived its KeepAlive")
	}
}

func TestKeepAliveRenewsTheLease(t *testing.T) {
	w := newWorld(t)
	w.grant("user:member", "member", "call:acme:1")
	r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	w.clock.Advance(8 * time.Second)
	ren, err := w.m.KeepAlive(w.ctx, r.Session)
	if err != nil || ren.Outcome != admission.Admitted {
		t.Fatalf("KeepAlive = %+v, %v", ren, err)
	}
	if want := start.Add(18 * time.Second); !ren.Expires.Equal(want) {
		t.Errorf("renewed until %s, want %s (now + the 10 s lease)", ren.Expires, want)
	}
	// Past the first lease, the session lives on.
	w.clock.Advance(8 * time.Second)
	if ren, err := w.m.KeepAlive(w.ctx, r.Session); err != nil || ren.Outcome != admission.Admitted {
		t.Fatalf("KeepAlive past the first lease = %+v, %v", ren, err)
	}
}

func TestAKnockIsKeptAliveUntilTheSubjectMayJoin(t *testing.T) {
	w := newWorld(t)
	w.grant("user:guest", "guest", "account:acme")
	k, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "Gus")
	if err != nil || k.Outcome != admission.Lobby || k.Session == "" {
		t.Fatalf("Knock = %+v, %v", k, err)
	}
	w.clock.Advance(5 * time.Second)
	ren, err := w.m.KeepAlive(w.ctx, k.Session)
	if err != nil || ren.Outcome != admission.Lobby {
		t.Fatalf("KeepAlive of a knock = %+v, %v; want LOBBY", ren, err)
	}
	if want := start.Add(15 * time.Second); !ren.Expires.Equal(want) {
		t.Errorf("knock renewed until %s, want %s", ren.Expires, want)
	}
	// Knocking again keeps the knock.
	again, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "")
	if err != nil || again.Session != k.Session {
		t.Errorf("a second knock = %+v, %v; want the same knock %q", again, err, k.Session)
	}
	if list, _ := w.m.Lobby(w.ctx, "call:acme:1", ""); len(list) != 1 || list[0].Note != "Gus" {
		t.Errorf("lobby = %+v, want one knock with the first note", list)
	}
	// A grant that skips the lobby (not an Admit): the knock says so.
	w.grant("user:guest", "member", "call:acme:1")
	ren, err = w.m.KeepAlive(w.ctx, k.Session)
	if err != nil || ren.Outcome != admission.Admitted {
		t.Fatalf("KeepAlive of a knock whose subject may now join = %+v, %v; want ADMITTED", ren, err)
	}
	j := w.wantJoin("user:guest", "call:acme:1", admission.Admitted)
	if j.Session == k.Session {
		t.Error("the session took the knock's id")
	}
	// Joining ended the knock.
	if _, err := w.m.KeepAlive(w.ctx, k.Session); authz.CodeOf(err) != authz.NotFound {
		t.Errorf("KeepAlive of a knock that became a session = %v, want NotFound", err)
	}
	if list, _ := w.m.Lobby(w.ctx, "call:acme:1", ""); len(list) != 0 {
		t.Errorf("lobby after the join = %+v", list)
	}
}

func TestAKnockOfABlockedSubjectEndsAtKeepAlive(t *testing.T) {
	w := newWorld(t)
	w.grant("user:guest", "guest", "account:acme")
	watch := w.watch("call:acme:1")
	k, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "")
	if err != nil || k.Outcome != admission.Lobby {
		t.Fatalf("Knock = %+v, %v", k, err)
	}
	nextEvent(t, watch, "KNOCKED", kindOf(admission.EventKnocked, "user:guest"))
	waiting := func() (listed, watched bool) {
		t.Helper()
		list, err := w.m.Lobby(w.ctx, "call:acme:1", "")
		if err != nil {
			t.Fatalf("Lobby: %v", err)
		}
		for _, ev := range w.watch("call:acme:1").Initial {
			watched = watched || ev.Kind == admission.EventWaiting && ev.Subject == "user:guest"
		}
		return len(list) == 1 && list[0].Subject == "user:guest", watched
	}
	if listed, watched := waiting(); !listed || !watched {
		t.Fatalf("before the block: listed in the lobby %t, waiting in a new watch %t; want both", listed, watched)
	}
	w.block("user:guest", "account:acme")
	// The lobby no longer lists who may not join, even before the knock
	// ends, and a watch starting now does not find them waiting.
	if listed, watched := waiting(); listed || watched {
		t.Errorf("the blocked subject: listed in the lobby %t, waiting in a new watch %t; want neither", listed, watched)
	}
	ren, err := w.m.KeepAlive(w.ctx, k.Session)
	if err != nil || ren.Outcome != admission.Blocked {
		t.Fatalf("KeepAlive of a blocked knock = %+v, %v; want BLOCKED", ren, err)
	}
	nextEvent(t, watch, "DENIED", kindOf(admission.EventDenied, "user:guest"))
	if list, _ := w.m.Lobby(w.ctx, "call:acme:1", ""); len(list) != 0 {
		t.Errorf("the blocked subject still waits: %+v", list)
	}
	if ren, err := w.m.KeepAlive(w.ctx, k.Session); err != nil || ren.Outcome != admission.Blocked || !ren.Expires.IsZero() {
		t.Errorf("KeepAlive of the ended knock again = %+v, %v; want BLOCKED, as remembered", ren, err)
	}
}

func TestUnrenewedKnocksAndSessionsLapse(t *testing.T) {
	w := newWorld(t)
	w.grant("user:guest", "guest", "account:acme")
	w.grant("user:member", "member", "account:acme")
	watch := w.watch("call:acme:1")
	k := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	nextEvent(t, watch, "JOINED", kindOf(admission.EventJoined, "user:member"))
	w.clock.Advance(10*time.Second + time.Millisecond)
	// The sweeper runs on a real ticker and reads the manual clock.
	for _, want := range []struct {
		subject, id string
	}{{"user:guest", k.Session}, {"user:member", r.Session}} {
		ev := nextEvent(t, watch, "LAPSED of "+want.subject, kindOf(admission.EventLapsed, want.subject))
		if ev.Session != want.id {
			t.Errorf("lapsed %+v, want id %q", ev, want.id)
		}
	}
	if list, _ := w.m.Lobby(w.ctx, "call:acme:1", ""); len(list) != 0 {
		t.Errorf("a lapsed knock is still listed: %+v", list)
	}
	for _, id := range []string{k.Session, r.Session} {
		if _, err := w.m.KeepAlive(w.ctx, id); authz.CodeOf(err) != authz.NotFound {
			t.Errorf("KeepAlive of lapsed %s = %v, want NotFound", id, err)
		}
		if err := w.m.Leave(w.ctx, id); authz.CodeOf(err) != authz.NotFound {
			t.Errorf("Leave of lapsed %s = %v, want NotFound", id, err)
		}
	}
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

func TestTheNodeHoldsAtMostMaxSessions(t *testing.T) {
	w, _ := newWorldWith(t, admission.Options{}, admission.MemoryOptions{MaxSessions: 2})
	for _, s := range []string{"user:a", "user:b", "user:c"} {
		w.grant(s, "member", "account:acme")
	}
	a := w.wantJoin("user:a", "call:acme:1", admission.Admitted)
	w.wantJoin("user:b", "room:acme:a", admission.Admitted)
	_, err := w.m.Join(w.ctx, "", "user:c", "call:acme:1", 0)
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.ResourceExhausted || e.Kind != authz.KindSessionLimit || e.Field != "resource" || e.Value != "call:acme:1" {
		t.Fatalf("a join past MaxSessions = %v, want ResourceExhausted (SESSION_LIMIT) naming resource call:acme:1", err)
	}
	// Replacing a session adds none.
	a = w.wantJoin("user:a", "call:acme:1", admission.Admitted)
	// Knocks count too.
	w.grant("user:guest", "guest", "account:acme")
	if _, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", ""); !errors.As(err, &e) || e.Code != authz.ResourceExhausted || e.Field != "resource" || e.Value != "call:acme:1" {
		t.Errorf("a knock past MaxSessions = %v, want ResourceExhausted naming resource call:acme:1", err)
	}
	if err := w.m.Leave(w.ctx, a.Session); err != nil {
		t.Fatal(err)
	}
	w.wantJoin("user:c", "call:acme:1", admission.Admitted)
}

func TestOneCallerHoldsAtMostItsShareOfTheNode(t *testing.T) {
	// A quarter of 8: 2 sessions and knocks each.
	w, _ := newWorldWith(t, admission.Options{}, admission.MemoryOptions{MaxSessions: 8})
	for _, s := range []string{"user:a", "user:b", "user:c", "user:d"} {
		w.grant(s, "member", "account:acme")
	}
	w.grant("user:guest", "guest", "account:acme")
	join := func(caller, subject, resource string) (admission.Result, error) {
		return w.m.Join(w.ctx, caller, subject, resource, 0)
	}
	if r, err := join("media-a", "user:a", "call:acme:1"); err != nil || r.Outcome != admission.Admitted {
		t.Fatalf("media-a's first join = %+v, %v", r, err)
	}
	if r, err := join("media-a", "user:guest", "call:acme:1"); err != nil || r.Outcome != admission.Lobby {
		t.Fatalf("media-a's join of a guest = %+v, %v; want LOBBY", r, err)
	}
	before := w.m.Counts()
	wantRefused := func(what string, err error, resource string) {
		t.Helper()
		var e *authz.Error
		if !errors.As(err, &e) || e.Code != authz.ResourceExhausted || e.Kind != authz.KindCallerSessionLimit ||
			e.Field != "resource" || e.Value != resource ||
			!maps.Equal(e.Meta, map[string]string{"caller": "media-a", "limit": "2", "held": "2"}) {
			t.Errorf("%s = %v (%+v); want ResourceExhausted (CALLER_SESSION_LIMIT) naming resource %s and media-a holding 2 of 2", what, err, e, resource)
		}
	}
	_, err := join("media-a", "user:b", "room:acme:a")
	wantRefused("a join past the caller's share", err, "room:acme:a")
	w.grant("user:guest2", "guest", "account:acme")
	_, err = w.m.Knock(w.ctx, "media-a", "user:guest2", "call:acme:1", "")
	wantRefused("a knock past the caller's share", err, "call:acme:1")
	_, err = join("media-a", "user:guest2", "call:acme:1")
	wantRefused("a join to the lobby past the caller's share", err, "call:acme:1")
	if after := w.m.Counts(); after != before {
		t.Errorf("the refusals changed the counts from %+v to %+v", before, after)
	}
	// Its own re-join and its guest's knock again take no more; another
	// caller, and the anonymous one, still enter.
	if r, err := join("media-a", "user:a", "call:acme:1"); err != nil || r.Outcome != admission.Admitted {
		t.Errorf("media-a's re-join at its share = %+v, %v; want ADMITTED", r, err)
	}
	if r, err := join("media-a", "user:guest", "call:acme:1"); err != nil || r.Outcome != admission.Lobby {
		t.Errorf("media-a's guest knocking again at its share = %+v, %v; want LOBBY", r, err)
	}
	for _, j := range []struct{ caller, subject string }{{"media-b", "user:b"}, {"", "user:c"}, {"", "user:d"}} {
		if r, err := join(j.caller, j.subject, "call:acme:1"); err != nil || r.Outcome != admission.Admitted {
			t.Errorf("Join of %s by %q = %+v, %v; want ADMITTED", j.subject, j.caller, r, err)
		}
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

// TestSessionsStayConsistentUnderConcurrentJoinsAndWrites runs joins,
// leaves and keep-alives of many subjects against grants, revokes, blocks
// and unblocks of the same subjects; under -race it proves the manager
// shares nothing unguarded, and at the end every live session belongs to
// a subject who may be there, with the capabilities the index gives it.
func TestSessionsStayConsistentUnderConcurrentJoinsAndWrites(t *testing.T) {
	w, store := newWorldWith(t, admission.Options{}, admission.MemoryOptions{})
	const call = "call:acme:1"
	const subjects = 16
	const capacity = 6
	rule := policy().Admissions[0]
	rule.Scope, rule.MaxParticipants = call, capacity
	if _, err := w.eng.PutAdmission(w.ctx, w.by, rule); err != nil {
		t.Fatal(err)
	}
	name := func(i int) string { return fmt.Sprintf("user:c%02d", i) }
	for i := range subjects {
		w.grant(name(i), "member", "account:acme")
	}
	var joined sync.Map // every session id Join returned
	watch := w.watch(call)
	drained := make(chan int)
	go func() {
		n := 0
		for range watch.C {
			n++
		}
		drained <- n
	}()

	ctx, cancel := context.WithTimeout(w.ctx, 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var ops atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			ids := map[string]string{}
			for range 300 {
				subject := name(rng.IntN(subjects))
				var err error
				switch rng.IntN(5) {
				case 0, 1:
					var r admission.Result
					if r, err = w.m.Join(ctx, "", subject, call, 0); err == nil && r.Session != "" {
						ids[subject] = r.Session
						if r.Outcome == admission.Admitted {
							joined.Store(r.Session, subject)
						}
					}
				case 2:
					if id := ids[subject]; id != "" {
						_, err = w.m.KeepAlive(ctx, id)
					}
				case 3:
					if id := ids[subject]; id != "" {
						err = w.m.Leave(ctx, id)
						delete(ids, subject)
					}
				case 4:
					err = w.m.LeaveCall(ctx, subject, call)
				}
				if err != nil && authz.CodeOf(err) != authz.NotFound {
					t.Errorf("%s: %v", subject, err)
					return
				}
				ops.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(99, 1))
		for range 200 {
			subject := name(rng.IntN(subjects))
			var err error
			switch rng.IntN(6) {
			case 0:
				_, _, err = w.eng.Block(ctx, w.by, authz.Block{Subject: subject, Resource: call, Permissions: []string{"send-audio"}})
			case 1:
				_, _, err = w.eng.Block(ctx, w.by, authz.Block{Subject: subject, Resource: "account:acme"})
			case 2:
				if _, err = w.eng.Unblock(ctx, w.by, subject, call, ""); authz.CodeOf(err) == authz.NotFound {
					err = nil
				}
				if _, e := w.eng.Unblock(ctx, w.by, subject, "account:acme", ""); authz.CodeOf(e) != authz.NotFound && err == nil {
					err = e
				}
			case 3:
				_, err = w.eng.Revoke(ctx, w.by, authz.Grant{Subject: subject, Role: "member", Resource: "account:acme"})
				if authz.CodeOf(err) == authz.NotFound {
					err = nil
				}
			case 4, 5:
				_, err = w.eng.Grant(ctx, w.by, authz.Grant{Subject: subject, Role: "member", Resource: "account:acme"})
			}
			if err != nil {
				t.Errorf("write on %s: %v", subject, err)
				return
			}
		}
	}()
	// The call never holds more than its capacity.
	stopSampling := make(chan struct{})
	sampled := make(chan int)
	go func() {
		most := 0
		for {
			select {
			case <-stopSampling:
				sampled <- most
				return
			default:
			}
			most = max(most, len(store.Sessions(call)))
			time.Sleep(time.Millisecond)
		}
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the joins and writes did not finish in 20 s: a deadlock?")
	}
	close(stopSampling)
	if most := <-sampled; most > capacity {
		t.Errorf("the call held %d sessions at once; its capacity is %d", most, capacity)
	}
	t.Logf("%d session operations", ops.Load())
	// Every session that is live is the call's, one per subject.
	listed := map[string]bool{}
	bySubject := map[string]int{}
	for _, s := range store.Sessions(call) {
		listed[s.ID] = true
		bySubject[s.Subject]++
	}
	joined.Range(func(id, subject any) bool {
		if _, live := store.Session(id.(string)); live && !listed[id.(string)] {
			t.Errorf("session %s of %s is live but not listed in the call", id, subject)
		}
		return true
	})
	for subject, n := range bySubject {
		if n > 1 {
			t.Errorf("%s has %d sessions in the call", subject, n)
		}
	}

	// The view catches up with the last writes: every live session's
	// subject may be in the call.
	x := w.eng.Index()
	stray := func() []string {
		var out []string
		for _, s := range store.Sessions(call) {
			p := x.Presence(s.Subject, call)
			if p.Blocked || !p.Joins {
				out = append(out, s.Subject)
			}
		}
		return out
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(stray()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := stray(); len(s) > 0 {
		t.Fatalf("live sessions of subjects who may not be in the call: %v", s)
	}
	// A new watch sees exactly the store's sessions, each with the
	// capabilities the index gives its subject now.
	live := map[string]string{}
	for _, s := range store.Sessions(call) {
		live[s.ID] = s.Subject
	}
	again := w.watch(call)
	present := 0
	for _, ev := range again.Initial {
		if ev.Kind != admission.EventPresent {
			continue
		}
		present++
		if live[ev.Session] != ev.Subject {
			t.Errorf("present %s (%s), which the store does not hold", ev.Subject, ev.Session)
		}
		if want := x.Presence(ev.Subject, call).Capabilities; !slices.Equal(ev.Capabilities, want) {
			t.Errorf("%s present with %v, but the index gives %v", ev.Subject, ev.Capabilities, want)
		}
	}
	if present != len(live) {
		t.Errorf("%d present, %d live sessions", present, len(live))
	}
	watch.Close()
	if n := <-drained; n == 0 {
		t.Error("the first watch saw nothing happen")
	}
}

// raceStore runs before, once, as a Join reaches the store: what lands
// between the manager's reading of the subject and its session's making.
type raceStore struct {
	*admission.MemoryStore
	before func()
	once   sync.Once
}

func (s *raceStore) Join(ctx context.Context, sess admission.Session, max uint32) (admission.Outcome, string, error) {
	s.once.Do(s.before)
	return s.MemoryStore.Join(ctx, sess, max)
}

// A ban that commits while a Join is being decided, after the subject was
// read as free to join, ejects the session Join made before Join answers:
// Join then answers BLOCKED, with no session and no LiveKit token, rather
// than ADMITTED with a token for a session that has already ended.
func TestAJoinThatABanOvertakesIsRefusedWithNoToken(t *testing.T) {
	for range 20 {
		clock := authz.NewManualClock(start)
		eng, err := authz.Start(t.Context(), memory.New(), authz.Options{Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		w := &world{t: t, ctx: t.Context(), eng: eng, clock: clock, by: authz.Author{Caller: "test"}}
		if _, _, err := eng.ApplyPolicy(w.ctx, w.by, policy(), authz.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		w.grant("user:member", "member", "call:acme:1")
		var banID string
		store := &raceStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: clock})}
		store.before = func() {
			rev, id, err := eng.Block(w.ctx, w.by, authz.Block{Subject: "user:member", Resource: "call:acme:1"})
			if err != nil {
				t.Error(err)
			}
			if err := eng.Await(w.ctx, rev); err != nil {
				t.Error(err)
			}
			banID = id
		}
		w.m = admission.New(eng, admission.Options{Store: store, LiveKit: &tokenKey})
		r, err := w.m.Join(w.ctx, "", "user:member", "call:acme:1", 0)
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != admission.Blocked || r.BlockID != banID || r.Session != "" || r.Token != "" || r.Grant != nil || len(r.Capabilities) != 0 {
			t.Errorf("Join overtaken by ban %s = %s (%s), block %q, session %q, token %t, grant %v, capabilities %v; want BLOCKED by the ban, with no session nor token",
				banID, r.Outcome, r.Reason, r.BlockID, r.Session, r.Token != "", r.Grant, r.Capabilities)
		}
		eventually(t, "the session to be ended", func() bool { return len(store.Sessions("call:acme:1")) == 0 })
		w.m.Close()
		eng.Close()
	}
}

// An Admit of a subject banned since it knocked is refused, by a doorkeeper
// and by the platform alike: FAILED_PRECONDITION naming the subject and the
// block, and nothing written, neither a grant nor an end to the knock, nor
// an ADMITTED told to watchers. The knock ends at the ban, the call being
// watched, which is told DENIED; its KeepAlive says the subject is blocked.
func TestAnAdmitOfASubjectBannedSinceItKnockedIsRefused(t *testing.T) {
	w := newWorld(t)
	w.grant("user:host", "host", "call:acme:1")
	w.grant("user:guest", "guest", "account:acme")
	k, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "")
	if err != nil || k.Outcome != admission.Lobby {
		t.Fatalf("Knock = %+v, %v", k, err)
	}
	watch := w.watch("call:acme:1")
	block := w.block("user:guest", "call:acme:1")
	rev := w.eng.Index().Revision()
	for _, by := range []authz.Author{{Caller: "test", Actor: "user:host"}, w.by} {
		_, err := w.m.Admit(w.ctx, by, "call:acme:1", "user:guest", time.Time{})
		var e *authz.Error
		if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || authz.KindOf(e) != authz.KindSubjectBlocked ||
			e.Field != "subject" || e.Value != "user:guest" || e.Meta["block"] != block || e.Meta["scope"] != "call:acme:1" {
			t.Errorf("Admit by %q of the banned subject = %v (%+v); want FAILED_PRECONDITION (%s) naming subject %q and block %q",
				by.Actor, err, e, authz.KindSubjectBlocked, "user:guest", block)
		}
	}
	if got := w.eng.Index().Revision(); got != rev {
		t.Errorf("the refused Admits moved the revision from %d to %d", rev, got)
	}
	nextEvent(t, watch, "DENIED, and no ADMITTED before it", func(ev admission.Event) bool {
		if ev.Kind == admission.EventAdmitted && ev.Subject == "user:guest" {
			t.Errorf("watchers heard of a refused Admit: %+v", ev)
		}
		return ev.Kind == admission.EventDenied && ev.Subject == "user:guest"
	})
	if n := w.m.Counts().Knocks; n != 0 {
		t.Errorf("after the ban the store holds %d knocks, want none", n)
	}
	ren, err := w.m.KeepAlive(w.ctx, k.Session)
	if err != nil || ren.Outcome != admission.Blocked || !ren.Expires.IsZero() {
		t.Errorf("KeepAlive of the banned subject's knock = %+v, %v; want BLOCKED, the knock ended", ren, err)
	}
	if r := w.wantJoin("user:guest", "call:acme:1", admission.Blocked); r.Session != "" || r.Token != "" {
		t.Errorf("the banned subject's Join = %+v, want no session and no token", r)
	}
}

// KeepAlive at once after an Admit, a Deny or a Leave answers as the
// proto says, without waiting for the view to hear of the ending: ADMITTED
// "once the subject may Join (after an Admit too)", and a knock or session
// "that left, lapsed or was denied is NOT_FOUND, its message saying which".
func TestKeepAliveRightAfterAnEndingSaysHowItEnded(t *testing.T) {
	w := newWorld(t)
	w.grant("user:guest", "guest", "account:acme")
	w.grant("user:other", "guest", "account:acme")
	w.grant("user:member", "member", "account:acme")
	admitted, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "")
	if err != nil || admitted.Outcome != admission.Lobby {
		t.Fatalf("Knock = %+v, %v", admitted, err)
	}
	if _, err := w.m.Admit(w.ctx, w.by, "call:acme:1", "user:guest", time.Time{}); err != nil {
		t.Fatalf("Admit: %v", err)
	}
	if ren, err := w.m.KeepAlive(w.ctx, admitted.Session); err != nil || ren.Outcome != admission.Admitted {
		t.Errorf("KeepAlive of a knock just admitted = %+v, %v; want ADMITTED", ren, err)
	}

	denied, err := w.m.Knock(w.ctx, "", "user:other", "call:acme:1", "")
	if err != nil || denied.Outcome != admission.Lobby {
		t.Fatalf("Knock = %+v, %v", denied, err)
	}
	if err := w.m.Deny(w.ctx, w.by, "call:acme:1", "user:other"); err != nil {
		t.Fatalf("Deny: %v", err)
	}
	if _, err := w.m.KeepAlive(w.ctx, denied.Session); authz.CodeOf(err) != authz.NotFound || !strings.Contains(err.Error(), "it was denied entry") {
		t.Errorf("KeepAlive of a knock just denied = %v; want NotFound saying it was denied", err)
	}

	s := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	if err := w.m.Leave(w.ctx, s.Session); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if _, err := w.m.KeepAlive(w.ctx, s.Session); authz.CodeOf(err) != authz.NotFound || !strings.Contains(err.Error(), "it left") {
		t.Errorf("KeepAlive of a session that just left = %v; want NotFound saying it left", err)
	}
}

// stuckStore is a session store out of reach: its End waits for as long as
// its caller lets it.
type stuckStore struct{ admission.Store }

func (s stuckStore) End(ctx context.Context, _ string, _ admission.Ending) (admission.Session, error) {
	<-ctx.Done()
	return admission.Session{}, ctx.Err()
}

// Leave, and LeaveCall, fail UNAVAILABLE within StoreWait when the session
// store is out of reach, as Join and KeepAlive do, rather than wait for as
// long as the caller would.
func TestLeaveOfAStoreOutOfReachFailsWithinStoreWait(t *testing.T) {
	w, store := newWorldWith(t, admission.Options{StoreWait: 50 * time.Millisecond}, admission.MemoryOptions{})
	w.grant("user:member", "member", "call:acme:1")
	r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	stuck := admission.New(w.eng, admission.Options{Store: stuckStore{store}, StoreWait: 50 * time.Millisecond})
	t.Cleanup(func() { stuck.Close() })
	for name, leave := range map[string]func() error{
		"Leave":     func() error { return stuck.Leave(context.Background(), r.Session) },
		"LeaveCall": func() error { return stuck.LeaveCall(context.Background(), "user:member", "call:acme:1") },
	} {
		done := make(chan error, 1)
		go func() { done <- leave() }()
		select {
		case err := <-done:
			if authz.CodeOf(err) != authz.Unavailable {
				t.Errorf("%s with the store out of reach = %v, want UNAVAILABLE", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s with the store out of reach still waits, 200 times StoreWait later", name)
		}
	}
}

// An admission is a grant like any other: a block placed after it keeps
// the subject out while it lasts and does not end it, so once the block is
// lifted the subject joins without the lobby; a revoke of the admission
// sends it back to the lobby.
func TestAnAdmissionOutlastsABlockPlacedAfterIt(t *testing.T) {
	w := newWorld(t)
	w.grant("user:guest", "guest", "account:acme")
	w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	if _, err := w.m.Admit(w.ctx, w.by, "call:acme:1", "user:guest", time.Time{}); err != nil {
		t.Fatal(err)
	}
	in := w.wantJoin("user:guest", "call:acme:1", admission.Admitted)
	ban := w.block("user:guest", "call:acme:1")
	w.wantJoin("user:guest", "call:acme:1", admission.Blocked)
	if ren, err := w.m.KeepAlive(w.ctx, in.Session); err != nil || ren.Outcome != admission.Blocked {
		t.Errorf("KeepAlive of the banned participant = %+v, %v; want BLOCKED, the session ended", ren, err)
	}
	if _, err := w.eng.Unblock(w.ctx, w.by, "user:guest", "call:acme:1", ban); err != nil {
		t.Fatal(err)
	}
	w.wantJoin("user:guest", "call:acme:1", admission.Admitted)
	if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:guest", Role: "guest", Resource: "call:acme:1"}); err != nil {
		t.Fatal(err)
	}
	w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
}

// unknockRaceStore runs before, once, as the manager first denies a knock,
// by its subject or by its id: what lands between a KeepAlive's reading of
// a knock's subject and its ending of the knock.
type unknockRaceStore struct {
	*admission.MemoryStore
	before func()
	once   sync.Once
}

func (s *unknockRaceStore) Unknock(ctx context.Context, call, subject string, why admission.Why) (bool, error) {
	if why == admission.Denied {
		s.once.Do(s.before)
	}
	return s.MemoryStore.Unknock(ctx, call, subject, why)
}

func (s *unknockRaceStore) EndKnock(ctx context.Context, id string, why admission.Why) (admission.Knock, error) {
	if why == admission.Denied {
		s.once.Do(s.before)
	}
	return s.MemoryStore.EndKnock(ctx, id, why)
}

// A KeepAlive that finds a knock's subject blocked ends that knock, not
// one the subject made since: a knock left, the subject unblocked and
// knocking again, as the KeepAlive was being decided, keeps its new knock,
// which waits in the lobby.
func TestAKeepAliveOfAnOldKnockEndsNotTheSubjectsNewOne(t *testing.T) {
	clock := authz.NewManualClock(start)
	store := &unknockRaceStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: clock})}
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:guest", "guest", "account:acme")
	old, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "")
	if err != nil || old.Outcome != admission.Lobby {
		t.Fatalf("Knock = %+v, %v", old, err)
	}
	blockID := w.block("user:guest", "call:acme:1")
	var again admission.Result
	store.before = func() {
		if err := w.m.Leave(w.ctx, old.Session); err != nil {
			t.Errorf("Leave of the old knock: %v", err)
		}
		if _, err := w.eng.Unblock(w.ctx, w.by, "user:guest", "call:acme:1", blockID); err != nil {
			t.Errorf("Unblock: %v", err)
		}
		if again, err = w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", ""); err != nil || again.Outcome != admission.Lobby {
			t.Errorf("Knock again = %+v, %v", again, err)
		}
	}
	if ren, err := w.m.KeepAlive(w.ctx, old.Session); authz.CodeOf(err) != authz.NotFound || !strings.Contains(err.Error(), "it left") {
		t.Fatalf("KeepAlive of the blocked knock, left as it was judged = %+v, %v; want NOT_FOUND: it left", ren, err)
	}
	if again.Session == "" || again.Session == old.Session {
		t.Fatalf("the new knock %q, the old %q: want another", again.Session, old.Session)
	}
	ren, err := w.m.KeepAlive(w.ctx, again.Session)
	if err != nil || ren.Outcome != admission.Lobby {
		t.Errorf("KeepAlive of the knock made since = %+v, %v; want LOBBY: it still waits", ren, err)
	}
	if list, _ := w.m.Lobby(w.ctx, "call:acme:1", ""); len(list) != 1 || list[0].ID != again.Session {
		t.Errorf("the lobby lists %+v; want the new knock %s", list, again.Session)
	}
}

// knockRaceStore runs before, once, as a knock reaches the store: what
// lands between the manager's reading of the subject and its knock's
// making.
type knockRaceStore struct {
	*admission.MemoryStore
	before func()
	once   sync.Once
}

func (s *knockRaceStore) Knock(ctx context.Context, k admission.Knock) (admission.Knock, error) {
	s.once.Do(s.before)
	return s.MemoryStore.Knock(ctx, k)
}

// An Admit that commits while a Join is sending its subject to the lobby,
// before the knock is made, lets the knock in: the subject does not wait on
// in the lobby, listed and told as knocking, with no ADMITTED ever told,
// as no order of the two one after the other leaves it.
func TestAnAdmitAsTheSubjectKnocksLetsTheKnockIn(t *testing.T) {
	clock := authz.NewManualClock(start)
	store := &knockRaceStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: clock})}
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:visitor", "member", "account:acme")
	// A member with send-video would pass the lobby: this one waits.
	w.block("user:visitor", "call:acme:1", "send-video")
	watch := w.watch("call:acme:1")
	store.before = func() {
		if _, err := w.m.Admit(w.ctx, w.by, "call:acme:1", "user:visitor", time.Time{}); err != nil {
			t.Errorf("Admit: %v", err)
		}
	}
	r, err := w.m.Join(w.ctx, "", "user:visitor", "call:acme:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != admission.Lobby {
		t.Fatalf("Join = %s (%s); want LOBBY, as it read the subject", r.Outcome, r.Reason)
	}
	nextEvent(t, watch, "ADMITTED", kindOf(admission.EventAdmitted, "user:visitor"))
	if list, err := w.m.Lobby(w.ctx, "call:acme:1", ""); err != nil || len(list) != 0 {
		t.Errorf("the lobby lists %+v, %v; want no one: the subject was admitted", list, err)
	}
	ren, err := w.m.KeepAlive(w.ctx, r.Session)
	if err != nil || ren.Outcome != admission.Admitted {
		t.Errorf("KeepAlive of the knock = %+v, %v; want ADMITTED", ren, err)
	}
	w.wantJoin("user:visitor", "call:acme:1", admission.Admitted)
}

// A call deleted while a subject knocks on it, before the knock is made,
// keeps no knock: the knock is denied, as a deletion denies those made
// before it, and a call registered again under the name is another, whose
// lobby the knock does not wait in.
func TestAKnockOnACallDeletedAsItIsMadeIsDenied(t *testing.T) {
	clock := authz.NewManualClock(start)
	store := &knockRaceStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: clock})}
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:guest", "guest", "account:acme")
	store.before = func() {
		if _, err := w.eng.DeleteResource(w.ctx, w.by, "call:acme:1"); err != nil {
			t.Errorf("DeleteResource: %v", err)
		}
		// The manager has acted on the deletion, as a lobby listed now
		// waits for it to, before the knock is made.
		if _, err := w.m.Lobby(w.ctx, "call:acme:big", ""); err != nil {
			t.Errorf("Lobby: %v", err)
		}
	}
	k, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "let me in")
	if err != nil || k.Outcome != admission.Lobby {
		t.Fatalf("Knock = %+v, %v; want LOBBY, as it read the call", k, err)
	}
	if _, err := w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "call:acme:1", Parent: "account:acme"}); err != nil {
		t.Fatal(err)
	}
	if list, err := w.m.Lobby(w.ctx, "call:acme:1", ""); err != nil || len(list) != 0 {
		t.Errorf("the new call's lobby lists %+v, %v; want no one", list, err)
	}
	again, err := w.m.Knock(w.ctx, "", "user:guest", "call:acme:1", "")
	if err != nil || again.Outcome != admission.Lobby {
		t.Fatalf("Knock on the new call = %+v, %v", again, err)
	}
	if again.Session == k.Session {
		t.Errorf("the knock on the new call is %s, the knock on the deleted one's; want another", k.Session)
	}
	if _, err := w.m.KeepAlive(w.ctx, k.Session); authz.CodeOf(err) != authz.NotFound {
		t.Errorf("KeepAlive of the knock on the deleted call = %v; want NOT_FOUND", err)
	}
}

// leaveRaceStore runs before, once, as the manager first ejects a session:
// what lands between a KeepAlive's reading of a participant and its ending
// of the session.
type leaveRaceStore struct {
	*unheardStore
	before func()
	once   sync.Once
}

func (s *leaveRaceStore) End(ctx context.Context, id string, why admission.Ending) (admission.Session, error) {
	if why.Why == admission.Ejected {
		s.once.Do(s.before)
	}
	return s.unheardStore.End(ctx, id, why)
}

// A KeepAlive that finds a participant blocked, as its session is left,
// answers as a KeepAlive after the Leave does: NOT_FOUND, the session having
// ended as it left; not BLOCKED for an ejection that never took place, with
// the Leave answered as well.
func TestAKeepAliveRacingALeaveSaysTheSessionLeft(t *testing.T) {
	clock := authz.NewManualClock(start)
	store := &leaveRaceStore{unheardStore: newUnheardStore(clock, "user:member")}
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:member", "member", "call:acme:1")
	r := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	store.revealed.Store(true)
	var left error
	store.before = func() { left = w.m.Leave(w.ctx, r.Session) }
	w.block("user:member", "call:acme:1")
	ren, err := w.m.KeepAlive(w.ctx, r.Session)
	if left != nil {
		t.Fatalf("Leave: %v", left)
	}
	if authz.CodeOf(err) != authz.NotFound || !strings.Contains(err.Error(), "it left") {
		t.Errorf("KeepAlive of a session left as it was judged = %+v, %v; want NOT_FOUND: it left", ren, err)
	}
}
