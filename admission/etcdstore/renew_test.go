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
