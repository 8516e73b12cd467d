package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/usher-authz/usher/authz"
)

// DefaultLockTimeout is how long Open waits for another holder of the file
// to let go when Options.LockTimeout is not set.
const DefaultLockTimeout = time.Second

// ErrClosed is returned by every call made after Close.
var ErrClosed = errors.New("storage: store is closed")

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for bbolt's exclusive file lock; zero or
	// negative means DefaultLockTimeout. bbolt itself would wait forever,
	// which turns a second server started on the same file into a silent
	// hang.
	LockTimeout time.Duration
}

// Store is the bbolt Backend: one file, one writer at a time.
type Store struct {
	db   *bbolt.DB
	path string

	// writer is a one-slot semaphore rather than a mutex so that a Commit
	// waiting for its turn can give up when its context is cancelled. It
	// also guards watchers and closed, so a watcher is registered strictly
	// between two commits and never misses or half-sees one.
	writer   chan struct{}
	watchers []func(authz.ChangeSet)
	closed   bool
}

var _ Backend = (*Store)(nil)

// Open opens the store at path, creating its directory, the file and the
// buckets if they are missing. It fails after opts.LockTimeout if another
// process holds the file.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("storage: open %s: another process is using it (its lock was not released within %s): %w", path, timeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %q: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	return &Store{db: db, path: path, writer: make(chan struct{}, 1)}, nil
}

// Path is the file the store was opened on, for logs and error messages.
func (s *Store) Path() string { return s.path }

// Commit implements Backend: CommitBatch of one change set.
func (s *Store) Commit(ctx context.Context, cs authz.ChangeSet) (authz.Revision, error) {
	revs, err := s.CommitBatch(ctx, []authz.ChangeSet{cs})
	if err != nil {
		return 0, err
	}
	return revs[0], nil
}

// CommitBatch implements Backend: the change sets take consecutive
// revisions in one bbolt transaction, so one fsync makes them all durable.
// Commits are serialized, and the next one starts only after the previous
// one's watchers have returned, which is what keeps deliveries in revision
// order.
func (s *Store) CommitBatch(ctx context.Context, css []authz.ChangeSet) ([]authz.Revision, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case s.writer <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.writer }()
	// select picks at random when both are ready; a cancelled caller must
	// still commit nothing.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.closed {
		return nil, ErrClosed
	}

	// Stamped under the writer lock so that log times never go backwards as
	// revisions go forwards.
	committed := committedCopies(css, time.Now().UTC())
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := openBuckets(tx)
		last, err := decodeRevision(b.meta.Get(keyRevision))
		if err != nil {
			return err
		}
		// The change log only ever grows at its end, so full pages waste
		// nothing and halve its size compared with bbolt's default split.
		b.changes.FillPercent = 1.0
		for k := range committed {
			cs := &committed[k]
			cs.Revision = last + 1 + authz.Revision(k)
			for i := range cs.Changes {
				if err := b.apply(&cs.Changes[i]); err != nil {
					return fmt.Errorf("change %d (%s): %w", i, cs.Changes[i].Op, err)
				}
			}
			record, err := json.Marshal(cs)
			if err != nil {
				return fmt.Errorf("encode change set: %w", err)
			}
			if err := b.changes.Put(encodeRevision(cs.Revision), record); err != nil {
				return err
			}
		}
		return b.meta.Put(keyRevision, encodeRevision(last+authz.Revision(len(committed))))
	})
	if err != nil {
		return nil, fmt.Errorf("storage: commit: %w", closedAsErrClosed(err))
	}
	revs := make([]authz.Revision, len(committed))
	for k, cs := range committed {
		revs[k] = cs.Revision
		for _, fn := range s.watchers {
			fn(cs)
		}
	}
	return revs, nil
}

// Watch implements Backend. fn runs on the committing goroutine while the
// store holds its writer lock, so it must be quick, must not modify the
// change set (all watchers share it), and must not call Commit or Watch.
// Watch waits for an in-flight commit to finish, so a caller that reads
// Revision or Snapshot after Watch returns sees every later change through fn.
func (s *Store) Watch(fn func(authz.ChangeSet)) {
	s.writer <- struct{}{}
	defer func() { <-s.writer }()
	s.watchers = append(s.watchers, fn)
}

// Close waits for an in-flight commit and its watchers, then releases the
// file. Closing twice is harmless.
func (s *Store) Close() error {
	s.writer <- struct{}{}
	defer func() { <-s.writer }()
	if s.closed {
		return nil
	}
	s.closed = true
	s.watchers = nil
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close %s: %w", s.path, err)
	}
	return nil
}

// closedAsErrClosed gives callers one error to test for after Close, whatever
// call noticed it.
func closedAsErrClosed(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// buckets are looked up once per transaction rather than once per change.
type buckets struct {
	meta, changes *bbolt.Bucket
	entities
}

// openBuckets relies on Open having created every bucket; a nil one would be
// a corrupt file and panics on first use.
func openBuckets(tx *bbolt.Tx) buckets {
	return buckets{
		meta:    tx.Bucket(bucketMeta),
		changes: tx.Bucket(bucketChanges),
		entities: entities{
			permissions: tx.Bucket(bucketPermissions),
			resources:   tx.Bucket(bucketResources),
			roles:       tx.Bucket(bucketRoles),
			grants:      tx.Bucket(bucketGrants),
			blocks:      tx.Bucket(bucketBlocks),
			quotas:      tx.Bucket(bucketQuotas),
			creators:    tx.Bucket(bucketCreators),
		},
	}
}
