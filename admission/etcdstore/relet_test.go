package etcdstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/admission/etcdstore"
)

// TestASessionRenewedThroughOneReplicaAndReletThroughAnotherLastsTillItsExpiry:
// a session renewed through replica b, then, once its rule's lease was
// shortened, through replica a (which puts it under a shorter lease), is
// renewed through b again: the expiry b answers is one the session lasts
// until, not one b gave before a shortened its lease.
func TestASessionRenewedThroughOneReplicaAndReletThroughAnotherLastsTillItsExpiry(t *testing.T) {
	ctx := context.Background()
	open := opener(t, "/relet/")
	a, b := open(etcdstore.Options{}), open(etcdstore.Options{})
	start := time.Now()
	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }
	s := admission.Session{ID: "s1", Subject: "user:a", Call: "call:x", Joined: start, Expires: start.Add(8 * time.Second), Counted: true}
	if out, _, err := a.Join(ctx, s, 0); err != nil || out != admission.Admitted {
		t.Fatalf("Join = %v, %v", out, err)
	}
	// Renewed through b under the rule's lease of 8 s.
	at(4900 * time.Millisecond)
	if _, err := b.Renew(ctx, s.ID, time.Now().Add(8*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The lease shortened to 3.5 s: a, which never heard of b's renewal,
	// puts the session under a lease of that term.
	at(5 * time.Second)
	if _, err := a.Renew(ctx, s.ID, time.Now().Add(3500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	at(5200 * time.Millisecond)
	got, err := b.Renew(ctx, s.ID, time.Now().Add(3500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// The media server renews again just before the expiry it was told.
	time.Sleep(time.Until(got.Expires.Add(-500 * time.Millisecond)))
	if _, err := b.Renew(ctx, s.ID, time.Now().Add(3500*time.Millisecond)); err != nil {
		t.Errorf("Renew through b, told its session expires at %s, at %s: %v; want it renewed",
			got.Expires.Sub(start).Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond), err)
	}
}
