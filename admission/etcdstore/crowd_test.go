package etcdstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/admission/etcdstore"
	"github.com/usher-authz/usher/internal/etcdtest"
)

// TestAJoinNoOneElseDecidesReadsNoOtherParticipant fills an uncapped call
// with participants and joins one more, who holds no exclusive mark: no
// one else in the call can keep it out, and the join must not read every
// participant's record to say so, which would make each join of a crowded
// webinar cost the whole crowd.
func TestAJoinNoOneElseDecidesReadsNoOtherParticipant(t *testing.T) {
	const crowd = 40
	ctx := t.Context()
	var read *readCounter
	s := storeThrough(t, "/crowd/", func(kv clientv3.KV) clientv3.KV {
		read = &readCounter{KV: kv}
		return read
	})
	now := time.Now()
	join := func(subject string) {
		t.Helper()
		sess := admission.Session{ID: subject + "-id", Subject: subject, Call: "call:webinar", Joined: now,
			Expires: now.Add(time.Minute), Counted: true, Revision: 1}
		if out, detail, err := s.Join(ctx, sess, 0); err != nil || out != admission.Admitted {
			t.Fatalf("Join of %s = %v, %q, %v; want admitted", subject, out, detail, err)
		}
	}
	for i := range crowd {
		join(fmt.Sprintf("user:%d", i))
	}
	read.kvs.Store(0)
	join("user:late")
	if n := read.kvs.Load(); n > 2 {
		t.Errorf("a join no one else decides read %d records of a call of %d participants; want at most its own session and knock", n, crowd)
	}
}

// readCounter counts the records that transactions read.
type readCounter struct {
	clientv3.KV
	kvs atomic.Int64
}

func (r *readCounter) Txn(ctx context.Context) clientv3.Txn {
	return &countedTxn{Txn: r.KV.Txn(ctx), r: r}
}

type countedTxn struct {
	clientv3.Txn
	r *readCounter
}

func (t *countedTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *countedTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *countedTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *countedTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if err == nil {
		for _, r := range resp.Responses {
			if rr := r.GetResponseRange(); rr != nil {
				t.r.kvs.Add(int64(len(rr.Kvs)))
			}
		}
	}
	return resp, err
}

// storeThrough opens a store under prefix on a cluster of one member, its
// client's KV wrapped by wrap, and takes its events as a manager would.
func storeThrough(t *testing.T, prefix string, wrap func(clientv3.KV) clientv3.KV) *etcdstore.Store {
	t.Helper()
	cli := etcdtest.Start(t, 1).Client(t)
	cli.KV = wrap(cli.KV)
	s, err := etcdstore.New(t.Context(), cli, etcdstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	go func() {
		for range admission.Feed(t.Context(), s) {
		}
	}()
	return s
}
