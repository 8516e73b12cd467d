package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
	"github.com/usher-authz/usher/storage/memory"
)

// watchWorld is a server on a bbolt file with the default policy at
// revision 1, and a client of it, for tests that need the server and the
// store themselves: to stop one, to compact the other.
type watchWorld struct {
	t      *testing.T
	addr   string
	store  *bolt.Store
	srv    *server.Server
	served chan struct{}
	authz  usherv1.AuthorizationServiceClient
	admin  usherv1.AdminServiceClient
}

func newWatchWorld(t *testing.T, opts ...grpc.ServerOption) *watchWorld {
	t.Helper()
	store, err := bolt.Open(filepath.Join(t.TempDir(), "usher.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := authz.Start(context.Background(), store, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, server.FromPolicy(msg), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &watchWorld{t: t, addr: lis.Addr().String(), store: store, srv: server.New(engine, slog.New(slog.DiscardHandler), opts...), served: make(chan struct{})}
	go func() { defer close(w.served); _ = w.srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	w.authz, w.admin = usherv1.NewAuthorizationServiceClient(conn), usherv1.NewAdminServiceClient(conn)
	t.Cleanup(func() {
		conn.Close()
		w.srv.Stop()
		<-w.served
		engine.Close()
		if err := store.Close(); err != nil {
			t.Errorf("store.Close: %v", err)
		}
	})
	return w
}

// grant grants subject the host role on root and returns the revision.
func (w *watchWorld) grant(subject string) uint64 {
	w.t.Helper()
	resp, err := w.admin.Grant(callCtx(w.t), &usherv1.GrantRequest{Subject: subject, Role: "host", Resource: "root"})
	if err != nil {
		w.t.Fatalf("Grant(%s): %v", subject, err)
	}
	return resp.GetRevision()
}

// watchStream is an open Watch and the way to end it.
type watchStream struct {
	t      *testing.T
	stream grpc.ServerStreamingClient[usherv1.WatchResponse]
	cancel context.CancelFunc
}

// watch opens a Watch, failing the test if it does not end within 30s.
func watch(t *testing.T, c usherv1.AuthorizationServiceClient, req *usherv1.WatchRequest) *watchStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	stream, err := c.Watch(ctx, req)
	if err != nil {
		t.Fatalf("Watch(%v): %v", req, err)
	}
	return &watchStream{t: t, stream: stream, cancel: cancel}
}

// next is the next message; the test fails if the stream ends.
func (s *watchStream) next() *usherv1.WatchResponse {
	s.t.Helper()
	m, err := s.stream.Recv()
	if err != nil {
		s.t.Fatalf("Watch: Recv: %v", err)
	}
	return m
}

// change is the next message, which must carry a change set.
func (s *watchStream) change() *usherv1.ChangeRecord {
	s.t.Helper()
	m := s.next()
	if m.GetChange() == nil {
		s.t.Fatalf("got a progress message at revision %d, want a change set", m.GetRevision())
	}
	if m.GetRevision() != m.GetChange().GetRevision() {
		s.t.Fatalf("message revision %d, its change set's %d", m.GetRevision(), m.GetChange().GetRevision())
	}
	return m.GetChange()
}

// progress is the next message, which must carry no change set.
func (s *watchStream) progress() uint64 {
	s.t.Helper()
	m := s.next()
	if m.GetChange() != nil {
		s.t.Fatalf("got the change set of revision %d, want a progress message", m.GetRevision())
	}
	return m.GetRevision()
}

// end is the status the stream ends with.
func (s *watchStream) end() *status.Status {
	s.t.Helper()
	for {
		m, err := s.stream.Recv()
		if err != nil {
			return status.Convert(err)
		}
		s.t.Logf("message before the end: revision %d", m.GetRevision())
	}
}

// errorInfo is the status's ErrorInfo detail; the test fails without one.
func errorInfo(t *testing.T, st *status.Status) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatalf("status %s %q carries no ErrorInfo", st.Code(), st.Message())
	return nil
}

// logged is the change log's record of rev, as ListChanges answers it.
func (w *watchWorld) logged(rev uint64) *usherv1.ChangeRecord {
	w.t.Helper()
	resp, err := w.admin.ListChanges(callCtx(w.t), &usherv1.ListChangesRequest{AfterRevision: rev - 1, PageSize: 1})
	if err != nil || len(resp.GetChanges()) != 1 {
		w.t.Fatalf("ListChanges after %d: %v, %d records", rev-1, err, len(resp.GetChanges()))
	}
	return resp.GetChanges()[0]
}

func TestWatchSendsTheChangeSetsAfterARevisionInOrder(t *testing.T) {
	w := newWatchWorld(t)
	var revs []uint64
	for i := range 4 {
		revs = append(revs, w.grant(fmt.Sprintf("user:%d", i)))
	}
	if _, err := w.admin.PutResource(callCtx(t), &usherv1.PutResourceRequest{Name: "account:acme"}); err != nil {
		t.Fatal(err)
	}
	s := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: revs[1]})
	if got := s.progress(); got != revs[1] {
		t.Fatalf("first message at revision %d, want the requested %d", got, revs[1])
	}
	for rev := revs[1] + 1; rev <= revs[3]+1; rev++ {
		if got, want := s.change(), w.logged(rev); !proto.Equal(got, want) {
			t.Fatalf("revision %d: Watch sent\n%v\nthe log holds\n%v", rev, got, want)
		}
	}
	// Then what is committed while the stream is open.
	rev := w.grant("user:late")
	got := s.change()
	if !proto.Equal(got, w.logged(rev)) {
		t.Fatalf("the live change set differs from the log's: %v", got)
	}
	g := got.GetChanges()[0].GetGrant()
	if got.GetRevision() != rev || got.GetCaller() != "anonymous" || got.GetTime() == nil ||
		got.GetChanges()[0].GetOp() != usherv1.Op_OP_PUT_GRANT || g.GetSubject() != "user:late" || g.GetRole() != "host" {
		t.Errorf("the live change set is %v, want user:late's host grant at revision %d by anonymous", got, rev)
	}
}

func TestWatchFromZeroStartsAtTheCurrentRevision(t *testing.T) {
	w := newWatchWorld(t)
	now := w.grant("user:before")
	s := watch(t, w.authz, &usherv1.WatchRequest{})
	if got := s.progress(); got != now {
		t.Fatalf("first message at revision %d, want the current %d", got, now)
	}
	rev := w.grant("user:after")
	if got := s.change(); got.GetRevision() != rev || got.GetChanges()[0].GetGrant().GetSubject() != "user:after" {
		t.Fatalf("got %v, want only the grant committed after the stream opened (revision %d)", got, rev)
	}
}

func TestWatchResumesAfterADisconnectWithNoGapAndNoDuplicate(t *testing.T) {
	w := newWatchWorld(t)
	const writes = 200
	start := w.grant("user:first")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			for i := range writes / 4 {
				_, err := w.admin.Grant(callCtx(t), &usherv1.GrantRequest{Subject: fmt.Sprintf("user:%d-%d", g, i), Role: "host", Resource: "root"})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	// Disconnect every 17 change sets and watch again after the last
	// revision received, while the writers go on.
	var seen []uint64
	after := start
	for len(seen) < writes {
		s := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: after})
		if got := s.progress(); got != after {
			t.Fatalf("resumed after %d, first message says %d", after, got)
		}
		for range min(17, writes-len(seen)) {
			cs := s.change()
			seen = append(seen, cs.GetRevision())
			after = cs.GetRevision()
		}
		s.cancel()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, rev := range seen {
		if rev != start+1+uint64(i) {
			t.Fatalf("change set %d has revision %d, want %d: a gap or a duplicate across reconnects (%v)", i, rev, start+1+uint64(i), seen)
		}
	}
}

func TestWatchOfACompactedRevisionSaysReload(t *testing.T) {
	w := newWatchWorld(t)
	for i := range 5 {
		w.grant(fmt.Sprintf("user:%d", i))
	}
	latest := w.grant("user:last")
	horizon := latest - 2
	if err := w.store.Compact(context.Background(), authz.Revision(horizon)); err != nil {
		t.Fatal(err)
	}
	begins := fmt.Sprintf("it begins after revision %d", horizon)
	st := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: 2}).end()
	if st.Code() != codes.OutOfRange || !strings.Contains(st.Message(), "compacted") || !strings.Contains(st.Message(), "reload") ||
		!strings.Contains(st.Message(), begins) {
		t.Fatalf("status %s %q, want OUT_OF_RANGE saying the log was compacted, %q, and to reload", st.Code(), st.Message(), begins)
	}
	info := errorInfo(t, st)
	want := map[string]string{"after_revision": "2", "latest_revision": fmt.Sprint(latest), "log_start": fmt.Sprint(horizon), "field": "after_revision", "value": "2"}
	if info.GetReason() != "COMPACTED" || info.GetDomain() != "usher.v1" || fmt.Sprint(info.GetMetadata()) != fmt.Sprint(want) {
		t.Errorf("ErrorInfo %v, want reason COMPACTED, domain usher.v1, metadata %v", info, want)
	}
	_, err := w.admin.ListChanges(context.Background(), &usherv1.ListChangesRequest{AfterRevision: 2})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), begins) {
		t.Errorf("ListChanges: status %s %q, want FAILED_PRECONDITION saying %q", st.Code(), st.Message(), begins)
	}
	// The horizon itself is still in reach.
	s := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: horizon})
	s.progress()
	if got := s.change().GetRevision(); got != horizon+1 {
		t.Errorf("after the horizon %d: first change set %d", horizon, got)
	}
}

func TestWatchPastTheLatestRevisionIsOutOfRange(t *testing.T) {
	w := newWatchWorld(t)
	latest := w.grant("user:dana")
	st := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: latest + 5}).end()
	if st.Code() != codes.OutOfRange || !strings.Contains(st.Message(), fmt.Sprintf("latest committed revision, %d", latest)) {
		t.Fatalf("status %s %q, want OUT_OF_RANGE naming the latest revision", st.Code(), st.Message())
	}
	info := errorInfo(t, st)
	want := map[string]string{"after_revision": fmt.Sprint(latest + 5), "latest_revision": fmt.Sprint(latest),
		"field": "after_revision", "value": fmt.Sprint(latest + 5)}
	if info.GetReason() != "FUTURE_REVISION" || fmt.Sprint(info.GetMetadata()) != fmt.Sprint(want) {
		t.Errorf("ErrorInfo %v, want reason FUTURE_REVISION, metadata %v", info, want)
	}
	// The latest revision itself is where a client that has seen
	// everything waits.
	s := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: latest})
	if got := s.progress(); got != latest {
		t.Fatalf("first message at %d, want %d", got, latest)
	}
}

func TestWatchFilters(t *testing.T) {
	w := newWatchWorld(t, server.WithWatchLimits(server.WatchLimits{MaxStreams: 10, Progress: 200 * time.Millisecond}))
	start := w.grant("user:start")
	s := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: start, Subject: "user:alice"})
	s.progress()
	w.grant("user:bob")
	alice := w.grant("user:alice")
	if got := s.change(); got.GetRevision() != alice {
		t.Fatalf("got revision %d, want only alice's grant at %d", got.GetRevision(), alice)
	}
	// Bob's later grant is left out, but the revision moves past it.
	bob := w.grant("user:bob2")
	for got := s.progress(); got != bob; got = s.progress() {
		if got != alice {
			t.Fatalf("a progress message says %d, want %d, then %d, the revision of the change set left out", got, alice, bob)
		}
	}

	for _, c := range []struct {
		name  string
		req   *usherv1.WatchRequest
		field string
	}{
		{"a malformed subject filter is refused", &usherv1.WatchRequest{Subject: "alice"}, "subject"},
		{"a malformed resource filter is refused", &usherv1.WatchRequest{Resource: "call"}, "resource"},
		{"a caller filter longer than any caller name is refused", &usherv1.WatchRequest{Caller: strings.Repeat("c", 129)}, "caller"},
		{"a caller filter with a character no caller name has is refused", &usherv1.WatchRequest{Caller: "sidecar\x00"}, "caller"},
		{"a caller filter with a bidirectional override is refused", &usherv1.WatchRequest{Caller: "sidecar\u202e"}, "caller"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := watch(t, w.authz, c.req).end()
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), c.field+" ") {
				t.Errorf("status %s %q, want INVALID_ARGUMENT naming %s", st.Code(), st.Message(), c.field)
			}
		})
	}
}

func TestWatchSendsProgressWhenIdle(t *testing.T) {
	w := newWatchWorld(t, server.WithWatchLimits(server.WatchLimits{MaxStreams: 10, Progress: 100 * time.Millisecond}))
	start := w.grant("user:dana")
	s := watch(t, w.authz, &usherv1.WatchRequest{})
	began := time.Now()
	for range 3 {
		if got := s.progress(); got != start {
			t.Fatalf("progress at %d, want %d", got, start)
		}
	}
	if d := time.Since(began); d < 200*time.Millisecond {
		t.Errorf("three messages took %s: progress comes only after 100ms without a message", d)
	}
}

func TestWatchStreamsPastTheLimitAreRefused(t *testing.T) {
	w := newWatchWorld(t, server.WithWatchLimits(server.WatchLimits{MaxStreams: 2, Progress: time.Minute}))
	var open []*watchStream
	for range 2 {
		s := watch(t, w.authz, &usherv1.WatchRequest{})
		s.progress()
		open = append(open, s)
	}
	st := watch(t, w.authz, &usherv1.WatchRequest{}).end()
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "at most 2") {
		t.Fatalf("a third stream: %s %q, want RESOURCE_EXHAUSTED naming the limit of 2", st.Code(), st.Message())
	}
	wantDetails(t, st, refusal{reason: "WATCH_LIMIT", meta: map[string]string{"limit": "2"}})
	// Checks are not held up by the streams.
	if _, err := w.authz.Check(callCtx(t), &usherv1.CheckRequest{Subject: "user:dana", Permission: "join-call", Resource: "root"}); err != nil {
		t.Fatal(err)
	}
	// A stream that ends makes room.
	open[0].cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := watch(t, w.authz, &usherv1.WatchRequest{})
		m, err := s.stream.Recv()
		if err == nil {
			if m.GetChange() != nil {
				t.Fatalf("first message carries a change")
			}
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("after one stream ended: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGracefulStopEndsWatchStreams(t *testing.T) {
	w := newWatchWorld(t)
	rev := w.grant("user:dana")
	var streams []*watchStream
	for range 3 {
		s := watch(t, w.authz, &usherv1.WatchRequest{})
		s.progress()
		streams = append(streams, s)
	}
	stopped := make(chan struct{})
	go func() { w.srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("GracefulStop still waits for the Watch streams after 10s")
	}
	for _, s := range streams {
		st := s.end()
		if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), fmt.Sprintf("watch again after revision %d", rev)) {
			t.Errorf("stream ended with %s %q, want UNAVAILABLE saying where to resume", st.Code(), st.Message())
		}
	}
}

func TestASlowWatcherHoldsUpOnlyItself(t *testing.T) {
	w := newWatchWorld(t)
	start := w.grant("user:dana")
	// The stuck client's windows are fixed at 64 KiB; grpc-go would
	// otherwise grow them from its bandwidth estimates.
	conn, err := grpc.NewClient(w.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stuck := watch(t, usherv1.NewAuthorizationServiceClient(conn), &usherv1.WatchRequest{AfterRevision: start})
	stuck.progress() // and then reads nothing while the writes go on
	live := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: start})
	live.progress()

	// 240 change sets of over 1 KiB each: more than flow control lets the
	// server send to a client that does not read.
	const writes = 240
	var wg sync.WaitGroup
	errs := make(chan error, writes)
	for g := range 8 {
		wg.Go(func() {
			for i := range writes / 8 {
				_, err := w.admin.PutRole(callCtx(t), &usherv1.PutRoleRequest{Role: &usherv1.Role{
					Name: fmt.Sprintf("r%d-%d", g, i), Scope: "root", Permissions: []string{"join-call"}, Description: strings.Repeat("d", 1024)}})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range writes {
		if got := live.change().GetRevision(); got != start+1+uint64(i) {
			t.Fatalf("the reading stream got revision %d, want %d", got, start+1+uint64(i))
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The stuck client, reading again, gets every change set in order.
	for i := range writes {
		if got := stuck.change().GetRevision(); got != start+1+uint64(i) {
			t.Fatalf("the slow stream got revision %d, want %d", got, start+1+uint64(i))
		}
	}
}

func TestCheckCallersMayWatch(t *testing.T) {
	w := newAuthWorld(t)
	for _, c := range []struct {
		name string
		cred credential
		code codes.Code
	}{
		{"a check caller by token may watch", credential{token: w.checkToken}, codes.OK},
		{"a check caller by certificate may watch", credential{cert: &w.checkCert}, codes.OK},
		{"an admin caller may watch", credential{token: w.adminToken}, codes.OK},
		{"a caller without credentials may not", credential{}, codes.Unauthenticated},
	} {
		t.Run(c.name, func(t *testing.T) {
			client := usherv1.NewAuthorizationServiceClient(w.dial(c.cred))
			stream, err := client.Watch(callCtx(t), &usherv1.WatchRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != c.code {
				t.Fatalf("Watch: %v, want %s", err, c.code)
			}
		})
	}
}

// The server's stream handler never sees a cancelled client as an error of
// its own: a client that goes away is not logged as a failure.
func TestAWatchWhoseClientLeavesEndsQuietly(t *testing.T) {
	logs := &logBuffer{}
	addr, _ := serveWith(t, t.TempDir(), logs.logger())
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := watch(t, usherv1.NewAuthorizationServiceClient(conn), &usherv1.WatchRequest{})
	s.progress()
	s.cancel()
	if _, err := s.stream.Recv(); status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "usher.v1.AuthorizationService") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if out := logs.String(); !strings.Contains(out, "grpc.code=Canceled") || strings.Contains(out, "level=ERROR") {
		t.Errorf("logs after a client left a Watch:\n%s\nwant the call finished as Canceled, no error", out)
	}
}

// The change records that Watch streams have read from the log and not yet
// sent are bounded across streams, by their size: a client that stops
// reading holds up its own page, and a stream whose page does not fit
// beside it ends with RESOURCE_EXHAUSTED, saying where to resume, until
// there is room again. The 10,000 registrations take some 300 kB: one fits
// alone, two do not.
func TestWatchStreamsHoldABoundedNumberOfChanges(t *testing.T) {
	w := newWatchWorld(t, server.WithWatchLimits(server.WatchLimits{MaxStreams: 10, MaxHeldBytes: 100_000}))
	start := w.grant("user:before")
	// gRPC takes the slow stream's large message whole, whatever its client
	// reads: the stream holds its changes until gRPC has written them.
	applied := w.bigChangeSet("a")
	slow := w.slowWatch(start)
	st := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: start}).end()
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), fmt.Sprintf("watch again after revision %d", start)) {
		t.Fatalf("a second stream beside it: %s %q, want RESOURCE_EXHAUSTED saying where to resume", st.Code(), st.Message())
	}
	wantDetails(t, st, refusal{reason: "WATCH_LIMIT", meta: map[string]string{"limit": "100000", "after_revision": fmt.Sprint(start)}})

	// Once the slow stream ends, a stream that reads gets the change set,
	// and gives back what it held: the next does too.
	slow.cancel()
	for i := range 2 {
		var s *watchStream
		deadline := time.Now().Add(10 * time.Second)
		for {
			s = watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: start})
			m, err := s.stream.Recv()
			if err == nil {
				if m.GetRevision() != start {
					t.Fatalf("first message at %d, want %d", m.GetRevision(), start)
				}
				break
			}
			if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
				t.Fatalf("stream %d after the slow one ended: %v", i, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if c := s.change(); c.GetRevision() != applied || len(c.GetChanges()) < 10_000 {
			t.Fatalf("stream %d got revision %d with %d changes, want %d with the 10,000 registrations", i, c.GetRevision(), len(c.GetChanges()), applied)
		}
		s.cancel()
	}
}

// A page alone may hold more than the limit when no other stream holds
// any; while it does, a stream whose page holds nothing, one that starts
// at the latest revision, is not refused.
func TestAWatchHoldingNothingIsNotRefused(t *testing.T) {
	w := newWatchWorld(t, server.WithWatchLimits(server.WatchLimits{MaxStreams: 10, MaxHeldBytes: 50_000}))
	start := w.grant("user:before")
	latest := w.bigChangeSet("a")
	w.slowWatch(start) // holds the 10,000 changes, past the limit
	s := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: latest})
	if got := s.progress(); got != latest {
		t.Fatalf("first message at %d, want %d", got, latest)
	}
}

// The budget counts what the records weigh, not how many changes they
// hold: 1,000 registrations of names of 250 characters, some 270 kB, weigh
// what 10,000 short ones do, and two do not fit where two sets of 1,000
// short ones would. A change set the stream's filter leaves out is not held
// at all.
func TestWatchStreamsHoldRecordsByTheirSize(t *testing.T) {
	w := newWatchWorld(t, server.WithWatchLimits(server.WatchLimits{MaxStreams: 10, MaxHeldBytes: 400_000}))
	start := w.grant("user:before")
	exp, err := w.admin.ExportPolicy(callCtx(t), &usherv1.ExportPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	p := exp.GetPolicy()
	for i := range 1000 {
		p.Resources = append(p.Resources, &usherv1.Resource{Name: fmt.Sprintf("account:%0250d", i), Parent: "root"})
	}
	if _, err := w.admin.ApplyPolicy(callCtx(t), &usherv1.ApplyPolicyRequest{Policy: p}); err != nil {
		t.Fatal(err)
	}
	w.slowWatch(start)
	st := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: start}).end()
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("a second stream beside the one holding 1,000 long names: %s %q, want RESOURCE_EXHAUSTED", st.Code(), st.Message())
	}
	// A stream whose filter leaves the change set out holds nothing of it,
	// and is not refused.
	if got := watch(t, w.authz, &usherv1.WatchRequest{AfterRevision: start, Caller: "nobody"}).progress(); got != start {
		t.Fatalf("a filtered stream beside it began at %d, want %d", got, start)
	}
}

// bigChangeSet commits one change set of 10,000 changes, registrations by
// a policy of accounts whose names start with prefix, and returns its
// revision.
func (w *watchWorld) bigChangeSet(prefix string) uint64 {
	w.t.Helper()
	exp, err := w.admin.ExportPolicy(callCtx(w.t), &usherv1.ExportPolicyRequest{})
	if err != nil {
		w.t.Fatal(err)
	}
	p := exp.GetPolicy()
	for i := range 10_000 {
		p.Resources = append(p.Resources, &usherv1.Resource{Name: fmt.Sprintf("account:%s%05d", prefix, i), Parent: "root"})
	}
	// Without a call's usual deadline: the commit of 10,000 changes may
	// take longer than that on a loaded machine.
	applied, err := w.admin.ApplyPolicy(w.t.Context(), &usherv1.ApplyPolicyRequest{Policy: p})
	if err != nil {
		w.t.Fatal(err)
	}
	return applied.GetRevision()
}

// slowWatch opens a Watch after revision after from a client that reads
// nothing past the first message, with windows too small for a large
// change set, so that the server's send waits on it.
func (w *watchWorld) slowWatch(after uint64) *watchStream {
	w.t.Helper()
	conn, err := grpc.NewClient(w.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { conn.Close() })
	s := watch(w.t, usherv1.NewAuthorizationServiceClient(conn), &usherv1.WatchRequest{AfterRevision: after})
	if got := s.progress(); got != after {
		w.t.Fatalf("first message at %d, want %d", got, after)
	}
	return s
}

// readCounter is a backend that counts the reads of its change log in
// progress at once, each held a moment so that reads which may overlap do.
type readCounter struct {
	*memory.Memory
	now, most atomic.Int32
}

func (b *readCounter) Changes(ctx context.Context, after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	n := b.now.Add(1)
	defer b.now.Add(-1)
	for m := b.most.Load(); n > m && !b.most.CompareAndSwap(m, n); m = b.most.Load() {
	}
	time.Sleep(time.Millisecond)
	return b.Memory.Changes(ctx, after, limit)
}

// Streams that read the log from far back, keeping nothing of it, read it
// in turns: at most half the cores' worth at once, however many there are,
// so that Check keeps the rest.
func TestWatchStreamsReadTheLogInTurns(t *testing.T) {
	be := &readCounter{Memory: memory.New()}
	engine, by := defaultEngine(t, be), authz.Author{Caller: "test"}
	var latest authz.Revision
	var err error
	for i := range 1_000 {
		if latest, err = engine.Grant(t.Context(), by, authz.Grant{Subject: fmt.Sprintf("user:u%04d", i), Role: "host", Resource: "root"}); err != nil {
			t.Fatal(err)
		}
	}
	srv := server.New(engine, slog.New(slog.DiscardHandler), server.WithWatchLimits(server.WatchLimits{MaxStreams: 64, Progress: 20 * time.Millisecond}))
	client := usherv1.NewAuthorizationServiceClient(server.ServeLoopback(t, srv))
	var streams []*watchStream
	for range 8 {
		streams = append(streams, watch(t, client, &usherv1.WatchRequest{AfterRevision: 1, Subject: "user:nobody"}))
	}
	for _, s := range streams {
		for s.next().GetRevision() < uint64(latest) {
		}
	}
	if most, want := be.most.Load(), int32(readers()); most > want {
		t.Errorf("%d streams read the log at once, more than %d", most, want)
	}
}

// stalledLog is a backend whose change log does not answer until released;
// entered says a read has begun.
type stalledLog struct {
	*memory.Memory
	entered chan struct{}
	release chan struct{}
}

func (b *stalledLog) Changes(ctx context.Context, after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b.Memory.Changes(ctx, after, limit)
}

// A stream whose client goes while it waits its turn to read the log ends,
// and no longer counts among the streams open.
func TestAWatchWaitingItsTurnEndsWithItsClient(t *testing.T) {
	be := &stalledLog{Memory: memory.New(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	engine := defaultEngine(t, be)
	// One turn at a time, so that the streams below queue for it.
	srv := server.New(engine, slog.New(slog.DiscardHandler), server.WithWatchLimits(server.WatchLimits{MaxStreams: readers() + 1, Progress: time.Minute}))
	client := usherv1.NewAuthorizationServiceClient(server.ServeLoopback(t, srv))
	t.Cleanup(func() { close(be.release) })
	for range readers() {
		watch(t, client, &usherv1.WatchRequest{})
		<-be.entered // it holds a turn, stalled in the log
	}
	waiting := watch(t, client, &usherv1.WatchRequest{})
	time.Sleep(50 * time.Millisecond) // it waits its turn
	waiting.cancel()
	// Its place among the streams open comes free.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		stream, err := client.Watch(ctx, &usherv1.WatchRequest{})
		if err != nil {
			t.Fatal(err)
		}
		go func() { time.Sleep(100 * time.Millisecond); cancel() }()
		_, err = stream.Recv()
		if status.Code(err) != codes.ResourceExhausted {
			break // admitted: it waited its turn until cancelled
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stream whose client went while it waited its turn still counts: %v", err)
		}
	}
}

// readers is how many Watch streams read the log at once on this machine.
func readers() int { return max(1, runtime.GOMAXPROCS(0)/2) }
