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

// Import writes snap into an empty store as revision 1, bypassing the
// engine: for loading a generated platform (usher bench populate) quickly.
// The change log records one change set naming the caller and what was
// imported, not every entity. Nothing is validated beyond what encoding
// needs, so snap must be consistent (parents registered, roles visible).
func (s *Store) Import(snap authz.Snapshot, caller string) (authz.Revision, error) {
	s.writer <- struct{}{}
	defer func() { <-s.writer }()
	if rev, err := s.Revision(context.Background()); err != nil || rev != 0 {
		return 0, fmt.Errorf("storage: import into %s: the store is not empty (revision %d, %v)", s.path, rev, err)
	}
	var entries []storage.Entry
	add := func(c authz.Change) error {
		e, err := storage.EntryOf(c)
		if err != nil {
			return fmt.Errorf("storage: import: %s: %w", c.Op, err)
		}
		entries = append(entries, e)
		return nil
	}
	changes := snap.Changes()
	for _, c := range changes {
		if err := add(c); err != nil {
			return 0, err
		}
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
		err := s.db.Update(func(tx *bbolt.Tx) error {
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
	err = s.db.Update(func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketChanges).Put(storage.EncodeRevision(1), v); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyRevision, storage.EncodeRevision(1))
	})
	if err != nil {
		return 0, fmt.Errorf("storage: import into %s: %w", s.path, err)
	}
	s.versions = storage.NewVersions(1, 0)
	s.publish([]authz.ChangeSet{record})
	return 1, nil
}
