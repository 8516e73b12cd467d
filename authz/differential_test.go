package authz_test

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// differentialWorlds is how many random worlds TestDifferential builds; each
// seed is one world, so a failure names the seed that reproduces it.
const differentialWorlds = 300

// TestDifferential holds the engine to the reference evaluator: it builds
// random worlds (a permission DAG, a resource tree, roles redefined at
// random scopes, grants and blocks, some expired) by writing them through
// the Engine, with the writes it refuses stored straight through the
// backend as a replica's feed would deliver them, and asks every Check and
// ListPermissions of a sample of subjects, on every resource, of every
// declared permission, of both the engine's index and an index built from
// the world's final snapshot. The three must agree.
func TestDifferential(t *testing.T) {
	var checks, lists atomic.Int64
	t.Run("worlds", func(t *testing.T) {
		for seed := range uint64(differentialWorlds) {
			t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				t.Parallel()
				c, l := differentialWorld(t, seed)
				checks.Add(int64(c))
				lists.Add(int64(l))
			})
		}
	})
	t.Logf("%d worlds, %d checks and %d permission lists, each asked of two indexes", differentialWorlds, checks.Load(), lists.Load())
}

// model is a world as plain data, kept in step with what the engine
// accepted.
type model struct {
	seed     uint64
	perms    []authz.Permission // the final catalog, in the order written
	early    []authz.Permission // the catalog first applied: no late permissions, other parents
	listable []string           // permissions roles and blocks may list: in both catalogs
	subjects []string
	parent   map[string]string         // registered resource -> parent
	order    []string                  // registered resources, in registration order
	roles    map[[2]string]authz.Role  // (scope, name)
	grants   map[[3]string]time.Time   // (subject, role, resource) -> expiry
	blocks   map[[3]string]authz.Block // (subject, resource, ID)
}

var (
	diffWords     = []string{"admin", "call", "chat", "media", "room", "users"}
	diffVerbs     = []string{"create", "join", "list", "manage", "mute", "read"}
	diffTypes     = []string{"account", "workspace", "event", "calltype", "call"}
	diffRoleNames = []string{"admin", "host", "member", "moderator", "owner", "viewer"}
)

// differentialWorld builds world seed and compares every query; it returns
// how many checks and lists it compared.
func differentialWorld(t *testing.T, seed uint64) (checks, lists int) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	start := time.Now()
	m := &model{
		seed:   seed,
		parent: map[string]string{},
		roles:  map[[2]string]authz.Role{},
		grants: map[[3]string]time.Time{},
		blocks: map[[3]string]authz.Block{},
	}
	m.generateCatalog(rng)
	for i := range 2 + rng.IntN(7) {
		kind := "user"
		if i%4 == 3 {
			kind = "apikey"
		}
		m.subjects = append(m.subjects, fmt.Sprintf("%s:s%d", kind, i))
	}

	// The tree: 10-60 resources, depth at most 5, typed mostly by depth.
	depth := map[string]int{authz.RootName: 0}
	var policy authz.Policy
	policy.Permissions = m.early
	for i := range 10 + rng.IntN(51) {
		candidates := []string{authz.RootName}
		for _, r := range m.order {
			if depth[r] < 5 {
				candidates = append(candidates, r)
			}
		}
		parent := pick(rng, candidates)
		typ := diffTypes[depth[parent]]
		if rng.IntN(5) == 0 {
			typ = pick(rng, diffTypes)
		}
		name := fmt.Sprintf("%s:%d", typ, i)
		if typ == "call" {
			name = fmt.Sprintf("call:live:%d", i) // ids may contain ':'
		}
		depth[name] = depth[parent] + 1
		m.parent[name] = parent
		m.order = append(m.order, name)
		policy.Resources = append(policy.Resources, authz.Resource{Name: name, Parent: parent})
	}
	for range 3 + rng.IntN(8) {
		r := m.randomRole(rng)
		if _, dup := m.roles[[2]string{r.Scope, r.Name}]; dup {
			continue
		}
		m.roles[[2]string{r.Scope, r.Name}] = r
		policy.Roles = append(policy.Roles, r)
	}

	w := newWorld(t, policy)
	grants, blocks := 50+rng.IntN(251), rng.IntN(13)
	ops := make([]byte, 0, grants+blocks+40)
	ops = append(ops, 'C') // switch to the final catalog, somewhere among the writes
	for range grants {
		ops = append(ops, 'g')
	}
	for range blocks {
		ops = append(ops, 'b')
	}
	for _, op := range []byte("rumpdx") { // revoke, unblock, move, put role, delete role, delete resource
		for range rng.IntN(6) {
			ops = append(ops, op)
		}
	}
	rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	for _, op := range ops {
		m.write(t, w, rng, op, start)
	}

	snap := m.snapshot()
	fromSnapshot, err := authz.NewIndex(snap)
	if err != nil {
		t.Fatalf("seed %d: NewIndex(the world's snapshot): %v", seed, err)
	}
	indexes := []struct {
		name string
		idx  *authz.Index
	}{{"the engine's index", w.idx}, {"an index loaded from the snapshot", fromSnapshot}}

	now := time.Now()
	resources := append([]string{authz.RootName, "ghost:unregistered"}, m.order...)
	permissions := append([]string{authz.Wildcard, "no.such-permission"}, names(m.perms)...)
	// A sample of at most three subjects with grants, and one without.
	subjects := slices.Clone(m.subjects)
	rng.Shuffle(len(subjects), func(i, j int) { subjects[i], subjects[j] = subjects[j], subjects[i] })
	for _, subject := range append(subjects[:min(3, len(subjects))], "user:nobody") {
		ref := newReference(m.only(snap, subject), now)
		for _, resource := range resources {
			// The permission list the reference expects is, as
			// referencePermissions defines it, what its Check allows.
			var want []string
			for _, permission := range permissions {
				answer := ref.check(subject, permission, resource)
				if answer.Allowed {
					want = append(want, permission)
				}
				want, wantErr := m.decision(subject, answer)
				for _, x := range indexes {
					got, _, err := x.idx.Check(authz.Query{Subject: subject, Permission: permission, Resource: resource})
					checks++
					if wantErr != (err != nil) || (err != nil && (authz.CodeOf(err) != authz.Invalid || err.(*authz.Error).Field != "permission")) {
						t.Fatalf("Check(%s, %s, %s) on %s: error %v, want %s\n%s", subject, permission, resource, x.name, err, answer.Reason, m.describe(subject, resource, now))
					}
					if got != want {
						t.Fatalf("Check(%s, %s, %s) on %s:\n  engine    %s\n  reference %s\n%s", subject, permission, resource, x.name, show(got), show(want), m.describe(subject, resource, now))
					}
				}
			}
			slices.Sort(want)
			for _, x := range indexes {
				got, ok, _ := x.idx.ListPermissions(subject, resource, false)
				lists++
				if ok != ref.registered(resource) || !slices.Equal(got, want) {
					t.Fatalf("ListPermissions(%s, %s) on %s:\n  engine    %v (registered %v)\n  reference %v\n%s", subject, resource, x.name, got, ok, want, m.describe(subject, resource, now))
				}
			}
		}
	}
	return checks, lists
}

// generateCatalog makes 5-15 permissions forming a DAG (each names 0-3
// earlier ones as parents), names that sort apart from the DAG's order, up to
// two of them late: absent from the first catalog the world is built with, so
// that switching catalogs renumbers the rest.
func (m *model) generateCatalog(rng *rand.Rand) {
	var all []string
	for _, i := range rng.Perm(len(diffWords) * len(diffVerbs))[:5+rng.IntN(11)] {
		all = append(all, diffWords[i/len(diffVerbs)]+"."+diffVerbs[i%len(diffVerbs)])
	}
	late := map[string]bool{}
	for range rng.IntN(3) {
		late[pick(rng, all)] = true
	}
	parents := func(i int, allowed func(string) bool) []string {
		var ps []string
		n := 0
		switch k := rng.IntN(10); {
		case k < 4:
		case k < 8:
			n = 1
		default:
			n = 2 + rng.IntN(2)
		}
		for range n {
			if i == 0 {
				break
			}
			if p := all[rng.IntN(i)]; allowed(p) && !slices.Contains(ps, p) {
				ps = append(ps, p)
			}
		}
		return ps
	}
	for i, name := range all {
		m.perms = append(m.perms, authz.Permission{Name: name, Parents: parents(i, func(string) bool { return true })})
		if !late[name] {
			m.early = append(m.early, authz.Permission{Name: name, Parents: parents(i, func(p string) bool { return !late[p] })})
			m.listable = append(m.listable, name)
		}
	}
}

// randomRole defines a role of the pool at root half the time, else at a
// random resource, with "*" now and then.
func (m *model) randomRole(rng *rand.Rand) authz.Role {
	scope := authz.RootName
	if rng.IntN(2) == 0 {
		scope = pick(rng, m.order)
	}
	r := authz.Role{Name: pick(rng, diffRoleNames), Scope: scope}
	if rng.IntN(7) == 0 {
		r.Permissions = []string{authz.Wildcard}
		return r
	}
	for range 1 + rng.IntN(4) {
		if p := pick(rng, m.listable); !slices.Contains(r.Permissions, p) {
			r.Permissions = append(r.Permissions, p)
		}
	}
	return r
}

// randomExpiry is never most of the time, else an hour or more in the past
// or in the future, far enough from now that no answer depends on the
// test's speed.
func randomExpiry(rng *rand.Rand, start time.Time, never int) time.Time {
	switch k := rng.IntN(100); {
	case k < never:
		return time.Time{}
	case k < never+(100-never)/2:
		return start.Add(-time.Minute - time.Duration(rng.Int64N(int64(100*time.Hour))))
	default:
		return start.Add(time.Hour + time.Duration(rng.Int64N(int64(100*time.Hour))))
	}
}

// write makes one random write of kind op through the engine and brings the
// model in step with what it accepted. Grants and blocks the engine refuses
// (an expiry in the past, a role not visible where it is granted) are stored
// straight through the backend, as a feed delivers state written before.
func (m *model) write(t *testing.T, w *world, rng *rand.Rand, op byte, start time.Time) {
	t.Helper()
	refused := func(what string, err error, codes ...authz.Code) bool {
		t.Helper()
		if err == nil {
			return false
		}
		if !slices.Contains(codes, authz.CodeOf(err)) {
			t.Fatalf("seed %d: %s: %v", m.seed, what, err)
		}
		return true
	}
	ctx, by := w.ctx, w.by
	switch op {
	case 'C':
		_, _, err := w.eng.ApplyPolicy(ctx, by, authz.Policy{Permissions: m.perms}, authz.ApplyOptions{})
		refused("ApplyPolicy(final catalog)", err)
		m.early = nil
	case 'g':
		g := authz.Grant{Subject: pick(rng, m.subjects), Role: pick(rng, diffRoleNames), Resource: pick(rng, m.resources()), Expires: randomExpiry(rng, start, 70)}
		if _, err := w.eng.Grant(ctx, by, g); refused("Grant", err, authz.NotFound, authz.Invalid) {
			w.store(authz.Change{Op: authz.OpPutGrant, Grant: &g})
		}
		m.grants[[3]string{g.Subject, g.Role, g.Resource}] = g.Expires
	case 'b':
		b := authz.Block{Subject: pick(rng, m.subjects), Resource: pick(rng, m.resources()), Expires: randomExpiry(rng, start, 60),
			Reason: fmt.Sprintf("reason %d", rng.IntN(1000))}
		if rng.IntN(2) == 0 {
			b.Permissions = []string{pick(rng, m.listable)}
			if p := pick(rng, m.listable); rng.IntN(3) == 0 && p != b.Permissions[0] {
				b.Permissions = append(b.Permissions, p)
			}
		}
		_, id, err := w.eng.Block(ctx, by, b)
		if refused("Block", err, authz.Invalid) {
			b.ID = fmt.Sprintf("stored%d", rng.IntN(3))
			w.store(authz.Change{Op: authz.OpPutBlock, Block: &b})
		} else {
			b.ID = id
		}
		b.Permissions = slices.Sorted(slices.Values(b.Permissions))
		m.blocks[[3]string{b.Subject, b.Resource, b.ID}] = b
	case 'r':
		if len(m.grants) == 0 {
			return
		}
		k := pick(rng, slices.SortedFunc(maps.Keys(m.grants), cmpKeys))
		_, err := w.eng.Revoke(ctx, by, authz.Grant{Subject: k[0], Role: k[1], Resource: k[2]})
		refused("Revoke", err)
		delete(m.grants, k)
	case 'u':
		if len(m.blocks) == 0 {
			return
		}
		k := pick(rng, slices.SortedFunc(maps.Keys(m.blocks), cmpKeys))
		if rng.IntN(2) == 0 {
			_, err := w.eng.Unblock(ctx, by, k[0], k[1], k[2])
			refused("Unblock", err)
			delete(m.blocks, k)
		} else {
			_, err := w.eng.Unblock(ctx, by, k[0], k[1], "")
			refused("Unblock", err)
			maps.DeleteFunc(m.blocks, func(b [3]string, _ authz.Block) bool { return b[0] == k[0] && b[1] == k[1] })
		}
	case 'm':
		if len(m.order) == 0 {
			return
		}
		name, parent := pick(rng, m.order), pick(rng, m.resources())
		_, err := w.eng.PutResource(ctx, by, authz.Resource{Name: name, Parent: parent})
		if !refused("PutResource (a move)", err, authz.FailedPrecondition) {
			m.parent[name] = parent
		}
	case 'p':
		r := m.randomRole(rng)
		_, err := w.eng.PutRole(ctx, by, r)
		refused("PutRole", err)
		m.roles[[2]string{r.Scope, r.Name}] = r
	case 'd':
		if len(m.roles) == 0 {
			return
		}
		k := pick(rng, slices.SortedFunc(maps.Keys(m.roles), cmpKeys))
		_, err := w.eng.DeleteRole(ctx, by, k[0], k[1])
		if !refused("DeleteRole", err, authz.FailedPrecondition) {
			// The grants that the definition alone covered go with it.
			if _, above := m.nearest(k[1], m.parentOf(k[0])); !above {
				maps.DeleteFunc(m.grants, func(g [3]string, _ time.Time) bool {
					at, ok := m.nearest(g[1], g[2])
					return g[1] == k[1] && ok && at == k[0]
				})
			}
			delete(m.roles, k)
		}
	case 'x':
		if len(m.order) == 0 {
			return
		}
		name := pick(rng, m.order)
		_, err := w.eng.DeleteResource(ctx, by, name)
		if refused("DeleteResource", err, authz.FailedPrecondition) {
			return
		}
		delete(m.parent, name)
		m.order = slices.DeleteFunc(m.order, func(r string) bool { return r == name })
		maps.DeleteFunc(m.grants, func(k [3]string, _ time.Time) bool { return k[2] == name })
		maps.DeleteFunc(m.blocks, func(k [3]string, _ authz.Block) bool { return k[1] == name })
		maps.DeleteFunc(m.roles, func(k [2]string, _ authz.Role) bool { return k[0] == name })
	}
}

func cmpKeys[K [2]string | [3]string](a, b K) int {
	for i := range len(a) {
		if c := cmp.Compare(a[i], b[i]); c != 0 {
			return c
		}
	}
	return 0
}

func pick[T any](rng *rand.Rand, list []T) T { return list[rng.IntN(len(list))] }

// resources is root and every registered resource.
func (m *model) resources() []string { return append([]string{authz.RootName}, m.order...) }

// parentOf is res's parent; root's is "".
func (m *model) parentOf(res string) string {
	if res == authz.RootName {
		return ""
	}
	if p := m.parent[res]; p != "" {
		return p
	}
	return authz.RootName
}

// nearest is where the definition of role that applies at res is: res or
// the closest resource above it that defines it.
func (m *model) nearest(role, res string) (string, bool) {
	for a := res; a != ""; a = m.parentOf(a) {
		if _, ok := m.roles[[2]string{a, role}]; ok {
			return a, true
		}
	}
	return "", false
}

func names(perms []authz.Permission) []string {
	var out []string
	for _, p := range perms {
		out = append(out, p.Name)
	}
	return out
}

// snapshot is the model as a backend would load it.
func (m *model) snapshot() authz.Snapshot {
	catalog := m.perms
	if m.early != nil {
		catalog = m.early
	}
	s := authz.Snapshot{Permissions: catalog}
	for _, r := range m.order {
		s.Resources = append(s.Resources, authz.Resource{Name: r, Parent: m.parent[r]})
	}
	for _, k := range slices.SortedFunc(maps.Keys(m.roles), cmpKeys) {
		s.Roles = append(s.Roles, m.roles[k])
	}
	for _, k := range slices.SortedFunc(maps.Keys(m.grants), cmpKeys) {
		s.Grants = append(s.Grants, authz.Grant{Subject: k[0], Role: k[1], Resource: k[2], Expires: m.grants[k]})
	}
	for _, k := range slices.SortedFunc(maps.Keys(m.blocks), cmpKeys) {
		s.Blocks = append(s.Blocks, m.blocks[k])
	}
	return s
}

// only is s with just subject's grants and blocks: what the reference needs
// to answer for subject, and much less for it to scan.
func (m *model) only(s authz.Snapshot, subject string) authz.Snapshot {
	s.Grants = slices.DeleteFunc(slices.Clone(s.Grants), func(g authz.Grant) bool { return g.Subject != subject })
	s.Blocks = slices.DeleteFunc(slices.Clone(s.Blocks), func(b authz.Block) bool { return b.Subject != subject })
	return s
}

// decision is the reference's answer as the engine's Decision, with the
// deciding block's reason text; wantErr for an undeclared permission.
func (m *model) decision(subject string, a refAnswer) (d authz.Decision, wantErr bool) {
	switch a.Reason {
	case refInvalid:
		return authz.Decision{}, true
	case refGranted:
		return authz.Decision{Allowed: a.Allowed, Reason: authz.ReasonGranted, Role: a.Role, Scope: a.Scope}, false
	case refBlocked:
		return authz.Decision{Reason: authz.ReasonBlocked, Scope: a.Scope, BlockID: a.Block,
			BlockReason: m.blocks[[3]string{subject, a.Scope, a.Block}].Reason}, false
	case refUnknownResource:
		return authz.Decision{Reason: authz.ReasonUnknownResource}, false
	default:
		return authz.Decision{Reason: authz.ReasonNoGrant}, false
	}
}

// describe is the part of the world a query of subject on resource can
// see: the catalog, the path to root, and the roles, the subject's grants
// and its blocks on that path.
func (m *model) describe(subject, resource string, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "world (rerun: go test ./authz -run 'TestDifferential/worlds/seed=%d$'):\n", m.seed)
	catalog := m.snapshot().Permissions
	b.WriteString("  catalog:")
	for _, p := range catalog {
		fmt.Fprintf(&b, " %s", p.Name)
		if len(p.Parents) > 0 {
			fmt.Fprintf(&b, "<%s", strings.Join(p.Parents, ","))
		}
	}
	b.WriteString("\n")
	if _, ok := m.parent[resource]; !ok && resource != authz.RootName {
		fmt.Fprintf(&b, "  %s is not registered\n", resource)
		return b.String()
	}
	path := newReference(authz.Snapshot{Resources: m.snapshot().Resources}, now).path(resource)
	fmt.Fprintf(&b, "  path: %s\n", strings.Join(path, " < "))
	expiry := func(t time.Time) string {
		switch {
		case t.IsZero():
			return ""
		case t.After(now):
			return " (expires in " + t.Sub(now).Round(time.Minute).String() + ")"
		default:
			return " (expired " + now.Sub(t).Round(time.Minute).String() + " ago)"
		}
	}
	for _, at := range path {
		for _, k := range slices.SortedFunc(maps.Keys(m.roles), cmpKeys) {
			if r := m.roles[k]; r.Scope == at {
				fmt.Fprintf(&b, "  role %s at %s = %v\n", r.Name, at, r.Permissions)
			}
		}
		for _, k := range slices.SortedFunc(maps.Keys(m.grants), cmpKeys) {
			if k[0] == subject && k[2] == at {
				fmt.Fprintf(&b, "  grant %s to %s on %s%s\n", k[1], subject, at, expiry(m.grants[k]))
			}
		}
		for _, bl := range m.blocks {
			if bl.Subject != subject || bl.Resource != at {
				continue
			}
			fmt.Fprintf(&b, "  block of %s on %s of %v%s, reason %q\n", subject, at, bl.Permissions, expiry(bl.Expires), bl.Reason)
		}
	}
	return b.String()
}

// show prints a decision as DESIGN.md words it.
func show(d authz.Decision) string {
	reason := map[authz.Reason]string{authz.ReasonGranted: refGranted, authz.ReasonBlocked: refBlocked,
		authz.ReasonNoGrant: refNoGrant, authz.ReasonUnknownResource: refUnknownResource}[d.Reason]
	switch d.Reason {
	case authz.ReasonGranted:
		return fmt.Sprintf("allow %s: role %s granted on %s", reason, d.Role, d.Scope)
	case authz.ReasonBlocked:
		return fmt.Sprintf("deny %s: block on %s, reason %q", reason, d.Scope, d.BlockReason)
	default:
		return fmt.Sprintf("allowed=%v %s role=%q scope=%q", d.Allowed, reason, d.Role, d.Scope)
	}
}
