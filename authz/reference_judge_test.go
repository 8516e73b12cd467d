package authz_test

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// The reference judge holds one write made by an actor to DESIGN.md's
// "Delegation: who may change what". It applies the write to a copy of a
// plain Snapshot, as the engine would, and compares every subject's
// effective permissions on every resource before and after by brute force,
// with the reference evaluator's Check. Like the evaluator it is simple and
// slow on purpose: each step is a sentence of the document.
//
// What it says is a list of verdicts, one per rule the write breaks; an
// empty list means the write is allowed. The property test in
// invariant_test.go holds the engine to it.

// refWrite is one write by an actor. Op is the engine's method name; the
// fields that Op reads are set.
type refWrite struct {
	Op       string         // Grant, Revoke, Admit, PutResource, DeleteResource, PutRole, DeleteRole, Block, Unblock, PutQuota, DeleteQuota
	Grant    authz.Grant    // Grant; Revoke (Expires unused); Admit (Role unused)
	Block    authz.Block    // Block, with its ID; Unblock: Subject, Resource and ID ("" for all)
	Resource authz.Resource // PutResource; DeleteResource: Name
	Role     authz.Role     // PutRole; DeleteRole: Name and Scope
	Quota    authz.Quota    // PutQuota; DeleteQuota: Scope, ResourceType, Subject
}

func (w refWrite) String() string {
	switch w.Op {
	case "Grant":
		return fmt.Sprintf("Grant(%s %s on %s%s)", w.Grant.Subject, w.Grant.Role, w.Grant.Resource, showExpiry(w.Grant.Expires))
	case "Revoke":
		return fmt.Sprintf("Revoke(%s %s on %s)", w.Grant.Subject, w.Grant.Role, w.Grant.Resource)
	case "Admit":
		return fmt.Sprintf("Admit(%s to %s%s)", w.Grant.Subject, w.Grant.Resource, showExpiry(w.Grant.Expires))
	case "PutResource":
		return fmt.Sprintf("PutResource(%s under %s)", w.Resource.Name, w.Resource.Parent)
	case "DeleteResource":
		return fmt.Sprintf("DeleteResource(%s)", w.Resource.Name)
	case "PutRole":
		r := w.Role
		return fmt.Sprintf("PutRole(%s at %s = %v, assigns %v, bindable on %v, max %d)", r.Name, r.Scope, r.Permissions, r.AssignableRoles, r.BindableOn, r.MaxHolders)
	case "DeleteRole":
		return fmt.Sprintf("DeleteRole(%s at %s)", w.Role.Name, w.Role.Scope)
	case "Block":
		b := w.Block
		return fmt.Sprintf("Block(%s on %s, id %s, of %v%s)", b.Subject, b.Resource, b.ID, b.Permissions, showExpiry(b.Expires))
	case "Unblock":
		return fmt.Sprintf("Unblock(%s on %s, id %q)", w.Block.Subject, w.Block.Resource, w.Block.ID)
	case "PutQuota", "DeleteQuota":
		q := w.Quota
		return fmt.Sprintf("%s(%s at %s for %q, limit %d)", w.Op, q.ResourceType, q.Scope, q.Subject, q.Limit)
	}
	return w.Op
}

func showExpiry(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return " until " + t.UTC().Format(time.RFC3339)
}

// The two PERMISSION_DENIED rules that are not the invariant's, as the
// engine's refusals name them.
const (
	refMissing       = "missing permission"
	refNotAssignable = "not assignable"
)

// refVerdict is one rule a write breaks: the code it is refused with and,
// for PERMISSION_DENIED, the rule (one of the invariant's three, refMissing
// with the reserved permission lacked, or refNotAssignable).
type refVerdict struct {
	Code       authz.Code
	Rule       string
	Permission string
	Detail     string
}

func (v refVerdict) String() string {
	code := map[authz.Code]string{authz.Invalid: "INVALID_ARGUMENT", authz.NotFound: "NOT_FOUND",
		authz.FailedPrecondition: "FAILED_PRECONDITION", authz.ResourceExhausted: "RESOURCE_EXHAUSTED",
		authz.PermissionDenied: "PERMISSION_DENIED"}[v.Code]
	if v.Rule != "" {
		code += " " + v.Rule
	}
	return code + ": " + v.Detail
}

// judgement is one write being judged.
type judgement struct {
	actor  string
	now    time.Time
	s      authz.Snapshot // the state before
	before *reference
	out    []refVerdict

	// How the invariant compares a resource that exists on one side only,
	// and the creator role exception.
	registers *authz.Resource // a resource the write registers
	deletes   *authz.Resource // a resource the write deletes
	creator   *authz.Grant    // the creator role granted with a registration
	// The write changes which definition of a role applies where (a
	// definition, a deletion or a move), or blocks or lifts blocks.
	handsOut bool
	// admits is the role an Admit grants: the admit permission lets the
	// actor hand it out, so the admitted subject may assign it too.
	admits string
}

// referenceJudge judges w, made by actor at now on the state before. It
// returns the state after, as the engine leaves it when it accepts the
// write, and every rule the write breaks; none means the write is allowed.
// When a write cannot be applied at all (a resource that is not there, a
// cycle), after is before.
func referenceJudge(before authz.Snapshot, actor string, w refWrite, now time.Time) (after authz.Snapshot, verdicts []refVerdict) {
	j := &judgement{actor: actor, now: now, s: before, before: newReference(before, now)}
	after, judged := j.apply(w)
	if !judged {
		return before, j.out
	}
	return after, append(j.out, j.invariant(after)...)
}

func (j *judgement) refuse(code authz.Code, rule, format string, args ...any) {
	j.out = append(j.out, refVerdict{Code: code, Rule: rule, Detail: fmt.Sprintf(format, args...)})
}

// apply plans w as DESIGN.md's rules per operation say, recording what they
// refuse, and returns the state after; judged is false when that leaves the
// invariant nothing to compare: the write cannot be applied, is invalid, or
// changes nothing.
func (j *judgement) apply(w refWrite) (authz.Snapshot, bool) {
	switch w.Op {
	case "Grant":
		return j.grant(w.Grant)
	case "Revoke":
		return j.revoke(w.Grant)
	case "Admit":
		return j.admit(w.Grant)
	case "PutResource":
		return j.putResource(w.Resource)
	case "DeleteResource":
		return j.deleteResource(w.Resource.Name)
	case "PutRole":
		return j.putRole(w.Role)
	case "DeleteRole":
		return j.deleteRole(w.Role.Scope, w.Role.Name)
	case "Block":
		return j.block(w.Block)
	case "Unblock":
		return j.unblock(w.Block.Subject, w.Block.Resource, w.Block.ID)
	case "PutQuota":
		return j.putQuota(w.Quota)
	case "DeleteQuota":
		return j.deleteQuota(w.Quota)
	}
	panic("unknown write " + w.Op)
}

// "Every refusal is PERMISSION_DENIED with a message naming the rule, the
// actor, and what it lacked": the reserved permission perm at resource.
func (j *judgement) require(resource, perm, what string) {
	if !j.before.holds(j.actor, perm, resource) {
		j.out = append(j.out, refVerdict{Code: authz.PermissionDenied, Rule: refMissing, Permission: perm,
			Detail: fmt.Sprintf("%s needs %s at %s", what, perm, resource)})
	}
}

// requireTyped: the resource permissions "may be narrowed to one type by a
// suffix, usher.resources.create.room".
func (j *judgement) requireTyped(resource, base, typ, what string) {
	if !j.before.holds(j.actor, base+"."+typ, resource) && !j.before.holds(j.actor, base, resource) {
		j.out = append(j.out, refVerdict{Code: authz.PermissionDenied, Rule: refMissing, Permission: base + "." + typ,
			Detail: fmt.Sprintf("%s needs %s (or %s) at %s", what, base+"."+typ, base, resource)})
	}
}

// mayGrant is DESIGN.md's Grant rule for the actor: "Grant role R on
// resource s needs usher.grants.write at s, and" R is one the actor may
// assign there.
func (j *judgement) mayGrant(role, s, verb string) {
	j.require(s, authz.PermGrantsWrite, verb+" of "+role)
	if why := j.mayAssign(role, s); why != "" {
		j.refuse(authz.PermissionDenied, refNotAssignable, "%s", why)
	}
}

// mayAssign says why the actor may not assign role at s, or "" when it may:
// "some role the actor holds at s lists R in assignable_roles (no further
// test), or lists * and R's permissions are a subset of the actor's
// effective permissions wherever the grant would give them": at s and at
// every resource below s. Through *, the roles R lists in its
// assignable_roles are bounded by the actor's own as a definition's are
// ("its permissions and assignable_roles are bounded by the actor's own"):
// each is one the actor may assign there.
func (j *judgement) mayAssign(role, s string) string {
	return j.mayAssignSeen(role, s, map[[2]string]bool{{role, s}: true})
}

// mayAssignSeen is mayAssign; seen are the roles, each at a resource, whose
// assignable roles are being looked at already.
func (j *judgement) mayAssignSeen(role, s string, seen map[[2]string]bool) string {
	r := j.before
	wildcard := false
	for _, d := range r.heldRoles(j.actor, s) {
		if slices.Contains(d.AssignableRoles, role) {
			return ""
		}
		wildcard = wildcard || slices.Contains(d.AssignableRoles, authz.Wildcard)
	}
	if !wildcard {
		return fmt.Sprintf("no role the actor holds at %s lists %s in assignable_roles", s, role)
	}
	// "Wherever the grant would give them": at s and at every resource
	// below it, where R may be redefined and the actor may hold less.
	points := []string{s}
	for _, res := range r.s.Resources {
		if res.Name != s && r.under(res.Name, s) {
			points = append(points, res.Name)
		}
	}
	for _, at := range points {
		def, ok := r.definition(role, at)
		if !ok {
			continue
		}
		// "*" in a role means every permission: those a later policy
		// declares too, which only an actor holding "*" there holds.
		if slices.Contains(def.Permissions, authz.Wildcard) &&
			!slices.ContainsFunc(r.heldRoles(j.actor, at), func(d authz.Role) bool { return slices.Contains(d.Permissions, authz.Wildcard) }) {
			return fmt.Sprintf("%s carries * at %s, and no role the actor holds there does", role, at)
		}
		for _, p := range r.carries(def) {
			if !r.holds(j.actor, p, at) {
				return fmt.Sprintf("%s carries %s at %s, which the actor lacks there", role, p, at)
			}
		}
		for _, name := range def.AssignableRoles {
			if name == authz.Wildcard || seen[[2]string{name, at}] {
				continue
			}
			seen[[2]string{name, at}] = true
			if why := j.mayAssignSeen(name, at, seen); why != "" {
				return fmt.Sprintf("%s lists %s in assignable_roles at %s, which the actor may not assign there", role, name, at)
			}
		}
	}
	return ""
}

// grant: "Grant role R on resource s ...". The resource must be registered
// and the role visible there (NOT_FOUND), the grant may not be the actor's
// own ("it does not grant itself"), bindable_on and max_holders hold
// (FAILED_PRECONDITION), and an expiry lies in the future. An actor that
// would grant itself, or lacks usher.grants.write there, is refused that
// too where the role is not visible (which of the refusals the engine
// gives first, TestAGrantByAnActorWithoutThePowerNamesNoRole pins).
func (j *judgement) grant(g authz.Grant) (authz.Snapshot, bool) {
	r := j.before
	if !r.registered(g.Resource) {
		j.refuse(authz.NotFound, "", "%s is not registered", g.Resource)
		return j.s, false
	}
	if g.Subject == j.actor {
		j.refuse(authz.PermissionDenied, authz.RuleNoSelfService, "the actor would grant itself %s", g.Role)
	}
	def, ok := r.definition(g.Role, g.Resource)
	if !ok {
		if j.actor != "" {
			j.require(g.Resource, authz.PermGrantsWrite, "grant of "+g.Role)
		}
		j.refuse(authz.NotFound, "", "no role %s is visible at %s", g.Role, g.Resource)
		return j.s, false
	}
	j.mayGrant(g.Role, g.Resource, "grant")
	return j.bind(g, def, false)
}

// admit is the engine's Admit: a grant of the lobby's admit role on the
// resource, for which the lobby's admit permission there stands in for
// usher.grants.write; the grant is then held to the invariant as any
// actor's grant is, and the actor never admits itself. The rule that
// governs the resource must have a lobby, and a subject that Check finds
// blocked from the rule's join permission there is let in by no one
// (FAILED_PRECONDITION both).
func (j *judgement) admit(g authz.Grant) (authz.Snapshot, bool) {
	r := j.before
	if !r.registered(g.Resource) {
		j.refuse(authz.NotFound, "", "%s is not registered", g.Resource)
		return j.s, false
	}
	rule, ok := r.admission(authz.TypeOf(g.Resource), g.Resource)
	if !ok || rule.Lobby == nil {
		j.refuse(authz.FailedPrecondition, "", "no rule with a lobby governs %s", g.Resource)
		return j.s, false
	}
	if g.Subject == j.actor {
		j.refuse(authz.PermissionDenied, authz.RuleNoSelfService, "the actor would admit itself")
	}
	j.require(g.Resource, rule.Lobby.Admit, "admitting to "+g.Resource)
	if r.check(g.Subject, rule.Join, g.Resource).Reason == refBlocked {
		j.refuse(authz.FailedPrecondition, "", "%s is blocked from %s on %s", g.Subject, rule.Join, g.Resource)
	}
	g.Role = rule.Lobby.Role
	// No role of the actor's need list the lobby's role: what the role
	// lets the admitted subject hand out is bounded as a definition's is,
	// or the actor would hand an accomplice the power to give it what it
	// may neither hold nor assign.
	j.handsOut, j.admits = true, g.Role
	def, ok := r.definition(g.Role, g.Resource)
	if !ok {
		j.refuse(authz.NotFound, "", "no role %s is visible at %s", g.Role, g.Resource)
		return j.s, false
	}
	// An admission lets in: it never cuts short a live one that lasts at
	// least as long.
	return j.bind(g, def, true)
}

// bind puts g, whose role is def at its resource, once the actor's
// authority is judged: bindable_on, max_holders, the expiry, and a re-grant
// that shortens one judged as the revoke it is.
func (j *judgement) bind(g authz.Grant, def authz.Role, keepLonger bool) (authz.Snapshot, bool) {
	r := j.before
	// "bindable_on: resource types where it may be granted (empty:
	// anywhere)".
	if len(def.BindableOn) > 0 && !slices.Contains(def.BindableOn, authz.TypeOf(g.Resource)) {
		j.refuse(authz.FailedPrecondition, "", "%s is bindable only on %v", g.Role, def.BindableOn)
	}
	// "max_holders: at most this many subjects may hold it on one
	// resource"; one who holds it already takes no new place.
	if def.MaxHolders > 0 {
		holders := 0
		already := false
		for _, h := range r.s.Grants {
			if h.Role == g.Role && h.Resource == g.Resource && r.unexpired(h.Expires) {
				holders++
				already = already || h.Subject == g.Subject
			}
		}
		if !already && holders >= int(def.MaxHolders) {
			j.refuse(authz.FailedPrecondition, "", "%s already has %d of at most %d holders on %s", g.Role, holders, def.MaxHolders, g.Resource)
		}
	}
	// An expired grant counts as absent: one cannot be written.
	if !g.Expires.IsZero() && !g.Expires.After(j.now) {
		j.refuse(authz.Invalid, "", "expiry %s is not in the future", g.Expires)
		return j.s, false
	}
	if keepLonger && slices.ContainsFunc(j.s.Grants, func(h authz.Grant) bool {
		return sameBinding(h, g) && r.unexpired(h.Expires) && (h.Expires.IsZero() || !g.Expires.IsZero() && !h.Expires.Before(g.Expires))
	}) {
		return j.s, true
	}
	after := clone(j.s)
	after.Grants = slices.DeleteFunc(after.Grants, func(h authz.Grant) bool { return sameBinding(h, g) })
	// "A re-grant that changes an expiry is a grant (and, if it shortens
	// it, a revoke)": what the holder loses when the binding runs out is
	// judged now, as the revoke it is.
	for _, old := range j.s.Grants {
		if sameBinding(old, g) && r.unexpired(old.Expires) && !g.Expires.IsZero() && (old.Expires.IsZero() || g.Expires.Before(old.Expires)) {
			j.out = append(j.out, j.invariant(after)...)
		}
	}
	g.Expires = g.Expires.UTC()
	after.Grants = append(after.Grants, g)
	return after, true
}

// revoke: "Revoke needs what granting that binding would need now, and
// what the holder loses is bounded by rule 2"; the actor does not "revoke
// its own grants".
func (j *judgement) revoke(g authz.Grant) (authz.Snapshot, bool) {
	if !j.before.registered(g.Resource) {
		j.refuse(authz.NotFound, "", "%s is not registered", g.Resource)
		return j.s, false
	}
	if g.Subject == j.actor {
		j.refuse(authz.PermissionDenied, authz.RuleNoSelfService, "it is not possible to revoke your own permissions")
	}
	j.mayGrant(g.Role, g.Resource, "revoke")
	if !slices.ContainsFunc(j.s.Grants, func(h authz.Grant) bool { return sameBinding(h, g) }) {
		j.refuse(authz.NotFound, "", "%s holds no grant of %s on %s", g.Subject, g.Role, g.Resource)
		return j.s, false
	}
	after := clone(j.s)
	after.Grants = slices.DeleteFunc(after.Grants, func(h authz.Grant) bool { return sameBinding(h, g) })
	return after, true
}

// putResource registers r or, when it is registered, moves it: "Each
// resource is registered with one parent (default root); it may be moved
// to another parent (never under itself)".
func (j *judgement) putResource(res authz.Resource) (authz.Snapshot, bool) {
	r := j.before
	if res.Parent == "" {
		res.Parent = authz.RootName
	}
	if res.Name == authz.RootName {
		j.refuse(authz.Invalid, "", "root is reserved")
		return j.s, false
	}
	if !r.registered(res.Parent) {
		j.refuse(authz.NotFound, "", "parent %s is not registered", res.Parent)
		return j.s, false
	}
	if r.registered(res.Name) {
		return j.move(res.Name, res.Parent)
	}
	return j.register(res.Name, res.Parent)
}

// register: "usher.resources.create at the parent registers a child";
// quotas on its ancestors must have room; whoever registers it as an actor
// gets the creator role of its type "in the same transaction"; it starts
// with its type's default quotas.
func (j *judgement) register(name, parent string) (authz.Snapshot, bool) {
	r := j.before
	typ := authz.TypeOf(name)
	j.requireTyped(parent, authz.PermResourcesCreate, typ, "registering "+name)
	if r.depth(parent)+1 > authz.MaxDepth {
		j.refuse(authz.ResourceExhausted, "", "%s would be deeper than %d", name, authz.MaxDepth)
	}
	after := clone(j.s)
	res := authz.Resource{Name: name, Parent: parent, Creator: j.actor}
	after.Resources = append(after.Resources, res)
	for _, c := range j.s.CreatorRoles {
		if c.ResourceType != typ {
			continue
		}
		def, ok := r.definition(c.Role, parent)
		if !ok || len(def.BindableOn) > 0 && !slices.Contains(def.BindableOn, typ) {
			j.refuse(authz.FailedPrecondition, "", "the creator role %s cannot be granted on %s", c.Role, name)
			continue
		}
		j.creator = &authz.Grant{Subject: j.actor, Role: c.Role, Resource: name}
		after.Grants = append(after.Grants, *j.creator)
	}
	for _, d := range j.s.DefaultQuotas {
		if d.ScopeType == typ {
			after.Quotas = append(after.Quotas, authz.Quota{Scope: name, ResourceType: d.ResourceType, Limit: d.Limit})
		}
	}
	j.quotas(after)
	j.registers = &res
	return after, true
}

// move: "usher.resources.move at the resource plus create at the new
// parent moves it"; never under itself; no deeper than the tree may be; no
// grant left without a definition of its role; quotas above the new parent
// must have room for the subtree.
func (j *judgement) move(name, parent string) (authz.Snapshot, bool) {
	r := j.before
	typ := authz.TypeOf(name)
	if r.parent[name] == parent {
		// Already there: nothing moves, and nothing changes. Registering it
		// there again (a retry) needs what registering it there needs.
		j.requireTyped(parent, authz.PermResourcesCreate, typ, "registering "+name+" under "+parent)
		return j.s, false
	}
	j.requireTyped(name, authz.PermResourcesMove, typ, "moving "+name)
	j.requireTyped(parent, authz.PermResourcesCreate, typ, "moving "+name+" under "+parent)
	if r.under(parent, name) {
		j.refuse(authz.FailedPrecondition, "", "moving %s under %s would form a cycle", name, parent)
		return j.s, false
	}
	if r.depth(parent)+1+r.height(name) > authz.MaxDepth {
		j.refuse(authz.ResourceExhausted, "", "moving %s under %s would make the tree deeper than %d", name, parent, authz.MaxDepth)
	}
	// "one may not delete (or move) a resource to shed one's own block or to
	// take from others what one could not take from them directly": a block
	// on an ancestor the resource leaves is lifted below it as an Unblock
	// would lift it, and one on an ancestor it joins is imposed as a Block
	// would impose it; each needs usher.blocks.write where the block is.
	left, joined := map[string]bool{}, map[string]bool{}
	for a := r.parent[name]; a != ""; a = r.parent[a] {
		left[a] = true
	}
	for a := parent; a != ""; a = r.parent[a] {
		if left[a] {
			delete(left, a)
		} else {
			joined[a] = true
		}
	}
	for _, b := range j.s.Blocks {
		if !b.Expires.IsZero() && !b.Expires.After(j.now) {
			continue
		}
		switch {
		case left[b.Resource]:
			j.blockMoved(b, "lifting")
		case joined[b.Resource]:
			j.blockMoved(b, "imposing")
		}
	}
	j.handsOut = true
	after := clone(j.s)
	for i, res := range after.Resources {
		if res.Name == name {
			after.Resources[i].Parent = parent
		}
	}
	j.orphans(after)
	j.heldTo(after)
	j.quotas(after)
	j.creatorGain(after)
	// Admission rules are the platform's: an actor's move may not change
	// which rule governs a resource it moves.
	ra := newReference(after, j.now)
	for _, res := range after.Resources {
		if res.Name != name && !ra.under(res.Name, name) {
			continue
		}
		typ := authz.TypeOf(res.Name)
		was, wasOK := r.admission(typ, res.Name)
		is, isOK := ra.admission(typ, res.Name)
		if wasOK != isOK || scopeOf(was) != scopeOf(is) {
			j.refuse(authz.PermissionDenied, authz.RulePlatformOnly, "moving %s would change the admission rule that governs %s", name, res.Name)
			break
		}
	}
	return after, true
}

// blockMoved holds a block a move or a delete lifts or imposes to the rules
// of Unblock and Block: usher.blocks.write where it is, and never lifting
// the actor's own ("it does not ... block or unblock itself").
func (j *judgement) blockMoved(b authz.Block, verb string) {
	if verb == "lifting" && b.Subject == j.actor {
		j.refuse(authz.PermissionDenied, authz.RuleNoSelfService, "the write would lift the actor's own block %s on %s", b.ID, b.Resource)
	}
	j.requireBlock(b.Resource, b.Permissions, fmt.Sprintf("%s the block %s of %s", verb, b.ID, b.Subject))
}

// mayBlock: "usher.blocks.write at the resource; or, for a block that
// lists its permissions, usher.blocks.write.<permission> there for each one
// it lists ... which never blocks everything". It holds for imposing a
// block of perms and for lifting one.
func (j *judgement) mayBlock(resource string, perms []string) bool {
	if j.before.holds(j.actor, authz.PermBlocksWrite, resource) {
		return true
	}
	if len(perms) == 0 {
		return false
	}
	for _, p := range perms {
		if !j.before.holds(j.actor, authz.PermBlocksWrite+"."+p, resource) {
			return false
		}
	}
	return true
}

// requireBlock is require for imposing or lifting a block of perms at
// resource (see mayBlock); what is lacked is named usher.blocks.write.
func (j *judgement) requireBlock(resource string, perms []string, what string) {
	if !j.mayBlock(resource, perms) {
		j.out = append(j.out, refVerdict{Code: authz.PermissionDenied, Rule: refMissing, Permission: authz.PermBlocksWrite,
			Detail: fmt.Sprintf("%s needs %s, or %s.P for each permission P it lists, at %s", what, authz.PermBlocksWrite, authz.PermBlocksWrite, resource)})
	}
}

// deleteResource: "usher.resources.delete at the resource itself deletes
// it"; "deleting one with children is refused"; "A delete removes every
// binding and block on the resource", and with them its role definitions
// and quotas, which only a holder of usher.quotas.write may remove.
func (j *judgement) deleteResource(name string) (authz.Snapshot, bool) {
	r := j.before
	if name == authz.RootName {
		j.refuse(authz.Invalid, "", "root cannot be deleted")
		return j.s, false
	}
	if !r.registered(name) {
		j.refuse(authz.NotFound, "", "%s is not registered", name)
		return j.s, false
	}
	j.requireTyped(name, authz.PermResourcesDelete, authz.TypeOf(name), "deleting "+name)
	for _, res := range j.s.Resources {
		if r.parent[res.Name] == name {
			j.refuse(authz.FailedPrecondition, "", "%s has children", name)
			return j.s, false
		}
	}
	// "Quotas: usher.quotas.write at the scope": one may not delete a
	// resource to remove the quotas on it, other than those registering it
	// again would set (its type's defaults).
	if slices.ContainsFunc(j.s.Quotas, func(q authz.Quota) bool {
		return q.Scope == name && !(q.Subject == "" && slices.ContainsFunc(j.s.DefaultQuotas, func(d authz.DefaultQuota) bool {
			return d.ScopeType == authz.TypeOf(name) && d.ResourceType == q.ResourceType && d.Limit == q.Limit
		}))
	}) {
		j.require(name, authz.PermQuotasWrite, "deleting "+name+" with its quotas")
	}
	for _, b := range j.s.Blocks {
		if b.Resource == name && (b.Expires.IsZero() || b.Expires.After(j.now)) {
			j.blockMoved(b, "lifting")
		}
	}
	if slices.ContainsFunc(j.s.Admissions, func(a authz.Admission) bool { return scopeOf(a) == name }) {
		j.refuse(authz.PermissionDenied, authz.RulePlatformOnly, "%s holds an admission rule, which is the platform's", name)
	}
	// The last definition of a role that a creator role or a lobby's
	// admit_role (of a rule elsewhere) names stays, as DeleteRole keeps it.
	for _, d := range j.s.Roles {
		last := d.Scope == name && !slices.ContainsFunc(j.s.Roles, func(o authz.Role) bool { return o.Name == d.Name && o.Scope != name })
		if last && (slices.ContainsFunc(j.s.CreatorRoles, func(c authz.CreatorRole) bool { return c.Role == d.Name }) ||
			slices.ContainsFunc(j.s.Admissions, func(a authz.Admission) bool { return a.Lobby != nil && a.Lobby.Role == d.Name && scopeOf(a) != name })) {
			j.refuse(authz.FailedPrecondition, "", "%s at %s is its last definition, which a creator role or a lobby names", d.Name, name)
		}
	}
	j.reRegistration(name)
	after := clone(j.s)
	var gone authz.Resource
	after.Resources = slices.DeleteFunc(after.Resources, func(res authz.Resource) bool {
		if res.Name == name {
			gone = res
			return true
		}
		return false
	})
	after.Grants = slices.DeleteFunc(after.Grants, func(g authz.Grant) bool { return g.Resource == name })
	after.Blocks = slices.DeleteFunc(after.Blocks, func(b authz.Block) bool { return b.Resource == name })
	after.Roles = slices.DeleteFunc(after.Roles, func(d authz.Role) bool { return d.Scope == name })
	after.Quotas = slices.DeleteFunc(after.Quotas, func(q authz.Quota) bool { return q.Scope == name })
	gone.Parent = r.parent[name]
	j.deletes, j.handsOut = &gone, true
	return after, true
}

// reRegistration: "No self-service. The actor never writes its own bindings
// ... and never gets around that indirectly, by deleting, moving or
// re-registering the resource they are on, or by redefining a role it
// holds ... The one exception is the creator role, granted when the actor
// registers a resource." An actor bound on name that may register it again
// would, by deleting it, come to hold its creator role there for good in
// place of its own grants; holding that already, it would come to hold the
// role as defined where it registers it again, in place of the definition
// that applies on name now (which, on name itself, goes with it), and out
// from under the blocks above name that do not reach there.
func (j *judgement) reRegistration(name string) {
	r, typ := j.before, authz.TypeOf(name)
	i := slices.IndexFunc(j.s.CreatorRoles, func(c authz.CreatorRole) bool { return c.ResourceType == typ })
	if i < 0 {
		return
	}
	creator, parent := j.s.CreatorRoles[i].Role, r.parent[name]
	bound, forGood := false, false
	for _, g := range j.s.Grants {
		if g.Subject == j.actor && g.Resource == name && (g.Expires.IsZero() || g.Expires.After(j.now)) {
			bound = true
			forGood = forGood || g.Role == creator && g.Expires.IsZero()
		}
	}
	held, _ := r.definition(creator, name)
	// more: the definition def gives its holder something held does not.
	more := func(def authz.Role) bool {
		carried := set(r.carries(held))
		for _, p := range r.carries(def) {
			if !carried[p] {
				return true
			}
		}
		if slices.Contains(def.Permissions, authz.Wildcard) && !slices.Contains(held.Permissions, authz.Wildcard) {
			return true
		}
		return slices.ContainsFunc(def.AssignableRoles, func(n string) bool { return !slices.Contains(held.AssignableRoles, n) })
	}
	// blocked: a live block of the actor on resource's path takes p away.
	blocked := func(p, resource string) bool {
		for _, b := range j.s.Blocks {
			if b.Subject == j.actor && r.under(resource, b.Resource) && r.unexpired(b.Expires) && r.covers(b, p) {
				return true
			}
		}
		return false
	}
	// sheds: registered again under at, the role as defined there would
	// give the actor something a block of it above name keeps from it now,
	// and no block on the way to at does ("one may not delete (or move) a
	// resource to shed one's own block").
	sheds := func(def authz.Role, at string) bool {
		for _, p := range r.carries(def) {
			if blocked(p, parent) && !blocked(p, at) {
				return true
			}
		}
		return false
	}
	// Names are global: "register it again" under its parent, or under any
	// other resource where the creator role is bindable on the type and
	// the actor may register it.
	mayRegister := func(at string) bool {
		def, ok := r.definition(creator, at)
		if !ok || len(def.BindableOn) > 0 && !slices.Contains(def.BindableOn, typ) || forGood && !more(def) && !sheds(def, at) {
			return false
		}
		return r.holds(j.actor, authz.PermResourcesCreate+"."+typ, at) || r.holds(j.actor, authz.PermResourcesCreate, at)
	}
	may := mayRegister(parent) || mayRegister(authz.RootName)
	for _, res := range r.s.Resources {
		may = may || res.Name != name && mayRegister(res.Name)
	}
	if bound && may {
		j.refuse(authz.PermissionDenied, authz.RuleNoSelfService, "deleting %s, %s could register it again as its %s in place of its own grants", name, j.actor, creator)
	}
}

// putRole: "usher.roles.write at the scope defines, redefines or deletes a
// role there. A definition is a grant to every holder of that name below
// the scope: its permissions and assignable_roles are bounded by the
// actor's own (rule 1)"; and the actor does not redefine "a role it
// holds". Roles may only name declared permissions.
func (j *judgement) putRole(role authz.Role) (authz.Snapshot, bool) {
	r := j.before
	if !r.registered(role.Scope) {
		j.refuse(authz.NotFound, "", "scope %s is not registered", role.Scope)
		return j.s, false
	}
	j.require(role.Scope, authz.PermRolesWrite, "defining "+role.Name)
	invalid := false
	for _, p := range role.Permissions {
		if p != authz.Wildcard && !r.declared(p) {
			j.refuse(authz.Invalid, "", "%s is not declared", p)
			invalid = true
		}
	}
	if invalid {
		return j.s, false
	}
	role = normalized(role)
	for _, d := range j.s.Roles {
		if d.Name == role.Name && d.Scope == role.Scope && sameDefinition(d, role) {
			return j.s, false // defined so already: nothing changes
		}
	}
	j.notHeld(role.Scope, role.Name)
	// Bounded by the actor's own: every permission it carries is one the
	// actor holds at the scope ...
	for _, p := range r.carries(role) {
		if !r.holds(j.actor, p, role.Scope) {
			j.refuse(authz.PermissionDenied, authz.RuleNoEscalation, "the definition of %s at %s would carry %s, which the actor lacks there", role.Name, role.Scope, p)
			break
		}
	}
	// "*" is every permission the catalog will ever declare, not only
	// those it declares now: a definition carries it only for an actor
	// whose own roles carry it.
	held := r.heldRoles(j.actor, role.Scope)
	if slices.Contains(role.Permissions, authz.Wildcard) &&
		!slices.ContainsFunc(held, func(d authz.Role) bool { return slices.Contains(d.Permissions, authz.Wildcard) }) {
		j.refuse(authz.PermissionDenied, authz.RuleNoEscalation, "the definition of %s at %s would carry *, which the actor's own roles do not", role.Name, role.Scope)
	}
	// ... and every role it lets its holders assign is one of the actor's
	// own assignable roles there: listed by a role the actor holds, or,
	// through "*", one whose permissions the actor has wherever it would
	// give them; "*" itself only for an actor whose roles list "*". The
	// definition grants no one, so it needs no usher.grants.write.
	for _, name := range role.AssignableRoles {
		if j.mayLetAssign(name, role.Scope) {
			continue
		}
		j.refuse(authz.PermissionDenied, authz.RuleNoEscalation, "the definition of %s at %s would let its holders assign %s, which the actor may not", role.Name, role.Scope, name)
		break
	}
	j.handsOut = true
	after := clone(j.s)
	after.Roles = slices.DeleteFunc(after.Roles, func(d authz.Role) bool { return d.Name == role.Name && d.Scope == role.Scope })
	after.Roles = append(after.Roles, role)
	j.creatorGain(after)
	j.heldTo(after)
	return after, true
}

// creatorGain: "The one exception is the creator role, granted when the
// actor registers a resource", and a definition is "a grant to every
// holder of that name below the scope: its permissions and
// assignable_roles are bounded by the actor's own (rule 1)". The actor is
// the holder to be of every creator role wherever it may come to register
// a resource, and may then give there, with no further test, every role
// the creator role lists by name there, and the roles those list there
// ("lists by name"). What such a role comes to carry at a resource after
// the write (a definition, a deletion, a move), beyond what it carries
// there before, is the actor's own there ("*" only if its roles there
// carry "*"), and every role it comes to list there, the actor may assign
// there. The creator role is the actor's for good, and is weighed against
// what the actor's grants give it, its blocks left out, for a block ends,
// and takes from the creator role what it takes from the others; a role it
// would give is weighed against what the actor holds.
func (j *judgement) creatorGain(after authz.Snapshot) {
	r, a := j.before, newReference(after, j.now)
	creator := map[string]bool{}
	var roots []string
	for _, c := range j.s.CreatorRoles {
		if !creator[c.Role] {
			creator[c.Role] = true
			roots = append(roots, c.Role)
		}
	}
	// reach: the roles reached from the creator roles by name, through the
	// definitions def gives of each.
	reach := func(def func(name string) []authz.Role) map[string]bool {
		seen := set(roots)
		queue := slices.Clone(roots)
		for i := 0; i < len(queue); i++ {
			for _, d := range def(queue[i]) {
				for _, n := range d.AssignableRoles {
					if n != authz.Wildcard && !seen[n] {
						seen[n] = true
						queue = append(queue, n)
					}
				}
			}
		}
		return seen
	}
	anywhere := reach(func(name string) []authz.Role {
		var out []authz.Role
		for _, d := range j.s.Roles {
			if d.Name == name {
				out = append(out, d)
			}
		}
		return out
	})
	// granted: the roles the actor's live grants give it at res, its
	// blocks left out.
	granted := func(res string) []authz.Role {
		var out []authz.Role
		for _, at := range r.path(res) {
			for _, g := range j.s.Grants {
				if g.Subject == j.actor && g.Resource == at && r.unexpired(g.Expires) {
					if d, ok := r.definition(g.Role, res); ok {
						out = append(out, d)
					}
				}
			}
		}
		return out
	}
	carriesWildcard := func(roles []authz.Role) bool {
		return slices.ContainsFunc(roles, func(d authz.Role) bool { return slices.Contains(d.Permissions, authz.Wildcard) })
	}
	at := []string{authz.RootName}
	for _, res := range r.s.Resources {
		at = append(at, res.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(anywhere)) {
		for _, res := range at {
			then, ok := a.definition(name, res)
			if !ok {
				continue
			}
			if !creator[name] && !reach(func(n string) []authz.Role {
				if d, ok := a.definition(n, res); ok {
					return []authz.Role{d}
				}
				return nil
			})[name] {
				continue
			}
			now, had := r.definition(name, res)
			was := map[string]bool{}
			if had {
				was = set(r.carries(now))
			}
			holds := func(p string) bool { return r.holds(j.actor, p, res) }
			roles := r.heldRoles(j.actor, res)
			if creator[name] {
				roles = granted(res)
				carried := map[string]bool{}
				for _, d := range roles {
					for _, p := range r.carries(d) {
						carried[p] = true
					}
				}
				holds = func(p string) bool { return carried[p] }
			}
			if slices.Contains(then.Permissions, authz.Wildcard) && (!had || !slices.Contains(now.Permissions, authz.Wildcard)) && !carriesWildcard(roles) {
				j.refuse(authz.PermissionDenied, authz.RuleNoEscalation, "%s, which registering leads to, would carry * on %s after the write, which the actor's roles do not carry there", name, res)
				return
			}
			for _, p := range a.carries(then) {
				if !was[p] && !holds(p) {
					j.refuse(authz.PermissionDenied, authz.RuleNoEscalation, "%s, which registering leads to, would carry %s on %s after the write, which the actor lacks there", name, p, res)
					return
				}
			}
			for _, n := range then.AssignableRoles {
				if (!had || !slices.Contains(now.AssignableRoles, n)) && !j.mayLetAssign(n, res) {
					j.refuse(authz.PermissionDenied, authz.RuleNoEscalation, "%s, which registering leads to, would list %s on %s after the write, which the actor may not assign there", name, n, res)
					return
				}
			}
		}
	}
}

// mayLetAssign reports whether a role may let its holders at resource
// assign name, as a definition by the actor there may: name is one of the
// actor's own assignable roles there, listed by a role the actor holds, or,
// through "*", one whose permissions the actor has wherever it would give
// them; "*" itself only for an actor whose roles list "*".
func (j *judgement) mayLetAssign(name, resource string) bool {
	r := j.before
	if slices.ContainsFunc(r.heldRoles(j.actor, resource), func(d authz.Role) bool { return slices.Contains(d.AssignableRoles, name) }) {
		return true
	}
	// A role not visible there is granted there by no one (it is
	// NOT_FOUND), so only a listing by name lets the actor hand it on.
	_, visible := r.definition(name, resource)
	return visible && name != authz.Wildcard && j.mayAssign(name, resource) == ""
}

// deleteRole: usher.roles.write at the scope; not a role the actor holds.
// The grants the definition alone covered are revoked with it: "what it
// takes away from holders is bounded by rule 2".
func (j *judgement) deleteRole(scope, name string) (authz.Snapshot, bool) {
	r := j.before
	if !r.registered(scope) {
		j.refuse(authz.NotFound, "", "scope %s is not registered", scope)
		return j.s, false
	}
	j.require(scope, authz.PermRolesWrite, "deleting "+name)
	if !slices.ContainsFunc(j.s.Roles, func(d authz.Role) bool { return d.Name == name && d.Scope == scope }) {
		j.refuse(authz.NotFound, "", "no role %s is defined at %s", name, scope)
		return j.s, false
	}
	j.notHeld(scope, name)
	// The last definition of a role that a creator role or a lobby's
	// admit_role names stays: without it no actor registers a resource of
	// the type, and no Admit lets anyone in.
	last := !slices.ContainsFunc(j.s.Roles, func(d authz.Role) bool { return d.Name == name && d.Scope != scope })
	if last && (slices.ContainsFunc(j.s.CreatorRoles, func(c authz.CreatorRole) bool { return c.Role == name }) ||
		slices.ContainsFunc(j.s.Admissions, func(a authz.Admission) bool { return a.Lobby != nil && a.Lobby.Role == name })) {
		j.refuse(authz.FailedPrecondition, "", "%s at %s is its last definition, which a creator role or a lobby names", name, scope)
		return j.s, false
	}
	j.handsOut = true
	after := clone(j.s)
	after.Roles = slices.DeleteFunc(after.Roles, func(d authz.Role) bool { return d.Name == name && d.Scope == scope })
	j.creatorGain(after)
	a := newReference(after, j.now)
	orphaned := func(g authz.Grant) bool {
		_, was := r.definition(g.Role, g.Resource)
		_, is := a.definition(g.Role, g.Resource)
		return g.Role == name && was && !is
	}
	// "A role name is resolved at the resource being checked": a grant
	// that a definition below its resource still gives power through is
	// not the deleted definition's alone to take.
	for _, g := range after.Grants {
		if orphaned(g) && slices.ContainsFunc(after.Roles, func(d authz.Role) bool {
			return d.Name == name && d.Scope != g.Resource && r.under(d.Scope, g.Resource)
		}) {
			j.refuse(authz.FailedPrecondition, "", "%s on %s is given power through by a definition below it", g.Subject, g.Resource)
			return j.s, false
		}
	}
	after.Grants = slices.DeleteFunc(after.Grants, orphaned)
	j.heldTo(after)
	return after, true
}

// notHeld: the actor never gets around rule 3 "by redefining a role it
// holds": an unexpired grant of it on the scope, above it or below it,
// where the definition could apply.
func (j *judgement) notHeld(scope, name string) {
	r := j.before
	for _, g := range j.s.Grants {
		if g.Subject == j.actor && g.Role == name && r.unexpired(g.Expires) && (r.under(scope, g.Resource) || r.under(g.Resource, scope)) {
			j.refuse(authz.PermissionDenied, authz.RuleNoSelfService, "the actor holds %s on %s and may not redefine it at %s", name, g.Resource, scope)
			return
		}
	}
}

// block: "Block / Unblock need usher.blocks.write at the resource"; the
// actor does not block itself; a block lists declared permissions and
// expires in the future. Block.ID is the engine's handle: an ID the subject
// carries there already replaces that block.
func (j *judgement) block(b authz.Block) (authz.Snapshot, bool) {
	r := j.before
	if !r.registered(b.Resource) {
		j.refuse(authz.NotFound, "", "%s is not registered", b.Resource)
		return j.s, false
	}
	if b.Subject == j.actor {
		j.refuse(authz.PermissionDenied, authz.RuleNoSelfService, "the actor would block itself")
	}
	j.requireBlock(b.Resource, b.Permissions, "blocking "+b.Subject)
	// A block that replaces one by its ID lifts the one it replaces, as an
	// Unblock would: one that still denies something is the actor's to
	// lift only as any other is.
	for _, old := range j.s.Blocks {
		if sameBlockKey(old, b) && r.unexpired(old.Expires) {
			j.requireBlock(b.Resource, old.Permissions, "replacing the block "+old.ID+" of "+b.Subject)
		}
	}
	invalid := false
	for _, p := range b.Permissions {
		if !r.declared(p) {
			j.refuse(authz.Invalid, "", "%s is not declared", p)
			invalid = true
		}
	}
	if !b.Expires.IsZero() && !b.Expires.After(j.now) {
		j.refuse(authz.Invalid, "", "expiry %s is not in the future", b.Expires)
		invalid = true
	}
	if invalid {
		return j.s, false
	}
	b.Permissions = slices.Compact(slices.Sorted(slices.Values(b.Permissions)))
	b.Expires = b.Expires.UTC()
	j.handsOut = true
	after := clone(j.s)
	carried, unexpired := 0, 0
	replaced := slices.ContainsFunc(j.s.Blocks, func(o authz.Block) bool { return sameBlockKey(o, b) })
	for _, o := range j.s.Blocks {
		if o.Subject == b.Subject && o.Resource == b.Resource {
			carried++
			if r.unexpired(o.Expires) {
				unexpired++
			}
		}
	}
	if !replaced && unexpired >= authz.MaxBlocksPerBinding {
		// The fewest unexpired blocks that b covers and outlasts make
		// way for it, the soonest to run out first.
		var covered []authz.Block
		for _, o := range j.s.Blocks {
			if o.Subject == b.Subject && o.Resource == b.Resource && r.unexpired(o.Expires) && coversBlock(b, o) {
				covered = append(covered, o)
			}
		}
		short := unexpired - authz.MaxBlocksPerBinding + 1
		if len(covered) < short {
			j.refuse(authz.ResourceExhausted, "", "%s carries %d unexpired blocks on %s already", b.Subject, unexpired, b.Resource)
		} else {
			slices.SortFunc(covered, func(x, y authz.Block) int {
				if c := cmp.Compare(expiresOrNever(x.Expires), expiresOrNever(y.Expires)); c != 0 {
					return c
				}
				return strings.Compare(x.ID, y.ID)
			})
			for _, o := range covered[:short] {
				after.Blocks = slices.DeleteFunc(after.Blocks, func(a authz.Block) bool { return sameBlockKey(a, o) })
			}
		}
	}
	if !replaced && carried >= authz.MaxBlocksPerBinding {
		// Blocks that ran out make way for the new one.
		after.Blocks = slices.DeleteFunc(after.Blocks, func(o authz.Block) bool {
			return o.Subject == b.Subject && o.Resource == b.Resource && !r.unexpired(o.Expires)
		})
	}
	after.Blocks = slices.DeleteFunc(after.Blocks, func(o authz.Block) bool { return sameBlockKey(o, b) })
	// A block that replaces one with an earlier expiry lifts it when it
	// runs out, as a grant whose expiry is shortened revokes it then: "an
	// unblock gives back only what rule 1 allows", judged now.
	for _, old := range j.s.Blocks {
		if sameBlockKey(old, b) && r.unexpired(old.Expires) && !b.Expires.IsZero() && (old.Expires.IsZero() || b.Expires.Before(old.Expires)) {
			j.out = append(j.out, j.invariant(after)...)
		}
	}
	after.Blocks = append(after.Blocks, b)
	return after, true
}

// unblock: "Unblock lifts one block, or all that the actor may lift", and
// "an unblock gives back only what rule 1 allows". Of several blocks that
// the actor may lift one at a time but not together, DESIGN.md does not
// say which; the engine lifts them in ID order, each judged with those
// before it, and the reference does the same.
func (j *judgement) unblock(subject, resource, id string) (authz.Snapshot, bool) {
	r := j.before
	if !r.registered(resource) {
		j.refuse(authz.NotFound, "", "%s is not registered", resource)
		return j.s, false
	}
	if subject == j.actor {
		j.refuse(authz.PermissionDenied, authz.RuleNoSelfService, "the actor would unblock itself")
	}
	// "or all that the actor may lift": one who holds usher.blocks.write
	// only narrowed lifts the blocks that list only what it may block, and
	// is refused when there is none.
	j.handsOut = true
	var ids []string
	found := false
	for _, b := range j.s.Blocks {
		if b.Subject == subject && b.Resource == resource && (id == "" || b.ID == id) {
			found = true
			if j.mayBlock(resource, b.Permissions) {
				ids = append(ids, b.ID)
			}
		}
	}
	slices.Sort(ids)
	if !found {
		j.refuse(authz.NotFound, "", "%s carries no such block on %s", subject, resource)
	}
	if len(ids) == 0 {
		if !j.before.holds(j.actor, authz.PermBlocksWrite, resource) {
			j.out = append(j.out, refVerdict{Code: authz.PermissionDenied, Rule: refMissing, Permission: authz.PermBlocksWrite,
				Detail: fmt.Sprintf("unblocking %s needs %s at %s, or %s.P for each permission P a block there lists", subject, authz.PermBlocksWrite, resource, authz.PermBlocksWrite)})
		}
		return j.s, false
	}
	lift := func(ids []string) authz.Snapshot {
		after := clone(j.s)
		after.Blocks = slices.DeleteFunc(after.Blocks, func(b authz.Block) bool {
			return b.Subject == subject && b.Resource == resource && slices.Contains(ids, b.ID)
		})
		return after
	}
	if id != "" {
		return lift(ids), true
	}
	var lifted []string
	var first []refVerdict
	for _, b := range ids {
		if vs := j.invariant(lift(append(slices.Clone(lifted), b))); len(vs) > 0 {
			if first == nil {
				first = vs
			}
			continue
		}
		lifted = append(lifted, b)
	}
	if len(lifted) == 0 {
		j.out = append(j.out, first...)
		return j.s, false
	}
	return lift(lifted), true
}

// putQuota: "Quotas: usher.quotas.write at the scope."
func (j *judgement) putQuota(q authz.Quota) (authz.Snapshot, bool) {
	if !j.before.registered(q.Scope) {
		j.refuse(authz.NotFound, "", "scope %s is not registered", q.Scope)
		return j.s, false
	}
	j.require(q.Scope, authz.PermQuotasWrite, "setting a quota")
	after := clone(j.s)
	after.Quotas = slices.DeleteFunc(after.Quotas, func(o authz.Quota) bool { return sameQuotaKey(o, q) })
	after.Quotas = append(after.Quotas, q)
	return after, true
}

func (j *judgement) deleteQuota(q authz.Quota) (authz.Snapshot, bool) {
	if !j.before.registered(q.Scope) {
		j.refuse(authz.NotFound, "", "scope %s is not registered", q.Scope)
		return j.s, false
	}
	j.require(q.Scope, authz.PermQuotasWrite, "removing a quota")
	if !slices.ContainsFunc(j.s.Quotas, func(o authz.Quota) bool { return sameQuotaKey(o, q) }) {
		j.refuse(authz.NotFound, "", "no such quota at %s", q.Scope)
		return j.s, false
	}
	after := clone(j.s)
	after.Quotas = slices.DeleteFunc(after.Quotas, func(o authz.Quota) bool { return sameQuotaKey(o, q) })
	return after, true
}

// quotas: "at most limit resources of that type may exist in the scope's
// subtree (created by that subject, if one is named)". A write that adds
// to a quota's use past its limit is RESOURCE_EXHAUSTED; a limit lowered
// below the use "only stops further registrations".
func (j *judgement) quotas(after authz.Snapshot) {
	a := newReference(after, j.now)
	for _, q := range after.Quotas {
		was, is := j.before.used(q), a.used(q)
		if is > was && is > int(q.Limit) {
			j.refuse(authz.ResourceExhausted, "", "at most %d %s may exist below %s (subject %q); the write makes %d", q.Limit, q.ResourceType, q.Scope, q.Subject, is)
		}
	}
}

// orphans: no grant may be left with no definition of its role visible at
// its resource, where one was visible before.
func (j *judgement) orphans(after authz.Snapshot) {
	a := newReference(after, j.now)
	for _, g := range after.Grants {
		if _, was := j.before.definition(g.Role, g.Resource); was {
			if _, is := a.definition(g.Role, g.Resource); !is {
				j.refuse(authz.FailedPrecondition, "", "the grant of %s to %s on %s would be left with no definition", g.Role, g.Subject, g.Resource)
				return
			}
		}
	}
}

// heldTo: a move puts the grants it carries under the definitions of
// their roles where it lands, a role's definition or deletion the grants
// it applies to under the new one or the one above, and holds them to
// those as a grant there would be: a live grant whose definition changes
// may not come under one whose bindable_on leaves out its resource's type,
// nor one whose max_holders ("at most this many subjects may hold it on
// one resource") the role's live holders there pass.
func (j *judgement) heldTo(after authz.Snapshot) {
	a := newReference(after, j.now)
	for _, g := range after.Grants {
		if !a.unexpired(g.Expires) {
			continue
		}
		was, _ := j.before.definition(g.Role, g.Resource)
		is, ok := a.definition(g.Role, g.Resource)
		if !ok || was.Scope == is.Scope && sameDefinition(was, is) {
			continue
		}
		if len(is.BindableOn) > 0 && !slices.Contains(is.BindableOn, authz.TypeOf(g.Resource)) {
			j.refuse(authz.FailedPrecondition, "", "the grant of %s to %s on %s would come under the definition at %s, bindable only on %v", g.Role, g.Subject, g.Resource, is.Scope, is.BindableOn)
			return
		}
		if is.MaxHolders > 0 {
			holders := 0
			for _, h := range after.Grants {
				if h.Role == g.Role && h.Resource == g.Resource && a.unexpired(h.Expires) {
					holders++
				}
			}
			if holders > int(is.MaxHolders) {
				j.refuse(authz.FailedPrecondition, "", "the %d holders of %s on %s would come under the definition at %s, which allows at most %d", holders, g.Role, g.Resource, is.Scope, is.MaxHolders)
				return
			}
		}
	}
}

// invariant is "The delegation invariant": "Compare every subject's
// effective permissions on every resource before and after the write".
//
// A resource the write registers is compared as a bare child of its parent
// before, so that what it inherits is not a gain, and a resource it deletes
// as a bare leaf after, so that what the delete takes with it (bindings,
// blocks, role definitions) is. The creator role is left out of the state
// after: it is "The one exception".
func (j *judgement) invariant(after authz.Snapshot) []refVerdict {
	b, a := j.s, after
	if j.registers != nil {
		b = clone(b)
		b.Resources = append(b.Resources, authz.Resource{Name: j.registers.Name, Parent: j.registers.Parent})
	}
	if j.deletes != nil {
		a = clone(a)
		a.Resources = append(a.Resources, *j.deletes)
	}
	if j.creator != nil {
		a = clone(a)
		a.Grants = slices.DeleteFunc(a.Grants, func(g authz.Grant) bool { return sameBinding(g, *j.creator) })
	}
	resources := []string{authz.RootName}
	for _, res := range b.Resources {
		resources = append(resources, res.Name)
	}
	subjects := map[string]bool{j.actor: true}
	for _, s := range []authz.Snapshot{b, a} {
		for _, g := range s.Grants {
			subjects[g.Subject] = true
		}
		for _, bl := range s.Blocks {
			subjects[bl.Subject] = true
		}
	}
	// Check of a subject reads only that subject's grants and blocks, so
	// each subject is looked at in a copy of the state that holds only its
	// own: the same answers, with much less to scan.
	owned := map[string][2]authz.Snapshot{}
	for s := range subjects {
		owned[s] = [2]authz.Snapshot{ownedBy(b, s), ownedBy(a, s)}
	}
	// "before and after the write" is every moment after it: now, and
	// whenever one of the subject's grants or blocks runs out, before or
	// after the write, its permissions may change.
	instants := func(s string) []time.Time {
		out := []time.Time{j.now}
		for _, snap := range owned[s] {
			for _, g := range snap.Grants {
				if g.Expires.After(j.now) {
					out = append(out, g.Expires)
				}
			}
			for _, bl := range snap.Blocks {
				if bl.Expires.After(j.now) {
					out = append(out, bl.Expires)
				}
			}
		}
		slices.SortFunc(out[1:], time.Time.Compare)
		return slices.CompactFunc(out, time.Time.Equal)
	}
	var out []refVerdict
	refuse := func(rule, format string, args ...any) {
		out = append(out, refVerdict{Code: authz.PermissionDenied, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	actorBefore := newReference(owned[j.actor][0], j.now)
	for _, s := range slices.Sorted(maps.Keys(subjects)) {
		for _, t := range instants(s) {
			rb, ra := newReference(owned[s][0], t), newReference(owned[s][1], t)
			for _, res := range resources {
				was, is := set(rb.permissions(s, res)), set(ra.permissions(s, res))
				gained, lost := minus(is, was), minus(was, is)
				if s == j.actor {
					// 3. "No self-service. The actor never writes its own
					//    bindings or blocks ... and never gets around that
					//    indirectly, by deleting, moving or re-registering the
					//    resource they are on, or by redefining a role it
					//    holds": its own power changes nowhere, neither what
					//    it holds nor what it may give, except that it may
					//    lose what it holds on a resource it deletes ("an
					//    event's Owner deletes the event").
					powerBefore, assigns := rb.power(j.actor, res)
					powerAfter, assignsAfter := ra.power(j.actor, res)
					exempt := j.deletes != nil && j.deletes.Name == res
					for _, p := range gained {
						refuse(authz.RuleNoSelfService, "the actor would gain %s on %s at %s", p, res, t)
					}
					for _, p := range minus(powerAfter, powerBefore) {
						refuse(authz.RuleNoSelfService, "the actor would become able to give %s on %s at %s", p, res, t)
					}
					for _, n := range minus(assignsAfter, assigns) {
						refuse(authz.RuleNoSelfService, "the actor would become able to assign %s on %s at %s", n, res, t)
					}
					if ra.wildcardPower(s, res) && !rb.wildcardPower(s, res) {
						refuse(authz.RuleNoSelfService, "the actor would become able to give * on %s at %s", res, t)
					}
					// "* in a role means every permission", those a later
					// policy declares too.
					if ra.wildcard(s, res) && !rb.wildcard(s, res) {
						refuse(authz.RuleNoSelfService, "the actor would come to carry * on %s at %s", res, t)
					}
					if exempt {
						continue
					}
					if rb.wildcard(s, res) && !ra.wildcard(s, res) {
						refuse(authz.RuleNoSelfService, "the actor would no longer carry * on %s at %s", res, t)
					}
					for _, p := range lost {
						refuse(authz.RuleNoSelfService, "the actor would lose %s on %s at %s", p, res, t)
					}
					for _, n := range minus(assigns, assignsAfter) {
						refuse(authz.RuleNoSelfService, "the actor would no longer assign %s on %s at %s", n, res, t)
					}
					continue
				}
				// "the actor's own power decides": judged before the write,
				// now.
				power, _ := actorBefore.power(j.actor, res)
				// 1. "No escalation. A permission that a subject gains on a
				//    resource is one the actor holds there, or one carried
				//    by a role that a role the actor holds there lists by
				//    name in assignable_roles."
				for _, p := range gained {
					if !power[p] {
						refuse(authz.RuleNoEscalation, "%s would gain %s on %s at %s, which the actor neither holds there nor may assign", s, p, res, t)
					}
				}
				// 2. "No overreach. A permission that a subject other than
				//    the actor loses on a resource is one the actor holds
				//    there, or one carried by a role the actor may assign
				//    there by name." Losing is "no longer holding it at
				//    all", which the comparison of effective sets is.
				for _, p := range lost {
					if !power[p] {
						refuse(authz.RuleNoOverreach, "%s would lose %s on %s at %s, which the actor neither holds there nor may assign", s, p, res, t)
					}
				}
				// "* in a role means every permission", those a later
				// policy declares too, which no comparison of today's
				// permissions sees: coming to carry it, or no longer
				// carrying it, is bounded as a grant of a role carrying it
				// is, by an actor that carries it or lists by name a role
				// that does.
				if wb, wa := rb.wildcard(s, res), ra.wildcard(s, res); wb != wa && !actorBefore.wildcardPower(j.actor, res) {
					if wa {
						refuse(authz.RuleNoEscalation, "%s would come to carry * on %s at %s, which the actor neither carries there nor may assign", s, res, t)
					} else {
						refuse(authz.RuleNoOverreach, "%s would no longer carry * on %s at %s, which the actor neither carries there nor may assign", s, res, t)
					}
				}
				// A write that changes which definition of a role applies
				// there is "a grant to every holder": what the holders may
				// hand out is bounded by the actor's own as a definition's
				// permissions and assignable_roles are. So is what an
				// unblock gives back: "only what rule 1 allows".
				if j.handsOut {
					powerBefore, assigns := rb.power(s, res)
					powerAfter, assignsAfter := ra.power(s, res)
					for _, p := range minus(powerAfter, powerBefore) {
						if !power[p] {
							refuse(authz.RuleNoEscalation, "%s would become able to give %s on %s at %s, which the actor neither holds there nor may assign", s, p, res, t)
						}
					}
					for _, n := range minus(assignsAfter, assigns) {
						if n != j.admits && !j.mayLetAssign(n, res) {
							refuse(authz.RuleNoEscalation, "%s would become able to assign %s on %s at %s, which the actor may not assign there", s, n, res, t)
						}
					}
					wildBefore, wildAfter := rb.wildcardPower(s, res), ra.wildcardPower(s, res)
					if wildAfter && !wildBefore && !actorBefore.wildcardPower(j.actor, res) {
						refuse(authz.RuleNoEscalation, "%s would become able to give * on %s at %s, which the actor neither carries there nor may assign", s, res, t)
					}
					// "you take away only what you could give": what the
					// holders may no longer hand out, too, but on a
					// resource the write deletes, where nothing is left to
					// hand out.
					if j.deletes != nil && j.deletes.Name == res {
						continue
					}
					for _, p := range minus(powerBefore, powerAfter) {
						if !power[p] {
							refuse(authz.RuleNoOverreach, "%s would no longer be able to give %s on %s at %s, which the actor neither holds there nor may assign", s, p, res, t)
						}
					}
					if wildBefore && !wildAfter && !actorBefore.wildcardPower(j.actor, res) {
						refuse(authz.RuleNoOverreach, "%s would no longer be able to give * on %s at %s, which the actor neither carries there nor may assign", s, res, t)
					}
					for _, n := range minus(assigns, assignsAfter) {
						if !j.mayLetAssign(n, res) {
							refuse(authz.RuleNoOverreach, "%s would no longer be able to assign %s on %s at %s, which the actor may not assign there", s, n, res, t)
						}
					}
				}
			}
		}
	}
	return out
}

// ownedBy is s with only subject's grants and blocks.
func ownedBy(s authz.Snapshot, subject string) authz.Snapshot {
	s.Grants = slices.DeleteFunc(slices.Clone(s.Grants), func(g authz.Grant) bool { return g.Subject != subject })
	s.Blocks = slices.DeleteFunc(slices.Clone(s.Blocks), func(b authz.Block) bool { return b.Subject != subject })
	return s
}

// holds is Check's answer.
func (r *reference) holds(subject, permission, resource string) bool {
	return r.check(subject, permission, resource).Allowed
}

// definition is the role definition that applies at resource: "the
// nearest definition of that name on the way from that resource up to
// root".
func (r *reference) definition(role, resource string) (authz.Role, bool) {
	if !r.registered(resource) {
		return authz.Role{}, false
	}
	for _, at := range r.path(resource) {
		for _, d := range r.s.Roles {
			if d.Name == role && d.Scope == at {
				return d, true
			}
		}
	}
	return authz.Role{}, false
}

// carries is every declared permission a definition gives, with the
// tree's implication.
func (r *reference) carries(def authz.Role) []string {
	var out []string
	for _, p := range r.s.Permissions {
		if r.grants(def.Permissions, p.Name) {
			out = append(out, p.Name)
		}
	}
	return out
}

// heldRoles are the definitions, resolved at resource, of the roles subject
// holds there through unexpired grants on the way up to root: "expired
// grants give no power and a block takes the blocked powers away", so a
// block of everything on the way leaves none.
func (r *reference) heldRoles(subject, resource string) []authz.Role {
	path := r.path(resource)
	for _, at := range path {
		for _, b := range r.s.Blocks {
			if b.Subject == subject && b.Resource == at && len(b.Permissions) == 0 && r.unexpired(b.Expires) {
				return nil
			}
		}
	}
	var out []authz.Role
	for _, at := range path {
		for _, g := range r.s.Grants {
			if g.Subject == subject && g.Resource == at && r.unexpired(g.Expires) {
				if d, ok := r.definition(g.Role, resource); ok {
					out = append(out, d)
				}
			}
		}
	}
	return out
}

// wildcard reports whether a role subject holds at resource carries *.
func (r *reference) wildcard(subject, resource string) bool {
	return slices.ContainsFunc(r.heldRoles(subject, resource), func(d authz.Role) bool { return slices.Contains(d.Permissions, authz.Wildcard) })
}

// wildcardPower reports whether subject may give * at resource: a role it
// holds there carries it, or lists by name a role that carries it there.
func (r *reference) wildcardPower(subject, resource string) bool {
	for _, d := range r.heldRoles(subject, resource) {
		if slices.Contains(d.Permissions, authz.Wildcard) {
			return true
		}
		for _, name := range d.AssignableRoles {
			if def, ok := r.definition(name, resource); ok && name != authz.Wildcard && slices.Contains(def.Permissions, authz.Wildcard) {
				return true
			}
		}
	}
	return false
}

// power is what subject may hand out at resource, as rules 1 and 2 bound
// it: the permissions it holds there and those "carried by a role that a
// role the actor holds there lists by name in assignable_roles"; and the
// names its roles list there.
func (r *reference) power(subject, resource string) (perms, assigns map[string]bool) {
	perms, assigns = set(r.permissions(subject, resource)), map[string]bool{}
	for _, d := range r.heldRoles(subject, resource) {
		for _, name := range d.AssignableRoles {
			assigns[name] = true
			if def, ok := r.definition(name, resource); ok && name != authz.Wildcard {
				for _, p := range r.carries(def) {
					perms[p] = true
				}
			}
		}
	}
	return perms, assigns
}

// under reports whether resource is ancestor or below it.
// admission is the rule for resources of typ nearest resource on its
// path, as the engine resolves it.
func (r *reference) admission(typ, resource string) (authz.Admission, bool) {
	for _, at := range r.path(resource) {
		for _, a := range r.s.Admissions {
			if a.ResourceType == typ && scopeOf(a) == at {
				return a, true
			}
		}
	}
	return authz.Admission{}, false
}

// scopeOf is where a is set, root when its scope is empty.
func scopeOf(a authz.Admission) string {
	if a.Scope == "" {
		return authz.RootName
	}
	return a.Scope
}

func (r *reference) under(resource, ancestor string) bool {
	return r.registered(resource) && slices.Contains(r.path(resource), ancestor)
}

// depth is how many levels below root resource is.
func (r *reference) depth(resource string) int { return len(r.path(resource)) - 1 }

// height is how many levels the subtree below resource has.
func (r *reference) height(resource string) int {
	h := 0
	for child, p := range r.parent {
		if p == resource {
			h = max(h, 1+r.height(child))
		}
	}
	return h
}

// used counts what a quota limits: the resources of its type strictly
// below its scope, registered by its subject if it names one.
func (r *reference) used(q authz.Quota) int {
	n := 0
	for _, res := range r.s.Resources {
		if res.Name != q.Scope && authz.TypeOf(res.Name) == q.ResourceType && r.under(res.Name, q.Scope) &&
			(q.Subject == "" || res.Creator == q.Subject) {
			n++
		}
	}
	return n
}

// clone copies a snapshot's lists, so that a write planned on it leaves the
// original alone; entities are replaced, never edited in place.
func clone(s authz.Snapshot) authz.Snapshot {
	s.Permissions = slices.Clone(s.Permissions)
	s.Resources = slices.Clone(s.Resources)
	s.Roles = slices.Clone(s.Roles)
	s.Grants = slices.Clone(s.Grants)
	s.Blocks = slices.Clone(s.Blocks)
	s.Quotas = slices.Clone(s.Quotas)
	s.CreatorRoles = slices.Clone(s.CreatorRoles)
	s.DefaultQuotas = slices.Clone(s.DefaultQuotas)
	return s
}

// normalized is a role as the engine stores it: its lists sorted, without
// repeats, empty as nil.
func normalized(r authz.Role) authz.Role {
	norm := func(list []string) []string {
		if len(list) == 0 {
			return nil
		}
		return slices.Compact(slices.Sorted(slices.Values(list)))
	}
	r.Permissions, r.AssignableRoles, r.BindableOn = norm(r.Permissions), norm(r.AssignableRoles), norm(r.BindableOn)
	return r
}

func sameDefinition(a, b authz.Role) bool {
	a, b = normalized(a), normalized(b)
	return a.Name == b.Name && a.Scope == b.Scope && a.MaxHolders == b.MaxHolders && a.Description == b.Description &&
		slices.Equal(a.Permissions, b.Permissions) && slices.Equal(a.AssignableRoles, b.AssignableRoles) && slices.Equal(a.BindableOn, b.BindableOn)
}

func sameBinding(a, b authz.Grant) bool {
	return a.Subject == b.Subject && a.Role == b.Role && a.Resource == b.Resource
}

func sameBlockKey(a, b authz.Block) bool {
	return a.Subject == b.Subject && a.Resource == b.Resource && a.ID == b.ID
}

func sameQuotaKey(a, b authz.Quota) bool {
	return a.Scope == b.Scope && a.ResourceType == b.ResourceType && a.Subject == b.Subject
}

func set(list []string) map[string]bool {
	out := make(map[string]bool, len(list))
	for _, s := range list {
		out[s] = true
	}
	return out
}

// minus is a's members that b lacks, sorted.
func minus(a, b map[string]bool) []string {
	var out []string
	for s := range a {
		if !b[s] {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// describeSnapshot prints a state one entity a line, sorted, with expiries
// relative to now: for failure messages, and to compare two states.
func describeSnapshot(s authz.Snapshot, now time.Time) []string {
	when := func(t time.Time) string {
		switch {
		case t.IsZero():
			return ""
		case t.After(now):
			return fmt.Sprintf(" (expires in %s, at %d)", t.Sub(now).Round(time.Minute), t.UnixNano())
		default:
			return fmt.Sprintf(" (expired %s ago, at %d)", now.Sub(t).Round(time.Minute), t.UnixNano())
		}
	}
	var out []string
	for _, p := range s.Permissions {
		out = append(out, fmt.Sprintf("permission %s < %v", p.Name, p.Parents))
	}
	for _, r := range s.Resources {
		out = append(out, fmt.Sprintf("resource %s under %s by %q", r.Name, r.Parent, r.Creator))
	}
	for _, r := range s.Roles {
		r = normalized(r)
		out = append(out, fmt.Sprintf("role %s at %s = %v, assigns %v, bindable on %v, max %d", r.Name, r.Scope, r.Permissions, r.AssignableRoles, r.BindableOn, r.MaxHolders))
	}
	for _, g := range s.Grants {
		out = append(out, fmt.Sprintf("grant %s to %s on %s%s", g.Role, g.Subject, g.Resource, when(g.Expires)))
	}
	for _, b := range s.Blocks {
		out = append(out, fmt.Sprintf("block %s of %s on %s of %v%s", b.ID, b.Subject, b.Resource, b.Permissions, when(b.Expires)))
	}
	for _, q := range s.Quotas {
		out = append(out, fmt.Sprintf("quota %s at %s for %q: %d", q.ResourceType, q.Scope, q.Subject, q.Limit))
	}
	for _, c := range s.CreatorRoles {
		out = append(out, fmt.Sprintf("creator role of %s: %s", c.ResourceType, c.Role))
	}
	for _, d := range s.DefaultQuotas {
		out = append(out, fmt.Sprintf("default quota of %s for %s: %d", d.ScopeType, d.ResourceType, d.Limit))
	}
	slices.Sort(out)
	return out
}

// diffSnapshots says what one state has that the other lacks, and the
// other way round; "" when they are the same.
func diffSnapshots(got, want authz.Snapshot, now time.Time) string {
	g, w := set(describeSnapshot(got, now)), set(describeSnapshot(want, now))
	var b strings.Builder
	for _, line := range minus(g, w) {
		fmt.Fprintf(&b, "  + %s\n", line)
	}
	for _, line := range minus(w, g) {
		fmt.Fprintf(&b, "  - %s\n", line)
	}
	return b.String()
}

// TestReferenceJudge checks the reference judge itself on a world small
// enough to work out by hand, with DESIGN.md's own examples, so that the
// property test does not hold the engine to a judge that is wrong the same
// way.
func TestReferenceJudge(t *testing.T) {
	now := time.Now()
	s := authz.Snapshot{
		Permissions: []authz.Permission{
			{Name: "call.admin"},
			{Name: "call.join"},
			{Name: "call.moderate"},
			{Name: "call.record"},
			{Name: "call.speak"},
			{Name: "call.mute"},
			{Name: "usher.blocks.write", Parents: []string{"call.moderate"}},
			{Name: "usher.blocks.write.call.speak", Parents: []string{"call.mute"}},
			{Name: "usher.grants.write", Parents: []string{"call.moderate"}},
			{Name: "usher.resources.create.call", Parents: []string{"call.admin"}},
			{Name: "usher.resources.delete", Parents: []string{"call.admin"}},
			{Name: "usher.resources.move", Parents: []string{"call.moderate"}},
			{Name: "usher.roles.write", Parents: []string{"call.admin"}},
		},
		Resources: []authz.Resource{
			{Name: "account:a"},
			{Name: "account:b"},
			{Name: "call:c1", Parent: "account:a"},
			{Name: "call:c2", Parent: "account:a"},
		},
		Roles: []authz.Role{
			{Name: "host", Scope: "root", Permissions: []string{"call.admin", "call.join", "call.moderate", "call.mute", "call.speak"}, AssignableRoles: []string{"guest", "moderator", "speaker"}},
			{Name: "moderator", Scope: "root", Permissions: []string{"call.join", "call.moderate", "call.speak"}, AssignableRoles: []string{"guest"}},
			{Name: "guest", Scope: "root", Permissions: []string{"call.join"}},
			{Name: "speaker", Scope: "root", Permissions: []string{"call.join", "call.speak"}},
			{Name: "recorder", Scope: "root", Permissions: []string{"call.join", "call.record"}},
			{Name: "muter", Scope: "root", Permissions: []string{"call.join", "call.mute", "call.speak"}},
		},
		Grants: []authz.Grant{
			{Subject: "user:owner", Role: "host", Resource: "account:a"},
			{Subject: "user:host", Role: "host", Resource: "call:c1"},
			{Subject: "user:mod", Role: "moderator", Resource: "call:c1"},
			{Subject: "user:mod", Role: "host", Resource: "account:b"},
			{Subject: "user:g", Role: "guest", Resource: "call:c1"},
			{Subject: "user:rec", Role: "recorder", Resource: "call:c1"},
			{Subject: "user:rec", Role: "recorder", Resource: "account:a"},
			{Subject: "user:mu", Role: "muter", Resource: "call:c1"},
		},
		Blocks: []authz.Block{
			{Subject: "user:owner", Resource: "call:c2", ID: "b1", Permissions: []string{"call.speak"}},
			{Subject: "user:g", Resource: "call:c1", ID: "b1"},
			{Subject: "user:g", Resource: "call:c1", ID: "b2", Permissions: []string{"call.join"}},
			{Subject: "user:rec", Resource: "call:c1", ID: "b3", Permissions: []string{"call.speak"}},
		},
		CreatorRoles:  []authz.CreatorRole{{ResourceType: "call", Role: "host"}},
		DefaultQuotas: []authz.DefaultQuota{{ScopeType: "call", ResourceType: "room", Limit: 2}},
	}
	const (
		escalation   = "PERMISSION_DENIED " + authz.RuleNoEscalation
		overreach    = "PERMISSION_DENIED " + authz.RuleNoOverreach
		self         = "PERMISSION_DENIED " + authz.RuleNoSelfService
		missing      = "PERMISSION_DENIED " + refMissing
		unassigned   = "PERMISSION_DENIED " + refNotAssignable
		precondition = "FAILED_PRECONDITION"
	)
	cases := []struct {
		name  string
		actor string
		write refWrite
		want  []string                  // the rules broken, each once
		after func(authz.Snapshot) bool // what the state after must show, when allowed
	}{
		{"a moderator cannot ban the host who appointed him", "user:mod",
			refWrite{Op: "Block", Block: authz.Block{Subject: "user:host", Resource: "call:c1", ID: "b9"}}, []string{overreach}, nil},
		{"muting their audio, which the actor holds, does not", "user:mod",
			refWrite{Op: "Block", Block: authz.Block{Subject: "user:host", Resource: "call:c1", ID: "b9", Permissions: []string{"call.speak"}}}, nil, nil},
		{"an unblock gives back only what rule 1 allows: all the blocks of a guest the moderator may lift", "user:mod",
			refWrite{Op: "Unblock", Block: authz.Block{Subject: "user:g", Resource: "call:c1"}}, nil,
			func(a authz.Snapshot) bool {
				return !slices.ContainsFunc(a.Blocks, func(b authz.Block) bool { return b.Subject == "user:g" })
			}},
		{"usher.blocks.write narrowed to a permission mutes it", "user:mu",
			refWrite{Op: "Block", Block: authz.Block{Subject: "user:g", Resource: "call:c1", ID: "b9", Permissions: []string{"call.speak"}}}, nil, nil},
		{"usher.blocks.write narrowed to a permission never blocks everything", "user:mu",
			refWrite{Op: "Block", Block: authz.Block{Subject: "user:g", Resource: "call:c1", ID: "b9"}}, []string{missing}, nil},
		{"nor another permission", "user:mu",
			refWrite{Op: "Block", Block: authz.Block{Subject: "user:g", Resource: "call:c1", ID: "b9", Permissions: []string{"call.join", "call.speak"}}}, []string{missing}, nil},
		{"nor, by its ID, turns a ban into a mute", "user:mu",
			refWrite{Op: "Block", Block: authz.Block{Subject: "user:g", Resource: "call:c1", ID: "b1", Permissions: []string{"call.speak"}}}, []string{missing}, nil},
		{"it lifts the mutes it may lift", "user:mu",
			refWrite{Op: "Unblock", Block: authz.Block{Subject: "user:rec", Resource: "call:c1"}}, nil,
			func(a authz.Snapshot) bool {
				return !slices.ContainsFunc(a.Blocks, func(b authz.Block) bool { return b.Subject == "user:rec" })
			}},
		{"and is refused when there is none", "user:mu",
			refWrite{Op: "Unblock", Block: authz.Block{Subject: "user:g", Resource: "call:c1"}}, []string{missing}, nil},
		{"or the one named is not one", "user:mu",
			refWrite{Op: "Unblock", Block: authz.Block{Subject: "user:g", Resource: "call:c1", ID: "b2"}}, []string{missing}, nil},
		{"lifting one of two blocks gives nothing back", "user:owner",
			refWrite{Op: "Unblock", Block: authz.Block{Subject: "user:g", Resource: "call:c1", ID: "b2"}}, nil, nil},
		{"it is not possible to revoke your own permissions", "user:host",
			refWrite{Op: "Revoke", Grant: authz.Grant{Subject: "user:host", Role: "host", Resource: "call:c1"}}, []string{self, unassigned}, nil},
		{"the actor never unblocks itself", "user:owner",
			refWrite{Op: "Unblock", Block: authz.Block{Subject: "user:owner", Resource: "call:c2", ID: "b1"}}, []string{self}, nil},
		{"Revoke needs what granting that binding would need now: a moderator may not remove a speaker", "user:mod",
			refWrite{Op: "Revoke", Grant: authz.Grant{Subject: "user:rec", Role: "recorder", Resource: "call:c1"}}, []string{unassigned}, nil},
		{"whoever registers such a resource as an actor gets that role on it: the one exception", "user:owner",
			refWrite{Op: "PutResource", Resource: authz.Resource{Name: "call:c3", Parent: "account:a"}}, nil,
			func(a authz.Snapshot) bool {
				return slices.ContainsFunc(a.Grants, func(g authz.Grant) bool {
					return g == authz.Grant{Subject: "user:owner", Role: "host", Resource: "call:c3"}
				}) && slices.Contains(a.Quotas, authz.Quota{Scope: "call:c3", ResourceType: "room", Limit: 2}) &&
					slices.Contains(a.Resources, authz.Resource{Name: "call:c3", Parent: "account:a", Creator: "user:owner"})
			}},
		{"usher.resources.create at the parent registers a child", "user:mod",
			refWrite{Op: "PutResource", Resource: authz.Resource{Name: "call:c3", Parent: "account:a"}}, []string{missing}, nil},
		{"an event's Owner deletes the event: it removes every binding and block on it, and what others lose there the owner holds", "user:host",
			refWrite{Op: "DeleteResource", Resource: authz.Resource{Name: "call:c1"}}, nil,
			func(a authz.Snapshot) bool {
				return !slices.ContainsFunc(a.Grants, func(g authz.Grant) bool { return g.Resource == "call:c1" }) &&
					!slices.ContainsFunc(a.Blocks, func(b authz.Block) bool { return b.Resource == "call:c1" }) &&
					!slices.ContainsFunc(a.Resources, func(r authz.Resource) bool { return r.Name == "call:c1" })
			}},
		{"losing means no longer holding it at all: the recorder keeps call.record from the account", "user:owner",
			refWrite{Op: "DeleteResource", Resource: authz.Resource{Name: "call:c1"}}, nil, nil},
		{"one may not delete a resource to shed one's own block", "user:owner",
			refWrite{Op: "DeleteResource", Resource: authz.Resource{Name: "call:c2"}}, []string{self}, nil},
		{"moving another's subtree under one's own: the mover gains its power there, and takes from the owner what it could not", "user:mod",
			refWrite{Op: "PutResource", Resource: authz.Resource{Name: "call:c1", Parent: "account:b"}}, []string{overreach, self}, nil},
		{"never under itself", "user:owner",
			refWrite{Op: "PutResource", Resource: authz.Resource{Name: "account:a", Parent: "call:c1"}}, []string{precondition, missing}, nil},
		{"by redefining a role it holds", "user:owner",
			refWrite{Op: "PutRole", Role: authz.Role{Name: "host", Scope: "call:c2", Permissions: []string{"call.join"}}}, []string{self}, nil},
		{"a definition is a grant to every holder of that name below the scope: bounded by the actor's own; and the owner, whose role lists guest, would become able to give call.record through it", "user:owner",
			refWrite{Op: "PutRole", Role: authz.Role{Name: "guest", Scope: "call:c2", Permissions: []string{"call.record"}}}, []string{escalation, self}, nil},
		{"what it takes away from holders is bounded by rule 2", "user:owner",
			refWrite{Op: "PutRole", Role: authz.Role{Name: "recorder", Scope: "call:c1", Permissions: []string{"call.join"}}}, []string{overreach}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			after, verdicts := referenceJudge(s, c.actor, c.write, now)
			var got []string
			for _, v := range verdicts {
				got = append(got, strings.TrimSuffix(refVerdict{Code: v.Code, Rule: v.Rule}.String(), ": "))
			}
			got = slices.Compact(slices.Sorted(slices.Values(got)))
			if !slices.Equal(got, c.want) {
				t.Errorf("%s by %s breaks %q, want %q; verdicts:\n%v", c.write, c.actor, got, c.want, verdicts)
			}
			if c.after != nil && !c.after(after) {
				t.Errorf("%s by %s leaves:\n  %s", c.write, c.actor, strings.Join(describeSnapshot(after, now), "\n  "))
			}
		})
	}
}

// The reference refuses a registration or a move past MaxDepth as the
// engine does, RESOURCE_EXHAUSTED, so that a random write that reaches the
// depth is explained rather than taken for a refusal of another reason.
func TestReferenceJudgeRefusesPastMaxDepthAsTheEngineDoes(t *testing.T) {
	w := newWorld(t, streamPolicy())
	deepest := w.chain("", authz.MaxDepth)
	w.put("folder:b1", "")
	w.put("folder:b2", "folder:b1")
	for _, write := range []refWrite{
		{Op: "PutResource", Resource: authz.Resource{Name: "folder:too-deep", Parent: deepest}},
		{Op: "PutResource", Resource: authz.Resource{Name: "folder:b1", Parent: fmt.Sprintf("folder:a%d", authz.MaxDepth-1)}},
	} {
		_, verdicts := referenceJudge(load(w), "", write, w.clock.Now())
		err := run(w, "", write)
		if authz.CodeOf(err) != authz.ResourceExhausted || !explains(err, verdicts) {
			t.Errorf("%s: the engine refuses it %v; the reference's verdicts do not explain it: %v", write, err, verdicts)
		}
	}
}

// coversBlock reports whether b denies all that o denies, for at least as
// long: it lists no permission or every one o lists, and runs out no
// sooner.
func coversBlock(b, o authz.Block) bool {
	if expiresOrNever(b.Expires) < expiresOrNever(o.Expires) {
		return false
	}
	if len(b.Permissions) == 0 {
		return true
	}
	if len(o.Permissions) == 0 {
		return false
	}
	for _, p := range o.Permissions {
		if !slices.Contains(b.Permissions, p) {
			return false
		}
	}
	return true
}

// expiresOrNever is an expiry in Unix nanoseconds, the largest for none.
func expiresOrNever(t time.Time) int64 {
	if t.IsZero() {
		return math.MaxInt64
	}
	return t.UnixNano()
}
