package storage

import (
	"encoding/json"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
)

// Snapshot implements Backend. Everything is read in one bbolt read
// transaction, which is what makes the revision and the entities agree while
// commits keep running.
func (s *Store) Snapshot() (authz.Snapshot, error) {
	var snap authz.Snapshot
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := openBuckets(tx)
		rev, err := decodeRevision(b.meta.Get(keyRevision))
		if err != nil {
			return err
		}
		snap, err = b.entities.snapshot(rev)
		return err
	})
	if err != nil {
		return authz.Snapshot{}, fmt.Errorf("storage: snapshot: %w", closedAsErrClosed(err))
	}
	return snap, nil
}

// snapshot decodes every entity, in key order.
func (b entities) snapshot(rev authz.Revision) (authz.Snapshot, error) {
	snap := authz.Snapshot{Revision: rev}
	var err error
	if snap.Permissions, err = loadJSON[authz.Permission](b.permissions, bucketPermissions); err != nil {
		return snap, err
	}
	if snap.Resources, err = loadJSON[authz.Resource](b.resources, bucketResources); err != nil {
		return snap, err
	}
	if snap.Roles, err = loadJSON[authz.Role](b.roles, bucketRoles); err != nil {
		return snap, err
	}
	if snap.Blocks, err = loadJSON[authz.Block](b.blocks, bucketBlocks); err != nil {
		return snap, err
	}
	if snap.Quotas, err = loadJSON[authz.Quota](b.quotas, bucketQuotas); err != nil {
		return snap, err
	}
	if snap.CreatorRoles, err = loadJSON[authz.CreatorRole](b.creators, bucketCreators); err != nil {
		return snap, err
	}
	err = b.grants.ForEach(func(k, v []byte) error {
		g, err := decodeGrant(k, v)
		if err != nil {
			return err
		}
		snap.Grants = append(snap.Grants, g)
		return nil
	})
	return snap, err
}

// loadJSON decodes a bucket in key order; the key is not consulted because
// each value repeats its key fields.
func loadJSON[T any](b kv, name []byte) ([]T, error) {
	var out []T
	err := b.ForEach(func(k, v []byte) error {
		var e T
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("bucket %q key %q: %w", name, k, err)
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// Changes implements Backend. limit must be positive: the log grows without
// bound, so an unbounded read is never what a caller wants.
func (s *Store) Changes(after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("storage: changes: limit must be positive, got %d", limit)
	}
	if after == ^authz.Revision(0) {
		return nil, nil
	}
	var out []authz.ChangeSet
	err := s.db.View(func(tx *bbolt.Tx) error {
		c := openBuckets(tx).changes.Cursor()
		for k, v := c.Seek(encodeRevision(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			var cs authz.ChangeSet
			if err := json.Unmarshal(v, &cs); err != nil {
				return fmt.Errorf("change set %x: %w", k, err)
			}
			out = append(out, cs)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: changes: %w", closedAsErrClosed(err))
	}
	return out, nil
}

// Revision implements Backend.
func (s *Store) Revision() (authz.Revision, error) {
	var rev authz.Revision
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		rev, err = decodeRevision(openBuckets(tx).meta.Get(keyRevision))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("storage: revision: %w", closedAsErrClosed(err))
	}
	return rev, nil
}
