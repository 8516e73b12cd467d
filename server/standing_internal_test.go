package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// A stream's caller is looked at again by the stream's own next send, not
// only by the watcher that endRevoked starts beside it: once the callers
// file has been replaced, nothing more is sent to a caller it removed,
// however late the watcher runs. None runs here.
func TestASendAfterTheCallersAreReplacedLooksAtThemItself(t *testing.T) {
	token := "a-token-of-ops"
	sum := sha256.Sum256([]byte(token))
	file := filepath.Join(t.TempDir(), "callers.yaml")
	write := func(yaml string) {
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("callers:\n  - {name: ops, kind: admin, token_sha256: " + hex.EncodeToString(sum[:]) + "}\n")
	src, err := NewCallerSource(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	open := func() *standing {
		ctx := grpc.NewContextWithServerTransportStream(
			metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "bearer "+token)),
			methodStream("/"+usherv1.AuthorizationService_ServiceDesc.ServiceName+"/Watch"))
		ctx, cancel := context.WithCancelCause(ctx)
		t.Cleanup(func() { cancel(nil) })
		return newStanding(authenticator{src: src}, ctx, cancel)
	}
	admitted, late := open(), open()
	if err := admitted.look(); err != nil {
		t.Fatalf("the first send of a caller in the callers file: %v", err)
	}

	// late was authenticated under the callers before, and is first
	// looked at after they are replaced.
	other := sha256.Sum256([]byte("a-token-of-backend"))
	write("callers:\n  - {name: backend, kind: admin, token_sha256: " + hex.EncodeToString(other[:]) + "}\n")
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*standing{"a stream looked at before": admitted, "a stream not yet looked at": late} {
		err := s.look()
		if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != "the bearer token matches no caller" {
			t.Errorf("%s: the next send after its caller was removed = %v; want Unauthenticated, the bearer token matches no caller", name, err)
		}
		var r revoked
		if !errors.As(context.Cause(s.ctx), &r) {
			t.Errorf("%s: its context ends with %v; want the refusal, for the handler to return", name, context.Cause(s.ctx))
		}
		if again := s.look(); !errors.Is(again, err) {
			t.Errorf("%s: the send after = %v; want the same refusal", name, again)
		}
	}
}
