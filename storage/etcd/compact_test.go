package etcd_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

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

// The store compacts its own log once it holds twice Retain, also when
// group commits never end on the revision it looks at: here one write
// alone, then two at a time, so that every batch ends on an odd revision.
func TestGroupCommitsStillCompactTheLog(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	const retain = 10
	s := etcd.New(c.Client(t), etcd.Options{Prefix: "/groups/", MaxTxnOps: etcdtest.MaxTxnOps, Retain: retain})
	var last authz.Revision
	write := func(i int) authz.Write {
		g := authz.Grant{Subject: fmt.Sprintf("user:%d", i), Role: "viewer", Resource: "doc:1"}
		return authz.Write{Planned: last, Set: authz.ChangeSet{Caller: "test", Changes: []authz.Change{{Op: authz.OpPutGrant, Grant: &g}}}}
	}
	res, err := s.Commit(ctx, []authz.Write{write(0)})
	if err != nil || res[0].Revision == 0 {
		t.Fatalf("Commit = %+v, %v", res, err)
	}
	last = res[0].Revision
	for i := 1; i < 2100; i += 2 {
		res, err := s.Commit(ctx, []authz.Write{write(i), write(i + 1)})
		if err != nil || res[1].Revision == 0 {
			t.Fatalf("Commit = %+v, %v", res, err)
		}
		last = res[1].Revision
	}
	if last%2 == 0 {
		t.Fatalf("the last batch ends on %d: the test needs batches that end on odd revisions", last)
	}
	// The compaction runs in the background.
	deadline := time.Now().Add(10 * time.Second)
	for {
		start, err := s.LogStart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if start > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log holds revisions 1 to %d with Retain %d: never compacted", last, retain)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
