package authz_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
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
		{"a block again with its own ID and the same content is idempotent", func(t *testing.T, w *world) {
			id := w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"send-video", "send-audio"}, Reason: "noisy"})
			w.writesNothing(func() (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "account:acme", ID: id, Permissions: []string{"send-audio", "send-video", "send-audio"}, Reason: "noisy"}))
			})
		}},
		{"Blocks are additive: a later block never weakens an earlier one (muting a banned user does not lift the ban)", func(t *testing.T, w *world) {
			w.grant("user:bob", "call-member", "call:livestream:42")
			ban := w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Reason: "banned"})
			mute := w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"send-audio"}, Reason: "muted"})
			if ban == mute {
				t.Fatalf("two blocks share the ID %q", ban)
			}
			if d := w.check("user:bob", "join-call", "call:livestream:42"); d.Allowed || d.BlockReason != "banned" || d.BlockID != ban {
				t.Errorf("after the mute, the ban no longer applies: %+v", d)
			}
		}},
		{"Unblock lifts one block by its ID, and leaves the others", func(t *testing.T, w *world) {
			w.grant("user:bob", "call-member", "call:livestream:42")
			ban := w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Reason: "banned"})
			w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"send-audio"}, Reason: "muted"})
			if _, err := w.eng.Unblock(w.ctx, w.by, "user:bob", "call:livestream:42", ban); err != nil {
				t.Fatal(err)
			}
			if d := w.check("user:bob", "join-call", "call:livestream:42"); !d.Allowed {
				t.Errorf("after lifting the ban, Check = %+v", d)
			}
			if d := w.check("user:bob", "send-audio", "call:livestream:42"); d.BlockReason != "muted" {
				t.Errorf("lifting the ban lifted the mute too: %+v", d)
			}
		}},
		{"Unblock without an ID lifts every block of the subject there", func(t *testing.T, w *world) {
			w.grant("user:bob", "call-member", "call:livestream:42")
			w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42"})
			w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"send-audio"}})
			if _, err := w.eng.Unblock(w.ctx, w.by, "user:bob", "call:livestream:42", ""); err != nil {
				t.Fatal(err)
			}
			if d := w.check("user:bob", "send-audio", "call:livestream:42"); !d.Allowed {
				t.Errorf("after Unblock, Check = %+v", d)
			}
		}},
		{"Unblock of a block ID the subject does not carry there is NOT_FOUND", func(t *testing.T, w *world) {
			w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42"})
			w.refuses(authz.NotFound, "block_id", "nope", func() (authz.Revision, error) {
				return w.eng.Unblock(w.ctx, w.by, "user:bob", "call:livestream:42", "nope")
			})
		}},
		{"a subject carries at most MaxBlocksPerBinding blocks on one resource", func(t *testing.T, w *world) {
			for range authz.MaxBlocksPerBinding {
				w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"send-audio"}})
			}
			// A block that covers none of them finds no room.
			w.refuses(authz.ResourceExhausted, "subject", "user:bob", func() (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"send-video"}}))
			})
		}},
		{"blocks that ran out make way: a subject's slots filled with them still take a ban, which lifts them", func(t *testing.T, w *world) {
			for range authz.MaxBlocksPerBinding - 1 {
				w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"send-audio"}, Expires: w.clock.Now().Add(time.Minute)})
			}
			w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"send-video"}})
			w.clock.Advance(2 * time.Minute)
			w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Reason: "ban"})
			ops := w.lastOps()
			if want := authz.MaxBlocksPerBinding; len(ops) != want || ops[0] != "delete_block" || ops[want-1] != "put_block" {
				t.Errorf("the ban's change set = %d changes %v, want the %d spent blocks deleted, then the ban put", len(ops), ops, want-1)
			}
			if d := w.check("user:bob", "join-call", "call:livestream:42"); d.Allowed || d.BlockReason != "ban" {
				t.Errorf("after the ban, Check = %+v", d)
			}
			// Only the blocks that ran out made way: the unexpired mute and
			// the ban now leave room for 98 more, and no more.
			for range authz.MaxBlocksPerBinding - 2 {
				w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"send-audio"}})
			}
			w.refuses(authz.ResourceExhausted, "subject", "user:bob", func() (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"screenshare"}}))
			})
		}},
		{"a moderator's ban makes way through spent blocks too, the deletes judged with it", func(t *testing.T, w *world) {
			w.grant("user:mod", "moderator", "call:livestream:42")
			w.grant("user:bob", "call-member", "call:livestream:42")
			for range authz.MaxBlocksPerBinding {
				w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"send-audio"}, Expires: w.clock.Now().Add(time.Minute)})
			}
			w.clock.Advance(2 * time.Minute)
			mod := authz.Author{Caller: w.by.Caller, Actor: "user:mod"}
			if _, _, err := w.eng.Block(w.ctx, mod, authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Reason: "ban"}); err != nil {
				t.Fatalf("the moderator's ban: %v", err)
			}
			if ops := w.lastOps(); len(ops) != authz.MaxBlocksPerBinding+1 || ops[len(ops)-1] != "put_block" {
				t.Errorf("the ban's change set = %d changes, want the %d spent blocks deleted and the ban put", len(ops), authz.MaxBlocksPerBinding)
			}
			if d := w.check("user:bob", "join-call", "call:livestream:42"); d.Allowed || d.BlockReason != "ban" {
				t.Errorf("after the ban, Check = %+v", d)
			}
		}},
		{"the permission must be declared, else INVALID_ARGUMENT, naming permissions[i] as asked", func(t *testing.T, w *world) {
			w.refuses(authz.Invalid, "permissions[1]", "send-vidoe", func() (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"send-audio", "send-vidoe"}}))
			})
		}},
		{"a block lists permissions, empty for all: `*` is not one", func(t *testing.T, w *world) {
			w.refuses(authz.Invalid, "permissions[0]", "*", func() (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"*"}}))
			})
		}},
		{"a block's expiry must be in the future", func(t *testing.T, w *world) {
			w.refuses(authz.Invalid, "expire_time", "2020-01-02T03:04:05Z", func() (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "account:acme", Expires: time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)}))
			})
		}},
		{"on a write: resource not registered -> NOT_FOUND (Block)", func(t *testing.T, w *world) {
			w.refuses(authz.NotFound, "resource", "account:initech", func() (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:bob", Resource: "account:initech"}))
			})
		}},
		{"Unblock of a subject that is not blocked there is NOT_FOUND", func(t *testing.T, w *world) {
			w.block(authz.Block{Subject: "user:bob", Resource: "account:acme"})
			w.refuses(authz.NotFound, "subject", "user:bob", func() (authz.Revision, error) {
				return w.eng.Unblock(w.ctx, w.by, "user:bob", "call:livestream:42", "")
			})
		}},
		{"on a write: resource not registered -> NOT_FOUND (Unblock)", func(t *testing.T, w *world) {
			w.refuses(authz.NotFound, "resource", "account:initech", func() (authz.Revision, error) {
				return w.eng.Unblock(w.ctx, w.by, "user:bob", "account:initech", "")
			})
		}},
		{"a block is committed with an ID, its permissions sorted and its expiry in UTC", func(t *testing.T, w *world) {
			exp := time.Now().Add(time.Hour).In(time.FixedZone("CEST", 7200))
			w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"send-video", "send-audio"}, Expires: exp})
			sets := w.be.committed()
			b := sets[len(sets)-1].Changes[0].Block
			if !slices.Equal(b.Permissions, []string{"send-audio", "send-video"}) || b.Expires.Location() != time.UTC || !b.Expires.Equal(exp) || b.ID == "" {
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

// A subject's block slots on a resource, filled with live mutes by someone
// who may only mute, must not keep a ban out: "a later block never weakens
// an earlier one", and a block that covers a mute and outlasts it takes
// nothing from it while it lives. So the fewest such mutes make way, the
// soonest to run out first; a block that covers none finds no room.
func TestALiveBlockMakesWayForOneThatCoversIt(t *testing.T) {
	policy := func() authz.Policy {
		p := streamPolicy()
		p.Permissions = append(p.Permissions, authz.Permission{Name: authz.PermBlocksWrite + ".send-audio", Parents: []string{"mute-users"}})
		p.Roles = append(p.Roles, authz.Role{Name: "muter", Scope: "root", Permissions: []string{"mute-users", "join-call", "send-audio"}})
		return p
	}
	const call = "call:livestream:42"
	// fill has user:muter mute user:bob on the call in every slot, the
	// i-th mute running out i+1 hours from now, or never with forever.
	fill := func(t *testing.T, w *world, forever bool) {
		w.grant("user:muter", "muter", call)
		w.grant("user:mod", "moderator", call)
		w.grant("user:bob", "call-member", call)
		for i := range authz.MaxBlocksPerBinding {
			b := authz.Block{Subject: "user:bob", Resource: call, ID: fmt.Sprintf("mute-%03d", i), Permissions: []string{"send-audio"}}
			if !forever {
				b.Expires = w.clock.Now().Add(time.Duration(authz.MaxBlocksPerBinding-i) * time.Hour)
			}
			if _, _, err := w.eng.Block(w.ctx, as("user:muter"), b); err != nil {
				t.Fatalf("mute %d: %v", i, err)
			}
		}
	}
	t.Run("a moderator's ban takes the place of the mute that runs out soonest", func(t *testing.T) {
		w := newWorld(t, policy())
		fill(t, w, false)
		if _, _, err := w.eng.Block(w.ctx, as("user:mod"), authz.Block{Subject: "user:bob", Resource: call, ID: "ban", Reason: "ban"}); err != nil {
			t.Fatalf("the moderator's ban, the slots full of mutes: %v", err)
		}
		sets := w.be.committed()
		var got []string
		for _, c := range sets[len(sets)-1].Changes {
			got = append(got, c.Op.String()+" "+c.Block.ID)
		}
		if want := []string{"delete_block mute-099", "put_block ban"}; !slices.Equal(got, want) {
			t.Errorf("the ban's change set = %v, want %v", got, want)
		}
		if d := w.check("user:bob", "join-call", call); d.Allowed || d.BlockReason != "ban" {
			t.Errorf("after the ban, Check = %+v", d)
		}
		// The other mutes stay, and outlive the ban lifted.
		if _, err := w.eng.Unblock(w.ctx, as("user:mod"), "user:bob", call, "ban"); err != nil {
			t.Fatalf("lifting the ban: %v", err)
		}
		if d := w.check("user:bob", "send-audio", call); d.Allowed {
			t.Errorf("after the ban is lifted, Check of send-audio = %+v, want the mutes to deny it", d)
		}
	})
	t.Run("a mute that covers and outlasts another takes its place too", func(t *testing.T) {
		w := newWorld(t, policy())
		fill(t, w, false)
		if _, _, err := w.eng.Block(w.ctx, as("user:muter"), authz.Block{Subject: "user:bob", Resource: call, ID: "long", Permissions: []string{"send-audio"}}); err != nil {
			t.Fatalf("a mute with no end, the slots full of mutes that end: %v", err)
		}
		if d := w.check("user:bob", "send-audio", call); d.Allowed {
			t.Errorf("after the mute, Check = %+v", d)
		}
	})
	t.Run("a ban that runs out before every mute finds no room", func(t *testing.T) {
		w := newWorld(t, policy())
		fill(t, w, false)
		w.refuses(authz.ResourceExhausted, "subject", "user:bob", func() (authz.Revision, error) {
			return noID(w.eng.Block(w.ctx, as("user:mod"), authz.Block{Subject: "user:bob", Resource: call, Expires: w.clock.Now().Add(time.Minute)}))
		})
	})
	t.Run("a ban with an end finds no room among mutes with none", func(t *testing.T) {
		w := newWorld(t, policy())
		fill(t, w, true)
		w.refuses(authz.ResourceExhausted, "subject", "user:bob", func() (authz.Revision, error) {
			return noID(w.eng.Block(w.ctx, as("user:mod"), authz.Block{Subject: "user:bob", Resource: call, Expires: w.clock.Now().Add(1000 * time.Hour)}))
		})
	})
	t.Run("a mute never takes a ban's place", func(t *testing.T) {
		w := newWorld(t, policy())
		w.grant("user:muter", "muter", call)
		for i := range authz.MaxBlocksPerBinding {
			w.block(authz.Block{Subject: "user:bob", Resource: call, ID: fmt.Sprintf("ban-%03d", i), Expires: w.clock.Now().Add(time.Minute)})
		}
		w.refuses(authz.ResourceExhausted, "subject", "user:bob", func() (authz.Revision, error) {
			return noID(w.eng.Block(w.ctx, as("user:muter"), authz.Block{Subject: "user:bob", Resource: call, Permissions: []string{"send-audio"}}))
		})
	})
}

// Near the limit the engine and the reference judge agree on which blocks
// make way for a new one, and on whether any may: random worlds of a
// subject carrying MaxBlocksPerBinding blocks, some run out, of random
// permissions and ends, and one more block by a moderator or by one who
// may only mute.
func TestBlocksAtTheLimitAgreeWithTheReference(t *testing.T) {
	const call = "call:livestream:42"
	perms := []string{"send-audio", "send-video", "screenshare"}
	seeds := 300
	if raceDetector {
		seeds = 30
	}
	tally := &invariantTally{kinds: map[string]*kindTally{}}
	for seed := range uint64(seeds) {
		rng := rand.New(rand.NewPCG(seed, 0xb10c))
		p := streamPolicy()
		p.Permissions = append(p.Permissions, authz.Permission{Name: authz.PermBlocksWrite + ".send-audio", Parents: []string{"mute-users"}})
		p.Roles = append(p.Roles, authz.Role{Name: "muter", Scope: "root", Permissions: []string{"mute-users", "join-call", "send-audio"}})
		w := newWorld(t, p)
		w.grant("user:mod", "moderator", call)
		w.grant("user:muter", "muter", call)
		w.grant("user:bob", "call-member", call)
		// some returns a random block's permissions, none for all.
		some := func() []string {
			var out []string
			for _, p := range perms {
				if rng.IntN(2) == 0 {
					out = append(out, p)
				}
			}
			if rng.IntN(3) == 0 {
				return []string{"send-audio"}
			}
			return out
		}
		// until returns a random end: none, or a few hours on.
		until := func() time.Time {
			if rng.IntN(3) == 0 {
				return time.Time{}
			}
			return w.clock.Now().Add(time.Duration(1+rng.IntN(4)) * time.Hour)
		}
		var changes []authz.Change
		spent := rng.IntN(2) == 0   // whether some have run out
		uniform := rng.IntN(2) == 0 // or all are alike, with no end
		alike := some()
		for i := range authz.MaxBlocksPerBinding {
			b := authz.Block{Subject: "user:bob", Resource: call, ID: fmt.Sprintf("b%03d", i), Permissions: some(), Expires: until()}
			if uniform {
				b.Permissions, b.Expires = alike, time.Time{}
			}
			if spent && rng.IntN(20) == 0 {
				b.Expires = w.clock.Now().Add(time.Minute) // to run out
			}
			changes = append(changes, authz.Change{Op: authz.OpPutBlock, Block: &b})
		}
		w.store(changes...)
		w.clock.Advance(2 * time.Minute)
		actor := []string{"user:mod", "user:muter"}[rng.IntN(2)]
		b := authz.Block{Subject: "user:bob", Resource: call, ID: fmt.Sprintf("new%d", seed), Permissions: some(), Expires: until()}
		if rng.IntN(8) == 0 {
			b.ID = fmt.Sprintf("b%03d", rng.IntN(authz.MaxBlocksPerBinding)) // one it replaces
		}
		judgeWrite(t, w, seed, 0, fmt.Sprintf("go test ./authz -run TestBlocksAtTheLimitAgreeWithTheReference (seed %d)", seed), tally, actor, refWrite{Op: "Block", Block: b})
	}
	made, full := 0, 0
	for _, kind := range slices.Sorted(maps.Keys(tally.kinds)) {
		k := tally.kinds[kind]
		t.Logf("%s: %d accepted, %d refused %v", kind, k.accepted, k.refused, k.why)
		made += k.accepted
		full += k.why["RESOURCE_EXHAUSTED"]
	}
	if made == 0 || full == 0 {
		t.Errorf("%d blocks placed and %d refused for the limit: the worlds judge too little", made, full)
	}
}
