package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// usher serve --max-sessions-per-caller bounds the live sessions and
// knocks one caller of the callers file holds: past its share, a caller's
// Join is refused with CALLER_SESSION_LIMIT, its limit and what it holds,
// while another caller still joins.
func TestServeBoundsEachCallersSessions(t *testing.T) {
	bin, addr, tokenA, tokenB := twoSidecars(t, [][]string{
		{"grant", "user:a", "host", "call:acme:standup"},
		{"grant", "user:b", "host", "call:acme:standup"},
	}, "--max-sessions-per-caller", "1")
	join := func(token, subject string) (*usherv1.JoinResponse, error) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearerToken(token)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		return usherv1.NewAdmissionServiceClient(conn).Join(ctx, &usherv1.JoinRequest{Subject: subject, Resource: "call:acme:standup"})
	}
	if r, err := join(tokenA, "user:a"); err != nil || r.GetOutcome() != usherv1.Outcome_OUTCOME_ADMITTED {
		t.Fatalf("sidecar-a's first Join = %v, %v", r, err)
	}
	_, err := join(tokenA, "user:b")
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("sidecar-a's second Join: %v, want ResourceExhausted", err)
	}
	info := errorInfo(st)
	if md := info.GetMetadata(); info.GetReason() != "CALLER_SESSION_LIMIT" || md["caller"] != "sidecar-a" || md["limit"] != "1" || md["held"] != "1" {
		t.Errorf("sidecar-a's second Join: ErrorInfo %v, want CALLER_SESSION_LIMIT naming sidecar-a, limit 1 and held 1", info)
	}
	if r, err := join(tokenB, "user:b"); err != nil || r.GetOutcome() != usherv1.Outcome_OUTCOME_ADMITTED {
		t.Errorf("sidecar-b's Join beside sidecar-a's = %v, %v", r, err)
	}

	out, err := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "usher.db"),
		"--max-sessions-per-caller", "-1").CombinedOutput()
	if want := "--max-sessions-per-caller -1: want"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("usher serve --max-sessions-per-caller -1: %v\n%s\nwant it refused, saying %q", err, out, want)
	}
}

// usher serve refuses a share of the sessions larger than the sessions
// themselves, and a bound of none, naming the flag and its value, before
// it opens anything: a later flag it would refuse (--policy-mode) is not
// reached.
func TestServeRefusesASessionShareOutOfBounds(t *testing.T) {
	// Every case also names a --policy-mode serve refuses after it has
	// read the bounds: a serve that takes the bounds stops there rather
	// than serve, and says so.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-sessions", "10", "--max-sessions-per-caller", "11"}, "--max-sessions-per-caller 11: want at most --max-sessions (10)"},
		{[]string{"--max-sessions-per-caller", "1000001"}, "--max-sessions-per-caller 1000001: want at most --max-sessions (1000000)"},
		{[]string{"--max-sessions", "0"}, "--max-sessions 0: want at least 1"},
		{[]string{"--max-sessions", "-3", "--max-sessions-per-caller", "1"}, "--max-sessions -3: want at least 1"},
	} {
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "usher.db"),
			"--policy-mode", "no-such-mode"}, tc.args...)
		_, err := runIn(args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("usher %s: %v; want it refused, saying %q", strings.Join(args, " "), err, tc.want)
		}
	}
	for _, args := range [][]string{
		{"--max-sessions", "10", "--max-sessions-per-caller", "10"},
		{"--max-sessions", "10", "--max-sessions-per-caller", "0"},
	} {
		all := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "usher.db"),
			"--policy-mode", "no-such-mode"}, args...)
		if _, err := runIn(all...); err == nil || !strings.Contains(err.Error(), "no-such-mode") {
			t.Errorf("usher %s: %v; want the share taken, and --policy-mode refused", strings.Join(all, " "), err)
		}
	}
}
