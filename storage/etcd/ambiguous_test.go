package etcd_test

import (
	"context"
	"errors"
	"testing"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage/etcd"
)

// lossyStore is a store of opts on a cluster of one member, through an
// etcdtest.LossyKV.
func lossyStore(t *testing.T, opts etcd.Options) (*etcdtest.LossyKV, *etcd.Store) {
	t.Helper()
	cli := etcdtest.Start(t, 1).Client(t)
	kv := &etcdtest.LossyKV{KV: cli.KV}
	cli.KV = kv
	store := etcd.New(cli, opts)
	t.Cleanup(func() { store.Close() })
	return kv, store
}

// write puts the permission name, guarding it.
func write(name string) authz.Write {
	return authz.Write{Touches: []string{name}, Set: authz.ChangeSet{Changes: []authz.Change{
		{Op: authz.OpPutPermission, Permission: &authz.Permission{Name: name}}}}}
}

// A commit whose transaction took effect though its answer was lost is
// reported as committed, not as a failure that changed nothing.
func TestACommitWhoseAnswerWasLost(t *testing.T) {
	kv, store := lossyStore(t, etcd.Options{Prefix: prefixOf(t)})
	ctx := context.Background()
	if _, err := store.Commit(ctx, []authz.Write{write("first")}); err != nil {
		t.Fatal(err)
	}
	kv.Lose.Store(true)
	res, err := store.Commit(ctx, []authz.Write{write("second")})
	logged, lerr := store.Changes(ctx, 1, 10)
	if lerr != nil {
		t.Fatal(lerr)
	}
	switch {
	case err != nil && len(logged) > 0:
		t.Fatalf("Commit failed (%v), yet the log holds its write at revision %d", err, logged[0].Revision)
	case err != nil:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Commit: %v", err)
		}
	case len(logged) != 1 || res[0].Revision != 2:
		t.Fatalf("Commit = %+v; the log after revision 1 holds %d change sets", res, len(logged))
	}
	// The store goes on committing after it.
	if res, err := store.Commit(ctx, []authz.Write{write("third")}); err != nil || res[0].Revision != authz.Revision(2+len(logged)) {
		t.Fatalf("the next Commit = %+v, %v", res, err)
	}

	// A transaction that never reached etcd fails the commit, and nothing
	// is written.
	latest, err := store.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kv.Drop.Store(true)
	if res, err := store.Commit(ctx, []authz.Write{write("fourth")}); err == nil {
		t.Fatalf("a commit whose transaction was never sent = %+v", res)
	}
	if logged, err := store.Changes(ctx, latest, 10); err != nil || len(logged) != 0 {
		t.Fatalf("after a commit that failed, the log after %d holds %d change sets (%v)", latest, len(logged), err)
	}
	if res, err := store.Commit(ctx, []authz.Write{write("fifth")}); err != nil || res[0].Revision != latest+1 {
		t.Fatalf("the Commit after the one that failed = %+v, %v; want revision %d", res, err, latest+1)
	}

	// A commit whose answer was lost, when etcd cannot then be asked
	// whether it took effect, says that it may have.
	kv.ThenDrop.Store(true)
	kv.Lose.Store(true)
	if res, err := store.Commit(ctx, []authz.Write{write("sixth")}); !errors.Is(err, authz.ErrOutcomeUnknown) {
		t.Fatalf("a commit whose answer was lost, and whether it took effect with it = %+v, %v; want an error saying so", res, err)
	}
}

// A batch that takes several transactions, the second of which may or may
// not have taken effect (its answer lost, and etcd then out of reach),
// reports the first's writes committed and the second's as possibly
// committed: not as conflicts, which the engine would plan again against
// an index that may already hold them.
func TestABatchWhoseSecondTransactionMayHaveCommitted(t *testing.T) {
	// Each write takes an entity, its log record and a version key, with
	// the revision key: 4 operations alone, 7 together.
	kv, store := lossyStore(t, etcd.Options{Prefix: prefixOf(t), MaxTxnOps: 5})
	ctx := context.Background()
	kv.Pass.Store(1)
	kv.ThenDrop.Store(true)
	kv.Lose.Store(true)
	res, err := store.Commit(ctx, []authz.Write{write("first"), write("second")})
	if err != nil {
		t.Fatalf("Commit = %v; want the first write committed", err)
	}
	if res[0].Revision != 1 || res[0].Err != nil || res[0].Conflict != "" {
		t.Errorf("the first write's result = %+v; want committed at revision 1", res[0])
	}
	if !errors.Is(res[1].Err, authz.ErrOutcomeUnknown) || res[1].Conflict != "" {
		t.Errorf("the second write's result = %+v; want an error saying it may have been committed, not a conflict to plan again", res[1])
	}
}
