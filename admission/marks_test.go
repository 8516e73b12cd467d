package admission_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// eventually fails the test when cond has not held within 2 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 2 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// marked reports whether subject's session in call is counted, and what it
// holds exclusively, as the store says.
func marked(st admission.Store, call, subject string) (bool, []string, bool) {
	for _, s := range st.Sessions(call) {
		if s.Subject == subject {
			return s.Counted, s.Exclusive, true
		}
	}
	return false, nil, false
}

func (w *world) revoke(subject, role, resource string) {
	w.t.Helper()
	if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: subject, Role: role, Resource: resource}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) wantInCall(sessions ...string) {
	w.t.Helper()
	for _, id := range sessions {
		if r, err := w.m.KeepAlive(w.ctx, id); err != nil || r.Outcome != admission.Admitted {
			w.t.Errorf("KeepAlive of session %s = %+v, %v; want it still ADMITTED", id, r, err)
		}
	}
}

func TestHostsDemotedToMembersCountAgainstCapacity(t *testing.T) {
	w, st := newWorldWith(t, admission.Options{}, admission.MemoryOptions{})
	p := policy()
	p.Admissions = append(p.Admissions, authz.Admission{Scope: "call:acme:big", ResourceType: "call", Join: "call.join",
		MaxParticipants: 2, UncountedRoles: []string{"host"}})
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:h1", "host", "call:acme:big")
	w.grant("user:h2", "host", "call:acme:big")
	w.grant("user:late", "member", "call:acme:big")
	h1 := w.wantJoin("user:h1", "call:acme:big", admission.Admitted)
	h2 := w.wantJoin("user:h2", "call:acme:big", admission.Admitted)
	// Both demoted to members: a member's grant, then the host's revoked.
	for _, h := range []string{"user:h1", "user:h2"} {
		w.grant(h, "member", "call:acme:big")
		w.revoke(h, "host", "call:acme:big")
	}
	eventually(t, "the demoted hosts' sessions count", func() bool {
		c1, _, _ := marked(st, "call:acme:big", "user:h1")
		c2, _, _ := marked(st, "call:acme:big", "user:h2")
		return c1 && c2
	})
	if r := w.wantJoin("user:late", "call:acme:big", admission.Full); r.Reason == "" {
		t.Errorf("FULL without a reason: %+v", r)
	}
	// Nobody already in is evicted for it.
	w.wantInCall(h1.Session, h2.Session)

	// One promoted back to host stops counting: room for one more.
	w.grant("user:h1", "host", "call:acme:big")
	eventually(t, "the promoted host's session stops counting", func() bool {
		c, _, _ := marked(st, "call:acme:big", "user:h1")
		return !c
	})
	w.wantJoin("user:late", "call:acme:big", admission.Admitted)
}

func TestAMemberGrantedTheUnsharedRoleHoldsTheRoom(t *testing.T) {
	w, st := newWorldWith(t, admission.Options{}, admission.MemoryOptions{})
	w.grant("user:a", "member", "account:acme")
	w.grant("user:b", "unshared", "account:acme")
	w.grant("user:c", "unshared", "account:acme")
	a := w.wantJoin("user:a", "room:acme:a", admission.Admitted)
	w.grant("user:a", "unshared", "room:acme:a")
	eventually(t, "user:a's session holds the unshared role", func() bool {
		_, ex, _ := marked(st, "room:acme:a", "user:a")
		return slices.Equal(ex, []string{"role unshared"})
	})
	if r := w.wantJoin("user:b", "room:acme:a", admission.InUse); r.Exclusive != "role unshared" {
		t.Errorf("IN_USE by %q, want \"role unshared\"", r.Exclusive)
	}
	w.wantInCall(a.Session)

	// The role revoked again (a member still), the room is free.
	w.revoke("user:a", "unshared", "room:acme:a")
	eventually(t, "user:a's session holds nothing exclusively", func() bool {
		_, ex, in := marked(st, "room:acme:a", "user:a")
		return in && len(ex) == 0
	})
	b := w.wantJoin("user:b", "room:acme:a", admission.Admitted)
	// Granting the role to one who is in beside another holder evicts
	// neither; the next holder still finds the room in use.
	w.grant("user:a", "unshared", "room:acme:a")
	eventually(t, "user:a's session holds the unshared role again", func() bool {
		_, ex, _ := marked(st, "room:acme:a", "user:a")
		return len(ex) == 1
	})
	w.wantInCall(a.Session, b.Session)
	w.wantJoin("user:c", "room:acme:a", admission.InUse)
}

// failingMarks fails the first n Marks, as a store that cannot be reached
// for a moment does.
type failingMarks struct {
	*admission.MemoryStore
	n atomic.Int32
}

func (s *failingMarks) Mark(ctx context.Context, id string, counted bool, exclusive []string, at authz.Revision) (admission.Session, error) {
	if s.n.Add(-1) >= 0 {
		return admission.Session{}, errors.New("the store is unreachable")
	}
	return s.MemoryStore.Mark(ctx, id, counted, exclusive, at)
}

// A session's new marks that the store could not take are told it again:
// a demoted host counts once the store is back, not only at the next change.
func TestMarksTheStoreRefusedAreToldItAgain(t *testing.T) {
	store := &failingMarks{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: authz.NewManualClock(start)})}
	store.n.Store(3)
	w, st := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	p := policy()
	p.Admissions = append(p.Admissions, authz.Admission{Scope: "call:acme:big", ResourceType: "call", Join: "call.join",
		MaxParticipants: 2, UncountedRoles: []string{"host"}})
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:h", "host", "call:acme:big")
	w.wantJoin("user:h", "call:acme:big", admission.Admitted)
	w.grant("user:h", "member", "call:acme:big")
	w.revoke("user:h", "host", "call:acme:big")
	eventually(t, "the demoted host's session counts", func() bool {
		c, _, _ := marked(st, "call:acme:big", "user:h")
		return c
	})
	if left := store.n.Load(); left >= 0 {
		t.Errorf("%d of the store's failures were never met", left+1)
	}
}

// slowStore holds every Mark, and every End that ejects, until letGo is
// closed, as a store a slow round trip away does, and says on entered
// when one has begun.
type slowStore struct {
	*admission.MemoryStore
	entered chan struct{}
	letGo   chan struct{}
}

func newSlowStore() *slowStore {
	return &slowStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{Clock: authz.NewManualClock(start)}),
		entered: make(chan struct{}, 1), letGo: make(chan struct{})}
}

func (s *slowStore) hold() {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.letGo
}

func (s *slowStore) Mark(ctx context.Context, id string, counted bool, exclusive []string, at authz.Revision) (admission.Session, error) {
	s.hold()
	return s.MemoryStore.Mark(ctx, id, counted, exclusive, at)
}

func (s *slowStore) End(ctx context.Context, id string, why admission.Ending) (admission.Session, error) {
	if why.Why == admission.Ejected {
		s.hold()
	}
	return s.MemoryStore.End(ctx, id, why)
}

// holding waits until the view is held in the store (failing the test
// with what it never did), then lets it go 100 ms later: a Join made
// meanwhile must wait for it.
func (s *slowStore) holding(t *testing.T, what string) {
	t.Helper()
	select {
	case <-s.entered:
	case <-time.After(2 * time.Second):
		t.Fatalf("the view never %s", what)
	}
	time.AfterFunc(100*time.Millisecond, func() { close(s.letGo) })
}

// A Join that comes while the view tells the store of a host whose role ran
// out waits for it: the former host counts, and the call it fills is FULL.
func TestAJoinWhileTheViewMarksAnExpiredHostFindsTheCallFull(t *testing.T) {
	store := newSlowStore()
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	p := policy()
	p.Admissions = append(p.Admissions, authz.Admission{Scope: "call:acme:big", ResourceType: "call", Join: "call.join",
		MaxParticipants: 1, UncountedRoles: []string{"host"}})
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:h", Role: "host", Resource: "call:acme:big", Expires: start.Add(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:h", "member", "call:acme:big")
	w.grant("user:late", "member", "call:acme:big")
	w.wantJoin("user:h", "call:acme:big", admission.Admitted)
	w.clock.Advance(6 * time.Second)
	store.holding(t, "marked the former host's session")
	w.wantJoin("user:late", "call:acme:big", admission.Full)
}

// The uncounted roles a rule names are those defined at its scope or above
// it. A tenant that defines "host" on its account defines another role than
// the one a rule above the account names: its holders count against that
// rule's capacity. Under a rule on one of its calls, the account's
// definition is above the rule, and is the role the rule names.
func TestARuleNamesTheUncountedRolesDefinedAtItsScopeOrAbove(t *testing.T) {
	for _, tc := range []struct {
		name, scope string
		want        admission.Outcome
	}{
		{"a rule above the account", "root", admission.Full},
		{"a rule on the call", "call:acme:big", admission.Admitted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := newWorldWith(t, admission.Options{}, admission.MemoryOptions{})
			p := policy()
			rule := authz.Admission{Scope: tc.scope, ResourceType: "call", Join: "call.join", MaxParticipants: 1, UncountedRoles: []string{"host"}}
			if tc.scope == "root" {
				p.Admissions[0] = rule // in place of the policy's rule there
			} else {
				p.Admissions = append(p.Admissions, rule)
			}
			p.Roles = append(p.Roles, authz.Role{Name: "host", Scope: "account:acme", Permissions: []string{"call.join"}})
			if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			w.grant("user:member", "member", "call:acme:big")
			w.grant("user:tenant-host", "host", "call:acme:big")
			w.wantJoin("user:member", "call:acme:big", admission.Admitted)
			w.wantJoin("user:tenant-host", "call:acme:big", tc.want)
		})
	}
}

// A Join that comes while the view ejects a participant whose grant ran
// out waits for it: the call the participant filled has room.
func TestAJoinWhileTheViewEjectsAnExpiredParticipantFindsRoom(t *testing.T) {
	store := newSlowStore()
	w, _ := newWorldWith(t, admission.Options{Store: store}, admission.MemoryOptions{})
	if _, err := w.eng.PutAdmission(w.ctx, w.by, authz.Admission{Scope: "call:acme:big", ResourceType: "call", Join: "call.join", MaxParticipants: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:early", Role: "member", Resource: "call:acme:big", Expires: start.Add(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	w.grant("user:late", "member", "call:acme:big")
	w.wantJoin("user:early", "call:acme:big", admission.Admitted)
	w.clock.Advance(6 * time.Second)
	store.holding(t, "ejected the participant whose grant ran out")
	w.wantJoin("user:late", "call:acme:big", admission.Admitted)
}
