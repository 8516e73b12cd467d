package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/client"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

func TestRefusalsAreTypedErrors(t *testing.T) {
	w := newWorld(t)
	w.grant("user:hank", "host", meeting7)
	if _, err := w.Admin.Admin.PutQuota(callCtx(t), &usherv1.PutQuotaRequest{
		Quota: &usherv1.Quota{Scope: meeting, ResourceType: "call", Limit: 1}}); err != nil {
		t.Fatal(err)
	}
	c := w.Admin
	cases := []struct {
		name     string
		call     func(context.Context) error
		code     codes.Code
		reason   string
		field    string
		value    string
		meta     map[string]string
		violates []client.Violation // compared without descriptions
		is       error              // a sentinel errors.Is must match
	}{
		{name: "an undeclared permission names the field",
			call: func(ctx context.Context) error {
				_, _, err := c.Check(ctx, "user:hank", "join-cal", meeting7)
				return err
			},
			code: codes.InvalidArgument, reason: client.ReasonUndeclaredPermission, field: "permission", value: "join-cal",
			violates: []client.Violation{{Kind: client.BadRequest, Field: "permission", Type: client.ReasonUndeclaredPermission}}},
		{name: "a malformed resource names the field",
			call: func(ctx context.Context) error {
				_, err := c.ListPermissions(ctx, "user:hank", "call:")
				return err
			},
			code: codes.InvalidArgument, reason: client.ReasonInvalidField, field: "resource", value: "call:",
			violates: []client.Violation{{Kind: client.BadRequest, Field: "resource", Type: client.ReasonInvalidField}}},
		{name: "a quota carries its limit",
			call: func(ctx context.Context) error {
				_, err := c.Admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "call:meeting:8", Parent: meeting})
				return err
			},
			code: codes.ResourceExhausted, reason: client.ReasonQuotaExceeded, field: "quota", value: meeting + "/call", is: client.ErrQuotaExceeded,
			violates: []client.Violation{{Kind: client.QuotaFailure, Subject: meeting + "/call", Type: client.ReasonQuotaExceeded, Limit: 1}}},
		{name: "a resource with children is a precondition",
			call: func(ctx context.Context) error {
				_, err := c.Admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: meeting})
				return err
			},
			code: codes.FailedPrecondition, reason: client.ReasonHasChildren, field: "name", value: meeting,
			violates: []client.Violation{{Kind: client.PreconditionFailure, Subject: meeting, Type: client.ReasonHasChildren}}},
		{name: "a grant on an unregistered resource",
			call: func(ctx context.Context) error {
				_, err := c.Admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:hank", Role: "host", Resource: "call:meeting:404"})
				return err
			},
			code: codes.NotFound, reason: client.ReasonResourceNotFound, field: "resource", value: "call:meeting:404"},
		{name: "a host may not grant what it may not assign",
			call: func(ctx context.Context) error {
				_, err := c.Admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:dave", Role: "owner", Resource: meeting7, Actor: "user:hank"})
				return err
			},
			code: codes.PermissionDenied, reason: client.ReasonNotAssignable, field: "actor", value: "user:hank",
			meta: map[string]string{"rule": "not assignable", "role": "owner"}},
		{name: "a session that ended",
			call: func(ctx context.Context) error {
				_, err := c.Admission.KeepAlive(ctx, &usherv1.KeepAliveRequest{SessionId: "0123456789abcdef"})
				return err
			},
			code: codes.NotFound, reason: client.ReasonSessionNotFound, field: "session_id", value: "0123456789abcdef", is: client.ErrSessionNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(callCtx(t))
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not a *client.Error", err, err)
			}
			if e.Code != tc.code || e.Reason != tc.reason || e.Domain != client.Domain {
				t.Errorf("code %s reason %q domain %q, want %s %q %q (%s)", e.Code, e.Reason, e.Domain, tc.code, tc.reason, client.Domain, e.Message)
			}
			if e.Field != tc.field || e.Value != tc.value {
				t.Errorf("field %q value %q, want %q %q", e.Field, e.Value, tc.field, tc.value)
			}
			for k, v := range tc.meta {
				if e.Metadata[k] != v {
					t.Errorf("metadata[%q] = %q, want %q (metadata %v)", k, e.Metadata[k], v, e.Metadata)
				}
			}
			if len(e.Violations) != len(tc.violates) {
				t.Fatalf("violations %+v, want %+v", e.Violations, tc.violates)
			}
			for i, v := range e.Violations {
				if v.Description == "" {
					t.Errorf("violation %d has no description", i)
				}
				v.Description = ""
				if v != tc.violates[i] {
					t.Errorf("violation %d = %+v, want %+v", i, v, tc.violates[i])
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(err, %v) = false", tc.is)
			}
			if errors.Is(err, client.ErrCompacted) {
				t.Errorf("errors.Is(err, ErrCompacted) = true for %s", e.Reason)
			}
			// Still a gRPC status, to code that knows only those.
			st, ok := status.FromError(err)
			if !ok || st.Code() != tc.code || st.Message() != e.Message || len(st.Details()) == 0 || status.Code(err) != tc.code {
				t.Errorf("status.FromError: %v, %v; want code %s with its details", st, ok, tc.code)
			}
			if err.Error() != st.Err().Error() {
				t.Errorf("Error() = %q, want the status's %q", err.Error(), st.Err().Error())
			}
		})
	}
}

func TestFromErrorReadsAnyStatus(t *testing.T) {
	st, err := status.New(codes.OutOfRange, "after_revision \"3\": compacted").WithDetails(&errdetails.ErrorInfo{
		Reason: client.ReasonCompacted, Domain: client.Domain,
		Metadata: map[string]string{"field": "after_revision", "value": "3", "latest_revision": "9"},
	})
	if err != nil {
		t.Fatal(err)
	}
	wrapped := fmt.Errorf("following changes: %w", st.Err())
	e, ok := client.FromError(wrapped)
	if !ok || e.Reason != client.ReasonCompacted || e.Field != "after_revision" || e.Value != "3" || e.Metadata["latest_revision"] != "9" {
		t.Fatalf("FromError(a wrapped status) = %+v, %v", e, ok)
	}
	if !errors.Is(e, client.ErrCompacted) || errors.Is(e, client.ErrFutureRevision) {
		t.Errorf("a COMPACTED error: errors.Is ErrCompacted %v, ErrFutureRevision %v; want true, false",
			errors.Is(e, client.ErrCompacted), errors.Is(e, client.ErrFutureRevision))
	}
	if client.Reason(wrapped) != client.ReasonCompacted {
		t.Errorf("Reason = %q", client.Reason(wrapped))
	}

	// gRPC's own statuses carry no details: the code alone.
	e, ok = client.FromError(status.Error(codes.Unimplemented, "unknown method"))
	if !ok || e.Code != codes.Unimplemented || e.Reason != "" || e.Metadata != nil {
		t.Errorf("FromError(a status without details) = %+v, %v", e, ok)
	}
	for _, err := range []error{nil, errors.New("not a status"), status.Error(codes.OK, "")} {
		if e, ok := client.FromError(err); ok {
			t.Errorf("FromError(%v) = %+v, want nothing", err, e)
		}
	}
}

func TestACallThatRanOutOfTimeIsDeadlineExceeded(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	_, _, err := w.Admin.Check(ctx, "user:hank", "join-call", meeting7)
	var e *client.Error
	if !errors.As(err, &e) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		t.Fatalf("Check past its deadline: %v; want a *client.Error that is context.DeadlineExceeded", err)
	}
}
