package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/storage/memory"
)

// A CheckBatch whose caller has gone (its deadline passed, or it cancelled
// the call) stops answering: its checks hold the index for as long as they
// run, and on a world built to make each slow a batch of 1,000 held it for
// seconds after no one waited for the answer.
func TestACheckBatchWhoseCallerHasGoneStops(t *testing.T) {
	eng, err := authz.Start(t.Context(), memory.New(), authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := eng.ApplyPolicy(t.Context(), authz.Author{Caller: "test"}, FromPolicy(msg), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	req := &usherv1.CheckBatchRequest{}
	for range MaxBatch {
		req.Checks = append(req.Checks, &usherv1.CheckItem{Subject: "user:alice", Permission: "join-call", Resource: "call:default:1"})
	}
	s := &authorizationServer{engine: eng, batchChecks: NewMetrics().batch}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	late, stop := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer stop()
	for _, c := range []struct {
		ctx  context.Context
		want codes.Code
	}{{cancelled, codes.Canceled}, {late, codes.DeadlineExceeded}} {
		resp, err := s.CheckBatch(c.ctx, req)
		if status.Code(err) != c.want {
			t.Errorf("CheckBatch of a caller gone (%v) = %d decisions, %v; want %v", c.ctx.Err(), len(resp.GetDecisions()), err, c.want)
		}
	}
}
