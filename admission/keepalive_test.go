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

// A knock's KeepAlive answers ADMITTED only once Join would let the
// subject in: a guest given a role that skips the lobby while the call has
// not opened keeps waiting (LOBBY, the knock renewed) until it opens, as
// its Join would be answered NOT_STARTED.
func TestKeepAliveOfAKnockBeforeTheCallOpensKeepsItWaiting(t *testing.T) {
	w := newWorld(t)
	w.grant("user:guest", "guest", "account:acme")
	k := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	if _, err := w.eng.Schedule(w.ctx, w.by, "call:acme:1", start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	w.grant("user:guest", "member", "call:acme:1")
	w.wantJoin("user:guest", "call:acme:1", admission.NotStarted)
	ren, err := w.m.KeepAlive(w.ctx, k.Session)
	if err != nil || ren.Outcome != admission.Lobby || ren.Expires.IsZero() {
		t.Errorf("KeepAlive of the knock before the call opens = %+v, %v; want LOBBY, the knock renewed", ren, err)
	}
	if !strings.Contains(ren.Reason, "opens at") {
		t.Errorf("KeepAlive's reason %q does not say when the call opens", ren.Reason)
	}
	if _, err := w.eng.Schedule(w.ctx, w.by, "call:acme:1", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if ren, err := w.m.KeepAlive(w.ctx, k.Session); err != nil || ren.Outcome != admission.Admitted {
		t.Errorf("KeepAlive of the knock once the call is open = %+v, %v; want ADMITTED", ren, err)
	}
	w.wantJoin("user:guest", "call:acme:1", admission.Admitted)
}

// Nor does an Admit tell a knock to join a call that has yet to open to
// it: the knock waits on (LOBBY, renewed, saying when the call opens), as
// its Join would be answered NOT_STARTED, and is told to join once it
// opens.
func TestAKnockAdmittedBeforeTheCallOpensWaitsUntilItOpens(t *testing.T) {
	w := newWorld(t)
	w.grant("user:guest", "guest", "account:acme")
	k := w.wantJoin("user:guest", "call:acme:1", admission.Lobby)
	if _, err := w.eng.Schedule(w.ctx, w.by, "call:acme:1", start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.m.Admit(w.ctx, w.by, "call:acme:1", "user:guest", time.Time{}); err != nil {
		t.Fatal(err)
	}
	ren, err := w.m.KeepAlive(w.ctx, k.Session)
	if err != nil || ren.Outcome != admission.Lobby || ren.Expires.IsZero() || !strings.Contains(ren.Reason, "opens at") {
		t.Errorf("KeepAlive of the knock admitted before the call opens = %+v, %v; want LOBBY, the knock renewed, saying when it opens", ren, err)
	}
	w.wantJoin("user:guest", "call:acme:1", admission.NotStarted)
	if _, err := w.eng.Schedule(w.ctx, w.by, "call:acme:1", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if ren, err := w.m.KeepAlive(w.ctx, k.Session); err != nil || ren.Outcome != admission.Admitted {
		t.Errorf("KeepAlive of the knock once the call is open = %+v, %v; want ADMITTED", ren, err)
	}
	w.wantJoin("user:guest", "call:acme:1", admission.Admitted)
}

// Nor does a knock's KeepAlive answer ADMITTED to a subject that skips the
// lobby but lacks what the rule's LiveKit roomJoin requires, for which its
// Join would be answered NO_GRANT: it waits, the knock renewed, for an
// admission that gives it.
func TestKeepAliveOfAKnockWithoutRoomJoinKeepsItWaiting(t *testing.T) {
	w := newWorld(t)
	for _, r := range []authz.Role{
		{Name: "listener", Scope: "root", Permissions: []string{"call.join"}},
		{Name: "viewer", Scope: "root", Permissions: []string{"call.join", "send-video"}},
	} {
		if _, err := w.eng.PutRole(w.ctx, w.by, r); err != nil {
			t.Fatal(err)
		}
	}
	// roomJoin needs send-audio, which the lobby's guests hold; send-video
	// skips the lobby.
	if _, err := w.eng.PutAdmission(w.ctx, w.by, authz.Admission{Scope: "call:acme:1", ResourceType: "call", Join: "call.join",
		Lobby: &authz.Lobby{Admit: "call.admit", Role: "guest", Bypass: "send-video"}, Lease: 10 * time.Second,
		Media: &authz.MediaMapping{RoomJoin: "send-audio", CanSubscribe: "call.join"}}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:x", "listener", "account:acme")
	k := w.wantJoin("user:x", "call:acme:1", admission.Lobby)
	w.grant("user:x", "viewer", "call:acme:1")
	w.wantJoin("user:x", "call:acme:1", admission.NoGrant)
	ren, err := w.m.KeepAlive(w.ctx, k.Session)
	if err != nil || ren.Outcome != admission.Lobby || ren.Expires.IsZero() || !strings.Contains(ren.Reason, "roomJoin") {
		t.Errorf("KeepAlive of the knock without roomJoin = %+v, %v; want LOBBY, the knock renewed, saying roomJoin is lacking", ren, err)
	}
	if _, err := w.m.Admit(w.ctx, w.by, "call:acme:1", "user:x", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if ren, err := w.m.KeepAlive(w.ctx, k.Session); err != nil || ren.Outcome != admission.Admitted {
		t.Errorf("KeepAlive of the knock once admitted = %+v, %v; want ADMITTED", ren, err)
	}
	w.wantJoin("user:x", "call:acme:1", admission.Admitted)
}
