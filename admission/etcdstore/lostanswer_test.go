package etcdstore_test

import (
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// A Join or Knock whose answer is lost after it committed is answered as
// committed: the subject's session or knock is the new one, which lives
// and renews, or waits in the lobby; the session it replaced is ended, as
// any join replaces it, and not the new one with it.
func TestAJoinOrKnockWhoseAnswerIsLostStands(t *testing.T) {
	ctx := t.Context()
	var kv *etcdtest.LossyKV
	s := storeThrough(t, "/lost/", func(inner clientv3.KV) clientv3.KV {
		kv = &etcdtest.LossyKV{KV: inner}
		return kv
	})
	now := time.Now()
	sess := func(id string) admission.Session {
		return admission.Session{ID: id, Subject: "user:a", Call: "call:x", Joined: now, Expires: now.Add(time.Minute), Counted: true, Revision: 1}
	}
	if out, _, err := s.Join(ctx, sess("first"), 0); err != nil || out != admission.Admitted {
		t.Fatalf("the first Join = %v, %v", out, err)
	}
	kv.Lose.Store(true)
	if out, _, err := s.Join(ctx, sess("second"), 0); err != nil || out != admission.Admitted {
		t.Fatalf("a Join whose answer was lost after its commit = %v, %v; want ADMITTED", out, err)
	}
	if kv.Lose.Load() {
		t.Fatal("no answer was lost: the test proves nothing")
	}
	if _, err := s.Renew(ctx, "second", time.Now().Add(time.Minute)); err != nil {
		t.Errorf("Renew of the session whose answer was lost: %v, want it live", err)
	}
	if _, err := s.Renew(ctx, "first", time.Now().Add(time.Minute)); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Renew of the session it replaced: %v, want %v", err, admission.ErrNoSession)
	}

	kv.Lose.Store(true)
	k := admission.Knock{ID: "knock", Subject: "user:g", Call: "call:x", Knocked: now, Expires: now.Add(time.Minute)}
	if got, err := s.Knock(ctx, k); err != nil || got.ID != "knock" {
		t.Fatalf("a Knock whose answer was lost after its commit = %+v, %v; want the knock", got, err)
	}
	if kv.Lose.Load() {
		t.Fatal("no answer to the knock was lost: the test proves nothing")
	}
	if knocks := s.Knocks("call:x"); len(knocks) != 1 || knocks[0].ID != "knock" {
		t.Errorf("the lobby after a knock whose answer was lost holds %+v, want the knock", knocks)
	}
}
