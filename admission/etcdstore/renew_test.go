package etcdstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/admission/etcdstore"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// TestRenewRightAfterARenewalElsewhere renews a session through one replica
// with an expiry past its lease's reach, which puts it under a new lease and
// revokes the old, and at once through another replica, whose picture may
// not have caught up with the new lease yet: the session is live, and the
// second renewal must say so.
func TestRenewRightAfterARenewalElsewhere(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	open := func() *etcdstore.Store {
		s, err := etcdstore.New(ctx, c.Client(t), etcdstore.Options{Prefix: "/renew/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	const rounds = 40
	for i := range rounds {
		now := time.Now()
		sess := admission.Session{ID: fmt.Sprintf("s%d", i), Subject: "user:a", Call: fmt.Sprintf("call:%d", i),
			Joined: now, Expires: now.Add(2 * time.Second), Counted: true}
		if out, _, err := a.Join(ctx, sess, 10); err != nil || out != admission.Admitted {
			t.Fatalf("join %d: %v, %v", i, out, err)
		}
		// b has seen the session under its first lease.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, ok := b.Session(sess.ID); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica b never saw session %s", sess.ID)
			}
			time.Sleep(5 * time.Millisecond)
		}
		errs := make(chan error, 1)
		go func() {
			_, err := a.Renew(ctx, sess.ID, time.Now().Add(time.Minute))
			errs <- err
		}()
		for j := 0; ; j++ {
			if _, err := b.Renew(ctx, sess.ID, time.Now().Add(time.Second)); err != nil {
				t.Fatalf("round %d: renewing a live session through b while a renewed it under a new lease: %v", i, err)
			}
			if j > 0 && len(errs) > 0 {
				break
			}
		}
		if err := <-errs; err != nil {
			t.Fatalf("renew %d through a: %v", i, err)
		}
	}
}

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
