package server_test

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/admission"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// A caller whose WatchCall streams of a large call are never read holds
// their initial states for as long as they stay open; it holds at most its
// share of what all streams may hold, and another caller still watches.
func TestOneCallersUnreadInitialStatesLeaveOthersRoom(t *testing.T) {
	const participants = 1500
	hogToken, otherToken, src := hogAndOther(t)
	// Room for three such states at once and no more; a caller's share is a
	// quarter.
	w := newAdmWorld(t, admission.Options{MaxInitialEvents: 3 * (participants + 1)}, server.WithCallers(src))
	other := usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(otherToken))))
	for i := range participants {
		w.grant(fmt.Sprintf("user:p%d", i), "call-member", meeting7)
		w.join(other, fmt.Sprintf("user:p%d", i), meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	}
	w.grant("user:o", "call-member", stream42)
	w.join(other, "user:o", stream42, usherv1.Outcome_OUTCOME_ADMITTED)
	// The hog's windows are the smallest gRPC allows, and it reads nothing.
	hog := usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(hogToken)),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	var refused error
	for range 3 {
		stream, err := hog.WatchCall(t.Context(), &usherv1.WatchCallRequest{Resource: meeting7})
		if err != nil {
			t.Fatal(err)
		}
		// A refused stream ends at once; a held one sends what its windows
		// take, of which the hog reads one message.
		if _, err := stream.Recv(); err != nil {
			refused = err
		}
	}
	if refused == nil {
		t.Error("the hog's three unread WatchCall streams were all served")
	} else {
		st := wantCode(t, refused, codes.ResourceExhausted)
		wantDetails(t, st, refusal{reason: "CALLER_INITIAL_LIMIT", field: "resource", value: meeting7,
			meta: map[string]string{"caller": "hog", "limit": fmt.Sprint((3 * (participants + 1)) / 4), "events": fmt.Sprint(participants + 1)}})
	}
	watch := watchCall(t, other, stream42, 0)
	if a := <-watch.events; a.err != nil {
		st, _ := status.FromError(a.err)
		t.Fatalf("the other caller's WatchCall beside the hog's: %v", st)
	}
}

// hogAndOther are two check callers, hog and other, with their tokens.
func hogAndOther(t *testing.T) (hogToken, otherToken string, src *server.CallerSource) {
	t.Helper()
	hogToken, otherToken = newToken(t), newToken(t)
	file := filepath.Join(t.TempDir(), "callers.yaml")
	writeCallers(t, file, fmt.Sprintf("callers:\n  - {name: hog, kind: check, token_sha256: %s}\n  - {name: other, kind: check, token_sha256: %s}\n",
		hashOf(hogToken), hashOf(otherToken)))
	src, err := server.NewCallerSource(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return hogToken, otherToken, src
}
