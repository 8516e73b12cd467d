package server_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// observed is what a client sees of a server: everything restart must keep.
type observed struct {
	revision  uint64
	policy    *usherv1.Policy
	grants    map[string][]*usherv1.Grant // by resource, every page
	decisions []*usherv1.Decision
}

var restartChecks = []*usherv1.CheckItem{
	{Subject: "user:alice", Permission: "end-call", Resource: stream42},
	{Subject: "user:alice", Permission: "account.manage", Resource: "root"},
	{Subject: "user:bob", Permission: "end-call", Resource: stream42},      // host on the old parent, moved away
	{Subject: "user:bob", Permission: "end-call", Resource: "call:room:1"}, // host on the new parent
	{Subject: "user:carol", Permission: "send-audio", Resource: stream42},  // user redefined at the call type
	{Subject: "user:carol", Permission: "screenshare", Resource: stream42},
	{Subject: "user:carol", Permission: "screenshare", Resource: meeting7},
	{Subject: "user:dave", Permission: "join-call", Resource: stream42},         // blocked at the account
	{Subject: "user:erin", Permission: "screenshare", Resource: meeting7},       // one permission blocked, with expiry
	{Subject: "user:erin", Permission: "join-call", Resource: meeting7},         // the rest still granted
	{Subject: "user:frank", Permission: "mute-users", Resource: stream42},       // grant with expiry
	{Subject: "user:gil", Permission: "download-recording", Resource: stream42}, // role and permission from a policy change
	{Subject: "user:gil", Permission: "join-call", Resource: stream42},
	{Subject: "user:hal", Permission: "join-call", Resource: stream42}, // revoked
	{Subject: "user:ivy", Permission: "join-call", Resource: stream42}, // unblocked
	{Subject: "user:jo", Permission: "join-call", Resource: "call:livestream:gone"},
}

func (f *fixture) observe() observed {
	f.t.Helper()
	exp, err := f.admin.ExportPolicy(f.ctx(), &usherv1.ExportPolicyRequest{})
	if err != nil {
		f.t.Fatalf("ExportPolicy: %v", err)
	}
	o := observed{revision: exp.GetRevision(), policy: exp.GetPolicy(), grants: map[string][]*usherv1.Grant{}}
	for _, r := range exp.GetPolicy().GetResources() {
		o.grants[r.GetName()] = f.listGrants("", r.GetName())
	}
	o.grants["root"] = f.listGrants("", "root")
	batch, err := f.authz.CheckBatch(f.ctx(), &usherv1.CheckBatchRequest{Checks: restartChecks})
	if err != nil {
		f.t.Fatalf("CheckBatch: %v", err)
	}
	if batch.GetRevision() != o.revision {
		f.t.Fatalf("CheckBatch answered at %d, ExportPolicy at %d", batch.GetRevision(), o.revision)
	}
	o.decisions = batch.GetDecisions()
	return o
}

// TestRestartKeepsEverything makes writes of every kind, restarts the server
// on the same file and compares everything a client can read.
func TestRestartKeepsEverything(t *testing.T) {
	f := newServer(t)
	ctx := f.ctx()
	f.world()
	hour := time.Now().Add(time.Hour).Truncate(time.Millisecond).Add(987654) // nanoseconds must survive

	// Resources: one registered, moved and kept; one registered and deleted.
	f.putResource("calltype:room", sales)
	f.putResource("call:room:1", "calltype:room")
	f.putResource("call:livestream:gone", livestream)
	if _, err := f.admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: "call:livestream:gone"}); err != nil {
		t.Fatal(err)
	}
	// Roles: a redefinition at a call type, a custom role with every field,
	// and one defined then deleted.
	f.putRole(&usherv1.Role{Name: "user", Scope: livestream, Permissions: []string{"join-call", "read-call", "send-audio"}})
	f.putRole(&usherv1.Role{
		Name: "presenter", Scope: acme, Permissions: []string{"screenshare", "pin-for-everyone"},
		AssignableRoles: []string{"call-member"}, BindableOn: []string{"call"}, MaxHolders: 2, Description: "shows slides",
	})
	f.putRole(&usherv1.Role{Name: "temp", Scope: acme, Permissions: []string{"read-call"}})
	if _, err := f.admin.DeleteRole(ctx, &usherv1.DeleteRoleRequest{Name: "temp", Scope: acme}); err != nil {
		t.Fatal(err)
	}
	// Grants: permanent, with expiry, revoked; on a resource later moved.
	f.grant("user:alice", "owner", acme)
	f.grant("user:bob", "host", livestream)
	f.grant("user:carol", "user", sales)
	f.grant("user:dave", "call-member", stream42)
	f.grant("user:erin", "call-member", meeting7)
	f.grantUntil("user:frank", "moderator", stream42, hour)
	f.grant("user:pia", "presenter", stream42)
	f.grant("user:hal", "call-member", stream42)
	if _, err := f.admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: "user:hal", Role: "call-member", Resource: stream42}); err != nil {
		t.Fatal(err)
	}
	f.grant("user:ivy", "call-member", stream42)
	// Blocks: of everything, of one permission with expiry, and one lifted.
	f.block(&usherv1.BlockRequest{Subject: "user:dave", Resource: acme, Reason: "deactivated"})
	f.block(&usherv1.BlockRequest{Subject: "user:erin", Resource: meeting7, Permissions: []string{"screenshare"}, ExpireTime: timestamp(hour), Reason: "cool-down"})
	f.block(&usherv1.BlockRequest{Subject: "user:ivy", Resource: acme})
	if _, err := f.admin.Unblock(ctx, &usherv1.UnblockRequest{Subject: "user:ivy", Resource: acme}); err != nil {
		t.Fatal(err)
	}
	// A move: the call type and its call go from the workspace to the account,
	// and bob's host grant is re-made there.
	f.putResource("calltype:room", acme)
	f.grant("user:bob", "host", "calltype:room")
	if _, err := f.admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: "user:bob", Role: "host", Resource: livestream}); err != nil {
		t.Fatal(err)
	}
	// A policy change: a new permission under call.manage and a role using it.
	p := proto.Clone(exported(ctx, f)).(*usherv1.Policy)
	p.Permissions = append(p.Permissions, &usherv1.Permission{Name: "download-recording", Parents: []string{"call.manage"}, Description: "Fetch a recording."})
	p.Roles = append(p.Roles, &usherv1.Role{Name: "archivist", Scope: sales, Permissions: []string{"download-recording"}})
	if resp, err := f.admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p}); err != nil || !resp.GetChanged() {
		t.Fatalf("ApplyPolicy: changed %v, %v", resp.GetChanged(), err)
	}
	f.grant("user:gil", "archivist", livestream)

	before := f.observe()
	if d := before.decisions; !d[0].GetAllowed() || !d[3].GetAllowed() || d[2].GetAllowed() || d[7].GetAllowed() || !d[11].GetAllowed() {
		t.Fatalf("the world is not what the test means it to be: %v", d)
	}

	g := f.restart()
	after := g.observe()

	if after.revision != before.revision {
		t.Errorf("revision after restart = %d, want %d", after.revision, before.revision)
	}
	// An export lists parents before children, siblings in the order the
	// index keeps them, which a restart may change: compare it as a set.
	if a, b := sortedResources(after.policy), sortedResources(before.policy); !proto.Equal(a, b) {
		t.Errorf("ExportPolicy after restart differs:\n got %v\nwant %v", a, b)
	}
	if len(after.grants) != len(before.grants) {
		t.Errorf("grants on %d resources after restart, want %d", len(after.grants), len(before.grants))
	}
	for r, want := range before.grants {
		if !equalGrants(after.grants[r], want) {
			t.Errorf("ListGrants on %s after restart = %v, want %v", r, after.grants[r], want)
		}
	}
	for i, want := range before.decisions {
		if !proto.Equal(after.decisions[i], want) {
			t.Errorf("check %v after restart = %v, want %v", restartChecks[i], after.decisions[i], want)
		}
	}
	if got := g.listGrants("user:frank", ""); len(got) != 1 || !got[0].GetExpireTime().AsTime().Equal(hour) {
		t.Errorf("frank's grant after restart = %v, want one expiring at %s", got, hour.UTC())
	}
	if got := g.listPermissions("user:erin", meeting7); slices.Contains(got, "screenshare") {
		t.Errorf("erin's block did not survive the restart: %v", got)
	}

	// The revision goes on from where it was.
	if rev := g.grant("user:kai", "call-member", stream42); rev != before.revision+1 {
		t.Errorf("the first write after restart answered revision %d, want %d", rev, before.revision+1)
	}
	if d, rev := g.check("user:kai", "join-call", stream42); !d.GetAllowed() || rev != before.revision+1 {
		t.Errorf("after the write: %v at %d, want allowed at %d", d, rev, before.revision+1)
	}
}

// TestRestartDoesNotReapplyTheDefaultPolicy: like `usher serve` without
// --policy, a server started on a store that has data keeps the policy it
// has, even one that redefines a built-in role.
func TestRestartDoesNotReapplyTheDefaultPolicy(t *testing.T) {
	f := newServer(t)
	rev := f.putRole(&usherv1.Role{Name: "host", Scope: "root", Permissions: []string{"join-call"}})
	g := f.restart()
	if got := g.revision(); got != rev {
		t.Errorf("revision after restart = %d, want %d", got, rev)
	}
	roles, err := g.admin.ListRoles(g.ctx(), &usherv1.ListRolesRequest{Resource: "root"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roles.GetRoles() {
		if r.GetName() == "host" && !slices.Equal(r.GetPermissions(), []string{"join-call"}) {
			t.Errorf("host after restart = %v, want the redefinition", r)
		}
	}
}

// sortedResources is p with its resources sorted by name, and its quotas
// by scope.
func sortedResources(p *usherv1.Policy) *usherv1.Policy {
	p = proto.Clone(p).(*usherv1.Policy)
	slices.SortFunc(p.Resources, func(a, b *usherv1.Resource) int { return strings.Compare(a.GetName(), b.GetName()) })
	// Quotas, which calls start with, follow their scopes.
	slices.SortFunc(p.Quotas, func(a, b *usherv1.Quota) int {
		return strings.Compare(a.GetScope()+"\x00"+a.GetResourceType()+"\x00"+a.GetSubject(), b.GetScope()+"\x00"+b.GetResourceType()+"\x00"+b.GetSubject())
	})
	return p
}
