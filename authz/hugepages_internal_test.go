package authz

import (
	"fmt"
	"slices"
	"testing"
)

// recordCollapses makes the index ask for huge pages at any size, and
// records the arrays it asks for instead of asking the kernel.
func recordCollapses(t *testing.T) *[]arrayAt {
	floor, ask := hugeFloor, collapseArray
	t.Cleanup(func() { hugeFloor, collapseArray = floor, ask })
	var asked []arrayAt
	hugeFloor = 0
	collapseArray = func(a hugeArray) error {
		asked = append(asked, arrayAt{uintptr(a.p), a.n})
		return nil
	}
	return &asked
}

func arraysOf(x *Index) []arrayAt {
	var at []arrayAt
	x.eachArray(func(a hugeArray) {
		if a.n > 0 {
			at = append(at, arrayAt{uintptr(a.p), a.n})
		}
	})
	return at
}

func hugeTestIndex(t *testing.T, users int) *Index {
	t.Helper()
	b := NewBuilder(SystemClock{})
	must := func(err error) {
		if err != nil {
			t.Helper()
			t.Fatal(err)
		}
	}
	must(b.Permission(Permission{Name: "call.join"}))
	must(b.Resource(Resource{Name: "call:1"}))
	must(b.Role(Role{Name: "guest", Scope: RootName, Permissions: []string{"call.join"}}))
	for i := range users {
		must(b.Grant(Grant{Subject: fmt.Sprintf("user:%d", i), Role: "guest", Resource: "call:1"}))
	}
	x, err := b.Build(1)
	must(err)
	return x
}

func TestTheIndexAsksForHugePagesForEveryArrayOnceLarge(t *testing.T) {
	asked := recordCollapses(t)
	x := hugeTestIndex(t, 100)
	if want := arraysOf(x); !slices.Equal(*asked, want) {
		t.Fatalf("built: asked for %d arrays, want all %d: %v, want %v", len(*asked), len(want), *asked, want)
	}

	// Grants to a thousand new subjects move the subjects' table and
	// lists: each array that moved is asked for, and only those.
	*asked = nil
	before := arraysOf(x)
	var cs ChangeSet
	cs.Revision = 2
	for i := range 1000 {
		g := Grant{Subject: fmt.Sprintf("user:new-%d", i), Role: "guest", Resource: "call:1"}
		cs.Changes = append(cs.Changes, Change{Op: OpPutGrant, Grant: &g})
	}
	if err := x.Apply(cs); err != nil {
		t.Fatal(err)
	}
	var moved []arrayAt
	for _, a := range arraysOf(x) {
		if !slices.Contains(before, a) {
			moved = append(moved, a)
		}
	}
	if len(moved) == 0 {
		t.Fatal("a thousand new subjects moved no array")
	}
	for _, a := range moved {
		if !slices.Contains(*asked, a) {
			t.Errorf("array %v moved and was not asked for", a)
		}
	}
	for _, a := range *asked {
		if !slices.Contains(moved, a) {
			t.Errorf("array %v was asked for again without moving", a)
		}
	}

	// A change that moves nothing asks for nothing.
	*asked = nil
	g := Grant{Subject: "user:0", Role: "guest", Resource: "call:1"}
	if err := x.Apply(ChangeSet{Revision: 3, Changes: []Change{{Op: OpDeleteGrant, Grant: &g}}}); err != nil {
		t.Fatal(err)
	}
	if len(*asked) != 0 {
		t.Errorf("a revoke asked for huge pages for %v", *asked)
	}
}

func TestASmallIndexAsksForNoHugePages(t *testing.T) {
	asked := recordCollapses(t)
	hugeFloor = 16 << 20
	x := hugeTestIndex(t, 100)
	if len(*asked) != 0 {
		t.Errorf("an index of %d bytes asked for huge pages for %v", total(arraysOf(x)), *asked)
	}
}

func total(at []arrayAt) uintptr {
	var n uintptr
	for _, a := range at {
		n += a.n
	}
	return n
}
