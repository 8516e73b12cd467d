package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/testpki"
)

// usher serve --max-call-watches bounds the WatchCall streams; one past it
// is refused with WATCH_LIMIT and the limit.
func TestServeBoundsCallWatches(t *testing.T) {
	bin, addr := startBinary(t, "--max-call-watches", "1")
	c := &cliSteps{t: t, bin: bin, addr: addr, usher: cliAgainst(t, bin, addr)}
	c.ok("resources", "put", "account:acme")
	c.ok("resources", "put", "call:acme:standup", "--parent", "account:acme")
	rule := filepath.Join(t.TempDir(), "rule.yaml")
	os.WriteFile(rule, []byte("scope: call:acme:standup\nresource_type: call\njoin_permission: join-call\n"), 0o600)
	c.ok("admissions", "put", rule)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	adm := usherv1.NewAdmissionServiceClient(conn)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	first, err := adm.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: "call:acme:standup"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := first.Recv()
		if err != nil {
			t.Fatalf("the first WatchCall: %v", err)
		}
		if m.GetEvent().GetKind() == usherv1.CallEventKind_CALL_EVENT_KIND_SYNCED {
			break
		}
	}
	second, err := adm.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: "call:acme:standup"})
	if err == nil {
		_, err = second.Recv()
	}
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("a second WatchCall past --max-call-watches 1: %v, want ResourceExhausted", err)
	}
	info := errorInfo(st)
	if info.GetReason() != "WATCH_LIMIT" || info.GetMetadata()["limit"] != "1" {
		t.Errorf("ErrorInfo %v, want WATCH_LIMIT with limit 1", info)
	}

	out, err := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "usher.db"),
		"--max-call-watches", "0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--max-call-watches 0: want at least 1") {
		t.Errorf("usher serve --max-call-watches 0: %v\n%s", err, out)
	}
}

// usher serve --max-call-watches-per-caller and --max-watches-per-caller
// bound the streams one caller of the callers file holds: past its share,
// a caller is refused with CALLER_WATCH_LIMIT and its limit, while another
// caller still watches.
func TestServeBoundsEachCallersWatches(t *testing.T) {
	bin, addr, tokenA, tokenB := twoSidecars(t, nil, "--max-call-watches-per-caller", "1", "--max-watches-per-caller", "1")
	dial := func(token string) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearerToken(token)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	connA, connB := dial(tokenA), dial(tokenB)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// wantCallerRefused fails the test unless err refuses sidecar-a its
	// second stream.
	wantCallerRefused := func(what string, err error) {
		t.Helper()
		st, _ := status.FromError(err)
		if st.Code() != codes.ResourceExhausted {
			t.Fatalf("sidecar-a's second %s: %v, want ResourceExhausted", what, err)
		}
		info := errorInfo(st)
		if info.GetReason() != "CALLER_WATCH_LIMIT" || info.GetMetadata()["limit"] != "1" || info.GetMetadata()["caller"] != "sidecar-a" {
			t.Errorf("sidecar-a's second %s: ErrorInfo %v, want CALLER_WATCH_LIMIT with limit 1 and caller sidecar-a", what, info)
		}
	}

	watchCall := func(conn *grpc.ClientConn) error {
		stream, err := usherv1.NewAdmissionServiceClient(conn).WatchCall(ctx, &usherv1.WatchCallRequest{Resource: "call:acme:standup"})
		if err == nil {
			_, err = stream.Recv()
		}
		return err
	}
	if err := watchCall(connA); err != nil {
		t.Fatalf("sidecar-a's first WatchCall: %v", err)
	}
	wantCallerRefused("WatchCall", watchCall(connA))
	if err := watchCall(connB); err != nil {
		t.Fatalf("sidecar-b's WatchCall beside sidecar-a's: %v", err)
	}

	watch := func(conn *grpc.ClientConn) error {
		stream, err := usherv1.NewAuthorizationServiceClient(conn).Watch(ctx, &usherv1.WatchRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		return err
	}
	if err := watch(connA); err != nil {
		t.Fatalf("sidecar-a's first Watch: %v", err)
	}
	wantCallerRefused("Watch", watch(connA))
	if err := watch(connB); err != nil {
		t.Fatalf("sidecar-b's Watch beside sidecar-a's: %v", err)
	}

	for _, flag := range []string{"--max-watches-per-caller", "--max-call-watches-per-caller"} {
		out, err := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "usher.db"),
			flag, "-1").CombinedOutput()
		if want := flag + " -1: want"; err == nil || !strings.Contains(string(out), want) {
			t.Errorf("usher serve %s -1: %v\n%s\nwant it refused, saying %q", flag, err, out, want)
		}
	}
}

// errorInfo is the ErrorInfo among st's details, or nil.
func errorInfo(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			return i
		}
	}
	return nil
}

// twoSidecars serves with a callers file of an admin caller and two check
// callers, sidecar-a and sidecar-b, and the flags more, a call
// call:acme:standup in account:acme under an admission rule, and the
// platform's writes of setup (the arguments of usher commands) after
// that; it returns the usher binary, where the server listens and the
// sidecars' tokens.
func twoSidecars(t *testing.T, setup [][]string, more ...string) (bin, addr, tokenA, tokenB string) {
	t.Helper()
	bin, dir := buildUsher(t)
	adminToken, adminHash := tokenOf(t, bin)
	tokenA, hashA := tokenOf(t, bin)
	tokenB, hashB := tokenOf(t, bin)
	callers := filepath.Join(dir, "callers.yaml")
	testpki.WriteFile(t, callers, fmt.Appendf(nil, `callers:
  - {name: backend, kind: admin, token_sha256: %s}
  - {name: sidecar-a, kind: check, token_sha256: %s}
  - {name: sidecar-b, kind: check, token_sha256: %s}
`, adminHash, hashA, hashB))
	addr, _ = startServe(t, bin, append([]string{"--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db"), "--callers", callers}, more...)...)
	usher := cliAgainst(t, bin, addr)
	rule := filepath.Join(dir, "rule.yaml")
	testpki.WriteFile(t, rule, []byte("scope: call:acme:standup\nresource_type: call\njoin_permission: join-call\n"))
	for _, args := range append([][]string{
		{"resources", "put", "account:acme"},
		{"resources", "put", "call:acme:standup", "--parent", "account:acme"},
		{"admissions", "put", rule},
	}, setup...) {
		if code, _, stderr := usher(append(args, "--token", adminToken)...); code != exitOK {
			t.Fatalf("usher %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
	}
	return bin, addr, tokenA, tokenB
}
