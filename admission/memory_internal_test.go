package admission

import (
	"context"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// The lease heap holds one entry per live session and knock, however often
// each is renewed, and none once they end: renewals of a long call do not
// grow the node's memory until the lease runs out.
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
	heapLen := func() int {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.expiries.Len()
	}
	for i := range 100_000 {
		at := start.Add(lease + time.Duration(i+1)*time.Millisecond)
		if _, err := m.Renew(ctx, "s-user:a", at); err != nil {
			t.Fatal(err)
		}
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
	if got := heapLen(); got != 3 {
		t.Errorf("after 100,000 renewals of a session and 20,000 of a knock: %d lease entries, want 3 (2 sessions, 1 knock)", got)
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
