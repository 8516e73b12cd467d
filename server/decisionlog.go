package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// the log never holds a call back.
type DecisionLog struct {
	threshold uint64 // a decision is kept when a random uint64 falls below it
	all       bool   // every decision is kept
	queue     chan decisionRecord
	quit      chan struct{}
	done      chan struct{}
	once      sync.Once
	out       *bufio.Writer
	closer    io.Closer // nil for stderr
	err       error     // the first write error, once done is closed
	written   atomic.Uint64
	dropped   atomic.Uint64
}

// DecisionQueue is how many decisions wait to be written before more are
// dropped.
const DecisionQueue = 4096

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
// probability rate (0 to 1).
func OpenDecisionLog(path string, rate float64) (*DecisionLog, error) {
	if rate < 0 || rate > 1 || math.IsNaN(rate) {
		return nil, fmt.Errorf("decision sample rate %v: want 0 to 1", rate)
	}
	if path == "stderr" {
		return NewDecisionLog(os.Stderr, nil, rate), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	return NewDecisionLog(f, f, rate), nil
}

// NewDecisionLog returns a decision log writing to w, which Close closes
// when closer is not nil, keeping each decision with probability rate.
func NewDecisionLog(w io.Writer, closer io.Closer, rate float64) *DecisionLog {
	l := &DecisionLog{
		all: rate >= 1, queue: make(chan decisionRecord, DecisionQueue),
		quit: make(chan struct{}), done: make(chan struct{}), out: bufio.NewWriterSize(w, 64<<10), closer: closer,
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

// write encodes what the queue holds, flushing whenever it runs dry, until
// Close.
func (l *DecisionLog) write() {
	defer close(l.done)
	enc := json.NewEncoder(l.out)
	put := func(r decisionRecord) {
		if err := enc.Encode(r); err != nil {
			l.fail(err)
			return
		}
		l.written.Add(1)
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
			if err := l.out.Flush(); err != nil {
				l.fail(err)
			}
		case <-l.quit:
			for {
				select {
				case r := <-l.queue:
					put(r)
				default:
					if err := l.out.Flush(); err != nil {
						l.fail(err)
					}
					return
				}
			}
		}
	}
}

// fail counts a decision lost to a write error and keeps the first error.
// A bufio.Writer that failed fails every write after: the log is then
// dead, and says so at Close.
func (l *DecisionLog) fail(err error) {
	l.dropped.Add(1)
	if l.err == nil {
		l.err = fmt.Errorf("decision log: %w", err)
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
	for _, o := range opts {
		if d, ok := o.(decisionLogOption); ok && d.l != nil {
			return d.l
		}
	}
	return nil
}
