package server

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	_ "github.com/usher-authz/usher/internal/codec" // gRPC's "proto" codec, through vtproto's code
)

// Server is a gRPC server with Usher's services, and the health it reports:
// SERVING while its index follows the storage backend, NOT_SERVING while it
// rebuilds the index from a snapshot and from the moment it starts draining.
// AdminService, which writes, is NOT_SERVING too while the backend refuses
// every write until it is reopened, or is out of reach (a replica cut off
// from etcd); the rest keeps answering.
type Server struct {
	*grpc.Server
	health    *health.Server
	engine    *authz.Engine
	watches   *watches
	draining  atomic.Bool
	reach     *reach      // whether the backend is in reach, shared with Watch
	unreached atomic.Bool // the last look found the backend out of reach
	logger    *slog.Logger
	stop      chan struct{}
	once      sync.Once
	services  []string // the services whose health report follows serving

	callShares *streamShares // each caller's WatchCall streams; nil without the AdmissionService
}

// New returns a gRPC server with Usher's services, grpc.health.v1 and server
// reflection registered, logging and panic recovery installed, reading
// requests of at most MaxMessageSize bytes (an option in opts may change
// it). With WithCallers among opts, it authenticates callers, each of
// whom holds at most its share of the Watch and WatchCall streams
// (WithCallerShares); without, every caller is anonymous and may call
// everything. With WithEnvoy, it
// also serves Envoy's envoy.service.auth.v3.Authorization. WithMetrics,
// WithTracing and WithDecisionLog make it observable; without them, it pays
// nothing for them.
func New(engine *authz.Engine, logger *slog.Logger, opts ...grpc.ServerOption) *Server {
	// Calls run on a pool of goroutines that keep their grown stacks, rather
	// than on a new goroutine each whose stack grows again on every call:
	// on the hot path, that growth costs more than the check. The pool is
	// as large as the calls a busy server has in flight, since a call that
	// finds every worker busy gets a new goroutine after all.
	opts = append([]grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.NumStreamWorkers(uint32(max(256, 16*runtime.GOMAXPROCS(0))))}, opts...)
	unary, stream := interceptors(logger, opts)
	shares := callerShares(opts)
	opts = append(opts, grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))
	if h := tracing(opts, callerSource(opts)); h != nil {
		opts = append(opts, h)
	}
	gs := grpc.NewServer(opts...)
	s := &Server{Server: gs, health: health.NewServer(), engine: engine, watches: newWatches(watchLimits(opts), shares.Watches), stop: make(chan struct{}),
		services: []string{"", usherv1.AuthorizationService_ServiceDesc.ServiceName, usherv1.AdminService_ServiceDesc.ServiceName},
		reach:    &reach{engine: engine}, logger: logger}
	metrics := metricsOf(opts)
	decisionLog := decisionLogOf(opts)
	waits := newRevisionWaits(engine, waitingBytes(opts))
	az := &authorizationServer{engine: engine, waits: waits, serving: s.serving, watches: s.watches, reach: s.reach, decisionLog: decisionLog}
	if metrics != nil {
		az.checks, az.batchChecks = metrics.check, metrics.batch
	}
	// A compressed request, or one that would decode into many times its
	// size, is refused before it is decoded; with callers, a unary call's
	// request is decoded only once the call is authenticated.
	screened := screening{gs}
	register := screened.RegisterService
	if src := callerSource(opts); src != nil {
		a := authenticator{src: src}
		register = func(desc *grpc.ServiceDesc, impl any) {
			gs.RegisterService(a.decodeAfterAuthentication(screenRequests(desc)), impl)
		}
	}
	register(&usherv1.AuthorizationService_ServiceDesc, az)
	register(&usherv1.AdminService_ServiceDesc, &adminServer{engine: engine, waits: waits, backup: backupSource(opts), envoy: envoyService(opts)})
	sessions := admissionManager(opts)
	if sessions != nil {
		s.callShares = newStreamShares(shareOf(shares.CallWatches, sessions.MaxWatchers()))
		as := &admissionServer{m: sessions, waits: waits, drained: s.watches.drained.Done(), shares: s.callShares, log: decisionLog,
			initial: newStreamShares(shareOf(shares.CallInitialEvents, sessions.MaxInitialEvents())),
			paces:   newPaces(shareOf(shares.CallInitialRate, MaxInitialRate)), pacesAll: newPaces(MaxInitialRate)}
		if metrics != nil {
			as.joins = metrics.join
		}
		register(&usherv1.AdmissionService_ServiceDesc, as)
		s.services = append(s.services, usherv1.AdmissionService_ServiceDesc.ServiceName)
	}
	if e := envoyService(opts); e != nil {
		// The engine, not its index: the engine answers from the index in
		// place at each call, which a resync replaces.
		e.register(register, engine, metrics)
		s.services = append(s.services, authv3.Authorization_ServiceDesc.ServiceName)
	}
	healthpb.RegisterHealthServer(screened, newBoundedHealth(s.health, s.watches.drained))
	registerReflection(screened, s.watches.drained)
	if metrics != nil {
		metrics.attach(s, sessions, decisionLog)
	}
	s.report()
	go s.follow()
	go s.followReach()
	return s
}

// interceptors returns the interceptors New installs, outermost first:
// metrics when opts has them, logging, panic recovery, authentication
// when opts has callers, then the send budget when opts has one. Metrics
// and logging come before authentication so that they see, count and log,
// the calls that authentication refuses.
func interceptors(logger *slog.Logger, opts []grpc.ServerOption) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	recoverOpts := []recovery.Option{
		recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
			logger.ErrorContext(ctx, "handler panicked", "panic", p)
			return status.Errorf(codes.Internal, "internal error")
		}),
	}
	var unary []grpc.UnaryServerInterceptor
	var stream []grpc.StreamServerInterceptor
	if m := metricsOf(opts); m != nil {
		unary = append(unary, m.rpc.UnaryServerInterceptor())
		stream = append(stream, m.rpc.StreamServerInterceptor())
	}
	src := callerSource(opts)
	lines := newRefusedLines(src)
	unary = append(unary, unaryCallLog(logger, lines), recovery.UnaryServerInterceptor(recoverOpts...))
	stream = append(stream, streamCallLog(logger, lines), recovery.StreamServerInterceptor(recoverOpts...))
	if src != nil {
		a := authenticator{src: src}
		unary = append(unary, auth.UnaryServerInterceptor(a.authenticate))
		stream = append(stream, auth.StreamServerInterceptor(a.authenticate), a.endRevoked)
	}
	if b := sendBudgetOf(opts); b != nil {
		// Innermost, so that a refused answer is logged and counted as
		// the call's outcome.
		unary = append(unary, b.unaryInterceptor)
		stream = append(stream, b.streamInterceptor)
	}
	return unary, stream
}

// healthPoll is how often the server looks at its engine's state.
const healthPoll = 200 * time.Millisecond

// serving reports whether the server should be sent calls.
func (s *Server) serving() bool {
	return !s.draining.Load() && s.engine.State() == authz.Serving
}

// report sets every service's health from serving, and AdminService's
// from whether the backend takes writes as well.
func (s *Server) report() {
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if s.serving() {
		status = healthpb.HealthCheckResponse_SERVING
	}
	writes := status
	if s.engine.WritesStopped() != nil || s.unreached.Load() {
		writes = healthpb.HealthCheckResponse_NOT_SERVING
	}
	for _, name := range s.services {
		if name == usherv1.AdminService_ServiceDesc.ServiceName {
			s.health.SetServingStatus(name, writes)
			continue
		}
		s.health.SetServingStatus(name, status)
	}
}

// follow keeps the health current until the server stops.
func (s *Server) follow() {
	t := time.NewTicker(healthPoll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.report()
		case <-s.stop:
			return
		}
	}
}

// followReach looks, every reachEvery, whether the backend is in reach,
// until the server stops: a replica cut off from etcd refuses every write
// Unavailable until it is back, and says so in AdminService's health, so
// that a load balancer sends writes to another replica meanwhile. A look
// takes at most the commit timeout; the health of the other services is
// kept by follow meanwhile.
func (s *Server) followReach() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	t := time.NewTicker(reachEvery)
	defer t.Stop()
	for {
		err := s.reach.check(ctx)
		if ctx.Err() != nil {
			return
		}
		if was := s.unreached.Swap(err != nil); was != (err != nil) {
			if err != nil {
				s.logger.Warn("the storage backend is out of reach: writes are refused, and AdminService reports NOT_SERVING, until it is back", "error", err)
			} else {
				s.logger.Info("the storage backend is in reach again: writes are taken")
			}
			s.report()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// Drain reports NOT_SERVING from now on, so that load balancers send no new
// calls, while calls in flight and new ones still get answers. Watch and
// WatchCall streams are the exception: they end with UNAVAILABLE, for their
// clients to watch again elsewhere, and new ones are refused, since a
// stream never finishes by itself and would hold GracefulStop for ever.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.watches.drain()
	s.report()
}

// GracefulStop drains, then stops accepting and waits for calls in flight.
func (s *Server) GracefulStop() {
	s.Drain()
	s.once.Do(func() { close(s.stop) })
	s.Server.GracefulStop()
}

// Stop drains, then closes every connection at once.
func (s *Server) Stop() {
	s.Drain()
	s.once.Do(func() { close(s.stop) })
	s.Server.Stop()
}

// callerOf names the caller of a request for the change log: the
// authenticated caller, or "anonymous" when the server has no callers file.
func callerOf(ctx context.Context) string {
	if c, ok := callerIn(ctx); ok {
		return c.Name
	}
	return "anonymous"
}

// callerIn is the authenticated caller of a request, if it has one.
func callerIn(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}
