package server

import (
	"context"
	"sync/atomic"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
)

type adminServer struct {
	usherv1.UnimplementedAdminServiceServer
	engine *authz.Engine
	waits  *revisionWaits
	backup BackupSource // nil: Backup is UNIMPLEMENTED
	// envoy, when the server answers Envoy, names permissions that a
	// policy must keep declaring.
	envoy *EnvoyService
	// backups counts the Backup streams in progress, at most MaxBackups.
	backups atomic.Int64
}

func author(ctx context.Context, actor string) authz.Author {
	return authz.Author{Caller: callerOf(ctx), Actor: actor}
}

func (s *adminServer) Grant(ctx context.Context, req *usherv1.GrantRequest) (*usherv1.GrantResponse, error) {
	var v validator
	v.subject("subject", req.GetSubject())
	v.role("role", req.GetRole())
	v.resource("resource", req.GetResource())
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	expires := v.timestamp("expire_time", req.GetExpireTime())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	rev, err := s.engine.Grant(ctx, author(ctx, req.GetActor()), authz.Grant{
		Subject: req.GetSubject(), Role: req.GetRole(), Resource: req.GetResource(), Expires: expires,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.GrantResponse{Revision: uint64(rev)}, nil
}

func (s *adminServer) Revoke(ctx context.Context, req *usherv1.RevokeRequest) (*usherv1.RevokeResponse, error) {
	var v validator
	v.subject("subject", req.GetSubject())
	v.role("role", req.GetRole())
	v.resource("resource", req.GetResource())
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	rev, err := s.engine.Revoke(ctx, author(ctx, req.GetActor()), authz.Grant{
		Subject: req.GetSubject(), Role: req.GetRole(), Resource: req.GetResource(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.RevokeResponse{Revision: uint64(rev)}, nil
}

func (s *adminServer) ListGrants(ctx context.Context, req *usherv1.ListGrantsRequest) (*usherv1.ListGrantsResponse, error) {
	var v validator
	if req.GetSubject() != "" {
		v.subject("subject", req.GetSubject())
	}
	v.optionalResource("resource", req.GetResource())
	v.pageToken(req.GetPageToken())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	grants, next, rev, err := s.engine.Index().ListGrants(
		authz.GrantFilter{Subject: req.GetSubject(), Resource: req.GetResource()},
		int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &usherv1.ListGrantsResponse{NextPageToken: next, Revision: uint64(rev)}
	for _, g := range grants {
		out.Grants = append(out.Grants, toGrant(g))
	}
	return out, nil
}

func (s *adminServer) ListRoles(ctx context.Context, req *usherv1.ListRolesRequest) (*usherv1.ListRolesResponse, error) {
	var v validator
	v.resource("resource", req.GetResource())
	if req.GetAssignableBy() != "" {
		v.subject("assignable_by", req.GetAssignableBy())
	}
	v.pageToken(req.GetPageToken())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	roles, next, rev, err := s.engine.Index().ListRolesPage(req.GetResource(), req.GetAssignableBy(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &usherv1.ListRolesResponse{Revision: uint64(rev), NextPageToken: next}
	for _, r := range roles {
		out.Roles = append(out.Roles, policy.RoleFromAuthz(r))
	}
	return out, nil
}

func (s *adminServer) PutRole(ctx context.Context, req *usherv1.PutRoleRequest) (*usherv1.PutRoleResponse, error) {
	var v validator
	role := policy.RoleToAuthz(req.GetRole())
	v.roleDef("role.", &role)
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	rev, err := s.engine.PutRole(ctx, author(ctx, req.GetActor()), role)
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.PutRoleResponse{Revision: uint64(rev)}, nil
}

func (s *adminServer) DeleteRole(ctx context.Context, req *usherv1.DeleteRoleRequest) (*usherv1.DeleteRoleResponse, error) {
	var v validator
	v.role("name", req.GetName())
	v.resource("scope", req.GetScope())
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	rev, err := s.engine.DeleteRole(ctx, author(ctx, req.GetActor()), req.GetScope(), req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.DeleteRoleResponse{Revision: uint64(rev)}, nil
}

func (s *adminServer) PutResource(ctx context.Context, req *usherv1.PutResourceRequest) (*usherv1.PutResourceResponse, error) {
	var v validator
	v.resource("name", req.GetName())
	v.optionalResource("parent", req.GetParent())
	v.actor(req.GetActor())
	starts := v.timestamp("start_time", req.GetStartTime())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	put := s.engine.PutResource
	if req.GetCreateOnly() {
		put = s.engine.RegisterResource
	}
	rev, err := put(ctx, author(ctx, req.GetActor()),
		authz.Resource{Name: req.GetName(), Parent: req.GetParent(), StartsAt: starts, Live: req.GetLive()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.PutResourceResponse{Revision: uint64(rev)}, nil
}

func (s *adminServer) GetResource(ctx context.Context, req *usherv1.GetResourceRequest) (*usherv1.GetResourceResponse, error) {
	var v validator
	v.resource("name", req.GetName())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	info, rev, err := s.engine.Index().GetResource(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.GetResourceResponse{
		Resource:  policy.ResourceFromAuthz(info.Resource),
		Ancestors: info.Ancestors,
		Children:  uint32(info.Children),
		Revision:  uint64(rev),
	}, nil
}

func (s *adminServer) DeleteResource(ctx context.Context, req *usherv1.DeleteResourceRequest) (*usherv1.DeleteResourceResponse, error) {
	var v validator
	v.resource("name", req.GetName())
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	rev, err := s.engine.DeleteResource(ctx, author(ctx, req.GetActor()), req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.DeleteResourceResponse{Revision: uint64(rev)}, nil
}

func (s *adminServer) Block(ctx context.Context, req *usherv1.BlockRequest) (*usherv1.BlockResponse, error) {
	var v validator
	v.blockHead(req.GetSubject(), req.GetResource(), len(req.GetPermissions()))
	v.text("reason", req.GetReason())
	v.permissions("permissions", req.GetPermissions(), false)
	v.blockID("block_id", req.GetBlockId())
	v.actor(req.GetActor())
	expires := v.timestamp("expire_time", req.GetExpireTime())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	rev, id, err := s.engine.Block(ctx, author(ctx, req.GetActor()), authz.Block{
		Subject: req.GetSubject(), Resource: req.GetResource(), ID: req.GetBlockId(), Permissions: req.GetPermissions(),
		Expires: expires, Reason: req.GetReason(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.BlockResponse{Revision: uint64(rev), BlockId: id}, nil
}

func (s *adminServer) Unblock(ctx context.Context, req *usherv1.UnblockRequest) (*usherv1.UnblockResponse, error) {
	var v validator
	v.subject("subject", req.GetSubject())
	v.resource("resource", req.GetResource())
	v.blockID("block_id", req.GetBlockId())
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	rev, err := s.engine.Unblock(ctx, author(ctx, req.GetActor()), req.GetSubject(), req.GetResource(), req.GetBlockId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.UnblockResponse{Revision: uint64(rev)}, nil
}

func (s *adminServer) ApplyPolicy(ctx context.Context, req *usherv1.ApplyPolicyRequest) (*usherv1.ApplyPolicyResponse, error) {
	p, err := policyOf(req)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.envoy.keeps(p); err != nil {
		return nil, toStatus(err)
	}
	rev, changes, err := s.engine.ApplyPolicy(ctx, author(ctx, req.GetActor()), p, authz.ApplyOptions{Prune: req.GetPrune(), DryRun: req.GetDryRun()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.ApplyPolicyResponse{Revision: uint64(rev), Changed: len(changes) > 0 && !req.GetDryRun(), Changes: toChanges(changes)}, nil
}

// policyOf is an ApplyPolicy request's policy, or the first fault of its
// shape.
func policyOf(req *usherv1.ApplyPolicyRequest) (authz.Policy, error) {
	p := policy.ToAuthz(req.GetPolicy())
	var v validator
	v.policy(p, req.GetPolicy())
	v.actor(req.GetActor())
	return p, v.err
}

func (s *adminServer) ExportPolicy(ctx context.Context, req *usherv1.ExportPolicyRequest) (*usherv1.ExportPolicyResponse, error) {
	var v validator
	v.pageToken(req.GetPageToken())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	p, next, rev, err := s.engine.Index().ExportPolicy(int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.ExportPolicyResponse{Policy: policy.FromAuthz(p), Revision: uint64(rev), NextPageToken: next}, nil
}

func (s *adminServer) PutQuota(ctx context.Context, req *usherv1.PutQuotaRequest) (*usherv1.PutQuotaResponse, error) {
	q := policy.QuotaToAuthz(req.GetQuota())
	var v validator
	v.quota("quota.", q)
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	rev, err := s.engine.PutQuota(ctx, author(ctx, req.GetActor()), q)
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.PutQuotaResponse{Revision: uint64(rev)}, nil
}

func (s *adminServer) DeleteQuota(ctx context.Context, req *usherv1.DeleteQuotaRequest) (*usherv1.DeleteQuotaResponse, error) {
	q := authz.Quota{Scope: req.GetScope(), ResourceType: req.GetResourceType(), Subject: req.GetSubject()}
	var v validator
	v.quota("", q)
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	rev, err := s.engine.DeleteQuota(ctx, author(ctx, req.GetActor()), q)
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.DeleteQuotaResponse{Revision: uint64(rev)}, nil
}

func (s *adminServer) PutAdmission(ctx context.Context, req *usherv1.PutAdmissionRequest) (*usherv1.PutAdmissionResponse, error) {
	rule, err := admissionOf(req)
	if err != nil {
		return nil, toStatus(err)
	}
	rev, err := s.engine.PutAdmission(ctx, author(ctx, req.GetActor()), rule)
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.PutAdmissionResponse{Revision: uint64(rev)}, nil
}

// admissionOf is a PutAdmission request's rule, or the first fault of its
// shape.
func admissionOf(req *usherv1.PutAdmissionRequest) (authz.Admission, error) {
	var v validator
	rule := policy.AdmissionToAuthz(req.GetAdmission())
	if req.GetAdmission() == nil {
		v.add(&authz.Error{Code: authz.Invalid, Field: "admission", Reason: "the rule to set is missing"})
	} else {
		v.admissionTimes("admission.", req.GetAdmission())
		v.add(authz.ValidateAdmission("admission", rule))
	}
	v.actor(req.GetActor())
	return rule, v.err
}

func (s *adminServer) DeleteAdmission(ctx context.Context, req *usherv1.DeleteAdmissionRequest) (*usherv1.DeleteAdmissionResponse, error) {
	var v validator
	v.optionalResource("scope", req.GetScope())
	v.add(authz.ValidateType("resource_type", req.GetResourceType()))
	v.actor(req.GetActor())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	rev, err := s.engine.DeleteAdmission(ctx, author(ctx, req.GetActor()), req.GetScope(), req.GetResourceType())
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.DeleteAdmissionResponse{Revision: uint64(rev)}, nil
}

func (s *adminServer) ListQuotas(ctx context.Context, req *usherv1.ListQuotasRequest) (*usherv1.ListQuotasResponse, error) {
	var v validator
	v.resource("resource", req.GetResource())
	v.pageToken(req.GetPageToken())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	quotas, next, rev, err := s.engine.Index().ListQuotasPage(req.GetResource(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &usherv1.ListQuotasResponse{Revision: uint64(rev), NextPageToken: next}
	for _, q := range quotas {
		m := policy.QuotaFromAuthz(q.Quota)
		m.Used = uint32(q.Used)
		out.Quotas = append(out.Quotas, m)
	}
	return out, nil
}

func (s *adminServer) ListChanges(ctx context.Context, req *usherv1.ListChangesRequest) (*usherv1.ListChangesResponse, error) {
	var v validator
	if req.GetSubject() != "" {
		v.subject("subject", req.GetSubject())
	}
	v.optionalResource("resource", req.GetResource())
	if req.GetActor() != "" {
		v.subject("actor", req.GetActor())
	}
	v.callerFilter(req.GetCaller())
	v.pageToken(req.GetPageToken())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	rev := s.engine.Index().Revision()
	changes, next, err := s.engine.ListChanges(ctx, authz.ChangeFilter{
		Subject: req.GetSubject(), Resource: req.GetResource(), Actor: req.GetActor(), Caller: req.GetCaller(),
	}, authz.Revision(req.GetAfterRevision()), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &usherv1.ListChangesResponse{NextPageToken: next, Revision: uint64(rev)}
	for _, cs := range changes {
		out.Changes = append(out.Changes, toChangeRecord(cs))
	}
	return out, nil
}
