package server_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// Delegated writes over gRPC, under the default policy: an owner of the
// workspace, a host of one call, and a user with no power at all.
func TestDelegatedWritesOverGRPC(t *testing.T) {
	f := newServer(t)
	f.world()
	f.grant("user:olga", "owner", sales)
	f.grant("user:hank", "host", stream42)
	ctx := f.ctx()

	// "Grant role R on resource s: some role the actor holds at s lists R in
	// assignable_roles": a host may add members to the call.
	if _, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:mia", Role: "call-member", Resource: stream42, Actor: "user:hank"}); err != nil {
		t.Fatalf("a host adding a call member: %v", err)
	}
	// ... but not owners of it.
	before := f.snapshotState("user:mia", "user:hank")
	_, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:mia", Role: "owner", Resource: stream42, Actor: "user:hank"})
	st := wantCode(t, err, codes.PermissionDenied)
	for _, want := range []string{`actor "user:hank"`, `"owner"`, `"call:livestream:42"`, "assignable_roles"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("refusal %q does not name %s", st.Message(), want)
		}
	}
	if diff := before.diff(f.snapshotState("user:mia", "user:hank")); len(diff) > 0 {
		t.Errorf("the refused grant wrote: %v", diff)
	}
	// "it is not possible to revoke your own permissions".
	_, err = f.admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: "user:olga", Role: "owner", Resource: sales, Actor: "user:olga"})
	wantCode(t, err, codes.PermissionDenied)

	// The owner registers an event as an actor and, by the policy's creator
	// role, owns it in the same write.
	rev := f.revision()
	resp, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "event:launch", Parent: sales, Actor: "user:olga"})
	if err != nil {
		t.Fatalf("an owner registering an event: %v", err)
	}
	if resp.GetRevision() != rev+1 {
		t.Errorf("registering with a creator role took revisions %d..%d, want one", rev, resp.GetRevision())
	}
	grants := f.listGrants("", "event:launch")
	if len(grants) != 1 || grants[0].GetSubject() != "user:olga" || grants[0].GetRole() != "owner" {
		t.Errorf("grants on the new event = %v, want user:olga as owner", grants)
	}
	got, err := f.admin.GetResource(ctx, &usherv1.GetResourceRequest{Name: "event:launch"})
	if err != nil || got.GetResource().GetCreator() != "user:olga" {
		t.Errorf("GetResource = %v, %v; want creator user:olga", got, err)
	}
	// The host may not register call types: usher.resources.create.calltype
	// is not his.
	_, err = f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "calltype:webinar", Parent: sales, Actor: "user:hank"})
	st = wantCode(t, err, codes.PermissionDenied)
	if !strings.Contains(st.Message(), "usher.resources.create.calltype") {
		t.Errorf("refusal %q does not name the reserved permission", st.Message())
	}

	// ListRoles can be asked for only what an actor may assign.
	roles, err := f.admin.ListRoles(ctx, &usherv1.ListRolesRequest{Resource: stream42, AssignableBy: "user:hank"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range roles.GetRoles() {
		names = append(names, r.GetName())
	}
	if want := []string{"call-member", "moderator", "user"}; !slices.Equal(names, want) {
		t.Errorf("roles user:hank may assign = %v, want %v", names, want)
	}

	// The change log records caller and actor, and filters by them.
	changes, err := f.admin.ListChanges(ctx, &usherv1.ListChangesRequest{Actor: "user:olga"})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes.GetChanges()) != 1 || changes.GetChanges()[0].GetCaller() != "anonymous" ||
		len(changes.GetChanges()[0].GetChanges()) != 3 {
		t.Errorf("changes by user:olga = %v, want the one registration with its creator grant and its default quota", changes.GetChanges())
	}
}

func TestQuotasOverGRPC(t *testing.T) {
	f := newServer(t)
	f.world()
	ctx := f.ctx()
	if _, err := f.admin.PutQuota(ctx, &usherv1.PutQuotaRequest{Quota: &usherv1.Quota{Scope: sales, ResourceType: "call", Limit: 3}}); err != nil {
		t.Fatal(err)
	}
	// Two calls exist below the workspace; one more fits.
	f.putResource("call:meeting:8", meeting)
	before := f.snapshotState()
	_, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "call:meeting:9", Parent: meeting})
	st := wantCode(t, err, codes.ResourceExhausted)
	if !strings.Contains(st.Message(), "at most 3 call resources") {
		t.Errorf("refusal %q does not state the limit", st.Message())
	}
	if diff := before.diff(f.snapshotState()); len(diff) > 0 {
		t.Errorf("the refused registration wrote: %v", diff)
	}
	quotas, err := f.admin.ListQuotas(ctx, &usherv1.ListQuotasRequest{Resource: stream42})
	if err != nil {
		t.Fatal(err)
	}
	// Below the workspace's, the call's own: no call or event inside it.
	if q := quotas.GetQuotas(); len(q) != 3 || q[0].GetScope() != stream42 || q[0].GetLimit() != 0 || q[1].GetScope() != stream42 ||
		q[2].GetScope() != sales || q[2].GetUsed() != 3 {
		t.Errorf("quotas above the call = %v, want the call's own and the workspace's with 3 used", q)
	}
	// Deleting a resource frees its place.
	if _, err := f.admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: "call:meeting:8"}); err != nil {
		t.Fatal(err)
	}
	f.putResource("call:meeting:9", meeting)
	if _, err := f.admin.DeleteQuota(ctx, &usherv1.DeleteQuotaRequest{Scope: sales, ResourceType: "call"}); err != nil {
		t.Fatal(err)
	}
	_, err = f.admin.DeleteQuota(ctx, &usherv1.DeleteQuotaRequest{Scope: sales, ResourceType: "call"})
	wantCode(t, err, codes.NotFound)
	f.putResource("call:meeting:10", meeting)
	// Quotas travel in the exported policy.
	if _, err := f.admin.PutQuota(ctx, &usherv1.PutQuotaRequest{Quota: &usherv1.Quota{Scope: acme, ResourceType: "workspace", Subject: "user:olga", Limit: 1}}); err != nil {
		t.Fatal(err)
	}
	exported, err := f.admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Besides olga's, the four calls' own (no call or event inside them).
	if q := exported.GetPolicy().GetQuotas(); len(q) != 9 || !slices.ContainsFunc(q, func(q *usherv1.Quota) bool { return q.GetSubject() == "user:olga" }) ||
		slices.ContainsFunc(q, func(q *usherv1.Quota) bool {
			return q.GetSubject() == "" && (!strings.HasPrefix(q.GetScope(), "call:") || q.GetLimit() != 0)
		}) {
		t.Errorf("exported quotas = %v, want olga's and the calls' own", q)
	}
	if c := exported.GetPolicy().GetCreatorRoles(); len(c) != 2 {
		t.Errorf("exported creator roles = %v, want the default policy's two", c)
	}
}
