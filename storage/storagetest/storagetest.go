// Package storagetest is the conformance suite every storage.Backend must
// pass, so that a second backend is proved by the same cases as the first
// (as OpenFGA's RunAllTests and SpiceDB's datastore tests do).
//
// It imports testing and is meant only for _test.go files.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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
		{"an empty store is at revision 0 with an empty snapshot", testEmpty},
		{"each commit bumps the revision by one and returns it", testRevisionBumps},
		{"a commit with no changes still bumps the revision", testEmptyCommit},
		{"puts of every kind read back the same after a reopen", testReopenAndCompare},
		{"a put of an existing key replaces it", testPutReplaces},
		{"deletes remove exactly the keyed entity", testDeletes},
		{"Changes returns committed change sets intact, paginated by after and limit", testChanges},
		{"the store stamps a change set without a time", testTimeStamped},
		{"watchers receive committed change sets in order with their revisions", testWatch},
		{"a cancelled context commits nothing", testCancelled},
		{"a change set with a malformed change commits nothing", testMalformed},
		{"concurrent commits get distinct, gap-free revisions", testConcurrentCommits},
		{"a batch takes consecutive revisions, delivered in order", testBatch},
		{"a batch with one malformed change set commits none of it", testMalformedBatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{t: t, dir: t.TempDir(), open: open}
			h.reopen()
			t.Cleanup(h.close)
			tc.run(t, h)
		})
	}
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

func (h *harness) commit(cs authz.ChangeSet) authz.Revision {
	h.t.Helper()
	rev, err := h.b.Commit(context.Background(), cs)
	if err != nil {
		h.t.Fatalf("Commit: %v", err)
	}
	return rev
}

func (h *harness) revision() authz.Revision {
	h.t.Helper()
	rev, err := h.b.Revision()
	if err != nil {
		h.t.Fatalf("Revision: %v", err)
	}
	return rev
}

func (h *harness) snapshot() authz.Snapshot {
	h.t.Helper()
	snap, err := h.b.Snapshot()
	if err != nil {
		h.t.Fatalf("Snapshot: %v", err)
	}
	return snap
}

func (h *harness) changes(after authz.Revision, limit int) []authz.ChangeSet {
	h.t.Helper()
	css, err := h.b.Changes(after, limit)
	if err != nil {
		h.t.Fatalf("Changes(%d, %d): %v", after, limit, err)
	}
	return css
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
			t.Fatalf("after commit %d Snapshot().Revision = %d", want, got)
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

	h.reopen()
	if got := h.revision(); got != rev {
		t.Errorf("after reopen Revision() = %d, want %d", got, rev)
	}
	wantSnapshot(t, h.snapshot(), want)
}

func testPutReplaces(t *testing.T, h *harness) {
	w := world()
	h.commit(changeSet("svc", w.puts()...))

	// Same keys, new values: a re-grant updates the expiry, a role is
	// redefined, a block gets a reason.
	w.permissions[0].Description = "changed"
	w.resources[1].Parent = "root"
	w.roles[0].Permissions = []string{"call.join"}
	w.grants[0].Expires = later
	w.grants[1].Expires = time.Time{}
	w.blocks[0].Reason = "changed"
	rev := h.commit(changeSet("svc",
		put(w.permissions[0]), put(w.resources[1]), put(w.roles[0]),
		put(w.grants[0]), put(w.grants[1]), put(w.blocks[0])))
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
		del(authz.Block{Subject: "user:mallory", Resource: "account:acme"}),
		del(authz.Grant{Subject: "user:nobody", Resource: "account:acme", Role: "owner"}),
	))
	w.permissions = without(w.permissions, func(p authz.Permission) bool { return p.Name == "call.join" })
	w.resources = without(w.resources, func(r authz.Resource) bool { return r.Name == "call:livestream:42" })
	w.roles = without(w.roles, func(r authz.Role) bool { return r.Scope == "calltype:livestream" && r.Name == "host" })
	w.grants = without(w.grants, func(g authz.Grant) bool {
		return g.Subject == "user:alice" && g.Resource == "account:acme" && g.Role == "owner"
	})
	w.blocks = without(w.blocks, func(b authz.Block) bool { return b.Subject == "user:mallory" && b.Resource == "account:acme" })
	wantSnapshot(t, h.snapshot(), w.snapshot(rev))
}

func testChanges(t *testing.T, h *harness) {
	w := world()
	var want []authz.ChangeSet
	for i, c := range w.puts()[:5] {
		cs := authz.ChangeSet{
			Time:    time.Date(2030, 1, 2, 3, 4, 5, 600+i, berlin),
			Caller:  "service:console",
			Actor:   fmt.Sprintf("user:u%d", i),
			Changes: []authz.Change{c, del(authz.Grant{Subject: "user:x", Resource: "doc:1", Role: "r"})},
		}
		cs.Revision = h.commit(cs)
		want = append(want, cs)
	}
	tests := []struct {
		name  string
		after authz.Revision
		limit int
		want  []authz.ChangeSet
	}{
		{"everything from the start", 0, 100, want},
		{"a limit stops early", 0, 2, want[:2]},
		{"after skips what was seen", 2, 2, want[2:4]},
		{"the last page is short", 4, 2, want[4:]},
		{"nothing after the latest", 5, 10, nil},
		{"nothing after a future revision", 99, 10, nil},
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

func testWatch(t *testing.T, h *harness) {
	var early, late recorder
	h.b.Watch(early.record)
	h.commit(changeSet("svc", put(grant("user:a", "viewer", "doc:1", time.Time{}))))
	h.b.Watch(late.record)
	h.commit(changeSet("svc", put(grant("user:b", "viewer", "doc:1", later))))
	h.commit(changeSet("svc", del(authz.Grant{Subject: "user:a", Resource: "doc:1", Role: "viewer"})))

	logged := h.changes(0, 10)
	if d := diffChangeSets(early.got(), logged); d != "" {
		t.Errorf("watcher registered first: %s", d)
	}
	if d := diffChangeSets(late.got(), logged[1:]); d != "" {
		t.Errorf("watcher registered after revision 1: %s", d)
	}
}

func testCancelled(t *testing.T, h *harness) {
	var w recorder
	h.b.Watch(w.record)
	h.commit(changeSet("svc", put(grant("user:a", "viewer", "doc:1", time.Time{}))))
	before := h.snapshot()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rev, err := h.b.Commit(ctx, changeSet("svc", put(grant("user:b", "viewer", "doc:1", time.Time{}))))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Commit with a cancelled context: revision %d, error %v, want context.Canceled", rev, err)
	}
	if got := h.revision(); got != 1 {
		t.Errorf("Revision() = %d, want 1", got)
	}
	wantSnapshot(t, h.snapshot(), before)
	if css := h.changes(1, 10); len(css) != 0 {
		t.Errorf("Changes(1, 10) = %d change sets, want none", len(css))
	}
	if n := len(w.got()); n != 1 {
		t.Errorf("watcher got %d change sets, want 1", n)
	}
}

func testMalformed(t *testing.T, h *harness) {
	var w recorder
	h.b.Watch(w.record)
	_, err := h.b.Commit(context.Background(), changeSet("svc",
		put(grant("user:a", "viewer", "doc:1", time.Time{})),
		authz.Change{Op: authz.OpPutGrant}, // the grant is missing
	))
	if err == nil {
		t.Fatal("Commit of a put without its grant succeeded")
	}
	if got := h.revision(); got != 0 {
		t.Errorf("Revision() = %d, want 0", got)
	}
	wantSnapshot(t, h.snapshot(), authz.Snapshot{})
	if n := len(w.got()); n != 0 {
		t.Errorf("watcher got %d change sets, want none", n)
	}
}

func testBatch(t *testing.T, h *harness) {
	var w recorder
	h.b.Watch(w.record)
	if _, err := h.b.Commit(context.Background(), changeSet("svc", put(grant("user:a", "viewer", "doc:1", time.Time{})))); err != nil {
		t.Fatal(err)
	}
	batch := []authz.ChangeSet{
		changeSet("svc", put(grant("user:b", "viewer", "doc:1", time.Time{}))),
		changeSet("console", del(grant("user:a", "viewer", "doc:1", time.Time{}))),
		changeSet("svc", put(grant("user:c", "viewer", "doc:1", time.Time{}))),
	}
	revs, err := h.b.CommitBatch(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 3 || revs[0] != 2 || revs[1] != 3 || revs[2] != 4 {
		t.Fatalf("CommitBatch = %v, want [2 3 4]", revs)
	}
	if got := w.got(); len(got) != 4 || got[1].Revision != 2 || got[2].Caller != "console" || got[3].Revision != 4 {
		t.Errorf("watcher got %s, want revisions 1 to 4 in order", describeAll(got))
	}
	logged, err := h.b.Changes(1, 10)
	if err != nil || len(logged) != 3 || logged[1].Caller != "console" {
		t.Errorf("Changes(1) = %s, %v; want the batch's three change sets", describeAll(logged), err)
	}
	h.reopen()
	snap := h.snapshot()
	if snap.Revision != 4 || len(snap.Grants) != 2 {
		t.Errorf("after a reopen: revision %d and grants %v, want 4 and user:b, user:c", snap.Revision, snap.Grants)
	}
}

func testMalformedBatch(t *testing.T, h *harness) {
	var w recorder
	h.b.Watch(w.record)
	_, err := h.b.CommitBatch(context.Background(), []authz.ChangeSet{
		changeSet("svc", put(grant("user:a", "viewer", "doc:1", time.Time{}))),
		changeSet("svc", authz.Change{Op: authz.OpPutGrant}), // the grant is missing
	})
	if err == nil {
		t.Fatal("CommitBatch with a malformed change set succeeded")
	}
	if got := h.revision(); got != 0 {
		t.Errorf("Revision() = %d, want 0", got)
	}
	wantSnapshot(t, h.snapshot(), authz.Snapshot{})
	if n := len(w.got()); n != 0 {
		t.Errorf("watcher got %d change sets, want none", n)
	}
}

func describeAll(css []authz.ChangeSet) string {
	var parts []string
	for _, cs := range css {
		parts = append(parts, fmt.Sprintf("%d by %s", cs.Revision, cs.Caller))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func testConcurrentCommits(t *testing.T, h *harness) {
	const writers, perWriter = 8, 10
	var w recorder
	h.b.Watch(w.record)

	var wg sync.WaitGroup
	revs := make([][]authz.Revision, writers)
	errs := make(chan error, writers*perWriter)
	for i := range writers {
		wg.Go(func() {
			for j := range perWriter {
				g := grant(fmt.Sprintf("user:w%d-%d", i, j), "viewer", "doc:1", time.Time{})
				rev, err := h.b.Commit(context.Background(), changeSet("svc", put(g)))
				if err != nil {
					errs <- err
					return
				}
				revs[i] = append(revs[i], rev)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Commit: %v", err)
	}

	all := slices.Concat(revs...)
	slices.Sort(all)
	for i, rev := range all {
		if want := authz.Revision(i + 1); rev != want {
			t.Fatalf("sorted revisions %v: position %d is %d, want %d", all, i, rev, want)
		}
	}
	for i, cs := range w.got() {
		if want := authz.Revision(i + 1); cs.Revision != want {
			t.Fatalf("watcher's change set %d has revision %d, want %d (delivered out of order)", i, cs.Revision, want)
		}
	}
	total := writers * perWriter
	if n := len(w.got()); n != total {
		t.Errorf("watcher got %d change sets, want %d", n, total)
	}
	if got := h.revision(); got != authz.Revision(total) {
		t.Errorf("Revision() = %d, want %d", got, total)
	}
	if n := len(h.snapshot().Grants); n != total {
		t.Errorf("snapshot holds %d grants, want %d", n, total)
	}
	if d := diffChangeSets(w.got(), h.changes(0, total+1)); d != "" {
		t.Errorf("watched and logged change sets differ: %s", d)
	}
}

// recorder is a watcher that keeps what it is given.
type recorder struct {
	mu  sync.Mutex
	css []authz.ChangeSet
}

func (r *recorder) record(cs authz.ChangeSet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.css = append(r.css, cs)
}

func (r *recorder) got() []authz.ChangeSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.css)
}

var (
	berlin = time.FixedZone("CEST", 2*60*60)
	// Nanoseconds and a non-UTC zone prove that times survive exactly,
	// compared as instants.
	soon  = time.Date(2031, 5, 6, 7, 8, 9, 123456789, berlin)
	later = time.Date(2032, 1, 1, 0, 0, 0, 1, time.UTC)
)

// fixture is one of every entity kind, with pairs that share key prefixes so
// that deletes and lookups by key are tested against their neighbours.
type fixture struct {
	permissions []authz.Permission
	resources   []authz.Resource
	roles       []authz.Role
	grants      []authz.Grant
	blocks      []authz.Block
	quotas      []authz.Quota
	creators    []authz.CreatorRole
}

func world() *fixture {
	return &fixture{
		permissions: []authz.Permission{
			{Name: "call.join", Parents: []string{"call.manage"}, Description: "join a call"},
			{Name: "call.manage"},
			{Name: "usher.blocks.write", Parents: []string{"call.manage", "call.block-users"}},
			{Name: "call.block-users"},
		},
		resources: []authz.Resource{
			{Name: "account:acme", Parent: "root", Creator: "user:alice"},
			{Name: "calltype:livestream", Parent: "account:acme"},
			{Name: "call:livestream:42", Parent: "calltype:livestream"},
			{Name: "call:livestream:420", Parent: "calltype:livestream"},
		},
		roles: []authz.Role{
			{
				Name: "host", Scope: "root", Permissions: []string{"call.join", "call.manage"},
				AssignableRoles: []string{"member", authz.Wildcard}, BindableOn: []string{"call"},
				MaxHolders: 1, Description: "runs the call",
			},
			{Name: "host", Scope: "calltype:livestream", Permissions: []string{authz.Wildcard}},
			{Name: "member", Scope: "root", Permissions: []string{"call.join"}},
		},
		grants: []authz.Grant{
			{Subject: "user:alice", Role: "owner", Resource: "account:acme"},
			{Subject: "user:alice", Role: "host", Resource: "account:acme", Expires: soon},
			{Subject: "user:alice", Role: "owner", Resource: "account:acme2"},
			{Subject: "user:alice2", Role: "owner", Resource: "account:acme"},
		},
		blocks: []authz.Block{
			{Subject: "user:mallory", Resource: "account:acme", Reason: "spam"},
			{Subject: "user:mallory", Resource: "call:livestream:42", Permissions: []string{"call.join"}, Expires: soon},
		},
		quotas: []authz.Quota{
			{Scope: "account:acme", ResourceType: "call", Limit: 100},
			{Scope: "account:acme", ResourceType: "call", Subject: "user:alice", Limit: 3},
		},
		creators: []authz.CreatorRole{
			{ResourceType: "call", Role: "host"},
			{ResourceType: "event", Role: "owner"},
		},
	}
}

func (f *fixture) puts() []authz.Change {
	var cs []authz.Change
	for _, p := range f.permissions {
		cs = append(cs, put(p))
	}
	for _, r := range f.resources {
		cs = append(cs, put(r))
	}
	for _, r := range f.roles {
		cs = append(cs, put(r))
	}
	for _, g := range f.grants {
		cs = append(cs, put(g))
	}
	for _, b := range f.blocks {
		cs = append(cs, put(b))
	}
	for _, q := range f.quotas {
		cs = append(cs, put(q))
	}
	for _, c := range f.creators {
		cs = append(cs, put(c))
	}
	return cs
}

// snapshot is what a backend must load for the fixture: every kind but
// resources in key order, the order the Snapshot contract promises.
func (f *fixture) snapshot(rev authz.Revision) authz.Snapshot {
	s := authz.Snapshot{
		Revision:     rev,
		Permissions:  slices.Clone(f.permissions),
		Resources:    slices.Clone(f.resources),
		Roles:        slices.Clone(f.roles),
		Grants:       slices.Clone(f.grants),
		Blocks:       slices.Clone(f.blocks),
		Quotas:       slices.Clone(f.quotas),
		CreatorRoles: slices.Clone(f.creators),
	}
	slices.SortFunc(s.Permissions, func(a, b authz.Permission) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(s.Roles, func(a, b authz.Role) int { return compareKeys(a.Scope, a.Name, b.Scope, b.Name) })
	slices.SortFunc(s.Grants, func(a, b authz.Grant) int {
		return compareKeys(a.Subject, a.Resource, a.Role, b.Subject, b.Resource, b.Role)
	})
	slices.SortFunc(s.Blocks, func(a, b authz.Block) int {
		return compareKeys(a.Subject, a.Resource, b.Subject, b.Resource)
	})
	return s
}

// compareKeys orders composite keys as their NUL-joined bytes sort; it takes
// both keys' parts, first key then second.
func compareKeys(parts ...string) int {
	n := len(parts) / 2
	return strings.Compare(strings.Join(parts[:n], "\x00"), strings.Join(parts[n:], "\x00"))
}

func without[T any](s []T, drop func(T) bool) []T {
	n := len(s)
	s = slices.DeleteFunc(s, drop)
	if len(s) != n-1 {
		panic(fmt.Sprintf("fixture: removed %d entities, want 1", n-len(s)))
	}
	return s
}

func changeSet(caller string, changes ...authz.Change) authz.ChangeSet {
	return authz.ChangeSet{Time: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), Caller: caller, Changes: changes}
}

func grant(subject, role, resource string, expires time.Time) authz.Grant {
	return authz.Grant{Subject: subject, Role: role, Resource: resource, Expires: expires}
}

// put and del build the Change whose Op matches the entity's kind.
func put(entity any) authz.Change { return change(entity, true) }
func del(entity any) authz.Change { return change(entity, false) }

func change(entity any, put bool) authz.Change {
	pick := func(putOp, delOp authz.Op) authz.Op {
		if put {
			return putOp
		}
		return delOp
	}
	switch e := entity.(type) {
	case authz.Permission:
		return authz.Change{Op: pick(authz.OpPutPermission, authz.OpDeletePermission), Permission: &e}
	case authz.Resource:
		return authz.Change{Op: pick(authz.OpPutResource, authz.OpDeleteResource), Resource: &e}
	case authz.Role:
		return authz.Change{Op: pick(authz.OpPutRole, authz.OpDeleteRole), Role: &e}
	case authz.Grant:
		return authz.Change{Op: pick(authz.OpPutGrant, authz.OpDeleteGrant), Grant: &e}
	case authz.Block:
		return authz.Change{Op: pick(authz.OpPutBlock, authz.OpDeleteBlock), Block: &e}
	case authz.Quota:
		return authz.Change{Op: pick(authz.OpPutQuota, authz.OpDeleteQuota), Quota: &e}
	case authz.CreatorRole:
		return authz.Change{Op: pick(authz.OpPutCreatorRole, authz.OpDeleteCreatorRole), CreatorRole: &e}
	}
	panic(fmt.Sprintf("storagetest: no change for %T", entity))
}
