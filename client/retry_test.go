package client_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/client"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// cutStream fails a stream with UNAVAILABLE after n messages, as a cut
// connection would between two messages.
type cutStream struct {
	grpc.ClientStream
	n int
}

func (c *cutStream) RecvMsg(m any) error {
	if c.n == 0 {
		return status.Error(codes.Unavailable, "the connection was cut")
	}
	c.n--
	return c.ClientStream.RecvMsg(m)
}

// cutFirstWatchCall cuts the first WatchCall stream after n messages.
func cutFirstWatchCall(n int) grpc.StreamClientInterceptor {
	var streams atomic.Int32
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != "/usher.v1.AdmissionService/WatchCall" || streams.Add(1) != 1 {
			return s, err
		}
		return &cutStream{ClientStream: s, n: n}, nil
	}
}

// A WatchCall stream cut while it sends the state it starts with, whose
// events come in the order participants joined, each at its own revision,
// resumes from where it started: resumed from the revision of the last
// event it got, it would never hear of a participant that joined before,
// at an older revision, and was yet to be sent.
func TestWatchCallCutInItsFirstStateMissesNoParticipant(t *testing.T) {
	w := newWorld(t)
	w.grant("user:alice", "call-member", meeting7)
	w.grant("user:bob", "call-member", meeting7)
	c := w.client(client.WithToken(sidecarToken), client.WithDialOptions(grpc.WithChainStreamInterceptor(cutFirstWatchCall(1))))
	join(t, c, "user:alice", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	join(t, c, "user:bob", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	w.grant("user:alice", "moderator", meeting7) // alice's standing changes after bob joined

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	synced := errors.New("synced")
	in := map[string]bool{}
	retries := 0
	err := c.WatchCall(ctx, meeting7, 0, func(ev *usherv1.CallEvent) error {
		switch ev.GetKind() {
		case usherv1.CallEventKind_CALL_EVENT_KIND_PRESENT, usherv1.CallEventKind_CALL_EVENT_KIND_JOINED:
			in[ev.GetSubject()] = true
		case usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED:
			return synced
		}
		return nil
	}, fast, client.OnRetry(func(error) { retries++ }))
	if !errors.Is(err, synced) || retries != 1 {
		t.Fatalf("WatchCall = %v after %d retries; want SYNCED after the one cut", err, retries)
	}
	if !in["user:alice"] || !in["user:bob"] {
		t.Errorf("in the call at SYNCED: %v; want alice and bob", in)
	}
}

// A WatchCall refused for a while, with a retry_after (a sidecar whose
// followers start whole states faster than its share of INITIAL_RATE), is
// watched again once that has passed, not given up on.
func TestWatchCallWaitsOutARateRefusal(t *testing.T) {
	w := newWorld(t, func(w *world) {
		w.serverOptions = append(w.serverOptions, server.WithCallerShares(server.CallerShares{CallInitialRate: 1}))
	})
	w.grant("user:alice", "call-member", meeting7)
	w.grant("user:bob", "call-member", meeting7)
	c := w.client(client.WithToken(sidecarToken))
	join(t, c, "user:alice", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	join(t, c, "user:bob", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	synced := errors.New("synced")
	untilSynced := func(ev *usherv1.CallEvent) error {
		if ev.GetKind() == usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED {
			return synced
		}
		return nil
	}
	var refusals []string
	for i := range 2 {
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		err := c.WatchCall(ctx, meeting7, 0, untilSynced, fast, client.OnRetry(func(err error) { refusals = append(refusals, client.Reason(err)) }))
		cancel()
		if !errors.Is(err, synced) {
			t.Fatalf("follower %d: WatchCall = %v (%s); want it to wait and watch again", i, err, client.Reason(err))
		}
	}
	if len(refusals) == 0 || refusals[0] != client.ReasonCallerInitialRate {
		t.Errorf("refusals waited out: %v; want the second follower's %s", refusals, client.ReasonCallerInitialRate)
	}
}

// scriptedAdmission answers KeepAlive with its refusals, in turn, then
// ADMITTED.
type scriptedAdmission struct {
	usherv1.UnimplementedAdmissionServiceServer
	mu      sync.Mutex
	answers []error
	calls   int
}

func (f *scriptedAdmission) KeepAlive(context.Context, *usherv1.KeepAliveRequest) (*usherv1.KeepAliveResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if len(f.answers) > 0 {
		err := f.answers[0]
		f.answers = f.answers[1:]
		return nil, err
	}
	return &usherv1.KeepAliveResponse{Outcome: usherv1.Outcome_OUTCOME_ADMITTED, Reason: "renewed", ExpireTime: timestamppb.New(time.Now().Add(time.Second))}, nil
}

// refusal is a status as Usher's refusals carry it.
func refusal(code codes.Code, reason, msg string) error {
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: client.Domain})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// A renewal refused for a moment, as the server says, is tried again: a
// cluster node yet to apply the revision the session was admitted at
// ("keep it alive again"), and a server whose send budget is full ("call
// again later"). The session is kept.
func TestASessionRenewalRefusedForAMomentIsTriedAgain(t *testing.T) {
	for _, refused := range []error{
		refusal(codes.FailedPrecondition, client.ReasonRevisionNotReached, `session_id "s1": the session was admitted at revision 9, which this node has yet to apply; keep it alive again`),
		refusal(codes.ResourceExhausted, client.ReasonSendBudget, "this server holds as many bytes of answers their clients have not read as it may: call again later"),
	} {
		t.Run(client.Reason(refused), func(t *testing.T) {
			f := &scriptedAdmission{answers: []error{refused}}
			addr := fake(t, func(srv *grpc.Server) { usherv1.RegisterAdmissionServiceServer(srv, f) })
			s := dial(t, addr).KeepSession(t.Context(), "s1", time.Second)
			select {
			case <-s.Done():
				t.Fatalf("the session ended %v at the refusal; want it renewed again", s.Wait())
			case <-time.After(1500 * time.Millisecond):
			}
			f.mu.Lock()
			calls := f.calls
			f.mu.Unlock()
			if calls < 2 {
				t.Errorf("%d KeepAlives; want the refused one and one after it", calls)
			}
		})
	}
}

// A kept session follows the lease the server renews it by, which an
// operator may shorten while the session lasts: renewed every third of the
// lease it joined with, it would lapse between two renewals.
func TestASessionFollowsALeaseShortenedWhileItLasts(t *testing.T) {
	w := newWorld(t, withLease(3*time.Second))
	w.grant("user:alice", "call-member", meeting7)
	c := w.client(client.WithToken(sidecarToken))
	s, err := join(t, c, "user:alice", meeting7, usherv1.Outcome_OUTCOME_ADMITTED).Keep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w.lease = time.Second
	w.setLease()
	// A renewal moves a lease only forward, so the session keeps the 3s
	// it joined with, then goes by 1s leases: renewed every second by the
	// lease it joined with, the third renewal would come a moment too late.
	select {
	case <-s.Done():
		t.Fatalf("the kept session ended %v after its lease was shortened", s.Wait())
	case <-time.After(4500 * time.Millisecond):
	}
	if got := present(t, w.Admin, meeting7); got["user:alice"] != s.ID {
		t.Errorf("in the call: %v; want alice, session %s", got, s.ID)
	}
}

// failingWatch sends each Watch stream its first message, the revision it
// starts after, then fails it UNAVAILABLE, as a node cut off from its
// storage does.
type failingWatch struct {
	usherv1.UnimplementedAuthorizationServiceServer
	streams atomic.Int64
}

func (f *failingWatch) Watch(_ *usherv1.WatchRequest, stream grpc.ServerStreamingServer[usherv1.WatchResponse]) error {
	f.streams.Add(1)
	if err := stream.Send(&usherv1.WatchResponse{Revision: 7}); err != nil {
		return err
	}
	return refusal(codes.Unavailable, "UNAVAILABLE_STORAGE", "reading the change log: etcd is out of reach; watch again after revision 7")
}

// Watch backs off from a server whose every stream fails after its first
// message: that message is no progress, and coming back every 100ms would
// hammer a server in trouble.
func TestWatchBacksOffFromStreamsThatFailAfterTheirFirstMessage(t *testing.T) {
	f := &failingWatch{}
	addr := fake(t, func(srv *grpc.Server) { usherv1.RegisterAuthorizationServiceServer(srv, f) })
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_ = dial(t, addr).Watch(ctx, &usherv1.WatchRequest{AfterRevision: 7}, func(*usherv1.WatchResponse) error { return nil })
	// From 100ms doubling, each drawn from half to all: at most 7 streams
	// in 3s; 30 and more when every stream starts the delay over.
	if n := f.streams.Load(); n > 10 {
		t.Errorf("%d Watch streams in 3s against a server whose every stream fails", n)
	}
}

// A Backoff with no most, or with no first, still backs off, as the
// defaults do: with a first of 1s and no most, one stream and the next in a
// second (not 10,000).
func TestABackoffOfZeroStillBacksOff(t *testing.T) {
	for _, c := range []struct {
		first, most time.Duration
		within      time.Duration
		atMost      int64
	}{
		{time.Second, 0, time.Second, 2},
		{0, 0, time.Second, 5}, // DefaultBackoff, 100ms, doubling
		{-time.Second, -1, time.Second, 5},
	} {
		f := &failingWatch{}
		addr := fake(t, func(srv *grpc.Server) { usherv1.RegisterAuthorizationServiceServer(srv, f) })
		ctx, cancel := context.WithTimeout(t.Context(), c.within)
		_ = dial(t, addr).Watch(ctx, &usherv1.WatchRequest{AfterRevision: 7}, func(*usherv1.WatchResponse) error { return nil },
			client.Backoff(c.first, c.most))
		cancel()
		if n := f.streams.Load(); n > c.atMost || n == 0 {
			t.Errorf("Backoff(%s, %s): %d Watch streams in %s against a server whose every stream fails, want 1 to %d", c.first, c.most, n, c.within, c.atMost)
		}
	}
}

// quietCall serves WatchCall streams of a quiet call: SYNCED, then nothing
// for lives, then the stream is cut, as a proxy's connection age cuts one.
type quietCall struct {
	usherv1.UnimplementedAdmissionServiceServer
	lives time.Duration
	mu    sync.Mutex
	gaps  []time.Duration // between a stream's cut and the next one's start
	cut   time.Time
}

func (q *quietCall) WatchCall(_ *usherv1.WatchCallRequest, stream grpc.ServerStreamingServer[usherv1.WatchCallResponse]) error {
	q.mu.Lock()
	if !q.cut.IsZero() {
		q.gaps = append(q.gaps, time.Since(q.cut))
	}
	q.mu.Unlock()
	if err := stream.Send(&usherv1.WatchCallResponse{Event: &usherv1.CallEvent{Kind: usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED, Revision: 5}}); err != nil {
		return err
	}
	time.Sleep(q.lives)
	q.mu.Lock()
	q.cut = time.Now()
	q.mu.Unlock()
	return status.Error(codes.Unavailable, "max connection age")
}

// A stream that stays open after its first message for as long as the
// longest backoff is healthy, however little a quiet call sent on it: the
// client resumes after it from the first delay, not after a longer one each
// time.
func TestWatchCallResumesAtOnceAfterAQuietStreamThatLasted(t *testing.T) {
	q := &quietCall{lives: 150 * time.Millisecond}
	addr := fake(t, func(srv *grpc.Server) { usherv1.RegisterAdmissionServiceServer(srv, q) })
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	_ = dial(t, addr).WatchCall(ctx, "call:acme:1", 0, func(*usherv1.CallEvent) error { return nil },
		client.Backoff(5*time.Millisecond, 100*time.Millisecond))
	q.mu.Lock()
	gaps := slices.Sorted(slices.Values(q.gaps))
	q.mu.Unlock()
	// Started over each time: 2.5 to 5ms. Not: from the fifth resume on,
	// 50 to 100ms.
	if len(gaps) < 5 || gaps[len(gaps)/2] > 30*time.Millisecond {
		t.Errorf("resumed after quiet streams of 150ms following gaps of %v; want most under 30ms", gaps)
	}
}

// fake serves what register registers on a port of its own until the test
// ends, and returns its address.
func fake(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}
