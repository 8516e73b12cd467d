package server

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/usher-authz/usher/authz"
)

// Limits of grpc.health.v1, which answers without credentials.
const (
	// MaxHealthServiceLen is the longest service name a health Check or
	// Watch may ask about, in bytes: well above any gRPC service name.
	MaxHealthServiceLen = 256
	// MaxHealthWatches is the most health Watch streams open at once.
	MaxHealthWatches = 1024
	// MaxHealthWatchesPerConn is the most health Watch streams one
	// connection holds at once. A health Watch needs no credentials, so
	// the connection stands for its caller: a client's health checking
	// watches one service on each connection it keeps, and four leave
	// room to spare. One peer's share of MaxHealthWatches follows from the
	// connections it may hold (ConnLimits.MaxConnsPerPeer): 256, a
	// quarter, at the defaults.
	MaxHealthWatchesPerConn = 4
)

// boundedHealth is grpc-go's health service with what a caller without
// credentials can make it hold bounded: the name it asks about, which a
// Watch keeps for as long as its stream lasts, and the Watch streams open
// at once, on the server and on each connection. A Watch ends when the
// server drains, having said NOT_SERVING, so that a client's health
// checking does not hold a stopping server until its drain runs out.
type boundedHealth struct {
	*health.Server
	maxWatches int
	watching   atomic.Int64
	perConn    *streamShares   // by connection
	drained    context.Context // done once the server drains
}

func newBoundedHealth(s *health.Server, drained context.Context) *boundedHealth {
	return &boundedHealth{Server: s, maxWatches: MaxHealthWatches, perConn: newStreamShares(MaxHealthWatchesPerConn), drained: drained}
}

func (h *boundedHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if err := healthService(req.GetService()); err != nil {
		return nil, err
	}
	return h.Server.Check(ctx, req)
}

func (h *boundedHealth) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	if err := healthService(req.GetService()); err != nil {
		return err
	}
	share, ok := h.perConn.take(connection(stream.Context()))
	if !ok {
		return refuse(codes.ResourceExhausted,
			fmt.Sprintf("too many health Watch streams on this connection: one connection holds at most %d at once; use Check, or end one of them", h.perConn.limit),
			details{reason: reasonConnectionWatchLimit, meta: map[string]string{"limit": strconv.Itoa(h.perConn.limit)},
				why: fmt.Sprintf("one connection holds at most %d health Watch streams at once", h.perConn.limit)})
	}
	defer share()
	if n := h.watching.Add(1); n > int64(h.maxWatches) {
		h.watching.Add(-1)
		return refuse(codes.ResourceExhausted,
			fmt.Sprintf("too many health Watch streams: this server holds at most %d at once; use Check, or watch again later", h.maxWatches),
			details{reason: string(authz.KindWatchLimit), meta: map[string]string{"limit": strconv.Itoa(h.maxWatches)},
				why: fmt.Sprintf("this server holds at most %d health Watch streams at once", h.maxWatches)})
	}
	defer h.watching.Add(-1)
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(h.drained, cancel)
	defer stop()
	told := &toldStream{ServerStreamingServer: stream, ctx: ctx}
	err := h.Server.Watch(req, told)
	if stream.Context().Err() != nil || h.drained.Err() == nil {
		return err
	}
	if told.last != healthpb.HealthCheckResponse_NOT_SERVING {
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}); err != nil {
			return err
		}
	}
	return shuttingDown("watch the health of another server", nil)
}

// toldStream is a health Watch's stream, ended by its own ctx, that
// remembers the last status it sent.
type toldStream struct {
	grpc.ServerStreamingServer[healthpb.HealthCheckResponse]
	ctx  context.Context
	last healthpb.HealthCheckResponse_ServingStatus
}

func (s *toldStream) Context() context.Context { return s.ctx }

func (s *toldStream) Send(m *healthpb.HealthCheckResponse) error {
	s.last = m.GetStatus()
	return s.ServerStreamingServer.Send(m)
}

// connection names the connection a call came on: its two ends, which no
// other connection open at the same time shares.
func connection(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if p.LocalAddr == nil {
		return p.Addr.String()
	}
	return p.LocalAddr.String() + " " + p.Addr.String()
}

// healthService refuses a service name longer than MaxHealthServiceLen.
func healthService(name string) error {
	if len(name) <= MaxHealthServiceLen {
		return nil
	}
	return toStatus(&authz.Error{Code: authz.Invalid, Field: "service", Value: clip(name),
		Reason: fmt.Sprintf("longer than %d bytes, the longest service name the health service answers for", MaxHealthServiceLen)})
}
