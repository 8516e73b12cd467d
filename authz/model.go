package authz

import (
	"fmt"
	"strings"
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
	Name        string
	Parents     []string
	Description string
}

// Resource is a node of the resource tree. Creator is the actor who
// registered it, if one did; quotas per subject count by it. StartsAt and
// Live are a call's stage, which its Admission rule reads: when it starts,
// and whether it has gone live.
type Resource struct {
	Name     string
	Parent   string
	Creator  string
	StartsAt time.Time
	Live     bool
}

// Role is a named bundle of permissions defined at a scope.
type Role struct {
	Name            string
	Scope           string
	Permissions     []string
	AssignableRoles []string
	BindableOn      []string
	MaxHolders      uint32
	Description     string
}

// bindableOn reports whether the role may be granted on resources of type
// typ: bindable_on lists the types, and an empty list allows any.
func (r Role) bindableOn(typ string) bool {
	return len(r.BindableOn) == 0 || contains(r.BindableOn, typ)
}

// Grant binds a subject to a role on a resource and its descendants. A zero
// Expires means the grant never expires.
type Grant struct {
	Subject  string
	Role     string
	Resource string
	Expires  time.Time
}

// Block denies a subject permissions (all of them when Permissions is empty)
// on a resource and its descendants, overriding every grant. A subject may
// carry several blocks on one resource; ID tells them apart.
type Block struct {
	Subject     string
	Resource    string
	ID          string
	Permissions []string
	Expires     time.Time
	Reason      string
}

// Quota limits how many resources of ResourceType may exist in Scope's
// subtree; with a Subject, how many that subject may register there.
type Quota struct {
	Scope        string
	ResourceType string
	Subject      string
	Limit        uint32
}

// DefaultQuota is the quota every newly registered resource of ScopeType
// starts with, in the same write: Livebox's "within the limits you
// allocate" holds from the first room.
type DefaultQuota struct {
	ScopeType    string
	ResourceType string
	Limit        uint32
}

// CreatorRole is granted to the actor who registers a resource of
// ResourceType, in the same transaction.
type CreatorRole struct {
	ResourceType string
	Role         string
}

// Admission says how subjects join the resources of ResourceType at or
// below Scope (DESIGN.md, "Admission: joining a call"); the rule at the
// nearest scope wins. Permissions left empty are never held.
type Admission struct {
	Scope        string
	ResourceType string
	// Join is the permission that lets a subject in.
	Join string
	// Backstage lets its holders in before the call opens.
	Backstage string
	// RequireLive keeps calls closed until they go live.
	RequireLive bool
	// JoinAhead opens a call this long before it starts.
	JoinAhead time.Duration
	// Stage lets an actor schedule a call and take it live.
	Stage string
	// Lobby, when set, makes subjects wait to be admitted.
	Lobby *Lobby
	// MaxParticipants bounds the counted live sessions; 0 for no limit.
	MaxParticipants uint32
	// UncountedRoles' holders do not count against MaxParticipants.
	UncountedRoles []string
	// ExclusiveRoles and ExclusivePermissions may each be held by one
	// participant of a call at a time. A holder of an exclusive permission
	// also enters only a call that no other occupant is in (OccupantMark):
	// Livebox's Unshared users use "the video conferencing rooms not used
	// by any other sub-users", while Shared users share a room.
	ExclusiveRoles       []string
	ExclusivePermissions []string
	// Lease is how long a session lives without renewal.
	Lease time.Duration
	// Media maps capabilities to LiveKit's video grant.
	Media *MediaMapping
}

// Lobby is where subjects wait to be admitted: those who hold Admit,
// Bypass, or a grant of Role on the call itself go straight in.
type Lobby struct {
	Admit  string
	Role   string
	Bypass string
}

// MediaMapping says which permission gives each field of LiveKit's video
// grant; media/livekit's Mapping is the same struct, with the token.
//
// RoomAdmin, RoomRecord and each source of CanPublishSources may name
// several permissions, separated by commas, all of which a participant
// must hold: LiveKit's roomAdmin mutes, removes and re-permissions
// participants, roomRecord starts and stops every egress, recordings and
// broadcasts alike, and audio published as screen_share_audio is heard as
// a microphone's is, so each may stand for more than one capability
// (MediaPermissions).
type MediaMapping struct {
	RoomJoin          string
	CanPublish        string
	CanPublishSources map[string]string
	CanSubscribe      string
	CanPublishData    string
	RoomAdmin         string
	RoomRecord        string
	Hidden            string
}

// MediaPermissions splits a RoomAdmin, RoomRecord or source's value into
// the permissions it names, all required; nil for "".
func MediaPermissions(value string) []string {
	if value == "" {
		return nil
	}
	return strings.Split(value, ",")
}

// Policy is a permission catalog with the resources, roles, creator roles,
// quotas and admission rules that use it.
type Policy struct {
	Permissions   []Permission
	Resources     []Resource
	Roles         []Role
	CreatorRoles  []CreatorRole
	Quotas        []Quota
	DefaultQuotas []DefaultQuota
	Admissions    []Admission
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
	OpPutDefaultQuota
	OpDeleteDefaultQuota
	OpPutAdmission
	OpDeleteAdmission
)

var opNames = [...]string{
	OpPutPermission:      "put_permission",
	OpDeletePermission:   "delete_permission",
	OpPutResource:        "put_resource",
	OpDeleteResource:     "delete_resource",
	OpPutRole:            "put_role",
	OpDeleteRole:         "delete_role",
	OpPutGrant:           "put_grant",
	OpDeleteGrant:        "delete_grant",
	OpPutBlock:           "put_block",
	OpDeleteBlock:        "delete_block",
	OpPutQuota:           "put_quota",
	OpDeleteQuota:        "delete_quota",
	OpPutCreatorRole:     "put_creator_role",
	OpDeleteCreatorRole:  "delete_creator_role",
	OpPutDefaultQuota:    "put_default_quota",
	OpDeleteDefaultQuota: "delete_default_quota",
	OpPutAdmission:       "put_admission",
	OpDeleteAdmission:    "delete_admission",
}

func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Valid reports whether o is one of the operations above.
func (o Op) Valid() bool { return o >= OpPutPermission && o <= OpDeleteAdmission }

// Put reports whether o puts an entity rather than deleting one.
func (o Op) Put() bool { return o%2 == 1 }

// Change is one entity put or deleted. Exactly the field that matches Op is
// set.
type Change struct {
	Op           Op
	Permission   *Permission
	Resource     *Resource
	Role         *Role
	Grant        *Grant
	Block        *Block
	Quota        *Quota
	CreatorRole  *CreatorRole
	DefaultQuota *DefaultQuota
	Admission    *Admission
	// PreviousParent is the parent a resource leaves: for OpPutResource,
	// when it moves, and for OpDeleteResource. Empty otherwise, and in
	// change sets written before it was kept.
	PreviousParent string
}

// entity returns the one entity the change carries, or nil.
func (c Change) entity() any {
	switch {
	case c.Permission != nil:
		return c.Permission
	case c.Resource != nil:
		return c.Resource
	case c.Role != nil:
		return c.Role
	case c.Grant != nil:
		return c.Grant
	case c.Block != nil:
		return c.Block
	case c.Quota != nil:
		return c.Quota
	case c.CreatorRole != nil:
		return c.CreatorRole
	case c.DefaultQuota != nil:
		return c.DefaultQuota
	case c.Admission != nil:
		return c.Admission
	}
	return nil
}

// Check reports a change whose entity does not match its op, which no
// backend may store and no index may apply.
func (c Change) Check() error {
	if !c.Op.Valid() {
		return fmt.Errorf("unknown change op %d", uint8(c.Op))
	}
	var ok bool
	switch c.Op {
	case OpPutPermission, OpDeletePermission:
		ok = c.Permission != nil
	case OpPutResource, OpDeleteResource:
		ok = c.Resource != nil
	case OpPutRole, OpDeleteRole:
		ok = c.Role != nil
	case OpPutGrant, OpDeleteGrant:
		ok = c.Grant != nil
	case OpPutBlock, OpDeleteBlock:
		ok = c.Block != nil
	case OpPutQuota, OpDeleteQuota:
		ok = c.Quota != nil
	case OpPutCreatorRole, OpDeleteCreatorRole:
		ok = c.CreatorRole != nil
	case OpPutDefaultQuota, OpDeleteDefaultQuota:
		ok = c.DefaultQuota != nil
	case OpPutAdmission, OpDeleteAdmission:
		ok = c.Admission != nil
	}
	if !ok {
		return fmt.Errorf("change %s carries no entity of its kind", c.Op)
	}
	return nil
}

// ChangeSet is what one write changed, as committed: the unit of the change
// log and of the stream that feeds an Index.
type ChangeSet struct {
	Revision Revision
	Time     time.Time
	Caller   string
	Actor    string
	Changes  []Change
	// Continued marks a part of a change set, in a page of ListChanges:
	// the set's changes go on in the next page. It is never stored.
	Continued bool
}

// Snapshot is every entity at one revision, as a backend loads it at
// start-up.
type Snapshot struct {
	Revision      Revision
	Permissions   []Permission
	Resources     []Resource
	Roles         []Role
	Grants        []Grant
	Blocks        []Block
	Quotas        []Quota
	CreatorRoles  []CreatorRole
	DefaultQuotas []DefaultQuota
	Admissions    []Admission
}
