package admission_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// followingStore stands for a cluster store whose picture of sessions and
// knocks lags what other nodes committed: until Sync, its lookups do not
// find what was made, as a replica whose watch has yet to bring a join
// made through another would not. Its writes, like a cluster store's, ask
// the shared store itself.
type followingStore struct {
	*admission.MemoryStore
	synced atomic.Bool
}

var _ admission.Syncer = (*followingStore)(nil)

func (s *followingStore) Sync(context.Context) error {
	s.synced.Store(true)
	return nil
}

func (s *followingStore) SessionOf(call, subject string) (admission.Session, bool) {
	if !s.synced.Load() {
		return admission.Session{}, false
	}
	return s.MemoryStore.SessionOf(call, subject)
}

func (s *followingStore) KnockOf(id string) (admission.Knock, bool) {
	if !s.synced.Load() {
		return admission.Knock{}, false
	}
	return s.MemoryStore.KnockOf(id)
}

// A session or knock made a moment ago through another node is live: Leave
// ends it once the store has caught up, rather than answer NOT_FOUND.
func TestLeaveFindsWhatAnotherNodeMadeAMomentAgo(t *testing.T) {
	for _, tc := range []struct {
		name  string
		leave func(w *world, r admission.Result) error
		want  admission.Outcome
	}{
		{"a session, by subject and call", func(w *world, r admission.Result) error {
			return w.m.LeaveCall(w.ctx, "user:member", "call:acme:1")
		}, admission.Admitted},
		{"a knock, by id", func(w *world, r admission.Result) error {
			return w.m.Leave(w.ctx, r.Session)
		}, admission.Lobby},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &followingStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{})}
			w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
			w.grant("user:member", "member", "account:acme")
			w.grant("user:guest", "guest", "account:acme")
			subject := "user:member"
			if tc.want == admission.Lobby {
				subject = "user:guest"
			}
			r := w.wantJoin(subject, "call:acme:1", tc.want)
			if err := tc.leave(w, r); err != nil {
				t.Fatalf("Leave of %s made a moment ago: %v", tc.name, err)
			}
			if n, k := store.Len(); n != 0 || k != 0 {
				t.Errorf("after Leave the store holds %d sessions and %d knocks, want none", n, k)
			}
		})
	}
}

// Leave of a knock by its id, once the knock was denied and its subject
// knocked again, is NOT_FOUND: the id names the knock that ended, not
// whichever knock its subject has now, which stays in the lobby. So too on
// a node whose picture still holds the denied knock.
func TestLeaveOfADeniedKnockLeavesTheSubjectsNewKnock(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stale bool
	}{
		{"on a node that heard of the denial", false},
		{"on a node whose picture still holds the denied knock", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newStaleStore()
			w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
			w.grant("user:host", "host", "call:acme:1")
			w.grant("user:guest", "guest", "account:acme")
			first := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
			if tc.stale {
				store.hold(first.Session)
			}
			if err := w.m.Deny(w.ctx, authz.Author{Caller: "test", Actor: "user:host"}, "call:acme:1", "user:guest"); err != nil {
				t.Fatalf("Deny: %v", err)
			}
			again := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
			if again.Session == first.Session {
				t.Fatalf("the knock after the denial took the denied knock's id %s", first.Session)
			}
			err := w.m.Leave(w.ctx, first.Session)
			var e *authz.Error
			if !errors.As(err, &e) || e.Code != authz.NotFound || e.Kind != authz.KindSessionNotFound || e.Field != "session_id" {
				t.Errorf("Leave of the denied knock = %v; want NOT_FOUND (%s) naming session_id", err, authz.KindSessionNotFound)
			}
			if list, err := w.m.Lobby(w.ctx, "call:acme:1", ""); err != nil || len(list) != 1 || list[0].ID != again.Session {
				t.Errorf("the lobby after the Leave = %+v, %v; want the new knock %s", list, err, again.Session)
			}
			if ren, err := w.m.KeepAlive(w.ctx, again.Session); err != nil || ren.Outcome != admission.Lobby {
				t.Errorf("KeepAlive of the new knock after the Leave = %+v, %v; want LOBBY", ren, err)
			}
		})
	}
}

// A subject may be in the call and wait in its lobby at once: a node
// whose view has yet to eject the participant that lost what let it past
// the lobby knocked for it as it joined again. Leave by its subject and
// call ends both: the subject has left, and waits for no one.
func TestLeaveCallEndsTheSessionAndTheKnockOfItsSubject(t *testing.T) {
	store := admission.NewMemoryStore(admission.MemoryOptions{Clock: authz.NewManualClock(start)})
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:host", "host", "call:acme:1")
	w.grant("user:member", "member", "account:acme")
	w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	// Another node's knock, made before its view acted on the revoke.
	if _, err := store.Knock(w.ctx, admission.Knock{ID: "knock-of-another-node", Subject: "user:member", Call: "call:acme:1",
		Knocked: start, Expires: start.Add(10 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if n, k := w.m.Counts().Sessions, w.m.Counts().Knocks; n != 1 || k != 1 {
		t.Fatalf("before Leave: %d sessions and %d knocks, want the session and the knock", n, k)
	}
	if err := w.m.LeaveCall(w.ctx, "user:member", "call:acme:1"); err != nil {
		t.Fatalf("LeaveCall: %v", err)
	}
	if c := w.m.Counts(); c.Sessions != 0 || c.Knocks != 0 {
		t.Errorf("after LeaveCall: %d sessions and %d knocks, want none", c.Sessions, c.Knocks)
	}
	if list, err := w.m.Lobby(w.ctx, "call:acme:1", "user:host"); err != nil || len(list) != 0 {
		t.Errorf("the lobby after the subject left = %+v, %v; want it empty", list, err)
	}
}
