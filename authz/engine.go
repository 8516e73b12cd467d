package authz

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Backend is the storage the engine commits to and the index is fed from.
// storage/storagetest is the conformance suite every implementation passes.
type Backend interface {
	// Commit commits each write whose guards no commit has touched after
	// the revision it was planned at, in order, in one atomic transaction:
	// the writes that conflict are left out and reported, the others take
	// consecutive revisions. It returns only once those are durable. A
	// write it refuses alone (one too large for it to commit), or one it
	// may or may not have committed after others of the batch were, has
	// its result's Err set, and the others are as their results say. An
	// error means nothing was committed, unless it wraps ErrOutcomeUnknown;
	// one that wraps ErrWritesStopped says every Commit will fail until the
	// backend is reopened.
	Commit(ctx context.Context, ws []Write) ([]Committed, error)
	// Load sends every entity at one revision to sink and returns that
	// revision; Watch from it continues with no gap.
	Load(ctx context.Context, sink Sink) (Revision, error)
	// Watch yields every change set committed after after, in order, until
	// ctx ends or an error: ErrCompacted when the log no longer reaches
	// back to after.
	Watch(ctx context.Context, after Revision) iter.Seq2[ChangeSet, error]
	// Changes returns up to limit change sets after after, oldest first;
	// ErrCompacted when the log no longer reaches back that far.
	Changes(ctx context.Context, after Revision, limit int) ([]ChangeSet, error)
	// ChangeCounts returns how many changes each of up to limit change
	// sets after after holds, oldest first, as many as Changes would
	// return, or its ErrCompacted, without decoding them: a reader with a
	// budget of changes need not decode a policy's hundred thousand to
	// learn they do not fit.
	ChangeCounts(ctx context.Context, after Revision, limit int) ([]int, error)
	// CommitTime is when rev was committed, read without decoding its
	// change set; ok is false when the log does not hold it (compacted
	// away, or not committed yet).
	CommitTime(ctx context.Context, rev Revision) (t time.Time, ok bool, err error)
	// Close releases the backend; calls after it fail.
	Close() error
}

// PartReader is a Backend that reads a part of a change set without
// decoding the rest: a data file's log, where the deletion of a call with
// a livestream's audience granted on it holds a million changes.
type PartReader interface {
	// ChangePart returns the first change set after after, with only n of
	// its changes from the from-th, and how many it holds; an empty change
	// set when there is none; ErrCompacted as Changes does.
	ChangePart(ctx context.Context, after Revision, from, n int) (part ChangeSet, total int, err error)
}

// Write is a change set on its way to a backend, with what its plan read.
type Write struct {
	// Planned is the revision of the index the change set was planned on.
	Planned Revision
	// Guards are the keys the plan read: if a commit after Planned touched
	// any of them, the write conflicts.
	Guards []string
	// Touches are the keys this write changes.
	Touches []string
	Set     ChangeSet
}

// Committed is what became of one write of a Commit.
type Committed struct {
	// Revision is the write's revision, when it was committed.
	Revision Revision
	// Conflict is a guard that moved, when it was not; Latest is the
	// revision the backend was at.
	Conflict string
	Latest   Revision
	// Err, when set, is why this write alone failed, the batch's other
	// writes being as their own results say: a *TooLargeError, which
	// committed nothing of it, or an error wrapping ErrOutcomeUnknown,
	// when it may have been committed.
	Err error
}

// TooLargeError is a backend's refusal of one write that holds more than
// the backend commits at once (an etcd transaction's operations): the
// write commits nothing, however often it is tried.
type TooLargeError struct {
	// Needs is how many the write needs, Limit how many one commit may
	// hold, of What.
	Needs, Limit int
	What         string
	// Hint says how to raise Limit.
	Hint string
}

func (e *TooLargeError) Error() string {
	msg := fmt.Sprintf("the write needs %d %s, more than %d", e.Needs, e.What, e.Limit)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// A Sizer is a Backend that refuses a write larger than it commits at
// once; Fits reports, without committing anything, the *TooLargeError
// that Commit would give w, or nil. A dry run asks it, so that what it
// accepts is what a commit would.
type Sizer interface {
	Fits(w Write) error
}

// ErrCompacted is returned by Watch and Changes for a revision the change
// log no longer reaches back to: the reader must load a snapshot again.
var ErrCompacted = errors.New("the change log was compacted past the requested revision")

// Author says who makes a write: the authenticated caller, and the end user
// it acts for, if any.
type Author struct {
	Caller string
	Actor  string
}

// maxAttempts is how many times a write is planned again after conflicting
// with another before it is given up as Aborted.
const maxAttempts = 10

// maxBatch is how many writes one backend transaction carries at most.
const maxBatch = 64

// Engine validates writes against the index and commits them through the
// backend, so that what was checked is what is written.
//
// A write is planned under the index's view lock, at the index's revision,
// recording the keys it read (guards) and the keys it changes (touches). It
// then joins the queue of the committer, which sends whatever is queued to
// the backend in one transaction (group commit). The backend commits each
// write whose guards no later commit touched; the others are planned again.
// Within one process, a write whose guards a queued write is about to touch
// waits for that write instead of conflicting with it.
type Engine struct {
	backend Backend
	clock   Clock
	logger  *slog.Logger
	timeout time.Duration
	gather  time.Duration
	limits  Limits
	idx     atomic.Pointer[Index]
	// largeRead is held by a read of the log that decodes a change set
	// of more than MaxPageChanges whole (a filtered ListChanges): one at a
	// time, as a million changes take some 700 MB decoded.
	largeRead chan struct{}

	mu      sync.Mutex
	idle    *sync.Cond     // broadcast when a batch ends
	queued  []*pending     // planned, waiting for the committer
	touched map[string]int // touches of queued and committing writes
	running bool           // the committer goroutine is running
	full    chan struct{}  // wakes a gathering committer when a batch is full
	// settled is when the last batch was committed (or failed), and
	// settledN how many writes it held: writes trickle in while the last
	// batch was small and settled within the gather window.
	settled  time.Time
	settledN int

	listeners atomic.Pointer[[]func(*Index, *ChangeSet)]
	commits   atomic.Pointer[func(CommitStats)]

	stop    context.CancelFunc
	fed     chan struct{} // closed when the feed goroutine returns
	state   atomic.Int32  // a State
	resyncs atomic.Int64
	// stopLogged is set once the engine has logged that its backend
	// refuses writes until it is reopened.
	stopLogged atomic.Bool
}

// pending is a planned write on its way to the backend.
type pending struct {
	w    Write
	ctx  context.Context
	at   time.Time // when it was queued
	res  Committed
	err  error
	done chan struct{}
}

// State is whether an engine's index is current.
type State int32

// The states of an engine's index.
const (
	// Serving: the index follows the backend's commits.
	Serving State = iota
	// Resyncing: the index could not follow and is being rebuilt from a
	// snapshot; checks are answered from the old one meanwhile.
	Resyncing
	// Stopped: the engine was closed.
	Stopped
)

// Options configure Start.
type Options struct {
	Clock  Clock        // default SystemClock
	Logger *slog.Logger // default discards
	// CommitTimeout bounds one backend transaction, so that a backend cut
	// off from its cluster fails writes rather than holds them; default
	// DefaultCommitTimeout.
	CommitTimeout time.Duration
	// Limits bound what a scope may hold and what a write by an actor may
	// ask; zero fields take their defaults.
	Limits Limits
	// Gather is how long the committer waits for more writes before it
	// sends a batch of fewer than maxBatch to the backend, counted from when
	// the batch's first write was queued, while writes trickle in (the last
	// batch held fewer than 8 and settled less than Gather ago): writes that
	// arrive close together share a transaction, and so its fsync, for at
	// most Gather more latency each. A write that finds the engine idle goes
	// at once, and so do writes that come many at a time. 0 sends each batch
	// at once.
	Gather time.Duration
}

// DefaultCommitTimeout is how long a backend transaction may take before
// its writes fail as Unavailable.
const DefaultCommitTimeout = 10 * time.Second

// Start builds an index from the backend's snapshot, follows its commits
// from then on, and returns an engine that commits to it. Close stops it.
func Start(ctx context.Context, b Backend, opts Options) (*Engine, error) {
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = DefaultCommitTimeout
	}
	e := &Engine{backend: b, clock: opts.Clock, logger: opts.Logger, timeout: opts.CommitTimeout, gather: max(opts.Gather, 0),
		limits: opts.Limits.withDefaults(), touched: map[string]int{}, full: make(chan struct{}, 1), fed: make(chan struct{}),
		largeRead: make(chan struct{}, 1)}
	e.idle = sync.NewCond(&e.mu)
	idx, err := e.load(ctx)
	if err != nil {
		return nil, err
	}
	e.idx.Store(idx)
	feedCtx, stop := context.WithCancel(context.Background())
	e.stop = stop
	go e.feed(feedCtx)
	return e, nil
}

func (e *Engine) load(ctx context.Context) (*Index, error) {
	b := NewBuilder(e.clock)
	rev, err := e.backend.Load(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("loading the index: %w", err)
	}
	idx, err := b.Build(rev)
	if err != nil {
		return nil, fmt.Errorf("building the index: %w", err)
	}
	return idx, nil
}

// Close stops following the backend. It does not close the backend.
func (e *Engine) Close() {
	e.state.Store(int32(Stopped))
	e.stop()
	<-e.fed
}

// Index returns the index the engine reads. It may be replaced by a fresh
// one after a resync; callers take it anew for each request.
func (e *Engine) Index() *Index { return e.idx.Load() }

// State reports whether the index is current.
func (e *Engine) State() State { return State(e.state.Load()) }

// Clock returns the engine's clock.
func (e *Engine) Clock() Clock { return e.clock }

// Backend returns the backend the engine commits to.
func (e *Engine) Backend() Backend { return e.backend }

// LogRead is ctx bounded as a commit is (Options.CommitTimeout), for a
// read of the backend's change log: a backend out of reach (an etcd
// cluster cut off) fails the read rather than hold it for as long as its
// caller would wait.
func (e *Engine) LogRead(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.timeout)
}

// WriteStopper is a Backend that can come to refuse every write until it
// is reopened, as a bbolt file does after a failed commit.
type WriteStopper interface {
	// WritesStopped returns why the backend refuses writes, wrapping
	// ErrWritesStopped, or nil while it takes them.
	WritesStopped() error
}

// WritesStopped returns why the backend refuses every write until it is
// reopened, or nil while it takes writes (or cannot come to refuse them).
// Checks are answered all the same. The engine logs it at ERROR the first
// time it learns of it, here or from a refused commit.
func (e *Engine) WritesStopped() error {
	b, ok := e.backend.(WriteStopper)
	if !ok {
		return nil
	}
	err := b.WritesStopped()
	if err != nil {
		e.writesStopped(err)
	}
	return err
}

// writesStopped logs, once, that the backend refuses writes until it is
// reopened.
func (e *Engine) writesStopped(err error) {
	if e.stopLogged.CompareAndSwap(false, true) {
		e.logger.Error("writes are refused until the data file is reopened: restart the server", "error", err)
	}
}

// feedPause is the pause before a lost feed is followed again; it doubles
// at each loss in a row, to at most maxFeedPause. A feed followed since the
// last loss (it brought a change set, or went on for maxFeedPause) starts
// again from feedPause: a brief loss after a long outage is not left that
// long behind.
var feedPause, maxFeedPause = 100 * time.Millisecond, 5 * time.Second

// feed applies the backend's commits to the index as they arrive. A change
// set the index cannot apply, or a log compacted past the index's revision,
// makes it build a new index from a snapshot and switch to it; a feed that
// fails otherwise (a backend out of reach) is followed again after a pause,
// from the revision the index has.
func (e *Engine) feed(ctx context.Context) {
	defer close(e.fed)
	pause := feedPause
	for ctx.Err() == nil {
		idx := e.Index()
		from, began := idx.Revision(), time.Now()
		err := e.follow(ctx, idx)
		if ctx.Err() != nil {
			return
		}
		if idx.Broken() == nil && !errors.Is(err, ErrCompacted) {
			if idx.Revision() > from || time.Since(began) >= maxFeedPause {
				pause = feedPause
			}
			e.logger.Warn("the index lost its feed; following again", "revision", idx.Revision(), "pause", pause, "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
			pause = min(2*pause, maxFeedPause)
			continue
		}
		pause = feedPause
		e.state.Store(int32(Resyncing))
		e.logger.Warn("the index cannot follow the backend; loading a snapshot", "revision", idx.Revision(), "error", err)
		for ctx.Err() == nil {
			fresh, err := e.load(ctx)
			if err == nil {
				e.idx.Store(fresh)
				e.resyncs.Add(1)
				// Writers waiting on the old index's revision wake up.
				idx.markReplaced()
				e.notify(fresh, nil)
				break
			}
			e.logger.Error("loading a snapshot failed; retrying", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		e.state.Store(int32(Serving))
	}
}

// follow applies change sets to idx until ctx ends or something fails.
func (e *Engine) follow(ctx context.Context, idx *Index) error {
	for cs, err := range e.backend.Watch(ctx, idx.Revision()) {
		if err != nil {
			return err
		}
		if err := idx.Apply(cs); err != nil {
			return err
		}
		e.notify(idx, &cs)
	}
	return ctx.Err()
}

// Listen registers fn, which the feed calls after the index applies each
// change set, and with a nil set after it switches to a fresh index (when
// anything may have changed). fn runs on the feed's goroutine and must not
// block: the index waits for it.
func (e *Engine) Listen(fn func(x *Index, cs *ChangeSet)) {
	for {
		old := e.listeners.Load()
		var next []func(*Index, *ChangeSet)
		if old != nil {
			next = append(next, *old...)
		}
		next = append(next, fn)
		if e.listeners.CompareAndSwap(old, &next) {
			return
		}
	}
}

// CommitStats describes one backend transaction of the committer.
type CommitStats struct {
	// Writes is how many writes the transaction carried, Took how long the
	// backend took to commit them (for bbolt, the fsync included).
	Writes int
	Took   time.Duration
	Err    error
}

// ObserveCommits registers fn, which the committer calls after each backend
// transaction, replacing any fn registered before: for metrics. fn runs on
// the committer's goroutine, between two transactions, and must be quick.
func (e *Engine) ObserveCommits(fn func(CommitStats)) {
	e.commits.Store(&fn)
}

func (e *Engine) notify(x *Index, cs *ChangeSet) {
	if fns := e.listeners.Load(); fns != nil {
		for _, fn := range *fns {
			fn(x, cs)
		}
	}
}

// Check is the current index's Check: for callers that keep the engine
// rather than an index, which a resync replaces.
func (e *Engine) Check(q Query) (Decision, Revision, error) { return e.Index().Check(q) }

// Latest asks the backend for its latest revision, when it can say: the
// revision the index is behind of.
func (e *Engine) Latest(ctx context.Context) (Revision, error) {
	r, ok := e.backend.(interface {
		Revision(context.Context) (Revision, error)
	})
	if !ok {
		return 0, errors.New("the backend does not say its revision")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return r.Revision(ctx)
}

// Reachable reads the backend's latest revision, bounded as a log read is
// (LogRead), and says why it could not: a backend out of reach (an etcd
// cluster cut off), whose commits this node's index no longer hears of. A
// backend that does not say its revision is taken to be in reach.
func (e *Engine) Reachable(ctx context.Context) error {
	r, ok := e.backend.(interface {
		Revision(context.Context) (Revision, error)
	})
	if !ok {
		return nil
	}
	ctx, cancel := e.LogRead(ctx)
	defer cancel()
	_, err := r.Revision(ctx)
	return err
}

// LogStart is the revision the change log begins after: what compaction
// last dropped it up to, 0 when it holds every change set.
func (e *Engine) LogStart(ctx context.Context) (Revision, error) {
	s, ok := e.backend.(interface {
		LogStart(context.Context) (Revision, error)
	})
	if !ok {
		return 0, errors.New("the backend does not say where its change log begins")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return s.LogStart(ctx)
}

// AwaitLatest returns once the index has applied every revision the backend
// held when it was called: for a decision no revision guards (a knock
// denied), judged at the latest state, so that a grant revoked through
// another replica a moment before gives no power. Unavailable when the
// backend cannot say its revision, or the index does not reach it within
// maxRevisionWait.
func (e *Engine) AwaitLatest(ctx context.Context) error {
	latest, err := e.Latest(ctx)
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, maxRevisionWait)
		defer cancel()
		if err = e.waitFor(wctx, latest); err == nil {
			return nil
		}
		err = fmt.Errorf("the index did not reach the latest revision, %d, from %d: %w", latest, e.Index().Revision(), err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return &Error{Code: Unavailable, Kind: KindUnavailableStorage, Reason: "reading the latest revision: " + err.Error(), Err: err}
}

// Resyncs counts the times the index was rebuilt from a snapshot.
func (e *Engine) Resyncs() int64 { return e.resyncs.Load() }

// maxRevisionWait bounds how long a read waits for a min_revision that the
// index has not reached.
const maxRevisionWait = 5 * time.Second

// Await returns once the index has reached min, waiting at most until ctx's
// deadline or maxRevisionWait.
func (e *Engine) Await(ctx context.Context, min Revision) error {
	if min == 0 || e.Index().Revision() >= min {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, maxRevisionWait)
	defer cancel()
	if err := e.waitFor(ctx, min); err != nil {
		latest := e.Index().Revision()
		refusal := errorf(FailedPrecondition, "min_revision", fmt.Sprint(min),
			"revision not reached; the latest applied revision is %d", latest).as(KindRevisionNotReached)
		refusal.Meta = map[string]string{"latest_revision": fmt.Sprint(latest)}
		return refusal
	}
	return nil
}

// WaitApplied returns once the index has applied rev, following it across
// a resync, or with ctx's error: for streams that wake up at each commit.
func (e *Engine) WaitApplied(ctx context.Context, rev Revision) error {
	return e.waitFor(ctx, rev)
}

// waitFor waits until the current index, whichever it is, has applied rev.
func (e *Engine) waitFor(ctx context.Context, rev Revision) error {
	for {
		idx := e.Index()
		err := idx.WaitFor(ctx, rev)
		if err == nil || ctx.Err() != nil {
			return err
		}
		// The index broke or was replaced: wait on its successor.
		select {
		case <-idx.replaced:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// plan is a write being planned: what it read and what it will change.
type plan struct {
	x       *Index
	ctx     context.Context // the caller's: judging an actor's write gives up when it ends
	by      Author
	limits  Limits
	now     int64
	guards  []string
	touches []string
	changes []Change
	judge   *judge // what the delegation invariant must hold, for an actor
	judged  bool   // the planner had the judge hold its changes as they are
	doing   string // what the write does, for refusals: "grant role "host" on "call:1""
	// assignable holds mayAssign's answers, as the plan's index gives them;
	// open, those of the look under way, which hold once it does.
	assignable map[assignAt]error
	open       []assignAt
	// narrowing are the resources where the actor's own permissions may be
	// less than above them (see narrowings), once they are found.
	narrowing []uint32
	narrowed  bool
	// held are the roles the actor holds at each resource mayAssign looked
	// at (see heldAt).
	held map[uint32][]*roleDef
	// reach and listers are creatorReach's, found once for the plan.
	reach   map[string]bool
	listers map[string][]string
	// weighed counts the resources mayAssign has weighed as places a grant
	// reaches: what its looks cost.
	weighed int
}

// does names what the write does, for the judge's refusals.
func (p *plan) does(format string, args ...any) { p.doing = fmt.Sprintf(format, args...) }

// guard records keys the plan read.
func (p *plan) guard(keys ...string) { p.guards = append(p.guards, keys...) }

// change adds a change to the write, with the keys it touches.
func (p *plan) change(c Change) {
	p.changes = append(p.changes, c)
	p.touches = append(p.touches, p.x.touches(c)...)
}

// fits refuses, as committing it would, a planned write that the backend
// cannot hold at once, for a plan that is not committed (a dry run).
func (e *Engine) fits(p *plan) error {
	s, ok := e.backend.(Sizer)
	if !ok || len(p.changes) == 0 {
		return nil
	}
	w := Write{Planned: p.x.rev, Guards: dedupe(p.guards), Touches: dedupe(p.touches),
		Set: ChangeSet{Time: time.Unix(0, p.now).UTC(), Caller: p.by.Caller, Actor: p.by.Actor, Changes: p.changes}}
	if err := s.Fits(w); err != nil {
		return commitError(p.ctx, err)
	}
	return nil
}

// write plans a write with fn and commits what it plans, planning again
// when it conflicts with a write committed meanwhile. fn runs under the
// index's view lock and must not keep the index. A plan that changes nothing
// writes nothing and answers the current revision, once the index has
// applied what the backend had committed when it was planned.
func (e *Engine) write(ctx context.Context, by Author, fn func(*plan) error) (Revision, error) {
	caughtUp := false
	for attempt := 1; ; {
		x := e.Index()
		p := &plan{ctx: ctx, x: x, by: by, limits: e.limits, now: e.clock.Now().UnixNano()}
		if by.Actor != "" {
			p.judge = newJudge(p)
		}
		x.view.RLock()
		err := fn(p)
		if err == nil && len(p.changes) > 0 {
			err = p.scopeLimits(p.changes)
		}
		if err == nil && p.judge != nil && !p.judged && len(p.changes) > 0 {
			err = p.judge.verify()
		}
		planned := x.rev
		x.view.RUnlock()
		if err != nil || len(p.changes) == 0 {
			// Refused, or nothing to write, as this index sees it; but
			// another replica may have committed since what makes the
			// write valid (the resource registered, the role granted to
			// the actor) or change something (a grant revoked there a
			// moment before), so it is planned again once the index has
			// applied what the backend holds, and a write that changes
			// nothing answers a revision at which it holds. A replica
			// that cannot tell what the backend holds (cut off from etcd)
			// answers Unavailable, as for any write: its index may hold
			// what another replica undid since.
			if !caughtUp {
				moved, cerr := e.catchUp(ctx, planned)
				if moved {
					caughtUp = true
					continue
				}
				if cerr != nil {
					if ctx.Err() != nil {
						return 0, ctx.Err()
					}
					reason := "the write was not confirmed: what the backend holds could not be read: " + cerr.Error()
					if err != nil {
						reason = "the write could not be judged against what the backend holds, which could not be read (" + cerr.Error() +
							"); this replica's index, at revision " + fmt.Sprint(planned) + ", refuses it: " + err.Error()
					}
					return 0, &Error{Code: Unavailable, Kind: KindUnavailableStorage, Reason: reason, Err: cerr}
				}
			}
			if err != nil {
				return 0, err
			}
			return planned, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		w := &pending{ctx: ctx, done: make(chan struct{}), w: Write{
			Planned: planned,
			Guards:  dedupe(p.guards),
			Touches: dedupe(p.touches),
			Set:     ChangeSet{Time: time.Unix(0, p.now).UTC(), Caller: by.Caller, Actor: by.Actor, Changes: p.changes},
		}}
		if !e.enqueue(w) {
			continue // a queued write is about to change what this one read
		}
		<-w.done
		if w.err != nil {
			return 0, commitError(ctx, w.err)
		}
		if w.res.Conflict != "" {
			if attempt == maxAttempts {
				return 0, &Error{Code: Aborted, Field: "", Reason: fmt.Sprintf(
					"the write conflicted with concurrent writes %d times (last on %q); try again", attempt, w.res.Conflict)}
			}
			attempt++
			wctx, cancel := context.WithTimeout(ctx, maxRevisionWait)
			err := e.waitFor(wctx, w.res.Latest)
			cancel()
			if err != nil && ctx.Err() != nil {
				return 0, ctx.Err()
			}
			continue
		}
		// Committed and durable: the answer waits for the index to apply
		// the write, so that this node's reads that follow see it, but no
		// longer than a read would wait for it. A feed cut off once the
		// commit returned (etcd out of reach) must not hold the answer,
		// nor turn it into a failure: reads with its revision wait for it.
		wctx, cancel := context.WithTimeout(ctx, maxRevisionWait)
		_ = e.waitFor(wctx, w.res.Revision)
		cancel()
		return w.res.Revision, nil
	}
}

// catchUp waits, for a write refused at planned, until the index applies
// what the backend had committed when it was refused, and reports whether
// it did: a refusal is judged again there, so that what another replica
// committed a moment before (a resource registered, a role granted to the
// actor) is not refused as absent. A backend that does not say its
// revision leaves the refusal as it is; err says why one that does could
// not be followed there: it cannot say it (out of reach), or the index did
// not reach that revision in time.
func (e *Engine) catchUp(ctx context.Context, planned Revision) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if _, ok := e.backend.(interface {
		Revision(context.Context) (Revision, error)
	}); !ok {
		return false, nil
	}
	latest, err := e.Latest(ctx)
	if err != nil {
		return false, err
	}
	if latest <= planned {
		return false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, maxRevisionWait)
	defer cancel()
	if err := e.waitFor(wctx, latest); err != nil {
		return false, fmt.Errorf("the index did not reach the latest revision, %d, from %d: %w", latest, planned, err)
	}
	return true, nil
}

// enqueue queues w for the committer, unless one of its guards is touched
// by a write already queued or committing: then it waits for that batch to
// end and reports false, and the write is planned again.
func (e *Engine) enqueue(w *pending) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, k := range w.w.Guards {
		if e.touched[k] > 0 {
			for e.touched[k] > 0 {
				e.idle.Wait()
			}
			return false
		}
	}
	for _, k := range w.w.Touches {
		e.touched[k]++
	}
	if e.gather > 0 {
		w.at = time.Now()
	}
	e.queued = append(e.queued, w)
	if len(e.queued) == maxBatch && e.gather > 0 {
		select {
		case e.full <- struct{}{}:
		default:
		}
	}
	if !e.running {
		e.running = true
		go e.commitBatches()
	}
	return true
}

// commitBatches commits what is queued, one batch per backend transaction,
// until the queue is empty. A batch's writes are released once the index
// has applied them, so that a write planned after them sees them. With a
// gather window, a batch not yet full waits for more writes until its
// oldest has been queued that long.
func (e *Engine) commitBatches() {
	var timer *time.Timer
	e.mu.Lock()
	for len(e.queued) > 0 {
		// A write that finds the engine idle goes at once, and so do the
		// writes of many callers at once, which batch by themselves while
		// the last batch commits; while writes trickle in one or two at a
		// time, a batch gathers those that come close behind.
		if e.gather > 0 && len(e.queued) < maxBatch && e.settledN < gatherBelow && time.Since(e.settled) < e.gather {
			if wait := time.Until(e.queued[0].at.Add(e.gather)); wait > 0 {
				timer = e.gatherFor(timer, wait)
			}
		}
		n := min(len(e.queued), maxBatch)
		batch := e.queued[:n:n]
		e.queued = slices.Clone(e.queued[n:])
		e.mu.Unlock()

		ws := make([]Write, 0, len(batch))
		live := batch[:0:0]
		for _, p := range batch {
			// A caller that gave up before its batch started is not written
			// for.
			if err := p.ctx.Err(); err != nil {
				p.err = err
				continue
			}
			ws = append(ws, p.w)
			live = append(live, p)
		}
		var results []Committed
		var err error
		if len(ws) > 0 {
			// Wall time, not the engine's clock: this measures the backend,
			// and a fake clock in tests would not move.
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
			results, err = e.backend.Commit(ctx, ws)
			cancel()
			if errors.Is(err, ErrWritesStopped) {
				e.writesStopped(err)
			}
			if fn := e.commits.Load(); fn != nil {
				(*fn)(CommitStats{Writes: len(ws), Took: time.Since(start), Err: err})
			}
		}
		var last Revision
		for i, p := range live {
			if err != nil {
				p.err = err
				continue
			}
			p.res, p.err = results[i], results[i].Err
			last = max(last, results[i].Revision)
		}
		if last > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), maxRevisionWait)
			_ = e.waitFor(ctx, last)
			cancel()
		}
		e.mu.Lock()
		if e.gather > 0 {
			e.settled, e.settledN = time.Now(), len(batch)
		}
		for _, p := range batch {
			for _, k := range p.w.Touches {
				if e.touched[k]--; e.touched[k] == 0 {
					delete(e.touched, k)
				}
			}
			close(p.done)
		}
		e.idle.Broadcast()
	}
	e.running = false
	e.mu.Unlock()
}

// gatherBelow is the size of batch past which the next is not gathered:
// with that many writes the fsync is shared well enough, and writes that
// come that many at a time batch by themselves while one commits.
const gatherBelow = 8

// gatherFor lets more writes join the queue, for up to wait or until it
// holds a full batch. It is called and returns with e.mu held, and reuses
// timer from one batch to the next.
func (e *Engine) gatherFor(timer *time.Timer, wait time.Duration) *time.Timer {
	// A wake-up left over from a batch already sent is stale.
	select {
	case <-e.full:
	default:
	}
	e.mu.Unlock()
	defer e.mu.Lock()
	if timer == nil {
		timer = time.NewTimer(wait)
	} else {
		timer.Reset(wait)
	}
	select {
	case <-timer.C:
	case <-e.full:
		timer.Stop()
	}
	return timer
}

// commitError is what a caller sees of a failed commit. The caller's own
// context ending is reported as such; the commit's context ending is not the
// caller's deadline but CommitTimeout, a backend that did not answer in time
// (an etcd cut off from its quorum), and so Unavailable like any other
// failure. A write too large for the backend to commit is a limit passed,
// which trying it again would pass again.
func commitError(ctx context.Context, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return ctx.Err()
	}
	if tl := (*TooLargeError)(nil); errors.As(err, &tl) {
		return &Error{Code: ResourceExhausted, Kind: KindLimitExceeded, Reason: "the write was not committed: " + err.Error(),
			Meta: map[string]string{"limit": fmt.Sprint(tl.Limit), "used": fmt.Sprint(tl.Needs)}, Err: err}
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		return &Error{Code: Unavailable, Kind: KindUnavailableStorage, Reason: "the write may or may not have been committed; read it back to know: " + err.Error(), Err: err}
	}
	return &Error{Code: Unavailable, Kind: KindUnavailableStorage, Reason: "the write was not committed: " + err.Error(), Err: err}
}

// ErrOutcomeUnknown is wrapped by a backend's commit error when the commit
// may have taken effect all the same: its answer was lost, and the backend
// could not find out, or it reached the backend's file without being made
// durable.
var ErrOutcomeUnknown = errors.New("whether it took effect is unknown")

// ErrWritesStopped is wrapped by a backend's errors once it refuses every
// write until it is reopened: a commit failed in a way that may have left
// what it reads ahead of what is durable, and a write built on that could
// be acknowledged on top of data the disk does not hold. Reads go on.
var ErrWritesStopped = errors.New("the data file must be reopened: restart the server")

func dedupe(keys []string) []string {
	if len(keys) == 0 {
		return nil
	}
	keys = slices.Clone(keys)
	slices.Sort(keys)
	return slices.Compact(keys)
}
