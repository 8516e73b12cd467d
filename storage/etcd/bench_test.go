package etcd_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/bench"
	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/etcd"
)

// The figures of DESIGN.md's cluster on a real three-member etcd cluster on
// loopback, each member its own process, fsyncing as in production (the
// start-up benchmark's cluster skips fsync: it measures loading, not
// writing): how long a write takes to reach
// another replica's index, durable write throughput with 1, 8 and 32
// writers, and how long a replica takes to start on a million grants. Run
// with
//
//	go test -run '^$' -bench 'BenchmarkReplicationLag|BenchmarkWriters' -benchtime 2000x ./storage/etcd/
//	go test -run '^$' -bench BenchmarkReplicaStartup -benchtime 1x ./storage/etcd/
//
// (each start-up loads a million grants: give it -benchtime 1x).

// benchReplicas starts a cluster and two engines over one prefix, each with
// a client of its own, with the default policy applied.
func benchReplicas(b *testing.B) (a, c *authz.Engine) {
	b.Helper()
	cluster := etcdtest.StartWith(b, 3, etcdtest.Options{Durable: true})
	prefix := fmt.Sprintf("/bench/%s/", b.Name())
	start := func() *authz.Engine {
		store := etcd.New(cluster.Client(b), etcd.Options{Prefix: prefix, MaxTxnOps: etcdtest.MaxTxnOps})
		e, err := authz.Start(b.Context(), store, authz.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { e.Close(); store.Close() })
		return e
	}
	a = start()
	msg, err := policy.Load("default")
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := a.ApplyPolicy(b.Context(), authz.Author{Caller: "bench"}, server.FromPolicy(msg), authz.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	return a, start()
}

func reportPercentiles(b *testing.B, lat []time.Duration, unit string) {
	slices.Sort(lat)
	at := func(q float64) float64 {
		return float64(lat[min(int(q*float64(len(lat))), len(lat)-1)]) / float64(time.Millisecond)
	}
	b.ReportMetric(at(0.5), "p50-"+unit)
	b.ReportMetric(at(0.99), "p99-"+unit)
}

// BenchmarkReplicationLag measures, for grants written through one
// replica, how long after the write began the other replica's index has
// applied it (visible), and how long after the writer's acknowledgement
// (lag; the writer acknowledges once its own index has the write, so the
// other replica is most often there already).
func BenchmarkReplicationLag(b *testing.B) {
	a, c := benchReplicas(b)
	ctx := b.Context()
	visible := make([]time.Duration, 0, b.N)
	lag := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		i++
		t0 := time.Now()
		rev, err := a.Grant(ctx, authz.Author{Caller: "bench"}, authz.Grant{Subject: fmt.Sprintf("user:lag%d", i), Role: "user", Resource: authz.RootName})
		if err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		if err := c.Index().WaitFor(ctx, rev); err != nil {
			b.Fatal(err)
		}
		done := time.Now()
		visible = append(visible, done.Sub(t0))
		lag = append(lag, done.Sub(acked))
	}
	reportPercentiles(b, visible, "visible-ms")
	reportPercentiles(b, lag, "lag-ms")
}

// BenchmarkWriters measures durable grants through one replica with 1, 8
// and 32 concurrent writers: grants per second and the p99 of one.
func BenchmarkWriters(b *testing.B) {
	for _, writers := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("%d writers", writers), func(b *testing.B) {
			a, _ := benchReplicas(b)
			ctx := b.Context()
			var mu sync.Mutex
			var lat []time.Duration
			var wg sync.WaitGroup
			next := make(chan int)
			b.ResetTimer()
			start := time.Now()
			for w := range writers {
				wg.Go(func() {
					var mine []time.Duration
					for i := range next {
						t0 := time.Now()
						if _, err := a.Grant(ctx, authz.Author{Caller: "bench"}, authz.Grant{
							Subject: fmt.Sprintf("user:w%d-%d", w, i), Role: "user", Resource: authz.RootName}); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(t0))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
			}
			for i := range b.N {
				next <- i
			}
			close(next)
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "grants/s")
			reportPercentiles(b, lat, "ms")
		})
	}
}

// BenchmarkReplicaStartup imports the load tool's platform of a million
// grants into etcd, then measures how long a replica takes to load it and
// build its index: a new replica's wait before it serves.
func BenchmarkReplicaStartup(b *testing.B) {
	cluster := etcdtest.StartWith(b, 3, etcdtest.Options{QuotaBackendBytes: 4 << 30})
	msg, err := policy.Load("default")
	if err != nil {
		b.Fatal(err)
	}
	p := bench.Generate(bench.DefaultShape(), server.FromPolicy(msg))
	store := etcd.New(cluster.Client(b), etcd.Options{Prefix: "/startup/", MaxTxnOps: 1000})
	defer store.Close()
	t0 := time.Now()
	if err := store.Import(context.Background(), p.Snapshot); err != nil {
		b.Fatal(err)
	}
	b.Logf("imported %d resources and %d grants in %s", len(p.Snapshot.Resources), len(p.Snapshot.Grants), time.Since(t0).Round(time.Millisecond))
	if st, err := cluster.Client(b).Status(context.Background(), cluster.Endpoint(0)); err == nil {
		b.Logf("etcd's database: %d MiB (%d MiB in use)", st.DbSize>>20, st.DbSizeInUse>>20)
	}
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		e, err := authz.Start(context.Background(), store, authz.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(t0).Seconds(), "s-to-serve")
		e.Close()
	}
}
