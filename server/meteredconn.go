package server

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/credentials"
)

// meteredCreds wraps a server's transport credentials so that each
// connection, once its handshake is done, reads through a meteredConn: the
// budget must see the HTTP/2 frames, which under TLS exist only above the
// handshake.
type meteredCreds struct {
	credentials.TransportCredentials
	b    *receiveBudget
	sent *sendBudget // nil: answers are not counted
}

func (m meteredCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := m.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, info, err
	}
	c := newMeteredConn(conn, m.b)
	if m.sent != nil {
		c.sent = newSendTally(m.sent)
		info = meteredInfo{AuthInfo: info, sent: c.sent}
	}
	return c, info, nil
}

func (m meteredCreds) Clone() credentials.TransportCredentials {
	return meteredCreds{TransportCredentials: m.TransportCredentials.Clone(), b: m.b, sent: m.sent}
}

// meteredConn hands the client's bytes to grpc-go a whole frame at a time,
// and only as its receive budget allows; it closes the connection when a
// request takes longer than the budget's timeout to arrive. It watches the
// server's frames for streams the server ends.
type meteredConn struct {
	net.Conn
	b    *receiveBudget
	t    tally
	sent *sendTally // nil: answers are not counted
	peer string

	// Reading, on grpc-go's reading goroutine only. buf[r:ok] is admitted
	// and not yet read by grpc-go; buf[ok:w] is read and not yet admitted.
	// An idle connection reads into small, so that thousands of them pin no
	// large buffer; a frame that does not fit moves to a pooled one.
	small    [2 << 10]byte
	buf      []byte
	large    *[]byte
	r, ok, w int
	preface  int  // bytes of the client preface still to come
	opaque   bool // not HTTP/2 as expected: passed through for grpc-go to refuse
	block    headerBlock
	deadline time.Time // the read deadline set on Conn
	heldBack bool      // waiting for budget; logged once per wait

	// Writing, on grpc-go's writing goroutine only: the server frame
	// header being read and the payload bytes still to skip; of a GOAWAY,
	// the last stream it names, read first.
	out struct {
		header [9]byte
		n      int
		skip   int
		last   [4]byte
		lastN  int // bytes of last still to read; 0: none
	}

	closed    chan struct{}
	closeOnce sync.Once
}

// headerBlock is the HEADERS frame and CONTINUATION frames of one header
// block, as far as they have arrived.
type headerBlock struct {
	stream uint32
	size   int
	logged bool
}

var largeBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func newMeteredConn(conn net.Conn, b *receiveBudget) *meteredConn {
	c := &meteredConn{
		Conn:    conn,
		b:       b,
		t:       tally{b: b, streams: map[uint32]*incomplete{}},
		peer:    conn.RemoteAddr().String(),
		preface: len(http2.ClientPreface),
		closed:  make(chan struct{}),
	}
	c.buf = c.small[:]
	return c
}

// errRequestTimeout ends a connection whose request did not arrive in time.
var errRequestTimeout = errors.New("a request did not arrive in full within the time allowed")

func (c *meteredConn) Read(p []byte) (int, error) {
	for c.r == c.ok {
		if err := c.admitMore(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.buf[c.r:c.ok])
	c.r += n
	return n, nil
}

// admitMore admits at least one more byte for grpc-go to read, reading
// from the network and waiting for budget as needed.
func (c *meteredConn) admitMore() error {
	for {
		if c.r == c.w && c.large != nil {
			largeBuffers.Put(c.large)
			c.large, c.buf = nil, c.small[:]
			c.r, c.ok, c.w = 0, 0, 0
		}
		missing, heldBack := c.admitBuffered(time.Now())
		switch {
		case c.ok > c.r:
			c.heldBack = false
			return nil
		case heldBack:
			if err := c.waitForBudget(); err != nil {
				return err
			}
		default:
			if err := c.fill(missing); err != nil {
				return err
			}
		}
	}
}

// admitBuffered admits the whole frames read so far that the budget
// allows. It returns how many more bytes the next frame needs to be whole,
// or heldBack if it is whole and the budget cannot take it yet.
func (c *meteredConn) admitBuffered(now time.Time) (missing int, heldBack bool) {
	for {
		avail := c.w - c.ok
		switch {
		case c.opaque:
			if avail == 0 {
				return 1, false
			}
			c.ok = c.w
		case c.preface > 0:
			if avail < c.preface {
				return c.preface - avail, false
			}
			if string(c.buf[c.ok:c.ok+c.preface]) != http2.ClientPreface {
				c.opaque = true
				continue
			}
			c.ok += c.preface
			c.preface = 0
		default:
			if avail < 9 {
				return 9 - avail, false
			}
			h := c.buf[c.ok : c.ok+9]
			length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
			if length > maxFrameSize {
				// grpc-go closes the connection over it.
				c.opaque = true
				continue
			}
			if avail < 9+length {
				return 9 + length - avail, false
			}
			typ, flags, id := http2.FrameType(h[3]), http2.Flags(h[4]), binary.BigEndian.Uint32(h[5:])&(1<<31-1)
			if !c.t.frame(typ, flags, id, c.buf[c.ok+9:c.ok+9+length], now) {
				return 0, true
			}
			c.watchHeaders(typ, id, length)
			if c.sent != nil {
				switch typ {
				case http2.FrameHeaders:
					c.sent.opened(id)
				case http2.FrameRSTStream:
					c.sent.ended(id)
				}
			}
			c.ok += 9 + length
		}
	}
}

// fill reads at least one more byte from the network, with room for
// missing more; the read stops at the deadline of the oldest incomplete
// request.
func (c *meteredConn) fill(missing int) error {
	if c.ok > 0 {
		// grpc-go has read everything before ok (fill runs only when
		// r == ok): keep what follows at the start.
		c.w = copy(c.buf, c.buf[c.ok:c.w])
		c.r, c.ok = 0, 0
	}
	if c.w+missing > len(c.buf) && c.large == nil {
		c.large = largeBuffers.Get().(*[]byte)
		copy(*c.large, c.buf[:c.w])
		c.buf = *c.large
	}
	deadline, overdue := c.requestDeadline()
	if overdue {
		return c.timedOut()
	}
	if !deadline.Equal(c.deadline) {
		if err := c.Conn.SetReadDeadline(deadline); err != nil {
			return err
		}
		c.deadline = deadline
	}
	n, err := c.Conn.Read(c.buf[c.w:])
	c.w += n
	switch {
	case n > 0:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded) && !deadline.IsZero():
		// The stream that set the deadline may have ended since: the
		// next fill looks again.
		return nil
	default:
		return err
	}
}

// requestDeadline is when the oldest incomplete request runs out of time,
// and whether it has.
func (c *meteredConn) requestDeadline() (time.Time, bool) {
	now := time.Now()
	oldest, ok := c.t.oldest()
	if !ok || c.b.timeout <= 0 {
		return time.Time{}, false
	}
	deadline := oldest.Add(c.b.timeout)
	return deadline, !deadline.After(now)
}

// waitForBudget waits until bytes are given back to the budget, or the
// oldest request on the connection runs out of time.
func (c *meteredConn) waitForBudget() error {
	released := c.b.released()
	// Bytes given back before released was taken are seen here.
	if _, heldBack := c.admitBuffered(time.Now()); !heldBack {
		return nil
	}
	if !c.heldBack {
		c.heldBack = true
		c.b.refusals.warn(refusedBudget, "request budget spent: reads from the connection held back until requests complete",
			"peer", c.peer, "receive_budget", c.b.limit, "connection_holds", c.t.holding())
	}
	deadline, overdue := c.requestDeadline()
	if overdue {
		return c.timedOut()
	}
	var expired <-chan time.Time
	if !deadline.IsZero() {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-released:
	case <-expired:
	case <-c.closed:
		return net.ErrClosed
	}
	return nil
}

func (c *meteredConn) timedOut() error {
	c.b.refusals.warn(refusedSlowRequest, "connection closed: a request did not arrive in full within the time allowed",
		"peer", c.peer, "request_timeout", c.b.timeout, "held_back_for_budget", c.heldBack)
	return errRequestTimeout
}

// watchHeaders logs a header block larger than the header list limit.
// grpc-go refuses it (golang.org/x/net/http2 closes the connection, or
// grpc-go resets the stream) without telling; the block's size on the wire
// is the part of it that can be seen here.
func (c *meteredConn) watchHeaders(typ http2.FrameType, id uint32, length int) {
	switch typ {
	case http2.FrameHeaders:
		c.block = headerBlock{stream: id, size: length}
	case http2.FrameContinuation:
		c.block.size += length
	default:
		return
	}
	if !c.block.logged && int64(c.block.size) > c.b.maxHeaderBytes {
		c.block.logged = true
		c.b.refusals.warn(refusedHeaderTooLarge, "header block larger than the header list limit",
			"peer", c.peer, "stream", c.block.stream, "wire_bytes_so_far", c.block.size, "max_header_bytes", c.b.maxHeaderBytes)
	}
}

func (c *meteredConn) Write(p []byte) (int, error) {
	c.watchServerFrames(p)
	return c.Conn.Write(p)
}

// watchServerFrames takes the streams the server ends, with RST_STREAM or
// with trailers, out of the tallies, and counts off the answers' bytes as
// their DATA frames are written.
func (c *meteredConn) watchServerFrames(p []byte) {
	o := &c.out
	for len(p) > 0 {
		if o.lastN > 0 {
			n := copy(o.last[len(o.last)-o.lastN:], p[:min(o.lastN, len(p))])
			o.lastN -= n
			o.skip -= n
			p = p[n:]
			if o.lastN == 0 {
				last := binary.BigEndian.Uint32(o.last[:]) & (1<<31 - 1)
				c.t.goAway(last)
				if c.sent != nil {
					c.sent.goAway(last)
				}
			}
			continue
		}
		if o.skip > 0 {
			n := min(o.skip, len(p))
			o.skip -= n
			p = p[n:]
			continue
		}
		n := copy(o.header[o.n:], p)
		o.n += n
		p = p[n:]
		if o.n < len(o.header) {
			return
		}
		o.n = 0
		h := o.header
		o.skip = int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		typ, flags := http2.FrameType(h[3]), http2.Flags(h[4])
		id := binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1)
		if typ == http2.FrameData && c.sent != nil {
			c.sent.wrote(id, int64(o.skip))
		}
		if typ == http2.FrameGoAway && o.skip >= len(o.last) {
			o.lastN = len(o.last)
		}
		if typ == http2.FrameRSTStream || (typ == http2.FrameHeaders && flags.Has(http2.FlagHeadersEndStream)) {
			c.t.ended(id)
			if c.sent != nil {
				c.sent.ended(id)
			}
		}
	}
}

func (c *meteredConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.t.close()
		if c.sent != nil {
			c.sent.close()
		}
	})
	return c.Conn.Close()
}
