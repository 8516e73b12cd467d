package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// BenchmarkInterceptors runs a call through the interceptors New installs,
// logging at info level as `usher serve` does by default, without and with
// metrics, around a handler that answers at once: what the chain costs a
// Check, and a refusal. chainUnary's two closures per call are gRPC's own
// chaining's, not the interceptors'.
func BenchmarkInterceptors(b *testing.B) {
	b.Run("default", func(b *testing.B) { benchmarkChain(b, nil) })
	b.Run("metrics", func(b *testing.B) { benchmarkChain(b, []grpc.ServerOption{WithMetrics(NewMetrics())}) })
}

func benchmarkChain(b *testing.B, opts []grpc.ServerOption) {
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	unary, _ := interceptors(logger, opts)
	chain := chainUnary(unary)
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}})
	info := &grpc.UnaryServerInfo{FullMethod: "/usher.v1.AuthorizationService/Check"}
	resp := new(int)
	ok := func(context.Context, any) (any, error) { return resp, nil }
	refused := func(context.Context, any) (any, error) { return nil, status.Error(codes.InvalidArgument, "bad") }
	b.Run("ok", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = chain(ctx, resp, info, ok)
		}
	})
	b.Run("refused", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = chain(ctx, resp, info, refused)
		}
	})
}

// chainUnary chains interceptors the way grpc.ChainUnaryInterceptor does.
func chainUnary(is []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		next := h
		for i := len(is) - 1; i >= 0; i-- {
			in, n := is[i], next
			next = func(ctx context.Context, req any) (any, error) { return in(ctx, req, info, n) }
		}
		return next(ctx, req)
	}
}

// BenchmarkAuthenticatedCall runs a Check by a check caller with a bearer
// token through what New registers with a callers file: the method's
// handler, which identifies the caller before the request is decoded, and
// the interceptors around the answer.
func BenchmarkAuthenticatedCall(b *testing.B) {
	const token = "a-check-callers-token"
	sum := sha256.Sum256([]byte(token))
	file := filepath.Join(b.TempDir(), "callers.yaml")
	body := "callers:\n  - {name: sidecar, kind: check, token_sha256: " + hex.EncodeToString(sum[:]) + "}\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	src, err := NewCallerSource(file, logger)
	if err != nil {
		b.Fatal(err)
	}
	unary, _ := interceptors(logger, []grpc.ServerOption{WithCallers(src)})
	chain := chainUnary(unary)
	desc := authenticator{src: src}.decodeAfterAuthentication(&usherv1.AuthorizationService_ServiceDesc)
	i := slices.IndexFunc(desc.Methods, func(m grpc.MethodDesc) bool { return m.MethodName == "Check" })
	handler := desc.Methods[i].Handler
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "bearer "+token))
	ctx = grpc.NewContextWithServerTransportStream(ctx, methodStream("/usher.v1.AuthorizationService/Check"))
	srv := answering{}
	dec := func(any) error { return nil }
	if _, err := handler(srv, ctx, dec, chain); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = handler(srv, ctx, dec, chain)
	}
}

// answering answers every Check at once.
type answering struct {
	usherv1.UnimplementedAuthorizationServiceServer
}

func (answering) Check(context.Context, *usherv1.CheckRequest) (*usherv1.CheckResponse, error) {
	return &usherv1.CheckResponse{}, nil
}

// methodStream is the transport stream of a call to its method, as far as
// grpc.Method reads it.
type methodStream string

func (s methodStream) Method() string             { return string(s) }
func (methodStream) SetHeader(metadata.MD) error  { return nil }
func (methodStream) SendHeader(metadata.MD) error { return nil }
func (methodStream) SetTrailer(metadata.MD) error { return nil }
