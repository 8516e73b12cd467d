package authz

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"
)

// Reserved permissions govern Usher's own data. A policy declares them and
// implies them from its domain permissions through the permission tree; an
// actor needs them at the scope a write concerns.
//
// The three resource permissions may be narrowed to one resource type by a
// suffix: usher.resources.create.room lets its holder register rooms only.
// usher.blocks.write may be narrowed to one permission the same way:
// usher.blocks.write.send-audio lets its holder block and unblock
// send-audio alone (a mute), never everything.
const (
	PermGrantsWrite     = "usher.grants.write"
	PermResourcesCreate = "usher.resources.create"
	PermResourcesDelete = "usher.resources.delete"
	PermResourcesMove   = "usher.resources.move"
	PermRolesWrite      = "usher.roles.write"
	PermBlocksWrite     = "usher.blocks.write"
	PermQuotasWrite     = "usher.quotas.write"
)

// Limits on the work a write by an actor may ask of the engine, which judges
// its effect on every subject it could change (see judge). The platform,
// writing without an actor, is not judged and not limited by them.
const (
	// MaxActorMove is the most resources a subtree moved by an actor may
	// hold, unless Options.Limits says otherwise.
	MaxActorMove = 10_000
	// MaxJudged is the most (subject, resource) pairs one write by an actor
	// may change the permissions of, as the engine counts them, unless
	// Options.Limits says otherwise.
	MaxJudged = 1_000_000
	// MaxJudgedMoments is the most moments at which one subject's
	// permissions on one resource are compared for a write by an actor:
	// now, and each time one of its grants or blocks on the way to the
	// resource runs out. Each costs what comparing it now does.
	MaxJudgedMoments = 256
	// MaxJudgedNames is the most names listed in assignable_roles, by the
	// roles the subjects judged hold, that one write by an actor may read
	// where what they may assign before and after it is compared name by
	// name: each read costs a sort of them. None are read where the roles
	// a subject holds are the same before and after, nor, for the actor,
	// where they differ in some: only the names those list are compared.
	MaxJudgedNames = 1_000_000
)

// The rules of DESIGN.md's delegation invariant, as refusals name them.
const (
	RuleNoEscalation  = "no escalation"
	RuleNoOverreach   = "no overreach"
	RuleNoSelfService = "no self-service"
	// The rules that refuse an actor before its effect is judged.
	RuleMissingPermission = "missing permission"
	RuleNotAssignable     = "not assignable"
	RulePlatformOnly      = "platform only"
)

// guardActor records what judging the actor's power reads: its grants and
// blocks, the roles, the catalog and the shape of the tree.
func (p *plan) guardActor() {
	p.guard(subjectKey(p.by.Actor), keyRoles, keyCatalog, keyTree)
}

// actorHolds reports whether the actor's effective permissions at id include
// perm, as Check would see them.
func (p *plan) actorHolds(id uint32, perm string) bool {
	x := p.x
	i := x.cat.id(perm)
	return i >= 0 && x.effective(x.subj.lookup(p.by.Actor), id, p.now).has(i)
}

// require refuses a write by an actor who lacks perm at id. Without an actor
// the caller acts on its own authority.
func (p *plan) require(id uint32, perm, what string) error {
	return p.demand(id, perm, what, func() bool { return p.actorHolds(id, perm) })
}

// requireTyped is require for a resource permission that may be narrowed to
// typ: base.typ or base itself will do.
func (p *plan) requireTyped(id uint32, base, typ, what string) error {
	return p.demand(id, base+"."+typ, what, func() bool { return p.actorHolds(id, base+"."+typ) || p.actorHolds(id, base) })
}

// requireBlock is require for a block of perms at id (see mayBlock).
func (p *plan) requireBlock(id uint32, perms []string, what string) error {
	return p.demand(id, PermBlocksWrite, what, func() bool { return p.mayBlock(id, perms) })
}

// demand refuses a write by an actor for whom holds, asked once the
// actor's power is guarded, is false, naming perm as what it lacks at id.
// Without an actor the caller acts on its own authority.
func (p *plan) demand(id uint32, perm, what string, holds func() bool) error {
	if p.by.Actor == "" {
		return nil
	}
	p.guardActor()
	if holds() {
		return nil
	}
	return p.lacks(id, perm, what)
}

// mayBlock reports whether the actor may impose or lift, at id, a block of
// perms (every permission when empty): usher.blocks.write there, or, for a
// block that lists its permissions, usher.blocks.write.P for each P listed.
// The actor's permissions there are worked out once, however many it lists.
func (p *plan) mayBlock(id uint32, perms []string) bool {
	x := p.x
	have := x.effective(x.subj.lookup(p.by.Actor), id, p.now)
	holds := func(perm string) bool {
		i := x.cat.id(perm)
		return i >= 0 && have.has(i)
	}
	if holds(PermBlocksWrite) {
		return true
	}
	if len(perms) == 0 {
		return false
	}
	for _, perm := range perms {
		if !holds(PermBlocksWrite + "." + perm) {
			return false
		}
	}
	return true
}

func (p *plan) lacks(id uint32, perm, what string) error {
	e := errorf(PermissionDenied, "actor", p.by.Actor,
		"actor lacks %q on %q, which %s requires", perm, p.x.name(id), what)
	e.Rule = RuleMissingPermission
	e.Meta = map[string]string{"permission": perm, "resource": p.x.name(id)}
	return e
}

// heldRoles returns the definitions, resolved at path[0], of the live
// grants of s on path; none when a block of everything covers s there, for a
// block takes the blocked powers away.
func (x *Index) heldRoles(s uint32, path []uint32, now int64) []*roleDef {
	if s == noName {
		return nil
	}
	return slices.Collect((&view{x: x}).held(s, path, now))
}

// heldAt is heldRoles of the actor at res, whose path is path, found once
// for the plan: mayAssign asks for them for every role it looks at, and an
// actor may hold a hundred roles on each level.
func (p *plan) heldAt(res uint32, path []uint32) []*roleDef {
	if held, ok := p.held[res]; ok {
		return held
	}
	if p.held == nil {
		p.held = map[uint32][]*roleDef{}
	}
	held := p.x.heldRoles(p.x.subj.lookup(p.by.Actor), path, p.now)
	p.held[res] = held
	return held
}

// mayGrant applies DESIGN.md's Grant rule for the actor: usher.grants.write
// at res, and the actor may assign role there (mayAssign).
func (p *plan) mayGrant(role string, res uint32, verb string) error {
	if err := p.mayWriteGrants(role, res, verb); err != nil {
		return err
	}
	return p.mayAssign(role, res, verb)
}

// mayWriteGrants refuses an actor that lacks usher.grants.write at res,
// before anything else of the write is looked at: an actor without it
// learns nothing of the roles defined there, nor of the grants.
func (p *plan) mayWriteGrants(role string, res uint32, verb string) error {
	p.guardActor()
	if p.actorHolds(res, PermGrantsWrite) {
		return nil
	}
	name := p.x.name(res)
	e := errorf(PermissionDenied, "actor", p.by.Actor, "may not %s role %q on %q: the actor lacks %q there",
		verb, role, name, PermGrantsWrite)
	e.Rule = RuleMissingPermission
	e.Meta = map[string]string{"permission": PermGrantsWrite, "role": role, "resource": name}
	return e
}

// mayAssign reports whether role is one of the actor's own assignable roles
// at res: some role the actor holds there lists it in assignable_roles, or
// lists "*" and role's permissions are a subset of the actor's effective
// permissions wherever a grant would give them: at res and at every resource
// below it where role is redefined, where a role the actor holds is
// defined again, or where the actor carries a block. A role of "*" is a
// subset only for an actor whose own roles carry "*". Through "*", the
// roles role lists in its own assignable_roles must be ones the actor may
// assign there too: its holder would grant them, and an actor could
// otherwise hand an accomplice the power to give it, or anyone, a role it
// may neither hold nor assign.
func (p *plan) mayAssign(role string, res uint32, verb string) error {
	k := assignAt{role, res, verb}
	if err, ok := p.assignable[k]; ok {
		if err == errOpen {
			// Being found, or found on the word of one being found (a cycle
			// of lists): the first look answers for it.
			return nil
		}
		return err
	}
	if p.assignable == nil {
		p.assignable = map[assignAt]error{}
	}
	p.assignable[k] = errOpen
	p.open = append(p.open, k)
	err := p.mayAssignOnce(role, res, verb)
	if err != nil {
		p.assignable[k] = err // a refusal stands, whatever it leaned on
	}
	if len(p.open) > 0 && p.open[0] == k {
		// The first look is done: what it found on its way holds if it
		// does, for a refusal anywhere below would have refused it too.
		for _, o := range p.open {
			if p.assignable[o] == errOpen {
				if err == nil {
					p.assignable[o] = nil
				} else {
					delete(p.assignable, o)
				}
			}
		}
		p.open = p.open[:0]
	}
	return err
}

// narrowings returns the resources where the actor's permissions may be
// less than on the resource above: where a role it holds is defined again,
// and where it carries a block (a grant below only adds to them). They are
// found once for the plan, however many roles it looks at.
func (p *plan) narrowings() []uint32 {
	if p.narrowed {
		return p.narrowing
	}
	x := p.x
	actor := x.subj.lookup(p.by.Actor)
	var roles, out []uint32
	if actor != noName {
		for _, g := range x.bySubject.get(actor) {
			if live(g.exp, p.now) {
				roles = append(roles, g.role)
			}
		}
		out = append(out, x.subjBlocks[actor]...)
	}
	for _, r := range sortedUnique(roles) {
		out = append(out, x.roleScopes[r]...)
	}
	p.narrowing, p.narrowed = sortedUnique(out), true
	return p.narrowing
}

// errOpen marks an answer of mayAssign not yet found for good.
var errOpen = errors.New("not yet found")

// assignAt is a role assigned at a resource, by a verb of the refusals.
type assignAt struct {
	role string
	at   uint32
	verb string
}

// mayAssignOnce finds mayAssign's answer, which the plan keeps: a role's
// assignable roles, and theirs, are looked at once however many roles list
// them.
func (p *plan) mayAssignOnce(role string, res uint32, verb string) error {
	x := p.x
	p.guardActor()
	actor := x.subj.lookup(p.by.Actor)
	var buf [MaxDepth + 1]uint32
	path := x.path(res, buf[:0])
	wildcard := false
	for _, d := range p.heldAt(res, path) {
		if d.lists(role) {
			return nil
		}
		wildcard = wildcard || d.lists(Wildcard)
	}
	deny := func(format string, args ...any) error {
		e := errorf(PermissionDenied, "actor", p.by.Actor, "may not %s role %q on %q: %s", verb, role, x.name(res), fmt.Sprintf(format, args...))
		e.Rule = RuleNotAssignable
		e.Meta = map[string]string{"role": role, "resource": x.name(res)}
		return e
	}
	if !wildcard {
		return deny("no role the actor holds there lists it in assignable_roles")
	}
	id := x.roleID(role)
	points := []uint32{res}
	below := func(at uint32) {
		p.weighed++
		if at != res && x.under(at, res) {
			points = append(points, at)
		}
	}
	// The points are the role's scopes and the actor's narrowings below
	// res. Both lists span the whole tree: where res's subtree is smaller,
	// it is walked instead, so that a role defined on every call, judged at
	// each of them, is not judged against all of them at each.
	scopes, narrowings := x.roleScopes[id], p.narrowings()
	budget, walked := len(scopes)+len(narrowings), 0
	if x.walk(res, func(uint32) bool { walked++; p.weighed++; return walked <= budget }) {
		x.walk(res, func(m uint32) bool {
			p.weighed++
			if _, narrows := slices.BinarySearch(narrowings, m); narrows || x.roleDefs[roleKey(m, id)] != nil {
				if m != res {
					points = append(points, m)
				}
			}
			return true
		})
	} else {
		for _, scope := range scopes {
			below(scope)
		}
		// What the grant gives below res, the actor must hold there too.
		for _, at := range narrowings {
			below(at)
		}
	}
	points = append(points[:1], sortedUnique(points[1:])...)
	var under [MaxDepth + 1]uint32
	for _, at := range points {
		target := x.resolveAt(at, id)
		if target == nil {
			continue
		}
		// "*" is every permission the catalog will ever declare, not only
		// those it declares now, which the actor may hold without it: the
		// actor's own roles must carry it where the grant gives it, as they
		// resolve there.
		if slices.Contains(target.Permissions, Wildcard) && !carriesWildcard(slices.Values(x.heldRoles(actor, x.path(at, under[:0]), p.now))) {
			return deny("its definition at %q carries %q, every permission a later policy may declare too, and no role the actor holds there does",
				target.Scope, Wildcard)
		}
		have := x.effective(actor, at, p.now)
		if missing := x.cat.missing(target, have); missing != "" {
			if at == res {
				return deny("only permissions the actor has can be granted, and the actor lacks %q there", missing)
			}
			if target.Scope == x.name(at) {
				return deny("only permissions the actor has can be granted; %q redefines it below, with %q, which the actor lacks there",
					x.name(at), missing)
			}
			return deny("only permissions the actor has can be granted, and the grant gives %q on %q, below, where the actor lacks it",
				missing, x.name(at))
		}
		for _, name := range target.AssignableRoles {
			if name == Wildcard {
				continue // the actor's roles list "*": it may grant by it too
			}
			if err := p.mayAssign(name, at, verb); err != nil {
				return deny("its definition at %q lists %q in assignable_roles, which the actor may not assign there", target.Scope, name)
			}
		}
	}
	return nil
}

// judge holds a write by an actor to DESIGN.md's delegation invariant. It
// compares every subject's effective permissions, before and after the
// write, on every resource the write could change them on:
//
//  1. no escalation: what a subject gains there, the actor holds there or
//     may assign there by name;
//  2. no overreach: what a subject other than the actor loses there, the
//     actor holds there or may assign there by name;
//  3. no self-service: the actor's own permissions, and the roles it may
//     assign, change nowhere, except that it may lose its own grants on a
//     resource it deletes.
//
// "Everywhere" is finite: a subject's permissions can differ between a
// resource and its parent only where the subject has a grant or a block or
// where a role is defined, so the judge evaluates, below each resource the
// write touches, those resources and no others.
type judge struct {
	p     *plan
	extra []judgedRegion // regions a planner names beyond what the changes say
	// exempt are the resources the write deletes: the actor may lose its
	// own grants there.
	exempt map[uint32]bool
	// blocksJudged are the (subject, resource) pairs whose changed blocks
	// one verdict has judged already (see blocksMoved).
	blocksJudged map[uint64]bool
	// judged counts the (subject, resource) pairs, and moments, judged for
	// the write: a planner that asks for several verdicts (Unblock, lifting
	// blocks one by one) shares one budget of Limits.Judged among them.
	judged int
	// wild says, for each resource judged, whether the actor may give "*"
	// there (see wildcardPower).
	wild map[uint32]bool
	// admits is the lobby role an Admit grants, which the admit permission
	// lets the actor hand out in place of assignable_roles: what the
	// admitted subject may hand out through it is judged, as it is for a
	// definition, and it may assign the lobby role itself.
	admits string
	// redefined are the names of the roles the write defines or deletes,
	// sorted (see sameHands), and whether the definitions each subject's
	// grants on the way to each resource resolve to list one of them.
	redefined       []string
	redefinedListed map[uint64]bool
	// heldBuf and heldAfterBuf hold the definitions sameHands and
	// handsKept compare, for one comparison at a time.
	heldBuf, heldAfterBuf []*roleDef
	// namesRead counts the names read for MaxJudgedNames.
	namesRead int
}

type judgedRegion struct {
	root     uint32
	subjects []string
}

func newJudge(p *plan) *judge {
	return &judge{p: p, exempt: map[uint32]bool{}, wild: map[uint32]bool{}}
}

// mayGiveWildcard reports whether the actor may give "*" at, whose path
// before the write is pb: its roles there carry it, or list by name a role
// that does.
func (j *judge) mayGiveWildcard(before *view, at uint32, pb []uint32) bool {
	may, ok := j.wild[at]
	if !ok {
		may = before.wildcardPower(before.subject(j.p.by.Actor), pb, j.p.now)
		j.wild[at] = may
	}
	return may
}

// view is the index as a write would leave it: the index itself with the
// write's changes laid over it, for judging. A view with no changes is the
// index as it is.
type view struct {
	x       *Index
	parents map[uint32]uint32
	grants  map[uint64][]subjectGrant
	blocks  map[uint64][]*blockEntry
	roles   map[uint64]*roleDef // nil: deleted
	// roleScopes are the resources where the write puts or deletes each
	// role's definition.
	roleScopes map[uint32][]uint32
	newSubj    map[string]uint32
	newRoles   map[string]uint32
	// changed are the resources on which each subject's grants or blocks
	// differ from the index's: a write that removes many subjects' grants
	// is looked up by subject, not scanned once for each.
	changed map[uint32][]uint32
	// granted are the definitions granted roles resolve to, by resource
	// and role (see resolveGranted).
	granted map[uint64]*roleDef
}

func (v *view) subject(name string) uint32 {
	if s := v.x.subj.lookup(name); s != noName {
		return s
	}
	if s, ok := v.newSubj[name]; ok {
		return s
	}
	s := 1<<31 + uint32(len(v.newSubj))
	v.newSubj[name] = s
	return s
}

func (v *view) role(name string) uint32 {
	if r := v.x.roleID(name); r != noName {
		return r
	}
	if r, ok := v.newRoles[name]; ok {
		return r
	}
	r := 1<<31 + uint32(len(v.newRoles))
	v.newRoles[name] = r
	return r
}

func (v *view) parent(id uint32) uint32 {
	if p, ok := v.parents[id]; ok {
		return p
	}
	return v.x.nodes[id].parent
}

func (v *view) path(id uint32, buf []uint32) []uint32 {
	for ; id != noNode; id = v.parent(id) {
		buf = append(buf, id)
	}
	return buf
}

func (v *view) under(n, anc uint32) bool {
	for ; n != noNode; n = v.parent(n) {
		if n == anc {
			return true
		}
	}
	return false
}

func (v *view) grantsOn(s, id uint32) []subjectGrant {
	if list, ok := v.grants[pairKey(s, id)]; ok {
		return list
	}
	if s >= 1<<31 {
		return nil
	}
	return v.x.grantsOn(s, id)
}

func (v *view) blocksOn(s, id uint32) []*blockEntry {
	if list, ok := v.blocks[pairKey(s, id)]; ok {
		return list
	}
	return v.x.blocksOn(s, id)
}

func (v *view) resolve(path []uint32, role uint32) *roleDef {
	if len(path) > shortPath {
		// As Index.definitionOn looks for it: where the index or the
		// write defines it, when that is on fewer resources than the path.
		scopes, written := v.x.roleScopes[role], v.roleScopes[role]
		if len(scopes)+len(written) < len(path) {
			defines := func(scope uint32) bool { return v.definedAt(scope, role) != nil }
			if i := nearestOf(path, defines, scopes, written); i >= 0 {
				return v.definedAt(path[i], role)
			}
			return nil
		}
	}
	for _, a := range path {
		if d := v.definedAt(a, role); d != nil {
			return d
		}
	}
	return nil
}

// resolveGranted is resolve for the role of a grant on path: a subject is
// judged at each moment one of its grants or blocks runs out, and its
// grants, a hundred on each level, resolve at a resource the same at each.
// Its answers hold once the write's changes are laid, as they are before
// anything is judged.
func (v *view) resolveGranted(path []uint32, role uint32) *roleDef {
	k := uint64(path[0])<<32 | uint64(role)
	if d, ok := v.granted[k]; ok {
		return d
	}
	if v.granted == nil {
		v.granted = map[uint64]*roleDef{}
	}
	d := v.resolve(path, role)
	v.granted[k] = d
	return d
}

// definedAt is the definition of role at a, as the write leaves it.
func (v *view) definedAt(a, role uint32) *roleDef {
	if d, ok := v.roles[roleKey(a, role)]; ok {
		return d
	}
	if v.x.nodes[a].flags&nodeRoles != 0 {
		return v.x.roleDefs[roleKey(a, role)]
	}
	return nil
}

// effective is the set Check would allow for s at path[0].
func (v *view) effective(s uint32, path []uint32, now int64) bitset {
	set := newBitset(len(v.x.cat.perms))
	for _, a := range path {
		for _, g := range v.grantsOn(s, a) {
			if live(g.exp, now) {
				if d := v.resolveGranted(path, g.role); d != nil {
					set.union(d.perms)
				}
			}
		}
	}
	for _, a := range path {
		for _, b := range v.blocksOn(s, a) {
			if !live(b.exp, now) {
				continue
			}
			if b.perms == nil {
				return newBitset(len(v.x.cat.perms))
			}
			set.subtract(b.perms)
		}
	}
	return set
}

// power is what s may hand out at path[0]: its effective permissions, and
// those of every role a role it holds there lists by name in
// assignable_roles, each resolved there; and the names it may assign.
func (v *view) power(s uint32, path []uint32, now int64) (bitset, []string) {
	var names []string
	for d := range v.held(s, path, now) {
		names = append(names, d.AssignableRoles...)
	}
	return v.powerPerms(s, path, now), sortedSet(names)
}

// powerPerms is power's set alone: the names s may assign, up to a
// thousand for each role it holds on the way, are not gathered.
func (v *view) powerPerms(s uint32, path []uint32, now int64) bitset {
	set := v.effective(s, path, now)
	for d := range v.held(s, path, now) {
		for _, name := range d.AssignableRoles {
			if name == Wildcard {
				continue
			}
			if r := v.resolve(path, v.role(name)); r != nil {
				set.union(r.perms)
			}
		}
	}
	return set
}

// sameHands reports whether s holds, at moment t, the same definitions on
// its path before the write (pb) as after it (pa), the path itself the
// same, and none of them lists a role the write defines or deletes: then
// the roles s may assign there, what they carry there and whether one
// carries "*" are the same before and after, and what s may hand out
// differs only by its own permissions. Comparing the definitions held
// costs a look at each grant; the names they list, up to a thousand each,
// are not read.
func (j *judge) sameHands(before, after *view, s uint32, pb, pa []uint32, t int64) bool {
	if !slices.Equal(pb, pa) {
		return false
	}
	held := j.heldBuf[:0]
	for d := range before.held(s, pb, t) {
		held = append(held, d)
	}
	j.heldBuf = held
	i := 0
	for d := range after.held(s, pa, t) {
		if i == len(held) || held[i] != d {
			return false
		}
		i++
	}
	if i != len(held) {
		return false
	}
	return !j.listsRedefined(before, after, s, pb)
}

// readNames counts against MaxJudgedNames the names that the roles
// subject s, called name, holds at moment t before the write (on pb) and
// after it (on pa) list in assignable_roles, before power reads them, and
// refuses the write once they are too many.
func (j *judge) readNames(before, after *view, s uint32, name string, pb, pa []uint32, at uint32, t int64) error {
	for d := range before.held(s, pb, t) {
		j.namesRead += len(d.AssignableRoles)
	}
	for d := range after.held(s, pa, t) {
		j.namesRead += len(d.AssignableRoles)
	}
	if j.namesRead <= MaxJudgedNames {
		return nil
	}
	return errorf(ResourceExhausted, "actor", j.p.by.Actor,
		"judging the write would read more than %d names listed in assignable_roles by the roles %q holds on the way to %q and the other subjects judged hold, the most a write by an actor is judged by; the platform may make it without an actor",
		MaxJudgedNames, name, j.p.x.name(at)).limited(MaxJudgedNames)
}

// listsRedefined reports whether a definition one of s's grants on path
// resolves to, before the write or after it, live or not, lists a role the
// write defines or deletes. It is found once for each subject and resource,
// whatever the moments it is judged at.
func (j *judge) listsRedefined(before, after *view, s uint32, path []uint32) bool {
	if len(j.redefined) == 0 {
		return false
	}
	k := pairKey(s, path[0])
	if lists, ok := j.redefinedListed[k]; ok {
		return lists
	}
	lists := false
	for _, v := range []*view{before, after} {
		for _, a := range path {
			for _, g := range v.grantsOn(s, a) {
				d := v.resolveGranted(path, g.role)
				lists = lists || d != nil && slices.ContainsFunc(j.redefined, d.lists)
			}
		}
	}
	if j.redefinedListed == nil {
		j.redefinedListed = map[uint64]bool{}
	}
	j.redefinedListed[k] = lists
	return lists
}

// held yields the definitions, resolved at path[0], of the roles s holds
// live on path at now: none while a block of everything covers s there.
func (v *view) held(s uint32, path []uint32, now int64) iter.Seq[*roleDef] {
	return func(yield func(*roleDef) bool) {
		if v.blockedWhole(s, path, now) {
			return
		}
		for _, a := range path {
			for _, g := range v.grantsOn(s, a) {
				if !live(g.exp, now) {
					continue
				}
				if d := v.resolveGranted(path, g.role); d != nil && !yield(d) {
					return
				}
			}
		}
	}
}

// wildcardPower reports whether s may give "*" at path[0]: a role it holds
// there carries it, or lists by name a role that carries it there.
func (v *view) wildcardPower(s uint32, path []uint32, now int64) bool {
	for d := range v.held(s, path, now) {
		if slices.Contains(d.Permissions, Wildcard) {
			return true
		}
		for _, name := range d.AssignableRoles {
			if name == Wildcard {
				continue
			}
			if r := v.resolve(path, v.role(name)); r != nil && slices.Contains(r.Permissions, Wildcard) {
				return true
			}
		}
	}
	return false
}

// blockedWhole reports whether a live block of everything covers s on path.
func (v *view) blockedWhole(s uint32, path []uint32, now int64) bool {
	for _, a := range path {
		for _, b := range v.blocksOn(s, a) {
			if b.perms == nil && live(b.exp, now) {
				return true
			}
		}
	}
	return false
}

// lay puts the write's changes over v. Changes on resources the write
// registers are left out: nothing was held on them before.
func (v *view) lay(changes []Change) {
	x := v.x
	for _, c := range changes {
		switch c.Op {
		case OpPutGrant, OpDeleteGrant:
			res := x.lookupNode(c.Grant.Resource)
			if res == noNode {
				continue
			}
			s, role := v.subject(c.Grant.Subject), v.role(c.Grant.Role)
			k := pairKey(s, res)
			list := slices.Clone(v.grantsOn(s, res))
			list = slices.DeleteFunc(list, func(g subjectGrant) bool { return g.role == role })
			if c.Op == OpPutGrant {
				list = append(list, subjectGrant{res: res, role: role, exp: expiry(c.Grant.Expires)})
			}
			v.grants[k] = list
			v.changed[s] = append(v.changed[s], res)
		case OpPutBlock, OpDeleteBlock:
			res := x.lookupNode(c.Block.Resource)
			if res == noNode {
				continue
			}
			s := v.subject(c.Block.Subject)
			k := pairKey(s, res)
			list := slices.Clone(v.blocksOn(s, res))
			list = slices.DeleteFunc(list, func(b *blockEntry) bool { return b.ID == c.Block.ID })
			if c.Op == OpPutBlock {
				list = append(list, x.blockEntry(*c.Block))
			}
			v.blocks[k] = list
			v.changed[s] = append(v.changed[s], res)
		case OpPutRole, OpDeleteRole:
			if scope := x.lookupNode(c.Role.Scope); scope != noNode {
				role := v.role(c.Role.Name)
				var d *roleDef
				if c.Op == OpPutRole {
					d = &roleDef{Role: *c.Role, perms: x.cat.closure(c.Role.Permissions)}
				}
				v.roles[roleKey(scope, role)] = d
				v.roleScopes[role] = append(v.roleScopes[role], scope)
			}
		case OpPutResource:
			id, parent := x.lookupNode(c.Resource.Name), x.lookupNode(c.Resource.Parent)
			if id != noNode && parent != noNode {
				v.parents[id] = parent
			}
		}
	}
}

// affect names subjects whose permissions a write changes below root beyond
// what its changes say: a planner that knows more than the changes (none do
// today) adds them here.
func (j *judge) affect(root uint32, subjects ...string) {
	j.extra = append(j.extra, judgedRegion{root: root, subjects: subjects})
}

// verify judges the plan's changes.
func (j *judge) verify() error {
	p, x := j.p, j.p.x
	before := &view{x: x}
	j.blocksJudged = map[uint64]bool{}
	after := &view{x: x, parents: map[uint32]uint32{}, grants: map[uint64][]subjectGrant{},
		blocks: map[uint64][]*blockEntry{}, roles: map[uint64]*roleDef{}, roleScopes: map[uint32][]uint32{},
		newSubj: map[string]uint32{}, newRoles: map[string]uint32{}, changed: map[uint32][]uint32{}}
	after.lay(p.changes)
	before.newSubj, before.newRoles = after.newSubj, after.newRoles
	j.redefined = nil
	for _, c := range p.changes {
		if c.Op == OpPutRole || c.Op == OpDeleteRole {
			j.redefined = append(j.redefined, c.Role.Name)
		}
	}
	j.redefined = sortedSet(j.redefined)

	regions := map[uint32]map[string]bool{}
	add := func(root uint32, subjects ...string) {
		if regions[root] == nil {
			regions[root] = map[string]bool{}
		}
		for _, s := range subjects {
			regions[root][s] = true
		}
	}
	for _, r := range j.extra {
		add(r.root, r.subjects...)
	}
	for _, c := range p.changes {
		switch c.Op {
		case OpPutGrant, OpDeleteGrant:
			if res := x.lookupNode(c.Grant.Resource); res != noNode {
				add(res, c.Grant.Subject)
			}
		case OpPutBlock, OpDeleteBlock:
			if res := x.lookupNode(c.Block.Resource); res != noNode {
				add(res, c.Block.Subject)
			}
		case OpPutRole, OpDeleteRole:
			if scope := x.lookupNode(c.Role.Scope); scope != noNode {
				subjects, err := j.holders(scope, x.listers([]string{c.Role.Name})...)
				if err != nil {
					return err
				}
				add(scope, subjects...)
			}
		case OpPutResource:
			id := x.lookupNode(c.Resource.Name)
			if id == noNode || x.nodes[id].parent == x.lookupNode(c.Resource.Parent) {
				continue // a registration, or a stage that changes no one's permissions
			}
			subjects, err := j.moved(id, x.lookupNode(c.Resource.Parent))
			if err != nil {
				return err
			}
			add(id, subjects...)
		case OpDeleteResource:
			if id := x.lookupNode(c.Resource.Name); id != noNode {
				j.exempt[id] = true
			}
		}
	}
	actorName := p.by.Actor
	actor := after.subject(actorName)
	// A move changes which resources are below which: the points below a
	// region are then found by the view's tree, not by walking the index's.
	walk := !slices.ContainsFunc(p.changes, func(c Change) bool {
		return c.Op == OpPutResource && x.lookupNode(c.Resource.Name) != noNode
	})
	// A write that changes only other subjects' grants and blocks leaves the
	// actor's permissions, and what it may give, as they were everywhere:
	// the actor is judged (rule 3) only by a write that could change them.
	others := !slices.ContainsFunc(p.changes, func(c Change) bool {
		switch c.Op {
		case OpPutGrant, OpDeleteGrant:
			return c.Grant.Subject == actorName
		case OpPutBlock, OpDeleteBlock:
			return c.Block.Subject == actorName
		}
		return true
	})
	// A write that changes which definition of a role applies where (a
	// definition, a deletion, a move) changes what the role's holders, and
	// those of roles listing it, may hand out, and so does one that lifts a
	// block of everything, which takes away what its subject's roles let
	// it hand out: that is judged too, as a definition's own
	// assignable_roles are. What a grant or a revoke by an actor changes
	// there, the Grant rule judges; an Admit, which no role of the actor's
	// need list, is judged here.
	handsOut := j.admits != "" || slices.ContainsFunc(p.changes, func(c Change) bool {
		switch c.Op {
		case OpPutRole, OpDeleteRole, OpDeleteResource, OpPutBlock, OpDeleteBlock:
			return true
		case OpPutResource:
			id := x.lookupNode(c.Resource.Name)
			return id != noNode && x.nodes[id].parent != x.lookupNode(c.Resource.Parent)
		}
		return false
	})
	p.guard(subjectKey(actorName))
	powers, effs := map[uint32]bitset{}, map[uint32]bitset{}
	roots := make([]uint32, 0, len(regions))
	for root := range regions {
		roots = append(roots, root)
	}
	slices.Sort(roots)
	for _, root := range roots {
		names := regions[root]
		if !others {
			names[actorName] = true
		}
		subjects := make([]string, 0, len(names))
		for s := range names {
			subjects = append(subjects, s)
		}
		slices.Sort(subjects)
		shared := j.sharedPoints(after, root, actor, walk)
		for _, name := range subjects {
			// The verdict on a subject rests on its grants and blocks as
			// they are now, changed by this write or not: a grant committed
			// meanwhile may give it what the write would then take.
			p.guard(subjectKey(name))
			s := after.subject(name)
			for _, at := range j.points(after, root, s, actor, shared) {
				if j.judged%1024 == 0 {
					// A write that judges many holders costs seconds: it
					// stops when its caller gives up.
					if err := p.ctx.Err(); err != nil {
						return err
					}
				}
				if j.judged++; j.judged > p.limits.Judged {
					return errorf(ResourceExhausted, "actor", actorName,
						"the write would change permissions on more than %d (subject, resource) pairs, the most one write by an actor may; the platform may make it without an actor", p.limits.Judged).limited(p.limits.Judged)
				}
				var bb, ab [MaxDepth + 1]uint32
				pb, pa := before.path(at, bb[:0]), after.path(at, ab[:0])
				if err := j.blocksMoved(before, after, s, name, pb, pa, at); err != nil {
					return err
				}
				// The write is compared now and at every moment a grant or
				// block of s on the path runs out: a block that outlasts a
				// ban, or an unblock under a shorter one, takes or gives
				// then what it does not now.
				moments := instants(before, after, s, pb, pa, p.now)
				if len(moments) > MaxJudgedMoments {
					return errorf(ResourceExhausted, "actor", actorName,
						"%q holds grants and blocks on the way to %q that run out at more than %d different times, the most a write by an actor is judged at; the platform may make it without an actor",
						name, x.name(at), MaxJudgedMoments).limited(MaxJudgedMoments)
				}
				if j.judged += len(moments) - 1; j.judged > p.limits.Judged {
					return errorf(ResourceExhausted, "actor", actorName,
						"the write would change permissions on more than %d (subject, resource) pairs, the most one write by an actor may; the platform may make it without an actor", p.limits.Judged).limited(p.limits.Judged)
				}
				for _, t := range moments {
					was, is := before.effective(s, pb, t), after.effective(s, pa, t)
					if s == actor {
						if err := j.self(before, after, pb, pa, was, is, at, t); err != nil {
							return err
						}
						continue
					}
					if !handsOut && was.equal(is) {
						continue
					}
					// beyond is what of set the actor may not give at at: its
					// power there, which reads every name its roles list, is
					// read only where its permissions do not cover set.
					beyond := func(set bitset) bitset {
						eff, ok := effs[at]
						if !ok {
							eff = before.effective(actor, pb, p.now)
							effs[at] = eff
						}
						if rest := set.minus(eff); rest.empty() {
							return rest
						}
						pow, ok := powers[at]
						if !ok {
							pow = before.powerPerms(actor, pb, p.now)
							powers[at] = pow
						}
						return set.minus(pow)
					}
					// What the subject would gain is told first: what it
					// could give includes what it holds, and a subject that
					// gains a permission (an Admit's, say) is not one that
					// becomes able to give it.
					if !was.equal(is) {
						if missing := x.cat.top(beyond(is.minus(was))); missing != "" {
							return j.refuse(RuleNoEscalation, name, missing, at, j.when("would gain %q on %q, which the actor neither holds there nor may assign", t))
						}
					}
					if handsOut {
						if err := j.handsOn(before, after, s, name, pb, pa, at, t, beyond); err != nil {
							return err
						}
					}
					if !was.equal(is) {
						if missing := x.cat.top(beyond(was.minus(is))); missing != "" {
							return j.refuse(RuleNoOverreach, name, missing, at, j.when("would lose %q on %q, which the actor neither holds there nor may assign", t))
						}
					}
					// "*" is every permission a later policy declares too,
					// which comparing today's permissions, above, does not see: who
					// comes to carry it, or no longer does, is judged as a
					// grant of a role carrying it is.
					if w0, w1 := carriesWildcard(before.held(s, pb, t)), carriesWildcard(after.held(s, pa, t)); w0 != w1 && !j.mayGiveWildcard(before, at, pb) {
						if w1 {
							return j.refuse(RuleNoEscalation, name, Wildcard, at, j.when("would come to carry %q on %q, every permission a later policy may declare too, which the actor neither carries there nor may assign", t))
						}
						return j.refuse(RuleNoOverreach, name, Wildcard, at, j.when("would no longer carry %q on %q, every permission a later policy may declare too, which the actor neither carries there nor may assign", t))
					}
					if handsOut {
						if err := j.handsOff(before, after, s, name, pb, pa, at, t, beyond); err != nil {
							return err
						}
					}
				}
			}
		}
	}
	return nil
}

// blocksMoved holds a write that changes which blocks apply to subject s at
// a resource to the rules of Block and Unblock: a move that takes a
// resource out from under a block, or a delete that takes a block with it,
// lifts the block as an Unblock would, and a move under a block imposes it
// as a Block would. Either needs usher.blocks.write where the block is; the
// actor never lifts its own (no self-service).
//
// A subject may carry a hundred blocks on each resource of a path, and is
// judged at every point below what the write changes. Where the path is
// the same before and after, only the blocks the write itself changes can
// differ, and what they lift or impose is the same at every point below
// them: each resource's are compared once in a verdict, not once per point.
func (j *judge) blocksMoved(before, after *view, s uint32, name string, pb, pa []uint32, at uint32) error {
	if !slices.Equal(pb, pa) {
		return j.blocksChanged(before.applying(s, pb, j.p.now), after.applying(s, pa, j.p.now), name)
	}
	for i, a := range pa {
		k := pairKey(s, a)
		if _, changed := after.blocks[k]; !changed || j.blocksJudged[k] {
			continue
		}
		j.blocksJudged[k] = true
		if err := j.blocksChanged(before.applying(s, pa[i:i+1], j.p.now), after.applying(s, pa[i:i+1], j.p.now), name); err != nil {
			return err
		}
	}
	return nil
}

// blocksChanged judges the blocks of subject name in was and not in is as
// lifted, and those in is and not in was as imposed.
func (j *judge) blocksChanged(was, is []appliedBlock, name string) error {
	if slices.Equal(was, is) {
		return nil
	}
	p, x := j.p, j.p.x
	changed := func(from, to []appliedBlock, verb string) error {
		in := make(map[appliedBlock]bool, len(to))
		for _, b := range to {
			in[b] = true
		}
		for _, b := range from {
			if in[b] {
				continue
			}
			if name == p.by.Actor && verb == "lift" {
				e := errorf(PermissionDenied, "actor", p.by.Actor, "may not %s: %s: the write would lift the actor's own block %q on %q",
					p.doing, RuleNoSelfService, b.id, x.name(b.res))
				e.Rule = RuleNoSelfService
				e.Meta = map[string]string{"subject": name, "block_id": b.id, "resource": x.name(b.res)}
				return e
			}
			if !p.mayBlock(b.res, b.perms()) {
				e := errorf(PermissionDenied, "actor", p.by.Actor,
					"may not %s: it would %s the block %q of %q on %q, which needs %q there, and the actor lacks it",
					p.doing, verb, b.id, name, x.name(b.res), PermBlocksWrite)
				e.Rule = RuleMissingPermission
				e.Meta = map[string]string{"permission": PermBlocksWrite, "subject": name, "resource": x.name(b.res)}
				return e
			}
		}
		return nil
	}
	if err := changed(was, is, "lift"); err != nil {
		return err
	}
	return changed(is, was, "impose")
}

// appliedBlock is a block that applies at some resource: where it is, its
// ID and the permissions it lists, joined by commas (none: every one).
type appliedBlock struct {
	res    uint32
	id     string
	listed string
}

func (b appliedBlock) perms() []string {
	if b.listed == "" {
		return nil
	}
	return strings.Split(b.listed, ",")
}

// applying returns the live blocks of s on path.
func (v *view) applying(s uint32, path []uint32, now int64) []appliedBlock {
	var out []appliedBlock
	for _, a := range path {
		for _, b := range v.blocksOn(s, a) {
			if live(b.exp, now) {
				out = append(out, appliedBlock{res: a, id: b.ID, listed: strings.Join(b.Permissions, ",")})
			}
		}
	}
	return out
}

// instants are the moments at which the write is compared for subject s
// on a path: now, and each later moment at which one of s's grants or
// blocks on the path, before or after the write, runs out.
func instants(before, after *view, s uint32, pb, pa []uint32, now int64) []int64 {
	out := []int64{now}
	add := func(exp int64) {
		if exp > now {
			out = append(out, exp)
		}
	}
	for i, v := range []*view{before, after} {
		path := pb
		if i == 1 {
			path = pa
		}
		for _, a := range path {
			for _, g := range v.grantsOn(s, a) {
				add(g.exp)
			}
			for _, b := range v.blocksOn(s, a) {
				add(b.exp)
			}
		}
	}
	// Sorted and then made unique, not searched at each add: a subject may
	// carry thousands of grants and blocks on one path.
	slices.Sort(out[1:])
	return slices.Compact(out)
}

// when qualifies a finding at moment t: now, or from a later time on.
func (j *judge) when(format string, t int64) string {
	if t == j.p.now {
		return format
	}
	return format + " from " + expiryTime(t).Format(time.RFC3339Nano) + " on, when a grant or block runs out"
}

// handsOn applies rule 1 to what subject s, other than the actor, may hand
// out at one resource, at moment t, after a write that changes which
// definition of a role applies there or lifts a block of everything: what
// it becomes able to give, the actor holds there or may assign (beyond
// leaves none of it), and each role it becomes able to assign is one a
// definition by the actor there could let it assign.
func (j *judge) handsOn(before, after *view, s uint32, name string, pb, pa []uint32, at uint32, t int64, beyond func(bitset) bitset) error {
	x := j.p.x
	if j.sameHands(before, after, s, pb, pa, t) {
		// What s may give through the roles it may assign is the same: it
		// may give more only where its own permissions grow beyond it.
		if gained := after.effective(s, pa, t).minus(before.effective(s, pb, t)); !gained.empty() {
			// beyond takes what the actor may give from what it is given,
			// and what s may give through its roles from that, in either
			// order: the latter, a thousand names for each role s holds,
			// is read only for what the former leaves.
			if rest := beyond(gained); !rest.empty() {
				rest.subtract(before.powerPerms(s, pb, t))
				if missing := x.cat.top(rest); missing != "" {
					return j.refuse(RuleNoEscalation, name, missing, at, j.when("would become able to give %q on %q, through a role it may assign, which the actor neither holds there nor may assign", t))
				}
			}
		}
		return nil
	}
	if err := j.readNames(before, after, s, name, pb, pa, at, t); err != nil {
		return err
	}
	powerBefore, assignedBefore := before.power(s, pb, t)
	powerAfter, assignedAfter := after.power(s, pa, t)
	if missing := x.cat.top(beyond(powerAfter.minus(powerBefore))); missing != "" {
		return j.refuse(RuleNoEscalation, name, missing, at, j.when("would become able to give %q on %q, through a role it may assign, which the actor neither holds there nor may assign", t))
	}
	if after.wildcardPower(s, pa, t) && !before.wildcardPower(s, pb, t) && !j.mayGiveWildcard(before, at, pb) {
		return j.refuse(RuleNoEscalation, name, Wildcard, at, j.when("would become able to give %q on %q, every permission a later policy may declare too, which the actor neither carries there nor may assign", t))
	}
	for _, role := range assignedAfter {
		if sortedHas(assignedBefore, role) || role == j.admits || j.mayLetAssign(role, at) {
			continue
		}
		what := fmt.Sprintf("%q would become able to assign role %q on %q, which the actor may not assign there", name, role, x.name(at))
		return j.deny(RuleNoEscalation, fmt.Sprintf("%s: %s", RuleNoEscalation, j.when(what, t)),
			map[string]string{"subject": name, "role": role, "resource": x.name(at)})
	}
	return nil
}

// handsOff applies rule 2 to what subject s, other than the actor, may hand
// out at one resource, at moment t, after such a write, or a block: you
// take away only what you could give, so what it may no longer give, the
// actor holds there or may assign (beyond leaves none of it), and each role
// it may no longer assign is one a definition by the actor there could let
// it assign. On a resource the write deletes nothing is left to hand out,
// and what is lost there is not judged so.
func (j *judge) handsOff(before, after *view, s uint32, name string, pb, pa []uint32, at uint32, t int64, beyond func(bitset) bitset) error {
	if j.exempt[at] {
		return nil
	}
	x := j.p.x
	if j.sameHands(before, after, s, pb, pa, t) {
		// What s may give through the roles it may assign is the same: it
		// may give less only where its own permissions shrink beyond it.
		if lost := before.effective(s, pb, t).minus(after.effective(s, pa, t)); !lost.empty() {
			if rest := beyond(lost); !rest.empty() {
				rest.subtract(after.powerPerms(s, pa, t))
				if missing := x.cat.top(rest); missing != "" {
					return j.refuse(RuleNoOverreach, name, missing, at, j.when("would no longer be able to give %q on %q, through a role it may assign, which the actor neither holds there nor may assign", t))
				}
			}
		}
		return nil
	}
	if err := j.readNames(before, after, s, name, pb, pa, at, t); err != nil {
		return err
	}
	powerBefore, assignedBefore := before.power(s, pb, t)
	powerAfter, assignedAfter := after.power(s, pa, t)
	if missing := x.cat.top(beyond(powerBefore.minus(powerAfter))); missing != "" {
		return j.refuse(RuleNoOverreach, name, missing, at, j.when("would no longer be able to give %q on %q, through a role it may assign, which the actor neither holds there nor may assign", t))
	}
	if before.wildcardPower(s, pb, t) && !after.wildcardPower(s, pa, t) && !j.mayGiveWildcard(before, at, pb) {
		return j.refuse(RuleNoOverreach, name, Wildcard, at, j.when("would no longer be able to give %q on %q, every permission a later policy may declare too, which the actor neither carries there nor may assign", t))
	}
	for _, role := range assignedBefore {
		if sortedHas(assignedAfter, role) || j.mayLetAssign(role, at) {
			continue
		}
		what := fmt.Sprintf("%q would no longer be able to assign role %q on %q, which the actor may not assign there", name, role, x.name(at))
		return j.deny(RuleNoOverreach, fmt.Sprintf("%s: %s", RuleNoOverreach, j.when(what, t)),
			map[string]string{"subject": name, "role": role, "resource": x.name(at)})
	}
	return nil
}

// mayLetAssign is the plan's mayLetAssign with the roles the actor holds
// at res, now.
func (j *judge) mayLetAssign(role string, res uint32) bool {
	p, x := j.p, j.p.x
	var buf [MaxDepth + 1]uint32
	return p.mayLetAssign(role, res, p.heldAt(res, x.path(res, buf[:0])))
}

// sortedHas reports whether list, a sorted set such as power gives, holds
// name: what a subject may assign is up to a thousand names for each role
// it holds on the way, and each is looked up in the other list.
func sortedHas(list []string, name string) bool {
	_, found := slices.BinarySearch(list, name)
	return found
}

// self applies rule 3 to the actor at one resource, at moment t: its
// permissions change nowhere, and neither does what it may give, by its
// own permissions or by the roles it may assign by name.
func (j *judge) self(before, after *view, pb, pa []uint32, was, is bitset, at uint32, t int64) error {
	p, x := j.p, j.p.x
	if missing := x.cat.top(is.minus(was)); missing != "" {
		return j.refuse(RuleNoSelfService, p.by.Actor, missing, at, j.when("the actor would gain %q on %q itself", t))
	}
	if missing := x.cat.top(was.minus(is)); missing != "" && !j.exempt[at] {
		return j.refuse(RuleNoSelfService, p.by.Actor, missing, at, j.when("the actor would lose %q on %q itself", t))
	}
	actor := after.subject(p.by.Actor)
	if w0, w1 := carriesWildcard(before.held(actor, pb, t)), carriesWildcard(after.held(actor, pa, t)); w1 && !w0 {
		return j.refuse(RuleNoSelfService, p.by.Actor, Wildcard, at, j.when("the actor would come to carry %q on %q itself, every permission a later policy may declare too", t))
	} else if w0 && !w1 && !j.exempt[at] {
		return j.refuse(RuleNoSelfService, p.by.Actor, Wildcard, at, j.when("the actor would no longer carry %q on %q itself", t))
	}
	if j.handsKept(before, after, actor, pb, pa, t) {
		return nil
	}
	// On a resource it deletes the actor may lose roles to assign, with its
	// grants there, but gain none.
	if err := j.readNames(before, after, actor, p.by.Actor, pb, pa, at, t); err != nil {
		return err
	}
	powerBefore, assignedBefore := before.power(actor, pb, t)
	powerAfter, assignedAfter := after.power(actor, pa, t)
	if missing := x.cat.top(powerAfter.minus(powerBefore)); missing != "" {
		return j.refuse(RuleNoSelfService, p.by.Actor, missing, at, j.when("the actor would become able to give %q on %q, through a role it may assign", t))
	}
	if after.wildcardPower(actor, pa, t) && !before.wildcardPower(actor, pb, t) {
		return j.refuse(RuleNoSelfService, p.by.Actor, Wildcard, at, j.when("the actor would become able to give %q on %q, every permission a later policy may declare too", t))
	}
	// Both lists are sorted sets, of up to a thousand names for each role
	// the actor holds on the way: each is looked up, not scanned for.
	gained := slices.ContainsFunc(assignedAfter, func(r string) bool { return !sortedHas(assignedBefore, r) })
	if gained || !slices.Equal(assignedBefore, assignedAfter) && !j.exempt[at] {
		return j.deny(RuleNoSelfService,
			fmt.Sprintf("%s: the write would change the roles the actor may assign on %q (from %v to %v)", RuleNoSelfService, x.name(at), assignedBefore, assignedAfter),
			map[string]string{"subject": p.by.Actor, "resource": x.name(at)})
	}
	return nil
}

// handsKept reports, for self, that what the actor may hand out at path
// pb, pa at moment t neither grows nor changes (but for what it may lose on
// a resource the write deletes), found by the definitions the actor holds
// before and not after, and after and not before, alone: those it holds on
// both sides, a hundred on each level listing a thousand names each, are
// not read. Each name one side alone lists being listed on the other side
// too, the roles the actor may assign are the same; and as the path is
// the same and the write defines or deletes none of them, each carries the
// same there, so that what the actor may give differs only by its own
// permissions, which self has held from growing. On a path the write
// changes, where a definition held lists a role the write defines or
// deletes, or where a name is listed on one side alone, it reports false,
// and self compares all the actor may hand out.
func (j *judge) handsKept(before, after *view, s uint32, pb, pa []uint32, t int64) bool {
	if !slices.Equal(pb, pa) || j.listsRedefined(before, after, s, pb) {
		return false
	}
	hb, ha := j.heldBuf[:0], j.heldAfterBuf[:0]
	for d := range before.held(s, pb, t) {
		hb = append(hb, d)
	}
	for d := range after.held(s, pa, t) {
		ha = append(ha, d)
	}
	j.heldBuf, j.heldAfterBuf = hb, ha
	if slices.Equal(hb, ha) {
		return true
	}
	inB, inA := make(map[*roleDef]bool, len(hb)), make(map[*roleDef]bool, len(ha))
	for _, d := range hb {
		inB[d] = true
	}
	for _, d := range ha {
		inA[d] = true
	}
	// listedOnBoth reports whether each name that a definition held on
	// one side (side) alone lists is listed by one held on the other.
	listedOnBoth := func(side []*roleDef, other []*roleDef, inOther map[*roleDef]bool) bool {
		for _, d := range side {
			if inOther[d] {
				continue
			}
			for _, name := range d.AssignableRoles {
				if !slices.ContainsFunc(other, func(o *roleDef) bool { return o.lists(name) }) {
					return false
				}
			}
		}
		return true
	}
	return listedOnBoth(ha, hb, inB) && (j.exempt[pb[0]] || listedOnBoth(hb, ha, inA))
}

func (j *judge) refuse(rule, subject, perm string, at uint32, format string) error {
	x := j.p.x
	what := fmt.Sprintf(format, perm, x.name(at))
	msg := fmt.Sprintf("%s: %q %s", rule, subject, what)
	if rule == RuleNoSelfService {
		msg = fmt.Sprintf("%s: %s", rule, what)
	}
	return j.deny(rule, msg, map[string]string{"subject": subject, "permission": perm, "resource": x.name(at)})
}

// deny is the refusal of the actor's write by rule, saying msg, prefixed
// with what the write was doing, with meta as its details.
func (j *judge) deny(rule, msg string, meta map[string]string) error {
	p := j.p
	if p.doing != "" {
		msg = "may not " + p.doing + ": " + msg
	}
	e := errorf(PermissionDenied, "actor", p.by.Actor, "%s", msg)
	e.Rule = rule
	e.Meta = meta
	return e
}

// holders returns the subjects holding one of roles where a definition at
// scope could apply: on scope, its ancestors, and below it.
func (j *judge) holders(scope uint32, roles ...string) ([]string, error) {
	p, x := j.p, j.p.x
	var ids []uint32
	for _, role := range roles {
		p.guard(holdersKey(role))
		if id := x.roleID(role); id != noName && x.roleHolders[id] > 0 {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	sorted := sortedUnique(ids)
	set := make(map[uint32]bool, len(sorted))
	for _, id := range sorted {
		set[id] = true
	}
	seen := map[uint32]bool{}
	visit := func(g resourceGrant) { seen[g.subj] = true }
	for a := x.nodes[scope].parent; a != noNode; a = x.nodes[a].parent {
		holdersOfAny(x, a, sorted, set, visit)
	}
	visited := 0
	var err error
	x.walk(scope, func(n uint32) bool {
		if visited++; visited > MaxJudged {
			err = errorf(ResourceExhausted, "actor", p.by.Actor,
				"the role's scope holds more than %d resources, the most a role write by an actor may judge; the platform may make it without an actor", MaxJudged).limited(MaxJudged)
			return false
		}
		holdersOfAny(x, n, sorted, set, visit)
		return true
	})
	return j.names(seen), err
}

// listers returns roles, and the roles some definition of which lists one
// of them in assignable_roles: where a write changes which definition of a
// role applies, what the holders of its listers may hand out changes too.
// They are read from listedBy, whatever the number of definitions.
func (x *Index) listers(roles []string) []string {
	out := slices.Clone(roles)
	for _, name := range roles {
		for _, role := range x.listedBy[name] {
			out = append(out, x.roleNames[role])
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// moved returns the subjects whose permissions below id may change when it
// moves under parent: those with grants or blocks on the ancestors it leaves
// or joins, and the holders of roles defined there and of roles listing
// them in assignable_roles.
func (j *judge) moved(id, parent uint32) ([]string, error) {
	p, x := j.p, j.p.x
	size := 0
	limit := p.limits.ActorMove
	x.walk(id, func(uint32) bool { size++; return size <= limit })
	if size > limit {
		return nil, errorf(ResourceExhausted, "name", x.name(id),
			"an actor may move a subtree of at most %d resources; this one holds more (the platform may move it without an actor)", limit).limited(limit)
	}
	old := map[uint32]bool{}
	for a := x.nodes[id].parent; a != noNode; a = x.nodes[a].parent {
		old[a] = true
	}
	var changed []uint32 // ancestors on one path and not the other
	common := map[uint32]bool{}
	for a := parent; a != noNode; a = x.nodes[a].parent {
		if old[a] {
			common[a] = true
		} else {
			changed = append(changed, a)
		}
	}
	for a := range old {
		if !common[a] {
			changed = append(changed, a)
		}
	}
	slices.Sort(changed)
	seen := map[uint32]bool{}
	var roles []uint32
	for _, a := range changed {
		p.guard(bindingsKey(x.name(a)))
		for _, g := range x.byResource.get(a) {
			seen[g.subj] = true
		}
		for _, s := range x.blockedOn[a] {
			seen[s] = true
		}
		roles = append(roles, x.rolesAt[a]...)
	}
	if len(roles) == 0 {
		return j.names(seen), nil
	}
	defs := make([]string, 0, len(roles))
	for _, role := range sortedUnique(roles) {
		defs = append(defs, x.roleNames[role])
	}
	for _, name := range x.listers(defs) {
		if role := x.roleID(name); role != noName {
			roles = append(roles, role)
		}
	}
	sorted := sortedUnique(roles)
	defined := make(map[uint32]bool, len(sorted))
	for _, role := range sorted {
		defined[role] = true
		p.guard(holdersKey(x.roleNames[role]))
		for a := range common {
			for _, g := range x.holdersOf(a, role) {
				seen[g.subj] = true
			}
		}
	}
	// One walk of the subtree, whatever the number of roles: it costs the
	// resources and grants moved, not those times the roles defined above.
	x.walk(id, func(n uint32) bool {
		holdersOfAny(x, n, sorted, defined, func(g resourceGrant) { seen[g.subj] = true })
		return true
	})
	return j.names(seen), nil
}

func (j *judge) names(ids map[uint32]bool) []string {
	out := make([]string, 0, len(ids))
	for s := range ids {
		out = append(out, j.p.x.subj.name(s))
	}
	slices.Sort(out)
	return out
}

// sharedPoints returns the resources in root's subtree where any subject's
// effective permissions, or the actor's power, can differ from their
// parent's whoever the subject is: root itself, where a role is defined
// before or after the write, and where the actor has a grant or a block.
// It is computed once for each region, and costs what lies below root or
// what defines roles, whichever is less: not the world's definitions, nor
// the actor's grants elsewhere, once for each subject judged.
func (j *judge) sharedPoints(v *view, root, actor uint32, walk bool) []uint32 {
	x := v.x
	out := []uint32{root}
	consider := func(id uint32) {
		if id != root && v.under(id, root) {
			out = append(out, id)
		}
	}
	// Walking the subtree costs no more than looking at every resource that
	// defines a role, when it holds no more resources than those.
	var below []uint32
	limit, n := len(x.rolesAt), 0
	walked := walk && x.walk(root, func(id uint32) bool {
		if n++; n > limit {
			return false
		}
		if x.nodes[id].flags&nodeRoles != 0 {
			below = append(below, id)
		}
		return true
	})
	if walked {
		for _, id := range below {
			consider(id)
		}
	} else {
		for id := range x.rolesAt {
			consider(id)
		}
	}
	for k := range v.roles {
		consider(uint32(k >> 32))
	}
	j.ownPoints(v, actor, consider)
	return sortedUnique(out)
}

// ownPoints passes consider the resources where s has a grant or a block,
// before or after the write.
func (j *judge) ownPoints(v *view, s uint32, consider func(uint32)) {
	x := v.x
	if s < 1<<31 {
		for _, g := range x.bySubject.get(s) {
			consider(g.res)
		}
		for _, res := range x.subjBlocks[s] {
			consider(res)
		}
	}
	for _, res := range v.changed[s] {
		consider(res)
	}
}

// points returns the resources in root's subtree where s's effective
// permissions, or the actor's power, can differ from their parent's: the
// shared points, and where s has a grant or a block.
//
// A subject other than the actor that holds no grant, before the write or
// after it, holds nothing anywhere (a visitor being banned): its
// permissions are empty at every point, and what the write lifts or
// imposes on it is the same everywhere below root as at root, so root is
// its one point, however many resources below define roles.
func (j *judge) points(v *view, root, s, actor uint32, shared []uint32) []uint32 {
	if s == actor {
		return shared
	}
	if holdsNothing(v, s) {
		return []uint32{root}
	}
	out := slices.Clone(shared)
	j.ownPoints(v, s, func(id uint32) {
		if id != root && v.under(id, root) {
			out = append(out, id)
		}
	})
	if len(out) == len(shared) {
		return shared
	}
	return sortedUnique(out)
}

// holdsNothing reports whether s holds no grant in the index, expired or
// not, and none in v.
func holdsNothing(v *view, s uint32) bool {
	if s < 1<<31 && v.x.bySubject.count(s) > 0 {
		return false
	}
	for _, res := range v.changed[s] {
		if len(v.grantsOn(s, res)) > 0 {
			return false
		}
	}
	return true
}

func sortedUnique(list []uint32) []uint32 {
	slices.Sort(list)
	return slices.Compact(list)
}

// AssignableRoles returns the roles visible at resource that actor may grant
// there: those the Grant rule allows and whose bindable_on admits the
// resource.
func (x *Index) AssignableRoles(resource, actor string) ([]Role, Revision, error) {
	now := x.now()
	x.view.RLock()
	defer x.view.RUnlock()
	id, err := x.registered("resource", resource)
	if err != nil {
		return nil, x.rev, err
	}
	p := &plan{ctx: context.Background(), x: x, by: Author{Actor: actor}, limits: Limits{}.withDefaults(), now: now}
	var out []Role
	for _, r := range x.visibleRoles(id) {
		if r.bindableOn(x.typeName(id)) && p.mayGrant(r.Name, id, "grant") == nil {
			out = append(out, r)
		}
	}
	return out, x.rev, nil
}

// carriesWildcard reports whether one of held carries "*".
func carriesWildcard(held iter.Seq[*roleDef]) bool {
	for d := range held {
		if slices.Contains(d.Permissions, Wildcard) {
			return true
		}
	}
	return false
}
