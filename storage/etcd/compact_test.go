package etcd_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage/etcd"
)

// TestConcurrentCompactionsKeepTheHighestHorizon runs compactions to
// different revisions at once, as replicas that each reach their own
// trigger do, each through a client and a store of its own. The log's
// horizon must end at the highest of them: one that moved it back would
// claim change sets another had already deleted, and Changes and Watch
// from the horizon would skip them.
func TestConcurrentCompactionsKeepTheHighestHorizon(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	const n = 96
	for round := range 3 {
		prefix := fmt.Sprintf("/compact-%d/", round)
		stores := make([]*etcd.Store, 8)
		for i := range stores {
			stores[i] = etcd.New(c.Client(t), etcd.Options{Prefix: prefix, MaxTxnOps: etcdtest.MaxTxnOps})
		}
		for i := range n {
			g := authz.Grant{Subject: fmt.Sprintf("user:%d", i), Role: "viewer", Resource: "doc:1"}
			w := authz.Write{Set: authz.ChangeSet{Caller: "test", Changes: []authz.Change{{Op: authz.OpPutGrant, Grant: &g}}},
				Touches: []string{"s\x00" + g.Subject}}
			if res, err := stores[0].Commit(ctx, []authz.Write{w}); err != nil || res[0].Revision == 0 {
				t.Fatalf("commit %d: %+v, %v", i, res, err)
			}
		}
		order := rand.Perm(n)
		var wg sync.WaitGroup
		for i, before := range order {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := stores[i%len(stores)].Compact(ctx, authz.Revision(before+1)); err != nil {
					t.Errorf("Compact(%d): %v", before+1, err)
				}
			}()
		}
		wg.Wait()
		start, err := stores[0].LogStart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if start != n {
			t.Errorf("round %d: after compactions up to %d at once, the log begins after %d", round, n, start)
		}
		// Whatever the horizon, the log holds every change set after it.
		css, err := stores[0].Changes(ctx, start, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(css) != int(n-start) {
			t.Errorf("round %d: the log begins after %d but holds %d change sets of the %d after it", round, start, len(css), n-start)
		}
	}
}
