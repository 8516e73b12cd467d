package server

import (
	"context"
	"io"
	"log/slog"
	"math"
	"testing"
	"unsafe"

	"github.com/usher-authz/usher/authz"
)

// "never blocks the hot path": a log whose writer is stuck fills its queue,
// then drops and counts, and offering a decision it drops allocates nothing.
func TestDecisionLogDropsWhenFullAndNeverAllocates(t *testing.T) {
	r, w := io.Pipe() // nobody reads: the first write blocks for good
	l := NewDecisionLog(w, nil, 1, slog.New(slog.DiscardHandler))
	q := authz.Query{Subject: "user:a", Permission: "join-call", Resource: "call:x:1"}
	d := authz.Decision{Allowed: true, Reason: authz.ReasonGranted, Role: "host", Scope: "call:x:1"}
	ctx := context.Background()
	n := DecisionQueue + 1000
	for range n {
		l.check(ctx, "Check", q, d, nil, 7)
	}
	// The queue holds DecisionQueue; the stuck writer took a few more
	// into its buffer before it stuck.
	if got := l.Dropped(); got == 0 || got > uint64(n-DecisionQueue) {
		t.Errorf("dropped %d of %d offered; want some, at most %d", got, n, n-DecisionQueue)
	}
	// AllocsPerRun counts every goroutine's: the least of three readings
	// leaves out those of other tests' servers winding down.
	least := math.Inf(1)
	for range 3 {
		least = min(least, testing.AllocsPerRun(1000, func() { l.check(ctx, "Check", q, d, nil, 7) }))
	}
	if least != 0 {
		t.Errorf("offering a decision to a full queue allocates %v times", least)
	}
	r.Close()
	if err := l.Close(); err == nil {
		t.Error("Close after a failed write reported no error")
	}
}

// A queued decision keeps copies of the names: a request's strings may share
// the request's bytes, which gRPC's next message may overwrite.
func TestDecisionLogCopiesTheNames(t *testing.T) {
	for _, want := range []authz.Query{
		{Subject: "user:a", Permission: "join-call", Resource: "call:x:1"},
		{Subject: "user:a"}, // an invalid check, logged with its error
	} {
		l := &DecisionLog{all: true, queue: make(chan decisionRecord, 1)}
		b := []byte(want.Subject + want.Permission + want.Resource)
		p, r := len(want.Subject), len(want.Subject)+len(want.Permission)
		q := authz.Query{Subject: unsafe.String(&b[0], p), Permission: unsafe.String(unsafe.SliceData(b[p:]), r-p),
			Resource: unsafe.String(unsafe.SliceData(b[r:]), len(b)-r)}
		l.check(context.Background(), "CheckBatch", q, authz.Decision{Reason: authz.ReasonNoGrant}, nil, 7)
		clear(b)
		got := <-l.queue
		if got.Subject != want.Subject || got.Permission != want.Permission || got.Resource != want.Resource {
			t.Errorf("queued subject %q, permission %q, resource %q; want %q, %q, %q",
				got.Subject, got.Permission, got.Resource, want.Subject, want.Permission, want.Resource)
		}
	}
}

func TestDecisionLogSamples(t *testing.T) {
	for _, c := range []struct {
		rate     float64
		min, max int
	}{{0, 0, 0}, {0.25, 2200, 2800}, {1, 10000, 10000}} {
		l := NewDecisionLog(io.Discard, nil, c.rate, slog.New(slog.DiscardHandler))
		kept := 0
		for range 10000 {
			if l.sampled() {
				kept++
			}
		}
		l.Close()
		if kept < c.min || kept > c.max {
			t.Errorf("rate %v kept %d of 10000; want %d to %d", c.rate, kept, c.min, c.max)
		}
	}
}
