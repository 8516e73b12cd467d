package authz_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// longListsWorld is a world where user:a holds on org:a as many roles as
// one subject may hold on one resource, each listing in assignable_roles as
// many roles as a role may list: the last lists "*" and listed, the others
// names of their own, as long as listed's.
func longListsWorld(t *testing.T, listed func(i int) string) *world {
	t.Helper()
	if testing.Short() || raceDetector {
		t.Skip("times writes against a world of 100,000 listed names")
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

// quickly fails unless fn returns within limit: on these 2 cores the writes
// below take tenths of a second, where comparing name by name took seconds.
func quickly(t *testing.T, what string, limit time.Duration, fn func() error) {
	t.Helper()
	began := time.Now()
	err := fn()
	if took := time.Since(began); took > limit {
		t.Errorf("%s took %v; want under %v", what, took.Round(time.Millisecond), limit)
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// An actor's write is judged by what the actor may assign before and after
// it: with 100 roles of 1,000 names each, 100,000 names, compared with one
// another name by name.
func TestAnActorWithLongAssignableListsIsJudgedQuickly(t *testing.T) {
	w := longListsWorld(t, func(i int) string { return fmt.Sprintf("n%03d-%04d", 0, i) })
	var listed []string
	for i := 1; i < authz.MaxRolesPerScope; i++ {
		listed = append(listed, fmt.Sprintf("n%03d-%04d", 0, i))
	}
	quickly(t, "PutRole of a role listing 999 names by user:a", 2*time.Second, func() error {
		_, err := w.eng.PutRole(w.ctx, as("user:a"), authz.Role{Name: "deputy", Scope: "org:a", Permissions: []string{"call.join"}, AssignableRoles: listed})
		return err
	})
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
// the actor's roles list, 100,000 here, one by one, for 100,000 roles.
func TestTheRolesAnActorWithLongAssignableListsMayAssignAreListedQuickly(t *testing.T) {
	w := longListsWorld(t, func(i int) string { return fmt.Sprintf("n%03d-%04d", 0, i) })
	var listed []string
	quickly(t, "ListRoles(org:a, assignable_by: user:a), every page", 3*time.Second, func() error {
		token := ""
		for {
			page, next, _, err := w.idx.ListRolesPage("org:a", "user:a", authz.MaxPageSize, token)
			if err != nil {
				return err
			}
			for _, r := range page {
				listed = append(listed, r.Name)
			}
			if token = next; token == "" {
				return nil
			}
		}
	})
	if len(listed) != authz.MaxRolesPerHolder {
		t.Errorf("user:a may assign %d roles on org:a, want its %d own: %v", len(listed), authz.MaxRolesPerHolder, listed)
	}
	quickly(t, "Grant of held-000 by user:a", time.Second, func() error {
		_, err := w.eng.Grant(w.ctx, as("user:a"), authz.Grant{Subject: "user:b", Role: "held-000", Resource: "org:a"})
		return err
	})
}

// A block by an actor is judged by what its subject may hand out before and
// after it: with 100 roles of 1,000 names each held, 100,000 names,
// compared with one another name by name.
func TestAMuteOfAHolderOfLongAssignableListsIsJudgedQuickly(t *testing.T) {
	w := longListsWorld(t, func(i int) string { return fmt.Sprintf("n%03d-%04d", 0, i) })
	w.grant("user:m", "host", "org:a")
	quickly(t, "Block of call.join for user:a by user:m", 2*time.Second, func() error {
		_, _, err := w.eng.Block(w.ctx, as("user:m"), authz.Block{Subject: "user:a", Resource: "org:a", Permissions: []string{"call.join"}})
		return err
	})
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
