package authz_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// streamAdminOverride is seeds/003's createCallType example: the call type
// overrides the capabilities of the built-in admin role.
var streamAdminOverride = authz.Role{Name: "admin", Scope: "calltype:livestream", Permissions: []string{"send-audio", "send-video", "mute-users"}}

func TestRoleResolution(t *testing.T) {
	type check struct {
		subject, permission, resource string
		allowed                       bool
		scope                         string // where the deciding grant is, when allowed
	}
	cases := []struct {
		name   string
		setup  func(w *world)
		checks []check
	}{
		{
			name:  "a call type can redefine what a role means for its calls (Stream: \"The following example overrides the capabilities of the built-in admin role\")",
			setup: func(w *world) { w.grant("user:alice", "admin", "call:livestream:42") },
			checks: []check{
				{"user:alice", "send-audio", "call:livestream:42", true, "call:livestream:42"},
				{"user:alice", "send-video", "call:livestream:42", true, "call:livestream:42"},
				{"user:alice", "mute-users", "call:livestream:42", true, "call:livestream:42"},
				{"user:alice", "end-call", "call:livestream:42", false, ""},
				{"user:alice", "join-call", "call:livestream:42", false, ""},
			},
		},
		{
			name:  "calls of other call types keep the built-in one",
			setup: func(w *world) { w.grant("user:alice", "admin", "call:default:1") },
			checks: []check{
				{"user:alice", "end-call", "call:default:1", true, "call:default:1"},
				{"user:alice", "join-call", "call:default:1", true, "call:default:1"},
			},
		},
		{
			name:  "A role name is resolved at the resource being checked, not where it was granted",
			setup: func(w *world) { w.grant("user:alice", "admin", "account:acme") },
			checks: []check{
				{"user:alice", "end-call", "account:acme", true, "account:acme"},
				{"user:alice", "end-call", "call:default:1", true, "account:acme"},
				{"user:alice", "end-call", "calltype:livestream", false, ""},
				{"user:alice", "end-call", "call:livestream:42", false, ""},
				{"user:alice", "send-audio", "call:livestream:42", true, "account:acme"},
			},
		},
		{
			name: "the nearest definition of that name on the way from that resource up to root gives its permissions",
			setup: func(w *world) {
				w.role(authz.Role{Name: "user", Scope: "account:acme", Permissions: []string{"join-call"}})
				w.role(authz.Role{Name: "user", Scope: "calltype:livestream", Permissions: []string{"join-call", "send-audio"}})
				w.grant("user:alice", "user", "root")
			},
			checks: []check{
				{"user:alice", "send-audio", "call:livestream:42", true, "root"},
				{"user:alice", "read-call", "call:livestream:42", false, ""},
				{"user:alice", "join-call", "call:default:1", true, "root"},
				{"user:alice", "send-audio", "call:default:1", false, ""},
				{"user:alice", "read-call", "call:default:1", false, ""},
				{"user:alice", "read-call", "call:globex:7", true, "root"},
				{"user:alice", "read-call", "root", true, "root"},
			},
		},
		{
			name: "an account defines its own custom roles at account:acme",
			setup: func(w *world) {
				w.role(authz.Role{Name: "stage-manager", Scope: "account:acme", Permissions: []string{"start-broadcast-call", "stop-broadcast-call"}})
				w.grant("user:alice", "stage-manager", "calltype:livestream")
			},
			checks: []check{
				{"user:alice", "start-broadcast-call", "call:livestream:43", true, "calltype:livestream"},
				{"user:alice", "join-call", "call:livestream:43", false, ""},
			},
		},
		{
			name: "redefining a role at the same scope replaces it, and checks follow at once",
			setup: func(w *world) {
				w.grant("user:alice", "call-member", "call:livestream:42")
				w.role(authz.Role{Name: "call-member", Scope: "root", Permissions: []string{"join-call"}})
			},
			checks: []check{
				{"user:alice", "join-call", "call:livestream:42", true, "call:livestream:42"},
				{"user:alice", "send-audio", "call:livestream:42", false, ""},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, streamPolicy())
			w.role(streamAdminOverride)
			tc.setup(w)
			for _, c := range tc.checks {
				d := w.check(c.subject, c.permission, c.resource)
				if d.Allowed != c.allowed || d.Scope != c.scope {
					t.Errorf("Check(%s, %s, %s) = %+v, want allowed %v with scope %q", c.subject, c.permission, c.resource, d, c.allowed, c.scope)
				}
			}
		})
	}
}

func TestPutRole(t *testing.T) {
	t.Run("Roles may only name declared permissions, so a typo is an error: INVALID_ARGUMENT naming role.permissions[i]", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.refuses(authz.Invalid, "role.permissions[1]", "send-vidoe", func() (authz.Revision, error) {
			return w.eng.PutRole(w.ctx, w.by, authz.Role{Name: "presenter", Scope: "account:acme", Permissions: []string{"send-audio", "send-vidoe", "mute-users"}})
		})
	})
	t.Run("on a write: resource not registered -> NOT_FOUND (the role's scope)", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.refuses(authz.NotFound, "role.scope", "account:initech", func() (authz.Revision, error) {
			return w.eng.PutRole(w.ctx, w.by, authz.Role{Name: "presenter", Scope: "account:initech", Permissions: []string{"send-audio"}})
		})
	})
	t.Run("putting the same definition again writes nothing, whatever the order of its lists", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		r := authz.Role{Name: "presenter", Scope: "account:acme", Permissions: []string{"send-video", "send-audio"}, BindableOn: []string{"call", "calltype"}, MaxHolders: 2}
		w.role(r)
		r.Permissions = []string{"send-audio", "send-video", "send-audio"}
		r.BindableOn = []string{"calltype", "call"}
		w.writesNothing(func() (authz.Revision, error) { return w.eng.PutRole(w.ctx, w.by, r) })
	})
	t.Run("a changed definition is written", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		r := authz.Role{Name: "presenter", Scope: "account:acme", Permissions: []string{"send-audio"}}
		w.role(r)
		before := w.be.count()
		r.MaxHolders = 1
		w.role(r)
		if w.be.count() != before+1 {
			t.Errorf("changing max_holders wrote %d change sets, want 1", w.be.count()-before)
		}
	})
}

func TestDeleteRole(t *testing.T) {
	grants := func(w *world, subject string) []authz.Grant {
		t.Helper()
		page, _, _, err := w.idx.ListGrants(authz.GrantFilter{Subject: subject}, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		return page
	}
	// "what it takes away from holders is bounded by rule 2": a held role is
	// deleted with the grants no other definition covers, in one change set.
	t.Run("DeleteRole revokes the grants the definition alone covered", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.role(authz.Role{Name: "stage-manager", Scope: "account:acme", Permissions: []string{"start-broadcast-call"}})
		w.grant("user:alice", "stage-manager", "call:livestream:42")
		rev, err := w.eng.DeleteRole(w.ctx, w.by, "account:acme", "stage-manager")
		w.ok("DeleteRole of a held role", rev, err)
		if g := grants(w, "user:alice"); len(g) != 0 {
			t.Errorf("alice's grants after the deletion: %+v, want none", g)
		}
		if d := w.check("user:alice", "start-broadcast-call", "call:livestream:42"); d.Allowed {
			t.Errorf("alice still holds the deleted role's permission: %+v", d)
		}
		sets, err := w.be.Changes(w.ctx, rev-1, 1)
		if err != nil || len(sets) != 1 || len(sets[0].Changes) != 2 || sets[0].Changes[0].Op != authz.OpDeleteGrant || sets[0].Changes[1].Op != authz.OpDeleteRole {
			t.Errorf("the deletion's change set = %+v, %v; want the grant's deletion, then the role's", sets, err)
		}
	})
	t.Run("DeleteRole of the built-in revokes only the grants no override covers", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.role(streamAdminOverride)
		w.grant("user:alice", "admin", "call:livestream:42")
		w.grant("user:bob", "admin", "call:default:1")
		rev, err := w.eng.DeleteRole(w.ctx, w.by, "root", "admin")
		w.ok("DeleteRole of the built-in admin", rev, err)
		if g := grants(w, "user:bob"); len(g) != 0 {
			t.Errorf("bob's grants: %+v, want none", g)
		}
		if g := grants(w, "user:alice"); len(g) != 1 || g[0].Role != "admin" {
			t.Errorf("alice's grants: %+v, want her admin, which the override covers", g)
		}
	})
	t.Run("an actor deletes a held role only taking what it holds itself", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.role(authz.Role{Name: "recorder", Scope: "org:a", Permissions: []string{"call.record"}})
		w.role(authz.Role{Name: "keeper", Scope: "root", Permissions: []string{authz.PermRolesWrite}})
		w.grant("user:k", "keeper", "org:a")
		w.grant("user:h", "host", "org:a")
		w.grant("user:x", "recorder", "call:1")
		refusedAttack(t, w, "user:k", authz.RuleNoOverreach, func(by authz.Author) error {
			_, err := w.eng.DeleteRole(w.ctx, by, "org:a", "recorder")
			return err
		})
		rev, err := w.eng.DeleteRole(w.ctx, as("user:h"), "org:a", "recorder")
		w.ok("a host, who holds call.record, deletes recorder", rev, err)
		if g := grants(w, "user:x"); len(g) != 0 {
			t.Errorf("user:x's grants after the deletion: %+v, want none", g)
		}
	})
	t.Run("DeleteRole is refused while more grants than it revokes at once hold it", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.role(authz.Role{Name: "stage-manager", Scope: "account:acme", Permissions: []string{"start-broadcast-call"}})
		var changes []authz.Change
		for i := range authz.MaxRoleDeletionGrants + 1 {
			changes = append(changes, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%d", i), Role: "stage-manager", Resource: "call:livestream:42"}})
		}
		w.store(changes...)
		w.refuses(authz.FailedPrecondition, "name", "stage-manager", func() (authz.Revision, error) {
			return w.eng.DeleteRole(w.ctx, w.by, "account:acme", "stage-manager")
		})
	})
	t.Run("deleting an override falls back to the next definition up", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.role(streamAdminOverride)
		w.grant("user:alice", "admin", "call:livestream:42")
		if d := w.check("user:alice", "end-call", "call:livestream:42"); d.Allowed {
			t.Fatalf("the override should not allow end-call: %+v", d)
		}
		if _, err := w.eng.DeleteRole(w.ctx, w.by, "calltype:livestream", "admin"); err != nil {
			t.Fatal(err)
		}
		if d := w.check("user:alice", "end-call", "call:livestream:42"); !d.Allowed {
			t.Errorf("with the override deleted, the built-in admin should allow end-call: %+v", d)
		}
	})
	t.Run("role not visible at that scope -> NOT_FOUND", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.refuses(authz.NotFound, "name", "admin", func() (authz.Revision, error) {
			return w.eng.DeleteRole(w.ctx, w.by, "account:acme", "admin")
		})
	})
	t.Run("on a write: resource not registered -> NOT_FOUND (the scope)", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.refuses(authz.NotFound, "scope", "account:initech", func() (authz.Revision, error) {
			return w.eng.DeleteRole(w.ctx, w.by, "account:initech", "admin")
		})
	})
}

func TestListRoles(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.role(streamAdminOverride)
	w.role(authz.Role{Name: "stage-manager", Scope: "account:acme", Permissions: []string{"start-broadcast-call"}})
	cases := []struct {
		name     string
		resource string
		want     []string // name@scope, by name
	}{
		{"ListRoles returns the nearest definitions with their scope: the call type's admin", "call:livestream:42",
			[]string{"admin@calltype:livestream", "call-member@root", "host@root", "moderator@root", "stage-manager@account:acme", "user@root"}},
		{"ListRoles returns the nearest definitions with their scope: the override is defined at the call type itself", "calltype:livestream",
			[]string{"admin@calltype:livestream", "call-member@root", "host@root", "moderator@root", "stage-manager@account:acme", "user@root"}},
		{"ListRoles returns the nearest definitions with their scope: another call type keeps the built-in admin", "call:default:1",
			[]string{"admin@root", "call-member@root", "host@root", "moderator@root", "stage-manager@account:acme", "user@root"}},
		{"ListRoles returns the nearest definitions with their scope: another account sees no acme role", "call:globex:7",
			[]string{"admin@root", "call-member@root", "host@root", "moderator@root", "user@root"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			roles, rev, err := w.idx.ListRoles(tc.resource)
			if err != nil {
				t.Fatal(err)
			}
			if rev != w.idx.Revision() {
				t.Errorf("answered at revision %d, want %d", rev, w.idx.Revision())
			}
			var got []string
			for _, r := range roles {
				got = append(got, r.Name+"@"+r.Scope)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ListRoles(%s) = %v, want %v", tc.resource, got, tc.want)
			}
			for _, r := range roles {
				if r.Name == "admin" && r.Scope == "calltype:livestream" && !slices.Equal(r.Permissions, []string{"mute-users", "send-audio", "send-video"}) {
					t.Errorf("the override is listed with permissions %v", r.Permissions)
				}
			}
		})
	}
	t.Run("ListRoles of an unregistered resource is NOT_FOUND", func(t *testing.T) {
		_, _, err := w.idx.ListRoles("call:livestream:404")
		wantError(t, err, authz.NotFound, "resource", "call:livestream:404")
	})
}

// "A role name is resolved at the resource being checked": a grant that a
// definition below its resource still gives power through is not revoked
// with a definition above; the deletion is refused, naming it.
func TestDeleteRoleKeepsAGrantADefinitionBelowStillGivesPowerThrough(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.role(authz.Role{Name: "speaker", Scope: "account:acme", Permissions: []string{"read-call"}})
	w.role(authz.Role{Name: "speaker", Scope: "calltype:livestream", Permissions: []string{"join-call", "send-audio"}})
	w.grant("user:bob", "speaker", "account:acme")
	e := w.refuses(authz.FailedPrecondition, "name", "speaker", func() (authz.Revision, error) {
		return w.eng.DeleteRole(w.ctx, w.by, "account:acme", "speaker")
	})
	if e.Kind != authz.KindRoleInUse {
		t.Errorf("kind %s, want %s", e.Kind, authz.KindRoleInUse)
	}
	if d := w.check("user:bob", "join-call", "call:livestream:42"); !d.Allowed {
		t.Errorf("bob lost what the definition below gives him: %+v", d)
	}
}
