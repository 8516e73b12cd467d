package server

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// CallerShares bound the streams one caller of the callers file may hold
// of each pool the server keeps for all of them, so that no one caller, a
// media server's sidecar gone wrong or whose token leaked, can take a
// pool whole and leave the others none. A server without a callers file
// has one caller, anonymous, whose share is the whole pool. A caller's
// share of the live sessions and knocks is not among them: the session
// store, which counts them, across a cluster on etcd, keeps it
// (admission.MemoryOptions.CallerShare, etcdstore.Options.CallerShare),
// and refuses a Join or Knock past it (CALLER_SESSION_LIMIT).
type CallerShares struct {
	// Watches is the most Watch streams one caller may hold at once, of
	// WatchLimits.MaxStreams; 0 takes a quarter of those, at least one.
	Watches int
	// CallWatches is the most WatchCall streams one caller may hold at
	// once, of admission.Options.MaxWatchers; 0 takes a quarter of those,
	// at least one.
	CallWatches int
	// CallInitialEvents is the most events of initial states one caller's
	// WatchCall streams may hold at once, from when a stream starts until
	// its client has taken its call's initial state, of
	// admission.Options.MaxInitialEvents; 0 takes a quarter of those, at
	// least one. A caller that holds none may start a stream whose initial
	// state is larger than its share.
	CallInitialEvents int
	// CallInitialRate is how many events of whole initial states one
	// caller's WatchCall streams may start a second, on average, of
	// MaxInitialRate: each participant in one costs the node the work of
	// reading its session and its grant, under the locks every Join takes,
	// however soon its client ends the stream. 0 takes a quarter of
	// MaxInitialRate. A caller under it may start one larger than it, and
	// waits for the debt to be repaid before it starts another.
	CallInitialRate int
}

// MaxInitialRate is how many events of whole initial states the WatchCall
// streams of all callers together may start a second, of which each
// caller has a share (CallerShares.CallInitialRate).
const MaxInitialRate = 100_000

// sharingCaller names the caller of ctx whose share of the session
// store's live sessions and knocks its Joins and Knocks count against
// (admission.MemoryOptions.CallerShare, etcdstore.Options.CallerShare):
// the authenticated caller, or "" on a server without a callers file,
// whose one anonymous caller's share is the whole store.
func sharingCaller(ctx context.Context) string {
	if c, ok := callerIn(ctx); ok {
		return c.Name
	}
	return ""
}

// WithCallerShares sets each caller's share of the stream pools; a server
// given none gives each caller a quarter of each pool.
func WithCallerShares(c CallerShares) grpc.ServerOption { return sharesOption{shares: c} }

// sharesOption carries CallerShares through New's grpc.ServerOption list;
// gRPC itself ignores it.
type sharesOption struct {
	grpc.EmptyServerOption
	shares CallerShares
}

// callerShares finds the CallerShares among opts, or the zero value.
func callerShares(opts []grpc.ServerOption) CallerShares {
	var c CallerShares
	for _, o := range opts {
		if s, ok := o.(sharesOption); ok {
			c = s.shares
		}
	}
	return c
}

// shareOf is a share of a pool of n: given, or else a quarter of the pool,
// at least one. A quarter leaves the pool to at least four callers at once
// however each behaves.
func shareOf(given, n int) int {
	if given > 0 {
		return given
	}
	return max(1, n/4)
}

// streamShares counts the streams of one pool that each holder (a caller,
// a connection) holds, at most limit each.
type streamShares struct {
	limit int

	mu   sync.Mutex
	held map[string]int // by holder; a holder of none has no entry
}

func newStreamShares(limit int) *streamShares {
	return &streamShares{limit: limit, held: map[string]int{}}
}

// take counts one more stream of holder in, or reports false when holder
// already holds its share; release, called once, counts it out.
func (s *streamShares) take(holder string) (release func(), ok bool) {
	return s.takeN(holder, 1)
}

// takeN counts n more of holder in, or reports false when they would take
// holder past its share while it holds some; release, called once, counts
// them out.
func (s *streamShares) takeN(holder string, n int) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if held := s.held[holder]; held > 0 && held+n > s.limit || held >= s.limit {
		return nil, false
	}
	s.held[holder] += n
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.held[holder] -= n; s.held[holder] <= 0 {
			delete(s.held, holder)
		}
	}, true
}

// paces bounds how fast each holder (a caller) spends something whose work
// is proportional to what is spent: a holder may take while its balance is
// above zero, and the balance refills at rate a second, up to a second's
// worth. One take may bring it below zero, into a debt the holder repays
// before it takes again: a take larger than a second's worth goes through
// once, and no holder spends more than rate a second on average.
type paces struct {
	rate float64

	mu sync.Mutex
	by map[string]*balance // by holder; the callers of the callers file
}

type balance struct {
	left float64
	at   time.Time
}

func newPaces(rate int) *paces { return &paces{rate: float64(rate), by: map[string]*balance{}} }

// balanceAt is holder's balance, refilled up to now. p.mu is held.
func (p *paces) balanceAt(holder string, now time.Time) *balance {
	b := p.by[holder]
	if b == nil {
		b = &balance{left: p.rate, at: now}
		p.by[holder] = b
	}
	if now.After(b.at) {
		b.left = min(p.rate, b.left+now.Sub(b.at).Seconds()*p.rate)
		b.at = now
	}
	return b
}

// take takes n from holder's balance at now, below zero if need be, unless
// the balance is not above zero: then it reports how long until it is.
// Taking and looking are one step, so that a holder's takes at once go
// through one at a time, each while the last left something.
func (p *paces) take(holder string, n int, now time.Time) (wait time.Duration, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.balanceAt(holder, now)
	if b.left <= 0 {
		return time.Duration((-b.left/p.rate + 1e-3) * float64(time.Second)).Round(time.Millisecond), false
	}
	b.left -= float64(n)
	return 0, true
}

// give gives n back to holder's balance (n < 0 takes more), up to a
// second's worth.
func (p *paces) give(holder string, n int, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.balanceAt(holder, now)
	b.left = min(p.rate, b.left+float64(n))
}

// initialPace is what a WatchCall's whole initial state took from the
// balances of the server and of its caller ("" for none): an estimate,
// which settle makes what the state held.
type initialPace struct {
	server, callers *paces
	caller          string
	took            int
}

// settle makes what p took the events the state held: 0 gives all back, for
// a watch that was refused. A nil p took nothing.
func (p *initialPace) settle(events int) {
	if p == nil {
		return
	}
	now := time.Now()
	p.server.give("", p.took-events, now)
	if p.caller != "" {
		p.callers.give(p.caller, p.took-events, now)
	}
	p.took = events
}

// paceInitial takes the n events of a WatchCall's whole initial state of
// call from the balances of the server (server, its rate MaxInitialRate)
// and of the caller of ctx (callers, each its share), or refuses the
// stream when either has none left, naming the rate and when to watch
// again. A call without a caller takes from the server's balance alone: it
// is the one anonymous caller, whose share is the whole, as in
// takeCallerShare.
func paceInitial(ctx context.Context, server, callers *paces, call string, n int) (*initialPace, error) {
	c, isCaller := callerIn(ctx)
	now := time.Now()
	p := &initialPace{server: server, callers: callers, took: n}
	if isCaller {
		if wait, ok := callers.take(c.Name, n, now); !ok {
			rate := strconv.Itoa(int(callers.rate))
			return nil, refuse(codes.ResourceExhausted,
				fmt.Sprintf("resource %q: caller %q has started WatchCall streams whose calls hold more than the %s events a second one caller may start: watch again in %s",
					clip(call), c.Name, rate, wait),
				details{reason: reasonCallerInitialRate, field: "resource", value: call,
					meta: map[string]string{"limit": rate, "caller": c.Name, "events": strconv.Itoa(n), "retry_after": wait.String()},
					why:  fmt.Sprintf("one caller's WatchCall streams start whole initial states of at most %s events a second", rate)})
		}
		p.caller = c.Name
	}
	if wait, ok := server.take("", n, now); !ok {
		if isCaller {
			callers.give(c.Name, n, now)
		}
		rate := strconv.Itoa(int(server.rate))
		return nil, refuse(codes.ResourceExhausted,
			fmt.Sprintf("resource %q: this server's WatchCall streams have started calls of more than the %s events a second it reads: watch again in %s",
				clip(call), rate, wait),
			details{reason: reasonInitialRate, field: "resource", value: call,
				meta: map[string]string{"limit": rate, "events": strconv.Itoa(n), "retry_after": wait.String()},
				why:  fmt.Sprintf("the server's WatchCall streams start whole initial states of at most %s events a second", rate)})
	}
	return p, nil
}

// takeCallerShare counts a stream of the caller of ctx against its share
// of s, or refuses it, naming the caller and its share. what names the
// streams ("Watch", "WatchCall"); field and value, when field is not "",
// the request field the pool's own refusal names. A call without a caller
// (a server without a callers file) is not counted: every such call is the
// one anonymous caller, whose share is the whole pool.
func takeCallerShare(ctx context.Context, s *streamShares, what, field, value string) (release func(), err error) {
	c, ok := callerIn(ctx)
	if !ok {
		return func() {}, nil
	}
	if release, ok := s.take(c.Name); ok {
		return release, nil
	}
	msg := fmt.Sprintf("caller %q holds %d %s streams, as many as one caller may hold at once: end one of them, or watch again later",
		c.Name, s.limit, what)
	if field != "" {
		msg = fmt.Sprintf("%s %q: %s", field, clip(value), msg)
	}
	return nil, refuse(codes.ResourceExhausted, msg,
		details{reason: reasonCallerWatchLimit, field: field, value: value,
			meta: map[string]string{"limit": strconv.Itoa(s.limit), "caller": c.Name},
			why:  fmt.Sprintf("one caller holds at most %d %s streams at once", s.limit, what)})
}

// takeInitialShare counts the n events of a WatchCall's initial state
// against the share of s of the caller of ctx, or refuses the stream,
// naming the caller, its share and the call. A call without a caller is
// not counted, as in takeCallerShare.
func takeInitialShare(ctx context.Context, s *streamShares, call string, n int) (release func(), err error) {
	c, ok := callerIn(ctx)
	if !ok || n == 0 {
		return func() {}, nil
	}
	if release, ok := s.takeN(c.Name, n); ok {
		return release, nil
	}
	return nil, refuse(codes.ResourceExhausted,
		fmt.Sprintf("resource %q: caller %q holds as many events of initial states not yet taken as one caller may, %d; "+
			"its initial state of %d events does not fit: read the caller's other WatchCall streams, or watch again later", clip(call), c.Name, s.limit, n),
		details{reason: reasonCallerInitialLimit, field: "resource", value: call,
			meta: map[string]string{"limit": strconv.Itoa(s.limit), "caller": c.Name, "events": strconv.Itoa(n)},
			why:  fmt.Sprintf("one caller's WatchCall streams hold at most %d events of initial states not yet taken", s.limit)})
}
