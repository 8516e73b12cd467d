package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
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
