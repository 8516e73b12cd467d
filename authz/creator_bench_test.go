package authz_test

import (
	"fmt"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// BenchmarkACreatorRoleRedefinedOverAWideReach measures an actor's
// definition of a role the creator role lists by name, where the creator
// role lists 1,000 roles, each defined again on 50 of 50,000 calls, and
// the actor's own role is defined again on 1,000 calls and the actor is
// blocked on 1,000 others: every definition by an actor of a role the
// creator role leads to is checked where it may lead there.
func BenchmarkACreatorRoleRedefinedOverAWideReach(b *testing.B) {
	const roles, calls, narrow = 1000, 50_000, 1000
	admin := []string{"org.admin", "secret", "event.view", "other"}
	snap := authz.Snapshot{
		Permissions:  append(creatorPolicy().Permissions, authz.Permission{Name: "other"}),
		CreatorRoles: []authz.CreatorRole{{ResourceType: "event", Role: "owner"}},
		Resources:    []authz.Resource{{Name: "account:acme"}, {Name: "event:rest", Parent: "account:acme"}},
		Roles:        []authz.Role{{Name: "admin", Scope: "root", Permissions: admin}},
		Grants:       []authz.Grant{{Subject: "user:a", Role: "admin", Resource: "account:acme"}},
	}
	var listed []string
	for i := range roles {
		listed = append(listed, fmt.Sprintf("r%d", i))
		snap.Roles = append(snap.Roles, authz.Role{Name: fmt.Sprintf("r%d", i), Scope: "root", Permissions: []string{"event.view"}})
	}
	snap.Roles = append(snap.Roles,
		authz.Role{Name: "owner", Scope: "root", Permissions: []string{"event.view"}, AssignableRoles: append(listed, "x")},
		authz.Role{Name: "x", Scope: "root", Permissions: []string{"event.view"}})
	for i := range calls {
		c := fmt.Sprintf("call:c-%d", i)
		snap.Resources = append(snap.Resources, authz.Resource{Name: c, Parent: "event:rest"})
		snap.Roles = append(snap.Roles, authz.Role{Name: fmt.Sprintf("r%d", i%roles), Scope: c, Permissions: []string{"event.view"}})
		switch {
		case i < narrow:
			snap.Roles = append(snap.Roles, authz.Role{Name: "admin", Scope: c, Permissions: admin})
		case i < 2*narrow:
			snap.Blocks = append(snap.Blocks, authz.Block{Subject: "user:a", Resource: c, Permissions: []string{"other"}, ID: fmt.Sprint("b", i)})
		}
	}
	eng := startWith(b, snap)
	defs := []authz.Role{
		{Name: "x", Scope: "account:acme", Permissions: []string{"event.view", "secret"}},
		{Name: "x", Scope: "account:acme", Permissions: []string{"event.view"}},
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := eng.PutRole(b.Context(), as("user:a"), defs[i%2]); err != nil {
			b.Fatal(err)
		}
	}
}
