package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/storage/memory"
)

// tokenOnEveryCall sends a bearer token on every call.
type tokenOnEveryCall string

func (t tokenOnEveryCall) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "bearer " + string(t)}, nil
}
func (tokenOnEveryCall) RequireTransportSecurity() bool { return false }

// opened fails the test unless stream s, which what opened with err, sent
// its first message; it returns what waits for s to end, and its error.
func opened[T any](t *testing.T, what string, s grpc.ServerStreamingClient[T], err error) (end func() error) {
	t.Helper()
	if err == nil {
		_, err = s.Recv()
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return func() error {
		for {
			if _, err := s.Recv(); err != nil {
				return err
			}
		}
	}
}

// A server that drains ends every Watch and WatchCall stream and refuses
// new ones, so no caller could tell from outside whether its places came
// back: here they are counted, and every one is given back.
func TestADrainedServerGivesBackEveryShare(t *testing.T) {
	ctx := context.Background()
	engine, err := authz.Start(ctx, memory.New(), authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	by := authz.Author{Caller: "test"}
	if _, _, err := engine.ApplyPolicy(ctx, by, FromPolicy(msg), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []authz.Resource{{Name: "calltype:meeting"}, {Name: "call:meeting:7", Parent: "calltype:meeting"}} {
		if _, err := engine.PutResource(ctx, by, r); err != nil {
			t.Fatal(err)
		}
	}
	const token = "sidecar-a's token"
	sum := sha256.Sum256([]byte(token))
	file := filepath.Join(t.TempDir(), "callers.yaml")
	if err := os.WriteFile(file, fmt.Appendf(nil, "callers:\n  - {name: sidecar-a, kind: check, token_sha256: %s}\n", hex.EncodeToString(sum[:])), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := NewCallerSource(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m := admission.New(engine, admission.Options{MaxWatchers: 8})
	t.Cleanup(func() { m.Close() })
	srv := New(engine, slog.New(slog.DiscardHandler), WithCallers(src), WithAdmission(m),
		WithWatchLimits(WatchLimits{MaxStreams: 8, Progress: time.Minute}))
	conn := serveLoopback(t, srv, grpc.WithPerRPCCredentials(tokenOnEveryCall(token)))

	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var ends []func() error
	for range 2 {
		w, err := usherv1.NewAuthorizationServiceClient(conn).Watch(sctx, &usherv1.WatchRequest{})
		ends = append(ends, opened(t, "Watch", w, err))
		c, err := usherv1.NewAdmissionServiceClient(conn).WatchCall(sctx, &usherv1.WatchCallRequest{Resource: "call:meeting:7"})
		ends = append(ends, opened(t, "WatchCall", c, err))
	}
	held := func() (watches, callWatches int) {
		srv.watches.shares.mu.Lock()
		watches = srv.watches.shares.held["sidecar-a"]
		srv.watches.shares.mu.Unlock()
		srv.callShares.mu.Lock()
		callWatches = srv.callShares.held["sidecar-a"]
		srv.callShares.mu.Unlock()
		return watches, callWatches
	}
	if w, c := held(); w != 2 || c != 2 {
		t.Fatalf("sidecar-a holds %d Watch and %d WatchCall streams, want 2 and 2", w, c)
	}

	srv.Drain()
	for _, end := range ends {
		if err := end(); status.Code(err) != codes.Unavailable {
			t.Fatalf("a stream of a draining server ended with %v, want Unavailable", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, c := held()
		if w == 0 && c == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the streams of a drained server ended, and sidecar-a still holds %d Watch and %d WatchCall streams", w, c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
