package authz_test

import (
	"slices"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

func TestBlock(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, w *world)
	}{
		{"a block of the same subject on the same resource again is idempotent", func(t *testing.T, w *world) {
			w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"send-video", "send-audio"}, Reason: "noisy"})
			w.writesNothing(func() (authz.Revision, error) {
				return w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"send-audio", "send-video", "send-audio"}, Reason: "noisy"})
			})
		}},
		{"a block replaces an earlier block of the subject there", func(t *testing.T, w *world) {
			w.grant("user:bob", "call-member", "call:livestream:42")
			w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Reason: "banned"})
			w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"send-video"}, Reason: "camera off"})
			if d := w.check("user:bob", "join-call", "call:livestream:42"); !d.Allowed {
				t.Errorf("the replaced block of everything still applies: %+v", d)
			}
			if d := w.check("user:bob", "send-video", "call:livestream:42"); d.BlockReason != "camera off" {
				t.Errorf("the new block does not apply: %+v", d)
			}
		}},
		{"Unblock removes the block", func(t *testing.T, w *world) {
			w.grant("user:bob", "call-member", "call:livestream:42")
			w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42"})
			if _, err := w.eng.Unblock(w.ctx, w.by, "user:bob", "call:livestream:42"); err != nil {
				t.Fatal(err)
			}
			if d := w.check("user:bob", "join-call", "call:livestream:42"); !d.Allowed {
				t.Errorf("after Unblock, Check = %+v", d)
			}
		}},
		{"the permission must be declared, else INVALID_ARGUMENT, naming permissions[i] as asked", func(t *testing.T, w *world) {
			w.refuses(authz.Invalid, "permissions[1]", "send-vidoe", func() (authz.Revision, error) {
				return w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"send-audio", "send-vidoe"}})
			})
		}},
		{"a block lists permissions, empty for all: `*` is not one", func(t *testing.T, w *world) {
			w.refuses(authz.Invalid, "permissions[0]", "*", func() (authz.Revision, error) {
				return w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"*"}})
			})
		}},
		{"a block's expiry must be in the future", func(t *testing.T, w *world) {
			w.refuses(authz.Invalid, "expire_time", "2020-01-02T03:04:05Z", func() (authz.Revision, error) {
				return w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "account:acme", Expires: time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)})
			})
		}},
		{"on a write: resource not registered -> NOT_FOUND (Block)", func(t *testing.T, w *world) {
			w.refuses(authz.NotFound, "resource", "account:initech", func() (authz.Revision, error) {
				return w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "account:initech"})
			})
		}},
		{"Unblock of a subject that is not blocked there is NOT_FOUND", func(t *testing.T, w *world) {
			w.block(authz.Block{Subject: "user:bob", Resource: "account:acme"})
			w.refuses(authz.NotFound, "subject", "user:bob", func() (authz.Revision, error) {
				return w.eng.Unblock(w.ctx, w.by, "user:bob", "call:livestream:42")
			})
		}},
		{"on a write: resource not registered -> NOT_FOUND (Unblock)", func(t *testing.T, w *world) {
			w.refuses(authz.NotFound, "resource", "account:initech", func() (authz.Revision, error) {
				return w.eng.Unblock(w.ctx, w.by, "user:bob", "account:initech")
			})
		}},
		{"a block is committed with its permissions sorted and its expiry in UTC", func(t *testing.T, w *world) {
			exp := time.Now().Add(time.Hour).In(time.FixedZone("CEST", 7200))
			w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"send-video", "send-audio"}, Expires: exp})
			sets := w.be.committed()
			b := sets[len(sets)-1].Changes[0].Block
			if !slices.Equal(b.Permissions, []string{"send-audio", "send-video"}) || b.Expires.Location() != time.UTC || !b.Expires.Equal(exp) {
				t.Errorf("committed %+v", *b)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newWorld(t, streamPolicy()))
		})
	}
}
