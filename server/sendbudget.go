package server

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
)

// Why the server counts the bytes of its answers too:
//
// grpc-go queues an answer for its connection's writer and ends the call;
// the writer sends it as the client's HTTP/2 windows allow, and keeps it,
// and the stream with it, until they do. A client that never opens its
// windows (SETTINGS_INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE) or never reads
// its socket, and answers pings, has the server keep every answer for as
// long as the connection lasts: 100 streams of CheckBatch answers of 1 MB
// on each connection, some 6 GB from one peer's 64 connections. Nothing
// in grpc-go bounds it: a stream's write quota holds up only its second
// message, and a unary call sends one.
//
// So each answer is counted, by its size on the wire, against its
// connection when a call hands it to grpc-go, and counted off as the
// connection writes the DATA frames that carry it (meteredConn sees them).
// A connection may hold sendAllowance bytes without drawing on the budget;
// beyond that, an answer that does not fit in what the budget has left is
// refused with RESOURCE_EXHAUSTED instead of queued, and the call's work is
// lost rather than held. An answer alone may be larger than the budget
// when nothing else holds any. Messages of streams are counted but never
// refused: grpc-go holds up a stream past its first unsent message, and
// Watch bounds what its streams hold itself.

// sendAllowance is what one connection's unsent answers may hold without
// drawing on the send budget: an answer the size of a stream's window.
const sendAllowance = 64 << 10

// sendBudget is the bytes that answers not yet written may hold across all
// connections, beyond sendAllowance each.
type sendBudget struct {
	limit    int64 // 0: no limit
	refusals *refusalLog

	mu   sync.Mutex
	used int64
}

func newSendBudget(limit int64, refusals *refusalLog) *sendBudget {
	return &sendBudget{limit: limit, refusals: refusals}
}

// sendTally is what one connection's unsent answers hold. Calls add to it
// as they hand messages to grpc-go, its writing goroutine takes off what it
// writes, and its reading and writing goroutines follow which streams are
// open: a stream its client resets has grpc-go drop what it had not sent,
// so when no stream is open, nothing is held.
type sendTally struct {
	b *sendBudget

	mu      sync.Mutex
	pending int64 // bytes of messages handed to grpc-go and not yet written
	charged int64 // what pending draws on the budget: beyond sendAllowance
	open    map[uint32]struct{}
	closed  bool
}

func newSendTally(b *sendBudget) *sendTally {
	return &sendTally{b: b, open: map[uint32]struct{}{}}
}

// take counts n more bytes handed to grpc-go, or refuses them when the
// budget cannot hold them (unless forced), returning what the connection
// and the budget hold.
func (t *sendTally) take(n int64, force bool) (ok bool, pending, used int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return true, 0, 0
	}
	charged := max(0, t.pending+n-sendAllowance)
	b := t.b
	b.mu.Lock()
	if more := charged - t.charged; more > 0 && !force && b.limit > 0 && b.used > 0 && b.used+more > b.limit {
		used := b.used
		b.mu.Unlock()
		return false, t.pending, used
	}
	b.used += charged - t.charged
	b.mu.Unlock()
	t.pending, t.charged = t.pending+n, charged
	return true, t.pending, 0
}

// settle sets what the connection holds to pending, giving back to the
// budget what it no longer draws on. t.mu is held.
func (t *sendTally) settle(pending int64) {
	charged := max(0, pending-sendAllowance)
	if charged != t.charged {
		t.b.mu.Lock()
		t.b.used += charged - t.charged
		t.b.mu.Unlock()
	}
	t.pending, t.charged = pending, charged
}

// wrote counts off n bytes of DATA the connection wrote.
func (t *sendTally) wrote(n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.settle(max(0, t.pending-n))
}

// opened notes a stream the client opened.
func (t *sendTally) opened(id uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.open[id] = struct{}{}
	}
}

// ended notes a stream ended, by either side; with none open, the
// connection holds nothing.
func (t *sendTally) ended(id uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.open, id)
	if len(t.open) == 0 {
		t.settle(0)
	}
}

// close gives back what the connection held.
func (t *sendTally) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.settle(0)
	t.open, t.closed = nil, true
}

// meteredInfo is the AuthInfo of a metered connection: the handshake's,
// and the connection's tally of unsent answers, which calls find through
// their peer.
type meteredInfo struct {
	credentials.AuthInfo
	sent *sendTally
}

// authInfo is the handshake's AuthInfo of a call's peer.
func authInfo(p *peer.Peer) credentials.AuthInfo {
	if m, ok := p.AuthInfo.(meteredInfo); ok {
		return m.AuthInfo
	}
	return p.AuthInfo
}

// sentTally is the tally of the connection a call came on, or nil when the
// connection is not metered.
func sentTally(ctx context.Context) *sendTally {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	m, ok := p.AuthInfo.(meteredInfo)
	if !ok {
		return nil
	}
	return m.sent
}

// wireSize is m's size on the wire: its encoding and the 5-byte prefix,
// which the DATA frames that carry it count off exactly. What its buffer
// holds is at most four times that: the codec gives an encoding a buffer
// of its own, or one of grpc-go's pooled tiers of 4, 16 or 32 KiB.
func wireSize(m any) int64 {
	switch m := m.(type) {
	case interface{ SizeVT() int }:
		return int64(m.SizeVT()) + 5
	case proto.Message:
		return int64(proto.Size(m)) + 5
	}
	return 5
}

// sendBudgetOption carries the send budget through New's options; gRPC
// itself ignores it.
type sendBudgetOption struct {
	grpc.EmptyServerOption
	b *sendBudget
}

// sendBudgetOf finds the send budget among opts, or nil.
func sendBudgetOf(opts []grpc.ServerOption) *sendBudget {
	for _, o := range opts {
		if s, ok := o.(sendBudgetOption); ok {
			return s.b
		}
	}
	return nil
}

// reasonSendBudget is the reason of an answer refused for want of budget.
const reasonSendBudget = "SEND_BUDGET"

// unaryInterceptor counts each answer against its connection, or refuses
// it when the budget cannot hold it.
func (b *sendBudget) unaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil || resp == nil {
		return resp, err
	}
	t := sentTally(ctx)
	if t == nil {
		return resp, nil
	}
	n := wireSize(resp)
	ok, pending, used := t.take(n, false)
	if ok {
		return resp, nil
	}
	p, _ := peer.FromContext(ctx)
	b.refusals.warn(refusedSendBudget, "send budget spent: an answer refused while clients do not read theirs",
		"peer", p.Addr.String(), "send_budget", b.limit, "connection_holds", pending, "answer_bytes", n)
	return nil, refuse(codes.ResourceExhausted,
		fmt.Sprintf("this server holds as many bytes of answers their clients have not read as it may (%d), and this connection %d of them: "+
			"the answer of %d bytes was not sent; read your answers, or call again later", b.limit, pending, n),
		details{reason: reasonSendBudget, meta: map[string]string{"limit": strconv.FormatInt(b.limit, 10),
			"held": strconv.FormatInt(used, 10), "connection_holds": strconv.FormatInt(pending, 10), "answer_bytes": strconv.FormatInt(n, 10)},
			why: fmt.Sprintf("this server holds at most %d bytes of answers not yet read", b.limit)})
}

// streamInterceptor counts each message a stream sends against its
// connection, never refusing one.
func (b *sendBudget) streamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	t := sentTally(ss.Context())
	if t == nil {
		return handler(srv, ss)
	}
	return handler(srv, countedStream{ServerStream: ss, t: t})
}

// countedStream counts what a stream sends.
type countedStream struct {
	grpc.ServerStream
	t *sendTally
}

func (s countedStream) SendMsg(m any) error {
	s.t.take(wireSize(m), true)
	return s.ServerStream.SendMsg(m)
}
