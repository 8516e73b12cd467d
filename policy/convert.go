package policy

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// ToAuthz converts a policy message to the engine's form. A duration that
// is not valid converts to a negative one, which every bound refuses.
func ToAuthz(p *usherv1.Policy) authz.Policy {
	var out authz.Policy
	for _, perm := range p.GetPermissions() {
		out.Permissions = append(out.Permissions, authz.Permission{
			Name: perm.GetName(), Parents: perm.GetParents(), Description: perm.GetDescription(),
		})
	}
	for _, r := range p.GetResources() {
		out.Resources = append(out.Resources, authz.Resource{Name: r.GetName(), Parent: r.GetParent(), Creator: r.GetCreator(),
			StartsAt: fromTimestamp(r.GetStartTime()), Live: r.GetLive()})
	}
	for _, r := range p.GetRoles() {
		out.Roles = append(out.Roles, RoleToAuthz(r))
	}
	for _, c := range p.GetCreatorRoles() {
		out.CreatorRoles = append(out.CreatorRoles, authz.CreatorRole{ResourceType: c.GetResourceType(), Role: c.GetRole()})
	}
	for _, q := range p.GetQuotas() {
		out.Quotas = append(out.Quotas, QuotaToAuthz(q))
	}
	for _, d := range p.GetDefaultQuotas() {
		out.DefaultQuotas = append(out.DefaultQuotas, authz.DefaultQuota{ScopeType: d.GetScopeType(), ResourceType: d.GetResourceType(), Limit: d.GetLimit()})
	}
	for _, a := range p.GetAdmissions() {
		out.Admissions = append(out.Admissions, AdmissionToAuthz(a))
	}
	return out
}

// RoleToAuthz converts a role message to the engine's form.
func RoleToAuthz(r *usherv1.Role) authz.Role {
	return authz.Role{Name: r.GetName(), Scope: r.GetScope(), Permissions: r.GetPermissions(),
		AssignableRoles: r.GetAssignableRoles(), BindableOn: r.GetBindableOn(), MaxHolders: r.GetMaxHolders(),
		Description: r.GetDescription()}
}

// QuotaToAuthz converts a quota message to the engine's form.
func QuotaToAuthz(q *usherv1.Quota) authz.Quota {
	return authz.Quota{Scope: q.GetScope(), ResourceType: q.GetResourceType(), Subject: q.GetSubject(), Limit: q.GetLimit()}
}

// AdmissionToAuthz converts an admission rule message to the engine's form.
func AdmissionToAuthz(a *usherv1.Admission) authz.Admission {
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

// FromAuthz converts a policy in the engine's form (an export) to its
// message.
func FromAuthz(p authz.Policy) *usherv1.Policy {
	out := &usherv1.Policy{}
	for _, perm := range p.Permissions {
		out.Permissions = append(out.Permissions, permissionFromAuthz(perm))
	}
	for _, r := range p.Resources {
		out.Resources = append(out.Resources, ResourceFromAuthz(r))
	}
	for _, r := range p.Roles {
		out.Roles = append(out.Roles, RoleFromAuthz(r))
	}
	for _, c := range p.CreatorRoles {
		out.CreatorRoles = append(out.CreatorRoles, creatorRoleFromAuthz(c))
	}
	for _, q := range p.Quotas {
		out.Quotas = append(out.Quotas, QuotaFromAuthz(q))
	}
	for _, d := range p.DefaultQuotas {
		out.DefaultQuotas = append(out.DefaultQuotas, defaultQuotaFromAuthz(d))
	}
	for _, a := range p.Admissions {
		out.Admissions = append(out.Admissions, AdmissionFromAuthz(a))
	}
	return out
}

func permissionFromAuthz(p authz.Permission) *usherv1.Permission {
	return &usherv1.Permission{Name: p.Name, Parents: p.Parents, Description: p.Description}
}

// ResourceFromAuthz converts a resource to its message.
func ResourceFromAuthz(r authz.Resource) *usherv1.Resource {
	return &usherv1.Resource{Name: r.Name, Parent: r.Parent, Creator: r.Creator, StartTime: toTimestamp(r.StartsAt), Live: r.Live}
}

// RoleFromAuthz converts a role to its message.
func RoleFromAuthz(r authz.Role) *usherv1.Role {
	return &usherv1.Role{Name: r.Name, Scope: r.Scope, Permissions: r.Permissions,
		AssignableRoles: r.AssignableRoles, BindableOn: r.BindableOn, MaxHolders: r.MaxHolders, Description: r.Description}
}

// QuotaFromAuthz converts a quota to its message.
func QuotaFromAuthz(q authz.Quota) *usherv1.Quota {
	return &usherv1.Quota{Scope: q.Scope, ResourceType: q.ResourceType, Subject: q.Subject, Limit: q.Limit}
}

func creatorRoleFromAuthz(c authz.CreatorRole) *usherv1.CreatorRole {
	return &usherv1.CreatorRole{ResourceType: c.ResourceType, Role: c.Role}
}

func defaultQuotaFromAuthz(d authz.DefaultQuota) *usherv1.DefaultQuota {
	return &usherv1.DefaultQuota{ScopeType: d.ScopeType, ResourceType: d.ResourceType, Limit: d.Limit}
}

// AdmissionFromAuthz converts an admission rule to its message.
func AdmissionFromAuthz(a authz.Admission) *usherv1.Admission {
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

// FromAuthzChanges converts the changes the engine reports for an apply;
// the API's ops are numbered as the engine's.
func FromAuthzChanges(cs []authz.Change) []*usherv1.Change {
	out := make([]*usherv1.Change, 0, len(cs))
	for _, c := range cs {
		ch := &usherv1.Change{Op: usherv1.Op(c.Op), PreviousParent: c.PreviousParent}
		switch {
		case c.Permission != nil:
			ch.Entity = &usherv1.Change_Permission{Permission: permissionFromAuthz(*c.Permission)}
		case c.Resource != nil:
			ch.Entity = &usherv1.Change_Resource{Resource: ResourceFromAuthz(*c.Resource)}
		case c.Role != nil:
			ch.Entity = &usherv1.Change_Role{Role: RoleFromAuthz(*c.Role)}
		case c.CreatorRole != nil:
			ch.Entity = &usherv1.Change_CreatorRole{CreatorRole: creatorRoleFromAuthz(*c.CreatorRole)}
		case c.Quota != nil:
			ch.Entity = &usherv1.Change_Quota{Quota: QuotaFromAuthz(*c.Quota)}
		case c.DefaultQuota != nil:
			ch.Entity = &usherv1.Change_DefaultQuota{DefaultQuota: defaultQuotaFromAuthz(*c.DefaultQuota)}
		case c.Admission != nil:
			ch.Entity = &usherv1.Change_Admission{Admission: AdmissionFromAuthz(*c.Admission)}
		}
		out = append(out, ch)
	}
	return out
}
