package server

import (
	"encoding/binary"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Why the server counts request bytes itself, below grpc-go:
//
// grpc-go reads a request message whole before any interceptor runs, so an
// unauthenticated client decides how much the server holds. As soon as a
// stream's 5-byte length prefix has been read, the stream's reader asks for
// the whole announced length (Stream.read -> ServerStream.requestRead ->
// inFlow.maybeAdjust in internal/transport), which sends the client a
// WINDOW_UPDATE for all of it whatever the configured windows are; every DATA
// frame then received is kept, in a pooled buffer of the frame's full length
// padding included, until the message is complete. The connection's window
// is handed back as frames arrive, not as they are read (handleData), so it
// bounds nothing. A client announcing 4 MiB on each of 400 streams and
// withholding the last byte of each pins 1.6 GiB. No grpc-go option sees the
// prefix before that window update: a tap handle and a stats handler run
// before the message is read or after it is complete, and a mem.BufferPool
// sees only frame sizes, on the connection's reading goroutine, and cannot
// refuse. So meteredConn reads the HTTP/2 frames as they pass to grpc-go,
// keeps the tally below, and holds a frame back while delivering it would
// take more than the budget has left.

// receiveBudget is the bytes that requests still arriving may hold across
// all connections. Each connection may hold allowance bytes without drawing
// on it, so that a connection that behaves, whose requests arrive whole, is
// never held back because others spent the budget.
type receiveBudget struct {
	limit     int64 // 0: no limit
	allowance int64
	// maxHeaderBytes is the header list limit; streamCharge is what a
	// stream is charged from its headers until its first message is
	// complete: that much for its decoded headers, and streamOverhead.
	maxHeaderBytes, streamCharge int64
	// timeout is how long a request may stay incomplete before its
	// connection is closed; 0: no limit.
	timeout  time.Duration
	refusals *refusalLog

	mu    sync.Mutex
	used  int64
	freed chan struct{} // closed, and replaced, when bytes are given back
}

func newReceiveBudget(limit, maxHeaderBytes int64, timeout time.Duration, refusals *refusalLog) *receiveBudget {
	streamCharge := maxHeaderBytes + streamOverhead
	return &receiveBudget{
		limit: limit,
		// Room for two new streams and one whole frame each: what a client
		// writing HEADERS and DATA together has outstanding when a read
		// ends between them.
		allowance:      2 * (streamCharge + maxFrameSize),
		maxHeaderBytes: maxHeaderBytes,
		streamCharge:   streamCharge,
		timeout:        timeout,
		refusals:       refusals,
		freed:          make(chan struct{}),
	}
}

const (
	// maxFrameSize is the largest frame grpc-go accepts (it advertises
	// the HTTP/2 default, 16 KiB, as SETTINGS_MAX_FRAME_SIZE).
	maxFrameSize = 16 << 10
	// streamOverhead is what grpc-go holds for a stream waiting for its
	// request besides the headers: the handler's goroutine, blocked in
	// its read, and the stream's state (about 11 KiB with grpc-go 1.85).
	streamOverhead = 16 << 10
)

// take draws n bytes from the budget if it has them.
func (b *receiveBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit > 0 && b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

// give returns n bytes and wakes the connections waiting for some.
func (b *receiveBudget) give(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
}

// released is closed the next time bytes are given back.
func (b *receiveBudget) released() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.freed
}

// inUse is the bytes drawn from the budget now.
func (b *receiveBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// incomplete is one stream of a connection whose request has not arrived
// whole: its headers wait for the first message, or a message has begun
// and not ended. Streams between messages have none.
type incomplete struct {
	since   time.Time // when the stream opened, or its current message began
	headers int64     // streamCharge until the first message is complete
	frames  int64     // full lengths of the DATA frames holding the current message
	// The current message: prefixLen bytes of its 5-byte prefix seen so
	// far, then need bytes still to come.
	prefix    [5]byte
	prefixLen int
	need      uint32
}

func (s *incomplete) charge() int64 { return s.headers + s.frames }

// tally is what one connection's incomplete requests hold. Its reading
// goroutine adds to it frame by frame; its writing goroutine takes streams
// out as the server ends them.
type tally struct {
	b *receiveBudget

	mu      sync.Mutex
	streams map[uint32]*incomplete
	// open are the streams the client opened and neither side has ended
	// since. grpc-go drops a DATA frame of any other stream as it comes:
	// one the client never opened, or reset, holds nothing.
	open   map[uint32]struct{}
	held   int64 // sum of the streams' charges
	drawn  int64 // of held, drawn from b: what exceeds b.allowance
	closed bool
	// last is the last stream the server's latest GOAWAY says it takes,
	// when goneAway: grpc-go ignores every stream opened after it, and
	// everything the client sends on them.
	last     uint32
	goneAway bool
}

// frame accounts for a frame the client sent, whose payload is p, received
// at now. It reports false, changing nothing, when the budget cannot cover
// it yet; it never refuses a frame that holds nothing new.
func (t *tally) frame(typ http2.FrameType, flags http2.Flags, id uint32, p []byte, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.goneAway && id > t.last {
		return true
	}
	cur := t.streams[id]
	var next *incomplete // nil: the stream has nothing incomplete after the frame
	switch typ {
	case http2.FrameHeaders:
		switch {
		case flags.Has(http2.FlagHeadersEndStream):
			// A request without a body, or the client's trailers.
		case cur == nil:
			next = &incomplete{since: now, headers: t.b.streamCharge}
		default:
			next = cur
		}
	case http2.FrameData:
		if _, ok := t.open[id]; !ok && cur == nil {
			return true
		}
		next = afterData(cur, len(p), payload(flags, p), now)
		if flags.Has(http2.FlagDataEndStream) {
			next = nil
		}
	case http2.FrameRSTStream:
		next = nil
	default:
		return true
	}
	var delta int64
	if cur != nil {
		delta -= cur.charge()
	}
	if next != nil {
		delta += next.charge()
	}
	if !t.adjust(delta) {
		return false
	}
	if next == nil {
		delete(t.streams, id)
	} else {
		t.streams[id] = next
	}
	switch {
	case typ == http2.FrameRSTStream || flags.Has(http2.FlagDataEndStream): // END_STREAM of DATA or HEADERS
		delete(t.open, id)
	case typ == http2.FrameHeaders:
		if t.open == nil {
			t.open = map[uint32]struct{}{}
		}
		t.open[id] = struct{}{}
	}
	return true
}

// payload is a DATA frame's data without its padding; an impossible pad
// length gives none, and grpc-go closes the connection over it.
func payload(flags http2.Flags, p []byte) []byte {
	if !flags.Has(http2.FlagDataPadded) {
		return p
	}
	if len(p) == 0 || int(p[0]) > len(p)-1 {
		return nil
	}
	return p[1 : len(p)-int(p[0])]
}

// afterData returns what stream cur has incomplete after a DATA frame of
// frameLen bytes carrying data, as a new value: the caller may still
// refuse the frame. nil means nothing.
func afterData(cur *incomplete, frameLen int, data []byte, now time.Time) *incomplete {
	s := incomplete{}
	if cur != nil {
		s = *cur
	}
	// A stream's first message has its time counted from the headers.
	began := cur == nil
	for len(data) > 0 {
		if s.prefixLen < len(s.prefix) {
			n := copy(s.prefix[s.prefixLen:], data)
			s.prefixLen += n
			data = data[n:]
			if s.prefixLen < len(s.prefix) {
				break
			}
			// A length over the message limit is charged like any other
			// until grpc-go resets the stream over it.
			s.need = binary.BigEndian.Uint32(s.prefix[1:])
		}
		n := min(uint32(len(data)), s.need)
		s.need -= n
		data = data[n:]
		if s.need == 0 {
			// The message is whole: grpc-go hands it to the handler,
			// which frees its frames.
			s.prefixLen, s.frames, s.headers = 0, 0, 0
			began = true
		}
	}
	if s.prefixLen > 0 {
		// The frame's buffer is kept, whole, until the message is.
		s.frames += keptFrame(frameLen)
		if began {
			s.since = now
		}
	}
	if s.prefixLen == 0 && s.headers == 0 {
		return nil
	}
	return &s
}

// keptFrame is what grpc-go holds for a DATA frame of n bytes, padding
// included, until its message is whole: a buffer of n bytes, or for a
// frame past 1 KiB the pooled buffer of 4, 16 or 32 KiB it is read into,
// and frameOverhead. A client sending a byte to a frame would otherwise
// have grpc-go hold some 45 times what the budget counts, and one sending
// 1,025 bytes to a frame 4 times.
func keptFrame(n int) int64 {
	if n > pooledFrame {
		for _, tier := range []int{4 << 10, 16 << 10, 32 << 10} {
			if n <= tier {
				n = tier
				break
			}
		}
	}
	return int64(n) + frameOverhead
}

const (
	// pooledFrame is the largest frame grpc-go reads into a buffer of its
	// own size (mem.IsBelowBufferPoolingThreshold); a larger one is read
	// into one from its pool of buffers of 4 KiB, 16 KiB and more.
	pooledFrame = 1 << 10
	// frameOverhead is what grpc-go holds for each frame of a message
	// besides its buffer: the buffer boxed as a mem.Buffer and its entry in
	// the stream's list of them (44 bytes for a frame of a byte with
	// grpc-go 1.85).
	frameOverhead = 64
)

// adjust changes held by delta, drawing what passes the allowance from the
// budget; it reports false, changing nothing, when the budget is short.
func (t *tally) adjust(delta int64) bool {
	held := t.held + delta
	drawn := max(0, held-t.b.allowance)
	switch {
	case drawn > t.drawn:
		if !t.b.take(drawn - t.drawn) {
			return false
		}
	case drawn < t.drawn:
		t.b.give(t.drawn - drawn)
	}
	t.held, t.drawn = held, drawn
	return true
}

// ended takes a stream the server ended out of the tally: grpc-go drops
// what else arrives for it, and so does frame, the stream no longer open.
// Nothing of it is kept: a client that has streams ended by the thousand
// (refused, reset) leaves no list for each read to look through.
func (t *tally) ended(id uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.open, id)
	s := t.streams[id]
	if s == nil || t.closed {
		return
	}
	delete(t.streams, id)
	t.adjust(-s.charge())
	// Woken, a connection held back may find its own charge now fits.
	t.b.give(0)
}

// goAway takes the streams opened after last, which the server's GOAWAY
// turned away, out of the tally, and ignores their frames from now on.
func (t *tally) goAway(last uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.last, t.goneAway = last, true
	for id := range t.open {
		if id > last {
			delete(t.open, id)
		}
	}
	var delta int64
	for id, s := range t.streams {
		if id > last {
			delta -= s.charge()
			delete(t.streams, id)
		}
	}
	t.adjust(delta)
	// Woken, a connection held back may find its own charge now fits.
	t.b.give(0)
}

// oldest returns when the longest-waiting incomplete request began.
func (t *tally) oldest() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var oldest time.Time
	for _, s := range t.streams {
		if oldest.IsZero() || s.since.Before(oldest) {
			oldest = s.since
		}
	}
	return oldest, !oldest.IsZero()
}

// close gives back everything the connection held.
func (t *tally) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	t.b.give(t.drawn)
	t.held, t.drawn, t.streams, t.open = 0, 0, nil, nil
}

// holding is the bytes the connection holds in incomplete requests.
func (t *tally) holding() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.held
}
