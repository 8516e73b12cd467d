package authz_test

import (
	"slices"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// TestPermissionTree replays seeds/004 (alfaview): "Permissions are
// hierarchical and follow a tree structure."
func TestPermissionTree(t *testing.T) {
	everything := []string{
		"company.manage-settings", "company.show-usernames", "rooms.administrate", "rooms.create",
		"rooms.list", "users.administrate", "users.list", "usher.blocks.write", "usher.grants.write",
		"usher.resources.create.department", "usher.resources.create.room", "usher.resources.delete", "usher.resources.move",
	}
	cases := []struct {
		name string
		hold string // the one permission granted
		want []string
	}{
		{"When a user is granted a parent privilege, the child privilege is automatically granted.",
			"company.manage-settings", everything},
		{"When a user is granted a parent privilege, the child privilege is automatically granted (one level down).",
			"rooms.administrate", []string{"rooms.administrate", "rooms.create", "rooms.list", "usher.blocks.write",
				"usher.resources.create.department", "usher.resources.create.room", "usher.resources.delete", "usher.resources.move"}},
		{"Conversely, a child privilege can be granted without granting the parent privilege.",
			"rooms.create", []string{"rooms.create", "usher.resources.create.room"}},
		{"Conversely, a child privilege can be granted without granting the parent privilege (nor its siblings).",
			"users.list", []string{"users.list"}},
		{"a DAG when a reserved permission below is implied by several domain permissions",
			"users.administrate", []string{"users.administrate", "users.list", "usher.blocks.write", "usher.grants.write"}},
		{"a reserved permission implied by several parents implies none of them",
			"usher.blocks.write", []string{"usher.blocks.write"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, alfaviewPolicy())
			w.grant("user:anna", "has."+tc.hold, "company:alfa")
			if got, _, _ := w.idx.ListPermissions("user:anna", "room:alfa-lobby", true); !slices.Equal(got, tc.want) {
				t.Errorf("holding %s gives %v, want %v", tc.hold, got, tc.want)
			}
			for _, perm := range everything {
				d := w.check("user:anna", perm, "room:alfa-lobby")
				if want := slices.Contains(tc.want, perm); d.Allowed != want {
					t.Errorf("holding %s: Check(%s) = %+v, want allowed %v", tc.hold, perm, d, want)
				}
				if d.Allowed && d.Role != "has."+tc.hold {
					t.Errorf("Check(%s) names role %q, want has.%s", perm, d.Role, tc.hold)
				}
			}
		})
	}
}

// TestCatalogRefusals proves that the permission tree stays a tree (or a
// DAG): the policy that would break it is refused whole.
func TestCatalogRefusals(t *testing.T) {
	perms := func(ps ...authz.Permission) authz.Policy { return authz.Policy{Permissions: ps} }
	cases := []struct {
		name  string
		p     authz.Policy
		code  authz.Code
		field string
		value string
	}{
		{"a permission may name one or more parents: no cycles (a permission its own parent)",
			perms(authz.Permission{Name: "rooms.loop", Parents: []string{"rooms.loop"}}),
			authz.Invalid, "policy.permissions", "rooms.loop"},
		// The walk starts from a, so c is the permission met twice.
		{"a permission may name one or more parents: no cycles (two permissions each other's parent)",
			perms(authz.Permission{Name: "a"}, authz.Permission{Name: "b", Parents: []string{"c"}}, authz.Permission{Name: "c", Parents: []string{"a", "b"}}),
			authz.Invalid, "policy.permissions", "c"},
		{"a permission may name one or more parents: declared ones (an undeclared parent)",
			perms(authz.Permission{Name: "rooms.administrate"}, authz.Permission{Name: "rooms.list", Parents: []string{"rooms.administrate", "rooms.admin"}}),
			authz.Invalid, "policy.permissions[1].parents[1]", "rooms.admin"},
		{"The policy declares the permission catalog: each permission once",
			perms(authz.Permission{Name: "rooms.list"}, authz.Permission{Name: "rooms.create"}, authz.Permission{Name: "rooms.list"}),
			authz.Invalid, "policy.permissions[2].name", "rooms.list"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, alfaviewPolicy())
			before, _ := exportAll(w)
			p := alfaviewPolicy()
			p.Permissions = append(p.Permissions, tc.p.Permissions...)
			w.refuses(tc.code, tc.field, tc.value, func() (authz.Revision, error) {
				rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, tc.p, authz.ApplyOptions{})
				return rev, err
			})
			// Also refused when the bad entries come on top of a good catalog.
			if tc.field == "policy.permissions" {
				w.refuses(tc.code, tc.field, tc.value, func() (authz.Revision, error) {
					rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
					return rev, err
				})
			}
			if after, _ := exportAll(w); !slices.EqualFunc(before.Permissions, after.Permissions, samePermission) {
				t.Errorf("the catalog changed after a refused policy:\n%v\n%v", before.Permissions, after.Permissions)
			}
		})
	}

	t.Run("the index refuses a snapshot whose catalog has a cycle", func(t *testing.T) {
		_, err := authz.NewIndex(authz.Snapshot{Permissions: []authz.Permission{{Name: "a", Parents: []string{"b"}}, {Name: "b", Parents: []string{"a"}}}})
		if authz.CodeOf(err) != authz.Invalid {
			t.Errorf("NewIndex(cyclic catalog) = %v, want an Invalid error", err)
		}
	})
}

func samePermission(a, b authz.Permission) bool {
	return a.Name == b.Name && a.Description == b.Description && slices.Equal(a.Parents, b.Parents)
}
