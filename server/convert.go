package server

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

func fromTimestamp(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

func toTimestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

var reasons = map[authz.Reason]usherv1.Reason{
	authz.ReasonGranted:         usherv1.Reason_REASON_GRANTED,
	authz.ReasonBlocked:         usherv1.Reason_REASON_BLOCKED,
	authz.ReasonNoGrant:         usherv1.Reason_REASON_NO_GRANT,
	authz.ReasonUnknownResource: usherv1.Reason_REASON_UNKNOWN_RESOURCE,
}

func toDecision(d authz.Decision) *usherv1.Decision {
	return &usherv1.Decision{
		Allowed:     d.Allowed,
		Reason:      reasons[d.Reason],
		Role:        d.Role,
		Scope:       d.Scope,
		BlockReason: d.BlockReason,
		BlockId:     d.BlockID,
	}
}

func fromRole(r *usherv1.Role) authz.Role {
	return authz.Role{
		Name:            r.GetName(),
		Scope:           r.GetScope(),
		Permissions:     r.GetPermissions(),
		AssignableRoles: r.GetAssignableRoles(),
		BindableOn:      r.GetBindableOn(),
		MaxHolders:      r.GetMaxHolders(),
		Description:     r.GetDescription(),
	}
}

func toRole(r authz.Role) *usherv1.Role {
	return &usherv1.Role{
		Name:            r.Name,
		Scope:           r.Scope,
		Permissions:     r.Permissions,
		AssignableRoles: r.AssignableRoles,
		BindableOn:      r.BindableOn,
		MaxHolders:      r.MaxHolders,
		Description:     r.Description,
	}
}

func toGrant(g authz.Grant) *usherv1.Grant {
	return &usherv1.Grant{Subject: g.Subject, Role: g.Role, Resource: g.Resource, ExpireTime: toTimestamp(g.Expires)}
}

func fromPolicy(p *usherv1.Policy) authz.Policy {
	var out authz.Policy
	for _, perm := range p.GetPermissions() {
		out.Permissions = append(out.Permissions, authz.Permission{
			Name: perm.GetName(), Parents: perm.GetParents(), Description: perm.GetDescription(),
		})
	}
	for _, r := range p.GetResources() {
		out.Resources = append(out.Resources, authz.Resource{Name: r.GetName(), Parent: r.GetParent(), Creator: r.GetCreator()})
	}
	for _, r := range p.GetRoles() {
		out.Roles = append(out.Roles, fromRole(r))
	}
	for _, c := range p.GetCreatorRoles() {
		out.CreatorRoles = append(out.CreatorRoles, authz.CreatorRole{ResourceType: c.GetResourceType(), Role: c.GetRole()})
	}
	for _, q := range p.GetQuotas() {
		out.Quotas = append(out.Quotas, fromQuota(q))
	}
	for _, d := range p.GetDefaultQuotas() {
		out.DefaultQuotas = append(out.DefaultQuotas, authz.DefaultQuota{ScopeType: d.GetScopeType(), ResourceType: d.GetResourceType(), Limit: d.GetLimit()})
	}
	return out
}

func fromQuota(q *usherv1.Quota) authz.Quota {
	return authz.Quota{Scope: q.GetScope(), ResourceType: q.GetResourceType(), Subject: q.GetSubject(), Limit: q.GetLimit()}
}

func toQuota(q authz.Quota) *usherv1.Quota {
	return &usherv1.Quota{Scope: q.Scope, ResourceType: q.ResourceType, Subject: q.Subject, Limit: q.Limit}
}

func toChangeRecord(cs authz.ChangeSet) *usherv1.ChangeRecord {
	out := &usherv1.ChangeRecord{Revision: uint64(cs.Revision), Time: toTimestamp(cs.Time), Caller: cs.Caller, Actor: cs.Actor}
	for _, c := range cs.Changes {
		out.Changes = append(out.Changes, toChange(c))
	}
	return out
}

// toChange converts a change; the API's ops are numbered as the engine's.
func toChange(c authz.Change) *usherv1.Change {
	ch := &usherv1.Change{Op: usherv1.Op(c.Op)}
	switch {
	case c.Permission != nil:
		ch.Entity = &usherv1.Change_Permission{Permission: &usherv1.Permission{
			Name: c.Permission.Name, Parents: c.Permission.Parents, Description: c.Permission.Description}}
	case c.Resource != nil:
		ch.Entity = &usherv1.Change_Resource{Resource: &usherv1.Resource{
			Name: c.Resource.Name, Parent: c.Resource.Parent, Creator: c.Resource.Creator}}
	case c.Role != nil:
		ch.Entity = &usherv1.Change_Role{Role: toRole(*c.Role)}
	case c.Grant != nil:
		ch.Entity = &usherv1.Change_Grant{Grant: toGrant(*c.Grant)}
	case c.Block != nil:
		ch.Entity = &usherv1.Change_Block{Block: toBlock(*c.Block)}
	case c.Quota != nil:
		ch.Entity = &usherv1.Change_Quota{Quota: toQuota(*c.Quota)}
	case c.CreatorRole != nil:
		ch.Entity = &usherv1.Change_CreatorRole{CreatorRole: &usherv1.CreatorRole{
			ResourceType: c.CreatorRole.ResourceType, Role: c.CreatorRole.Role}}
	case c.DefaultQuota != nil:
		ch.Entity = &usherv1.Change_DefaultQuota{DefaultQuota: toDefaultQuota(*c.DefaultQuota)}
	}
	return ch
}

func toDefaultQuota(d authz.DefaultQuota) *usherv1.DefaultQuota {
	return &usherv1.DefaultQuota{ScopeType: d.ScopeType, ResourceType: d.ResourceType, Limit: d.Limit}
}

func toBlock(b authz.Block) *usherv1.Block {
	return &usherv1.Block{Subject: b.Subject, Resource: b.Resource, Id: b.ID, Permissions: b.Permissions,
		ExpireTime: toTimestamp(b.Expires), Reason: b.Reason}
}

// FromPolicy converts a policy message to the engine's form.
func FromPolicy(p *usherv1.Policy) authz.Policy { return fromPolicy(p) }

// ValidatePolicy checks the shape of every name in a policy, naming the
// field path of the first malformed one.
func ValidatePolicy(p authz.Policy) error {
	var v validator
	v.policy(p)
	return v.err
}

func toPolicy(p authz.Policy) *usherv1.Policy {
	out := &usherv1.Policy{}
	for _, perm := range p.Permissions {
		out.Permissions = append(out.Permissions, &usherv1.Permission{
			Name: perm.Name, Parents: perm.Parents, Description: perm.Description,
		})
	}
	for _, r := range p.Resources {
		out.Resources = append(out.Resources, &usherv1.Resource{Name: r.Name, Parent: r.Parent, Creator: r.Creator})
	}
	for _, r := range p.Roles {
		out.Roles = append(out.Roles, toRole(r))
	}
	for _, c := range p.CreatorRoles {
		out.CreatorRoles = append(out.CreatorRoles, &usherv1.CreatorRole{ResourceType: c.ResourceType, Role: c.Role})
	}
	for _, q := range p.Quotas {
		out.Quotas = append(out.Quotas, toQuota(q))
	}
	for _, d := range p.DefaultQuotas {
		out.DefaultQuotas = append(out.DefaultQuotas, toDefaultQuota(d))
	}
	return out
}
