package policy_test

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
)

// inForce applies a shipped policy to an empty engine, then runs setup.
func inForce(t *testing.T, name string, setup func(e *authz.Engine)) *authz.Engine {
	t.Helper()
	msg, err := policy.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	engine := memoryEngine(t)
	if _, _, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, policy.ToAuthz(msg), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(engine)
	}
	return engine
}

func render(entries []policy.Entry, detail policy.Detail) string {
	var b bytes.Buffer
	policy.Render(&b, entries, detail)
	return b.String()
}

// A policy in force differs from its file in nothing, however the file
// spells it: the diff normalizes as the engine does.
func TestDiffOfThePolicyInForceIsEmpty(t *testing.T) {
	for _, name := range append(policy.Shipped(), "testdata/all-fields.yaml") {
		t.Run(name, func(t *testing.T) {
			msg, err := policy.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			engine := memoryEngine(t)
			if _, _, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, policy.ToAuthz(msg), authz.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			old, err := policy.InForce(policy.EnginePages(engine.Index()), policy.Touches(msg))
			if err != nil {
				t.Fatal(err)
			}
			if d := policy.Diff(old, msg); len(d) > 0 {
				t.Errorf("the diff of %s against itself in force:\n%s", name, render(d, policy.AllFields))
			}
		})
	}
}

// A zero lease or join_ahead is the engine's unset: in force, the diff shows
// no change, as applying the file writes none.
func TestDiffOfZeroDurationsIsEmpty(t *testing.T) {
	for _, set := range []func(*usherv1.Admission){
		func(a *usherv1.Admission) { a.Lease = durationpb.New(0) },
		func(a *usherv1.Admission) { a.JoinAhead = durationpb.New(0) },
	} {
		msg, err := policy.Load("stream")
		if err != nil {
			t.Fatal(err)
		}
		engine := memoryEngine(t)
		if _, _, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, policy.ToAuthz(msg), authz.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		set(msg.Admissions[0])
		wantNothingToApply(t, engine, msg)
	}
}

// wantNothingToApply checks that applying file, pruning, would write
// nothing, and that its diff against what is in force shows nothing.
func wantNothingToApply(t *testing.T, engine *authz.Engine, file *usherv1.Policy) {
	t.Helper()
	_, changes, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, policy.ToAuthz(file), authz.ApplyOptions{Prune: true, DryRun: true})
	if err != nil || len(changes) != 0 {
		t.Fatalf("applying it would write %v, %v; want nothing", changes, err)
	}
	old, err := policy.InForce(policy.EnginePages(engine.Index()), policy.Touches(file))
	if err != nil {
		t.Fatal(err)
	}
	if d := policy.Diff(old, file); len(d) > 0 {
		t.Errorf("the diff shows what apply would not write:\n%s", render(d, policy.AllFields))
	}
}

func TestDiffShowsAdditionsChangesAndRemovals(t *testing.T) {
	ctx, by := context.Background(), authz.Author{Caller: "test"}
	engine := inForce(t, "default", func(e *authz.Engine) {
		// The platform's data: an account and its custom role, which no
		// policy file lists.
		if _, err := e.PutResource(ctx, by, authz.Resource{Name: "account:acme"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.PutRole(ctx, by, authz.Role{Name: "producer", Scope: "account:acme", Permissions: []string{"join-call"}}); err != nil {
			t.Fatal(err)
		}
	})
	file, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	file.Roles = slices.DeleteFunc(file.Roles, func(r *usherv1.Role) bool { return r.GetName() == "guest" })
	for _, r := range file.Roles {
		if r.GetName() == "user" {
			r.Permissions = append(slices.DeleteFunc(r.Permissions, func(p string) bool { return p == "screenshare" }), "end-call")
			r.MaxHolders = 3
		}
	}
	file.Roles = append(file.Roles, &usherv1.Role{Name: "viewer", Scope: "root", Permissions: []string{"read-call"}, BindableOn: []string{"call"}})
	file.Permissions = slices.DeleteFunc(file.Permissions, func(p *usherv1.Permission) bool { return p.GetName() == "pin-for-everyone" })
	file.CreatorRoles = file.CreatorRoles[:1]

	old, err := policy.InForce(policy.EnginePages(engine.Index()), policy.Touches(file))
	if err != nil {
		t.Fatal(err)
	}
	got := render(policy.Diff(old, file), policy.ChangedFields)
	want := `- permission pin-for-everyone
~ role user at root
    permissions: +end-call -screenshare
    max_holders: 0 -> 3
+ role viewer at root
- role guest at root (with --prune)
- creator role for call (with --prune)
`
	if got != want {
		t.Errorf("diff:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(got, "producer") {
		t.Error("the diff names a custom role of a resource the file does not list")
	}
	if got := render(policy.Diff(old, file)[2:3], policy.AllFields); got != "+ role viewer at root\n    permissions: [read-call]\n    bindable_on: [call]\n" {
		t.Errorf("an addition's fields:\n%s", got)
	}
}

// Changes describes what the engine did: a put of something that was
// there is a change, with its fields; of something that was not, an
// addition.
func TestChangesSaysWhetherAPutAddsOrChanges(t *testing.T) {
	engine := inForce(t, "default", nil)
	file, _ := policy.Load("default")
	file.Roles[0].Description = "The owner."
	file.Roles = append(file.Roles, &usherv1.Role{Name: "viewer", Scope: "root", Permissions: []string{"read-call"}})
	file.Admissions[0].MaxParticipants = 100
	file.Admissions = append(file.Admissions, &usherv1.Admission{ResourceType: "event", JoinPermission: "join-call"})
	file.Roles = slices.DeleteFunc(file.Roles, func(r *usherv1.Role) bool { return r.GetName() == "guest" })

	old, err := policy.InForce(policy.EnginePages(engine.Index()), policy.Touches(file))
	if err != nil {
		t.Fatal(err)
	}
	_, changes, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, policy.ToAuthz(file), authz.ApplyOptions{Prune: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	got := render(policy.Changes(old, policy.FromAuthzChanges(changes)), policy.AllFields)
	want := `~ role owner at root
    description: "Everything on the resource it is granted on and below; grants any role within that." -> "The owner."
+ role viewer at root
    permissions: [read-call]
- role guest at root
~ admission rule for call at root
    max_participants: 0 -> 100
+ admission rule for event at root
    join_permission: join-call
`
	if got != want {
		t.Errorf("changes:\n%s\nwant:\n%s", got, want)
	}
}

// InForce reads no more pages than it needs.
func TestInForceStopsPagingOnceItHasSeenTheResources(t *testing.T) {
	pages := []*usherv1.Policy{
		{Permissions: []*usherv1.Permission{{Name: "a"}}, Roles: []*usherv1.Role{{Name: "r", Scope: "root"}},
			Resources: []*usherv1.Resource{{Name: "account:a", Parent: "root"}}},
		{Resources: []*usherv1.Resource{{Name: "account:b", Parent: "root"}}, Roles: []*usherv1.Role{{Name: "r", Scope: "account:b"}}},
		{Resources: []*usherv1.Resource{{Name: "account:c", Parent: "root"}}},
	}
	page, read := pagesOf(pages)
	for _, c := range []struct {
		want  []string
		pages int
		roles int
	}{
		{[]string{"root"}, 1, 1},
		// The next page tells whether the roles of the last resource
		// wanted go on there.
		{[]string{"root", "account:a"}, 2, 1},
		{[]string{"account:b"}, 3, 2},
		{[]string{"account:z"}, 3, 1}, // not registered: every page
	} {
		*read = 0
		p, err := policy.InForce(page, c.want)
		if err != nil {
			t.Fatal(err)
		}
		if *read != c.pages || len(p.GetRoles()) != c.roles || len(p.GetPermissions()) != 1 {
			t.Errorf("InForce(%v) read %d pages and kept %d roles, want %d and %d", c.want, *read, len(p.GetRoles()), c.pages, c.roles)
		}
	}
}

// A page of large roles may end among a resource's: the roles go on at
// the start of the next page (or pages), and InForce reads them all.
func TestInForceReadsTheRolesOfItsLastResourceToTheirEnd(t *testing.T) {
	roles := func(scope string, names ...string) []*usherv1.Role {
		var out []*usherv1.Role
		for _, n := range names {
			out = append(out, &usherv1.Role{Name: n, Scope: scope})
		}
		return out
	}
	pages := []*usherv1.Policy{
		{Permissions: []*usherv1.Permission{{Name: "a"}}, Resources: []*usherv1.Resource{{Name: "account:a", Parent: "root"}}, Roles: roles("account:a", "r1")},
		{Roles: roles("account:a", "r2")},
		{Roles: roles("account:a", "r3")},
		{Resources: []*usherv1.Resource{{Name: "account:b", Parent: "root"}}, Roles: roles("account:b", "r1")},
	}
	page, _ := pagesOf(pages)
	p, err := policy.InForce(page, []string{"account:a"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range p.GetRoles() {
		got = append(got, r.GetScope()+"/"+r.GetName())
	}
	if want := []string{"account:a/r1", "account:a/r2", "account:a/r3"}; !slices.Equal(got, want) {
		t.Errorf("InForce kept roles %v, want %v", got, want)
	}
}

// A page that fails fails the read: a diff is never made against part of
// the policy in force.
func TestInForceFailsWithItsPage(t *testing.T) {
	refused := errors.New("refused")
	page := func(token string) (*usherv1.Policy, string, error) {
		if token == "" {
			return &usherv1.Policy{Permissions: []*usherv1.Permission{{Name: "a"}}}, "1", nil
		}
		return nil, "", refused
	}
	if p, err := policy.InForce(page, []string{"account:a"}); !errors.Is(err, refused) || p != nil {
		t.Errorf("InForce with a failing second page = %v, %v; want nil and the page's error", p, err)
	}
}

// A policy touches root, the resources it lists and the scopes its roles,
// quotas and admission rules are defined at, each once.
func TestTouchesNamesEveryScopeOnce(t *testing.T) {
	p := &usherv1.Policy{
		Resources:  []*usherv1.Resource{{Name: "account:a"}},
		Roles:      []*usherv1.Role{{Name: "r", Scope: "account:a"}, {Name: "s", Scope: "account:b"}},
		Quotas:     []*usherv1.Quota{{Scope: "account:c", ResourceType: "call"}, {Scope: "root", ResourceType: "call"}},
		Admissions: []*usherv1.Admission{{ResourceType: "call"}, {Scope: "account:d", ResourceType: "call"}},
	}
	want := []string{"root", "account:a", "account:b", "account:c", "account:d"}
	if got := policy.Touches(p); !slices.Equal(got, want) {
		t.Errorf("Touches = %v, want %v", got, want)
	}
}

// The policy package's conversion is the server's.
func TestConversionAgreesWithTheServer(t *testing.T) {
	for _, name := range append(policy.Shipped(), "testdata/all-fields.yaml") {
		msg, err := policy.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		p := policy.ToAuthz(msg)
		if want := server.FromPolicy(msg); !reflect.DeepEqual(p, want) {
			t.Errorf("%s: ToAuthz\n%+v\nserver.FromPolicy\n%+v", name, p, want)
		}
		if back := policy.ToAuthz(policy.FromAuthz(p)); !reflect.DeepEqual(back, p) {
			t.Errorf("%s: ToAuthz(FromAuthz(p)) differs from p", name)
		}
	}
}

// A quota its scope got from the policy's default quotas when it was
// registered is no removal, even once the file lists the scope: applying
// the file with --prune keeps it.
func TestDiffKeepsADefaultQuotaOfAListedResource(t *testing.T) {
	engine, file := initechListed(t)
	wantNothingToApply(t, engine, file)
}

// initechListed is alfaview's policy in force with company:initech
// registered at run time, which gave it the default quotas, and the policy
// file listing it.
func initechListed(t *testing.T) (*authz.Engine, *usherv1.Policy) {
	t.Helper()
	engine := inForce(t, "alfaview", func(e *authz.Engine) {
		if _, err := e.PutResource(context.Background(), authz.Author{Caller: "test"}, authz.Resource{Name: "company:initech"}); err != nil {
			t.Fatal(err)
		}
	})
	file, err := policy.Load("alfaview")
	if err != nil {
		t.Fatal(err)
	}
	file.Resources = append(file.Resources, &usherv1.Resource{Name: "company:initech"})
	return engine, file
}

// A file that changes a default quota keeps, as apply does, the quota a
// listed resource got from the default before.
func TestDiffKeepsTheFormerDefaultQuotaOfAListedResource(t *testing.T) {
	engine, file := initechListed(t)
	for _, d := range file.DefaultQuotas {
		d.Limit = 3
	}
	_, changes, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, policy.ToAuthz(file), authz.ApplyOptions{Prune: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		if c.Op == authz.OpDeleteQuota {
			t.Errorf("applying it would remove the quota %+v", *c.Quota)
		}
	}
	old, err := policy.InForce(policy.EnginePages(engine.Index()), policy.Touches(file))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range policy.Diff(old, file) {
		if e.Sign == '-' && e.Kind == "quota" {
			t.Errorf("the diff removes a quota apply keeps: %+v", e)
		}
	}
}

// The diff removes, with prune, the quotas of a listed resource that
// applying the file with --prune removes, and no other: a quota of a type
// the file's default quotas cover for its scope's type is kept whatever
// its limit (a plan raised it), and one a default the file drops gave is
// removed.
func TestDiffRemovesTheQuotasApplyRemoves(t *testing.T) {
	ctx, by := context.Background(), authz.Author{Caller: "test"}
	for _, c := range []struct {
		name  string
		raise bool
		edit  func(file *usherv1.Policy)
	}{
		{"a plan raised the defaulted quota", true, func(*usherv1.Policy) {}},
		{"the file drops the default that gave it", false, func(file *usherv1.Policy) {
			file.DefaultQuotas = slices.DeleteFunc(file.DefaultQuotas, func(d *usherv1.DefaultQuota) bool {
				return d.GetScopeType() == "company" && d.GetResourceType() == "room"
			})
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			engine, file := initechListed(t)
			if c.raise {
				if _, err := engine.PutQuota(ctx, by, authz.Quota{Scope: "company:initech", ResourceType: "room", Limit: 7}); err != nil {
					t.Fatal(err)
				}
			}
			c.edit(file)
			_, changes, err := engine.ApplyPolicy(ctx, by, policy.ToAuthz(file), authz.ApplyOptions{Prune: true, DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			var applied []string
			for _, ch := range changes {
				if ch.Op == authz.OpDeleteQuota {
					applied = append(applied, ch.Quota.Scope+"/"+ch.Quota.ResourceType)
				}
			}
			old, err := policy.InForce(policy.EnginePages(engine.Index()), policy.Touches(file))
			if err != nil {
				t.Fatal(err)
			}
			var diffed []string
			for _, e := range policy.Diff(old, file) {
				if e.Sign == '-' && e.Kind == "quota" {
					diffed = append(diffed, e.Name)
				}
			}
			slices.Sort(applied)
			slices.Sort(diffed)
			if !slices.Equal(diffed, applied) {
				t.Errorf("the diff removes the quotas %q; applying the file with --prune removes %q", diffed, applied)
			}
		})
	}
}

// A page may end among a resource's quotas too (a resource may carry
// 10,000 of 2 KB): they go on at the start of the next page, then its
// admission rules and roles, and InForce reads them all.
func TestInForceReadsTheQuotasOfItsLastResourceToTheirEnd(t *testing.T) {
	quota := func(scope, subject string) *usherv1.Quota {
		return &usherv1.Quota{Scope: scope, ResourceType: "call", Subject: subject, Limit: 1}
	}
	pages := []*usherv1.Policy{
		{Permissions: []*usherv1.Permission{{Name: "a"}}, Resources: []*usherv1.Resource{{Name: "account:a", Parent: "root"}}, Quotas: []*usherv1.Quota{quota("account:a", "user:1")}},
		{Quotas: []*usherv1.Quota{quota("account:a", "user:2")}},
		{Quotas: []*usherv1.Quota{quota("account:a", "user:3")}, Admissions: []*usherv1.Admission{{Scope: "account:a", ResourceType: "call"}},
			Roles: []*usherv1.Role{{Name: "r1", Scope: "account:a"}}},
		{Roles: []*usherv1.Role{{Name: "r2", Scope: "account:a"}}, Resources: []*usherv1.Resource{{Name: "account:b", Parent: "root"}},
			Quotas: []*usherv1.Quota{quota("account:b", "user:1")}},
		{Resources: []*usherv1.Resource{{Name: "account:c", Parent: "root"}}},
	}
	page, read := pagesOf(pages)
	p, err := policy.InForce(page, []string{"account:a"})
	if err != nil {
		t.Fatal(err)
	}
	var quotas, roles []string
	for _, q := range p.GetQuotas() {
		quotas = append(quotas, q.GetScope()+"/"+q.GetSubject())
	}
	for _, r := range p.GetRoles() {
		roles = append(roles, r.GetScope()+"/"+r.GetName())
	}
	if want := []string{"account:a/user:1", "account:a/user:2", "account:a/user:3"}; !slices.Equal(quotas, want) {
		t.Errorf("InForce kept quotas %v, want %v", quotas, want)
	}
	if want := []string{"account:a/r1", "account:a/r2"}; !slices.Equal(roles, want) || len(p.GetAdmissions()) != 1 {
		t.Errorf("InForce kept roles %v and %d admission rules, want %v and 1", roles, len(p.GetAdmissions()), want)
	}
	if *read != 4 {
		t.Errorf("InForce read %d pages, want 4: to the page that ends account:a's entries", *read)
	}
}

// pagesOf serves pages, each token the index of its page, and counts the
// pages read.
func pagesOf(pages []*usherv1.Policy) (page policy.ExportPage, read *int) {
	read = new(int)
	return func(token string) (*usherv1.Policy, string, error) {
		*read++
		i := 0
		if token != "" {
			i = int(token[0] - '0')
		}
		next := ""
		if i+1 < len(pages) {
			next = string(rune('0' + i + 1))
		}
		return pages[i], next, nil
	}, read
}
