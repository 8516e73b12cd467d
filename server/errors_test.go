package server_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/storage/memory"
)

// errorWorld is the world of the error cases: checkWorld's tree with roles
// and grants that the refused writes would have to touch.
func errorWorld(f *fixture) {
	f.world()
	f.putRole(&usherv1.Role{Name: "presenter", Scope: acme, Permissions: []string{"screenshare", "pin-for-everyone"}, MaxHolders: 1, BindableOn: []string{"call"}})
	f.grant("user:p1", "presenter", stream42)
	f.putRole(&usherv1.Role{Name: "producer", Scope: livestream, Permissions: []string{"join-backstage"}})
	f.putRole(&usherv1.Role{Name: "visitor", Scope: acme, Permissions: []string{"join-call"}})
	f.grant("user:g", "visitor", sales)
	f.grant("user:alice", "host", stream42)
	f.block(&usherv1.BlockRequest{Subject: "user:eve", Resource: acme, Reason: "fraud"})
}

// catalogOnly is a policy with the server's current catalog and nothing
// else, so that applying it with one addition tests only that addition.
func catalogOnly(ctx context.Context, f *fixture) *usherv1.Policy {
	resp, err := f.admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{})
	if err != nil {
		f.t.Fatalf("ExportPolicy: %v", err)
	}
	return &usherv1.Policy{Permissions: resp.GetPolicy().GetPermissions()}
}

// exported is the server's current policy.
func exported(ctx context.Context, f *fixture) *usherv1.Policy {
	resp, err := f.admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{})
	if err != nil {
		f.t.Fatalf("ExportPolicy: %v", err)
	}
	return resp.GetPolicy()
}

type errorCase struct {
	name   string
	call   func(ctx context.Context, f *fixture) error
	code   codes.Code
	reason string // the ErrorInfo's reason
	field  string // the exact field the message must name
	value  string // the offending value, quoted after the field
}

var errorCases = []errorCase{
	// INVALID_ARGUMENT: malformed names.
	{name: "a subject without a kind is malformed", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "subject", value: "alice",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "alice", Permission: "join-call", Resource: stream42})
			return err
		}},
	{name: "a resource without an id is malformed", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "resource", value: "call:",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: "call:"})
			return err
		}},
	{name: "a permission with capitals is malformed", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "permission", value: "Join-Call",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:alice", Permission: "Join-Call", Resource: stream42})
			return err
		}},
	{name: "a malformed subject in a batch gets its own error, named by its index", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "checks[1].subject", value: "user:",
		call: func(ctx context.Context, f *fixture) error {
			return batchItemError(f.authz.CheckBatch(ctx, &usherv1.CheckBatchRequest{Checks: []*usherv1.CheckItem{
				{Subject: "user:alice", Permission: "join-call", Resource: stream42},
				{Subject: "user:", Permission: "join-call", Resource: stream42},
			}}))
		}},
	{name: "an empty batch is refused", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "checks", value: "0",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.authz.CheckBatch(ctx, &usherv1.CheckBatchRequest{})
			return err
		}},
	{name: "ListPermissions refuses a resource type with capitals", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "resource", value: "Call:x",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.authz.ListPermissions(ctx, &usherv1.ListPermissionsRequest{Subject: "user:alice", Resource: "Call:x"})
			return err
		}},
	{name: "Grant refuses a subject with an empty id", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "subject", value: "user:",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:", Role: "host", Resource: stream42})
			return err
		}},
	{name: "Grant refuses a role name with capitals", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "role", value: "Host",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:bob", Role: "Host", Resource: stream42})
			return err
		}},
	{name: "Grant refuses a resource type starting with a digit", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "resource", value: "9call:x",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:bob", Role: "host", Resource: "9call:x"})
			return err
		}},
	{name: "Grant refuses an expiry in the past", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "expire_time", value: "2020-01-02T03:04:05Z",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:bob", Role: "host", Resource: stream42,
				ExpireTime: timestamp(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))})
			return err
		}},
	{name: "Grant refuses the zero instant of year 1 as an expiry, which would read as never", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "expire_time", value: "0001-01-01T00:00:00Z",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:bob", Role: "host", Resource: stream42,
				ExpireTime: &timestamppb.Timestamp{Seconds: -62135596800}})
			return err
		}},
	{name: "Block refuses an expiry with negative nanos", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "expire_time", value: "4102444800s -1ns",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:bob", Resource: stream42,
				ExpireTime: &timestamppb.Timestamp{Seconds: 4102444800, Nanos: -1}})
			return err
		}},
	{name: "Revoke refuses a role name with a space", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "role", value: "call member",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: "user:alice", Role: "call member", Resource: stream42})
			return err
		}},
	{name: "PutResource refuses to register root", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "name", value: "root",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "root", Parent: acme})
			return err
		}},
	{name: "PutResource refuses a parent without an id", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "parent", value: "account",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "workspace:new", Parent: "account"})
			return err
		}},
	{name: "DeleteResource refuses to delete root", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "name", value: "root",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: "root"})
			return err
		}},
	{name: "PutRole refuses a malformed role name", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "role.name", value: "Producer",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "Producer", Scope: acme, Permissions: []string{"join-call"}}})
			return err
		}},
	{name: "PutRole refuses a malformed permission, named by its index", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "role.permissions[1]", value: "Send Video",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "new", Scope: acme, Permissions: []string{"join-call", "Send Video"}}})
			return err
		}},
	{name: "PutRole refuses a malformed assignable role", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "role.assignable_roles[0]", value: "Bad Role",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "new", Scope: acme, Permissions: []string{"join-call"}, AssignableRoles: []string{"Bad Role"}}})
			return err
		}},
	{name: "PutRole refuses a malformed bindable type", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "role.bindable_on[0]", value: "Call",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "new", Scope: acme, Permissions: []string{"join-call"}, BindableOn: []string{"Call"}}})
			return err
		}},
	{name: "DeleteRole refuses a malformed scope", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "scope", value: "acme",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.DeleteRole(ctx, &usherv1.DeleteRoleRequest{Name: "visitor", Scope: "acme"})
			return err
		}},
	{name: "Unblock refuses a malformed subject", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "subject", value: "User:eve",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Unblock(ctx, &usherv1.UnblockRequest{Subject: "User:eve", Resource: acme})
			return err
		}},
	{name: "a write refuses a malformed actor", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "actor", value: "alice",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:bob", Role: "host", Resource: stream42, Actor: "alice"})
			return err
		}},
	{name: "ListGrants needs a subject or a resource", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "subject", value: "",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{})
			return err
		}},
	{name: "ListGrants refuses a page size above 1000", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "page_size", value: "5000",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Resource: stream42, PageSize: 5000})
			return err
		}},
	{name: "ListGrants refuses a page token it did not issue", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "page_token", value: "!!",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Resource: stream42, PageToken: "!!"})
			return err
		}},
	{name: "LookupResources refuses a page token it did not issue", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "page_token", value: "!!",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.authz.LookupResources(ctx, &usherv1.LookupResourcesRequest{Subject: "user:alice", Permission: "join-call", ResourceType: "call", PageToken: "!!"})
			return err
		}},
	{name: "LookupSubjects refuses a page token it did not issue", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "page_token", value: "!!",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.authz.LookupSubjects(ctx, &usherv1.LookupSubjectsRequest{Resource: stream42, Permission: "join-call", PageToken: "!!"})
			return err
		}},
	{name: "ListChanges refuses a caller filter longer than any caller name", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "caller", value: strings.Repeat("c", 129),
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.ListChanges(ctx, &usherv1.ListChangesRequest{Caller: strings.Repeat("c", 129)})
			return err
		}},
	{name: "ListChanges refuses a caller filter with a character no caller name has", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "caller", value: "sidecar\nb",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.ListChanges(ctx, &usherv1.ListChangesRequest{Caller: "sidecar\nb"})
			return err
		}},
	{name: "ListRoles refuses a malformed resource", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "resource", value: "call",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.ListRoles(ctx, &usherv1.ListRolesRequest{Resource: "call"})
			return err
		}},
	{name: "GetResource refuses a malformed name", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "name", value: "",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.GetResource(ctx, &usherv1.GetResourceRequest{})
			return err
		}},

	// INVALID_ARGUMENT: undeclared permissions.
	{name: "Check refuses an undeclared permission", code: codes.InvalidArgument, reason: "UNDECLARED_PERMISSION", field: "permission", value: "teleport",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:alice", Permission: "teleport", Resource: stream42})
			return err
		}},
	{name: "Check refuses an undeclared permission even on an unknown resource", code: codes.InvalidArgument, reason: "UNDECLARED_PERMISSION", field: "permission", value: "teleport",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:alice", Permission: "teleport", Resource: "call:livestream:404"})
			return err
		}},
	{name: "CheckBatch answers an undeclared permission with an error of its own, naming its index", code: codes.InvalidArgument, reason: "UNDECLARED_PERMISSION", field: "checks[2].permission", value: "teleport",
		call: func(ctx context.Context, f *fixture) error {
			return batchItemError(f.authz.CheckBatch(ctx, &usherv1.CheckBatchRequest{Checks: []*usherv1.CheckItem{
				{Subject: "user:alice", Permission: "join-call", Resource: stream42},
				{Subject: "user:bob", Permission: "end-call", Resource: meeting7},
				{Subject: "user:alice", Permission: "teleport", Resource: stream42},
			}}))
		}},
	{name: "PutRole names an undeclared permission by its index in the request, not in sorted order", code: codes.InvalidArgument, reason: "UNDECLARED_PERMISSION", field: "role.permissions[1]", value: "bogus",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "new", Scope: acme, Permissions: []string{"join-call", "bogus"}}})
			return err
		}},
	{name: "Block names an undeclared permission by its index in the request, not in sorted order", code: codes.InvalidArgument, reason: "UNDECLARED_PERMISSION", field: "permissions[1]", value: "bogus",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:alice", Resource: acme, Permissions: []string{"join-call", "bogus"}})
			return err
		}},
	{name: "Block refuses an undeclared permission", code: codes.InvalidArgument, reason: "UNDECLARED_PERMISSION", field: "permissions[0]", value: "teleport",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:alice", Resource: acme, Permissions: []string{"teleport"}})
			return err
		}},

	// INVALID_ARGUMENT: bad policies.
	{name: "a policy naming an undeclared parent permission is refused", code: codes.InvalidArgument, reason: "UNDECLARED_PERMISSION", field: "policy.permissions[0].parents[0]", value: "nope",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Permissions = append([]*usherv1.Permission{{Name: "record.download", Parents: []string{"nope"}}}, p.Permissions...)
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "a policy whose permissions imply each other in a cycle is refused", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "policy.permissions", value: "a",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Permissions = append(p.Permissions, &usherv1.Permission{Name: "a", Parents: []string{"b"}}, &usherv1.Permission{Name: "b", Parents: []string{"a"}})
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "a policy declaring a permission twice is refused", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "policy.permissions[1].name", value: "a",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Permissions = append([]*usherv1.Permission{{Name: "a"}, {Name: "a"}}, p.Permissions...)
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "a policy with a malformed permission name is refused", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "policy.permissions[0].name", value: "Record",
		call: declaringFirst("Record")},
	{name: "a policy declaring an usher.* permission Usher does not check is refused", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "policy.permissions[0].name", value: "usher.grant.write",
		call: declaringFirst("usher.grant.write")},
	{name: "a policy narrowing usher.blocks.write to a permission it does not declare is refused", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "policy.permissions[0].name", value: "usher.blocks.write.send-audi",
		call: declaringFirst("usher.blocks.write.send-audi")},
	{name: "a policy narrowing usher.blocks.write to one of Usher's own permissions is refused", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "policy.permissions[0].name", value: "usher.blocks.write.usher.grants.write",
		call: declaringFirst("usher.blocks.write.usher.grants.write")},
	{name: "a policy role naming an undeclared permission is refused, by its index in the policy", code: codes.InvalidArgument, reason: "UNDECLARED_PERMISSION", field: "policy.roles[0].permissions[1]", value: "bogus",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Roles = []*usherv1.Role{{Name: "new", Scope: acme, Permissions: []string{"join-call", "bogus"}}}
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "a policy defining a role twice at one scope is refused", code: codes.InvalidArgument, reason: "INVALID_FIELD", field: "policy.roles[1].name", value: "new",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Roles = []*usherv1.Role{{Name: "new", Scope: acme}, {Name: "new", Scope: acme}}
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "a policy dropping a permission that a stored role names is refused", code: codes.InvalidArgument, reason: "PERMISSION_IN_USE", field: "policy.permissions", value: "pin-for-everyone",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			for i, perm := range p.Permissions {
				if perm.GetName() == "pin-for-everyone" {
					p.Permissions = append(p.Permissions[:i:i], p.Permissions[i+1:]...)
					break
				}
			}
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},

	// NOT_FOUND: on a write, a resource not registered or a role not visible.
	{name: "Grant on an unregistered resource", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "resource", value: "call:livestream:404",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:bob", Role: "host", Resource: "call:livestream:404"})
			return err
		}},
	{name: "Grant of a role defined at another call type", code: codes.NotFound, reason: "ROLE_NOT_FOUND", field: "role", value: "producer",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:bob", Role: "producer", Resource: meeting7})
			return err
		}},
	{name: "Grant of a role defined below the resource", code: codes.NotFound, reason: "ROLE_NOT_FOUND", field: "role", value: "producer",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:bob", Role: "producer", Resource: sales})
			return err
		}},
	{name: "Grant of a role defined nowhere", code: codes.NotFound, reason: "ROLE_NOT_FOUND", field: "role", value: "juggler",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:bob", Role: "juggler", Resource: stream42})
			return err
		}},
	{name: "PutResource under an unregistered parent", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "parent", value: "account:nope",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "workspace:nope-hq", Parent: "account:nope"})
			return err
		}},
	{name: "PutRole at an unregistered scope", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "role.scope", value: "account:nope",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "new", Scope: "account:nope", Permissions: []string{"join-call"}}})
			return err
		}},
	{name: "Revoke of a grant that does not exist", code: codes.NotFound, reason: "GRANT_NOT_FOUND", field: "role", value: "moderator",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: "user:alice", Role: "moderator", Resource: stream42})
			return err
		}},
	{name: "Revoke on an unregistered resource", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "resource", value: "call:livestream:404",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: "user:alice", Role: "host", Resource: "call:livestream:404"})
			return err
		}},
	{name: "Block on an unregistered resource", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "resource", value: "account:nope",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:alice", Resource: "account:nope"})
			return err
		}},
	{name: "Unblock of a block that does not exist", code: codes.NotFound, reason: "BLOCK_NOT_FOUND", field: "subject", value: "user:alice",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Unblock(ctx, &usherv1.UnblockRequest{Subject: "user:alice", Resource: acme})
			return err
		}},
	{name: "DeleteRole of a role defined nowhere", code: codes.NotFound, reason: "ROLE_NOT_FOUND", field: "name", value: "juggler",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.DeleteRole(ctx, &usherv1.DeleteRoleRequest{Name: "juggler", Scope: acme})
			return err
		}},
	{name: "DeleteRole at a scope where the role is visible but not defined", code: codes.NotFound, reason: "ROLE_NOT_FOUND", field: "name", value: "host",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.DeleteRole(ctx, &usherv1.DeleteRoleRequest{Name: "host", Scope: acme})
			return err
		}},
	{name: "DeleteResource of an unregistered resource", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "name", value: "call:livestream:404",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: "call:livestream:404"})
			return err
		}},
	{name: "a policy resource under an unregistered parent", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "policy.resources[0].parent", value: "account:nope",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Resources = []*usherv1.Resource{{Name: "workspace:nope-hq", Parent: "account:nope"}}
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "a policy resource's start time that is no time is quoted as sent", code: codes.InvalidArgument, reason: "INVALID_FIELD",
		field: "policy.resources[0].start_time", value: "1893456000s 2000000000ns",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Resources = []*usherv1.Resource{{Name: "call:by-policy", StartTime: &timestamppb.Timestamp{Seconds: 1893456000, Nanos: 2e9}}}
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "a policy resource starting at year 1 is not one without a start", code: codes.InvalidArgument, reason: "INVALID_FIELD",
		field: "policy.resources[0].start_time", value: "0001-01-01T00:00:00Z",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Resources = []*usherv1.Resource{{Name: "call:by-policy", StartTime: &timestamppb.Timestamp{Seconds: -62135596800}}}
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "a policy admission rule's duration that is none is quoted as sent", code: codes.InvalidArgument, reason: "INVALID_FIELD",
		field: "policy.admissions[0].join_ahead", value: "60s -1ns",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Admissions = []*usherv1.Admission{{Scope: "root", ResourceType: "call", JoinPermission: "join-call",
				JoinAhead: &durationpb.Duration{Seconds: 60, Nanos: -1}}}
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "PutAdmission's lease that is no duration is quoted as sent", code: codes.InvalidArgument, reason: "INVALID_FIELD",
		field: "admission.lease", value: "5s 2000000000ns",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutAdmission(ctx, &usherv1.PutAdmissionRequest{Admission: &usherv1.Admission{Scope: acme, ResourceType: "call",
				JoinPermission: "join-call", Lease: &durationpb.Duration{Seconds: 5, Nanos: 2e9}}})
			return err
		}},
	{name: "PutAdmission's join_ahead of ten thousand years is quoted as sent", code: codes.InvalidArgument, reason: "INVALID_FIELD",
		field: "admission.join_ahead", value: "315576000000s 0ns",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutAdmission(ctx, &usherv1.PutAdmissionRequest{Admission: &usherv1.Admission{Scope: acme, ResourceType: "call",
				JoinPermission: "join-call", JoinAhead: &durationpb.Duration{Seconds: 315576000000}}})
			return err
		}},
	{name: "PutAdmission's join_ahead a fraction of a second past the longest is quoted as sent", code: codes.InvalidArgument, reason: "INVALID_FIELD",
		field: "admission.join_ahead", value: "9223372036s 900000000ns",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutAdmission(ctx, &usherv1.PutAdmissionRequest{Admission: &usherv1.Admission{Scope: acme, ResourceType: "call",
				JoinPermission: "join-call", JoinAhead: &durationpb.Duration{Seconds: 9223372036, Nanos: 900000000}}})
			return err
		}},
	{name: "PutAdmission's lease a fraction of a second past the longest the other way is quoted as sent", code: codes.InvalidArgument, reason: "INVALID_FIELD",
		field: "admission.lease", value: "-9223372036s -854775809ns",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutAdmission(ctx, &usherv1.PutAdmissionRequest{Admission: &usherv1.Admission{Scope: acme, ResourceType: "call",
				JoinPermission: "join-call", Lease: &durationpb.Duration{Seconds: -9223372036, Nanos: -854775809}}})
			return err
		}},
	{name: "a policy admission rule's lease of minus ten thousand years is quoted as sent", code: codes.InvalidArgument, reason: "INVALID_FIELD",
		field: "policy.admissions[0].lease", value: "-315576000000s 0ns",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Admissions = []*usherv1.Admission{{Scope: "root", ResourceType: "call", JoinPermission: "join-call",
				Lease: &durationpb.Duration{Seconds: -315576000000}}}
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "a LiveKit room_admin lists at most 64 permissions", code: codes.InvalidArgument, reason: "INVALID_FIELD",
		field: "admission.livekit.room_admin", value: "65",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutAdmission(ctx, &usherv1.PutAdmissionRequest{Admission: &usherv1.Admission{Scope: acme, ResourceType: "call",
				JoinPermission: "join-call", Livekit: &usherv1.LiveKitMapping{RoomJoin: "join-call",
					RoomAdmin: strings.Repeat("join-call,", 64) + "join-call"}}})
			return err
		}},
	{name: "a policy role at an unregistered scope", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "policy.roles[0].scope", value: "account:nope",
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Roles = []*usherv1.Role{{Name: "new", Scope: "account:nope", Permissions: []string{"join-call"}}}
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "GetResource of an unregistered resource", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "name", value: "call:livestream:404",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.GetResource(ctx, &usherv1.GetResourceRequest{Name: "call:livestream:404"})
			return err
		}},
	{name: "ListRoles at an unregistered resource", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "resource", value: "call:livestream:404",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.ListRoles(ctx, &usherv1.ListRolesRequest{Resource: "call:livestream:404"})
			return err
		}},
	{name: "ListGrants on an unregistered resource", code: codes.NotFound, reason: "RESOURCE_NOT_FOUND", field: "resource", value: "call:livestream:404",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Resource: "call:livestream:404"})
			return err
		}},

	// ALREADY_EXISTS: a registration that may only register.
	{name: "a create-only registration of a registered name", code: codes.AlreadyExists, reason: "RESOURCE_EXISTS", field: "name", value: stream42,
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: stream42, Parent: acme, CreateOnly: true})
			return err
		}},

	// FAILED_PRECONDITION: cycles, children, max holders.
	{name: "moving a resource under its own descendant would form a cycle", code: codes.FailedPrecondition, reason: "CYCLE", field: "parent", value: stream42,
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: acme, Parent: stream42})
			return err
		}},
	{name: "moving a resource under itself would form a cycle", code: codes.FailedPrecondition, reason: "CYCLE", field: "parent", value: sales,
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: sales, Parent: sales})
			return err
		}},
	{name: "a policy moving a resource under its descendant would form a cycle", code: codes.FailedPrecondition, reason: "CYCLE", field: "policy.resources[0].parent", value: stream42,
		call: func(ctx context.Context, f *fixture) error {
			p := catalogOnly(ctx, f)
			p.Resources = []*usherv1.Resource{{Name: acme, Parent: stream42}}
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
			return err
		}},
	{name: "deleting a resource with children is refused", code: codes.FailedPrecondition, reason: "HAS_CHILDREN", field: "name", value: sales,
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: sales})
			return err
		}},
	{name: "a grant beyond max_holders is refused", code: codes.FailedPrecondition, reason: "MAX_HOLDERS", field: "role", value: "presenter",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:p2", Role: "presenter", Resource: stream42})
			return err
		}},
	{name: "a grant on a type outside bindable_on is refused", code: codes.FailedPrecondition, reason: "NOT_BINDABLE", field: "role", value: "presenter",
		call: func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:p2", Role: "presenter", Resource: sales})
			return err
		}},
	{name: "a pruning policy that would drop a role grants depend on is refused", code: codes.FailedPrecondition, reason: "ROLE_IN_USE", field: "policy.roles", value: "visitor",
		call: func(ctx context.Context, f *fixture) error {
			p := exported(ctx, f)
			p.Resources = append(p.Resources, &usherv1.Resource{Name: acme})
			p.Roles = slices.DeleteFunc(p.Roles, func(r *usherv1.Role) bool { return r.GetName() == "visitor" })
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p, Prune: true})
			return err
		}},
}

// actorCases are otherwise valid writes of every kind on behalf of an actor
// whose own permissions do not allow them: "With an actor, the actor's own
// permissions decide" (DESIGN.md, Delegation). A policy is applied on the
// caller's own authority only.
func actorCases() []errorCase {
	const actor = "user:nobody" // holds no grant anywhere
	write := func(name string, call func(ctx context.Context, f *fixture) error) errorCase {
		code, reason := codes.PermissionDenied, "MISSING_PERMISSION"
		if name == "ApplyPolicy" {
			reason = "PLATFORM_ONLY" // a policy is the platform's, whatever the actor holds
		}
		return errorCase{name: name + " on behalf of an actor without the power is refused", code: code, reason: reason,
			field: "actor", value: actor, call: call}
	}
	return []errorCase{
		write("Grant", func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:new", Role: "call-member", Resource: stream42, Actor: actor})
			return err
		}),
		write("Revoke", func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: "user:alice", Role: "host", Resource: stream42, Actor: actor})
			return err
		}),
		write("PutRole", func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "new", Scope: acme, Permissions: []string{"join-call"}}, Actor: actor})
			return err
		}),
		write("DeleteRole", func(ctx context.Context, f *fixture) error {
			_, err := f.admin.DeleteRole(ctx, &usherv1.DeleteRoleRequest{Name: "producer", Scope: livestream, Actor: actor})
			return err
		}),
		write("PutResource", func(ctx context.Context, f *fixture) error {
			_, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "event:launch", Parent: sales, Actor: actor})
			return err
		}),
		write("DeleteResource", func(ctx context.Context, f *fixture) error {
			_, err := f.admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: meeting7, Actor: actor})
			return err
		}),
		write("Block", func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:new", Resource: acme, Actor: actor})
			return err
		}),
		write("Unblock", func(ctx context.Context, f *fixture) error {
			_, err := f.admin.Unblock(ctx, &usherv1.UnblockRequest{Subject: "user:eve", Resource: acme, Actor: actor})
			return err
		}),
		write("ApplyPolicy", func(ctx context.Context, f *fixture) error {
			p := proto.Clone(exported(ctx, f)).(*usherv1.Policy)
			p.Resources = append(p.Resources, &usherv1.Resource{Name: "account:globex"})
			_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p, Actor: actor})
			return err
		}),
	}
}

// batchItemError is the one error of a batch whose other checks were
// answered, as the status the check would have had alone.
func batchItemError(resp *usherv1.CheckBatchResponse, err error) error {
	if err != nil {
		return err
	}
	errs := resp.GetErrors()
	if len(errs) != 1 {
		return fmt.Errorf("the batch answered %d errors, want one", len(errs))
	}
	for i, d := range resp.GetDecisions() {
		if i != int(errs[0].GetIndex()) && d.GetReason() == usherv1.Reason_REASON_UNSPECIFIED {
			return fmt.Errorf("check %d beside the bad one was not answered", i)
		}
	}
	return batchItem{errs[0]}
}

// batchItem is the error of one check of a batch, as a status without
// details: the CheckError carries its reason, field and value itself.
type batchItem struct{ *usherv1.CheckError }

func (b batchItem) Error() string { return b.GRPCStatus().Err().Error() }

func (b batchItem) GRPCStatus() *status.Status {
	return status.New(codes.Code(b.GetCode()), b.GetMessage())
}

// TestErrors runs every refusal against one server and proves, after each,
// the code, that the message names the field and the value, that the
// details carry them with the reason, and that the server's readable state
// did not change.
// declaringFirst applies the server's catalog with name declared before
// the rest, as policy.permissions[0].
func declaringFirst(name string) func(context.Context, *fixture) error {
	return func(ctx context.Context, f *fixture) error {
		p := catalogOnly(ctx, f)
		p.Permissions = append([]*usherv1.Permission{{Name: name}}, p.Permissions...)
		_, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
		return err
	}
}

func TestErrors(t *testing.T) {
	f := newServer(t)
	errorWorld(f)
	subjects := []string{"user:alice", "user:bob", "user:eve", "user:g", "user:p1", "user:p2", "user:new"}
	before := f.snapshotState(subjects...)
	for _, c := range append(errorCases, actorCases()...) {
		t.Run(c.name, func(t *testing.T) {
			err := c.call(f.ctx(), f)
			st := wantCode(t, err, c.code)
			if diff := before.diff(f.snapshotState(subjects...)); len(diff) > 0 {
				t.Errorf("a refused call wrote something: %s", strings.Join(diff, "; "))
			}
			want := fmt.Sprintf("%s %q", c.field, c.value)
			if !strings.Contains(st.Message(), want) {
				t.Errorf("message %q does not name %s", st.Message(), want)
			}
			if b, ok := err.(batchItem); ok {
				if b.GetReason() != c.reason || b.GetField() != c.field || b.GetValue() != c.value {
					t.Errorf("CheckError reason %q field %q value %q, want %q %q %q", b.GetReason(), b.GetField(), b.GetValue(), c.reason, c.field, c.value)
				}
				return
			}
			wantDetails(t, st, refusal{reason: c.reason, field: c.field, value: c.value})
		})
	}
}

// TestErrorsAreStatuses guards the mapping itself: a refusal is never
// UNKNOWN or INTERNAL, whatever the request.
func TestErrorsAreStatuses(t *testing.T) {
	f := newServer(t)
	_, err := f.admin.PutRole(f.ctx(), &usherv1.PutRoleRequest{})
	if code := status.Code(err); code != codes.InvalidArgument {
		t.Errorf("PutRole without a role answered %s (%v), want InvalidArgument", code, err)
	}
	_, err = f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{})
	if code := status.Code(err); code == codes.Unknown || code == codes.Internal {
		t.Errorf("ApplyPolicy without a policy answered %s (%v)", code, err)
	}
}

// outcomeUnknown is a backend whose every commit may or may not have taken
// effect: its answer was lost, and whether it took effect with it.
type outcomeUnknown struct{ *memory.Memory }

func (outcomeUnknown) Commit(context.Context, []authz.Write) ([]authz.Committed, error) {
	return nil, fmt.Errorf("storage: commit: %w (%w: no leader)", context.DeadlineExceeded, authz.ErrOutcomeUnknown)
}

// A write whose backend cannot tell whether it took effect is UNAVAILABLE
// (UNAVAILABLE_STORAGE) saying that it may have, for the caller to read it
// back, and never that it was not committed.
func TestAWriteOfUnknownOutcomeSaysItMayHaveTakenEffect(t *testing.T) {
	engine, err := authz.Start(t.Context(), outcomeUnknown{memory.New()}, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	f := serveEngine(t, engine)
	_, err = f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: "account:acme"})
	st := wantCode(t, err, codes.Unavailable)
	wantDetails(t, st, refusal{reason: "UNAVAILABLE_STORAGE"})
	if msg := st.Message(); !strings.Contains(msg, "may or may not have been committed; read it back to know") || strings.Contains(msg, "was not committed") {
		t.Errorf("the write of unknown outcome says %q; want it to say it may have been committed", msg)
	}
}

// TestARequestThatDoesNotDecodeIsInvalid sends, as raw bytes, what a client
// in another language could: strings that are not UTF-8, which proto3
// requires every string to be, and a message cut short. Each is refused as
// INVALID_ARGUMENT naming the string, by its path in the request, or the
// request, and writes nothing; a stream ends so.
func TestARequestThatDoesNotDecodeIsInvalid(t *testing.T) {
	f := newServer(t)
	errorWorld(f)
	subjects := []string{"user:alice", "user:eve"}
	before := f.snapshotState(subjects...)
	// notUTF8 is m's encoding with "~~" in its strings made two bytes that
	// are not UTF-8.
	notUTF8 := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.ReplaceAll(b, []byte("~~"), []byte("\xff\xfe"))
	}
	grant, err := proto.Marshal(&usherv1.GrantRequest{Subject: "user:eve", Role: "host", Resource: stream42})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, method string
		body         []byte
		field, value string
	}{
		{"a subject of a grant", usherv1.AdminService_Grant_FullMethodName,
			notUTF8(&usherv1.GrantRequest{Subject: "user:~~eve", Role: "host", Resource: stream42}), "subject", "user:\xff\xfeeve"},
		{"a resource of the second check of a batch", usherv1.AuthorizationService_CheckBatch_FullMethodName,
			notUTF8(&usherv1.CheckBatchRequest{Checks: []*usherv1.CheckItem{
				{Subject: "user:alice", Permission: "join-call", Resource: stream42},
				{Subject: "user:alice", Permission: "join-call", Resource: "call:~~"}}}), "checks[1].resource", "call:\xff\xfe"},
		{"a Check's permission", usherv1.AuthorizationService_Check_FullMethodName,
			notUTF8(&usherv1.CheckRequest{Subject: "user:alice", Permission: "join~~", Resource: stream42}), "permission", "join\xff\xfe"},
		{"a grant cut short", usherv1.AdminService_Grant_FullMethodName, grant[:len(grant)-3], "request", fmt.Sprint(len(grant) - 3)},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := wantCode(t, invokeRaw(f.ctx(), f.conn, c.method, c.body), codes.InvalidArgument)
			if want := fmt.Sprintf("%s %q: ", c.field, c.value); !strings.HasPrefix(st.Message(), want) {
				t.Errorf("message %q does not begin %s", st.Message(), want)
			}
			wantDetails(t, st, refusal{reason: "INVALID_FIELD", field: c.field, value: strings.ToValidUTF8(c.value, "\uFFFD")})
			if diff := before.diff(f.snapshotState(subjects...)); len(diff) > 0 {
				t.Errorf("a refused call wrote something: %s", strings.Join(diff, "; "))
			}
		})
	}
	t.Run("a Watch's subject", func(t *testing.T) {
		desc := &grpc.StreamDesc{ServerStreams: true}
		stream, err := f.conn.NewStream(f.ctx(), desc, usherv1.AuthorizationService_Watch_FullMethodName, grpc.ForceCodec(bytesCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(notUTF8(&usherv1.WatchRequest{Subject: "user:~~"})); err != nil {
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		var reply []byte
		st := wantCode(t, stream.RecvMsg(&reply), codes.InvalidArgument)
		if want := `subject "user:\xff\xfe": `; !strings.HasPrefix(st.Message(), want) {
			t.Errorf("message %q does not begin %s", st.Message(), want)
		}
		wantDetails(t, st, refusal{reason: "INVALID_FIELD", field: "subject", value: "user:\uFFFD"})
	})
}

// TestAnUndeclaredPermissionIsInvalidWhoeverAsks proves that a typo in a
// block's or a role's permissions is INVALID_ARGUMENT naming it, as without
// an actor, whatever the actor may do: "Roles may only name declared
// permissions, so a typo is an error" (DESIGN.md), not a power the actor
// lacks.
func TestAnUndeclaredPermissionIsInvalidWhoeverAsks(t *testing.T) {
	f := newServer(t)
	errorWorld(f)
	// A muter may block send-audio and nothing else (usher.blocks.write.send-audio).
	f.putRole(&usherv1.Role{Name: "muter", Scope: acme, Permissions: []string{"join-call", "send-audio", "mute-users"}})
	f.grant("user:mo", "muter", stream42)
	subjects := []string{"user:mo", "user:bob", "user:nobody"}
	cases := []struct {
		name         string
		call         func(ctx context.Context) error
		field, value string
	}{
		{"a muter's mute of a permission with a typo", func(ctx context.Context) error {
			_, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:bob", Resource: stream42, Permissions: []string{"send-audoi"}, Actor: "user:mo"})
			return err
		}, "permissions[0]", "send-audoi"},
		{"a block of an undeclared permission by an actor without the power", func(ctx context.Context) error {
			_, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:bob", Resource: stream42, Permissions: []string{"send-audio", "teleport"}, Actor: "user:nobody"})
			return err
		}, "permissions[1]", "teleport"},
		{"an actor's mute of itself with a typo", func(ctx context.Context) error {
			_, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:mo", Resource: stream42, Permissions: []string{"send-audoi"}, Actor: "user:mo"})
			return err
		}, "permissions[0]", "send-audoi"},
		{"a role naming an undeclared permission by an actor without the power", func(ctx context.Context) error {
			_, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "new", Scope: acme, Permissions: []string{"join-call", "teleport"}}, Actor: "user:nobody"})
			return err
		}, "role.permissions[1]", "teleport"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := f.snapshotState(subjects...)
			st := wantCode(t, c.call(f.ctx()), codes.InvalidArgument)
			if want := fmt.Sprintf("%s %q", c.field, c.value); !strings.Contains(st.Message(), want) {
				t.Errorf("message %q does not name %s", st.Message(), want)
			}
			wantDetails(t, st, refusal{reason: "UNDECLARED_PERMISSION", field: c.field, value: c.value})
			if diff := before.diff(f.snapshotState(subjects...)); len(diff) > 0 {
				t.Errorf("a refused call wrote something: %s", strings.Join(diff, "; "))
			}
		})
	}
}

// The tree's depth is a limit, as a quota is: "capacity or limits reached"
// is RESOURCE_EXHAUSTED (DESIGN.md, Errors), for a registration, a move and
// a policy alike, and nothing is written.
func TestATreePastItsDepthIsRefusedAsALimit(t *testing.T) {
	f := newServer(t)
	parent := ""
	for i := 1; i <= authz.MaxDepth; i++ {
		name := fmt.Sprintf("folder:d%d", i)
		if _, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: name, Parent: parent}); err != nil {
			t.Fatalf("registering %s, level %d: %v", name, i, err)
		}
		parent = name
	}
	if _, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: "folder:other"}); err != nil {
		t.Fatal(err)
	}
	deepest := parent
	policy := exported(f.ctx(), f)
	policy.Resources = append(policy.Resources, &usherv1.Resource{Name: "folder:deeper", Parent: deepest})
	for _, c := range []struct {
		name, field string
		call        func() error
	}{
		{"a registration below the deepest level", "parent", func() error {
			_, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: "folder:deeper", Parent: deepest})
			return err
		}},
		{"a move below the deepest level", "parent", func() error {
			_, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: "folder:other", Parent: deepest})
			return err
		}},
		{"a policy registering below the deepest level", fmt.Sprintf("policy.resources[%d].parent", len(policy.Resources)-1), func() error {
			_, err := f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{Policy: policy})
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := f.snapshotState()
			st := wantCode(t, c.call(), codes.ResourceExhausted)
			if want := fmt.Sprintf("%s %q", c.field, deepest); !strings.Contains(st.Message(), want) || !strings.Contains(st.Message(), "at most 32 deep") {
				t.Errorf("message %q does not name %s and the limit", st.Message(), want)
			}
			wantDetails(t, st, refusal{reason: "MAX_DEPTH", field: c.field, value: deepest, meta: map[string]string{"limit": "32"}})
			for _, d := range st.Details() {
				if q, ok := d.(*errdetails.QuotaFailure); ok && q.GetViolations()[0].GetQuotaValue() != authz.MaxDepth {
					t.Errorf("QuotaFailure violation %v, want quota_value %d", q.GetViolations()[0], authz.MaxDepth)
				}
			}
			if diff := before.diff(f.snapshotState()); len(diff) > 0 {
				t.Errorf("a refused call wrote something: %s", strings.Join(diff, "; "))
			}
		})
	}
}

// LookupSubjects refuses a malformed subject_kind as a subject kind, not as
// a resource type.
func TestAMalformedSubjectKindIsRefusedAsOne(t *testing.T) {
	f := newServer(t)
	errorWorld(f)
	_, err := f.authz.LookupSubjects(f.ctx(), &usherv1.LookupSubjectsRequest{Resource: stream42, Permission: "join-call", SubjectKind: "Bad"})
	st := wantCode(t, err, codes.InvalidArgument)
	if msg := st.Message(); !strings.Contains(msg, `subject_kind "Bad": subject kind must match`) {
		t.Errorf("message %q; want it to refuse subject_kind \"Bad\" as a subject kind", msg)
	}
	wantDetails(t, st, refusal{reason: "INVALID_FIELD", field: "subject_kind", value: "Bad"})
}
