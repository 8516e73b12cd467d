package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/usher-authz/usher/admission"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// unreached is a min_revision no test server reaches.
const unreached uint64 = 1 << 40

// waitingBound is what the tests' servers let waiting reads hold
// (server.MaxWaitingBytes scaled down, so that filling it moves a 64th
// of the bytes), and padSize what each of their requests is close to.
const (
	waitingBound = 1 << 20
	padSize      = waitingBound / 16
)

// paddedBatch is a CheckBatch of one check, waiting for unreached, whose
// encoding, with what its call is counted for besides (server.WaitOverhead
// and its headers), is just under padSize: an unknown field's bytes, which
// its decoded message keeps.
func paddedBatch() *usherv1.CheckBatchRequest {
	req := &usherv1.CheckBatchRequest{MinRevision: unreached,
		Checks: []*usherv1.CheckItem{{Subject: "user:alice", Permission: "join-call", Resource: "call:meeting:7"}}}
	pad := protowire.AppendTag(nil, 1000, protowire.BytesType)
	pad = protowire.AppendBytes(pad, make([]byte, padSize-1024-server.WaitOverhead))
	req.ProtoReflect().SetUnknown(pad)
	return req
}

// waitAll sends a paddedBatch from each client at once, with the deadline
// timeout, and returns their statuses.
func waitAll(t *testing.T, timeout time.Duration, clients []usherv1.AuthorizationServiceClient) []*status.Status {
	t.Helper()
	// Each connection is opened first, so that the requests arrive within
	// the waits of the first however slowly a loaded machine connects.
	for _, c := range clients {
		if _, err := c.Check(callCtx(t), &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: "call:meeting:7"}); status.Code(err) == codes.Unavailable {
			t.Fatal(err)
		}
	}
	out := make([]*status.Status, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			_, err := c.CheckBatch(ctx, paddedBatch())
			out[i] = status.Convert(err)
		})
	}
	wg.Wait()
	return out
}

// refusedWaits counts the statuses of sts that are RESOURCE_EXHAUSTED, each
// checked for reason, and fails the test for any that did not wait in
// vain, FAILED_PRECONDITION.
func refusedWaits(t *testing.T, sts []*status.Status, reason string, meta map[string]string) int {
	t.Helper()
	n := 0
	for _, st := range sts {
		switch st.Code() {
		case codes.FailedPrecondition:
			wantDetails(t, st, refusal{reason: "REVISION_NOT_REACHED", field: "min_revision", value: fmt.Sprint(unreached)})
		case codes.ResourceExhausted:
			n++
			wantStatus(t, st.Err(), codes.ResourceExhausted, fmt.Sprintf("min_revision %q: ", fmt.Sprint(unreached)))
			wantDetails(t, st, refusal{reason: reason, field: "min_revision", value: fmt.Sprint(unreached), meta: meta})
		default:
			t.Fatalf("a read waiting for its revision = %s (%q), want FailedPrecondition or ResourceExhausted", st.Code(), st.Message())
		}
	}
	return n
}

// A read waiting for its min_revision holds its request, up to 4 MiB, for
// as long as it waits: the reads waiting at once hold at most
// MaxWaitingBytes (here waitingBound), and the one past them is refused at
// once rather than held.
func TestReadsWaitingForTheirRevisionHoldABoundedAmount(t *testing.T) {
	t.Parallel()
	w := newAdmWorld(t, admission.Options{}, server.WithWaitingBytes(waitingBound))
	fit := waitingBound / padSize // requests of just under padSize
	clients := make([]usherv1.AuthorizationServiceClient, fit+2)
	for i := range clients {
		clients[i] = usherv1.NewAuthorizationServiceClient(w.dial())
	}
	// The waits last 5 s, the longest a read waits, and overlap however
	// slowly the requests arrive within them.
	sts := waitAll(t, time.Minute, clients)
	if n := refusedWaits(t, sts, "WAIT_LIMIT", map[string]string{"limit": fmt.Sprint(waitingBound)}); n != 2 {
		t.Fatalf("%d of %d reads of %d bytes waiting at once were refused; want 2, past the %d that %d bytes hold", n, len(sts), padSize, fit, waitingBound)
	}
	// What they held is given back.
	if n := refusedWaits(t, waitAll(t, time.Minute, clients[:1]), "WAIT_LIMIT", nil); n != 0 {
		t.Fatalf("a read waiting once the others have ended was refused")
	}
}

// One caller of the callers file holds a quarter of what waiting reads may
// hold: past it, its reads are refused, naming it, while another caller's
// still wait.
func TestACallersWaitingReadsHoldAQuarter(t *testing.T) {
	t.Parallel()
	w := newSharesWorld(t, admission.Options{}, server.WithWaitingBytes(waitingBound))
	share := waitingBound / 4
	fit := share / padSize
	clients := make([]usherv1.AuthorizationServiceClient, fit+2)
	for i := range clients {
		clients[i] = usherv1.NewAuthorizationServiceClient(w.as(w.tokenA))
	}
	b := usherv1.NewAuthorizationServiceClient(w.b)
	sts := waitAll(t, time.Minute, append(clients, b, b))
	mine, theirs := sts[:len(clients)], sts[len(clients):]
	if n := refusedWaits(t, mine, "CALLER_WAIT_LIMIT", map[string]string{"limit": fmt.Sprint(share), "caller": "sidecar-a"}); n != 2 {
		t.Fatalf("%d of sidecar-a's %d reads of %d bytes waiting at once were refused; want 2, past the %d its share of %d bytes holds", n, len(mine), padSize, fit, share)
	}
	if n := refusedWaits(t, theirs, "CALLER_WAIT_LIMIT", nil); n != 0 {
		t.Fatalf("%d of sidecar-b's 2 reads were refused while sidecar-a held its share; want none", n)
	}
}

// A read waiting for its min_revision holds its call, whatever the size of
// its request: its handler, its stream and its headers. Counted by its
// request alone, a Check of some 60 bytes, of which a bound of 64 MiB
// holds a million, reads waiting at once from a few addresses held
// hundreds of megabytes. So small reads are counted with their calls, and
// the bound holds no more of them than server.WaitOverhead fits into it.
func TestSmallReadsWaitingForTheirRevisionAreCountedWithTheirCalls(t *testing.T) {
	t.Parallel()
	w := newAdmWorld(t, admission.Options{}, server.WithWaitingBytes(waitingBound))
	most := waitingBound / server.WaitOverhead
	const reads, conns = 100, 4
	clients := make([]usherv1.AuthorizationServiceClient, conns)
	for i := range clients {
		clients[i] = usherv1.NewAuthorizationServiceClient(w.dial())
		if _, err := clients[i].Check(callCtx(t), &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: "call:meeting:7"}); status.Code(err) == codes.Unavailable {
			t.Fatal(err)
		}
	}
	sts := make([]*status.Status, reads)
	var wg sync.WaitGroup
	for i := range sts {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := clients[i%conns].Check(ctx, &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call",
				Resource: "call:meeting:7", MinRevision: unreached})
			sts[i] = status.Convert(err)
		})
	}
	wg.Wait()
	n := refusedWaits(t, sts, "WAIT_LIMIT", map[string]string{"limit": fmt.Sprint(waitingBound)})
	if reads-n > most {
		t.Fatalf("%d Checks waited for their revision at once, %d refused; want at most %d, what %d bytes hold at %d bytes a call", reads-n, n, most, waitingBound, server.WaitOverhead)
	}
}
