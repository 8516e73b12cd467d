package etcdstore_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/admission/etcdstore"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// lossyKV loses the answers to the next conditional transactions that
// commit (lose of them): each is written, and its caller told etcd was
// unavailable, as when a connection drops between the commit and its
// answer.
type lossyKV struct {
	clientv3.KV
	lose atomic.Int32
}

func (k *lossyKV) Txn(ctx context.Context) clientv3.Txn { return &lossyTxn{Txn: k.KV.Txn(ctx), kv: k} }

type lossyTxn struct {
	clientv3.Txn
	kv          *lossyKV
	conditional bool
}

func (t *lossyTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.conditional = t.conditional || len(cs) > 0
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *lossyTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *lossyTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *lossyTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if err == nil && t.conditional && resp.Succeeded && t.kv.lose.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "the answer was lost")
	}
	return resp, err
}

// A Join or Knock whose answer is lost after it committed is answered as
// committed: the subject's session or knock is the new one, which lives
// and renews, or waits in the lobby; the session it replaced is ended, as
// any join replaces it, and not the new one with it.
func TestAJoinOrKnockWhoseAnswerIsLostStands(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := t.Context()
	cli := c.Client(t)
	kv := &lossyKV{KV: cli.KV}
	cli.KV = kv
	s, err := etcdstore.New(ctx, cli, etcdstore.Options{Prefix: "/lost/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	go func() {
		for range admission.Feed(ctx, s) {
		}
	}()
	now := time.Now()
	sess := func(id string) admission.Session {
		return admission.Session{ID: id, Subject: "user:a", Call: "call:x", Joined: now, Expires: now.Add(time.Minute), Counted: true, Revision: 1}
	}
	if out, _, err := s.Join(ctx, sess("first"), 0); err != nil || out != admission.Admitted {
		t.Fatalf("the first Join = %v, %v", out, err)
	}
	kv.lose.Store(1)
	if out, _, err := s.Join(ctx, sess("second"), 0); err != nil || out != admission.Admitted {
		t.Fatalf("a Join whose answer was lost after its commit = %v, %v; want ADMITTED", out, err)
	}
	if kv.lose.Load() >= 1 {
		t.Fatal("no answer was lost: the test proves nothing")
	}
	if _, err := s.Renew(ctx, "second", time.Now().Add(time.Minute)); err != nil {
		t.Errorf("Renew of the session whose answer was lost: %v, want it live", err)
	}
	if _, err := s.Renew(ctx, "first", time.Now().Add(time.Minute)); !errors.Is(err, admission.ErrNoSession) {
		t.Errorf("Renew of the session it replaced: %v, want %v", err, admission.ErrNoSession)
	}

	kv.lose.Store(1)
	k := admission.Knock{ID: "knock", Subject: "user:g", Call: "call:x", Knocked: now, Expires: now.Add(time.Minute)}
	if got, err := s.Knock(ctx, k); err != nil || got.ID != "knock" {
		t.Fatalf("a Knock whose answer was lost after its commit = %+v, %v; want the knock", got, err)
	}
	if kv.lose.Load() >= 1 {
		t.Fatal("no answer to the knock was lost: the test proves nothing")
	}
	if knocks := s.Knocks("call:x"); len(knocks) != 1 || knocks[0].ID != "knock" {
		t.Errorf("the lobby after a knock whose answer was lost holds %+v, want the knock", knocks)
	}
}
