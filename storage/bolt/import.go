package bolt

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// importBatch is how many entities one import transaction writes: large
// enough that a million grants take a few dozen fsyncs, small enough that a
// transaction's dirty pages stay a few hundred megabytes at most.
const importBatch = 200_000

// Import writes snap into an empty store, bypassing the engine, and returns
// the revision the store is at: for `usher migrate`, which copies a store
// whole, and for loading a generated platform quickly (usher bench populate).
//
// A snapshot at a revision keeps it, so that the revisions clients were told
// (min_revision, Watch) mean the same in the copy; the change log begins
// after it, its history staying with the source. A snapshot at revision 0,
// a generated platform, becomes revision 1, whose change set names the
// caller and what was imported rather than every entity. Nothing is
// validated beyond what encoding needs, so snap must be consistent (parents
// registered, roles visible).
func (s *Store) Import(snap authz.Snapshot, caller string) (authz.Revision, error) {
	s.writer <- struct{}{}
	defer func() { <-s.writer }()
	if s.closed {
		return 0, storage.ErrClosed
	}
	if rev, err := s.Revision(context.Background()); err != nil || rev != 0 {
		return 0, fmt.Errorf("storage: import into %s: the store is not empty (revision %d, %v)", s.path, rev, err)
	}
	// Entities at revision 0 are what a failed import left.
	if some, err := s.holdsEntities(); err != nil || some {
		return 0, fmt.Errorf("storage: import into %s: the store is not empty (it holds entities at revision 0, %v)", s.path, err)
	}
	var entries []storage.Entry
	for _, c := range storage.Puts(snap) {
		e, err := storage.EntryOf(c)
		if err != nil {
			return 0, fmt.Errorf("storage: import: %s: %w", c.Op, err)
		}
		entries = append(entries, e)
	}
	// Keys go in order within each bucket, which bbolt appends fastest.
	slices.SortStableFunc(entries, func(a, b storage.Entry) int {
		if a.Kind != b.Kind {
			return int(a.Kind) - int(b.Kind)
		}
		return bytes.Compare(a.Key, b.Key)
	})
	for start := 0; start < len(entries); start += importBatch {
		batch := entries[start:min(start+importBatch, len(entries))]
		err := s.update(func(tx *bbolt.Tx) error {
			for _, e := range batch {
				b := tx.Bucket(bucketOf(e.Kind))
				b.FillPercent = 1.0
				if err := b.Put(e.Key, e.Value); err != nil {
					return fmt.Errorf("%s %q: %w", e.Kind, e.Key, err)
				}
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("storage: import into %s: %w", s.path, err)
		}
	}
	if snap.Revision > 0 {
		return s.importedAt(snap.Revision)
	}
	record := authz.ChangeSet{
		Revision: 1,
		Time:     time.Now().UTC(),
		Caller: fmt.Sprintf("%s (import of %d permissions, %d resources, %d roles, %d grants, %d blocks)",
			caller, len(snap.Permissions), len(snap.Resources), len(snap.Roles), len(snap.Grants), len(snap.Blocks)),
	}
	v, err := storage.EncodeChangeSet(record)
	if err != nil {
		return 0, err
	}
	err = s.update(func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketChanges).Put(storage.EncodeRevision(1), v); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyRevision, storage.EncodeRevision(1))
	})
	if err != nil {
		return 0, fmt.Errorf("storage: import into %s: %w", s.path, err)
	}
	s.versions = storage.NewVersions(1, 0)
	s.publish([]authz.ChangeSet{record}, []int{len(v)})
	return 1, nil
}

// importedAt puts the store at rev with an empty change log compacted up to
// it: a reader from an earlier revision must load a snapshot.
func (s *Store) importedAt(rev authz.Revision) (authz.Revision, error) {
	err := s.update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyCompacted, storage.EncodeRevision(rev)); err != nil {
			return err
		}
		return meta.Put(keyRevision, storage.EncodeRevision(rev))
	})
	if err != nil {
		return 0, fmt.Errorf("storage: import into %s: %w", s.path, err)
	}
	s.versions = storage.NewVersions(rev, 0)
	s.mu.Lock()
	s.rev, s.compacted = rev, rev
	// Watchers wake up, find the log compacted past them, and load anew.
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	return rev, nil
}

// holdsEntities reports whether any entity is stored.
func (s *Store) holdsEntities() (bool, error) {
	some := false
	err := s.db.View(func(tx *bbolt.Tx) error {
		for _, k := range storage.Kinds {
			if key, _ := tx.Bucket(bucketOf(k)).Cursor().First(); key != nil {
				some = true
			}
		}
		return nil
	})
	return some, err
}
