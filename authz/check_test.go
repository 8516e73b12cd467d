package authz_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage/memory"
)

func TestCheck(t *testing.T) {
	past := time.Now().Add(-time.Hour)
	future := time.Now().Add(time.Hour)
	storeGrant := func(w *world, g authz.Grant) { w.store(authz.Change{Op: authz.OpPutGrant, Grant: &g}) }
	storeBlock := func(w *world, b authz.Block) { w.store(authz.Change{Op: authz.OpPutBlock, Block: &b}) }
	granted := func(role, scope string) authz.Decision {
		return authz.Decision{Allowed: true, Reason: authz.ReasonGranted, Role: role, Scope: scope}
	}
	blocked := func(scope, reason string) authz.Decision {
		return authz.Decision{Reason: authz.ReasonBlocked, Scope: scope, BlockReason: reason}
	}
	noGrant := authz.Decision{Reason: authz.ReasonNoGrant}

	cases := []struct {
		name  string
		setup func(w *world)
		q     authz.Query
		want  authz.Decision
	}{
		{
			name:  "GRANTED carries the role and the scope where it was granted",
			setup: func(w *world) { w.grant("user:alice", "call-member", "call:livestream:42") },
			q:     authz.Query{Subject: "user:alice", Permission: "send-audio", Resource: "call:livestream:42"},
			want:  granted("call-member", "call:livestream:42"),
		},
		{
			name:  "Everything granted on a resource applies to all its descendants",
			setup: func(w *world) { w.grant("user:alice", "moderator", "account:acme") },
			q:     authz.Query{Subject: "user:alice", Permission: "mute-users", Resource: "call:livestream:42"},
			want:  granted("moderator", "account:acme"),
		},
		{
			name:  "a grant applies on the resource and its descendants, not on its ancestors",
			setup: func(w *world) { w.grant("user:alice", "moderator", "call:livestream:42") },
			q:     authz.Query{Subject: "user:alice", Permission: "mute-users", Resource: "calltype:livestream"},
			want:  noGrant,
		},
		{
			name:  "a grant does not apply to a sibling",
			setup: func(w *world) { w.grant("user:alice", "moderator", "call:livestream:42") },
			q:     authz.Query{Subject: "user:alice", Permission: "mute-users", Resource: "call:livestream:43"},
			want:  noGrant,
		},
		{
			name: "walk from the resource up to root: the first grant that matches allows",
			setup: func(w *world) {
				w.grant("user:alice", "admin", "account:acme")
				w.grant("user:alice", "call-member", "call:livestream:42")
			},
			q:    authz.Query{Subject: "user:alice", Permission: "send-video", Resource: "call:livestream:42"},
			want: granted("call-member", "call:livestream:42"),
		},
		{
			name: "a nearer grant whose role lacks the permission does not stop the walk",
			setup: func(w *world) {
				w.grant("user:alice", "admin", "account:acme")
				w.grant("user:alice", "user", "call:livestream:42")
			},
			q:    authz.Query{Subject: "user:alice", Permission: "end-call", Resource: "call:livestream:42"},
			want: granted("admin", "account:acme"),
		},
		{
			name: "several roles on one resource: the answer names one that holds the permission",
			setup: func(w *world) {
				w.grant("user:alice", "user", "call:livestream:42")
				w.grant("user:alice", "moderator", "call:livestream:42")
			},
			q:    authz.Query{Subject: "user:alice", Permission: "block-users", Resource: "call:livestream:42"},
			want: granted("moderator", "call:livestream:42"),
		},
		{
			name:  "`*` in a role means every permission",
			setup: func(w *world) { w.grant("user:alice", "admin", "root") },
			q:     authz.Query{Subject: "user:alice", Permission: "stop-transcription-call", Resource: "call:globex:7"},
			want:  granted("admin", "root"),
		},
		{
			name:  "holding a permission implies all its descendants (block-users implies usher.blocks.write)",
			setup: func(w *world) { w.grant("user:alice", "moderator", "calltype:livestream") },
			q:     authz.Query{Subject: "user:alice", Permission: "usher.blocks.write", Resource: "call:livestream:42"},
			want:  granted("moderator", "calltype:livestream"),
		},
		{
			name:  "else deny, reason NO_GRANT: a role without the permission",
			setup: func(w *world) { w.grant("user:alice", "call-member", "call:livestream:42") },
			q:     authz.Query{Subject: "user:alice", Permission: "end-call", Resource: "call:livestream:42"},
			want:  noGrant,
		},
		{
			name:  "else deny, reason NO_GRANT: a subject with no grants at all",
			setup: func(w *world) { w.grant("user:alice", "admin", "root") },
			q:     authz.Query{Subject: "user:bob", Permission: "join-call", Resource: "call:livestream:42"},
			want:  noGrant,
		},
		{
			name:  "else deny, reason NO_GRANT: grants in another account do not reach here",
			setup: func(w *world) { w.grant("user:alice", "admin", "account:globex") },
			q:     authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"},
			want:  noGrant,
		},
		{
			name: "an expired grant counts as absent",
			setup: func(w *world) {
				storeGrant(w, authz.Grant{Subject: "user:alice", Role: "admin", Resource: "account:acme", Expires: past})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"},
			want: noGrant,
		},
		{
			name: "an expired grant counts as absent, and an unexpired one further up still allows",
			setup: func(w *world) {
				storeGrant(w, authz.Grant{Subject: "user:alice", Role: "admin", Resource: "call:livestream:42", Expires: past})
				w.grant("user:alice", "call-member", "account:acme")
			},
			q:    authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"},
			want: granted("call-member", "account:acme"),
		},
		{
			name:  "a grant with an expiry still in the future counts",
			setup: func(w *world) { w.grantUntil("user:alice", "call-member", "call:livestream:42", future) },
			q:     authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"},
			want:  granted("call-member", "call:livestream:42"),
		},
		{
			name: "a block overrides every grant",
			setup: func(w *world) {
				w.grant("user:alice", "admin", "root")
				w.grant("user:alice", "host", "call:livestream:42")
				w.block(authz.Block{Subject: "user:alice", Resource: "call:livestream:42", Reason: "spam"})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"},
			want: blocked("call:livestream:42", "spam"),
		},
		{
			name: "BLOCKED carries the block's scope and reason text: deactivating a user in one account",
			setup: func(w *world) {
				w.grant("user:alice", "host", "call:livestream:42")
				w.block(authz.Block{Subject: "user:alice", Resource: "account:acme", Reason: "deactivated by acme"})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"},
			want: blocked("account:acme", "deactivated by acme"),
		},
		{
			name: "a block above a nearer grant still overrides it",
			setup: func(w *world) {
				w.grant("user:alice", "call-member", "call:livestream:42")
				w.block(authz.Block{Subject: "user:alice", Resource: "root", Reason: "deactivated everywhere"})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"},
			want: blocked("root", "deactivated everywhere"),
		},
		{
			name: "a block applies on the resource and its descendants, not on its ancestors",
			setup: func(w *world) {
				w.grant("user:alice", "admin", "account:acme")
				w.block(authz.Block{Subject: "user:alice", Resource: "call:livestream:42"})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "calltype:livestream"},
			want: granted("admin", "account:acme"),
		},
		{
			name: "a block applies to its subject only",
			setup: func(w *world) {
				w.grant("user:bob", "call-member", "call:livestream:42")
				w.block(authz.Block{Subject: "user:alice", Resource: "call:livestream:42"})
			},
			q:    authz.Query{Subject: "user:bob", Permission: "join-call", Resource: "call:livestream:42"},
			want: granted("call-member", "call:livestream:42"),
		},
		{
			name: "a block with a permission list blocks those permissions",
			setup: func(w *world) {
				w.grant("user:alice", "moderator", "call:livestream:42")
				w.block(authz.Block{Subject: "user:alice", Resource: "calltype:livestream", Permissions: []string{"send-video"}, Reason: "camera off"})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "send-video", Resource: "call:livestream:42"},
			want: blocked("calltype:livestream", "camera off"),
		},
		{
			name: "a block with a permission list blocks what they imply",
			setup: func(w *world) {
				w.grant("user:alice", "moderator", "call:livestream:42")
				w.block(authz.Block{Subject: "user:alice", Resource: "call:livestream:42", Permissions: []string{"block-users"}})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "usher.blocks.write", Resource: "call:livestream:42"},
			want: blocked("call:livestream:42", ""),
		},
		{
			name: "a block with a permission list does not block other permissions",
			setup: func(w *world) {
				w.grant("user:alice", "moderator", "call:livestream:42")
				w.block(authz.Block{Subject: "user:alice", Resource: "call:livestream:42", Permissions: []string{"send-video", "block-users"}})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "send-audio", Resource: "call:livestream:42"},
			want: granted("moderator", "call:livestream:42"),
		},
		{
			name: "a block of a permission does not block its parent",
			setup: func(w *world) {
				w.grant("user:alice", "moderator", "call:livestream:42")
				w.block(authz.Block{Subject: "user:alice", Resource: "call:livestream:42", Permissions: []string{"usher.blocks.write"}})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "block-users", Resource: "call:livestream:42"},
			want: granted("moderator", "call:livestream:42"),
		},
		{
			name: "an unexpired block with an expiry blocks",
			setup: func(w *world) {
				w.grant("user:alice", "call-member", "call:livestream:42")
				w.block(authz.Block{Subject: "user:alice", Resource: "call:livestream:42", Expires: future, Reason: "timeout"})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"},
			want: blocked("call:livestream:42", "timeout"),
		},
		{
			name: "if an unexpired block on the way covers the permission: an expired block counts as absent",
			setup: func(w *world) {
				w.grant("user:alice", "call-member", "call:livestream:42")
				storeBlock(w, authz.Block{Subject: "user:alice", Resource: "account:acme", Expires: past, Reason: "timeout"})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"},
			want: granted("call-member", "call:livestream:42"),
		},
		{
			name: "a block without a grant still answers BLOCKED, not NO_GRANT",
			setup: func(w *world) {
				w.block(authz.Block{Subject: "user:alice", Resource: "account:acme", Reason: "banned"})
			},
			q:    authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:default:1"},
			want: blocked("account:acme", "banned"),
		},
		{
			name:  "an unknown resource is not an error: the answer is deny with reason UNKNOWN_RESOURCE",
			setup: func(w *world) { w.grant("user:alice", "admin", "root") },
			q:     authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:999"},
			want:  authz.Decision{Reason: authz.ReasonUnknownResource},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, streamPolicy())
			tc.setup(w)
			got, rev, err := w.idx.Check(tc.q)
			if err != nil {
				t.Fatalf("Check(%+v): %v", tc.q, err)
			}
			if got.Reason == authz.ReasonBlocked {
				// Check's reason names the deciding block.
				if got.BlockID == "" {
					t.Errorf("Check(%+v) = %+v: BLOCKED without the block's ID", tc.q, got)
				}
				got.BlockID = ""
			}
			if got != tc.want {
				t.Errorf("Check(%+v) = %+v, want %+v", tc.q, got, tc.want)
			}
			if rev != w.idx.Revision() {
				t.Errorf("answered at revision %d, want the index's %d", rev, w.idx.Revision())
			}
		})
	}
}

func TestCheckRefusals(t *testing.T) {
	cases := []struct {
		name  string
		q     authz.Query
		field string
		value string
	}{
		{"the permission must be declared, else INVALID_ARGUMENT", authz.Query{Subject: "user:alice", Permission: "join-cal", Resource: "call:livestream:42"}, "permission", "join-cal"},
		{"the permission must be declared, else INVALID_ARGUMENT, even on an unknown resource", authz.Query{Subject: "user:alice", Permission: "fly", Resource: "call:nowhere"}, "permission", "fly"},
		{"`*` is not a permission one can check", authz.Query{Subject: "user:alice", Permission: "*", Resource: "root"}, "permission", "*"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, streamPolicy())
			w.grant("user:alice", "admin", "root")
			_, _, err := w.idx.Check(tc.q)
			wantError(t, err, authz.Invalid, tc.field, tc.value)
		})
	}
}

// wantError asserts err is an *authz.Error with code on field and value.
func wantError(t *testing.T, err error, code authz.Code, field, value string) {
	t.Helper()
	e, ok := err.(*authz.Error)
	if !ok {
		t.Fatalf("want an *authz.Error with code %d on %s %q, got %v", code, field, value, err)
	}
	if authz.CodeOf(err) != code || e.Field != field || e.Value != value {
		t.Errorf("got code %d on %s %q (%v), want code %d on %s %q", e.Code, e.Field, e.Value, err, code, field, value)
	}
}

func TestCheckRevision(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.grant("user:alice", "call-member", "call:livestream:42")
	q := authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"}
	for i, want := range []authz.Revision{2, 3} {
		_, rev, err := w.idx.Check(q)
		if err != nil {
			t.Fatal(err)
		}
		if rev != want {
			t.Errorf("Every response carries the revision it was answered at: got %d, want %d", rev, want)
		}
		w.put(fmt.Sprintf("call:livestream:%d", 100+i), "calltype:livestream")
	}
	if _, _, rev := w.idx.CheckBatch([]authz.Query{q}); rev != 4 {
		t.Errorf("CheckBatch answered at revision %d, want 4", rev)
	}
	if _, _, rev := w.idx.ListPermissions("user:alice", "call:livestream:42", false); rev != 4 {
		t.Errorf("ListPermissions answered at revision %d, want 4", rev)
	}
}

func TestCheckBatch(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.grant("user:alice", "call-member", "call:livestream:42")
	w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Reason: "banned"})
	qs := []authz.Query{
		{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:42"},
		{Subject: "user:alice", Permission: "end-call", Resource: "call:livestream:42"},
		{Subject: "user:bob", Permission: "join-call", Resource: "call:livestream:42"},
		{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:404"},
		{Subject: "user:alice", Permission: "send-audio", Resource: "call:livestream:42"},
	}

	t.Run("CheckBatch answers many checks in one call, in order", func(t *testing.T) {
		got, errs, rev := w.idx.CheckBatch(qs)
		if errs != nil {
			t.Fatal(errs)
		}
		if rev != w.idx.Revision() {
			t.Errorf("revision %d, want %d", rev, w.idx.Revision())
		}
		if len(got) != len(qs) {
			t.Fatalf("got %d answers to %d checks", len(got), len(qs))
		}
		for i, q := range qs {
			want, _, _ := w.idx.Check(q)
			if got[i] != want {
				t.Errorf("answer %d = %+v, want Check's %+v", i, got[i], want)
			}
		}
		wantReasons := []authz.Reason{authz.ReasonGranted, authz.ReasonNoGrant, authz.ReasonBlocked, authz.ReasonUnknownResource, authz.ReasonGranted}
		for i, r := range wantReasons {
			if got[i].Reason != r {
				t.Errorf("answer %d reason %d, want %d", i, got[i].Reason, r)
			}
		}
	})

	t.Run("an undeclared permission in checks[i] gets its own INVALID_ARGUMENT naming checks[i]; the others are answered", func(t *testing.T) {
		bad := slices.Clone(qs)
		bad[3].Permission = "join-cal"
		got, errs, _ := w.idx.CheckBatch(bad)
		if len(errs) != len(bad) {
			t.Fatalf("errors %v, want one slot per check", errs)
		}
		wantError(t, errs[3], authz.Invalid, "checks[3].permission", "join-cal")
		for i, q := range bad {
			if i == 3 {
				continue
			}
			want, _, _ := w.idx.Check(q)
			if errs[i] != nil || got[i] != want {
				t.Errorf("check %d beside the bad one: %+v, %v; want Check's %+v", i, got[i], errs[i], want)
			}
		}
		// The batch's error does not leak into Check's own error.
		_, _, err := w.idx.Check(bad[3])
		wantError(t, err, authz.Invalid, "permission", "join-cal")
	})

	t.Run("a batch longer than the names looked up at once answers each check as Check does, errors at their positions", func(t *testing.T) {
		var many []authz.Query
		extra := []authz.Query{
			{Subject: "user:nobody", Permission: "join-call", Resource: "call:livestream:42"},
			{Subject: "", Permission: "join-call", Resource: ""},
			{Subject: "user:alice", Permission: "join-call", Resource: "root"},
		}
		for i := range 150 {
			q := qs[i%len(qs)]
			if i%4 == 3 {
				q = extra[i%len(extra)]
			}
			many = append(many, q)
		}
		many[70].Permission, many[149].Permission = "join-cal", "nope"
		got, errs, _ := w.idx.CheckBatch(many)
		if len(got) != len(many) || len(errs) != len(many) {
			t.Fatalf("%d answers and %d errors to %d checks", len(got), len(errs), len(many))
		}
		wantError(t, errs[70], authz.Invalid, "checks[70].permission", "join-cal")
		wantError(t, errs[149], authz.Invalid, "checks[149].permission", "nope")
		for i, q := range many {
			if i == 70 || i == 149 {
				continue
			}
			want, _, _ := w.idx.Check(q)
			if errs[i] != nil || got[i] != want {
				t.Errorf("check %d: %+v, %v; want Check's %+v", i, got[i], errs[i], want)
			}
		}
	})

	t.Run("an empty batch answers nothing", func(t *testing.T) {
		got, errs, _ := w.idx.CheckBatch(nil)
		if errs != nil || len(got) != 0 {
			t.Errorf("CheckBatch(nil) = %v, %v", got, errs)
		}
	})
}

// TestListPermissionsIsCheck proves that ListPermissions "returns the
// subject's effective permission set": exactly the declared permissions Check
// allows, for every subject and resource of a world with inherited grants,
// overrides, partial and full blocks and expired entries.
func TestListPermissionsIsCheck(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.role(authz.Role{Name: "admin", Scope: "calltype:livestream", Permissions: []string{"send-audio", "send-video", "mute-users"}})
	w.grant("user:alice", "admin", "account:acme")
	w.grant("user:alice", "call-member", "call:globex:7")
	w.grant("user:bob", "moderator", "calltype:livestream")
	w.grant("user:bob", "user", "account:globex")
	w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"block-users", "send-video"}})
	w.grant("user:carol", "host", "call:default:1")
	w.block(authz.Block{Subject: "user:carol", Resource: "account:acme"})
	w.grant("user:dave", "user", "root")
	w.store(authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:dave", Role: "admin", Resource: "account:acme", Expires: time.Now().Add(-time.Minute)}})
	w.store(authz.Change{Op: authz.OpPutBlock, Block: &authz.Block{Subject: "user:dave", Resource: "root", Expires: time.Now().Add(-time.Minute)}})

	export, _ := exportAll(w)
	resources := []string{"root"}
	for _, r := range export.Resources {
		resources = append(resources, r.Name)
	}
	var declared []string
	for _, p := range export.Permissions {
		declared = append(declared, p.Name)
	}
	for _, subject := range []string{"user:alice", "user:bob", "user:carol", "user:dave", "user:nobody"} {
		for _, resource := range resources {
			t.Run(subject+" on "+resource, func(t *testing.T) {
				all, _, _ := w.idx.ListPermissions(subject, resource, true)
				if !slices.IsSorted(all) {
					t.Errorf("ListPermissions is not in name order: %v", all)
				}
				var allowed, domain []string
				for _, perm := range declared {
					if w.check(subject, perm, resource).Allowed {
						allowed = append(allowed, perm)
						if !strings.HasPrefix(perm, "usher.") {
							domain = append(domain, perm)
						}
					}
				}
				if !slices.Equal(all, allowed) {
					t.Errorf("ListPermissions with reserved = %v\nCheck allows    %v", all, allowed)
				}
				// ListPermissions and the capability sets derived from it show
				// domain permissions only; reserved usher.* permissions appear
				// only when asked for.
				if list := w.permissions(subject, resource); !slices.Equal(list, domain) {
					t.Errorf("ListPermissions = %v\nwant the domain permissions Check allows %v", list, domain)
				}
			})
		}
	}

	t.Run("ListPermissions of an unknown resource says it is not registered", func(t *testing.T) {
		perms, ok, _ := w.idx.ListPermissions("user:alice", "call:livestream:404", false)
		if ok || len(perms) != 0 {
			t.Errorf("ListPermissions(unknown) = %v, %v; want nothing, false", perms, ok)
		}
	})
}

// countingClock counts its readings.
type countingClock struct {
	*authz.ManualClock
	reads atomic.Int64
}

func (c *countingClock) Now() time.Time {
	c.reads.Add(1)
	return c.ManualClock.Now()
}

// Check reads the clock only when an expiry is to be judged, once a call
// however many it judges, and judges them as before.
func TestCheckReadsTheClockOnlyForExpiries(t *testing.T) {
	clock := &countingClock{ManualClock: authz.NewManualClock(time.Now())}
	eng, err := authz.Start(t.Context(), &testBackend{Memory: memory.New()}, authz.Options{Clock: clock})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(eng.Close)
	w := &world{t: t, ctx: t.Context(), by: authz.Author{Caller: "test"}, idx: eng.Index(), eng: eng, clock: clock.ManualClock}
	if _, _, err := eng.ApplyPolicy(w.ctx, w.by, streamPolicy(), authz.ApplyOptions{}); err != nil {
		t.Fatalf("ApplyPolicy: %v", err)
	}
	call := "call:livestream:42"
	w.grant("user:alice", "call-member", call)
	w.grantUntil("user:dan", "moderator", call, clock.Now().Add(time.Hour))
	w.grantUntil("user:dan", "call-member", "account:acme", clock.Now().Add(2*time.Hour))
	w.block(authz.Block{Subject: "user:bob", Resource: call, Expires: clock.Now().Add(time.Hour)})
	reads := func(f func()) int64 {
		before := clock.reads.Load()
		f()
		return clock.reads.Load() - before
	}
	for _, tc := range []struct {
		subject, permission string
		allowed             bool
		reads               int64
	}{
		{"user:alice", "send-audio", true, 0},
		{"user:carol", "send-audio", false, 0},
		{"user:dan", "mute-users", true, 1},
		{"user:dan", "send-audio", true, 1},
		{"user:bob", "send-audio", false, 1},
	} {
		var d authz.Decision
		if n := reads(func() { d = w.check(tc.subject, tc.permission, call) }); n != tc.reads || d.Allowed != tc.allowed {
			t.Errorf("Check(%s, %s): allowed %v after %d readings of the clock, want %v after %d", tc.subject, tc.permission, d.Allowed, n, tc.allowed, tc.reads)
		}
	}
	batch := []authz.Query{
		{Subject: "user:alice", Permission: "send-audio", Resource: call},
		{Subject: "user:dan", Permission: "mute-users", Resource: call},
		{Subject: "user:bob", Permission: "send-audio", Resource: call},
	}
	if n := reads(func() { eng.Index().CheckBatch(batch) }); n != 1 {
		t.Errorf("CheckBatch read the clock %d times, want once", n)
	}
	// An hour and a half on, dan's moderator grant and bob's block have
	// expired; the grant on the account has not.
	clock.Advance(90 * time.Minute)
	if d := w.check("user:dan", "mute-users", call); d.Allowed {
		t.Errorf("dan mutes after his grant expired: %+v", d)
	}
	if d := w.check("user:dan", "send-audio", call); !d.Allowed || d.Scope != "account:acme" {
		t.Errorf("dan's grant on the account: %+v", d)
	}
	if d := w.check("user:bob", "send-audio", call); d.Reason != authz.ReasonNoGrant {
		t.Errorf("bob after his block expired: %+v", d)
	}
}

// Check finds a subject's nearest grant as the reference does however
// long the subject's list of grants: short lists, lists read in one pass
// and lists searched resource by resource.
func TestCheckOfSubjectsWithManyGrants(t *testing.T) {
	p := streamPolicy()
	snap := authz.Snapshot{Permissions: p.Permissions, Roles: p.Roles}
	// The moderator of account:a1 only joins.
	snap.Roles = append(snap.Roles, authz.Role{Name: "moderator", Scope: "account:a1", Permissions: []string{"join-call"}})
	for a := range 3 {
		account := fmt.Sprintf("account:a%d", a)
		snap.Resources = append(snap.Resources, authz.Resource{Name: account})
		for c := range 3 {
			calltype := fmt.Sprintf("calltype:a%d-t%d", a, c)
			snap.Resources = append(snap.Resources, authz.Resource{Name: calltype, Parent: account})
			for k := range 8 {
				snap.Resources = append(snap.Resources, authz.Resource{Name: fmt.Sprintf("call:a%d-t%d-c%d", a, c, k), Parent: calltype})
			}
		}
	}
	resources := []string{authz.RootName}
	for _, r := range snap.Resources {
		resources = append(resources, r.Name)
	}
	now := time.Now()
	r := rand.New(rand.NewPCG(3, 4))
	roles := []string{"user", "call-member", "moderator", "admin"}
	var subjects []string
	for _, n := range []int{1, 5, 8, 9, 40, 63, 64, 65, 100, 200} {
		subject := fmt.Sprintf("user:n%d", n)
		subjects = append(subjects, subject)
		// admin, which holds everything, is rare, so that most checks
		// are decided by which other grants lie on the path.
		seen := map[[2]string]bool{}
		for len(seen) < n {
			g := authz.Grant{Subject: subject, Role: roles[r.IntN(len(roles)-1)], Resource: resources[r.IntN(len(resources))]}
			if r.IntN(50) == 0 {
				g.Role = "admin"
			}
			if seen[[2]string{g.Role, g.Resource}] {
				continue
			}
			seen[[2]string{g.Role, g.Resource}] = true
			switch r.IntN(4) {
			case 0:
				g.Expires = now.Add(-time.Hour)
			case 1:
				g.Expires = now.Add(time.Hour)
			}
			snap.Grants = append(snap.Grants, g)
		}
	}
	idx, err := authz.NewIndex(snap)
	if err != nil {
		t.Fatal(err)
	}
	ref := newReference(snap, now)
	granted := 0
	for _, subject := range subjects {
		for _, resource := range resources {
			for _, perm := range p.Permissions {
				a := ref.check(subject, perm.Name, resource)
				want := authz.Decision{Reason: authz.ReasonNoGrant}
				if a.Allowed {
					want = authz.Decision{Allowed: true, Reason: authz.ReasonGranted, Role: a.Role, Scope: a.Scope}
					granted++
				}
				got, _, err := idx.Check(authz.Query{Subject: subject, Permission: perm.Name, Resource: resource})
				if err != nil || got != want {
					t.Fatalf("Check(%s, %s, %s) = %s, %v; the reference says %s", subject, perm.Name, resource, show(got), err, show(want))
				}
			}
		}
	}
	if granted == 0 {
		t.Fatal("no check was granted")
	}
}
