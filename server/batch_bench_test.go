package server_test

import (
	"context"
	"log/slog"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/usher-authz/usher/bench"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
)

// BenchmarkCheckBatchRPC measures CheckBatch of 100 distinct checks over a
// loopback connection on the load tool's platform of 200,000 grants: ns/op
// is one batch, so a millionth of a second per check is 100,000 ns/op.
func BenchmarkCheckBatchRPC(b *testing.B) {
	msg, err := policy.Load("default")
	if err != nil {
		b.Fatal(err)
	}
	shape := bench.DefaultShape()
	shape.Accounts, shape.Users, shape.Grants = 20, 100_000, 200_000
	eng, p, err := bench.Start(context.Background(), shape, server.FromPolicy(msg))
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	queries := bench.Queries(p, eng.Index(), 30_000, 1)
	batches := make([]*usherv1.CheckBatchRequest, len(queries)/100)
	for i := range batches {
		req := &usherv1.CheckBatchRequest{}
		for _, q := range queries[i*100 : (i+1)*100] {
			req.Checks = append(req.Checks, &usherv1.CheckItem{Subject: q.Subject, Permission: q.Permission, Resource: q.Resource})
		}
		batches[i] = req
	}
	srv := server.New(eng, slog.New(slog.DiscardHandler))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := usherv1.NewAuthorizationServiceClient(conn)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := client.CheckBatch(context.Background(), batches[i%len(batches)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
