package main

import (
	"context"
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
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info.GetReason() != "WATCH_LIMIT" || info.GetMetadata()["limit"] != "1" {
		t.Errorf("ErrorInfo %v, want WATCH_LIMIT with limit 1", info)
	}

	out, err := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "usher.db"),
		"--max-call-watches", "0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--max-call-watches 0: want at least 1") {
		t.Errorf("usher serve --max-call-watches 0: %v\n%s", err, out)
	}
}
