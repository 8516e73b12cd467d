package storage

import (
	"context"
	"errors"

	"github.com/usher-authz/usher/authz"
)

// Backend is what every storage backend offers: the engine's contract
// (authz.Backend: conditional commits, a snapshot, a watch from a revision,
// the change log) and what operators need beside it. storagetest.Run proves
// one.
type Backend interface {
	authz.Backend
	// Revision is the latest committed revision.
	Revision(ctx context.Context) (authz.Revision, error)
	// Compact drops the change log up to and including revision before;
	// Watch and Changes from earlier revisions then fail with
	// authz.ErrCompacted. The state itself is untouched.
	Compact(ctx context.Context, before authz.Revision) error
	// LogStart is the revision the change log begins after: what Compact
	// last dropped up to, 0 when it holds every change set.
	LogStart(ctx context.Context) (authz.Revision, error)
}

// ErrClosed is returned by every call made after Close.
var ErrClosed = errors.New("storage: store is closed")

// ErrNoRoom is wrapped by a backup's refusal when the disk holding the data
// file has too little room for the copy the backup takes there: writing it
// would fill the disk, and a commit that found it full would stop writes.
var ErrNoRoom = errors.New("too little room on the data file's disk for a backup's copy")

// Snapshot loads everything b holds, as values: for tools and tests that
// want the entities themselves rather than an index.
func Snapshot(ctx context.Context, b authz.Backend) (authz.Snapshot, error) {
	var c authz.Collector
	rev, err := b.Load(ctx, &c)
	c.Snapshot.Revision = rev
	return c.Snapshot, err
}
