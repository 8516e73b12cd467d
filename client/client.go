package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	_ "github.com/usher-authz/usher/internal/codec" // gRPC's "proto" codec, through vtproto's code
)

// Client is a connection to an Usher server (or a load-balanced set of
// them) and the generated clients of its services. It is safe for
// concurrent use; make one per process and share it.
type Client struct {
	// Authorization answers checks and streams changes; check callers
	// may call it.
	Authorization usherv1.AuthorizationServiceClient
	// Admin writes and reads the model; it needs an admin caller.
	Admin usherv1.AdminServiceClient
	// Admission decides joins and keeps sessions; check callers may
	// call it.
	Admission usherv1.AdmissionServiceClient

	conn *grpc.ClientConn
}

// The connection's defaults, which WithDialOptions may override.
const (
	// KeepaliveTime is how long a connection may be silent before the
	// client pings the server, to find a dead connection before a call
	// does. A server sends GOAWAY to a client that pings more often than
	// its minimum interval (10s by default, `usher serve`
	// --keepalive-min-time), so this stays well above it.
	KeepaliveTime = 30 * time.Second
	// KeepaliveTimeout is how long the client waits for a ping's answer
	// before it closes the connection.
	KeepaliveTimeout = 10 * time.Second
	// MaxReceiveSize is the largest response message the client reads:
	// above gRPC's 4 MiB, for the pages of ExportPolicy and ListChanges.
	MaxReceiveSize = 64 << 20
)

// readRetries makes gRPC retry the AuthorizationService's reads when the
// server was unavailable (a rolling restart, a connection cut): they
// change nothing, so a retry is always safe. Writes are never retried.
const readRetries = `{"methodConfig": [{
	"name": [
		{"service": "usher.v1.AuthorizationService", "method": "Check"},
		{"service": "usher.v1.AuthorizationService", "method": "CheckBatch"},
		{"service": "usher.v1.AuthorizationService", "method": "ListPermissions"},
		{"service": "usher.v1.AuthorizationService", "method": "LookupResources"},
		{"service": "usher.v1.AuthorizationService", "method": "LookupSubjects"},
		{"service": "usher.v1.AuthorizationService", "method": "GetRevision"}
	],
	"retryPolicy": {
		"maxAttempts": 3,
		"initialBackoff": "0.05s",
		"maxBackoff": "0.5s",
		"backoffMultiplier": 2,
		"retryableStatusCodes": ["UNAVAILABLE"]
	}
}]}`

// New returns a client of the Usher server at target, a gRPC target such
// as "usher.internal:7070" or "dns:///usher.internal:7070". Like
// grpc.NewClient it does not connect: the first call does, and a server
// that cannot be reached fails that call with Unavailable.
//
// The transport is TLS with WithTLS or WithTLSConfig, and plaintext
// otherwise, which New allows only to a loopback address or a Unix socket
// unless WithInsecure says the network is trusted (a service mesh that
// encrypts it, say): a bearer token never crosses a network in plaintext
// by accident.
func New(target string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	dial, err := o.dialOptions(target)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("usher client for %s: %w", target, err)
	}
	cc := errorConn{conn}
	return &Client{
		Authorization: usherv1.NewAuthorizationServiceClient(cc),
		Admin:         usherv1.NewAdminServiceClient(cc),
		Admission:     usherv1.NewAdmissionServiceClient(cc),
		conn:          conn,
	}, nil
}

// defaultDialOptions are what every connection starts from.
func defaultDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                KeepaliveTime,
			Timeout:             KeepaliveTimeout,
			PermitWithoutStream: true, // the server allows it, and a sidecar's next Check should not find the dead connection
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxReceiveSize)),
		grpc.WithDefaultServiceConfig(readRetries),
	}
}

// Conn is the underlying connection, for other services on the same server
// (grpc.health.v1, reflection). Their errors are plain gRPC statuses;
// FromError reads their details.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection; calls in flight fail with Canceled.
func (c *Client) Close() error { return c.conn.Close() }

// errorConn makes every error of a call on the connection an *Error, so
// that errors.As works on what the generated clients return.
type errorConn struct {
	grpc.ClientConnInterface
}

func (c errorConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return convert(c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...))
}

func (c errorConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := c.ClientConnInterface.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, convert(err)
	}
	return errorStream{s}, nil
}

// errorStream converts a stream's errors; io.EOF, the end of a stream that
// finished without error, stays io.EOF.
type errorStream struct {
	grpc.ClientStream
}

func (s errorStream) SendMsg(m any) error {
	return convertStreamErr(s.ClientStream.SendMsg(m))
}

func (s errorStream) RecvMsg(m any) error {
	return convertStreamErr(s.ClientStream.RecvMsg(m))
}

func (s errorStream) CloseSend() error {
	return convertStreamErr(s.ClientStream.CloseSend())
}

func convertStreamErr(err error) error {
	if errors.Is(err, io.EOF) {
		return err
	}
	return convert(err)
}
