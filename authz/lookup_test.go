package authz_test

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// lookupWorld is a random platform for the lookups: a tree of accounts,
// workspaces, call types and calls, Stream's roles redefined here and
// there, grants (some expired) and blocks (some partial).
func lookupWorld(t *testing.T, seed uint64) (*world, []string, []string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0xabcdef))
	p := streamPolicy()
	p.Resources = nil
	p.Roles[3].MaxHolders, p.Roles[3].BindableOn = 0, nil // host: any number, anywhere
	w := newWorld(t, p)
	resources := []string{}
	var level func(parent, typ string, depth int)
	types := []string{"account", "workspace", "calltype", "call"}
	level = func(parent, typ string, depth int) {
		for i := range 1 + rng.IntN(3) {
			name := fmt.Sprintf("%s:%s-%d", typ, strings.TrimPrefix(strings.ReplaceAll(parent, ":", "-"), "root"), i)
			w.put(name, parent)
			resources = append(resources, name)
			if depth+1 < len(types) && rng.IntN(4) > 0 {
				level(name, types[depth+1], depth+1)
			}
		}
	}
	level("root", "account", 0)
	subjects := []string{"user:ann", "user:bob", "user:cat", "user:dan", "apikey:k1", "apikey:k2"}
	roles := []string{"user", "call-member", "moderator", "host", "admin"}
	for range rng.IntN(4) {
		r := authz.Role{Name: pick(rng, roles), Scope: pick(rng, resources), Permissions: []string{pick(rng, streamCapabilities), pick(rng, streamCapabilities)}}
		w.role(r)
	}
	for range 5 + rng.IntN(25) {
		g := authz.Grant{Subject: pick(rng, subjects), Role: pick(rng, roles), Resource: pick(rng, append(resources, authz.RootName))}
		if rng.IntN(5) == 0 {
			g.Expires = time.Now().Add(-time.Hour)
			w.store(authz.Change{Op: authz.OpPutGrant, Grant: &g})
			continue
		}
		w.grantUntil(g.Subject, g.Role, g.Resource, time.Time{})
	}
	for range rng.IntN(5) {
		b := authz.Block{Subject: pick(rng, subjects), Resource: pick(rng, resources)}
		if rng.IntN(2) == 0 {
			b.Permissions = []string{pick(rng, streamCapabilities)}
		}
		w.block(b)
	}
	return w, resources, subjects
}

// TestLookupDifferential holds both lookups to the reference evaluator:
// LookupResources answers exactly the resources of the type below the scope
// where the reference's Check allows, and LookupSubjects exactly the
// subjects it allows there, each with the reference's deciding role and
// scope, over pages of three that are each full or the last.
func TestLookupDifferential(t *testing.T) {
	lookupDifferential(t, 60, 0)
}

// Pages cut short by the scan budget, down to one candidate judged a page,
// still make up the whole answer, each once.
func TestLookupPagesCutByTheScanBudget(t *testing.T) {
	for _, scan := range []int{1, 2, 5} {
		t.Run(fmt.Sprint(scan), func(t *testing.T) {
			authz.SetLookupScan(t, scan)
			lookupDifferential(t, 15, scan)
		})
	}
}

// lookupDifferential compares lookups, page by page, with the reference
// Check over seeds random worlds; scan is the scan budget, when a test set
// one (pages may then be cut short), else 0.
func lookupDifferential(t *testing.T, seeds uint64, scan int) {
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			w, resources, subjects := lookupWorld(t, seed)
			snap, err := storage.Snapshot(w.ctx, w.be)
			if err != nil {
				t.Fatal(err)
			}
			now := w.clock.Now()
			perms := []string{"join-call", "end-call", "mute-users", "screenshare", "block-users"}
			unders := append([]string{""}, resources[:min(3, len(resources))]...)
			for _, s := range subjects {
				for _, typ := range []string{"call", "calltype", "workspace"} {
					for _, under := range unders {
						for _, perm := range perms {
							q := authz.LookupResourcesQuery{Subject: s, Permission: perm, Type: typ, Under: under}
							got := allPages(t, scan, func(token string) ([]authz.Found, string, error) {
								f, next, _, err := w.eng.LookupResources(w.ctx, q, 3, token)
								return f, next, err
							})
							var want []authz.Found
							for _, r := range resources {
								if authz.TypeOf(r) != typ || under != "" && !below(snap, r, under) {
									continue
								}
								if a := referenceCheck(snap, now, s, perm, r); a.Allowed {
									want = append(want, authz.Found{Name: r, Role: a.Role, Scope: a.Scope})
								}
							}
							if d := diffFound(got, want); d != "" {
								t.Fatalf("LookupResources(%+v): %s", q, d)
							}
						}
					}
				}
			}
			for _, r := range append(resources, authz.RootName) {
				for _, perm := range perms {
					for _, kind := range []string{"", "user", "apikey"} {
						q := authz.LookupSubjectsQuery{Resource: r, Permission: perm, Kind: kind}
						got := allPages(t, scan, func(token string) ([]authz.Found, string, error) {
							f, next, _, err := w.eng.LookupSubjects(w.ctx, q, 3, token)
							return f, next, err
						})
						var want []authz.Found
						for _, s := range subjects {
							if kind != "" && authz.TypeOf(s) != kind {
								continue
							}
							if a := referenceCheck(snap, now, s, perm, r); a.Allowed {
								want = append(want, authz.Found{Name: s, Role: a.Role, Scope: a.Scope})
							}
						}
						if d := diffFound(got, want); d != "" {
							t.Fatalf("LookupSubjects(%+v): %s", q, d)
						}
					}
				}
			}
		})
	}
}

// allPages walks a lookup's pages, requiring each but the last to be full,
// unless the scan budget (0: the default) is smaller than a page, and no
// answer to repeat.
func allPages(t *testing.T, scan int, page func(token string) ([]authz.Found, string, error)) []authz.Found {
	t.Helper()
	var all []authz.Found
	token := ""
	for n := 0; ; n++ {
		got, next, err := page(token)
		if err != nil {
			t.Fatalf("page %d: %v", n, err)
		}
		if next != "" && len(got) != 3 && scan == 0 {
			t.Fatalf("page %d holds %d answers and a next page: a page is full or the last", n, len(got))
		}
		if scan != 0 && len(got) > min(scan, 3) {
			t.Fatalf("page %d holds %d answers with a scan budget of %d", n, len(got), scan)
		}
		all = append(all, got...)
		if next == "" {
			return all
		}
		token = next
	}
}

func below(s authz.Snapshot, r, anc string) bool {
	parent := map[string]string{}
	for _, res := range s.Resources {
		parent[res.Name] = res.Parent
	}
	for ; r != ""; r = parent[r] {
		if r == anc {
			return true
		}
	}
	return false
}

func diffFound(got, want []authz.Found) string {
	seen := map[string]bool{}
	for _, f := range got {
		if seen[f.Name] {
			return fmt.Sprintf("%s answered twice in %v", f.Name, got)
		}
		seen[f.Name] = true
	}
	byName := func(a, b authz.Found) int { return strings.Compare(a.Name, b.Name) }
	got, want = slices.Clone(got), slices.Clone(want)
	slices.SortFunc(got, byName)
	slices.SortFunc(want, byName)
	if !slices.Equal(got, want) {
		return fmt.Sprintf("\n got %v\nwant %v", got, want)
	}
	return ""
}

// bobsCalls is a world in which user:bob may join n calls, through a grant
// on their call type, with his lookup of the calls he may join and the
// first page of three, its token and its revision.
func bobsCalls(t *testing.T, n int) (*world, authz.LookupResourcesQuery, []authz.Found, string, authz.Revision) {
	t.Helper()
	w := newWorld(t, streamPolicy())
	for i := range n {
		w.put(fmt.Sprintf("call:livestream:%d", 100+i), "calltype:livestream")
	}
	w.grant("user:bob", "call-member", "calltype:livestream")
	q := authz.LookupResourcesQuery{Subject: "user:bob", Permission: "join-call", Type: "call"}
	first, next, rev, err := w.eng.LookupResources(w.ctx, q, 3, "")
	if err != nil || len(first) != 3 || next == "" {
		t.Fatalf("first page = %v, %q, %v", first, next, err)
	}
	return w, q, first, next, rev
}

// TestLookupPagesAtOneRevision: every page of a lookup is answered at the
// revision of its first; a write that cannot change the answer leaves the
// next page good, and one that may change it refuses the next page.
func TestLookupPagesAtOneRevision(t *testing.T) {
	w, q, first, next, rev := bobsCalls(t, 5)
	w.grant("user:eve", "call-member", "calltype:livestream") // another subject's grant
	w.put("account:other", "")                                // a resource of another type
	all := first
	for next != "" {
		page, more, rev2, err := w.eng.LookupResources(w.ctx, q, 3, next)
		if err != nil {
			t.Fatalf("a page after writes that cannot change the answer: %v", err)
		}
		if rev2 != rev {
			t.Errorf("a later page answered at revision %d, the first at %d", rev2, rev)
		}
		all, next = append(all, page...), more
	}
	if len(all) != 7 {
		t.Errorf("the pages hold %d answers, want the 7 calls", len(all))
	}
	_, next, _, err := w.eng.LookupResources(w.ctx, q, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	w.grant("user:bob", "host", "call:livestream:42") // bob's own grants change
	_, _, _, err = w.eng.LookupResources(w.ctx, q, 3, next)
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Field != "page_token" {
		t.Errorf("a page after a write that may change the answer = %v, want FAILED_PRECONDITION on page_token", err)
	}
	_, _, _, err = w.eng.LookupSubjects(w.ctx, authz.LookupSubjectsQuery{Resource: "call:livestream:42", Permission: "join-call"}, 3, next)
	if !errors.As(err, &e) || e.Code != authz.Invalid || e.Field != "page_token" {
		t.Errorf("a token of another lookup = %v, want INVALID_ARGUMENT on page_token", err)
	}
}

// A later page of LookupSubjects sees what changed on the resource's path
// since the first page, as LookupResources sees the subject's grants.
func TestLookupSubjectsPagesSeeChangesOnThePath(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 5 {
		w.grant(fmt.Sprintf("user:s%d", i), "call-member", "calltype:livestream")
	}
	q := authz.LookupSubjectsQuery{Resource: "call:livestream:42", Permission: "join-call"}
	_, next, _, err := w.eng.LookupSubjects(w.ctx, q, 2, "")
	if err != nil || next == "" {
		t.Fatalf("first page: %q, %v", next, err)
	}
	w.grant("user:late", "call-member", "account:acme") // on an ancestor of the call
	_, _, _, err = w.eng.LookupSubjects(w.ctx, q, 2, next)
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Field != "page_token" {
		t.Errorf("a page after a grant on the call's path = %v, want FAILED_PRECONDITION on page_token", err)
	}
}

// Role definitions change a lookup's answer only where they apply: a role
// the subject holds nowhere, or one defined off the resource's path, leaves
// the pages going; one the subject holds does not.
func TestLookupPagesOutliveRoleDefinitionsThatCannotChangeThem(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 5 {
		w.put(fmt.Sprintf("call:livestream:%d", 100+i), "calltype:livestream")
		w.grant(fmt.Sprintf("user:s%d", i), "call-member", "calltype:livestream")
	}
	w.grant("user:bob", "call-member", "calltype:livestream")
	resources := authz.LookupResourcesQuery{Subject: "user:bob", Permission: "join-call", Type: "call"}
	subjects := authz.LookupSubjectsQuery{Resource: "call:livestream:42", Permission: "join-call"}
	_, nextR, _, err := w.eng.LookupResources(w.ctx, resources, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	_, nextS, _, err := w.eng.LookupSubjects(w.ctx, subjects, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	w.role(authz.Role{Name: "auditor", Scope: "account:globex", Permissions: []string{"read-call"}})
	if _, _, _, err := w.eng.LookupResources(w.ctx, resources, 2, nextR); err != nil {
		t.Errorf("LookupResources after a role bob holds nowhere was defined: %v", err)
	}
	if _, _, _, err := w.eng.LookupSubjects(w.ctx, subjects, 2, nextS); err != nil {
		t.Errorf("LookupSubjects after a role was defined off the call's path: %v", err)
	}
	_, nextR, _, _ = w.eng.LookupResources(w.ctx, resources, 2, "")
	_, nextS, _, _ = w.eng.LookupSubjects(w.ctx, subjects, 2, "")
	w.role(authz.Role{Name: "call-member", Scope: "calltype:livestream", Permissions: []string{"read-call"}})
	var e *authz.Error
	if _, _, _, err := w.eng.LookupResources(w.ctx, resources, 2, nextR); !errors.As(err, &e) || e.Code != authz.FailedPrecondition {
		t.Errorf("LookupResources after bob's role was redefined = %v, want FAILED_PRECONDITION", err)
	}
	if _, _, _, err := w.eng.LookupSubjects(w.ctx, subjects, 2, nextS); !errors.As(err, &e) || e.Code != authz.FailedPrecondition {
		t.Errorf("LookupSubjects after a role was redefined on the call's path = %v, want FAILED_PRECONDITION", err)
	}
}

// A lookup whose pages keep coming goes on however many unrelated writes
// commit in all: each page reads only what committed since the one before.
func TestALookupOutlivesABusyPlatform(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 6 {
		w.put(fmt.Sprintf("call:livestream:%d", 100+i), "calltype:livestream")
	}
	w.grant("user:bob", "call-member", "calltype:livestream")
	q := authz.LookupResourcesQuery{Subject: "user:bob", Permission: "join-call", Type: "call"}
	all, next, rev, err := w.eng.LookupResources(w.ctx, q, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	writes := 0
	for next != "" {
		for range 800 { // others' grants
			w.grant(fmt.Sprintf("user:o%d", writes), "call-member", "call:livestream:42")
			writes++
		}
		page, more, rev2, err := w.eng.LookupResources(w.ctx, q, 3, next)
		if err != nil {
			t.Fatalf("a page after %d unrelated writes in all: %v", writes, err)
		}
		if rev2 != rev {
			t.Errorf("a later page answered at revision %d, the first at %d", rev2, rev)
		}
		all, next = append(all, page...), more
	}
	if len(all) != 8 || writes <= 1000 {
		t.Errorf("%d answers over %d writes; want the 8 calls over more than 1,000 writes", len(all), writes)
	}
}

// A later page reads a bounded number of changes from the log, however far
// back its token names and however large the change sets since: policy
// applies of thousands of resources each end its reading after the first
// few, rather than all of them being read into memory for one page.
func TestALaterPageReadsABoundedShareOfTheLog(t *testing.T) {
	w, q, _, next, _ := bobsCalls(t, 6)
	p := streamPolicy()
	for set := range 20 { // 20 change sets of 2,000 rooms each, which cannot change the answer
		for i := range 2000 {
			p.Resources = append(p.Resources, authz.Resource{Name: fmt.Sprintf("room:r%d-%d", set, i)})
		}
		if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := w.be.changesRead()
	_, _, _, err := w.eng.LookupResources(w.ctx, q, 3, next)
	if read := w.be.changesRead() - before; read > 16000 {
		t.Errorf("the page read %d changes of the 40,000 committed since its token; want at most 16,000", read)
	}
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Field != "page_token" {
		t.Errorf("a page after more changes than a page reads = %v, want FAILED_PRECONDITION on page_token", err)
	}
}

// A client may come back with a token from before a change set larger than
// a later page reads, a policy's of tens of thousands of resources: the
// page learns that it does not fit from the backend's count of its
// changes, and reads none of them.
func TestALaterPageReadsNoChangeSetLargerThanItMayRead(t *testing.T) {
	w, q, _, next, _ := bobsCalls(t, 6)
	p := streamPolicy()
	for i := range 20_000 { // one change set, which cannot change the answer
		p.Resources = append(p.Resources, authz.Resource{Name: fmt.Sprintf("room:r%d", i)})
	}
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	before := w.be.changesRead()
	_, _, _, err := w.eng.LookupResources(w.ctx, q, 3, next)
	if read := w.be.changesRead() - before; read > 0 {
		t.Errorf("the page read %d changes of the change set of 20,000 committed since its token; want none", read)
	}
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Field != "page_token" || e.Kind != authz.KindPageTokenExpired || e.Value != next {
		t.Errorf("a page after a change set larger than a page reads = %v, want FAILED_PRECONDITION (PAGE_TOKEN_EXPIRED) on page_token, naming the token sent", err)
	}
}

// A later page judges the change sets since the page before it while
// writes go on: what it reads of the index, it reads as a page does, under
// the index's lock (go test -race holds it to that).
func TestLaterPagesJudgeChangesBesideWrites(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 6 {
		w.put(fmt.Sprintf("call:livestream:%d", 100+i), "calltype:livestream")
	}
	w.grant("user:bob", "call-member", "calltype:livestream")
	queries := []func(token string) (string, error){
		func(token string) (string, error) {
			q := authz.LookupResourcesQuery{Subject: "user:bob", Permission: "join-call", Type: "call"}
			_, next, _, err := w.eng.LookupResources(w.ctx, q, 3, token)
			return next, err
		},
		func(token string) (string, error) {
			q := authz.LookupSubjectsQuery{Resource: "call:livestream:100", Permission: "join-call"}
			_, next, _, err := w.eng.LookupSubjects(w.ctx, q, 1, token)
			return next, err
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Others' grants, resources registered and a role redefined: what
		// a page's relevance reads of subjects, resources and roles.
		for i := range 300 {
			if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: fmt.Sprintf("user:o%d", i), Role: "call-member", Resource: "call:livestream:42"}); err != nil {
				t.Error(err)
				return
			}
			if _, err := w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: fmt.Sprintf("call:livestream:o%d", i), Parent: "calltype:livestream"}); err != nil {
				t.Error(err)
				return
			}
			if _, err := w.eng.PutRole(w.ctx, w.by, authz.Role{Name: "extra", Scope: "root", Permissions: []string{"join-call"}, Description: fmt.Sprint(i)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			return
		default:
		}
		for _, query := range queries {
			next, err := query("")
			for err == nil && next != "" {
				next, err = query(next)
			}
			if err != nil && authz.CodeOf(err) != authz.FailedPrecondition {
				t.Fatal(err)
			}
		}
	}
}

// A page over calls that the subject's grant reaches and allows nothing on
// stops after the scan budget's candidates, empty, with the token of the
// next; following the tokens ends the lookup, empty.
func TestALookupPageJudgesABoundedNumberOfCandidates(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 25 {
		w.put(fmt.Sprintf("call:livestream:%d", 100+i), "calltype:livestream")
	}
	w.grant("user:bob", "call-member", "calltype:livestream")
	authz.SetLookupScan(t, 10)
	q := authz.LookupResourcesQuery{Subject: "user:bob", Permission: "end-call", Type: "call"}
	found, pages := lookUpAll(t, w, q, 3)
	if len(found) != 0 {
		t.Fatalf("the lookup found %v; want nothing", found)
	}
	if pages != 2 {
		t.Errorf("25 calls judged 10 a page took %d pages before the last, want 2", pages)
	}
}

// A page reads no more of the subject's grants than the scan budget: a
// subject whose grants ran out by the thousand, or lie below another of its
// grants, made every page read them all before judging its first candidate.
func TestALookupPageReadsABoundedNumberOfGrants(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 25 {
		call := fmt.Sprintf("call:livestream:%d", 100+i)
		w.put(call, "calltype:livestream")
		g := authz.Grant{Subject: "user:bob", Role: "call-member", Resource: call}
		if i%2 == 0 {
			g.Expires = w.clock.Now().Add(-time.Hour)
			w.store(authz.Change{Op: authz.OpPutGrant, Grant: &g})
			continue
		}
		w.grant(g.Subject, g.Role, g.Resource)
	}
	w.grant("user:bob", "call-member", "calltype:livestream")
	authz.SetLookupScan(t, 10)
	q := authz.LookupResourcesQuery{Subject: "user:bob", Permission: "join-call", Type: "call", Under: "calltype:default"}
	found, pages := lookUpAll(t, w, q, 3)
	if len(found) != 0 {
		t.Fatalf("the lookup found %v; want nothing", found)
	}
	if pages < 2 {
		t.Errorf("26 grants read 10 a page took %d pages before the last, want at least 2", pages)
	}
	q.Under = ""
	var all []authz.Found
	for token := ""; ; {
		got, next, _, err := w.eng.LookupResources(w.ctx, q, 100, token)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, got...)
		if next == "" {
			break
		}
		token = next
	}
	if len(all) != 27 {
		t.Errorf("the lookup under root found %d calls, want all 27: %v", len(all), all)
	}
}

// A page walks past no more resources of other types than the scan
// budget: a subject's grant on an account of a hundred thousand rooms and
// a few calls made one page walk every room to find the calls.
func TestALookupPageWalksPastABoundedNumberOfResources(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 25 {
		w.put(fmt.Sprintf("workspace:acme-%d", i), "account:acme")
	}
	w.put("workspace:acme-calls", "account:acme")
	for i := range 25 {
		w.put(fmt.Sprintf("workspace:acme-calls-%d", i), "workspace:acme-calls")
	}
	w.put("call:acme-1", "workspace:acme-calls")
	w.grant("user:bob", "call-member", "account:acme")
	authz.SetLookupScan(t, 10)
	q := authz.LookupResourcesQuery{Subject: "user:bob", Permission: "join-call", Type: "call", Under: "account:acme"}
	all, pages := lookUpAll(t, w, q, 100)
	slices.Sort(all)
	if want := []string{"call:acme-1", "call:default:1", "call:livestream:42", "call:livestream:43"}; !slices.Equal(all, want) {
		t.Errorf("the lookup found %v, want %v", all, want)
	}
	if pages < 4 {
		t.Errorf("50 workspaces walked past 10 a page took %d pages before the last, want at least 4", pages)
	}
}

// Every page of a lookup is answered as its first page was, at its
// revision and at its time: a grant that runs out between two pages
// neither lists its subject again, at its next grant, nor drops an answer.
func TestALookupsPagesCountGrantsAsItsFirstPageDid(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.grantUntil("user:sam", "call-member", "call:livestream:42", w.clock.Now().Add(10*time.Second))
	w.grant("user:sam", "user", "calltype:livestream")
	w.grant("user:uma", "call-member", "calltype:livestream")
	q := authz.LookupSubjectsQuery{Resource: "call:livestream:42", Permission: "join-call"}
	first, token, _, err := w.eng.LookupSubjects(w.ctx, q, 1, "")
	if err != nil || len(first) != 1 || first[0].Name != "user:sam" || token == "" {
		t.Fatalf("the first page = %+v, %q, %v; want sam, nearest, and a next page", first, token, err)
	}
	w.clock.Advance(20 * time.Second) // sam's grant on the call runs out
	seen := map[string]int{"user:sam": 1}
	for n := 0; token != "" && n < 10; n++ {
		var page []authz.Found
		page, token, _, err = w.eng.LookupSubjects(w.ctx, q, 1, token)
		if err != nil {
			t.Fatalf("page %d: %v", n+2, err)
		}
		for _, f := range page {
			seen[f.Name]++
		}
	}
	if seen["user:sam"] != 1 || seen["user:uma"] != 1 {
		t.Errorf("subjects across the pages: %v; want sam and uma once each", seen)
	}
}

// A lookup's later pages are answered at its first page's time for at
// most a minute: past that, a page would count grants that ran out long
// ago, and it is refused (PAGE_TOKEN_EXPIRED), to start again.
func TestALookupsLaterPageAMinuteOnStartsAgain(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.grantUntil("user:sam", "call-member", "call:livestream:42", w.clock.Now().Add(10*time.Second))
	w.grant("user:uma", "call-member", "calltype:livestream")
	q := authz.LookupSubjectsQuery{Resource: "call:livestream:42", Permission: "join-call"}
	_, token, _, err := w.eng.LookupSubjects(w.ctx, q, 1, "")
	if err != nil || token == "" {
		t.Fatalf("the first page: %q, %v", token, err)
	}
	w.clock.Advance(time.Minute)
	if _, _, _, err := w.eng.LookupSubjects(w.ctx, q, 1, token); err != nil {
		t.Fatalf("the next page a minute on: %v", err)
	}
	w.clock.Advance(time.Second)
	_, _, _, err = w.eng.LookupSubjects(w.ctx, q, 1, token)
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Kind != authz.KindPageTokenExpired || e.Field != "page_token" || e.Value != token || !strings.Contains(e.Reason, "1m1s ago") {
		t.Fatalf("the next page a minute and a second on = %v; want FAILED_PRECONDITION %s on page_token, naming the token sent and saying how long ago", err, authz.KindPageTokenExpired)
	}
	page, _, _, err := w.eng.LookupSubjects(w.ctx, q, 10, "")
	if err != nil || len(page) != 1 || page[0].Name != "user:uma" {
		t.Errorf("the lookup started again = %+v, %v; want uma alone", page, err)
	}
}

// rewritten is a lookup's page token as a caller could rewrite it, where
// the token carries them after its filter hash, its first page's revision
// and its position: the revision up to which the answer is known to hold
// (checked) and the time its grants and blocks are judged at (when). A zero
// checked or when leaves that one as it was.
func rewritten(t *testing.T, token string, checked authz.Revision, when time.Time) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < 40 {
		t.Fatalf("%q is not a lookup's page token: %v", token, err)
	}
	if checked != 0 {
		binary.BigEndian.PutUint64(raw[24:], uint64(checked))
	}
	if !when.IsZero() {
		binary.BigEndian.PutUint64(raw[32:], uint64(when.UnixNano()))
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// wantRewrittenRefused fails the test unless a page asked with a rewritten
// token was refused as a token of another server is, naming the token, and
// answered nothing.
func wantRewrittenRefused(t *testing.T, what, token string, page []authz.Found, next string, err error) {
	t.Helper()
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Kind != authz.KindPageTokenExpired || e.Field != "page_token" || e.Value != token {
		t.Errorf("%s: answered %v (next %q), %v; want FAILED_PRECONDITION PAGE_TOKEN_EXPIRED on page_token %q", what, page, next, err, token)
		return
	}
	if page != nil || next != "" {
		t.Errorf("%s: refused, yet answered %v (next %q)", what, page, next)
	}
}

// A lookup's page token says at which revision and time its pages are
// judged, and up to which revision the changes since are known to leave
// the answer as it was. A caller that rewrites them, to count grants that
// have run out as live or to skip what changed since the first page, is
// refused as for a token of another server, and gets no answer; the token
// as it was goes on.
func TestLookupTokensRewrittenByACallerAreRefused(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 3 {
		w.put(fmt.Sprintf("call:livestream:%d", 100+i), "calltype:livestream")
	}
	w.grant("user:bob", "call-member", "calltype:livestream")
	w.grantUntil("user:bob", "host", "call:livestream:100", w.clock.Now().Add(time.Minute))
	w.grant("user:bob", "host", "call:livestream:101")
	w.grant("user:bob", "host", "call:livestream:102")
	w.grant("user:ann", "call-member", "calltype:livestream")
	w.grant("user:cat", "call-member", "calltype:livestream")
	w.grantUntil("user:sam", "call-member", "calltype:livestream", w.clock.Now().Add(time.Minute))
	w.clock.Advance(2 * time.Minute) // bob no longer hosts call 100, sam is no longer a member
	yearAgo := w.clock.Now().AddDate(-1, 0, 0)

	resources := authz.LookupResourcesQuery{Subject: "user:bob", Permission: "end-call", Type: "call"}
	first, token, _, err := w.eng.LookupResources(w.ctx, resources, 1, "")
	// The tree lists a resource's newest child first: 102, 101, then 100.
	if err != nil || len(first) != 1 || first[0].Name != "call:livestream:102" || token == "" {
		t.Fatalf("LookupResources' first page = %v, %q, %v; want call 102 and a next page", first, token, err)
	}
	forged := rewritten(t, token, 0, yearAgo)
	page, next, _, err := w.eng.LookupResources(w.ctx, resources, 10, forged)
	wantRewrittenRefused(t, "LookupResources with a token rewritten to judge grants a year ago", forged, page, next, err)
	page, next, _, err = w.eng.LookupResources(w.ctx, resources, 10, token)
	if err != nil || len(page) != 1 || page[0].Name != "call:livestream:101" || next != "" {
		t.Errorf("LookupResources with the token as it was = %v, %q, %v; want call 101, the last page", page, next, err)
	}

	subjects := authz.LookupSubjectsQuery{Resource: "call:livestream:42", Permission: "join-call"}
	first, token, _, err = w.eng.LookupSubjects(w.ctx, subjects, 1, "")
	if err != nil || len(first) != 1 || first[0].Name != "user:ann" || token == "" {
		t.Fatalf("LookupSubjects' first page = %v, %q, %v; want ann and a next page", first, token, err)
	}
	forged = rewritten(t, token, 0, yearAgo)
	page, next, _, err = w.eng.LookupSubjects(w.ctx, subjects, 10, forged)
	wantRewrittenRefused(t, "LookupSubjects with a token rewritten to judge grants a year ago", forged, page, next, err)
	page, next, _, err = w.eng.LookupSubjects(w.ctx, subjects, 10, token)
	if got := foundNames(page); err != nil || !slices.Equal(got, []string{"user:bob", "user:cat"}) || next != "" {
		t.Errorf("LookupSubjects with the token as it was = %v, %q, %v; want bob and cat, the last page", got, next, err)
	}

	// A grant on the call's path changes the answer: the token as it was
	// is refused, and one rewritten to say the answer held up to now too.
	_, token, _, err = w.eng.LookupSubjects(w.ctx, subjects, 1, "")
	if err != nil || token == "" {
		t.Fatalf("LookupSubjects' first page: %q, %v", token, err)
	}
	w.grant("user:late", "call-member", "account:acme")
	page, next, _, err = w.eng.LookupSubjects(w.ctx, subjects, 10, token)
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Kind != authz.KindPageTokenExpired || e.Field != "page_token" || page != nil || next != "" {
		t.Errorf("LookupSubjects with the token as it was, after a grant on the call's path = %v (next %q), %v; want FAILED_PRECONDITION PAGE_TOKEN_EXPIRED on page_token", page, next, err)
	}
	forged = rewritten(t, token, w.eng.Index().Revision(), time.Time{})
	page, next, _, err = w.eng.LookupSubjects(w.ctx, subjects, 10, forged)
	wantRewrittenRefused(t, "LookupSubjects with a token rewritten to skip a grant on the call's path", forged, page, next, err)
}

func foundNames(found []authz.Found) []string {
	var out []string
	for _, f := range found {
		out = append(out, f.Name)
	}
	return out
}

// A resource a page walked past last, which holds none of the type, may
// move between pages without the answer changing: the next page goes on
// where the walk stopped, not after where that resource went, so that no
// answer is skipped or listed twice.
func TestALookupWalkedPastResourceMovesBetweenPages(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 25 {
		w.put(fmt.Sprintf("workspace:acme-%d", i), "account:acme")
	}
	w.put("workspace:acme-calls", "account:acme")
	w.put("call:acme-1", "workspace:acme-calls")
	w.grant("user:bob", "call-member", "account:acme")
	q := authz.LookupResourcesQuery{Subject: "user:bob", Permission: "join-call", Type: "call", Under: "account:acme"}
	want := lookupAll(t, w, q, "")
	authz.SetLookupScan(t, 10)
	got, token, _, err := w.eng.LookupResources(w.ctx, q, 100, "")
	if err != nil || token == "" {
		t.Fatalf("the first page: %v, %v, token %q; want a token", got, err, token)
	}
	// Whichever workspace the page walked past last goes below the one
	// that holds the call, after the call.
	for i := range 25 {
		w.put(fmt.Sprintf("workspace:acme-%d", i), "workspace:acme-calls")
	}
	all := foundNames(got)
	for token != "" {
		got, token, _, err = w.eng.LookupResources(w.ctx, q, 100, token)
		var e *authz.Error
		if errors.As(err, &e) && e.Code == authz.FailedPrecondition && e.Kind == authz.KindPageTokenExpired {
			return // told to start again: nothing skipped or repeated
		}
		if err != nil {
			t.Fatalf("a later page: %v", err)
		}
		all = append(all, foundNames(got)...)
	}
	slices.Sort(all)
	if !slices.Equal(all, want) {
		t.Errorf("paged past a move of what it walked past, the lookup found %v, want %v", all, want)
	}
}

// lookupAll reads q's pages from token on, and returns the names found,
// sorted.
func lookupAll(t *testing.T, w *world, q authz.LookupResourcesQuery, token string) []string {
	t.Helper()
	var all []string
	for pages := 0; ; pages++ {
		got, next, _, err := w.eng.LookupResources(w.ctx, q, 100, token)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		all = append(all, foundNames(got)...)
		if next == "" {
			break
		}
		token = next
	}
	slices.Sort(all)
	return all
}

// lookUpAll pages q to its end, size a page, and returns the names found
// and how many pages came before the last.
func lookUpAll(t *testing.T, w *world, q authz.LookupResourcesQuery, size int) ([]string, int) {
	t.Helper()
	var all []string
	pages := 0
	for token := ""; ; pages++ {
		got, next, _, err := w.eng.LookupResources(w.ctx, q, size, token)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, f := range got {
			all = append(all, f.Name)
		}
		if next == "" {
			return all, pages
		}
		token = next
	}
}

// A LookupSubjects whose resource is deleted between two pages is told to
// start again, as after any change that may alter its answer: the first
// page's revision held the resource, and no later page answers at it that
// the resource is not registered.
func TestALookupsResourceDeletedBetweenPagesStartsAgain(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for i := range 3 {
		w.grant(fmt.Sprintf("user:s%d", i), "call-member", "call:livestream:42")
	}
	q := authz.LookupSubjectsQuery{Resource: "call:livestream:42", Permission: "join-call"}
	_, next, _, err := w.eng.LookupSubjects(w.ctx, q, 1, "")
	if err != nil || next == "" {
		t.Fatalf("first page: %q, %v", next, err)
	}
	expired := func(what string) {
		t.Helper()
		_, _, _, err := w.eng.LookupSubjects(w.ctx, q, 1, next)
		var e *authz.Error
		if !errors.As(err, &e) || e.Code != authz.FailedPrecondition || e.Kind != authz.KindPageTokenExpired || e.Field != "page_token" {
			t.Errorf("the page after %s = %v, want FAILED_PRECONDITION %s on page_token", what, err, authz.KindPageTokenExpired)
		}
	}
	w.deleteResource("call:livestream:42")
	expired("its resource was deleted")
	w.put("call:livestream:42", "account:globex")
	expired("its resource was deleted and registered again elsewhere")
}
