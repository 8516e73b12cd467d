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
		out.Resources = append(out.Resources, authz.Resource{Name: r.GetName(), Parent: r.GetParent()})
	}
	for _, r := range p.GetRoles() {
		out.Roles = append(out.Roles, fromRole(r))
	}
	return out
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
		out.Resources = append(out.Resources, &usherv1.Resource{Name: r.Name, Parent: r.Parent})
	}
	for _, r := range p.Roles {
		out.Roles = append(out.Roles, toRole(r))
	}
	return out
}
