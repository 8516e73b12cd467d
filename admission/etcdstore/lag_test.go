package etcdstore

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// following opens a store over c that follows the prefix, as a replica
// does.
func following(t *testing.T, c *etcdtest.Cluster, prefix string) *Store {
	t.Helper()
	s, err := New(context.Background(), c.Client(t), Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// lagging opens a store over c that lists the prefix once and does not
// follow it: a replica whose watch has yet to bring what other replicas do
// from then on.
func lagging(t *testing.T, c *etcdtest.Cluster, prefix string) *Store {
	t.Helper()
	s := newStore(c.Client(t), Options{Prefix: prefix})
	if err := s.load(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestUnknockOnALaggingReplicaEndsTheSubjectsNewKnock: a subject whose knock
// was denied and who knocked again, through another replica, waits in the
// lobby; a replica whose picture still holds the first knock takes the
// subject out all the same.
func TestUnknockOnALaggingReplicaEndsTheSubjectsNewKnock(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	other := following(t, c, "/t/")
	now := time.Now()
	knock := func(id string) admission.Knock {
		return admission.Knock{ID: id, Subject: "user:a", Call: "call:x", Knocked: now, Expires: now.Add(time.Minute)}
	}
	if _, err := other.Knock(ctx, knock("k1")); err != nil {
		t.Fatal(err)
	}
	behind := lagging(t, c, "/t/")
	if found, err := other.Unknock(ctx, "call:x", "user:a", admission.Denied); !found || err != nil {
		t.Fatalf("Unknock = %t, %v", found, err)
	}
	if _, err := other.Knock(ctx, knock("k2")); err != nil {
		t.Fatal(err)
	}
	if found, err := behind.Unknock(ctx, "call:x", "user:a", admission.Denied); !found || err != nil {
		t.Errorf("Unknock of a subject waiting in the lobby, on a replica yet to see its new knock = %t, %v; want true", found, err)
	}
	if _, err := other.EndKnock(ctx, "k2", admission.Left); err == nil {
		t.Error("the subject's new knock is still waiting after Unknock")
	}
}

// TestRenewOfASessionEndedElsewhereBeforeItsLeaseIsRevoked: a replica that
// ends a session deletes its key, then revokes its lease; until the lease
// goes (or for good, when that replica lost etcd in between), a replica
// whose picture still holds the session must not renew it.
func TestRenewOfASessionEndedElsewhereBeforeItsLeaseIsRevoked(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	other := following(t, c, "/t/")
	now := time.Now()
	sess := admission.Session{ID: "s1", Subject: "user:a", Call: "call:x", Joined: now, Expires: now.Add(time.Minute), Counted: true}
	if out, _, err := other.Join(ctx, sess, 1); err != nil || out != admission.Admitted {
		t.Fatalf("Join = %s, %v", out, err)
	}
	behind := lagging(t, c, "/t/")
	// What End commits before it revokes the lease.
	e, err := other.locate(ctx, sess.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := other.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(e.key), "=", e.mod)).
		Then(clientv3.OpDelete(e.key), other.endOp(e, admission.Ending{Why: admission.Left}, now)).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("ending the session: %v, %v", resp, err)
	}
	if _, err := behind.Renew(ctx, sess.ID, time.Now().Add(time.Second)); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Renew of a session that left: %v, want ErrNoSession", err)
	}
	if _, err := behind.Renew(ctx, sess.ID, time.Now().Add(time.Hour)); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Renew past its lease's reach of a session that left: %v, want ErrNoSession", err)
	}
	// The call has room again, and nothing renewed took it.
	again := admission.Session{ID: "s2", Subject: "user:b", Call: "call:x", Joined: now, Expires: now.Add(time.Minute), Counted: true}
	if out, _, err := other.Join(ctx, again, 1); err != nil || out != admission.Admitted {
		t.Errorf("Join into the room the session left = %s, %v; want ADMITTED", out, err)
	}
}
