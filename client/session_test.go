package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/client"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// present is who is in a call, by subject, with their session ids, as a
// new WatchCall's first events say.
func present(t *testing.T, c *client.Client, call string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := c.Admission.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: call})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("WatchCall(%s): %v", call, err)
		}
		switch ev := resp.GetEvent(); ev.GetKind() {
		case usherv1.CallEventKind_CALL_EVENT_KIND_PRESENT:
			out[ev.GetSubject()] = ev.GetSessionId()
		case usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED:
			return out
		}
	}
}

// join joins subject to call and wants outcome.
func join(t *testing.T, c *client.Client, subject, call string, want usherv1.Outcome) *client.JoinResult {
	t.Helper()
	r, err := c.Join(callCtx(t), subject, call)
	if err != nil {
		t.Fatalf("Join(%s, %s): %v", subject, call, err)
	}
	if r.GetOutcome() != want {
		t.Fatalf("Join(%s, %s) = %s (%s), want %s", subject, call, r.GetOutcome(), r.GetReason(), want)
	}
	return r
}

// ended waits for s to end, failing the test after d.
func ended(t *testing.T, s *client.Session, d time.Duration) client.SessionEnd {
	t.Helper()
	select {
	case <-s.Done():
		return s.Wait()
	case <-time.After(d):
		t.Fatalf("session %s has not ended after %s", s.ID, d)
		return client.SessionEnd{}
	}
}

func TestASessionOutlivesItsLeaseUntilTheParticipantIsBanned(t *testing.T) {
	const lease = 2 * time.Second // renewed every third, with room for a loaded machine
	w := newWorld(t, withLease(lease))
	w.grant("user:alice", "call-member", meeting7)
	p := newProxy(t, w.addr)
	c := dial(t, p.Addr(), client.WithToken(sidecarToken))

	r := join(t, c, "user:alice", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	if !r.Admitted() || r.GetSessionId() == "" || r.GetLease().AsDuration() != lease {
		t.Fatalf("Join: %v", r.JoinResponse)
	}
	s, err := r.Keep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Two and a half leases, with the connection cut in the middle: the
	// renewal after the cut reconnects.
	time.Sleep(lease + lease/4)
	p.cut()
	time.Sleep(lease + lease/4)
	select {
	case <-s.Done():
		t.Fatalf("the session ended while kept: %v", s.Wait())
	default:
	}
	if got := present(t, w.Admin, meeting7); got["user:alice"] != s.ID {
		t.Fatalf("in the call after 2.5 leases: %v; want user:alice with session %s", got, s.ID)
	}

	w.block("user:alice", meeting7)
	end := ended(t, s, 2*lease)
	switch {
	case end.Why == client.Gone && errors.Is(end.Err, client.ErrSessionNotFound):
	case end.Why == client.Ejected && end.Outcome == usherv1.Outcome_OUTCOME_BLOCKED:
	default:
		t.Fatalf("the banned participant's session ended %v; want gone (ended by the server) or ejected as BLOCKED", end)
	}
	if got := present(t, w.Admin, meeting7); len(got) != 0 {
		t.Errorf("in the call after the ban: %v", got)
	}
}

func TestLeaveEndsASession(t *testing.T) {
	w := newWorld(t)
	w.grant("user:alice", "call-member", meeting7)
	c := w.client(client.WithToken(sidecarToken))
	s, err := join(t, c, "user:alice", meeting7, usherv1.Outcome_OUTCOME_ADMITTED).Keep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Leave(callCtx(t)); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if end := ended(t, s, time.Second); end.Why != client.Left || end.Err != nil {
		t.Errorf("ended %v, want left", end)
	}
	if got := present(t, w.Admin, meeting7); len(got) != 0 {
		t.Errorf("in the call after Leave: %v", got)
	}
	if err := s.Leave(callCtx(t)); err != nil {
		t.Errorf("Leave again: %v; want nil, nothing left to leave", err)
	}
}

func TestASessionWhoseContextEndsStaysUntilLeft(t *testing.T) {
	w := newWorld(t)
	w.grant("user:alice", "call-member", meeting7)
	c := w.client(client.WithToken(sidecarToken))
	r := join(t, c, "user:alice", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	ctx, cancel := context.WithCancel(t.Context())
	s := c.KeepSession(ctx, r.GetSessionId(), r.GetLease().AsDuration())
	cancel()
	if end := ended(t, s, time.Second); end.Why != client.Stopped || !errors.Is(end.Err, context.Canceled) {
		t.Errorf("ended %v, want stopped by the context", end)
	}
	if got := present(t, w.Admin, meeting7); got["user:alice"] != s.ID {
		t.Errorf("in the call once no longer kept: %v; want the session until its lease runs out", got)
	}
	if err := s.Leave(callCtx(t)); err != nil {
		t.Fatalf("Leave after stopping: %v", err)
	}
	if got := present(t, w.Admin, meeting7); len(got) != 0 {
		t.Errorf("in the call after Leave: %v", got)
	}
}

func TestASessionLapsesWhenTheServerStaysAway(t *testing.T) {
	const lease = time.Second
	w := newWorld(t, withLease(lease))
	w.grant("user:alice", "call-member", meeting7)
	c := w.client(client.WithToken(sidecarToken))
	s, err := join(t, c, "user:alice", meeting7, usherv1.Outcome_OUTCOME_ADMITTED).Keep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w.stop()
	end := ended(t, s, 3*lease)
	// The last renewal failed at once, or waited for a connection until
	// the lease ran out.
	if code := status.Code(end.Err); end.Why != client.Lapsed || code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Errorf("ended %v; want lapsed, the server out of reach", end)
	}
}

// A participant sent back to the lobby, its admission revoked, is ejected
// (LOBBY): its Session ends, rather than renew, and a Join knocks.
func TestASessionSentBackToTheLobbyEnds(t *testing.T) {
	const lease = 2 * time.Second
	w := newWorld(t, withLease(lease))
	w.grant("user:gus", "guest", meeting7)
	w.grant("user:gus", "call-member", meeting7) // as Admit grants it
	c := w.client(client.WithToken(sidecarToken))
	s, err := join(t, c, "user:gus", meeting7, usherv1.Outcome_OUTCOME_ADMITTED).Keep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Admin.Admin.Revoke(callCtx(t), &usherv1.RevokeRequest{Subject: "user:gus", Role: "call-member", Resource: meeting7}); err != nil {
		t.Fatal(err)
	}
	if end := ended(t, s, 2*lease); end.Why != client.Ejected || end.Outcome != usherv1.Outcome_OUTCOME_LOBBY {
		t.Fatalf("the session ended %v; want ejected, LOBBY", end)
	}
	join(t, c, "user:gus", meeting7, usherv1.Outcome_OUTCOME_LOBBY)
}

func TestAKnockEndsWhenTheSubjectMayJoin(t *testing.T) {
	const lease = 2 * time.Second // as for a session: the knock is kept across renewals
	w := newWorld(t, withLease(lease))
	w.grant("user:gus", "guest", meeting7)
	c := w.client(client.WithToken(sidecarToken))
	knock, err := join(t, c, "user:gus", meeting7, usherv1.Outcome_OUTCOME_LOBBY).Keep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(lease + lease/2)
	select {
	case <-knock.Done():
		t.Fatalf("the knock ended while waiting: %v", knock.Wait())
	default:
	}
	// A member skips the lobby: the next renewal says so.
	w.grant("user:gus", "call-member", meeting7)
	if end := ended(t, knock, 2*lease); end.Why != client.MayJoin || end.Outcome != usherv1.Outcome_OUTCOME_ADMITTED {
		t.Fatalf("the knock ended %v; want may join", end)
	}
	join(t, c, "user:gus", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
}

func TestARefusedJoinHasNoSessionToKeep(t *testing.T) {
	w := newWorld(t)
	c := w.client(client.WithToken(sidecarToken))
	r := join(t, c, "user:bob", meeting7, usherv1.Outcome_OUTCOME_NO_GRANT)
	if r.Admitted() {
		t.Error("a NO_GRANT join says admitted")
	}
	if s, err := r.Keep(t.Context()); err == nil {
		t.Errorf("Keep of a NO_GRANT join: session %s, no error", s.ID)
	}
}
