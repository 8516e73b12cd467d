package authz_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/memory"
)

// The write benchmarks' world: the default policy over 100 accounts x 10
// workspaces x 10 events x 10 calls (111,100 resources), 1,000,000 grants
// of 200,000 users spread over every level, and in account a001 a custom
// role "producer" held by 10,000 subjects and an event of 99 calls to move
// (100 resources). user:owner owns account a001; every write is by them, as
// an actor, and judged.
const (
	wbGrants   = 1_000_000
	wbUsers    = 200_000
	wbHolders  = 10_000
	wbBigCalls = 99
)

type writeWorld struct {
	eng    *authz.Engine
	policy authz.Policy
	owner  authz.Author
}

var writeBenchWorld = sync.OnceValues(func() (*writeWorld, error) {
	msg, err := policy.Load("default")
	if err != nil {
		return nil, err
	}
	pol := server.FromPolicy(msg)
	snap := authz.Snapshot{Permissions: pol.Permissions, Roles: pol.Roles, CreatorRoles: pol.CreatorRoles,
		DefaultQuotas: pol.DefaultQuotas, Admissions: pol.Admissions}
	var calls []string
	for a := range benchAccounts {
		snap.Resources = append(snap.Resources, authz.Resource{Name: benchAccount(a), Parent: authz.RootName})
		for w := range benchFanOut {
			snap.Resources = append(snap.Resources, authz.Resource{Name: benchWorkspace(a, w), Parent: benchAccount(a)})
			for e := range benchFanOut {
				snap.Resources = append(snap.Resources, authz.Resource{Name: benchEvent(a, w, e), Parent: benchWorkspace(a, w)})
				for c := range benchFanOut {
					snap.Resources = append(snap.Resources, authz.Resource{Name: benchCall(a, w, e, c), Parent: benchEvent(a, w, e)})
					calls = append(calls, benchCall(a, w, e, c))
				}
			}
		}
	}
	snap.Resources = append(snap.Resources, authz.Resource{Name: "event:big", Parent: benchWorkspace(1, 0)})
	for c := range wbBigCalls {
		snap.Resources = append(snap.Resources, authz.Resource{Name: fmt.Sprintf("call:big-%02d", c), Parent: "event:big"})
	}
	snap.Roles = append(snap.Roles, authz.Role{Name: "producer", Scope: benchAccount(1), Permissions: []string{"join-call", "send-audio", "send-video"}})
	snap.Grants = append(snap.Grants, authz.Grant{Subject: "user:owner", Role: "owner", Resource: benchAccount(1)})
	rng := rand.New(rand.NewPCG(3, 4))
	roles := []string{"user", "call-member", "moderator"}
	seen := map[[3]string]bool{}
	for len(snap.Grants) < wbGrants {
		var g authz.Grant
		if n := len(snap.Grants); n <= wbHolders {
			g = authz.Grant{Subject: benchUser(n), Role: "producer", Resource: benchWorkspace(1, n%benchFanOut)}
		} else {
			p := benchPath(rng)
			g = authz.Grant{Subject: fmt.Sprintf("user:v%06d", rng.IntN(wbUsers)), Role: roles[rng.IntN(len(roles))], Resource: benchResource(p, rng.IntN(4))}
		}
		if k := [3]string{g.Subject, g.Role, g.Resource}; !seen[k] {
			seen[k] = true
			snap.Grants = append(snap.Grants, g)
		}
	}
	be := memory.New()
	if _, err := be.Commit(context.Background(), []authz.Write{{Set: authz.ChangeSet{Caller: "bench", Changes: storage.Puts(snap)}}}); err != nil {
		return nil, err
	}
	eng, err := authz.Start(context.Background(), be, authz.Options{})
	if err != nil {
		return nil, err
	}
	return &writeWorld{eng: eng, policy: pol, owner: authz.Author{Caller: "bench", Actor: "user:owner"}}, nil
})

func writeWorldFor(b *testing.B) *writeWorld {
	b.Helper()
	w, err := writeBenchWorld()
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// BenchmarkActorWrite measures writes by an actor, each judged by the
// delegation invariant, on the 1M-grant world: issue 9's figures.
func BenchmarkActorWrite(b *testing.B) {
	w := writeWorldFor(b)
	ctx := context.Background()
	call := benchCall(1, 2, 3, 4)
	b.Run("grant", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, err := w.eng.Grant(ctx, w.owner, authz.Grant{Subject: fmt.Sprintf("user:g%07d", i), Role: "call-member", Resource: call}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("block", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, _, err := w.eng.Block(ctx, w.owner, authz.Block{Subject: fmt.Sprintf("user:b%07d", i), Resource: call, Permissions: []string{"send-audio"}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("move a subtree of 100", func(b *testing.B) {
		parents := []string{benchWorkspace(1, 1), benchWorkspace(1, 0)}
		i := 0
		for b.Loop() {
			if _, err := w.eng.PutResource(ctx, w.owner, authz.Resource{Name: "event:big", Parent: parents[i%2]}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("redefine a role held by 10k", func(b *testing.B) {
		perms := [][]string{{"join-call", "send-audio"}, {"join-call", "send-audio", "send-video"}}
		i := 0
		for b.Loop() {
			if _, err := w.eng.PutRole(ctx, w.owner, authz.Role{Name: "producer", Scope: benchAccount(1), Permissions: perms[i%2]}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkPlatformWrite measures the structural writes of issue 10 on the
// 1M-grant world, on the platform's own authority.
func BenchmarkPlatformWrite(b *testing.B) {
	w := writeWorldFor(b)
	ctx := context.Background()
	platform := authz.Author{Caller: "bench"}
	b.Run("move a subtree of 100", func(b *testing.B) {
		parents := []string{benchWorkspace(1, 1), benchWorkspace(1, 0)}
		i := 0
		for b.Loop() {
			if _, err := w.eng.PutResource(ctx, platform, authz.Resource{Name: "event:big", Parent: parents[i%2]}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("quota", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			if _, err := w.eng.PutQuota(ctx, platform, authz.Quota{Scope: benchAccount(2), ResourceType: "call", Limit: uint32(10_000 + i%2)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("define and delete a role", func(b *testing.B) {
		for b.Loop() {
			if _, err := w.eng.PutRole(ctx, platform, authz.Role{Name: "temp", Scope: benchAccount(3), Permissions: []string{"join-call"}}); err != nil {
				b.Fatal(err)
			}
			if _, err := w.eng.DeleteRole(ctx, platform, benchAccount(3), "temp"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("apply the policy in force", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := w.eng.ApplyPolicy(ctx, platform, w.policy, authz.ApplyOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("apply a policy that changes one role", func(b *testing.B) {
		p := w.policy
		p.Roles = append([]authz.Role(nil), p.Roles...)
		i := 0
		for b.Loop() {
			i++
			p.Roles[len(p.Roles)-1].Description = fmt.Sprint("revision ", i)
			if _, _, err := w.eng.ApplyPolicy(ctx, platform, p, authz.ApplyOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkActorWriteOnABlockedSubject measures writes by an actor about a
// subject that carries the most blocks one subject may carry on an org,
// judged at each of the 2,000 calls below it that define a role: a mute
// lifted and put back, every mute lifted at once (and put back by the
// platform), a visitor who holds nothing banned and let back, and a role
// granted and revoked.
func BenchmarkActorWriteOnABlockedSubject(b *testing.B) {
	w := newWorld(b, attackPolicy())
	w.grant("user:mod", "host", "org:a")
	var cs []authz.Change
	for i := range 2_000 {
		name := fmt.Sprintf("call:r%04d", i)
		cs = append(cs, authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: name, Parent: "org:a"}},
			authz.Change{Op: authz.OpPutRole, Role: &authz.Role{Name: "guest", Scope: name, Permissions: []string{"call.join"}}})
	}
	for i := range authz.MaxBlocksPerBinding {
		cs = append(cs, authz.Change{Op: authz.OpPutBlock, Block: &authz.Block{Subject: "user:x", Resource: "org:a",
			ID: fmt.Sprintf("mute-%03d", i), Permissions: []string{"call.speak"}}})
	}
	w.store(cs...)
	mod := as("user:mod")
	b.Run("unblock and block", func(b *testing.B) {
		for b.Loop() {
			if _, err := w.eng.Unblock(w.ctx, mod, "user:x", "org:a", "mute-000"); err != nil {
				b.Fatal(err)
			}
			if _, _, err := w.eng.Block(w.ctx, mod, authz.Block{Subject: "user:x", Resource: "org:a", ID: "mute-000", Permissions: []string{"call.speak"}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unblock all and block again", func(b *testing.B) {
		for b.Loop() {
			if _, err := w.eng.Unblock(w.ctx, mod, "user:x", "org:a", ""); err != nil {
				b.Fatal(err)
			}
			for i := range authz.MaxBlocksPerBinding {
				w.block(authz.Block{Subject: "user:x", Resource: "org:a", ID: fmt.Sprintf("mute-%03d", i), Permissions: []string{"call.speak"}})
			}
		}
	})
	b.Run("ban a visitor and lift the ban", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := w.eng.Block(w.ctx, mod, authz.Block{Subject: "user:visitor", Resource: "org:a", ID: "ban"}); err != nil {
				b.Fatal(err)
			}
			if _, err := w.eng.Unblock(w.ctx, mod, "user:visitor", "org:a", "ban"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("grant and revoke", func(b *testing.B) {
		g := authz.Grant{Subject: "user:x", Role: "guest", Resource: "org:a"}
		for b.Loop() {
			if _, err := w.eng.Grant(w.ctx, mod, g); err != nil {
				b.Fatal(err)
			}
			if _, err := w.eng.Revoke(w.ctx, mod, g); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkQuotaNamingABusySubject measures setting and removing a quota,
// on an org of two calls, that names a subject who registered 200,000
// calls 16 levels down another org: its count is made as the quota is
// applied, under the lock Check takes.
func BenchmarkQuotaNamingABusySubject(b *testing.B) {
	w := newWorld(b, attackPolicy())
	var cs []authz.Change
	parent := "org:b"
	for d := range 16 {
		name := fmt.Sprintf("org:b%02d", d)
		cs = append(cs, authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: name, Parent: parent}})
		parent = name
	}
	for i := range 200_000 {
		cs = append(cs, authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: fmt.Sprintf("call:bot-%06d", i), Parent: parent, Creator: "service:bot"}})
	}
	w.store(cs...)
	q := authz.Quota{Scope: "org:a", ResourceType: "call", Subject: "service:bot", Limit: 10}
	for b.Loop() {
		if _, err := w.eng.PutQuota(w.ctx, w.by, q); err != nil {
			b.Fatal(err)
		}
		if _, err := w.eng.DeleteQuota(w.ctx, w.by, q); err != nil {
			b.Fatal(err)
		}
	}
}
