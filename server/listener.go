package server

import (
	"net"
	"net/netip"
	"sync"
)

// limitListener holds at most max connections at once, and at most perPeer
// from one peer. A connection past either limit is accepted and closed at
// once, and logged: a listener that stopped accepting instead, as
// golang.org/x/net/netutil.LimitListener does, would leave every newcomer,
// a load balancer's health check among them, waiting in the kernel's
// backlog, and would never learn who was refused.
type limitListener struct {
	net.Listener
	max, perPeer int // 0: no limit
	refusals     *refusalLog

	mu    sync.Mutex
	total int
	peers map[string]int // open connections by peerKey
}

func newLimitListener(lis net.Listener, max, perPeer int, refusals *refusalLog) *limitListener {
	return &limitListener{Listener: lis, max: max, perPeer: perPeer, refusals: refusals, peers: map[string]int{}}
}

// Accept returns the next connection within the limits; those past them
// are closed and logged here, without returning.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer := peerKey(c.RemoteAddr())
		l.mu.Lock()
		total, fromPeer := l.total, l.peers[peer]
		admit := (l.max == 0 || total < l.max) && (l.perPeer == 0 || fromPeer < l.perPeer)
		if admit {
			l.total++
			l.peers[peer]++
		}
		l.mu.Unlock()
		switch {
		case admit:
			return &countedConn{Conn: c, release: func() { l.release(peer) }}, nil
		case l.max != 0 && total >= l.max:
			l.refusals.warn(refusedOverTotal, "connection refused: the server holds its limit of connections",
				"peer", c.RemoteAddr().String(), "max_conns", l.max)
		default:
			l.refusals.warn(refusedOverPeer, "connection refused: the peer holds its limit of connections",
				"peer", c.RemoteAddr().String(), "peer_key", peer, "max_conns_per_peer", l.perPeer)
		}
		c.Close()
	}
}

func (l *limitListener) release(peer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.peers[peer]--; l.peers[peer] <= 0 {
		delete(l.peers, peer)
	}
}

// peerKey is what one peer's connections are counted under: its IPv4
// address, or the /64 prefix of its IPv6 address, since a single IPv6 host
// is usually given a whole /64 to pick addresses from.
func peerKey(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return addr.String()
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	return netip.PrefixFrom(ip, 64).Masked().String()
}

// countedConn gives its place back to the listener when closed, once
// however often grpc-go closes it.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
