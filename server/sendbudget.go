package server

import (
	"context"
	"fmt"
	"reflect"
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
// connection and its stream when a call hands it to grpc-go, and counted
// off as the connection writes the DATA frames that carry it, or when its
// stream ends, reset by either side, with it unsent (meteredConn sees the
// frames).
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

// answerOverhead is what grpc-go keeps for an answer of a unary call it
// has yet to send besides its bytes: the stream, which stays open until
// its trailers follow the answer out, the queued frames and the trailers
// themselves, some 2 KB of heap a stream whatever the answer's size, 4 with
// the collector's slack. An answer is counted with it, and it is given
// back with the rest when the trailers are written or the stream is
// reset. Counted by their bytes alone, 100,000 answers of Checks, some 20
// bytes each, held unsent on 1,000 connections, fit the connections'
// allowances and kept 229 MB of heap after a collection (108 MB counted
// with their streams), and --max-conns times --max-streams of them would
// keep some 900 MB, with the budget untouched.
const answerOverhead = 4 << 10

// sendBudget is the bytes that answers not yet written may hold across all
// connections, beyond sendAllowance each.
type sendBudget struct {
	limit    int64 // 0: no limit
	refusals *refusalLog

	mu    sync.Mutex
	used  int64
	blind sync.Once // said that a call's stream could not be told
}

func newSendBudget(limit int64, refusals *refusalLog) *sendBudget {
	return &sendBudget{limit: limit, refusals: refusals}
}

// sendTally is what one connection's unsent answers hold. Calls add to it
// as they hand messages to grpc-go, its writing goroutine takes off what it
// writes, and its reading and writing goroutines follow which streams are
// open. It counts by stream: a stream that ends, reset by either side, has
// grpc-go drop what it had not sent, and what was counted for that stream
// and not written is given back then, whatever else stays open.
type sendTally struct {
	b *sendBudget

	mu      sync.Mutex
	pending int64 // bytes of messages handed to grpc-go and not yet written
	charged int64 // what pending draws on the budget: beyond sendAllowance
	open    map[uint32]int64
	closed  bool
	// last is the last stream the server's latest GOAWAY says it takes,
	// when goneAway: grpc-go ignores every stream opened after it, without
	// a frame on the wire that would end it here.
	last     uint32
	goneAway bool
}

func newSendTally(b *sendBudget) *sendTally {
	return &sendTally{b: b, open: map[uint32]int64{}}
}

// take counts n more bytes that stream id hands to grpc-go, or refuses
// them when the budget cannot hold them (unless forced), returning what
// the connection and the budget hold. A stream that has ended sends
// nothing more, so its bytes are not counted.
func (t *sendTally) take(id uint32, n int64, force bool) (ok bool, pending, used int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	held, open := t.open[id]
	if t.closed || !open {
		return true, t.pending, 0
	}
	charged := max(0, t.pending+n-sendAllowance)
	// Within the allowance, as a connection whose client reads keeps, the
	// budget, shared by every connection, is not touched.
	if more := charged - t.charged; more != 0 {
		b := t.b
		b.mu.Lock()
		if more > 0 && !force && b.limit > 0 && b.used > 0 && b.used+more > b.limit {
			used := b.used
			b.mu.Unlock()
			return false, t.pending, used
		}
		b.used += more
		b.mu.Unlock()
	}
	t.pending, t.charged = t.pending+n, charged
	t.open[id] = held + n
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

// wrote counts off n bytes of DATA the connection wrote on stream id.
func (t *sendTally) wrote(id uint32, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	held, ok := t.open[id]
	if !ok {
		return
	}
	n = min(n, held)
	t.open[id] = held - n
	t.settle(t.pending - n)
}

// opened notes a stream the client opened.
func (t *sendTally) opened(id uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.goneAway && id > t.last {
		return
	}
	if _, ok := t.open[id]; !ok && !t.closed {
		t.open[id] = 0
	}
}

// goAway notes the server's GOAWAY naming last as the last stream it
// takes: the streams opened after it, noted before grpc-go read them and
// turned them away, are forgotten. A GOAWAY that takes every stream
// (grpc-go's first, of stream 2^31-1) forgets none.
func (t *sendTally) goAway(last uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.last, t.goneAway = last, true
	pending := t.pending
	for id, held := range t.open {
		if id > last {
			delete(t.open, id)
			pending -= held
		}
	}
	t.settle(pending)
}

// ended notes a stream ended, by either side: what it had not written is
// dropped.
func (t *sendTally) ended(id uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	held, ok := t.open[id]
	if !ok {
		return
	}
	delete(t.open, id)
	t.settle(t.pending - held)
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

// sentTally is the tally of the connection a call came on and the call's
// HTTP/2 stream, or nil when the connection is not metered or the stream
// cannot be told: that, the budget says once in the log, for it counts no
// answer then.
func (b *sendBudget) sentTally(ctx context.Context) (*sendTally, uint32) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, 0
	}
	m, ok := p.AuthInfo.(meteredInfo)
	if !ok {
		return nil, 0
	}
	s := grpc.ServerTransportStreamFromContext(ctx)
	id, ok := streamID(s)
	if !ok {
		b.blind.Do(func() {
			b.refusals.logger.Error("the send budget cannot tell the HTTP/2 stream of a call (grpc-go keeps it elsewhere): answers are not counted against it",
				"transport_stream", fmt.Sprintf("%T", s))
		})
		return nil, 0
	}
	return m.sent, id
}

// streamID is the HTTP/2 stream a call's answers go out on. grpc-go keeps
// it in its transport stream's unexported id field, and says it nowhere
// else; the frames the connection writes name only it. ok is false when a
// grpc-go version keeps it elsewhere (TestStreamIDIsFound fails then).
func streamID(s grpc.ServerTransportStream) (id uint32, ok bool) {
	v := reflect.ValueOf(s)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return 0, false
	}
	index := idField(v.Elem().Type())
	if index == nil {
		return 0, false
	}
	f, err := v.Elem().FieldByIndexErr(index)
	if err != nil {
		return 0, false
	}
	id = uint32(f.Uint())
	return id, id != 0
}

// idFields holds, by transport stream type, the index of its id field (nil:
// none): looked up once a type, not by name on every call.
var idFields sync.Map // reflect.Type -> []int

func idField(t reflect.Type) []int {
	if index, ok := idFields.Load(t); ok {
		return index.([]int)
	}
	var index []int
	if f, ok := t.FieldByName("id"); ok && f.Type.Kind() == reflect.Uint32 {
		index = f.Index
	}
	idFields.Store(t, index)
	return index
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
	s, _ := optionOf[sendBudgetOption](opts)
	return s.b
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
	t, id := b.sentTally(ctx)
	if t == nil {
		return resp, nil
	}
	n := wireSize(resp) + answerOverhead
	ok, pending, used := t.take(id, n, false)
	if ok {
		return resp, nil
	}
	p, _ := peer.FromContext(ctx)
	b.refusals.warn(refusedSendBudget, "send budget spent: an answer refused while clients do not read theirs",
		"peer", p.Addr.String(), "send_budget", b.limit, "connection_holds", pending, "answer_bytes", n)
	return nil, refuse(codes.ResourceExhausted,
		fmt.Sprintf("this server holds as many bytes of answers their clients have not read as it may (%d), and this connection %d of them: "+
			"the answer of %d bytes, with its stream, was not sent; read your answers, or call again later", b.limit, pending, n),
		details{reason: reasonSendBudget, meta: map[string]string{"limit": strconv.FormatInt(b.limit, 10),
			"held": strconv.FormatInt(used, 10), "connection_holds": strconv.FormatInt(pending, 10), "answer_bytes": strconv.FormatInt(n, 10)},
			why: fmt.Sprintf("this server holds at most %d bytes of answers not yet read", b.limit)})
}

// streamInterceptor counts each message a stream sends against its
// connection, never refusing one.
func (b *sendBudget) streamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	t, id := b.sentTally(ss.Context())
	if t == nil {
		return handler(srv, ss)
	}
	return handler(srv, countedStream{ServerStream: ss, t: t, id: id})
}

// countedStream counts what a stream sends.
type countedStream struct {
	grpc.ServerStream
	t  *sendTally
	id uint32
}

func (s countedStream) SendMsg(m any) error {
	s.t.take(s.id, wireSize(m), true)
	return s.ServerStream.SendMsg(m)
}
