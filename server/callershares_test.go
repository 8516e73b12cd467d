package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
)

// shareCallers is a callers file with two media servers' sidecars, check
// callers by token.
const shareCallers = `callers:
  - {name: sidecar-a, kind: check, token_sha256: %s}
  - {name: sidecar-b, kind: check, token_sha256: %s}
`

// sharesWorld is an admission world whose callers are two sidecars, a and
// b, with a connection as each.
type sharesWorld struct {
	*admWorld
	file           string
	src            *server.CallerSource
	tokenA, tokenB string
	a, b           *grpc.ClientConn
}

func newSharesWorld(t *testing.T, opts admission.Options, serverOpts ...grpc.ServerOption) *sharesWorld {
	t.Helper()
	w := &sharesWorld{file: filepath.Join(t.TempDir(), "callers.yaml"), tokenA: newToken(t), tokenB: newToken(t)}
	w.setCallers(t, true)
	src, err := server.NewCallerSource(w.file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	w.src = src
	w.admWorld = newAdmWorld(t, opts, append(serverOpts, server.WithCallers(src))...)
	w.a, w.b = w.as(w.tokenA), w.as(w.tokenB)
	return w
}

// setCallers writes the callers file, with sidecar-a or without it, and
// has the server read it.
func (w *sharesWorld) setCallers(t *testing.T, withA bool) {
	t.Helper()
	hashA := hashOf(w.tokenA)
	if !withA {
		hashA = hashOf(newToken(t))
	}
	writeCallers(t, w.file, fmt.Sprintf(shareCallers, hashA, hashOf(w.tokenB)))
	if w.src != nil {
		if err := w.src.Reload(); err != nil {
			t.Fatal(err)
		}
	}
}

// as is a new connection presenting token.
func (w *sharesWorld) as(token string, opts ...grpc.DialOption) *grpc.ClientConn {
	return w.dial(append(opts, grpc.WithPerRPCCredentials(bearer(token)))...)
}

// quotaValue is the quota_value of a refusal's QuotaFailure.
func quotaValue(t *testing.T, st *status.Status) int64 {
	t.Helper()
	for _, d := range st.Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok && len(q.GetViolations()) == 1 {
			return q.GetViolations()[0].GetQuotaValue()
		}
	}
	t.Fatalf("%s %q carries no QuotaFailure", st.Code(), st.Message())
	return 0
}

// openCallWatch opens a WatchCall of meeting7 and reads its initial state.
// A stream that ended is counted out once the server sees it end, so a
// refusal for want of room is tried again, for up to 5 s.
func openCallWatch(t *testing.T, c usherv1.AdmissionServiceClient) *callStream {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := watchCall(t, c, meeting7, 0)
		var first arrival
		select {
		case first = <-s.events:
		case <-time.After(5 * time.Second):
			t.Fatal("a WatchCall sent nothing within 5 s")
		}
		if first.err == nil {
			if first.ev.GetKind() != usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED {
				s.initial()
			}
			return s
		}
		s.cancel()
		if status.Code(first.err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("WatchCall: %v", first.err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openCallWatches opens n WatchCall streams as openCallWatch does.
func openCallWatches(t *testing.T, c usherv1.AdmissionServiceClient, n int) []*callStream {
	t.Helper()
	var out []*callStream
	for range n {
		out = append(out, openCallWatch(t, c))
	}
	return out
}

// refusedCallWatch is how the server refuses a WatchCall of meeting7; the
// test fails if the stream opens instead.
func refusedCallWatch(t *testing.T, c usherv1.AdmissionServiceClient) error {
	t.Helper()
	s := watchCall(t, c, meeting7, 0)
	defer s.cancel()
	select {
	case first := <-s.events:
		if first.err == nil {
			t.Fatalf("the WatchCall opened (its first event %s); want it refused", first.ev.GetKind())
		}
		return first.err
	case <-time.After(5 * time.Second):
		t.Fatal("a WatchCall sent nothing within 5 s")
		return nil
	}
}

// wantCallWatchRefused fails the test unless a WatchCall of caller is
// refused for its share of limit streams.
func wantCallWatchRefused(t *testing.T, c usherv1.AdmissionServiceClient, caller string, limit int) {
	t.Helper()
	err := refusedCallWatch(t, c)
	wantStatus(t, err, codes.ResourceExhausted, fmt.Sprintf("caller %q holds %d WatchCall streams", caller, limit))
	st, _ := status.FromError(err)
	wantDetails(t, st, refusal{reason: "CALLER_WATCH_LIMIT", field: "resource", value: meeting7,
		meta: map[string]string{"limit": fmt.Sprint(limit), "caller": caller}})
	if v := quotaValue(t, st); v != int64(limit) {
		t.Errorf("QuotaFailure quota_value %d, want the caller's share, %d", v, limit)
	}
}

// openWatch opens a Watch and reads its first message, trying again while
// it is refused for want of room, as openCallWatch does.
func openWatch(t *testing.T, c usherv1.AuthorizationServiceClient) *watchStream {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := watch(t, c, &usherv1.WatchRequest{})
		m, err := s.stream.Recv()
		if err == nil {
			if m.GetChange() != nil {
				t.Fatalf("the first message of a Watch carries a change")
			}
			return s
		}
		s.cancel()
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("Watch: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openWatches opens n Watch streams as openWatch does.
func openWatches(t *testing.T, c usherv1.AuthorizationServiceClient, n int) []*watchStream {
	t.Helper()
	var out []*watchStream
	for range n {
		out = append(out, openWatch(t, c))
	}
	return out
}

// refusedWatch is how the server refuses a Watch; the test fails if the
// stream opens instead.
func refusedWatch(t *testing.T, c usherv1.AuthorizationServiceClient, req *usherv1.WatchRequest) *status.Status {
	t.Helper()
	s := watch(t, c, req)
	defer s.cancel()
	m, err := s.stream.Recv()
	if err == nil {
		t.Fatalf("the Watch opened (its first message at revision %d); want it refused", m.GetRevision())
	}
	return status.Convert(err)
}

// wantWatchRefused fails the test unless a Watch of caller is refused for
// its share of limit streams.
func wantWatchRefused(t *testing.T, c usherv1.AuthorizationServiceClient, caller string, limit int) {
	t.Helper()
	st := refusedWatch(t, c, &usherv1.WatchRequest{})
	wantStatus(t, st.Err(), codes.ResourceExhausted, fmt.Sprintf("caller %q holds %d Watch streams", caller, limit))
	wantDetails(t, st, refusal{reason: "CALLER_WATCH_LIMIT", meta: map[string]string{"limit": fmt.Sprint(limit), "caller": caller}})
	if v := quotaValue(t, st); v != int64(limit) {
		t.Errorf("QuotaFailure quota_value %d, want the caller's share, %d", v, limit)
	}
}

// One media server's sidecar, gone wrong or its token stolen, may hold a
// quarter of the server's WatchCall streams and no more: past its share it
// is refused, naming its limit, on any connection, while another sidecar
// still watches its calls; and a stream of its own that ends gives its
// place back.
func TestACallerHoldsAtMostAQuarterOfTheWatchCalls(t *testing.T) {
	w := newSharesWorld(t, admission.Options{MaxWatchers: 8})
	a, b := usherv1.NewAdmissionServiceClient(w.a), usherv1.NewAdmissionServiceClient(w.b)
	held := openCallWatches(t, a, 2)
	wantCallWatchRefused(t, a, "sidecar-a", 2)
	wantCallWatchRefused(t, usherv1.NewAdmissionServiceClient(w.as(w.tokenA)), "sidecar-a", 2)

	openCallWatches(t, b, 2)
	wantCallWatchRefused(t, b, "sidecar-b", 2)

	held[0].cancel()
	openCallWatch(t, a)
	wantCallWatchRefused(t, a, "sidecar-a", 2)
}

// The same holds for the change feed: a caller may hold a quarter of the
// server's Watch streams.
func TestACallerHoldsAtMostAQuarterOfTheWatchStreams(t *testing.T) {
	w := newSharesWorld(t, admission.Options{}, server.WithWatchLimits(server.WatchLimits{MaxStreams: 8, Progress: time.Minute}))
	a, b := usherv1.NewAuthorizationServiceClient(w.a), usherv1.NewAuthorizationServiceClient(w.b)
	held := openWatches(t, a, 2)
	wantWatchRefused(t, a, "sidecar-a", 2)
	wantWatchRefused(t, usherv1.NewAuthorizationServiceClient(w.as(w.tokenA)), "sidecar-a", 2)

	openWatches(t, b, 2)
	wantWatchRefused(t, b, "sidecar-b", 2)

	held[0].cancel()
	openWatch(t, a)
	wantWatchRefused(t, a, "sidecar-a", 2)
}

// droppable dials connections whose sockets a test can close under the
// client, as a network that fails does: the client says no goodbye, and
// the server learns of it from the socket.
type droppable struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *droppable) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

// drop closes every socket dialled so far.
func (d *droppable) drop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

// A caller's place is given back however its stream ends: its client
// cancels it, its connection drops, it ends in error (the caller taken
// out of the callers file), or the server refuses it once counted in. Each
// time the caller first holds its whole share, so that a place not given
// back would keep its next stream out. (A server that drains refuses every
// stream after: TestADrainedServerGivesBackEveryShare.)
func TestACallersWatchCallSharesComeBackHoweverTheStreamEnds(t *testing.T) {
	w := newSharesWorld(t, admission.Options{MaxWatchers: 8})
	a := usherv1.NewAdmissionServiceClient(w.a)
	full := func(t *testing.T, c usherv1.AdmissionServiceClient) []*callStream {
		t.Helper()
		held := openCallWatches(t, c, 2)
		wantCallWatchRefused(t, c, "sidecar-a", 2)
		return held
	}
	// Each case's streams end with it, as their contexts do, and the
	// server counts them out a moment later: the cases that follow open
	// their streams as they find room. This one goes first, since the
	// refusals it counts on are not tried again.
	t.Run("the server refuses a stream it counted in", func(t *testing.T) {
		openCallWatch(t, a)
		for range 3 {
			err := watchCall(t, a, "call:meeting:nowhere", 0).end(5 * time.Second)
			wantStatus(t, err, codes.NotFound, "call:meeting:nowhere")
		}
		openCallWatch(t, a)
		wantCallWatchRefused(t, a, "sidecar-a", 2)
	})
	t.Run("the client cancels", func(t *testing.T) {
		for _, s := range full(t, a) {
			s.cancel()
		}
		full(t, a)
	})
	t.Run("the connection drops", func(t *testing.T) {
		d := &droppable{}
		held := full(t, usherv1.NewAdmissionServiceClient(w.as(w.tokenA, grpc.WithContextDialer(d.dial))))
		d.drop()
		for _, s := range held {
			if err := s.end(5 * time.Second); status.Code(err) != codes.Unavailable {
				t.Fatalf("a stream on a dropped connection ended with %v, want Unavailable", err)
			}
		}
		full(t, a)
	})
	t.Run("the caller is taken out of the callers file", func(t *testing.T) {
		held := full(t, a)
		w.setCallers(t, false)
		for _, s := range held {
			wantStatus(t, s.end(5*time.Second), codes.Unauthenticated, "")
		}
		w.setCallers(t, true)
		full(t, a)
	})
}

// The same for Watch streams.
func TestACallersWatchSharesComeBackHoweverTheStreamEnds(t *testing.T) {
	w := newSharesWorld(t, admission.Options{}, server.WithWatchLimits(server.WatchLimits{MaxStreams: 8, Progress: time.Minute}))
	a := usherv1.NewAuthorizationServiceClient(w.a)
	full := func(t *testing.T, c usherv1.AuthorizationServiceClient) []*watchStream {
		t.Helper()
		held := openWatches(t, c, 2)
		wantWatchRefused(t, c, "sidecar-a", 2)
		return held
	}
	// First, as for WatchCall.
	t.Run("the server refuses a stream it counted in", func(t *testing.T) {
		openWatch(t, a)
		for range 3 {
			st := refusedWatch(t, a, &usherv1.WatchRequest{AfterRevision: 1 << 40})
			if st.Code() != codes.OutOfRange {
				t.Fatalf("a Watch after a revision to come: %s %q, want OutOfRange", st.Code(), st.Message())
			}
		}
		openWatch(t, a)
		wantWatchRefused(t, a, "sidecar-a", 2)
	})
	t.Run("the client cancels", func(t *testing.T) {
		for _, s := range full(t, a) {
			s.cancel()
		}
		full(t, a)
	})
	t.Run("the connection drops", func(t *testing.T) {
		d := &droppable{}
		held := full(t, usherv1.NewAuthorizationServiceClient(w.as(w.tokenA, grpc.WithContextDialer(d.dial))))
		d.drop()
		for _, s := range held {
			if st := s.end(); st.Code() != codes.Unavailable {
				t.Fatalf("a stream on a dropped connection ended with %s %q, want Unavailable", st.Code(), st.Message())
			}
		}
		full(t, a)
	})
	t.Run("the caller is taken out of the callers file", func(t *testing.T) {
		held := full(t, a)
		w.setCallers(t, false)
		for _, s := range held {
			if st := s.end(); st.Code() != codes.Unauthenticated {
				t.Fatalf("a stream of a caller taken out ended with %s %q, want Unauthenticated", st.Code(), st.Message())
			}
		}
		w.setCallers(t, true)
		full(t, a)
	})
}

// A caller's share is set apart from the pool (WithCallerShares, usher
// serve --max-watches-per-caller, --max-call-watches-per-caller). A caller
// within its share that finds the pool full is refused with the pool's own
// WATCH_LIMIT, naming the pool's limit, and the caller at its share with
// CALLER_WATCH_LIMIT, naming its own.
func TestThePoolsRefusalIsToldApartFromTheCallersShare(t *testing.T) {
	w := newSharesWorld(t, admission.Options{MaxWatchers: 4},
		server.WithWatchLimits(server.WatchLimits{MaxStreams: 4, Progress: time.Minute}),
		server.WithCallerShares(server.CallerShares{Watches: 3, CallWatches: 3}))

	t.Run("WatchCall", func(t *testing.T) {
		a, b := usherv1.NewAdmissionServiceClient(w.a), usherv1.NewAdmissionServiceClient(w.b)
		openCallWatches(t, a, 3)
		wantCallWatchRefused(t, a, "sidecar-a", 3)
		openCallWatch(t, b)
		err := refusedCallWatch(t, b)
		wantStatus(t, err, codes.ResourceExhausted, "at most 4 WatchCall streams")
		st, _ := status.FromError(err)
		wantDetails(t, st, refusal{reason: "WATCH_LIMIT", field: "resource", value: meeting7, meta: map[string]string{"limit": "4"}})
	})
	t.Run("Watch", func(t *testing.T) {
		a, b := usherv1.NewAuthorizationServiceClient(w.a), usherv1.NewAuthorizationServiceClient(w.b)
		openWatches(t, a, 3)
		wantWatchRefused(t, a, "sidecar-a", 3)
		openWatch(t, b)
		st := refusedWatch(t, b, &usherv1.WatchRequest{})
		wantStatus(t, st.Err(), codes.ResourceExhausted, "at most 4 at once")
		wantDetails(t, st, refusal{reason: "WATCH_LIMIT", meta: map[string]string{"limit": "4"}})
	})
}

// countingDialer dials connections and counts the bytes the client has
// read from them.
type countingDialer struct{ read atomic.Int64 }

func (d *countingDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return countedConn{Conn: c, read: &d.read}, nil
}

type countedConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// A stream whose client has stopped reading waits in gRPC's send for the
// client's HTTP/2 window to open, and its client, which still answers
// pings, keeps its connection. Its caller taken out of the callers file,
// its place in the pool comes back all the same, for another caller; and
// a client that reads again finds the stream ended with the refusal a new
// call would get.
func TestAStalledStreamOfARemovedCallerGivesItsPlaceBack(t *testing.T) {
	w := newSharesWorld(t, admission.Options{},
		server.WithWatchLimits(server.WatchLimits{MaxStreams: 2, Progress: time.Minute}),
		server.WithCallerShares(server.CallerShares{Watches: 2}))
	d := &countingDialer{}
	// Windows fixed at their least, so that the client does not grow them.
	stalled := openWatch(t, usherv1.NewAuthorizationServiceClient(w.as(w.tokenA,
		grpc.WithContextDialer(d.dial), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))))
	b := usherv1.NewAuthorizationServiceClient(w.b)
	openWatch(t, b)
	if st := refusedWatch(t, b, &usherv1.WatchRequest{}); st.Code() != codes.ResourceExhausted {
		t.Fatalf("a Watch past the pool: %s %q, want ResourceExhausted", st.Code(), st.Message())
	}

	// One change set of some 250 KB: more than the client's window and
	// the stream's write quota together.
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	p := server.FromPolicy(msg)
	for i := range 800 {
		p.Resources = append(p.Resources, authz.Resource{Name: fmt.Sprintf("workspace:%0250d", i), Parent: acme})
	}
	if _, _, err := w.engine.ApplyPolicy(context.Background(), w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); d.read.Load() < 64<<10; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the stalled client read %d bytes; want its window's worth", d.read.Load())
		}
	}

	w.setCallers(t, false)
	openWatch(t, b)
	for {
		if _, err := stalled.stream.Recv(); err != nil {
			wantDetails(t, wantCode(t, err, codes.Unauthenticated), refusal{reason: "BAD_TOKEN"})
			break
		}
	}
}
