package authz_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// The benchmark world: a tree of depth 4 below root, 100 accounts with 10
// workspaces each, 10 events per workspace and 10 calls per event (111,100
// resources); 100,000 grants of 20,000 users spread over every level; 1,000
// blocks; every tenth account redefines "moderator".
const (
	benchAccounts   = 100
	benchFanOut     = 10
	benchUsers      = 20_000
	benchGrants     = 100_000
	benchBlocks     = 1_000
	benchQueries    = 1024
	benchPermission = "join-call"
)

func benchAccount(a int) string       { return fmt.Sprintf("account:a%03d", a) }
func benchWorkspace(a, w int) string  { return fmt.Sprintf("workspace:a%03d-w%d", a, w) }
func benchEvent(a, w, e int) string   { return fmt.Sprintf("event:a%03d-w%d-e%d", a, w, e) }
func benchCall(a, w, e, c int) string { return fmt.Sprintf("call:a%03d-w%d-e%d-c%d", a, w, e, c) }
func benchUser(u int) string          { return fmt.Sprintf("user:u%05d", u) }
func benchPath(r *rand.Rand) [4]int {
	return [4]int{r.IntN(benchAccounts), r.IntN(benchFanOut), r.IntN(benchFanOut), r.IntN(benchFanOut)}
}
func benchResource(p [4]int, level int) string {
	switch level {
	case 0:
		return benchAccount(p[0])
	case 1:
		return benchWorkspace(p[0], p[1])
	case 2:
		return benchEvent(p[0], p[1], p[2])
	default:
		return benchCall(p[0], p[1], p[2], p[3])
	}
}

type benchSet struct {
	idx     *authz.Index
	queries map[string][]authz.Query
}

var benchWorld = sync.OnceValues(buildBenchWorld)

func buildBenchWorld() (*benchSet, error) {
	idx, err := authz.NewIndex(authz.Snapshot{})
	if err != nil {
		return nil, err
	}
	rev := authz.Revision(0)
	apply := func(changes []authz.Change) {
		rev++
		idx.Apply(authz.ChangeSet{Revision: rev, Caller: "bench", Changes: changes})
	}

	var changes []authz.Change
	p := streamPolicy()
	for i := range p.Permissions {
		changes = append(changes, authz.Change{Op: authz.OpPutPermission, Permission: &p.Permissions[i]})
	}
	for i := range p.Roles {
		p.Roles[i].MaxHolders, p.Roles[i].BindableOn = 0, nil
		changes = append(changes, authz.Change{Op: authz.OpPutRole, Role: &p.Roles[i]})
	}
	apply(changes)

	changes = nil
	put := func(name, parent string) {
		changes = append(changes, authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: name, Parent: parent}})
	}
	for a := range benchAccounts {
		put(benchAccount(a), authz.RootName)
		if a%10 == 0 {
			changes = append(changes, authz.Change{Op: authz.OpPutRole, Role: &authz.Role{Name: "moderator", Scope: benchAccount(a), Permissions: []string{"join-call", "mute-users"}}})
		}
		for w := range benchFanOut {
			put(benchWorkspace(a, w), benchAccount(a))
			for e := range benchFanOut {
				put(benchEvent(a, w, e), benchWorkspace(a, w))
				for c := range benchFanOut {
					put(benchCall(a, w, e, c), benchEvent(a, w, e))
				}
			}
		}
	}
	apply(changes)

	// Grants: 5 per user; 60% on calls, 25% on events, 10% on workspaces, 5%
	// on accounts.
	r := rand.New(rand.NewPCG(1, 2))
	roles := []string{"user", "call-member", "moderator", "host", "admin"}
	level := func() int {
		switch x := r.IntN(100); {
		case x < 5:
			return 0
		case x < 15:
			return 1
		case x < 40:
			return 2
		default:
			return 3
		}
	}
	type placed struct {
		subject string
		path    [4]int
		level   int
	}
	var grants []placed
	changes = nil
	for i := range benchGrants {
		g := placed{subject: benchUser(i % benchUsers), path: benchPath(r), level: level()}
		grants = append(grants, g)
		changes = append(changes, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{
			Subject: g.subject, Role: roles[r.IntN(len(roles))], Resource: benchResource(g.path, g.level)}})
	}
	apply(changes)

	// Blocks of everything at an account, of users who hold grants there.
	var blocks []placed
	changes = nil
	for range benchBlocks {
		g := grants[r.IntN(len(grants))]
		blocks = append(blocks, g)
		changes = append(changes, authz.Change{Op: authz.OpPutBlock, Block: &authz.Block{Subject: g.subject, Resource: benchAccount(g.path[0]), Reason: "bench"}})
	}
	apply(changes)

	// Queries, each verified to be decided the way its benchmark says.
	s := &benchSet{idx: idx, queries: map[string][]authz.Query{}}
	pick := func(name string, want func(authz.Decision, authz.Query) bool, next func() authz.Query) error {
		for tries := 0; len(s.queries[name]) < benchQueries; tries++ {
			if tries > 100*benchQueries {
				return fmt.Errorf("%s: found only %d queries", name, len(s.queries[name]))
			}
			q := next()
			d, _, err := idx.Check(q)
			if err != nil {
				return err
			}
			if want(d, q) {
				s.queries[name] = append(s.queries[name], q)
			}
		}
		return nil
	}
	grantAt := func(level int) placed {
		for {
			if g := grants[r.IntN(len(grants))]; g.level == level {
				return g
			}
		}
	}
	err = pick("allowed_direct", func(d authz.Decision, q authz.Query) bool { return d.Allowed && d.Scope == q.Resource }, func() authz.Query {
		g := grantAt(3)
		return authz.Query{Subject: g.subject, Permission: benchPermission, Resource: benchResource(g.path, 3)}
	})
	if err == nil {
		err = pick("allowed_inherited", func(d authz.Decision, q authz.Query) bool { return d.Allowed && authz.TypeOf(d.Scope) == "account" }, func() authz.Query {
			g := grantAt(0)
			p := benchPath(r)
			p[0] = g.path[0]
			return authz.Query{Subject: g.subject, Permission: benchPermission, Resource: benchResource(p, 3)}
		})
	}
	if err == nil {
		err = pick("denied", func(d authz.Decision, _ authz.Query) bool { return d.Reason == authz.ReasonNoGrant }, func() authz.Query {
			return authz.Query{Subject: benchUser(r.IntN(benchUsers)), Permission: benchPermission, Resource: benchResource(benchPath(r), 3)}
		})
	}
	if err == nil {
		err = pick("blocked", func(d authz.Decision, _ authz.Query) bool { return d.Reason == authz.ReasonBlocked }, func() authz.Query {
			b := blocks[r.IntN(len(blocks))]
			p := benchPath(r)
			p[0] = b.path[0]
			return authz.Query{Subject: b.subject, Permission: benchPermission, Resource: benchResource(p, 3)}
		})
	}
	if err == nil {
		err = pick("unknown_resource", func(d authz.Decision, _ authz.Query) bool { return d.Reason == authz.ReasonUnknownResource }, func() authz.Query {
			return authz.Query{Subject: benchUser(r.IntN(benchUsers)), Permission: benchPermission, Resource: fmt.Sprintf("call:gone-%d", r.IntN(1e6))}
		})
	}
	return s, err
}

var benchCases = []string{"allowed_direct", "allowed_inherited", "denied", "blocked", "unknown_resource"}

func BenchmarkCheck(b *testing.B) {
	s, err := benchWorld()
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range benchCases {
		qs := s.queries[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, _, err := s.idx.Check(qs[i%benchQueries]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkListPermissions(b *testing.B) {
	s, err := benchWorld()
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range benchCases {
		qs := s.queries[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				q := qs[i%benchQueries]
				s.idx.ListPermissions(q.Subject, q.Resource, false)
				i++
			}
		})
	}
}

// TestCheckDoesNotAllocate keeps the hot path free of allocations: a
// sidecar's checks must not feed the garbage collector.
func TestCheckDoesNotAllocate(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.role(streamAdminOverride)
	w.grant("user:alice", "admin", "account:acme")
	w.grant("user:alice", "call-member", "call:livestream:42")
	w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Reason: "banned"})
	for _, q := range []authz.Query{
		{Subject: "user:alice", Permission: "send-audio", Resource: "call:livestream:42"},
		{Subject: "user:alice", Permission: "end-call", Resource: "call:default:1"},
		{Subject: "user:alice", Permission: "end-call", Resource: "call:livestream:42"},
		{Subject: "user:bob", Permission: "join-call", Resource: "call:livestream:42"},
		{Subject: "user:carol", Permission: "join-call", Resource: "call:livestream:42"},
		{Subject: "user:alice", Permission: "join-call", Resource: "call:livestream:404"},
	} {
		if n := testing.AllocsPerRun(100, func() { w.idx.Check(q) }); n != 0 {
			t.Errorf("Check(%+v) makes %v allocations, want 0", q, n)
		}
	}
}

// BenchmarkListQuotasPage reads the first page of the quotas above a call
// whose account carries a quota on a subject that registered many calls:
// a page costs its size, not what the subject registered.
func BenchmarkListQuotasPage(b *testing.B) {
	w := newWorld(b, streamPolicy())
	w.quota(authz.Quota{Scope: "account:acme", ResourceType: "call", Subject: "user:alice", Limit: 1 << 20})
	var changes []authz.Change
	for i := range 20_000 {
		changes = append(changes, authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{
			Name: fmt.Sprintf("call:livestream:b%d", i), Parent: "calltype:livestream", Creator: "user:alice"}})
	}
	w.store(changes...)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := w.idx.ListQuotasPage("call:livestream:42", 100, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListRolesPage reads a page of 100 of the roles visible at a
// call whose account defines MaxRolesPerScope of them.
func BenchmarkListRolesPage(b *testing.B) {
	p := streamPolicy()
	for i := range authz.MaxRolesPerScope {
		p.Roles = append(p.Roles, authz.Role{Name: fmt.Sprintf("r%04d", i), Scope: "account:acme", Permissions: []string{"join-call"}})
	}
	w := newWorld(b, p)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := w.idx.ListRolesPage("call:livestream:42", "", 100, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// deepBusyWorld is a tree of MaxDepth+1 levels, each defining
// maxRolesHeld roles of one permission apiece, and a subject holding every
// one of them on its level: the most role definitions one Check can meet
// within the limits. It returns the deepest resource.
func deepBusyWorld(tb testing.TB) (*world, string) {
	p := authz.Policy{Permissions: []authz.Permission{{Name: "asked"}, {Name: authz.PermBlocksWrite}},
		Roles: []authz.Role{{Name: "moderator", Scope: "root", Permissions: []string{"asked", authz.PermBlocksWrite}}}}
	parent := "root"
	for level := range authz.MaxDepth {
		name := fmt.Sprintf("folder:d%d", level+1)
		p.Resources = append(p.Resources, authz.Resource{Name: name, Parent: parent})
		parent = name
	}
	for level := range authz.MaxDepth + 1 {
		scope := "root"
		if level > 0 {
			scope = fmt.Sprintf("folder:d%d", level)
		}
		for i := range maxRolesHeld {
			perm := fmt.Sprintf("p%d-%d", level, i)
			p.Permissions = append(p.Permissions, authz.Permission{Name: perm})
			p.Roles = append(p.Roles, authz.Role{Name: fmt.Sprintf("r%d-%d", level, i), Scope: scope, Permissions: []string{perm}})
		}
	}
	w := newWorld(tb, p)
	var grants []authz.Change
	for _, r := range p.Roles[1:] {
		grants = append(grants, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:busy", Role: r.Name, Resource: r.Scope}})
	}
	grants = append(grants, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:mod", Role: "moderator", Resource: "root"}})
	w.store(grants...)
	return w, parent
}

// maxRolesHeld is README's limit of roles one holder may hold on one
// resource.
const maxRolesHeld = 100

// BenchmarkCheckOnADeepBusySubject is a denied Check of deepBusyWorld's
// subject on its deepest resource, which reads every one of its grants.
func BenchmarkCheckOnADeepBusySubject(b *testing.B) {
	w, deepest := deepBusyWorld(b)
	q := authz.Query{Subject: "user:busy", Permission: "asked", Resource: deepest}
	if d, _, err := w.idx.Check(q); err != nil || d.Allowed {
		b.Fatalf("Check(%+v) = %+v, %v; want denied", q, d, err)
	}
	for b.Loop() {
		w.idx.Check(q)
	}
}

// BenchmarkBlockingADeepBusySubject is an actor's mute, and its lifting, of
// deepBusyWorld's subject on its deepest resource, each judged against
// every one of the subject's grants.
func BenchmarkBlockingADeepBusySubject(b *testing.B) {
	w, deepest := deepBusyWorld(b)
	by := authz.Author{Caller: "test", Actor: "user:mod"}
	for b.Loop() {
		_, id, err := w.eng.Block(w.ctx, by, authz.Block{Subject: "user:busy", Resource: deepest, Permissions: []string{"asked"}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.eng.Unblock(w.ctx, by, "user:busy", deepest, id); err != nil {
			b.Fatal(err)
		}
	}
}
