package server_test

import (
	"context"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// BenchmarkCheckRPC measures a Check over a real loopback connection next to
// the health check, the floor a gRPC call costs: the difference is Usher's.
func BenchmarkCheckRPC(b *testing.B) {
	f := startServer(b, b.TempDir())
	defer f.stop()
	ctx := context.Background()
	if _, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "account:acme"}); err != nil {
		b.Fatal(err)
	}
	if _, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:alice", Role: "host", Resource: "account:acme"}); err != nil {
		b.Fatal(err)
	}
	req := &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: "account:acme"}
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
