package authz

import "fmt"

// Limits on how much one scope may hold, so that every list of what a
// resource sees (ListRoles, ListQuotas: its own and its ancestors' entries)
// stays bounded by MaxDepth times the limit, and a page of it costs its
// size times the depth whatever the store holds.
const (
	// MaxRolesPerScope is the most roles one resource may define.
	MaxRolesPerScope = 1_000
	// MaxQuotasPerScope is the most quotas one resource may carry, counting
	// each subject's quota for a type as one.
	MaxQuotasPerScope = 10_000
	// MaxRolesPerHolder is the most roles one subject may hold on one
	// resource, live grants counted. A Check reads each of its subject's
	// grants on the resource's path and resolves its role there: without
	// a bound, a tenant defining many roles could grant one subject
	// thousands of them on each level of a deep tree, and make each Check
	// of that subject, and the batch it is in, hold the index for seconds.
	MaxRolesPerHolder = 100
)

// Limits are the engine's limits; a zero field takes its default.
type Limits struct {
	// RolesPerScope: default MaxRolesPerScope.
	RolesPerScope int
	// QuotasPerScope: default MaxQuotasPerScope.
	QuotasPerScope int
	// RolesPerHolder: default MaxRolesPerHolder.
	RolesPerHolder int
	// ActorMove is the most resources a subtree moved by an actor may hold:
	// default MaxActorMove.
	ActorMove int
	// Judged is the most (subject, resource) pairs, and moments, one write
	// by an actor may be judged at: default MaxJudged.
	Judged int
}

// withDefaults fills the zero fields.
func (l Limits) withDefaults() Limits {
	if l.RolesPerScope <= 0 {
		l.RolesPerScope = MaxRolesPerScope
	}
	if l.QuotasPerScope <= 0 {
		l.QuotasPerScope = MaxQuotasPerScope
	}
	if l.RolesPerHolder <= 0 {
		l.RolesPerHolder = MaxRolesPerHolder
	}
	if l.ActorMove <= 0 {
		l.ActorMove = MaxActorMove
	}
	if l.Judged <= 0 {
		l.Judged = MaxJudged
	}
	return l
}

// scopeLimits refuses changes that would leave a scope with more role
// definitions or quotas than the limits allow. Only the scopes the changes
// add to are counted, each from what it holds now.
func (p *plan) scopeLimits(changes []Change) error {
	x := p.x
	type count struct{ roles, quotas int }
	delta := map[string]*count{}
	at := func(scope string) *count {
		c := delta[scope]
		if c == nil {
			c = &count{}
			delta[scope] = c
		}
		return c
	}
	var order []string // scopes in the order the changes name them, for a stable refusal
	for _, c := range changes {
		switch c.Op {
		case OpPutRole, OpDeleteRole:
			id, role := x.lookupNode(c.Role.Scope), x.roleID(c.Role.Name)
			if id != noNode && role != noName && x.roleDefs[roleKey(id, role)] != nil {
				if c.Op == OpDeleteRole {
					at(c.Role.Scope).roles--
				}
				continue
			}
			if c.Op == OpPutRole {
				order = append(order, c.Role.Scope)
				at(c.Role.Scope).roles++
			}
		case OpPutQuota, OpDeleteQuota:
			id := x.lookupNode(c.Quota.Scope)
			if id != noNode {
				if _, ok := x.quotaAt(id, c.Quota.ResourceType, c.Quota.Subject); ok {
					if c.Op == OpDeleteQuota {
						at(c.Quota.Scope).quotas--
					}
					continue
				}
			}
			if c.Op == OpPutQuota {
				order = append(order, c.Quota.Scope)
				at(c.Quota.Scope).quotas++
			}
		}
	}
	for _, scope := range order {
		c := delta[scope]
		roles, quotas := c.roles, c.quotas
		if id := x.lookupNode(scope); id != noNode {
			roles += len(x.rolesAt[id])
			quotas += len(x.quotas[id])
		}
		if c.roles > 0 && roles > p.limits.RolesPerScope {
			return scopeFull(scope, "role.scope", "roles defined", roles, p.limits.RolesPerScope)
		}
		if c.quotas > 0 && quotas > p.limits.QuotasPerScope {
			return scopeFull(scope, "quota.scope", "quotas", quotas, p.limits.QuotasPerScope)
		}
	}
	return nil
}

func scopeFull(scope, field, what string, n, limit int) error {
	e := errorf(ResourceExhausted, field, scope,
		"at most %d %s may be on one resource; this write would leave %d on %q", limit, what, n, scope)
	e.Meta = map[string]string{"scope": scope, "limit": fmt.Sprint(limit)}
	return e
}
