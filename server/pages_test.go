package server_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/storage/memory"
)

// pagedList is one list RPC seen as pages of strings.
type pagedList struct {
	name string
	// page reads one page of at most size items after token.
	page func(ctx context.Context, size int32, token string) (items []string, next string, err error)
	// elsewhere uses a token of page with another request: other filters,
	// or another list.
	elsewhere func(ctx context.Context, token string) error
}

// TestEveryListPages proves, for every list RPC, that reading it a page at
// a time gives each item of the whole list once, in order, and that a page
// token works only for the request it came from.
func TestEveryListPages(t *testing.T) {
	f := newServer(t)
	f.world()
	for _, call := range []string{"call:livestream:43", "call:livestream:44"} {
		f.putResource(call, livestream)
		f.grant("user:roamer", "call-member", call)
	}
	f.grant("user:roamer", "call-member", meeting7)
	for i := range 4 {
		f.grant(fmt.Sprintf("user:u%d", i), "call-member", stream42)
	}
	for _, q := range []*usherv1.Quota{
		{Scope: acme, ResourceType: "call", Limit: 100},
		{Scope: acme, ResourceType: "event", Limit: 10},
		{Scope: sales, ResourceType: "call", Limit: 50},
		{Scope: sales, ResourceType: "call", Subject: "user:roamer", Limit: 5},
	} {
		if _, err := f.admin.PutQuota(f.ctx(), &usherv1.PutQuotaRequest{Quota: q}); err != nil {
			t.Fatalf("PutQuota(%v): %v", q, err)
		}
	}

	lists := []pagedList{
		{name: "ListGrants",
			page: func(ctx context.Context, size int32, token string) ([]string, string, error) {
				r, err := f.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Resource: stream42, PageSize: size, PageToken: token})
				var out []string
				for _, g := range r.GetGrants() {
					out = append(out, g.GetSubject()+" "+g.GetRole())
				}
				return out, r.GetNextPageToken(), err
			},
			elsewhere: func(ctx context.Context, token string) error {
				_, err := f.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Resource: meeting7, PageToken: token})
				return err
			}},
		{name: "ListRoles",
			page: func(ctx context.Context, size int32, token string) ([]string, string, error) {
				r, err := f.admin.ListRoles(ctx, &usherv1.ListRolesRequest{Resource: stream42, PageSize: size, PageToken: token})
				var out []string
				for _, role := range r.GetRoles() {
					out = append(out, role.GetName()+" at "+role.GetScope())
				}
				return out, r.GetNextPageToken(), err
			},
			elsewhere: func(ctx context.Context, token string) error {
				_, err := f.admin.ListRoles(ctx, &usherv1.ListRolesRequest{Resource: stream42, AssignableBy: "user:roamer", PageToken: token})
				return err
			}},
		{name: "ListQuotas",
			page: func(ctx context.Context, size int32, token string) ([]string, string, error) {
				r, err := f.admin.ListQuotas(ctx, &usherv1.ListQuotasRequest{Resource: stream42, PageSize: size, PageToken: token})
				var out []string
				for _, q := range r.GetQuotas() {
					out = append(out, fmt.Sprintf("%s %s %s %d", q.GetScope(), q.GetResourceType(), q.GetSubject(), q.GetLimit()))
				}
				return out, r.GetNextPageToken(), err
			},
			elsewhere: func(ctx context.Context, token string) error {
				_, err := f.admin.ListQuotas(ctx, &usherv1.ListQuotasRequest{Resource: meeting7, PageToken: token})
				return err
			}},
		{name: "ListChanges",
			page: func(ctx context.Context, size int32, token string) ([]string, string, error) {
				r, err := f.admin.ListChanges(ctx, &usherv1.ListChangesRequest{Resource: stream42, PageSize: size, PageToken: token})
				var out []string
				for _, c := range r.GetChanges() {
					out = append(out, fmt.Sprint(c.GetRevision()))
				}
				return out, r.GetNextPageToken(), err
			},
			elsewhere: func(ctx context.Context, token string) error {
				_, err := f.admin.ListChanges(ctx, &usherv1.ListChangesRequest{Resource: meeting7, PageToken: token})
				return err
			}},
		{name: "ExportPolicy",
			page: func(ctx context.Context, size int32, token string) ([]string, string, error) {
				r, err := f.admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{PageSize: size, PageToken: token})
				var out []string
				for _, res := range r.GetPolicy().GetResources() {
					out = append(out, res.GetName())
				}
				return out, r.GetNextPageToken(), err
			},
			elsewhere: func(ctx context.Context, token string) error {
				_, err := f.admin.ListRoles(ctx, &usherv1.ListRolesRequest{Resource: stream42, PageToken: token})
				return err
			}},
		{name: "LookupResources",
			page: func(ctx context.Context, size int32, token string) ([]string, string, error) {
				r, err := f.authz.LookupResources(ctx, &usherv1.LookupResourcesRequest{Subject: "user:roamer", Permission: "join-call",
					ResourceType: "call", PageSize: size, PageToken: token})
				var out []string
				for _, l := range r.GetResources() {
					out = append(out, l.GetName())
				}
				return out, r.GetNextPageToken(), err
			},
			elsewhere: func(ctx context.Context, token string) error {
				_, err := f.authz.LookupResources(ctx, &usherv1.LookupResourcesRequest{Subject: "user:roamer", Permission: "join-call",
					ResourceType: "call", Under: livestream, PageToken: token})
				return err
			}},
		{name: "LookupSubjects",
			page: func(ctx context.Context, size int32, token string) ([]string, string, error) {
				r, err := f.authz.LookupSubjects(ctx, &usherv1.LookupSubjectsRequest{Resource: stream42, Permission: "join-call",
					PageSize: size, PageToken: token})
				var out []string
				for _, l := range r.GetSubjects() {
					out = append(out, l.GetName())
				}
				return out, r.GetNextPageToken(), err
			},
			elsewhere: func(ctx context.Context, token string) error {
				_, err := f.authz.LookupSubjects(ctx, &usherv1.LookupSubjectsRequest{Resource: stream42, Permission: "join-call",
					SubjectKind: "user", PageToken: token})
				return err
			}},
	}
	for _, l := range lists {
		t.Run(l.name+": pages of one item read the whole list, each item once", func(t *testing.T) {
			whole, next, err := l.page(callCtx(t), 1000, "")
			if err != nil || next != "" {
				t.Fatalf("one page of 1000: %v, next page token %q", err, next)
			}
			if len(whole) < 3 {
				t.Fatalf("the world lists only %v; a test of paging needs three items or more", whole)
			}
			var got []string
			token := ""
			for range len(whole) + 1 {
				items, next, err := l.page(callCtx(t), 1, token)
				if err != nil {
					t.Fatalf("after %d items: %v", len(got), err)
				}
				if len(items) > 1 {
					t.Fatalf("a page of size 1 holds %v", items)
				}
				got = append(got, items...)
				if token = next; token == "" {
					break
				}
			}
			if token != "" || !slices.Equal(got, whole) {
				t.Errorf("page by page: %v (more: %t), want %v", got, token != "", whole)
			}
		})
		t.Run(l.name+": a page token is refused by another request", func(t *testing.T) {
			_, token, err := l.page(callCtx(t), 1, "")
			if err != nil || token == "" {
				t.Fatalf("first page: %v, next page token %q", err, token)
			}
			st := wantCode(t, l.elsewhere(callCtx(t), token), codes.InvalidArgument)
			if !strings.HasPrefix(st.Message(), "page_token ") {
				t.Errorf("the refusal %q does not name page_token", st.Message())
			}
		})
	}
}

// A page token cut short, as a client that mangles it sends it, is refused
// INVALID_ARGUMENT naming page_token, by every list whose tokens carry no
// MAC; it neither answers a page from elsewhere in the list nor starts
// again.
func TestAPageTokenCutShortIsRefused(t *testing.T) {
	f := newServer(t)
	f.world()
	for i := range 3 {
		f.grant(fmt.Sprintf("user:u%d", i), "call-member", stream42)
		f.grant("user:roamer", "call-member", []string{stream42, meeting7, sales}[i])
	}
	for _, q := range []*usherv1.Quota{{Scope: acme, ResourceType: "call", Limit: 100}, {Scope: acme, ResourceType: "event", Limit: 10}} {
		if _, err := f.admin.PutQuota(f.ctx(), &usherv1.PutQuotaRequest{Quota: q}); err != nil {
			t.Fatalf("PutQuota(%v): %v", q, err)
		}
	}
	lists := map[string]func(ctx context.Context, token string) (string, error){
		"ListGrants by resource": func(ctx context.Context, token string) (string, error) {
			r, err := f.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Resource: stream42, PageSize: 1, PageToken: token})
			return r.GetNextPageToken(), err
		},
		"ListGrants by subject": func(ctx context.Context, token string) (string, error) {
			r, err := f.admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Subject: "user:roamer", PageSize: 1, PageToken: token})
			return r.GetNextPageToken(), err
		},
		"ListRoles": func(ctx context.Context, token string) (string, error) {
			r, err := f.admin.ListRoles(ctx, &usherv1.ListRolesRequest{Resource: stream42, PageSize: 1, PageToken: token})
			return r.GetNextPageToken(), err
		},
		"ListQuotas": func(ctx context.Context, token string) (string, error) {
			r, err := f.admin.ListQuotas(ctx, &usherv1.ListQuotasRequest{Resource: stream42, PageSize: 1, PageToken: token})
			return r.GetNextPageToken(), err
		},
		"ListChanges": func(ctx context.Context, token string) (string, error) {
			r, err := f.admin.ListChanges(ctx, &usherv1.ListChangesRequest{PageSize: 1, PageToken: token})
			return r.GetNextPageToken(), err
		},
		"ExportPolicy": func(ctx context.Context, token string) (string, error) {
			r, err := f.admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{PageSize: 1, PageToken: token})
			return r.GetNextPageToken(), err
		},
	}
	for name, page := range lists {
		t.Run(name, func(t *testing.T) {
			token, err := page(callCtx(t), "")
			if err != nil || token == "" {
				t.Fatalf("first page: %v, next page token %q", err, token)
			}
			for cut := 1; cut <= 4; cut++ {
				short := token[:len(token)-cut]
				_, err := page(callCtx(t), short)
				if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), fmt.Sprintf("page_token %q", short)) {
					t.Errorf("the token cut by %d: %v, want InvalidArgument naming page_token %q", cut, err, short)
				}
			}
		})
	}
}

// lookupPages are user:roamer's calls and call 42's participants, the two
// lookups, seen as pages of names through client.
func lookupPages(client usherv1.AuthorizationServiceClient) map[string]func(ctx context.Context, size int32, token string) ([]string, string, error) {
	return map[string]func(ctx context.Context, size int32, token string) ([]string, string, error){
		"LookupResources": func(ctx context.Context, size int32, token string) ([]string, string, error) {
			r, err := client.LookupResources(ctx, &usherv1.LookupResourcesRequest{Subject: "user:roamer", Permission: "join-call",
				ResourceType: "call", PageSize: size, PageToken: token})
			var out []string
			for _, l := range r.GetResources() {
				out = append(out, l.GetName())
			}
			return out, r.GetNextPageToken(), err
		},
		"LookupSubjects": func(ctx context.Context, size int32, token string) ([]string, string, error) {
			r, err := client.LookupSubjects(ctx, &usherv1.LookupSubjectsRequest{Resource: stream42, Permission: "join-call",
				PageSize: size, PageToken: token})
			var out []string
			for _, l := range r.GetSubjects() {
				out = append(out, l.GetName())
			}
			return out, r.GetNextPageToken(), err
		},
	}
}

// rewritten is a lookup's page token with the time its grants are judged
// at set to when, where the token carries it: after its filter hash, its
// first page's revision, its position and the revision up to which its
// answer is known to hold, big-endian.
func rewritten(t *testing.T, token string, when time.Time) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < 40 {
		t.Fatalf("%q is not a lookup's page token: %v", token, err)
	}
	binary.BigEndian.PutUint64(raw[32:], uint64(when.UnixNano()))
	return base64.RawURLEncoding.EncodeToString(raw)
}

// A lookup's page token is good only on the server that answered its first
// page, as that server made it: one a caller rewrote to judge grants a year
// ago, when grants since run out were live, is refused as one of another
// server is, FAILED_PRECONDITION PAGE_TOKEN_EXPIRED naming the token, and
// answers nothing; the token as it was goes on.
func TestLookupTokensAreGoodOnlyAsTheirServerMadeThem(t *testing.T) {
	clock := authz.NewManualClock(time.Now())
	be := memory.New()
	engine, err := authz.Start(t.Context(), be, authz.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	f := serveEngine(t, engine)
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{Policy: msg}); err != nil {
		t.Fatal(err)
	}
	f.world()
	for _, call := range []string{"call:livestream:43", "call:livestream:44"} {
		f.putResource(call, livestream)
	}
	f.grant("user:roamer", "call-member", stream42)
	f.grant("user:roamer", "call-member", "call:livestream:43")
	f.grantUntil("user:roamer", "call-member", "call:livestream:44", clock.Now().Add(time.Minute))
	f.grant("user:ann", "call-member", livestream)
	f.grant("user:bob", "call-member", livestream)
	f.grantUntil("user:sam", "call-member", livestream, clock.Now().Add(time.Minute))
	clock.Advance(2 * time.Minute) // roamer's membership of call 44 and sam's of the call type run out
	// Another server over the same data, as a second replica is.
	other, err := authz.Start(t.Context(), be, authz.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	replica := serveEngine(t, other)

	here, there := lookupPages(f.authz), lookupPages(replica.authz)
	for _, c := range []struct {
		lookup string
		rest   []string // the answer after the first page, as the token goes on
	}{
		{"LookupResources", []string{"call:livestream:43"}},
		{"LookupSubjects", []string{"user:ann", "user:bob"}},
	} {
		first, token, err := here[c.lookup](callCtx(t), 1, "")
		if err != nil || len(first) != 1 || token == "" {
			t.Fatalf("%s's first page: %v, %q, %v", c.lookup, first, token, err)
		}
		refusals := []struct {
			name  string
			page  func(ctx context.Context, size int32, token string) ([]string, string, error)
			token string
		}{
			{c.lookup + ": a token rewritten to judge grants a year ago is refused", here[c.lookup], rewritten(t, token, clock.Now().AddDate(-1, 0, 0))},
			{c.lookup + ": a token of another server is refused", there[c.lookup], token},
		}
		for _, r := range refusals {
			t.Run(r.name, func(t *testing.T) {
				got, next, err := r.page(callCtx(t), 10, r.token)
				if err == nil {
					t.Fatalf("answered %v (next page token %q), want FAILED_PRECONDITION", got, next)
				}
				wantDetails(t, wantCode(t, err, codes.FailedPrecondition), refusal{reason: "PAGE_TOKEN_EXPIRED", field: "page_token", value: r.token})
				if got != nil || next != "" {
					t.Errorf("refused, yet answered %v (next page token %q)", got, next)
				}
			})
		}
		t.Run(c.lookup+": the token as it was goes on", func(t *testing.T) {
			got, next, err := here[c.lookup](callCtx(t), 10, token)
			if err != nil || !slices.Equal(got, c.rest) || next != "" {
				t.Errorf("the next page: %v (next page token %q), %v; want %v, the last page", got, next, err, c.rest)
			}
		})
	}
}

// An export's pages follow the tree as the server holds it, siblings in an
// order a restart changes: a token of the server before its restart is
// refused, FAILED_PRECONDITION PAGE_TOKEN_EXPIRED naming the token, rather
// than read as a place in the new order, where the resources after it were
// the ones already sent and those not yet sent would never come.
func TestAnExportTokenOfTheServerBeforeItsRestartIsRefused(t *testing.T) {
	f := newServer(t)
	for _, account := range []string{"account:b", "account:c", "account:a", "account:d"} {
		f.putResource(account, "")
	}
	var sent []string
	token := ""
	for range 2 {
		r, err := f.admin.ExportPolicy(f.ctx(), &usherv1.ExportPolicyRequest{PageSize: 1, PageToken: token})
		if err != nil || r.GetNextPageToken() == "" {
			t.Fatalf("page %d: next page token %q, %v", len(sent)+1, r.GetNextPageToken(), err)
		}
		for _, res := range r.GetPolicy().GetResources() {
			sent = append(sent, res.GetName())
		}
		token = r.GetNextPageToken()
	}
	g := f.restart()
	r, err := g.admin.ExportPolicy(g.ctx(), &usherv1.ExportPolicyRequest{PageSize: 10, PageToken: token})
	if err == nil {
		var rest []string
		for _, res := range r.GetPolicy().GetResources() {
			rest = append(rest, res.GetName())
		}
		t.Fatalf("after %v, the restarted server answered %v (next page token %q), want FAILED_PRECONDITION", sent, rest, r.GetNextPageToken())
	}
	wantDetails(t, wantCode(t, err, codes.FailedPrecondition), refusal{reason: "PAGE_TOKEN_EXPIRED", field: "page_token", value: token})
	if _, err := g.admin.ExportPolicy(g.ctx(), &usherv1.ExportPolicyRequest{PageSize: 1}); err != nil {
		t.Errorf("an export from its first page after the restart: %v", err)
	}
}

// A resource an export's page ended at, moved before the next page, is
// where the walk goes on from: the next page is refused, FAILED_PRECONDITION
// PAGE_TOKEN_EXPIRED naming the token, as when it is deleted, rather than
// go on from its new place and leave out the resources that neither moved
// nor changed.
func TestAnExportWhoseLastResourceMovedSinceIsRefused(t *testing.T) {
	f := newServer(t)
	for _, account := range []string{"account:z", "account:y", "account:x"} {
		f.putResource(account, "")
	}
	f.putResource("workspace:x1", "account:x")
	first, err := f.admin.ExportPolicy(f.ctx(), &usherv1.ExportPolicyRequest{PageSize: 2})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("the first page: next page token %q, %v", first.GetNextPageToken(), err)
	}
	var sent []string
	for _, res := range first.GetPolicy().GetResources() {
		sent = append(sent, res.GetName())
	}
	if !slices.Equal(sent, []string{"account:x", "workspace:x1"}) {
		t.Fatalf("the first page holds %v; the test means it to end inside account:x", sent)
	}
	for _, move := range []struct{ name, parent string }{{"account:x", "account:z"}, {"workspace:x1", "account:y"}} {
		t.Run("after a move of "+move.name, func(t *testing.T) {
			f.putResource(move.name, move.parent)
			r, err := f.admin.ExportPolicy(f.ctx(), &usherv1.ExportPolicyRequest{PageSize: 10, PageToken: first.GetNextPageToken()})
			if err == nil {
				var rest []string
				for _, res := range r.GetPolicy().GetResources() {
					rest = append(rest, res.GetName())
				}
				t.Fatalf("after %v, the next page holds %v (next page token %q), want FAILED_PRECONDITION", sent, rest, r.GetNextPageToken())
			}
			wantDetails(t, wantCode(t, err, codes.FailedPrecondition), refusal{reason: "PAGE_TOKEN_EXPIRED", field: "page_token", value: first.GetNextPageToken()})
		})
	}
}

// A page token of another list, given to a lookup, is a token of another
// request, refused INVALID_ARGUMENT naming page_token as the lookups'
// tokens of other filters are, however long it is: not as a lookup's token
// of another server or one altered, which the client is told to start the
// lookup again without.
func TestAListsPageTokenGivenToALookupIsOfAnotherRequest(t *testing.T) {
	f := newServer(t)
	f.world()
	for _, subject := range []string{"user:3f6c2a1e-5b7d-4e9a-8c0f-1d2e3f4a5b6c", "user:9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"} {
		f.grant(subject, "call-member", stream42)
	}
	list, err := f.admin.ListGrants(f.ctx(), &usherv1.ListGrantsRequest{Resource: stream42, PageSize: 1})
	if err != nil || list.GetNextPageToken() == "" {
		t.Fatalf("ListGrants' first page: next page token %q, %v", list.GetNextPageToken(), err)
	}
	token := list.GetNextPageToken()
	for name, page := range lookupPages(f.authz) {
		t.Run(name, func(t *testing.T) {
			got, next, err := page(callCtx(t), 10, token)
			if err == nil {
				t.Fatalf("answered %v (next page token %q), want INVALID_ARGUMENT", got, next)
			}
			wantDetails(t, wantCode(t, err, codes.InvalidArgument), refusal{reason: "INVALID_FIELD", field: "page_token", value: token})
		})
	}
}

// A ListQuotas page ends at a quota of some scope above the resource; a
// move above the resource between pages puts that scope nearer or further:
// the next page goes on after that quota of that scope, wherever it now
// is, leaving out none of those still above and sending none twice.
func TestListQuotasPagesGoOnAtTheirScopeAfterAMove(t *testing.T) {
	f := newServer(t)
	f.world()
	for _, q := range []*usherv1.Quota{
		{Scope: sales, ResourceType: "call", Limit: 50},
		{Scope: "root", ResourceType: "call", Limit: 1000},
		{Scope: "root", ResourceType: "event", Limit: 100},
	} {
		if _, err := f.admin.PutQuota(f.ctx(), &usherv1.PutQuotaRequest{Quota: q}); err != nil {
			t.Fatalf("PutQuota(%v): %v", q, err)
		}
	}
	page := func(token string, size int32) ([]string, string) {
		t.Helper()
		r, err := f.admin.ListQuotas(f.ctx(), &usherv1.ListQuotasRequest{Resource: stream42, PageSize: size, PageToken: token})
		if err != nil {
			t.Fatalf("ListQuotas(%s, token %q): %v", stream42, token, err)
		}
		var out []string
		for _, q := range r.GetQuotas() {
			out = append(out, q.GetScope()+" "+q.GetResourceType())
		}
		return out, r.GetNextPageToken()
	}
	// The call's own quotas, which every call starts with, come first.
	own := []string{stream42 + " call", stream42 + " event"}
	first, token := page("", 4)
	if !slices.Equal(first, append(own, sales+" call", "root call")) || token == "" {
		t.Fatalf("the first page: %v, next page token %q; the test means it to end at root's first quota", first, token)
	}
	// The call type goes up from the workspace to the account: root is
	// one level nearer the call.
	f.putResource(livestream, acme)
	if rest, next := page(token, 10); !slices.Equal(rest, []string{"root event"}) || next != "" {
		t.Errorf("after %v and a move, the next page: %v (next page token %q), want [root event], the last", first, rest, next)
	}
	// Back under the workspace, a page ends at its quota; moved away again,
	// the workspace is no longer above the call, and the token is refused.
	f.putResource(livestream, sales)
	if first, token = page("", 3); !slices.Equal(first, append(own, sales+" call")) || token == "" {
		t.Fatalf("the first page: %v, next page token %q; the test means it to end at the workspace's quota", first, token)
	}
	f.putResource(livestream, acme)
	_, err := f.admin.ListQuotas(f.ctx(), &usherv1.ListQuotasRequest{Resource: stream42, PageToken: token})
	wantDetails(t, wantCode(t, err, codes.FailedPrecondition), refusal{reason: "PAGE_TOKEN_EXPIRED", field: "page_token", value: token})
}

// A tenant's roles may each list a thousand assignable roles, some 100 KB
// apiece: a page of a thousand of them would be built whole on the server
// and refused by a client that takes gRPC's default of 4 MiB. ListRoles,
// ListChanges and ExportPolicy pages end at authz.MaxPageBytes instead,
// short, with a token, and every role comes once in all.
func TestPagesOfLargeRolesFitWhatAClientTakes(t *testing.T) {
	f := newServer(t)
	const accounts, perAccount = 2, 45 // 4.6 MB of roles on each account
	var assignable []string
	for i := range 1000 {
		assignable = append(assignable, fmt.Sprintf("r%04d-%s", i, strings.Repeat("x", 94)))
	}
	from, err := f.authz.GetRevision(f.ctx(), &usherv1.GetRevisionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for a := range accounts {
		account := fmt.Sprintf("account:big%d", a)
		if _, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: account}); err != nil {
			t.Fatal(err)
		}
		for r := range perAccount {
			name := fmt.Sprintf("wide-%d", r)
			role := &usherv1.Role{Name: name, Scope: account, Permissions: []string{"join-call"}, AssignableRoles: assignable}
			if _, err := f.admin.PutRole(f.ctx(), &usherv1.PutRoleRequest{Role: role}); err != nil {
				t.Fatal(err)
			}
			want[account+"/"+name] = true
		}
	}
	check := func(what string, pages int, got, want map[string]bool) {
		t.Helper()
		if pages < 3 {
			t.Errorf("%s came in %d pages, want at least 3 of about 2 MiB", what, pages)
		}
		if len(got) != len(want) {
			t.Errorf("%s listed %d of the %d large roles", what, len(got), len(want))
		}
	}

	got, pages, token := map[string]bool{}, 0, ""
	for {
		resp, err := f.admin.ListRoles(f.ctx(), &usherv1.ListRolesRequest{Resource: "account:big0", PageSize: authz.MaxPageSize, PageToken: token})
		if err != nil {
			t.Fatalf("ListRoles, page %d: %v", pages+1, err)
		}
		pages++
		for _, r := range resp.GetRoles() {
			if strings.HasPrefix(r.GetName(), "wide-") {
				if got[r.GetScope()+"/"+r.GetName()] {
					t.Errorf("ListRoles listed %s twice", r.GetName())
				}
				got[r.GetScope()+"/"+r.GetName()] = true
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	onBig0 := map[string]bool{}
	for k := range want {
		if strings.HasPrefix(k, "account:big0/") {
			onBig0[k] = true
		}
	}
	check("ListRoles", pages, got, onBig0)

	got, pages, token = map[string]bool{}, 0, ""
	for {
		resp, err := f.admin.ListChanges(f.ctx(), &usherv1.ListChangesRequest{AfterRevision: from.GetRevision(), PageSize: authz.MaxPageSize, PageToken: token})
		if err != nil {
			t.Fatalf("ListChanges, page %d: %v", pages+1, err)
		}
		pages++
		for _, cs := range resp.GetChanges() {
			for _, c := range cs.GetChanges() {
				if r := c.GetRole(); r != nil {
					if got[r.GetScope()+"/"+r.GetName()] {
						t.Errorf("ListChanges listed the definition of %s twice", r.GetName())
					}
					got[r.GetScope()+"/"+r.GetName()] = true
				}
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	check("ListChanges", pages, got, want)

	got = map[string]bool{}
	resources := map[string]bool{}
	pages = exportPages(t, f, func(p *usherv1.Policy) {
		for _, r := range p.GetRoles() {
			if strings.HasPrefix(r.GetName(), "wide-") {
				if got[r.GetScope()+"/"+r.GetName()] {
					t.Errorf("ExportPolicy listed %s on %s twice", r.GetName(), r.GetScope())
				}
				got[r.GetScope()+"/"+r.GetName()] = true
			}
		}
		for _, r := range p.GetResources() {
			if resources[r.GetName()] {
				t.Errorf("ExportPolicy listed %s twice", r.GetName())
			}
			resources[r.GetName()] = true
		}
	})
	check("ExportPolicy", pages, got, want)
	for a := range accounts {
		if account := fmt.Sprintf("account:big%d", a); !resources[account] {
			t.Errorf("ExportPolicy left out %s", account)
		}
	}
}

// A quota names its scope and may name a subject, each up to some 290
// bytes: an ExportPolicy page counts them as they are, and ends once it
// holds about authz.MaxPageBytes, before the resource after, rather than
// send resources of thousands of quotas together past what a client takes.
func TestExportPolicyPagesOfLongQuotasFitWhatAClientTakes(t *testing.T) {
	f := newServer(t)
	first, err := f.admin.ExportPolicy(f.ctx(), &usherv1.ExportPolicyRequest{PageSize: authz.MaxPageSize})
	if err != nil {
		t.Fatal(err)
	}
	const accounts, perAccount = 3, 3000 // some 1.5 MB of quotas on each
	id := strings.Repeat("x", 240)
	for a := range accounts {
		// A policy manages the resources it lists: each apply leaves the
		// accounts of the others be.
		p := proto.Clone(first.GetPolicy()).(*usherv1.Policy)
		account := fmt.Sprintf("account:%d-%s", a, id)
		p.Resources = append(p.Resources, &usherv1.Resource{Name: account, Parent: authz.RootName})
		for q := range perAccount {
			p.Quotas = append(p.Quotas, &usherv1.Quota{Scope: account, ResourceType: "call", Subject: fmt.Sprintf("user:%04d-%s", q, id), Limit: 1})
		}
		if _, err := f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{Policy: p}); err != nil {
			t.Fatal(err)
		}
	}
	quotas := 0
	pages := exportPages(t, f, func(p *usherv1.Policy) {
		for _, q := range p.GetQuotas() {
			if strings.HasPrefix(q.GetSubject(), "user:") {
				quotas++
			}
		}
	})
	if pages < 2 {
		t.Errorf("ExportPolicy came in %d pages, want at least 2 of about 2 MiB", pages)
	}
	if quotas != accounts*perAccount {
		t.Errorf("ExportPolicy listed %d of the %d quotas", quotas, accounts*perAccount)
	}
}

// A resource may carry 10,000 quotas, each naming a subject of up to 1 KB:
// an export page ends among them once it holds about authz.MaxPageBytes,
// and they go on in the next, then the resource's roles, rather than come
// whole, past what a client takes; InForce, which policy diff and apply
// read, reads them to their end.
func TestAResourcesQuotasGoOnInTheNextExportPage(t *testing.T) {
	f := newServer(t)
	p := exported(f.ctx(), f)
	id := strings.Repeat("x", 240)
	account := "account:q-" + id
	p.Resources = append(p.Resources, &usherv1.Resource{Name: account, Parent: authz.RootName},
		&usherv1.Resource{Name: "account:after", Parent: authz.RootName})
	p.Quotas = append(p.Quotas, &usherv1.Quota{Scope: "account:after", ResourceType: "call", Limit: 1})
	p.Roles = append(p.Roles, &usherv1.Role{Name: "after-quotas", Scope: account, Permissions: []string{"join-call"}})
	// Some 5 MB of quotas, in two applies that each fit a request: one
	// without prune keeps the quotas of the one before.
	want, quotas := map[string]bool{}, p.Quotas
	for half := range 2 {
		p.Quotas = slices.Clone(quotas)
		for q := range authz.MaxQuotasPerScope / 2 {
			subject := fmt.Sprintf("user:%d%04d-%s", half, q, id)
			p.Quotas = append(p.Quotas, &usherv1.Quota{Scope: account, ResourceType: "call", Subject: subject, Limit: 1})
			want[subject] = true
		}
		if _, err := f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{Policy: p}); err != nil {
			t.Fatal(err)
		}
	}
	got, roles, after := map[string]bool{}, 0, 0
	pages := exportPages(t, f, func(page *usherv1.Policy) {
		for _, q := range page.GetQuotas() {
			switch {
			case q.GetScope() == "account:after":
				after++
			case got[q.GetSubject()]:
				t.Errorf("ExportPolicy listed the quota of %.10s twice", q.GetSubject())
			default:
				got[q.GetSubject()] = true
			}
		}
		for _, r := range page.GetRoles() {
			if r.GetName() == "after-quotas" {
				roles++
			}
		}
	})
	if pages < 3 || len(got) != len(want) || roles != 1 || after != 1 {
		t.Errorf("ExportPolicy came in %d pages, with %d of the %d quotas, the role after them %d times and account:after's quota %d times; want 3 pages at least, each once",
			pages, len(got), len(want), roles, after)
	}

	inForce, err := policy.InForce(func(token string) (*usherv1.Policy, string, error) {
		resp, err := f.admin.ExportPolicy(f.ctx(), &usherv1.ExportPolicyRequest{PageSize: authz.MaxPageSize, PageToken: token})
		return resp.GetPolicy(), resp.GetNextPageToken(), err
	}, []string{account})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range inForce.GetQuotas() {
		if q.GetScope() == account {
			n++
		}
	}
	if n != len(want) || !slices.ContainsFunc(inForce.GetRoles(), func(r *usherv1.Role) bool { return r.GetName() == "after-quotas" }) {
		t.Errorf("InForce read %d of %s's %d quotas, and its roles %v", n, account[:12], len(want), inForce.GetRoles())
	}
}

// The first page of an export carries the catalog, which a policy may make
// megabytes long (10,000 permissions, each with a description of up to 1 KB):
// the roles that follow it on that page make way for it, so that the page
// still fits what a client takes by default, and go on in the next.
func TestTheFirstExportPageCountsTheCatalog(t *testing.T) {
	f := newServer(t)
	p := exported(f.ctx(), f)
	for i := range 2500 {
		p.Permissions = append(p.Permissions, &usherv1.Permission{Name: fmt.Sprintf("p%04d", i), Description: strings.Repeat("d", 1000)})
	}
	if _, err := f.admin.ApplyPolicy(f.ctx(), &usherv1.ApplyPolicyRequest{Policy: p}); err != nil {
		t.Fatal(err)
	}
	var assignable []string
	for i := range 1000 {
		assignable = append(assignable, fmt.Sprintf("r%04d-%s", i, strings.Repeat("x", 94)))
	}
	want := map[string]bool{}
	for r := range 25 { // 2.6 MB of roles on root
		name := fmt.Sprintf("wide-%d", r)
		role := &usherv1.Role{Name: name, Scope: authz.RootName, Permissions: []string{"p0000"}, AssignableRoles: assignable}
		if _, err := f.admin.PutRole(f.ctx(), &usherv1.PutRoleRequest{Role: role}); err != nil {
			t.Fatal(err)
		}
		want[name] = true
	}
	got, permissions := map[string]bool{}, 0
	exportPages(t, f, func(page *usherv1.Policy) {
		permissions += len(page.GetPermissions())
		for _, r := range page.GetRoles() {
			if want[r.GetName()] {
				if got[r.GetName()] {
					t.Errorf("ExportPolicy listed %s twice", r.GetName())
				}
				got[r.GetName()] = true
			}
		}
	})
	if permissions != len(p.Permissions) || len(got) != len(want) {
		t.Errorf("ExportPolicy listed %d of %d permissions and %d of the %d large roles", permissions, len(p.Permissions), len(got), len(want))
	}
}

// exportPages reads every page of the export, as a client that takes
// gRPC's default 4 MiB does, hands each to visit, and returns how many
// there were.
func exportPages(t *testing.T, f *fixture, visit func(*usherv1.Policy)) int {
	t.Helper()
	pages, token := 0, ""
	for {
		resp, err := f.admin.ExportPolicy(f.ctx(), &usherv1.ExportPolicyRequest{PageSize: authz.MaxPageSize, PageToken: token})
		if err != nil {
			t.Fatalf("ExportPolicy, page %d: %v", pages+1, err)
		}
		pages++
		visit(resp.GetPolicy())
		if token = resp.GetNextPageToken(); token == "" {
			return pages
		}
	}
}
