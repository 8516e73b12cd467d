package server

import (
	"context"
	"testing"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/bench"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
)

// BenchmarkCheckBatchCall measures what the server does for one CheckBatch
// of 100 checks past the transport, on the load tool's platform of
// 200,000 grants (usher bench checkbatch's shape): read the request with
// grpc-go's codec, answer it with metrics on, write the response. ns/op is
// one batch.
func BenchmarkCheckBatchCall(b *testing.B) {
	msg, err := policy.Load("default")
	if err != nil {
		b.Fatal(err)
	}
	shape := bench.Shape{Accounts: 10, WorkspacesPerAccount: 10, CallTypesPerSpace: 1, CallsPerType: 100,
		Users: 100_000, Grants: 200_000, Blocks: 2_000, Seed: 1}
	eng, p, err := bench.Start(context.Background(), shape, FromPolicy(msg))
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	queries := bench.Queries(p, eng.Index(), 30_000, 1)
	requests := make([][]byte, len(queries)/100)
	for i := range requests {
		req := &usherv1.CheckBatchRequest{}
		for _, q := range queries[i*100 : (i+1)*100] {
			req.Checks = append(req.Checks, &usherv1.CheckItem{Subject: q.Subject, Permission: q.Permission, Resource: q.Resource})
		}
		if requests[i], err = proto.Marshal(req); err != nil {
			b.Fatal(err)
		}
	}
	s := &authorizationServer{engine: eng, batchChecks: NewMetrics().batch}
	c := encoding.GetCodecV2(grpcproto.Name)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req := &usherv1.CheckBatchRequest{}
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(requests[i%len(requests)])}, req); err != nil {
			b.Fatal(err)
		}
		resp, err := s.CheckBatch(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		data, err := c.Marshal(resp)
		if err != nil {
			b.Fatal(err)
		}
		data.Free()
		i++
	}
}
