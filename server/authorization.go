package server

import (
	"context"
	"fmt"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

type authorizationServer struct {
	usherv1.UnimplementedAuthorizationServiceServer
	engine *authz.Engine
}

func (s *authorizationServer) Check(ctx context.Context, req *usherv1.CheckRequest) (*usherv1.CheckResponse, error) {
	var v validator
	v.subject("subject", req.GetSubject())
	v.permission("permission", req.GetPermission())
	v.resource("resource", req.GetResource())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := await(ctx, s.engine, req.GetMinRevision()); err != nil {
		return nil, err
	}
	d, rev, err := s.engine.Index().Check(authz.Query{
		Subject: req.GetSubject(), Permission: req.GetPermission(), Resource: req.GetResource(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.CheckResponse{Decision: toDecision(d), Revision: uint64(rev)}, nil
}

func (s *authorizationServer) CheckBatch(ctx context.Context, req *usherv1.CheckBatchRequest) (*usherv1.CheckBatchResponse, error) {
	if n := len(req.GetChecks()); n == 0 || n > MaxBatch {
		return nil, toStatus(&authz.Error{Code: authz.Invalid, Field: "checks", Value: fmt.Sprint(n),
			Reason: fmt.Sprintf("a batch holds 1 to %d checks", MaxBatch)})
	}
	var v validator
	qs := make([]authz.Query, len(req.GetChecks()))
	for i, c := range req.GetChecks() {
		prefix := fmt.Sprintf("checks[%d].", i)
		v.subject(prefix+"subject", c.GetSubject())
		v.permission(prefix+"permission", c.GetPermission())
		v.resource(prefix+"resource", c.GetResource())
		qs[i] = authz.Query{Subject: c.GetSubject(), Permission: c.GetPermission(), Resource: c.GetResource()}
	}
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := await(ctx, s.engine, req.GetMinRevision()); err != nil {
		return nil, err
	}
	ds, rev, err := s.engine.Index().CheckBatch(qs)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &usherv1.CheckBatchResponse{Decisions: make([]*usherv1.Decision, len(ds)), Revision: uint64(rev)}
	for i, d := range ds {
		out.Decisions[i] = toDecision(d)
	}
	return out, nil
}

func (s *authorizationServer) ListPermissions(ctx context.Context, req *usherv1.ListPermissionsRequest) (*usherv1.ListPermissionsResponse, error) {
	var v validator
	v.subject("subject", req.GetSubject())
	v.resource("resource", req.GetResource())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := await(ctx, s.engine, req.GetMinRevision()); err != nil {
		return nil, err
	}
	perms, known, rev := s.engine.Index().ListPermissions(req.GetSubject(), req.GetResource())
	return &usherv1.ListPermissionsResponse{Permissions: perms, ResourceKnown: known, Revision: uint64(rev)}, nil
}
