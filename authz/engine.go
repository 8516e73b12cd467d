package authz

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Backend is where the engine commits writes. Commit makes a change set
// durable and atomic under the next revision before it returns, and delivers
// it to the index's feed (Index.Apply), directly or through a watch. Changes
// reads the change log back, oldest first.
type Backend interface {
	Commit(ctx context.Context, cs ChangeSet) (Revision, error)
	// CommitBatch commits several change sets in one transaction, under
	// consecutive revisions: all of them, or none.
	CommitBatch(ctx context.Context, css []ChangeSet) ([]Revision, error)
	Changes(after Revision, limit int) ([]ChangeSet, error)
}

// Author says who makes a write: the authenticated caller, and the end user
// it acts for, if any.
type Author struct {
	Caller string
	Actor  string
}

// Engine validates writes against the index and commits them through the
// backend, so that what was checked is what is written.
//
// Grants and revokes are group-committed: each is planned against the index
// while earlier ones are still being committed, provided it touches nothing
// they touch (conflict keys, see grouped), and all that are queued commit in
// one backend transaction. Every other write runs alone: it waits until
// nothing is queued or committing, then plans and commits by itself.
type Engine struct {
	idx     *Index
	backend Backend
	now     func() time.Time

	mu        sync.Mutex
	idle      *sync.Cond      // broadcast when a batch ends or an exclusive write does
	queued    []*pendingWrite // planned, waiting for the committer
	pending   map[string]int  // conflict keys of queued and committing writes
	batches   int             // batches being committed (0 or 1)
	exclusive int             // exclusive writes waiting or running
}

// pendingWrite is a planned change set on its way to the backend.
type pendingWrite struct {
	cs   ChangeSet
	keys []string
	rev  Revision
	err  error
	done chan struct{}
}

// NewEngine returns an engine that validates against idx and commits to b.
// The caller wires b's committed changes into idx.Apply.
func NewEngine(idx *Index, b Backend) *Engine {
	e := &Engine{idx: idx, backend: b, now: time.Now, pending: map[string]int{}}
	e.idle = sync.NewCond(&e.mu)
	return e
}

// Index returns the index the engine reads.
func (e *Engine) Index() *Index { return e.idx }

// maxRevisionWait bounds how long a read waits for a min_revision that the
// index has not reached.
const maxRevisionWait = 5 * time.Second

// Await returns once the index has reached min, waiting at most until ctx's
// deadline or maxRevisionWait.
func (e *Engine) Await(ctx context.Context, min Revision) error {
	if min == 0 || e.idx.Revision() >= min {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, maxRevisionWait)
	defer cancel()
	if err := e.idx.WaitFor(ctx, min); err != nil {
		return errorf(FailedPrecondition, "min_revision", fmt.Sprint(min),
			"revision not reached; the latest applied revision is %d", e.idx.Revision())
	}
	return nil
}

// write runs plan alone: after every queued and committing write has
// finished, with no other write planning. It runs under the index's read
// lock; what it returns is committed and applied to the index before write
// returns. A plan that changes nothing writes nothing and answers the current
// revision.
func (e *Engine) write(ctx context.Context, by Author, plan func(now time.Time) ([]Change, error)) (Revision, error) {
	e.mu.Lock()
	e.exclusive++
	for len(e.queued) > 0 || e.batches > 0 {
		e.idle.Wait()
	}
	defer func() {
		e.exclusive--
		e.idle.Broadcast()
		e.mu.Unlock()
	}()
	now := e.now()
	e.idx.mu.RLock()
	changes, err := plan(now)
	rev := e.idx.rev
	e.idx.mu.RUnlock()
	if err != nil || len(changes) == 0 {
		return rev, err
	}
	revs, err := e.backend.CommitBatch(ctx, []ChangeSet{{Time: now.UTC(), Caller: by.Caller, Actor: by.Actor, Changes: changes}})
	if err != nil {
		return 0, commitError(err)
	}
	return revs[0], e.idx.WaitFor(ctx, revs[0])
}

// conflicts are what a grouped write touches. It may join the queue only
// when none of its writes (state it changes and that its own plan depends
// on) or reads (state its plan depends on) is pending; once queued, its
// writes and marks (state it changes that only others' reads depend on) are
// pending until its batch ends.
type conflicts struct {
	writes, marks, reads []string
}

// grouped plans a write that may be committed with others. keys names what
// it touches, read under the index's read lock; while any of those is pending
// the write waits. Then plan runs as in write, and the change set joins the
// next batch.
func (e *Engine) grouped(ctx context.Context, by Author, keys func() conflicts, plan func(now time.Time) ([]Change, error)) (Revision, error) {
	e.mu.Lock()
	var (
		c       conflicts
		changes []Change
		err     error
		rev     Revision
		now     time.Time
	)
	for {
		for e.exclusive > 0 {
			e.idle.Wait()
		}
		now = e.now()
		e.idx.mu.RLock()
		c = keys()
		clear := !e.anyPending(c.writes) && !e.anyPending(c.reads)
		if clear {
			changes, err = plan(now)
			rev = e.idx.rev
		}
		e.idx.mu.RUnlock()
		if clear {
			break
		}
		e.idle.Wait()
	}
	if err != nil || len(changes) == 0 {
		e.mu.Unlock()
		return rev, err
	}
	// A caller that has given up is not written for.
	if err := ctx.Err(); err != nil {
		e.mu.Unlock()
		return 0, err
	}
	w := &pendingWrite{
		cs:   ChangeSet{Time: now.UTC(), Caller: by.Caller, Actor: by.Actor, Changes: changes},
		keys: append(c.writes, c.marks...),
		done: make(chan struct{}),
	}
	for _, k := range w.keys {
		e.pending[k]++
	}
	e.queued = append(e.queued, w)
	if e.batches == 0 {
		e.batches = 1
		go e.commitBatches()
	}
	e.mu.Unlock()
	<-w.done
	if w.err != nil {
		return 0, commitError(w.err)
	}
	return w.rev, e.idx.WaitFor(ctx, w.rev)
}

func (e *Engine) anyPending(keys []string) bool {
	for _, k := range keys {
		if e.pending[k] > 0 {
			return true
		}
	}
	return false
}

// commitBatches commits what is queued, one batch per backend transaction,
// until the queue is empty. Writes queue up behind the batch in flight.
func (e *Engine) commitBatches() {
	e.mu.Lock()
	for len(e.queued) > 0 {
		batch := e.queued
		e.queued = nil
		e.mu.Unlock()
		css := make([]ChangeSet, len(batch))
		for i, w := range batch {
			css[i] = w.cs
		}
		// The batch commits whatever its writers' contexts do now: each was
		// planned against what the others left alone, and dropping one would
		// not undo anything.
		revs, err := e.backend.CommitBatch(context.Background(), css)
		e.mu.Lock()
		for i, w := range batch {
			if err != nil {
				w.err = err
			} else {
				w.rev = revs[i]
			}
			for _, k := range w.keys {
				if e.pending[k]--; e.pending[k] == 0 {
					delete(e.pending, k)
				}
			}
			close(w.done)
		}
		e.idle.Broadcast()
	}
	e.batches = 0
	e.idle.Broadcast()
	e.mu.Unlock()
}

// commitError is what a caller sees of a failed commit.
func commitError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &Error{Code: Unavailable, Reason: "the write was not committed: " + err.Error(), Err: err}
}
