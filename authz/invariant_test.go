package authz_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// invariantWorlds is how many random worlds TestDelegationInvariant builds,
// and invariantWorldsRace how many under the race detector; each seed is one
// world, so a failure names the seed that reproduces it.
const (
	invariantWorlds     = 2000
	invariantWorldsRace = 200
)

// TestDelegationInvariant proves DESIGN.md's delegation invariant over
// random worlds and random writes by actors: "the engine must hold it for
// every write made with an actor, including the structural ones". Each
// world is a permission catalog with reserved permissions implied from
// domain ones (usher.blocks.write narrowed to some of them in half the
// worlds, for actors who may only mute), a small resource tree, roles defined at root and redefined
// below, grants and blocks (some expired, some partial), quotas and default
// quotas, a creator role or two, and admission rules with lobbies; then
// actors holding various roles make writes of every kind (Admit among
// them), many of them the shapes of known attacks. Before each write the
// backend's snapshot goes to the reference judge; the engine must accept
// exactly the writes the reference allows, leave the state the reference
// computes, and refuse the others for one of the reasons the reference
// finds.
func TestDelegationInvariant(t *testing.T) {
	tally := &invariantTally{kinds: map[string]*kindTally{}}
	start := time.Now()
	worlds := invariantWorlds
	if raceDetector {
		worlds = invariantWorldsRace
	}
	t.Run("worlds", func(t *testing.T) {
		for seed := range uint64(worlds) {
			t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				t.Parallel()
				invariantWorld(t, seed, fmt.Sprintf("go test ./authz -run 'TestDelegationInvariant/worlds/seed=%d$'", seed), tally)
			})
		}
	})
	t.Logf("%d worlds, %d writes by actors in %s", worlds, tally.writes, time.Since(start).Round(time.Millisecond))
	for _, kind := range slices.Sorted(maps.Keys(tally.kinds)) {
		k := tally.kinds[kind]
		var why []string
		for _, reason := range slices.Sorted(maps.Keys(k.why)) {
			why = append(why, fmt.Sprintf("%s %d", reason, k.why[reason]))
		}
		t.Logf("%-26s accepted %5d, refused %5d (%s)", kind, k.accepted, k.refused, strings.Join(why, ", "))
	}
}

// FuzzDelegationInvariant runs the worlds of TestDelegationInvariant from
// any seed.
func FuzzDelegationInvariant(f *testing.F) {
	for seed := range uint64(4) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		invariantWorld(t, seed, "go test ./authz -run 'FuzzDelegationInvariant/NAME', with the NAME go test gives the failing input", nil)
	})
}

// invariantTally counts what the engine did with each kind of write.
type invariantTally struct {
	mu     sync.Mutex
	writes int
	kinds  map[string]*kindTally
}

type kindTally struct {
	accepted, refused int
	why               map[string]int // refusals by code and rule
}

func (t *invariantTally) count(kind string, err error) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.writes++
	k := t.kinds[kind]
	if k == nil {
		k = &kindTally{why: map[string]int{}}
		t.kinds[kind] = k
	}
	if err == nil {
		k.accepted++
		return
	}
	k.refused++
	var e *authz.Error
	if errors.As(err, &e) {
		reason := refVerdict{Code: e.Code, Rule: e.Rule}.String()
		k.why[strings.TrimSuffix(reason, ": ")]++
	}
}

// The words random worlds are made of.
var (
	invTypes  = []string{"org", "team", "event", "room"}
	invDomain = []string{"org.admin", "org.billing", "team.manage", "team.invite", "event.run", "event.delete",
		"room.join", "room.speak", "room.mute", "users.admin", "media.record"}
	invRoles    = []string{"owner", "admin", "manager", "member", "moderator", "viewer"}
	invReserved = []string{authz.PermGrantsWrite, authz.PermBlocksWrite, authz.PermRolesWrite, authz.PermQuotasWrite,
		authz.PermResourcesCreate, authz.PermResourcesDelete, authz.PermResourcesMove}
)

// invariantGen makes one world's policy, state and writes from its seed.
type invariantGen struct {
	rng      *rand.Rand
	perms    []string // the catalog, by name
	subjects []string
	made     int      // resources registered by writes, for fresh names
	blocks   int      // block IDs handed out
	deleted  []string // resources deleted by writes, to register again
	narrowed []string // the P of each usher.blocks.write.P declared
}

// invariantWorld builds world seed and judges every write made in it.
func invariantWorld(t *testing.T, seed uint64, rerun string, tally *invariantTally) {
	g := &invariantGen{rng: rand.New(rand.NewPCG(seed, 0xde1e6a7e))}
	w := newWorld(t, g.policy())
	g.populate(w)
	for i := range 6 + g.rng.IntN(10) {
		if g.rng.IntN(5) == 0 {
			// Time passes, and some grants and blocks run out.
			w.clock.Advance(time.Duration(g.rng.Int64N(int64(30 * time.Hour))))
		}
		if g.rng.IntN(6) == 0 {
			g.restate(w)
		}
		before := load(w)
		now := w.clock.Now()
		ref := newReference(before, now)
		actor, write := g.write(ref)
		err := judgeWrite(t, w, seed, i, rerun, tally, actor, write)
		if write.Op != "DeleteResource" || err != nil || g.rng.IntN(3) == 0 {
			continue
		}
		// Deleted, and registered again by the same actor at once: under
		// its parent, mostly, or where the actor may register its type.
		// Each write is judged as any is; together, they may not give the
		// actor, through its own grants on the resource, more than those
		// it held there before gave it ("never gets around that
		// indirectly, by deleting ... or re-registering the resource they
		// are on").
		name, typ := write.Resource.Name, authz.TypeOf(write.Resource.Name)
		deleted := load(w)
		v := &invariantView{ref: newReference(deleted, now), actor: actor, resources: []string{authz.RootName}, has: map[string]map[string]bool{}}
		for _, r := range deleted.Resources {
			v.resources = append(v.resources, r.Name)
			v.has[r.Name] = set(v.ref.permissions(actor, r.Name))
		}
		v.has[authz.RootName] = set(v.ref.permissions(actor, authz.RootName))
		parent := ref.parent[name]
		if parent == "" {
			parent = authz.RootName
		}
		if g.rng.IntN(10) < 3 {
			parent = g.prefer(100, v.where(authz.PermResourcesCreate, authz.PermResourcesCreate+"."+typ), v.resources)
		}
		again := refWrite{Op: "PutResource", Resource: authz.Resource{Name: name, Parent: parent}}
		if judgeWrite(t, w, seed, i, rerun, tally, actor, again) != nil {
			continue
		}
		if !slices.ContainsFunc(before.Grants, func(gr authz.Grant) bool {
			return gr.Subject == actor && gr.Resource == name && ref.unexpired(gr.Expires)
		}) {
			continue // bound on it by nothing: what its creator role gives is the exception
		}
		after := load(w)
		for _, t0 := range ownMoments(before, actor, name, now) {
			was, is := ownOn(before, actor, name, t0), ownOn(after, actor, name, t0)
			for p := range is {
				if !was[p] {
					t.Fatalf("seed %d, write %d: deleting %s and registering it again under %s, %s came to hold %q there through its own grants, which it did not at %s\n  rerun: %s\n  the world before the delete:\n    %s",
						seed, i, name, parent, actor, p, t0.Format(time.RFC3339), rerun, strings.Join(describeSnapshot(before, now), "\n    "))
				}
			}
		}
	}
}

// restate is the platform defining a role again, nearer: on a resource
// someone holds a grant on, mostly one an actor registered, so that a role
// name held there, a creator role among them, is redefined where it is
// held.
func (g *invariantGen) restate(w *world) {
	s := load(w)
	var held, made []string
	for _, gr := range s.Grants {
		if gr.Resource == authz.RootName {
			continue
		}
		held = append(held, gr.Resource)
		if slices.ContainsFunc(s.Resources, func(r authz.Resource) bool { return r.Name == gr.Resource && r.Creator != "" }) {
			made = append(made, gr.Resource)
		}
	}
	if len(held) == 0 {
		return
	}
	scope := g.prefer(60, made, held)
	var names []string
	for _, gr := range s.Grants {
		if gr.Resource == scope {
			names = append(names, gr.Role)
		}
	}
	r := g.role(pick(g.rng, names), scope)
	// Restated with less, mostly: no reserved permission other than the
	// delete its holder may need.
	r.Permissions = slices.DeleteFunc(r.Permissions, func(p string) bool {
		return authz.IsReserved(p) && !strings.HasPrefix(p, authz.PermResourcesDelete)
	})
	if g.rng.IntN(2) == 0 {
		r.Permissions = append(r.Permissions, authz.PermResourcesDelete)
	}
	rev, err := w.eng.PutRole(w.ctx, w.by, r)
	if e := (*authz.Error)(nil); errors.As(err, &e) && (e.Kind == authz.KindMaxHolders || e.Kind == authz.KindNotBindable) {
		// The grants it would apply to pass its limits: the platform
		// restates it without them.
		r.BindableOn, r.MaxHolders = nil, 0
		rev, err = w.eng.PutRole(w.ctx, w.by, r)
	}
	w.ok("PutRole", rev, err)
}

// ownMoments are now and each later moment at which one of actor's grants
// on res runs out.
func ownMoments(s authz.Snapshot, actor, res string, now time.Time) []time.Time {
	out := []time.Time{now}
	for _, g := range s.Grants {
		if g.Subject == actor && g.Resource == res && g.Expires.After(now) {
			out = append(out, g.Expires)
		}
	}
	slices.SortFunc(out[1:], time.Time.Compare)
	return slices.CompactFunc(out, time.Time.Equal)
}

// ownOn is what actor's unexpired grants on res give it there at t, by
// their roles as defined there: permissions, "*", and roles to assign.
func ownOn(s authz.Snapshot, actor, res string, t time.Time) map[string]bool {
	r := newReference(s, t)
	out := map[string]bool{}
	for _, g := range s.Grants {
		if g.Subject != actor || g.Resource != res || !r.unexpired(g.Expires) {
			continue
		}
		def, ok := r.definition(g.Role, res)
		if !ok {
			continue
		}
		for _, p := range r.carries(def) {
			out[p] = true
		}
		if slices.Contains(def.Permissions, authz.Wildcard) {
			out[authz.Wildcard] = true
		}
		for _, n := range def.AssignableRoles {
			out["assigns "+n] = true
		}
	}
	return out
}

// judgeWrite makes write i of world seed as actor and holds the engine to
// the reference: the same verdict, the same state after it, and nothing
// written when it is refused. It returns the engine's error.
func judgeWrite(t *testing.T, w *world, seed uint64, i int, rerun string, tally *invariantTally, actor string, write refWrite) error {
	t.Helper()
	before := load(w)
	now := w.clock.Now()
	ref := newReference(before, now)
	kind := write.Op
	switch {
	case write.Op == "PutResource" && ref.registered(write.Resource.Name):
		kind += " (move)"
	case write.Op == "PutResource":
		kind += " (register)"
	case write.Op == "Unblock" && write.Block.ID == "":
		kind += " (all)"
	case write.Op == "Unblock":
		kind += " (one)"
	}
	if (write.Op == "Block" || write.Op == "Unblock") && !ref.holds(actor, authz.PermBlocksWrite, write.Block.Resource) &&
		slices.ContainsFunc(ref.s.Permissions, func(p authz.Permission) bool {
			return strings.HasPrefix(p.Name, authz.PermBlocksWrite+".") && ref.holds(actor, p.Name, write.Block.Resource)
		}) {
		kind += ", narrowed"
	}
	want, verdicts := referenceJudge(before, actor, write, now)
	err := run(w, actor, write)
	tally.count(kind, err)
	got := load(w)
	fail := func(format string, args ...any) {
		t.Helper()
		shown := verdicts[:min(len(verdicts), 8)]
		var vs []string
		for _, v := range shown {
			vs = append(vs, "      "+v.String())
		}
		if len(verdicts) > len(shown) {
			vs = append(vs, fmt.Sprintf("      and %d more", len(verdicts)-len(shown)))
		}
		t.Fatalf("seed %d, write %d: %s by %s: %s\n  engine:    %v\n  reference: %d verdicts\n%s\n  rerun: %s\n  the world before the write:\n    %s",
			seed, i, write, actor, fmt.Sprintf(format, args...), err, len(verdicts), strings.Join(vs, "\n"), rerun,
			strings.Join(describeSnapshot(before, now), "\n    "))
	}
	switch {
	case err == nil && len(verdicts) > 0:
		fail("the engine accepted a write the reference refuses")
	case err == nil:
		if diff := diffSnapshots(got, want, now); diff != "" {
			fail("the engine left another state than the reference (+ engine, - reference):\n%s", diff)
		}
	case len(verdicts) == 0:
		fail("the engine refused a write the reference allows")
	case !explains(err, verdicts):
		fail("the engine refused it for a reason the reference does not find")
	default:
		if diff := diffSnapshots(got, before, now); diff != "" {
			fail("a refused write changed the state:\n%s", diff)
		}
	}
	return err
}

// explains reports whether the engine's refusal is one of the reference's
// verdicts: the same code and, for PERMISSION_DENIED, the same rule (and
// the same reserved permission lacked).
func explains(err error, verdicts []refVerdict) bool {
	var e *authz.Error
	if !errors.As(err, &e) {
		return false
	}
	for _, v := range verdicts {
		if v.Code != e.Code {
			continue
		}
		if e.Code != authz.PermissionDenied || v.Rule == e.Rule && (v.Rule != refMissing || v.Permission == e.Meta["permission"]) {
			return true
		}
	}
	return false
}

// load is the backend's snapshot: the state a write is judged on.
func load(w *world) authz.Snapshot {
	w.t.Helper()
	var c authz.Collector
	if _, err := w.be.Load(w.ctx, &c); err != nil {
		w.t.Fatalf("Load: %v", err)
	}
	return c.Snapshot
}

// run makes the write through the engine, as actor.
func run(w *world, actor string, x refWrite) error {
	ctx, by := w.ctx, as(actor)
	var err error
	switch x.Op {
	case "Grant":
		_, err = w.eng.Grant(ctx, by, x.Grant)
	case "Revoke":
		_, err = w.eng.Revoke(ctx, by, x.Grant)
	case "Admit":
		_, err = w.eng.Admit(ctx, by, x.Grant.Resource, x.Grant.Subject, x.Grant.Expires)
	case "PutResource":
		_, err = w.eng.PutResource(ctx, by, x.Resource)
	case "DeleteResource":
		_, err = w.eng.DeleteResource(ctx, by, x.Resource.Name)
	case "PutRole":
		_, err = w.eng.PutRole(ctx, by, x.Role)
	case "DeleteRole":
		_, err = w.eng.DeleteRole(ctx, by, x.Role.Scope, x.Role.Name)
	case "Block":
		var id string
		_, id, err = w.eng.Block(ctx, by, x.Block)
		if err == nil && id != x.Block.ID {
			w.t.Fatalf("Block(%s) answered block ID %q, want the one asked for", x, id)
		}
	case "Unblock":
		_, err = w.eng.Unblock(ctx, by, x.Block.Subject, x.Block.Resource, x.Block.ID)
	case "PutQuota":
		_, err = w.eng.PutQuota(ctx, by, x.Quota)
	case "DeleteQuota":
		_, err = w.eng.DeleteQuota(ctx, by, x.Quota)
	default:
		w.t.Fatalf("unknown write %s", x.Op)
	}
	return err
}

// policy is the world's catalog, tree, roles, creator roles and default
// quotas.
func (g *invariantGen) policy() authz.Policy {
	rng := g.rng
	var p authz.Policy
	// Domain permissions: a DAG, each naming up to two earlier ones.
	var domain []string
	for _, i := range rng.Perm(len(invDomain))[:5+rng.IntN(5)] {
		domain = append(domain, invDomain[i])
	}
	for i, name := range domain {
		var parents []string
		for range rng.IntN(3) {
			if i > 0 {
				if q := domain[rng.IntN(i)]; !slices.Contains(parents, q) {
					parents = append(parents, q)
				}
			}
		}
		p.Permissions = append(p.Permissions, authz.Permission{Name: name, Parents: parents})
	}
	// Reserved permissions, most of them below one or two domain ones
	// ("Policies imply these reserved permissions from domain permissions
	// through the tree"), some narrowed to a type.
	reserved := slices.Clone(invReserved)
	for _, base := range []string{authz.PermResourcesCreate, authz.PermResourcesDelete, authz.PermResourcesMove} {
		for _, typ := range invTypes {
			if rng.IntN(3) == 0 {
				reserved = append(reserved, base+"."+typ)
			}
		}
	}
	for _, name := range reserved {
		var parents []string
		if rng.IntN(7) > 0 {
			for range 1 + rng.IntN(2) {
				if q := pick(rng, domain); !slices.Contains(parents, q) {
					parents = append(parents, q)
				}
			}
		}
		p.Permissions = append(p.Permissions, authz.Permission{Name: name, Parents: parents})
	}
	// usher.blocks.write narrowed to some domain permissions, in half the
	// worlds: each below a domain permission of its own, as Stream's
	// mute-users implies usher.blocks.write.send-audio.
	if rng.IntN(2) == 0 {
		for _, i := range rng.Perm(len(domain))[:1+rng.IntN(min(4, len(domain)))] {
			p.Permissions = append(p.Permissions, authz.Permission{Name: authz.PermBlocksWrite + "." + domain[i], Parents: []string{pick(rng, domain)}})
			g.narrowed = append(g.narrowed, domain[i])
		}
	}
	g.perms = names(p.Permissions)

	// A tree of 5-20 resources, at most 4 levels deep, each level mostly of
	// its own type.
	depth := map[string]int{authz.RootName: 0}
	order := []string{authz.RootName}
	for i := range 5 + rng.IntN(16) {
		var parent string
		if i < 1+rng.IntN(2) {
			parent = authz.RootName
		} else {
			for parent = pick(rng, order); depth[parent] >= 4; parent = pick(rng, order) {
			}
		}
		typ := invTypes[min(depth[parent], len(invTypes)-1)]
		if rng.IntN(5) == 0 {
			typ = pick(rng, invTypes)
		}
		name := fmt.Sprintf("%s:%d", typ, i)
		depth[name] = depth[parent] + 1
		order = append(order, name)
		p.Resources = append(p.Resources, authz.Resource{Name: name, Parent: parent})
	}

	// Roles at root, and redefinitions below.
	for _, name := range invRoles {
		if rng.IntN(4) > 0 {
			p.Roles = append(p.Roles, g.role(name, authz.RootName))
		}
	}
	defined := map[[2]string]bool{}
	for _, r := range p.Roles {
		defined[[2]string{r.Scope, r.Name}] = true
	}
	for range 2 + rng.IntN(7) {
		r := g.role(pick(rng, invRoles), pick(rng, order[1:]))
		if !defined[[2]string{r.Scope, r.Name}] {
			defined[[2]string{r.Scope, r.Name}] = true
			p.Roles = append(p.Roles, r)
		}
	}
	// What names a role names one defined somewhere: a policy naming
	// another is refused.
	var names []string
	for _, r := range p.Roles {
		if !slices.Contains(names, r.Name) {
			names = append(names, r.Name)
		}
	}
	for _, typ := range invTypes {
		if rng.IntN(3) == 0 && len(names) > 0 {
			p.CreatorRoles = append(p.CreatorRoles, authz.CreatorRole{ResourceType: typ, Role: pick(rng, names)})
		}
	}
	if rng.IntN(3) == 0 {
		p.DefaultQuotas = append(p.DefaultQuotas, authz.DefaultQuota{ScopeType: pick(rng, invTypes[:2]), ResourceType: pick(rng, invTypes[1:]), Limit: uint32(rng.IntN(4))})
	}
	// Admission rules, the platform's, most with a lobby whose admit
	// permission stands in for usher.grants.write: at root or below, for
	// the types below the top.
	if rng.IntN(2) == 0 {
		ruled := map[[2]string]bool{}
		for range 1 + rng.IntN(3) {
			a := authz.Admission{Scope: pick(rng, order), ResourceType: pick(rng, invTypes[1:]), Join: pick(rng, domain)}
			if ruled[[2]string{a.Scope, a.ResourceType}] {
				continue
			}
			ruled[[2]string{a.Scope, a.ResourceType}] = true
			if rng.IntN(5) > 0 && len(names) > 0 {
				a.Lobby = &authz.Lobby{Admit: pick(rng, domain), Role: pick(rng, names)}
			}
			p.Admissions = append(p.Admissions, a)
		}
	}
	for i := range 3 + rng.IntN(4) {
		g.subjects = append(g.subjects, fmt.Sprintf("user:u%d", i))
	}
	return p
}

// role is a random definition of name at scope: a few permissions, now and
// then "*" or none; roles it assigns by name, or "*"; sometimes bindable on
// one type only, or with few holders.
func (g *invariantGen) role(name, scope string) authz.Role {
	rng := g.rng
	r := authz.Role{Name: name, Scope: scope}
	switch k := rng.IntN(20); {
	case k == 0:
	case k < 3:
		r.Permissions = []string{authz.Wildcard}
	default:
		r.Permissions = g.somePermissions(1 + rng.IntN(4))
	}
	if len(g.narrowed) > 0 && rng.IntN(4) == 0 {
		// A moderator's mute: usher.blocks.write narrowed to one or two
		// permissions, with them, mostly, or without.
		for range 1 + rng.IntN(2) {
			q := pick(rng, g.narrowed)
			if n := authz.PermBlocksWrite + "." + q; !slices.Contains(r.Permissions, n) {
				r.Permissions = append(r.Permissions, n)
			}
			if rng.IntN(3) > 0 && !slices.Contains(r.Permissions, q) {
				r.Permissions = append(r.Permissions, q)
			}
		}
	}
	switch k := rng.IntN(20); {
	case k < 4:
		r.AssignableRoles = []string{authz.Wildcard}
	case k < 12:
		for range 1 + rng.IntN(2) {
			if n := pick(rng, invRoles); !slices.Contains(r.AssignableRoles, n) {
				r.AssignableRoles = append(r.AssignableRoles, n)
			}
		}
	}
	if rng.IntN(12) == 0 {
		r.BindableOn = []string{pick(rng, invTypes)}
	}
	if rng.IntN(10) == 0 {
		r.MaxHolders = uint32(1 + rng.IntN(2))
	}
	return r
}

func (g *invariantGen) somePermissions(n int) []string {
	var out []string
	for range n {
		if p := pick(g.rng, g.perms); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// expiry is never for never percent of calls, else in the past or the
// future by an hour or more.
func (g *invariantGen) expiry(now time.Time, never, past int) time.Time {
	switch k := g.rng.IntN(100); {
	case k < never:
		return time.Time{}
	case k < never+past:
		return now.Add(-time.Hour - time.Duration(g.rng.Int64N(int64(100*time.Hour))))
	default:
		return now.Add(time.Hour + time.Duration(g.rng.Int64N(int64(100*time.Hour))))
	}
}

func (g *invariantGen) blockID() string {
	g.blocks++
	return fmt.Sprintf("b%02d", g.blocks)
}

// populate writes the world's quotas, grants and blocks on the platform's
// authority; what has expired already goes straight to the backend, as a
// feed delivers state written before.
func (g *invariantGen) populate(w *world) {
	rng := g.rng
	now := w.clock.Now()
	s := load(w)
	resources := []string{authz.RootName}
	for _, r := range s.Resources {
		resources = append(resources, r.Name)
	}
	for range rng.IntN(4) {
		q := authz.Quota{Scope: pick(rng, resources), ResourceType: pick(rng, invTypes[1:]), Limit: uint32(rng.IntN(5))}
		if rng.IntN(3) == 0 {
			q.Subject = pick(rng, g.subjects)
		}
		rev, err := w.eng.PutQuota(w.ctx, w.by, q)
		w.ok("PutQuota", rev, err)
	}
	for range 8 + rng.IntN(18) {
		res := pick(rng, resources)
		roles, _, err := w.idx.ListRoles(res)
		if err != nil || len(roles) == 0 {
			continue
		}
		gr := authz.Grant{Subject: pick(rng, g.subjects), Role: pick(rng, roles).Name, Resource: res, Expires: g.expiry(now, 70, 15)}
		if gr.Expires.Before(now) {
			w.store(authz.Change{Op: authz.OpPutGrant, Grant: &gr})
			continue
		}
		_, _ = w.eng.Grant(w.ctx, w.by, gr) // bindable_on and max_holders may refuse it
	}
	var last *authz.Block
	for range rng.IntN(7) {
		b := authz.Block{Subject: pick(rng, g.subjects), Resource: pick(rng, resources), ID: g.blockID(), Expires: g.expiry(now, 60, 20)}
		if rng.IntN(2) == 0 {
			b.Permissions = g.somePermissions(1 + rng.IntN(2))
			if len(g.narrowed) > 0 && rng.IntN(2) == 0 {
				// A mute, of what usher.blocks.write is narrowed to, now
				// and then where the last block is.
				b.Permissions = []string{pick(rng, g.narrowed)}
				if last != nil && rng.IntN(3) == 0 {
					b.Subject, b.Resource = last.Subject, last.Resource
				}
			}
			slices.Sort(b.Permissions)
		}
		last = &b
		if b.Expires.Before(now) {
			w.store(authz.Change{Op: authz.OpPutBlock, Block: &b})
			continue
		}
		w.block(b)
	}
}

// actor is mostly a subject that holds a permission starting with power
// somewhere, now and then any subject.
func (g *invariantGen) actor(ref *reference, power string) string {
	resources := []string{authz.RootName}
	for _, r := range ref.s.Resources {
		resources = append(resources, r.Name)
	}
	var perms []string
	for _, p := range ref.s.Permissions {
		if strings.HasPrefix(p.Name, power) {
			perms = append(perms, p.Name)
		}
	}
	var holders []string
	for _, s := range g.subjects {
		if slices.ContainsFunc(resources, func(r string) bool {
			return slices.ContainsFunc(perms, func(p string) bool { return ref.holds(s, p, r) })
		}) {
			holders = append(holders, s)
		}
	}
	if len(holders) == 0 || g.rng.IntN(10) < 3 {
		return pick(g.rng, g.subjects)
	}
	return pick(g.rng, holders)
}

// invariantView is what a write's generator knows of the state before: the
// reference over it, and the actor's permissions on each resource.
type invariantView struct {
	ref       *reference
	actor     string
	resources []string // root and every registered resource
	has       map[string]map[string]bool
}

// where returns the resources on which the actor holds one of perms.
func (v *invariantView) where(perms ...string) []string {
	var out []string
	for _, r := range v.resources {
		for _, p := range perms {
			if v.has[r][p] {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// prefer picks from preferred with probability percent/100 when there is
// any, else from all.
func (g *invariantGen) prefer(percent int, preferred, all []string) string {
	if len(preferred) > 0 && g.rng.IntN(100) < percent {
		return pick(g.rng, preferred)
	}
	return pick(g.rng, all)
}

// write is a random write and its actor, drawn so that many writes are
// allowed and many are refused, and a share of them known attacks.
func (g *invariantGen) write(ref *reference) (string, refWrite) {
	rng := g.rng
	if slices.ContainsFunc(ref.s.Admissions, func(a authz.Admission) bool { return a.Lobby != nil }) && rng.IntN(8) == 0 {
		return g.admit(ref)
	}
	k := rng.IntN(100)
	power := authz.PermQuotasWrite
	switch {
	case k < 30:
		power = authz.PermGrantsWrite
	case k < 38:
		power = authz.PermResourcesCreate
	case k < 48:
		power = authz.PermResourcesMove
	case k < 55:
		power = authz.PermResourcesDelete
	case k < 70:
		power = authz.PermRolesWrite
	case k < 92:
		power = authz.PermBlocksWrite
	}
	actor := g.actor(ref, power)
	if power == authz.PermBlocksWrite && len(g.narrowed) > 0 && rng.IntN(2) == 0 {
		if muters := g.muters(ref); len(muters) > 0 {
			actor = pick(rng, muters)
		}
	}
	return actor, g.writeBy(ref, actor, k)
}

// muters are the subjects that hold usher.blocks.write narrowed to some
// permission somewhere they do not hold it whole.
func (g *invariantGen) muters(ref *reference) []string {
	resources := []string{authz.RootName}
	for _, r := range ref.s.Resources {
		resources = append(resources, r.Name)
	}
	var out []string
	for _, s := range g.subjects {
		if slices.ContainsFunc(resources, func(r string) bool {
			return !ref.holds(s, authz.PermBlocksWrite, r) && slices.ContainsFunc(g.narrowed, func(p string) bool {
				return ref.holds(s, authz.PermBlocksWrite+"."+p, r)
			})
		}) {
			out = append(out, s)
		}
	}
	return out
}

// mutes are the permissions the actor may block at resource through
// usher.blocks.write narrowed to them.
func (g *invariantGen) mutes(v *invariantView, resource string) []string {
	var out []string
	for _, p := range g.narrowed {
		if v.has[resource][authz.PermBlocksWrite+"."+p] {
			out = append(out, p)
		}
	}
	return out
}

// mayBlock reports whether the actor may impose or lift a block of perms at
// resource: usher.blocks.write there, or usher.blocks.write.P for each P a
// block lists.
func (g *invariantGen) mayBlock(v *invariantView, resource string, perms []string) bool {
	if v.has[resource][authz.PermBlocksWrite] {
		return true
	}
	mutes := g.mutes(v, resource)
	return len(perms) > 0 && !slices.ContainsFunc(perms, func(p string) bool { return !slices.Contains(mutes, p) })
}

// writeBy is a write of kind k (see write) by actor, its targets drawn so
// that the actor holds what the write needs there, mostly.
func (g *invariantGen) writeBy(ref *reference, actor string, k int) refWrite {
	rng := g.rng
	v := &invariantView{ref: ref, actor: actor, resources: []string{authz.RootName}, has: map[string]map[string]bool{}}
	for _, r := range ref.s.Resources {
		v.resources = append(v.resources, r.Name)
	}
	for _, r := range v.resources {
		v.has[r] = set(ref.permissions(actor, r))
	}
	others := slices.DeleteFunc(slices.Clone(g.subjects), func(s string) bool { return s == actor })
	other := func() string {
		if rng.IntN(12) == 0 {
			return "user:newcomer"
		}
		return pick(rng, others)
	}
	now := ref.now
	switch {
	case k < 20:
		return g.grant(v, other)
	case k < 30:
		return g.revoke(v, other)
	case k < 38:
		return g.register(v)
	case k < 48:
		return g.move(v)
	case k < 55:
		return g.deleteResource(v)
	case k < 65:
		return g.putRole(v)
	case k < 70:
		return g.deleteRole(v)
	case k < 82:
		b := authz.Block{Subject: other(), ID: g.blockID(), Expires: g.expiry(now, 80, 5)}
		blockers := []string{authz.PermBlocksWrite}
		for _, p := range g.narrowed {
			blockers = append(blockers, authz.PermBlocksWrite+"."+p)
		}
		b.Resource = g.prefer(85, v.where(blockers...), v.resources)
		switch k := rng.IntN(100); {
		case k < 10:
			b.Subject = actor
		case k < 35:
			// Blocking one's superior: someone with a grant above.
			for _, gr := range ref.s.Grants {
				if gr.Subject != actor && gr.Resource != b.Resource && ref.under(b.Resource, gr.Resource) && rng.IntN(2) == 0 {
					b.Subject = gr.Subject
				}
			}
		}
		if rng.IntN(100) < 55 {
			// Muting rather than banning: what the actor holds there, mostly.
			if held := slices.Sorted(maps.Keys(v.has[b.Resource])); len(held) > 0 && rng.IntN(5) > 0 {
				b.Permissions = []string{pick(rng, held)}
			} else {
				b.Permissions = g.somePermissions(1 + rng.IntN(2))
			}
			if rng.IntN(40) == 0 {
				b.Permissions = append(b.Permissions, "no.such-permission")
			}
		}
		if mutes := g.mutes(v, b.Resource); len(mutes) > 0 && !v.has[b.Resource][authz.PermBlocksWrite] && rng.IntN(10) < 7 {
			// A mute by one who may only mute: some of the permissions
			// it may block, now and then with another, or none (a ban).
			b.Permissions = nil
			for _, i := range rng.Perm(len(mutes))[:1+rng.IntN(len(mutes))] {
				b.Permissions = append(b.Permissions, mutes[i])
			}
			switch rng.IntN(8) {
			case 0:
				b.Permissions = append(b.Permissions, pick(rng, g.perms))
			case 1:
				b.Permissions = nil
			}
		}
		// Now and then another block where one is already ("a later block
		// never weakens an earlier one"), or the ID of a block the subject
		// carries there, which replaces it.
		if len(ref.s.Blocks) > 0 && rng.IntN(4) == 0 {
			o := pick(rng, ref.s.Blocks)
			b.Subject, b.Resource = o.Subject, o.Resource
		}
		for _, o := range ref.s.Blocks {
			if o.Subject == b.Subject && o.Resource == b.Resource && rng.IntN(4) == 0 {
				b.ID = o.ID
				if rng.IntN(2) == 0 {
					// The same block, to run out sooner.
					b.Permissions, b.Expires = o.Permissions, now.Add(time.Hour+time.Duration(rng.Int64N(int64(time.Hour))))
				}
			}
		}
		return refWrite{Op: "Block", Block: b}
	case k < 92:
		var carried, liftable []authz.Block
		for _, b := range ref.s.Blocks {
			carried = append(carried, b)
			if g.mayBlock(v, b.Resource, b.Permissions) || b.Subject == actor { // unblocking oneself, more often than chance
				liftable = append(liftable, b)
			}
		}
		if len(liftable) > 0 && rng.IntN(10) < 7 {
			carried = liftable
		}
		// One who may only mute, mostly where it may lift some of a
		// subject's blocks and not others.
		var mixed []authz.Block
		for _, b := range liftable {
			if b.Subject != actor && !v.has[b.Resource][authz.PermBlocksWrite] && slices.ContainsFunc(ref.s.Blocks, func(o authz.Block) bool {
				return o.Subject == b.Subject && o.Resource == b.Resource && !g.mayBlock(v, o.Resource, o.Permissions)
			}) {
				mixed = append(mixed, b)
			}
		}
		if len(mixed) > 0 && rng.IntN(3) > 0 {
			carried = mixed
		}
		b := authz.Block{Subject: other(), Resource: pick(rng, v.resources)}
		if len(carried) > 0 && rng.IntN(10) > 0 {
			o := pick(rng, carried)
			b.Subject, b.Resource = o.Subject, o.Resource
			if rng.IntN(2) == 0 {
				b.ID = o.ID
			}
		}
		return refWrite{Op: "Unblock", Block: b}
	default:
		q := authz.Quota{Scope: g.prefer(85, v.where(authz.PermQuotasWrite), v.resources), ResourceType: pick(rng, invTypes), Limit: uint32(rng.IntN(5))}
		if rng.IntN(3) == 0 {
			q.Subject = pick(rng, g.subjects)
		}
		if rng.IntN(2) == 0 && len(ref.s.Quotas) > 0 {
			q = pick(rng, ref.s.Quotas)
			if rng.IntN(2) == 0 {
				return refWrite{Op: "DeleteQuota", Quota: q}
			}
			q.Limit = uint32(rng.IntN(5))
		}
		if rng.IntN(4) == 0 {
			return refWrite{Op: "DeleteQuota", Quota: q}
		}
		return refWrite{Op: "PutQuota", Quota: q}
	}
}

// assignable returns the role names the actor's roles list at resource.
func (v *invariantView) assignable(resource string) []string {
	var out []string
	for _, d := range v.ref.heldRoles(v.actor, resource) {
		for _, n := range d.AssignableRoles {
			if n != authz.Wildcard && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// visible returns the role names defined at resource or above.
func (v *invariantView) visible(resource string) []string {
	var out []string
	for _, d := range v.ref.s.Roles {
		if v.ref.under(resource, d.Scope) && !slices.Contains(out, d.Name) {
			out = append(out, d.Name)
		}
	}
	slices.Sort(out)
	return out
}

func (g *invariantGen) grant(v *invariantView, other func() string) refWrite {
	rng, ref := g.rng, v.ref
	gr := authz.Grant{Subject: other(), Resource: g.prefer(85, v.where(authz.PermGrantsWrite), v.resources), Expires: g.expiry(ref.now, 75, 5)}
	gr.Role = pick(rng, invRoles)
	switch k := rng.IntN(100); {
	case k < 60:
		gr.Role = g.prefer(100, v.assignable(gr.Resource), invRoles)
	case k < 80:
		gr.Role = g.prefer(100, v.visible(gr.Resource), invRoles)
	case k < 82:
		// Shortening someone's grant, which is revoking it when it runs
		// out.
		var live []authz.Grant
		for _, h := range ref.s.Grants {
			if h.Subject != v.actor && ref.unexpired(h.Expires) {
				live = append(live, h)
			}
		}
		if len(live) > 0 {
			gr = pick(rng, live)
			gr.Expires = ref.now.Add(time.Hour + time.Duration(rng.Int64N(int64(time.Hour))))
		}
	case k < 90:
		// A role above a resource that redefines it, more strongly or not.
		for _, d := range ref.s.Roles {
			if d.Scope != authz.RootName && rng.IntN(2) == 0 {
				above := ancestors(ref, d.Scope)
				gr.Role = d.Name
				gr.Resource = g.prefer(60, slices.DeleteFunc(slices.Clone(above), func(r string) bool { return !v.has[r][authz.PermGrantsWrite] }), above)
			}
		}
	default:
		// Re-granting one's own role, without expiry, or granting oneself.
		gr.Subject = v.actor
		for _, own := range ref.s.Grants {
			if own.Subject == v.actor && rng.IntN(2) == 0 {
				gr = authz.Grant{Subject: v.actor, Role: own.Role, Resource: own.Resource}
			}
		}
	}
	return refWrite{Op: "Grant", Grant: gr}
}

// ancestors returns the resources strictly above resource.
func ancestors(ref *reference, resource string) []string {
	return ref.path(resource)[1:]
}

func (g *invariantGen) revoke(v *invariantView, other func() string) refWrite {
	rng, ref := g.rng, v.ref
	gr := authz.Grant{Subject: other(), Role: pick(rng, invRoles), Resource: pick(rng, v.resources)}
	var mine, theirs, reachable []authz.Grant
	for _, h := range ref.s.Grants {
		switch {
		case h.Subject == v.actor:
			mine = append(mine, h)
		case v.has[h.Resource][authz.PermGrantsWrite]:
			reachable = append(reachable, h)
		default:
			theirs = append(theirs, h)
		}
	}
	switch k := rng.IntN(100); {
	case k < 65 && len(reachable) > 0:
		gr = pick(rng, reachable)
	case k < 80 && len(theirs) > 0:
		gr = pick(rng, theirs)
	case k < 88 && len(mine) > 0:
		gr = pick(rng, mine)
	}
	gr.Expires = time.Time{}
	return refWrite{Op: "Revoke", Grant: gr}
}

// register registers a fresh resource, or one deleted before
// (delete-then-register), under a parent where the actor may create one
// mostly.
func (g *invariantGen) register(v *invariantView) refWrite {
	rng := g.rng
	typ := pick(rng, invTypes)
	name := fmt.Sprintf("%s:new%d", typ, g.made)
	g.made++
	if len(g.deleted) > 0 && rng.IntN(4) == 0 {
		name = pick(rng, g.deleted)
		typ = authz.TypeOf(name)
	}
	parent := g.prefer(85, v.where(authz.PermResourcesCreate, authz.PermResourcesCreate+"."+typ), v.resources)
	return refWrite{Op: "PutResource", Resource: authz.Resource{Name: name, Parent: parent}}
}

// move moves a resource the actor may move, mostly, under a new parent:
// one where it may create, one it holds a grant on (another's subtree
// under one's own), or one below the resource itself (a cycle).
func (g *invariantGen) move(v *invariantView) refWrite {
	rng, ref := g.rng, v.ref
	registered := v.resources[1:]
	var movable []string
	for _, r := range registered {
		typ := authz.TypeOf(r)
		if v.has[r][authz.PermResourcesMove] || v.has[r][authz.PermResourcesMove+"."+typ] {
			movable = append(movable, r)
		}
	}
	name := g.prefer(80, movable, registered)
	typ := authz.TypeOf(name)
	var parent string
	switch k := rng.IntN(100); {
	case k < 60:
		parent = g.prefer(100, v.where(authz.PermResourcesCreate, authz.PermResourcesCreate+"."+typ), v.resources)
	case k < 75:
		var own []string
		for _, gr := range ref.s.Grants {
			if gr.Subject == v.actor {
				own = append(own, gr.Resource)
			}
		}
		parent = g.prefer(100, own, v.resources)
	case k < 85:
		var below []string
		for _, r := range v.resources {
			if ref.under(r, name) {
				below = append(below, r)
			}
		}
		parent = pick(rng, below)
	default:
		parent = pick(rng, v.resources)
	}
	return refWrite{Op: "PutResource", Resource: authz.Resource{Name: name, Parent: parent}}
}

func (g *invariantGen) deleteResource(v *invariantView) refWrite {
	rng, ref := g.rng, v.ref
	var leaves, deletable []string
	for _, r := range v.resources[1:] {
		if ref.height(r) == 0 {
			leaves = append(leaves, r)
			typ := authz.TypeOf(r)
			if v.has[r][authz.PermResourcesDelete] || v.has[r][authz.PermResourcesDelete+"."+typ] {
				deletable = append(deletable, r)
			}
		}
	}
	// Now and then one the actor is bound on, to be registered again.
	var bound []string
	for _, gr := range ref.s.Grants {
		if gr.Subject == v.actor && slices.Contains(deletable, gr.Resource) {
			bound = append(bound, gr.Resource)
		}
	}
	name := g.prefer(75, deletable, g.preferList(80, leaves, v.resources[1:]))
	if len(bound) > 0 && rng.IntN(10) < 3 {
		name = pick(rng, bound)
	}
	if rng.IntN(30) == 0 {
		name = authz.RootName
	}
	if ref.height(name) == 0 && name != authz.RootName {
		g.deleted = append(g.deleted, name)
	}
	return refWrite{Op: "DeleteResource", Resource: authz.Resource{Name: name}}
}

// preferList is preferred with probability percent/100 when it has any,
// else all.
func (g *invariantGen) preferList(percent int, preferred, all []string) []string {
	if len(preferred) > 0 && g.rng.IntN(100) < percent {
		return preferred
	}
	return all
}

// putRole defines a role at a scope where the actor may write roles,
// mostly, with permissions it holds there, mostly; or redefines a role the
// actor holds, where it holds it.
func (g *invariantGen) putRole(v *invariantView) refWrite {
	rng, ref := g.rng, v.ref
	scope := g.prefer(85, v.where(authz.PermRolesWrite), v.resources)
	r := g.role(pick(rng, append(slices.Clone(invRoles), "custom")), scope)
	if rng.IntN(4) == 0 {
		// Redefining one's own role, where one holds it or below.
		for _, gr := range ref.s.Grants {
			if gr.Subject == v.actor && rng.IntN(2) == 0 {
				r.Name = gr.Role
				var below []string
				for _, res := range v.resources {
					if ref.under(res, gr.Resource) {
						below = append(below, res)
					}
				}
				r.Scope = pick(rng, below)
			}
		}
	}
	if held := slices.Sorted(maps.Keys(v.has[r.Scope])); len(held) > 0 && rng.IntN(10) < 6 {
		r.Permissions = nil
		for range 1 + rng.IntN(3) {
			if p := pick(rng, held); !slices.Contains(r.Permissions, p) {
				r.Permissions = append(r.Permissions, p)
			}
		}
	}
	if assigns := v.assignable(r.Scope); len(assigns) > 0 && rng.IntN(10) < 3 {
		r.AssignableRoles = []string{pick(rng, assigns)}
	}
	if rng.IntN(40) == 0 {
		r.Permissions = append(r.Permissions, "no.such-permission")
	}
	// Now and then the very definition that is there already.
	for _, d := range ref.s.Roles {
		if d.Scope == r.Scope && d.Name == r.Name && rng.IntN(4) == 0 {
			r = d
		}
	}
	return refWrite{Op: "PutRole", Role: r}
}

func (g *invariantGen) deleteRole(v *invariantView) refWrite {
	rng, ref := g.rng, v.ref
	var mayWrite []authz.Role
	for _, d := range ref.s.Roles {
		if v.has[d.Scope][authz.PermRolesWrite] {
			mayWrite = append(mayWrite, d)
		}
	}
	r := authz.Role{Name: pick(rng, invRoles), Scope: pick(rng, v.resources)}
	switch k := rng.IntN(100); {
	case k < 75 && len(mayWrite) > 0:
		r = pick(rng, mayWrite)
	case k < 90 && len(ref.s.Roles) > 0:
		r = pick(rng, ref.s.Roles)
	}
	return refWrite{Op: "DeleteRole", Role: authz.Role{Name: r.Name, Scope: r.Scope}}
}

// admit is an Admit by a holder of a lobby's admit permission, mostly, to
// a resource of the rule's type: of another subject, of one who holds the
// lobby's role already (with another expiry: a re-grant), now and then of
// itself.
func (g *invariantGen) admit(ref *reference) (string, refWrite) {
	rng := g.rng
	var governed, all []string // resources a rule with a lobby governs, and all
	for _, r := range ref.s.Resources {
		all = append(all, r.Name)
		if a, ok := ref.admission(authz.TypeOf(r.Name), r.Name); ok && a.Lobby != nil {
			governed = append(governed, r.Name)
		}
	}
	if len(all) == 0 {
		all = []string{authz.RootName}
	}
	resource := g.prefer(90, governed, all)
	rule, ok := ref.admission(authz.TypeOf(resource), resource)
	if !ok || rule.Lobby == nil {
		for _, a := range ref.s.Admissions {
			if a.Lobby != nil {
				rule = a
			}
		}
	}
	actor := g.actor(ref, rule.Lobby.Admit)
	gr := authz.Grant{Subject: pick(rng, g.subjects), Resource: resource, Expires: g.expiry(ref.now, 70, 5)}
	switch k := rng.IntN(100); {
	case k < 8:
		gr.Subject = actor
	case k < 12:
		gr.Subject = "user:newcomer"
	case k < 40:
		// A holder of the lobby's role there, admitted again until another
		// time: shorter is a revoke when it runs out.
		for _, h := range ref.s.Grants {
			if h.Role == rule.Lobby.Role && h.Resource == resource && h.Subject != actor && rng.IntN(2) == 0 {
				gr.Subject = h.Subject
				gr.Expires = ref.now.Add(time.Hour + time.Duration(rng.Int64N(int64(2*time.Hour))))
			}
		}
	}
	return actor, refWrite{Op: "Admit", Grant: gr}
}
