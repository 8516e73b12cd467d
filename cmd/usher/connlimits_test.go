//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/testpki"
)

// Attackers dial from loopback addresses of their own (Linux routes all of
// 127.0.0.0/8 to lo), so that the per-peer limit tells them from the
// legitimate client on 127.0.0.1, as it would tell hosts apart.
var (
	slowStreamsPeer = net.IPv4(127, 0, 0, 2)
	headersPeer     = net.IPv4(127, 0, 0, 3)
	idlePeer        = net.IPv4(127, 0, 0, 4)
	legitPeer       = net.IPv4(127, 0, 0, 1)
)

// The limits the servers under attack run with: the defaults, but for
// timeouts short enough to pass within the test.
const (
	attackPerPeer        = 64
	attackBudget         = 64 << 20
	attackRequestTimeout = 2 * time.Second
	attackIdleTimeout    = time.Second
	attackHandshake      = 2 * time.Second
	attackFor            = 6 * time.Second
	// attackAtMost bounds how long the attacks go on past attackFor on a
	// busy machine, where they may take longer to be as strong as the
	// attack they reproduce, or to meet each refusal the server logs.
	attackAtMost = 60 * time.Second
	// rssGrowth is how far above its resident size at rest (the binary's
	// pages, the runtime and an empty index: about 36 MiB) the server may
	// grow at its peak under all the attacks at once: the budget, twice,
	// since Go's collector lets the heap grow to twice what is live before
	// it collects, and room for the connections' allowances.
	rssGrowth = 2*attackBudget + 32<<20
	// idleConnsWanted is how many idle connections one peer opens, file
	// descriptors permitting.
	idleConnsWanted = 1100
)

// TestServeHoldsAgainstHostileClients attacks a running server from outside
// as the attacks it must withstand were found: streams announcing 4 MiB
// messages and withholding their last byte, with a check caller's token (a
// call without one is refused before its request is read), and, with no
// credentials, header blocks of megabytes and streams holding headers
// without a body, and idle connections by the thousand, over plaintext and
// over TLS without a client certificate. While it lasts, a caller with a token keeps checking, each
// Check within a 2 s deadline, and a new connection's health check from
// another address keeps being answered; the server's peak RSS stays within
// rssGrowth of its size at rest (the same attack took it past 6 GiB and out
// of memory without the limits).
func TestServeHoldsAgainstHostileClients(t *testing.T) {
	// Both servers are attacked at once, and the test holds every idle
	// connection it opens, refused or not, until it ends.
	var nofile syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile); err != nil {
		t.Fatal(err)
	}
	idleConns := min(idleConnsWanted, (int(nofile.Cur)-400)/2)
	if idleConns < 2*attackPerPeer {
		t.Skipf("RLIMIT_NOFILE of %d leaves room for %d idle connections; the test needs %d", nofile.Cur, idleConns, 2*attackPerPeer)
	}
	bin, dir := buildUsher(t)
	token, hash := tokenOf(t, bin)
	attackerToken, attackerHash := tokenOf(t, bin)
	callers := filepath.Join(dir, "callers.yaml")
	testpki.WriteFile(t, callers, []byte("callers:\n  - {name: backend, kind: admin, token_sha256: "+hash+"}\n"+
		"  - {name: sidecar, kind: check, token_sha256: "+attackerHash+"}\n"))
	ca := testpki.NewCA(t, "usher test CA")
	certFile, keyFile := ca.Server(t, "usher").Write(t, dir, "server")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	for _, tc := range []struct {
		name string
		tls  *tls.Config // the attackers' and the client's; nil: plaintext
		args []string
	}{
		{"plaintext", nil, nil},
		{"TLS without a client certificate", &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}, ServerName: "localhost",
			CurvePreferences: []tls.CurveID{tls.X25519}}, // the cheapest key exchange, for attackers that reconnect often
			[]string{"--tls-cert", certFile, "--tls-key", keyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := filepath.Join(t.TempDir(), "usher.db")
			p := serveOn(t, bin, data, append([]string{"--callers", callers,
				"--max-conns-per-peer", strconv.Itoa(attackPerPeer),
				"--receive-budget", strconv.Itoa(attackBudget), "--request-timeout", attackRequestTimeout.String(),
				"--idle-timeout", attackIdleTimeout.String(), "--handshake-timeout", attackHandshake.String()}, tc.args...)...)
			holdsUnderAttack(t, p, tc.tls, token, attackerToken, idleConns)
		})
	}
}

// holdsUnderAttack opens the idle connections, then runs every other attack
// on p at once for attackFor (longer on a busy machine, until they have been
// as strong as the attack they reproduce), and checks what
// TestServeHoldsAgainstHostileClients promises.
func holdsUnderAttack(t *testing.T, p *usherProcess, tlsConf *tls.Config, token, attackerToken string, idleConns int) {
	creds := insecure.NewCredentials()
	if tlsConf != nil {
		creds = credentials.NewTLS(tlsConf)
	}
	legit := dialFrom(t, p.addr, legitPeer, creds, grpc.WithPerRPCCredentials(bearerToken(token)))
	admin, checks := usherv1.NewAdminServiceClient(legit), usherv1.NewAuthorizationServiceClient(legit)
	if _, err := admin.Grant(t.Context(), &usherv1.GrantRequest{Subject: "user:dana", Role: "host", Resource: "root"}); err != nil {
		t.Fatal(err)
	}
	baseline := memoryOf(t, p)

	// The idle connections are opened first: on a busy machine, beside the
	// other attacks, opening them can take longer than those last. The
	// server holds those it keeps until its timeouts close them, while the
	// other attacks run for attackFor.
	began := time.Now()
	idle := openIdle(t.Context(), t, p.addr, tlsConf, idleConns)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	attacking := time.Now()
	var attackers sync.WaitGroup
	attack := func(n int, f func(ctx context.Context) error) {
		for range n {
			attackers.Go(func() {
				// A closed connection is what the server does to an
				// attacker; it comes back at once.
				for ctx.Err() == nil {
					if err := f(ctx); err != nil && ctx.Err() == nil {
						time.Sleep(10 * time.Millisecond)
					}
				}
			})
		}
	}
	var stats attackStats
	attack(16, func(ctx context.Context) error {
		return slowStreams(ctx, p.addr, tlsConf, attackerToken, &stats)
	})
	attack(4, func(ctx context.Context) error {
		return hugeHeaderBlock(ctx, p.addr, tlsConf, &stats)
	})
	attack(4, func(ctx context.Context) error {
		return headersWithoutBody(ctx, p.addr, tlsConf, &stats)
	})

	// Meanwhile the caller with a token checks, and a load balancer asks
	// for health over a new connection now and then.
	var checked, healthChecked int
	var slowest time.Duration
	failures := map[string]int{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var peak memory
	nextHealth := time.Now()
	// The attacks last attackFor, and then until they have been as strong
	// as the attack they reproduce and the server has logged each refusal,
	// within attackAtMost: on a busy machine the attackers get less of it.
	strongEnough := func() bool {
		return stats.slowStreams.Load() >= minSlowStreams && allLogged(p.stderr.String())
	}
	for since := time.Duration(0); since < attackFor || (since < attackFor+attackAtMost && !strongEnough()); since = time.Since(attacking) {
		<-tick.C
		start := time.Now()
		cctx, ccancel := context.WithTimeout(t.Context(), 2*time.Second)
		resp, err := checks.Check(cctx, &usherv1.CheckRequest{Subject: "user:dana", Permission: "join-call", Resource: "root"})
		ccancel()
		checked++
		slowest = max(slowest, time.Since(start))
		if err != nil || resp.GetDecision().GetReason() != usherv1.Reason_REASON_GRANTED {
			failures[fmt.Sprintf("Check: %v %v", resp.GetDecision(), err)]++
		}
		if time.Now().After(nextHealth) {
			nextHealth = time.Now().Add(500 * time.Millisecond)
			healthChecked++
			if err := healthOverNewConn(t, p.addr, creds); err != nil {
				failures["health check over a new connection: "+err.Error()]++
			}
		}
		peak = peak.max(memoryOf(t, p))
	}
	cancel()
	attackers.Wait()
	peak = peak.max(memoryOf(t, p))
	t.Logf("%d checks and %d health checks over new connections, the slowest check %s; server RSS %d MiB before, peak %d MiB (VmHWM); attackers: %s",
		checked, healthChecked, slowest.Round(time.Millisecond), baseline.rss>>20, peak.hwm>>20, stats.String())

	if checked == 0 || healthChecked == 0 {
		t.Errorf("%d checks and %d health checks while under attack, want some of each", checked, healthChecked)
	}
	if len(failures) > 0 {
		t.Errorf("calls failed under attack (of %d checks and %d health checks): %v", checked, healthChecked, failures)
	}
	if bound := baseline.rss + rssGrowth; peak.hwm > bound {
		t.Errorf("the server's RSS peaked at %d MiB under attack, over the bound of %d MiB (%d MiB at rest and %d MiB)", peak.hwm>>20, bound>>20, baseline.rss>>20, rssGrowth>>20)
	}
	if stats.slowStreams.Load() < minSlowStreams {
		t.Errorf("the attack was weaker than the one it reproduces, %d streams announcing 4 MiB each: %s", minSlowStreams, stats.String())
	}

	// The idle connections: the peer held its limit and no more, and the
	// server closed those it held within the handshake or idle timeout.
	if len(idle.held) > attackPerPeer || len(idle.held) == 0 {
		t.Errorf("the server held %d of %d idle connections from one peer, want the per-peer limit of %d", len(idle.held), idle.attempted, attackPerPeer)
	}
	idle.closed(t)

	// Every kind of refusal was logged, and none flooded the log.
	logs := p.stderr.String()
	for _, want := range refusalsLogged {
		n := strings.Count(logs, want)
		if n == 0 {
			t.Errorf("stderr never says %q:\n%s", want, tail(logs, 40))
		}
		if most := int((time.Since(began)+10*time.Second)/time.Second)*2 + 5; n > most {
			t.Errorf("stderr says %q %d times, more than the rate limit allows (%d)", want, n, most)
		}
	}
	if !regexp.MustCompile(`level=WARN msg="connection refused: the peer holds its limit of connections" peer=127\.0\.0\.4:\d+`).MatchString(logs) {
		t.Errorf("the per-peer refusal does not name the peer:\n%s", tail(logs, 40))
	}
}

// minSlowStreams is how many streams announcing 4 MiB the attack that
// took a server out of memory opened.
const minSlowStreams = 1500

// refusalsLogged are what the server logs of each attack it refuses.
var refusalsLogged = []string{
	"connection refused: the peer holds its limit of connections",
	"request budget spent",
	"connection closed: a request did not arrive in full",
	"header block larger than the header list limit",
}

// allLogged reports whether logs tell of every refusal of refusalsLogged.
func allLogged(logs string) bool {
	for _, want := range refusalsLogged {
		if !strings.Contains(logs, want) {
			return false
		}
	}
	return true
}

// memory is a process's resident set size now and at its peak.
type memory struct{ rss, hwm int64 }

func (m memory) max(o memory) memory { return memory{max(m.rss, o.rss), max(m.hwm, o.hwm)} }

func memoryOf(t *testing.T, p *usherProcess) memory {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var m memory
	for line := range strings.Lines(string(status)) {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "VmRSS:":
				m.rss = kb << 10
			case "VmHWM:":
				m.hwm = kb << 10
			}
		}
	}
	return m
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// dialFrom makes a gRPC client that connects from a given loopback address.
func dialFrom(t *testing.T, addr string, from net.IP, creds credentials.TransportCredentials, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from}}
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// healthOverNewConn asks for health on a connection of its own, as a load
// balancer's probe does, within 2 s.
func healthOverNewConn(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	conn := dialFrom(t, addr, legitPeer, creds)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		err = fmt.Errorf("status %s", resp.GetStatus())
	}
	return err
}

// attackStats counts what the attackers got the server to take.
type attackStats struct {
	conns, slowStreams, bodilessStreams, bodyBytes, headerBlocks atomic.Int64
}

func (s *attackStats) String() string {
	return fmt.Sprintf("%d connections; %d streams announcing 4 MiB, %d streams without a body, %d MiB of bodies and %d huge header blocks sent",
		s.conns.Load(), s.slowStreams.Load(), s.bodilessStreams.Load(), s.bodyBytes.Load()>>20, s.headerBlocks.Load())
}

// h2Conn is a client connection that speaks HTTP/2 frame by frame, as an
// attacker does: it writes what it is told and keeps the flow-control
// windows the server grants, answering SETTINGS and PING as a client must.
type h2Conn struct {
	conn   net.Conn
	fr     *http2.Framer
	closed chan struct{} // closed once the server closed the connection

	wmu  sync.Mutex // writes to fr, and the header encoder
	hbuf bytes.Buffer
	henc *hpack.Encoder

	mu         sync.Mutex
	granted    *sync.Cond // signalled when a window grows or the connection ends
	connWindow int64
	initWindow int64
	windows    map[uint32]int64
	done       bool
	nextStream uint32
}

// dialH2 connects from peer to addr, over TLS if tlsConf is set, and
// exchanges the HTTP/2 preface.
func dialH2(ctx context.Context, addr string, peer net.IP, tlsConf *tls.Config, stats *attackStats) (*h2Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: peer}, Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsConf != nil {
		tc := tls.Client(conn, tlsConf)
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
	}
	stats.conns.Add(1)
	c := &h2Conn{conn: conn, connWindow: 65535, initWindow: 65535, windows: map[uint32]int64{}, nextStream: 1, closed: make(chan struct{})}
	c.granted = sync.NewCond(&c.mu)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(conn, bufio.NewReader(conn))
	c.fr.MaxHeaderListSize = 1 << 20
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.fr.WriteSettings(); err != nil {
		conn.Close()
		return nil, err
	}
	go c.readLoop()
	context.AfterFunc(ctx, func() { c.conn.Close() })
	return c, nil
}

func (c *h2Conn) readLoop() {
	defer func() {
		c.mu.Lock()
		c.done = true
		c.granted.Broadcast()
		c.mu.Unlock()
		c.conn.Close()
		close(c.closed)
	}()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				c.mu.Lock()
				for id := range c.windows {
					c.windows[id] += int64(v) - c.initWindow
				}
				c.initWindow = int64(v)
				c.granted.Broadcast()
				c.mu.Unlock()
			}
			c.write(func() error { return c.fr.WriteSettingsAck() })
		case *http2.PingFrame:
			if !f.IsAck() {
				c.write(func() error { return c.fr.WritePing(true, f.Data) })
			}
		case *http2.WindowUpdateFrame:
			c.mu.Lock()
			if f.StreamID == 0 {
				c.connWindow += int64(f.Increment)
			} else if _, ok := c.windows[f.StreamID]; ok {
				c.windows[f.StreamID] += int64(f.Increment)
			}
			c.granted.Broadcast()
			c.mu.Unlock()
		case *http2.RSTStreamFrame:
			c.mu.Lock()
			delete(c.windows, f.StreamID)
			c.mu.Unlock()
		case *http2.GoAwayFrame:
			return
		}
	}
}

func (c *h2Conn) write(f func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return f()
}

// open starts a gRPC call to Check with extra header fields; its header
// block is sent in frames of at most 16 KiB.
func (c *h2Conn) open(scheme string, extra ...hpack.HeaderField) (uint32, error) {
	c.mu.Lock()
	id := c.nextStream
	c.nextStream += 2
	c.windows[id] = c.initWindow
	c.mu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hbuf.Reset()
	for _, f := range append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: scheme},
		{Name: ":path", Value: "/usher.v1.AuthorizationService/Check"}, {Name: ":authority", Value: "usher"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, extra...) {
		c.henc.WriteField(f)
	}
	block := c.hbuf.Bytes()
	first := block[:min(len(block), 16<<10)]
	block = block[len(first):]
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(block) == 0}); err != nil {
		return id, err
	}
	for len(block) > 0 {
		frag := block[:min(len(block), 16<<10)]
		block = block[len(frag):]
		if err := c.fr.WriteContinuation(id, len(block) == 0, frag); err != nil {
			return id, err
		}
	}
	return id, nil
}

// send writes up to len(p) bytes of DATA on stream id, as far as the
// windows allow now; it waits for a window to open only if none is.
func (c *h2Conn) send(ctx context.Context, id uint32, p []byte) (int, error) {
	c.mu.Lock()
	for {
		w, open := c.windows[id]
		if !open || c.done || ctx.Err() != nil {
			c.mu.Unlock()
			return 0, errors.New("stream or connection closed")
		}
		if n := min(int64(len(p)), w, c.connWindow); n > 0 {
			c.windows[id] -= n
			c.connWindow -= n
			c.mu.Unlock()
			return int(n), c.write(func() error { return c.fr.WriteData(id, false, p[:n]) })
		}
		c.granted.Wait()
	}
}

func (c *h2Conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// wait returns when ctx ends or the server closes the connection.
func (c *h2Conn) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-c.closed:
		return errors.New("closed by the server")
	}
}

func (c *h2Conn) scheme() string {
	if _, ok := c.conn.(*tls.Conn); ok {
		return "https"
	}
	return "http"
}

// slowStreams opens as many Check calls with token as the server allows
// on one connection, each announcing a 4 MiB message, and sends every byte
// of each but the last, as fast as the server lets it.
func slowStreams(ctx context.Context, addr string, tlsConf *tls.Config, token string, stats *attackStats) error {
	c, err := dialH2(ctx, addr, slowStreamsPeer, tlsConf, stats)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	const announced = 4 << 20
	first := make([]byte, 16<<10)
	first[1], first[2], first[3], first[4] = announced>>24, announced>>16&0xff, announced>>8&0xff, announced&0xff
	zeros := make([]byte, 16<<10)
	type stream struct {
		id   uint32
		left int
	}
	var streams []*stream
	for range 100 {
		id, err := c.open(c.scheme(), hpack.HeaderField{Name: "authorization", Value: "Bearer " + token})
		if err != nil {
			return err
		}
		stats.slowStreams.Add(1)
		streams = append(streams, &stream{id: id, left: 5 + announced - 1})
	}
	for len(streams) > 0 {
		var open []*stream
		for _, s := range streams {
			chunk := zeros
			if s.left == 5+announced-1 {
				chunk = first
			}
			n, err := c.send(ctx, s.id, chunk[:min(len(chunk), s.left)])
			if err != nil {
				if c.isClosed() {
					return err
				}
				continue // the server reset the stream
			}
			stats.bodyBytes.Add(int64(n))
			if s.left -= n; s.left > 0 {
				open = append(open, s)
			}
		}
		streams = open
	}
	// Every stream withholds its last byte, for as long as the server
	// keeps the connection.
	return c.wait(ctx)
}

// hugeHeaderBlock sends one call whose header block is 8 MB, in
// CONTINUATION frames.
func hugeHeaderBlock(ctx context.Context, addr string, tlsConf *tls.Config, stats *attackStats) error {
	c, err := dialH2(ctx, addr, headersPeer, tlsConf, stats)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	stats.headerBlocks.Add(1)
	block := hugeBlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:16<<10]}); err != nil {
		return err
	}
	for rest := block[16<<10:]; len(rest) > 0; {
		frag := rest[:min(len(rest), 16<<10)]
		rest = rest[len(frag):]
		if err := c.fr.WriteContinuation(1, len(rest) == 0, frag); err != nil {
			return err
		}
	}
	return nil
}

// hugeBlock is the header block of a call with an 8 MB header, encoded
// once, as the first block of a connection.
var hugeBlock = sync.OnceValue(func() []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/usher.v1.AuthorizationService/Check"}, {Name: ":authority", Value: "usher"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "x-pad", Value: strings.Repeat("a", 8<<20)},
	} {
		enc.WriteField(f)
	}
	return b.Bytes()
})

// headersWithoutBody opens as many calls as the server allows on one
// connection, each with headers just under the limit, and sends no body.
func headersWithoutBody(ctx context.Context, addr string, tlsConf *tls.Config, stats *attackStats) error {
	c, err := dialH2(ctx, addr, headersPeer, tlsConf, stats)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	for i := range 100 {
		// A value of its own, so that HPACK cannot index it away.
		pad := fmt.Sprintf("%04d%s", i, strings.Repeat("b", 7<<10))
		if _, err := c.open(c.scheme(), hpack.HeaderField{Name: "x-pad", Value: pad}); err != nil {
			return err
		}
		stats.bodilessStreams.Add(1)
	}
	return c.wait(ctx)
}

// idleConns are connections opened and left silent.
type idleConns struct {
	attempted int
	held      []idleConn // those the server did not close at once
}

// idleConn is an idle connection and when the server must have closed it
// by: the handshake timeout after it opened, or, once it has sent the
// HTTP/2 preface, the idle timeout after that and the GOAWAY grpc-go then
// sends, whose ping goes unanswered and which it follows 5 s later with
// another, closing the connection a second after.
type idleConn struct {
	net.Conn
	closedBy time.Time
}

// Slack for a busy machine.
const slack = 2 * time.Second

// openIdle opens n connections from one peer as fast as it can, and
// leaves those the server holds silent: a third say nothing at all, a third
// finish the TLS handshake if there is one, and a third also send the
// HTTP/2 preface and settings.
func openIdle(ctx context.Context, t *testing.T, addr string, tlsConf *tls.Config, n int) *idleConns {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: idlePeer}}
	idle := &idleConns{attempted: n}
	var all []idleConn
	t.Cleanup(func() {
		for _, c := range all {
			c.Close()
		}
	})
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for i := range n {
		c, err := d.DialContext(dctx, "tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		all = append(all, idleConn{c, time.Now().Add(attackHandshake + slack)})
	}
	// Those refused are closed as soon as the server accepts them: wait
	// until it has caught up.
	idle.held = all
	for range 20 {
		time.Sleep(50 * time.Millisecond)
		var still []idleConn
		for _, c := range idle.held {
			if open(c, time.Millisecond) {
				still = append(still, c)
			}
		}
		if idle.held = still; len(still) <= attackPerPeer {
			break
		}
	}
	for i := range idle.held {
		c := &idle.held[i]
		if tlsConf != nil && i%3 != 0 {
			tc := tls.Client(c.Conn, tlsConf)
			tc.SetDeadline(time.Now().Add(500 * time.Millisecond))
			if err := tc.Handshake(); err != nil {
				continue // past the handshake timeout already, on a slow machine
			}
			tc.SetDeadline(time.Time{})
			c.Conn = tc
		}
		if i%3 == 2 {
			c.Write([]byte(http2.ClientPreface))
			http2.NewFramer(c, nil).WriteSettings()
			c.closedBy = time.Now().Add(attackIdleTimeout + 6*time.Second + slack)
		}
	}
	return idle
}

// closed checks that the server closed every idle connection it held in
// time: by its handshake or idle timeout and slack, or, on a machine so
// busy that the server's timers fire late, within lateGrace after that. One
// still open then is one the server kept.
func (idle *idleConns) closed(t *testing.T) {
	t.Helper()
	stillOpen, late := 0, 0
	for _, c := range idle.held {
		switch {
		case !open(c, time.Until(c.closedBy)):
		case open(c, time.Until(c.closedBy.Add(lateGrace))):
			stillOpen++
		default:
			late++
		}
	}
	if late > 0 {
		t.Logf("%d of %d idle connections were closed after their timeout and slack, within %s more", late, len(idle.held), lateGrace)
	}
	if stillOpen > 0 {
		t.Errorf("%d of %d idle connections still open %s past the handshake or idle timeout", stillOpen, len(idle.held), lateGrace)
	}
}

// lateGrace is how late, past its timeout and slack, a busy server may close
// an idle connection.
const lateGrace = 10 * time.Second

// open says whether the server has not closed c within wait.
func open(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(max(wait, time.Millisecond)))
	var b [1]byte
	for {
		_, err := c.Read(b[:])
		var ne net.Error
		switch {
		case err == nil:
			continue // a SETTINGS frame or a GOAWAY on its way
		case errors.As(err, &ne) && ne.Timeout():
			return true
		default:
			return false
		}
	}
}

// usher serve refuses a connection or watch limit it cannot apply naming
// the flag its user typed, not the field of the server's limits it sets.
func TestServeRefusesALimitNamingItsFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--stream-window", "1000"}, "--stream-window 1000: must be at least 65535"},
		{[]string{"--conn-window", "1000"}, "--conn-window 1000: must be at least 65535"},
		{[]string{"--max-conns-per-peer", "-1"}, "--max-conns-per-peer -1: must be at least 0"},
		{[]string{"--receive-budget", "1000"}, "--receive-budget 1000: must be 0 (no limit) or at least"},
		{[]string{"--keepalive-time", "0s"}, "--keepalive-time 0s: must be positive"},
		{[]string{"--request-timeout", "-1s"}, "--request-timeout -1s: must not be negative"},
		{[]string{"--max-watches", "-1"}, "--max-watches -1: must not be negative"},
		{[]string{"--watch-progress", "-1s"}, "--watch-progress -1s: must not be negative"},
		{[]string{"--watch-progress", "1ns"}, "--watch-progress 1ns: must be 0 (never) or at least 10ms"},
	} {
		// A serve that takes the limit stops at --policy-mode rather than
		// serve.
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "usher.db"),
			"--policy-mode", "no-such-mode"}, tc.args...)
		if _, err := runIn(args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("usher %s: %v; want it refused, saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	// The cluster's limits, refused before any etcd is dialled (this one
	// answers nothing).
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-max-txn-ops", "-1"}, "--etcd-max-txn-ops -1: must be at least 1"},
		{[]string{"--etcd-max-txn-ops", "0"}, "--etcd-max-txn-ops 0: must be at least 1"},
		{[]string{"--etcd-max-request-bytes", "-5"}, "--etcd-max-request-bytes -5: must be at least 1"},
	} {
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--etcd", "127.0.0.1:1"}, tc.args...)
		if _, err := runIn(args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("usher %s: %v; want it refused, saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
