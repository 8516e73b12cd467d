package client

import (
	"context"
	"slices"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// ReadOption adjusts a read: Check, ListPermissions, Join.
type ReadOption func(*readOptions)

type readOptions struct {
	minRevision uint64
	reserved    bool
}

func readOptionsOf(opts []ReadOption) readOptions {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// MinRevision answers at revision rev or later: read your own writes by
// passing the revision a write returned. The server waits for its index
// to reach it, within the call's deadline, else refuses with
// ErrRevisionNotReached.
func MinRevision(rev uint64) ReadOption {
	return func(o *readOptions) { o.minRevision = rev }
}

// IncludeReserved makes ListPermissions list Usher's own reserved
// permissions (usher.*) too.
func IncludeReserved() ReadOption {
	return func(o *readOptions) { o.reserved = true }
}

// Decision is the answer to one check, and the revision it was made at.
type Decision struct {
	Allowed bool
	// Reason is why: GRANTED, BLOCKED, NO_GRANT or UNKNOWN_RESOURCE.
	Reason usherv1.Reason
	// Role and Scope: for GRANTED, the role that holds the permission and
	// the resource its grant is on; for BLOCKED, Scope is the resource the
	// block is on.
	Role, Scope string
	// BlockID and BlockReason: for BLOCKED, the deciding block and the
	// reason text recorded with it.
	BlockID, BlockReason string
	Revision             uint64
}

// Check asks whether subject may do permission on resource. A denial is
// not an error: allowed is false and the decision says why; an unknown
// resource is a denial too. The error is for a malformed name or an
// undeclared permission (InvalidArgument), an unknown caller, or a call
// that failed.
func (c *Client) Check(ctx context.Context, subject, permission, resource string, opts ...ReadOption) (allowed bool, d *Decision, err error) {
	o := readOptionsOf(opts)
	resp, err := c.Authorization.Check(ctx, &usherv1.CheckRequest{Subject: subject, Permission: permission, Resource: resource, MinRevision: o.minRevision})
	if err != nil {
		return false, nil, err
	}
	pd := resp.GetDecision()
	d = &Decision{
		Allowed: pd.GetAllowed(), Reason: pd.GetReason(), Role: pd.GetRole(), Scope: pd.GetScope(),
		BlockID: pd.GetBlockId(), BlockReason: pd.GetBlockReason(), Revision: resp.GetRevision(),
	}
	return d.Allowed, d, nil
}

// Permissions is a subject's effective permission set on a resource.
type Permissions struct {
	// List is every permission Check would allow, in catalog order.
	List []string
	// ResourceKnown is false when the resource is not registered (List
	// is then empty).
	ResourceKnown bool
	Revision      uint64
}

// Has says whether p is in the set.
func (p *Permissions) Has(permission string) bool {
	return slices.Contains(p.List, permission)
}

// ListPermissions returns what subject may do on resource: what a media
// server needs at join time, in one round trip. Reserved usher.*
// permissions are left out unless IncludeReserved is given.
func (c *Client) ListPermissions(ctx context.Context, subject, resource string, opts ...ReadOption) (*Permissions, error) {
	o := readOptionsOf(opts)
	resp, err := c.Authorization.ListPermissions(ctx, &usherv1.ListPermissionsRequest{
		Subject: subject, Resource: resource, MinRevision: o.minRevision, IncludeReserved: o.reserved,
	})
	if err != nil {
		return nil, err
	}
	return &Permissions{List: resp.GetPermissions(), ResourceKnown: resp.GetResourceKnown(), Revision: resp.GetRevision()}, nil
}
