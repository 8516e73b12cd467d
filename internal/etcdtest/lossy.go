package etcdtest

import (
	"context"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LossyKV wraps a client's KV (client.KV = &LossyKV{KV: client.KV}) to
// lose the answers to conditional transactions, as when the member that
// took one is killed before it answers: Lose loses the answer to the next
// that commits, after Pass others have been answered; Drop fails the next
// without sending it; ThenDrop drops the next after an answer is lost.
// Each lost or dropped one fails with context.DeadlineExceeded, and the
// flag that caused it is cleared, so that a test can tell it fired.
type LossyKV struct {
	clientv3.KV
	Lose     atomic.Bool
	Drop     atomic.Bool
	ThenDrop atomic.Bool
	Pass     atomic.Int32
}

// Txn implements clientv3.KV.
func (k *LossyKV) Txn(ctx context.Context) clientv3.Txn {
	return &lossyTxn{Txn: k.KV.Txn(ctx), kv: k}
}

type lossyTxn struct {
	clientv3.Txn
	kv          *LossyKV
	conditional bool
}

func (t *lossyTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn, t.conditional = t.Txn.If(cs...), len(cs) > 0
	return t
}

func (t *lossyTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *lossyTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t *lossyTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.conditional && t.kv.Drop.CompareAndSwap(true, false) {
		return nil, context.DeadlineExceeded
	}
	resp, err := t.Txn.Commit()
	if err == nil && t.conditional && t.kv.Pass.Add(-1) < 0 && t.kv.Lose.CompareAndSwap(true, false) {
		if t.kv.ThenDrop.CompareAndSwap(true, false) {
			t.kv.Drop.Store(true)
		}
		return nil, context.DeadlineExceeded
	}
	return resp, err
}
