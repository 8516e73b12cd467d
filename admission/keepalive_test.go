package admission_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// staleStore stands for a cluster store whose picture has yet to hear
// that a session or knock ended through another node: Session and KnockOf
// still find the ones held, until Sync. Its writes, like a cluster store's,
// ask the shared store itself, which knows they ended.
type staleStore struct {
	*admission.MemoryStore
	mu       sync.Mutex
	sessions map[string]admission.Session
	knocks   map[string]admission.Knock
}

var _ admission.Syncer = (*staleStore)(nil)

func newStaleStore() *staleStore {
	return &staleStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{}),
		sessions: map[string]admission.Session{}, knocks: map[string]admission.Knock{}}
}

// hold keeps the live session or knock id in the picture after it ends.
func (s *staleStore) hold(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess, ok := s.MemoryStore.Session(id); ok {
		s.sessions[id] = sess
	}
	if k, ok := s.MemoryStore.KnockOf(id); ok {
		s.knocks[id] = k
	}
}

func (s *staleStore) Sync(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.sessions)
	clear(s.knocks)
	return nil
}

func (s *staleStore) Session(id string) (admission.Session, bool) {
	if sess, ok := s.MemoryStore.Session(id); ok {
		return sess, ok
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	return sess, ok
}

func (s *staleStore) KnockOf(id string) (admission.Knock, bool) {
	if k, ok := s.MemoryStore.KnockOf(id); ok {
		return k, ok
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.knocks[id]
	return k, ok
}

// A KeepAlive that reaches a node whose picture still holds a knock just
// admitted, or a session just left, through another node answers as it
// ended: ADMITTED for the knock let in, NOT_FOUND saying it left for the
// session; not NOT_FOUND for a knock that was let in.
func TestKeepAliveOfWhatEndedElsewhereAMomentAgoSaysHowItEnded(t *testing.T) {
	store := newStaleStore()
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	w.grant("user:host", "host", "call:acme:1")
	w.grant("user:guest", "guest", "account:acme")
	w.grant("user:member", "member", "account:acme")

	k := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	store.hold(k.Session)
	if _, err := w.m.Admit(w.ctx, authz.Author{Caller: "test", Actor: "user:host"}, "call:acme:1", "user:guest", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if ren, err := w.m.KeepAlive(w.ctx, k.Session); err != nil || ren.Outcome != admission.Admitted {
		t.Errorf("KeepAlive of a knock just admitted = %+v, %v; want ADMITTED", ren, err)
	}

	s := w.wantJoin("user:member", "call:acme:1", admission.Admitted)
	store.hold(s.Session)
	if err := w.m.Leave(w.ctx, s.Session); err != nil {
		t.Fatal(err)
	}
	_, err := w.m.KeepAlive(w.ctx, s.Session)
	if authz.CodeOf(err) != authz.NotFound || !strings.Contains(err.Error(), "it left") {
		t.Errorf("KeepAlive of a session just left = %v; want NOT_FOUND saying it left", err)
	}
}
