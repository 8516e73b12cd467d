package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// PutRole defines r at r.Scope, replacing an earlier definition of the same
// name there. The scope must be registered (NotFound) and every permission
// declared or "*" (Invalid).
//
// An actor needs usher.roles.write at the scope, and a definition is a grant
// to every holder of that name below the scope: its permissions must be the
// actor's own there, every role it lists in assignable_roles one of the
// actor's own assignable roles there ("*" only for an actor that holds "*"
// itself), and what it changes for the holders is judged by the delegation
// invariant. Defining a role grants no one, so it needs no
// usher.grants.write: a holder of the role does, to use it.
func (e *Engine) PutRole(ctx context.Context, by Author, r Role) (Revision, error) {
	asked := r // errors index the request's lists, not the sorted ones
	r = normalizeRole(r)
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		p.does("define role %q at %q", r.Name, r.Scope)
		scope, err := x.registered("role.scope", r.Scope)
		if err != nil {
			return err
		}
		p.guard(resourceKey(r.Scope), keyRoles, keyCatalog)
		if i := x.cat.undeclared(asked.Permissions, true); i >= 0 {
			return errorf(Invalid, fmt.Sprintf("role.permissions[%d]", i), asked.Permissions[i], "permission is not declared in the catalog").as(KindUndeclaredPermission)
		}
		if err := p.require(scope, PermRolesWrite, "defining a role at it"); err != nil {
			return err
		}
		if id := x.roleID(r.Name); id != noName {
			if old := x.roleDefs[roleKey(scope, id)]; old != nil && sameRole(old.Role, r) {
				return nil
			}
		}
		if by.Actor != "" {
			if err := p.notHeld(scope, r.Name, "redefine"); err != nil {
				return err
			}
			if err := p.boundedDefinition(scope, r, asked); err != nil {
				return err
			}
			var before *roleDef
			if id := x.roleID(r.Name); id != noName {
				before = x.resolveAt(scope, id)
			}
			def := &roleDef{Role: r, perms: x.cat.closure(r.Permissions)}
			if err := p.creatorGain(scope, r.Name, before, def, x.resolveAt, fmt.Sprintf("defining it at %q", r.Scope)); err != nil {
				return err
			}
		}
		if r.MaxHolders > 0 || len(r.BindableOn) > 0 {
			def := &roleDef{Role: r}
			err := p.heldToDefinition(scope, r.Name, def, func(res, why string) *Error {
				value := fmt.Sprint(r.MaxHolders)
				if why == "bindable_on" {
					value = strings.Join(asked.BindableOn, ",")
				}
				return errorf(FailedPrecondition, "role."+why, value,
					"the definition of %q at %q would apply to its grants on %q", r.Name, r.Scope, res)
			})
			if err != nil {
				return err
			}
		}
		p.change(Change{Op: OpPutRole, Role: &r})
		return nil
	})
}

// notHeld refuses an actor's write of a definition of a role it holds
// where that definition could apply: on the scope, above it or below it.
// Redefining a role one holds is writing one's own binding by other means.
func (p *plan) notHeld(scope uint32, role, verb string) error {
	x := p.x
	p.guard(subjectKey(p.by.Actor))
	s, id := x.subj.lookup(p.by.Actor), x.roleID(role)
	if s == noName || id == noName {
		return nil
	}
	for _, g := range x.bySubject.get(s) {
		if g.role == id && live(g.exp, p.now) && (x.under(scope, g.res) || x.under(g.res, scope)) {
			e := errorf(PermissionDenied, "actor", p.by.Actor,
				"may not %s role %q at %q: %s: the actor holds it on %q, and an actor may not redefine a role it holds",
				verb, role, x.name(scope), RuleNoSelfService, x.name(g.res))
			e.Rule = RuleNoSelfService
			e.Meta = map[string]string{"subject": p.by.Actor, "role": role, "resource": x.name(g.res)}
			return e
		}
	}
	return nil
}

// boundedDefinition applies rule 1 to a role definition itself, whoever
// holds it now: its permissions are the actor's own at the scope ("*" only
// for an actor that holds "*" itself), and it lets its holders assign only
// what the actor may assign there.
func (p *plan) boundedDefinition(scope uint32, r, asked Role) error {
	x := p.x
	actor := x.subj.lookup(p.by.Actor)
	var buf [MaxDepth + 1]uint32
	held := x.heldRoles(actor, x.path(scope, buf[:0]), p.now)
	// "*" is every permission the catalog will ever declare: holding all
	// that it declares now is not enough, or the role would gain what a
	// later policy adds, which the actor does not hold.
	if i := slices.Index(asked.Permissions, Wildcard); i >= 0 &&
		!carriesWildcard(slices.Values(held)) {
		e := errorf(PermissionDenied, fmt.Sprintf("role.permissions[%d]", i), Wildcard,
			"%s: actor %q does not hold %q at %q itself, so a role it defines may not carry every permission the catalog will declare",
			RuleNoEscalation, p.by.Actor, Wildcard, r.Scope)
		e.Rule = RuleNoEscalation
		e.Meta = map[string]string{"actor": p.by.Actor, "permission": Wildcard, "resource": r.Scope}
		return e
	}
	have := x.effective(actor, scope, p.now)
	if missing := x.cat.top(x.cat.closure(r.Permissions).minus(have)); missing != "" {
		e := errorf(PermissionDenied, "actor", p.by.Actor,
			"%s: the definition of %q at %q would carry %q, which the actor does not hold there", RuleNoEscalation, r.Name, r.Scope, missing)
		e.Rule = RuleNoEscalation
		e.Meta = map[string]string{"role": r.Name, "permission": missing, "resource": r.Scope}
		return e
	}
	for i, name := range asked.AssignableRoles {
		if !p.mayLetAssign(name, scope, held) {
			e := errorf(PermissionDenied, fmt.Sprintf("role.assignable_roles[%d]", i), name,
				"%s: actor %q may not grant %q at %q, so a role it defines may not let others grant it", RuleNoEscalation, p.by.Actor, name, r.Scope)
			e.Rule = RuleNoEscalation
			e.Meta = map[string]string{"actor": p.by.Actor, "role": name, "resource": r.Scope}
			return e
		}
	}
	return nil
}

// creatorGain applies rule 1 to the actor as the holder to be of a
// creator role, whose definition of name in root's subtree a write of the
// actor's turns from before into after (either nil for none): registering
// a resource grants the actor that role as defined there (the creator role
// exception), with no test of its own, and with it the power to give the
// roles it lists by name there, and the roles those list there, with no
// test either ("lists by name"). What after carries and lists that before
// does not must be the actor's own wherever it comes to apply and the
// creator role leads to it: at root and wherever below it the actor's own
// permissions may be less, or a role's definition may lead to it, and no
// definition of name below root takes over. "*" only for an actor whose
// roles carry it there. resolve finds a role's definition at a resource as
// it will be after the write.
//
// The creator role itself is judged against what the actor's grants give
// it, its blocks left out: a block ends (it runs out, or is lifted, which
// takes the actor nothing), and the creator role stays; a block of the
// actor takes from the creator role what it takes from the actor's other
// roles. A role the creator gives goes to another subject, and is judged
// against what the actor holds, as a grant would be.
//
// Else an actor whose role a workspace restates with less could define the
// creator role, or a role it leads to, above the workspace, delete the
// workspace's narrower definition, or move the workspace out from under
// it, and then register a resource in the workspace to take, or give, what
// it lacks there. what says what the write does.
func (p *plan) creatorGain(root uint32, name string, before, after *roleDef, resolve func(at, role uint32) *roleDef, what string) error {
	x := p.x
	p.guard(keyCatalog, keyRoles, subjectKey(p.by.Actor))
	var types []string
	for _, typ := range sortedKeys(x.creators) {
		if x.creators[typ] == name {
			types = append(types, typ)
		}
	}
	creator := len(types) > 0
	reach, listers := p.creatorReach()
	if !reach[name] || after == nil {
		return nil
	}
	gain := after.perms
	var lists []string
	for _, n := range after.AssignableRoles {
		if before == nil || !before.lists(n) {
			lists = append(lists, n)
		}
	}
	if before != nil {
		gain = gain.minus(before.perms)
	}
	wildcard := slices.Contains(after.Permissions, Wildcard) && (before == nil || !slices.Contains(before.Permissions, Wildcard))
	if gain.empty() && len(lists) == 0 && !wildcard {
		return nil
	}
	role := x.roleID(name)
	// shadowed: a definition below root, on the way up from at, applies at
	// at whatever the write does.
	shadowed := func(at uint32) bool {
		for a := at; a != root && role != noName; a = x.nodes[a].parent {
			if x.roleDefs[roleKey(a, role)] != nil {
				return true
			}
		}
		return false
	}
	below := p.redefinitions()
	if !creator {
		below = slices.Clone(p.narrowings())
		// Where a definition of a role on the way from a creator role to
		// name may come to lead to it.
		seen := map[string]bool{name: true}
		for queue := []string{name}; len(queue) > 0; queue = queue[1:] {
			for _, l := range listers[queue[0]] {
				if !seen[l] {
					seen[l] = true
					queue = append(queue, l)
					below = append(below, x.roleScopes[x.roleID(l)]...)
				}
			}
		}
		below = sortedUnique(below)
	}
	points := []uint32{root}
	for _, at := range below {
		if at != root && x.under(at, root) && !shadowed(at) {
			points = append(points, at)
		}
	}
	actor := x.subj.lookup(p.by.Actor)
	take := "give"
	if creator {
		take = "take"
	}
	var buf [MaxDepth + 1]uint32
	for i, at := range points {
		if i%1024 == 1023 {
			// Many points cost seconds: the write stops when its caller
			// gives up.
			if err := p.ctx.Err(); err != nil {
				return err
			}
		}
		var by, c string
		if !creator {
			var ok bool
			if by, c, ok = p.leadsTo(at, name, resolve); !ok {
				continue
			}
		}
		refuse := func(meta map[string]string, format string, args ...any) error {
			via := fmt.Sprintf("the creator role of %s resources, which the actor is granted on each one it registers", strings.Join(types, ", "))
			if !creator {
				via = fmt.Sprintf("listed by name by %q there, to which the creator role %q leads, so that the actor may give it on each resource it registers", by, c)
			}
			e := errorf(PermissionDenied, "actor", p.by.Actor,
				"%s: %q is %s, and %s would let the actor %s on %q, where it may not",
				RuleNoEscalation, name, via, what, fmt.Sprintf(format, args...), x.name(at))
			e.Rule = RuleNoEscalation
			meta["resource"] = x.name(at)
			e.Meta = meta
			return e
		}
		path := x.path(at, buf[:0])
		held := p.heldAt(at, path)
		have, roles := x.effectiveOn(actor, path, p.now), held
		if creator {
			roles = x.grantedRoles(actor, path, p.now)
			have = newBitset(len(x.cat.perms))
			for _, d := range roles {
				have.union(d.perms)
			}
		}
		if wildcard && !carriesWildcard(slices.Values(roles)) {
			return refuse(map[string]string{"role": name, "permission": Wildcard}, "%s %q, every permission a later policy may declare too", take, Wildcard)
		}
		if missing := x.cat.top(gain.minus(have)); missing != "" {
			return refuse(map[string]string{"role": name, "permission": missing}, "%s %q", take, missing)
		}
		for _, n := range lists {
			if !p.mayLetAssign(n, at, held) {
				return refuse(map[string]string{"role": n, "listed_by": name}, "grant %q", n)
			}
		}
	}
	return nil
}

// leadsTo reports whether a creator role leads to name at at, by the
// definitions resolve finds there: by lists name there, and the chain of
// listings from the creator role c reaches by.
func (p *plan) leadsTo(at uint32, name string, resolve func(at, role uint32) *roleDef) (by, c string, ok bool) {
	x := p.x
	_, listers := p.creatorReach()
	seen := map[string]bool{name: true}
	// from finds a role that lists n at at and that a chain of listings
	// from the creator role c reaches, or is c.
	var from func(n string) (by, c string)
	from = func(n string) (string, string) {
		for _, l := range listers[n] {
			if d := resolve(at, x.roleID(l)); d == nil || !d.lists(n) {
				continue
			}
			if x.creatorOf(l) {
				return l, l
			}
			if !seen[l] {
				seen[l] = true
				if _, c := from(l); c != "" {
					return l, c
				}
			}
		}
		return "", ""
	}
	by, c = from(name)
	return by, c, c != ""
}

// creatorOf reports whether name is a creator role.
func (x *Index) creatorOf(name string) bool {
	for _, r := range x.creators {
		if r == name {
			return true
		}
	}
	return false
}

// creatorReach finds, once for the plan, the roles the creator roles lead
// to by the names any of their definitions list in assignable_roles,
// wherever they are (the creator roles among them), and for each role the
// roles among those whose definitions list it.
func (p *plan) creatorReach() (reach map[string]bool, listers map[string][]string) {
	if p.reach != nil {
		return p.reach, p.listers
	}
	x := p.x
	p.reach, p.listers = map[string]bool{}, map[string][]string{}
	queue := x.creatorRoles()
	for _, c := range queue {
		p.reach[c] = true
	}
	for ; len(queue) > 0; queue = queue[1:] {
		n := queue[0]
		id := x.roleID(n)
		if id == noName {
			continue
		}
		for _, scope := range x.roleScopes[id] {
			for _, l := range x.roleDefs[roleKey(scope, id)].AssignableRoles {
				if l == Wildcard {
					continue
				}
				// n's definitions are read one after another: n is last
				// in l's listers if it is there at all.
				if k := len(p.listers[l]); k == 0 || p.listers[l][k-1] != n {
					p.listers[l] = append(p.listers[l], n)
				}
				if !p.reach[l] {
					p.reach[l] = true
					queue = append(queue, l)
				}
			}
		}
	}
	return p.reach, p.listers
}

// grantedRoles are the definitions, resolved at path[0], of the roles s
// holds there by live grants on path, its blocks left out.
func (x *Index) grantedRoles(s uint32, path []uint32, now int64) []*roleDef {
	if s == noName {
		return nil
	}
	var out []*roleDef
	for _, a := range path {
		for _, g := range x.grantsOn(s, a) {
			if live(g.exp, now) {
				if d := x.resolve(path, g.role); d != nil {
					out = append(out, d)
				}
			}
		}
	}
	return out
}

// redefinitions are the resources where a role the actor holds, by a live
// grant, is defined: the places its permissions may be less than on the
// resource above, blocks aside.
func (p *plan) redefinitions() []uint32 {
	x := p.x
	actor := x.subj.lookup(p.by.Actor)
	if actor == noName {
		return nil
	}
	var roles, out []uint32
	for _, g := range x.bySubject.get(actor) {
		if live(g.exp, p.now) {
			roles = append(roles, g.role)
		}
	}
	for _, r := range sortedUnique(roles) {
		out = append(out, x.roleScopes[r]...)
	}
	return sortedUnique(out)
}

// creatorRoles are the names of the creator roles, each once.
func (x *Index) creatorRoles() []string {
	var out []string
	for _, typ := range sortedKeys(x.creators) {
		if n := x.creators[typ]; !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// mayLetAssign reports whether a role may let its holders at res assign
// name, as a definition by the actor there may: name is one of the actor's
// own assignable roles there, with held the roles it holds there. "*" is
// only for an actor whose roles list "*"; a role not visible at res is
// granted there by no one, so only a role the actor holds that lists it by
// name lets the actor hand it on.
func (p *plan) mayLetAssign(name string, res uint32, held []*roleDef) bool {
	x := p.x
	if name == Wildcard || x.roleID(name) == noName || x.resolveAt(res, x.roleID(name)) == nil {
		return slices.ContainsFunc(held, func(d *roleDef) bool { return d.lists(name) })
	}
	return p.mayAssign(name, res, "grant") == nil
}

// DeleteRole removes the definition of name at scope, and with it the
// grants of that role that no other definition would cover: what its
// holders lose, an actor may take (the judge holds it to rule 2). It is
// refused while more than MaxRoleDeletionGrants such grants remain, or while
// one of them still gets power from a definition below its resource (a
// role resolves where it is checked): those are to be revoked first. Only
// the holders of the role are looked at.
func (e *Engine) DeleteRole(ctx context.Context, by Author, scope, name string) (Revision, error) {
	return e.write(ctx, by, func(p *plan) error {
		x := p.x
		p.does("delete role %q at %q", name, scope)
		id, err := x.registered("scope", scope)
		if err != nil {
			return err
		}
		p.guard(resourceKey(scope), keyRoles)
		if err := p.require(id, PermRolesWrite, "deleting a role defined at it"); err != nil {
			return err
		}
		role := x.roleID(name)
		if role == noName || x.roleDefs[roleKey(id, role)] == nil {
			return errorf(NotFound, "name", name, "no role of that name is defined at %q", scope).as(KindRoleNotFound)
		}
		if by.Actor != "" {
			if err := p.notHeld(id, name, "delete"); err != nil {
				return err
			}
			var above *roleDef // the definition that takes the deleted one's place
			if up := x.nodes[id].parent; up != noNode {
				above = x.resolveAt(up, role)
			}
			if err := p.creatorGain(id, name, x.roleDefs[roleKey(id, role)], above, x.resolveAt, fmt.Sprintf("deleting its definition at %q", scope)); err != nil {
				return err
			}
		}
		if len(x.roleScopes[role]) == 1 {
			// Its last definition: what names the role would break.
			p.guard(keyCatalog)
			if what := x.roleNamedBy(name, ""); what != "" {
				return errorf(FailedPrecondition, "name", name,
					"role at %q is its only definition, and %s names it; change that first", scope, what).as(KindRoleInUse)
			}
		}
		// Which grants the deletion orphans is read along the tree: a
		// definition above that covers them, the holders below.
		p.guard(holdersKey(name), keyTree)
		// The grants the deleted definition applied to come under the one
		// above it, whose limits they must keep.
		if up := x.nodes[id].parent; up != noNode {
			if def := x.resolveAt(up, role); def != nil && (def.MaxHolders > 0 || len(def.BindableOn) > 0) {
				err := p.heldToDefinition(id, name, def, func(res, why string) *Error {
					return errorf(FailedPrecondition, "name", name,
						"deleting the definition at %q would put its grants on %q under the one at %q", scope, res, def.Scope)
				})
				if err != nil {
					return err
				}
			}
		}
		orphans, more, below := x.orphanedByDeletion(id, role, MaxRoleDeletionGrants)
		switch {
		case below != nil:
			// A role resolves where it is checked: the grant still gives
			// what a definition below its resource says, and would be
			// left with none where it is.
			return errorf(FailedPrecondition, "name", name,
				"role at %q is held by %s on %s, which a definition of it below still gives power through; revoke that grant first",
				scope, below.Subject, below.Resource).as(KindRoleInUse)
		case more:
			return errorf(FailedPrecondition, "name", name,
				"role at %q is held by more than %d grants that no other definition would cover (e.g. %s on %s), expired ones included, which listings leave out; revoke them first",
				scope, MaxRoleDeletionGrants, orphans[0].Subject, orphans[0].Resource).as(KindRoleInUse)
		}
		for i := range orphans {
			g := &orphans[i]
			p.guard(bindingKey(g.Subject, g.Resource, g.Role))
			p.guard(subjectKey(g.Subject))
			p.change(Change{Op: OpDeleteGrant, Grant: g})
		}
		p.change(Change{Op: OpDeleteRole, Role: &Role{Name: name, Scope: scope}})
		return nil
	})
}

// roleNamedBy says what names the role name and would be left broken with
// no definition of it anywhere: a creator role (no actor could register a
// resource of its type) or an admission rule's lobby (no Admit could grant
// its admit_role); "" when nothing does. The rules at deleted, a resource
// being deleted (or ""), go with it and name nothing.
func (x *Index) roleNamedBy(name, deleted string) string {
	for _, typ := range sortedKeys(x.creators) {
		if x.creators[typ] == name {
			return fmt.Sprintf("the creator role of %s", typ)
		}
	}
	for _, a := range x.allAdmissions() {
		if a.Lobby != nil && a.Lobby.Role == name && (deleted == "" || a.Scope != deleted) {
			return fmt.Sprintf("the admission rule for %s at %q, as its lobby's admit_role", a.ResourceType, a.Scope)
		}
	}
	return ""
}

// heldToDefinition refuses a write that makes def the definition of role
// name for the grants in scope's subtree that no definition below scope
// covers, when their live holders on one resource would pass its
// max_holders ("at most this many subjects may hold it on one resource"),
// or one is on a resource of a type its bindable_on leaves out: as a move
// that would put them under such a definition is refused, and a grant
// under it would be. refusal makes the error, given the resource and the
// limit passed ("max_holders", "bindable_on"), and its message is told
// what to revoke.
func (p *plan) heldToDefinition(scope uint32, name string, def *roleDef, refusal func(res, why string) *Error) error {
	x := p.x
	// A grant of the role committed meanwhile plans the write again.
	p.guard(holdersKey(name), keyTree)
	role := x.roleID(name)
	if role == noName || x.roleHolders[role] == 0 {
		return nil
	}
	var err error
	var visit func(n uint32) bool
	visit = func(n uint32) bool {
		if n != scope && x.nodes[n].flags&nodeRoles != 0 && x.roleDefs[roleKey(n, role)] != nil {
			return true // a definition below scope applies here, and below
		}
		held := 0
		var first resourceGrant
		for _, g := range x.holdersOf(n, role) {
			if !live(g.exp, p.now) {
				continue
			}
			if held == 0 {
				first = g
			}
			held++
		}
		switch {
		case held == 0:
		case !def.bindableOn(x.typeName(n)):
			e := refusal(x.name(n), "bindable_on")
			e.Reason += fmt.Sprintf(", and %s may be granted only on resources of type %v (bindable_on): %q holds it on %q, a %q; revoke that grant first",
				name, def.BindableOn, x.subj.name(first.subj), x.name(n), x.typeName(n))
			e.Kind = KindNotBindable
			e.Meta = map[string]string{"resource": x.name(n), "role": name, "scope": def.Scope}
			err = e
			return false
		case def.MaxHolders > 0 && held > int(def.MaxHolders):
			e := refusal(x.name(n), "max_holders")
			e.Reason += fmt.Sprintf(", which allows at most %d holders of %s on one resource (max_holders), and %d hold it there; revoke some first",
				def.MaxHolders, name, held)
			e.Kind = KindMaxHolders
			e.Meta = map[string]string{"resource": x.name(n), "role": name, "max_holders": fmt.Sprint(def.MaxHolders), "scope": def.Scope}
			err = e
			return false
		}
		for c := x.nodes[n].first; c != noNode; c = x.nodes[c].next {
			if !visit(c) {
				return false
			}
		}
		return true
	}
	visit(scope)
	return err
}

// MaxRoleDeletionGrants is how many grants a role's deletion revokes with
// it, at most.
const MaxRoleDeletionGrants = 10_000

// orphanedByDeletion returns the grants of role in scope's subtree that the
// definition at scope is the only one to cover, up to limit of them, and
// whether there are more. With no definition above scope, every holder
// below that no lower definition covers is one. below is such a grant
// whose resource has a definition of role below it, which still gives
// power through it; nil when none has.
func (x *Index) orphanedByDeletion(scope, role uint32, limit int) (orphans []Grant, more bool, below *Grant) {
	if x.roleHolders[role] == 0 {
		return nil, false, nil
	}
	above := x.nodes[scope].parent != noNode && x.resolveAt(x.nodes[scope].parent, role) != nil
	if above {
		return nil, false, nil
	}
	name := x.roleNames[role]
	def := x.roleDefs[roleKey(scope, role)]
	definedBelow := func(n uint32) bool {
		return slices.ContainsFunc(x.roleScopes[role], func(s uint32) bool { return s != n && s != scope && x.under(s, n) })
	}
	x.walk(scope, func(n uint32) bool {
		if n != scope && x.roleDefs[roleKey(n, role)] != nil {
			return true // a lower definition covers this subtree... and its own children
		}
		holders := x.holdersOf(n, role)
		if len(holders) == 0 || x.resolveAt(n, role) != def {
			return true
		}
		if definedBelow(n) {
			below = &Grant{Subject: x.subj.name(holders[0].subj), Role: name, Resource: x.name(n)}
			return false
		}
		for _, g := range holders {
			if len(orphans) == limit {
				more = true
				return false
			}
			orphans = append(orphans, Grant{Subject: x.subj.name(g.subj), Role: name, Resource: x.name(n)})
		}
		return true
	})
	return orphans, more, below
}

// ListRoles returns the roles visible at resource, by name, each as the
// definition that applies there (its Scope says where that is).
func (x *Index) ListRoles(resource string) ([]Role, Revision, error) {
	x.view.RLock()
	defer x.view.RUnlock()
	id, err := x.registered("resource", resource)
	if err != nil {
		return nil, x.rev, err
	}
	return x.visibleRoles(id), x.rev, nil
}
