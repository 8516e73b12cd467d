package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/codec"
)

func init() {
	// Check and CheckBatch keep none of their requests' strings once they
	// have answered (the decision log copies those it queues), so the codec
	// may decode the strings in place: a batch of a hundred checks is then
	// one allocation rather than three hundred.
	codec.Alias(&usherv1.CheckRequest{}, &usherv1.CheckBatchRequest{})
}

type authorizationServer struct {
	usherv1.UnimplementedAuthorizationServiceServer
	engine  *authz.Engine
	waits   *revisionWaits
	serving func() bool
	watches *watches
	reach   *reach // whether the backend is in reach, for Watch streams that wait
	// checks and batchChecks count decisions, when the server has metrics.
	checks, batchChecks decisionCounter
	decisionLog         *DecisionLog // nil: no decision log
}

func (s *authorizationServer) GetRevision(ctx context.Context, _ *usherv1.GetRevisionRequest) (*usherv1.GetRevisionResponse, error) {
	out := &usherv1.GetRevisionResponse{Revision: uint64(s.engine.Index().Revision()), Serving: s.serving()}
	if latest, err := s.engine.Latest(ctx); err == nil {
		out.Latest = uint64(latest)
	}
	return out, nil
}

func (s *authorizationServer) Check(ctx context.Context, req *usherv1.CheckRequest) (*usherv1.CheckResponse, error) {
	q := authz.Query{Subject: req.GetSubject(), Permission: req.GetPermission(), Resource: req.GetResource()}
	checked := !cheapToAsk(q) || req.GetMinRevision() != 0
	if checked {
		if err := checkQuery(q.Subject, q.Permission, q.Resource); err != nil {
			return nil, toStatus(err)
		}
		if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
			return nil, err
		}
	}
	d, rev, err := s.engine.Index().Check(q)
	if !checked && !byKnownNames(d, err) {
		if err := checkQuery(q.Subject, q.Permission, q.Resource); err != nil {
			return nil, toStatus(err)
		}
	}
	if err != nil {
		return nil, toStatus(err)
	}
	s.checks.add(int(d.Reason))
	if s.decisionLog != nil {
		s.decisionLog.check(ctx, "Check", q, d, nil, rev)
	}
	return &usherv1.CheckResponse{Decision: toDecision(d), Revision: uint64(rev)}, nil
}

// A check is asked of the index before its names are checked for shape,
// which costs more than the answer: only a name the index does not know can
// be malformed, so the shape is checked when the answer is a denial for want
// of a grant or a resource, or an error. cheapToAsk keeps names so long
// that hashing them would cost more than refusing them out of that path.
func cheapToAsk(q authz.Query) bool {
	return len(q.Subject)+len(q.Permission)+len(q.Resource) <= 1024
}

// byKnownNames reports whether an answer could only come from names the
// index holds: a grant or a block of a registered subject on a registered
// resource, for a declared permission.
func byKnownNames(d authz.Decision, err error) bool {
	return err == nil && (d.Reason == authz.ReasonGranted || d.Reason == authz.ReasonBlocked)
}

// checkQuery checks the shape of one check's names.
func checkQuery(subject, permission, resource string) error {
	var v validator
	v.subject("subject", subject)
	v.permission("permission", permission)
	v.resource("resource", resource)
	return v.err
}

func (s *authorizationServer) CheckBatch(ctx context.Context, req *usherv1.CheckBatchRequest) (*usherv1.CheckBatchResponse, error) {
	if n := len(req.GetChecks()); n == 0 || n > MaxBatch {
		return nil, toStatus(&authz.Error{Code: authz.Invalid, Field: "checks", Value: fmt.Sprint(n),
			Reason: fmt.Sprintf("a batch holds 1 to %d checks", MaxBatch)})
	}
	// A check that is not well formed gets its own error. One too long to
	// ask before its shape is checked has it checked first, and is asked of
	// the index as an empty query when it is malformed; any other is asked
	// as it is and its shape checked only when the answer could come from a
	// name the index does not hold, so that the batch keeps its positions
	// and the others are answered at one revision.
	checks := req.GetChecks()
	qs := make([]authz.Query, len(checks))
	var shape []error // nil: no check is malformed and too long to ask
	for i, c := range checks {
		q := authz.Query{Subject: c.GetSubject(), Permission: c.GetPermission(), Resource: c.GetResource()}
		if !cheapToAsk(q) {
			if err := shapeError(i, q); err != nil {
				if shape == nil {
					shape = make([]error, len(checks))
				}
				shape[i] = err
				continue
			}
		}
		qs[i] = q
	}
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	ds, errs, rev, err := s.engine.Index().CheckBatchContext(ctx, qs)
	if err != nil {
		return nil, toStatus(err)
	}
	// The decisions share one array, and the metrics are counted once a
	// batch: per check, both cost more than the check.
	out := &usherv1.CheckBatchResponse{Decisions: make([]*usherv1.Decision, len(ds)), Revision: uint64(rev)}
	decisions := make([]usherv1.Decision, len(ds))
	var counts [len(reasons)]int // by reason; 0, decisionInvalid, for errors
	for i, d := range ds {
		var err, shaped error
		if shape != nil {
			err, shaped = shape[i], shape[i]
		}
		if err == nil && errs != nil {
			err = errs[i]
		}
		if err == nil && !byKnownNames(d, nil) || err != nil && shaped == nil {
			if e := shapeError(i, qs[i]); e != nil {
				err = e
			}
		}
		if s.decisionLog != nil {
			c := checks[i]
			s.decisionLog.check(ctx, "CheckBatch", authz.Query{Subject: c.GetSubject(), Permission: c.GetPermission(), Resource: c.GetResource()}, d, err, rev)
		}
		out.Decisions[i] = &decisions[i]
		if err != nil {
			out.Errors = append(out.Errors, toCheckError(i, err))
			counts[0]++
			continue
		}
		if int(d.Reason) < len(counts) {
			counts[d.Reason]++
		}
		setDecision(&decisions[i], d)
	}
	s.batchChecks.addCounts(counts[:])
	return out, nil
}

// shapeError is the error of the i-th check of a batch whose names are not
// well formed, or nil.
func shapeError(i int, q authz.Query) error {
	err := checkQuery(q.Subject, q.Permission, q.Resource)
	var e *authz.Error
	if errors.As(err, &e) {
		return e.WithField(fmt.Sprintf("checks[%d].", i))
	}
	return err
}

func (s *authorizationServer) ListPermissions(ctx context.Context, req *usherv1.ListPermissionsRequest) (*usherv1.ListPermissionsResponse, error) {
	var v validator
	v.subject("subject", req.GetSubject())
	v.resource("resource", req.GetResource())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	perms, known, rev := s.engine.Index().ListPermissions(req.GetSubject(), req.GetResource(), req.GetIncludeReserved())
	return &usherv1.ListPermissionsResponse{Permissions: perms, ResourceKnown: known, Revision: uint64(rev)}, nil
}

func (s *authorizationServer) LookupResources(ctx context.Context, req *usherv1.LookupResourcesRequest) (*usherv1.LookupResourcesResponse, error) {
	var v validator
	v.subject("subject", req.GetSubject())
	v.permission("permission", req.GetPermission())
	v.add(authz.ValidateType("resource_type", req.GetResourceType()))
	v.optionalResource("under", req.GetUnder())
	v.pageToken(req.GetPageToken())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	found, next, rev, err := s.engine.LookupResources(ctx, authz.LookupResourcesQuery{
		Subject: req.GetSubject(), Permission: req.GetPermission(), Type: req.GetResourceType(), Under: req.GetUnder(),
	}, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.LookupResourcesResponse{Resources: toLookedUp(found), NextPageToken: next, Revision: uint64(rev)}, nil
}

func (s *authorizationServer) LookupSubjects(ctx context.Context, req *usherv1.LookupSubjectsRequest) (*usherv1.LookupSubjectsResponse, error) {
	var v validator
	v.resource("resource", req.GetResource())
	v.permission("permission", req.GetPermission())
	if k := req.GetSubjectKind(); k != "" {
		v.add(authz.ValidateKind("subject_kind", k))
	}
	v.pageToken(req.GetPageToken())
	if v.err != nil {
		return nil, toStatus(v.err)
	}
	if err := s.waits.await(ctx, req.GetMinRevision(), req); err != nil {
		return nil, err
	}
	found, next, rev, err := s.engine.LookupSubjects(ctx, authz.LookupSubjectsQuery{
		Resource: req.GetResource(), Permission: req.GetPermission(), Kind: req.GetSubjectKind(),
	}, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	return &usherv1.LookupSubjectsResponse{Subjects: toLookedUp(found), NextPageToken: next, Revision: uint64(rev)}, nil
}

func toLookedUp(found []authz.Found) []*usherv1.LookedUp {
	out := make([]*usherv1.LookedUp, len(found))
	for i, f := range found {
		out[i] = &usherv1.LookedUp{Name: f.Name, Role: f.Role, Scope: f.Scope}
	}
	return out
}
