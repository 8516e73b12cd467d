package authz_test

import (
	"fmt"
	"iter"
	"runtime"
	"strings"
	"testing"
	"time"

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

// deepListsWorld is longListsWorld on each level of a chain below root,
// org:a the first level and d:31 the last: on each, 100 roles defined, each
// listing 1,000 names (the last "*" and 999), all granted to user:a there;
// expiring of those grants, on the last levels, run out at different
// times. user:m hosts org:a, and user:a hosts d:own, below d:31, the
// deepest a resource may be.
func deepListsWorld(tb testing.TB, expiring int) *world {
	tb.Helper()
	if testing.Short() || raceDetector {
		tb.Skip("writes against a world of 3,200,000 listed names")
	}
	p := attackPolicy()
	lists := make([][]string, authz.MaxRolesPerHolder)
	for r := range lists {
		lists[r] = make([]string, authz.MaxRolesPerScope)
		for i := range lists[r] {
			lists[r][i] = fmt.Sprintf("o%03d-%04d", r, i)
		}
	}
	lists[len(lists)-1] = append(lists[len(lists)-1][1:], authz.Wildcard)
	parent := "org:a"
	var levels []string
	for l := 1; l < authz.MaxDepth; l++ {
		name := "org:a"
		if l > 1 {
			name = fmt.Sprintf("d:%02d", l)
			p.Resources = append(p.Resources, authz.Resource{Name: name, Parent: parent})
		}
		parent = name
		levels = append(levels, name)
		for r := range authz.MaxRolesPerHolder {
			p.Roles = append(p.Roles, authz.Role{Name: fmt.Sprintf("h%02d-%03d", l, r), Scope: name,
				Permissions: []string{"org.admin", "call.join"}, AssignableRoles: lists[r]})
		}
	}
	w := newWorld(tb, p)
	expires := w.clock.Now().Add(time.Hour)
	var grants []authz.Change
	for i := len(levels) - 1; i >= 0; i-- {
		for r := authz.MaxRolesPerHolder - 1; r >= 0; r-- {
			g := &authz.Grant{Subject: "user:a", Role: fmt.Sprintf("h%02d-%03d", i+1, r), Resource: levels[i]}
			if len(grants) < expiring {
				g.Expires = expires.Add(time.Duration(len(grants)) * time.Minute)
			}
			grants = append(grants, authz.Change{Op: authz.OpPutGrant, Grant: g})
		}
	}
	w.store(grants...)
	w.grant("user:m", "host", "org:a")
	w.put("d:own", parent)
	w.grant("user:a", "host", "d:own")
	return w
}

// BenchmarkActorWithDeepLongAssignableLists times, in deepListsWorld with
// 200 of user:a's grants running out at different times, user:a's writes:
// a PutRole and a DeleteRole at org:a, a Grant through "*" and its Revoke,
// a moderator's mute of user:a, a page of what user:a may assign, and the
// deletion of d:own.
func BenchmarkActorWithDeepLongAssignableLists(b *testing.B) {
	w := deepListsWorld(b, 200)
	listed := make([]string, 0, authz.MaxRolesPerScope-1)
	for i := 1; i < authz.MaxRolesPerScope; i++ {
		listed = append(listed, fmt.Sprintf("o%03d-%04d", 0, i))
	}
	measure := func(b *testing.B, name string, fn func() error) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	measure(b, "PutRole", func() error {
		_, err := w.eng.PutRole(w.ctx, as("user:a"), authz.Role{Name: "deputy", Scope: "org:a", Permissions: []string{"call.join"}, AssignableRoles: listed})
		return err
	})
	measure(b, "DeleteRole", func() error {
		if _, err := w.eng.PutRole(w.ctx, w.by, authz.Role{Name: "gone", Scope: "org:a", Permissions: []string{"call.join"}}); err != nil {
			return err
		}
		_, err := w.eng.DeleteRole(w.ctx, as("user:a"), "org:a", "gone")
		return err
	})
	measure(b, "GrantThroughWildcard", func() error {
		_, err := w.eng.Grant(w.ctx, as("user:a"), authz.Grant{Subject: "user:b", Role: "h01-000", Resource: "org:a"})
		return err
	})
	measure(b, "Revoke", func() error {
		_, err := w.eng.Revoke(w.ctx, as("user:a"), authz.Grant{Subject: "user:b", Role: "h01-000", Resource: "org:a"})
		return err
	})
	measure(b, "Block", func() error {
		_, _, err := w.eng.Block(w.ctx, as("user:m"), authz.Block{Subject: "user:a", Resource: "org:a", Permissions: []string{"call.join"}})
		return err
	})
	measure(b, "ListRolesAssignableBy", func() error {
		_, _, _, err := w.idx.ListRolesPage("org:a", "user:a", authz.MaxPageSize, "")
		return err
	})
	measure(b, "DeleteOwnResource", func() error {
		if _, err := w.eng.DeleteResource(w.ctx, as("user:a"), "d:own"); err != nil {
			return err
		}
		w.put("d:own", "d:31")
		w.grant("user:a", "host", "d:own")
		return nil
	})
}

// In deepListsWorld, user:a holds 3,100 roles on the way to its deepest
// resource, listing 3,100,000 names, and 200 of its grants run out at
// different times. Each of its writes was judged by all it may assign,
// gathered and sorted at each resource below and at each moment: its
// PutRole at org:a took a minute and 11 GB, a moderator's mute of it and
// its deletion of its own resource more. Each is judged by what the write
// changes: the definitions it holds before and after, compared, and the
// names listed by those that differ.
func TestAnActorWithDeepLongAssignableListsIsJudgedByWhatChanges(t *testing.T) {
	w := deepListsWorld(t, 200)
	const most = 100 << 20
	writes := []struct {
		what  string
		write func() error
	}{
		{"PutRole of deputy at org:a by user:a", func() error {
			_, err := w.eng.PutRole(w.ctx, as("user:a"), authz.Role{Name: "deputy", Scope: "org:a", Permissions: []string{"call.join"}, AssignableRoles: []string{"o000-0001"}})
			return err
		}},
		{"DeleteRole of deputy at org:a by user:a", func() error {
			_, err := w.eng.DeleteRole(w.ctx, as("user:a"), "org:a", "deputy")
			return err
		}},
		{"Block of call.join for user:a on org:a by user:m", func() error {
			_, _, err := w.eng.Block(w.ctx, as("user:m"), authz.Block{Subject: "user:a", Resource: "org:a", Permissions: []string{"call.join"}})
			return err
		}},
		{"DeleteResource of d:own by user:a", func() error {
			_, err := w.eng.DeleteResource(w.ctx, as("user:a"), "d:own")
			return err
		}},
	}
	for _, c := range writes {
		var err error
		bytes := allocated(func() { err = c.write() })
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if bytes > most {
			t.Errorf("%s allocated %d bytes; want at most %d", c.what, bytes, most)
		}
	}
	if d := w.check("user:a", "call.join", "org:a"); d.Allowed {
		t.Errorf("user:a may still join on org:a after the mute: %+v", d)
	}
}

// A full block takes from its subject all it may assign: in deepListsWorld
// user:a's roles on the way to d:31 list 3,100,000 names, each read, sorted
// and weighed, at each resource and moment judged, for seconds and a
// gigabyte and more. A write by an actor that would read more of them than
// MaxJudgedNames is refused, naming the limit, and writes nothing; the
// platform may make it.
func TestAnActorWriteReadsABoundedNumberOfListedNames(t *testing.T) {
	w := deepListsWorld(t, 0)
	var grants []authz.Change
	for l := 1; l < authz.MaxDepth; l++ {
		res := "org:a"
		if l > 1 {
			res = fmt.Sprintf("d:%02d", l)
		}
		for r := range authz.MaxRolesPerHolder {
			grants = append(grants, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:x", Role: fmt.Sprintf("h%02d-%03d", l, r), Resource: res}})
		}
	}
	w.store(grants...)
	block := authz.Block{Subject: "user:a", Resource: "d:31"}
	var e *authz.Error
	bytes := allocated(func() {
		e = w.refuses(authz.ResourceExhausted, "actor", "user:x", func() (authz.Revision, error) {
			rev, _, err := w.eng.Block(w.ctx, as("user:x"), block)
			return rev, err
		})
	})
	if !strings.Contains(e.Error(), fmt.Sprint(authz.MaxJudgedNames)) || !strings.Contains(e.Error(), "without an actor") {
		t.Errorf("refusal %q does not name the limit and the way around it", e)
	}
	if e.Meta["limit"] != fmt.Sprint(authz.MaxJudgedNames) {
		t.Errorf("refusal's metadata %v, want limit %d", e.Meta, authz.MaxJudgedNames)
	}
	if bytes > 100<<20 {
		t.Errorf("the refused Block allocated %d bytes; want at most %d", bytes, 100<<20)
	}
	if _, _, err := w.eng.Block(w.ctx, w.by, block); err != nil {
		t.Errorf("the platform's block: %v", err)
	}
}
