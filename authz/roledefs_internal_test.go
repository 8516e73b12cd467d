package authz

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// On paths of every length up to MaxDepth, with roles defined on the path,
// off it, and on more resources than the path holds, definitionOn finds
// the definition the walk up the path finds, the nearest, and so does a
// write's view of definitions it puts and deletes.
func TestDefinitionOnIsTheNearest(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		snap := Snapshot{Permissions: []Permission{{Name: "p"}}}
		// A chain from root to d32, and beside each level a sibling.
		parent := "root"
		for level := 1; level <= MaxDepth; level++ {
			snap.Resources = append(snap.Resources,
				Resource{Name: fmt.Sprintf("folder:d%d", level), Parent: parent},
				Resource{Name: fmt.Sprintf("folder:s%d", level), Parent: parent})
			parent = fmt.Sprintf("folder:d%d", level)
		}
		scopes := []string{"root"}
		for _, r := range snap.Resources {
			scopes = append(scopes, r.Name)
		}
		roles := []string{"few", "some", "many", "everywhere"}
		defined := map[string]int{"few": 2, "some": 8, "many": 40, "everywhere": len(scopes)}
		for _, role := range roles {
			for _, i := range rng.Perm(len(scopes))[:defined[role]] {
				snap.Roles = append(snap.Roles, Role{Name: role, Scope: scopes[i], Permissions: []string{"p"}})
			}
		}
		x, err := NewIndex(snap)
		if err != nil {
			t.Fatal(err)
		}
		check := func(when string) {
			t.Helper()
			for _, at := range scopes {
				var buf [MaxDepth + 1]uint32
				path := x.path(x.lookupNode(at), buf[:0])
				for _, name := range roles {
					role := x.roleID(name)
					want := -1
					for i, a := range path {
						if x.roleDefs[roleKey(a, role)] != nil {
							want = i
							break
						}
					}
					if got := x.definitionOn(path, role); got != want {
						t.Fatalf("seed %d, %s: %q at %s is defined %d levels up, want %d", seed, when, name, at, got, want)
					}
				}
			}
		}
		check("as loaded")
		// A write's view, which puts and deletes definitions over the
		// index's, finds the nearest of them as it leaves them.
		after := &view{x: x, parents: map[uint32]uint32{}, grants: map[uint64][]subjectGrant{},
			blocks: map[uint64][]*blockEntry{}, roles: map[uint64]*roleDef{}, roleScopes: map[uint32][]uint32{},
			newSubj: map[string]uint32{}, newRoles: map[string]uint32{}, changed: map[uint32][]uint32{}}
		var changes []Change
		for range 12 {
			r := Role{Name: roles[rng.IntN(len(roles))], Scope: scopes[rng.IntN(len(scopes))], Permissions: []string{"p"}}
			op := OpPutRole
			if rng.IntN(2) == 0 {
				op = OpDeleteRole
			}
			changes = append(changes, Change{Op: op, Role: &r})
		}
		after.lay(changes)
		for _, at := range scopes {
			var buf [MaxDepth + 1]uint32
			path := after.path(x.lookupNode(at), buf[:0])
			for _, name := range roles {
				role := x.roleID(name)
				var want *roleDef
				for _, a := range path {
					if want = after.definedAt(a, role); want != nil {
						break
					}
				}
				if got := after.resolve(path, role); got != want {
					t.Fatalf("seed %d, a write's view: %q at %s resolves to %+v, want %+v", seed, name, at, got, want)
				}
			}
		}
		// Half the definitions go, one change set at a time.
		for _, i := range rng.Perm(len(snap.Roles))[:len(snap.Roles)/2] {
			r := snap.Roles[i]
			if err := x.Apply(ChangeSet{Revision: x.rev + 1, Changes: []Change{{Op: OpDeleteRole, Role: &Role{Name: r.Name, Scope: r.Scope}}}}); err != nil {
				t.Fatal(err)
			}
		}
		check("after deletions")
	}
}

// listers finds, through the index of what each definition lists, the
// roles a scan of every definition's assignable_roles finds, as definitions
// are put, redefined with other lists, deleted, and go with the resources
// they are defined on.
func TestListersAreTheDefinitionsListingARole(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 1))
	snap := Snapshot{Permissions: []Permission{{Name: "p"}}}
	for i := range 6 {
		snap.Resources = append(snap.Resources, Resource{Name: fmt.Sprintf("folder:f%d", i)})
	}
	x, err := NewIndex(snap)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "b", "c", "d", "e", Wildcard}
	scan := func(role string) []string {
		var out []string
		for _, d := range x.roleDefs {
			if slices.Contains(d.AssignableRoles, role) {
				out = append(out, d.Name)
			}
		}
		out = append(out, role)
		slices.Sort(out)
		return slices.Compact(out)
	}
	for step := range 400 {
		var c Change
		scope := fmt.Sprintf("folder:f%d", rng.IntN(6))
		switch rng.IntN(8) {
		case 0:
			c = Change{Op: OpDeleteRole, Role: &Role{Name: names[rng.IntN(5)], Scope: scope}}
		case 1:
			if x.lookupNode(scope) != noNode && x.nodes[x.lookupNode(scope)].first == noNode {
				c = Change{Op: OpDeleteResource, Resource: &Resource{Name: scope}}
			} else {
				c = Change{Op: OpPutResource, Resource: &Resource{Name: scope, Parent: RootName}}
			}
		default:
			if x.lookupNode(scope) == noNode {
				c = Change{Op: OpPutResource, Resource: &Resource{Name: scope, Parent: RootName}}
				break
			}
			var listed []string
			for _, n := range names {
				if rng.IntN(3) == 0 {
					listed = append(listed, n)
				}
			}
			c = Change{Op: OpPutRole, Role: &Role{Name: names[rng.IntN(5)], Scope: scope, Permissions: []string{"p"}, AssignableRoles: sortedSet(listed)}}
		}
		if err := x.Apply(ChangeSet{Revision: x.rev + 1, Changes: []Change{c}}); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		for _, role := range names[:5] {
			if got, want := x.listers([]string{role}), scan(role); !slices.Equal(got, want) {
				t.Fatalf("step %d, after %v: listers of %q are %v, want %v", step, c.Op, role, got, want)
			}
		}
	}
}
