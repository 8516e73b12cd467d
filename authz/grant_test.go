package authz_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

func TestGrant(t *testing.T) {
	expiresOf := func(t *testing.T, w *world, subject, resource string) time.Time {
		t.Helper()
		gs, _, _, err := w.idx.ListGrants(authz.GrantFilter{Subject: subject, Resource: resource}, 0, "")
		if err != nil || len(gs) != 1 {
			t.Fatalf("ListGrants(%s on %s) = %v, %v; want one grant", subject, resource, gs, err)
		}
		return gs[0].Expires
	}
	soon, later := time.Now().Add(time.Hour).Truncate(time.Millisecond), time.Now().Add(2*time.Hour).Truncate(time.Millisecond)

	cases := []struct {
		name string
		run  func(t *testing.T, w *world)
	}{
		{"Granting the same triple again is idempotent", func(t *testing.T, w *world) {
			w.grant("user:alice", "moderator", "call:livestream:42")
			w.writesNothing(func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "moderator", Resource: "call:livestream:42"})
			})
		}},
		{"Granting the same triple again is idempotent (with the same expiry)", func(t *testing.T, w *world) {
			w.grantUntil("user:alice", "moderator", "call:livestream:42", soon)
			w.writesNothing(func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "moderator", Resource: "call:livestream:42", Expires: soon.In(time.FixedZone("CEST", 7200))})
			})
		}},
		{"Granting the same triple again is idempotent (it may update the expiry)", func(t *testing.T, w *world) {
			w.grantUntil("user:alice", "moderator", "call:livestream:42", soon)
			w.grantUntil("user:alice", "moderator", "call:livestream:42", later)
			if got := expiresOf(t, w, "user:alice", "call:livestream:42"); !got.Equal(later) {
				t.Errorf("expiry %v, want the updated %v", got, later)
			}
			w.grant("user:alice", "moderator", "call:livestream:42")
			if got := expiresOf(t, w, "user:alice", "call:livestream:42"); !got.IsZero() {
				t.Errorf("expiry %v, want none after granting again without one", got)
			}
		}},
		{"Granting again renews a grant that has expired", func(t *testing.T, w *world) {
			w.store(authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:alice", Role: "moderator", Resource: "call:livestream:42", Expires: time.Now().Add(-time.Minute)}})
			w.grant("user:alice", "moderator", "call:livestream:42")
			if d := w.check("user:alice", "mute-users", "call:livestream:42"); !d.Allowed {
				t.Errorf("the renewed grant does not allow: %+v", d)
			}
		}},
		{"a grant's expiry must be in the future", func(t *testing.T, w *world) {
			past := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
			w.refuses(authz.Invalid, "expire_time", "2020-01-02T03:04:05Z", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "moderator", Resource: "call:livestream:42", Expires: past})
			})
		}},
		{"a grant's expiry is at latest the last instant the index holds, which the refusal names", func(t *testing.T, w *world) {
			last := time.Unix(0, math.MaxInt64).UTC()
			past := last.Add(time.Nanosecond)
			err := w.refuses(authz.Invalid, "expire_time", past.Format(time.RFC3339Nano), func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "moderator", Resource: "call:livestream:42", Expires: past})
			})
			if want := "at or before 2262-04-11T23:47:16.854775807Z"; !strings.Contains(err.Error(), want) {
				t.Errorf("the refusal %q does not say %q", err, want)
			}
			if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "moderator", Resource: "call:livestream:42", Expires: last}); err != nil {
				t.Errorf("a grant expiring at the last instant: %v", err)
			}
		}},
		{"on a write: resource not registered -> NOT_FOUND", func(t *testing.T, w *world) {
			w.refuses(authz.NotFound, "resource", "call:livestream:404", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "moderator", Resource: "call:livestream:404"})
			})
		}},
		{"role not visible at that scope -> NOT_FOUND (no such role)", func(t *testing.T, w *world) {
			w.refuses(authz.NotFound, "role", "moderater", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "moderater", Resource: "call:livestream:42"})
			})
		}},
		{"role not visible at that scope -> NOT_FOUND (another account's custom role)", func(t *testing.T, w *world) {
			w.role(authz.Role{Name: "stage-manager", Scope: "account:globex", Permissions: []string{"start-broadcast-call"}})
			w.grant("user:alice", "stage-manager", "call:globex:7")
			w.refuses(authz.NotFound, "role", "stage-manager", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "stage-manager", Resource: "call:livestream:42"})
			})
		}},
		{"role not visible at that scope -> NOT_FOUND (a role defined below the resource)", func(t *testing.T, w *world) {
			w.role(authz.Role{Name: "stage-manager", Scope: "calltype:livestream", Permissions: []string{"start-broadcast-call"}})
			w.refuses(authz.NotFound, "role", "stage-manager", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "stage-manager", Resource: "account:acme"})
			})
		}},
		{"bindable_on: resource types where it may be granted", func(t *testing.T, w *world) {
			w.grant("user:alice", "host", "call:livestream:42")
			w.refuses(authz.FailedPrecondition, "role", "host", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "host", Resource: "calltype:livestream"})
			})
		}},
		{"bindable_on: the definition that applies at the resource decides", func(t *testing.T, w *world) {
			w.role(authz.Role{Name: "host", Scope: "account:acme", Permissions: []string{"end-call"}})
			w.grant("user:alice", "host", "calltype:livestream")
			w.refuses(authz.FailedPrecondition, "role", "host", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "host", Resource: "calltype:globex"})
			})
		}},
		{"bindable_on (empty: anywhere)", func(t *testing.T, w *world) {
			for _, r := range []string{"root", "account:acme", "calltype:livestream", "call:livestream:42"} {
				w.grant("user:alice", "moderator", r)
			}
		}},
		{"max_holders: at most this many subjects may hold it on one resource", func(t *testing.T, w *world) {
			w.grant("user:alice", "host", "call:livestream:42")
			e := w.refuses(authz.FailedPrecondition, "role", "host", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:bob", Role: "host", Resource: "call:livestream:42"})
			})
			if e.Reason == "" {
				t.Error("the refusal gives no reason")
			}
		}},
		{"max_holders counts the holders of one resource, not of its siblings", func(t *testing.T, w *world) {
			w.grant("user:alice", "host", "call:livestream:42")
			w.grant("user:bob", "host", "call:livestream:43")
		}},
		{"max_holders: a holder granted again is not a new holder", func(t *testing.T, w *world) {
			w.grant("user:alice", "host", "call:livestream:42")
			w.grantUntil("user:alice", "host", "call:livestream:42", soon)
		}},
		{"max_holders: an expired grant counts as absent", func(t *testing.T, w *world) {
			w.store(authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:alice", Role: "host", Resource: "call:livestream:42", Expires: time.Now().Add(-time.Minute)}})
			w.grant("user:bob", "host", "call:livestream:42")
		}},
		{"max_holders: a revoked holder frees its place", func(t *testing.T, w *world) {
			w.grant("user:alice", "host", "call:livestream:42")
			if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "host", Resource: "call:livestream:42"}); err != nil {
				t.Fatal(err)
			}
			w.grant("user:bob", "host", "call:livestream:42")
		}},
		{"max_holders of more than one", func(t *testing.T, w *world) {
			w.role(authz.Role{Name: "panelist", Scope: "root", Permissions: []string{"send-audio"}, MaxHolders: 2})
			w.grant("user:alice", "panelist", "call:livestream:42")
			w.grant("user:bob", "panelist", "call:livestream:42")
			w.refuses(authz.FailedPrecondition, "role", "panelist", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:carol", Role: "panelist", Resource: "call:livestream:42"})
			})
		}},
		{"Revoke removes the grant", func(t *testing.T, w *world) {
			w.grant("user:alice", "moderator", "call:livestream:42")
			if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "moderator", Resource: "call:livestream:42"}); err != nil {
				t.Fatal(err)
			}
			if d := w.check("user:alice", "mute-users", "call:livestream:42"); d.Reason != authz.ReasonNoGrant {
				t.Errorf("after Revoke, Check = %+v, want NO_GRANT", d)
			}
		}},
		{"Revoke of a grant that does not exist is NOT_FOUND", func(t *testing.T, w *world) {
			w.grant("user:alice", "moderator", "account:acme")
			w.refuses(authz.NotFound, "role", "moderator", func() (authz.Revision, error) {
				return w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "moderator", Resource: "call:livestream:42"})
			})
		}},
		{"Revoke on a resource not registered is NOT_FOUND", func(t *testing.T, w *world) {
			w.refuses(authz.NotFound, "resource", "call:livestream:404", func() (authz.Revision, error) {
				return w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:alice", Role: "moderator", Resource: "call:livestream:404"})
			})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newWorld(t, streamPolicy()))
		})
	}
}
