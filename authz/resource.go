package authz

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// PutResource registers r under r.Parent ("root" when empty), or moves it
// there if it is registered already.
//
// The parent must be registered (NotFound), must not be r or below it, and
// must leave the tree at most MaxDepth deep (FailedPrecondition); the quotas
// above the parent must have room (ResourceExhausted). An actor needs
// usher.resources.create (or .<type>) on the parent to register; to move,
// usher.resources.move (or .<type>) on the resource itself and create on the
// new parent. Registering as an actor records the actor as creator and
// grants it the policy's creator role for the type, in the same write;
// every registration gets the policy's default quotas for its type.
func (e *Engine) PutResource(ctx context.Context, by Author, r Resource) (Revision, error) {
	return e.putResource(ctx, by, r, false)
}

// RegisterResource is PutResource that only registers: a name registered
// already, under any parent, is refused AlreadyExists (KindResourceExists)
// and nothing is written. Names are global, so a registration of a name
// someone else could have registered first must not move that resource,
// with its grants, under the new parent. An actor that may not register
// under the parent is refused for that first, registered or not.
func (e *Engine) RegisterResource(ctx context.Context, by Author, r Resource) (Revision, error) {
	return e.putResource(ctx, by, r, true)
}

func (e *Engine) putResource(ctx context.Context, by Author, r Resource, only bool) (Revision, error) {
	if r.Parent == "" {
		r.Parent = RootName
	}
	if err := checkStart("start_time", r.StartsAt); err != nil {
		return 0, err
	}
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		if r.Name == RootName {
			return errorf(Invalid, "name", r.Name, "root is reserved and always registered")
		}
		parent, err := x.registered("parent", r.Parent)
		if err != nil {
			return err
		}
		p.guard(resourceKey(r.Name), resourceKey(r.Parent))
		id := x.lookupNode(r.Name)
		if only && id != noNode {
			// Refused for lacking create first, as a new name would be.
			if err := p.requireTyped(parent, PermResourcesCreate, TypeOf(r.Name), "registering a resource under it"); err != nil {
				return err
			}
			return errorf(AlreadyExists, "name", r.Name, "resource is registered already; create_only registers only")
		}
		if id != noNode {
			p.does("move %q under %q", r.Name, r.Parent)
			return p.move(id, parent, r)
		}
		p.does("register %q under %q", r.Name, r.Parent)
		// The depth and the quotas below are read along the parent's path,
		// which a move changes.
		p.guard(keyTree)
		typ := TypeOf(r.Name)
		if err := p.requireTyped(parent, PermResourcesCreate, typ, "registering a resource under it"); err != nil {
			return err
		}
		if d := x.depth(parent) + 1; d > MaxDepth {
			return errorf(ResourceExhausted, "parent", r.Parent,
				"a resource under %q would be %d levels deep; the tree may be at most %d deep", r.Parent, d, MaxDepth).as(KindMaxDepth).limited(MaxDepth)
		}
		if !r.StartsAt.IsZero() || r.Live {
			if err := p.mayStage(typ, parent, r.Name); err != nil {
				return err
			}
		}
		r.Creator = by.Actor
		add := placement{}
		add.add(typ, r.Creator)
		scopes, err := x.checkQuotas(add, noNode, parent)
		for _, a := range scopes {
			p.guard(quotaScopeKey(x.name(a)))
		}
		if err != nil {
			return err
		}
		p.guard(keyCatalog)
		p.change(Change{Op: OpPutResource, Resource: &r})
		if role := x.creators[typ]; role != "" && by.Actor != "" {
			p.guard(keyRoles)
			var def *roleDef
			if id := x.roleID(role); id != noName {
				def = x.resolveAt(parent, id)
			}
			if def == nil || !def.bindableOn(typ) {
				return errorf(FailedPrecondition, "name", r.Name,
					"the creator role %q of %s resources cannot be granted on it: it is not defined at %q or above, or not bindable on %s",
					role, typ, r.Parent, typ).as(KindCreatorRole)
			}
			p.change(Change{Op: OpPutGrant, Grant: &Grant{Subject: by.Actor, Role: role, Resource: r.Name}})
		}
		for _, d := range x.defaultQuotas[typ] {
			p.change(Change{Op: OpPutQuota, Quota: &Quota{Scope: r.Name, ResourceType: d.ResourceType, Limit: d.Limit}})
		}
		return nil
	})
}

// reRegistersItself refuses an actor's delete of id that would let it
// register id again to hold there what it does not hold now: an actor bound
// on id that may register it again gets the creator role on it, with no
// expiry, in place of what it held (DESIGN.md: no self-service, "never gets
// around that indirectly, by deleting, moving or re-registering the
// resource they are on"). Holding nothing there, it gains nothing it could
// not gain by registering a resource of another name; where registering it
// would grant no creator role, it gains nothing at all. Holding the creator
// role there for good already, it gains only where the role, as defined
// where it would register id again, carries more than the definition that
// applies on id now: one on id itself goes with it ("or by redefining a
// role it holds"); or where a block it carries above id, which keeps from
// it what the role carries, does not reach (as a move out from under it
// would lift its own block).
func (p *plan) reRegistersItself(id uint32) error {
	x := p.x
	if p.by.Actor == "" {
		return nil
	}
	// The creator roles are the catalog's; the roles, the actor's grants
	// and its power to register are guarded with the actor's.
	p.guard(keyCatalog)
	typ, parent := x.typeName(id), x.nodes[id].parent
	creator := x.roleID(x.creators[typ])
	if creator == noName {
		return nil
	}
	s := x.subj.lookup(p.by.Actor)
	bound, forGood := false, false
	for _, g := range grantsAt(x.bySubject.get(s), id) {
		if live(g.exp, p.now) {
			bound = true
			forGood = forGood || (g.role == creator && g.exp == 0)
		}
	}
	if !bound {
		return nil
	}
	var held *roleDef // the creator role as the actor holds it for good on id
	if forGood {
		held = x.resolveAt(id, creator)
	}
	// The actor's live blocks above id keep from it there what its
	// creator role carries: registered again where one does not reach, the
	// role would give it that too, as a move out from under the block would.
	var ab [MaxDepth + 1]uint32
	var above []placedBlock
	for _, a := range x.path(parent, ab[:0]) {
		for _, b := range x.blocksOn(s, a) {
			if live(b.exp, p.now) {
				above = append(above, placedBlock{b, a})
			}
		}
	}
	// shedBy returns a block above id that registering it again under at,
	// with def as its creator role there, would shed; nil when none.
	shedBy := func(def *roleDef, at uint32) *placedBlock {
		if len(above) == 0 {
			return nil
		}
		var buf [MaxDepth + 1]uint32
		path := x.path(at, buf[:0])
		freed := def.perms.minus(x.blockedAlong(s, path, p.now))
		for i, o := range above {
			if !slices.Contains(path, o.at) && (o.b.perms == nil && !freed.empty() || freed.intersects(o.b.perms)) {
				return &above[i]
			}
		}
		return nil
	}
	var shed *placedBlock // what registering it again gains, when that is all
	var shedAt uint32
	// Names are global: it may be registered again under its parent, or
	// under any resource where the actor holds the power to register it:
	// where it holds a grant, or below, where the creator role or a role
	// it holds is defined again (what the actor holds, and whether the
	// creator role applies, changes nowhere else on the way down).
	// Registering it again grants the creator role only where that role
	// is bindable on the type.
	//
	// Holding the creator role for good, the actor gains by registering id
	// again only where the role's definition carries more than the one it
	// holds there now; that definition changes only where the role is
	// defined, which is looked at below.
	mayRegister := func(at uint32) bool {
		def := x.resolveAt(at, creator)
		if def == nil || !def.bindableOn(typ) {
			return false
		}
		var by *placedBlock
		if held != nil && !carriesMore(def, held) {
			if by = shedBy(def, at); by == nil {
				return false
			}
		}
		if !p.actorHolds(at, PermResourcesCreate+"."+typ) && !p.actorHolds(at, PermResourcesCreate) {
			return false
		}
		shed, shedAt = by, at
		return true
	}
	grants := x.bySubject.get(s)
	elsewhere := func(g subjectGrant) bool { return g.res != id && live(g.exp, p.now) && mayRegister(g.res) }
	may := mayRegister(parent) || slices.ContainsFunc(grants, elsewhere)
	if !may {
		roles := []uint32{creator}
		for _, g := range grants {
			if live(g.exp, p.now) {
				roles = append(roles, g.role)
			}
		}
		below := func(at uint32) bool { return at != id && mayRegister(at) }
		may = slices.ContainsFunc(sortedUnique(roles), func(role uint32) bool { return slices.ContainsFunc(x.roleScopes[role], below) })
	}
	if !may {
		return nil
	}
	if shed != nil {
		return p.selfService("delete", fmt.Sprintf("register %q again under %q, where its block %q on %q does not reach, to hold its creator role %q there without it",
			x.name(id), x.name(shedAt), shed.b.ID, x.name(shed.at), x.creators[typ]))
	}
	if held != nil {
		return p.selfService("delete", fmt.Sprintf("register %q again to hold its creator role %q there as defined elsewhere, with more than the definition at %q gives it",
			x.name(id), x.creators[typ], held.Scope))
	}
	return p.selfService("delete", fmt.Sprintf("register %q again to hold its creator role %q there for good in place of its own grants on it", x.name(id), x.creators[typ]))
}

// placedBlock is a block and the resource it is on.
type placedBlock struct {
	b  *blockEntry
	at uint32
}

// carriesMore reports whether def gives its holder anything held does not:
// a permission, "*", or a role to assign.
func carriesMore(def, held *roleDef) bool {
	if def == held {
		return false
	}
	if !def.perms.subsetOf(held.perms) || slices.Contains(def.Permissions, Wildcard) && !slices.Contains(held.Permissions, Wildcard) {
		return true
	}
	return slices.ContainsFunc(def.AssignableRoles, func(r string) bool { return !held.lists(r) })
}

// move plans moving id under parent, as r asks: a stage r names must be
// the one id has, which a move keeps.
func (p *plan) move(id, parent uint32, r Resource) error {
	x := p.x
	name, typ := x.name(id), x.typeName(id)
	if x.nodes[id].parent == parent {
		// Registered already where r puts it: nothing moves, and an actor
		// repeating its registration (a retry) needs what registering it
		// there needs, not the power to move it.
		if err := p.requireTyped(parent, PermResourcesCreate, typ, "registering a resource under it"); err != nil {
			return err
		}
		if p.by.Actor != "" && (!r.StartsAt.IsZero() || r.Live) {
			if err := p.mayStage(typ, parent, name); err != nil {
				return err
			}
		}
	} else {
		if err := p.requireTyped(id, PermResourcesMove, typ, "moving it"); err != nil {
			return err
		}
		if err := p.requireTyped(parent, PermResourcesCreate, typ, "moving a resource under it"); err != nil {
			return err
		}
	}
	// Compared only once the actor may move it, or register it where it
	// is: an actor that may not learns nothing of its stage (whether
	// another tenant's call is live, or when it starts).
	if cur := x.withStage(id, Resource{}); (!r.StartsAt.IsZero() || r.Live) && (!r.StartsAt.Equal(cur.StartsAt) || r.Live != cur.Live) {
		field, value := "start_time", r.StartsAt.UTC().Format(time.RFC3339Nano)
		if r.Live != cur.Live {
			field, value = "live", strconv.FormatBool(r.Live)
		}
		return errorf(Invalid, field, value,
			"%q is registered: PutResource moves it and keeps its stage; change the stage with Schedule or GoLive", name)
	}
	old := x.nodes[id].parent
	if old == parent {
		return nil
	}
	p.guard(keyTree, resourceKey(x.name(old)), subtreeKey(name))
	if x.under(parent, id) {
		return errorf(FailedPrecondition, "parent", x.name(parent),
			"moving %q under %q would form a cycle: the parent is the resource itself or below it", name, x.name(parent)).as(KindCycle)
	}
	if d := x.depth(parent) + 1 + x.height(id); d > MaxDepth {
		return errorf(ResourceExhausted, "parent", x.name(parent),
			"moving %q under %q would make the tree %d levels deep; it may be at most %d deep", name, x.name(parent), d, MaxDepth).as(KindMaxDepth).limited(MaxDepth)
	}
	if orphan := p.orphanedByMove(id, parent); orphan != "" {
		return errorf(FailedPrecondition, "parent", x.name(parent),
			"moving %q under %q would leave %s with no definition of its role; revoke it first", name, x.name(parent), orphan).as(KindRoleInUse)
	}
	if err := p.holdersForMove(id, parent); err != nil {
		return err
	}
	if err := p.quotasForMove(id, parent); err != nil {
		return err
	}
	if err := p.rulesForMove(id, parent); err != nil {
		return err
	}
	if p.by.Actor != "" {
		// The creator roles, and the roles they lead to, as defined above
		// the resource change with the move, for the resources the actor
		// registers below it: a role resolves in the moved subtree as it
		// does now up to the resource, and from the new parent beyond it.
		moved := func(at, role uint32) *roleDef {
			for a := at; ; a = x.nodes[a].parent {
				if d := x.roleDefs[roleKey(a, role)]; d != nil {
					return d
				}
				if a == id {
					return x.resolveAt(parent, role)
				}
			}
		}
		reach, _ := p.creatorReach()
		for _, cr := range sortedKeys(reach) {
			role := x.roleID(cr)
			if role == noName || x.roleDefs[roleKey(id, role)] != nil {
				continue
			}
			if err := p.creatorGain(id, cr, x.resolveAt(old, role), x.resolveAt(parent, role), moved, fmt.Sprintf("moving %q under %q", name, x.name(parent))); err != nil {
				return err
			}
		}
	}
	moved := x.resourceAt(id)
	moved.Parent = x.name(parent)
	p.change(Change{Op: OpPutResource, Resource: &moved, PreviousParent: x.name(x.nodes[id].parent)})
	return nil
}

// leftAncestors returns the ancestors id has now that it would not have
// under parent.
func (x *Index) leftAncestors(id, parent uint32) []uint32 {
	var out []uint32
	for a := x.nodes[id].parent; a != noNode; a = x.nodes[a].parent {
		if !x.under(parent, a) {
			out = append(out, a)
		}
	}
	return out
}

// orphanedByMove describes a grant in id's subtree whose role resolves
// today but would not once id hangs under parent; "" when there is none.
// Only a definition on an ancestor that id leaves can go missing, so a move
// that leaves no definition behind costs nothing here but the guard.
func (p *plan) orphanedByMove(id, parent uint32) string {
	x := p.x
	// That no definition is left behind is read too: one put there
	// meanwhile, with a grant of it below, must make the move plan again.
	p.guard(keyRoles)
	var roles []uint32
	for _, a := range x.leftAncestors(id, parent) {
		roles = append(roles, x.rolesAt[a]...)
	}
	if len(roles) == 0 {
		return ""
	}
	v := &view{x: x, parents: map[uint32]uint32{id: parent}}
	sorted := sortedUnique(roles)
	first := make(map[uint32]string, len(sorted)) // the first orphan of each role, in walk order
	for _, role := range sorted {
		first[role] = ""
		p.guard(holdersKey(x.roleNames[role]))
	}
	// One walk of the subtree, whatever the number of roles: it costs the
	// resources and grants moved, not those times the roles left behind.
	x.walk(id, func(n uint32) bool {
		holdersOfAny(x, n, sorted, first, func(g resourceGrant) {
			if first[g.role] != "" {
				return
			}
			var buf [MaxDepth + 1]uint32
			if x.resolveAt(n, g.role) != nil && v.resolve(v.path(n, buf[:0]), g.role) == nil {
				first[g.role] = fmt.Sprintf("the grant of %q to %q on %q%s", x.roleNames[g.role], x.subj.name(g.subj), x.name(n), expiredNote(g.exp, p.now))
			}
		})
		// The answer is the first role's orphan, once it is found.
		return first[sorted[0]] == ""
	})
	for _, role := range sorted {
		if first[role] != "" {
			return first[role]
		}
	}
	return ""
}

// holdersForMove refuses a move after which a live grant in id's subtree
// would be read by a definition of its role that would not let it be
// granted there: one whose bindable_on leaves out the resource's type, or
// whose max_holders the role's holders there already pass. A move puts the
// grants where another definition applies, and may not take a resource
// past what a grant there is held to, any more than past a quota. Only a
// definition on an ancestor that id leaves or joins can change, and only
// to one on the new path, so a move that neither leaves nor joins one, or
// whose new path limits none of their roles, costs nothing here.
func (p *plan) holdersForMove(id, parent uint32) error {
	x := p.x
	old := x.nodes[id].parent
	var roles []uint32
	for _, a := range x.leftAncestors(id, parent) {
		roles = append(roles, x.rolesAt[a]...)
	}
	for a := parent; a != noNode; a = x.nodes[a].parent {
		if !x.under(old, a) {
			roles = append(roles, x.rolesAt[a]...)
		}
	}
	p.guard(keyRoles)
	// Only a role that some definition on the new path limits can come
	// under a limit: the others cost no walk.
	limits := func(role uint32) bool {
		for a := parent; a != noNode; a = x.nodes[a].parent {
			if d := x.roleDefs[roleKey(a, role)]; d != nil && (d.MaxHolders > 0 || len(d.BindableOn) > 0) {
				return true
			}
		}
		return false
	}
	sorted := slices.DeleteFunc(sortedUnique(roles), func(role uint32) bool { return !limits(role) })
	if len(sorted) == 0 {
		return nil
	}
	set := make(map[uint32]bool, len(sorted))
	for _, role := range sorted {
		set[role] = true
		p.guard(holdersKey(x.roleNames[role]))
	}
	v := &view{x: x, parents: map[uint32]uint32{id: parent}}
	var err error
	x.walk(id, func(n uint32) bool {
		var judged []uint32 // the roles judged on n, each once
		holdersOfAny(x, n, sorted, set, func(g resourceGrant) {
			if err != nil || !live(g.exp, p.now) || slices.Contains(judged, g.role) {
				return
			}
			judged = append(judged, g.role)
			var buf [MaxDepth + 1]uint32
			def := v.resolve(v.path(n, buf[:0]), g.role)
			if def == nil || def == x.resolveAt(n, g.role) {
				return // orphanedByMove tells of the first; the second is unchanged
			}
			err = p.heldUnder(def, id, n, g, parent)
		})
		return err == nil
	})
	return err
}

// heldUnder refuses moving id under parent when def, the definition of g's
// role that would apply on n there, could not have granted g.
func (p *plan) heldUnder(def *roleDef, id, n uint32, g resourceGrant, parent uint32) error {
	x := p.x
	res, role := x.name(n), x.roleNames[g.role]
	if !def.bindableOn(x.typeName(n)) {
		e := errorf(FailedPrecondition, "parent", x.name(parent),
			"moving %q under %q would put the grant of %q to %q on %q under the definition at %q, which may be granted only on resources of type %v (bindable_on); revoke it first",
			x.name(id), x.name(parent), role, x.subj.name(g.subj), res, def.Scope, def.BindableOn).as(KindNotBindable)
		e.Meta = map[string]string{"resource": res, "role": role, "scope": def.Scope}
		return e
	}
	if def.MaxHolders > 0 {
		if h := x.liveHolders(n, g.role, p.now); h > int(def.MaxHolders) {
			e := errorf(FailedPrecondition, "parent", x.name(parent),
				"moving %q under %q would put the %d holders of role %q on %q under the definition at %q, which allows at most %d (max_holders); revoke some first",
				x.name(id), x.name(parent), h, role, res, def.Scope, def.MaxHolders).as(KindMaxHolders)
			e.Meta = map[string]string{"resource": res, "role": role, "max_holders": fmt.Sprint(def.MaxHolders), "scope": def.Scope}
			return e
		}
	}
	return nil
}

// rulesForMove refuses an actor's move that would change which admission
// rule governs a resource it moves: rules are the platform's, and moving a
// call out from under its rule lifts its lobby or its capacity as surely as
// deleting the rule would. A rule inside the moved subtree goes with it.
func (p *plan) rulesForMove(id, parent uint32) error {
	if p.by.Actor == "" {
		return nil
	}
	x := p.x
	p.guard(keyCatalog)
	var ob, nb [MaxDepth + 1]uint32
	oldPath, newPath := x.path(x.nodes[id].parent, ob[:0]), x.path(parent, nb[:0])
	changed := map[string][2]*Admission{}
	for typ := range x.admissions {
		was, _ := x.admissionAt(typ, oldPath)
		is, _ := x.admissionAt(typ, newPath)
		if was != is {
			changed[typ] = [2]*Admission{was, is}
		}
	}
	// Only the types the subtree holds matter.
	for typ := range changed {
		if t := x.types.lookup(typ); t == noName || (x.nodes[id].typ != t && x.typeCounts[typeKey(id, t)] == 0) {
			delete(changed, typ)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	governed := noNode
	x.walk(id, func(n uint32) bool {
		typ := x.typeName(n)
		if _, ok := changed[typ]; !ok {
			return true
		}
		for a := n; ; a = x.nodes[a].parent {
			if x.admissions[typ][a] != nil {
				return true // a rule in the subtree governs n wherever it goes
			}
			if a == id {
				break
			}
		}
		governed = n
		return false
	})
	if governed == noNode {
		return nil
	}
	rules := changed[x.typeName(governed)]
	return platformOnlyError(p.by.Actor, "may not move %q under %q: %q would be governed by %s instead of %s, and admission rules are the platform's; the platform may move it",
		x.name(id), x.name(parent), x.name(governed), ruleName(rules[1]), ruleName(rules[0]))
}

// isDefaultQuota reports whether q is what registering a resource of typ
// sets: one of typ's default quotas, unchanged.
func (x *Index) isDefaultQuota(typ string, q Quota) bool {
	return q.Subject == "" && slices.ContainsFunc(x.defaultQuotas[typ], func(d DefaultQuota) bool {
		return d.ScopeType == typ && d.ResourceType == q.ResourceType && d.Limit == q.Limit
	})
}

// ruleName names an admission rule by its scope and type in a message.
func ruleName(a *Admission) string {
	if a == nil {
		return "no admission rule"
	}
	return fmt.Sprintf("the admission rule for %s at %q", a.ResourceType, a.Scope)
}

// quotasForMove refuses a move that would take a quota above the new
// parent past its limit. The subtree is counted only when some ancestor it
// joins carries quotas.
func (p *plan) quotasForMove(id, parent uint32) error {
	x := p.x
	any := false
	for a := parent; a != noNode; a = x.nodes[a].parent {
		if !x.under(id, a) && x.nodes[a].flags&nodeQuotas != 0 {
			any = true
			break
		}
	}
	if !any {
		for a := parent; a != noNode; a = x.nodes[a].parent {
			p.guard(quotaScopeKey(x.name(a)))
		}
		return nil
	}
	scopes, err := x.checkQuotas(x.placementOf(id), id, parent)
	for _, a := range scopes {
		p.guard(quotaScopeKey(x.name(a)))
	}
	return err
}

// DeleteResource removes a resource with no children, and with it the
// grants, blocks, role definitions and quotas on it. An actor needs
// usher.resources.delete (or .<type>) on the resource itself, and the
// removal of what others hold there is judged like revokes and unblocks.
func (e *Engine) DeleteResource(ctx context.Context, by Author, name string) (Revision, error) {
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		if name == RootName {
			return errorf(Invalid, "name", name, "root cannot be deleted")
		}
		id, err := x.registered("name", name)
		if err != nil {
			return err
		}
		p.does("delete %q", name)
		// The roles and admission rules defined on it go with it too: one
		// defined there meanwhile, as they are guarded by no key of the
		// resource's own, must make the delete plan again rather than
		// stay, on a resource that is gone.
		p.guard(resourceKey(name), bindingsKey(name), quotaScopeKey(name), keyRoles, keyCatalog)
		if err := p.requireTyped(id, PermResourcesDelete, x.typeName(id), "deleting it"); err != nil {
			return err
		}
		if n := x.nodes[id].children; n > 0 {
			return errorf(FailedPrecondition, "name", name, "resource has %d children; delete or move them first", n).as(KindHasChildren)
		}
		// What only the platform, or a holder of usher.quotas.write, may
		// remove goes with the resource: an actor may not delete it, and
		// register it again, to shed its rules or its quotas. A quota that
		// registering it gives again (its type's default) sheds nothing.
		if slices.ContainsFunc(x.quotas[id], func(q Quota) bool { return !x.isDefaultQuota(x.typeName(id), q) }) {
			if err := p.require(id, PermQuotasWrite, "deleting it with its quotas"); err != nil {
				return err
			}
		}
		if rules := x.admissionsAt(id); len(rules) > 0 && p.by.Actor != "" {
			return platformOnlyError(p.by.Actor, "may not delete %q: it holds the admission rule for %s, and admission rules are the platform's; the platform may delete it",
				name, rules[0].ResourceType)
		}
		// A start still to come keeps the call closed; registered again, it
		// would open now. Only who may change the schedule may shed it.
		if p.by.Actor != "" && x.stages[id].startsAt > p.now {
			var buf [MaxDepth + 1]uint32
			if rule := x.admissionOn(x.path(id, buf[:0])); rule != nil {
				if rule.Stage == "" {
					return platformOnlyError(p.by.Actor, "may not delete %q before its scheduled start: its admission rule (at %q) names no stage permission, so only the platform may change its schedule; the platform may delete it",
						name, rule.Scope)
				}
				if err := p.require(id, rule.Stage, "deleting it before its scheduled start"); err != nil {
					return err
				}
			}
		}
		// A role defined only here that a creator role or a lobby's
		// admit_role names keeps its definition, as DeleteRole keeps it.
		for _, r := range x.definedAt(id) {
			if len(x.roleScopes[x.roleID(r.Name)]) != 1 {
				continue
			}
			p.guard(keyCatalog)
			if what := x.roleNamedBy(r.Name, name); what != "" {
				return errorf(FailedPrecondition, "name", name,
					"the role %q defined at it has no other definition, and %s names it; define it elsewhere first", r.Name, what).as(KindRoleInUse)
			}
		}
		if err := p.reRegistersItself(id); err != nil {
			return err
		}
		// Grants and blocks go last first, so that the index takes each from
		// the end of the resource's lists: first first, each would shift all
		// the others, and a resource of N holders would cost N² to delete,
		// under the lock Check takes.
		grants := x.byResource.get(id)
		for i := len(grants) - 1; i >= 0; i-- {
			g := grants[i]
			p.change(Change{Op: OpDeleteGrant, Grant: &Grant{Subject: x.subj.name(g.subj), Role: x.roleNames[g.role], Resource: name}})
		}
		blocked := x.blockedOn[id]
		for i := len(blocked) - 1; i >= 0; i-- {
			subject, blocks := x.subj.name(blocked[i]), x.blocksOn(blocked[i], id)
			for k := len(blocks) - 1; k >= 0; k-- {
				p.change(Change{Op: OpDeleteBlock, Block: &Block{Subject: subject, Resource: name, ID: blocks[k].ID}})
			}
		}
		for _, r := range x.definedAt(id) {
			p.change(Change{Op: OpDeleteRole, Role: &Role{Name: r.Name, Scope: name}})
		}
		for _, q := range x.quotas[id] {
			p.change(Change{Op: OpDeleteQuota, Quota: &Quota{Scope: name, ResourceType: q.ResourceType, Subject: q.Subject}})
		}
		for _, a := range x.admissionsAt(id) {
			p.change(Change{Op: OpDeleteAdmission, Admission: &Admission{Scope: name, ResourceType: a.ResourceType}})
		}
		p.change(Change{Op: OpDeleteResource, Resource: &Resource{Name: name}, PreviousParent: x.name(x.nodes[id].parent)})
		return nil
	})
}

// ResourceInfo is a registered resource with its place in the tree.
type ResourceInfo struct {
	Resource
	Ancestors []string // from the parent up to root
	Children  int
}

// GetResource returns a registered resource, or NotFound.
func (x *Index) GetResource(name string) (ResourceInfo, Revision, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	id, err := x.registered("name", name)
	if err != nil {
		return ResourceInfo{}, x.rev, err
	}
	n := x.nodes[id]
	info := ResourceInfo{Resource: x.resourceAt(id), Children: int(n.children)}
	for a := n.parent; a != noNode; a = x.nodes[a].parent {
		info.Ancestors = append(info.Ancestors, x.name(a))
	}
	return info, x.rev, nil
}
