package authz

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Grant binds g.Subject to g.Role on g.Resource. The resource must be
// registered and the role visible there (NotFound), the resource's type one
// the role may be bound on, and the role's holders on the resource below its
// max_holders (FailedPrecondition). Granting the same triple again updates
// its expiry.
func (e *Engine) Grant(ctx context.Context, by Author, g Grant) (Revision, error) {
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		p.does("grant role %q on %q", g.Role, g.Resource)
		res, err := x.registered("resource", g.Resource)
		if err != nil {
			return err
		}
		p.guard(resourceKey(g.Resource), keyRoles)
		// The actor's power is judged first, so that an actor without it
		// cannot learn which roles are defined there.
		if by.Actor != "" {
			if g.Subject == by.Actor {
				return p.selfService("grant", "grant a role to itself")
			}
			if err := p.mayWriteGrants(g.Role, res, "grant"); err != nil {
				return err
			}
		}
		if x.resolveRole(res, g.Role) == nil {
			return errorf(NotFound, "role", g.Role, "no role of that name is defined at %q or above it", g.Resource).as(KindRoleNotFound)
		}
		if by.Actor != "" {
			if err := p.mayAssign(g.Role, res, "grant"); err != nil {
				return err
			}
		}
		return p.grant(g, res)
	})
}

// resolveRole returns the definition of role that applies at res, or nil.
func (x *Index) resolveRole(res uint32, role string) *roleDef {
	if id := x.roleID(role); id != noName {
		return x.resolveAt(res, id)
	}
	return nil
}

// grant plans putting g on res once the actor's authority is established:
// the role's binding rules, the expiry and max_holders.
func (p *plan) grant(g Grant, res uint32) error { return p.bind(g, res, false) }

// bind is grant; keepLonger keeps a live grant of the binding that lasts at
// least as long as g would, rather than shorten it.
func (p *plan) bind(g Grant, res uint32, keepLonger bool) error {
	x := p.x
	// The role's definition is resolved along the resource's path, which a
	// move changes.
	p.guard(resourceKey(g.Resource), keyRoles, keyTree)
	role := x.roleID(g.Role)
	def := x.resolveRole(res, g.Role)
	if def == nil {
		return errorf(NotFound, "role", g.Role, "no role of that name is defined at %q or above it", g.Resource).as(KindRoleNotFound)
	}
	if p.by.Actor != "" {
		p.guard(subjectKey(g.Subject))
	}
	if !def.bindableOn(x.typeName(res)) {
		e := errorf(FailedPrecondition, "role", g.Role,
			"role may be granted only on resources of type %v (bindable_on at %q); %q is of type %q",
			def.BindableOn, def.Scope, g.Resource, x.typeName(res)).as(KindNotBindable)
		e.Meta = map[string]string{"resource": g.Resource, "scope": def.Scope}
		return e
	}
	if err := checkExpiry(g.Expires, p.now); err != nil {
		return err
	}
	p.guard(bindingKey(g.Subject, g.Resource, g.Role))
	held, old := false, int64(0)
	s := x.subj.lookup(g.Subject)
	if s != noName {
		if i, found := x.findSubjectGrant(s, res, role); found {
			held, old = true, x.bySubject.get(s)[i].exp
		}
	}
	if s != noName && !(held && live(old, p.now)) {
		if err := p.rolesHeld(g, s, res); err != nil {
			return err
		}
	}
	if held && old == expiry(g.Expires) {
		return nil
	}
	if held && keepLonger && live(old, p.now) && (old == 0 || !g.Expires.IsZero() && old >= expiry(g.Expires)) {
		return nil
	}
	if def.MaxHolders > 0 && !(held && live(old, p.now)) {
		p.guard(bindingsKey(g.Resource))
		if n := x.liveHolders(res, role, p.now); n >= int(def.MaxHolders) {
			e := errorf(FailedPrecondition, "role", g.Role,
				"role already has %d of at most %d holders on %q (max_holders at %q)",
				n, def.MaxHolders, g.Resource, def.Scope).as(KindMaxHolders)
			e.Meta = map[string]string{"resource": g.Resource, "max_holders": fmt.Sprint(def.MaxHolders), "scope": def.Scope}
			return e
		}
	}
	g.Expires = g.Expires.UTC()
	p.change(Change{Op: OpPutGrant, Grant: &g})
	return nil
}

// rolesHeld refuses a grant of a role s does not hold live on res when s
// holds as many as it may there (Limits.RolesPerHolder). Grants that ran
// out give nothing: once s holds as many grants there, live or not, they
// make way for this one, which deletes them, so that a Check, which reads
// each grant on its path, reads no more than the limit on any resource.
func (p *plan) rolesHeld(g Grant, s, res uint32) error {
	p.guard(subjectKey(g.Subject))
	held := grantsAt(p.x.bySubject.get(s), res)
	n := 0
	for _, h := range held {
		if live(h.exp, p.now) {
			n++
		}
	}
	if n < p.limits.RolesPerHolder {
		if len(held) >= p.limits.RolesPerHolder {
			for _, h := range held {
				if role := p.x.roleNames[h.role]; !live(h.exp, p.now) && role != g.Role {
					p.change(Change{Op: OpDeleteGrant, Grant: &Grant{Subject: g.Subject, Role: role, Resource: g.Resource}})
				}
			}
		}
		return nil
	}
	e := errorf(ResourceExhausted, "subject", g.Subject,
		"a subject may hold at most %d roles on one resource, and holds %d on %q; revoke one first", p.limits.RolesPerHolder, n, g.Resource)
	e.Meta = map[string]string{"resource": g.Resource, "limit": fmt.Sprint(p.limits.RolesPerHolder)}
	return e
}

// Revoke removes the grant of role to subject on resource; NotFound when
// there is none.
func (e *Engine) Revoke(ctx context.Context, by Author, g Grant) (Revision, error) {
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		p.does("revoke role %q on %q", g.Role, g.Resource)
		res, err := x.registered("resource", g.Resource)
		if err != nil {
			return err
		}
		p.guard(resourceKey(g.Resource))
		// The actor's power is judged first, so that an actor without it
		// cannot learn which grants exist.
		if by.Actor != "" {
			if g.Subject == by.Actor {
				return p.selfService("revoke", "revoke its own grants (it is not possible to revoke your own permissions)")
			}
			if err := p.mayGrant(g.Role, res, "revoke"); err != nil {
				return err
			}
		}
		p.guard(bindingKey(g.Subject, g.Resource, g.Role))
		s, role := x.subj.lookup(g.Subject), x.roleID(g.Role)
		if s == noName || role == noName {
			return errorf(NotFound, "role", g.Role, "%q holds no grant of that role on %q", g.Subject, g.Resource).as(KindGrantNotFound)
		}
		if _, found := x.findSubjectGrant(s, res, role); !found {
			return errorf(NotFound, "role", g.Role, "%q holds no grant of that role on %q", g.Subject, g.Resource).as(KindGrantNotFound)
		}
		p.guard(subjectKey(g.Subject))
		p.change(Change{Op: OpDeleteGrant, Grant: &Grant{Subject: g.Subject, Role: g.Role, Resource: g.Resource}})
		return nil
	})
}

// selfService refuses an actor's write of its own bindings or blocks.
func (p *plan) selfService(verb, what string) error {
	e := errorf(PermissionDenied, "actor", p.by.Actor, "may not %s: %s: an actor may not %s", p.doing, RuleNoSelfService, what)
	e.Rule = RuleNoSelfService
	e.Meta = map[string]string{"subject": p.by.Actor}
	return e
}

// latestExpiry is the last instant whose Unix nanoseconds fit the index's
// int64, in 2262.
var latestExpiry = time.Unix(0, math.MaxInt64).UTC()

// checkExpiry refuses an expiry that is not in the future or is too far in
// it to be represented; the zero time means never.
func checkExpiry(t time.Time, now int64) error {
	if t.IsZero() {
		return nil
	}
	if t.After(latestExpiry) {
		return errorf(Invalid, "expire_time", t.UTC().Format(time.RFC3339Nano),
			"expiry must be at or before %s; leave it unset for never", latestExpiry.Format(time.RFC3339Nano))
	}
	if !t.After(time.Unix(0, 0)) || t.UnixNano() <= now {
		return errorf(Invalid, "expire_time", t.UTC().Format(time.RFC3339Nano), "expiry must be in the future")
	}
	return nil
}
