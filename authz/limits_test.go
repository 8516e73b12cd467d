package authz_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

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

	t.Run("the default limits are MaxRolesPerScope, MaxQuotasPerScope and MaxRolesPerHolder", func(t *testing.T) {
		if authz.MaxRolesPerScope != 1000 || authz.MaxQuotasPerScope != 10000 || authz.MaxRolesPerHolder != 100 {
			t.Errorf("MaxRolesPerScope = %d, MaxQuotasPerScope = %d, MaxRolesPerHolder = %d: the README's limits table says 1,000, 10,000 and 100",
				authz.MaxRolesPerScope, authz.MaxQuotasPerScope, authz.MaxRolesPerHolder)
		}
	})
}

const ruleRolesPerHolder = "at most MaxRolesPerHolder live roles of one subject on one resource"

// A Check reads each of its subject's grants on the resource's path: a
// subject granted every role a tenant defines, on every level of a deep
// tree, would make each of its Checks cost thousands of times one.
func TestRolesPerHolder(t *testing.T) {
	const call = "call:livestream:42"
	w := newLimitedWorld(t, streamPolicy(), authz.Limits{RolesPerHolder: 2})
	w.grant("user:alice", "user", call)
	w.grantUntil("user:alice", "moderator", call, w.clock.Now().Add(time.Hour))

	e := w.refuses(authz.ResourceExhausted, "subject", "user:alice", func() (authz.Revision, error) {
		return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "call-member", Resource: call})
	})
	if !strings.Contains(e.Error(), "at most 2 roles on one resource, and holds 2 on \"call:livestream:42\"") ||
		e.Meta["limit"] != "2" || e.Meta["resource"] != call {
		t.Errorf("%s: refusal %q, details %v; want it to state the limit, 2, and the resource", ruleRolesPerHolder, e, e.Meta)
	}

	t.Run(ruleRolesPerHolder+": a role held, granted again, adds none", func(t *testing.T) {
		w.grantUntil("user:alice", "moderator", call, w.clock.Now().Add(2*time.Hour))
	})
	t.Run(ruleRolesPerHolder+": other resources and subjects have limits of their own", func(t *testing.T) {
		w.grant("user:alice", "call-member", "call:livestream:43")
		w.grant("user:bob", "call-member", call)
	})
	t.Run(ruleRolesPerHolder+": a role run out leaves room for another", func(t *testing.T) {
		w.clock.Advance(3 * time.Hour)
		w.grant("user:alice", "call-member", call)
	})
}

// Grants that ran out make way for a new one, which deletes them, as
// blocks do: the limit counted only live grants, so a subject granted one
// role after another, each running out, piled up grants on one resource
// that every Check of it reads.
func TestRolesPerHolderGrantsRunOutMakeWay(t *testing.T) {
	const call, roles, limit = "call:livestream:42", 10, 2
	p := streamPolicy()
	for i := range roles {
		p.Roles = append(p.Roles, authz.Role{Name: fmt.Sprintf("guest-%d", i), Scope: "root", Permissions: []string{"join-call"}})
	}
	w := newLimitedWorld(t, p, authz.Limits{RolesPerHolder: limit})
	_, before, _ := w.idx.Counts()
	for i := range roles {
		w.grantUntil("user:alice", fmt.Sprintf("guest-%d", i), call, w.clock.Now().Add(time.Hour))
		w.clock.Advance(2 * time.Hour)
	}
	w.grant("user:alice", "user", call)
	if _, after, _ := w.idx.Counts(); after-before > limit {
		t.Errorf("%s: user:alice holds %d grants on %s, %d of them run out; want at most %d", ruleRolesPerHolder, after-before, call, after-before-1, limit)
	}
	if d := w.check("user:alice", "read-call", call); !d.Allowed || d.Role != "user" {
		t.Errorf("Check(user:alice, read-call) = %+v; want allowed by user", d)
	}
	if d := w.check("user:alice", "join-call", "call:livestream:42"); d.Role != "user" {
		t.Errorf("Check(user:alice, join-call) = %+v; want allowed by user, the guest roles run out", d)
	}
}
