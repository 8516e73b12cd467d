package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// Files of format 1 hold JSON values, grants as a bare 8-byte expiry, one
// block per subject and resource (keyed subject, resource), and change sets
// as JSON. migrate rewrites them in format 2, a batch per transaction: every
// value says which format it is in (format 2 values start with 1, JSON with
// '{', a format 1 grant is 8 bytes long), so a migration cut off by a crash
// resumes where it stopped when the file is opened again. The format key is
// written last.

// legacyBlockID is the ID a migrated block gets: format 1 had one block per
// subject and resource.
const legacyBlockID = "migrated"

const migrateBatch = 50_000

// legacy are format 1's JSON shapes.
type (
	legacyPermission struct {
		Name        string   `json:"name"`
		Parents     []string `json:"parents"`
		Description string   `json:"description"`
	}
	legacyResource struct {
		Name    string `json:"name"`
		Parent  string `json:"parent"`
		Creator string `json:"creator"`
	}
	legacyRole struct {
		Name            string   `json:"name"`
		Scope           string   `json:"scope"`
		Permissions     []string `json:"permissions"`
		AssignableRoles []string `json:"assignable_roles"`
		BindableOn      []string `json:"bindable_on"`
		MaxHolders      uint32   `json:"max_holders"`
		Description     string   `json:"description"`
	}
	legacyGrant struct {
		Subject  string    `json:"subject"`
		Role     string    `json:"role"`
		Resource string    `json:"resource"`
		Expires  time.Time `json:"expires"`
	}
	legacyBlock struct {
		Subject     string    `json:"subject"`
		Resource    string    `json:"resource"`
		Permissions []string  `json:"permissions"`
		Expires     time.Time `json:"expires"`
		Reason      string    `json:"reason"`
	}
	legacyQuota struct {
		Scope        string `json:"scope"`
		ResourceType string `json:"resource_type"`
		Subject      string `json:"subject"`
		Limit        uint32 `json:"limit"`
	}
	legacyCreatorRole struct {
		ResourceType string `json:"resource_type"`
		Role         string `json:"role"`
	}
	legacyChange struct {
		Op          string             `json:"op"`
		Permission  *legacyPermission  `json:"permission"`
		Resource    *legacyResource    `json:"resource"`
		Role        *legacyRole        `json:"role"`
		Grant       *legacyGrant       `json:"grant"`
		Block       *legacyBlock       `json:"block"`
		Quota       *legacyQuota       `json:"quota"`
		CreatorRole *legacyCreatorRole `json:"creator_role"`
	}
	legacyChangeSet struct {
		Revision authz.Revision `json:"revision"`
		Time     time.Time      `json:"time"`
		Caller   string         `json:"caller"`
		Actor    string         `json:"actor"`
		Changes  []legacyChange `json:"changes"`
	}
)

func (r legacyResource) resource() authz.Resource {
	return authz.Resource{Name: r.Name, Parent: r.Parent, Creator: r.Creator}
}

var legacyOps = map[string]authz.Op{
	"put_permission": authz.OpPutPermission, "delete_permission": authz.OpDeletePermission,
	"put_resource": authz.OpPutResource, "delete_resource": authz.OpDeleteResource,
	"put_role": authz.OpPutRole, "delete_role": authz.OpDeleteRole,
	"put_grant": authz.OpPutGrant, "delete_grant": authz.OpDeleteGrant,
	"put_block": authz.OpPutBlock, "delete_block": authz.OpDeleteBlock,
	"put_quota": authz.OpPutQuota, "delete_quota": authz.OpDeleteQuota,
	"put_creator_role": authz.OpPutCreatorRole, "delete_creator_role": authz.OpDeleteCreatorRole,
}

func (c legacyChange) change() (authz.Change, error) {
	op, ok := legacyOps[c.Op]
	if !ok {
		return authz.Change{}, fmt.Errorf("unknown op %q", c.Op)
	}
	out := authz.Change{Op: op}
	switch {
	case c.Permission != nil:
		p := authz.Permission(*c.Permission)
		out.Permission = &p
	case c.Resource != nil:
		r := c.Resource.resource()
		out.Resource = &r
	case c.Role != nil:
		r := authz.Role(*c.Role)
		out.Role = &r
	case c.Grant != nil:
		g := authz.Grant(*c.Grant)
		out.Grant = &g
	case c.Block != nil:
		b := c.Block.block()
		out.Block = &b
	case c.Quota != nil:
		q := authz.Quota(*c.Quota)
		out.Quota = &q
	case c.CreatorRole != nil:
		cr := authz.CreatorRole(*c.CreatorRole)
		out.CreatorRole = &cr
	}
	return out, out.Check()
}

func (b legacyBlock) block() authz.Block {
	return authz.Block{Subject: b.Subject, Resource: b.Resource, ID: legacyBlockID, Permissions: b.Permissions, Expires: b.Expires, Reason: b.Reason}
}

// migrationStep converts one bucket's entries.
type migrationStep struct {
	bucket  []byte
	convert func(k, v []byte) (key, value []byte, err error)
}

// migrate rewrites a format 1 file in format 2.
func migrate(db *bbolt.DB) error {
	for _, step := range migrationSteps() {
		if err := migrateBucket(db, step.bucket, step.convert); err != nil {
			return fmt.Errorf("migrating %s: %w", step.bucket, err)
		}
	}
	return db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyFormat, []byte{fileFormat})
	})
}

// migrationSteps lists the buckets to convert, the change log last.
func migrationSteps() []migrationStep {
	entities := []struct {
		bucket  []byte
		convert func(k, v []byte) (authz.Change, error)
	}{
		{bucketOf(storage.KindPermission), legacyEntity[legacyPermission, authz.Permission](func(p legacyPermission) authz.Change {
			e := authz.Permission(p)
			return authz.Change{Op: authz.OpPutPermission, Permission: &e}
		})},
		{bucketOf(storage.KindResource), legacyEntity[legacyResource, authz.Resource](func(r legacyResource) authz.Change {
			e := r.resource()
			return authz.Change{Op: authz.OpPutResource, Resource: &e}
		})},
		{bucketOf(storage.KindRole), legacyEntity[legacyRole, authz.Role](func(r legacyRole) authz.Change {
			e := authz.Role(r)
			return authz.Change{Op: authz.OpPutRole, Role: &e}
		})},
		{bucketOf(storage.KindQuota), legacyEntity[legacyQuota, authz.Quota](func(q legacyQuota) authz.Change {
			e := authz.Quota(q)
			return authz.Change{Op: authz.OpPutQuota, Quota: &e}
		})},
		{bucketOf(storage.KindCreatorRole), legacyEntity[legacyCreatorRole, authz.CreatorRole](func(c legacyCreatorRole) authz.Change {
			e := authz.CreatorRole(c)
			return authz.Change{Op: authz.OpPutCreatorRole, CreatorRole: &e}
		})},
		{bucketOf(storage.KindBlock), legacyEntity[legacyBlock, authz.Block](func(b legacyBlock) authz.Change {
			e := b.block()
			return authz.Change{Op: authz.OpPutBlock, Block: &e}
		})},
		{bucketOf(storage.KindGrant), func(k, v []byte) (authz.Change, error) {
			parts := bytes.Split(k, []byte{0})
			if len(parts) != 3 || len(v) != 8 {
				return authz.Change{}, fmt.Errorf("grant %q: not a format 1 grant", k)
			}
			g := authz.Grant{Subject: string(parts[0]), Resource: string(parts[1]), Role: string(parts[2])}
			if n := int64(binary.BigEndian.Uint64(v)); n != 0 {
				g.Expires = time.Unix(0, n).UTC()
			}
			return authz.Change{Op: authz.OpPutGrant, Grant: &g}, nil
		}},
	}
	var steps []migrationStep
	for _, e := range entities {
		convert := e.convert
		steps = append(steps, migrationStep{bucket: e.bucket, convert: func(k, v []byte) ([]byte, []byte, error) {
			c, err := convert(k, v)
			if err != nil {
				return nil, nil, err
			}
			entry, err := storage.EntryOf(c)
			if err != nil {
				return nil, nil, fmt.Errorf("%q: %w", k, err)
			}
			return entry.Key, entry.Value, nil
		}})
	}
	return append(steps, migrationStep{bucket: bucketChanges, convert: convertLegacyChangeSet})
}

// legacyEntity converts a JSON value of shape L.
func legacyEntity[L, E any](change func(L) authz.Change) func(k, v []byte) (authz.Change, error) {
	return func(k, v []byte) (authz.Change, error) {
		var l L
		if err := json.Unmarshal(v, &l); err != nil {
			return authz.Change{}, fmt.Errorf("%q: %w", k, err)
		}
		return change(l), nil
	}
}

// isLegacy tells a format 1 value from a format 2 one.
func isLegacy(bucket, v []byte) bool {
	if bytes.Equal(bucket, bucketOf(storage.KindGrant)) {
		return len(v) == 8
	}
	return len(v) > 0 && v[0] == '{'
}

// migrateBucket converts the legacy entries of a bucket, a batch per
// transaction.
func migrateBucket(db *bbolt.DB, bucket []byte, convert func(k, v []byte) (key, value []byte, err error)) error {
	for {
		n := 0
		err := db.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(bucket)
			type rewrite struct{ old, key, value []byte }
			var batch []rewrite
			c := b.Cursor()
			for k, v := c.First(); k != nil && len(batch) < migrateBatch; k, v = c.Next() {
				if !isLegacy(bucket, v) {
					continue
				}
				key, value, err := convert(k, v)
				if err != nil {
					return err
				}
				batch = append(batch, rewrite{old: bytes.Clone(k), key: key, value: value})
			}
			for _, r := range batch {
				if !bytes.Equal(r.old, r.key) {
					if err := b.Delete(r.old); err != nil {
						return err
					}
				}
				if err := b.Put(r.key, r.value); err != nil {
					return err
				}
			}
			n = len(batch)
			return nil
		})
		if err != nil || n < migrateBatch {
			return err
		}
	}
}

// convertLegacyChangeSet converts a JSON change set of the log.
func convertLegacyChangeSet(k, v []byte) ([]byte, []byte, error) {
	var l legacyChangeSet
	if err := json.Unmarshal(v, &l); err != nil {
		return nil, nil, fmt.Errorf("change set %x: %w", k, err)
	}
	cs := authz.ChangeSet{Revision: l.Revision, Time: l.Time, Caller: l.Caller, Actor: l.Actor}
	for i, lc := range l.Changes {
		c, err := lc.change()
		if err != nil {
			return nil, nil, fmt.Errorf("change set %d, change %d: %w", l.Revision, i, err)
		}
		cs.Changes = append(cs.Changes, c)
	}
	value, err := storage.EncodeChangeSet(cs)
	return bytes.Clone(k), value, err
}
