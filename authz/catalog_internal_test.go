package authz

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// names answers every set with its permissions' names, sorted, whether it
// is kept, shared or past what the cache keeps; the holders of one set
// share one list, which no append writes into.
func TestNamesOfSetsAreSharedAndRight(t *testing.T) {
	perms := make([]Permission, 300) // past the 256 a cached set holds
	for i := range perms {
		perms[i] = Permission{Name: fmt.Sprintf("p%03d", i)}
	}
	c, err := newCatalog(perms, "permissions")
	if err != nil {
		t.Fatal(err)
	}
	want := func(set bitset) []string {
		var out []string
		for i, p := range c.perms {
			if set.has(int32(i)) {
				out = append(out, p.Name)
			}
		}
		return out
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 3 * maxNameLists {
				set := newBitset(len(c.perms))
				if rng.IntN(2) == 0 {
					set = set[:4] // a set of the first 256 permissions, which the cache keeps
				}
				for range rng.IntN(6) {
					set.set(int32(rng.IntN(min(64*len(set), len(c.perms)))))
				}
				if got, w := c.names(set), want(set); !slices.Equal(got, w) {
					t.Errorf("names(%v) = %v, want %v", set, got, w)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(*c.lists.Load()); n > maxNameLists {
		t.Errorf("the cache keeps %d lists, more than %d", n, maxNameLists)
	}
	c, _ = newCatalog(perms, "permissions") // its cache empty
	set := newBitset(len(c.perms))[:4]
	set.set(3)
	set.set(7)
	a, b := c.names(set), c.names(slices.Clone(set))
	if &a[0] != &b[0] {
		t.Error("two holders of one set got lists of their own")
	}
	mine := append(a, "p998")
	_ = append(b, "p999")
	if !slices.Equal(mine, []string{"p003", "p007", "p998"}) || !slices.Equal(b, []string{"p003", "p007"}) {
		t.Errorf("holders' appends to one list wrote over each other: %v, %v", mine, b)
	}
}
