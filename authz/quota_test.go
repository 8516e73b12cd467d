package authz_test

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// Quoted rules on limits.
const (
	ruleQuota        = "Registering a resource that would exceed any quota on its ancestors fails with RESOURCE_EXHAUSTED, atomically"
	ruleQuotaScope   = "at most limit resources of that type may exist in the scope's subtree"
	ruleQuotaSubject = "(created by that subject, if one is named)"
	liveboxDedicated = "Dedicated Conference– If you select this option, then the user can create video conferencing rooms within the limits you allocate"
	ruleMaxHolders   = "granting a role on a resource where it already has max_holders holders is FAILED_PRECONDITION"
	ruleCreator      = "whoever registers such a resource as an actor gets that role on it in the same transaction (VancastVideo: \"any user that creates an event becomes its Owner\")"
)

// liveboxPolicy is Livebox's conference modes (seeds/000) over a master
// admin's account with two client portals:
//
//	root
//	└── account:livebox
//	    ├── client:dedicated ── folder:d1
//	    └── client:other     ── folder:o1
//
// "Dedicated Conference" may create rooms (rooms.create implies
// usher.resources.create.room) and use them; "Shared" may use the master admin's
// rooms; "Unshared" may use only rooms no other sub-user holds: max_holders
// 1 on rooms.
func liveboxPolicy() authz.Policy {
	return authz.Policy{
		Permissions: []authz.Permission{
			{Name: "rooms.use"},
			{Name: "rooms.create"},
			{Name: "rooms.assign"},
			{Name: "usher.resources.create.room", Parents: []string{"rooms.create"}},
			{Name: "usher.grants.write", Parents: []string{"rooms.assign"}},
		},
		Resources: []authz.Resource{
			{Name: "account:livebox"},
			{Name: "client:dedicated", Parent: "account:livebox"},
			{Name: "client:other", Parent: "account:livebox"},
			{Name: "folder:d1", Parent: "client:dedicated"},
			{Name: "folder:o1", Parent: "client:other"},
		},
		Roles: []authz.Role{
			{Name: "dedicated-conference", Scope: "root", Permissions: []string{"rooms.create", "rooms.use"}},
			{Name: "shared", Scope: "root", Permissions: []string{"rooms.use"}},
			{Name: "unshared", Scope: "root", Permissions: []string{"rooms.use"}, MaxHolders: 1, BindableOn: []string{"room"}},
		},
	}
}

func (w *world) quota(q authz.Quota) {
	w.t.Helper()
	rev, err := w.eng.PutQuota(w.ctx, w.by, q)
	w.ok(fmt.Sprintf("PutQuota %+v", q), rev, err)
}

// putAs registers name under parent on actor's behalf.
func (w *world) putAs(actor, name, parent string) {
	w.t.Helper()
	rev, err := w.eng.PutResource(w.ctx, as(actor), authz.Resource{Name: name, Parent: parent})
	w.ok("PutResource "+name+" as "+actor, rev, err)
}

// used is how many resources count against the quota (scope, typ,
// subject), as ListQuotas at scope says; -1 when there is no such quota.
func (w *world) used(scope, typ, subject string) int {
	w.t.Helper()
	qs, _, err := w.idx.ListQuotas(scope)
	if err != nil {
		w.t.Fatalf("ListQuotas(%s): %v", scope, err)
	}
	for _, q := range qs {
		if q.Scope == scope && q.ResourceType == typ && q.Subject == subject {
			return q.Used
		}
	}
	return -1
}

// must returns a sink for a write's results that fails the test on error:
// w.must("what")(w.eng.Write(...)).
func (w *world) must(what string) func(authz.Revision, error) {
	return func(rev authz.Revision, err error) {
		w.t.Helper()
		w.ok(what, rev, err)
	}
}

func (w *world) registered(name string) bool {
	w.t.Helper()
	_, _, err := w.idx.GetResource(name)
	return err == nil
}

func TestQuota(t *testing.T) {
	put := func(w *world, by authz.Author, name, parent string) func() (authz.Revision, error) {
		return func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, by, authz.Resource{Name: name, Parent: parent})
		}
	}
	cases := []struct {
		name string
		run  func(t *testing.T, w *world)
	}{
		{ruleQuota, func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "account:livebox", ResourceType: "room", Limit: 2})
			w.put("room:a", "client:dedicated")
			w.put("room:b", "folder:o1")
			e := w.refuses(authz.ResourceExhausted, "quota", "account:livebox/room", put(w, w.by, "room:c", "client:dedicated"))
			mentions(t, e, "account:livebox")
			if w.registered("room:c") {
				t.Error("the refused resource is registered")
			}
			if got := w.used("account:livebox", "room", ""); got != 2 {
				t.Errorf("used = %d, want 2", got)
			}
		}},
		{ruleQuota + ": any quota on its ancestors, the nearer one refusing", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "account:livebox", ResourceType: "room", Limit: 10})
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 1})
			w.put("room:a", "folder:d1")
			w.refuses(authz.ResourceExhausted, "quota", "client:dedicated/room", put(w, w.by, "room:b", "folder:d1"))
			w.put("room:b", "client:other")
		}},
		{ruleQuota + ": any quota on its ancestors, the farther one refusing", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "account:livebox", ResourceType: "room", Limit: 1})
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 10})
			w.put("room:a", "client:other")
			w.refuses(authz.ResourceExhausted, "quota", "account:livebox/room", put(w, w.by, "room:b", "folder:d1"))
		}},
		{ruleQuotaScope + ": other types do not count", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 1})
			w.put("room:a", "client:dedicated")
			w.put("folder:d2", "client:dedicated")
			if got := w.used("client:dedicated", "room", ""); got != 1 {
				t.Errorf("used = %d, want 1", got)
			}
		}},
		{ruleQuotaScope + ": resources outside the subtree do not count", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 1})
			w.put("room:a", "client:dedicated")
			w.put("room:b", "client:other")
			w.put("room:c", "root")
		}},
		{ruleQuotaScope + ": a quota set where resources exist counts them", func(t *testing.T, w *world) {
			w.put("room:a", "client:dedicated")
			w.put("room:b", "folder:d1")
			w.put("room:c", "client:other")
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 2})
			if got := w.used("client:dedicated", "room", ""); got != 2 {
				t.Errorf("used = %d, want 2", got)
			}
			w.refuses(authz.ResourceExhausted, "quota", "client:dedicated/room", put(w, w.by, "room:d", "client:dedicated"))
		}},
		{"Lowering a limit below the current use is allowed: it only stops further registrations", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 3})
			w.put("room:a", "client:dedicated")
			w.put("room:b", "client:dedicated")
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 1})
			if got := w.used("client:dedicated", "room", ""); got != 2 {
				t.Errorf("used = %d after lowering the limit, want 2", got)
			}
			w.refuses(authz.ResourceExhausted, "quota", "client:dedicated/room", put(w, w.by, "room:c", "client:dedicated"))
		}},
		{"setting a quota to what it is writes nothing", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 3})
			w.writesNothing(func() (authz.Revision, error) {
				return w.eng.PutQuota(w.ctx, w.by, authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 3})
			})
		}},
		{"deleting a resource frees its place", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 1})
			w.put("room:a", "folder:d1")
			w.refuses(authz.ResourceExhausted, "quota", "client:dedicated/room", put(w, w.by, "room:b", "folder:d1"))
			w.must("DeleteResource")(w.eng.DeleteResource(w.ctx, w.by, "room:a"))
			if got := w.used("client:dedicated", "room", ""); got != 0 {
				t.Errorf("used = %d after the delete, want 0", got)
			}
			w.put("room:b", "folder:d1")
		}},
		{"deleting a quota lifts its limit; deleting one that is not there is NOT_FOUND", func(t *testing.T, w *world) {
			q := authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 1}
			w.quota(q)
			w.put("room:a", "client:dedicated")
			w.must("DeleteQuota")(w.eng.DeleteQuota(w.ctx, w.by, q))
			w.put("room:b", "client:dedicated")
			w.refuses(authz.NotFound, "resource_type", "room", func() (authz.Revision, error) { return w.eng.DeleteQuota(w.ctx, w.by, q) })
		}},
		{liveboxDedicated, func(t *testing.T, w *world) {
			w.grant("user:sub1", "dedicated-conference", "client:dedicated")
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Subject: "user:sub1", Limit: 2})
			w.putAs("user:sub1", "room:s1", "client:dedicated")
			w.putAs("user:sub1", "room:s2", "folder:d1")
			e := w.refuses(authz.ResourceExhausted, "quota", "client:dedicated/room", put(w, as("user:sub1"), "room:s3", "client:dedicated"))
			mentions(t, e, "user:sub1")
			if got := w.used("client:dedicated", "room", "user:sub1"); got != 2 {
				t.Errorf("used = %d, want 2", got)
			}
		}},
		{ruleQuotaSubject + ": a per-subject quota counts only resources that subject registered as an actor", func(t *testing.T, w *world) {
			w.grant("user:sub1", "dedicated-conference", "client:dedicated")
			w.grant("user:sub2", "dedicated-conference", "client:dedicated")
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Subject: "user:sub1", Limit: 1})
			w.put("room:master1", "client:dedicated") // the master admin's, on the caller's own authority
			w.put("room:master2", "client:dedicated")
			w.putAs("user:sub2", "room:t1", "client:dedicated")
			w.putAs("user:sub2", "room:t2", "client:dedicated")
			w.putAs("user:sub1", "room:s1", "client:dedicated")
			if got := w.used("client:dedicated", "room", "user:sub1"); got != 1 {
				t.Errorf("used = %d, want 1", got)
			}
			w.refuses(authz.ResourceExhausted, "quota", "client:dedicated/room", put(w, as("user:sub1"), "room:s2", "client:dedicated"))
			w.putAs("user:sub2", "room:t3", "client:dedicated")
		}},
		{ruleQuotaSubject + ": a per-subject quota and one for everyone apply together", func(t *testing.T, w *world) {
			w.grant("user:sub1", "dedicated-conference", "client:dedicated")
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Subject: "user:sub1", Limit: 5})
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 2})
			w.put("room:master1", "client:dedicated")
			w.putAs("user:sub1", "room:s1", "client:dedicated")
			w.refuses(authz.ResourceExhausted, "quota", "client:dedicated/room", put(w, as("user:sub1"), "room:s2", "client:dedicated"))
			if got := w.used("client:dedicated", "room", "user:sub1"); got != 1 {
				t.Errorf("the subject's use = %d, want 1", got)
			}
		}},
		{ruleQuotaSubject + ": a per-subject quota counts what the subject registered, wherever in the scope", func(t *testing.T, w *world) {
			w.grant("user:sub1", "dedicated-conference", "account:livebox")
			w.quota(authz.Quota{Scope: "account:livebox", ResourceType: "room", Subject: "user:sub1", Limit: 2})
			w.putAs("user:sub1", "room:s1", "folder:d1")
			w.putAs("user:sub1", "room:s2", "folder:o1")
			w.refuses(authz.ResourceExhausted, "quota", "account:livebox/room", put(w, as("user:sub1"), "room:s3", "client:other"))
			w.must("DeleteResource")(w.eng.DeleteResource(w.ctx, w.by, "room:s1"))
			w.putAs("user:sub1", "room:s3", "client:other")
		}},
		{"moving a subtree under a scope whose quota it would exceed is refused", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 3})
			w.put("room:a", "client:dedicated")
			w.put("room:b", "folder:d1")
			w.put("room:o1", "folder:o1")
			w.put("room:o2", "folder:o1")
			w.refuses(authz.ResourceExhausted, "quota", "client:dedicated/room", put(w, w.by, "folder:o1", "client:dedicated"))
			if info, _, _ := w.idx.GetResource("folder:o1"); info.Parent != "client:other" {
				t.Errorf("the refused move moved folder:o1 under %s", info.Parent)
			}
			if got := w.used("client:dedicated", "room", ""); got != 2 {
				t.Errorf("used = %d, want 2", got)
			}
			w.put("room:o2", "folder:d1") // one more fits
		}},
		{"moving a subtree under a scope whose per-subject quota it would exceed is refused", func(t *testing.T, w *world) {
			w.grant("user:sub1", "dedicated-conference", "account:livebox")
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Subject: "user:sub1", Limit: 1})
			w.putAs("user:sub1", "room:s1", "client:dedicated")
			w.putAs("user:sub1", "room:s2", "folder:o1")
			w.put("room:m", "folder:o1")
			w.refuses(authz.ResourceExhausted, "quota", "client:dedicated/room", put(w, w.by, "folder:o1", "client:dedicated"))
			w.put("room:m", "client:dedicated") // the master admin's room is not sub1's
		}},
		{"a move within a quota's scope counts nothing twice", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "account:livebox", ResourceType: "room", Limit: 2})
			w.put("room:a", "folder:d1")
			w.put("room:b", "folder:o1")
			w.put("room:a", "folder:o1")
			w.put("folder:o1", "client:dedicated")
			if got := w.used("account:livebox", "room", ""); got != 2 {
				t.Errorf("used = %d, want 2", got)
			}
		}},
		{"a move out of a quota's scope frees its place", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 1})
			w.put("room:a", "folder:d1")
			w.put("room:a", "client:other")
			if got := w.used("client:dedicated", "room", ""); got != 0 {
				t.Errorf("used = %d, want 0", got)
			}
			w.put("room:b", "folder:d1")
		}},
		{"quota.scope: on a write, resource not registered -> NOT_FOUND", func(t *testing.T, w *world) {
			w.refuses(authz.NotFound, "quota.scope", "client:nowhere", func() (authz.Revision, error) {
				return w.eng.PutQuota(w.ctx, w.by, authz.Quota{Scope: "client:nowhere", ResourceType: "room", Limit: 1})
			})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newWorld(t, liveboxPolicy()))
		})
	}
}

func TestQuotaConcurrent(t *testing.T) {
	t.Run(ruleQuota+": 64 concurrent registrations under a limit of 10", func(t *testing.T) {
		w := newWorld(t, liveboxPolicy())
		w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Limit: 10})
		w.grant("user:sub1", "dedicated-conference", "client:dedicated")
		w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Subject: "user:sub1", Limit: 4})
		w.be.setDelay(time.Millisecond)
		rev := w.idx.Revision()
		var wg sync.WaitGroup
		errs := make([]error, 64)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				by := w.by
				if i%2 == 0 {
					by = as("user:sub1")
				}
				_, errs[i] = w.eng.PutResource(w.ctx, by, authz.Resource{Name: fmt.Sprintf("room:r%02d", i), Parent: "folder:d1"})
			}()
		}
		wg.Wait()
		ok, bySub := 0, 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
				if i%2 == 0 {
					bySub++
				}
			case authz.CodeOf(err) != authz.ResourceExhausted:
				t.Errorf("registration %d: %v, want RESOURCE_EXHAUSTED", i, err)
			}
		}
		if ok != 10 || bySub > 4 {
			t.Errorf("%d registrations succeeded (%d by user:sub1), want 10 (at most 4)", ok, bySub)
		}
		if got := w.used("client:dedicated", "room", ""); got != 10 {
			t.Errorf("ListQuotas used = %d, want 10", got)
		}
		if got := w.used("client:dedicated", "room", "user:sub1"); got != bySub {
			t.Errorf("ListQuotas used by user:sub1 = %d, want %d", got, bySub)
		}
		if got := w.idx.Revision(); got != rev+10 {
			t.Errorf("revision %d, want %d: one per registration that succeeded", got, rev+10)
		}
	})
}

// TestQuotaRebuild proves quota counts are state, not history: an index
// built from a snapshot of the committed state, or fed its change sets,
// counts the same.
func TestQuotaRebuild(t *testing.T) {
	w := newWorld(t, liveboxPolicy())
	w.grant("user:sub1", "dedicated-conference", "account:livebox")
	w.quota(authz.Quota{Scope: "account:livebox", ResourceType: "room", Limit: 20})
	w.quota(authz.Quota{Scope: "client:dedicated", ResourceType: "room", Subject: "user:sub1", Limit: 5})
	w.quota(authz.Quota{Scope: "client:other", ResourceType: "folder", Limit: 5})
	w.putAs("user:sub1", "room:s1", "client:dedicated")
	w.putAs("user:sub1", "room:s2", "folder:d1")
	w.putAs("user:sub1", "room:s3", "folder:o1")
	w.put("room:m1", "folder:d1")
	w.put("room:m2", "client:other")
	w.put("folder:o2", "client:other")
	w.put("room:s3", "folder:d1") // a move into the per-subject quota's scope
	w.must("DeleteResource")(w.eng.DeleteResource(w.ctx, w.by, "room:m2"))
	w.quota(authz.Quota{Scope: "folder:d1", ResourceType: "room", Limit: 9}) // set after the rooms exist

	p, rev := exportAll(w)
	snap := authz.Snapshot{Revision: rev, Permissions: p.Permissions, Roles: p.Roles, Quotas: p.Quotas, CreatorRoles: p.CreatorRoles}
	for _, r := range p.Resources {
		info, _, err := w.idx.GetResource(r.Name)
		if err != nil {
			t.Fatal(err)
		}
		snap.Resources = append(snap.Resources, info.Resource) // with its creator
		gs, _, _, err := w.idx.ListGrants(authz.GrantFilter{Resource: r.Name}, authz.MaxPageSize, "")
		if err != nil {
			t.Fatal(err)
		}
		snap.Grants = append(snap.Grants, gs...)
	}
	rebuilt, err := authz.NewIndex(snap)
	if err != nil {
		t.Fatalf("NewIndex(snapshot): %v", err)
	}
	replayed, err := authz.NewIndex(authz.Snapshot{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cs := range w.be.committed() {
		replayed.Apply(cs)
	}
	names := append([]string{"root"}, resourceNames(p)...)
	for _, idx := range []struct {
		name string
		x    *authz.Index
	}{{"NewIndex from a snapshot", rebuilt}, {"a fresh index fed the change sets", replayed}} {
		t.Run("quota counts survive rebuilding the index: "+idx.name, func(t *testing.T) {
			for _, r := range names {
				want, _, err := w.idx.ListQuotas(r)
				if err != nil {
					t.Fatal(err)
				}
				got, _, err := idx.x.ListQuotas(r)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("ListQuotas(%s) = %+v, want %+v", r, got, want)
				}
			}
		})
	}
	if got := w.used("client:dedicated", "room", "user:sub1"); got != 3 {
		t.Errorf("the fixture's per-subject use = %d, want 3", got)
	}
	if got := w.used("account:livebox", "room", ""); got != 4 {
		t.Errorf("the fixture's use = %d, want 4", got)
	}
}

func TestMaxHolders(t *testing.T) {
	grant := func(w *world, subject string, expires time.Time) func() (authz.Revision, error) {
		return func() (authz.Revision, error) {
			return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: subject, Role: "unshared", Resource: "room:r1", Expires: expires})
		}
	}
	cases := []struct {
		name string
		run  func(t *testing.T, w *world)
	}{
		{ruleMaxHolders + " (Unshared: \"the video conferencing rooms not used by any other sub-users\")", func(t *testing.T, w *world) {
			w.grant("user:sub1", "unshared", "room:r1")
			e := w.refuses(authz.FailedPrecondition, "role", "unshared", grant(w, "user:sub2", time.Time{}))
			mentions(t, e, "room:r1")
		}},
		{ruleMaxHolders + ": also when an actor who may grant it asks", func(t *testing.T, w *world) {
			w.role(authz.Role{Name: "room-admin", Scope: "root", Permissions: []string{"rooms.use", "rooms.assign"}, AssignableRoles: []string{"unshared"}})
			w.grant("user:admin", "room-admin", "account:livebox")
			w.grant("user:sub1", "unshared", "room:r1")
			w.refuses(authz.FailedPrecondition, "role", "unshared", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, as("user:admin"), authz.Grant{Subject: "user:sub2", Role: "unshared", Resource: "room:r1"})
			})
			w.must("Grant by the admin on another room")(w.eng.Grant(w.ctx, as("user:admin"), authz.Grant{Subject: "user:sub2", Role: "unshared", Resource: "room:r2"}))
		}},
		{ruleMaxHolders + ": re-granting to the current holder (updating its expiry) is not refused", func(t *testing.T, w *world) {
			w.grant("user:sub1", "unshared", "room:r1")
			w.must("Grant again with an expiry")(grant(w, "user:sub1", time.Now().Add(time.Hour))())
			w.must("Grant again without")(grant(w, "user:sub1", time.Time{})())
		}},
		{ruleMaxHolders + ": an expired holder does not count", func(t *testing.T, w *world) {
			w.store(authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:sub1", Role: "unshared", Resource: "room:r1", Expires: time.Now().Add(-time.Minute)}})
			w.must("Grant to another")(grant(w, "user:sub2", time.Time{})())
			// and the expired holder, granted again, is a new holder.
			w.refuses(authz.FailedPrecondition, "role", "unshared", grant(w, "user:sub1", time.Time{}))
		}},
		{ruleMaxHolders + ": a holder's place is its resource's, not its parent's", func(t *testing.T, w *world) {
			w.grant("user:sub1", "unshared", "room:r1")
			w.grant("user:sub2", "unshared", "room:r2")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, liveboxPolicy())
			w.put("room:r1", "client:other")
			w.put("room:r2", "client:other")
			tc.run(t, w)
		})
	}

	t.Run(ruleMaxHolders+", atomically even under concurrent grants", func(t *testing.T) {
		w := newWorld(t, liveboxPolicy())
		w.put("room:r1", "client:other")
		w.be.setDelay(time.Millisecond)
		rev := w.idx.Revision()
		errs := make([]error, 32)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = grant(w, fmt.Sprintf("user:sub%02d", i), time.Time{})()
			}()
		}
		wg.Wait()
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case authz.CodeOf(err) != authz.FailedPrecondition:
				t.Errorf("grant %d: %v, want FAILED_PRECONDITION", i, err)
			}
		}
		if ok != 1 {
			t.Errorf("%d concurrent grants succeeded, want exactly 1", ok)
		}
		gs, _, _, err := w.idx.ListGrants(authz.GrantFilter{Resource: "room:r1"}, 0, "")
		if err != nil || len(gs) != 1 {
			t.Errorf("the index shows holders %v (%v), want one", gs, err)
		}
		if got := w.idx.Revision(); got != rev+1 {
			t.Errorf("revision %d, want %d", got, rev+1)
		}
	})
}

func TestCreatorRole(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, w *world)
	}{
		{ruleCreator, func(t *testing.T, w *world) {
			rev := w.idx.Revision()
			got, err := w.eng.PutResource(w.ctx, as("user:ws-admin"), authz.Resource{Name: "event:gala", Parent: "workspace:vancast-live"})
			if err != nil || got != rev+1 || w.idx.Revision() != rev+1 {
				t.Fatalf("PutResource = revision %d, %v; index at %d; want one revision, %d", got, err, w.idx.Revision(), rev+1)
			}
			sets := w.be.committed()
			last := sets[len(sets)-1]
			if ops := w.lastOps(); !slices.Equal(ops, []string{"put_resource", "put_grant"}) {
				t.Fatalf("the change set holds %v, want the resource and the grant", ops)
			}
			g := last.Changes[1].Grant
			if g.Subject != "user:ws-admin" || g.Role != "event.owner" || g.Resource != "event:gala" || !g.Expires.IsZero() {
				t.Errorf("the creator's grant is %+v", *g)
			}
			if r := last.Changes[0].Resource; r.Creator != "user:ws-admin" {
				t.Errorf("the committed resource names creator %q", r.Creator)
			}
			if last.Actor != "user:ws-admin" || last.Caller != "svc:console" {
				t.Errorf("the change record names caller %q, actor %q", last.Caller, last.Actor)
			}
			if d := w.check("user:ws-admin", "event.delete", "event:gala"); !d.Allowed || d.Role != "event.owner" || d.Scope != "event:gala" {
				t.Errorf("Any user that creates an event becomes the Owner of that event: %+v", d)
			}
		}},
		{"Resource creator is recorded: GetResource names the actor who registered it", func(t *testing.T, w *world) {
			w.putAs("user:ws-admin", "event:gala", "workspace:vancast-live")
			info, _, err := w.idx.GetResource("event:gala")
			if err != nil || info.Creator != "user:ws-admin" || info.Parent != "workspace:vancast-live" {
				t.Errorf("GetResource = %+v, %v", info, err)
			}
		}},
		{"Resource creator is recorded: a move keeps it, and grants nothing again", func(t *testing.T, w *world) {
			w.putAs("user:ws-admin", "event:gala", "workspace:vancast-live")
			w.put("event:gala", "workspace:vancast-sales")
			if ops := w.lastOps(); !slices.Equal(ops, []string{"put_resource"}) {
				t.Errorf("the move committed %v", ops)
			}
			if info, _, _ := w.idx.GetResource("event:gala"); info.Creator != "user:ws-admin" {
				t.Errorf("after the move the creator is %q", info.Creator)
			}
		}},
		{ruleCreator + ": not when no actor is named", func(t *testing.T, w *world) {
			w.put("event:gala", "workspace:vancast-live")
			if ops := w.lastOps(); !slices.Equal(ops, []string{"put_resource"}) {
				t.Errorf("the change set holds %v, want the resource alone", ops)
			}
			if info, _, _ := w.idx.GetResource("event:gala"); info.Creator != "" {
				t.Errorf("a resource registered with no actor names creator %q", info.Creator)
			}
			if gs, _, _, _ := w.idx.ListGrants(authz.GrantFilter{Resource: "event:gala"}, 0, ""); len(gs) != 0 {
				t.Errorf("grants on it: %v", gs)
			}
		}},
		{"A policy may name a creator role per resource type: a type without one grants nothing", func(t *testing.T, w *world) {
			w.grant("user:acct-owner", "account.owner", "account:vancast")
			w.putAs("user:acct-owner", "folder:assets", "account:vancast")
			if ops := w.lastOps(); !slices.Equal(ops, []string{"put_resource"}) {
				t.Errorf("the change set holds %v, want the resource alone", ops)
			}
		}},
		{ruleCreator + " (the workspace level: \"The Account user that creates a new Workspace becomes the Owner of that Workspace\")", func(t *testing.T, w *world) {
			w.grant("user:acct-admin", "account.administrator", "account:vancast")
			w.putAs("user:acct-admin", "workspace:new", "account:vancast")
			if ops := w.lastOps(); !slices.Equal(ops, []string{"put_resource", "put_grant"}) {
				t.Errorf("the change set holds %v", ops)
			}
			if d := w.check("user:acct-admin", "workspace.admins.add", "workspace:new"); !d.Allowed {
				t.Errorf("the workspace's creator is not its Owner: %+v", d)
			}
		}},
		{ruleQuota + ": a refused registration grants no creator role either", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "workspace:vancast-live", ResourceType: "event", Limit: 1})
			w.refuses(authz.ResourceExhausted, "quota", "workspace:vancast-live/event", func() (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, as("user:ws-admin"), authz.Resource{Name: "event:gala", Parent: "workspace:vancast-live"})
			})
			if gs, _, _, _ := w.idx.ListGrants(authz.GrantFilter{Subject: "user:ws-admin"}, 0, ""); len(gs) != 1 {
				t.Errorf("the refused registration left grants %v", gs)
			}
		}},
		{ruleQuotaSubject + ": the creator an actor is recorded as is what a per-subject quota counts", func(t *testing.T, w *world) {
			w.quota(authz.Quota{Scope: "workspace:vancast-live", ResourceType: "event", Subject: "user:ws-admin", Limit: 1})
			w.putAs("user:ws-admin", "event:gala", "workspace:vancast-live")
			w.refuses(authz.ResourceExhausted, "quota", "workspace:vancast-live/event", func() (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, as("user:ws-admin"), authz.Resource{Name: "event:gala2", Parent: "workspace:vancast-live"})
			})
			w.putAs("user:ws-owner", "event:gala2", "workspace:vancast-live")
		}},
		{"a creator role that cannot be granted on the new resource is FAILED_PRECONDITION, and nothing is written", func(t *testing.T, w *world) {
			// The definition would apply to the grants of event.owner on the
			// workspace's events: they go first.
			w.deleteResource("event:launch")
			w.role(authz.Role{Name: "event.owner", Scope: "workspace:vancast-live", Permissions: []string{"event.delete"}, BindableOn: []string{"call"}})
			w.refuses(authz.FailedPrecondition, "name", "event:gala", func() (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, as("user:ws-admin"), authz.Resource{Name: "event:gala", Parent: "workspace:vancast-live"})
			})
			if w.registered("event:gala") {
				t.Error("the resource was registered without its creator's grant")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, vancastWorld(t))
		})
	}
}

// A quota set on a scope counts what its subject registered there by the
// shorter way: down the scope, where it holds fewer resources than the
// subject registered, or else through what the subject registered.
func TestQuotaSubjectCountedEitherWay(t *testing.T) {
	w := newWorld(t, liveboxPolicy())
	w.grant("user:sub1", "dedicated-conference", "account:livebox")
	w.putAs("user:sub1", "room:a", "folder:d1")
	w.putAs("user:sub1", "room:n", "room:a") // a room within a room
	w.putAs("user:sub1", "room:b", "client:dedicated")
	w.putAs("user:sub1", "room:c", "folder:o1")
	w.put("room:m", "folder:d1") // the platform's: not the subject's
	w.put("folder:empty", "client:other")
	for i := range 10 {
		w.put(fmt.Sprintf("folder:p%d", i), "client:dedicated")
	}
	for scope, want := range map[string]int{
		"folder:d1":       2, // three resources below, fewer than the subject's four
		"account:livebox": 4, // more below than the subject registered
		"client:other":    1,
		"folder:empty":    0, // no room below at all
		"room:a":          1,
	} {
		w.quota(authz.Quota{Scope: scope, ResourceType: "room", Subject: "user:sub1", Limit: 10})
		if got := w.used(scope, "room", "user:sub1"); got != want {
			t.Errorf("%s: a quota set on %s after the rooms exist: used %d, want %d", ruleQuotaSubject, scope, got, want)
		}
	}
}

func TestQuotaSubjectCountKept(t *testing.T) {
	w := newWorld(t, liveboxPolicy())
	w.grant("user:sub1", "dedicated-conference", "account:livebox")
	for _, scope := range []string{"account:livebox", "client:dedicated", "folder:d1"} {
		w.quota(authz.Quota{Scope: scope, ResourceType: "room", Subject: "user:sub1", Limit: 10})
	}
	steps := []struct {
		name string
		do   func()
		want map[string]int // scope -> user:sub1's rooms below it
	}{
		{"rooms the subject registers count on every scope above them", func() {
			w.putAs("user:sub1", "room:a", "folder:d1")
			w.putAs("user:sub1", "room:b", "client:dedicated")
			w.putAs("user:sub1", "room:c", "folder:o1")
			w.put("room:m", "folder:d1") // the platform's: not the subject's
		}, map[string]int{"account:livebox": 3, "client:dedicated": 2, "folder:d1": 1}},
		{"a moved subtree takes its count from the scopes it leaves to those it joins", func() {
			w.put("folder:d1", "client:other")
		}, map[string]int{"account:livebox": 3, "client:dedicated": 1, "folder:d1": 1}},
		{"a moved room counts where it lands", func() {
			w.put("room:c", "folder:d1")
		}, map[string]int{"account:livebox": 3, "client:dedicated": 1, "folder:d1": 2}},
		{"a deleted room counts no more", func() {
			w.must("DeleteResource room:a")(w.eng.DeleteResource(w.ctx, w.by, "room:a"))
		}, map[string]int{"account:livebox": 2, "client:dedicated": 1, "folder:d1": 1}},
		{"a quota set after the rooms exist counts them", func() {
			w.quota(authz.Quota{Scope: "client:other", ResourceType: "room", Subject: "user:sub1", Limit: 10})
		}, map[string]int{"account:livebox": 2, "client:dedicated": 1, "folder:d1": 1, "client:other": 1}},
		{"a quota's new limit keeps its count", func() {
			w.quota(authz.Quota{Scope: "client:other", ResourceType: "room", Subject: "user:sub1", Limit: 1})
			w.putAs("user:sub1", "room:d", "client:dedicated")
		}, map[string]int{"account:livebox": 3, "client:dedicated": 2, "folder:d1": 1, "client:other": 1}},
	}
	for _, s := range steps {
		s.do()
		for scope, want := range s.want {
			if got := w.used(scope, "room", "user:sub1"); got != want {
				t.Errorf("%s: %s: %s: used %d, want %d", ruleQuotaSubject, s.name, scope, got, want)
			}
		}
	}
	w.refuses(authz.ResourceExhausted, "quota", "client:other/room", func() (authz.Revision, error) {
		return w.eng.PutResource(w.ctx, as("user:sub1"), authz.Resource{Name: "room:e", Parent: "client:other"})
	})
	// An index loaded from the stored state counts them all again.
	b := authz.NewBuilder(w.clock)
	rev, err := w.be.Load(w.ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := b.Build(rev)
	if err != nil {
		t.Fatal(err)
	}
	for scope, want := range steps[len(steps)-1].want {
		qs, _, err := loaded.ListQuotas(scope)
		if err != nil {
			t.Fatal(err)
		}
		got := -1
		for _, q := range qs {
			if q.Scope == scope && q.ResourceType == "room" && q.Subject == "user:sub1" {
				got = q.Used
			}
		}
		if got != want {
			t.Errorf("loaded from the stored state: %s: used %d, want %d", scope, got, want)
		}
	}
}
