package storage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
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
	if rev, err := s.Revision(); err != nil || rev != 0 {
		return 0, fmt.Errorf("storage: import into %s: the store is not empty (revision %d, %v)", s.path, rev, err)
	}
	var changes []authz.Change
	for i := range snap.Permissions {
		changes = append(changes, authz.Change{Op: authz.OpPutPermission, Permission: &snap.Permissions[i]})
	}
	for i := range snap.Resources {
		changes = append(changes, authz.Change{Op: authz.OpPutResource, Resource: &snap.Resources[i]})
	}
	for i := range snap.Roles {
		changes = append(changes, authz.Change{Op: authz.OpPutRole, Role: &snap.Roles[i]})
	}
	for i := range snap.Blocks {
		changes = append(changes, authz.Change{Op: authz.OpPutBlock, Block: &snap.Blocks[i]})
	}
	for i := range snap.Quotas {
		changes = append(changes, authz.Change{Op: authz.OpPutQuota, Quota: &snap.Quotas[i]})
	}
	for i := range snap.CreatorRoles {
		changes = append(changes, authz.Change{Op: authz.OpPutCreatorRole, CreatorRole: &snap.CreatorRoles[i]})
	}
	// Grants go in key order, which bbolt appends fastest.
	keys := make([][]byte, len(snap.Grants))
	order := make([]int, len(snap.Grants))
	for i := range snap.Grants {
		k, err := grantKey(&snap.Grants[i])
		if err != nil {
			return 0, fmt.Errorf("storage: import: grant %d: %w", i, err)
		}
		keys[i], order[i] = k, i
	}
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(keys[a], keys[b]) })
	for _, i := range order {
		changes = append(changes, authz.Change{Op: authz.OpPutGrant, Grant: &snap.Grants[i]})
	}
	for start := 0; start < len(changes); start += importBatch {
		batch := changes[start:min(start+importBatch, len(changes))]
		err := s.db.Update(func(tx *bbolt.Tx) error {
			b := openBuckets(tx)
			tx.Bucket(bucketGrants).FillPercent = 1.0
			for i := range batch {
				if err := b.apply(&batch[i]); err != nil {
					return fmt.Errorf("%s: %w", batch[i].Op, err)
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
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := openBuckets(tx)
		v, err := json.Marshal(record)
		if err != nil {
			return err
		}
		if err := b.changes.Put(encodeRevision(1), v); err != nil {
			return err
		}
		return b.meta.Put(keyRevision, encodeRevision(1))
	})
	if err != nil {
		return 0, fmt.Errorf("storage: import into %s: %w", s.path, err)
	}
	return 1, nil
}
