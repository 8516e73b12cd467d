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
)

// TestReplicasMixedWrites has two replicas race registrations, moves,
// deletions, grants and revokes over a few workspaces with quotas and a
// role with max_holders, then holds the outcome to what a serial order
// gives: every limit holds in the final state, both replicas and a third
// that loads a snapshot answer alike.
func TestReplicasMixedWrites(t *testing.T) {
	const (
		quota      = 3
		maxHolders = 2
		workspaces = 3
		events     = 8
		users      = 5
		writers    = 6
		each       = 80
	)
	c := etcdtest.Start(t, 1)
	prefix := prefixOf(t)
	a := startReplica(t, "replica A", prefix, c.ClientConfig(), authz.Options{})
	b := startReplica(t, "replica B", prefix, c.ClientConfig(), authz.Options{})
	ctx := context.Background()
	applyDefaultPolicy(t, a)
	a.must("PutResource account")(a.engine.PutResource(ctx, admin, authz.Resource{Name: "account:acme"}))
	ws := make([]string, workspaces)
	for i := range ws {
		ws[i] = fmt.Sprintf("workspace:w%d", i)
		a.must("PutResource")(a.engine.PutResource(ctx, admin, authz.Resource{Name: ws[i], Parent: "account:acme"}))
		a.must("PutQuota")(a.engine.PutQuota(ctx, admin, authz.Quota{Scope: ws[i], ResourceType: "event", Limit: quota}))
	}
	rev := a.must("PutRole speaker")(a.engine.PutRole(ctx, admin, authz.Role{Name: "speaker", Scope: authz.RootName, Permissions: []string{"send-audio"}, MaxHolders: maxHolders}))
	b.await(rev)
	for _, r := range []*replica{a, b} {
		r.delay.Store(int64(2 * time.Millisecond))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	unexpected := map[string]int{}
	for w := range writers {
		r := []*replica{a, b}[w%2]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range each {
				ev := fmt.Sprintf("event:e%d", rng.IntN(events))
				var err error
				switch rng.IntN(6) {
				case 5:
					parent := "account:acme"
					if k := rng.IntN(workspaces + 1); k < workspaces {
						parent = ws[k]
					}
					_, err = r.engine.PutResource(ctx, admin, authz.Resource{Name: ws[rng.IntN(workspaces)], Parent: parent})
				case 0, 1:
					_, err = r.engine.PutResource(ctx, admin, authz.Resource{Name: ev, Parent: ws[rng.IntN(workspaces)]})
				case 2:
					_, err = r.engine.DeleteResource(ctx, admin, ev)
				case 3:
					_, err = r.engine.Grant(ctx, admin, authz.Grant{Subject: fmt.Sprintf("user:u%d", rng.IntN(users)), Role: "speaker", Resource: ev})
				case 4:
					_, err = r.engine.Revoke(ctx, admin, authz.Grant{Subject: fmt.Sprintf("user:u%d", rng.IntN(users)), Role: "speaker", Resource: ev})
				}
				if err != nil {
					var ae *authz.Error
					code := "other"
					if e, ok := err.(*authz.Error); ok {
						ae = e
						code = fmt.Sprint(ae.Code)
					}
					mu.Lock()
					unexpected[code]++
					if code == "other" || ae.Code == authz.Aborted {
						t.Logf("%s: %v", r.name, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	t.Logf("refusals by code: %v; conflicts %d", unexpected, a.conflicts.Load()+b.conflicts.Load())
	latest := a.latest()
	a.await(latest)
	b.await(latest)
	x := a.engine.Index()
	for _, w := range ws {
		qs, _, err := x.ListQuotas(w)
		if err != nil || len(qs) == 0 {
			t.Fatalf("quotas of %s: %v, %v", w, qs, err)
		}
		for _, q := range qs {
			if q.Used > quota {
				t.Errorf("%s holds %d events, over its quota of %d", q.Scope, q.Used, quota)
			}
		}
	}
	for i := range events {
		ev := fmt.Sprintf("event:e%d", i)
		gs, _, _, err := x.ListGrants(authz.GrantFilter{Resource: ev}, 100, "")
		if err != nil {
			continue // not registered
		}
		if len(gs) > maxHolders {
			t.Errorf("%s has %d speakers, over max_holders %d", ev, len(gs), maxHolders)
		}
	}
	fresh := startReplica(t, "replica C", prefix, c.ClientConfig(), authz.Options{})
	fresh.await(latest)
	sameState(t, nil, a, b, fresh)
}
