package server_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
)

// defaultRole returns a role of the shipped default policy, as the policy
// file spells it.
func defaultRole(t *testing.T, name string) *usherv1.Role {
	t.Helper()
	p, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p.GetRoles() {
		if r.GetName() == name {
			return r
		}
	}
	t.Fatalf("the default policy has no role %q", name)
	return nil
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// checkWorld is the world of the Check, CheckBatch and ListPermissions tests.
func checkWorld(f *fixture) uint64 {
	f.world()
	f.grant("user:alice", "owner", acme)
	f.grant("user:bob", "host", stream42)
	f.grant("user:bob", "user", sales)
	f.grant("user:carol", "user", sales)
	// A call type redefines what "user" means for its calls.
	f.putRole(&usherv1.Role{Name: "user", Scope: livestream, Permissions: []string{"join-call", "read-call", "send-audio"}})
	f.grant("user:dave", "call-member", stream42)
	f.block(&usherv1.BlockRequest{Subject: "user:dave", Resource: acme, Reason: "deactivated"})
	f.grant("user:erin", "call-member", meeting7)
	f.block(&usherv1.BlockRequest{Subject: "user:erin", Resource: meeting7, Permissions: []string{"screenshare"}, Reason: "spammed the screen"})
	return f.grantUntil("user:frank", "moderator", stream42, time.Now().Add(time.Hour))
}

var checkCases = []struct {
	name                          string
	subject, permission, resource string
	want                          *usherv1.Decision
}{
	{
		"an owner of the account may join a call below it",
		"user:alice", "join-call", stream42,
		&usherv1.Decision{Allowed: true, Reason: usherv1.Reason_REASON_GRANTED, Role: "owner", Scope: acme},
	},
	{
		"account.manage implies every call capability through the permission tree",
		"user:alice", "end-call", meeting7,
		&usherv1.Decision{Allowed: true, Reason: usherv1.Reason_REASON_GRANTED, Role: "owner", Scope: acme},
	},
	{
		"a grant applies on the resource it is made on",
		"user:alice", "account.manage", acme,
		&usherv1.Decision{Allowed: true, Reason: usherv1.Reason_REASON_GRANTED, Role: "owner", Scope: acme},
	},
	{
		"a grant does not apply above the resource it is made on",
		"user:alice", "account.manage", "root",
		&usherv1.Decision{Reason: usherv1.Reason_REASON_NO_GRANT},
	},
	{
		"the grant nearest the checked resource decides",
		"user:bob", "join-call", stream42,
		&usherv1.Decision{Allowed: true, Reason: usherv1.Reason_REASON_GRANTED, Role: "host", Scope: stream42},
	},
	{
		"a host may end the call it is granted on",
		"user:bob", "end-call", stream42,
		&usherv1.Decision{Allowed: true, Reason: usherv1.Reason_REASON_GRANTED, Role: "host", Scope: stream42},
	},
	{
		"a grant on a call gives nothing on a sibling call",
		"user:bob", "end-call", meeting7,
		&usherv1.Decision{Reason: usherv1.Reason_REASON_NO_GRANT},
	},
	{
		"a role redefined at a call type applies to its calls",
		"user:carol", "screenshare", stream42,
		&usherv1.Decision{Reason: usherv1.Reason_REASON_NO_GRANT},
	},
	{
		"the redefinition's own permissions allow, with the scope of the grant",
		"user:carol", "send-audio", stream42,
		&usherv1.Decision{Allowed: true, Reason: usherv1.Reason_REASON_GRANTED, Role: "user", Scope: sales},
	},
	{
		"under another call type the root definition still applies",
		"user:carol", "screenshare", meeting7,
		&usherv1.Decision{Allowed: true, Reason: usherv1.Reason_REASON_GRANTED, Role: "user", Scope: sales},
	},
	{
		"a block of everything at the account overrides a call grant",
		"user:dave", "join-call", stream42,
		&usherv1.Decision{Reason: usherv1.Reason_REASON_BLOCKED, Scope: acme, BlockReason: "deactivated"},
	},
	{
		"a block of one permission denies it",
		"user:erin", "screenshare", meeting7,
		&usherv1.Decision{Reason: usherv1.Reason_REASON_BLOCKED, Scope: meeting7, BlockReason: "spammed the screen"},
	},
	{
		"a block of one permission leaves the others",
		"user:erin", "join-call", meeting7,
		&usherv1.Decision{Allowed: true, Reason: usherv1.Reason_REASON_GRANTED, Role: "call-member", Scope: meeting7},
	},
	{
		"a grant whose expiry is in the future counts",
		"user:frank", "mute-users", stream42,
		&usherv1.Decision{Allowed: true, Reason: usherv1.Reason_REASON_GRANTED, Role: "moderator", Scope: stream42},
	},
	{
		"a subject without grants is denied",
		"user:nobody", "join-call", stream42,
		&usherv1.Decision{Reason: usherv1.Reason_REASON_NO_GRANT},
	},
	{
		"an unknown resource is a denial, not an error",
		"user:alice", "join-call", "call:livestream:404",
		&usherv1.Decision{Reason: usherv1.Reason_REASON_UNKNOWN_RESOURCE},
	},
}

func TestCheck(t *testing.T) {
	f := newServer(t)
	rev := checkWorld(f)
	for _, c := range checkCases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := f.authz.Check(f.ctx(), &usherv1.CheckRequest{Subject: c.subject, Permission: c.permission, Resource: c.resource})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if got := withoutBlockID(t, resp.GetDecision()); !proto.Equal(got, c.want) {
				t.Errorf("decision = %v, want %v", got, c.want)
			}
			if resp.GetRevision() != rev {
				t.Errorf("revision = %d, want %d, the last write's", resp.GetRevision(), rev)
			}
		})
	}
}

func TestCheckBatch(t *testing.T) {
	f := newServer(t)
	rev := checkWorld(f)
	req := &usherv1.CheckBatchRequest{}
	for _, c := range checkCases {
		req.Checks = append(req.Checks, &usherv1.CheckItem{Subject: c.subject, Permission: c.permission, Resource: c.resource})
	}
	resp, err := f.authz.CheckBatch(f.ctx(), req)
	if err != nil {
		t.Fatalf("CheckBatch: %v", err)
	}
	if resp.GetRevision() != rev {
		t.Errorf("revision = %d, want %d", resp.GetRevision(), rev)
	}
	if len(resp.GetDecisions()) != len(checkCases) {
		t.Fatalf("got %d decisions for %d checks", len(resp.GetDecisions()), len(checkCases))
	}
	for i, c := range checkCases {
		if got := withoutBlockID(t, resp.GetDecisions()[i]); !proto.Equal(got, c.want) {
			t.Errorf("decisions[%d] (%s) = %v, want %v", i, c.name, got, c.want)
		}
	}
	if len(resp.GetErrors()) != 0 {
		t.Errorf("errors = %v, want none", resp.GetErrors())
	}
}

// TestCheckBatchLongNames holds CheckBatch to Check on a check whose names
// are well formed but long: ids of up to 256 characters, each of up to four
// bytes, make a check of more than a thousand bytes.
func TestCheckBatchLongNames(t *testing.T) {
	f := newServer(t)
	f.world()
	subject := "user:" + strings.Repeat("日", 200)
	call := "call:livestream:" + strings.Repeat("会", 200)
	f.putResource(call, livestream)
	rev := f.grant(subject, "host", call)
	want := &usherv1.Decision{Allowed: true, Reason: usherv1.Reason_REASON_GRANTED, Role: "host", Scope: call}
	one, err := f.authz.Check(f.ctx(), &usherv1.CheckRequest{Subject: subject, Permission: "join-call", Resource: call})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if !proto.Equal(one.GetDecision(), want) {
		t.Fatalf("Check = %v, want %v", one.GetDecision(), want)
	}
	resp, err := f.authz.CheckBatch(f.ctx(), &usherv1.CheckBatchRequest{Checks: []*usherv1.CheckItem{
		{Subject: subject, Permission: "join-call", Resource: call},
		{Subject: subject, Permission: "join-call", Resource: "call:livestream:" + strings.Repeat("会", 257)},
	}})
	if err != nil {
		t.Fatalf("CheckBatch: %v", err)
	}
	if resp.GetRevision() != rev {
		t.Errorf("revision = %d, want %d", resp.GetRevision(), rev)
	}
	if got := resp.GetDecisions()[0]; !proto.Equal(got, want) {
		t.Errorf("decisions[0] = %v, want %v, as Check answers", got, want)
	}
	errs := resp.GetErrors()
	if len(errs) != 1 || errs[0].GetIndex() != 1 || errs[0].GetField() != "checks[1].resource" || errs[0].GetCode() != int32(codes.InvalidArgument) {
		t.Errorf("errors = %v, want one, INVALID_ARGUMENT on checks[1].resource", errs)
	}
}

// withoutBlockID checks that a BLOCKED decision names its block, as Check's
// reason names the deciding block, and returns it without the id, which the
// server chose.
func withoutBlockID(t *testing.T, d *usherv1.Decision) *usherv1.Decision {
	t.Helper()
	d = proto.Clone(d).(*usherv1.Decision)
	if d.GetReason() == usherv1.Reason_REASON_BLOCKED && d.GetBlockId() == "" {
		t.Errorf("decision %v: BLOCKED without the deciding block's id", d)
	}
	d.BlockId = ""
	return d
}

func TestListPermissions(t *testing.T) {
	f := newServer(t)
	rev := checkWorld(f)
	p, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	var everything []string
	for _, perm := range p.GetPermissions() {
		if !strings.HasPrefix(perm.GetName(), "usher.") {
			everything = append(everything, perm.GetName())
		}
	}
	cases := []struct {
		name              string
		subject, resource string
		want              []string
		known             bool
	}{
		{"an owner holds every permission below the account", "user:alice", stream42, sorted(everything), true},
		// ListPermissions shows domain permissions only: block-users implies
		// the reserved usher.blocks.write, which is left out.
		{"a host's set is the union of the host and user grants, with what they imply", "user:bob", stream42,
			sorted(defaultRole(t, "host").GetPermissions()), true},
		{"a role redefined at the call type gives its own set", "user:carol", stream42, []string{"join-call", "read-call", "send-audio"}, true},
		{"the root definition applies under another call type", "user:carol", meeting7, sorted(defaultRole(t, "user").GetPermissions()), true},
		{"a block of one permission removes it from the set", "user:erin", meeting7, []string{"create-reaction", "join-call", "read-call", "send-audio", "send-video"}, true},
		{"a subject blocked from everything has an empty set", "user:dave", stream42, nil, true},
		{"a subject without grants has an empty set", "user:nobody", stream42, nil, true},
		{"an unknown resource has an empty set and says so", "user:alice", "call:livestream:404", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := f.authz.ListPermissions(f.ctx(), &usherv1.ListPermissionsRequest{Subject: c.subject, Resource: c.resource})
			if err != nil {
				t.Fatalf("ListPermissions: %v", err)
			}
			if !slices.Equal(resp.GetPermissions(), c.want) {
				t.Errorf("permissions = %v, want %v", resp.GetPermissions(), c.want)
			}
			if resp.GetResourceKnown() != c.known {
				t.Errorf("resource_known = %v, want %v", resp.GetResourceKnown(), c.known)
			}
			if resp.GetRevision() != rev {
				t.Errorf("revision = %d, want %d", resp.GetRevision(), rev)
			}
		})
	}
	t.Run("reserved usher.* permissions appear only when asked for", func(t *testing.T) {
		resp, err := f.authz.ListPermissions(f.ctx(), &usherv1.ListPermissionsRequest{Subject: "user:bob", Resource: stream42, IncludeReserved: true})
		if err != nil {
			t.Fatal(err)
		}
		want := sorted(append(defaultRole(t, "host").GetPermissions(),
			"usher.blocks.write", "usher.blocks.write.screenshare", "usher.blocks.write.send-audio", "usher.blocks.write.send-video",
			"usher.grants.write", "usher.resources.create.call", "usher.resources.delete.call"))
		if !slices.Equal(resp.GetPermissions(), want) {
			t.Errorf("permissions with reserved = %v, want %v", resp.GetPermissions(), want)
		}
	})
}

// TestWritesAnswerTheRevisionTheyCreated walks through every write RPC: each
// write that changes something answers the previous revision plus one, and
// each write that would change nothing answers the current revision.
func TestWritesAnswerTheRevisionTheyCreated(t *testing.T) {
	f := newServer(t)
	ctx := f.ctx()
	rev := f.revision()
	if rev == 0 {
		t.Fatal("the default policy was not applied: revision 0")
	}
	expiry := timestamp(time.Now().Add(time.Hour))
	producer := &usherv1.Role{Name: "producer", Scope: acme, Permissions: []string{"start-broadcast-call", "join-backstage"}}
	defaultPolicy, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		changes bool
		write   func() (uint64, error)
	}{
		{"registering a resource", true, func() (uint64, error) {
			r, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: acme})
			return r.GetRevision(), err
		}},
		{"registering it again under the same parent", false, func() (uint64, error) {
			r, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: acme, Parent: "root"})
			return r.GetRevision(), err
		}},
		{"registering a child", true, func() (uint64, error) {
			r, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: sales, Parent: acme})
			return r.GetRevision(), err
		}},
		{"defining a role", true, func() (uint64, error) {
			r, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: producer})
			return r.GetRevision(), err
		}},
		{"defining it again with its permissions in another order", false, func() (uint64, error) {
			same := proto.Clone(producer).(*usherv1.Role)
			slices.Reverse(same.Permissions)
			r, err := f.admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: same})
			return r.GetRevision(), err
		}},
		{"granting", true, func() (uint64, error) {
			r, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:alice", Role: "producer", Resource: sales})
			return r.GetRevision(), err
		}},
		{"granting the same triple again", false, func() (uint64, error) {
			r, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:alice", Role: "producer", Resource: sales})
			return r.GetRevision(), err
		}},
		{"granting the same triple with an expiry", true, func() (uint64, error) {
			r, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:alice", Role: "producer", Resource: sales, ExpireTime: expiry})
			return r.GetRevision(), err
		}},
		{"granting it again with the same expiry", false, func() (uint64, error) {
			r, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:alice", Role: "producer", Resource: sales, ExpireTime: expiry})
			return r.GetRevision(), err
		}},
		{"blocking", true, func() (uint64, error) {
			r, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:bob", Resource: sales, Reason: "spam", BlockId: "spam-1"})
			if err == nil && r.GetBlockId() != "spam-1" {
				t.Errorf("block_id = %q, want the one asked for", r.GetBlockId())
			}
			return r.GetRevision(), err
		}},
		{"blocking again the same way, with the block's id", false, func() (uint64, error) {
			r, err := f.admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:bob", Resource: sales, Reason: "spam", BlockId: "spam-1"})
			return r.GetRevision(), err
		}},
		{"applying the policy already in force", false, func() (uint64, error) {
			r, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: defaultPolicy})
			if err == nil && r.GetChanged() {
				t.Error("changed = true for the policy already in force")
			}
			return r.GetRevision(), err
		}},
		{"unblocking", true, func() (uint64, error) {
			r, err := f.admin.Unblock(ctx, &usherv1.UnblockRequest{Subject: "user:bob", Resource: sales})
			return r.GetRevision(), err
		}},
		{"revoking", true, func() (uint64, error) {
			r, err := f.admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: "user:alice", Role: "producer", Resource: sales})
			return r.GetRevision(), err
		}},
		{"deleting the role", true, func() (uint64, error) {
			r, err := f.admin.DeleteRole(ctx, &usherv1.DeleteRoleRequest{Name: "producer", Scope: acme})
			return r.GetRevision(), err
		}},
		{"deleting the child", true, func() (uint64, error) {
			r, err := f.admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: sales})
			return r.GetRevision(), err
		}},
	}
	for _, s := range steps {
		got, err := s.write()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		want := rev
		if s.changes {
			want = rev + 1
		}
		if got != want {
			t.Errorf("%s answered revision %d, want %d", s.name, got, want)
		}
		rev = want
		if now := f.revision(); now != rev {
			t.Errorf("after %s the server reads at revision %d, want %d", s.name, now, rev)
		}
	}
}

func TestGrantAndRevoke(t *testing.T) {
	f := newServer(t)
	f.world()
	rev := f.grant("user:alice", "host", stream42)
	d, checkRev := f.check("user:alice", "end-call", stream42)
	if !d.GetAllowed() || d.GetRole() != "host" || d.GetScope() != stream42 {
		t.Errorf("after Grant: %v, want allowed by host on %s", d, stream42)
	}
	if checkRev != rev {
		t.Errorf("Check revision = %d, want the grant's %d", checkRev, rev)
	}
	resp, err := f.admin.Revoke(f.ctx(), &usherv1.RevokeRequest{Subject: "user:alice", Role: "host", Resource: stream42})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if resp.GetRevision() != rev+1 {
		t.Errorf("Revoke revision = %d, want %d", resp.GetRevision(), rev+1)
	}
	if d, _ := f.check("user:alice", "end-call", stream42); d.GetAllowed() || d.GetReason() != usherv1.Reason_REASON_NO_GRANT {
		t.Errorf("after Revoke: %v, want NO_GRANT", d)
	}
	if g := f.listGrants("user:alice", ""); len(g) != 0 {
		t.Errorf("after Revoke ListGrants = %v, want none", g)
	}
}

func TestGrantExpiry(t *testing.T) {
	t.Parallel() // it sleeps until an expiry
	f := newServer(t)
	f.world()

	t.Run("an expiry in the future is kept to the nanosecond and the grant counts", func(t *testing.T) {
		exp := time.Now().Add(time.Hour).Truncate(time.Second).Add(123456789)
		f.grantUntil("user:alice", "host", stream42, exp)
		got := f.listGrants("user:alice", stream42)
		want := []*usherv1.Grant{{Subject: "user:alice", Role: "host", Resource: stream42, ExpireTime: timestamp(exp)}}
		if !equalGrants(got, want) {
			t.Errorf("ListGrants = %v, want %v", got, want)
		}
		if d, _ := f.check("user:alice", "end-call", stream42); !d.GetAllowed() {
			t.Errorf("Check = %v, want allowed", d)
		}
	})

	t.Run("granting again moves the expiry, and without one makes it permanent", func(t *testing.T) {
		later := time.Now().Add(2 * time.Hour).UTC()
		rev := f.grantUntil("user:alice", "host", stream42, later)
		if got := f.listGrants("user:alice", stream42); len(got) != 1 || !got[0].GetExpireTime().AsTime().Equal(later) {
			t.Errorf("ListGrants = %v, want one grant expiring at %s", got, later)
		}
		if next := f.grant("user:alice", "host", stream42); next != rev+1 {
			t.Errorf("making the grant permanent answered revision %d, want %d", next, rev+1)
		}
		if got := f.listGrants("user:alice", stream42); len(got) != 1 || got[0].GetExpireTime() != nil {
			t.Errorf("ListGrants = %v, want one grant without expire_time", got)
		}
	})

	t.Run("an expiry in the past is refused and writes nothing", func(t *testing.T) {
		before := f.revision()
		_, err := f.admin.Grant(f.ctx(), &usherv1.GrantRequest{
			Subject: "user:bob", Role: "host", Resource: stream42, ExpireTime: timestamp(time.Now().Add(-time.Minute)),
		})
		st := wantCode(t, err, codes.InvalidArgument)
		if !strings.Contains(st.Message(), "expire_time") {
			t.Errorf("message %q does not name expire_time", st.Message())
		}
		if after := f.revision(); after != before {
			t.Errorf("revision moved from %d to %d", before, after)
		}
		if got := f.listGrants("user:bob", ""); len(got) != 0 {
			t.Errorf("ListGrants = %v, want none", got)
		}
	})

	t.Run("a grant counts as absent once its expiry has passed", func(t *testing.T) {
		exp := time.Now().Add(2 * time.Second)
		f.grantUntil("user:carol", "user", stream42, exp)
		if d, _ := f.check("user:carol", "join-call", stream42); !d.GetAllowed() {
			t.Fatalf("before expiry: %v, want allowed", d)
		}
		time.Sleep(time.Until(exp) + 20*time.Millisecond)
		if d, _ := f.check("user:carol", "join-call", stream42); d.GetAllowed() || d.GetReason() != usherv1.Reason_REASON_NO_GRANT {
			t.Errorf("after expiry: %v, want NO_GRANT", d)
		}
		if got := f.listGrants("user:carol", ""); len(got) != 0 {
			t.Errorf("ListGrants lists an expired grant: %v", got)
		}
		if got := f.listPermissions("user:carol", stream42); len(got) != 0 {
			t.Errorf("ListPermissions = %v after expiry, want none", got)
		}
	})

	t.Run("an expiry past 2262 is refused as invalid, naming expire_time", func(t *testing.T) {
		far := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
		before := f.snapshotState("user:dan", "user:vi")
		_, err := f.admin.Grant(f.ctx(), &usherv1.GrantRequest{Subject: "user:dan", Role: "host", Resource: stream42, ExpireTime: timestamp(far)})
		st := wantCode(t, err, codes.InvalidArgument)
		if !strings.Contains(st.Message(), `expire_time "9999-12-31T23:59:59Z"`) {
			t.Errorf("message %q does not name expire_time and its value", st.Message())
		}
		if diff := before.diff(f.snapshotState("user:dan", "user:vi")); len(diff) > 0 {
			t.Errorf("the refused write changed: %v", diff)
		}
	})
}

func TestListGrantsPagination(t *testing.T) {
	f := newServer(t)
	f.world()
	for _, s := range []string{"user:p0", "user:p1", "user:p2", "user:p3", "user:p4", "user:p5", "user:p6"} {
		f.grant(s, "call-member", stream42)
	}
	f.grant("user:p3", "host", stream42)
	f.grant("user:p3", "call-member", meeting7)

	t.Run("pages of a resource's grants are ordered by role then subject", func(t *testing.T) {
		var got []string
		token := ""
		var sizes []int
		for page := 0; ; page++ {
			resp, err := f.admin.ListGrants(f.ctx(), &usherv1.ListGrantsRequest{Resource: stream42, PageSize: 3, PageToken: token})
			if err != nil {
				t.Fatalf("page %d: %v", page, err)
			}
			sizes = append(sizes, len(resp.GetGrants()))
			for _, g := range resp.GetGrants() {
				if g.GetResource() != stream42 {
					t.Errorf("page %d lists a grant on %s", page, g.GetResource())
				}
				got = append(got, g.GetSubject()+" "+g.GetRole())
			}
			if token = resp.GetNextPageToken(); token == "" {
				break
			}
			if page > 10 {
				t.Fatal("pagination does not end")
			}
		}
		wantPairs := []string{
			"user:p0 call-member", "user:p1 call-member", "user:p2 call-member",
			"user:p3 call-member", "user:p4 call-member", "user:p5 call-member",
			"user:p6 call-member", "user:p3 host",
		}
		if !slices.Equal(got, wantPairs) {
			t.Errorf("grants = %v, want %v", got, wantPairs)
		}
		if !slices.Equal(sizes, []int{3, 3, 2}) {
			t.Errorf("page sizes = %v, want [3 3 2]", sizes)
		}
	})

	t.Run("a grant added between pages neither repeats nor skips one", func(t *testing.T) {
		first, err := f.admin.ListGrants(f.ctx(), &usherv1.ListGrantsRequest{Resource: stream42, PageSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		rev := f.grant("user:p00", "call-member", stream42) // sorts between p0 and p1
		second, err := f.admin.ListGrants(f.ctx(), &usherv1.ListGrantsRequest{
			Resource: stream42, PageSize: 2, PageToken: first.GetNextPageToken(), MinRevision: rev,
		})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, g := range append(first.GetGrants(), second.GetGrants()...) {
			got = append(got, g.GetSubject())
		}
		// p00 sorts behind the cursor: the second page goes on after p1.
		if want := []string{"user:p0", "user:p1", "user:p2", "user:p3"}; !slices.Equal(got, want) {
			t.Errorf("two pages = %v, want %v", got, want)
		}
		if second.GetRevision() != rev {
			t.Errorf("second page revision = %d, want %d", second.GetRevision(), rev)
		}
	})

	t.Run("a subject's grants are listed by resource, in an order that stays put", func(t *testing.T) {
		got := f.listGrants("user:p3", "")
		if again := f.listGrants("user:p3", ""); !equalGrants(got, again) {
			t.Errorf("ListGrants(user:p3) changed order between calls: %v, then %v", got, again)
		}
		slices.SortStableFunc(got, func(a, b *usherv1.Grant) int { return strings.Compare(a.GetResource(), b.GetResource()) })
		want := []*usherv1.Grant{
			{Subject: "user:p3", Role: "call-member", Resource: stream42},
			{Subject: "user:p3", Role: "host", Resource: stream42},
			{Subject: "user:p3", Role: "call-member", Resource: meeting7},
		}
		if !equalGrants(got, want) {
			t.Errorf("ListGrants(user:p3) = %v, want %v", got, want)
		}
	})

	t.Run("subject and resource together narrow to both", func(t *testing.T) {
		got := f.listGrants("user:p3", meeting7)
		want := []*usherv1.Grant{{Subject: "user:p3", Role: "call-member", Resource: meeting7}}
		if !equalGrants(got, want) {
			t.Errorf("ListGrants(user:p3 on %s) = %v, want %v", meeting7, got, want)
		}
	})

	t.Run("a resource's listing leaves out grants inherited from its ancestors", func(t *testing.T) {
		f.grant("user:boss", "owner", acme)
		for _, g := range f.listGrants("", stream42) {
			if g.GetSubject() == "user:boss" {
				t.Errorf("ListGrants on %s lists the grant on %s", stream42, acme)
			}
		}
	})
}

func TestListRoles(t *testing.T) {
	f := newServer(t)
	f.world()
	f.putRole(&usherv1.Role{Name: "user", Scope: livestream, Permissions: []string{"send-audio", "join-call"}})
	f.putRole(&usherv1.Role{Name: "producer", Scope: acme, Permissions: []string{"join-backstage"}, MaxHolders: 2, BindableOn: []string{"call"}})
	rev := f.putRole(&usherv1.Role{Name: "host", Scope: stream42, Permissions: []string{"*"}, Description: "this call's host may do anything"})

	scopes := func(resource string) map[string]string {
		t.Helper()
		resp, err := f.admin.ListRoles(f.ctx(), &usherv1.ListRolesRequest{Resource: resource})
		if err != nil {
			t.Fatalf("ListRoles(%s): %v", resource, err)
		}
		if resp.GetRevision() != rev {
			t.Errorf("ListRoles(%s) revision = %d, want %d", resource, resp.GetRevision(), rev)
		}
		out := map[string]string{}
		var names []string
		for _, r := range resp.GetRoles() {
			out[r.GetName()] = r.GetScope()
			names = append(names, r.GetName())
		}
		if !slices.IsSorted(names) {
			t.Errorf("ListRoles(%s) is not ordered by name: %v", resource, names)
		}
		return out
	}

	cases := []struct {
		name     string
		resource string
		want     map[string]string
	}{
		{"at root only the built-in roles are visible", "root",
			map[string]string{"admin": "root", "call-member": "root", "guest": "root", "host": "root", "moderator": "root", "owner": "root", "user": "root"}},
		{"an account sees its custom roles", sales,
			map[string]string{"admin": "root", "call-member": "root", "guest": "root", "host": "root", "moderator": "root", "owner": "root", "producer": acme, "user": "root"}},
		{"a call sees the nearest definition of each role", stream42,
			map[string]string{"admin": "root", "call-member": "root", "guest": "root", "host": stream42, "moderator": "root", "owner": "root", "producer": acme, "user": livestream}},
		{"a sibling call type's redefinition is not visible", meeting7,
			map[string]string{"admin": "root", "call-member": "root", "guest": "root", "host": "root", "moderator": "root", "owner": "root", "producer": acme, "user": "root"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := scopes(c.resource)
			if len(got) != len(c.want) {
				t.Errorf("roles = %v, want %v", got, c.want)
			}
			for name, scope := range c.want {
				if got[name] != scope {
					t.Errorf("role %q defined at %q, want %q", name, got[name], scope)
				}
			}
		})
	}

	t.Run("the listed definition is the one that applies, every field", func(t *testing.T) {
		resp, err := f.admin.ListRoles(f.ctx(), &usherv1.ListRolesRequest{Resource: stream42})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]*usherv1.Role{
			"user":     {Name: "user", Scope: livestream, Permissions: []string{"join-call", "send-audio"}},
			"producer": {Name: "producer", Scope: acme, Permissions: []string{"join-backstage"}, MaxHolders: 2, BindableOn: []string{"call"}},
			"host":     {Name: "host", Scope: stream42, Permissions: []string{"*"}, Description: "this call's host may do anything"},
		}
		for _, r := range resp.GetRoles() {
			if w := want[r.GetName()]; w != nil && !proto.Equal(r, w) {
				t.Errorf("role %s = %v, want %v", r.GetName(), r, w)
			}
		}
	})
}

func TestPutRoleAndDeleteRole(t *testing.T) {
	f := newServer(t)
	f.world()
	f.putRole(&usherv1.Role{Name: "producer", Scope: acme, Permissions: []string{"join-backstage"}})
	f.grant("user:pat", "producer", stream42)
	if d, _ := f.check("user:pat", "join-backstage", stream42); !d.GetAllowed() || d.GetRole() != "producer" {
		t.Errorf("with the custom role: %v, want allowed by producer", d)
	}
	if d, _ := f.check("user:pat", "start-broadcast-call", stream42); d.GetAllowed() {
		t.Errorf("before the redefinition: %v, want denied", d)
	}

	rev := f.putRole(&usherv1.Role{Name: "producer", Scope: acme, Permissions: []string{"join-backstage", "start-broadcast-call"}})
	d, checkRev := f.check("user:pat", "start-broadcast-call", stream42)
	if !d.GetAllowed() || checkRev != rev {
		t.Errorf("after redefining the role: %v at %d, want allowed at %d", d, checkRev, rev)
	}

	f.putRole(&usherv1.Role{Name: "producer", Scope: livestream, Permissions: []string{"read-call"}})
	if d, _ := f.check("user:pat", "join-backstage", stream42); d.GetAllowed() {
		t.Errorf("with a nearer definition without join-backstage: %v, want denied", d)
	}
	resp, err := f.admin.DeleteRole(f.ctx(), &usherv1.DeleteRoleRequest{Name: "producer", Scope: livestream})
	if err != nil {
		t.Fatalf("DeleteRole of the nearer definition, with the account's still covering the grant: %v", err)
	}
	if d, _ := f.check("user:pat", "join-backstage", stream42); !d.GetAllowed() {
		t.Errorf("after deleting the nearer definition: %v, want allowed by the account's", d)
	}

	if _, err := f.admin.Revoke(f.ctx(), &usherv1.RevokeRequest{Subject: "user:pat", Role: "producer", Resource: stream42}); err != nil {
		t.Fatal(err)
	}
	del, err := f.admin.DeleteRole(f.ctx(), &usherv1.DeleteRoleRequest{Name: "producer", Scope: acme})
	if err != nil {
		t.Fatalf("DeleteRole once no grant depends on it: %v", err)
	}
	if del.GetRevision() != resp.GetRevision()+2 {
		t.Errorf("DeleteRole revision = %d, want %d", del.GetRevision(), resp.GetRevision()+2)
	}
	roles, err := f.admin.ListRoles(f.ctx(), &usherv1.ListRolesRequest{Resource: stream42})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roles.GetRoles() {
		if r.GetName() == "producer" {
			t.Errorf("ListRoles still shows %v", r)
		}
	}
}

func TestResources(t *testing.T) {
	f := newServer(t)
	f.world()
	get := func(name string) *usherv1.GetResourceResponse {
		t.Helper()
		resp, err := f.admin.GetResource(f.ctx(), &usherv1.GetResourceRequest{Name: name})
		if err != nil {
			t.Fatalf("GetResource(%s): %v", name, err)
		}
		return resp
	}

	t.Run("GetResource answers the parent, the ancestors up to root and the number of children", func(t *testing.T) {
		cases := []struct {
			name      string
			parent    string
			ancestors []string
			children  uint32
		}{
			{stream42, livestream, []string{livestream, sales, acme, "root"}, 0},
			{sales, acme, []string{acme, "root"}, 2},
			{acme, "root", []string{"root"}, 1},
			{"root", "", nil, 1},
		}
		for _, c := range cases {
			got := get(c.name)
			if got.GetResource().GetName() != c.name || got.GetResource().GetParent() != c.parent {
				t.Errorf("GetResource(%s).resource = %v, want parent %q", c.name, got.GetResource(), c.parent)
			}
			if !slices.Equal(got.GetAncestors(), c.ancestors) {
				t.Errorf("GetResource(%s).ancestors = %v, want %v", c.name, got.GetAncestors(), c.ancestors)
			}
			if got.GetChildren() != c.children {
				t.Errorf("GetResource(%s).children = %d, want %d", c.name, got.GetChildren(), c.children)
			}
		}
	})

	t.Run("a moved resource inherits from its new ancestors only", func(t *testing.T) {
		f.grant("user:lee", "host", livestream)
		f.putRole(&usherv1.Role{Name: "user", Scope: livestream, Permissions: []string{"read-call"}})
		f.grant("user:kim", "user", sales)
		if d, _ := f.check("user:lee", "end-call", stream42); !d.GetAllowed() {
			t.Fatalf("before the move: %v, want allowed", d)
		}
		before := f.revision()
		rev := f.putResource(stream42, meeting)
		if rev != before+1 {
			t.Errorf("the move answered revision %d, want %d", rev, before+1)
		}
		got := get(stream42)
		if got.GetResource().GetParent() != meeting || !slices.Equal(got.GetAncestors(), []string{meeting, sales, acme, "root"}) {
			t.Errorf("after the move: %v", got)
		}
		if n := get(livestream).GetChildren(); n != 0 {
			t.Errorf("the old parent has %d children, want 0", n)
		}
		if n := get(meeting).GetChildren(); n != 2 {
			t.Errorf("the new parent has %d children, want 2", n)
		}
		if d, _ := f.check("user:lee", "end-call", stream42); d.GetAllowed() {
			t.Errorf("a grant on the old parent still applies: %v", d)
		}
		if d, _ := f.check("user:kim", "screenshare", stream42); !d.GetAllowed() {
			t.Errorf("the old call type's redefinition of user still applies: %v", d)
		}
	})

	t.Run("DeleteResource removes the resource with its grants, blocks and roles", func(t *testing.T) {
		f.grant("user:mo", "host", meeting7)
		f.block(&usherv1.BlockRequest{Subject: "user:mo", Resource: meeting7})
		f.putRole(&usherv1.Role{Name: "guest", Scope: meeting7, Permissions: []string{"join-call"}})
		before := f.revision()
		resp, err := f.admin.DeleteResource(f.ctx(), &usherv1.DeleteResourceRequest{Name: meeting7})
		if err != nil {
			t.Fatalf("DeleteResource: %v", err)
		}
		if resp.GetRevision() != before+1 {
			t.Errorf("DeleteResource answered revision %d, want %d", resp.GetRevision(), before+1)
		}
		_, err = f.admin.GetResource(f.ctx(), &usherv1.GetResourceRequest{Name: meeting7})
		wantCode(t, err, codes.NotFound)
		if d, _ := f.check("user:mo", "join-call", meeting7); d.GetReason() != usherv1.Reason_REASON_UNKNOWN_RESOURCE {
			t.Errorf("Check on the deleted resource: %v, want UNKNOWN_RESOURCE", d)
		}
		if g := f.listGrants("user:mo", ""); len(g) != 0 {
			t.Errorf("grants on the deleted resource remain: %v", g)
		}
		exported, err := f.admin.ExportPolicy(f.ctx(), &usherv1.ExportPolicyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range exported.GetPolicy().GetRoles() {
			if r.GetScope() == meeting7 {
				t.Errorf("a role defined on the deleted resource remains: %v", r)
			}
		}
		if n := get(meeting).GetChildren(); n != 1 {
			t.Errorf("the parent has %d children, want 1", n)
		}

		f.putResource(meeting7, meeting)
		if g := f.listGrants("", meeting7); len(g) != 0 {
			t.Errorf("re-registering the name brings back grants: %v", g)
		}
		f.grant("user:mo", "host", meeting7)
		if d, _ := f.check("user:mo", "join-call", meeting7); !d.GetAllowed() {
			t.Errorf("re-registering the name brings back its block: %v", d)
		}
	})
}

func TestBlockAndUnblock(t *testing.T) {
	t.Parallel() // it sleeps until an expiry
	f := newServer(t)
	f.world()
	f.grant("user:vi", "host", stream42)

	rev := f.block(&usherv1.BlockRequest{Subject: "user:vi", Resource: livestream, Permissions: []string{"send-video"}, Reason: "camera abuse"})
	d, checkRev := f.check("user:vi", "send-video", stream42)
	want := &usherv1.Decision{Reason: usherv1.Reason_REASON_BLOCKED, Scope: livestream, BlockReason: "camera abuse"}
	if d = withoutBlockID(t, d); !proto.Equal(d, want) || checkRev != rev {
		t.Errorf("blocked: %v at %d, want %v at %d", d, checkRev, want, rev)
	}
	if d, _ := f.check("user:vi", "send-audio", stream42); !d.GetAllowed() {
		t.Errorf("a permission the block does not cover: %v, want allowed", d)
	}
	if slices.Contains(f.listPermissions("user:vi", stream42), "send-video") {
		t.Error("ListPermissions still lists the blocked permission")
	}

	t.Run("blocking a permission blocks what it implies", func(t *testing.T) {
		f.block(&usherv1.BlockRequest{Subject: "user:vi", Resource: livestream, Permissions: []string{"call.manage"}, Reason: "suspended"})
		d, _ := f.check("user:vi", "send-audio", stream42)
		want := &usherv1.Decision{Reason: usherv1.Reason_REASON_BLOCKED, Scope: livestream, BlockReason: "suspended"}
		if d = withoutBlockID(t, d); !proto.Equal(d, want) {
			t.Errorf("a second block adds to the first: %v, want %v", d, want)
		}
		if d, _ := f.check("user:vi", "send-video", stream42); d.GetReason() != usherv1.Reason_REASON_BLOCKED {
			t.Errorf("the first block no longer applies: %v", d)
		}
		if got := f.listPermissions("user:vi", stream42); len(got) != 0 {
			t.Errorf("ListPermissions = %v, want none", got)
		}
	})

	t.Run("Unblock gives the grants back", func(t *testing.T) {
		before := f.revision()
		resp, err := f.admin.Unblock(f.ctx(), &usherv1.UnblockRequest{Subject: "user:vi", Resource: livestream})
		if err != nil {
			t.Fatalf("Unblock: %v", err)
		}
		if resp.GetRevision() != before+1 {
			t.Errorf("Unblock answered revision %d, want %d", resp.GetRevision(), before+1)
		}
		if d, _ := f.check("user:vi", "send-video", stream42); !d.GetAllowed() {
			t.Errorf("after Unblock: %v, want allowed", d)
		}
	})

	t.Run("a block lapses at its expiry", func(t *testing.T) {
		exp := time.Now().Add(2 * time.Second)
		f.block(&usherv1.BlockRequest{Subject: "user:vi", Resource: acme, ExpireTime: timestamp(exp), Reason: "cool-down"})
		if d, _ := f.check("user:vi", "join-call", stream42); d.GetReason() != usherv1.Reason_REASON_BLOCKED {
			t.Fatalf("before expiry: %v, want BLOCKED", d)
		}
		time.Sleep(time.Until(exp) + 20*time.Millisecond)
		if d, _ := f.check("user:vi", "join-call", stream42); !d.GetAllowed() {
			t.Errorf("after expiry: %v, want allowed", d)
		}
	})

	t.Run("a block with an expiry in the past is refused", func(t *testing.T) {
		_, err := f.admin.Block(f.ctx(), &usherv1.BlockRequest{Subject: "user:vi", Resource: acme, ExpireTime: timestamp(time.Now().Add(-time.Second))})
		st := wantCode(t, err, codes.InvalidArgument)
		if !strings.Contains(st.Message(), "expire_time") {
			t.Errorf("message %q does not name expire_time", st.Message())
		}
	})

	t.Run("a block until the year 9999 is refused, not silently expired", func(t *testing.T) {
		far := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
		before := f.snapshotState("user:dan", "user:vi")
		_, err := f.admin.Block(f.ctx(), &usherv1.BlockRequest{Subject: "user:vi", Resource: acme, ExpireTime: timestamp(far), Reason: "banned"})
		st := wantCode(t, err, codes.InvalidArgument)
		if !strings.Contains(st.Message(), "expire_time") {
			t.Errorf("message %q does not name expire_time", st.Message())
		}
		if diff := before.diff(f.snapshotState("user:dan", "user:vi")); len(diff) > 0 {
			t.Errorf("the refused write changed: %v", diff)
		}
	})
}

func TestApplyPolicyAndExportPolicy(t *testing.T) {
	f := newServer(t)
	ctx := f.ctx()
	exported, err := f.admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{})
	if err != nil {
		t.Fatalf("ExportPolicy: %v", err)
	}
	def, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("the exported default policy has the shipped catalog and roles", func(t *testing.T) {
		got := exported.GetPolicy()
		if len(got.GetPermissions()) != len(def.GetPermissions()) || len(got.GetRoles()) != len(def.GetRoles()) {
			t.Fatalf("exported %d permissions and %d roles, want %d and %d",
				len(got.GetPermissions()), len(got.GetRoles()), len(def.GetPermissions()), len(def.GetRoles()))
		}
		for _, r := range got.GetRoles() {
			if r.GetScope() != "root" || !slices.Equal(r.GetPermissions(), sorted(defaultRole(t, r.GetName()).GetPermissions())) {
				t.Errorf("exported role %v differs from the shipped one", r)
			}
		}
		for _, p := range got.GetPermissions() {
			if p.GetName() == "call.manage" && !slices.Equal(p.GetParents(), []string{"calltype.manage", "event.manage"}) {
				t.Errorf("call.manage exported with parents %v", p.GetParents())
			}
		}
	})

	t.Run("applying the exported policy changes nothing", func(t *testing.T) {
		resp, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: exported.GetPolicy()})
		if err != nil {
			t.Fatalf("ApplyPolicy: %v", err)
		}
		if resp.GetChanged() || resp.GetRevision() != exported.GetRevision() {
			t.Errorf("changed = %v at revision %d, want false at %d", resp.GetChanged(), resp.GetRevision(), exported.GetRevision())
		}
	})

	grown := proto.Clone(exported.GetPolicy()).(*usherv1.Policy)
	grown.Permissions = append(grown.Permissions, &usherv1.Permission{Name: "download-recording", Parents: []string{"call.manage"}, Description: "Fetch a recording."})
	grown.Resources = append(grown.Resources,
		&usherv1.Resource{Name: "account:globex"},
		&usherv1.Resource{Name: "workspace:globex-hq", Parent: "account:globex"})
	grown.Roles = append(grown.Roles, &usherv1.Role{Name: "archivist", Scope: "account:globex", Permissions: []string{"download-recording", "read-call"}})
	var grownRev uint64

	t.Run("a policy with a new permission, resources and a role is applied in one write", func(t *testing.T) {
		resp, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: grown})
		if err != nil {
			t.Fatalf("ApplyPolicy: %v", err)
		}
		grownRev = resp.GetRevision()
		if !resp.GetChanged() || grownRev != exported.GetRevision()+1 {
			t.Errorf("changed = %v at revision %d, want true at %d", resp.GetChanged(), grownRev, exported.GetRevision()+1)
		}
		got, err := f.admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{MinRevision: grownRev})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetRevision() != grownRev {
			t.Errorf("ExportPolicy revision = %d, want %d", got.GetRevision(), grownRev)
		}
		var names []string
		for _, p := range got.GetPolicy().GetPermissions() {
			names = append(names, p.GetName())
		}
		if !slices.Contains(names, "download-recording") || !slices.IsSorted(names) {
			t.Errorf("exported catalog %v, want download-recording among sorted names", names)
		}
		var resources []string
		for _, r := range got.GetPolicy().GetResources() {
			resources = append(resources, r.GetName()+"<"+r.GetParent())
		}
		if want := []string{"account:globex<root", "workspace:globex-hq<account:globex"}; !slices.Equal(resources, want) {
			t.Errorf("exported resources %v, want %v", resources, want)
		}
		f.grant("user:ann", "archivist", "workspace:globex-hq")
		if d, _ := f.check("user:ann", "download-recording", "workspace:globex-hq"); !d.GetAllowed() || d.GetRole() != "archivist" {
			t.Errorf("the new role: %v, want allowed by archivist", d)
		}
		f.grant("user:ada", "admin", "account:globex")
		if d, _ := f.check("user:ada", "download-recording", "workspace:globex-hq"); !d.GetAllowed() {
			t.Errorf("call.manage must imply the new child permission: %v", d)
		}
	})

	t.Run("applying it again changes nothing", func(t *testing.T) {
		before := f.revision()
		resp, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: grown})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetChanged() || resp.GetRevision() != before {
			t.Errorf("changed = %v at %d, want false at %d", resp.GetChanged(), resp.GetRevision(), before)
		}
	})

	t.Run("a policy without a permission removes it from the catalog", func(t *testing.T) {
		shrunk := proto.Clone(exported.GetPolicy()).(*usherv1.Policy)
		shrunk.Permissions = slices.DeleteFunc(shrunk.Permissions, func(p *usherv1.Permission) bool { return p.GetName() == "pin-for-everyone" })
		for _, r := range shrunk.Roles {
			r.Permissions = slices.DeleteFunc(r.Permissions, func(p string) bool { return p == "pin-for-everyone" })
		}
		// The archivist role stays stored, so its permission must stay declared.
		shrunk.Permissions = append(shrunk.Permissions, &usherv1.Permission{Name: "download-recording", Parents: []string{"call.manage"}, Description: "Fetch a recording."})
		if _, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: shrunk}); err != nil {
			t.Fatalf("ApplyPolicy: %v", err)
		}
		_, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:ada", Permission: "pin-for-everyone", Resource: "account:globex"})
		wantCode(t, err, codes.InvalidArgument)
		if d, _ := f.check("user:ada", "end-call", "account:globex"); !d.GetAllowed() {
			t.Errorf("the rest of the catalog still works: %v", d)
		}
	})
}

// TestMinRevision proves read-your-writes on every read RPC: a read that asks
// for the revision a write answered sees that write; one that asks for a
// revision far ahead fails with FAILED_PRECONDITION within its deadline.
func TestMinRevision(t *testing.T) {
	t.Parallel() // it waits for deadlines
	f := newServer(t)
	f.world()
	reads := []struct {
		name string
		// read returns the revision answered and whether it saw user:rw's
		// grant on stream42.
		read func(ctx context.Context, min uint64) (uint64, bool, error)
	}{
		{"Check", func(ctx context.Context, min uint64) (uint64, bool, error) {
			r, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:rw", Permission: "join-call", Resource: stream42, MinRevision: min})
			return r.GetRevision(), r.GetDecision().GetAllowed(), err
		}},
		{"CheckBatch", func(ctx context.Context, min uint64) (uint64, bool, error) {
			r, err := f.authz.CheckBatch(ctx, &usherv1.CheckBatchRequest{MinRevision: min,
				Checks: []*usherv1.CheckItem{{Subject: "user:rw", Permission: "join-call", Resource: stream42}}})
			return r.GetRevision(), len(r.GetDecisions()) == 1 && r.GetDecisions()[0].GetAllowed(), err
		}},
		{"ListPermissions", func(ctx context.Context, min uint64) (uint64, bool, error) {
			r, err := f.authz.ListPermissions(ctx, &usherv1.ListPermissionsRequest{Subject: "user:rw", Resource: stream42, MinRevision: min})
			return r.GetRevision(), slices.Contains(r.GetPermissions(), "join-call"), err
		}},
		{"ListGrants", func(ctx context.Context, min uint64) (uint64, bool, error) {
			r, err := f.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Subject: "user:rw", MinRevision: min})
			return r.GetRevision(), len(r.GetGrants()) > 0, err
		}},
		{"ListRoles", func(ctx context.Context, min uint64) (uint64, bool, error) {
			r, err := f.admin.ListRoles(ctx, &usherv1.ListRolesRequest{Resource: stream42, MinRevision: min})
			return r.GetRevision(), true, err
		}},
		{"GetResource", func(ctx context.Context, min uint64) (uint64, bool, error) {
			r, err := f.admin.GetResource(ctx, &usherv1.GetResourceRequest{Name: stream42, MinRevision: min})
			return r.GetRevision(), true, err
		}},
		{"ExportPolicy", func(ctx context.Context, min uint64) (uint64, bool, error) {
			r, err := f.admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{MinRevision: min})
			return r.GetRevision(), true, err
		}},
	}
	rev := f.grant("user:rw", "call-member", stream42)
	for _, r := range reads {
		t.Run(r.name+" at the revision a write answered sees the write", func(t *testing.T) {
			got, saw, err := r.read(f.ctx(), rev)
			if err != nil {
				t.Fatalf("%s: %v", r.name, err)
			}
			if got < rev || !saw {
				t.Errorf("%s answered at revision %d (saw the grant: %v), want at least %d with the grant", r.name, got, saw, rev)
			}
		})
	}
	// The reads far ahead wait for their deadline, so they run at once.
	far := rev + 1_000_000
	errs := make([]error, len(reads))
	var wg sync.WaitGroup
	for i, r := range reads {
		wg.Go(func() {
			// Far longer than the server waits for a revision, 5 s, so that
			// its answer arrives on a machine loaded enough to hold a
			// request back for seconds; the margin it keeps before shorter
			// deadlines is TestDeadlines'.
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			_, _, errs[i] = r.read(ctx, far)
		})
	}
	wg.Wait()
	for i, r := range reads {
		t.Run(r.name+" far ahead fails with FAILED_PRECONDITION before its deadline", func(t *testing.T) {
			st := wantCode(t, errs[i], codes.FailedPrecondition)
			if !strings.Contains(st.Message(), "min_revision") || !strings.Contains(st.Message(), strconv.FormatUint(far, 10)) {
				t.Errorf("message %q does not name min_revision and its value", st.Message())
			}
		})
	}

	t.Run("a read waiting for the next revision answers once a write reaches it", func(t *testing.T) {
		next := f.revision() + 1
		type answer struct {
			resp *usherv1.CheckResponse
			err  error
		}
		done := make(chan answer, 1)
		go func() {
			resp, err := f.authz.Check(f.ctx(), &usherv1.CheckRequest{Subject: "user:late", Permission: "join-call", Resource: stream42, MinRevision: next})
			done <- answer{resp, err}
		}()
		time.Sleep(50 * time.Millisecond)
		if wrote := f.grant("user:late", "call-member", stream42); wrote != next {
			t.Fatalf("the write answered %d, want %d", wrote, next)
		}
		a := <-done
		if a.err != nil {
			t.Fatalf("Check: %v", a.err)
		}
		if !a.resp.GetDecision().GetAllowed() || a.resp.GetRevision() != next {
			t.Errorf("Check = %v, want allowed at revision %d", a.resp, next)
		}
	})
}

func TestHealth(t *testing.T) {
	f := newServer(t)
	for _, service := range []string{"", "usher.v1.AuthorizationService", "usher.v1.AdminService"} {
		resp, err := f.health.Check(f.ctx(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health Check(%q): %v", service, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %s, want SERVING", service, resp.GetStatus())
		}
	}
	_, err := f.health.Check(f.ctx(), &healthpb.HealthCheckRequest{Service: "usher.v1.NoSuchService"})
	wantCode(t, err, codes.NotFound)
}

func TestReflection(t *testing.T) {
	f := newServer(t)
	stream, err := reflectionpb.NewServerReflectionClient(f.conn).ServerReflectionInfo(f.ctx())
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	defer func() { _ = stream.CloseSend() }()
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatalf("Send: %v", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		return resp
	}

	resp := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"usher.v1.AuthorizationService", "usher.v1.AdminService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}

	// grpcurl needs the descriptors too, not just the names.
	for _, symbol := range []string{"usher.v1.AuthorizationService", "usher.v1.AdminService"} {
		resp := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}})
		if len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
			t.Errorf("reflection has no file descriptor for %s: %v", symbol, resp.GetErrorResponse())
		}
	}
}
