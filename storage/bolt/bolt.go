// Package bolt is Usher's embedded storage backend: one bbolt file, written
// by one process, the source of truth on one machine.
//
// Every write is one bbolt transaction that applies its change sets, appends
// them to the change log and bumps the revision, and returns only once bbolt
// has fsync'd it. Once a commit fails, the store refuses every write until
// the file is reopened, since bbolt may then read a state the disk does not
// hold (see update); reads go on. The store keeps the latest change sets in
// memory as well, so that watchers (the engine's index) follow commits
// without reading them back from disk.
package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// DefaultLockTimeout is how long Open waits for another holder of the file
// to let go when Options.LockTimeout is not set.
const DefaultLockTimeout = time.Second

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for bbolt's exclusive file lock; zero or
	// negative means DefaultLockTimeout. bbolt itself would wait forever,
	// which turns a second server started on the same file into a silent
	// hang.
	LockTimeout time.Duration
	// Retain is how many change sets the change log keeps: once it holds
	// twice as many, the store compacts it down to Retain in the
	// background. 0 keeps every change set, the audit trail whole.
	Retain authz.Revision
}

// Bucket names and meta keys are part of the file format.
var (
	bucketMeta    = []byte("meta")
	bucketChanges = []byte("changes")

	keyRevision  = []byte("revision")
	keyFormat    = []byte("format")
	keyCompacted = []byte("compacted")
)

// fileFormat is the format of the files this version writes: 2 is records
// in usher.storage.v1 (1 was JSON values and one block per subject and
// resource, which Open migrates).
const fileFormat = 2

func bucketOf(k storage.Kind) []byte { return []byte(k.String()) }

// recentSets is how many committed change sets the store keeps in memory
// for watchers, of at most recentBytes encoded (decoded, they take a few
// times more): a window of many large policies would otherwise hold
// gigabytes. What the window no longer holds is read from the file.
const (
	recentSets  = 4096
	recentBytes = 32 << 20
)

// Store is the bbolt Backend: one file, one writer at a time.
type Store struct {
	db   *bbolt.DB
	path string

	// writer is a one-slot semaphore rather than a mutex so that a Commit
	// waiting for its turn can give up when its context is cancelled. It
	// guards closed and versions.
	writer   chan struct{}
	closed   bool
	versions *storage.Versions
	retain   authz.Revision

	compacting atomic.Bool
	copying    sync.Mutex // held while a backup copies the file
	// stopped, once a commit failed, is what every write gets until the
	// file is reopened (see update).
	stopped atomic.Pointer[error]

	mu        sync.Mutex // guards what watchers read
	rev       authz.Revision
	compacted authz.Revision
	recent    changeRing    // the latest committed change sets, in order
	notify    chan struct{} // closed and replaced at every commit
	done      chan struct{} // closed by Close
}

var (
	_ storage.Backend    = (*Store)(nil)
	_ authz.WriteStopper = (*Store)(nil)
)

// Open opens the store at path, creating its directory, the file and the
// buckets if they are missing, and migrating a file of an earlier format.
// It fails after opts.LockTimeout if another process holds the file, and
// with an error, never a panic, on a file that is not a whole Usher data
// file: the structure of an existing file is checked before bbolt reads it.
func Open(path string, opts Options) (s *Store, err error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	made := missingDirs(filepath.Dir(path))
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)
	removeOrphans(filepath.Dir(path), snapshotPrefix(path))
	if err := checkFile(path, timeout); err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	var db *bbolt.DB
	err = unpanicked(func() error {
		var err error
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout})
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("storage: open %s: another process is using it (its lock was not released within %s): %w", path, timeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: not a usable data file: %w", path, err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	var rev, compacted authz.Revision
	err = unpanicked(func() error {
		if err := prepare(db); err != nil {
			return err
		}
		return db.View(func(tx *bbolt.Tx) error {
			var err error
			meta := tx.Bucket(bucketMeta)
			if rev, err = storage.DecodeRevision(meta.Get(keyRevision)); err != nil {
				return err
			}
			if compacted, err = storage.DecodeRevision(meta.Get(keyCompacted)); err != nil {
				return err
			}
			end := compacted
			if k, _ := tx.Bucket(bucketChanges).Cursor().Last(); k != nil {
				if end, err = storage.DecodeRevision(k); err != nil {
					return err
				}
			}
			if err := logEndsAt(end, rev); err != nil {
				return fmt.Errorf("the data file is damaged (restore it from a backup with usher restore): %w", err)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	if created {
		// The file's name, and the directories made for it, are durable
		// only once the directories holding them are: a write committed to
		// a new file would otherwise be lost with the file in a power cut.
		if err := syncEntries(path, made); err != nil {
			return nil, fmt.Errorf("storage: open %s: %w", path, err)
		}
	}
	return &Store{
		db: db, path: path, writer: make(chan struct{}, 1), versions: storage.NewVersions(rev, 0), retain: opts.Retain,
		rev: rev, compacted: compacted, recent: newChangeRing(recentSets, recentBytes), notify: make(chan struct{}), done: make(chan struct{}),
	}, nil
}

// checkFile checks the structure of the file at path, if it has any, before
// bbolt opens it for writing (see checkPages). It holds bbolt's shared lock
// meanwhile, so that a file another process is writing is reported as in
// use rather than as damaged.
func checkFile(path string, timeout time.Duration) error {
	info, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) || err == nil && info.Size() == 0 {
		return nil // bbolt makes a new file
	}
	if err != nil {
		return err
	}
	db, lockErr := openShared(path, timeout)
	if errors.Is(lockErr, berrors.ErrTimeout) {
		return fmt.Errorf("another process is using it (its lock was not released within %s): %w", timeout, lockErr)
	}
	if lockErr == nil {
		defer db.Close()
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if info, err = f.Stat(); err != nil {
		return err
	}
	// A file bbolt could not open is checked all the same, for a better
	// reason than bbolt's "invalid database".
	if err := checkMapped(f, info.Size()); err != nil {
		return fmt.Errorf("the data file is damaged (restore it from a backup with usher restore): %w", err)
	}
	if lockErr != nil {
		return fmt.Errorf("not a usable data file: %w", lockErr)
	}
	// A backup's content is a data file bbolt opens, but writing it would
	// damage the backup: its digest would no longer match its manifest. A
	// file served on since it was one no longer matches, and is opened.
	if m, err := readManifest(f); err == nil && checkDigest(io.NewSectionReader(f, 0, m.Size), m) == nil {
		return fmt.Errorf("it is an Usher backup (revision %d), not a data file: restore it with usher restore, which leaves the backup as it is", m.Revision)
	}
	return nil
}

// prepare creates the buckets of a new file, and migrates one of an earlier
// format.
func prepare(db *bbolt.DB) error {
	var format []byte
	err := db.Update(func(tx *bbolt.Tx) error {
		// Another program's bbolt file (an etcd snapshot has a "meta"
		// bucket too) is refused before anything is written into it. A
		// file that names its format is Usher's; one of a format this
		// version does not read (a later version's) is refused before
		// anything is written into it too.
		if meta := tx.Bucket(bucketMeta); meta == nil || meta.Get(keyFormat) == nil {
			if err := foreignBucket(tx); err != nil {
				return err
			}
		} else if f := meta.Get(keyFormat); len(f) != 1 || f[0] != fileFormat {
			return fmt.Errorf("the file is in format %v, which this version of Usher does not read", f)
		}
		for _, name := range allBuckets() {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %q: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		format = meta.Get(keyFormat)
		if format == nil && meta.Get(keyRevision) == nil {
			format = []byte{fileFormat}
			return meta.Put(keyFormat, format)
		}
		format = append([]byte(nil), format...)
		return nil
	})
	if err != nil {
		return err
	}
	if format == nil {
		return migrate(db)
	}
	return nil
}

// foreignBucket refuses a file holding a bucket that no format of Usher's
// has.
func foreignBucket(tx *bbolt.Tx) error {
	return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
		if !slices.ContainsFunc(allBuckets(), func(b []byte) bool { return bytes.Equal(b, name) }) {
			return fmt.Errorf("not an Usher data file: it holds a bucket %q, which Usher does not write", name)
		}
		return nil
	})
}

// addedLater reports whether kind was added to format 2 after files were
// written in it: such a file lacks its bucket until a server opens it for
// writing, and holds none of it.
func addedLater(kind storage.Kind) bool { return kind == storage.KindAdmission }

func allBuckets() [][]byte {
	out := [][]byte{bucketMeta, bucketChanges}
	for _, k := range storage.Kinds {
		out = append(out, bucketOf(k))
	}
	return out
}

// Path is the file the store was opened on, for logs and error messages.
func (s *Store) Path() string { return s.path }

// WriteTime is how long bbolt has spent writing committed pages and
// fdatasync'ing the file since the store was opened: the disk's share of
// commit latency, for metrics.
func (s *Store) WriteTime() time.Duration {
	st := s.db.Stats()
	return st.TxStats.GetWriteTime()
}

// Commit implements authz.Backend: the writes whose guards did not move
// take consecutive revisions in one bbolt transaction, so one fsync makes
// them all durable. A write whose guard a write before it in the same batch
// touches conflicts too.
func (s *Store) Commit(ctx context.Context, ws []authz.Write) ([]authz.Committed, error) {
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
		return nil, storage.ErrClosed
	}
	now := time.Now().UTC()
	results := make([]authz.Committed, len(ws))
	var committed []authz.ChangeSet
	var sizes []int // each committed change set's, encoded
	err := s.update(func(tx *bbolt.Tx) error {
		meta, log := tx.Bucket(bucketMeta), tx.Bucket(bucketChanges)
		last, err := storage.DecodeRevision(meta.Get(keyRevision))
		if err != nil {
			return err
		}
		// The change log only ever grows at its end, so full pages waste
		// nothing and halve its size compared with bbolt's default split.
		log.FillPercent = 1.0
		touched := map[string]bool{}
		for i, w := range ws {
			rev := last + authz.Revision(len(committed))
			if k := conflict(s.versions, w, touched); k != "" {
				results[i] = authz.Committed{Conflict: k, Latest: rev}
				continue
			}
			cs := w.Set
			cs.Revision = rev + 1
			if cs.Time.IsZero() {
				cs.Time = now
			}
			cs.Time = cs.Time.UTC()
			for j, c := range cs.Changes {
				if err := apply(tx, c); err != nil {
					return fmt.Errorf("change %d (%s): %w", j, c.Op, err)
				}
			}
			record, err := storage.EncodeChangeSet(cs)
			if err != nil {
				return err
			}
			sizes = append(sizes, len(record))
			if err := log.Put(storage.EncodeRevision(cs.Revision), record); err != nil {
				return err
			}
			for _, k := range w.Touches {
				touched[k] = true
			}
			results[i].Revision = cs.Revision
			committed = append(committed, cs)
		}
		if len(committed) == 0 {
			return nil
		}
		return meta.Put(keyRevision, storage.EncodeRevision(last+authz.Revision(len(committed))))
	})
	if err != nil {
		return nil, fmt.Errorf("storage: commit: %w", closedAsErrClosed(err))
	}
	for i, w := range ws {
		if results[i].Revision != 0 {
			s.versions.Touch(results[i].Revision, w.Touches)
		}
	}
	s.publish(committed, sizes)
	s.maybeCompact()
	return results, nil
}

// maybeCompact starts a compaction in the background once the log holds
// twice the change sets the store retains. It runs under the writer lock
// that Commit holds, so it only reads what Commit guards.
func (s *Store) maybeCompact() {
	if s.retain == 0 {
		return
	}
	s.mu.Lock()
	rev, compacted := s.rev, s.compacted
	s.mu.Unlock()
	if n := rev - compacted; n-n/2 <= s.retain || !s.compacting.CompareAndSwap(false, true) { // n <= 2*retain, which cannot overflow
		return
	}
	go func() {
		defer s.compacting.Store(false)
		_ = s.Compact(context.Background(), rev-s.retain)
	}()
}

// conflict returns the guard of w that moved since it was planned, also by
// a write earlier in the same batch, or "".
func conflict(v *storage.Versions, w authz.Write, touched map[string]bool) string {
	if k := v.Conflict(w); k != "" {
		return k
	}
	for _, k := range w.Guards {
		if touched[k] {
			return k
		}
	}
	return ""
}

// apply writes one change into its bucket.
func apply(tx *bbolt.Tx, c authz.Change) error {
	e, err := storage.EntryOf(c)
	if err != nil {
		return err
	}
	b := tx.Bucket(bucketOf(e.Kind))
	if e.Value == nil {
		return b.Delete(e.Key)
	}
	return b.Put(e.Key, e.Value)
}

// publish hands committed change sets, each of sizes[i] bytes encoded, to
// watchers.
func (s *Store) publish(sets []authz.ChangeSet, sizes []int) {
	if len(sets) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, cs := range sets {
		s.recent.push(cs, sizes[i])
	}
	s.rev = sets[len(sets)-1].Revision
	close(s.notify)
	s.notify = make(chan struct{})
}

// Close waits for an in-flight commit, ends every watch, then releases the
// file. Closing twice is harmless.
func (s *Store) Close() error {
	s.writer <- struct{}{}
	defer func() { <-s.writer }()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.done)
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close %s: %w", s.path, err)
	}
	return nil
}

// closedAsErrClosed gives callers one error to test for after Close, whatever
// call noticed it.
func closedAsErrClosed(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return storage.ErrClosed
	}
	return err
}
