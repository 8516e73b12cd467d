package server_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/testpki"
	"github.com/usher-authz/usher/server"
)

func TestConnLimitsValidate(t *testing.T) {
	if err := server.DefaultConnLimits().Validate(); err != nil {
		t.Fatalf("the default limits: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*server.ConnLimits)
		err    string
	}{
		{"a negative total is refused", func(l *server.ConnLimits) { l.MaxConns = -1 }, "MaxConns -1: must be at least 0"},
		{"a negative per-peer limit is refused", func(l *server.ConnLimits) { l.MaxConnsPerPeer = -5 }, "MaxConnsPerPeer -5: must be at least 0"},
		{"a header limit under 1 KiB is refused", func(l *server.ConnLimits) { l.MaxHeaderBytes = 100 }, "MaxHeaderBytes 100: must be at least 1024"},
		{"a budget smaller than one request message is refused", func(l *server.ConnLimits) { l.ReceiveBudget = 1 << 20 },
			"ReceiveBudget 1048576: must be 0 (no limit) or at least the largest request message, 4194304 bytes"},
		{"a window grpc-go would ignore is refused", func(l *server.ConnLimits) { l.StreamWindow = 1000 }, "StreamWindow 1000: must be at least 65535"},
		{"a negative timeout is refused", func(l *server.ConnLimits) { l.RequestTimeout = -time.Second }, "RequestTimeout -1s: must not be negative"},
		{"a handshake without a timeout is refused: grpc-go reads 0 as at once", func(l *server.ConnLimits) { l.HandshakeTimeout = 0 }, "HandshakeTimeout 0s: must be positive"},
		{"keepalive without a minimum interval is refused: grpc-go reads 0 as 5 minutes", func(l *server.ConnLimits) { l.KeepaliveMinTime = 0 }, "KeepaliveMinTime 0s: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := server.DefaultConnLimits()
			tc.change(&l)
			if err := l.Validate(); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Validate() = %v, want %q", err, tc.err)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		change func(*server.ConnLimits)
	}{
		{"no connection limits", func(l *server.ConnLimits) { l.MaxConns, l.MaxConnsPerPeer, l.MaxStreams = 0, 0, 0 }},
		{"no budget and no request timeout", func(l *server.ConnLimits) { l.ReceiveBudget, l.RequestTimeout = 0, 0 }},
		{"connections never idle out", func(l *server.ConnLimits) { l.IdleTimeout = 0 }},
	} {
		t.Run("zero means "+tc.name, func(t *testing.T) {
			l := server.DefaultConnLimits()
			tc.change(&l)
			if err := l.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestConnLimitsKeepCallersWorking serves through everything Apply adds, over
// plaintext and over TLS, and calls as each kind of caller does: by token,
// by client certificate, with a request near the message limit, and with
// more calls at once than a connection may carry.
func TestConnLimitsKeepCallersWorking(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "acme CA")
	certFile, keyFile := ca.Server(t, "usher").Write(t, dir, "server")
	caFile := filepath.Join(dir, "client-ca.crt")
	testpki.WriteFile(t, caFile, ca.PEM())
	consoleCert := ca.Client(t, pkix.Name{CommonName: "console", Organization: []string{"acme"}})
	token := newToken(t)
	callersFile := filepath.Join(dir, "callers.yaml")
	writeCallers(t, callersFile, "callers:\n  - {name: backend, kind: admin, token_sha256: "+hashOf(token)+"}\n"+
		"  - {name: console, kind: admin, certificate_subject: 'CN=console,O=acme'}\n")
	logs := &logBuffer{}
	src, err := server.NewCallerSource(callersFile, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig, err := server.NewTLSConfig(server.TLSFiles{Cert: certFile, Key: keyFile, ClientCA: caFile}, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	pair, err := tls.X509KeyPair(consoleCert.CertPEM, consoleCert.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}

	limits := server.DefaultConnLimits()
	limits.MaxStreams = 4
	for _, tc := range []struct {
		name    string
		creds   credentials.TransportCredentials // the server's; nil: plaintext
		clients map[string]credentials.TransportCredentials
	}{
		{"plaintext", nil, map[string]credentials.TransportCredentials{"token": insecure.NewCredentials()}},
		{"TLS", credentials.NewTLS(tlsConfig), map[string]credentials.TransportCredentials{
			"token":              credentials.NewTLS(&tls.Config{RootCAs: roots}),
			"client certificate": credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			lis, opts := limits.Apply(lis, tc.creds, logs.logger())
			addr, _ := serveOn(t, lis, t.TempDir(), logs.logger(), append(opts, server.WithCallers(src))...)
			for how, creds := range tc.clients {
				opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
				if how == "token" {
					opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
				}
				conn, err := grpc.NewClient(addr, opts...)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := grantCall(t, conn, "user:dana"); err != nil {
					t.Errorf("Grant by %s: %v", how, err)
				}
				// More checks at once than the 4 streams a connection may
				// carry: the client queues them.
				errs := make(chan error, 20)
				for range 20 {
					go func() { errs <- checkCall(t, conn) }()
				}
				for range 20 {
					if err := <-errs; err != nil {
						t.Errorf("Check by %s, 20 at once: %v", how, err)
					}
				}
				// A batch larger than a connection's allowance draws on
				// the budget.
				batch := &usherv1.CheckBatchRequest{}
				for range server.MaxBatch {
					batch.Checks = append(batch.Checks, &usherv1.CheckItem{Subject: "user:" + strings.Repeat("d", 256), Permission: "join-call", Resource: "root"})
				}
				if _, err := usherv1.NewAuthorizationServiceClient(conn).CheckBatch(callCtx(t), batch); err != nil {
					t.Errorf("CheckBatch of %d bytes by %s: %v", proto.Size(batch), how, err)
				}
				// A request just under the message limit arrives whole, to
				// be refused for what it says; one past it is refused by
				// grpc-go; the connection goes on.
				check := func(n int) error {
					_, err := usherv1.NewAuthorizationServiceClient(conn).Check(callCtx(t),
						&usherv1.CheckRequest{Subject: "user:" + strings.Repeat("d", n), Permission: "join-call", Resource: "root"})
					return err
				}
				wantCode(t, check(server.MaxMessageSize-100), codes.InvalidArgument)
				wantCode(t, check(server.MaxMessageSize), codes.ResourceExhausted)
				if err := checkCall(t, conn); err != nil {
					t.Errorf("Check by %s after a refused message: %v", how, err)
				}
			}
		})
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("callers within the limits were refused:\n%s", logs.String())
	}
}

// serveWithSendBudgetOf1 serves through every limit Apply adds, with a send
// budget of one byte: each connection holds at most its own allowance of
// answers not yet written.
func serveWithSendBudgetOf1(t *testing.T) (string, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	limits := server.DefaultConnLimits()
	limits.SendBudget = 1
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis, opts := limits.Apply(lis, nil, logs.logger())
	addr, _ := serveOn(t, lis, t.TempDir(), logs.logger(), opts...)
	return addr, logs
}

// kindlessChecks is a batch of n checks whose subjects have no kind: the
// answer's error for each quotes it.
func kindlessChecks(n int) *usherv1.CheckBatchRequest {
	batch := &usherv1.CheckBatchRequest{}
	for i := range n {
		batch.Checks = append(batch.Checks, &usherv1.CheckItem{Subject: fmt.Sprintf("guest-%d", i), Permission: "join-call", Resource: "root"})
	}
	return batch
}

// TestSendBudgetCountsOffWhatItCounts has a client that reads its answers
// make many calls with answers of a few KiB, on a connection that a Watch
// keeps a stream open on throughout, through a send budget of one byte:
// each connection then holds at most its own allowance of answers not yet
// written. What an answer counts against its connection must be counted off
// in full once it is written, or a busy connection, never without a stream
// open, would run out of room and have its answers refused.
func TestSendBudgetCountsOffWhatItCounts(t *testing.T) {
	addr, logs := serveWithSendBudgetOf1(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	authz := usherv1.NewAuthorizationServiceClient(conn)
	watch, err := authz.Watch(callCtx(t), &usherv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := grantCall(t, conn, "user:dana"); err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("Watch: %v", err)
	}
	batch := kindlessChecks(20)
	for i := range 200 {
		resp, err := authz.CheckBatch(callCtx(t), batch)
		if err != nil {
			t.Fatalf("CheckBatch %d of 200, with a Watch open on the connection: %v", i+1, err)
		}
		if n := proto.Size(resp); i == 0 && (n <= 1<<10 || n >= 4<<10) {
			t.Fatalf("an answer of %d bytes, want between 1 and 4 KiB: one that grpc-go's codec pools, in a buffer larger than it", n)
		}
	}
	if strings.Contains(logs.String(), "send budget spent") {
		t.Errorf("answers read as they came were refused:\n%s", logs.String())
	}
}

// dialWindowless opens an HTTP/2 connection to addr whose client gives its
// streams no window: the server can send no answer on it. The connection
// is closed at the end of t.
func dialWindowless(t *testing.T, addr string) *http2.Framer {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(raw, raw)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	return fr
}

// TestSendBudgetGivesBackWhatAResetStreamDrops has a client that does not
// open its windows reset a call whose answer the server holds, while
// another of its streams stays open: grpc-go drops the answer, and so must
// the budget. Otherwise the bytes stay counted for as long as the
// connection keeps a stream open (a sidecar's Watch: for good), and another
// client's answer is refused though no answer is held.
func TestSendBudgetGivesBackWhatAResetStreamDrops(t *testing.T) {
	addr, _ := serveWithSendBudgetOf1(t)

	// An answer well past a connection's allowance of 64 KiB.
	batch := kindlessChecks(1000)

	fr := dialWindowless(t, addr)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	request := func(id uint32, method string, msg proto.Message) {
		t.Helper()
		block.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", addr},
			{"content-type", "application/grpc"}, {"te", "trailers"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if msg == nil {
			return // the request is still to come: the stream stays open
		}
		b, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		prefixed := append([]byte{0, 0, 0, 0, 0}, b...)
		binary.BigEndian.PutUint32(prefixed[1:], uint32(len(b)))
		for len(prefixed) > 0 {
			n := min(len(prefixed), 16<<10)
			if err := fr.WriteData(id, n == len(prefixed), prefixed[:n]); err != nil {
				t.Fatal(err)
			}
			prefixed = prefixed[n:]
		}
	}
	request(1, "/usher.v1.AuthorizationService/Check", nil)
	request(3, "/usher.v1.AuthorizationService/CheckBatch", batch)
	// The answer's headers come once the call has handed its answer to
	// grpc-go; its DATA waits for a window that never opens.
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
			continue
		case *http2.HeadersFrame:
			if f.StreamID != 3 || f.StreamEnded() {
				t.Fatalf("headers on stream %d (end of stream %v) before the answer of stream 3", f.StreamID, f.StreamEnded())
			}
		case *http2.DataFrame:
			t.Fatalf("DATA on stream %d with no window open", f.StreamID)
		default:
			continue
		}
		break
	}
	if err := fr.WriteRSTStream(3, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	// The server reads frames in order: the ping's answer says it has
	// read the reset.
	if err := fr.WritePing(false, [8]byte{1}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			break
		}
	}

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := usherv1.NewAuthorizationServiceClient(conn).CheckBatch(callCtx(t), batch); err != nil {
		t.Fatalf("an answer refused while the only one held was dropped by its reset: %v", err)
	}
}

// A request sent a byte to a DATA frame costs grpc-go far more than its
// bytes: each frame it keeps until the message is whole is a buffer of its
// own, boxed, and an entry in the stream's list of them; and a frame just
// past 1 KiB is kept in a pooled buffer of 4 KiB. The receive budget
// charges each frame what grpc-go keeps for it, so that a client sending
// such frames is held back within the budget, as one sending frames of
// 16 KiB is.
func TestSmallFramesAreHeldWithinTheReceiveBudget(t *testing.T) {
	const budget = 4 << 20
	for _, tc := range []struct {
		name         string
		size, frames int
	}{
		// 50 streams of 20 KB each: a million frames, 1 MB.
		{"a byte a frame", 1, 1_000_000},
		// 50 streams of 56 KB each: 2,700 frames, 2.8 MB.
		{"1,025 bytes a frame", 1025, 2_700},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuffer{}
			limits := server.DefaultConnLimits()
			limits.ReceiveBudget = budget
			limits.RequestTimeout = 0
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			lis, opts := limits.Apply(lis, nil, logs.logger())
			addr, _ := serveOn(t, lis, t.TempDir(), logs.logger(), opts...)
			held := heldForFrames(t, addr, logs, tc.size, tc.frames)
			if held > 2*budget {
				t.Errorf("the server holds %d bytes of requests still arriving in frames of %d bytes; the budget is %d", held, tc.size, budget)
			}
		})
	}
}

// heldForFrames opens 50 Checks to addr, each announcing 4 MiB, sends them
// frames of size bytes, taken in turn, and returns how much more memory the
// process holds once the server has read them all, or holds the connection
// back for the budget, as logs say.
func heldForFrames(t *testing.T, addr string, logs *logBuffer, size, frames int) int64 {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(raw, 64<<10)
	fr := http2.NewFramer(w, raw)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// The server's frames, read apart: its connection window, and the
	// answer of the ping sent after the last frame, which says it has read
	// them all.
	var mu sync.Mutex
	window := int64(65535)
	granted := sync.NewCond(&mu)
	pong := make(chan struct{})
	var acks []func() error
	go func() {
		for {
			f, err := fr.ReadFrame()
			mu.Lock()
			if err != nil {
				window = -1
				granted.Broadcast()
				mu.Unlock()
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					acks = append(acks, fr.WriteSettingsAck)
				}
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					window += int64(f.Increment)
					granted.Broadcast()
				}
			case *http2.PingFrame:
				if f.IsAck() {
					close(pong)
				}
			}
			mu.Unlock()
		}
	}()

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	const streams = 50
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for i := range streams {
		block.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/usher.v1.AuthorizationService/Check"},
			{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		id := uint32(2*i + 1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if err := fr.WriteData(id, false, []byte{0, 0, 0x40, 0, 0}); err != nil {
			t.Fatal(err)
		}
	}
	sent := make(chan error, 1)
	go func() {
		payload := make([]byte, size)
		spent := int64(5 * streams)
		for i := range frames {
			mu.Lock()
			for window >= 0 && window < spent+int64(size) {
				w.Flush()
				granted.Wait()
			}
			closed, pending := window < 0, acks
			acks = nil
			mu.Unlock()
			if closed {
				sent <- errors.New("the server closed the connection")
				return
			}
			for _, ack := range pending {
				ack()
			}
			spent += int64(size)
			if err := fr.WriteData(uint32(2*(i%streams)+1), false, payload); err != nil {
				sent <- err
				return
			}
		}
		if err := fr.WritePing(false, [8]byte{}); err != nil {
			sent <- err
			return
		}
		sent <- w.Flush()
	}()
	deadline := time.After(time.Minute)
	for done := false; !done; {
		select {
		case err := <-sent:
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-pong:
			case <-deadline:
				t.Fatal("the server answered no ping after the frames")
			}
			done = true
		case <-time.After(10 * time.Millisecond):
			done = strings.Contains(logs.String(), "request budget spent")
		case <-deadline:
			t.Fatal("the server neither read the frames nor held them back")
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc)
}

// TestADrainingConnectionHoldsNothingForTheStreamsItIgnores has a client
// without credentials keep a connection open past its idle timeout with a
// health Watch, started between the server's two GOAWAYs, and then open
// streams by the hundred thousand. grpc-go ignores every stream opened after
// its last GOAWAY, without a word on the wire; what the server holds for
// them must not grow with them, or a client sending a few bytes a stream
// would have the server hold memory without end.
func TestADrainingConnectionHoldsNothingForTheStreamsItIgnores(t *testing.T) {
	c, _ := drainedConn(t, server.DefaultConnLimits())

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const streams = 1 << 19
	go func() {
		for i := range streams {
			c.headers(uint32(2*i+3), "/usher.v1.AuthorizationService/GetRevision", true)
		}
		c.fr.WritePing(false, [8]byte{7})
		c.w.Flush()
	}()
	// The server reads frames in order: the ping's answer says it has
	// read every stream's.
	c.readUntil("the answer of the ping sent after the streams", func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck() && p.Data == [8]byte{7}
	})
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if held := int64(after.HeapAlloc) - int64(before.HeapAlloc); held > 4<<20 {
		t.Errorf("the server holds %d bytes more after %d streams opened past its last GOAWAY, which it ignores", held, streams)
	}
}

// TestADrainingConnectionHoldsNoRequestBytesForTheStreamsItIgnores has a
// client without credentials open streams past its connection's last
// GOAWAY and send none of their requests: grpc-go ignores those streams,
// and holds nothing for them. The receive budget must not hold their
// requests as still to come, or a client that may not call at all would
// spend the budget and hold back every other caller's large request.
func TestADrainingConnectionHoldsNoRequestBytesForTheStreamsItIgnores(t *testing.T) {
	limits := server.DefaultConnLimits()
	limits.ReceiveBudget = server.MaxMessageSize
	limits.RequestTimeout = 2 * time.Minute
	c, logs := drainedConn(t, limits)

	// Each stream's headers would be charged the header list limit and
	// more: 1,000 of them are several times the budget.
	for i := range 1000 {
		c.headers(uint32(2*i+3), "/usher.v1.AuthorizationService/Check", false)
	}
	if err := c.fr.WritePing(false, [8]byte{7}); err != nil {
		t.Fatal(err)
	}
	c.w.Flush()

	// A request of half a megabyte, far past what a connection may hold
	// without drawing on the budget.
	batch := &usherv1.CheckBatchRequest{}
	for i := range 1000 {
		batch.Checks = append(batch.Checks, &usherv1.CheckItem{Subject: fmt.Sprintf("user:%0250d", i), Permission: "join-call",
			Resource: fmt.Sprintf("call:default:%0250d", i)})
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := usherv1.NewAuthorizationServiceClient(conn).CheckBatch(callCtx(t), batch); err != nil {
		t.Errorf("a CheckBatch of %d bytes from another client, after streams the server ignores: %v\n%s", proto.Size(batch), err, logs.String())
	}
	c.readUntil("the answer of the ping sent after the streams", func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck() && p.Data == [8]byte{7}
	})
}

// TestFramesOfStreamsNotOpenHoldNoRequestBytes has a client without
// credentials, on a server with a callers file, send DATA on a stream it
// reset, and on one it never opened: grpc-go drops those frames as they
// come. The receive budget must not hold them as requests still to come,
// or a client that may not call at all would spend the budget and hold
// back every caller's large request, for as long as the request timeout.
func TestFramesOfStreamsNotOpenHoldNoRequestBytes(t *testing.T) {
	logs := &logBuffer{}
	dir := t.TempDir()
	token := newToken(t)
	file := filepath.Join(dir, "callers.yaml")
	writeCallers(t, file, fmt.Sprintf("callers:\n  - name: backend\n    kind: admin\n    token_sha256: %s\n", hashOf(token)))
	src, err := server.NewCallerSource(file, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	limits := server.DefaultConnLimits()
	limits.ReceiveBudget = server.MaxMessageSize
	limits.RequestTimeout = 2 * time.Minute
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis, opts := limits.Apply(lis, nil, logs.logger())
	addr, _ := serveOn(t, lis, dir, logs.logger(), append(opts, server.WithCallers(src))...)

	c := dialRaw(t, addr)
	c.headers(1, "/usher.v1.AuthorizationService/Check", false)
	if err := c.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	// Each frame begins a message of 4 MiB, whose first 16 KiB it holds:
	// 300 of them, 4.8 MB, are more than the budget.
	frame := make([]byte, 16<<10)
	copy(frame, []byte{0, 0, 0x40, 0, 0})
	for i := range 300 {
		if err := c.fr.WriteData(uint32(1+2*(i%2)*500), false, frame); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.fr.WritePing(false, [8]byte{7}); err != nil {
		t.Fatal(err)
	}
	go c.w.Flush()

	// A request of half a megabyte, far past what a connection may hold
	// without drawing on the budget.
	batch := &usherv1.CheckBatchRequest{}
	for i := range 1000 {
		batch.Checks = append(batch.Checks, &usherv1.CheckItem{Subject: fmt.Sprintf("user:%0250d", i), Permission: "join-call",
			Resource: fmt.Sprintf("call:default:%0250d", i)})
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearer(token)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := usherv1.NewAuthorizationServiceClient(conn).CheckBatch(callCtx(t), batch); err != nil {
		t.Errorf("a CheckBatch of %d bytes from a caller, after frames of streams not open from a client without credentials: %v\n%s",
			proto.Size(batch), err, logs.String())
	}
	c.readUntil("the answer of the ping sent after the frames", func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck() && p.Data == [8]byte{7}
	})
}

// rawConn is a client's HTTP/2 connection, frame by frame.
type rawConn struct {
	t    *testing.T
	addr string
	w    *bufio.Writer
	fr   *http2.Framer
	enc  *hpack.Encoder
	hdrs bytes.Buffer
}

// dialRaw connects to addr and writes the client's preface and settings,
// unflushed; the connection is closed at the end of t.
func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := raw.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	c := &rawConn{t: t, addr: addr, w: bufio.NewWriterSize(raw, 64<<10)}
	c.fr = http2.NewFramer(c.w, raw)
	c.enc = hpack.NewEncoder(&c.hdrs)
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// headers opens stream id, a call of method, its request to come unless
// end.
func (c *rawConn) headers(id uint32, method string, end bool) {
	c.t.Helper()
	c.hdrs.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", c.addr},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hdrs.Bytes(), EndHeaders: true, EndStream: end}); err != nil {
		c.t.Fatal(err)
	}
}

// readUntil reads the server's frames, acknowledging its settings, until
// one that done accepts.
func (c *rawConn) readUntil(what string, done func(http2.Frame) bool) {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			c.fr.WriteSettingsAck()
			c.w.Flush()
		}
		if done(f) {
			return
		}
	}
}

// drainedConn serves with limits and an idle timeout of 200 ms, connects,
// and waits for the connection to go idle: it is sent a first GOAWAY and a
// ping. A health Watch opened before the ping is answered is served, and
// keeps the connection open past the last GOAWAY, which names it as the
// last stream the server takes: every stream opened after that, grpc-go
// ignores. It returns the connection and the server's log.
func drainedConn(t *testing.T, limits server.ConnLimits) (*rawConn, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	limits.IdleTimeout = 200 * time.Millisecond
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis, opts := limits.Apply(lis, nil, logs.logger())
	addr, _ := serveOn(t, lis, t.TempDir(), logs.logger(), opts...)
	c := dialRaw(t, addr)
	c.w.Flush()
	var ping [8]byte
	c.readUntil("the first GOAWAY's ping", func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		if ok && !p.IsAck() {
			ping = p.Data
		}
		return ok && !p.IsAck()
	})
	c.headers(1, "/grpc.health.v1.Health/Watch", false)
	if err := c.fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WritePing(true, ping); err != nil {
		t.Fatal(err)
	}
	c.w.Flush()
	c.readUntil("the last GOAWAY", func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		if ok && g.LastStreamID != 1 {
			t.Fatalf("the last GOAWAY names stream %d, want 1: the health Watch's", g.LastStreamID)
		}
		return ok
	})
	return c, logs
}

// grpc-go keeps the stream of an answer it has yet to send, its queued
// frames and its trailers, some 2 KB whatever the answer's size, until its
// client's window lets the answer out. Counted by their bytes alone, the
// answers of Checks, some 20 bytes each, fit a connection's allowance by
// the thousand, and a client that never opens its windows held every
// stream it could open, on every connection, with the budget untouched.
// Counted with their streams, a connection holds some 16 of them within
// its allowance, and past the budget the rest are refused, SEND_BUDGET.
func TestSmallAnswersAreCountedWithTheirStreams(t *testing.T) {
	addr, _ := serveWithSendBudgetOf1(t)
	fr := dialWindowless(t, addr)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	b, err := proto.Marshal(&usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: "root"})
	if err != nil {
		t.Fatal(err)
	}
	msg := append([]byte{0, 0, 0, 0, 0}, b...)
	binary.BigEndian.PutUint32(msg[1:], uint32(len(b)))
	const calls = 40
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for i := range calls {
		id := uint32(2*i + 1)
		block.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/usher.v1.AuthorizationService/Check"},
			{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if err := fr.WriteData(id, true, msg); err != nil {
			t.Fatal(err)
		}
	}
	// Each call answers headers: an answer's, whose DATA waits for a window
	// that never opens, or a refusal's, which ends its stream.
	held, refused := 0, 0
	for held+refused < calls {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d answers held and %d refused of %d: %v", held, refused, calls, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			t.Fatalf("DATA on stream %d with no window open", f.StreamID)
		case *http2.MetaHeadersFrame:
			if !f.StreamEnded() {
				held++
				continue
			}
			refused++
			st := statusOfTrailers(t, f)
			if st.Code() != codes.ResourceExhausted {
				t.Fatalf("stream %d ended %s (%q), want ResourceExhausted", f.StreamID, st.Code(), st.Message())
			}
			wantDetails(t, st, refusal{reason: "SEND_BUDGET", meta: map[string]string{"limit": "1"}})
		}
	}
	t.Logf("%d answers held, %d refused", held, refused)
	if refused == 0 || held > server.SendAllowance/server.AnswerOverhead+1 {
		t.Fatalf("%d answers of Checks held unsent on one connection, %d refused; want at most %d held, what a connection's allowance of %d bytes holds at %d bytes an answer with its stream",
			held, refused, server.SendAllowance/server.AnswerOverhead+1, server.SendAllowance, server.AnswerOverhead)
	}
}

// statusOfTrailers is the status a trailers-only answer carries.
func statusOfTrailers(t *testing.T, f *http2.MetaHeadersFrame) *status.Status {
	t.Helper()
	code, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || code != 200 {
		t.Fatalf("stream %d: HTTP status %q", f.StreamID, f.PseudoValue("status"))
	}
	field := func(name string) string {
		for _, hf := range f.RegularFields() {
			if hf.Name == name {
				return hf.Value
			}
		}
		return ""
	}
	if d := field("grpc-status-details-bin"); d != "" {
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(d, "="))
		if err != nil {
			t.Fatalf("stream %d: grpc-status-details-bin: %v", f.StreamID, err)
		}
		p := &spb.Status{}
		if err := proto.Unmarshal(b, p); err != nil {
			t.Fatalf("stream %d: grpc-status-details-bin: %v", f.StreamID, err)
		}
		return status.FromProto(p)
	}
	c, _ := strconv.Atoi(field("grpc-status"))
	return status.New(codes.Code(c), field("grpc-message"))
}
