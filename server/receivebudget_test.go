package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// frame is a frame a client sends, for the tally: its type, flags, stream
// and payload.
type frame struct {
	typ   http2.FrameType
	flags http2.Flags
	id    uint32
	p     []byte
}

func headers(id uint32) frame {
	return frame{http2.FrameHeaders, http2.FlagHeadersEndHeaders, id, []byte("block")}
}

func data(id uint32, p []byte) frame { return frame{http2.FrameData, 0, id, p} }

func last(f frame) frame { f.flags |= http2.FlagDataEndStream; return f }

func reset(id uint32) frame { return frame{http2.FrameRSTStream, 0, id, []byte{0, 0, 0, 8}} }

// padded is f with pad bytes of padding.
func padded(f frame, pad int) frame {
	f.flags |= http2.FlagDataPadded
	f.p = append(append([]byte{byte(pad)}, f.p...), make([]byte, pad)...)
	return f
}

// message is a gRPC message's prefix announcing n bytes, then body.
func message(n uint32, body []byte) []byte {
	p := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(p[1:], n)
	return append(p, body...)
}

func newTestBudget(limit int64) *receiveBudget {
	return newReceiveBudget(limit, 8<<10, time.Second, newRefusalLog(slog.New(slog.DiscardHandler)))
}

func newTestTally(b *receiveBudget) *tally {
	return &tally{b: b, streams: map[uint32]*incomplete{}}
}

func TestTallyHoldsWhatIncompleteRequestsKeep(t *testing.T) {
	b := newTestBudget(0)
	stream := b.streamCharge
	for _, tc := range []struct {
		name   string
		frames []frame
		ended  []uint32 // streams the server ends after the frames
		held   int64
		open   int // streams left in the tally
	}{
		{"a request whose message arrives whole holds nothing",
			[]frame{headers(1), last(data(1, message(3, []byte("abc"))))}, nil, 0, 0},
		{"headers without a body hold the stream's charge",
			[]frame{headers(1), headers(3)}, nil, 2 * stream, 2},
		{"a message not yet whole holds each of its frames, whole",
			[]frame{headers(1), data(1, message(4<<20, make([]byte, 16379))), data(1, make([]byte, 16384))}, nil, stream + 2*(16384+frameOverhead), 1},
		{"padding is held as long as the data it pads",
			[]frame{headers(1), data(1, message(100, nil)), padded(data(1, []byte("x")), 200)}, nil, stream + 5 + 202 + 2*frameOverhead, 1},
		{"a prefix split across frames is read whole",
			[]frame{headers(1), data(1, []byte{0, 0, 0}), data(1, []byte{0, 2, 'h', 'i'})}, nil, 0, 0},
		{"a message of zero bytes is whole at its prefix",
			[]frame{headers(1), data(1, message(0, nil))}, nil, 0, 0},
		{"a frame that ends one message and begins the next is held for the next, once",
			[]frame{headers(1), data(1, append(message(2, []byte("hi")), message(10, []byte("abc"))...))}, nil, 7 + 8 + frameOverhead, 1},
		{"the stream's charge ends with its first message, not with its second",
			[]frame{headers(1), data(1, message(2, []byte("hi"))), data(1, message(10, nil))}, nil, 5 + frameOverhead, 1},
		{"END_STREAM before the message is whole gives everything back",
			[]frame{headers(1), data(1, message(4<<20, make([]byte, 1000))), last(data(1, nil))}, nil, 0, 0},
		{"the client's RST_STREAM gives everything back",
			[]frame{headers(1), data(1, message(4<<20, make([]byte, 1000))), reset(1)}, nil, 0, 0},
		{"trailers from the client end the stream",
			[]frame{headers(1), data(1, message(4<<20, nil)), {http2.FrameHeaders, http2.FlagHeadersEndStream | http2.FlagHeadersEndHeaders, 1, nil}}, nil, 0, 0},
		{"a stream the server ended holds nothing, and is forgotten",
			[]frame{headers(1), data(1, message(4<<20, make([]byte, 1000)))}, []uint32{1}, 0, 0},
		{"frames other than HEADERS, DATA and RST_STREAM hold nothing",
			[]frame{{http2.FramePing, 0, 0, make([]byte, 8)}, {http2.FrameSettings, 0, 0, nil}, {http2.FrameWindowUpdate, 0, 1, []byte{0, 0, 1, 0}}}, nil, 0, 0},
		{"streams are held apart",
			[]frame{headers(1), headers(3), last(data(1, message(0, nil))), data(3, message(9, []byte("x")))}, nil, stream + 6 + frameOverhead, 1},
		{"a frame of a byte holds its buffer and its place among the message's frames",
			[]frame{headers(1), data(1, message(4<<20, nil)), data(1, []byte("x")), data(1, []byte("y"))}, nil, stream + 5 + 1 + 1 + 3*frameOverhead, 1},
		{"a frame past 1 KiB holds the pooled buffer it is read into",
			[]frame{headers(1), data(1, message(4<<20, make([]byte, 1020))), data(1, make([]byte, 4097))}, nil, stream + 4<<10 + 16<<10 + 2*frameOverhead, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTestTally(b)
			for i, f := range tc.frames {
				if !tl.frame(f.typ, f.flags, f.id, f.p, time.Now()) {
					t.Fatalf("frame %d refused without a budget limit", i)
				}
			}
			for _, id := range tc.ended {
				tl.ended(id)
			}
			if tl.held != tc.held || len(tl.streams) != tc.open {
				t.Errorf("holds %d bytes for %d streams, want %d bytes for %d", tl.held, len(tl.streams), tc.held, tc.open)
			}
		})
	}
}

func TestTallyIgnoresTheLateFramesOfAStreamTheServerEnded(t *testing.T) {
	tl := newTestTally(newTestBudget(0))
	now := time.Now()
	tl.frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, nil, now)
	tl.frame(http2.FrameData, 0, 1, message(4<<20, make([]byte, 100)), now)
	tl.ended(1)
	// Sent before the client learned of the reset: mid-message bytes that
	// would read as a prefix announcing 0x01010101 bytes.
	tl.frame(http2.FrameData, 0, 1, bytes.Repeat([]byte{1}, 16384), now)
	if tl.held != 0 {
		t.Errorf("holds %d bytes for a stream the server ended", tl.held)
	}
	if _, ok := tl.oldest(); ok {
		t.Error("an ended stream counts as an incomplete request")
	}
}

// A client whose streams the server ends by the thousand, refused or
// reset, leaves nothing behind for each read of its connection to look
// through, however late frames of them come.
func TestTallyKeepsNothingOfTheStreamsTheServerEnded(t *testing.T) {
	tl := newTestTally(newTestBudget(0))
	now := time.Now()
	const n = 10_000
	for id := uint32(1); id < 2*n; id += 2 {
		tl.frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, id, nil, now)
		tl.ended(id)
		tl.frame(http2.FrameData, 0, id, message(100, nil), now)
	}
	if len(tl.streams) != 0 || len(tl.open) != 0 || tl.held != 0 {
		t.Errorf("after %d streams the server ended, the connection keeps %d of them (%d open) and holds %d bytes; want none",
			n, len(tl.streams), len(tl.open), tl.held)
	}
}

func TestReceiveBudget(t *testing.T) {
	b := newTestBudget(5 << 20)
	hold := func(tl *tally, id uint32, n int) bool {
		t.Helper()
		now := time.Now()
		if _, ok := tl.streams[id]; !ok && !tl.frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, id, nil, now) {
			return false
		}
		return tl.frame(http2.FrameData, 0, id, message(4<<20, make([]byte, n-5)), now)
	}

	a := newTestTally(b)
	if !hold(a, 1, 1000) || b.inUse() != 0 {
		t.Fatalf("a connection within its allowance drew %d bytes from the budget", b.inUse())
	}
	for id := uint32(3); b.inUse() < 5<<20-32<<10; id += 2 {
		if !hold(a, id, 16384) {
			t.Fatalf("refused with %d of %d bytes drawn", b.inUse(), 5<<20)
		}
	}
	// The rest of the budget, a byte a frame.
	for a.frame(http2.FrameData, 0, 3, []byte{0}, time.Now()) {
	}
	if left := b.limit - b.inUse(); left >= keptFrame(1) {
		t.Fatalf("a frame of a byte was refused with %d bytes of the budget left", left)
	}
	drawn := b.inUse()
	if want := a.held - b.allowance; drawn != want {
		t.Errorf("drew %d bytes, want what is held past the allowance, %d", drawn, want)
	}

	other := newTestTally(b)
	for id := uint32(1); other.held+keptFrame(16384)+b.streamCharge <= b.allowance; id += 2 {
		if !hold(other, id, 16384) {
			t.Fatalf("another connection was refused within its allowance, holding %d", other.held)
		}
	}
	if hold(other, 101, 16384) {
		t.Fatalf("a frame past the allowance was taken with the budget spent: %d of %d drawn", b.inUse(), b.limit)
	}
	released := b.released()
	a.close()
	select {
	case <-released:
	default:
		t.Error("closing a connection woke nobody waiting for the budget")
	}
	if b.inUse() != 0 {
		t.Errorf("closing the connection gave back all but %d bytes", b.inUse())
	}
	if !hold(other, 101, 16384) {
		t.Error("refused after the budget was given back")
	}
}

// pipe is a meteredConn reading from a client that writes raw bytes.
func pipe(t *testing.T, b *receiveBudget) (client net.Conn, server *meteredConn) {
	t.Helper()
	c, s := net.Pipe()
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, newMeteredConn(s, b)
}

// writeFrames writes the client preface, if first, and frames.
func writeFrames(t *testing.T, w io.Writer, first bool, frames ...frame) {
	t.Helper()
	go func() {
		if first {
			w.Write([]byte(http2.ClientPreface))
		}
		fr := http2.NewFramer(w, nil)
		for _, f := range frames {
			fr.WriteRawFrame(f.typ, f.flags, f.id, f.p)
		}
	}()
}

// readAll reads what the meteredConn admits until it has n bytes or fails.
func readAll(c net.Conn, n int) ([]byte, error) {
	buf := make([]byte, n)
	_, err := io.ReadFull(c, buf)
	return buf, err
}

func TestMeteredConnPassesFramesUnchanged(t *testing.T) {
	client, server := pipe(t, newTestBudget(0))
	var want bytes.Buffer
	want.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&want, nil)
	fr.WriteSettings()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte("block"), EndHeaders: true})
	fr.WriteData(1, true, message(3000, make([]byte, 3000)))
	go client.Write(want.Bytes())
	got, err := readAll(server, want.Len())
	if err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read %d bytes (%v), different from the %d written", len(got), err, want.Len())
	}
}

func TestMeteredConnHoldsBackAFrameUntilTheBudgetHasRoom(t *testing.T) {
	b := newTestBudget(5 << 20)
	if !b.take(b.limit) {
		t.Fatal("a budget nobody used could not be spent")
	}
	client, server := pipe(t, b)
	more := data(1, make([]byte, 16000))
	writeFrames(t, client, true, headers(1), data(1, message(4<<20, make([]byte, 16000))), more, more, more)
	// The preface, the headers and the frames within the allowance pass:
	// the stream's charge and three frames of 16,000 bytes and more.
	if _, err := readAll(server, len(http2.ClientPreface)+9+len("block")+9+16005+2*(9+16000)); err != nil {
		t.Fatal(err)
	}
	if held := server.t.holding(); held > b.allowance || held+9+16000 <= b.allowance {
		t.Fatalf("holds %d bytes; the test needs the next frame to pass the allowance of %d", held, b.allowance)
	}
	got := make(chan error, 1)
	go func() { _, err := readAll(server, 9+16000); got <- err }()
	select {
	case err := <-got:
		t.Fatalf("a frame past the allowance was read (%v) with the budget spent", err)
	case <-time.After(200 * time.Millisecond):
	}
	b.give(b.limit)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the frame held back was not read once the budget had room")
	}
}

func TestMeteredConnClosesWhenARequestIsLate(t *testing.T) {
	var logs strings.Builder
	b := newReceiveBudget(0, 8<<10, 300*time.Millisecond, newRefusalLog(slog.New(slog.NewTextHandler(&logs, nil))))
	client, server := pipe(t, b)
	writeFrames(t, client, true, headers(1), data(1, message(10, []byte("abc"))))
	if _, err := readAll(server, len(http2.ClientPreface)+9+len("block")+9+8); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := server.Read(make([]byte, 1))
	if !errors.Is(err, errRequestTimeout) {
		t.Fatalf("read %v, want %v", err, errRequestTimeout)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("closed %s after the timeout of 300ms", took)
	}
	if !strings.Contains(logs.String(), "a request did not arrive in full") || !strings.Contains(logs.String(), "peer=pipe") {
		t.Errorf("the timeout was not logged with the peer:\n%s", logs.String())
	}
}

func TestMeteredConnSeesTheStreamsTheServerEnds(t *testing.T) {
	client, server := pipe(t, newTestBudget(0))
	writeFrames(t, client, true, headers(1), headers(3), headers(5))
	if _, err := readAll(server, len(http2.ClientPreface)+3*(9+len("block"))); err != nil {
		t.Fatal(err)
	}
	go func() { io.Copy(io.Discard, client) }()
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: []byte("trailers"), EndHeaders: true, EndStream: true})
	fr.WriteData(5, false, []byte("a response"))
	// Written a byte at a time, as frames may be split across writes.
	for _, c := range out.Bytes() {
		if _, err := server.Write([]byte{c}); err != nil {
			t.Fatal(err)
		}
	}
	if want := server.b.streamCharge; server.t.holding() != want {
		t.Errorf("holds %d bytes, want %d for the one stream the server did not end", server.t.holding(), want)
	}
}
