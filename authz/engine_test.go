package authz_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage/memory"
)

// writes is one of every engine write, each valid against streamPolicy's
// world, so that only the author or the backend can make it fail.
func writes(w *world, by authz.Author) []struct {
	name  string
	write func() (authz.Revision, error)
} {
	ctx := w.ctx
	policy := streamPolicy()
	policy.Resources = append(policy.Resources, authz.Resource{Name: "call:default:2", Parent: "calltype:default"})
	return []struct {
		name  string
		write func() (authz.Revision, error)
	}{
		{"Grant", func() (authz.Revision, error) {
			return w.eng.Grant(ctx, by, authz.Grant{Subject: "user:zoe", Role: "moderator", Resource: "call:livestream:42"})
		}},
		{"Revoke", func() (authz.Revision, error) {
			return w.eng.Revoke(ctx, by, authz.Grant{Subject: "user:alice", Role: "call-member", Resource: "call:livestream:42"})
		}},
		{"PutResource", func() (authz.Revision, error) {
			return w.eng.PutResource(ctx, by, authz.Resource{Name: "call:livestream:44", Parent: "calltype:livestream"})
		}},
		{"DeleteResource", func() (authz.Revision, error) { return w.eng.DeleteResource(ctx, by, "call:livestream:42") }},
		{"PutRole", func() (authz.Revision, error) {
			return w.eng.PutRole(ctx, by, authz.Role{Name: "stage-manager", Scope: "account:acme", Permissions: []string{"end-call"}})
		}},
		{"DeleteRole", func() (authz.Revision, error) { return w.eng.DeleteRole(ctx, by, "root", "user") }},
		{"Block", func() (authz.Revision, error) {
			return noID(w.eng.Block(ctx, by, authz.Block{Subject: "user:alice", Resource: "account:acme"}))
		}},
		{"Unblock", func() (authz.Revision, error) { return w.eng.Unblock(ctx, by, "user:bob", "account:acme", "") }},
		{"ApplyPolicy", func() (authz.Revision, error) {
			rev, _, err := w.eng.ApplyPolicy(ctx, by, policy, authz.ApplyOptions{})
			return rev, err
		}},
	}
}

// writableWorld is streamPolicy's world with a grant and a block for Revoke
// and Unblock to remove.
func writableWorld(t *testing.T) *world {
	w := newWorld(t, streamPolicy())
	w.grant("user:alice", "call-member", "call:livestream:42")
	w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Reason: "banned"})
	return w
}

func TestWriteWithActor(t *testing.T) {
	for _, wr := range writes(writableWorld(t), authz.Author{}) {
		t.Run("With an actor, the actor's own permissions decide: one with no grants may write nothing: "+wr.name, func(t *testing.T) {
			w := writableWorld(t)
			want := authz.PermissionDenied
			for _, x := range writes(w, authz.Author{Caller: "svc:console", Actor: "user:nobody"}) {
				if x.name == wr.name {
					w.refuses(want, "actor", "user:nobody", x.write)
				}
			}
			// The same write on the caller's own authority goes through.
			for _, x := range writes(w, w.by) {
				if x.name == wr.name {
					if _, err := x.write(); err != nil {
						t.Errorf("%s without an actor: %v", x.name, err)
					}
				}
			}
		})
	}
}

func TestWriteBackendFailure(t *testing.T) {
	diskFull := errors.New("disk full")
	for _, wr := range writes(writableWorld(t), authz.Author{}) {
		t.Run("a backend commit failure yields UNAVAILABLE and leaves the index unchanged: "+wr.name, func(t *testing.T) {
			w := writableWorld(t)
			var x func() (authz.Revision, error)
			for _, c := range writes(w, w.by) {
				if c.name == wr.name {
					x = c.write
				}
			}
			before := state(t, w)
			sets, rev := w.be.count(), w.idx.Revision()
			w.be.failNextCommit(diskFull)
			_, err := x()
			if authz.CodeOf(err) != authz.Unavailable || !errors.Is(err, diskFull) {
				t.Errorf("%s with a failing backend = %v, want UNAVAILABLE wrapping the cause", wr.name, err)
			}
			w.unchanged(sets, rev)
			if after := state(t, w); !reflect.DeepEqual(before, after) {
				t.Errorf("A failed write changes nothing, but the index changed:\nbefore %+v\nafter  %+v", before, after)
			}
			// Retried, it commits.
			got, err := x()
			if err != nil || got != rev+1 {
				t.Errorf("%s retried = revision %d, %v; want %d", wr.name, got, err, rev+1)
			}
		})
	}

	t.Run("a write whose context is cancelled commits nothing and says so", func(t *testing.T) {
		w := writableWorld(t)
		ctx, cancel := context.WithCancel(w.ctx)
		cancel()
		sets, rev := w.be.count(), w.idx.Revision()
		_, err := w.eng.Grant(ctx, w.by, authz.Grant{Subject: "user:zoe", Role: "moderator", Resource: "call:livestream:42"})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Grant with a cancelled context = %v, want context.Canceled", err)
		}
		w.unchanged(sets, rev)
	})
}

// hangingBackend is a backend whose commits never finish: an etcd cluster
// that lost its quorum holds a transaction until its context ends.
type hangingBackend struct{ *memory.Memory }

func (hangingBackend) Commit(ctx context.Context, _ []authz.Write) ([]authz.Committed, error) {
	<-ctx.Done()
	return nil, fmt.Errorf("storage: commit: %w", ctx.Err())
}

// A commit that outlasts CommitTimeout is the backend failing, not the
// caller's deadline passing: the caller, whose deadline is far off, sees
// UNAVAILABLE once the timeout ends the commit.
func TestCommitTimeoutIsUnavailable(t *testing.T) {
	const timeout = 50 * time.Millisecond
	eng, err := authz.Start(t.Context(), hangingBackend{memory.New()}, authz.Options{CommitTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	began := time.Now()
	_, err = eng.PutResource(ctx, authz.Author{Caller: "test"}, authz.Resource{Name: "account:acme"})
	if authz.CodeOf(err) != authz.Unavailable || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a write whose commit outlasts CommitTimeout = %v, want UNAVAILABLE wrapping the commit's deadline", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("the write failed after %v, with a commit timeout of %v", took, timeout)
	}

	// The caller's own deadline is still reported as the caller's.
	ctx, cancel = context.WithTimeout(t.Context(), timeout/5)
	defer cancel()
	_, err = eng.PutResource(ctx, authz.Author{Caller: "test"}, authz.Resource{Name: "account:acme"})
	if !errors.Is(err, context.DeadlineExceeded) || authz.CodeOf(err) != 0 {
		t.Errorf("a write whose caller's deadline passes first = %v, want context.DeadlineExceeded", err)
	}
}

// gatedBackend holds the engine's feed back until open is closed, so that
// the log can be compacted past the index before the feed reads it.
type gatedBackend struct {
	*memory.Memory
	open chan struct{}
}

func (b gatedBackend) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		select {
		case <-b.open:
		case <-ctx.Done():
			return
		}
		for cs, err := range b.Memory.Watch(ctx, after) {
			if !yield(cs, err) {
				return
			}
		}
	}
}

// flakyBackend's watch fails at once the first eight times it is followed,
// brings one change set and fails again the ninth, then follows for good:
// a long outage, a moment of health, a brief loss.
type flakyBackend struct {
	*memory.Memory
	follows *atomic.Int32
	steady  chan struct{} // closed when the watch follows for good
}

func (b flakyBackend) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	n := b.follows.Add(1)
	return func(yield func(authz.ChangeSet, error) bool) {
		switch {
		case n <= 8:
			yield(authz.ChangeSet{}, errors.New("out of reach"))
		case n == 9:
			for cs, err := range b.Memory.Watch(ctx, after) {
				if err == nil && yield(cs, nil) {
					yield(authz.ChangeSet{}, errors.New("out of reach a moment"))
				}
				return
			}
		default:
			close(b.steady)
			for cs, err := range b.Memory.Watch(ctx, after) {
				if !yield(cs, err) {
					return
				}
			}
		}
	}
}

// feedPauses records the pauses the engine logs before following a lost
// feed again.
type feedPauses struct {
	mu  sync.Mutex
	got []time.Duration
}

func (p *feedPauses) Enabled(context.Context, slog.Level) bool { return true }
func (p *feedPauses) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p *feedPauses) WithGroup(string) slog.Handler            { return p }
func (p *feedPauses) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "pause" {
			p.mu.Lock()
			p.got = append(p.got, a.Value.Duration())
			p.mu.Unlock()
		}
		return true
	})
	return nil
}

// A feed lost for long pauses longer and longer before it is followed
// again; once it has been followed, a brief loss later is another, and
// the pause before following it again is the first again, not the longest
// the outage reached, which would leave the index that much behind.
func TestAFeedLostAgainAfterAnOutagePausesAsAtFirst(t *testing.T) {
	// Longer than a follow that fails at once may take: one that goes on
	// for the longest pause has been followed.
	authz.SetFeedPauses(t, time.Millisecond, 100*time.Millisecond)
	ctx := t.Context()
	be := flakyBackend{memory.New(), new(atomic.Int32), make(chan struct{})}
	logged := &feedPauses{}
	eng, err := authz.Start(ctx, be, authz.Options{Logger: slog.New(logged)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	// The change set the ninth follow brings.
	rev, err := eng.PutResource(ctx, authz.Author{Caller: "test"}, authz.Resource{Name: "account:acme"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-be.steady:
	case <-time.After(10 * time.Second):
		t.Fatalf("the feed was followed %d times, and never for good", be.follows.Load())
	}
	if got := eng.Index().Revision(); got < rev {
		t.Fatalf("the index is at %d, want the write's %d applied", got, rev)
	}
	logged.mu.Lock()
	defer logged.mu.Unlock()
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 100, 1}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(logged.got, want) {
		t.Errorf("the feed paused %v before following again, want %v: after the outage, the brief loss pauses as the first did", logged.got, want)
	}
}

// A read waiting for a revision while the index is rebuilt from a snapshot,
// because the log was compacted past it, is answered by the fresh index as
// soon as it has the revision, not at the end of the wait.
func TestAwaitAcrossAResync(t *testing.T) {
	ctx := t.Context()
	be := gatedBackend{memory.New(), make(chan struct{})}
	eng, err := authz.Start(ctx, be, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	// Written by another replica, and compacted, while this one's feed
	// was held back.
	var last authz.Revision
	for _, name := range []string{"account:a", "account:b", "account:c"} {
		res, err := be.Commit(ctx, []authz.Write{{Set: authz.ChangeSet{Changes: []authz.Change{
			{Op: authz.OpPutResource, Resource: &authz.Resource{Name: name, Parent: authz.RootName}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		last = res[0].Revision
	}
	if err := be.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	awaited := make(chan error, 1)
	began := time.Now()
	go func() { awaited <- eng.Await(ctx, last) }()
	time.Sleep(50 * time.Millisecond) // the read waits on the old index
	close(be.open)
	if err := <-awaited; err != nil {
		t.Fatalf("Await(%d) across a resync: %v", last, err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("Await(%d) returned %v after the resync began", last, took.Round(time.Millisecond))
	}
	if eng.Resyncs() != 1 {
		t.Errorf("%d resyncs, want 1", eng.Resyncs())
	}
}

// state is what the index answers about streamPolicy's world.
func state(t *testing.T, w *world) any {
	t.Helper()
	p, rev := exportAll(w)
	var grants []authz.Grant
	var perms [][]string
	for _, r := range append([]string{"root"}, resourceNames(p)...) {
		gs, _, _, err := w.idx.ListGrants(authz.GrantFilter{Resource: r}, authz.MaxPageSize, "")
		if err != nil {
			t.Fatal(err)
		}
		grants = append(grants, gs...)
		for _, s := range []string{"user:alice", "user:bob", "user:zoe"} {
			perms = append(perms, w.permissions(s, r))
		}
	}
	return struct {
		Policy      authz.Policy
		Revision    authz.Revision
		Grants      []authz.Grant
		Permissions [][]string
	}{p, rev, grants, perms}
}

func resourceNames(p authz.Policy) []string {
	var out []string
	for _, r := range p.Resources {
		out = append(out, r.Name)
	}
	return out
}

func TestWriteRevisions(t *testing.T) {
	w := newWorld(t, streamPolicy())
	start := time.Now().Add(-time.Second)
	w.grant("user:alice", "call-member", "call:livestream:42")
	rev, err := w.eng.PutResource(w.ctx, authz.Author{Caller: "svc:console"}, authz.Resource{Name: "call:livestream:44", Parent: "calltype:livestream"})
	if err != nil {
		t.Fatal(err)
	}
	if rev != 3 || w.idx.Revision() != 3 {
		t.Errorf("Writes return the new revision: got %d, index at %d, want 3", rev, w.idx.Revision())
	}
	sets := w.be.committed()
	for i, cs := range sets {
		if cs.Revision != authz.Revision(i+1) {
			t.Errorf("change set %d has revision %d", i, cs.Revision)
		}
	}
	last := sets[len(sets)-1]
	if last.Caller != "svc:console" || last.Actor != "" || last.Time.Before(start) || last.Time.Location() != time.UTC {
		t.Errorf("the change record names caller %q, actor %q, time %v", last.Caller, last.Actor, last.Time)
	}
}

func TestAwait(t *testing.T) {
	w := newWorld(t, streamPolicy())
	t.Run("Reads accept a minimum revision: one already reached returns at once", func(t *testing.T) {
		for _, min := range []authz.Revision{0, 1} {
			if err := w.eng.Await(w.ctx, min); err != nil {
				t.Errorf("Await(%d) at revision 1: %v", min, err)
			}
		}
	})
	t.Run("Reads accept a minimum revision: one not reached in time is FAILED_PRECONDITION", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(w.ctx, 20*time.Millisecond)
		defer cancel()
		err := w.eng.Await(ctx, 5)
		wantError(t, err, authz.FailedPrecondition, "min_revision", "5")
	})
	t.Run("Reads accept a minimum revision: a waiting read returns once a write reaches it", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { done <- w.eng.Await(w.ctx, 2) }()
		time.Sleep(10 * time.Millisecond)
		w.grant("user:alice", "call-member", "call:livestream:42")
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Await(2) after revision 2 was written: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Await(2) did not return after revision 2 was written")
		}
	})
}

// TestIndexFeed proves "the index is fed by a stream of committed changes":
// replaying a backend's change sets into a fresh index rebuilds the same
// answers, and replays of what it has applied are ignored.
func TestIndexFeed(t *testing.T) {
	w := writableWorld(t)
	w.role(streamAdminOverride)
	w.grant("user:carol", "admin", "account:acme")
	w.put("call:livestream:42", "calltype:default")
	w.block(authz.Block{Subject: "user:carol", Resource: "calltype:default", Permissions: []string{"end-call"}})

	replica, err := authz.NewIndex(authz.Snapshot{})
	if err != nil {
		t.Fatal(err)
	}
	sets := w.be.committed()
	for _, cs := range sets {
		if err := replica.Apply(cs); err != nil {
			t.Fatal(err)
		}
	}
	if err := replica.Apply(sets[:3]...); err != nil { // a feed may replay
		t.Fatal(err)
	}
	if replica.Revision() != w.idx.Revision() {
		t.Fatalf("replica at revision %d, want %d", replica.Revision(), w.idx.Revision())
	}
	a, _ := exportAll(w)
	b, _ := exportAll(&world{t: t, idx: replica})
	if !reflect.DeepEqual(a, b) {
		t.Errorf("replica's policy differs:\n got %+v\nwant %+v", b, a)
	}
	for _, s := range []string{"user:alice", "user:bob", "user:carol"} {
		for _, r := range append([]string{"root"}, resourceNames(a)...) {
			for _, p := range streamCapabilities {
				q := authz.Query{Subject: s, Permission: p, Resource: r}
				d1, _, _ := w.idx.Check(q)
				d2, _, _ := replica.Check(q)
				if d1 != d2 {
					t.Errorf("Check(%+v): %+v in the index, %+v in the replica", q, d1, d2)
				}
			}
		}
	}
}

// TestIndexFeedDeletesWhatIsOnAResource holds Apply to what deleteResource
// promises a feed that deletes a resource without first deleting what is on
// it: the blocks go with it, several of one subject included, and a name
// registered again carries none of them.
func TestIndexFeedDeletesWhatIsOnAResource(t *testing.T) {
	x, err := authz.NewIndex(authz.Snapshot{Revision: 1, Permissions: []authz.Permission{{Name: "join"}}})
	if err != nil {
		t.Fatal(err)
	}
	put := authz.ChangeSet{Revision: 2, Changes: []authz.Change{
		{Op: authz.OpPutResource, Resource: &authz.Resource{Name: "call:1", Parent: authz.RootName}},
		{Op: authz.OpPutRole, Role: &authz.Role{Name: "guest", Scope: authz.RootName, Permissions: []string{"join"}}},
		{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:a", Role: "guest", Resource: authz.RootName}},
	}}
	for _, id := range []string{"b1", "b2", "b3"} {
		put.Changes = append(put.Changes, authz.Change{Op: authz.OpPutBlock, Block: &authz.Block{Subject: "user:a", Resource: "call:1", ID: id}})
	}
	if err := x.Apply(put); err != nil {
		t.Fatal(err)
	}
	if err := x.Apply(authz.ChangeSet{Revision: 3, Changes: []authz.Change{
		{Op: authz.OpDeleteResource, Resource: &authz.Resource{Name: "call:1"}},
		{Op: authz.OpPutResource, Resource: &authz.Resource{Name: "call:1", Parent: authz.RootName}},
	}}); err != nil {
		t.Fatalf("Apply(a delete of call:1 and its registering again): %v", err)
	}
	if _, _, blocks := x.Counts(); blocks != 0 {
		t.Errorf("the index holds %d blocks, want none: they went with call:1", blocks)
	}
	d, _, err := x.Check(authz.Query{Subject: "user:a", Permission: "join", Resource: "call:1"})
	if err != nil || d.Reason != authz.ReasonGranted {
		t.Errorf("Check(user:a, join, call:1) = %+v, %v; want GRANTED by the grant on root", d, err)
	}
}

func TestNewIndex(t *testing.T) {
	snap := authz.Snapshot{
		Revision:    7,
		Permissions: []authz.Permission{{Name: "join-call"}, {Name: "send-audio", Parents: []string{"join-call"}}},
		// A child before its parent: a backend may load them in any order.
		Resources: []authz.Resource{{Name: "call:default:1", Parent: "account:acme"}, {Name: "account:acme", Parent: "root"}},
		Roles:     []authz.Role{{Name: "member", Scope: "root", Permissions: []string{"join-call"}}},
		Grants:    []authz.Grant{{Subject: "user:alice", Role: "member", Resource: "account:acme"}},
		Blocks:    []authz.Block{{Subject: "user:bob", Resource: "call:default:1"}},
	}
	t.Run("an index is built from a snapshot", func(t *testing.T) {
		x, err := authz.NewIndex(snap)
		if err != nil {
			t.Fatal(err)
		}
		d, rev, err := x.Check(authz.Query{Subject: "user:alice", Permission: "send-audio", Resource: "call:default:1"})
		if err != nil || rev != 7 || !d.Allowed || d.Scope != "account:acme" {
			t.Errorf("Check = %+v at %d, %v", d, rev, err)
		}
		x.Apply(authz.ChangeSet{Revision: 7, Changes: []authz.Change{{Op: authz.OpDeleteGrant, Grant: &snap.Grants[0]}}})
		if d, _, _ := x.Check(authz.Query{Subject: "user:alice", Permission: "join-call", Resource: "account:acme"}); !d.Allowed {
			t.Error("a change set at the snapshot's revision was applied; it must be ignored")
		}
	})
	broken := []struct {
		name string
		edit func(s *authz.Snapshot)
	}{
		{"a resource whose parent is not in the snapshot", func(s *authz.Snapshot) { s.Resources[0].Parent = "account:gone" }},
		{"a role whose scope is not in the snapshot", func(s *authz.Snapshot) { s.Roles[0].Scope = "account:gone" }},
		{"a grant on a resource not in the snapshot", func(s *authz.Snapshot) { s.Grants[0].Resource = "account:gone" }},
		{"a block on a resource not in the snapshot", func(s *authz.Snapshot) { s.Blocks[0].Resource = "account:gone" }},
		{"a catalog with an undeclared parent", func(s *authz.Snapshot) { s.Permissions[1].Parents = []string{"gone"} }},
	}
	for _, tc := range broken {
		t.Run("NewIndex refuses "+tc.name, func(t *testing.T) {
			s := snap
			s.Resources = append([]authz.Resource(nil), snap.Resources...)
			s.Roles = append([]authz.Role(nil), snap.Roles...)
			s.Grants = append([]authz.Grant(nil), snap.Grants...)
			s.Blocks = append([]authz.Block(nil), snap.Blocks...)
			s.Permissions = append([]authz.Permission(nil), snap.Permissions...)
			tc.edit(&s)
			if _, err := authz.NewIndex(s); err == nil {
				t.Error("NewIndex accepted it")
			}
		})
	}
}

// TestConcurrentChecksAndWrites gives the race detector checks, lists and
// writes to interleave.
func TestConcurrentChecksAndWrites(t *testing.T) {
	w := newWorld(t, streamPolicy())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				subject := fmt.Sprintf("user:u%d", i%8)
				w.idx.Check(authz.Query{Subject: subject, Permission: "join-call", Resource: "call:livestream:42"})
				w.idx.CheckBatch([]authz.Query{{Subject: subject, Permission: "send-audio", Resource: "call:default:1"}})
				w.idx.ListPermissions(subject, "call:livestream:42", false)
				if r == 0 {
					w.idx.ListGrants(authz.GrantFilter{Resource: "call:livestream:42"}, 0, "")
					w.idx.ListRoles("call:livestream:42")
				}
			}
		})
	}
	for i := range 50 {
		subject := fmt.Sprintf("user:u%d", i%8)
		if _, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: subject, Role: "call-member", Resource: "call:livestream:42"}); err != nil {
			t.Error(err)
		}
		if _, _, err := w.eng.Block(w.ctx, w.by, authz.Block{Subject: subject, Resource: "account:acme", Reason: fmt.Sprint(i)}); err != nil {
			t.Error(err)
		}
		if _, err := w.eng.PutRole(w.ctx, w.by, authz.Role{Name: "guest", Scope: "calltype:livestream", Permissions: []string{streamCapabilities[i%len(streamCapabilities)]}}); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

// BenchmarkDeletingAResourceCostsWhatItRemoves measures the platform's
// delete of a call of 150,000 members and 20,000 banned subjects: the index
// removes each grant and block from the end of its resource's list, so that
// the removals cost what they remove. Before, they were taken from the
// front, each shifting all the rest, while Check waited: 8.8 s.
//
//	go test -run '^$' -bench 'DeletingAResourceCostsWhatItRemoves' -benchtime 3x ./authz/
func BenchmarkDeletingAResourceCostsWhatItRemoves(b *testing.B) {
	const members, banned = 150_000, 20_000
	p := streamPolicy()
	snap := authz.Snapshot{Permissions: p.Permissions, Roles: p.Roles, Resources: []authz.Resource{
		{Name: "account:acme"}, {Name: "call:big", Parent: "account:acme"}}}
	for i := range members {
		snap.Grants = append(snap.Grants, authz.Grant{Subject: fmt.Sprintf("user:m%d", i), Role: "call-member", Resource: "call:big"})
	}
	for i := range banned {
		snap.Blocks = append(snap.Blocks, authz.Block{Subject: fmt.Sprintf("user:b%d", i), Resource: "call:big", ID: "ban"})
	}
	benchDelete(b, snap, authz.Author{Caller: "test"}, "call:big")
}

// tenantsWorld has two accounts whose users may register calls in their
// own account and host what they register.
func tenantsWorld(t *testing.T) *world {
	w := newWorld(t, authz.Policy{
		Permissions: []authz.Permission{
			{Name: "call.end"},
			{Name: "usher.resources.create.call"},
			{Name: "usher.resources.move.call"},
		},
		Resources: []authz.Resource{{Name: "account:evil"}, {Name: "account:victim"}},
		Roles: []authz.Role{
			{Name: "member", Scope: "root", Permissions: []string{"usher.resources.create.call"}},
			{Name: "host", Scope: "root", Permissions: []string{"call.end", "usher.resources.move.call"}},
		},
		CreatorRoles: []authz.CreatorRole{{ResourceType: "call", Role: "host"}},
	})
	w.grant("user:mallory", "member", "account:evil")
	w.grant("user:vera", "member", "account:victim")
	return w
}

// Names are global, and PutResource of a registered name moves it: a
// tenant who registers a name first would have its resource, and its own
// host grant, moved into the account that registers the name next.
// RegisterResource only registers: it refuses a registered name, whoever
// asks and wherever the name is, and writes nothing.
func TestRegisterResourceDoesNotAdoptARegisteredName(t *testing.T) {
	w := tenantsWorld(t)
	squat := authz.Resource{Name: "call:board-2027", Parent: "account:evil"}
	if _, err := w.eng.RegisterResource(w.ctx, as("user:mallory"), squat); err != nil {
		t.Fatalf("mallory registers the name first: %v", err)
	}
	for _, by := range []authz.Author{w.by, as("user:vera")} {
		e := w.refuses(authz.AlreadyExists, "name", "call:board-2027", func() (authz.Revision, error) {
			return w.eng.RegisterResource(w.ctx, by, authz.Resource{Name: "call:board-2027", Parent: "account:victim"})
		})
		if authz.KindOf(e) != authz.KindResourceExists {
			t.Errorf("%q: kind %s, want %s", by.Actor, authz.KindOf(e), authz.KindResourceExists)
		}
		if strings.Contains(e.Error(), "account:evil") {
			t.Errorf("%q: the refusal tells where the name is registered: %v", by.Actor, e)
		}
	}
	if info, _, err := w.idx.GetResource("call:board-2027"); err != nil || info.Resource.Parent != "account:evil" {
		t.Errorf("the call is now %+v, %v; want it still under account:evil", info, err)
	}
	// An actor who may not register under the parent learns nothing of the
	// name: the refusal is the same whether it is registered or not.
	for _, name := range []string{"call:board-2027", "call:never-registered"} {
		w.refuses(authz.PermissionDenied, "actor", "user:mallory", func() (authz.Revision, error) {
			return w.eng.RegisterResource(w.ctx, as("user:mallory"), authz.Resource{Name: name, Parent: "account:victim"})
		})
	}
	// A name not registered is registered as PutResource would, its creator
	// made host.
	if _, err := w.eng.RegisterResource(w.ctx, as("user:vera"), authz.Resource{Name: "call:board-2028", Parent: "account:victim"}); err != nil {
		t.Fatalf("vera registers a name of her own: %v", err)
	}
	if !w.check("user:vera", "call.end", "call:board-2028").Allowed {
		t.Error("the creator of a registered call is not its host")
	}
	// Without create_only the platform's PutResource moves what is there.
	if _, err := w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "call:board-2027", Parent: "account:victim"}); err != nil {
		t.Fatalf("the platform moves the call: %v", err)
	}
	if info, _, _ := w.idx.GetResource("call:board-2027"); info.Resource.Parent != "account:victim" {
		t.Errorf("PutResource left the call under %q", info.Resource.Parent)
	}
}

// A write committed while the engine's feed is cut off (etcd out of reach
// once its transaction returned) is committed, and durable: it answers its
// revision once a read waiting for that revision would have stopped
// waiting, rather than holding its caller, who set no deadline, for ever.
func TestACommittedWriteAnswersThoughTheFeedIsCutOff(t *testing.T) {
	be := gatedBackend{memory.New(), make(chan struct{})} // never opened
	eng, err := authz.Start(t.Context(), be, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	type answer struct {
		rev authz.Revision
		err error
	}
	done := make(chan answer, 1)
	go func() {
		rev, err := eng.PutResource(context.Background(), authz.Author{Caller: "test"}, authz.Resource{Name: "account:acme"})
		done <- answer{rev, err}
	}()
	var a answer
	select {
	case a = <-done:
	case <-time.After(time.Minute):
		t.Fatal("a write committed while the feed is cut off, called with no deadline, never answered")
	}
	sets, err := be.Changes(t.Context(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if a.err != nil || len(sets) != 1 || a.rev != sets[0].Revision {
		t.Fatalf("the write answered %d, %v; the log holds %d change sets; want the revision of the one committed", a.rev, a.err, len(sets))
	}
}
