package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// New returns a gRPC server with Usher's services, grpc.health.v1 and server
// reflection registered, logging and panic recovery installed, reading
// requests of at most MaxMessageSize bytes (an option in opts may change
// it). With WithCallers among opts, it authenticates callers; without,
// every caller is anonymous and may call everything.
func New(engine *authz.Engine, logger *slog.Logger, opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageSize)}, opts...)
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(callLevel),
	}
	recoverOpts := []recovery.Option{
		recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
			logger.ErrorContext(ctx, "handler panicked", "panic", p)
			return status.Errorf(codes.Internal, "internal error")
		}),
	}
	// Logging comes first so that it sees, and logs, the calls that
	// authentication refuses.
	unary := []grpc.UnaryServerInterceptor{
		logging.UnaryServerInterceptor(slogLogger(logger), logOpts...),
		recovery.UnaryServerInterceptor(recoverOpts...),
	}
	stream := []grpc.StreamServerInterceptor{
		logging.StreamServerInterceptor(slogLogger(logger), logOpts...),
		recovery.StreamServerInterceptor(recoverOpts...),
	}
	for _, o := range opts {
		if c, ok := o.(callersOption); ok && c.src != nil {
			authFunc := authenticator{src: c.src}.authenticate
			unary = append(unary, auth.UnaryServerInterceptor(authFunc))
			stream = append(stream, auth.StreamServerInterceptor(authFunc))
		}
	}
	opts = append(opts, grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))
	s := grpc.NewServer(opts...)
	usherv1.RegisterAuthorizationServiceServer(s, &authorizationServer{engine: engine})
	usherv1.RegisterAdminServiceServer(s, &adminServer{engine: engine, backup: backupSource(opts)})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(usherv1.AuthorizationService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(usherv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}

// callLevel keeps successful calls, the hot path among them, at debug level
// and logs refusals and failures.
func callLevel(code codes.Code) logging.Level {
	switch code {
	case codes.OK:
		return logging.LevelDebug
	case codes.Internal, codes.Unavailable, codes.DataLoss, codes.Unknown:
		return logging.LevelError
	default:
		return logging.LevelInfo
	}
}

func slogLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// callerOf names the caller of a request for the change log: the
// authenticated caller, or "anonymous" when the server has no callers file.
func callerOf(ctx context.Context) string {
	if c, ok := ctx.Value(callerKey{}).(Caller); ok {
		return c.Name
	}
	return "anonymous"
}

// await waits until the index reaches a read's min_revision (0: no wait). It
// stops waiting a little before the caller's deadline, so that the
// FAILED_PRECONDITION saying the revision was not reached arrives before the
// caller's own deadline fires and hides it behind DEADLINE_EXCEEDED.
func await(ctx context.Context, e *authz.Engine, rev uint64) error {
	if rev == 0 {
		return nil
	}
	if deadline, ok := ctx.Deadline(); ok {
		margin := min(time.Until(deadline)/10, 100*time.Millisecond)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-margin))
		defer cancel()
	}
	return toStatus(e.Await(ctx, authz.Revision(rev)))
}
