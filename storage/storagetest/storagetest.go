// Package storagetest is the conformance suite every storage.Backend must
// pass, so that every backend is proved by the same cases (as OpenFGA's
// RunAllTests and SpiceDB's datastore tests do): memory, bbolt and etcd.
//
// It imports testing and is meant only for _test.go files.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// Run proves a backend. open must return a backend on the data in dir,
// failing t if it cannot; calling it again with the same dir after Close must
// return the same data. Run closes every backend it opens, once.
func Run(t *testing.T, open func(t *testing.T, dir string) storage.Backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, h *harness)
	}{
		{"an empty store is at revision 0 with nothing to load", testEmpty},
		{"each commit bumps the revision by one and returns it", testRevisionBumps},
		{"a commit with no changes still bumps the revision", testEmptyCommit},
		{"puts of every kind load back whole after a reopen", testReopenAndCompare},
		{"a put of an existing key replaces it", testPutReplaces},
		{"deletes remove exactly the keyed entity", testDeletes},
		{"Changes returns committed change sets whole, paginated by after and limit", testChanges},
		{"the store stamps a change set without a time", testTimeStamped},
		{"CommitTime tells a change set's time as Changes does, and nothing of one compacted or not committed", testCommitTime},
		{"ChangeCounts counts the changes of the change sets Changes returns, and is ErrCompacted where it is", testChangeCounts},
		{"Watch from a revision yields what follows it, in order, then what is committed", testWatchFromRevision},
		{"Watch ends when its context ends, and with an error when the store closes", testWatchEnds},
		{"a load and a watch from its revision join with no gap and no repeat", testLoadThenWatch},
		{"compaction drops the log up to a revision; reading before it is ErrCompacted", testCompaction},
		{"a write whose guard moved after its planned revision conflicts and writes nothing", testConflict},
		{"a write planned long ago commits when none of its guards moved", testNoConflict},
		{"in one batch, a write guarding what an earlier one touches conflicts", testConflictWithinBatch},
		{"a write guarding a thousand keys commits, or conflicts on the last of them", testManyGuards},
		{"a cancelled context commits nothing", testCancelled},
		{"a change set with a malformed change commits nothing of its batch", testMalformed},
		{"concurrent commits get distinct, gap-free revisions", testConcurrentCommits},
		{"a batch takes consecutive revisions, delivered in order", testBatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { runCase(t, open, tc.run) })
	}
}

// RunManyGuards runs Run's case of a write guarding a thousand keys alone:
// for a backend that reads and compares them in parts, opened as it would
// be with few operations allowed in one transaction.
func RunManyGuards(t *testing.T, open func(t *testing.T, dir string) storage.Backend) {
	runCase(t, open, testManyGuards)
}

func runCase(t *testing.T, open func(t *testing.T, dir string) storage.Backend, run func(t *testing.T, h *harness)) {
	h := &harness{t: t, dir: t.TempDir(), open: open}
	h.reopen()
	t.Cleanup(h.close)
	run(t, h)
}

// harness holds the backend under test so a case can close and reopen it
// without the cleanup closing it twice.
type harness struct {
	t    *testing.T
	dir  string
	open func(t *testing.T, dir string) storage.Backend
	b    storage.Backend
}

func (h *harness) reopen() {
	h.t.Helper()
	h.close()
	h.b = h.open(h.t, h.dir)
}

func (h *harness) close() {
	h.t.Helper()
	if h.b == nil {
		return
	}
	b := h.b
	h.b = nil
	if err := b.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
}

func (h *harness) commitAll(ws ...authz.Write) []authz.Committed {
	h.t.Helper()
	res, err := h.b.Commit(context.Background(), ws)
	if err != nil {
		h.t.Fatalf("Commit: %v", err)
	}
	if len(res) != len(ws) {
		h.t.Fatalf("Commit of %d writes answered %d results", len(ws), len(res))
	}
	for i, r := range res {
		if r.Err != nil {
			h.t.Fatalf("Commit refused write %d: %v", i, r.Err)
		}
	}
	return res
}

// commit commits one change set that guards nothing and touches nothing.
func (h *harness) commit(cs authz.ChangeSet) authz.Revision {
	h.t.Helper()
	res := h.commitAll(authz.Write{Planned: h.revision(), Set: cs})
	if res[0].Conflict != "" {
		h.t.Fatalf("Commit conflicted on %q", res[0].Conflict)
	}
	return res[0].Revision
}

func (h *harness) revision() authz.Revision {
	h.t.Helper()
	rev, err := h.b.Revision(context.Background())
	if err != nil {
		h.t.Fatalf("Revision: %v", err)
	}
	return rev
}

func (h *harness) snapshot() authz.Snapshot {
	h.t.Helper()
	var c authz.Collector
	rev, err := h.b.Load(context.Background(), &c)
	if err != nil {
		h.t.Fatalf("Load: %v", err)
	}
	c.Snapshot.Revision = rev
	return c.Snapshot
}

func (h *harness) changes(after authz.Revision, limit int) []authz.ChangeSet {
	h.t.Helper()
	css, err := h.b.Changes(context.Background(), after, limit)
	if err != nil {
		h.t.Fatalf("Changes(%d, %d): %v", after, limit, err)
	}
	return css
}

// watch collects what Watch(after) yields on a goroutine until stop.
type watch struct {
	mu   sync.Mutex
	got  []authz.ChangeSet
	err  error
	more chan struct{}
	done chan struct{}
	stop context.CancelFunc
}

func (h *harness) watch(after authz.Revision) *watch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watch{more: make(chan struct{}, 1), done: make(chan struct{}), stop: cancel}
	seq := h.b.Watch(ctx, after)
	go func() {
		defer close(w.done)
		for cs, err := range seq {
			w.mu.Lock()
			if err != nil {
				w.err = err
			} else {
				w.got = append(w.got, cs)
			}
			w.mu.Unlock()
			select {
			case w.more <- struct{}{}:
			default:
			}
		}
	}()
	h.t.Cleanup(func() { cancel(); <-w.done })
	return w
}

// until waits for the watch to have yielded n change sets, or fails.
func (w *watch) until(t *testing.T, n int) []authz.ChangeSet {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		w.mu.Lock()
		got, err := slices.Clone(w.got), w.err
		w.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if err != nil {
			t.Fatalf("watch failed after %d of %d change sets: %v", len(got), n, err)
		}
		select {
		case <-w.more:
		case <-deadline:
			t.Fatalf("watch yielded %d change sets within 10s, want %d", len(got), n)
		}
	}
}

func testEmpty(t *testing.T, h *harness) {
	if rev := h.revision(); rev != 0 {
		t.Errorf("Revision() = %d, want 0", rev)
	}
	wantSnapshot(t, h.snapshot(), authz.Snapshot{})
	if css := h.changes(0, 10); len(css) != 0 {
		t.Errorf("Changes(0, 10) = %d change sets, want none", len(css))
	}
}

func testRevisionBumps(t *testing.T, h *harness) {
	for want := authz.Revision(1); want <= 3; want++ {
		rev := h.commit(changeSet("svc", put(grant(fmt.Sprintf("user:u%d", want), "viewer", "doc:1", time.Time{}))))
		if rev != want {
			t.Fatalf("commit %d returned revision %d", want, rev)
		}
		if got := h.revision(); got != want {
			t.Fatalf("after commit %d Revision() = %d", want, got)
		}
		if got := h.snapshot().Revision; got != want {
			t.Fatalf("after commit %d Load's revision = %d", want, got)
		}
	}
}

func testEmptyCommit(t *testing.T, h *harness) {
	if rev := h.commit(changeSet("svc")); rev != 1 {
		t.Fatalf("empty commit returned revision %d, want 1", rev)
	}
	wantSnapshot(t, h.snapshot(), authz.Snapshot{Revision: 1})
	if css := h.changes(0, 10); len(css) != 1 || len(css[0].Changes) != 0 {
		t.Fatalf("Changes(0, 10) = %+v, want one empty change set", css)
	}
}

func testReopenAndCompare(t *testing.T, h *harness) {
	w := world()
	rev := h.commit(changeSet("svc", w.puts()...))
	want := w.snapshot(rev)
	wantSnapshot(t, h.snapshot(), want)
	logged := h.changes(0, 10)
	if len(logged) != 1 || len(logged[0].Changes) != len(w.puts()) {
		t.Fatalf("the change log holds %s, want the one change set of %d changes", revisions(logged), len(w.puts()))
	}
	if d := diffChangeSets(logged, []authz.ChangeSet{{Revision: rev, Time: logged[0].Time, Caller: "svc", Changes: w.puts()}}); d != "" {
		t.Errorf("the change log: %s", d)
	}

	h.reopen()
	if got := h.revision(); got != rev {
		t.Errorf("after reopen Revision() = %d, want %d", got, rev)
	}
	wantSnapshot(t, h.snapshot(), want)
	if d := diffChangeSets(h.changes(0, 10), logged); d != "" {
		t.Errorf("the change log after reopen: %s", d)
	}
}

func testPutReplaces(t *testing.T, h *harness) {
	w := world()
	h.commit(changeSet("svc", w.puts()...))

	// Same keys, new values: a re-grant updates the expiry, a role is
	// redefined, a block gets a reason, quotas get new limits.
	w.permissions[0].Description = "changed"
	w.resources[1].Parent = "root"
	w.roles[0].Permissions = []string{"call.join"}
	w.grants[0].Expires = later
	w.grants[1].Expires = time.Time{}
	w.blocks[0].Reason = "changed"
	w.quotas[0].Limit = 99
	w.creatorRoles[0].Role = "owner"
	w.defaultQuotas[0].Limit = 7
	rev := h.commit(changeSet("svc",
		put(w.permissions[0]), put(w.resources[1]), put(w.roles[0]),
		put(w.grants[0]), put(w.grants[1]), put(w.blocks[0]), put(w.quotas[0]),
		put(w.creatorRoles[0]), put(w.defaultQuotas[0])))
	wantSnapshot(t, h.snapshot(), w.snapshot(rev))
}

func testDeletes(t *testing.T, h *harness) {
	w := world()
	h.commit(changeSet("svc", w.puts()...))

	// Deletions carry only key fields. Each removes one of a pair that
	// shares a key prefix, and one removes what is not there.
	rev := h.commit(changeSet("svc",
		del(authz.Permission{Name: "call.join"}),
		del(authz.Resource{Name: "call:livestream:42"}),
		del(authz.Role{Scope: "calltype:livestream", Name: "host"}),
		del(authz.Grant{Subject: "user:alice", Resource: "account:acme", Role: "owner"}),
		del(authz.Block{Subject: "user:mallory", Resource: "account:acme", ID: "b1"}),
		del(authz.Quota{Scope: "account:acme", ResourceType: "call", Subject: "user:alice"}),
		del(authz.CreatorRole{ResourceType: "call"}),
		del(authz.DefaultQuota{ScopeType: "account", ResourceType: "call"}),
		del(authz.Admission{Scope: "calltype:livestream", ResourceType: "call"}),
		del(authz.Grant{Subject: "user:nobody", Resource: "account:acme", Role: "owner"}),
	))
	w.permissions = without(w.permissions, func(p authz.Permission) bool { return p.Name == "call.join" })
	w.resources = without(w.resources, func(r authz.Resource) bool { return r.Name == "call:livestream:42" })
	w.roles = without(w.roles, func(r authz.Role) bool { return r.Scope == "calltype:livestream" && r.Name == "host" })
	w.grants = without(w.grants, func(g authz.Grant) bool {
		return g.Subject == "user:alice" && g.Resource == "account:acme" && g.Role == "owner"
	})
	w.blocks = without(w.blocks, func(b authz.Block) bool { return b.ID == "b1" && b.Resource == "account:acme" })
	w.quotas = without(w.quotas, func(q authz.Quota) bool { return q.Subject == "user:alice" })
	w.creatorRoles = without(w.creatorRoles, func(c authz.CreatorRole) bool { return c.ResourceType == "call" })
	w.defaultQuotas = without(w.defaultQuotas, func(d authz.DefaultQuota) bool { return d.ResourceType == "call" })
	w.admissions = without(w.admissions, func(a authz.Admission) bool { return a.Scope == "calltype:livestream" && a.ResourceType == "call" })
	wantSnapshot(t, h.snapshot(), w.snapshot(rev))
}

func testChanges(t *testing.T, h *harness) {
	w := world()
	var want []authz.ChangeSet
	for i, c := range w.puts() {
		cs := authz.ChangeSet{
			Time:    time.Date(2030, 1, 2, 3, 4, 5, 600+i, berlin),
			Caller:  "service:console",
			Actor:   fmt.Sprintf("user:u%d", i),
			Changes: []authz.Change{c, del(authz.Grant{Subject: "user:x", Resource: "doc:1", Role: "r"})},
		}
		cs.Revision = h.commit(cs)
		want = append(want, cs)
	}
	n := authz.Revision(len(want))
	tests := []struct {
		name  string
		after authz.Revision
		limit int
		want  []authz.ChangeSet
	}{
		{"everything from the start", 0, 100, want},
		{"a limit stops early", 0, 2, want[:2]},
		{"after skips what was seen", 2, 2, want[2:4]},
		{"the last page is short", n - 1, 2, want[n-1:]},
		{"nothing after the latest", n, 10, nil},
		{"nothing after a future revision", n + 99, 10, nil},
		// A revision a client names (ListChanges's after_revision) may be
		// any uint64, past what an int holds or the last there is.
		{"nothing after a revision past the largest int", 1 << 63, 10, nil},
		{"nothing after the last revision of all but one", ^authz.Revision(0) - 1, 10, nil},
		{"nothing after the last revision of all", ^authz.Revision(0), 10, nil},
	}
	check := func(t *testing.T) {
		for _, tc := range tests {
			got := h.changes(tc.after, tc.limit)
			if d := diffChangeSets(got, tc.want); d != "" {
				t.Errorf("%s: Changes(%d, %d): %s", tc.name, tc.after, tc.limit, d)
			}
		}
	}
	check(t)
	h.reopen()
	check(t)
}

func testTimeStamped(t *testing.T, h *harness) {
	before := time.Now()
	h.commit(authz.ChangeSet{Caller: "svc"})
	css := h.changes(0, 1)
	if len(css) != 1 {
		t.Fatalf("Changes(0, 1) = %d change sets, want 1", len(css))
	}
	if got := css[0].Time; got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("stamped time %s, want about %s", got, before)
	}
}

func testCommitTime(t *testing.T, h *harness) {
	for i := range 4 {
		h.commit(changeSet("svc", put(grant(fmt.Sprintf("user:t%d", i), "viewer", "doc:1", time.Time{}))))
	}
	if err := h.b.Compact(context.Background(), 1); err != nil {
		t.Fatalf("Compact(1): %v", err)
	}
	logged := h.changes(1, 10)
	check := func(t *testing.T) {
		for _, cs := range logged {
			if got, ok, err := h.b.CommitTime(context.Background(), cs.Revision); err != nil || !ok || !got.Equal(cs.Time) {
				t.Errorf("CommitTime(%d) = %s, %t, %v; want %s as Changes gives it", cs.Revision, got, ok, err, cs.Time)
			}
		}
		for _, rev := range []authz.Revision{0, 1, 6, ^authz.Revision(0)} {
			if got, ok, err := h.b.CommitTime(context.Background(), rev); err != nil || ok {
				t.Errorf("CommitTime(%d) = %s, %t, %v; want none, the log holding revisions 2 to 5", rev, got, ok, err)
			}
		}
	}
	check(t)
	h.reopen()
	check(t)
}

func testChangeCounts(t *testing.T, h *harness) {
	h.commit(changeSet("svc"))
	for i := range 4 {
		var cs []authz.Change
		for j := range i + 1 {
			cs = append(cs, put(grant(fmt.Sprintf("user:n%d-%d", i, j), "viewer", "doc:1", time.Time{})))
		}
		h.commit(changeSet("svc", cs...))
	}
	if err := h.b.Compact(context.Background(), 1); err != nil {
		t.Fatalf("Compact(1): %v", err)
	}
	check := func(t *testing.T) {
		for _, r := range []struct {
			after authz.Revision
			limit int
		}{{1, 10}, {1, 2}, {3, 1}, {4, 10}, {5, 10}, {^authz.Revision(0), 10}} {
			var want []int
			for _, cs := range h.changes(r.after, r.limit) {
				want = append(want, len(cs.Changes))
			}
			if got, err := h.b.ChangeCounts(context.Background(), r.after, r.limit); err != nil || !slices.Equal(got, want) {
				t.Errorf("ChangeCounts(%d, %d) = %v, %v; want %v, as Changes gives", r.after, r.limit, got, err, want)
			}
		}
		if _, err := h.b.ChangeCounts(context.Background(), 0, 10); !errors.Is(err, authz.ErrCompacted) {
			t.Errorf("ChangeCounts(0) after Compact(1) = %v, want ErrCompacted", err)
		}
	}
	check(t)
	h.reopen()
	check(t)
}

func testWatchFromRevision(t *testing.T, h *harness) {
	for i := range 3 {
		h.commit(changeSet("svc", put(grant(fmt.Sprintf("user:a%d", i), "viewer", "doc:1", time.Time{}))))
	}
	from0, from2 := h.watch(0), h.watch(2)
	h.commit(changeSet("svc", put(grant("user:b", "viewer", "doc:1", later))))
	h.commit(changeSet("svc", del(authz.Grant{Subject: "user:a0", Resource: "doc:1", Role: "viewer"})))
	logged := h.changes(0, 10)
	if d := diffChangeSets(from0.until(t, 5), logged); d != "" {
		t.Errorf("watch from 0: %s", d)
	}
	if d := diffChangeSets(from2.until(t, 3), logged[2:]); d != "" {
		t.Errorf("watch from 2: %s", d)
	}
	// A watch from the latest revision waits for the next commit.
	latest := h.watch(h.revision())
	rev := h.commit(changeSet("svc", put(grant("user:c", "viewer", "doc:1", time.Time{}))))
	if got := latest.until(t, 1); got[0].Revision != rev || len(got) != 1 {
		t.Errorf("watch from the latest revision yielded %s, want %d", revisions(got), rev)
	}
}

func testWatchEnds(t *testing.T, h *harness) {
	w := h.watch(0)
	h.commit(changeSet("svc"))
	w.until(t, 1)
	w.stop()
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end within 5s of its context")
	}
	if w.err != nil {
		t.Errorf("a watch ended by its context yielded %v", w.err)
	}

	open := h.watch(h.revision())
	h.close()
	select {
	case <-open.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end within 5s of Close")
	}
	if !errors.Is(open.err, storage.ErrClosed) {
		t.Errorf("a watch ended by Close yielded %v, want storage.ErrClosed", open.err)
	}
}

func testLoadThenWatch(t *testing.T, h *harness) {
	const writers, each = 4, 25
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range each {
				h.commit(changeSet("svc", put(grant(fmt.Sprintf("user:w%d-%d", i, j), "viewer", "doc:1", time.Time{}))))
			}
		})
	}
	// Load while the writers run, then watch from what it loaded: every
	// grant must be in the load or in the watch, exactly once.
	time.Sleep(time.Millisecond)
	snap := h.snapshot()
	w := h.watch(snap.Revision)
	wg.Wait()
	got := w.until(t, writers*each-int(snap.Revision))
	seen := map[string]int{}
	for _, g := range snap.Grants {
		seen[g.Subject]++
	}
	next := snap.Revision + 1
	for _, cs := range got {
		if cs.Revision != next {
			t.Fatalf("the watch yielded revision %d after %d", cs.Revision, next-1)
		}
		next++
		for _, c := range cs.Changes {
			seen[c.Grant.Subject]++
		}
	}
	for i := range writers {
		for j := range each {
			if n := seen[fmt.Sprintf("user:w%d-%d", i, j)]; n != 1 {
				t.Errorf("grant to user:w%d-%d seen %d times across the load (at %d) and the watch", i, j, n, snap.Revision)
			}
		}
	}
}

func testCompaction(t *testing.T, h *harness) {
	for i := range 5 {
		h.commit(changeSet("svc", put(grant(fmt.Sprintf("user:c%d", i), "viewer", "doc:1", time.Time{}))))
	}
	before := h.snapshot()
	if start, err := h.b.LogStart(context.Background()); err != nil || start != 0 {
		t.Errorf("LogStart before any Compact = %d, %v; want 0", start, err)
	}
	if err := h.b.Compact(context.Background(), 3); err != nil {
		t.Fatalf("Compact(3): %v", err)
	}
	check := func(t *testing.T) {
		if start, err := h.b.LogStart(context.Background()); err != nil || start != 3 {
			t.Errorf("LogStart after Compact(3) = %d, %v; want 3", start, err)
		}
		if _, err := h.b.Changes(context.Background(), 2, 10); !errors.Is(err, authz.ErrCompacted) {
			t.Errorf("Changes(2) after Compact(3) = %v, want ErrCompacted", err)
		}
		if got := h.changes(3, 10); len(got) != 2 || got[0].Revision != 4 {
			t.Errorf("Changes(3) after Compact(3) = %s, want 4,5", revisions(got))
		}
		w := h.watch(1)
		<-w.done
		if !errors.Is(w.err, authz.ErrCompacted) {
			t.Errorf("Watch(1) after Compact(3) ended with %v, want ErrCompacted", w.err)
		}
		wantSnapshot(t, h.snapshot(), before)
	}
	check(t)
	h.reopen()
	check(t)
	// Compacting less than before changes nothing.
	if err := h.b.Compact(context.Background(), 1); err != nil {
		t.Fatalf("Compact(1): %v", err)
	}
	check(t)
}

func testConflict(t *testing.T, h *harness) {
	h.commitAll(authz.Write{Set: changeSet("svc", put(grant("user:a", "viewer", "doc:1", time.Time{}))), Touches: []string{"s\x00user:a"}})
	planned := h.revision()
	h.commitAll(authz.Write{Planned: planned, Set: changeSet("svc", put(grant("user:a", "editor", "doc:1", time.Time{}))), Touches: []string{"s\x00user:a"}})
	before := h.snapshot()
	stale := authz.Write{Planned: planned, Guards: []string{"r\x00doc:1", "s\x00user:a"},
		Set: changeSet("svc", put(grant("user:b", "viewer", "doc:1", time.Time{})))}
	res := h.commitAll(stale)
	if res[0].Conflict != "s\x00user:a" || res[0].Revision != 0 {
		t.Errorf("a write guarding a key touched after its plan: %+v, want a conflict on s\\x00user:a", res[0])
	}
	if res[0].Latest != planned+1 {
		t.Errorf("the conflict reports revision %d as latest, want %d", res[0].Latest, planned+1)
	}
	wantSnapshot(t, h.snapshot(), before)
	if got := h.revision(); got != planned+1 {
		t.Errorf("after a conflict Revision() = %d, want %d", got, planned+1)
	}
}

func testNoConflict(t *testing.T, h *harness) {
	h.commitAll(authz.Write{Set: changeSet("svc"), Touches: []string{"s\x00user:a"}})
	planned := h.revision()
	for range 5 {
		h.commitAll(authz.Write{Planned: h.revision(), Set: changeSet("svc"), Touches: []string{"s\x00user:other"}})
	}
	res := h.commitAll(authz.Write{Planned: planned, Guards: []string{"s\x00user:a"}, Touches: []string{"s\x00user:a"},
		Set: changeSet("svc", put(grant("user:a", "viewer", "doc:1", time.Time{})))})
	if res[0].Conflict != "" || res[0].Revision != planned+6 {
		t.Errorf("a write whose guards did not move: %+v, want revision %d", res[0], planned+6)
	}
	if got := h.snapshot().Grants; len(got) != 1 {
		t.Errorf("grants after the write: %+v, want the one written", got)
	}
}

// testManyGuards: an actor's write may judge, and so guard, more subjects
// than one etcd transaction may read or compare.
func testManyGuards(t *testing.T, h *harness) {
	guards := make([]string, 1000)
	for i := range guards {
		guards[i] = fmt.Sprintf("s\x00user:%04d", i)
	}
	h.commitAll(authz.Write{Set: changeSet("svc"), Touches: []string{guards[0], guards[500], guards[999]}})
	planned := h.revision()
	res := h.commitAll(authz.Write{Planned: planned, Guards: guards, Touches: guards[:1],
		Set: changeSet("svc", put(grant("user:0000", "viewer", "doc:1", time.Time{})))})
	if res[0].Conflict != "" || res[0].Revision != planned+1 {
		t.Fatalf("a write whose thousand guards did not move: %+v, want revision %d", res[0], planned+1)
	}
	planned = h.revision()
	h.commitAll(authz.Write{Planned: planned, Set: changeSet("svc", put(grant("user:0999", "viewer", "doc:1", time.Time{}))), Touches: guards[999:]})
	before := h.snapshot()
	res = h.commitAll(authz.Write{Planned: planned, Guards: guards,
		Set: changeSet("svc", put(grant("user:0500", "viewer", "doc:1", time.Time{})))})
	if res[0].Conflict != guards[999] || res[0].Revision != 0 {
		t.Errorf("a write whose last guard moved after its plan: %+v, want a conflict on %q", res[0], guards[999])
	}
	wantSnapshot(t, h.snapshot(), before)
}

func testConflictWithinBatch(t *testing.T, h *harness) {
	planned := h.revision()
	res := h.commitAll(
		authz.Write{Planned: planned, Touches: []string{"h\x00host"}, Set: changeSet("svc", put(grant("user:a", "host", "call:1", time.Time{})))},
		authz.Write{Planned: planned, Guards: []string{"h\x00host"}, Set: changeSet("svc", put(grant("user:b", "host", "call:1", time.Time{})))},
		authz.Write{Planned: planned, Guards: []string{"h\x00other"}, Set: changeSet("svc", put(grant("user:c", "guest", "call:1", time.Time{})))},
	)
	if res[0].Revision != planned+1 || res[0].Conflict != "" {
		t.Errorf("first write: %+v, want revision %d", res[0], planned+1)
	}
	if res[1].Conflict != "h\x00host" || res[1].Revision != 0 {
		t.Errorf("second write, guarding what the first touches: %+v, want a conflict", res[1])
	}
	if res[2].Revision != planned+2 || res[2].Conflict != "" {
		t.Errorf("third write: %+v, want revision %d", res[2], planned+2)
	}
	var subjects []string
	for _, g := range h.snapshot().Grants {
		subjects = append(subjects, g.Subject)
	}
	slices.Sort(subjects)
	if !slices.Equal(subjects, []string{"user:a", "user:c"}) {
		t.Errorf("grants after the batch: %v, want user:a and user:c", subjects)
	}
}

func testCancelled(t *testing.T, h *harness) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := h.b.Commit(ctx, []authz.Write{{Set: changeSet("svc", put(grant("user:a", "viewer", "doc:1", time.Time{})))}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Commit with a cancelled context = %v, want context.Canceled", err)
	}
	if rev := h.revision(); rev != 0 {
		t.Errorf("Revision() = %d after a cancelled commit, want 0", rev)
	}
}

func testMalformed(t *testing.T, h *harness) {
	bad := []authz.ChangeSet{
		changeSet("svc", put(grant("user:a", "viewer", "doc:1", time.Time{})), authz.Change{Op: authz.OpPutGrant}),
		changeSet("svc", put(grant("user:\x00a", "viewer", "doc:1", time.Time{}))),
		changeSet("svc", put(authz.Resource{Name: "doc:\x001", Parent: "root"})),
		changeSet("svc", put(authz.Block{Subject: "user:\x00a", Resource: "doc:1", ID: "b"})),
		changeSet("svc", put(grant("user:a", "viewer", "doc:1", time.Unix(0, 0)))),
		changeSet("svc", authz.Change{Op: 99, Grant: &authz.Grant{Subject: "user:a", Role: "viewer", Resource: "doc:1"}}),
	}
	for i, cs := range bad {
		good := authz.Write{Set: changeSet("svc", put(grant("user:z", "viewer", "doc:1", time.Time{})))}
		if _, err := h.b.Commit(context.Background(), []authz.Write{good, {Set: cs}}); err == nil {
			t.Errorf("malformed change set %d was committed", i)
		}
	}
	if rev := h.revision(); rev != 0 {
		t.Errorf("Revision() = %d after malformed commits, want 0", rev)
	}
	wantSnapshot(t, h.snapshot(), authz.Snapshot{})
}

func testConcurrentCommits(t *testing.T, h *harness) {
	const writers, each = 8, 20
	var (
		mu   sync.Mutex
		revs []authz.Revision
		wg   sync.WaitGroup
	)
	w := h.watch(0)
	for i := range writers {
		wg.Go(func() {
			for j := range each {
				rev := h.commit(changeSet("svc", put(grant(fmt.Sprintf("user:%d-%d", i, j), "viewer", "doc:1", time.Time{}))))
				mu.Lock()
				revs = append(revs, rev)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(revs)
	for i, rev := range revs {
		if rev != authz.Revision(i+1) {
			t.Fatalf("revisions %v are not 1..%d", revs, writers*each)
		}
	}
	got := w.until(t, writers*each)
	for i, cs := range got {
		if cs.Revision != authz.Revision(i+1) {
			t.Fatalf("the watch yielded revision %d at position %d", cs.Revision, i)
		}
	}
	if n := len(h.snapshot().Grants); n != writers*each {
		t.Errorf("%d grants loaded, want %d", n, writers*each)
	}
}

func testBatch(t *testing.T, h *harness) {
	w := h.watch(0)
	res := h.commitAll(
		authz.Write{Set: changeSet("a", put(grant("user:a", "viewer", "doc:1", time.Time{})))},
		authz.Write{Set: changeSet("b", put(grant("user:b", "viewer", "doc:1", time.Time{})))},
		authz.Write{Set: changeSet("c")},
	)
	for i, r := range res {
		if r.Revision != authz.Revision(i+1) {
			t.Errorf("write %d of the batch got revision %d, want %d", i, r.Revision, i+1)
		}
	}
	got := w.until(t, 3)
	if d := diffChangeSets(got, h.changes(0, 10)); d != "" {
		t.Errorf("watch against the log: %s", d)
	}
	for i, caller := range []string{"a", "b", "c"} {
		if got[i].Caller != caller {
			t.Errorf("change set %d by %q, want %q", i, got[i].Caller, caller)
		}
	}
}

var (
	later  = time.Date(2031, 6, 7, 8, 9, 10, 11, time.UTC)
	berlin = time.FixedZone("CET", 3600)
)

func changeSet(caller string, changes ...authz.Change) authz.ChangeSet {
	return authz.ChangeSet{Caller: caller, Changes: changes}
}

func grant(subject, role, resource string, expires time.Time) authz.Grant {
	return authz.Grant{Subject: subject, Role: role, Resource: resource, Expires: expires}
}

// put and del build changes of any entity kind.
func put(e any) authz.Change { return change(e, true) }
func del(e any) authz.Change { return change(e, false) }

func change(e any, put bool) authz.Change {
	pick := func(p, d authz.Op) authz.Op {
		if put {
			return p
		}
		return d
	}
	switch v := e.(type) {
	case authz.Permission:
		return authz.Change{Op: pick(authz.OpPutPermission, authz.OpDeletePermission), Permission: &v}
	case authz.Resource:
		return authz.Change{Op: pick(authz.OpPutResource, authz.OpDeleteResource), Resource: &v}
	case authz.Role:
		return authz.Change{Op: pick(authz.OpPutRole, authz.OpDeleteRole), Role: &v}
	case authz.Grant:
		return authz.Change{Op: pick(authz.OpPutGrant, authz.OpDeleteGrant), Grant: &v}
	case authz.Block:
		return authz.Change{Op: pick(authz.OpPutBlock, authz.OpDeleteBlock), Block: &v}
	case authz.Quota:
		return authz.Change{Op: pick(authz.OpPutQuota, authz.OpDeleteQuota), Quota: &v}
	case authz.CreatorRole:
		return authz.Change{Op: pick(authz.OpPutCreatorRole, authz.OpDeleteCreatorRole), CreatorRole: &v}
	case authz.DefaultQuota:
		return authz.Change{Op: pick(authz.OpPutDefaultQuota, authz.OpDeleteDefaultQuota), DefaultQuota: &v}
	case authz.Admission:
		return authz.Change{Op: pick(authz.OpPutAdmission, authz.OpDeleteAdmission), Admission: &v}
	}
	panic(fmt.Sprintf("no change for %T", e))
}

// fixture is a small world with every kind of entity, and keys that share
// prefixes so that a backend that confuses them fails.
type fixture struct {
	permissions   []authz.Permission
	resources     []authz.Resource
	roles         []authz.Role
	grants        []authz.Grant
	blocks        []authz.Block
	quotas        []authz.Quota
	creatorRoles  []authz.CreatorRole
	defaultQuotas []authz.DefaultQuota
	admissions    []authz.Admission
}

func world() *fixture {
	return &fixture{
		permissions: []authz.Permission{
			{Name: "call.manage", Description: "everything about a call"},
			{Name: "call.join", Parents: []string{"call.manage"}},
			{Name: "call.join-backstage", Parents: []string{"call.join", "call.manage"}},
		},
		resources: []authz.Resource{
			{Name: "account:acme", Parent: "root"},
			{Name: "calltype:livestream", Parent: "account:acme", Creator: "user:alice"},
			{Name: "call:livestream:42", Parent: "calltype:livestream", StartsAt: time.Date(2030, 1, 1, 9, 30, 0, 7, berlin), Live: true},
			{Name: "call:livestream:420", Parent: "calltype:livestream"},
		},
		roles: []authz.Role{
			{Name: "host", Scope: "root", Permissions: []string{"call.manage"}, AssignableRoles: []string{"*"}, Description: "runs calls"},
			{Name: "host", Scope: "calltype:livestream", Permissions: []string{"call.join"}, BindableOn: []string{"call"}, MaxHolders: 1},
			{Name: "guest", Scope: "root", Permissions: []string{"call.join"}, AssignableRoles: []string{"guest", "host"}},
		},
		grants: []authz.Grant{
			{Subject: "user:alice", Role: "owner", Resource: "account:acme"},
			{Subject: "user:alice", Role: "host", Resource: "call:livestream:42", Expires: later},
			{Subject: "user:alice", Role: "host", Resource: "call:livestream:420"},
			{Subject: "user:alice2", Role: "host", Resource: "call:livestream:42", Expires: time.Date(2030, 1, 1, 0, 0, 0, 1, berlin)},
		},
		blocks: []authz.Block{
			{Subject: "user:mallory", Resource: "account:acme", ID: "b1", Reason: "spam"},
			{Subject: "user:mallory", Resource: "account:acme", ID: "b2", Permissions: []string{"call.join"}, Expires: later},
			{Subject: "user:mallory", Resource: "account:acme2", ID: "b1", Permissions: []string{"call.join", "call.manage"}},
		},
		quotas: []authz.Quota{
			{Scope: "account:acme", ResourceType: "call", Limit: 10},
			{Scope: "account:acme", ResourceType: "call", Subject: "user:alice", Limit: 2},
			{Scope: "account:acme", ResourceType: "calltype", Limit: 0},
		},
		creatorRoles:  []authz.CreatorRole{{ResourceType: "call", Role: "host"}, {ResourceType: "event", Role: "owner"}},
		defaultQuotas: []authz.DefaultQuota{{ScopeType: "account", ResourceType: "call", Limit: 0}, {ScopeType: "account", ResourceType: "room", Limit: 3}},
		admissions: []authz.Admission{
			{Scope: "root", ResourceType: "call", Join: "call.join", Lease: 45 * time.Second},
			{Scope: "calltype:livestream", ResourceType: "call", Join: "call.join", Backstage: "call.join-backstage", RequireLive: true,
				JoinAhead: 10 * time.Minute, Stage: "call.manage", MaxParticipants: 50,
				UncountedRoles: []string{"host"}, ExclusiveRoles: []string{"guest"}, ExclusivePermissions: []string{"call.join-backstage"},
				Lobby: &authz.Lobby{Admit: "call.manage", Role: "guest", Bypass: "call.join-backstage"},
				Media: &authz.MediaMapping{RoomJoin: "call.join", CanPublishSources: map[string]string{"camera": "call.manage", "microphone": "call.join"},
					CanSubscribe: "call.join", Hidden: "call.join-backstage"}},
			{Scope: "calltype:livestream", ResourceType: "callx", Join: "call.manage"},
		},
	}
}

func (f *fixture) puts() []authz.Change {
	var out []authz.Change
	for _, e := range f.permissions {
		out = append(out, put(e))
	}
	for _, e := range f.resources {
		out = append(out, put(e))
	}
	for _, e := range f.roles {
		out = append(out, put(e))
	}
	for _, e := range f.grants {
		out = append(out, put(e))
	}
	for _, e := range f.blocks {
		out = append(out, put(e))
	}
	for _, e := range f.quotas {
		out = append(out, put(e))
	}
	for _, e := range f.creatorRoles {
		out = append(out, put(e))
	}
	for _, e := range f.defaultQuotas {
		out = append(out, put(e))
	}
	for _, e := range f.admissions {
		out = append(out, put(e))
	}
	return out
}

func (f *fixture) snapshot(rev authz.Revision) authz.Snapshot {
	return authz.Snapshot{
		Revision: rev, Permissions: f.permissions, Resources: f.resources, Roles: f.roles, Grants: f.grants,
		Blocks: f.blocks, Quotas: f.quotas, CreatorRoles: f.creatorRoles, DefaultQuotas: f.defaultQuotas,
		Admissions: f.admissions,
	}
}

func without[T any](s []T, drop func(T) bool) []T {
	return slices.DeleteFunc(slices.Clone(s), drop)
}
