package storage

import (
	"context"

	"github.com/usher-authz/usher/authz"
)

// Backend is what every storage backend offers; storagetest.Run proves one.
//
// The in-memory index is built from Snapshot and then fed only through Watch,
// so a backend whose changes arrive from elsewhere (an etcd watch) can replace
// the bbolt Store without the engine knowing.
type Backend interface {
	// Commit writes cs atomically in one transaction that also bumps the
	// global revision (cs.Revision is ignored on input and set to the new
	// one; a zero cs.Time is set to the commit time) and appends cs to the
	// change log; it returns only after the transaction is durable (fsync'd).
	// After the commit it delivers the committed ChangeSet (with its
	// revision) to every function registered with Watch, synchronously and in
	// revision order, before returning. A context cancelled before the commit
	// starts commits nothing.
	Commit(ctx context.Context, cs authz.ChangeSet) (authz.Revision, error)
	// CommitBatch is Commit for several change sets in one transaction:
	// they take consecutive revisions, are delivered to watchers in order,
	// and are all committed or none is.
	CommitBatch(ctx context.Context, css []authz.ChangeSet) ([]authz.Revision, error)
	// Snapshot loads every entity at one consistent revision.
	Snapshot() (authz.Snapshot, error)
	// Changes returns up to limit change sets with revision > after, oldest
	// first.
	Changes(after authz.Revision, limit int) ([]authz.ChangeSet, error)
	// Watch registers fn to receive every change set committed from now on.
	Watch(fn func(authz.ChangeSet))
	// Revision is the latest committed revision.
	Revision() (authz.Revision, error)
	// Close releases the backend; calls after it fail.
	Close() error
}
