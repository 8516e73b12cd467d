package server_test

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/usher-authz/usher/admission"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// A caller that joins and knocks many subjects, a sidecar gone wrong or
// whose token leaked, holds at most its share of the node's sessions and
// knocks: past it, its Join and Knock are refused naming it, its share and
// what it holds, and write nothing; its own re-join still enters, and so
// does another caller.
func TestOneCallersSessionsLeaveOthersRoom(t *testing.T) {
	hogToken, otherToken, src := hogAndOther(t)
	// A quarter of 8: two sessions and knocks each.
	w := newAdmWorld(t, admission.Options{Store: admission.NewMemoryStore(admission.MemoryOptions{MaxSessions: 8})}, server.WithCallers(src))
	hog := usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(hogToken))))
	other := usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(otherToken))))
	for _, s := range []string{"user:a", "user:b", "user:c"} {
		w.grant(s, "call-member", meeting7)
	}
	for _, s := range []string{"user:guest", "user:guest2"} {
		w.grant(s, "guest", meeting7)
	}
	w.join(hog, "user:a", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	if k, err := hog.Knock(callCtx(t), &usherv1.KnockRequest{Subject: "user:guest", Resource: meeting7}); err != nil || k.GetOutcome() != usherv1.Outcome_OUTCOME_LOBBY {
		t.Fatalf("the hog's Knock = %v, %v", k, err)
	}
	before := w.m.Counts()
	wantShare := func(what string, err error) {
		t.Helper()
		st := wantCode(t, err, codes.ResourceExhausted)
		wantDetails(t, st, refusal{reason: "CALLER_SESSION_LIMIT", field: "resource", value: meeting7,
			meta: map[string]string{"caller": "hog", "limit": "2", "held": "2"}})
		if t.Failed() {
			t.Fatalf("%s: %v", what, st)
		}
	}
	_, err := hog.Join(callCtx(t), &usherv1.JoinRequest{Subject: "user:b", Resource: meeting7})
	wantShare("a Join past the hog's share", err)
	_, err = hog.Knock(callCtx(t), &usherv1.KnockRequest{Subject: "user:guest2", Resource: meeting7})
	wantShare("a Knock past the hog's share", err)
	_, err = hog.Join(callCtx(t), &usherv1.JoinRequest{Subject: "user:guest2", Resource: meeting7})
	wantShare("a Join to the lobby past the hog's share", err)
	if after := w.m.Counts(); after != before {
		t.Errorf("the refusals changed what the node holds from %+v to %+v", before, after)
	}
	w.join(hog, "user:a", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	w.join(other, "user:b", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	w.join(other, "user:c", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
}
