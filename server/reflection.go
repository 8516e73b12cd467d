package server

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
)

// Limits of server reflection's streams. A reflection stream is a
// conversation that lasts for as long as its client keeps it open, asking
// or not, and holds a handler and its buffers on the server all that time
// (some 13 KiB): without a bound, the streams every connection may carry
// (--max-streams) would all stay open. grpcurl opens one for each call it
// makes and closes it; grpcui and the like keep one on their connection.
const (
	// MaxReflectionStreams is the most server reflection streams open at
	// once.
	MaxReflectionStreams = 1024
	// MaxReflectionStreamsPerConn is the most server reflection streams
	// one connection holds at once. Without a callers file, and for a
	// client with credentials as much as for one without, the connection
	// stands for its client, so one peer's share of MaxReflectionStreams
	// follows from the connections it may hold (ConnLimits.MaxConnsPerPeer):
	// 256, a quarter, at the defaults.
	MaxReflectionStreamsPerConn = 4
)

// The reasons of a refused reflection stream: the server's streams, or
// the connection's.
const (
	reasonReflectionLimit           = "REFLECTION_LIMIT"
	reasonConnectionReflectionLimit = "CONNECTION_REFLECTION_LIMIT"
)

// boundedReflection counts the server reflection streams open, on the
// server and on each connection.
type boundedReflection struct {
	max     int
	open    atomic.Int64
	perConn *streamShares   // by connection
	drained context.Context // done once the server drains
}

// reflectionDrained ends a reflection stream when the server drains.
var reflectionDrained = shuttingDown("ask another server", nil)

// registerReflection registers server reflection, v1 and v1alpha, on s,
// their streams bounded together by MaxReflectionStreams and
// MaxReflectionStreamsPerConn, and ended UNAVAILABLE once drained is done:
// a client that keeps one open (grpcui and the like) does not keep a
// stopping server waiting until its drain runs out.
func registerReflection(s reflection.GRPCServer, drained context.Context) {
	r := &boundedReflection{max: MaxReflectionStreams, perConn: newStreamShares(MaxReflectionStreamsPerConn), drained: drained}
	reflection.Register(reflectionRegistrar{GRPCServer: s, r: r})
}

// reflectionRegistrar registers services on a server with each of their
// streams bounded by r; it tells reflection the server's services as the
// server does.
type reflectionRegistrar struct {
	reflection.GRPCServer
	r *boundedReflection
}

func (g reflectionRegistrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	d := *desc
	d.Streams = make([]grpc.StreamDesc, len(desc.Streams))
	for i, sd := range desc.Streams {
		handler := sd.Handler
		sd.Handler = func(srv any, stream grpc.ServerStream) error {
			release, err := g.r.admit(stream)
			if err != nil {
				return err
			}
			defer release()
			// Ending the HTTP/2 stream ends the handler's wait for the
			// client's next request.
			stop := context.AfterFunc(g.r.drained, func() { endStream(stream.Context(), reflectionDrained) })
			defer stop()
			return handler(srv, stream)
		}
		d.Streams[i] = sd
	}
	g.GRPCServer.RegisterService(&d, impl)
}

// admit counts a new stream in, against its connection's share and the
// server's streams, or refuses it; release counts it out.
func (r *boundedReflection) admit(stream grpc.ServerStream) (release func(), err error) {
	share, ok := r.perConn.take(connection(stream.Context()))
	if !ok {
		return nil, refuse(codes.ResourceExhausted,
			fmt.Sprintf("too many server reflection streams on this connection: one connection holds at most %d at once; end one of them", r.perConn.limit),
			details{reason: reasonConnectionReflectionLimit, meta: map[string]string{"limit": strconv.Itoa(r.perConn.limit)},
				why: fmt.Sprintf("one connection holds at most %d server reflection streams at once", r.perConn.limit)})
	}
	if n := r.open.Add(1); n > int64(r.max) {
		r.open.Add(-1)
		share()
		return nil, refuse(codes.ResourceExhausted,
			fmt.Sprintf("too many server reflection streams: this server holds at most %d at once; try again later", r.max),
			details{reason: reasonReflectionLimit, meta: map[string]string{"limit": strconv.Itoa(r.max)},
				why: fmt.Sprintf("this server holds at most %d server reflection streams at once", r.max)})
	}
	return func() { r.open.Add(-1); share() }, nil
}
