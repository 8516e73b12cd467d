package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/client"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// fast resumes a stream within a few tens of milliseconds.
var fast = client.Backoff(20*time.Millisecond, 100*time.Millisecond)

// follower runs Watch in the background and passes on the revisions of
// the change sets it receives.
type follower struct {
	changes chan uint64
	retries atomic.Int64
	reloads atomic.Int64
	cancel  context.CancelFunc
	done    chan error
}

func follow(t *testing.T, c *client.Client, after uint64, opts ...client.WatchOption) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	f := &follower{changes: make(chan uint64, 1000), cancel: cancel, done: make(chan error, 1)}
	opts = append([]client.WatchOption{fast, client.OnRetry(func(error) { f.retries.Add(1) })}, opts...)
	go func() {
		f.done <- c.Watch(ctx, &usherv1.WatchRequest{AfterRevision: after}, func(m *usherv1.WatchResponse) error {
			if m.GetChange() != nil {
				if m.GetChange().GetRevision() != m.GetRevision() {
					return fmt.Errorf("a change set of revision %d in a message of revision %d", m.GetChange().GetRevision(), m.GetRevision())
				}
				f.changes <- m.GetRevision()
			}
			return nil
		}, opts...)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-f.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch ended with %v, want the context's end", err)
		}
	})
	return f
}

// expect fails the test unless the next change sets received are want,
// and nothing else.
func (f *follower) expect(t *testing.T, want ...uint64) {
	t.Helper()
	var got []uint64
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case rev := <-f.changes:
			got = append(got, rev)
		case err := <-f.done:
			t.Fatalf("Watch ended with %v after %v; want %v", err, got, want)
		case <-timeout:
			t.Fatalf("received %v; want %v", got, want)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("received %v; want %v", got, want)
	}
	select {
	case rev := <-f.changes:
		t.Fatalf("received %v then %d; want only %v", got, rev, want)
	case <-time.After(50 * time.Millisecond):
	}
}

// grants writes n grants and returns their revisions.
func (w *world) grants(n int, prefix string) []uint64 {
	w.t.Helper()
	var revs []uint64
	for i := range n {
		revs = append(revs, w.grant(fmt.Sprintf("user:%s%d", prefix, i), "call-member", meeting7))
	}
	return revs
}

func TestWatchResumesAcrossAServerRestart(t *testing.T) {
	w := newWorld(t)
	c := w.client(client.WithToken(sidecarToken))
	f := follow(t, c, w.revision())
	f.expect(t, w.grants(3, "before")...)

	w.restart()
	// Written as the client reconnects, or before: it resumes after the
	// last revision it received either way.
	f.expect(t, w.grants(3, "after")...)
	if f.retries.Load() == 0 {
		t.Error("the stream was never resumed")
	}
}

func TestWatchResumesAcrossCutConnectionsWithoutGapOrRepeat(t *testing.T) {
	w := newWorld(t)
	p := newProxy(t, w.addr)
	c := dial(t, p.Addr(), client.WithToken(sidecarToken))
	f := follow(t, c, w.revision())

	var (
		wg   sync.WaitGroup
		revs []uint64
	)
	wg.Go(func() { revs = w.grants(60, "u") })
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		for range 10 {
			time.Sleep(15 * time.Millisecond)
			p.cut()
		}
	}()
	<-stop
	wg.Wait()
	f.expect(t, revs...)
	if f.retries.Load() == 0 {
		t.Error("no cut reached the stream")
	}
	t.Logf("resumed %d times", f.retries.Load())
}

func TestWatchOfACompactedLogReloads(t *testing.T) {
	w := newWorld(t)
	c := w.client(client.WithToken(sidecarToken))
	old := w.revision()
	revs := w.grants(4, "u")
	if err := w.Store().Compact(context.Background(), authz.Revision(revs[2])); err != nil {
		t.Fatal(err)
	}

	// Without Reload, the error says what happened.
	err := c.Watch(callCtx(t), &usherv1.WatchRequest{AfterRevision: old}, func(*usherv1.WatchResponse) error { return nil })
	var e *client.Error
	if !errors.Is(err, client.ErrCompacted) || !errors.As(err, &e) || e.Code != codes.OutOfRange ||
		e.Metadata["latest_revision"] != fmt.Sprint(revs[3]) || e.Value != fmt.Sprint(old) {
		t.Fatalf("Watch after a compacted revision: %v (%+v); want ErrCompacted naming the revision and the latest", err, e)
	}

	// With it, the caller reloads and the watch goes on from there.
	var reloads atomic.Int64
	reload := client.Reload(func(ctx context.Context, cause error) (uint64, error) {
		if !errors.Is(cause, client.ErrCompacted) {
			t.Errorf("reload because of %v, want ErrCompacted", cause)
		}
		// Counted once read: a write the test makes after that is one
		// the watch must deliver.
		defer reloads.Add(1)
		resp, err := c.Authorization.GetRevision(ctx, &usherv1.GetRevisionRequest{})
		return resp.GetRevision(), err
	})
	f := follow(t, c, old, reload)
	eventually(t, 5*time.Second, "the reload", func() bool { return reloads.Load() == 1 })
	f.expect(t, w.grants(2, "later")...)
	if reloads.Load() != 1 {
		t.Errorf("reloaded %d times, want once", reloads.Load())
	}
}

func TestWatchReloadsWhenTheLogWasCompactedWhileAway(t *testing.T) {
	w := newWorld(t)
	p := newProxy(t, w.addr)
	c := dial(t, p.Addr(), client.WithToken(sidecarToken))
	var reloads atomic.Int64
	f := follow(t, c, w.revision(), client.Reload(func(ctx context.Context, cause error) (uint64, error) {
		// What a real caller reloads would be read here, at the
		// revision the server answers at.
		defer reloads.Add(1)
		return w.revision(), nil
	}))
	f.expect(t, w.grants(2, "seen")...)

	p.pause()
	missed := w.grants(3, "missed")
	if err := w.Store().Compact(context.Background(), authz.Revision(missed[1])); err != nil {
		t.Fatal(err)
	}
	p.resume()
	eventually(t, 5*time.Second, "the reload", func() bool { return reloads.Load() == 1 })
	f.expect(t, w.grants(2, "after")...)
}

func TestWatchEndsOnItsHandlerOrARefusal(t *testing.T) {
	w := newWorld(t)
	c := w.client(client.WithToken(sidecarToken))
	from := w.revision()
	w.grants(2, "u")

	stop := errors.New("enough")
	n := 0
	err := c.Watch(callCtx(t), &usherv1.WatchRequest{AfterRevision: from}, func(m *usherv1.WatchResponse) error {
		if n++; m.GetChange() != nil {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Errorf("Watch whose handler stops at the first change: %v after %d messages; want the handler's error after 2", err, n)
	}

	// A malformed filter is not worth retrying.
	err = c.Watch(callCtx(t), &usherv1.WatchRequest{Subject: "nobody"}, func(*usherv1.WatchResponse) error { return nil }, fast)
	if e, ok := client.FromError(err); !ok || e.Code != codes.InvalidArgument || e.Field != "subject" {
		t.Errorf("Watch with a malformed subject filter: %v; want InvalidArgument naming subject", err)
	}

	// Nor is a caller the server does not know.
	err = w.client().Watch(callCtx(t), &usherv1.WatchRequest{}, func(*usherv1.WatchResponse) error { return nil }, fast)
	if !client.IsUnauthenticated(err) {
		t.Errorf("Watch without credentials: %v; want Unauthenticated", err)
	}
}

func TestWatchCallResumesAcrossACutConnection(t *testing.T) {
	w := newWorld(t)
	for _, s := range []string{"user:alice", "user:bob"} {
		w.grant(s, "call-member", meeting7)
	}
	p := newProxy(t, w.addr)
	c := dial(t, p.Addr(), client.WithToken(sidecarToken))

	// The call as the handler sees it: who is in, by session.
	var (
		mu      sync.Mutex
		in      = map[string]string{}
		synced  int
		retries atomic.Int64
	)
	state := func() (map[string]string, int) {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]string{}
		for k, v := range in {
			out[k] = v
		}
		return out, synced
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- c.WatchCall(ctx, meeting7, 0, func(ev *usherv1.CallEvent) error {
			mu.Lock()
			defer mu.Unlock()
			switch ev.GetKind() {
			case usherv1.CallEventKind_CALL_EVENT_KIND_PRESENT, usherv1.CallEventKind_CALL_EVENT_KIND_JOINED, usherv1.CallEventKind_CALL_EVENT_KIND_CHANGED:
				in[ev.GetSubject()] = ev.GetSessionId()
			case usherv1.CallEventKind_CALL_EVENT_KIND_LEFT, usherv1.CallEventKind_CALL_EVENT_KIND_EJECTED, usherv1.CallEventKind_CALL_EVENT_KIND_LAPSED:
				if in[ev.GetSubject()] == ev.GetSessionId() {
					delete(in, ev.GetSubject())
				}
			case usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED:
				if ev.GetReset_() {
					return fmt.Errorf("the server could not resume: %v", ev)
				}
				synced++
			}
			return nil
		}, fast, client.OnRetry(func(error) { retries.Add(1) }))
	}()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchCall ended with %v, want the context's end", err)
		}
	}()

	alice := join(t, w.Admin, "user:alice", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	eventually(t, 5*time.Second, "alice's join reaches the watch", func() bool {
		got, _ := state()
		return got["user:alice"] == alice.GetSessionId()
	})

	// While the watch is cut off: bob joins, alice leaves.
	p.pause()
	bob := join(t, w.Admin, "user:bob", meeting7, usherv1.Outcome_OUTCOME_ADMITTED)
	if _, err := w.Admin.Admission.Leave(callCtx(t), &usherv1.LeaveRequest{SessionId: alice.GetSessionId()}); err != nil {
		t.Fatal(err)
	}
	p.resume()
	eventually(t, 5*time.Second, "the resumed watch sees bob in and alice out", func() bool {
		got, n := state()
		return n >= 2 && len(got) == 1 && got["user:bob"] == bob.GetSessionId()
	})
	if retries.Load() == 0 {
		t.Error("the watch was never resumed")
	}
}

// restartingServer sends a WatchCall stream that starts again in place,
// as a server's stream that fell behind does, and is cut partway through
// that state: PRESENT user:early (muted at revision 12) has come, user:late's
// EJECTED (banned at 11) has not. It answers a resume as a server does,
// with what changed at its revision or later.
type restartingServer struct {
	usherv1.UnimplementedAdmissionServiceServer
	mu      sync.Mutex
	resumes []uint64
}

func (s *restartingServer) WatchCall(req *usherv1.WatchCallRequest, stream grpc.ServerStreamingServer[usherv1.WatchCallResponse]) error {
	ev := func(kind usherv1.CallEventKind, rev uint64, subject, session string) *usherv1.WatchCallResponse {
		return &usherv1.WatchCallResponse{Event: &usherv1.CallEvent{Kind: kind, Revision: rev, Subject: subject, SessionId: session}}
	}
	var msgs []*usherv1.WatchCallResponse
	if after := req.GetAfterRevision(); after == 0 {
		msgs = []*usherv1.WatchCallResponse{
			ev(usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED, 3, "", ""),
			ev(usherv1.CallEventKind_CALL_EVENT_KIND_JOINED, 4, "user:early", "e1"),
			ev(usherv1.CallEventKind_CALL_EVENT_KIND_JOINED, 4, "user:late", "l1"),
			ev(usherv1.CallEventKind_CALL_EVENT_KIND_PRESENT, 12, "user:early", "e1"),
		}
	} else {
		s.mu.Lock()
		s.resumes = append(s.resumes, after)
		s.mu.Unlock()
		for _, m := range []*usherv1.WatchCallResponse{
			ev(usherv1.CallEventKind_CALL_EVENT_KIND_PRESENT, 12, "user:early", "e1"),
			ev(usherv1.CallEventKind_CALL_EVENT_KIND_EJECTED, 11, "user:late", "l1"),
		} {
			if m.GetEvent().GetRevision() >= after {
				msgs = append(msgs, m)
			}
		}
		msgs = append(msgs, ev(usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED, 12, "", ""))
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	if req.GetAfterRevision() == 0 {
		return status.Error(codes.Unavailable, "connection cut")
	}
	<-stream.Context().Done()
	return nil
}

// A state the server starts again in place comes in join order, not
// revision order: a client cut off within it resumes from before it, or
// it would never hear of an ending below a PRESENT's revision.
func TestWatchCallResumesFromBeforeAStateStartedAgainInPlace(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fake := &restartingServer{}
	usherv1.RegisterAdmissionServiceServer(srv, fake)
	go srv.Serve(lis)
	defer srv.Stop()
	c := dial(t, lis.Addr().String())

	in := map[string]string{}
	syncs := 0
	done := errors.New("the resume's SYNCED")
	err = c.WatchCall(callCtx(t), "call:meeting:7", 0, func(ev *usherv1.CallEvent) error {
		switch ev.GetKind() {
		case usherv1.CallEventKind_CALL_EVENT_KIND_PRESENT, usherv1.CallEventKind_CALL_EVENT_KIND_JOINED:
			in[ev.GetSubject()] = ev.GetSessionId()
		case usherv1.CallEventKind_CALL_EVENT_KIND_EJECTED:
			delete(in, ev.GetSubject())
		case usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED:
			if syncs++; syncs == 2 {
				return done
			}
		}
		return nil
	}, fast)
	if !errors.Is(err, done) {
		t.Fatalf("WatchCall: %v", err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if !slices.Equal(fake.resumes, []uint64{4}) {
		t.Errorf("resumed from %v, want from 4, the last revision before the state started again", fake.resumes)
	}
	if _, ok := in["user:late"]; ok {
		t.Errorf("the handler takes user:late as in the call still: its EJECTED at 11, below the PRESENT at 12 it was cut after, was never told")
	}
}
