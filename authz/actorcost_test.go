package authz_test

import (
	"fmt"
	"iter"
	"runtime"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// longListsWorld is a world where user:a holds on org:a as many roles as
// one subject may hold on one resource, each listing in assignable_roles as
// many roles as a role may list: the last lists "*" and listed, the others
// names of their own, as long as listed's.
func longListsWorld(t testing.TB, listed func(i int) string) *world {
	t.Helper()
	if testing.Short() || raceDetector {
		t.Skip("writes against a world of 100,000 listed names")
	}
	w := newWorld(t, attackPolicy())
	names := func(f func(i int) string) []string {
		out := make([]string, authz.MaxRolesPerScope)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	for r := range authz.MaxRolesPerHolder {
		role := authz.Role{Name: fmt.Sprintf("held-%03d", r), Scope: "org:a", Permissions: []string{"org.admin", "call.join"}}
		if r == authz.MaxRolesPerHolder-1 {
			role.AssignableRoles = append(names(listed)[1:], authz.Wildcard)
		} else {
			role.AssignableRoles = names(func(i int) string { return fmt.Sprintf("o%03d-%04d", r, i) })
		}
		w.role(role)
		w.grant("user:a", role.Name, "org:a")
	}
	return w
}

// An actor's write is judged by what the actor may assign before and after
// it: with 100 roles of 1,000 names each, 100,000 names, compared with one
// another name by name, took seconds (BenchmarkActorWithLongAssignableLists
// times it): the write is judged, and made.
func TestAnActorWithLongAssignableListsIsJudged(t *testing.T) {
	w := longListsWorld(t, func(i int) string { return fmt.Sprintf("n%03d-%04d", 0, i) })
	var listed []string
	for i := 1; i < authz.MaxRolesPerScope; i++ {
		listed = append(listed, fmt.Sprintf("n%03d-%04d", 0, i))
	}
	if _, err := w.eng.PutRole(w.ctx, as("user:a"), authz.Role{Name: "deputy", Scope: "org:a", Permissions: []string{"call.join"}, AssignableRoles: listed}); err != nil {
		t.Fatalf("PutRole of a role listing 999 names by user:a: %v", err)
	}
	roles, _, _, err := w.idx.ListRolesPage("org:a", "", authz.MaxPageSize, "")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range roles {
		found = found || r.Name == "deputy" && len(r.AssignableRoles) == len(listed)
	}
	if !found {
		t.Errorf("deputy is not defined at org:a as written: %v", len(roles))
	}
}

// Each role a page of the roles an actor may assign looks at, through "*",
// looks at each role that one lists: each was looked for among the names
// the actor's roles list, 100,000 here, one by one, for 100,000 roles,
// which took seconds (BenchmarkActorWithLongAssignableLists times it): the
// pages list the actor's own roles, and a grant of one is made.
func TestTheRolesAnActorWithLongAssignableListsMayAssignAreListed(t *testing.T) {
	w := longListsWorld(t, func(i int) string { return fmt.Sprintf("n%03d-%04d", 0, i) })
	var listed []string
	for r, err := range assignableBy(w, "user:a") {
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, r.Name)
	}
	if len(listed) != authz.MaxRolesPerHolder {
		t.Errorf("user:a may assign %d roles on org:a, want its %d own: %v", len(listed), authz.MaxRolesPerHolder, listed)
	}
	if _, err := w.eng.Grant(w.ctx, as("user:a"), authz.Grant{Subject: "user:b", Role: "held-000", Resource: "org:a"}); err != nil {
		t.Fatalf("Grant of held-000 by user:a: %v", err)
	}
}

// A block by an actor is judged by what its subject may hand out before and
// after it: with 100 roles of 1,000 names each held, 100,000 names,
// compared with one another name by name, took seconds
// (BenchmarkActorWithLongAssignableLists times it): the mute is made.
func TestAMuteOfAHolderOfLongAssignableListsIsJudged(t *testing.T) {
	w := longListsWorld(t, func(i int) string { return fmt.Sprintf("n%03d-%04d", 0, i) })
	w.grant("user:m", "host", "org:a")
	if _, _, err := w.eng.Block(w.ctx, as("user:m"), authz.Block{Subject: "user:a", Resource: "org:a", Permissions: []string{"call.join"}}); err != nil {
		t.Fatalf("Block of call.join for user:a by user:m: %v", err)
	}
	if d := w.check("user:a", "call.join", "org:a"); d.Allowed {
		t.Errorf("user:a may still join on org:a after the mute: %+v", d)
	}
}

// allocated is what fn allocates, in bytes, the engine's own goroutines'
// allocations meanwhile included.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// An actor's grant of what it holds itself is judged by its permissions:
// what it may assign by the 100,000 names its roles list need not be read,
// and was, for every resource the grant changes.
func TestAGrantOfWhatTheActorHoldsDoesNotReadWhatItMayAssign(t *testing.T) {
	w := longListsWorld(t, func(i int) string { return fmt.Sprintf("n%03d-%04d", 0, i) })
	var err error
	bytes := allocated(func() {
		_, err = w.eng.Grant(w.ctx, as("user:a"), authz.Grant{Subject: "user:b", Role: "held-000", Resource: "org:a"})
	})
	if err != nil {
		t.Fatalf("Grant of held-000 by user:a: %v", err)
	}
	// The names alone, listed and sorted, are some 5 MB; here the grant
	// allocates less than 1 MB.
	if bytes > 4<<20 {
		t.Errorf("Grant of held-000 by user:a allocated %d bytes; want at most %d", bytes, 4<<20)
	}
	if d := w.check("user:b", "call.join", "org:a"); !d.Allowed {
		t.Errorf("user:b may not join on org:a after the grant: %+v", d)
	}
}

// assignableBy yields the roles on org:a that actor may assign, page by
// page.
func assignableBy(w *world, actor string) iter.Seq2[authz.Role, error] {
	return func(yield func(authz.Role, error) bool) {
		token := ""
		for {
			page, next, _, err := w.idx.ListRolesPage("org:a", actor, authz.MaxPageSize, token)
			if err != nil {
				yield(authz.Role{}, err)
				return
			}
			for _, r := range page {
				if !yield(r, nil) {
					return
				}
			}
			if token = next; token == "" {
				return
			}
		}
	}
}

// BenchmarkActorWithLongAssignableLists times what the tests above judge,
// in longListsWorld: an actor's PutRole (alternating between two lists, so
// that each is a change), every page of the roles it may assign, and a
// moderator's mute of it and its lifting.
func BenchmarkActorWithLongAssignableLists(b *testing.B) {
	w := longListsWorld(b, func(i int) string { return fmt.Sprintf("n%03d-%04d", 0, i) })
	w.grant("user:m", "host", "org:a")
	var listed []string
	for i := 1; i < authz.MaxRolesPerScope; i++ {
		listed = append(listed, fmt.Sprintf("n%03d-%04d", 0, i))
	}
	b.Run("PutRole", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			role := authz.Role{Name: "deputy", Scope: "org:a", Permissions: []string{"call.join"}, AssignableRoles: listed[i%2:]}
			if _, err := w.eng.PutRole(w.ctx, as("user:a"), role); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ListRolesAssignableBy", func(b *testing.B) {
		for b.Loop() {
			for _, err := range assignableBy(w, "user:a") {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("BlockAndUnblock", func(b *testing.B) {
		for b.Loop() {
			_, id, err := w.eng.Block(w.ctx, as("user:m"), authz.Block{Subject: "user:a", Resource: "org:a", Permissions: []string{"call.join"}})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.eng.Unblock(w.ctx, as("user:m"), "user:a", "org:a", id); err != nil {
				b.Fatal(err)
			}
		}
	})
}
