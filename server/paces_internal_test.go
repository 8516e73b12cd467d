package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A holder takes while its balance is above zero, into a debt it repays
// at its rate before it takes again; a holder's debt is its own.
func TestPacesLetAHolderSpendItsRateOnAverage(t *testing.T) {
	p := newPaces(10)
	t0 := time.Unix(1_700_000_000, 0)
	if _, ok := p.take("a", 30, t0); !ok { // a second's worth, and two more in debt
		t.Fatal("a holder that spent nothing may not take")
	}
	for _, tc := range []struct {
		after time.Duration
		ok    bool
		wait  time.Duration
	}{
		{0, false, 2001 * time.Millisecond},
		{time.Second, false, 1001 * time.Millisecond},
		{1999 * time.Millisecond, false, 2 * time.Millisecond},
		{2001 * time.Millisecond, true, 0},
	} {
		wait, ok := p.take("a", 0, t0.Add(tc.after))
		if ok != tc.ok || wait != tc.wait {
			t.Errorf("%s after a debt of 20 at 10 a second: take = %v, wait %s; want %v, %s", tc.after, ok, wait, tc.ok, tc.wait)
		}
	}
	if _, ok := p.take("b", 1, t0); !ok {
		t.Error("another holder may not take beside a's debt")
	}
	// A balance refills to a second's worth, no more: a holder idle for an
	// hour takes 10 and then some, not 36,000.
	p.take("c", 1, t0)
	p.take("c", 11, t0.Add(time.Hour))
	if _, ok := p.take("c", 0, t0.Add(time.Hour)); ok {
		t.Error("an idle holder saved more than a second's worth")
	}
	// What is given back is up to a second's worth too.
	p.give("d", 1000, t0)
	p.take("d", 11, t0)
	if _, ok := p.take("d", 0, t0); ok {
		t.Error("a holder given back more than it took saved more than a second's worth")
	}
}

// Takes at once by one holder go through one at a time, each while the
// last left something: however many streams a caller opens together, one
// whole state puts it into debt, and the others are refused.
func TestPacesTakeOneAtATime(t *testing.T) {
	p := newPaces(10)
	now := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	took := 0
	for range 50 {
		wg.Go(func() {
			if _, ok := p.take("a", 1000, now); ok {
				mu.Lock()
				took++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if took != 1 {
		t.Errorf("%d of 50 takes of 1,000 at once went through a balance of 10; want 1", took)
	}
}

// A WatchCall on a server without a callers file is its one anonymous
// caller's, paced by the server's rate alone: past it, the stream is
// refused, naming the rate and when to watch again. What a watch took is
// made what its state held, and given back whole for a watch refused.
func TestPaceInitialOfTheServer(t *testing.T) {
	all, callers := newPaces(10), newPaces(5)
	ctx := context.Background()
	pace, err := paceInitial(ctx, all, callers, "call:meeting:7", 1)
	if err != nil {
		t.Fatal(err)
	}
	pace.settle(0) // refused: nothing was read
	pace, err = paceInitial(ctx, all, callers, "call:meeting:7", 1)
	if err != nil {
		t.Fatalf("a watch after one given back: %v", err)
	}
	pace.settle(30) // the state held 30, not the 1 estimated
	if len(callers.by) != 0 {
		t.Errorf("the anonymous caller took from a caller's balance: %v", callers.by)
	}
	_, err = paceInitial(ctx, all, callers, "call:meeting:7", 30)
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("past the server's rate: %v, want ResourceExhausted", err)
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	md := info.GetMetadata()
	if info.GetReason() != "INITIAL_RATE" || md["field"] != "resource" || md["value"] != "call:meeting:7" || md["limit"] != "10" || md["events"] != "30" || md["retry_after"] == "" {
		t.Errorf("ErrorInfo %v %v, want INITIAL_RATE naming resource call:meeting:7, limit 10, events 30 and retry_after", info.GetReason(), md)
	}
}
