package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
)

// The delegation rules of the seed documents, made by an authenticated
// platform backend (an admin caller with a bearer token, over TLS) on behalf
// of end users, and by the admin console with its client certificate.

// seedPolicy is the default policy with VancastVideo's event roles
// (seeds/002) and alfaview's permission tree (seeds/004) added.
const seedPolicy = `
permissions:
  - {name: vc.event.all}
  - {name: vc.event.delete, parents: [vc.event.all]}
  - {name: vc.event.links, parents: [vc.event.all]}
  - {name: vc.event.engines, parents: [vc.event.all]}
  - {name: vc.event.control-room, parents: [vc.event.all]}
  - {name: vc.event.qa-console, parents: [vc.event.all]}
  - {name: vc.event.webcast-page, parents: [vc.event.all]}
  - {name: vc.event.collaborators, parents: [vc.event.all]}
  - {name: company.settings}
  - {name: company.usernames, parents: [company.settings]}
  - {name: company.users, parents: [company.settings]}
  - {name: company.users.list, parents: [company.users]}
  - {name: company.rooms, parents: [company.settings]}
  - {name: company.rooms.list, parents: [company.rooms]}
  - {name: company.rooms.create, parents: [company.rooms]}
  - {name: usher.resources.create.room, parents: [company.rooms.create]}
resources:
  - {name: "account:vancast"}
  - {name: "event:gala", parent: "account:vancast"}
  - {name: "company:alfa"}
roles:
  - {name: event-owner, scope: root, bindable_on: [event], permissions: [vc.event.all], assignable_roles: ["*"]}
  - {name: event-manager, scope: root, bindable_on: [event],
     permissions: [vc.event.links, vc.event.engines, vc.event.control-room, vc.event.qa-console, vc.event.webcast-page, vc.event.collaborators],
     assignable_roles: [event-manager, event-producer, event-moderator]}
  - {name: event-producer, scope: root, bindable_on: [event],
     permissions: [vc.event.links, vc.event.engines, vc.event.control-room, vc.event.collaborators], assignable_roles: [event-producer]}
  - {name: event-moderator, scope: root, bindable_on: [event], permissions: [vc.event.qa-console]}
  - {name: manage-company-settings, scope: root, permissions: [company.settings], assignable_roles: ["*"]}
  - {name: administrate-users, scope: root, permissions: [company.users], assignable_roles: ["*"]}
  - {name: list-all-users, scope: root, permissions: [company.users.list]}
  - {name: administrate-rooms, scope: root, permissions: [company.rooms]}
  - {name: create-a-room, scope: root, permissions: [company.rooms.create]}
`

func applySeedPolicy(t *testing.T, admin usherv1.AdminServiceClient) {
	t.Helper()
	p, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	extra, err := policy.Parse("seed policy", []byte(seedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	proto.Merge(p, extra)
	// Adding collaborators and administrating users is granting.
	for _, perm := range p.GetPermissions() {
		if perm.GetName() == "usher.grants.write" {
			perm.Parents = append(perm.Parents, "vc.event.collaborators", "company.users")
		}
	}
	if _, err := admin.ApplyPolicy(callCtx(t), &usherv1.ApplyPolicyRequest{Policy: p}); err != nil {
		t.Fatal(err)
	}
}

func TestSeedDelegationRulesOverAuthenticatedConnections(t *testing.T) {
	w := newAuthWorld(t)
	backend := usherv1.NewAdminServiceClient(w.dial(credential{token: w.adminToken}))
	console := usherv1.NewAdminServiceClient(w.dial(credential{cert: &w.adminCert}))
	applySeedPolicy(t, backend)
	for _, r := range []string{"owner", "manager", "producer", "moderator"} {
		if _, err := console.Grant(callCtx(t), &usherv1.GrantRequest{Subject: "user:" + r, Role: "event-" + r, Resource: "event:gala"}); err != nil {
			t.Fatal(err)
		}
	}
	for subject, role := range map[string]string{"user:boss": "manage-company-settings", "user:hr": "administrate-users"} {
		if _, err := console.Grant(callCtx(t), &usherv1.GrantRequest{Subject: subject, Role: role, Resource: "company:alfa"}); err != nil {
			t.Fatal(err)
		}
	}

	cases := []struct {
		quote         string
		actor, role   string
		resource      string
		revoke        bool
		subject       string
		allowed       bool
		refusalNaming string
	}{
		{"The Owner of an event can add new Collaborators to help him manage the event.", "user:owner", "event-manager", "event:gala", false, "user:c1", true, ""},
		{"The Owner of an event can add new Collaborators", "user:owner", "event-owner", "event:gala", false, "user:c2", true, ""},
		{"A Manager can add new collaborators with any role except Owner", "user:manager", "event-producer", "event:gala", false, "user:c3", true, ""},
		{"A Manager can add new collaborators with any role except Owner", "user:manager", "event-moderator", "event:gala", false, "user:c4", true, ""},
		{"A Manager can add new collaborators with any role except Owner", "user:manager", "event-owner", "event:gala", false, "user:c5", false, "assignable_roles"},
		{"A Producer can add only new Producer collaborators", "user:producer", "event-producer", "event:gala", false, "user:c6", true, ""},
		{"A Producer ... Cannot: - Add Collaborators other than Producers", "user:producer", "event-moderator", "event:gala", false, "user:c7", false, "assignable_roles"},
		{"Moderator | Can Only: - Access de Q&A moderators console", "user:moderator", "event-moderator", "event:gala", false, "user:c8", false, `lacks "usher.grants.write"`},
		{"Only permissions that the user has can be granted to other users.", "user:hr", "list-all-users", "company:alfa", false, "user:c9", true, ""},
		{"Only permissions that the user has can be granted to other users.", "user:hr", "create-a-room", "company:alfa", false, "user:c10", false, "only permissions the actor has can be granted"},
		{"Only users with the Administrate users permission can grant or revoke permissions for other users.", "user:c9", "list-all-users", "company:alfa", false, "user:c11", false, `lacks "usher.grants.write"`},
		{"It is not possible to revoke your own permissions.", "user:hr", "administrate-users", "company:alfa", true, "user:hr", false, "revoke your own"},
		{"in order to grant or revoke the Manage company settings permission, you must have this permission yourself. The Administrate users permission alone is not sufficient.", "user:hr", "manage-company-settings", "company:alfa", false, "user:c12", false, `lacks "company.settings"`},
		{"in order to grant or revoke the Manage company settings permission, you must have this permission yourself.", "user:boss", "manage-company-settings", "company:alfa", false, "user:c12", true, ""},
		{"in order to grant or revoke the Manage company settings permission, you must have this permission yourself.", "user:hr", "manage-company-settings", "company:alfa", true, "user:c12", false, `lacks "company.settings"`},
		{"in order to grant or revoke the Manage company settings permission, you must have this permission yourself.", "user:boss", "manage-company-settings", "company:alfa", true, "user:c12", true, ""},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%d %s", i, c.quote), func(t *testing.T) {
			ctx := callCtx(t)
			before, _ := w.store.Revision(ctx)
			var err error
			if c.revoke {
				_, err = backend.Revoke(ctx, &usherv1.RevokeRequest{Subject: c.subject, Role: c.role, Resource: c.resource, Actor: c.actor})
			} else {
				_, err = backend.Grant(ctx, &usherv1.GrantRequest{Subject: c.subject, Role: c.role, Resource: c.resource, Actor: c.actor})
			}
			after, _ := w.store.Revision(ctx)
			if c.allowed {
				if err != nil {
					t.Fatalf("%s on behalf of %s: %v", c.role, c.actor, err)
				}
				caller, _ := w.lastCaller()
				changes, _ := w.store.Changes(context.Background(), after-1, 1)
				if caller != "backend" || changes[0].Actor != c.actor {
					t.Errorf("change log says caller %q actor %q, want backend for %s", caller, changes[0].Actor, c.actor)
				}
				return
			}
			st := wantCode(t, err, codes.PermissionDenied)
			for _, want := range []string{`actor "` + c.actor + `"`, `"` + c.role + `"`, `"` + c.resource + `"`, c.refusalNaming} {
				if !strings.Contains(st.Message(), want) {
					t.Errorf("refusal %q does not name %s", st.Message(), want)
				}
			}
			if after != before {
				t.Errorf("a refused write moved the revision from %d to %d", before, after)
			}
		})
	}
}

// max_holders, quotas with creator roles and the audit log, over the same
// authenticated connections.
func TestLimitsAndAuditOverAuthenticatedConnections(t *testing.T) {
	w := newAuthWorld(t)
	backend := usherv1.NewAdminServiceClient(w.dial(credential{token: w.adminToken}))
	console := usherv1.NewAdminServiceClient(w.dial(credential{cert: &w.adminCert}))
	applySeedPolicy(t, backend)
	ctx := callCtx(t)

	// "max_holders: at most this many subjects may hold it on one resource".
	if _, err := console.PutRole(ctx, &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "solo-host", Scope: "root", Permissions: []string{"join-call"}, MaxHolders: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Grant(ctx, &usherv1.GrantRequest{Subject: "user:a", Role: "solo-host", Resource: "event:gala"}); err != nil {
		t.Fatal(err)
	}
	_, err := backend.Grant(ctx, &usherv1.GrantRequest{Subject: "user:b", Role: "solo-host", Resource: "event:gala"})
	if st := wantCode(t, err, codes.FailedPrecondition); !strings.Contains(st.Message(), "at most 1 holders") {
		t.Errorf("max_holders refusal %q does not state the limit", st.Message())
	}

	// alfaview: "With the appropriate quota, users with this permission are
	// able to create a new room."
	if _, err := console.Grant(ctx, &usherv1.GrantRequest{Subject: "user:roomie", Role: "create-a-room", Resource: "company:alfa"}); err != nil {
		t.Fatal(err)
	}
	if _, err := console.PutQuota(ctx, &usherv1.PutQuotaRequest{Quota: &usherv1.Quota{Scope: "company:alfa", ResourceType: "room", Limit: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.PutResource(ctx, &usherv1.PutResourceRequest{Name: "room:r1", Parent: "company:alfa", Actor: "user:roomie"}); err != nil {
		t.Fatalf("a room within the quota: %v", err)
	}
	_, err = backend.PutResource(ctx, &usherv1.PutResourceRequest{Name: "room:r2", Parent: "company:alfa", Actor: "user:roomie"})
	wantCode(t, err, codes.ResourceExhausted)
	// Create a room registers rooms, nothing else.
	_, err = backend.PutResource(ctx, &usherv1.PutResourceRequest{Name: "event:party", Parent: "company:alfa", Actor: "user:roomie"})
	wantCode(t, err, codes.PermissionDenied)

	// The change log records the caller and the actor of every write.
	changes, err := console.ListChanges(ctx, &usherv1.ListChangesRequest{Caller: "backend", Actor: "user:roomie"})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes.GetChanges()) != 1 || changes.GetChanges()[0].GetChanges()[0].GetResource().GetName() != "room:r1" {
		t.Errorf("changes by backend for user:roomie = %v, want the one room registration", changes.GetChanges())
	}
	byConsole, err := console.ListChanges(ctx, &usherv1.ListChangesRequest{Caller: "console", Resource: "company:alfa"})
	if err != nil {
		t.Fatal(err)
	}
	if len(byConsole.GetChanges()) != 2 {
		t.Errorf("changes by console on company:alfa = %d records, want the grant and the quota", len(byConsole.GetChanges()))
	}
}
