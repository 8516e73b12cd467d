package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// Load implements authz.Backend. Everything is read in one bbolt read
// transaction, which is what makes the revision and the entities agree while
// commits keep running.
func (s *Store) Load(ctx context.Context, sink authz.Sink) (authz.Revision, error) {
	var rev authz.Revision
	err := unpanicked(func() error {
		return s.db.View(func(tx *bbolt.Tx) error {
			var err error
			if rev, err = storage.DecodeRevision(tx.Bucket(bucketMeta).Get(keyRevision)); err != nil {
				return err
			}
			if err := loadEntities(ctx, tx, sink); err != nil {
				return err
			}
			release(tx, tx.Size())
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("storage: load %s: %w", s.path, closedAsErrClosed(err))
	}
	return rev, nil
}

// loadEntities sends every entity to sink, kind by kind in load order.
func loadEntities(ctx context.Context, tx *bbolt.Tx, sink authz.Sink) error {
	for _, kind := range storage.Kinds {
		b := tx.Bucket(bucketOf(kind))
		if b == nil && addedLater(kind) {
			continue // a file written before the kind existed holds none
		}
		if b == nil {
			return fmt.Errorf("bucket %q is missing: not an Usher data file", kind)
		}
		if gs, ok := sink.(authz.BatchSink); ok && kind == storage.KindGrant {
			if err := loadGrants(ctx, b, gs); err != nil {
				return err
			}
			continue
		}
		n := 0
		err := b.ForEach(func(k, v []byte) error {
			if n++; n%65536 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			return storage.Decode(kind, k, v, sink)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// grantBatch is how many grants loadGrants hands its sink at a time.
const grantBatch = 1024

// loadGrants sends the grants of b to sink a batch at a time. Their strings
// alias the transaction's pages, which stay put until it ends.
func loadGrants(ctx context.Context, b *bbolt.Bucket, sink authz.BatchSink) error {
	batch := make([]authz.Grant, 0, grantBatch)
	n := 0
	err := b.ForEach(func(k, v []byte) error {
		if n++; n%65536 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		g, err := storage.DecodeGrant(k, v)
		if err != nil {
			// The grants before it come first, as one at a time.
			if serr := sink.GrantBatch(batch); serr != nil {
				return serr
			}
			return err
		}
		if batch = append(batch, g); len(batch) == grantBatch {
			err = sink.GrantBatch(batch)
			batch = batch[:0]
		}
		return err
	})
	if err == nil {
		err = sink.GrantBatch(batch)
	}
	return err
}

// Revision implements storage.Backend: the last published revision, which
// is the file's but after a commit that failed once it reached the file
// (see update), which does not move it.
func (s *Store) Revision(context.Context) (authz.Revision, error) {
	select {
	case <-s.done:
		return 0, fmt.Errorf("storage: revision: %w", storage.ErrClosed)
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev, nil
}

// LogStart implements storage.Backend.
func (s *Store) LogStart(context.Context) (authz.Revision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.compacted, nil
}

// Changes implements authz.Backend. limit must be positive: the log grows
// without bound, so an unbounded read is never what a caller wants.
func (s *Store) Changes(ctx context.Context, after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("storage: changes: limit must be positive, got %d", limit)
	}
	// The latest change sets are in memory: a reader that keeps up never
	// reads the file.
	out, recent, compacted, published := s.recentChanges(after, limit)
	if recent {
		return out, nil
	}
	err := s.fromFile("changes", after, compacted, published, limit, func(k, v []byte) error {
		cs, err := storage.DecodeChangeSet(v)
		if err != nil {
			return fmt.Errorf("change set %x: %w", k, err)
		}
		out = append(out, cs)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// fromFile calls each with the key and value of up to limit change sets
// after after in the file, in order, through published, the last one
// published; compacted is where the store's record says the log begins.
// Its errors, but ErrCompacted, say what (the read) failed.
func (s *Store) fromFile(what string, after, compacted, published authz.Revision, limit int, each func(k, v []byte) error) error {
	err := s.readLog(after, compacted, published, limit, each)
	if err != nil && !errors.Is(err, authz.ErrCompacted) {
		return fmt.Errorf("storage: %s: %w", what, closedAsErrClosed(err))
	}
	return err
}

// readLog is fromFile's read of the file.
func (s *Store) readLog(after, compacted, published authz.Revision, limit int, each func(k, v []byte) error) error {
	if after < compacted {
		return fmt.Errorf("storage: changes after %d: %w (it begins after revision %d)", after, authz.ErrCompacted, compacted)
	}
	if after == ^authz.Revision(0) {
		return nil
	}
	return unpanicked(func() error {
		return s.db.View(func(tx *bbolt.Tx) error {
			// The file's own compaction point, read in the transaction that
			// reads the log: a compaction commits its deletions before the
			// store's record of it moves, and a reader between the two would
			// find the log begin later than after+1 and miss what it lacks.
			compacted, err := storage.DecodeRevision(tx.Bucket(bucketMeta).Get(keyCompacted))
			if err != nil {
				return err
			}
			if after < compacted {
				return fmt.Errorf("storage: changes after %d: %w (it begins after revision %d)", after, authz.ErrCompacted, compacted)
			}
			// The log ends at the last published change set: one after it
			// is a commit that failed after it reached the file (see
			// update), which no one was told of.
			c := tx.Bucket(bucketChanges).Cursor()
			end := storage.EncodeRevision(published)
			n := 0
			for k, v := c.Seek(storage.EncodeRevision(after + 1)); k != nil && bytes.Compare(k, end) <= 0 && n < limit; k, v = c.Next() {
				if err := each(k, v); err != nil {
					return err
				}
				n++
			}
			return nil
		})
	})
}

// ChangeCounts implements authz.Backend: the changes of the change
// sets kept in memory, or else counted in their values in the file,
// undecoded.
func (s *Store) ChangeCounts(ctx context.Context, after authz.Revision, limit int) ([]int, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("storage: change counts: limit must be positive, got %d", limit)
	}
	var counts []int
	recent, inMemory, compacted, published := s.recentChanges(after, limit)
	if inMemory {
		for _, cs := range recent {
			counts = append(counts, len(cs.Changes))
		}
		return counts, nil
	}
	err := s.fromFile("change counts", after, compacted, published, limit, func(k, v []byte) error {
		n, err := storage.ChangeSetLen(v)
		if err != nil {
			return fmt.Errorf("change set %x: %w", k, err)
		}
		counts = append(counts, n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return counts, nil
}

// ChangePart implements authz.PartReader: n changes of the first change
// set after after, from the from-th, sliced from the change set kept in
// memory or decoded alone from its value in the file.
func (s *Store) ChangePart(ctx context.Context, after authz.Revision, from, n int) (authz.ChangeSet, int, error) {
	if from < 0 || n <= 0 {
		return authz.ChangeSet{}, 0, fmt.Errorf("storage: change part: changes %d and %d", from, n)
	}
	sets, inMemory, compacted, published := s.recentChanges(after, 1)
	if inMemory {
		if len(sets) == 0 {
			return authz.ChangeSet{}, 0, nil
		}
		cs := sets[0]
		total := len(cs.Changes)
		cs.Changes = cs.Changes[min(from, total):min(from+n, total)]
		return cs, total, nil
	}
	var (
		part  authz.ChangeSet
		total int
	)
	err := s.fromFile("change part", after, compacted, published, 1, func(k, v []byte) error {
		var err error
		if part, total, err = storage.DecodeChangeSetPart(v, from, n); err != nil {
			return fmt.Errorf("change set %x: %w", k, err)
		}
		return nil
	})
	if err != nil {
		return authz.ChangeSet{}, 0, err
	}
	return part, total, nil
}

// CommitTime implements authz.Backend: the time of a change set kept
// in memory, or else read from its value in the file, its changes left
// undecoded.
func (s *Store) CommitTime(ctx context.Context, rev authz.Revision) (time.Time, bool, error) {
	s.mu.Lock()
	if n := s.recent.len(); n > 0 && rev >= s.recent.at(0).Revision && rev <= s.recent.at(n-1).Revision && rev > s.compacted {
		t := s.recent.at(int(rev - s.recent.at(0).Revision)).Time
		s.mu.Unlock()
		return t, true, nil
	}
	published := s.rev
	s.mu.Unlock()
	if rev == 0 || rev > published {
		return time.Time{}, false, nil
	}
	var t time.Time
	found := false
	err := unpanicked(func() error {
		return s.db.View(func(tx *bbolt.Tx) error {
			compacted, err := storage.DecodeRevision(tx.Bucket(bucketMeta).Get(keyCompacted))
			if err != nil || rev <= compacted {
				return err
			}
			v := tx.Bucket(bucketChanges).Get(storage.EncodeRevision(rev))
			if v == nil {
				return nil
			}
			t, err = storage.ChangeSetTime(v)
			found = err == nil
			return err
		})
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("storage: commit time of %d: %w", rev, closedAsErrClosed(err))
	}
	return t, found, nil
}

// recentChanges returns up to limit change sets after after from those
// kept in memory, and true, when they hold the one after after; else the
// revision the log is compacted through and the last published one.
func (s *Store) recentChanges(after authz.Revision, limit int) ([]authz.ChangeSet, bool, authz.Revision, authz.Revision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.recent.len()
	if n == 0 || after+1 < s.recent.at(0).Revision || after < s.compacted {
		return nil, false, s.compacted, s.rev
	}
	// after is a client's, any uint64: the index is bounded as a revision,
	// before it is an int.
	i := int(min(after+1-s.recent.at(0).Revision, authz.Revision(n)))
	return s.recent.copyRange(i, i+min(limit, n-i)), true, s.compacted, s.rev
}

// Watch implements authz.Backend: what is committed after after, from the
// log and then as it is committed, until ctx ends or the store closes.
func (s *Store) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		for {
			s.mu.Lock()
			notify, rev := s.notify, s.rev
			s.mu.Unlock()
			if after < rev {
				batch, err := s.Changes(ctx, after, 256)
				if err != nil {
					yield(authz.ChangeSet{}, err)
					return
				}
				for _, cs := range batch {
					if !yield(cs, nil) {
						return
					}
					after = cs.Revision
				}
				continue
			}
			select {
			case <-notify:
			case <-ctx.Done():
				return
			case <-s.done:
				yield(authz.ChangeSet{}, storage.ErrClosed)
				return
			}
		}
	}
}

// compactBatch is how many change sets one compaction transaction deletes,
// so that compacting a long log never holds the writer for long.
const compactBatch = 10_000

// Compact implements storage.Backend. It deletes a batch of change sets per
// transaction, moving the horizon with each.
func (s *Store) Compact(ctx context.Context, before authz.Revision) error {
	for {
		done, err := s.compactBatch(ctx, before)
		if err != nil || done {
			return err
		}
	}
}

// compactBatch deletes up to compactBatch change sets at or before before,
// and reports whether none are left.
func (s *Store) compactBatch(ctx context.Context, before authz.Revision) (bool, error) {
	select {
	case s.writer <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-s.writer }()
	if s.closed {
		return false, storage.ErrClosed
	}
	s.mu.Lock()
	before = min(before, s.rev)
	if before <= s.compacted {
		s.mu.Unlock()
		return true, nil
	}
	upTo := min(before, s.compacted+compactBatch)
	s.mu.Unlock()
	err := s.update(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketChanges).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.First() {
			rev, err := storage.DecodeRevision(k)
			if err != nil {
				return err
			}
			if rev > upTo {
				break
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyCompacted, storage.EncodeRevision(upTo))
	})
	if err != nil {
		return false, fmt.Errorf("storage: compact: %w", closedAsErrClosed(err))
	}
	s.mu.Lock()
	s.compacted = upTo
	s.recent.dropThrough(upTo)
	s.mu.Unlock()
	return upTo == before, nil
}
