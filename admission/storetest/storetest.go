// Package storetest is the conformance suite every admission.Store must
// pass, so that the in-memory store of one node and the etcd store of a
// cluster are proved by the same cases, as storage/storagetest proves the
// storage backends. A store shared by replicas also runs the cases that need
// two of them.
//
// Leases run in real time here: the cases that let one lapse use a lease of
// a second or two (a second is etcd's shortest), and every case runs in
// parallel with the others.
//
// It imports testing and is meant only for _test.go files.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// Bounds are the limits a case opens a store with; zero means the store's
// default.
type Bounds struct {
	MaxSessions int
	MaxKnocks   int
	CallerShare int
}

// Backend opens the stores the suite proves.
type Backend struct {
	// Open returns a new, empty store with bounds b; Run closes it.
	Open func(t *testing.T, b Bounds) admission.Store
	// Replica returns another replica's store over the same sessions as
	// of, for a store a cluster shares; nil for a store of one node. Run
	// closes it.
	Replica func(t *testing.T, of admission.Store, b Bounds) admission.Store
}

// Run proves a store.
func Run(t *testing.T, b Backend) {
	tests := []struct {
		name     string
		replicas bool
		run      func(t *testing.T, h *harness)
	}{
		{"an admitted join makes the session whole", false, testJoin},
		{"a join refused for capacity or occupancy makes nothing and says why", false, testRefused},
		{"a holder of an exclusive permission enters no call another occupant is in; occupants share", false, testOccupied},
		{"a subject's second join replaces its session, which ends as Replaced and is not among the others", false, testReplace},
		{"a join ends the subject's knock in that call as Entered", false, testEntered},
		{"a second knock renews the subject's knock, keeping its id, and changes the note only when given one", false, testReknock},
		{"Unknock ends a knock with the reason given, and is false when the subject is not waiting", false, testUnknock},
		{"EndKnock ends the knock of its id with the reason given; a knock that ended is ErrNoSession, and the subject's knock made since stays", false, testEndKnock},
		{"Renew moves a lease forward and never back; an ended session is ErrNoSession", false, testRenew},
		{"End ends a session with its reason, outcome and block id; a second End is ErrNoSession", false, testEnd},
		{"Mark sets a session's marks for the joins that follow, ends nobody and reports nothing; an ended session is ErrNoSession", false, testMark},
		{"a session or knock whose lease runs out unrenewed ends as Lapsed, and is no longer counted", false, testLapse},
		{"a renewed lease outlives its first term, and lapses once renewals stop", false, testRenewKeepsAlive},
		{"a lease renewed for a shorter term than it began with lapses at its new expiry, not a first term later", false, testRenewShorter},
		{"a renewal that leaves the expiry where it is keeps the lease no longer", false, testRenewNoFurther},
		{"a knock renewed as KeepAlive renews it lists its new expiry, on every replica and one that opens after", false, testRenewKnockListed},
		{"a call's events come in the order its sessions and knocks began and ended", false, testOrder},
		{"a call's lobby holds at most MaxKnocks; a renewal and another call's lobby still take one", false, testKnockBound},
		{"a store holds at most MaxSessions sessions and knocks; a replacement or a knocking subject still joins and a refusal comes first", false, testSessionBound},
		{"a caller holds at most CallerShare sessions and knocks across calls; a refusal writes nothing, and other callers and the anonymous one still enter", false, testCallerShare},
		{"a caller's re-join, and its join in place of its knock, add nothing to its share; another caller's take the session or knock into theirs", false, testCallerShareReplace},
		{"a caller's share frees as its sessions and knocks end or lapse, and not as they are renewed", false, testCallerShareFreed},
		{"a caller's concurrent joins and knocks across calls enter exactly its share", false, testCallerShareConcurrent},
		{"concurrent joins and knocks, all new, through one store enter up to MaxSessions and no more", false, testSessionBoundConcurrent},
		{"concurrent joins of a call admit exactly its capacity", false, testConcurrent},
		{"Len counts live sessions and knocks once each, replacements and renewals included", false, testLen},
		{"a replica sees what another makes and ends, with the reasons, and renews and ends it", true, testReplicaSees},
		{"concurrent joins across replicas admit exactly the call's capacity", true, testReplicaCapacity},
		{"a session nobody renews lapses for every replica", true, testReplicaLapse},
		{"a replica's joins see the marks another set", true, testReplicaMark},
		{"a replica ends by its id a knock another made, and never the subject's knock made after it", true, testReplicaEndKnock},
		{"a caller's share counts what it holds through every replica", true, testReplicaCallerShare},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.replicas && b.Replica == nil {
				t.Skip("the store is one node's")
			}
			t.Parallel()
			tc.run(t, &harness{t: t, ctx: context.Background(), b: b})
		})
	}
}

const call = "call:acme:1"

func testJoin(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	a := by("media-1", session(call, "user:a", time.Minute))
	out, detail, err := n.Join(h.ctx, a, admit)
	if err != nil || out != admission.Admitted || detail != "" {
		t.Fatalf("Join = %s, %q, %v; want ADMITTED", out, detail, err)
	}
	if got, ok := n.Session(a.ID); !ok || !sameSession(got, a) {
		t.Errorf("Session = %s, %t; want %s", describeSession(got), ok, describeSession(a))
	}
	n.expect(began(a))

	b := session(call, "user:b", time.Minute)
	n.mustJoin(b)
	x := session("call:acme:2", "user:a", time.Minute)
	x.Counted, x.Exclusive, x.Capabilities = false, nil, nil
	// The other call's sessions take no room in this one.
	if out := n.join(x, capacity(1)); out != admission.Admitted {
		t.Errorf("a join of another call, with room for one, = %s; want ADMITTED", out)
	}
	if got, want := sessionsOf(n, call), describeSessions(a, b); !slices.Equal(got, want) {
		t.Errorf("Sessions = %v, want %v", got, want)
	}
	if got, want := sessionsOf(n, x.Call), describeSessions(x); !slices.Equal(got, want) {
		t.Errorf("Sessions(%s) = %v, want %v", x.Call, got, want)
	}
	for _, want := range []admission.Session{a, b, x} {
		if got, ok := n.SessionOf(want.Call, want.Subject); !ok || !sameSession(got, want) {
			t.Errorf("SessionOf(%s, %s) = %s, %t; want %s", want.Call, want.Subject, describeSession(got), ok, describeSession(want))
		}
	}
	for _, absent := range [][2]string{{call, "user:c"}, {"call:acme:2", "user:b"}, {"call:acme:3", "user:a"}} {
		if got, ok := n.SessionOf(absent[0], absent[1]); ok {
			t.Errorf("SessionOf(%s, %s) = %s, want none", absent[0], absent[1], describeSession(got))
		}
	}
	n.expect(began(b), began(x))
}

func testRefused(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	in := session(call, "user:in", time.Minute)
	in.Exclusive = []string{"role unshared"}
	n.mustJoin(in)
	uncounted := session(call, "user:host", time.Minute)
	uncounted.Counted = false
	n.mustJoin(uncounted)
	a := session(call, "user:a", time.Minute)
	if out, detail, err := n.Join(h.ctx, a, capacity(1)); err != nil || out != admission.Full || detail != "1" {
		t.Errorf("Join into a full call = %s, %q, %v; want FULL, \"1\"", out, detail, err)
	}
	a.Exclusive = []string{"permission rooms.claim", "role unshared"}
	if out, detail, err := n.Join(h.ctx, a, admit); err != nil || out != admission.InUse || detail != "role unshared" {
		t.Errorf("Join of a second holder = %s, %q, %v; want IN_USE, \"role unshared\"", out, detail, err)
	}
	if _, ok := n.Session(a.ID); ok {
		t.Error("a refused join left a session")
	}
	// The subject's own session takes no room from its next one.
	again := session(call, "user:in", time.Minute)
	again.Exclusive = []string{"role unshared"}
	if out := n.join(again, capacity(1)); out != admission.Admitted {
		t.Errorf("joining again into one's own place = %s; want ADMITTED", out)
	}
	n.mustKnock(knock("call:acme:2", "user:d", "", time.Minute))
	n.Unknock(h.ctx, call, "user:b", admission.Denied)
	n.mustKnock(knock(call, "user:d", "", time.Minute))
}

func testOccupied(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	occupant := func(subject string, marks ...string) admission.Session {
		s := session(call, subject, time.Minute)
		s.Exclusive = append(marks, authz.OccupantMark)
		return s
	}
	shared := occupant("user:shared")
	n.mustJoin(shared)
	n.mustJoin(occupant("user:shared2"))
	host := session(call, "user:host", time.Minute)
	host.Exclusive = []string{"role host"}
	n.mustJoin(host)
	claim := occupant("user:unshared", "permission rooms.claim")
	if out, detail, err := n.Join(h.ctx, claim, admit); err != nil || out != admission.InUse || detail != authz.OccupantMark {
		t.Errorf("Join of a claimant into an occupied call = %s, %q, %v; want IN_USE, %q", out, detail, err, authz.OccupantMark)
	}
	n.mustEnd(shared.ID, admission.Ending{Why: admission.Left})
	if out := n.join(claim, admit); out != admission.InUse {
		t.Errorf("Join of a claimant with one occupant left = %s; want IN_USE", out)
	}
	for _, s := range n.Sessions(call) {
		if s.Subject == "user:shared2" {
			n.mustEnd(s.ID, admission.Ending{Why: admission.Left})
		}
	}
	// Only the host, who is no occupant, is in: the claimant enters, and
	// its own occupancy takes no room from its next join.
	n.mustJoin(claim)
	again := occupant("user:unshared", "permission rooms.claim")
	if out := n.join(again, admit); out != admission.Admitted {
		t.Errorf("a claimant joining again into its own place = %s; want ADMITTED", out)
	}
	// An occupant without a claim still enters where a claimant is.
	n.mustJoin(occupant("user:shared3"))
}

func testReplace(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	a1, b := session(call, "user:a", time.Minute), session(call, "user:b", time.Minute)
	n.mustJoin(a1)
	n.mustJoin(b)
	n.expect(began(a1), began(b))

	// With room for two counted participants, a's own session leaves room
	// for its next one.
	a2 := session(call, "user:a", 2*time.Minute)
	if out := n.join(a2, capacity(2)); out != admission.Admitted {
		t.Fatalf("joining again in a call of two = %s; want ADMITTED", out)
	}
	if _, ok := n.Session(a1.ID); ok {
		t.Error("the replaced session is still live")
	}
	if got, want := sessionsOf(n, call), describeSessions(a2, b); !slices.Equal(got, want) {
		t.Errorf("Sessions = %v, want %v", got, want)
	}
	if got, ok := n.SessionOf(call, "user:a"); !ok || !sameSession(got, a2) {
		t.Errorf("SessionOf the subject who joined again = %s, %t; want %s", describeSession(got), ok, describeSession(a2))
	}
	n.expect(ended(a1, admission.Ending{Why: admission.Replaced}), began(a2))
	if _, err := n.Renew(h.ctx, a1.ID, time.Now().Add(time.Hour)); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Renew of a replaced session: %v, want ErrNoSession", err)
	}
	if _, err := n.End(h.ctx, a1.ID, admission.Ending{Why: admission.Left}); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("End of a replaced session: %v, want ErrNoSession", err)
	}
}

func testEntered(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	k := n.mustKnock(knock(call, "user:a", "let me in", time.Minute))
	other := n.mustKnock(knock("call:acme:2", "user:a", "", time.Minute))
	n.expect(knocked(k), knocked(other))
	if got, want := knocksOf(n, call), describeKnocks(k); !slices.Equal(got, want) {
		t.Errorf("Knocks = %v, want %v", got, want)
	}
	if got, ok := n.KnockOf(k.ID); !ok || !sameKnock(got, k) {
		t.Errorf("KnockOf = %s, %t; want %s", describeKnock(got), ok, describeKnock(k))
	}
	s := session(call, "user:a", time.Minute)
	n.mustJoin(s)
	n.expect(unknocked(k, admission.Entered), began(s))
	if _, ok := n.KnockOf(k.ID); ok {
		t.Error("the knock of a subject that joined is still live")
	}
	if got := n.Knocks(call); len(got) != 0 {
		t.Errorf("Knocks = %v after the subject joined", describeKnocks(got...))
	}
	if got, want := knocksOf(n, other.Call), describeKnocks(other); !slices.Equal(got, want) {
		t.Errorf("the subject's knock in another call: Knocks = %v, want %v", got, want)
	}
}

func testReknock(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	k := knock(call, "user:a", "hello", time.Minute)
	if got := n.mustKnock(k); !sameKnock(got, k) {
		t.Fatalf("Knock = %s, want %s", describeKnock(got), describeKnock(k))
	}
	again := knock(call, "user:a", "", 2*time.Minute)
	want := k
	want.Expires = again.Expires
	if got := n.mustKnock(again); !sameKnock(got, want) {
		t.Errorf("a second knock without a note = %s, want %s", describeKnock(got), describeKnock(want))
	}
	third := knock(call, "user:a", "still here", 3*time.Minute)
	want.Note, want.Expires = third.Note, third.Expires
	if got := n.mustKnock(third); !sameKnock(got, want) {
		t.Errorf("a third knock with a note = %s, want %s", describeKnock(got), describeKnock(want))
	}
	if got, ok := n.KnockOf(k.ID); !ok || !sameKnock(got, want) {
		t.Errorf("KnockOf = %s, %t; want %s", describeKnock(got), ok, describeKnock(want))
	}
	if _, ok := n.KnockOf(again.ID); ok {
		t.Error("a renewing knock's own id is live")
	}
	if found, err := n.Unknock(h.ctx, call, "user:a", admission.Left); !found || err != nil {
		t.Fatalf("Unknock = %t, %v", found, err)
	}
	// The renewal without a note told nothing; the one with another note
	// told the knock anew, with it: the knock began, took its new note,
	// then ended.
	n.expect(knocked(k), knocked(want), unknocked(want, admission.Left))
}

func testUnknock(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	for i, why := range []admission.Why{admission.Left, admission.Denied, admission.LetIn} {
		k := n.mustKnock(knock(call, "user:"+string(rune('a'+i)), "", time.Minute))
		found, err := n.Unknock(h.ctx, call, k.Subject, why)
		if !found || err != nil {
			t.Fatalf("Unknock = %t, %v", found, err)
		}
		if _, ok := n.KnockOf(k.ID); ok {
			t.Errorf("knock %s is live after Unknock", k.Subject)
		}
		n.expect(knocked(k), unknocked(k, why))
		if found, err := n.Unknock(h.ctx, call, k.Subject, why); found || err != nil {
			t.Errorf("a second Unknock = %t, %v; want false", found, err)
		}
	}
	if found, err := n.Unknock(h.ctx, "call:acme:none", "user:a", admission.Left); found || err != nil {
		t.Errorf("Unknock in a call nobody knocked at = %t, %v; want false", found, err)
	}
	if got := n.Knocks(call); len(got) != 0 {
		t.Errorf("Knocks = %v", describeKnocks(got...))
	}
}

func testEndKnock(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	denied := n.mustKnock(knock(call, "user:a", "first", time.Minute))
	if found, err := n.Unknock(h.ctx, call, "user:a", admission.Denied); !found || err != nil {
		t.Fatalf("Unknock = %t, %v", found, err)
	}
	again := n.mustKnock(knock(call, "user:a", "again", time.Minute))
	if _, err := n.EndKnock(h.ctx, denied.ID, admission.Left); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("EndKnock of the denied knock: %v, want ErrNoSession", err)
	}
	if got, ok := n.KnockOf(again.ID); !ok || !sameKnock(got, again) {
		t.Errorf("KnockOf the subject's new knock = %s, %t; want %s", describeKnock(got), ok, describeKnock(again))
	}
	if got, want := knocksOf(n, call), describeKnocks(again); !slices.Equal(got, want) {
		t.Errorf("Knocks = %v, want %v", got, want)
	}
	s := session(call, "user:b", time.Minute)
	n.mustJoin(s)
	if _, err := n.EndKnock(h.ctx, s.ID, admission.Left); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("EndKnock of a session: %v, want ErrNoSession", err)
	}
	if _, ok := n.Session(s.ID); !ok {
		t.Error("EndKnock of a session's id ended the session")
	}
	if _, err := n.EndKnock(h.ctx, newID(), admission.Left); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("EndKnock of an unknown id: %v, want ErrNoSession", err)
	}
	if got, err := n.EndKnock(h.ctx, again.ID, admission.Left); err != nil || !sameKnock(got, again) {
		t.Fatalf("EndKnock of the live knock = %s, %v; want %s", describeKnock(got), err, describeKnock(again))
	}
	if _, ok := n.KnockOf(again.ID); ok {
		t.Error("a knock is live after EndKnock")
	}
	if _, err := n.EndKnock(h.ctx, again.ID, admission.Left); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("a second EndKnock: %v, want ErrNoSession", err)
	}
	n.expect(knocked(denied), unknocked(denied, admission.Denied), knocked(again), began(s), unknocked(again, admission.Left))
	if got := n.Knocks(call); len(got) != 0 {
		t.Errorf("Knocks = %v", describeKnocks(got...))
	}
}

func testLen(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	holds := func(sessions, knocks int) {
		t.Helper()
		n.eventually(fmt.Sprintf("Len = %d sessions, %d knocks", sessions, knocks), func() bool {
			s, k := n.Len()
			return s == sessions && k == knocks
		})
	}
	holds(0, 0)
	a, b := session(call, "user:a", time.Minute), session(call, "user:b", time.Minute)
	n.mustJoin(a)
	n.mustJoin(b)
	n.mustJoin(session(call, "user:a", time.Minute))
	n.mustJoin(session("call:acme:2", "user:a", time.Minute))
	k := n.mustKnock(knock(call, "user:c", "", time.Minute))
	n.mustKnock(knock(call, "user:c", "again", time.Minute))
	holds(3, 1)
	n.mustEnd(b.ID, admission.Ending{Why: admission.Left})
	if _, err := n.Unknock(h.ctx, call, k.Subject, admission.Left); err != nil {
		t.Fatal(err)
	}
	holds(2, 0)
}

func testRenew(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	s := session(call, "user:a", time.Minute)
	n.mustJoin(s)
	// Further than the first lease reaches: a store of leases needs a longer
	// one.
	later := s.Expires.Add(time.Minute)
	got, err := n.Renew(h.ctx, s.ID, later)
	want := s
	want.Expires = later
	if err != nil || !sameSession(got, want) {
		t.Fatalf("Renew = %s, %v; want %s", describeSession(got), err, describeSession(want))
	}
	if got, err := n.Renew(h.ctx, s.ID, s.Expires); err != nil || !sameSession(got, want) {
		t.Errorf("Renew to an earlier expiry = %s, %v; want it unmoved, %s", describeSession(got), err, describeSession(want))
	}
	if got, ok := n.Session(s.ID); !ok || !sameSession(got, want) {
		t.Errorf("Session = %s, %t; want %s", describeSession(got), ok, describeSession(want))
	}
	if _, err := n.Renew(h.ctx, newID(), later); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Renew of an unknown id: %v, want ErrNoSession", err)
	}
	if _, err := n.RenewKnock(h.ctx, s.ID, later); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("RenewKnock of a session: %v, want ErrNoSession", err)
	}

	k := n.mustKnock(knock(call, "user:b", "", time.Minute))
	wantK := k
	wantK.Expires = k.Expires.Add(time.Minute)
	if got, err := n.RenewKnock(h.ctx, k.ID, wantK.Expires); err != nil || !sameKnock(got, wantK) {
		t.Errorf("RenewKnock = %s, %v; want %s", describeKnock(got), err, describeKnock(wantK))
	}
	if got, err := n.RenewKnock(h.ctx, k.ID, k.Expires); err != nil || !sameKnock(got, wantK) {
		t.Errorf("RenewKnock to an earlier expiry = %s, %v; want it unmoved, %s", describeKnock(got), err, describeKnock(wantK))
	}
	if _, err := n.Renew(h.ctx, k.ID, later); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Renew of a knock: %v, want ErrNoSession", err)
	}

	n.mustEnd(s.ID, admission.Ending{Why: admission.Left})
	if _, err := n.Renew(h.ctx, s.ID, later); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Renew of an ended session: %v, want ErrNoSession", err)
	}
	n.Unknock(h.ctx, call, k.Subject, admission.Left)
	if _, err := n.RenewKnock(h.ctx, k.ID, later); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("RenewKnock of an ended knock: %v, want ErrNoSession", err)
	}
	// Renewals tell nothing; the ends carry the renewed expiries.
	n.expect(began(s), knocked(k), ended(want, admission.Ending{Why: admission.Left}), unknocked(wantK, admission.Left))
}

func testMark(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	// Two hosts, uncounted, and a member in a call of two counted.
	h1, h2, m := session(call, "user:h1", time.Minute), session(call, "user:h2", time.Minute), session(call, "user:m", time.Minute)
	h1.Counted, h2.Counted = false, false
	for _, s := range []admission.Session{h1, h2, m} {
		if out := n.join(s, capacity(2)); out != admission.Admitted {
			t.Fatalf("Join(%s) = %s, want ADMITTED", s.Subject, out)
		}
	}
	n.expect(began(h1), began(h2), began(m))
	// Both demoted: three count in a call of two, and nobody is ended.
	for _, s := range []*admission.Session{&h1, &h2} {
		s.Counted = true
		got, err := n.Mark(h.ctx, s.ID, true, nil, 43)
		if err != nil || !sameSession(got, *s) {
			t.Fatalf("Mark = %s, %v; want %s", describeSession(got), err, describeSession(*s))
		}
	}
	if got, want := sessionsOf(n, call), describeSessions(h1, h2, m); !slices.Equal(got, want) {
		t.Errorf("Sessions after Mark = %v, want %v", got, want)
	}
	late := session(call, "user:late", time.Minute)
	if out, detail, err := n.Join(h.ctx, late, capacity(2)); err != nil || out != admission.Full || detail != "3" {
		t.Errorf("Join after two were marked counted = %s, %q, %v; want FULL, \"3\"", out, detail, err)
	}
	// The member granted an exclusive role holds it from now on.
	m.Exclusive = []string{"role unshared"}
	if got, err := n.Mark(h.ctx, m.ID, true, m.Exclusive, 43); err != nil || !sameSession(got, m) {
		t.Fatalf("Mark = %s, %v; want %s", describeSession(got), err, describeSession(m))
	}
	if got, ok := n.Session(m.ID); !ok || !sameSession(got, m) {
		t.Errorf("Session after Mark = %s, %t; want %s", describeSession(got), ok, describeSession(m))
	}
	unshared := session(call, "user:u", time.Minute)
	unshared.Counted, unshared.Exclusive = false, []string{"role unshared"}
	if out, detail, err := n.Join(h.ctx, unshared, admit); err != nil || out != admission.InUse || detail != "role unshared" {
		t.Errorf("Join of a second holder after Mark = %s, %q, %v; want IN_USE, \"role unshared\"", out, detail, err)
	}
	// Marked back: the room is free, and one host uncounted again leaves
	// room for one.
	m.Exclusive = nil
	if _, err := n.Mark(h.ctx, m.ID, true, nil, 44); err != nil {
		t.Fatal(err)
	}
	h1.Counted = false
	if _, err := n.Mark(h.ctx, h1.ID, false, nil, 44); err != nil {
		t.Fatal(err)
	}
	if out := n.join(unshared, admit); out != admission.Admitted {
		t.Errorf("the second holder's join once the room is free = %s; want ADMITTED", out)
	}
	if out := n.join(late, capacity(3)); out != admission.Admitted {
		t.Errorf("a counted join into a call of three, two counted = %s; want ADMITTED", out)
	}
	// Mark reports nothing: the next events are the joins'.
	n.expect(began(unshared), began(late))
	if got, want := sessionsOf(n, call), describeSessions(h1, h2, m, unshared, late); !slices.Equal(got, want) {
		t.Errorf("Sessions = %v, want %v", got, want)
	}
	n.mustEnd(m.ID, admission.Ending{Why: admission.Left})
	if _, err := n.Mark(h.ctx, m.ID, true, nil, 45); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Mark of an ended session: %v, want ErrNoSession", err)
	}
	if _, err := n.Mark(h.ctx, "never", true, nil, 45); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Mark of no session: %v, want ErrNoSession", err)
	}
}

func testReplicaMark(t *testing.T, h *harness) {
	a := h.open(Bounds{})
	b := h.replica(a, Bounds{})
	s := session(call, "user:a", time.Minute)
	s.Counted = false
	a.mustJoin(s)
	b.expect(began(s))
	s.Counted, s.Exclusive = true, []string{"role unshared"}
	if _, err := b.Mark(h.ctx, s.ID, true, s.Exclusive, 43); err != nil {
		t.Fatalf("Mark on the replica that did not make it: %v", err)
	}
	a.eventually("the other replica to see the marks", func() bool {
		got, ok := a.Session(s.ID)
		return ok && sameSession(got, s)
	})
	other := session(call, "user:b", time.Minute)
	other.Exclusive = []string{"role unshared"}
	if out, detail, err := a.Join(h.ctx, other, capacity(1)); err != nil || out != admission.Full || detail != "1" {
		t.Errorf("Join on the other replica = %s, %q, %v; want FULL, \"1\"", out, detail, err)
	}
	if out, detail, err := a.Join(h.ctx, other, admit); err != nil || out != admission.InUse || detail != "role unshared" {
		t.Errorf("Join on the other replica = %s, %q, %v; want IN_USE, \"role unshared\"", out, detail, err)
	}
	// Marks read at an earlier revision, by a replica whose index is
	// behind, leave those read at a later one; and those of the join's
	// own revision (session's, 42) or after are taken.
	if got, err := a.Mark(h.ctx, s.ID, false, nil, 41); err != nil || !sameSession(got, s) {
		t.Errorf("Mark read at an earlier revision = %s, %v; want %s unchanged", describeSession(got), err, describeSession(s))
	}
	s.Counted, s.Exclusive = false, nil
	if got, err := a.Mark(h.ctx, s.ID, false, nil, 43); err != nil || !sameSession(got, s) {
		t.Errorf("Mark read at the same revision as the last = %s, %v; want %s", describeSession(got), err, describeSession(s))
	}
}

func testEnd(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	a, b := session(call, "user:a", time.Minute), session(call, "user:b", time.Minute)
	n.mustJoin(a)
	n.mustJoin(b)
	n.expect(began(a), began(b))
	ejected := admission.Ending{Why: admission.Ejected, Outcome: admission.Blocked, BlockID: "blk-7"}
	if got := n.mustEnd(a.ID, ejected); !sameSession(got, a) {
		t.Errorf("End returned %s, want %s", describeSession(got), describeSession(a))
	}
	if _, ok := n.Session(a.ID); ok {
		t.Error("an ended session is live")
	}
	if got, want := sessionsOf(n, call), describeSessions(b); !slices.Equal(got, want) {
		t.Errorf("Sessions = %v, want %v", got, want)
	}
	if got, ok := n.SessionOf(call, "user:a"); ok {
		t.Errorf("SessionOf the subject whose session ended = %s, want none", describeSession(got))
	}
	n.expect(ended(a, ejected))
	if _, err := n.End(h.ctx, a.ID, ejected); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("a second End: %v, want ErrNoSession", err)
	}
	if _, err := n.End(h.ctx, newID(), ejected); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("End of an unknown id: %v, want ErrNoSession", err)
	}
	k := n.mustKnock(knock(call, "user:c", "", time.Minute))
	if _, err := n.End(h.ctx, k.ID, ejected); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("End of a knock: %v, want ErrNoSession", err)
	}
	if got, ok := n.SessionOf(call, "user:c"); ok {
		t.Errorf("SessionOf a knocking subject = %s, want none: a knock is no session", describeSession(got))
	}
	n.mustEnd(b.ID, admission.Ending{Why: admission.Left})
	n.expect(knocked(k), ended(b, admission.Ending{Why: admission.Left}))
	if got := n.Sessions(call); len(got) != 0 {
		t.Errorf("Sessions = %v", describeSessions(got...))
	}
}

func testLapse(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	s := session(call, "user:a", time.Second)
	n.mustJoin(s)
	k := n.mustKnock(knock(call, "user:b", "", time.Second))
	long := session(call, "user:c", time.Minute)
	n.mustJoin(long)
	if sessions, knocks := n.Count(call); sessions != 2 || knocks != 1 {
		t.Errorf("Count = %d sessions, %d knocks; want 2 and 1", sessions, knocks)
	}
	n.expect(began(s), knocked(k), began(long))
	n.expectAnyOrder(ended(s, admission.Ending{Why: admission.Lapsed}), unknocked(k, admission.Lapsed))
	if sessions, knocks := n.Count(call); sessions != 1 || knocks != 0 {
		t.Errorf("Count after the lapses = %d sessions, %d knocks; want 1 and 0", sessions, knocks)
	}
	if sessions, knocks := n.Count("call:acme:none"); sessions != 0 || knocks != 0 {
		t.Errorf("Count of a call of none = %d sessions, %d knocks; want 0 and 0", sessions, knocks)
	}
	if _, ok := n.Session(s.ID); ok {
		t.Error("a lapsed session is live")
	}
	if _, ok := n.KnockOf(k.ID); ok {
		t.Error("a lapsed knock is live")
	}
	if _, ok := n.SessionOf(call, "user:a"); ok {
		t.Error("SessionOf finds a lapsed session")
	}
	if got, want := sessionsOf(n, call), describeSessions(long); !slices.Equal(got, want) {
		t.Errorf("Sessions = %v, want %v", got, want)
	}
	if _, err := n.Renew(h.ctx, s.ID, time.Now().Add(time.Minute)); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Renew of a lapsed session: %v, want ErrNoSession", err)
	}
	// The lapsed session is not replaced: it is gone.
	again := session(call, "user:a", time.Minute)
	n.mustJoin(again)
	n.expect(began(again))
}

func testRenewNoFurther(t *testing.T, h *harness) {
	// Made under a rule's lease of 6 s, and renewed halfway under 2 s: the
	// expiry stays, and so does when the session and the knock lapse.
	renewShorter(t, h, 6*time.Second, 3*time.Second, 2*time.Second)
}

func testRenewKeepsAlive(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	// Two seconds, renewed every quarter: a slow machine has room.
	s := session(call, "user:a", 2*time.Second)
	n.mustJoin(s)
	want := s
	for range 12 {
		time.Sleep(250 * time.Millisecond)
		want.Expires = time.Now().Add(2 * time.Second)
		if _, err := n.Renew(h.ctx, s.ID, want.Expires); err != nil {
			t.Fatalf("Renew: %v", err)
		}
	}
	if _, ok := n.Session(s.ID); !ok {
		t.Fatal("a renewed session is not live")
	}
	n.expect(began(s), ended(want, admission.Ending{Why: admission.Lapsed}))
}

func testRenewShorter(t *testing.T, h *harness) {
	// Made under a rule's lease of 10 s, and renewed under 2 s once past
	// the first expiry's reach, so that the renewal moves it, and then no
	// more.
	renewShorter(t, h, 10*time.Second, 1500*time.Millisecond, 3*time.Second)
}

// renewShorter joins a session and knocks under a lease of first, renews
// both, before before their expiry, under a lease of 2 s, as KeepAlive does
// once the rule's lease is shortened, and renews them no more: they lapse
// at the later of the two expiries, within within of it.
func renewShorter(t *testing.T, h *harness, first, before, within time.Duration) {
	n := h.open(Bounds{})
	s := session(call, "user:a", first)
	n.mustJoin(s)
	k := n.mustKnock(knock(call, "user:b", "", first))
	n.expect(began(s), knocked(k))
	time.Sleep(time.Until(s.Expires.Add(-before)))
	want, wantK := s, k
	if renewed := time.Now().Add(2 * time.Second); renewed.After(s.Expires) {
		want.Expires = renewed
	}
	if got, err := n.Renew(h.ctx, s.ID, want.Expires); err != nil || !sameSession(got, want) {
		t.Fatalf("Renew = %s, %v; want %s", describeSession(got), err, describeSession(want))
	}
	if renewed := time.Now().Add(2 * time.Second); renewed.After(k.Expires) {
		wantK.Expires = renewed
	}
	if got, err := n.RenewKnock(h.ctx, k.ID, wantK.Expires); err != nil || !sameKnock(got, wantK) {
		t.Fatalf("RenewKnock = %s, %v; want %s", describeKnock(got), err, describeKnock(wantK))
	}
	n.expectAnyOrder(ended(want, admission.Ending{Why: admission.Lapsed}), unknocked(wantK, admission.Lapsed))
	// A lease runs out within a second or so of its expiry.
	if late := time.Since(wantK.Expires); late > within {
		t.Errorf("the session and the knock lapsed %s after their expiry; want them gone within %s", late.Round(100*time.Millisecond), within)
	}
}

func testRenewKnockListed(t *testing.T, h *harness) {
	a := h.open(Bounds{})
	var b *node
	if h.b.Replica != nil {
		b = h.replica(a, Bounds{})
	}
	k := a.mustKnock(knock(call, "user:k", "hello", time.Minute))
	want := k
	lists := func(n *node, where string) {
		t.Helper()
		if n == nil {
			return
		}
		deadline := time.Now().Add(waitAtMost)
		for {
			got, ok := n.KnockOf(k.ID)
			listed := knocksOf(n, call)
			if ok && sameKnock(got, want) && slices.Equal(listed, describeKnocks(want)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: KnockOf = %s, %t; Knocks = %v; want %s", where, describeKnock(got), ok, listed, describeKnock(want))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// As KeepAlive renews it: the rule's lease from now, which the knock's
	// lease, kept alive, reaches without a longer one.
	time.Sleep(10 * time.Millisecond)
	want.Expires = time.Now().Add(time.Minute)
	if got, err := a.RenewKnock(h.ctx, k.ID, want.Expires); err != nil || !sameKnock(got, want) {
		t.Fatalf("RenewKnock = %s, %v; want %s", describeKnock(got), err, describeKnock(want))
	}
	lists(a, "the store that renewed it")
	lists(b, "another replica")
	// As a Knock again, with nothing new, renews it.
	time.Sleep(10 * time.Millisecond)
	again := knock(call, "user:k", "", time.Minute)
	want.Expires = again.Expires
	if got := a.mustKnock(again); !sameKnock(got, want) {
		t.Fatalf("Knock again = %s, want %s", describeKnock(got), describeKnock(want))
	}
	lists(a, "the store that renewed it by a Knock")
	lists(b, "another replica, after a Knock again")
	if b != nil {
		lists(h.replica(a, Bounds{}), "a replica that opens after the renewals")
	}
}

func testOrder(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	kb := n.mustKnock(knock(call, "user:b", "", time.Minute))
	a1 := session(call, "user:a", time.Minute)
	n.mustJoin(a1)
	a2 := session(call, "user:a", time.Minute)
	n.mustJoin(a2)
	b := session(call, "user:b", time.Minute)
	n.mustJoin(b)
	kc := n.mustKnock(knock(call, "user:c", "", time.Minute))
	n.Unknock(h.ctx, call, "user:c", admission.Denied)
	n.mustEnd(a2.ID, admission.Ending{Why: admission.Left})
	ejected := admission.Ending{Why: admission.Ejected, Outcome: admission.NoGrant}
	n.mustEnd(b.ID, ejected)
	n.expect(
		knocked(kb),
		began(a1),
		ended(a1, admission.Ending{Why: admission.Replaced}), began(a2),
		unknocked(kb, admission.Entered), began(b),
		knocked(kc), unknocked(kc, admission.Denied),
		ended(a2, admission.Ending{Why: admission.Left}),
		ended(b, ejected),
	)
}

func testKnockBound(t *testing.T, h *harness) {
	n := h.open(Bounds{MaxKnocks: 3})
	var first admission.Knock
	for i := range 3 {
		k := n.mustKnock(knock(call, "user:"+string(rune('a'+i)), "", time.Minute))
		if i == 0 {
			first = k
		}
	}
	if _, err := n.Knock(h.ctx, knock(call, "user:d", "", time.Minute)); !errors.Is(err, admission.ErrLobbyFull) {
		t.Fatalf("a fourth knock: %v, want ErrLobbyFull", err)
	}
	if got := n.mustKnock(knock(call, "user:a", "", 2*time.Minute)); got.ID != first.ID {
		t.Errorf("a renewing knock at the bound got id %s, want %s", got.ID, first.ID)
	}
	n.mustKnock(knock("call:acme:2", "user:d", "", time.Minute))
	n.Unknock(h.ctx, call, "user:b", admission.Denied)
	n.mustKnock(knock(call, "user:d", "", time.Minute))
}

func testSessionBound(t *testing.T, h *harness) {
	n := h.open(Bounds{MaxSessions: 3})
	a, b := session(call, "user:a", time.Minute), session(call, "user:b", time.Minute)
	n.mustJoin(a)
	n.mustJoin(b)
	n.mustKnock(knock(call, "user:c", "", time.Minute))
	d := session(call, "user:d", time.Minute)
	if _, _, err := n.Join(h.ctx, d, admit); !errors.Is(err, admission.ErrTooMany) {
		t.Fatalf("a join past the bound: %v, want ErrTooMany", err)
	}
	if out, _, err := n.Join(h.ctx, d, capacity(2)); out != admission.Full || err != nil {
		t.Errorf("a refused join past the bound = %s, %v; want FULL", out, err)
	}
	if _, err := n.Knock(h.ctx, knock(call, "user:e", "", time.Minute)); !errors.Is(err, admission.ErrTooMany) {
		t.Errorf("a knock past the bound: %v, want ErrTooMany", err)
	}
	n.mustJoin(session(call, "user:a", time.Minute))
	n.mustEnd(b.ID, admission.Ending{Why: admission.Left})
	n.mustJoin(d)
	// At the bound again: a, d and c's knock. c's join ends its knock, so
	// it adds nothing.
	n.mustJoin(session(call, "user:c", time.Minute))
}

func testCallerShare(t *testing.T, h *harness) {
	n := h.open(Bounds{MaxSessions: 100, CallerShare: 2})
	a := by("media-a", session(call, "user:a1", time.Minute))
	n.mustJoin(a)
	k := n.mustKnock(knockBy("media-a", knock("call:acme:2", "user:a2", "", time.Minute)))
	n.expect(began(a), knocked(k))

	// At its share: neither a session nor a knock, in a call of its own or
	// in one it is in.
	_, _, err := n.Join(h.ctx, by("media-a", session("call:acme:3", "user:a3", time.Minute)), admit)
	n.refusedShare("a join in another call past the share", err, "media-a", 2, 2)
	_, _, err = n.Join(h.ctx, by("media-a", session(call, "user:a4", time.Minute)), admit)
	n.refusedShare("a join in the call it is in past the share", err, "media-a", 2, 2)
	_, err = n.Knock(h.ctx, knockBy("media-a", knock("call:acme:3", "user:a5", "", time.Minute)))
	n.refusedShare("a knock past the share", err, "media-a", 2, 2)
	if got := sessionsOf(n, "call:acme:3"); len(got) != 0 {
		t.Errorf("refused joins left sessions: %v", got)
	}
	if got, want := sessionsOf(n, call), describeSessions(a); !slices.Equal(got, want) {
		t.Errorf("refused joins left Sessions = %v, want %v", got, want)
	}
	if got := n.Knocks("call:acme:3"); len(got) != 0 {
		t.Errorf("a refused knock left knocks: %v", describeKnocks(got...))
	}
	if sessions, knocks := n.Len(); sessions != 1 || knocks != 1 {
		t.Errorf("after the refusals, Len = %d sessions, %d knocks; want 1, 1", sessions, knocks)
	}

	// Another caller, and the anonymous caller past any one share, still
	// enter; the refusals reported nothing before them.
	b := by("media-b", session("call:acme:3", "user:b", time.Minute))
	n.mustJoin(b)
	bk := n.mustKnock(knockBy("media-b", knock("call:acme:3", "user:b2", "", time.Minute)))
	var anonymous []admission.StoreEvent
	for i := range 3 {
		s := session("call:acme:3", fmt.Sprintf("user:anonymous%d", i), time.Minute)
		n.mustJoin(s)
		anonymous = append(anonymous, began(s))
	}
	n.expect(append([]admission.StoreEvent{began(b), knocked(bk)}, anonymous...)...)
	_, _, err = n.Join(h.ctx, by("media-b", session(call, "user:b3", time.Minute)), admit)
	n.refusedShare("another caller's join past its own share", err, "media-b", 2, 2)
}

func testCallerShareReplace(t *testing.T, h *harness) {
	n := h.open(Bounds{MaxSessions: 100, CallerShare: 2})
	a1 := by("media-a", session(call, "user:a", time.Minute))
	n.mustJoin(a1)
	k := n.mustKnock(knockBy("media-a", knock(call, "user:k", "", time.Minute)))

	// At its share, the caller joins the subject again, renews its knock,
	// and joins the subject that knocked: each takes the place of its own.
	a2 := by("media-a", session(call, "user:a", 2*time.Minute))
	n.mustJoin(a2)
	renewed := n.mustKnock(knockBy("media-a", knock(call, "user:k", "", 2*time.Minute)))
	entered := by("media-a", session(call, "user:k", time.Minute))
	n.mustJoin(entered)
	n.expect(began(a1), knocked(k), ended(a1, admission.Ending{Why: admission.Replaced}), began(a2),
		unknocked(renewed, admission.Entered), began(entered))
	// The same subject in another call is another session.
	_, _, err := n.Join(h.ctx, by("media-a", session("call:acme:2", "user:a", time.Minute)), admit)
	n.refusedShare("the subject joined again in another call", err, "media-a", 2, 2)

	// Another caller's join of the subject takes the session into its
	// share, out of the first caller's, which may then enter once more.
	b := by("media-b", session(call, "user:a", time.Minute))
	n.mustJoin(b)
	n.mustJoin(by("media-a", session("call:acme:2", "user:a", time.Minute)))
	_, _, err = n.Join(h.ctx, by("media-a", session("call:acme:3", "user:a", time.Minute)), admit)
	n.refusedShare("a join past the share once another caller took a session", err, "media-a", 2, 2)

	// Another caller's renewal of a knock takes it into its share, keeping
	// its id; one past that caller's share leaves the knock where it was.
	q := n.mustKnock(knockBy("media-c", knock("call:acme:4", "user:q", "", time.Minute)))
	moved := n.mustKnock(knockBy("media-b", knock("call:acme:4", "user:q", "", 2*time.Minute)))
	if moved.ID != q.ID || moved.Caller != "media-b" {
		t.Errorf("another caller's renewal = knock %s of %q; want knock %s of media-b", moved.ID, moved.Caller, q.ID)
	}
	if got, ok := n.KnockOf(q.ID); !ok || !sameKnock(got, moved) {
		t.Errorf("KnockOf the renewed knock = %s, %t; want %s", describeKnock(got), ok, describeKnock(moved))
	}
	_, _, err = n.Join(h.ctx, by("media-b", session("call:acme:3", "user:b", time.Minute)), admit)
	n.refusedShare("a join past the share of the caller that took a knock", err, "media-b", 2, 2)
	r := n.mustKnock(knockBy("media-c", knock("call:acme:4", "user:r", "", time.Minute)))
	n.mustJoin(by("media-c", session("call:acme:3", "user:c", time.Minute)))
	_, err = n.Knock(h.ctx, knockBy("media-b", knock("call:acme:4", "user:r", "", 2*time.Minute)))
	n.refusedShare("a renewal of another caller's knock past the share", err, "media-b", 2, 2)
	if got, ok := n.KnockOf(r.ID); !ok || !sameKnock(got, r) {
		t.Errorf("KnockOf the knock a refused renewal would take = %s, %t; want %s", describeKnock(got), ok, describeKnock(r))
	}
}

func testCallerShareFreed(t *testing.T, h *harness) {
	n := h.open(Bounds{MaxSessions: 100, CallerShare: 1})
	next := func(subject string) admission.Session {
		return by("media-a", session("call:acme:2", subject, time.Minute))
	}
	s := by("media-a", session(call, "user:a", time.Minute))
	n.mustJoin(s)
	if _, err := n.Renew(h.ctx, s.ID, time.Now().Add(2*time.Minute)); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if _, err := n.Mark(h.ctx, s.ID, false, nil, 43); err != nil {
		t.Fatalf("Mark: %v", err)
	}
	_, _, err := n.Join(h.ctx, next("user:b"), admit)
	n.refusedShare("a join once the caller's session was renewed and marked", err, "media-a", 1, 1)
	n.mustEnd(s.ID, admission.Ending{Why: admission.Left})
	k := n.mustKnock(knockBy("media-a", knock(call, "user:k", "", time.Minute)))
	if _, err := n.RenewKnock(h.ctx, k.ID, time.Now().Add(2*time.Minute)); err != nil {
		t.Fatalf("RenewKnock: %v", err)
	}
	_, _, err = n.Join(h.ctx, next("user:b"), admit)
	n.refusedShare("a join once the caller's knock was renewed", err, "media-a", 1, 1)
	if found, err := n.Unknock(h.ctx, call, "user:k", admission.Denied); !found || err != nil {
		t.Fatalf("Unknock = %t, %v", found, err)
	}
	n.mustJoin(next("user:b"))

	// A lapsed session frees its caller's share once it is reported.
	short := by("media-l", session(call, "user:l", time.Second))
	n.mustJoin(short)
	_, _, err = n.Join(h.ctx, by("media-l", session("call:acme:2", "user:l", time.Minute)), admit)
	n.refusedShare("a join while the caller's session lives", err, "media-l", 1, 1)
	n.expectLater(ended(short, admission.Ending{Why: admission.Lapsed}))
	n.mustJoin(by("media-l", session("call:acme:2", "user:l", time.Minute)))
}

func testCallerShareConcurrent(t *testing.T, h *harness) {
	n := h.open(Bounds{MaxSessions: 100, CallerShare: 5})
	var entered, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			call := fmt.Sprintf("call:acme:%d", i)
			var err error
			if i%2 == 0 {
				_, _, err = n.Join(context.Background(), by("media-a", session(call, "user:a", time.Minute)), admit)
			} else {
				_, err = n.Knock(context.Background(), knockBy("media-a", knock(call, "user:a", "", time.Minute)))
			}
			var share *admission.ShareError
			switch {
			case err == nil:
				entered.Add(1)
			case errors.As(err, &share):
				refused.Add(1)
			default:
				t.Errorf("Join or Knock in %s: %v", call, err)
			}
		})
	}
	wg.Wait()
	if entered.Load() != 5 || refused.Load() != 35 {
		t.Errorf("of 40 concurrent joins and knocks of a caller with a share of 5, %d entered and %d were refused its share; want 5 and 35",
			entered.Load(), refused.Load())
	}
	if sessions, knocks := n.Len(); sessions+knocks != 5 {
		t.Errorf("the store holds %d sessions and %d knocks, want 5 in all", sessions, knocks)
	}
}

func testSessionBoundConcurrent(t *testing.T, h *harness) {
	n := h.open(Bounds{MaxSessions: 5})
	var entered, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			call, subject := fmt.Sprintf("call:acme:%d", i%4), fmt.Sprintf("user:u%d", i)
			var err error
			if i%2 == 0 {
				_, _, err = n.Join(context.Background(), session(call, subject, time.Minute), admit)
			} else {
				_, err = n.Knock(context.Background(), knock(call, subject, "", time.Minute))
			}
			switch {
			case err == nil:
				entered.Add(1)
			case errors.Is(err, admission.ErrTooMany):
				refused.Add(1)
			default:
				t.Errorf("Join or Knock of %s in %s: %v", subject, call, err)
			}
		})
	}
	wg.Wait()
	if entered.Load() != 5 || refused.Load() != 35 {
		t.Errorf("of 40 concurrent joins and knocks with MaxSessions 5, %d entered and %d were refused; want 5 and 35",
			entered.Load(), refused.Load())
	}
	if sessions, knocks := n.Len(); sessions+knocks != 5 {
		t.Errorf("the store holds %d sessions and %d knocks, want 5 in all", sessions, knocks)
	}
}

func testConcurrent(t *testing.T, h *harness) {
	n := h.open(Bounds{})
	admitted := joinAll(t, []*node{n}, 100, 10)
	if admitted != 10 {
		t.Errorf("%d of 100 concurrent joins admitted to a call of 10", admitted)
	}
	if got := len(n.Sessions(call)); got != 10 {
		t.Errorf("the call holds %d sessions, want 10", got)
	}
}

// joinAll joins total subjects to call at once, spread over nodes, each
// deciding on capacity c, and returns how many were admitted.
func joinAll(t *testing.T, nodes []*node, total, c int) int {
	t.Helper()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for i := range total {
		wg.Go(func() {
			s := session(call, "user:"+newID()[:12], time.Minute)
			out, _, err := nodes[i%len(nodes)].Join(context.Background(), s, capacity(c))
			if err != nil {
				errs <- err
				return
			}
			if out == admission.Admitted {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Join: %v", err)
	}
	return int(admitted.Load())
}

func testReplicaCallerShare(t *testing.T, h *harness) {
	bounds := Bounds{MaxSessions: 100, CallerShare: 2}
	a := h.open(bounds)
	b := h.replica(a, bounds)
	s := by("media-a", session(call, "user:a", time.Minute))
	a.mustJoin(s)
	k := a.mustKnock(knockBy("media-a", knock("call:acme:2", "user:k", "", time.Minute)))
	b.expect(began(s), knocked(k))
	_, _, err := b.Join(h.ctx, by("media-a", session("call:acme:3", "user:b", time.Minute)), admit)
	b.refusedShare("a join through the other replica past the share", err, "media-a", 2, 2)
	_, err = b.Knock(h.ctx, knockBy("media-a", knock("call:acme:3", "user:c", "", time.Minute)))
	b.refusedShare("a knock through the other replica past the share", err, "media-a", 2, 2)
	// Its own re-join adds none there either; what it ends through one
	// replica frees its share on the other.
	again := by("media-a", session(call, "user:a", time.Minute))
	b.mustJoin(again)
	b.mustEnd(again.ID, admission.Ending{Why: admission.Left})
	a.expect(began(s), knocked(k), ended(s, admission.Ending{Why: admission.Replaced}), began(again),
		ended(again, admission.Ending{Why: admission.Left}))
	a.mustJoin(by("media-a", session("call:acme:3", "user:b", time.Minute)))
}

func testReplicaSees(t *testing.T, h *harness) {
	a := h.open(Bounds{})
	b := h.replica(a, Bounds{})

	s := session(call, "user:a", time.Minute)
	a.mustJoin(s)
	b.expect(began(s))
	if got, ok := b.Session(s.ID); !ok || !sameSession(got, s) {
		t.Errorf("the replica's Session = %s, %t; want %s", describeSession(got), ok, describeSession(s))
	}
	k := b.mustKnock(knock(call, "user:b", "", time.Minute))
	a.expect(began(s), knocked(k))
	if got, want := knocksOf(a, call), describeKnocks(k); !slices.Equal(got, want) {
		t.Errorf("Knocks on the other replica = %v, want %v", got, want)
	}

	// Renewed and ended through the replica that did not make it.
	want := s
	want.Expires = s.Expires.Add(time.Minute)
	if got, err := b.Renew(h.ctx, s.ID, want.Expires); err != nil || !sameSession(got, want) {
		t.Fatalf("Renew on the replica = %s, %v; want %s", describeSession(got), err, describeSession(want))
	}
	ejected := admission.Ending{Why: admission.Ejected, Outcome: admission.Blocked, BlockID: "blk-1"}
	b.mustEnd(s.ID, ejected)
	a.expect(ended(want, ejected))
	b.expect(knocked(k), ended(want, ejected))
	if found, err := a.Unknock(h.ctx, call, "user:b", admission.Denied); !found || err != nil {
		t.Fatalf("Unknock on the other replica = %t, %v", found, err)
	}
	b.expect(unknocked(k, admission.Denied))
	a.expect(unknocked(k, admission.Denied))

	// A replacement through the other replica.
	s1 := session(call, "user:c", time.Minute)
	a.mustJoin(s1)
	s2 := session(call, "user:c", time.Minute)
	b.mustJoin(s2)
	a.expect(began(s1), ended(s1, admission.Ending{Why: admission.Replaced}), began(s2))

	// Left through the other replica at once, before its picture may have
	// caught up.
	s3 := session(call, "user:d", time.Minute)
	a.mustJoin(s3)
	if _, err := b.End(h.ctx, s3.ID, admission.Ending{Why: admission.Left}); err != nil {
		t.Fatalf("End on the other replica at once: %v", err)
	}
	a.expect(began(s3), ended(s3, admission.Ending{Why: admission.Left}))
	b.eventually("the other replica to forget the session", func() bool {
		_, ok := b.Session(s3.ID)
		return !ok
	})
}

func testReplicaCapacity(t *testing.T, h *harness) {
	a := h.open(Bounds{})
	b := h.replica(a, Bounds{})
	admitted := joinAll(t, []*node{a, b}, 500, 50)
	if admitted != 50 {
		t.Errorf("%d of 500 concurrent joins over two replicas admitted to a call of 50", admitted)
	}
	for i, n := range []*node{a, b} {
		n.eventually("both replicas to see 50 sessions", func() bool { return len(n.Sessions(call)) == 50 })
		if got := len(n.Sessions(call)); got != 50 {
			t.Errorf("replica %d sees %d sessions, want 50", i, got)
		}
	}
}

func testReplicaLapse(t *testing.T, h *harness) {
	a := h.open(Bounds{})
	b := h.replica(a, Bounds{})
	s := session(call, "user:a", time.Second)
	a.mustJoin(s)
	k := b.mustKnock(knock(call, "user:b", "", time.Second))
	for _, n := range []*node{a, b} {
		n.expect(began(s), knocked(k))
		n.expectAnyOrder(ended(s, admission.Ending{Why: admission.Lapsed}), unknocked(k, admission.Lapsed))
	}
}

func testReplicaEndKnock(t *testing.T, h *harness) {
	a := h.open(Bounds{})
	b := h.replica(a, Bounds{})
	denied := a.mustKnock(knock(call, "user:a", "", time.Minute))
	b.expect(knocked(denied))
	if found, err := b.Unknock(h.ctx, call, "user:a", admission.Denied); !found || err != nil {
		t.Fatalf("Unknock on the other replica = %t, %v", found, err)
	}
	again := b.mustKnock(knock(call, "user:a", "", time.Minute))
	// At once, before the first replica's picture may have caught up.
	if _, err := a.EndKnock(h.ctx, denied.ID, admission.Left); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("EndKnock of the denied knock through the replica that made it: %v, want ErrNoSession", err)
	}
	// Nothing came between the new knock and its own end: EndKnock ended
	// no knock of the subject's.
	if found, err := b.Unknock(h.ctx, call, "user:a", admission.Left); !found || err != nil {
		t.Fatalf("Unknock of the new knock = %t, %v; want it still waiting", found, err)
	}
	a.expect(knocked(denied), unknocked(denied, admission.Denied), knocked(again), unknocked(again, admission.Left))

	// Ended through the replica that did not make it, at once.
	k := a.mustKnock(knock(call, "user:b", "", time.Minute))
	if got, err := b.EndKnock(h.ctx, k.ID, admission.Left); err != nil || !sameKnock(got, k) {
		t.Errorf("EndKnock on the other replica at once = %s, %v; want %s", describeKnock(got), err, describeKnock(k))
	}
	a.expect(knocked(k), unknocked(k, admission.Left))
	b.expect(unknocked(denied, admission.Denied), knocked(again), unknocked(again, admission.Left), knocked(k), unknocked(k, admission.Left))
}
