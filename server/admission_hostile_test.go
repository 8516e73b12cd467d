package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/usher-authz/usher/admission"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// A WatchCall whose client stops reading is cut off once it falls behind,
// but its stream stays open, its last messages held by HTTP/2 flow control,
// until the client reads or goes. It counts against the server's WatchCall
// streams until then: otherwise a client could hold any number of them
// open, each with what it has not read, by letting each fall behind.
func TestAWatchCallCutOffButUnreadStillCounts(t *testing.T) {
	w := newAdmWorld(t, admission.Options{MaxWatchers: 2, WatchBuffer: 64})
	w.grant("user:busy", "call-member", meeting7)
	slow := usherv1.NewAdmissionServiceClient(w.dial(grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := slow.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: meeting7})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // SYNCED: the watch is open
		t.Fatal(err)
	}
	reader := watchCall(t, w.adm, meeting7, 0)
	reader.initial()
	// Far more than the slow client's window, gRPC's write quota and the
	// buffer hold; the reading watch hears of each, so every one has been
	// offered to the slow watch too.
	const pairs, burst = 1500, 8
	for i := range pairs {
		resp, err := w.m.Join(ctx, "user:busy", meeting7, 0)
		if err != nil || resp.Outcome != admission.Admitted {
			t.Fatalf("Join: %v, %v", resp.Outcome, err)
		}
		if err := w.m.Leave(ctx, resp.Session); err != nil {
			t.Fatal(err)
		}
		if i%burst == burst-1 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	for range 2 * pairs {
		reader.next("an event on the reading watch", func(*usherv1.CallEvent) bool { return true })
	}

	// The slow stream is still open: two streams are, and a third is
	// refused.
	err = watchCall(t, w.adm, meeting7, 0).end(5 * time.Second)
	wantStatus(t, err, codes.ResourceExhausted, "at most 2 WatchCall streams")

	// The slow client reads at last, to the end; its slot is free again.
	read := 0
	for {
		if _, err := stream.Recv(); err != nil {
			wantStatus(t, err, codes.ResourceExhausted, "fell 64 events behind")
			break
		}
		read++
	}
	if read >= 2*pairs {
		t.Fatalf("the slow client read all %d events: it never fell behind", read)
	}
	eventually(t, 5*time.Second, "the cut-off stream's slot is free once it ended", func() bool {
		probe, err := w.adm.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: meeting7})
		if err != nil {
			return false
		}
		_, err = probe.Recv()
		return err == nil
	})
}
