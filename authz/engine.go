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
	Changes(after Revision, limit int) ([]ChangeSet, error)
}

// Author says who makes a write: the authenticated caller, and the end user
// it acts for, if any.
type Author struct {
	Caller string
	Actor  string
}

// Engine validates writes against the index and commits them through the
// backend, one at a time, so that what was checked is what is written.
type Engine struct {
	idx     *Index
	backend Backend
	mu      sync.Mutex // serializes validate-then-commit
	now     func() time.Time
}

// NewEngine returns an engine that validates against idx and commits to b.
// The caller wires b's committed changes into idx.Apply.
func NewEngine(idx *Index, b Backend) *Engine {
	return &Engine{idx: idx, backend: b, now: time.Now}
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

// write runs plan under the index's read lock, commits what it returns and
// waits until the index has applied it. A plan that changes nothing writes
// nothing and answers the current revision.
func (e *Engine) write(ctx context.Context, by Author, plan func(now time.Time) ([]Change, error)) (Revision, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	e.idx.mu.RLock()
	changes, err := plan(now)
	rev := e.idx.rev
	e.idx.mu.RUnlock()
	if err != nil || len(changes) == 0 {
		return rev, err
	}
	rev, err = e.backend.Commit(ctx, ChangeSet{Time: now.UTC(), Caller: by.Caller, Actor: by.Actor, Changes: changes})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return 0, err
		}
		return 0, &Error{Code: Unavailable, Reason: "the write was not committed: " + err.Error(), Err: err}
	}
	if err := e.idx.WaitFor(ctx, rev); err != nil {
		return rev, err
	}
	return rev, nil
}
