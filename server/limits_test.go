package server_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// limitCase is one limit of server/limits.go, tried exactly at the limit and
// one past it.
type limitCase struct {
	name string
	// at sends a request exactly at the limit; over one past it.
	at, over func(ctx context.Context, f *fixture) error
	// atCode is what at answers: OK, unless the request is refused for
	// another reason once it is past the limit (a 4 MiB name is still a
	// malformed name).
	atCode codes.Code
	code   codes.Code // what over answers
	field  string     // the field the refusal names, [N] for any index ("" when grpc-go refuses)
	states string     // how the refusal states the limit
}

// nCopies is a list of n copies of s.
func nCopies(s string, n int) []string { return slices.Repeat([]string{s}, n) }

// withPermissions is the server's catalog plus extra permissions.
func withPermissions(ctx context.Context, f *fixture, extra ...*usherv1.Permission) *usherv1.Policy {
	p := catalogOnly(ctx, f)
	p.Permissions = append(p.Permissions, extra...)
	return p
}

// padPermissions is the server's catalog padded with p-0, p-1, … to n
// permissions.
func padPermissions(ctx context.Context, f *fixture, n int) *usherv1.Policy {
	p := catalogOnly(ctx, f)
	for i := 0; len(p.Permissions) < n; i++ {
		p.Permissions = append(p.Permissions, &usherv1.Permission{Name: fmt.Sprintf("p-%d", i)})
	}
	return p
}

func applyPolicyMsg(ctx context.Context, f *fixture, p *usherv1.Policy) error {
	_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
	return err
}

// checkOfSize is a Check whose encoded size is exactly size bytes; its
// subject is far too long, so past the transport it is INVALID_ARGUMENT.
func checkOfSize(t *testing.T, size int) *usherv1.CheckRequest {
	t.Helper()
	req := &usherv1.CheckRequest{Permission: "join-call", Resource: stream42}
	n := size - proto.Size(req) - 10
	for range 3 {
		req.Subject = "user:" + strings.Repeat("a", n)
		n += size - proto.Size(req)
	}
	if got := proto.Size(req); got != size {
		t.Fatalf("could not build a Check of %d bytes: got %d", size, got)
	}
	return req
}

func limitCases(t *testing.T) []limitCase {
	resourceAt := func(name string) func(ctx context.Context, f *fixture) error {
		return func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: name})
			return err
		}
	}
	grantTo := func(subject string) func(ctx context.Context, f *fixture) error {
		return func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: subject, Role: "call-member", Resource: stream42})
			return err
		}
	}
	putRole := func(r *usherv1.Role) func(ctx context.Context, f *fixture) error {
		return func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: r})
			return err
		}
	}
	block := func(req *usherv1.BlockRequest) func(ctx context.Context, f *fixture) error {
		return func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Block(ctx, req)
			return err
		}
	}
	batch := func(n int) func(ctx context.Context, f *fixture) error {
		return func(ctx context.Context, f *fixture) error {
			req := &usherv1.CheckBatchRequest{}
			for range n {
				req.Checks = append(req.Checks, &usherv1.CheckItem{Subject: "user:alice", Permission: "join-call", Resource: stream42})
			}
			_, err := f.authz.CheckBatch(ctx, req)
			return err
		}
	}
	listGrants := func(req *usherv1.ListGrantsRequest) func(ctx context.Context, f *fixture) error {
		return func(ctx context.Context, f *fixture) error {
			_, err := f.admin.ListGrants(ctx, req)
			return err
		}
	}
	listChanges := func(size int32) func(ctx context.Context, f *fixture) error {
		return func(ctx context.Context, f *fixture) error {
			_, err := f.admin.ListChanges(ctx, &usherv1.ListChangesRequest{PageSize: size})
			return err
		}
	}
	policyWith := func(build func(ctx context.Context, f *fixture, n int) *usherv1.Policy, n int) func(ctx context.Context, f *fixture) error {
		return func(ctx context.Context, f *fixture) error { return applyPolicyMsg(ctx, f, build(ctx, f, n)) }
	}
	permissions := func(ctx context.Context, f *fixture, n int) *usherv1.Policy { return padPermissions(ctx, f, n) }
	resources := func(ctx context.Context, f *fixture, n int) *usherv1.Policy {
		p := catalogOnly(ctx, f)
		for i := range n {
			p.Resources = append(p.Resources, &usherv1.Resource{Name: fmt.Sprintf("r:%d", i)})
		}
		return p
	}
	roles := func(ctx context.Context, f *fixture, n int) *usherv1.Policy {
		// Spread over resources of the policy's own: one resource defines
		// at most authz.MaxRolesPerScope.
		p := catalogOnly(ctx, f)
		const perScope = authz.MaxRolesPerScope / 2
		for i := range n {
			scope := fmt.Sprintf("r:%d", i/perScope)
			if i%perScope == 0 {
				p.Resources = append(p.Resources, &usherv1.Resource{Name: scope})
			}
			p.Roles = append(p.Roles, &usherv1.Role{Name: fmt.Sprintf("role-%d", i), Scope: scope, Permissions: []string{"join-call"}})
		}
		return p
	}
	creatorRoles := func(ctx context.Context, f *fixture, n int) *usherv1.Policy {
		p := catalogOnly(ctx, f)
		for i := range n {
			p.CreatorRoles = append(p.CreatorRoles, &usherv1.CreatorRole{ResourceType: fmt.Sprintf("t%d", i), Role: "host"})
		}
		return p
	}
	quotas := func(ctx context.Context, f *fixture, n int) *usherv1.Policy {
		p := catalogOnly(ctx, f)
		for i := range n {
			p.Quotas = append(p.Quotas, &usherv1.Quota{Scope: "root", ResourceType: fmt.Sprintf("t%d", i), Limit: 1})
		}
		return p
	}
	parents := func(ctx context.Context, f *fixture, n int) *usherv1.Policy {
		return withPermissions(ctx, f, &usherv1.Permission{Name: "child", Parents: nCopies("join-call", n)})
	}
	text := func(n int) string { return strings.Repeat("é", n/2) + strings.Repeat("x", n%2) } // n bytes

	return []limitCase{
		{name: "a request message of 4 MiB passes the transport, one byte more is RESOURCE_EXHAUSTED",
			at: func(ctx context.Context, f *fixture) error {
				_, err := f.authz.Check(ctx, checkOfSize(t, server.MaxMessageSize))
				return err
			},
			over: func(ctx context.Context, f *fixture) error {
				_, err := f.authz.Check(ctx, checkOfSize(t, server.MaxMessageSize+1))
				return err
			},
			atCode: codes.InvalidArgument, code: codes.ResourceExhausted,
			states: fmt.Sprintf("larger than max (%d vs. %d)", server.MaxMessageSize+1, server.MaxMessageSize)},
		{name: "a CheckBatch holds at most 1000 checks",
			at: batch(server.MaxBatch), over: batch(server.MaxBatch + 1),
			code: codes.InvalidArgument, field: "checks", states: "1 to 1000 checks"},
		{name: "a resource type is at most 32 bytes",
			at: resourceAt(strings.Repeat("t", 32) + ":x"), over: resourceAt(strings.Repeat("t", 33) + ":x"),
			code: codes.InvalidArgument, field: "name", states: "[a-z][a-z0-9_-]{0,31}"},
		{name: "a resource id is at most 256 characters",
			at: resourceAt("room:" + strings.Repeat("é", 256)), over: resourceAt("room:" + strings.Repeat("é", 257)),
			code: codes.InvalidArgument, field: "name", states: "at most 256 are allowed"},
		{name: "a subject kind is at most 32 bytes",
			at: grantTo(strings.Repeat("k", 32) + ":x"), over: grantTo(strings.Repeat("k", 33) + ":x"),
			code: codes.InvalidArgument, field: "subject", states: "[a-z][a-z0-9_-]{0,31}"},
		{name: "a subject id is at most 256 characters",
			at: grantTo("user:" + strings.Repeat("a", 256)), over: grantTo("user:" + strings.Repeat("a", 257)),
			code: codes.InvalidArgument, field: "subject", states: "at most 256 are allowed"},
		{name: "a permission name is at most 128 bytes",
			at: func(ctx context.Context, f *fixture) error {
				return applyPolicyMsg(ctx, f, withPermissions(ctx, f, &usherv1.Permission{Name: strings.Repeat("p", 128)}))
			},
			over: func(ctx context.Context, f *fixture) error {
				return applyPolicyMsg(ctx, f, withPermissions(ctx, f, &usherv1.Permission{Name: strings.Repeat("p", 129)}))
			},
			code: codes.InvalidArgument, field: "policy.permissions[N].name", states: "at most 128 are allowed"},
		{name: "a role name is at most 128 bytes",
			at:   putRole(&usherv1.Role{Name: strings.Repeat("r", 128), Scope: acme, Permissions: []string{"join-call"}}),
			over: putRole(&usherv1.Role{Name: strings.Repeat("r", 129), Scope: acme, Permissions: []string{"join-call"}}),
			code: codes.InvalidArgument, field: "role.name", states: "at most 128 are allowed"},
		{name: "a ListGrants page holds at most 1000 grants",
			at:   listGrants(&usherv1.ListGrantsRequest{Resource: stream42, PageSize: server.MaxPageSize}),
			over: listGrants(&usherv1.ListGrantsRequest{Resource: stream42, PageSize: server.MaxPageSize + 1}),
			code: codes.InvalidArgument, field: "page_size", states: "between 0 and 1000"},
		{name: "a ListChanges page holds at most 1000 changes",
			at: listChanges(server.MaxPageSize), over: listChanges(server.MaxPageSize + 1),
			code: codes.InvalidArgument, field: "page_size", states: "between 0 and 1000"},
		{name: "a page_token of 4096 bytes is read as a token, one byte more is refused unread",
			at:     listGrants(&usherv1.ListGrantsRequest{Resource: stream42, PageToken: strings.Repeat("A", server.MaxPageTokenLen)}),
			over:   listGrants(&usherv1.ListGrantsRequest{Resource: stream42, PageToken: strings.Repeat("A", server.MaxPageTokenLen+1)}),
			atCode: codes.InvalidArgument, code: codes.InvalidArgument, field: "page_token", states: "at most 4096 are allowed"},
		{name: "a policy declares at most 10000 permissions",
			// Applying 10,000 new permissions works but takes seconds
			// under -race (the index copies the catalog once per new
			// permission), so at the limit the edge's check is asked
			// in-process, as usher policy validate does it.
			at: func(ctx context.Context, f *fixture) error {
				return server.ValidatePolicy(server.FromPolicy(padPermissions(ctx, f, server.MaxPolicyPermissions)))
			},
			over: policyWith(permissions, server.MaxPolicyPermissions+1),
			code: codes.InvalidArgument, field: "policy.permissions", states: "at most 10000 permissions"},
		{name: "a policy lists at most 100000 resources",
			// Applying 100,000 resources works (about a second; several
			// under -race), too slow for this suite, so at the limit the
			// edge's check is asked in-process.
			at: func(ctx context.Context, f *fixture) error {
				return server.ValidatePolicy(server.FromPolicy(resources(ctx, f, server.MaxPolicyResources)))
			},
			over: policyWith(resources, server.MaxPolicyResources+1),
			code: codes.InvalidArgument, field: "policy.resources", states: "at most 100000 resources"},
		{name: "a policy defines at most 10000 roles",
			at: policyWith(roles, server.MaxPolicyRoles), over: policyWith(roles, server.MaxPolicyRoles+1),
			code: codes.InvalidArgument, field: "policy.roles", states: "at most 10000 roles"},
		{name: "a policy names at most 1000 creator roles",
			at: policyWith(creatorRoles, server.MaxPolicyCreatorRoles), over: policyWith(creatorRoles, server.MaxPolicyCreatorRoles+1),
			code: codes.InvalidArgument, field: "policy.creator_roles", states: "at most 1000 creator roles"},
		{name: "a policy holds at most 10000 quotas",
			at: policyWith(quotas, server.MaxPolicyQuotas), over: policyWith(quotas, server.MaxPolicyQuotas+1),
			code: codes.InvalidArgument, field: "policy.quotas", states: "at most 10000 quotas"},
		{name: "a permission names at most 100 parents",
			at: policyWith(parents, server.MaxPermissionParents), over: policyWith(parents, server.MaxPermissionParents+1),
			code: codes.InvalidArgument, field: "policy.permissions[N].parents", states: "at most 100 parents"},
		{name: "a permission's description is at most 1024 bytes",
			at: func(ctx context.Context, f *fixture) error {
				return applyPolicyMsg(ctx, f, withPermissions(ctx, f, &usherv1.Permission{Name: "described", Description: text(server.MaxTextLen)}))
			},
			over: func(ctx context.Context, f *fixture) error {
				return applyPolicyMsg(ctx, f, withPermissions(ctx, f, &usherv1.Permission{Name: "described", Description: text(server.MaxTextLen + 1)}))
			},
			code: codes.InvalidArgument, field: "policy.permissions[N].description", states: "at most 1024 are allowed"},
		{name: "a role lists at most 1000 permissions",
			at:   putRole(&usherv1.Role{Name: "big", Scope: acme, Permissions: nCopies("join-call", server.MaxRolePermissions)}),
			over: putRole(&usherv1.Role{Name: "big", Scope: acme, Permissions: nCopies("join-call", server.MaxRolePermissions+1)}),
			code: codes.InvalidArgument, field: "role.permissions", states: "at most 1000 permissions"},
		{name: "a role lists at most 1000 assignable roles",
			at:   putRole(&usherv1.Role{Name: "big", Scope: acme, AssignableRoles: nCopies("call-member", server.MaxRoleAssignableRoles)}),
			over: putRole(&usherv1.Role{Name: "big", Scope: acme, AssignableRoles: nCopies("call-member", server.MaxRoleAssignableRoles+1)}),
			code: codes.InvalidArgument, field: "role.assignable_roles", states: "at most 1000 assignable roles"},
		{name: "a role is bindable on at most 100 resource types",
			at:   putRole(&usherv1.Role{Name: "big", Scope: acme, BindableOn: nCopies("call", server.MaxRoleBindableOn)}),
			over: putRole(&usherv1.Role{Name: "big", Scope: acme, BindableOn: nCopies("call", server.MaxRoleBindableOn+1)}),
			code: codes.InvalidArgument, field: "role.bindable_on", states: "at most 100 resource types"},
		{name: "a role's description is at most 1024 bytes",
			at:   putRole(&usherv1.Role{Name: "big", Scope: acme, Description: text(server.MaxTextLen)}),
			over: putRole(&usherv1.Role{Name: "big", Scope: acme, Description: text(server.MaxTextLen + 1)}),
			code: codes.InvalidArgument, field: "role.description", states: "at most 1024 are allowed"},
		{name: "a role in a policy lists at most 1000 permissions",
			at: func(ctx context.Context, f *fixture) error {
				p := catalogOnly(ctx, f)
				p.Roles = []*usherv1.Role{{Name: "big", Scope: "root", Permissions: nCopies("join-call", server.MaxRolePermissions)}}
				return applyPolicyMsg(ctx, f, p)
			},
			over: func(ctx context.Context, f *fixture) error {
				p := catalogOnly(ctx, f)
				p.Roles = []*usherv1.Role{{Name: "big", Scope: "root", Permissions: nCopies("join-call", server.MaxRolePermissions+1)}}
				return applyPolicyMsg(ctx, f, p)
			},
			code: codes.InvalidArgument, field: "policy.roles[0].permissions", states: "at most 1000 permissions"},
		{name: "a block lists at most 1000 permissions",
			at:   block(&usherv1.BlockRequest{Subject: "user:eve", Resource: acme, Permissions: nCopies("join-call", server.MaxBlockPermissions)}),
			over: block(&usherv1.BlockRequest{Subject: "user:eve", Resource: acme, Permissions: nCopies("join-call", server.MaxBlockPermissions+1)}),
			code: codes.InvalidArgument, field: "permissions", states: "at most 1000 permissions"},
		{name: "a block's reason is at most 1024 bytes",
			at:   block(&usherv1.BlockRequest{Subject: "user:eve", Resource: acme, Reason: text(server.MaxTextLen)}),
			over: block(&usherv1.BlockRequest{Subject: "user:eve", Resource: acme, Reason: text(server.MaxTextLen + 1)}),
			code: codes.InvalidArgument, field: "reason", states: "at most 1024 are allowed"},
	}
}

// fieldPattern matches a message that starts by naming field, where [N]
// stands for any index.
func fieldPattern(field string) *regexp.Regexp {
	return regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(field), `\[N\]`, `\[\d+\]`) + ` "`)
}

// checkRevision is the revision a Check answers at: a cheap read, even when
// the store holds a policy at its limits.
func checkRevision(ctx context.Context, t *testing.T, f *fixture) uint64 {
	t.Helper()
	resp, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:nobody", Permission: "join-call", Resource: "root"})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp.GetRevision()
}

func TestLimits(t *testing.T) {
	for _, tc := range limitCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newServer(t)
			f.world()
			// The cases run in parallel and some send policies of 100,000
			// entries: under -race on two loaded cores that takes seconds.
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()

			err := tc.at(ctx, f)
			if got := status.Code(err); got != tc.atCode {
				t.Fatalf("exactly at the limit: code %s (%v), want %s", got, err, tc.atCode)
			}
			if err != nil && strings.Contains(status.Convert(err).Message(), tc.states) {
				t.Fatalf("exactly at the limit, the refusal %q is the limit's", status.Convert(err).Message())
			}

			before := checkRevision(ctx, t, f)
			err = tc.over(ctx, f)
			st := wantCode(t, err, tc.code)
			msg := st.Message()
			if !strings.Contains(msg, tc.states) {
				t.Errorf("one past the limit: message %q does not state the limit (%q)", msg, tc.states)
			}
			if tc.field != "" && !fieldPattern(tc.field).MatchString(msg) {
				t.Errorf("one past the limit: message %q does not name the field %s", msg, tc.field)
			}
			if len(msg) > 2048 {
				t.Errorf("one past the limit: message is %d bytes long; the offending value should be cut", len(msg))
			}
			if after := checkRevision(ctx, t, f); after != before {
				t.Errorf("the refused request moved the revision from %d to %d", before, after)
			}
		})
	}
}

// TestValidatePolicyLimits proves that a policy loaded from a file (usher
// serve --policy, usher policy validate) meets the same limits as
// ApplyPolicy, and that a refusal of a huge value quotes only its start.
func TestValidatePolicyLimits(t *testing.T) {
	p := server.FromPolicy(&usherv1.Policy{Permissions: []*usherv1.Permission{{Name: "a"}}})
	if err := server.ValidatePolicy(p); err != nil {
		t.Fatalf("ValidatePolicy(one permission): %v", err)
	}
	for range server.MaxPolicyPermissions {
		p.Permissions = append(p.Permissions, p.Permissions[0])
	}
	err := server.ValidatePolicy(p)
	if err == nil || !strings.Contains(err.Error(), "policy.permissions") || !strings.Contains(err.Error(), "at most 10000") {
		t.Errorf("ValidatePolicy(10001 permissions) = %v, want a refusal naming policy.permissions and 10000", err)
	}

	huge := strings.Repeat("x", 1<<20)
	p = server.FromPolicy(&usherv1.Policy{Permissions: []*usherv1.Permission{{Name: huge}}})
	err = server.ValidatePolicy(p)
	if err == nil || len(err.Error()) > 1024 || !strings.Contains(err.Error(), fmt.Sprintf("(%d bytes)", len(huge))) {
		t.Errorf("ValidatePolicy(a 1 MiB name) = %.200v (%d bytes), want a short refusal saying how long the value was", err, len(fmt.Sprint(err)))
	}
}
