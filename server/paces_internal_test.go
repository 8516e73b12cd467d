package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A holder spends while its balance is above zero, into a debt it repays
// at its rate before it spends again; a holder's debt is its own.
func TestPacesLetAHolderSpendItsRateOnAverage(t *testing.T) {
	p := newPaces(10)
	t0 := time.Unix(1_700_000_000, 0)
	if _, ok := p.may("a", t0); !ok {
		t.Fatal("a holder that spent nothing may not spend")
	}
	p.spend("a", 30, t0) // a second's worth, and two more in debt
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
		wait, ok := p.may("a", t0.Add(tc.after))
		if ok != tc.ok || wait != tc.wait {
			t.Errorf("%s after a debt of 20 at 10 a second: may = %v, wait %s; want %v, %s", tc.after, ok, wait, tc.ok, tc.wait)
		}
	}
	if _, ok := p.may("b", t0); !ok {
		t.Error("another holder may not spend beside a's debt")
	}
	// A balance refills to a second's worth, no more: a holder idle for an
	// hour spends 10 and then some, not 36,000.
	p.spend("c", 1, t0)
	p.spend("c", 11, t0.Add(time.Hour))
	if _, ok := p.may("c", t0.Add(time.Hour)); ok {
		t.Error("an idle holder saved more than a second's worth")
	}
}

// A WatchCall on a server without a callers file is its one anonymous
// caller's, paced by the server's rate alone: past it, the stream is
// refused, naming the rate and when to watch again.
func TestPaceInitialOfTheServer(t *testing.T) {
	all, callers := newPaces(10), newPaces(5)
	spend, err := paceInitial(context.Background(), all, callers, "call:meeting:7", 30)
	if err != nil {
		t.Fatal(err)
	}
	spend(30)
	if len(callers.by) != 0 {
		t.Errorf("the anonymous caller spent from a caller's balance: %v", callers.by)
	}
	_, err = paceInitial(context.Background(), all, callers, "call:meeting:7", 30)
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
