package storage

import (
	"encoding/json"
	"fmt"

	"github.com/usher-authz/usher/authz"
)

// kv is a bucket of entities, keyed as encoding.go says: a bbolt bucket, or
// the in-memory backend's map.
type kv interface {
	Put(k, v []byte) error
	Delete(k []byte) error
	ForEach(fn func(k, v []byte) error) error
}

// entities are the buckets that hold the current state, one per kind.
type entities struct {
	permissions, resources, roles, grants, blocks, quotas, creators kv
}

// apply writes one change. It checks only what it needs to build keys and
// values; whether the change is allowed was decided before Commit.
func (b entities) apply(c *authz.Change) error {
	switch c.Op {
	case authz.OpPutPermission, authz.OpDeletePermission:
		if c.Permission == nil {
			return errMissingEntity("permission")
		}
		return putOrDelete(b.permissions, c.Op == authz.OpPutPermission, c.Permission, permissionKey)
	case authz.OpPutResource, authz.OpDeleteResource:
		if c.Resource == nil {
			return errMissingEntity("resource")
		}
		return putOrDelete(b.resources, c.Op == authz.OpPutResource, c.Resource, resourceKey)
	case authz.OpPutRole, authz.OpDeleteRole:
		if c.Role == nil {
			return errMissingEntity("role")
		}
		return putOrDelete(b.roles, c.Op == authz.OpPutRole, c.Role, roleKey)
	case authz.OpPutBlock, authz.OpDeleteBlock:
		if c.Block == nil {
			return errMissingEntity("block")
		}
		return putOrDelete(b.blocks, c.Op == authz.OpPutBlock, c.Block, blockKey)
	case authz.OpPutQuota, authz.OpDeleteQuota:
		if c.Quota == nil {
			return errMissingEntity("quota")
		}
		return putOrDelete(b.quotas, c.Op == authz.OpPutQuota, c.Quota, quotaKey)
	case authz.OpPutCreatorRole, authz.OpDeleteCreatorRole:
		if c.CreatorRole == nil {
			return errMissingEntity("creator role")
		}
		return putOrDelete(b.creators, c.Op == authz.OpPutCreatorRole, c.CreatorRole, creatorRoleKey)
	case authz.OpPutGrant, authz.OpDeleteGrant:
		if c.Grant == nil {
			return errMissingEntity("grant")
		}
		k, err := grantKey(c.Grant)
		if err != nil {
			return err
		}
		if c.Op == authz.OpDeleteGrant {
			return b.grants.Delete(k)
		}
		v, err := encodeExpiry(c.Grant.Expires)
		if err != nil {
			return err
		}
		return b.grants.Put(k, v)
	default:
		return fmt.Errorf("unknown op %d", uint8(c.Op))
	}
}

// putOrDelete stores entities whose value is their JSON; grants are the
// exception because their key already says everything but the expiry.
func putOrDelete[T any](b kv, put bool, entity *T, key func(*T) ([]byte, error)) error {
	k, err := key(entity)
	if err != nil {
		return err
	}
	if !put {
		return b.Delete(k)
	}
	v, err := json.Marshal(entity)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

func errMissingEntity(kind string) error {
	return fmt.Errorf("%s is not set", kind)
}
