package server

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
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
		out.Resources = append(out.Resources, fromResource(r))
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
	for _, a := range p.GetAdmissions() {
		out.Admissions = append(out.Admissions, fromAdmission(a))
	}
	return out
}

func fromResource(r *usherv1.Resource) authz.Resource {
	return authz.Resource{Name: r.GetName(), Parent: r.GetParent(), Creator: r.GetCreator(),
		StartsAt: fromTimestamp(r.GetStartTime()), Live: r.GetLive()}
}

func toResource(r authz.Resource) *usherv1.Resource {
	return &usherv1.Resource{Name: r.Name, Parent: r.Parent, Creator: r.Creator, StartTime: toTimestamp(r.StartsAt), Live: r.Live}
}

// fromDuration reads an optional duration; one that is not valid reads as
// negative, which every bound refuses.
func fromDuration(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	if d.CheckValid() != nil {
		return -1
	}
	return d.AsDuration()
}

func toDuration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func fromAdmission(a *usherv1.Admission) authz.Admission {
	out := authz.Admission{Scope: a.GetScope(), ResourceType: a.GetResourceType(), Join: a.GetJoinPermission(),
		Backstage: a.GetBackstagePermission(), RequireLive: a.GetBackstage(), JoinAhead: fromDuration(a.GetJoinAhead()),
		Stage: a.GetStagePermission(), MaxParticipants: a.GetMaxParticipants(), UncountedRoles: a.GetUncountedRoles(),
		ExclusiveRoles: a.GetExclusiveRoles(), ExclusivePermissions: a.GetExclusivePermissions(), Lease: fromDuration(a.GetLease())}
	if l := a.GetLobby(); l != nil {
		out.Lobby = &authz.Lobby{Admit: l.GetAdmitPermission(), Role: l.GetAdmitRole(), Bypass: l.GetBypassPermission()}
	}
	if m := a.GetLivekit(); m != nil {
		out.Media = &authz.MediaMapping{RoomJoin: m.GetRoomJoin(), CanPublish: m.GetCanPublish(), CanPublishSources: m.GetCanPublishSources(),
			CanSubscribe: m.GetCanSubscribe(), CanPublishData: m.GetCanPublishData(), RoomAdmin: m.GetRoomAdmin(),
			RoomRecord: m.GetRoomRecord(), Hidden: m.GetHidden()}
	}
	return out
}

func toAdmission(a authz.Admission) *usherv1.Admission {
	out := &usherv1.Admission{Scope: a.Scope, ResourceType: a.ResourceType, JoinPermission: a.Join,
		BackstagePermission: a.Backstage, Backstage: a.RequireLive, JoinAhead: toDuration(a.JoinAhead),
		StagePermission: a.Stage, MaxParticipants: a.MaxParticipants, UncountedRoles: a.UncountedRoles,
		ExclusiveRoles: a.ExclusiveRoles, ExclusivePermissions: a.ExclusivePermissions, Lease: toDuration(a.Lease)}
	if l := a.Lobby; l != nil {
		out.Lobby = &usherv1.Lobby{AdmitPermission: l.Admit, AdmitRole: l.Role, BypassPermission: l.Bypass}
	}
	if m := a.Media; m != nil {
		out.Livekit = &usherv1.LiveKitMapping{RoomJoin: m.RoomJoin, CanPublish: m.CanPublish, CanPublishSources: m.CanPublishSources,
			CanSubscribe: m.CanSubscribe, CanPublishData: m.CanPublishData, RoomAdmin: m.RoomAdmin,
			RoomRecord: m.RoomRecord, Hidden: m.Hidden}
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
		ch.Entity = &usherv1.Change_Resource{Resource: toResource(*c.Resource)}
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
	case c.Admission != nil:
		ch.Entity = &usherv1.Change_Admission{Admission: toAdmission(*c.Admission)}
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
		out.Resources = append(out.Resources, toResource(r))
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
	for _, a := range p.Admissions {
		out.Admissions = append(out.Admissions, toAdmission(a))
	}
	return out
}
