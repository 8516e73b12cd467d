package authz

import (
	"fmt"
	"time"
)

// Revision numbers committed writes. Every write bumps the one global
// revision; 0 means "nothing written yet".
type Revision uint64

// RootName is the reserved resource that is the parent of every resource that
// has no other.
const RootName = "root"

// Wildcard in a role's permissions means every permission; in its assignable
// roles, any role whose permissions the holder has.
const Wildcard = "*"

// Permission is an entry of the permission catalog. Holding a permission
// implies every permission that names it as a parent, transitively.
type Permission struct {
	Name        string   `json:"name"`
	Parents     []string `json:"parents,omitempty"`
	Description string   `json:"description,omitempty"`
}

// Resource is a node of the resource tree. Creator is the actor who
// registered it, if one did; quotas per subject count by it.
type Resource struct {
	Name    string `json:"name"`
	Parent  string `json:"parent"`
	Creator string `json:"creator,omitempty"`
}

// Role is a named bundle of permissions defined at a scope.
type Role struct {
	Name            string   `json:"name"`
	Scope           string   `json:"scope"`
	Permissions     []string `json:"permissions,omitempty"`
	AssignableRoles []string `json:"assignable_roles,omitempty"`
	BindableOn      []string `json:"bindable_on,omitempty"`
	MaxHolders      uint32   `json:"max_holders,omitempty"`
	Description     string   `json:"description,omitempty"`
}

// bindableOn reports whether the role may be granted on resources of type
// typ: bindable_on lists the types, and an empty list allows any.
func (r Role) bindableOn(typ string) bool {
	return len(r.BindableOn) == 0 || contains(r.BindableOn, typ)
}

// Grant binds a subject to a role on a resource and its descendants. A zero
// Expires means the grant never expires.
type Grant struct {
	Subject  string    `json:"subject"`
	Role     string    `json:"role"`
	Resource string    `json:"resource"`
	Expires  time.Time `json:"expires,omitzero"`
}

// Block denies a subject permissions (all of them when Permissions is empty)
// on a resource and its descendants, overriding every grant.
type Block struct {
	Subject     string    `json:"subject"`
	Resource    string    `json:"resource"`
	Permissions []string  `json:"permissions,omitempty"`
	Expires     time.Time `json:"expires,omitzero"`
	Reason      string    `json:"reason,omitempty"`
}

// Quota limits how many resources of ResourceType may exist in Scope's
// subtree; with a Subject, how many that subject may register there.
type Quota struct {
	Scope        string `json:"scope"`
	ResourceType string `json:"resource_type"`
	Subject      string `json:"subject,omitempty"`
	Limit        uint32 `json:"limit"`
}

// CreatorRole is granted to the actor who registers a resource of
// ResourceType, in the same transaction.
type CreatorRole struct {
	ResourceType string `json:"resource_type"`
	Role         string `json:"role"`
}

// Policy is a permission catalog with the resources, roles, creator roles
// and quotas that use it.
type Policy struct {
	Permissions  []Permission
	Resources    []Resource
	Roles        []Role
	CreatorRoles []CreatorRole
	Quotas       []Quota
}

// Op says what a Change does.
type Op uint8

// The operations a change set is made of. Deletions carry only the key fields
// of what they delete.
const (
	OpPutPermission Op = iota + 1
	OpDeletePermission
	OpPutResource
	OpDeleteResource
	OpPutRole
	OpDeleteRole
	OpPutGrant
	OpDeleteGrant
	OpPutBlock
	OpDeleteBlock
	OpPutQuota
	OpDeleteQuota
	OpPutCreatorRole
	OpDeleteCreatorRole
)

var opNames = map[Op]string{
	OpPutPermission:     "put_permission",
	OpDeletePermission:  "delete_permission",
	OpPutResource:       "put_resource",
	OpDeleteResource:    "delete_resource",
	OpPutRole:           "put_role",
	OpDeleteRole:        "delete_role",
	OpPutGrant:          "put_grant",
	OpDeleteGrant:       "delete_grant",
	OpPutBlock:          "put_block",
	OpDeleteBlock:       "delete_block",
	OpPutQuota:          "put_quota",
	OpDeleteQuota:       "delete_quota",
	OpPutCreatorRole:    "put_creator_role",
	OpDeleteCreatorRole: "delete_creator_role",
}

func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// MarshalText writes the op's name, so change records read well.
func (o Op) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText reads an op's name.
func (o *Op) UnmarshalText(b []byte) error {
	for k, v := range opNames {
		if v == string(b) {
			*o = k
			return nil
		}
	}
	return fmt.Errorf("unknown change op %q", b)
}

// Change is one entity put or deleted. Exactly the field that matches Op is
// set.
type Change struct {
	Op          Op           `json:"op"`
	Permission  *Permission  `json:"permission,omitempty"`
	Resource    *Resource    `json:"resource,omitempty"`
	Role        *Role        `json:"role,omitempty"`
	Grant       *Grant       `json:"grant,omitempty"`
	Block       *Block       `json:"block,omitempty"`
	Quota       *Quota       `json:"quota,omitempty"`
	CreatorRole *CreatorRole `json:"creator_role,omitempty"`
}

// ChangeSet is what one write changed, as committed: the unit of the change
// log and of the stream that feeds an Index.
type ChangeSet struct {
	Revision Revision  `json:"revision"`
	Time     time.Time `json:"time"`
	Caller   string    `json:"caller"`
	Actor    string    `json:"actor,omitempty"`
	Changes  []Change  `json:"changes"`
}

// Snapshot is every entity at one revision, as a backend loads it at
// start-up.
type Snapshot struct {
	Revision     Revision
	Permissions  []Permission
	Resources    []Resource
	Roles        []Role
	Grants       []Grant
	Blocks       []Block
	Quotas       []Quota
	CreatorRoles []CreatorRole
}
