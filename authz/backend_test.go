package authz_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage/memory"
)

// testBackend is a real backend (storage/memory) with what the engine's
// tests need to widen windows and break commits: a delay before each
// commit, an error injected into the next, and a count of transactions.
type testBackend struct {
	*memory.Memory
	mu       sync.Mutex
	failNext error
	delay    time.Duration
	batches  int
	read     int // changes Changes has returned
	// onLogStart, when set, runs once after LogStart has read where the
	// log begins: a compaction that goes on meanwhile.
	onLogStart func()
}

func (b *testBackend) LogStart(ctx context.Context) (authz.Revision, error) {
	start, err := b.Memory.LogStart(ctx)
	b.mu.Lock()
	hook := b.onLogStart
	b.onLogStart = nil
	b.mu.Unlock()
	if hook != nil {
		hook()
	}
	return start, err
}

func (b *testBackend) Changes(ctx context.Context, after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	css, err := b.Memory.Changes(ctx, after, limit)
	b.mu.Lock()
	for _, cs := range css {
		b.read += len(cs.Changes)
	}
	b.mu.Unlock()
	return css, err
}

// changesRead is how many changes Changes has returned so far.
func (b *testBackend) changesRead() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read
}

func (b *testBackend) Commit(ctx context.Context, ws []authz.Write) ([]authz.Committed, error) {
	b.mu.Lock()
	delay, fail := b.delay, b.failNext
	b.failNext = nil
	b.batches++
	b.mu.Unlock()
	time.Sleep(delay)
	if fail != nil {
		return nil, fail
	}
	return b.Memory.Commit(ctx, ws)
}

// setDelay holds every commit back this long, widening the window between
// a write's plan and its commit that the engine must keep closed.
func (b *testBackend) setDelay(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.delay = d
}

// failNextCommit makes the next Commit fail with err, committing nothing.
func (b *testBackend) failNextCommit(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failNext = err
}

func (b *testBackend) transactions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.batches
}

// committed returns the change sets committed so far.
func (b *testBackend) committed() []authz.ChangeSet {
	var out []authz.ChangeSet
	for {
		batch, err := b.Changes(context.Background(), authz.Revision(len(out)), 1000)
		if err != nil {
			panic(err)
		}
		if len(batch) == 0 {
			return out
		}
		out = append(out, batch...)
	}
}

func (b *testBackend) count() int {
	rev, err := b.Revision(context.Background())
	if err != nil {
		panic(err)
	}
	return int(rev)
}

// world is an engine on a memory backend with a policy applied, read on a
// manual clock: each helper is one write that must succeed.
type world struct {
	t     testing.TB
	ctx   context.Context
	by    authz.Author
	idx   *authz.Index
	eng   *authz.Engine
	be    *testBackend
	clock *authz.ManualClock
}

func newWorld(t testing.TB, p authz.Policy) *world {
	t.Helper()
	return newLimitedWorld(t, p, authz.Limits{})
}

// newLimitedWorld is newWorld with an engine held to limits.
func newLimitedWorld(t testing.TB, p authz.Policy, limits authz.Limits) *world {
	t.Helper()
	// The clock starts at the real time, so that an expiry an hour from
	// time.Now() is an hour ahead; tests move it to let time pass.
	clock := authz.NewManualClock(time.Now())
	be := &testBackend{Memory: memory.New()}
	eng, err := authz.Start(t.Context(), be, authz.Options{Clock: clock, Limits: limits})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(eng.Close)
	w := &world{t: t, ctx: t.Context(), by: authz.Author{Caller: "test"}, idx: eng.Index(), eng: eng, be: be, clock: clock}
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatalf("ApplyPolicy: %v", err)
	}
	return w
}

func (w *world) ok(what string, _ authz.Revision, err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatalf("%s: %v", what, err)
	}
}

// put registers (or moves) name under parent.
func (w *world) put(name, parent string) {
	w.t.Helper()
	rev, err := w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: name, Parent: parent})
	w.ok("PutResource "+name, rev, err)
}

func (w *world) role(r authz.Role) {
	w.t.Helper()
	rev, err := w.eng.PutRole(w.ctx, w.by, r)
	w.ok("PutRole "+r.Name+" at "+r.Scope, rev, err)
}

func (w *world) grant(subject, role, resource string) {
	w.t.Helper()
	w.grantUntil(subject, role, resource, time.Time{})
}

func (w *world) grantUntil(subject, role, resource string, expires time.Time) {
	w.t.Helper()
	rev, err := w.eng.Grant(w.ctx, w.by, authz.Grant{Subject: subject, Role: role, Resource: resource, Expires: expires})
	w.ok("Grant "+role+" to "+subject+" on "+resource, rev, err)
}

// block blocks and returns the block's ID.
func (w *world) block(b authz.Block) string {
	w.t.Helper()
	rev, id, err := w.eng.Block(w.ctx, w.by, b)
	w.ok("Block "+b.Subject+" on "+b.Resource, rev, err)
	return id
}

// store commits changes straight through the backend, as a replica's feed
// would deliver them: for state the engine no longer accepts, such as a
// grant whose expiry has passed since it was written.
func (w *world) store(changes ...authz.Change) {
	w.t.Helper()
	res, err := w.be.Commit(w.ctx, []authz.Write{{Planned: w.idx.Revision(), Set: authz.ChangeSet{Caller: "test", Changes: changes}}})
	if err != nil {
		w.t.Fatalf("Commit: %v", err)
	}
	if err := w.idx.WaitFor(w.ctx, res[0].Revision); err != nil {
		w.t.Fatalf("WaitFor: %v", err)
	}
}

func (w *world) check(subject, permission, resource string) authz.Decision {
	w.t.Helper()
	d, _, err := w.idx.Check(authz.Query{Subject: subject, Permission: permission, Resource: resource})
	if err != nil {
		w.t.Fatalf("Check(%s, %s, %s): %v", subject, permission, resource, err)
	}
	return d
}

func (w *world) permissions(subject, resource string) []string {
	w.t.Helper()
	perms, ok, _ := w.idx.ListPermissions(subject, resource, false)
	if !ok {
		w.t.Fatalf("ListPermissions(%s, %s): resource is not registered", subject, resource)
	}
	return perms
}

// refuses runs a write that must be refused with code, on field and value,
// with both in its message, and without writing anything: the backend gets no
// change set and the index's revision stays put.
func (w *world) refuses(code authz.Code, field, value string, write func() (authz.Revision, error)) *authz.Error {
	w.t.Helper()
	sets, rev := w.be.count(), w.idx.Revision()
	_, err := write()
	var e *authz.Error
	if !errors.As(err, &e) {
		w.t.Fatalf("want a refusal with code %d on %s %q, got %v", code, field, value, err)
	}
	if got := authz.CodeOf(err); got != code {
		w.t.Errorf("code = %d, want %d (%v)", got, code, err)
	}
	if e.Field != field || e.Value != value {
		w.t.Errorf("refusal names %s %q, want %s %q (%v)", e.Field, e.Value, field, value, err)
	}
	if msg := err.Error(); !strings.Contains(msg, field) || !strings.Contains(msg, strconv.Quote(value)) {
		w.t.Errorf("message %q does not name %s %q", msg, field, value)
	}
	w.unchanged(sets, rev)
	return e
}

// writesNothing runs a write that must succeed without committing: it
// answers the current revision and the backend gets no change set.
func (w *world) writesNothing(write func() (authz.Revision, error)) {
	w.t.Helper()
	sets, rev := w.be.count(), w.idx.Revision()
	got, err := write()
	if err != nil {
		w.t.Fatalf("write: %v", err)
	}
	if got != rev {
		w.t.Errorf("write answered revision %d, want the current %d", got, rev)
	}
	w.unchanged(sets, rev)
}

func (w *world) unchanged(sets int, rev authz.Revision) {
	w.t.Helper()
	if n := w.be.count(); n != sets {
		w.t.Errorf("the backend got %d new change sets, want none", n-sets)
	}
	if got := w.idx.Revision(); got != rev {
		w.t.Errorf("index revision moved from %d to %d", rev, got)
	}
}

// lastOps returns the ops of the last committed change set.
func (w *world) lastOps() []string {
	w.t.Helper()
	sets := w.be.committed()
	if len(sets) == 0 {
		w.t.Fatal("nothing was committed")
	}
	var ops []string
	for _, c := range sets[len(sets)-1].Changes {
		ops = append(ops, c.Op.String())
	}
	return ops
}

// Stream Video's 23 call capabilities (seeds/003), and one reserved
// permission that a domain permission implies, as DESIGN.md has it:
// "Stream's block-users implies" usher.blocks.write.
var streamCapabilities = []string{
	"join-call", "read-call", "create-call", "join-ended-call", "join-backstage",
	"update-call", "update-call-settings", "screenshare", "send-video", "send-audio",
	"start-record-call", "stop-record-call", "start-broadcast-call", "stop-broadcast-call",
	"end-call", "mute-users", "update-call-permissions", "block-users", "create-reaction",
	"pin-for-everyone", "remove-call-member", "start-transcription-call", "stop-transcription-call",
}

var callMemberCapabilities = []string{"join-call", "read-call", "send-audio", "send-video", "screenshare", "create-reaction"}

// streamPolicy is Stream Video's built-in call roles at root over a small
// tree:
//
//	root
//	├── account:acme
//	│   ├── calltype:default    ── call:default:1
//	│   └── calltype:livestream ── call:livestream:42, call:livestream:43
//	└── account:globex
//	    └── calltype:globex     ── call:globex:7
//
// The roles' capabilities are this fixture's choice (the seed leaves them to
// Stream's dashboard); host is "one host per room": max_holders 1 and
// bindable only on calls.
func streamPolicy() authz.Policy {
	var p authz.Policy
	for _, c := range streamCapabilities {
		p.Permissions = append(p.Permissions, authz.Permission{Name: c})
	}
	p.Permissions = append(p.Permissions,
		authz.Permission{Name: "usher.blocks.write", Parents: []string{"block-users"}},
		authz.Permission{Name: "usher.grants.write", Parents: []string{"update-call-permissions"}})
	p.Resources = []authz.Resource{
		{Name: "account:acme"},
		{Name: "calltype:default", Parent: "account:acme"},
		{Name: "calltype:livestream", Parent: "account:acme"},
		{Name: "call:default:1", Parent: "calltype:default"},
		{Name: "call:livestream:42", Parent: "calltype:livestream"},
		{Name: "call:livestream:43", Parent: "calltype:livestream"},
		{Name: "account:globex"},
		{Name: "calltype:globex", Parent: "account:globex"},
		{Name: "call:globex:7", Parent: "calltype:globex"},
	}
	moderator := append([]string{"mute-users", "block-users", "remove-call-member", "pin-for-everyone"}, callMemberCapabilities...)
	p.Roles = []authz.Role{
		{Name: "user", Scope: "root", Permissions: []string{"join-call", "read-call", "create-reaction"}},
		{Name: "call-member", Scope: "root", Permissions: callMemberCapabilities},
		{Name: "moderator", Scope: "root", Permissions: moderator},
		{Name: "host", Scope: "root", Permissions: append([]string{"end-call", "update-call", "start-record-call", "stop-record-call"}, moderator...),
			MaxHolders: 1, BindableOn: []string{"call"}},
		{Name: "admin", Scope: "root", Permissions: []string{authz.Wildcard}},
	}
	return p
}

// alfaviewPolicy is the permission tree of seeds/004:
//
//	company.manage-settings
//	├── company.show-usernames
//	├── users.administrate
//	│   └── users.list
//	└── rooms.administrate
//	    ├── rooms.list
//	    └── rooms.create
//
// with usher.blocks.write below two domain permissions (a DAG), and one role
// per permission, named after it, at root.
func alfaviewPolicy() authz.Policy {
	p := authz.Policy{
		Permissions: []authz.Permission{
			{Name: "company.manage-settings", Description: "Manage company settings"},
			{Name: "company.show-usernames", Parents: []string{"company.manage-settings"}, Description: "Show all usernames"},
			{Name: "users.administrate", Parents: []string{"company.manage-settings"}, Description: "Administrate users"},
			{Name: "users.list", Parents: []string{"users.administrate"}, Description: "List all users"},
			{Name: "rooms.administrate", Parents: []string{"company.manage-settings"}, Description: "Administrate rooms"},
			{Name: "rooms.list", Parents: []string{"rooms.administrate"}, Description: "List all rooms"},
			{Name: "rooms.create", Parents: []string{"rooms.administrate"}, Description: "Create a room"},
			{Name: "usher.blocks.write", Parents: []string{"users.administrate", "rooms.administrate"}},
			{Name: "usher.grants.write", Parents: []string{"users.administrate"}},
			{Name: "usher.resources.create.room", Parents: []string{"rooms.create"}},
			{Name: "usher.resources.create.department", Parents: []string{"rooms.administrate"}},
			{Name: "usher.resources.delete", Parents: []string{"rooms.administrate"}},
			{Name: "usher.resources.move", Parents: []string{"rooms.administrate"}},
		},
		Resources: []authz.Resource{{Name: "company:alfa"}, {Name: "room:alfa-lobby", Parent: "company:alfa"}},
	}
	for _, perm := range p.Permissions {
		p.Roles = append(p.Roles, authz.Role{Name: "has." + perm.Name, Scope: "root", Permissions: []string{perm.Name}})
	}
	return p
}

// as is the author of a write that a service makes on behalf of actor.
func as(actor string) authz.Author { return authz.Author{Caller: "svc:console", Actor: actor} }

// mentions fails unless e's message quotes every one of words, as a refusal
// that says which rule refused it must.
func mentions(t testing.TB, e *authz.Error, words ...string) {
	t.Helper()
	if e == nil {
		return
	}
	for _, w := range words {
		if !strings.Contains(e.Error(), strconv.Quote(w)) {
			t.Errorf("message %q does not name %q", e.Error(), w)
		}
	}
}

// VancastVideo's role names at each level (seeds/002).
var (
	vancastEventRoles     = []string{"event.manager", "event.moderator", "event.owner", "event.producer"}
	vancastWorkspaceRoles = []string{"workspace.administrator", "workspace.owner", "workspace.producer"}
)

// vancastPolicy is VancastVideo's account > workspace > event roles
// (seeds/002) over a small tree:
//
//	root
//	└── account:vancast
//	    ├── workspace:vancast-live ── event:launch
//	    └── workspace:vancast-sales
//
// Every role is built in at root and bindable only on its level. Who may add
// whom is assignable_roles: an event Owner any event role, a Manager "any
// role except Owner", a Producer "only new Producer collaborators", a
// Moderator none. A workspace Owner has "All permissions over the
// Workspace", which this fixture takes to include adding collaborators to its
// events. The reserved permissions hang below the domain permissions that
// imply them: creating workspaces and events is usher.resources.create, the
// Account's Plan usher.quotas.write, custom roles usher.roles.write, adding or
// removing account users usher.blocks.write. Whoever registers a workspace or
// an event as an actor becomes its Owner.
func vancastPolicy() authz.Policy {
	account := []string{"account.billing.view", "account.console", "account.credits.buy", "account.plan.manage",
		"account.roles.manage", "account.users.manage", "account.workspaces.create"}
	workspace := []string{"workspace.admins.add", "workspace.events.create", "workspace.events.manage", "workspace.settings.manage", "workspace.users.add"}
	event := []string{"event.collaborators.add", "event.control-room.manage", "event.delete", "event.links.manage", "event.on-demand.manage",
		"event.qa.moderate", "event.sessions.manage", "event.streaming.launch", "event.webcast.content", "event.webcast.edit"}
	var p authz.Policy
	for _, list := range [][]string{account, workspace, event} {
		for _, name := range list {
			p.Permissions = append(p.Permissions, authz.Permission{Name: name})
		}
	}
	p.Permissions = append(p.Permissions,
		authz.Permission{Name: "usher.resources.create.workspace", Parents: []string{"account.workspaces.create"}},
		authz.Permission{Name: "usher.resources.create.event", Parents: []string{"workspace.events.create"}},
		authz.Permission{Name: "usher.resources.create.folder", Parents: []string{"account.console"}},
		authz.Permission{Name: "usher.resources.delete.event", Parents: []string{"event.delete"}},
		authz.Permission{Name: "usher.resources.move.event", Parents: []string{"workspace.events.manage"}},
		authz.Permission{Name: "usher.grants.write", Parents: []string{"account.users.manage", "workspace.users.add", "event.collaborators.add"}},
		authz.Permission{Name: "usher.quotas.write", Parents: []string{"account.plan.manage"}},
		authz.Permission{Name: "usher.roles.write", Parents: []string{"account.roles.manage"}},
		authz.Permission{Name: "usher.blocks.write", Parents: []string{"account.users.manage"}},
	)
	p.Resources = []authz.Resource{
		{Name: "account:vancast"},
		{Name: "workspace:vancast-live", Parent: "account:vancast"},
		{Name: "workspace:vancast-sales", Parent: "account:vancast"},
		{Name: "event:launch", Parent: "workspace:vancast-live"},
	}
	on := func(typ string) []string { return []string{typ} }
	p.Roles = []authz.Role{
		{Name: "account.owner", Scope: "root", Permissions: account, AssignableRoles: []string{"account.owner", "account.administrator"}, BindableOn: on("account")},
		{Name: "account.administrator", Scope: "root", Permissions: []string{"account.console", "account.roles.manage", "account.workspaces.create"}, BindableOn: on("account")},
		{Name: "workspace.owner", Scope: "root", Permissions: workspace, AssignableRoles: append(slices.Clone(vancastWorkspaceRoles), vancastEventRoles...), BindableOn: on("workspace")},
		{Name: "workspace.administrator", Scope: "root", Permissions: []string{"workspace.events.create", "workspace.events.manage", "workspace.users.add"}, AssignableRoles: []string{"workspace.producer"}, BindableOn: on("workspace")},
		{Name: "workspace.producer", Scope: "root", Permissions: []string{"workspace.events.manage"}, BindableOn: on("workspace")},
		{Name: "event.owner", Scope: "root", Permissions: event, AssignableRoles: vancastEventRoles, BindableOn: on("event")},
		{Name: "event.manager", Scope: "root", Permissions: slices.DeleteFunc(slices.Clone(event), func(s string) bool { return s == "event.delete" }),
			AssignableRoles: []string{"event.manager", "event.moderator", "event.producer"}, BindableOn: on("event")},
		{Name: "event.producer", Scope: "root", Permissions: []string{"event.collaborators.add", "event.control-room.manage", "event.links.manage", "event.streaming.launch"},
			AssignableRoles: []string{"event.producer"}, BindableOn: on("event")},
		{Name: "event.moderator", Scope: "root", Permissions: []string{"event.qa.moderate"}, BindableOn: on("event")},
	}
	p.CreatorRoles = []authz.CreatorRole{{ResourceType: "event", Role: "event.owner"}, {ResourceType: "workspace", Role: "workspace.owner"}}
	return p
}

// alfaviewRoles names seeds/004's permissions as its administration
// interface does, one role per permission.
var alfaviewRoles = map[string]string{
	"manage-company-settings": "company.manage-settings",
	"show-all-usernames":      "company.show-usernames",
	"administrate-users":      "users.administrate",
	"list-all-users":          "users.list",
	"administrate-rooms":      "rooms.administrate",
	"list-all-rooms":          "rooms.list",
	"create-a-room":           "rooms.create",
}

// alfaviewUsersPolicy is alfaviewPolicy's permission tree with one role per
// permission at root (role "administrate-users" = [users.administrate]).
// "Only users with the Administrate users permission can grant or revoke
// permissions for other users. Only permissions that the user has can be
// granted": the roles whose permission is or implies Administrate users
// assign "*", and no other role assigns anything.
func alfaviewUsersPolicy() authz.Policy {
	p := alfaviewPolicy()
	p.Roles = nil
	for _, name := range slices.Sorted(maps.Keys(alfaviewRoles)) {
		r := authz.Role{Name: name, Scope: "root", Permissions: []string{alfaviewRoles[name]}}
		if name == "administrate-users" || name == "manage-company-settings" {
			r.AssignableRoles = []string{authz.Wildcard}
		}
		p.Roles = append(p.Roles, r)
	}
	return p
}

// noID drops the block ID Block returns, for helpers that take a write
// returning a revision and an error.
func noID(rev authz.Revision, _ string, err error) (authz.Revision, error) { return rev, err }

// exportAll pages through ExportPolicy and returns the whole policy and the
// revision of its last page.
func exportAll(w *world) (authz.Policy, authz.Revision) {
	w.t.Helper()
	var (
		all   authz.Policy
		token string
		rev   authz.Revision
	)
	for {
		p, next, r, err := w.idx.ExportPolicy(authz.MaxPageSize, token)
		if err != nil {
			w.t.Fatalf("ExportPolicy: %v", err)
		}
		all.Permissions = append(all.Permissions, p.Permissions...)
		all.Resources = append(all.Resources, p.Resources...)
		all.Roles = append(all.Roles, p.Roles...)
		all.CreatorRoles = append(all.CreatorRoles, p.CreatorRoles...)
		all.Quotas = append(all.Quotas, p.Quotas...)
		all.DefaultQuotas = append(all.DefaultQuotas, p.DefaultQuotas...)
		all.Admissions = append(all.Admissions, p.Admissions...)
		rev = r
		if next == "" {
			return all, rev
		}
		token = next
	}
}
