package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
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

// readCountingStore counts the reads of a call's sessions: what a WatchCall
// start does under the locks every Join of the node takes.
type readCountingStore struct {
	*admission.MemoryStore
	reads atomic.Int64
}

func (s *readCountingStore) Sessions(call string) []admission.Session {
	s.reads.Add(1)
	return s.MemoryStore.Sessions(call)
}

// A whole initial state that does not fit, in the caller's share or in what
// the server holds at once, is refused before the call's sessions are read:
// a caller refused in a loop costs the node's joins nothing for the call's
// size. So is a resume that sends the whole state: from further back than
// the server remembers, or past the latest revision.
func TestAWatchCallThatCannotFitIsRefusedUnread(t *testing.T) {
	const participants = 1500
	tokens := map[string]string{"hog": newToken(t), "other": newToken(t), "third": newToken(t)}
	file := filepath.Join(t.TempDir(), "callers.yaml")
	yaml := "callers:\n"
	for _, name := range []string{"hog", "other", "third"} {
		yaml += fmt.Sprintf("  - {name: %s, kind: check, token_sha256: %s}\n", name, hashOf(tokens[name]))
	}
	writeCallers(t, file, yaml)
	src, err := server.NewCallerSource(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	store := &readCountingStore{MemoryStore: admission.NewMemoryStore(admission.MemoryOptions{})}
	// Room for two such states at once and a little; a caller's share, a
	// quarter, holds none of them, though a caller that holds nothing may
	// start one.
	w := newAdmWorld(t, admission.Options{Store: store, MaxInitialEvents: 2*(participants+1) + 10}, server.WithCallers(src))
	client := func(name string) usherv1.AdmissionServiceClient {
		// The smallest windows gRPC allows: a stream not read holds its
		// initial state.
		return usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(tokens[name])),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	}
	hog, other, third := client("hog"), client("other"), client("third")
	// Every grant, each a commit of its own, before the first join: the
	// joins' leases, 30 s, run from when the slow part is done.
	for i := range participants {
		w.grant(fmt.Sprintf("user:p%d", i), "call-member", meeting7)
	}
	for i := range participants {
		w.join(third, fmt.Sprintf("user:p%d", i), meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	}
	holdUnread := func(c usherv1.AdmissionServiceClient) {
		t.Helper()
		stream, err := c.WatchCall(t.Context(), &usherv1.WatchCallRequest{Resource: meeting7})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	refusedUnread := func(c usherv1.AdmissionServiceClient, reason string, after uint64, times int) {
		t.Helper()
		before := store.reads.Load()
		for range times {
			stream, err := c.WatchCall(t.Context(), &usherv1.WatchCallRequest{Resource: meeting7, AfterRevision: after})
			if err != nil {
				t.Fatal(err)
			}
			_, err = stream.Recv()
			st := wantCode(t, err, codes.ResourceExhausted)
			wantDetails(t, st, refusal{reason: reason, field: "resource", value: meeting7, meta: map[string]string{"events": fmt.Sprint(participants + 1)}})
		}
		if n := store.reads.Load() - before; n != 0 {
			t.Errorf("%d WatchCalls after revision %d refused %s read the call's sessions %d times; want none", times, after, reason, n)
		}
	}
	holdUnread(hog)
	refusedUnread(hog, "CALLER_INITIAL_LIMIT", 0, 20)
	refusedUnread(hog, "CALLER_INITIAL_LIMIT", 1, 3)
	refusedUnread(hog, "CALLER_INITIAL_LIMIT", math.MaxUint64, 3)
	holdUnread(other)
	refusedUnread(third, "WATCH_LIMIT", 0, 20)
	refusedUnread(third, "WATCH_LIMIT", math.MaxUint64, 3)
}

// A caller that starts WatchCall streams of a large call and ends them at
// once makes the node read the call whole each time, under the locks every
// Join takes: it may start whole initial states of at most its share of
// events a second, on average, and waits once it is past them. Another
// caller watches meanwhile. A resume, which reads the call as whole to
// find who changed since its revision, is paced alike.
func TestOneCallerStartingWholeInitialStatesIsPaced(t *testing.T) {
	const participants = 29 // 30 events a whole state, with SYNCED
	hogToken, otherToken, src := hogAndOther(t)
	// Ten events a second each: a state of 30 takes the hog three seconds
	// into its debt.
	w := newAdmWorld(t, admission.Options{}, server.WithCallers(src), server.WithCallerShares(server.CallerShares{CallInitialRate: 10}))
	hog := usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(hogToken))))
	other := usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(otherToken))))
	for i := range participants {
		w.grant(fmt.Sprintf("user:p%d", i), "call-member", meeting7)
		w.join(other, fmt.Sprintf("user:p%d", i), meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	}
	open := func(c usherv1.AdmissionServiceClient, after uint64) (*usherv1.WatchCallResponse, error) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel() // the client ends it once it has its first event
		stream, err := c.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: meeting7, AfterRevision: after})
		if err != nil {
			return nil, err
		}
		return stream.Recv()
	}
	first, err := open(hog, 0)
	if err != nil {
		t.Fatalf("the hog's first whole state: %v", err)
	}
	_, err = open(hog, 0)
	st := wantCode(t, err, codes.ResourceExhausted)
	info := wantDetails(t, st, refusal{reason: "CALLER_INITIAL_RATE", field: "resource", value: meeting7,
		meta: map[string]string{"caller": "hog", "limit": "10", "events": "30"}})
	if wait, err := time.ParseDuration(info.GetMetadata()["retry_after"]); err != nil || wait <= time.Second || wait > 3*time.Second {
		t.Errorf("retry_after %q: want the two seconds and more the hog's debt takes to repay", info.GetMetadata()["retry_after"])
	}
	if !strings.Contains(st.Message(), `caller "hog"`) || !strings.Contains(st.Message(), "watch again in") {
		t.Errorf("message %q: want it to name the caller and say when to watch again", st.Message())
	}
	// A resume from the revision of the state it was sent reads the call
	// whole as well, to find who changed since: paced alike.
	_, err = open(hog, first.GetEvent().GetRevision())
	wantDetails(t, wantCode(t, err, codes.ResourceExhausted), refusal{reason: "CALLER_INITIAL_RATE", field: "resource", value: meeting7,
		meta: map[string]string{"caller": "hog", "limit": "10", "events": "30"}})
	if _, err := open(other, 0); err != nil {
		t.Errorf("the other caller's whole state beside the hog's debt: %v", err)
	}
}

// A call whose participants wait in its lobby, none in the call, has a
// whole initial state of their knocks: it is paced as one of sessions is.
func TestAWholeStateOfKnocksIsPaced(t *testing.T) {
	const knocks = 29
	hog := hogWithALobby(t, knocks)
	wholeState(t, hog, knocks+1) // WAITING each, then SYNCED
	stream, err := hog.WatchCall(t.Context(), &usherv1.WatchCallRequest{Resource: meeting7})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	st := wantCode(t, err, codes.ResourceExhausted)
	wantDetails(t, st, refusal{reason: "CALLER_INITIAL_RATE", field: "resource", value: meeting7, meta: map[string]string{"caller": "hog", "limit": "10"}})
}

// A resume from a revision at or past a whole state's sends every knock of
// the lobby again: it is paced as the whole state is
// (TestAWholeStateOfKnocksIsPaced), or a caller would have the same whole
// lobby as often as it liked, by naming a revision.
func TestAResumeOfALobbyIsPaced(t *testing.T) {
	const knocks = 29
	hog := hogWithALobby(t, knocks)
	rev := wholeState(t, hog, knocks+1)
	// 10 events a second: the first state of 30 put the hog 2 s into
	// debt. Twenty resumes at once, each the whole lobby again.
	sent := 0
	for i := range 20 {
		s := watchCall(t, hog, meeting7, rev)
		n := 0
		for {
			a := <-s.events
			if a.err != nil {
				t.Logf("resume %d refused after %d events: %v", i, n, a.err)
				break
			}
			n++
			if a.ev.GetKind() == usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED {
				break
			}
		}
		s.cancel()
		sent += n
	}
	if sent > 2*(knocks+1) {
		t.Errorf("with a pace of 10 events a second, already in debt, the hog had %d events of the lobby sent within a moment through resumes (%d resumes of the whole lobby)", sent, sent/(knocks+1))
	}
}

// A resume of a call with participants reads every one of them, under the
// locks every Join takes, as a whole state does, to find those changed
// since its revision: a caller deep in debt for whole states waits to
// resume too.
func TestResumesOfALargeCallArePaced(t *testing.T) {
	const participants = 29
	hogToken, otherToken, src := hogAndOther(t)
	w := newAdmWorld(t, admission.Options{}, server.WithCallers(src), server.WithCallerShares(server.CallerShares{CallInitialRate: 10}))
	hog := usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(hogToken))))
	w.crowd(usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(otherToken)))), meeting7, participants)
	rev := wholeState(t, hog, participants+1)
	admitted := 0
	for i := range 100 {
		s := watchCall(t, hog, meeting7, rev)
		if a := <-s.events; a.err == nil {
			admitted++
		} else if i == 99 {
			wantDetails(t, wantCode(t, a.err, codes.ResourceExhausted), refusal{reason: "CALLER_INITIAL_RATE", field: "resource", value: meeting7,
				meta: map[string]string{"caller": "hog", "limit": "10", "events": fmt.Sprint(participants + 1)}})
		}
		s.cancel()
	}
	if admitted > 1 {
		t.Errorf("a hog 2 s in debt at 10 events a second had %d resumes of a call of %d participants read whole (%d participants read), none refused", admitted, participants, admitted*participants)
	}
}

// wholeState watches meeting7 from the start, reads its whole state of n
// events and ends the stream, answering the revision of its SYNCED.
func wholeState(t *testing.T, c usherv1.AdmissionServiceClient, n int) uint64 {
	t.Helper()
	s := watchCall(t, c, meeting7, 0)
	defer s.cancel()
	var rev uint64
	for range n {
		a := <-s.events
		if a.err != nil {
			t.Fatalf("the whole state: %v", a.err)
		}
		rev = a.ev.GetRevision()
	}
	return rev
}

// hogWithALobby is the client of a caller "hog" that may start whole states
// of 10 events a second, and has knocked n guests into meeting7's lobby.
func hogWithALobby(t *testing.T, n int) usherv1.AdmissionServiceClient {
	t.Helper()
	hogToken, _, src := hogAndOther(t)
	w := newAdmWorld(t, admission.Options{}, server.WithCallers(src), server.WithCallerShares(server.CallerShares{CallInitialRate: 10}))
	hog := usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(hogToken))))
	for i := range n {
		subject := fmt.Sprintf("user:g%d", i)
		w.grant(subject, "guest", meeting7)
		if k, err := hog.Knock(callCtx(t), &usherv1.KnockRequest{Subject: subject, Resource: meeting7}); err != nil || k.GetOutcome() != usherv1.Outcome_OUTCOME_LOBBY {
			t.Fatalf("Knock(%s) = %v, %v", subject, k, err)
		}
	}
	return hog
}

// A stream that falls behind starts again in place only within its
// caller's pace: a hog in debt for the whole state it just took has its
// stream end with the pace's refusal, which says when to watch again.
func TestAStreamThatFallsBehindInDebtEndsWithThePace(t *testing.T) {
	const participants = 150
	hogToken, otherToken, src := hogAndOther(t)
	// A buffer far smaller than the 150 changes one write makes: the
	// stream falls behind though its client reads as fast as it can.
	w := newAdmWorld(t, admission.Options{WatchBuffer: 16}, server.WithCallers(src), server.WithCallerShares(server.CallerShares{CallInitialRate: 10}))
	hog := usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(hogToken))))
	w.crowd(usherv1.NewAdmissionServiceClient(w.dial(grpc.WithPerRPCCredentials(bearer(otherToken)))), meeting7, participants)
	s := watchCall(t, hog, meeting7, 0)
	s.initial()
	// Every call-member is muted by one definition: more changes than
	// the stream's buffer holds.
	if _, err := w.engine.PutRole(t.Context(), w.by, authz.Role{Name: "call-member", Scope: meeting7,
		Permissions: []string{"join-call", "read-call", "send-video", "screenshare", "create-reaction"}}); err != nil {
		t.Fatal(err)
	}
	err := s.end(5 * time.Second)
	st := wantCode(t, err, codes.ResourceExhausted)
	wantDetails(t, st, refusal{reason: "CALLER_INITIAL_RATE", field: "resource", value: meeting7,
		meta: map[string]string{"caller": "hog", "limit": "10", "events": fmt.Sprint(participants + 1)}})
	if !strings.Contains(st.Message(), "watch again in") {
		t.Errorf("message %q: want it to say when to watch again", st.Message())
	}
}
