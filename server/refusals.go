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
	refusedSendBudget                    // an answer refused: the send budget is spent
	refusalKinds
)

// refusalLog logs refusals at warn level, at most refusalBurst lines at
// once and refusalsPerSecond a second of each kind, so that an attacker
// cannot flood the log or make logging the cost of an attack. A line says
// how many of its kind were not logged since the previous one.
type refusalLog struct {
	logger *slog.Logger
	kinds  [refusalKinds]lineBudget
}

const (
	refusalsPerSecond = 2
	refusalBurst      = 5
)

func newRefusalLog(logger *slog.Logger) *refusalLog {
	r := &refusalLog{logger: logger}
	for i := range r.kinds {
		r.kinds[i] = newLineBudget(refusalsPerSecond, refusalBurst)
	}
	return r
}

// warn logs msg with args unless too many lines of kind were logged lately.
func (r *refusalLog) warn(kind refusal, msg string, args ...any) {
	ok, dropped := r.kinds[kind].take()
	if !ok {
		return
	}
	if dropped > 0 {
		args = append(args, notLoggedField, dropped)
	}
	r.logger.Warn(msg, args...)
}

// lineBudget bounds the log lines of one kind of event that a peer may
// cause as fast as the server turns it away: at most a burst at once and
// a number a second, counting those left out.
type lineBudget struct {
	limiter *rate.Limiter
	dropped *atomic.Int64
}

func newLineBudget(perSecond, burst int) lineBudget {
	return lineBudget{limiter: rate.NewLimiter(rate.Every(time.Second/time.Duration(perSecond)), burst), dropped: new(atomic.Int64)}
}

// take says whether one more line may be logged, and how many were left
// out since the last that was.
func (b lineBudget) take() (ok bool, dropped int64) {
	if !b.limiter.Allow() {
		b.dropped.Add(1)
		return false, 0
	}
	return true, b.dropped.Swap(0)
}

// notLoggedField is the field of a line saying how many of its kind were
// left out since the previous one.
const notLoggedField = "not_logged_since_last"
