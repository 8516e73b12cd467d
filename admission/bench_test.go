package admission_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/bench"
	"github.com/usher-authz/usher/media/livekit"
	policies "github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/memory"
)

// benchWorld is a manager over n members of call:acme:1, with or without a
// LiveKit key.
func benchWorld(b *testing.B, n int, key *livekit.APIKey) (*admission.Manager, []string) {
	b.Helper()
	eng, err := authz.Start(b.Context(), memory.New(), authz.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(eng.Close)
	by := authz.Author{Caller: "bench"}
	if _, _, err := eng.ApplyPolicy(b.Context(), by, policy(), authz.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("user:u%05d", i)
		if _, err := eng.Grant(b.Context(), by, authz.Grant{Subject: subjects[i], Role: "member", Resource: "call:acme:1"}); err != nil {
			b.Fatal(err)
		}
	}
	m := admission.New(eng, admission.Options{LiveKit: key})
	b.Cleanup(func() { m.Close() })
	return m, subjects
}

// BenchmarkJoin measures an admitted Join, which replaces the subject's
// session in the call, in process, with and without a signed token.
func BenchmarkJoin(b *testing.B) {
	for _, tc := range []struct {
		name string
		key  *livekit.APIKey
	}{{"no token", nil}, {"with token", &livekit.APIKey{Key: "bench", Secret: "a-secret-of-at-least-32-bytes-long!!"}}} {
		b.Run(tc.name, func(b *testing.B) {
			m, subjects := benchWorld(b, 1000, tc.key)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					r, err := m.Join(b.Context(), "", subjects[i%len(subjects)], "call:acme:1", 0)
					if err != nil || r.Outcome != admission.Admitted {
						b.Fatalf("Join = %+v, %v", r, err)
					}
					i++
				}
			})
		})
	}
}

// BenchmarkLeaveCall measures a Leave by subject and call, in calls of a
// few and of many participants: a participant leaves and joins again.
func BenchmarkLeaveCall(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("%d participants", n), func(b *testing.B) {
			m, subjects := benchWorld(b, n, nil)
			for _, s := range subjects {
				if r, err := m.Join(b.Context(), "", s, "call:acme:1", 0); err != nil || r.Outcome != admission.Admitted {
					b.Fatalf("Join = %+v, %v", r, err)
				}
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				s := subjects[i%n]
				if err := m.LeaveCall(b.Context(), s, "call:acme:1"); err != nil {
					b.Fatal(err)
				}
				if r, err := m.Join(b.Context(), "", s, "call:acme:1", 0); err != nil || r.Outcome != admission.Admitted {
					b.Fatalf("Join = %+v, %v", r, err)
				}
			}
		})
	}
}

// BenchmarkJoinOnThePlatform measures an admitted Join with a token on the
// load tool's 200,000-grant platform, over its 30,000 distinct (subject,
// call) pairs, as `usher bench join` drives a server: each join replaces
// the subject's session in the call, so 30,000 stay live, and the pairs are
// taken far apart, so that what one join reads is not in the cache for the
// next. With -cpu 2 and more, as many goroutines join at once, as a
// server's calls do.
func BenchmarkJoinOnThePlatform(b *testing.B) {
	m, joins := platform(b, bench.Shape{Accounts: 10, WorkspacesPerAccount: 10, CallTypesPerSpace: 1, CallsPerType: 100, Users: 100_000, Grants: 200_000}, 30_000)
	join := func(j bench.Join) {
		if r, err := m.Join(b.Context(), "", j.Subject, j.Call, 0); err != nil || r.Outcome != admission.Admitted {
			b.Fatalf("Join(%s, %s) = %+v, %v", j.Subject, j.Call, r, err)
		}
	}
	for _, j := range joins {
		join(j)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			join(joins[int(next.Add(1))*7919%len(joins)])
		}
	})
}

// platform is a manager with a LiveKit key over the load tool's platform
// of shape under the default policy, and n of the (subject, call) pairs it
// admits.
func platform(tb testing.TB, shape bench.Shape, n int) (*admission.Manager, []bench.Join) {
	tb.Helper()
	msg, err := policies.Load("default")
	if err != nil {
		tb.Fatal(err)
	}
	eng, p, err := bench.Start(tb.Context(), shape, server.FromPolicy(msg))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(eng.Close)
	joins, err := bench.Joins(p, eng.Index(), n, 1)
	if err != nil {
		tb.Fatal(err)
	}
	m := admission.New(eng, admission.Options{LiveKit: &livekit.APIKey{Key: "bench", Secret: "a-secret-of-at-least-32-bytes-long!!"}})
	tb.Cleanup(func() { m.Close() })
	return m, joins
}
