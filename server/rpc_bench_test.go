package server_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// BenchmarkCheckRPC measures a Check over a real loopback connection next to
// the health check, the floor a gRPC call costs: the difference is Usher's.
func BenchmarkCheckRPC(b *testing.B) {
	f := startServer(b, b.TempDir())
	defer f.stop()
	ctx := context.Background()
	req := f.aliceHostsAcme(b)
	b.Run("check", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := f.authz.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("health", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := f.health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkCheckRPCObserved is BenchmarkCheckRPC's check on a server with
// metrics, and with metrics and a decision log sampling one in a hundred.
func BenchmarkCheckRPCObserved(b *testing.B) {
	for _, c := range []struct {
		name string
		opts func() []grpc.ServerOption
	}{
		{"metrics", func() []grpc.ServerOption { return []grpc.ServerOption{server.WithMetrics(server.NewMetrics())} }},
		{"metrics+decisionlog", func() []grpc.ServerOption {
			log := server.NewDecisionLog(io.Discard, nil, 0.01, slog.New(slog.DiscardHandler))
			b.Cleanup(func() { log.Close() })
			return []grpc.ServerOption{server.WithMetrics(server.NewMetrics()), server.WithDecisionLog(log)}
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := startServerWith(b, b.TempDir(), slog.New(slog.DiscardHandler), func(*authz.Engine) []grpc.ServerOption { return c.opts() })
			defer f.stop()
			ctx := context.Background()
			f.putResource("account:acme", "")
			f.grant("user:alice", "host", "account:acme")
			req := &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: "account:acme"}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := f.authz.Check(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
