package authz_test

import (
	"context"
	"errors"
	"iter"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage/memory"
)

// lagging is the world's store as a second replica sees it: its feed holds
// the replica's index back until the replica's first commit returns, so
// that the replica plans its first write on the world as it was while the
// world's own engine commits meanwhile, as a replica whose feed lags does.
type lagging struct {
	*memory.Memory
	once sync.Once
	held chan struct{}
}

func (l *lagging) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		select {
		case <-l.held:
		case <-ctx.Done():
			return
		}
		for cs, err := range l.Memory.Watch(ctx, after) {
			if !yield(cs, err) {
				return
			}
		}
	}
}

func (l *lagging) Commit(ctx context.Context, ws []authz.Write) ([]authz.Committed, error) {
	res, err := l.Memory.Commit(ctx, ws)
	l.once.Do(func() { close(l.held) })
	return res, err
}

// behind starts a second replica over the world's store, at the world's
// revision. Its index stays there until its first commit: the writes the
// world's engine makes after this call are what that first write's plan
// does not see, and what its guards must catch.
func (w *world) behind() *authz.Engine {
	w.t.Helper()
	eng, err := authz.Start(w.ctx, &lagging{Memory: w.be.Memory, held: make(chan struct{})}, authz.Options{Clock: w.clock})
	if err != nil {
		w.t.Fatalf("Start: %v", err)
	}
	w.t.Cleanup(eng.Close)
	return eng
}

// refusedBehind requires that a write made on a replica behind was refused
// with code and kind and wrote nothing: the store's revision and the
// world's index stayed where they were.
func (w *world) refusedBehind(what string, code authz.Code, kind authz.Kind, write func() (authz.Revision, error)) {
	w.t.Helper()
	sets, rev := w.be.count(), w.idx.Revision()
	_, err := write()
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != code || e.Kind != kind {
		w.t.Fatalf("%s: %v; want code %d with kind %s", what, err, code, kind)
	}
	w.unchanged(sets, rev)
}

// A move planned before a role was defined above the resource it moves,
// and a grant of that role below it, are committed meanwhile: the move,
// planned again, would leave the grant with no definition of its role.
func TestAMovePlannedBeforeARoleAndItsGrantAboveIsRefused(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.put("folder:a", "")
	w.put("folder:p", "folder:a")
	w.put("folder:q", "folder:p")
	w.put("folder:y", "")
	stale := w.behind()
	w.role(authz.Role{Name: "reader", Scope: "folder:a", Permissions: []string{"read-call"}})
	w.grant("user:x", "reader", "folder:q")
	w.refusedBehind("moving folder:p away from the only definition of reader, which user:x holds below it",
		authz.FailedPrecondition, authz.KindRoleInUse, func() (authz.Revision, error) {
			return stale.PutResource(w.ctx, w.by, authz.Resource{Name: "folder:p", Parent: "folder:y"})
		})
	if p, _, _ := w.idx.GetResource("folder:p"); p.Parent != "folder:a" {
		t.Errorf("folder:p is under %q, want folder:a", p.Parent)
	}
	if d := w.check("user:x", "read-call", "folder:q"); !d.Allowed {
		t.Errorf("user:x no longer reads folder:q: %+v", d)
	}
}

// A role deletion planned while a definition above still covered its
// holders, and a move that takes them away from that definition, committed
// meanwhile: the deletion, planned again, takes the grants it now orphans
// with it, and no grant is left with no definition of its role.
func TestARoleDeletionPlannedBeforeAMoveTakesTheGrantsItOrphans(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.put("folder:a", "")
	w.put("folder:m", "folder:a")
	w.put("folder:s", "folder:m")
	w.put("folder:y", "")
	w.role(authz.Role{Name: "reader", Scope: "folder:a", Permissions: []string{"read-call"}})
	w.role(authz.Role{Name: "reader", Scope: "folder:s", Permissions: []string{"read-call"}})
	w.grant("user:x", "reader", "folder:s")
	stale := w.behind()
	w.put("folder:m", "folder:y")
	rev, err := stale.DeleteRole(w.ctx, w.by, "folder:s", "reader")
	w.ok("DeleteRole reader at folder:s", rev, err)
	// The deletion went through the replica behind: the world's index
	// applies it from its own feed.
	if err := w.eng.Await(w.ctx, rev); err != nil {
		t.Fatalf("the world's index never reached revision %d: %v", rev, err)
	}
	grants, _, _, err := w.idx.ListGrants(authz.GrantFilter{Subject: "user:x"}, 0, "")
	if err != nil {
		t.Fatalf("ListGrants: %v", err)
	}
	if len(grants) != 0 {
		t.Errorf("user:x still holds %+v, and reader is defined nowhere above folder:s", grants)
	}
	// Moved back under the definition that is left, the resource gives
	// user:x nothing: the deletion took its grant.
	w.put("folder:m", "folder:a")
	if d := w.check("user:x", "read-call", "folder:s"); d.Allowed {
		t.Errorf("user:x reads folder:s again once it is moved back: %+v", d)
	}
}

// A policy that moves a resource away from the only definition of a role,
// planned before a grant of that role below it was committed: the policy,
// planned again, would leave the grant with no definition of its role.
func TestAPolicyMovePlannedBeforeAGrantBelowIsRefused(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.put("folder:a", "")
	w.put("folder:p", "folder:a")
	w.put("folder:q", "folder:p")
	w.put("folder:y", "")
	w.role(authz.Role{Name: "reader", Scope: "folder:a", Permissions: []string{"read-call"}})
	stale := w.behind()
	w.grant("user:x", "reader", "folder:q")
	moved := streamPolicy()
	moved.Resources = append(moved.Resources, authz.Resource{Name: "folder:p", Parent: "folder:y"})
	moved.Roles = append(moved.Roles, authz.Role{Name: "reader", Scope: "folder:a", Permissions: []string{"read-call"}})
	w.refusedBehind("a policy moving folder:p away from the only definition of reader, which user:x holds below it",
		authz.FailedPrecondition, authz.KindRoleInUse, func() (authz.Revision, error) {
			rev, _, err := stale.ApplyPolicy(w.ctx, w.by, moved, authz.ApplyOptions{})
			return rev, err
		})
	if p, _, _ := w.idx.GetResource("folder:p"); p.Parent != "folder:a" {
		t.Errorf("folder:p is under %q, want folder:a", p.Parent)
	}
}

// A policy that registers a resource, planned before a quota was set at
// root and a resource registered against it: the policy, planned again,
// counts that resource and is refused, and the quota holds.
func TestAPolicyPlannedBeforeAQuotaAtRootIsHeldToIt(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.put("folder:f", "")
	w.put("folder:g", "")
	stale := w.behind()
	rev, err := w.eng.PutQuota(w.ctx, w.by, authz.Quota{Scope: "root", ResourceType: "room", Limit: 1})
	w.ok("PutQuota", rev, err)
	w.put("room:r1", "folder:g")
	more := streamPolicy()
	more.Resources = append(more.Resources, authz.Resource{Name: "room:p", Parent: "folder:f"})
	w.refusedBehind("a policy registering a second room under a quota of one at root",
		authz.ResourceExhausted, authz.KindQuotaExceeded, func() (authz.Revision, error) {
			rev, _, err := stale.ApplyPolicy(w.ctx, w.by, more, authz.ApplyOptions{})
			return rev, err
		})
	uses, _, err := w.idx.ListQuotas("root")
	if err != nil || len(uses) != 1 || uses[0].Used != 1 {
		t.Errorf("quotas at root = %+v, %v; want 1 room used of 1", uses, err)
	}
}

// A policy that sets a quota and places a resource below it, planned
// before another resource was registered below that scope: the policy,
// planned again, counts that resource and is refused, whether it moves
// the resource there or registers it, at root as below it.
func TestAPolicyQuotaCountsWhatIsRegisteredMeanwhile(t *testing.T) {
	for _, scope := range []string{"root", "folder:s"} {
		w := newWorld(t, streamPolicy())
		w.put("folder:s", "")
		w.put("folder:c", "folder:s")
		w.put("folder:d", "folder:s")
		w.put("folder:g", "")
		// The rooms counted are registered where the policy places
		// nothing: below the scope, or beside folder:s at root.
		rooms := "folder:d"
		if scope == "root" {
			rooms = "folder:g"
		} else {
			w.put("room:p", "") // the policy moves it below the scope
		}
		w.put("room:r1", rooms)
		stale := w.behind()
		w.put("room:r2", rooms)
		limited := streamPolicy()
		limited.Resources = append(limited.Resources,
			authz.Resource{Name: "folder:s"}, authz.Resource{Name: "folder:c", Parent: "folder:s"},
			authz.Resource{Name: "room:p", Parent: "folder:c"})
		limited.Quotas = append(limited.Quotas, authz.Quota{Scope: scope, ResourceType: "room", Limit: 2})
		w.refusedBehind("a policy setting a quota of 2 rooms at "+scope+" and placing a third room below it",
			authz.ResourceExhausted, authz.KindQuotaExceeded, func() (authz.Revision, error) {
				rev, _, err := stale.ApplyPolicy(w.ctx, w.by, limited, authz.ApplyOptions{})
				return rev, err
			})
		if uses, _, err := w.idx.ListQuotas("folder:s"); err != nil || len(uses) != 0 {
			t.Errorf("%s: quotas at or above folder:s = %+v, %v; want none", scope, uses, err)
		}
	}
}

// A policy that defines a role or an admission rule on a resource, planned
// before the resource was deleted: the policy, planned again, is refused
// for want of the resource, and what the store holds loads again.
func TestAPolicyPlannedBeforeItsScopeIsDeletedIsRefused(t *testing.T) {
	for _, what := range []string{"a role", "an admission rule"} {
		w := newWorld(t, streamPolicy())
		w.put("folder:x", "")
		p := streamPolicy()
		if what == "a role" {
			p.Roles = append(p.Roles, authz.Role{Name: "custom", Scope: "folder:x", Permissions: []string{"join-call"}})
		} else {
			p.Admissions = append(p.Admissions, authz.Admission{Scope: "folder:x", ResourceType: "call", Join: "join-call"})
		}
		stale := w.behind()
		rev, err := w.eng.DeleteResource(w.ctx, w.by, "folder:x")
		w.ok("DeleteResource folder:x", rev, err)
		w.refusedBehind("a policy defining "+what+" on folder:x, deleted meanwhile",
			authz.NotFound, authz.KindResourceNotFound, func() (authz.Revision, error) {
				// Committed, the policy would break every index that
				// applies it: the write would wait for it for good.
				ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
				defer cancel()
				rev, _, err := stale.ApplyPolicy(ctx, w.by, p, authz.ApplyOptions{})
				return rev, err
			})
		again, err := authz.Start(w.ctx, w.be.Memory.Reopen(), authz.Options{Clock: w.clock})
		if err != nil {
			t.Fatalf("%s: the stored state does not load again: %v", what, err)
		}
		again.Close()
	}
}

// A role definition planned before a grant of the role was committed, on
// a replica behind: planned again, the definition would apply to that
// grant, on a resource of a type its bindable_on leaves out, and is
// refused. Two holders granted meanwhile pass a max_holders of one alike.
func TestARoleDefinitionPlannedBeforeAGrantOfItIsHeldToIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		role authz.Role
		kind authz.Kind
	}{
		{"bindable_on", authz.Role{Name: "presenter", Scope: "calltype:livestream", Permissions: []string{"send-video"}, BindableOn: []string{"event"}}, authz.KindNotBindable},
		{"max_holders", authz.Role{Name: "presenter", Scope: "calltype:livestream", Permissions: []string{"send-video"}, MaxHolders: 1}, authz.KindMaxHolders},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, streamPolicy())
			w.role(authz.Role{Name: "presenter", Scope: "account:acme", Permissions: []string{"send-video"}})
			stale := w.behind()
			w.grant("user:ann", "presenter", "call:livestream:42")
			w.grant("user:bob", "presenter", "call:livestream:42")
			w.refusedBehind("defining presenter on calltype:livestream, whose grants on call:livestream:42 came meanwhile",
				authz.FailedPrecondition, tc.kind, func() (authz.Revision, error) { return stale.PutRole(w.ctx, w.by, tc.role) })
		})
	}
}
