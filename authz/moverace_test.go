package authz_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// chain registers folder:a1 under parent, folder:a2 under it, and so on to
// folder:aN, and returns the deepest.
func (w *world) chain(parent string, n int) string {
	w.t.Helper()
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("folder:a%d", i)
		w.put(name, parent)
		parent = name
	}
	return parent
}

// "a maximum tree depth (a policy/server limit with a clear
// INVALID_ARGUMENT or FAILED_PRECONDITION naming it)": root is level 0, and
// a resource MaxDepth levels below it is the deepest there may be, however
// it would get there.
func TestTheTreeIsAtMostMaxDepthDeep(t *testing.T) {
	w := newWorld(t, streamPolicy())
	deepest := w.chain("", authz.MaxDepth)
	if d := w.refuses(authz.ResourceExhausted, "parent", deepest, func() (authz.Revision, error) {
		return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "folder:too-deep", Parent: deepest})
	}); d.Kind != authz.KindMaxDepth {
		t.Errorf("registering below level %d: kind %s, want %s", authz.MaxDepth, d.Kind, authz.KindMaxDepth)
	}
	// A subtree of two levels moved under level 31 would reach 33.
	w.put("folder:b1", "")
	w.put("folder:b2", "folder:b1")
	level31 := fmt.Sprintf("folder:a%d", authz.MaxDepth-1)
	if d := w.refuses(authz.ResourceExhausted, "parent", level31, func() (authz.Revision, error) {
		return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "folder:b1", Parent: level31})
	}); d.Kind != authz.KindMaxDepth {
		t.Errorf("moving two levels under level %d: kind %s, want %s", authz.MaxDepth-1, d.Kind, authz.KindMaxDepth)
	}
	// One level fits.
	w.put("folder:b2", "")
	w.put("folder:b1", level31)
	if _, err := w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "folder:b2", Parent: "folder:b1"}); authz.CodeOf(err) != authz.ResourceExhausted {
		t.Errorf("registering at level %d: %v, want the depth refused", authz.MaxDepth+1, err)
	}
}

// chainOf registers folder:PREFIX1 under root, folder:PREFIX2 under it,
// and so on to folder:PREFIXn.
func (w *world) chainOf(prefix string, n int) {
	w.t.Helper()
	parent := ""
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("folder:%s%d", prefix, i)
		w.put(name, parent)
		parent = name
	}
}

// A policy's resources are placed one after another, each in the tree as
// the entries before it left it, counting what they placed below it: no
// order of moves in one policy makes the tree deeper than MaxDepth, as no
// order of PutResource calls does.
func TestAPolicyKeepsTheTreeWithinMaxDepth(t *testing.T) {
	apply := func(w *world, moves ...[2]string) (authz.Revision, error) {
		p := streamPolicy()
		for _, m := range moves {
			p.Resources = append(p.Resources, authz.Resource{Name: m[0], Parent: m[1]})
		}
		rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
		return rev, err
	}
	depthOf := func(w *world, name string) int {
		r, _, err := w.idx.GetResource(name)
		if err != nil {
			t.Fatalf("GetResource(%s): %v", name, err)
		}
		return len(r.Ancestors)
	}

	// The policy's own resources come first.
	entry := func(i int) string { return fmt.Sprintf("policy.resources[%d].parent", len(streamPolicy().Resources)+i) }

	// Two chains of 16 end 32 deep, one under the other; a third below
	// them all would make 48.
	w := newWorld(t, streamPolicy())
	w.chainOf("a", 16)
	w.chainOf("b", 16)
	w.chainOf("l", 16)
	if d := w.refuses(authz.ResourceExhausted, entry(1), "folder:l16", func() (authz.Revision, error) {
		return apply(w, [2]string{"folder:b1", "folder:a16"}, [2]string{"folder:a1", "folder:l16"})
	}); d.Kind != authz.KindMaxDepth {
		t.Errorf("two chains of 16 moved under a third: kind %s, want %s", d.Kind, authz.KindMaxDepth)
	}
	rev, err := apply(w, [2]string{"folder:b1", "folder:a16"})
	w.ok("a chain of 16 moved under another", rev, err)
	if d := depthOf(w, "folder:b16"); d != authz.MaxDepth {
		t.Errorf("folder:b16 is %d deep, want %d", d, authz.MaxDepth)
	}

	// Resources side by side, each moved under the next, would make a
	// chain as long as the list: the entry that passes MaxDepth is refused.
	w = newWorld(t, streamPolicy())
	var moves [][2]string
	for i := range 100 {
		w.put(fmt.Sprintf("folder:n%d", i), "")
		if i > 0 {
			moves = append(moves, [2]string{fmt.Sprintf("folder:n%d", i-1), fmt.Sprintf("folder:n%d", i)})
		}
	}
	if d := w.refuses(authz.ResourceExhausted, entry(authz.MaxDepth-1), fmt.Sprintf("folder:n%d", authz.MaxDepth), func() (authz.Revision, error) {
		return apply(w, moves...)
	}); d.Kind != authz.KindMaxDepth {
		t.Errorf("a chain made of 100 resources side by side: kind %s, want %s", d.Kind, authz.KindMaxDepth)
	}
	rev, err = apply(w, moves[:authz.MaxDepth-1]...)
	w.ok(fmt.Sprintf("a chain of %d made of resources side by side", authz.MaxDepth), rev, err)
	if d := depthOf(w, "folder:n0"); d != authz.MaxDepth {
		t.Errorf("folder:n0 is %d deep, want %d", d, authz.MaxDepth)
	}

	// What an entry moves out of a subtree before the subtree moves is not
	// counted against it.
	w = newWorld(t, streamPolicy())
	w.chainOf("a", 16)
	w.chainOf("l", 20)
	rev, err = apply(w, [2]string{"folder:a9", ""}, [2]string{"folder:a1", "folder:l20"})
	w.ok("a chain of 8 moved under one of 20, after its lower half moved out", rev, err)
	if d := depthOf(w, "folder:a8"); d != 28 {
		t.Errorf("folder:a8 is %d deep, want 28", d)
	}
}

// race runs two writes whose plans overlap (each commit is held back, so
// both are planned before either commits) and returns their errors.
func race(w *world, a, b func() (authz.Revision, error)) (errA, errB error) {
	w.be.setDelay(100 * time.Millisecond)
	defer w.be.setDelay(0)
	var wg sync.WaitGroup
	wg.Go(func() { _, errA = a() })
	wg.Go(func() { _, errB = b() })
	wg.Wait()
	return errA, errB
}

// oneRefused requires that exactly one of two racing writes was refused,
// with kind.
func oneRefused(t *testing.T, what string, errA, errB error, kind authz.Kind) {
	t.Helper()
	refused := errA
	if errA == nil {
		refused = errB
	} else if errB != nil {
		t.Fatalf("%s: both refused: %v; %v", what, errA, errB)
	}
	var e *authz.Error
	if !errors.As(refused, &e) || e.Kind != kind {
		t.Fatalf("%s: errors %v; %v; want exactly one refused with %s", what, errA, errB, kind)
	}
}

// A move carries the resources registered below it while it commits: the
// quotas where the subtree lands count them, whichever commits first.
func TestAMoveCountsWhatIsRegisteredBelowItMeanwhile(t *testing.T) {
	for round := range 4 {
		w := newWorld(t, streamPolicy())
		w.put("folder:y", "")
		w.put("folder:a", "")
		w.put("folder:p", "folder:a")
		rev, err := w.eng.PutQuota(w.ctx, w.by, authz.Quota{Scope: "folder:y", ResourceType: "folder", Limit: 2})
		w.ok("PutQuota", rev, err)
		move := func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "folder:a", Parent: "folder:y"})
		}
		register := func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "folder:c", Parent: "folder:p"})
		}
		if round%2 == 1 {
			move, register = register, move
		}
		errA, errB := race(w, move, register)
		oneRefused(t, fmt.Sprintf("round %d: moving a 2-folder subtree under a quota of 2 while a folder is registered in it", round), errA, errB, authz.KindQuotaExceeded)
		uses, _, err := w.idx.ListQuotas("folder:y")
		if err != nil || len(uses) != 1 || uses[0].Used > 2 {
			t.Errorf("round %d: quotas at folder:y = %+v, %v; want 2 used of 2 at most", round, uses, err)
		}
	}
}

// The same for the depth limit: a resource registered at the bottom of a
// subtree being moved deeper is judged where it lands.
func TestAMoveCountsWhatIsRegisteredBelowItForTheDepth(t *testing.T) {
	for round := range 4 {
		w := newWorld(t, streamPolicy())
		w.put("folder:y", "")
		bottom := w.chain("", authz.MaxDepth-1) // moved under folder:y, it reaches MaxDepth
		move := func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "folder:a1", Parent: "folder:y"})
		}
		register := func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "folder:c", Parent: bottom})
		}
		if round%2 == 1 {
			move, register = register, move
		}
		errA, errB := race(w, move, register)
		oneRefused(t, fmt.Sprintf("round %d: moving a %d-level chain one level down while a resource is registered at its bottom", round, authz.MaxDepth-1), errA, errB, authz.KindMaxDepth)
		if c, _, err := w.idx.GetResource("folder:c"); err == nil && len(c.Ancestors) > authz.MaxDepth {
			t.Errorf("round %d: folder:c is %d levels deep", round, len(c.Ancestors))
		}
	}
}

// A grant resolves its role along the resource's path: a move that takes
// the resource away from the role's definition meanwhile leaves no grant
// without one.
func TestAMoveAndAGrantBelowItLeaveNoOrphan(t *testing.T) {
	for round := range 4 {
		w := newWorld(t, streamPolicy())
		w.put("folder:y", "")
		w.put("folder:a", "")
		w.put("folder:p", "folder:a")
		w.put("folder:q", "folder:p")
		w.role(authz.Role{Name: "reader", Scope: "folder:a", Permissions: []string{"read-call"}})
		move := func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "folder:p", Parent: "folder:y"})
		}
		grant := func() (authz.Revision, error) {
			return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:x", Role: "reader", Resource: "folder:q"})
		}
		if round%2 == 1 {
			move, grant = grant, move
		}
		errA, errB := race(w, move, grant)
		if errA == nil && errB == nil {
			t.Fatalf("round %d: the move and the grant of a role defined only above the old place both committed", round)
		}
		if errA != nil && errB != nil {
			t.Fatalf("round %d: both refused: %v; %v", round, errA, errB)
		}
		if d := w.check("user:x", "read-call", "folder:q"); d.Allowed {
			if p, _, _ := w.idx.GetResource("folder:p"); p.Parent == "folder:y" {
				t.Errorf("round %d: user:x reads folder:q under folder:y, where reader is not defined: %+v", round, d)
			}
		}
	}
}

// A pruning policy and a grant of a role it deletes, planned at once: one
// of them is refused, whichever commits first, and no grant is left with
// no definition of its role.
func TestAPruneAndAGrantOfTheRoleItDeletesLeaveNoOrphan(t *testing.T) {
	for round := range 4 {
		w := newWorld(t, streamPolicy())
		w.role(authz.Role{Name: "stage-manager", Scope: "root", Permissions: []string{"start-broadcast-call"}})
		prune := func() (authz.Revision, error) {
			rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, streamPolicy(), authz.ApplyOptions{Prune: true})
			return rev, err
		}
		grant := func() (authz.Revision, error) {
			return w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: "user:ann", Role: "stage-manager", Resource: "call:livestream:42"})
		}
		if round%2 == 1 {
			prune, grant = grant, prune
		}
		errA, errB := race(w, prune, grant)
		if (errA == nil) == (errB == nil) {
			t.Fatalf("round %d: the prune and the grant: %v; %v; want exactly one refused", round, errA, errB)
		}
		s := load(w)
		defined := slices.ContainsFunc(s.Roles, func(r authz.Role) bool { return r.Name == "stage-manager" })
		for _, g := range s.Grants {
			if g.Role == "stage-manager" && !defined {
				t.Errorf("round %d: %+v is left with no definition of its role", round, g)
			}
		}
	}
}

// A policy that drops a permission and a block naming it, planned at once:
// one of them is refused, and no block names a permission the catalog no
// longer declares.
func TestAPolicyDroppingAPermissionAndABlockNamingItLeaveNoUndeclaredName(t *testing.T) {
	for round := range 4 {
		w := newWorld(t, streamPolicy())
		dropped := streamPolicy()
		dropped.Permissions = slices.DeleteFunc(dropped.Permissions, func(p authz.Permission) bool { return p.Name == "pin-for-everyone" })
		for i := range dropped.Roles {
			dropped.Roles[i].Permissions = slices.DeleteFunc(slices.Clone(dropped.Roles[i].Permissions), func(p string) bool { return p == "pin-for-everyone" })
		}
		apply := func() (authz.Revision, error) {
			rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, dropped, authz.ApplyOptions{})
			return rev, err
		}
		block := func() (authz.Revision, error) {
			rev, _, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: "user:ann", Resource: "account:acme", Permissions: []string{"pin-for-everyone"}})
			return rev, err
		}
		if round%2 == 1 {
			apply, block = block, apply
		}
		errA, errB := race(w, apply, block)
		if (errA == nil) == (errB == nil) {
			t.Fatalf("round %d: the policy and the block: %v; %v; want exactly one refused", round, errA, errB)
		}
		s := load(w)
		for _, b := range s.Blocks {
			for _, p := range b.Permissions {
				if !slices.ContainsFunc(s.Permissions, func(d authz.Permission) bool { return d.Name == p }) {
					t.Errorf("round %d: the block of %s on %s names %q, which the catalog no longer declares", round, b.Subject, b.Resource, p)
				}
			}
		}
	}
}

// A resource deleted while a role or an admission rule is defined on it:
// whichever commits first, the definition goes with the resource or is
// refused for want of it, and what the store holds loads again (no
// definition is left on a resource that is gone).
func TestADeleteAndADefinitionOnTheResourceLeaveNoneBehind(t *testing.T) {
	define := map[string]func(w *world) (authz.Revision, error){
		"a role": func(w *world) (authz.Revision, error) {
			return w.eng.PutRole(w.ctx, w.by, authz.Role{Name: "custom", Scope: "folder:x", Permissions: []string{"join-call"}})
		},
		"an admission rule": func(w *world) (authz.Revision, error) {
			return w.eng.PutAdmission(w.ctx, w.by, authz.Admission{Scope: "folder:x", ResourceType: "call", Join: "join-call"})
		},
	}
	for what, put := range define {
		for round := range 4 {
			w := newWorld(t, streamPolicy())
			w.put("folder:x", "")
			del := func() (authz.Revision, error) { return w.eng.DeleteResource(w.ctx, w.by, "folder:x") }
			def := func() (authz.Revision, error) { return put(w) }
			if round%2 == 1 {
				del, def = def, del
			}
			errA, errB := race(w, del, def)
			again, err := authz.Start(w.ctx, w.be.Memory.Reopen(), authz.Options{Clock: w.clock})
			if err != nil {
				t.Fatalf("%s, round %d: the delete and the definition: %v; %v; the stored state does not load again: %v", what, round, errA, errB, err)
			}
			again.Close()
		}
	}
}
