package authz_test

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

func TestListGrants(t *testing.T) {
	w := newWorld(t, streamPolicy())
	later := time.Now().Add(time.Hour).Truncate(time.Second)
	w.grant("user:alice", "call-member", "call:livestream:42")
	w.grant("user:alice", "moderator", "account:acme")
	w.grantUntil("user:alice", "user", "call:globex:7", later)
	w.grant("user:bob", "host", "call:livestream:42")
	w.grant("user:bob", "call-member", "call:livestream:42")
	w.grant("user:carol", "admin", "root")
	w.store(authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:carol", Role: "user", Resource: "call:default:1", Expires: w.clock.Now().Add(-time.Second)}})

	g := func(subject, role, resource string) authz.Grant {
		return authz.Grant{Subject: subject, Role: role, Resource: resource}
	}
	cases := []struct {
		name string
		f    authz.GrantFilter
		want []authz.Grant
	}{
		{"ListGrants by subject", authz.GrantFilter{Subject: "user:alice"}, []authz.Grant{
			g("user:alice", "moderator", "account:acme"),
			{Subject: "user:alice", Role: "user", Resource: "call:globex:7", Expires: later.UTC()},
			g("user:alice", "call-member", "call:livestream:42"),
		}},
		{"ListGrants by resource (that very resource)", authz.GrantFilter{Resource: "call:livestream:42"}, []authz.Grant{
			g("user:alice", "call-member", "call:livestream:42"),
			g("user:bob", "call-member", "call:livestream:42"),
			g("user:bob", "host", "call:livestream:42"),
		}},
		{"ListGrants by resource lists no inherited grants", authz.GrantFilter{Resource: "calltype:livestream"}, nil},
		{"ListGrants by subject and resource", authz.GrantFilter{Subject: "user:bob", Resource: "call:livestream:42"}, []authz.Grant{
			g("user:bob", "call-member", "call:livestream:42"),
			g("user:bob", "host", "call:livestream:42"),
		}},
		{"An expired grant counts as absent: ListGrants by subject leaves it out", authz.GrantFilter{Subject: "user:carol"}, []authz.Grant{
			g("user:carol", "admin", "root"),
		}},
		{"An expired grant counts as absent: ListGrants by resource leaves it out", authz.GrantFilter{Resource: "call:default:1"}, nil},
		{"a subject with no grants has an empty list", authz.GrantFilter{Subject: "user:nobody"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, next, rev, err := w.idx.ListGrants(tc.f, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			if next != "" {
				t.Errorf("a short list has a next page token %q", next)
			}
			if rev != w.idx.Revision() {
				t.Errorf("answered at revision %d, want %d", rev, w.idx.Revision())
			}
			// Grants come in the index's order, which stays put between
			// pages; compare them as a set.
			if !slices.EqualFunc(sortedGrants(got), sortedGrants(tc.want), sameGrant) {
				t.Errorf("ListGrants(%+v) =\n%+v\nwant\n%+v", tc.f, got, tc.want)
			}
		})
	}
}

func sortedGrants(gs []authz.Grant) []authz.Grant {
	gs = slices.Clone(gs)
	slices.SortFunc(gs, func(a, b authz.Grant) int {
		return cmp.Or(strings.Compare(a.Resource, b.Resource), strings.Compare(a.Subject, b.Subject), strings.Compare(a.Role, b.Role))
	})
	return gs
}

func sameGrant(a, b authz.Grant) bool {
	return a.Subject == b.Subject && a.Role == b.Role && a.Resource == b.Resource && a.Expires.Equal(b.Expires)
}

func TestListGrantsPages(t *testing.T) {
	w := newWorld(t, streamPolicy())
	var changes []authz.Change
	for i := range 120 {
		changes = append(changes, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%03d", i), Role: "call-member", Resource: "call:livestream:42"}})
		if i%3 == 0 {
			changes = append(changes, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%03d", i), Role: "moderator", Resource: "call:livestream:42"}})
		}
	}
	for _, r := range []string{"root", "account:acme", "account:globex", "calltype:default", "calltype:livestream", "call:default:1", "call:livestream:43", "call:globex:7"} {
		for _, role := range []string{"user", "moderator"} {
			changes = append(changes, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:roamer", Role: role, Resource: r}})
		}
	}
	w.store(changes...)

	walk := func(t *testing.T, f authz.GrantFilter, size int) (pages [][]authz.Grant) {
		t.Helper()
		token := ""
		for {
			page, next, _, err := w.idx.ListGrants(f, size, token)
			if err != nil {
				t.Fatalf("page %d: %v", len(pages), err)
			}
			pages = append(pages, page)
			if next == "" {
				return pages
			}
			if len(pages) > 1000 {
				t.Fatal("pagination does not end")
			}
			token = next
		}
	}
	cases := []struct {
		name  string
		f     authz.GrantFilter
		size  int
		pages []int // sizes of the pages
	}{
		{"page tokens cover all grants of a resource exactly once", authz.GrantFilter{Resource: "call:livestream:42"}, 7, []int{7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6}},
		{"page tokens cover all grants of a subject exactly once", authz.GrantFilter{Subject: "user:roamer"}, 5, []int{5, 5, 5, 1}},
		{"a page size that divides the list ends without an empty page", authz.GrantFilter{Subject: "user:roamer"}, 4, []int{4, 4, 4, 4}},
		{"page size 0 means the default page size", authz.GrantFilter{Resource: "call:livestream:42"}, 0, []int{authz.DefaultPageSize, 160 - authz.DefaultPageSize}},
		{"the largest page size is allowed", authz.GrantFilter{Resource: "call:livestream:42"}, authz.MaxPageSize, []int{160}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			all, _, _, err := w.idx.ListGrants(tc.f, authz.MaxPageSize, "")
			if err != nil {
				t.Fatal(err)
			}
			pages := walk(t, tc.f, tc.size)
			var sizes []int
			var got []authz.Grant
			for _, p := range pages {
				sizes = append(sizes, len(p))
				got = append(got, p...)
			}
			if !slices.Equal(sizes, tc.pages) {
				t.Errorf("page sizes %v, want %v", sizes, tc.pages)
			}
			if !slices.EqualFunc(got, all, sameGrant) {
				t.Errorf("the pages hold %d grants, not the %d of the whole list in order", len(got), len(all))
			}
		})
	}

	t.Run("a page token stays good after the grant it ends on is revoked", func(t *testing.T) {
		f := authz.GrantFilter{Subject: "user:roamer"}
		first, next, _, err := w.idx.ListGrants(f, 3, "")
		if err != nil {
			t.Fatal(err)
		}
		last := first[len(first)-1]
		if _, err := w.eng.Revoke(w.ctx, w.by, last); err != nil {
			t.Fatal(err)
		}
		rest, _, _, err := w.idx.ListGrants(f, authz.MaxPageSize, next)
		if err != nil {
			t.Fatal(err)
		}
		if len(rest) != 13 || slices.ContainsFunc(rest, func(g authz.Grant) bool {
			return slices.ContainsFunc(first, func(f authz.Grant) bool { return sameGrant(f, g) })
		}) {
			t.Errorf("after the first page of 3 of 16 and a revoke of its last, the rest holds %d grants (%v), want the other 13", len(rest), rest)
		}
	})
}

func TestListGrantsRefusals(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.grant("user:alice", "call-member", "call:livestream:42")
	twoParts := base64.RawURLEncoding.EncodeToString([]byte("call:livestream:42\x00user:alice"))
	cases := []struct {
		name  string
		f     authz.GrantFilter
		size  int
		token string
		code  authz.Code
		field string
		value string
	}{
		{"a negative page_size is INVALID_ARGUMENT", authz.GrantFilter{Subject: "user:alice"}, -1, "", authz.Invalid, "page_size", "-1"},
		{"a page_size above the maximum is INVALID_ARGUMENT", authz.GrantFilter{Subject: "user:alice"}, authz.MaxPageSize + 1, "", authz.Invalid, "page_size", "1001"},
		{"a page_token that is not base64 is INVALID_ARGUMENT", authz.GrantFilter{Subject: "user:alice"}, 0, "not a token!", authz.Invalid, "page_token", "not a token!"},
		{"a page_token this server did not return is INVALID_ARGUMENT", authz.GrantFilter{Subject: "user:alice"}, 0, twoParts, authz.Invalid, "page_token", twoParts},
		{"ListGrants needs a subject or a resource", authz.GrantFilter{}, 0, "", authz.Invalid, "subject", ""},
		{"ListGrants by an unregistered resource is NOT_FOUND", authz.GrantFilter{Resource: "call:livestream:404"}, 0, "", authz.NotFound, "resource", "call:livestream:404"},
		{"ListGrants of a subject on an unregistered resource is NOT_FOUND too", authz.GrantFilter{Subject: "user:alice", Resource: "call:livestream:404"}, 0, "", authz.NotFound, "resource", "call:livestream:404"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, next, _, err := w.idx.ListGrants(tc.f, tc.size, tc.token)
			wantError(t, err, tc.code, tc.field, tc.value)
			if len(got) != 0 || next != "" {
				t.Errorf("a refusal came with grants %v and token %q", got, next)
			}
		})
	}
}

// rulePageCost is DESIGN.md's "ordered indexes for pages: nothing on a write
// or a page scans the world".
const rulePageCost = "Children per node, counts per subtree, ordered indexes for pages: nothing on a write or a page scans the world"

// pagesWorld is streamPolicy with n roles and n quotas (half of them naming
// a subject) defined on account:acme, a role shadowed there, and a subject
// that registered resources below it.
func pagesWorld(t *testing.T, n int) *world {
	t.Helper()
	p := streamPolicy()
	for i := range n {
		p.Roles = append(p.Roles, authz.Role{Name: fmt.Sprintf("r%04d", i), Scope: "account:acme", Permissions: []string{"join-call"}})
		q := authz.Quota{Scope: "account:acme", ResourceType: fmt.Sprintf("t%04d", i), Limit: 10}
		if i%2 == 1 {
			q.Subject = "user:alice"
		}
		p.Quotas = append(p.Quotas, q)
	}
	p.Roles = append(p.Roles, authz.Role{Name: "moderator", Scope: "account:acme", Permissions: []string{"join-call"}})
	p.Quotas = append(p.Quotas, authz.Quota{Scope: "root", ResourceType: "call", Limit: 100},
		authz.Quota{Scope: "calltype:livestream", ResourceType: "call", Subject: "user:alice", Limit: 100})
	w := newWorld(t, p)
	for i := range 5 {
		w.store(authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{
			Name: fmt.Sprintf("call:livestream:a%d", i), Parent: "calltype:livestream", Creator: "user:alice"}})
	}
	return w
}

func TestRoleAndQuotaPages(t *testing.T) {
	w := pagesWorld(t, 7)
	w.grant("user:mod", "moderator", "call:livestream:42")
	at := "call:livestream:42"
	roles := func(assignableBy string, size int) []string {
		var out []string
		token := ""
		for {
			page, next, _, err := w.idx.ListRolesPage(at, assignableBy, size, token)
			if err != nil {
				t.Fatalf("ListRolesPage(size %d): %v", size, err)
			}
			for _, r := range page {
				out = append(out, r.Name+" at "+r.Scope)
			}
			if next == "" {
				return out
			}
			token = next
		}
	}
	quotas := func(size int) []string {
		var out []string
		token := ""
		for {
			page, next, _, err := w.idx.ListQuotasPage(at, size, token)
			if err != nil {
				t.Fatalf("ListQuotasPage(size %d): %v", size, err)
			}
			for _, q := range page {
				out = append(out, fmt.Sprintf("%s %s %s used %d", q.Scope, q.ResourceType, q.Subject, q.Used))
			}
			if next == "" {
				return out
			}
			token = next
		}
	}
	whole, _, _ := w.idx.ListRoles(at)
	var wantRoles []string
	for _, r := range whole {
		wantRoles = append(wantRoles, r.Name+" at "+r.Scope)
	}
	assignable, _, _ := w.idx.AssignableRoles(at, "user:mod")
	var wantAssignable []string
	for _, r := range assignable {
		wantAssignable = append(wantAssignable, r.Name+" at "+r.Scope)
	}
	allQuotas, _, _ := w.idx.ListQuotas(at)
	var wantQuotas []string
	for _, q := range allQuotas {
		wantQuotas = append(wantQuotas, fmt.Sprintf("%s %s %s used %d", q.Scope, q.ResourceType, q.Subject, q.Used))
	}
	if !slices.Contains(wantRoles, "moderator at account:acme") || slices.Contains(wantRoles, "moderator at root") {
		t.Fatalf("ListRoles %v: the nearest definition of moderator is account:acme's", wantRoles)
	}
	if !slices.Contains(wantQuotas, "calltype:livestream call user:alice used 5") || !slices.Contains(wantQuotas, "root call  used 9") {
		t.Fatalf("ListQuotas %v: want alice's 5 calls below calltype:livestream and 9 calls below root", wantQuotas)
	}
	for _, size := range []int{1, 2, 3, 100} {
		if got := roles("", size); !slices.Equal(got, wantRoles) {
			t.Errorf("ListRolesPage pages of %d, joined:\n%v\nwant ListRoles's\n%v", size, got, wantRoles)
		}
		if got := roles("user:mod", size); !slices.Equal(got, wantAssignable) {
			t.Errorf("ListRolesPage assignable by user:mod, pages of %d, joined:\n%v\nwant AssignableRoles's\n%v", size, got, wantAssignable)
		}
		if got := quotas(size); !slices.Equal(got, wantQuotas) {
			t.Errorf("ListQuotasPage pages of %d, joined:\n%v\nwant ListQuotas's\n%v", size, got, wantQuotas)
		}
	}
	t.Run("a token is bound to its filter", func(t *testing.T) {
		_, next, _, _ := w.idx.ListQuotasPage(at, 1, "")
		if _, _, _, err := w.idx.ListQuotasPage("account:acme", 1, next); authz.CodeOf(err) != authz.Invalid {
			t.Errorf("ListQuotasPage of another resource with the token: %v, want INVALID_ARGUMENT", err)
		}
		_, next, _, _ = w.idx.ListRolesPage(at, "", 1, "")
		if _, _, _, err := w.idx.ListRolesPage(at, "user:mod", 1, next); authz.CodeOf(err) != authz.Invalid {
			t.Errorf("ListRolesPage assignable with a plain token: %v, want INVALID_ARGUMENT", err)
		}
	})
}

func TestRoleAndQuotaPagesCostTheirSize(t *testing.T) {
	// A page's allocations grow with what it builds: a page of one that
	// built the whole list first would grow with n.
	cost := func(n int) (rolesFirst, rolesLater, quotasFirst, quotasLater float64) {
		w := pagesWorld(t, n)
		at := "call:livestream:42"
		_, rolesToken, _, _ := w.idx.ListRolesPage(at, "", n/2, "")
		_, quotasToken, _, _ := w.idx.ListQuotasPage(at, n/2, "")
		rolesFirst = testing.AllocsPerRun(20, func() { w.idx.ListRolesPage(at, "", 1, "") })
		rolesLater = testing.AllocsPerRun(20, func() { w.idx.ListRolesPage(at, "", 1, rolesToken) })
		quotasFirst = testing.AllocsPerRun(20, func() { w.idx.ListQuotasPage(at, 1, "") })
		quotasLater = testing.AllocsPerRun(20, func() { w.idx.ListQuotasPage(at, 1, quotasToken) })
		return
	}
	s1, s2, s3, s4 := cost(10)
	b1, b2, b3, b4 := cost(400)
	for _, c := range []struct {
		what       string
		small, big float64
	}{
		{"the first page of ListRolesPage", s1, b1},
		{"a later page of ListRolesPage", s2, b2},
		{"the first page of ListQuotasPage", s3, b3},
		{"a later page of ListQuotasPage", s4, b4},
	} {
		if c.big > c.small+2 {
			t.Errorf("%s: %s of size 1 allocates %.0f times among 400 entries per scope, %.0f among 10", rulePageCost, c.what, c.big, c.small)
		}
	}
}

// A subject known only by a block, where no role is defined at all: its
// grants on a resource are none, not a panic.
func TestListGrantsOfASubjectOnAResourceBeforeAnyRole(t *testing.T) {
	w := newWorld(t, authz.Policy{Permissions: []authz.Permission{{Name: "join-call"}}, Resources: []authz.Resource{{Name: "account:acme"}}})
	w.block(authz.Block{Subject: "user:bob", Resource: "account:acme"})
	page, next, _, err := w.idx.ListGrants(authz.GrantFilter{Subject: "user:bob", Resource: "account:acme"}, 10, "")
	if err != nil || len(page) != 0 || next != "" {
		t.Errorf("ListGrants(user:bob on account:acme) = %v, %q, %v; want none", page, next, err)
	}
}

// A subject's grants come in the order of the index's own numbers, which
// another index of the same data (another replica's, or this server's after
// a restart) numbers otherwise: a page token of one is refused by the
// other, PAGE_TOKEN_EXPIRED, rather than read as another place in another
// order. So are the tokens of both lookups, which only the server that
// answered a lookup's first page can vouch for.
func TestPageTokensOfAnotherIndexAreRefused(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 6 {
		w.put(fmt.Sprintf("call:c%02d", i), "account:acme")
		w.grant("user:bob", "user", fmt.Sprintf("call:c%02d", i))
	}
	w.grant("user:ann", "user", "call:c00")
	other, err := authz.Start(w.ctx, w.be, authz.Options{Clock: w.clock})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, token, _, err := w.idx.ListGrants(authz.GrantFilter{Subject: "user:bob"}, 2, "")
	if err != nil || token == "" {
		t.Fatalf("the first page: %q, %v", token, err)
	}
	if _, _, _, err := w.idx.ListGrants(authz.GrantFilter{Subject: "user:bob"}, 2, token); err != nil {
		t.Errorf("the next page on the same index: %v", err)
	}
	_, _, _, err = other.Index().ListGrants(authz.GrantFilter{Subject: "user:bob"}, 2, token)
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Kind != authz.KindPageTokenExpired || e.Field != "page_token" {
		t.Errorf("ListGrants' token on another index: %v, want FAILED_PRECONDITION PAGE_TOKEN_EXPIRED naming page_token", err)
	}

	q := authz.LookupResourcesQuery{Subject: "user:bob", Permission: "join-call", Type: "call"}
	_, token, _, err = w.eng.LookupResources(w.ctx, q, 2, "")
	if err != nil || token == "" {
		t.Fatalf("the first lookup page: %q, %v", token, err)
	}
	if _, _, _, err := w.eng.LookupResources(w.ctx, q, 2, token); err != nil {
		t.Errorf("the next lookup page on the same engine: %v", err)
	}
	found, _, _, err := other.LookupResources(w.ctx, q, 2, token)
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Kind != authz.KindPageTokenExpired || e.Field != "page_token" || e.Value != token || found != nil {
		t.Errorf("LookupResources' token on another index: %v, %v; want FAILED_PRECONDITION PAGE_TOKEN_EXPIRED naming page_token %q", found, err, token)
	}

	s := authz.LookupSubjectsQuery{Resource: "call:c00", Permission: "join-call"}
	_, token, _, err = w.eng.LookupSubjects(w.ctx, s, 1, "")
	if err != nil || token == "" {
		t.Fatalf("the first page of LookupSubjects: %q, %v", token, err)
	}
	if _, _, _, err := w.eng.LookupSubjects(w.ctx, s, 1, token); err != nil {
		t.Errorf("the next LookupSubjects page on the same engine: %v", err)
	}
	found, _, _, err = other.LookupSubjects(w.ctx, s, 1, token)
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Kind != authz.KindPageTokenExpired || e.Field != "page_token" || e.Value != token || found != nil {
		t.Errorf("LookupSubjects' token on another index: %v, %v; want FAILED_PRECONDITION PAGE_TOKEN_EXPIRED naming page_token %q", found, err, token)
	}
}
