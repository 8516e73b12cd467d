package authz

import (
	"strconv"
	"time"
)

// Reason says why a check was decided the way it was.
type Reason uint8

// The reasons of DESIGN.md's Check.
const (
	ReasonGranted Reason = iota + 1
	ReasonBlocked
	ReasonNoGrant
	ReasonUnknownResource
)

// Decision is the answer to one check.
type Decision struct {
	Allowed bool
	Reason  Reason
	// Role is the granting role (ReasonGranted).
	Role string
	// Scope is the resource the deciding grant or block is on.
	Scope string
	// BlockReason is the deciding block's reason text (ReasonBlocked).
	BlockReason string
}

// Query is one check: may Subject hold Permission on Resource?
type Query struct {
	Subject    string
	Permission string
	Resource   string
}

// Check decides q as DESIGN.md's Check says: an undeclared permission is an
// Invalid error; an unknown resource is a denial; a block on the way to root
// that covers the permission denies; else the nearest unexpired grant whose
// role, resolved at the checked resource, holds the permission allows.
func (x *Index) Check(q Query) (Decision, Revision, error) {
	now := time.Now().UnixNano()
	x.mu.RLock()
	defer x.mu.RUnlock()
	d, err := x.check(q, now)
	return d, x.rev, err
}

// CheckBatch decides every query at one revision. An error names the index
// of the query it is about.
func (x *Index) CheckBatch(qs []Query) ([]Decision, Revision, error) {
	now := time.Now().UnixNano()
	out := make([]Decision, len(qs))
	x.mu.RLock()
	defer x.mu.RUnlock()
	for i, q := range qs {
		d, err := x.check(q, now)
		if err != nil {
			return nil, x.rev, err.(*Error).WithField(checkField(i))
		}
		out[i] = d
	}
	return out, x.rev, nil
}

func nowNano() int64 { return time.Now().UnixNano() }

func checkField(i int) string {
	return "checks[" + strconv.Itoa(i) + "]."
}

func (x *Index) check(q Query, now int64) (Decision, error) {
	perm := x.cat.id(q.Permission)
	if perm < 0 {
		return Decision{}, errorf(Invalid, "permission", q.Permission, "permission is not declared in the catalog")
	}
	n := x.nodes[q.Resource]
	if n == nil {
		return Decision{Reason: ReasonUnknownResource}, nil
	}
	si := x.subjects[q.Subject]
	var granted Decision
	for a := n; a != nil; a = a.parent {
		if a.blocks != nil {
			if b := a.blocks[q.Subject]; b != nil && live(b.expires, now) && (b.perms == nil || b.perms.has(perm)) {
				return Decision{Reason: ReasonBlocked, Scope: a.name, BlockReason: b.Reason}, nil
			}
		}
		if granted.Allowed || si == nil {
			continue
		}
		for _, g := range si.grants[a] {
			if !live(g.expires, now) {
				continue
			}
			if d := x.resolve(n, g.role); d != nil && d.perms.has(perm) {
				granted = Decision{Allowed: true, Reason: ReasonGranted, Role: x.roleNames[g.role], Scope: a.name}
				break
			}
		}
	}
	if granted.Allowed {
		return granted, nil
	}
	return Decision{Reason: ReasonNoGrant}, nil
}

// ListPermissions returns the subject's effective permissions on resource, in
// catalog (name) order, and whether the resource is registered.
func (x *Index) ListPermissions(subject, resource string) ([]string, bool, Revision) {
	now := time.Now().UnixNano()
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := x.nodes[resource]
	if n == nil {
		return nil, false, x.rev
	}
	return x.cat.names(x.effective(subject, n, now)), true, x.rev
}

// effective is the set Check would allow for subject at n.
func (x *Index) effective(subject string, n *node, now int64) bitset {
	set := newBitset(len(x.cat.perms))
	if si := x.subjects[subject]; si != nil {
		for a := n; a != nil; a = a.parent {
			for _, g := range si.grants[a] {
				if !live(g.expires, now) {
					continue
				}
				if d := x.resolve(n, g.role); d != nil {
					set.union(d.perms)
				}
			}
		}
	}
	for a := n; a != nil; a = a.parent {
		if a.blocks == nil {
			continue
		}
		if b := a.blocks[subject]; b != nil && live(b.expires, now) {
			if b.perms == nil {
				return newBitset(len(x.cat.perms))
			}
			set.subtract(b.perms)
		}
	}
	return set
}
