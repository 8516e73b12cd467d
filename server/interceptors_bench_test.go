package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
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
