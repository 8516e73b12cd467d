package server

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// ConnLimits bounds what clients may make the server hold before any of
// their calls is authenticated: connections, streams, headers, the bytes
// of requests still arriving, and time. Zero means no limit where a field
// says so; DefaultConnLimits gives every field a value.
type ConnLimits struct {
	// MaxConns is the most connections the server holds at once; one past
	// it is closed as soon as it is accepted, and logged. 0: no limit.
	// Apply lowers it to what the process's file-descriptor limit leaves
	// room for.
	MaxConns int
	// MaxConnsPerPeer is the most connections one peer may hold at once:
	// one IPv4 address, or one IPv6 /64. 0: no limit.
	MaxConnsPerPeer int
	// MaxStreams is the most calls one connection may have in flight
	// (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); grpc-go resets a stream
	// past it with REFUSED_STREAM, which clients retry. 0: no limit.
	MaxStreams uint32
	// MaxHeaderBytes is the largest header list a call may send, counted
	// as HTTP/2 counts it (each field's name and value plus 32 bytes).
	MaxHeaderBytes uint32
	// ReceiveBudget is the most bytes that requests still arriving may
	// hold, across all connections, beyond a small allowance per
	// connection; a connection that would pass it is not read until other
	// requests complete. 0: no limit.
	ReceiveBudget int64
	// SendBudget is the most bytes that answers handed to grpc-go and not
	// yet written may hold, across all connections, beyond 64 KiB each
	// connection may hold: a client that does not read its answers has
	// the server keep them. An answer that would pass it is refused with
	// RESOURCE_EXHAUSTED rather than kept. 0: no limit.
	SendBudget int64
	// RequestTimeout is how long a request may take to arrive in full,
	// from its headers, before its connection is closed. 0: no limit.
	RequestTimeout time.Duration
	// HandshakeTimeout bounds a new connection's TLS handshake and HTTP/2
	// preface (grpc.ConnectionTimeout).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection with no call in flight for that
	// long, with a GOAWAY, so that clients reconnect when they next call
	// (keepalive.ServerParameters.MaxConnectionIdle). 0: never.
	IdleTimeout time.Duration
	// KeepaliveTime is how long a connection may be silent before the
	// server pings it, and KeepaliveTimeout how long the server then waits
	// for an answer before closing it (keepalive.ServerParameters).
	KeepaliveTime, KeepaliveTimeout time.Duration
	// KeepaliveMinTime is the shortest interval between a client's pings;
	// a client pinging more often is sent GOAWAY and disconnected
	// (keepalive.EnforcementPolicy). Pings without calls in flight are
	// allowed.
	KeepaliveMinTime time.Duration
	// StreamWindow and ConnWindow are the fixed HTTP/2 flow-control
	// windows of each stream and connection, at least 65,535 bytes. grpc-go
	// would otherwise grow them, up to 16 MiB, from its bandwidth
	// estimates.
	StreamWindow, ConnWindow int32
}

// DefaultConnLimits are the limits `usher serve` applies unless told
// otherwise.
func DefaultConnLimits() ConnLimits {
	return ConnLimits{
		MaxConns:         4096,
		MaxConnsPerPeer:  64,
		MaxStreams:       100,
		MaxHeaderBytes:   8 << 10,
		ReceiveBudget:    64 << 20,
		SendBudget:       64 << 20,
		RequestTimeout:   10 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		IdleTimeout:      5 * time.Minute,
		KeepaliveTime:    time.Minute,
		KeepaliveTimeout: 20 * time.Second,
		KeepaliveMinTime: 10 * time.Second,
		StreamWindow:     64 << 10,
		ConnWindow:       1 << 20,
	}
}

// minWindow is the smallest window grpc-go applies; it ignores smaller ones.
const minWindow = 65535

// LimitError is a limit Validate refuses: the field, its value, and what
// is wrong with it.
type LimitError struct {
	Field, Value, Problem string
}

func (e *LimitError) Error() string { return e.Field + " " + e.Value + ": " + e.Problem }

// Validate refuses negative limits, and values grpc-go would ignore or
// misread, naming the field and the value (a *LimitError).
func (l ConnLimits) Validate() error {
	for _, f := range []struct {
		name  string
		value int64
		min   int64
	}{
		{"MaxConns", int64(l.MaxConns), 0},
		{"MaxConnsPerPeer", int64(l.MaxConnsPerPeer), 0},
		{"MaxHeaderBytes", int64(l.MaxHeaderBytes), 1024},
		{"ReceiveBudget", l.ReceiveBudget, 0},
		{"SendBudget", l.SendBudget, 0},
		{"StreamWindow", int64(l.StreamWindow), minWindow},
		{"ConnWindow", int64(l.ConnWindow), minWindow},
	} {
		if f.value < f.min {
			return &LimitError{Field: f.name, Value: fmt.Sprint(f.value), Problem: fmt.Sprintf("must be at least %d", f.min)}
		}
	}
	if l.ReceiveBudget > 0 && l.ReceiveBudget < MaxMessageSize {
		return &LimitError{Field: "ReceiveBudget", Value: fmt.Sprint(l.ReceiveBudget),
			Problem: fmt.Sprintf("must be 0 (no limit) or at least the largest request message, %d bytes, which could never arrive otherwise", MaxMessageSize)}
	}
	for _, f := range []struct {
		name     string
		value    time.Duration
		positive bool // zero is not "no limit" here: grpc-go reads it otherwise
	}{
		{"RequestTimeout", l.RequestTimeout, false},
		{"HandshakeTimeout", l.HandshakeTimeout, true},
		{"IdleTimeout", l.IdleTimeout, false},
		{"KeepaliveTime", l.KeepaliveTime, true},
		{"KeepaliveTimeout", l.KeepaliveTimeout, true},
		{"KeepaliveMinTime", l.KeepaliveMinTime, true},
	} {
		switch {
		case f.value < 0:
			return &LimitError{Field: f.name, Value: f.value.String(), Problem: "must not be negative"}
		case f.value == 0 && f.positive:
			return &LimitError{Field: f.name, Value: f.value.String(), Problem: "must be positive"}
		}
	}
	return nil
}

// fdReserve is the file descriptors kept free of client connections, for
// the data file, the listeners, logs, backups, the metrics listener's
// connections (MaxMetricsConns) and the connections accepted only to be
// refused.
const fdReserve = 64

// Apply returns lis wrapped to enforce MaxConns and MaxConnsPerPeer, and
// the server options that enforce the rest for connections secured by creds
// (nil for plaintext). The options include grpc.Creds: pass them to New in
// its place. Refusals are logged to logger at warn level, a few lines a
// second of each kind at most.
func (l ConnLimits) Apply(lis net.Listener, creds credentials.TransportCredentials, logger *slog.Logger) (net.Listener, []grpc.ServerOption) {
	refusals := newRefusalLog(logger)
	maxConns := l.MaxConns
	if fds, ok := fdLimit(); ok {
		switch room := roomForConns(fds); {
		case maxConns == 0:
			maxConns = room
		case maxConns > room:
			logger.Warn("the file-descriptor limit leaves room for fewer connections than MaxConns: holding fewer",
				"max_conns", l.MaxConns, "fd_limit", fds, "holding_at_most", room)
			maxConns = room
		}
	}
	if maxConns > 0 || l.MaxConnsPerPeer > 0 {
		lis = newLimitListener(lis, maxConns, l.MaxConnsPerPeer, refusals)
	}
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	budget := newReceiveBudget(l.ReceiveBudget, int64(l.MaxHeaderBytes), l.RequestTimeout, refusals)
	var sent *sendBudget
	if l.SendBudget > 0 {
		sent = newSendBudget(l.SendBudget, refusals)
	}
	opts := []grpc.ServerOption{
		grpc.Creds(meteredCreds{TransportCredentials: creds, b: budget, sent: sent}),
		grpc.MaxHeaderListSize(l.MaxHeaderBytes),
		grpc.ConnectionTimeout(l.HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: l.IdleTimeout,
			Time:              l.KeepaliveTime,
			Timeout:           l.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             l.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.StaticStreamWindowSize(l.StreamWindow),
		grpc.StaticConnWindowSize(l.ConnWindow),
		// meteredConn buffers what it reads; a second buffer in grpc-go
		// would pin 32 KiB more per connection, idle ones included.
		grpc.ReadBufferSize(0),
	}
	if l.MaxStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(l.MaxStreams))
	}
	if sent != nil {
		opts = append(opts, sendBudgetOption{b: sent})
	}
	return lis, opts
}

// roomForConns is how many client connections fit under a file-descriptor
// limit of fds, keeping fdReserve free, or half of them under a tiny limit.
func roomForConns(fds uint64) int {
	if fds <= 2*fdReserve {
		return int(fds / 2)
	}
	return int(min(fds-fdReserve, 1<<30))
}
