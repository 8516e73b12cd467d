package admission_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/usher-authz/usher/admission"
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
