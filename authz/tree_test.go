package authz_test

import (
	"slices"
	"testing"

	"github.com/usher-authz/usher/authz"
)

func TestResourceTree(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, w *world)
	}{
		{"Each resource is registered with one parent (default root)", func(t *testing.T, w *world) {
			w.put("account:initech", "")
			wantResource(t, w, "account:initech", "root", []string{"root"}, 0)
		}},
		{"a resource is registered under the parent it names", func(t *testing.T, w *world) {
			w.put("call:livestream:44", "calltype:livestream")
			wantResource(t, w, "call:livestream:44", "calltype:livestream", []string{"calltype:livestream", "account:acme", "root"}, 0)
			wantResource(t, w, "calltype:livestream", "account:acme", []string{"account:acme", "root"}, 3)
		}},
		{"registering a resource again under the same parent writes nothing", func(t *testing.T, w *world) {
			w.writesNothing(func() (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "call:livestream:42", Parent: "calltype:livestream"})
			})
			w.writesNothing(func() (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "account:acme"})
			})
		}},
		{"it may be moved to another parent", func(t *testing.T, w *world) {
			w.grant("user:alice", "moderator", "calltype:livestream")
			w.grant("user:bob", "moderator", "calltype:default")
			w.put("call:livestream:42", "calltype:default")
			wantResource(t, w, "call:livestream:42", "calltype:default", []string{"calltype:default", "account:acme", "root"}, 0)
			wantResource(t, w, "calltype:livestream", "account:acme", []string{"account:acme", "root"}, 1)
			wantResource(t, w, "calltype:default", "account:acme", []string{"account:acme", "root"}, 2)
			if d := w.check("user:alice", "mute-users", "call:livestream:42"); d.Allowed {
				t.Errorf("a grant on the old parent still applies after the move: %+v", d)
			}
			if d := w.check("user:bob", "mute-users", "call:livestream:42"); !d.Allowed || d.Scope != "calltype:default" {
				t.Errorf("a grant on the new parent does not apply after the move: %+v", d)
			}
		}},
		{"it may be moved to another parent, taking its subtree with it", func(t *testing.T, w *world) {
			w.grant("user:alice", "moderator", "account:globex")
			w.put("calltype:livestream", "account:globex")
			wantResource(t, w, "call:livestream:42", "calltype:livestream", []string{"calltype:livestream", "account:globex", "root"}, 0)
			wantResource(t, w, "account:acme", "root", []string{"root"}, 1)
			if d := w.check("user:alice", "mute-users", "call:livestream:43"); !d.Allowed || d.Scope != "account:globex" {
				t.Errorf("a grant on the new grandparent does not apply after the move: %+v", d)
			}
		}},
		{"it may be moved to another parent (never under itself)", func(t *testing.T, w *world) {
			w.refuses(authz.FailedPrecondition, "parent", "calltype:livestream", func() (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "calltype:livestream", Parent: "calltype:livestream"})
			})
		}},
		{"it may be moved to another parent (never under itself): nor under its descendants", func(t *testing.T, w *world) {
			w.refuses(authz.FailedPrecondition, "parent", "call:livestream:42", func() (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "account:acme", Parent: "call:livestream:42"})
			})
			wantResource(t, w, "account:acme", "root", []string{"root"}, 2)
		}},
		{"a move that would leave a grant with no definition of its role is refused", func(t *testing.T, w *world) {
			w.role(authz.Role{Name: "speaker", Scope: "account:acme", Permissions: []string{"send-audio"}})
			w.grant("user:carol", "speaker", "calltype:livestream")
			w.refuses(authz.FailedPrecondition, "parent", "account:globex", func() (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "calltype:livestream", Parent: "account:globex"})
			})
			if d := w.check("user:carol", "send-audio", "call:livestream:42"); !d.Allowed {
				t.Errorf("the refused move changed what the grant allows: %+v", d)
			}
		}},
		{"on a write: resource not registered -> NOT_FOUND (the parent)", func(t *testing.T, w *world) {
			w.refuses(authz.NotFound, "parent", "calltype:nowhere", func() (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "call:nowhere:1", Parent: "calltype:nowhere"})
			})
		}},
		{"root is the reserved resource: it cannot be registered", func(t *testing.T, w *world) {
			w.refuses(authz.Invalid, "name", "root", func() (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "root", Parent: "account:acme"})
			})
		}},
		{"root is the reserved resource: it cannot be deleted", func(t *testing.T, w *world) {
			w.refuses(authz.Invalid, "name", "root", func() (authz.Revision, error) {
				return w.eng.DeleteResource(w.ctx, w.by, "root")
			})
		}},
		{"deleting one with children is refused", func(t *testing.T, w *world) {
			w.refuses(authz.FailedPrecondition, "name", "calltype:livestream", func() (authz.Revision, error) {
				return w.eng.DeleteResource(w.ctx, w.by, "calltype:livestream")
			})
			wantResource(t, w, "calltype:livestream", "account:acme", []string{"account:acme", "root"}, 2)
		}},
		{"deleting one whose children were moved away is allowed", func(t *testing.T, w *world) {
			w.put("call:globex:7", "calltype:default")
			if _, err := w.eng.DeleteResource(w.ctx, w.by, "calltype:globex"); err != nil {
				t.Fatal(err)
			}
			wantResource(t, w, "account:globex", "root", []string{"root"}, 0)
		}},
		{"on a write: resource not registered -> NOT_FOUND (delete)", func(t *testing.T, w *world) {
			w.refuses(authz.NotFound, "name", "call:livestream:404", func() (authz.Revision, error) {
				return w.eng.DeleteResource(w.ctx, w.by, "call:livestream:404")
			})
		}},
		{"deleting a resource deletes the grants, blocks and role definitions on it", func(t *testing.T, w *world) {
			w.role(authz.Role{Name: "guest", Scope: "call:livestream:42", Permissions: []string{"join-call"}})
			w.grant("user:alice", "call-member", "call:livestream:42")
			w.grant("user:carol", "guest", "call:livestream:42")
			w.grant("user:carol", "guest", "call:livestream:42")
			w.grant("user:alice", "call-member", "call:livestream:43")
			w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42"})
			if _, err := w.eng.DeleteResource(w.ctx, w.by, "call:livestream:42"); err != nil {
				t.Fatal(err)
			}
			want := []string{"delete_grant", "delete_grant", "delete_block", "delete_role", "delete_resource"}
			if got := w.lastOps(); !slices.Equal(got, want) {
				t.Errorf("the delete committed %v, want %v in one change set", got, want)
			}
			if d := w.check("user:alice", "join-call", "call:livestream:42"); d.Reason != authz.ReasonUnknownResource {
				t.Errorf("Check on the deleted resource = %+v, want UNKNOWN_RESOURCE", d)
			}
			wantResource(t, w, "calltype:livestream", "account:acme", []string{"account:acme", "root"}, 1)
			grants, _, _, err := w.idx.ListGrants(authz.GrantFilter{Subject: "user:alice"}, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(grants) != 1 || grants[0].Resource != "call:livestream:43" {
				t.Errorf("alice's grants after the delete = %+v, want only the one on call:livestream:43", grants)
			}
			if grants, _, _, _ := w.idx.ListGrants(authz.GrantFilter{Subject: "user:carol"}, 0, ""); len(grants) != 0 {
				t.Errorf("carol's grants after the delete = %+v, want none", grants)
			}

			// Registered again, the name starts clean.
			w.put("call:livestream:42", "calltype:livestream")
			if grants, _, _, _ := w.idx.ListGrants(authz.GrantFilter{Resource: "call:livestream:42"}, 0, ""); len(grants) != 0 {
				t.Errorf("grants on the re-registered resource = %+v, want none", grants)
			}
			w.grant("user:bob", "call-member", "call:livestream:42")
			if d := w.check("user:bob", "join-call", "call:livestream:42"); !d.Allowed {
				t.Errorf("bob's block outlived the resource: %+v", d)
			}
			w.refuses(authz.NotFound, "role", "guest", func() (authz.Revision, error) {
				return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:carol", Role: "guest", Resource: "call:livestream:42"})
			})
		}},
		{"GetResource of an unregistered resource is NOT_FOUND", func(t *testing.T, w *world) {
			_, _, err := w.idx.GetResource("call:livestream:404")
			wantError(t, err, authz.NotFound, "name", "call:livestream:404")
		}},
		{"root is the parent of every resource that has no other", func(t *testing.T, w *world) {
			wantResource(t, w, "root", "", nil, 2)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newWorld(t, streamPolicy()))
		})
	}
}

func wantResource(t *testing.T, w *world, name, parent string, ancestors []string, children int) {
	t.Helper()
	info, rev, err := w.idx.GetResource(name)
	if err != nil {
		t.Fatalf("GetResource(%s): %v", name, err)
	}
	if info.Name != name || info.Parent != parent || !slices.Equal(info.Ancestors, ancestors) || info.Children != children {
		t.Errorf("GetResource(%s) = %+v, want parent %q, ancestors %v, %d children", name, info, parent, ancestors, children)
	}
	if rev != w.idx.Revision() {
		t.Errorf("GetResource answered at revision %d, want %d", rev, w.idx.Revision())
	}
}

func TestBelowVisitsASubtreeUpToALimit(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.put("account:t", "")
	w.put("space:t/a", "account:t")
	w.put("room:t/a1", "space:t/a")
	w.put("room:t/a2", "space:t/a")
	w.put("space:t/b", "account:t")
	below := func(scope string, limit int) ([]string, bool) {
		var got []string
		all := w.eng.Index().Below(scope, limit, func(r string) { got = append(got, r) })
		return got, all
	}
	whole := []string{"account:t", "room:t/a1", "room:t/a2", "space:t/a", "space:t/b"}
	for _, limit := range []int{0, 5, 6} {
		got, all := below("account:t", limit)
		if !all || got[0] != "account:t" || !slices.Equal(slices.Sorted(slices.Values(got)), whole) {
			t.Errorf("Below(account:t, %d) visits %v (all %t), want the scope first, then %v, all", limit, got, all, whole[1:])
		}
		if i, j := slices.Index(got, "space:t/a"), slices.Index(got, "room:t/a1"); i > j {
			t.Errorf("Below(account:t, %d) visits %v: a child before its parent", limit, got)
		}
	}
	if got, all := below("account:t", 3); all || len(got) != 3 {
		t.Errorf("Below(account:t, 3) visits %v (all %t), want 3 and not all", got, all)
	}
	if got, all := below("room:t/a1", 1); !all || !slices.Equal(got, []string{"room:t/a1"}) {
		t.Errorf("Below of a leaf visits %v (all %t), want only it, all", got, all)
	}
	if got, all := below("room:t/404", 1); !all || len(got) != 0 {
		t.Errorf("Below of an unregistered resource visits %v (all %t), want nothing, all", got, all)
	}
}
