package server

import (
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// refusal is a kind of event where the server turns a peer away before
// any call is authenticated.
type refusal int

const (
	refusedOverTotal      refusal = iota // a connection past ConnLimits.MaxConns
	refusedOverPeer                      // a connection past ConnLimits.MaxConnsPerPeer
	refusedBudget                        // a connection's reads held back: the receive budget is spent
	refusedSlowRequest                   // a connection closed: a request did not arrive within RequestTimeout
	refusedHeaderTooLarge                // a header block larger than ConnLimits.MaxHeaderBytes
	refusalKinds
)

// refusalLog logs refusals at warn level, at most refusalBurst lines at
// once and refusalsPerSecond a second of each kind, so that an attacker
// cannot flood the log or make logging the cost of an attack. A line says
// how many of its kind were not logged since the previous one.
type refusalLog struct {
	logger *slog.Logger
	kinds  [refusalKinds]struct {
		limiter *rate.Limiter
		dropped atomic.Int64
	}
}

const (
	refusalsPerSecond = 2
	refusalBurst      = 5
)

func newRefusalLog(logger *slog.Logger) *refusalLog {
	r := &refusalLog{logger: logger}
	for i := range r.kinds {
		r.kinds[i].limiter = rate.NewLimiter(rate.Every(time.Second/refusalsPerSecond), refusalBurst)
	}
	return r
}

// warn logs msg with args unless too many lines of kind were logged lately.
func (r *refusalLog) warn(kind refusal, msg string, args ...any) {
	k := &r.kinds[kind]
	if !k.limiter.Allow() {
		k.dropped.Add(1)
		return
	}
	if n := k.dropped.Swap(0); n > 0 {
		args = append(args, "not_logged_since_last", n)
	}
	r.logger.Warn(msg, args...)
}
