package authz

import (
	"context"
	"math"
	"time"
)

// Grant binds g.Subject to g.Role on g.Resource. The resource must be
// registered and the role visible there (NotFound), the resource's type one
// the role may be bound on, and the role's holders on the resource below its
// max_holders (FailedPrecondition). Granting the same triple again updates
// its expiry.
func (e *Engine) Grant(ctx context.Context, by Author, g Grant) (Revision, error) {
	keys := func() conflicts { return e.idx.bindingConflicts(by, g) }
	return e.grouped(ctx, by, keys, func(now time.Time) ([]Change, error) {
		x := e.idx
		n, err := x.registered("resource", g.Resource)
		if err != nil {
			return nil, err
		}
		def := x.resolve(n, x.roleID(g.Role))
		if def == nil {
			return nil, errorf(NotFound, "role", g.Role, "no role of that name is defined at %q or above it", g.Resource)
		}
		if by.Actor != "" {
			if err := x.mayGrant(by.Actor, g.Role, n, now.UnixNano()); err != nil {
				return nil, err
			}
		}
		if !def.bindableOn(n.typ) {
			return nil, errorf(FailedPrecondition, "role", g.Role,
				"role may be granted only on resources of type %v (bindable_on at %q); %q is of type %q",
				def.BindableOn, def.Scope, g.Resource, n.typ)
		}
		if err := checkExpiry(g.Expires, now); err != nil {
			return nil, err
		}
		h := holder{g.Subject, x.roleID(g.Role)}
		old, held := n.grants[h]
		if held && old == expiry(g.Expires) {
			return nil, nil
		}
		if def.MaxHolders > 0 && !(held && live(old, now.UnixNano())) {
			if count := x.holders(n, h.role, now.UnixNano()); count >= int(def.MaxHolders) {
				return nil, errorf(FailedPrecondition, "role", g.Role,
					"role already has %d of at most %d holders on %q (max_holders at %q)",
					count, def.MaxHolders, g.Resource, def.Scope)
			}
		}
		g.Expires = g.Expires.UTC()
		return []Change{{Op: OpPutGrant, Grant: &g}}, nil
	})
}

// Revoke removes the grant of role to subject on resource; NotFound when
// there is none.
func (e *Engine) Revoke(ctx context.Context, by Author, g Grant) (Revision, error) {
	keys := func() conflicts { return e.idx.bindingConflicts(by, g) }
	return e.grouped(ctx, by, keys, func(now time.Time) ([]Change, error) {
		x := e.idx
		n, err := x.registered("resource", g.Resource)
		if err != nil {
			return nil, err
		}
		// The actor's power is judged first, so that an actor without it
		// cannot learn which grants exist.
		if by.Actor != "" {
			if err := x.mayRevoke(by.Actor, g, n, now.UnixNano()); err != nil {
				return nil, err
			}
		}
		if _, held := n.grants[holder{g.Subject, x.roleID(g.Role)}]; !held {
			return nil, errorf(NotFound, "role", g.Role, "%q holds no grant of that role on %q", g.Subject, g.Resource)
		}
		return []Change{{Op: OpDeleteGrant, Grant: &Grant{Subject: g.Subject, Role: g.Role, Resource: g.Resource}}}, nil
	})
}

// bindingConflicts is what granting or revoking g touches, for group commit:
// the binding itself; the role's holders on the resource when the role
// limits them; the subject's grants, which an actor's power is judged on;
// and, for an actor, the actor's own grants. Everything else a grant's plan
// reads (resources, roles, blocks, the catalog) only exclusive writes change.
func (x *Index) bindingConflicts(by Author, g Grant) conflicts {
	c := conflicts{
		writes: []string{"binding\x00" + g.Subject + "\x00" + g.Resource + "\x00" + g.Role},
		marks:  []string{"subject\x00" + g.Subject},
	}
	if n := x.nodes[g.Resource]; n != nil {
		if d := x.resolve(n, x.roleID(g.Role)); d != nil && d.MaxHolders > 0 {
			c.writes = append(c.writes, "holders\x00"+g.Resource+"\x00"+g.Role)
		}
	}
	if by.Actor != "" {
		c.reads = append(c.reads, "subject\x00"+by.Actor)
	}
	return c
}

// latestExpiry is the last instant whose Unix nanoseconds fit the index's
// int64, in 2262.
var latestExpiry = time.Unix(0, math.MaxInt64).UTC()

// checkExpiry refuses an expiry that is not in the future or is too far in
// it to be represented; the zero time means never.
func checkExpiry(t, now time.Time) error {
	if t.IsZero() {
		return nil
	}
	if !t.After(now) {
		return errorf(Invalid, "expire_time", t.UTC().Format(time.RFC3339Nano), "expiry must be in the future")
	}
	if t.After(latestExpiry) {
		return errorf(Invalid, "expire_time", t.UTC().Format(time.RFC3339Nano),
			"expiry must be before %s; leave it unset for never", latestExpiry.Format(time.RFC3339))
	}
	return nil
}

// holders counts the subjects holding role on n itself, unexpired.
func (x *Index) holders(n *node, role int32, now int64) int {
	count := 0
	for h, exp := range n.grants {
		if h.role == role && live(exp, now) {
			count++
		}
	}
	return count
}

// registered returns the node of a resource a write names, or NotFound.
func (x *Index) registered(field, name string) (*node, error) {
	n := x.nodes[name]
	if n == nil {
		return nil, errorf(NotFound, field, name, "resource is not registered")
	}
	return n, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
