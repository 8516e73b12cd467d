package authz_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// auditWorld is vancastPolicy's world after nine writes by three callers,
// some on behalf of user:ann:
//
//	1 ApplyPolicy                                            test
//	2 Grant ann workspace.administrator on the workspace     svc:console
//	3 PutResource event:gala (and ann's creator grant)       svc:console for ann
//	4 Grant bob event.producer on event:gala                 svc:web for ann
//	5 Grant cid event.moderator on event:launch              svc:console
//	6 Block bob on event:gala                                svc:console
//	7 Revoke bob's event.producer on event:gala              svc:web for ann
//	8 PutRole event.translator at account:vancast            svc:admin
//	9 PutQuota of ann's events at account:vancast            svc:admin
func auditWorld(t *testing.T) *world {
	w := newWorld(t, vancastPolicy())
	console, web, admin := authz.Author{Caller: "svc:console"}, authz.Author{Caller: "svc:web", Actor: "user:ann"}, authz.Author{Caller: "svc:admin"}
	ann := authz.Author{Caller: "svc:console", Actor: "user:ann"}
	w.must("2")(w.eng.Grant(w.ctx, console, authz.Grant{Subject: "user:ann", Role: "workspace.administrator", Resource: "workspace:vancast-live"}))
	w.must("3")(w.eng.PutResource(w.ctx, ann, authz.Resource{Name: "event:gala", Parent: "workspace:vancast-live"}))
	w.must("4")(w.eng.Grant(w.ctx, web, authz.Grant{Subject: "user:bob", Role: "event.producer", Resource: "event:gala"}))
	w.must("5")(w.eng.Grant(w.ctx, console, authz.Grant{Subject: "user:cid", Role: "event.moderator", Resource: "event:launch"}))
	w.must("6")(noID(w.eng.Block(w.ctx, console, authz.Block{Subject: "user:bob", Resource: "event:gala", Reason: "spam"})))
	w.must("7")(w.eng.Revoke(w.ctx, web, authz.Grant{Subject: "user:bob", Role: "event.producer", Resource: "event:gala"}))
	w.must("8")(w.eng.PutRole(w.ctx, admin, authz.Role{Name: "event.translator", Scope: "account:vancast", Permissions: []string{"event.qa.moderate"}}))
	w.must("9")(w.eng.PutQuota(w.ctx, admin, authz.Quota{Scope: "account:vancast", ResourceType: "event", Subject: "user:ann", Limit: 5}))
	if w.idx.Revision() != 9 {
		t.Fatalf("the fixture is at revision %d, want 9", w.idx.Revision())
	}
	return w
}

// allChanges reads every page of f's change sets, size at a time.
func allChanges(t *testing.T, w *world, f authz.ChangeFilter, size int) []authz.ChangeSet {
	t.Helper()
	var out []authz.ChangeSet
	token := ""
	for range 10000 {
		page, next, err := w.eng.ListChanges(w.ctx, f, 0, size, token)
		if err != nil {
			t.Fatalf("ListChanges(%+v, %d, %q): %v", f, size, token, err)
		}
		if size > 0 && len(page) > size {
			t.Errorf("a page of %d records, want at most %d", len(page), size)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		token = next
	}
	t.Fatal("ListChanges never returned the last page")
	return nil
}

func revisions(sets []authz.ChangeSet) []authz.Revision {
	var out []authz.Revision
	for _, cs := range sets {
		out = append(out, cs.Revision)
	}
	return out
}

func TestChangeFilter(t *testing.T) {
	w := auditWorld(t)
	const and = "set ones combine with AND"
	cases := []struct {
		name string
		f    authz.ChangeFilter
		want []authz.Revision
	}{
		{"empty fields match all", authz.ChangeFilter{}, []authz.Revision{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"by actor: the end user a write was made for", authz.ChangeFilter{Actor: "user:ann"}, []authz.Revision{3, 4, 7}},
		{"by caller: the authenticated service", authz.ChangeFilter{Caller: "svc:web"}, []authz.Revision{4, 7}},
		{"by caller, with and without an actor", authz.ChangeFilter{Caller: "svc:console"}, []authz.Revision{2, 3, 5, 6}},
		{and + ": caller and actor", authz.ChangeFilter{Caller: "svc:console", Actor: "user:ann"}, []authz.Revision{3}},
		{and + ": caller and actor that never wrote together", authz.ChangeFilter{Caller: "svc:admin", Actor: "user:ann"}, nil},
		{"by subject: a change to the subject's grants and blocks", authz.ChangeFilter{Subject: "user:bob"}, []authz.Revision{4, 6, 7}},
		{"by subject: its grants, the resources it registered (with its creator role) and its quotas", authz.ChangeFilter{Subject: "user:ann"}, []authz.Revision{2, 3, 9}},
		{"by resource: a change on, of or under the resource", authz.ChangeFilter{Resource: "event:gala"}, []authz.Revision{3, 4, 6, 7}},
		{"by resource: registering a child is a change under it", authz.ChangeFilter{Resource: "workspace:vancast-live"}, []authz.Revision{1, 2, 3}},
		{"by resource: its role definitions and quotas", authz.ChangeFilter{Resource: "account:vancast"}, []authz.Revision{1, 8, 9}},
		{and + ": subject and resource", authz.ChangeFilter{Subject: "user:bob", Resource: "event:gala"}, []authz.Revision{4, 6, 7}},
		{and + ": subject, resource and actor", authz.ChangeFilter{Subject: "user:bob", Resource: "event:gala", Actor: "user:ann"}, []authz.Revision{4, 7}},
		{and + ": subject and caller", authz.ChangeFilter{Subject: "user:bob", Caller: "svc:console"}, []authz.Revision{6}},
		{and + ": subject and resource in one change, not in two of one write", authz.ChangeFilter{Subject: "user:ann", Resource: "event:launch"}, nil},
		{and + ": a subject with no change on the resource", authz.ChangeFilter{Subject: "user:cid", Resource: "event:gala"}, nil},
		{"a subject with no changes", authz.ChangeFilter{Subject: "user:nobody"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, size := range []int{0, 1, 2, 3, authz.MaxPageSize} {
				got := allChanges(t, w, c.f, size)
				if revs := revisions(got); !slices.Equal(revs, c.want) {
					t.Errorf("page size %d: revisions %v, want %v", size, revs, c.want)
				}
				for _, cs := range got {
					if !c.f.Matches(cs) {
						t.Errorf("revision %d does not match the filter it was listed by", cs.Revision)
					}
				}
			}
		})
	}

	t.Run("Each write appends a change record (revision, time, caller, actor, what changed)", func(t *testing.T) {
		sets := allChanges(t, w, authz.ChangeFilter{}, 0)
		want := []struct{ caller, actor string }{
			{"test", ""}, {"svc:console", ""}, {"svc:console", "user:ann"}, {"svc:web", "user:ann"},
			{"svc:console", ""}, {"svc:console", ""}, {"svc:web", "user:ann"}, {"svc:admin", ""}, {"svc:admin", ""},
		}
		for i, cs := range sets {
			if cs.Caller != want[i].caller || cs.Actor != want[i].actor || cs.Time.IsZero() || len(cs.Changes) == 0 {
				t.Errorf("record %d: caller %q, actor %q, time %v, %d changes; want caller %q, actor %q",
					cs.Revision, cs.Caller, cs.Actor, cs.Time, len(cs.Changes), want[i].caller, want[i].actor)
			}
		}
		if len(sets) == 9 && !slices.Equal(opsOf(sets[2]), []string{"put_resource", "put_grant"}) {
			t.Errorf("record 3 holds %v, want the resource and its creator's grant", opsOf(sets[2]))
		}
	})
}

func opsOf(cs authz.ChangeSet) []string {
	var out []string
	for _, c := range cs.Changes {
		out = append(out, c.Op.String())
	}
	return out
}

func TestListChangesPages(t *testing.T) {
	t.Run("pagination with page tokens returns every matching record exactly once, in order, past the log's read batches", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		var want []authz.Revision
		for i := range 600 {
			caller := "svc:a"
			if i%3 == 0 {
				caller = "svc:b"
			}
			rev, err := w.eng.Grant(w.ctx, authz.Author{Caller: caller}, authz.Grant{Subject: fmt.Sprintf("user:u%03d", i), Role: "user", Resource: "account:acme"})
			if err != nil {
				t.Fatal(err)
			}
			if caller == "svc:b" {
				want = append(want, rev)
			}
		}
		for _, size := range []int{1, 7, 200, authz.MaxPageSize} {
			if got := revisions(allChanges(t, w, authz.ChangeFilter{Caller: "svc:b"}, size)); !slices.Equal(got, want) {
				t.Errorf("page size %d: %d records %v..., want %d", size, len(got), got[:min(len(got), 5)], len(want))
			}
		}
		if got := allChanges(t, w, authz.ChangeFilter{}, 0); len(got) != 601 {
			t.Errorf("every record: %d, want 601", len(got))
		}
	})
	t.Run("a page token stays good as the log grows: the next page holds what was written since", func(t *testing.T) {
		w := auditWorld(t)
		f := authz.ChangeFilter{Actor: "user:ann"}
		page, token, err := w.eng.ListChanges(w.ctx, f, 0, 3, "")
		if err != nil || !slices.Equal(revisions(page), []authz.Revision{3, 4, 7}) || token == "" {
			t.Fatalf("first page = %v, %q, %v", revisions(page), token, err)
		}
		w.must("Grant for ann")(w.eng.Grant(w.ctx, authz.Author{Caller: "svc:web", Actor: "user:ann"}, authz.Grant{Subject: "user:dee", Role: "workspace.producer", Resource: "workspace:vancast-live"}))
		page, token, err = w.eng.ListChanges(w.ctx, f, 0, 3, token)
		if err != nil || !slices.Equal(revisions(page), []authz.Revision{10}) || token != "" {
			t.Errorf("next page = %v, %q, %v; want [10] and the last page", revisions(page), token, err)
		}
	})
	t.Run("ListChanges of an empty filter result is one empty last page", func(t *testing.T) {
		w := auditWorld(t)
		page, token, err := w.eng.ListChanges(w.ctx, authz.ChangeFilter{Caller: "svc:nobody"}, 0, 0, "")
		if err != nil || len(page) != 0 || token != "" {
			t.Errorf("= %v, %q, %v", page, token, err)
		}
	})
	t.Run("after_revision starts the log after it, and pages go on from there", func(t *testing.T) {
		w := auditWorld(t)
		var got []authz.Revision
		token := ""
		for range 10 {
			page, next, err := w.eng.ListChanges(w.ctx, authz.ChangeFilter{}, 5, 2, token)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, revisions(page)...)
			if token = next; token == "" {
				break
			}
		}
		if !slices.Equal(got, []authz.Revision{6, 7, 8, 9}) {
			t.Errorf("after revision 5: %v, want [6 7 8 9]", got)
		}
	})
	t.Run("a page token is bound to the filters and after_revision it was made for", func(t *testing.T) {
		w := auditWorld(t)
		f := authz.ChangeFilter{Actor: "user:ann"}
		_, token, err := w.eng.ListChanges(w.ctx, f, 0, 1, "")
		if err != nil || token == "" {
			t.Fatalf("first page: token %q, %v", token, err)
		}
		for _, other := range []struct {
			name  string
			f     authz.ChangeFilter
			after authz.Revision
		}{
			{"no filter", authz.ChangeFilter{}, 0},
			{"another actor", authz.ChangeFilter{Actor: "user:bob"}, 0},
			{"an added caller", authz.ChangeFilter{Actor: "user:ann", Caller: "svc:web"}, 0},
			{"another after_revision", f, 2},
		} {
			_, _, err := w.eng.ListChanges(w.ctx, other.f, other.after, 1, token)
			if e, ok := err.(*authz.Error); !ok || e.Code != authz.Invalid || e.Field != "page_token" {
				t.Errorf("the token with %s: %v, want INVALID_ARGUMENT on page_token", other.name, err)
			}
		}
		if page, _, err := w.eng.ListChanges(w.ctx, f, 0, 1, token); err != nil || !slices.Equal(revisions(page), []authz.Revision{4}) {
			t.Errorf("the token with its own filter: %v, %v; want [4]", revisions(page), err)
		}
	})
	t.Run("an after_revision the log was compacted past is FAILED_PRECONDITION", func(t *testing.T) {
		w := auditWorld(t)
		if err := w.be.Compact(w.ctx, 5); err != nil {
			t.Fatal(err)
		}
		_, _, err := w.eng.ListChanges(w.ctx, authz.ChangeFilter{}, 3, 0, "")
		wantError(t, err, authz.FailedPrecondition, "after_revision", "3")
		if page, _, err := w.eng.ListChanges(w.ctx, authz.ChangeFilter{}, 5, 0, ""); err != nil || !slices.Equal(revisions(page), []authz.Revision{6, 7, 8, 9}) {
			t.Errorf("after the compaction point: %v, %v; want [6 7 8 9]", revisions(page), err)
		}
	})
	t.Run("asked for the whole log, a compacted one is read from where it begins", func(t *testing.T) {
		w := auditWorld(t)
		if err := w.be.Compact(w.ctx, 5); err != nil {
			t.Fatal(err)
		}
		if page, _, err := w.eng.ListChanges(w.ctx, authz.ChangeFilter{}, 0, 0, ""); err != nil || !slices.Equal(revisions(page), []authz.Revision{6, 7, 8, 9}) {
			t.Errorf("the whole log after a compaction: %v, %v; want [6 7 8 9]", revisions(page), err)
		}
	})
	t.Run("asked for the whole log, one a compaction moves on while it is read is read from where it begins", func(t *testing.T) {
		w := auditWorld(t)
		if err := w.be.Compact(w.ctx, 5); err != nil {
			t.Fatal(err)
		}
		w.be.mu.Lock()
		w.be.onLogStart = func() {
			if err := w.be.Compact(w.ctx, 7); err != nil {
				t.Error(err)
			}
		}
		w.be.mu.Unlock()
		if page, _, err := w.eng.ListChanges(w.ctx, authz.ChangeFilter{}, 0, 0, ""); err != nil || !slices.Equal(revisions(page), []authz.Revision{8, 9}) {
			t.Errorf("the whole log during a compaction: %v, %v; want [8 9]", revisions(page), err)
		}
	})
	for _, token := range []string{"abc", "-1", "1.5", "0x10", " 3", "3"} {
		t.Run("a bad page_token is INVALID_ARGUMENT: "+token, func(t *testing.T) {
			w := auditWorld(t)
			_, _, err := w.eng.ListChanges(w.ctx, authz.ChangeFilter{}, 0, 0, token)
			wantError(t, err, authz.Invalid, "page_token", token)
		})
	}
	for _, size := range []int{-1, authz.MaxPageSize + 1} {
		t.Run(fmt.Sprintf("a page_size out of range is INVALID_ARGUMENT: %d", size), func(t *testing.T) {
			w := auditWorld(t)
			_, _, err := w.eng.ListChanges(w.ctx, authz.ChangeFilter{}, 0, size, "")
			wantError(t, err, authz.Invalid, "page_size", fmt.Sprint(size))
		})
	}
}

// A page holds at most MaxPageChanges changes, a change set of more in
// parts, a page each: a log of large policies is answered a few at a
// time, and every change set still comes once, in order.
func TestListChangesPagesHoldAtMostMaxPageChanges(t *testing.T) {
	w := newWorld(t, streamPolicy())
	grants := func(n, from int) []authz.Change {
		var out []authz.Change
		for i := range n {
			out = append(out, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%d", from+i), Role: "user", Resource: "account:acme"}})
		}
		return out
	}
	sizes := []int{4000, 4000, 4000, authz.MaxPageChanges + 500, 10, 10, 6000, 6000}
	first := w.idx.Revision() + 1
	var want []authz.Revision
	for i, n := range sizes {
		w.store(grants(n, 100_000*i)...)
		want = append(want, first+authz.Revision(i))
	}
	var got [][]authz.Revision
	token := ""
	for range 20 {
		page, next, err := w.eng.ListChanges(w.ctx, authz.ChangeFilter{}, first-1, authz.MaxPageSize, token)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, revisions(page))
		changes := 0
		for _, cs := range page {
			changes += len(cs.Changes)
		}
		if changes > authz.MaxPageChanges {
			t.Errorf("a page of %d change sets holds %d changes", len(page), changes)
		}
		for i, cs := range page {
			if want := i == 0 && len(page) == 1 && changes == authz.MaxPageChanges; cs.Continued != want {
				t.Errorf("change set %d of a page of %d, of %d changes: Continued = %v", cs.Revision, len(page), changes, cs.Continued)
			}
		}
		if token = next; token == "" {
			break
		}
	}
	// 4000+4000 fit, a third would not; the large one comes in two parts,
	// the first alone and continued, the last with the small ones and the
	// first 6000.
	wantPages := [][]authz.Revision{want[0:2], want[2:3], want[3:4], want[3:7], want[7:8]}
	if !slices.EqualFunc(got, wantPages, slices.Equal) {
		t.Errorf("pages %v, want %v", got, wantPages)
	}
	// Pages of one change set each: the large one's parts one each too.
	got, token = nil, ""
	for range 20 {
		page, next, err := w.eng.ListChanges(w.ctx, authz.ChangeFilter{}, first-1, 1, token)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, revisions(page))
		if token = next; token == "" {
			break
		}
	}
	wantPages = [][]authz.Revision{want[0:1], want[1:2], want[2:3], want[3:4], want[3:4], want[4:5], want[5:6], want[6:7], want[7:8], nil}
	if !slices.EqualFunc(got, wantPages, slices.Equal) {
		t.Errorf("pages of one %v, want %v", got, wantPages)
	}
}

// A resource's filter keeps the change sets that change what is registered
// under it: a child registered, moved in, moved out or deleted, and the
// change names the parent a resource leaves.
func TestAChangeFilterOfAParentSeesItsChildrenLeave(t *testing.T) {
	w := newWorld(t, vancastPolicy())
	platform := authz.Author{Caller: "svc:console"}
	w.must("account:other")(w.eng.PutResource(w.ctx, platform, authz.Resource{Name: "account:other"}))
	base := w.idx.Revision()
	w.must("register")(w.eng.PutResource(w.ctx, platform, authz.Resource{Name: "workspace:x", Parent: "account:vancast"}))
	w.must("move out")(w.eng.PutResource(w.ctx, platform, authz.Resource{Name: "workspace:x", Parent: "account:other"}))
	w.must("register y")(w.eng.PutResource(w.ctx, platform, authz.Resource{Name: "workspace:y", Parent: "account:other"}))
	w.must("delete y")(w.eng.DeleteResource(w.ctx, platform, "workspace:y"))
	w.must("move back")(w.eng.PutResource(w.ctx, platform, authz.Resource{Name: "workspace:x", Parent: "account:vancast"}))
	// A policy moves it out again.
	p := vancastPolicy()
	p.Resources = append(p.Resources, authz.Resource{Name: "account:other"}, authz.Resource{Name: "workspace:x", Parent: "account:other"})
	if _, _, err := w.eng.ApplyPolicy(w.ctx, platform, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		resource string
		want     []authz.Revision
	}{
		{"account:vancast", []authz.Revision{base + 1, base + 2, base + 5, base + 6}},
		{"account:other", []authz.Revision{base + 2, base + 3, base + 4, base + 5, base + 6}},
		{"workspace:x", []authz.Revision{base + 1, base + 2, base + 5, base + 6}},
	} {
		var got []authz.Revision
		for _, cs := range allChanges(t, w, authz.ChangeFilter{Resource: c.resource}, 0) {
			if cs.Revision > base {
				got = append(got, cs.Revision)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("the changes of %s: revisions %v, want %v", c.resource, got, c.want)
		}
	}
	var from []string
	for _, cs := range allChanges(t, w, authz.ChangeFilter{}, 0)[base:] {
		from = append(from, cs.Changes[len(cs.Changes)-1].PreviousParent)
	}
	if want := []string{"", "account:vancast", "", "account:other", "account:other", "account:vancast"}; !slices.Equal(from, want) {
		t.Errorf("the parents left: %q, want %q", from, want)
	}
}
