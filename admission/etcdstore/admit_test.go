package etcdstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// TestAnAdmitIsToldOnEveryReplica admits, through one replica, a subject
// that knocked there: a call's watch on the other replica, which heard of
// the knock, hears of the admission too, rather than of a knock that goes
// without a word.
func TestAnAdmitIsToldOnEveryReplica(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/admit-told/")
	b := startReplica(t, c, "/admit-told/")
	by := authz.Author{Caller: "test"}
	p := lobbyPolicy()
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	rev, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:g", Role: "guest", Resource: "call:acme:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.eng.Await(ctx, rev); err != nil {
		t.Fatal(err)
	}
	watches := watchOnBoth(t, a, b, "call:acme:1")
	k, err := a.m.Join(ctx, "", "user:g", "call:acme:1", rev)
	if err != nil || k.Outcome != admission.Lobby {
		t.Fatalf("Join of the guest = %+v, %v; want LOBBY", k, err)
	}
	if _, err := a.m.Admit(ctx, by, "call:acme:1", "user:g", time.Time{}); err != nil {
		t.Fatal(err)
	}
	for name, w := range watches {
		heard, ok := hearUntil(t, name, w, func(ev admission.Event) bool {
			return ev.Subject == "user:g" && ev.Kind == admission.EventAdmitted
		})
		if !ok {
			var kinds []admission.EventKind
			for _, ev := range heard {
				if ev.Subject == "user:g" {
					kinds = append(kinds, ev.Kind)
				}
			}
			t.Errorf("the watch on replica %s heard %v of the guest, and no ADMITTED", name, kinds)
		}
	}
}

// TestAnAdmitRightAfterABlockElsewhereIsRefused blocks a knocking guest
// through one replica and, at once, admits it through the other, whose
// index may not have applied the block yet: the Admit is refused all the
// same, FAILED_PRECONDITION (SUBJECT_BLOCKED), and writes no grant.
func TestAnAdmitRightAfterABlockElsewhereIsRefused(t *testing.T) {
	const rounds = 20
	a, b, rev := lobbyCalls(t, "/admit-blocked/", rounds)
	ctx := t.Context()
	by := authz.Author{Caller: "test"}
	for i := range rounds {
		call := fmt.Sprintf("call:acme:%d", i)
		k, err := a.m.Join(ctx, "", "user:g", call, rev)
		if err != nil || k.Outcome != admission.Lobby {
			t.Fatalf("Join of the guest = %+v, %v; want LOBBY", k, err)
		}
		if _, _, err := b.eng.Block(ctx, by, authz.Block{Subject: "user:g", Resource: call}); err != nil {
			t.Fatal(err)
		}
		_, err = a.m.Admit(ctx, by, call, "user:g", time.Time{})
		if e, ok := err.(*authz.Error); !ok || e.Code != authz.FailedPrecondition || authz.KindOf(e) != authz.KindSubjectBlocked || e.Value != "user:g" {
			t.Errorf("round %d: Admit through the other replica right after the block = %v; want FAILED_PRECONDITION (%s)", i, err, authz.KindSubjectBlocked)
		}
		if p := a.eng.Index().Presence("user:g", call); p.SkipsLobby {
			t.Errorf("round %d: the refused Admit left the guest a grant of the admit role", i)
		}
	}
}

// TestAKnockWithAnotherNoteIsToldOnEveryReplica: a subject that knocks
// again through one replica with another note is told of, with the new
// note, by a call's watch on either replica.
func TestAKnockWithAnotherNoteIsToldOnEveryReplica(t *testing.T) {
	a, b, _ := lobbyCalls(t, "/knock-note/", 1)
	ctx := t.Context()
	watches := watchOnBoth(t, a, b, "call:acme:0")
	for _, note := range []string{"Gus", "Gus, the auditor"} {
		k, err := a.m.Knock(ctx, "", "user:g", "call:acme:0", note)
		if err != nil || k.Outcome != admission.Lobby {
			t.Fatalf("Knock of the guest with note %q = %+v, %v; want LOBBY", note, k, err)
		}
	}
	knocked := func(ev admission.Event) bool { return ev.Kind == admission.EventKnocked && ev.Subject == "user:g" }
	for name, w := range watches {
		heard, ok := hearUntil(t, name, w, func(ev admission.Event) bool {
			return knocked(ev) && ev.Note == "Gus, the auditor"
		})
		if !ok {
			var notes []string
			for _, ev := range heard {
				if knocked(ev) {
					notes = append(notes, ev.Note)
				}
			}
			t.Errorf("the watch on replica %s heard the guest knock with notes %q, and never with its new note", name, notes)
		}
	}
}

// watchOnBoth watches call on replicas a and b, by their names, until the
// test ends.
func watchOnBoth(t *testing.T, a, b replica, call string) map[string]*admission.Watch {
	t.Helper()
	watches := map[string]*admission.Watch{}
	for name, r := range map[string]replica{"a": a, "b": b} {
		w, err := r.m.Watch(call, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Close)
		watches[name] = w
	}
	return watches
}

// hearUntil reads the events of w, the watch on replica name, until one
// is done or 10 s have passed, and returns those it read and whether one
// was.
func hearUntil(t *testing.T, name string, w *admission.Watch, done func(admission.Event) bool) ([]admission.Event, bool) {
	t.Helper()
	var heard []admission.Event
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-w.C:
			if !ok {
				t.Fatalf("the watch on %s ended: %v", name, w.Err())
			}
			heard = append(heard, ev)
			if done(ev) {
				return heard, true
			}
		case <-deadline:
			return heard, false
		}
	}
}

// TestADenyThroughAReplicaBehindARevocationIsRefused revokes a host's
// grant through one replica and, at once, has the host deny a knocking
// guest through another, whose index applies each change set late: the
// host may no longer deny, and the guest still waits.
func TestADenyThroughAReplicaBehindARevocationIsRefused(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/deny-revoked/")
	b := startLaggingReplica(t, c, "/deny-revoked/", time.Second)
	by := authz.Author{Caller: "test"}
	p := lobbyPolicy()
	p.Roles = append(p.Roles, authz.Role{Name: "host", Scope: "root", Permissions: []string{"call.join", "call.admit"}})
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var rev authz.Revision
	for _, g := range []authz.Grant{{Subject: "user:g", Role: "guest", Resource: "call:acme:1"}, {Subject: "user:h", Role: "host", Resource: "call:acme:1"}} {
		var err error
		if rev, err = a.eng.Grant(ctx, by, g); err != nil {
			t.Fatal(err)
		}
	}
	k, err := a.m.Join(ctx, "", "user:g", "call:acme:1", rev)
	if err != nil || k.Outcome != admission.Lobby {
		t.Fatalf("Join of the guest = %+v, %v; want LOBBY", k, err)
	}
	if err := b.eng.Await(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := a.eng.Revoke(ctx, by, authz.Grant{Subject: "user:h", Role: "host", Resource: "call:acme:1"}); err != nil {
		t.Fatal(err)
	}
	err = b.m.Deny(ctx, authz.Author{Caller: "test", Actor: "user:h"}, "call:acme:1", "user:g")
	if e, ok := err.(*authz.Error); !ok || e.Code != authz.PermissionDenied || e.Value != "user:h" {
		t.Errorf("Deny by the host through a replica behind its revocation = %v; want PERMISSION_DENIED naming the actor", err)
	}
	if knocks, err := a.m.Lobby(ctx, "call:acme:1", ""); err != nil || len(knocks) != 1 || knocks[0].Subject != "user:g" {
		t.Errorf("the lobby after the refused Deny = %+v, %v; want the guest waiting", knocks, err)
	}
}

// A guest that knocked through a replica whose index applies each change
// set late is admitted through another: told to join, by the call's watch
// on the first replica and by its knock's KeepAlive there, it joins through
// it, rather than be sent back to the lobby for an admission the index has
// yet to apply.
func TestAGuestToldToJoinOnAReplicaBehindItsAdmissionJoins(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/admit-behind/")
	lag := startLaggingReplica(t, c, "/admit-behind/", 300*time.Millisecond)
	by := authz.Author{Caller: "test"}
	p := lobbyPolicy()
	if _, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	rev, err := a.eng.Grant(ctx, by, authz.Grant{Subject: "user:g", Role: "guest", Resource: "call:acme:1"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := lag.m.Join(ctx, "", "user:g", "call:acme:1", rev)
	if err != nil || k.Outcome != admission.Lobby {
		t.Fatalf("Join of the guest = %+v, %v; want LOBBY", k, err)
	}
	w, err := lag.m.Watch("call:acme:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	admitted, err := a.m.Admit(ctx, by, "call:acme:1", "user:g", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := hearUntil(t, "lag", w, func(ev admission.Event) bool {
		return ev.Subject == "user:g" && ev.Kind == admission.EventAdmitted
	}); !ok {
		t.Fatal("the watch on the lagging replica told no ADMITTED of the guest")
	}
	if r, err := lag.m.KeepAlive(ctx, k.Session); err != nil || r.Outcome != admission.Admitted {
		t.Fatalf("KeepAlive of the admitted knock = %+v, %v; want ADMITTED", r, err)
	}
	if at := lag.eng.Index().Revision(); at >= admitted {
		t.Fatalf("the lagging replica had applied %d, the admission's revision: the test needs it behind", at)
	}
	j, err := lag.m.Join(ctx, "", "user:g", "call:acme:1", 0)
	if err != nil || j.Outcome != admission.Admitted {
		t.Errorf("Join of the guest told to join = %s (%s), %v; want ADMITTED", j.Outcome, j.Reason, err)
	}
}

// The platform denies, through a replica whose index applies each change
// set late, a guest knocking on a call registered through another a
// moment before: the guest is denied, rather than the call refused as not
// registered while the guest waits in its lobby.
func TestADenyThroughAReplicaBehindTheCallDeniesTheGuest(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	a := startReplica(t, c, "/deny-new-call/")
	lag := startLaggingReplica(t, c, "/deny-new-call/", 300*time.Millisecond)
	by := authz.Author{Caller: "test"}
	p := lobbyPolicy()
	rev, _, err := a.eng.ApplyPolicy(ctx, by, p, authz.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := lag.eng.WaitApplied(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := a.eng.PutResource(ctx, by, authz.Resource{Name: "call:acme:2"}); err != nil {
		t.Fatal(err)
	}
	if rev, err = a.eng.Grant(ctx, by, authz.Grant{Subject: "user:g", Role: "guest", Resource: "call:acme:2"}); err != nil {
		t.Fatal(err)
	}
	if k, err := a.m.Join(ctx, "", "user:g", "call:acme:2", rev); err != nil || k.Outcome != admission.Lobby {
		t.Fatalf("Join of the guest = %+v, %v; want LOBBY", k, err)
	}
	if at := lag.eng.Index().Revision(); at >= rev {
		t.Fatalf("the lagging replica had applied %d, the guest's grant: the test needs it behind", at)
	}
	if err := lag.m.Deny(ctx, by, "call:acme:2", "user:g"); err != nil {
		t.Errorf("Deny through a replica behind the call's registration = %v; want the guest denied", err)
	}
	if knocks, err := a.m.Lobby(ctx, "call:acme:2", ""); err != nil || len(knocks) != 0 {
		t.Errorf("the lobby after the Deny = %+v, %v; want no one waiting", knocks, err)
	}
}

// lobbyPolicy governs call:acme:1 by a rule with a lobby: a guest holds the
// join permission and waits there, and an admission makes it an invitee.
func lobbyPolicy() authz.Policy {
	return authz.Policy{
		Permissions: []authz.Permission{{Name: "call.join"}, {Name: "call.admit"}},
		Resources:   []authz.Resource{{Name: "call:acme:1"}},
		Roles: []authz.Role{{Name: "guest", Scope: "root", Permissions: []string{"call.join"}},
			{Name: "invitee", Scope: "root", Permissions: []string{"call.join"}}},
		Admissions: []authz.Admission{{ResourceType: "call", Join: "call.join", Lease: 10 * time.Second,
			Lobby: &authz.Lobby{Admit: "call.admit", Role: "invitee"}}},
	}
}
