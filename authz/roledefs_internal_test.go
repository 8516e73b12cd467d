package authz

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// On paths of every length up to MaxDepth, with roles defined on the path,
// off it, and on more resources than the path holds, definitionOn finds
// the definition the walk up the path finds: the nearest.
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
