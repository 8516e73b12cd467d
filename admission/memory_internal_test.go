package admission

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/usher-authz/usher/authz"
)

// The lease queue holds one current entry per live session and knock, and
// at most about as many records left behind, however often each is
// renewed, and none once they end: renewals of a long call do not grow the
// node's memory until the lease runs out.
func TestRenewalsKeepOneLeaseEntryPerSessionAndKnock(t *testing.T) {
	start := time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC)
	clock := authz.NewManualClock(start)
	m := NewMemoryStore(MemoryOptions{Clock: clock})
	defer m.Close()
	ctx := context.Background()
	lease := 10 * time.Second
	for _, subject := range []string{"user:a", "user:b"} {
		s := Session{ID: "s-" + subject, Subject: subject, Call: "call:acme:1", Joined: start, Expires: start.Add(lease), Counted: true}
		if out, _, err := m.Join(ctx, s, 0); err != nil || out != Admitted {
			t.Fatalf("Join(%s) = %s, %v", subject, out, err)
		}
	}
	k := Knock{ID: "k-user:c", Subject: "user:c", Call: "call:acme:1", Knocked: start, Expires: start.Add(lease)}
	if _, err := m.Knock(ctx, k); err != nil {
		t.Fatal(err)
	}
	most := 0
	heapLen := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		most = max(most, len(m.expiries.recs))
		return m.expiries.Len()
	}
	for i := range 100_000 {
		at := start.Add(lease + time.Duration(i+1)*time.Millisecond)
		if _, err := m.Renew(ctx, "s-user:a", at); err != nil {
			t.Fatal(err)
		}
		heapLen()
		if i%10 == 0 {
			if _, err := m.RenewKnock(ctx, k.ID, at); err != nil {
				t.Fatal(err)
			}
			k.Expires = at
			if _, err := m.Knock(ctx, Knock{ID: "again", Subject: k.Subject, Call: k.Call, Knocked: start, Expires: at}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := heapLen(); got != 3 || most > 2*3+spareRecords {
		t.Errorf("after 100,000 renewals of a session and 20,000 of a knock: %d lease entries, want 3 (2 sessions, 1 knock), in at most %d records; the queue held up to %d", got, 2*3+spareRecords, most)
	}
	if _, err := m.End(ctx, "s-user:b", Ending{Why: Left}); err != nil {
		t.Fatal(err)
	}
	if got := heapLen(); got != 2 {
		t.Errorf("after a session left: %d lease entries, want 2", got)
	}
	// The renewed session outlives its first term, then lapses.
	clock.Advance(lease + time.Second)
	if _, ok := m.Session("s-user:a"); !ok {
		t.Error("the renewed session lapsed at its first term")
	}
	clock.Advance(100 * time.Second)
	m.mu.Lock()
	m.sweep(clock.Now())
	m.mu.Unlock()
	if s, kn := m.Len(); s != 0 || kn != 0 || heapLen() != 0 {
		t.Errorf("after every lease ran out: %d sessions, %d knocks, %d lease entries; want none", s, kn, heapLen())
	}
}

// Sessions and knocks keep the call's name, and a subject's, as the call
// first stored them, not the strings of each request: thousands of
// participants joining again and again keep one copy of each name.
func TestStoredSessionsShareTheNamesOfTheirCall(t *testing.T) {
	start := time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC)
	m := NewMemoryStore(MemoryOptions{Clock: authz.NewManualClock(start)})
	defer m.Close()
	ctx := context.Background()
	fresh := func(s string) string { return string([]byte(s)) } // a string of its own, as a decoded request's
	call, subject := fresh("call:acme:1"), fresh("user:a")
	join := func(id string) {
		t.Helper()
		s := Session{ID: id, Subject: fresh(subject), Call: fresh(call), Joined: start, Expires: start.Add(time.Minute)}
		if out, _, err := m.Join(ctx, s, 0); err != nil || out != Admitted {
			t.Fatalf("Join(%s) = %s, %v", id, out, err)
		}
	}
	if _, err := m.Knock(ctx, Knock{ID: "k1", Subject: fresh("user:b"), Call: fresh(call), Knocked: start, Expires: start.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	join("s1")
	first, _ := m.Session("s1")
	join("s2")
	second, _ := m.Session("s2")
	knock, _ := m.KnockOf("k1")
	m.mu.Lock()
	name := m.calls[call].name
	m.mu.Unlock()
	for what, got := range map[string]string{"the first session's call": first.Call, "the second session's call": second.Call, "the knock's call": knock.Call} {
		if unsafe.StringData(got) != unsafe.StringData(name) {
			t.Errorf("%s is a copy of its own, not the call's name", what)
		}
	}
	if unsafe.StringData(second.Subject) != unsafe.StringData(first.Subject) {
		t.Error("the session that replaced the subject's keeps a copy of its own of the subject's name")
	}
	// A knock shares the name of the subject's session, and a session
	// that takes the place of a knock shares the knock's.
	if _, err := m.Knock(ctx, Knock{ID: "k2", Subject: fresh(subject), Call: fresh(call), Knocked: start, Expires: start.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if k, _ := m.KnockOf("k2"); unsafe.StringData(k.Subject) != unsafe.StringData(first.Subject) {
		t.Error("a knock keeps a copy of its own of the name of its subject's session")
	}
	s := Session{ID: "s3", Subject: fresh("user:b"), Call: fresh(call), Joined: start, Expires: start.Add(time.Minute)}
	if out, _, err := m.Join(ctx, s, 0); err != nil || out != Admitted {
		t.Fatalf("Join(s3) = %s, %v", out, err)
	}
	if third, _ := m.Session("s3"); unsafe.StringData(third.Subject) != unsafe.StringData(knock.Subject) {
		t.Error("the session that took a knock's place keeps a copy of its own of the subject's name")
	}
}

// A Join signals Pending for its events, for the view's loop to take them;
// the manager's own joins, whose events it takes itself as Join returns,
// leave Pending unsignalled, and Take still returns them, in order.
func TestAJoinTheManagerTakesItselfLeavesPendingUnsignalled(t *testing.T) {
	start := time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC)
	m := NewMemoryStore(MemoryOptions{Clock: authz.NewManualClock(start)})
	defer m.Close()
	ctx := context.Background()
	signalled := func() bool {
		select {
		case <-m.Pending():
			return true
		default:
			return false
		}
	}
	session := func(id string) Session {
		return Session{ID: id, Subject: "user:a", Call: "call:acme:1", Joined: start, Expires: start.Add(time.Minute)}
	}
	if out, _, err := m.joinTaking(ctx, session("s1"), 0); err != nil || out != Admitted {
		t.Fatalf("joinTaking(s1) = %s, %v", out, err)
	}
	if out, _, err := m.joinTaking(ctx, session("s2"), 0); err != nil || out != Admitted {
		t.Fatalf("joinTaking(s2) = %s, %v", out, err)
	}
	if signalled() {
		t.Error("joins the manager takes itself signalled Pending")
	}
	var got []string
	for _, e := range m.Take() {
		what := "began"
		if e.Ended != nil {
			what = "ended"
		}
		got = append(got, e.Session.ID+" "+what)
	}
	if want := []string{"s1 began", "s1 ended", "s2 began"}; !slices.Equal(got, want) {
		t.Errorf("Take after the joins = %v, want %v", got, want)
	}
	if out, _, err := m.Join(ctx, session("s3"), 0); err != nil || out != Admitted {
		t.Fatalf("Join(s3) = %s, %v", out, err)
	}
	if !signalled() {
		t.Error("a Join through the Store interface left Pending unsignalled")
	}
}

// A session or knock whose lease ran out has ended as Lapsed, whether or
// not the store has swept it yet: End and Unknock do not find it, and do
// not report it as ending some other way.
func TestEndAndUnknockFindNothingOnceTheLeaseRanOut(t *testing.T) {
	start := time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC)
	clock := authz.NewManualClock(start)
	m := NewMemoryStore(MemoryOptions{Clock: clock})
	defer m.Close()
	ctx := context.Background()
	s := Session{ID: "s1", Subject: "user:a", Call: "call:acme:1", Joined: start, Expires: start.Add(time.Second), Counted: true}
	if out, _, err := m.Join(ctx, s, 0); err != nil || out != Admitted {
		t.Fatalf("Join = %s, %v", out, err)
	}
	k := Knock{ID: "k1", Subject: "user:b", Call: "call:acme:1", Knocked: start, Expires: start.Add(time.Second)}
	if _, err := m.Knock(ctx, k); err != nil {
		t.Fatal(err)
	}
	m.Take()
	clock.Advance(2 * time.Second)
	if _, err := m.End(ctx, s.ID, Ending{Why: Left}); !errors.Is(err, ErrNoSession) {
		t.Errorf("End of a session whose lease ran out: %v, want ErrNoSession", err)
	}
	if found, err := m.Unknock(ctx, k.Call, k.Subject, Denied); found || err != nil {
		t.Errorf("Unknock of a knock whose lease ran out = %t, %v; want false", found, err)
	}
	m.mu.Lock()
	m.sweep(clock.Now())
	m.mu.Unlock()
	for _, e := range m.Take() {
		if e.Ended == nil || e.Ended.Why != Lapsed {
			t.Errorf("event %+v; want each to end as Lapsed", e)
		}
	}
}

// A caller's session whose lease ran out holds no place in its share, swept
// or not yet, and no renewal brings it back to hold one: the next join of
// the caller takes its place, and the one after is refused.
func TestALapsedSessionNotYetSweptHoldsNoShare(t *testing.T) {
	start := time.Date(2030, 5, 1, 9, 0, 0, 0, time.UTC)
	clock := authz.NewManualClock(start)
	m := NewMemoryStore(MemoryOptions{Clock: clock, MaxSessions: 100, CallerShare: 1})
	// The sweeper is stopped: the lapsed session is swept by the Join, or
	// not at all.
	close(m.stop)
	m.done.Wait()
	ctx := context.Background()
	session := func(id, call string) Session {
		now := clock.Now()
		return Session{ID: id, Subject: "user:a", Call: call, Caller: "media-a", Joined: now, Expires: now.Add(10 * time.Second), Counted: true}
	}
	if out, _, err := m.Join(ctx, session("s1", "call:acme:1"), 0); err != nil || out != Admitted {
		t.Fatalf("the first Join = %s, %v", out, err)
	}
	clock.Advance(11 * time.Second)
	if _, err := m.Renew(ctx, "s1", clock.Now().Add(time.Minute)); !errors.Is(err, ErrNoSession) {
		t.Errorf("Renew of the lapsed session: %v, want ErrNoSession", err)
	}
	if out, _, err := m.Join(ctx, session("s2", "call:acme:2"), 0); err != nil || out != Admitted {
		t.Fatalf("a Join once the caller's session lapsed = %s, %v; want ADMITTED", out, err)
	}
	var e *ShareError
	if _, _, err := m.Join(ctx, session("s3", "call:acme:3"), 0); !errors.As(err, &e) || *e != (ShareError{Caller: "media-a", Share: 1, Held: 1}) {
		t.Errorf("a Join past the share = %v; want media-a's share of 1 refused, holding 1", err)
	}
}
