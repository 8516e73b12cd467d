package authz_test

import (
	"strings"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// ruleScopeLimits is what bounds a page of ListRoles and ListQuotas.
const ruleScopeLimits = "at most MaxRolesPerScope roles and MaxQuotasPerScope quotas on one resource"

func TestScopeLimits(t *testing.T) {
	role := func(name string) authz.Role {
		return authz.Role{Name: name, Scope: "account:acme", Permissions: []string{"join-call"}}
	}
	// Five roles, as many as streamPolicy defines at root.
	limits := authz.Limits{RolesPerScope: 5, QuotasPerScope: 2}
	fill := func(w *world) {
		for _, name := range []string{"a", "b", "c", "d", "e"} {
			w.role(role(name))
		}
	}
	quota := func(typ string) authz.Quota {
		return authz.Quota{Scope: "account:acme", ResourceType: typ, Limit: 5}
	}
	cases := []struct {
		name  string
		setup func(w *world)
		write func(w *world) (authz.Revision, error)
		field string
		what  string
		limit string
	}{
		{
			name:  ruleScopeLimits + ": a sixth role at a resource that defines five is RESOURCE_EXHAUSTED",
			setup: fill,
			write: func(w *world) (authz.Revision, error) { return w.eng.PutRole(w.ctx, w.by, role("f")) },
			field: "role.scope", what: "at most 5 roles defined may be on one resource", limit: "5",
		},
		{
			name:  ruleScopeLimits + ": a third quota on a resource that carries two is RESOURCE_EXHAUSTED",
			setup: func(w *world) { w.quota(quota("call")); w.quota(quota("calltype")) },
			write: func(w *world) (authz.Revision, error) { return w.eng.PutQuota(w.ctx, w.by, quota("room")) },
			field: "quota.scope", what: "at most 2 quotas may be on one resource", limit: "2",
		},
		{
			name:  ruleScopeLimits + ": a subject's quota counts as one more",
			setup: func(w *world) { w.quota(quota("call")); w.quota(quota("calltype")) },
			write: func(w *world) (authz.Revision, error) {
				q := quota("call")
				q.Subject = "user:alice"
				return w.eng.PutQuota(w.ctx, w.by, q)
			},
			field: "quota.scope", what: "at most 2 quotas may be on one resource", limit: "2",
		},
		{
			name:  ruleScopeLimits + ": a policy that would define a sixth role at a resource",
			setup: func(w *world) { w.role(role("a")) },
			write: func(w *world) (authz.Revision, error) {
				p := streamPolicy()
				p.Roles = append(p.Roles, role("b"), role("c"), role("d"), role("e"), role("f"))
				rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
				return rev, err
			},
			field: "role.scope", what: "at most 5 roles defined may be on one resource", limit: "5",
		},
		{
			name: ruleScopeLimits + ": a dry run of that policy is refused the same",
			write: func(w *world) (authz.Revision, error) {
				p := streamPolicy()
				p.Quotas = []authz.Quota{quota("a"), quota("b"), quota("c")}
				rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{DryRun: true})
				return rev, err
			},
			field: "quota.scope", what: "at most 2 quotas may be on one resource", limit: "2",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newLimitedWorld(t, streamPolicy(), limits)
			if tc.setup != nil {
				tc.setup(w)
			}
			e := w.refuses(authz.ResourceExhausted, tc.field, "account:acme", func() (authz.Revision, error) { return tc.write(w) })
			if !strings.Contains(e.Error(), tc.what) {
				t.Errorf("refusal %q does not state the limit (%q)", e, tc.what)
			}
			if e.Meta["limit"] != tc.limit || e.Meta["scope"] != "account:acme" {
				t.Errorf("refusal details %v, want limit %s and scope account:acme", e.Meta, tc.limit)
			}
		})
	}

	t.Run(ruleScopeLimits+": a full resource may still redefine, delete and then define", func(t *testing.T) {
		w := newLimitedWorld(t, streamPolicy(), limits)
		fill(w)
		b := role("b")
		b.Permissions = []string{"join-call", "read-call"}
		w.role(b)
		w.must("DeleteRole a")(w.eng.DeleteRole(w.ctx, w.by, "account:acme", "a"))
		w.role(role("f"))
		w.quota(quota("call"))
		w.quota(quota("room"))
		q := quota("room")
		q.Limit = 9
		w.quota(q)
		w.must("DeleteQuota room")(w.eng.DeleteQuota(w.ctx, w.by, quota("room")))
		w.quota(quota("event"))
	})

	t.Run(ruleScopeLimits+": other resources have limits of their own", func(t *testing.T) {
		w := newLimitedWorld(t, streamPolicy(), limits)
		fill(w)
		w.role(authz.Role{Name: "f", Scope: "account:globex", Permissions: []string{"join-call"}})
	})

	t.Run("the default limits are MaxRolesPerScope and MaxQuotasPerScope", func(t *testing.T) {
		if authz.MaxRolesPerScope != 1000 || authz.MaxQuotasPerScope != 10000 {
			t.Errorf("MaxRolesPerScope = %d, MaxQuotasPerScope = %d: the README's limits table says 1,000 and 10,000",
				authz.MaxRolesPerScope, authz.MaxQuotasPerScope)
		}
	})
}
