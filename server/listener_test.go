package server

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPeerKey(t *testing.T) {
	for _, tc := range []struct {
		name, addr, key string
	}{
		{"an IPv4 peer is its address", "192.0.2.7:4000", "192.0.2.7"},
		{"an IPv4 peer over IPv6 is its IPv4 address", "[::ffff:192.0.2.7]:4000", "192.0.2.7"},
		{"an IPv6 peer is its /64", "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:4000", "2001:db8:1:2::/64"},
		{"IPv6 addresses of one /64 are one peer", "[2001:db8:1:2::1]:5000", "2001:db8:1:2::/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, err := net.ResolveTCPAddr("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got := peerKey(addr); got != tc.key {
				t.Errorf("peerKey(%s) = %q, want %q", tc.addr, got, tc.key)
			}
		})
	}
}

func TestRoomForConns(t *testing.T) {
	for fds, want := range map[uint64]int{1024: 960, 20000: 19936, 100: 50, 1 << 40: 1 << 30} {
		if got := roomForConns(fds); got != want {
			t.Errorf("roomForConns(%d) = %d, want %d", fds, got, want)
		}
	}
}

// syncLog is a log that tests read while the server writes it.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// dialFrom connects to addr from a loopback address of its own; Linux
// routes all of 127.0.0.0/8 to lo, other systems may not.
func dialFrom(t *testing.T, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot connect from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin says whether the listener's side closed c within wait.
func closedWithin(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncLog
	lis := newLimitListener(inner, 4, 2, newRefusalLog(slog.New(slog.NewTextHandler(&logs, nil))))
	defer lis.Close()
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	addr := inner.Addr().String()
	// A connection held stays open a moment; one refused is closed as soon
	// as the listener accepts it, however long that takes on a loaded
	// machine. The listener takes connections in the order they came, so
	// once one is refused, every one before it was held or refused.
	held := func(from string) (net.Conn, bool) {
		t.Helper()
		c := dialFrom(t, addr, from)
		return c, !closedWithin(c, 300*time.Millisecond)
	}
	refused := func(from string) bool {
		t.Helper()
		return closedWithin(dialFrom(t, addr, from), 10*time.Second)
	}

	if _, ok := held("127.0.0.2"); !ok {
		t.Fatal("the first connection of a peer was closed")
	}
	if _, ok := held("127.0.0.2"); !ok {
		t.Fatal("the second connection of a peer, at its limit of 2, was closed")
	}
	if !refused("127.0.0.2") {
		t.Fatal("a third connection of a peer with a limit of 2 was held")
	}
	if _, ok := held("127.0.0.3"); !ok {
		t.Fatal("another peer's connection was closed")
	}
	if _, ok := held("127.0.0.4"); !ok {
		t.Fatal("the fourth connection, at the total of 4, was closed")
	}
	if !refused("127.0.0.5") {
		t.Fatal("a fifth connection was held with a total of 4")
	}
	(<-accepted).Close()
	if _, ok := held("127.0.0.5"); !ok {
		t.Fatal("a connection was closed after one of the 4 held ended")
	}

	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`level=WARN msg="connection refused: the peer holds its limit of connections" peer=127\.0\.0\.2:\d+ peer_key=127\.0\.0\.2 max_conns_per_peer=2`),
		regexp.MustCompile(`level=WARN msg="connection refused: the server holds its limit of connections" peer=127\.0\.0\.5:\d+ max_conns=4`),
	} {
		if !want.MatchString(logs.String()) {
			t.Errorf("the log does not match %s:\n%s", want, logs.String())
		}
	}

	// A flood of refusals, the server holding its 4, writes a few lines,
	// then says how many it left out. A flood that takes longer, on a
	// loaded machine, may write refusalsPerSecond more a second.
	began := time.Now()
	for range 50 {
		refused("127.0.0.6")
	}
	flood := time.Since(began)
	time.Sleep(time.Second / refusalsPerSecond)
	refused("127.0.0.6")
	lines := strings.Count(logs.String(), "the server holds its limit")
	if lines > refusalBurst+3+int(flood.Seconds()*refusalsPerSecond) {
		t.Errorf("52 refusals in %s wrote %d lines:\n%s", flood, lines, logs.String())
	}
	if !regexp.MustCompile(`server holds its limit.* not_logged_since_last=\d+`).MatchString(logs.String()) {
		t.Errorf("no line says how many refusals were not logged:\n%s", logs.String())
	}
}

// The metrics listener's refusals say they are its own: its limits are not
// the gRPC port's (--max-conns, --max-conns-per-peer), which an operator
// reading "the peer holds its limit of connections" would look up first.
func TestTheMetricsListenerNamesItselfInItsRefusals(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncLog
	hs := ServeMetrics(lis, NewMetrics(), false, slog.New(slog.NewTextHandler(&logs, nil)))
	defer hs.Close()
	addr := lis.Addr().String()
	for range MaxMetricsConnsPerPeer {
		dialFrom(t, addr, "127.0.0.2")
	}
	if !closedWithin(dialFrom(t, addr, "127.0.0.2"), 10*time.Second) {
		t.Fatalf("connection %d of one peer was held", MaxMetricsConnsPerPeer+1)
	}
	want := regexp.MustCompile(`level=WARN msg="connection refused: the peer holds its limit of connections" listener=metrics peer=127\.0\.0\.2:\d+ peer_key=127\.0\.0\.2 max_conns_per_peer=4`)
	if !want.MatchString(logs.String()) {
		t.Errorf("the log does not match %s:\n%s", want, logs.String())
	}
}

// A client that asks the metrics listener for answers and does not read
// them, or announces a request body it never sends, holds its connection
// only until the request has waited MetricsWriteTimeout to be answered:
// the listener takes four such connections from a peer, and sixteen from
// four, and would otherwise keep every scraper out for good.
func TestTheMetricsListenerClosesConnectionsThatHoldIt(t *testing.T) {
	for _, tc := range []struct{ name, send string }{
		// Thousands of scrapes, asked at once and never read.
		{"answers not read", strings.Repeat("GET /metrics HTTP/1.1\r\nHost: usher\r\n\r\n", 2000)},
		// A body the server reads what is left of once it has answered.
		{"a body never sent", "GET /metrics HTTP/1.1\r\nHost: usher\r\nContent-Length: 10\r\n\r\n"},
		// A profile's seconds give it longer; /metrics is no profile, and
		// the listener serves none without --pprof.
		{"a body never sent, asking for a day", "GET /metrics?seconds=86400 HTTP/1.1\r\nHost: usher\r\nContent-Length: 10\r\n\r\n"},
		{"a profile's body never sent without profiling", "GET /debug/pprof/profile?seconds=86400 HTTP/1.1\r\nHost: usher\r\nContent-Length: 10\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var logs syncLog
			hs := serveMetrics(lis, NewMetrics(), false, slog.New(slog.NewTextHandler(&logs, nil)), 200*time.Millisecond)
			defer hs.Close()
			addr := lis.Addr().String()
			for range MaxMetricsConnsPerPeer {
				c := dialFrom(t, addr, "127.0.0.2")
				c.(*net.TCPConn).SetReadBuffer(4 << 10)
				go c.Write([]byte(tc.send))
			}
			client := http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
			defer client.CloseIdleConnections()
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				resp, err := client.Get("http://" + addr + "/metrics")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("a scrape from the peer was still refused 20 s on (%v): its connections holding the listener are held", err)
				}
			}
		})
	}
}
