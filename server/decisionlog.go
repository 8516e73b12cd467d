package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// DecisionLog writes a sample of the decisions a server makes (Check,
// CheckBatch's items, Join) as JSON lines. A call that is sampled hands its
// decision to a bounded queue and goes on; a goroutine of the log's encodes
// and writes. When the queue is full, the decision is dropped and counted:
// the log never holds a call back. A write that fails drops and counts the
// decisions it carried, is logged, and the next write tries again.
type DecisionLog struct {
	threshold uint64 // a decision is kept when a random uint64 falls below it
	all       bool   // every decision is kept
	queue     chan decisionRecord
	quit      chan struct{}
	done      chan struct{}
	once      sync.Once
	out       *tailWriter
	closer    io.Closer // nil for stderr
	logger    *slog.Logger
	err       error // the first write error, once done is closed
	failing   bool  // the last write failed; the writer's goroutine's
	written   atomic.Uint64
	dropped   atomic.Uint64
}

// DecisionQueue is how many decisions wait to be written before more are
// dropped.
const DecisionQueue = 4096

// decisionBatch is how many bytes of encoded decisions one write carries at
// most, a decision's worth more.
const decisionBatch = 64 << 10

// tailWriter remembers the last byte that reached its writer, so that a
// write that failed part-way, leaving half a line, is followed by the end
// of that line before the next decision.
type tailWriter struct {
	w    io.Writer
	last byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if n > 0 {
		t.last = p[n-1]
	}
	return n, err
}

// decisionRecord is one line of the log.
type decisionRecord struct {
	Time       time.Time `json:"time"`
	Method     string    `json:"method"`
	Caller     string    `json:"caller"`
	Subject    string    `json:"subject"`
	Permission string    `json:"permission,omitempty"`
	Resource   string    `json:"resource"`
	Allowed    bool      `json:"allowed"`
	Reason     string    `json:"reason"`
	Role       string    `json:"role,omitempty"`
	Scope      string    `json:"scope,omitempty"`
	BlockID    string    `json:"block_id,omitempty"`
	Session    string    `json:"session_id,omitempty"`
	Error      string    `json:"error,omitempty"`
	Revision   uint64    `json:"revision"`
}

// OpenDecisionLog opens a decision log appending to path, or writing to
// the process's stderr when path is "stderr", keeping each decision with
// probability rate (0 to 1). Failed writes are logged to logger.
func OpenDecisionLog(path string, rate float64, logger *slog.Logger) (*DecisionLog, error) {
	if rate < 0 || rate > 1 || math.IsNaN(rate) {
		return nil, fmt.Errorf("decision sample rate %v: want 0 to 1", rate)
	}
	if path == "stderr" {
		return NewDecisionLog(os.Stderr, nil, rate, logger), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	return NewDecisionLog(f, f, rate, logger), nil
}

// NewDecisionLog returns a decision log writing to w, which Close closes
// when closer is not nil, keeping each decision with probability rate and
// logging failed writes to logger (none when nil).
func NewDecisionLog(w io.Writer, closer io.Closer, rate float64, logger *slog.Logger) *DecisionLog {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &DecisionLog{
		all: rate >= 1, queue: make(chan decisionRecord, DecisionQueue),
		quit: make(chan struct{}), done: make(chan struct{}), out: &tailWriter{w: w}, closer: closer, logger: logger,
	}
	if rate > 0 && rate < 1 {
		l.threshold = uint64(rate * (1 << 64))
	}
	go l.write()
	return l
}

// Written and Dropped count the decisions written and those dropped for a
// full queue or a failed write.
func (l *DecisionLog) Written() uint64 { return l.written.Load() }
func (l *DecisionLog) Dropped() uint64 { return l.dropped.Load() }

// Close writes what is queued, stops the log and closes its file. Calls
// still running may go on offering decisions, which are dropped.
func (l *DecisionLog) Close() error {
	l.once.Do(func() { close(l.quit) })
	<-l.done
	if l.closer != nil {
		return errors.Join(l.err, l.closer.Close())
	}
	return l.err
}

// sampled says whether to keep one more decision: a draw from the runtime's
// per-thread generator, no lock and no allocation.
func (l *DecisionLog) sampled() bool {
	return l.all || (l.threshold > 0 && rand.Uint64() < l.threshold)
}

// offer queues r unless the queue is full.
func (l *DecisionLog) offer(ctx context.Context, r decisionRecord) {
	r.Time = time.Now()
	r.Caller = callerOf(ctx)
	select {
	case l.queue <- r:
	default:
		l.dropped.Add(1)
	}
}

// check offers a Check's or a CheckBatch item's decision, if sampled.
func (l *DecisionLog) check(ctx context.Context, method string, q authz.Query, d authz.Decision, err error, rev authz.Revision) {
	if !l.sampled() {
		return
	}
	if len(l.queue) == cap(l.queue) {
		l.dropped.Add(1)
		return
	}
	// The names are copied, into one string: a request's strings may share
	// the request's bytes (codec.Alias), all of which a record waiting in
	// the queue would otherwise keep.
	// Join, unlike +, copies even when two of the three are empty.
	if err != nil {
		// The names of an invalid item are bounded only by the request's
		// size: a record keeps, and the log writes, what a refusal quotes.
		q = authz.Query{Subject: clip(q.Subject), Permission: clip(q.Permission), Resource: clip(q.Resource)}
	}
	names := strings.Join([]string{q.Subject, q.Permission, q.Resource}, "")
	p, r := len(q.Subject), len(q.Subject)+len(q.Permission)
	rec := decisionRecord{Method: method, Subject: names[:p], Permission: names[p:r], Resource: names[r:], Revision: uint64(rev)}
	if err != nil {
		rec.Reason, rec.Error = decisionInvalid, err.Error()
	} else {
		rec.Allowed, rec.Role, rec.Scope, rec.BlockID = d.Allowed, d.Role, d.Scope, d.BlockID
		if int(d.Reason) < len(reasonNames) {
			rec.Reason = reasonNames[d.Reason]
		}
	}
	l.offer(ctx, rec)
}

// join offers a Join's outcome, if sampled.
func (l *DecisionLog) join(ctx context.Context, subject, resource string, res admission.Result) {
	if !l.sampled() {
		return
	}
	l.offer(ctx, decisionRecord{
		Method: "Join", Subject: subject, Resource: resource, Allowed: res.Outcome == admission.Admitted,
		Reason: res.Outcome.String(), Role: res.Role, Scope: res.Scope, BlockID: res.BlockID, Session: res.Session,
		Revision: uint64(res.Revision),
	})
}

// write encodes what the queue holds, writing whenever it runs dry or a
// batch is full, until Close.
func (l *DecisionLog) write() {
	defer close(l.done)
	var batch bytes.Buffer
	n := 0 // decisions in batch
	enc := json.NewEncoder(&batch)
	put := func(r decisionRecord) {
		if err := enc.Encode(r); err != nil {
			l.fail(err, 1)
			return
		}
		if n++; batch.Len() >= decisionBatch {
			l.flush(&batch, n)
			n = 0
		}
	}
	for {
		select {
		case r := <-l.queue:
			put(r)
			for drained := false; !drained; {
				select {
				case r := <-l.queue:
					put(r)
				default:
					drained = true
				}
			}
			l.flush(&batch, n)
			n = 0
		case <-l.quit:
			for {
				select {
				case r := <-l.queue:
					put(r)
				default:
					l.flush(&batch, n)
					return
				}
			}
		}
	}
}

// flush writes the n decisions batch holds, ending first the half line a
// failed write may have left, and empties it.
func (l *DecisionLog) flush(batch *bytes.Buffer, n int) {
	defer batch.Reset()
	if n == 0 {
		return
	}
	var err error
	if l.out.last != 0 && l.out.last != '\n' {
		_, err = l.out.Write([]byte{'\n'})
	}
	if err == nil {
		_, err = l.out.Write(batch.Bytes())
	}
	if err != nil {
		l.fail(err, n)
		return
	}
	l.written.Add(uint64(n))
	if l.failing {
		l.failing = false
		l.logger.Info("the decision log writes again", "dropped_total", l.Dropped())
	}
}

// fail counts the decisions lost to a write error, keeps the first error
// for Close and logs the first of a run of failures.
func (l *DecisionLog) fail(err error, n int) {
	l.dropped.Add(uint64(n))
	if l.err == nil {
		l.err = fmt.Errorf("decision log: %w", err)
	}
	if !l.failing {
		l.failing = true
		l.logger.Error("the decision log failed to write; decisions are dropped and counted until it writes again", "error", err)
	}
}

// WithDecisionLog makes New write a sample of its decisions to l. The
// caller closes l once the server has stopped.
func WithDecisionLog(l *DecisionLog) grpc.ServerOption {
	return decisionLogOption{l: l}
}

type decisionLogOption struct {
	grpc.EmptyServerOption
	l *DecisionLog
}

func decisionLogOf(opts []grpc.ServerOption) *DecisionLog {
	d, _ := optionOf[decisionLogOption](opts)
	return d.l
}
