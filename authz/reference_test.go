package authz_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// The reference evaluator answers Check and ListPermissions straight from
// DESIGN.md, over a plain Snapshot: no index, no bitsets, no interning, no
// caching. It is deliberately simple and slow, so that it can be read
// against the document line by line; the differential test holds the engine
// to it.
//
// It assumes what a backend's snapshot guarantees: at most one grant per
// (subject, role, resource), one block per (subject, resource) and one role
// definition per (scope, name).

// Reasons as DESIGN.md spells them; "INVALID_ARGUMENT" stands for the error
// an undeclared permission is.
const (
	refGranted         = "GRANTED"
	refBlocked         = "BLOCKED"
	refNoGrant         = "NO_GRANT"
	refUnknownResource = "UNKNOWN_RESOURCE"
	refInvalid         = "INVALID_ARGUMENT"
)

// reference is a snapshot seen at one instant, with the two lookups DESIGN.md
// speaks of: a resource's parent, and a permission's parents in the catalog.
type reference struct {
	s       authz.Snapshot
	now     time.Time
	parent  map[string]string   // resource -> its parent; root is absent
	parents map[string][]string // declared permission -> its parents
	paths   map[string][]string // resource -> path, as path computes it once
}

func newReference(s authz.Snapshot, now time.Time) *reference {
	r := &reference{s: s, now: now, parent: map[string]string{}, parents: map[string][]string{}, paths: map[string][]string{}}
	for _, res := range s.Resources {
		p := res.Parent
		if p == "" {
			p = authz.RootName
		}
		r.parent[res.Name] = p
	}
	for _, p := range s.Permissions {
		r.parents[p.Name] = p.Parents
	}
	return r
}

// referenceCheck is DESIGN.md's Check of (subject, permission, resource) in
// s at now. reason is one of the refXxx strings; role and scope are the
// deciding grant's (GRANTED), scope the deciding block's (BLOCKED).
func referenceCheck(s authz.Snapshot, now time.Time, subject, permission, resource string) refAnswer {
	return newReference(s, now).check(subject, permission, resource)
}

// refAnswer is the reference's answer to a check: allowed or not, the reason
// (one of the refXxx strings), the deciding grant's role and scope
// (GRANTED), or the deciding block's scope and ID (BLOCKED).
type refAnswer struct {
	Allowed                    bool
	Reason, Role, Scope, Block string
}

// referencePermissions is ListPermissions: "the subject's effective
// permission set there", i.e. every declared permission Check would allow,
// by name; nil for an unknown resource.
func referencePermissions(s authz.Snapshot, now time.Time, subject, resource string) []string {
	return newReference(s, now).permissions(subject, resource)
}

func (r *reference) check(subject, permission, resource string) refAnswer {
	// 1. "the permission must be declared, else INVALID_ARGUMENT; an unknown
	//    resource is not an error: the answer is deny with reason
	//    UNKNOWN_RESOURCE"
	if !r.declared(permission) {
		return refAnswer{Reason: refInvalid}
	}
	if !r.registered(resource) {
		return refAnswer{Reason: refUnknownResource}
	}
	path := r.path(resource)

	// 2. "walk from the resource up to root; if an unexpired block on the way
	//    covers the permission: deny, reason BLOCKED (with the block's scope
	//    and reason text)". A subject may carry several blocks on one
	//    resource; DESIGN.md says Check's reason names the deciding block
	//    but not which of several is "first": the engine takes the one with
	//    the lowest ID, and the reference mirrors that tie-break.
	for _, at := range path {
		decided := ""
		for _, b := range r.s.Blocks {
			if b.Subject == subject && b.Resource == at && r.unexpired(b.Expires) && r.covers(b, permission) {
				if decided == "" || b.ID < decided {
					decided = b.ID
				}
			}
		}
		if decided != "" {
			return refAnswer{Reason: refBlocked, Scope: at, Block: decided}
		}
	}

	// 3. "for each unexpired grant of the subject on the way, resolve its
	//    role at the checked resource and test the permission (with the
	//    tree's implication): first match allows, reason GRANTED with the
	//    role and the scope where it was granted"
	for _, at := range path {
		var here []authz.Grant
		for _, g := range r.s.Grants {
			if g.Subject == subject && g.Resource == at && r.unexpired(g.Expires) {
				here = append(here, g)
			}
		}
		// DESIGN.md does not say which of several matching grants on one
		// resource is "first"; the engine keeps each resource's grants
		// sorted by role name so that the answer is deterministic, and the
		// reference mirrors that tie-break.
		slices.SortFunc(here, func(a, b authz.Grant) int { return strings.Compare(a.Role, b.Role) })
		for _, g := range here {
			if perms, ok := r.resolve(g.Role, path); ok && r.grants(perms, permission) {
				return refAnswer{Allowed: true, Reason: refGranted, Role: g.Role, Scope: at}
			}
		}
	}

	// 4. "else deny, reason NO_GRANT"
	return refAnswer{Reason: refNoGrant}
}

func (r *reference) permissions(subject, resource string) []string {
	if !r.registered(resource) {
		return nil
	}
	var out []string
	for _, p := range r.s.Permissions {
		if r.check(subject, p.Name, resource).Allowed {
			out = append(out, p.Name)
		}
	}
	slices.Sort(out)
	return out
}

func (r *reference) declared(permission string) bool {
	_, ok := r.parents[permission]
	return ok
}

// registered: root is "the reserved resource", always there.
func (r *reference) registered(resource string) bool {
	_, ok := r.parent[resource]
	return ok || resource == authz.RootName
}

// path is resource, its parent, its parent's parent, ..., root.
func (r *reference) path(resource string) []string {
	if out, ok := r.paths[resource]; ok {
		return out
	}
	out := []string{resource}
	for at := resource; at != authz.RootName; {
		at = r.parent[at]
		out = append(out, at)
	}
	r.paths[resource] = out
	return out
}

// unexpired: "An expired grant counts as absent"; the zero time is never.
func (r *reference) unexpired(expires time.Time) bool {
	return expires.IsZero() || expires.After(r.now)
}

// covers: a block's permissions are "empty for all"; otherwise it denies
// what it lists "with everything they imply" (Engine.Block).
func (r *reference) covers(b authz.Block, permission string) bool {
	if len(b.Permissions) == 0 {
		return true
	}
	for _, held := range b.Permissions {
		if r.implies(held, permission) {
			return true
		}
	}
	return false
}

// resolve: "A role name is resolved at the resource being checked: the
// nearest definition of that name on the way from that resource up to root
// gives its permissions." path is the checked resource's path to root.
func (r *reference) resolve(role string, path []string) ([]string, bool) {
	for _, at := range path {
		for _, d := range r.s.Roles {
			if d.Name == role && d.Scope == at {
				return d.Permissions, true
			}
		}
	}
	return nil, false
}

// grants reports whether a role with perms holds permission: "`*` in a role
// means every permission", and "holding a permission implies all its
// descendants".
func (r *reference) grants(perms []string, permission string) bool {
	for _, held := range perms {
		if held == authz.Wildcard || r.implies(held, permission) {
			return true
		}
	}
	return false
}

// implies reports whether holding held implies permission: it is permission
// itself, or implies one of permission's parents.
func (r *reference) implies(held, permission string) bool {
	if held == permission {
		return true
	}
	for _, p := range r.parents[permission] {
		if r.implies(held, p) {
			return true
		}
	}
	return false
}

// TestReference checks the reference itself on a world small enough to
// work out by hand, so that the differential test does not hold the engine
// to a reference that is wrong the same way.
func TestReference(t *testing.T) {
	now := time.Now()
	s := authz.Snapshot{
		Permissions: []authz.Permission{
			{Name: "rooms.manage"},
			{Name: "rooms.create", Parents: []string{"rooms.manage"}},
			{Name: "rooms.list", Parents: []string{"rooms.manage"}},
			{Name: "usher.blocks.write", Parents: []string{"rooms.create", "users.manage"}},
			{Name: "users.manage"},
		},
		Resources: []authz.Resource{
			{Name: "account:acme"},
			{Name: "room:lobby", Parent: "account:acme"},
			{Name: "room:stage", Parent: "account:acme"},
		},
		Roles: []authz.Role{
			{Name: "admin", Scope: "root", Permissions: []string{"*"}},
			{Name: "host", Scope: "root", Permissions: []string{"rooms.manage"}},
			{Name: "host", Scope: "room:stage", Permissions: []string{"rooms.list"}},
			{Name: "lister", Scope: "root", Permissions: []string{"rooms.list"}},
		},
		Grants: []authz.Grant{
			{Subject: "user:ann", Role: "host", Resource: "account:acme"},
			{Subject: "user:ann", Role: "lister", Resource: "account:acme"},
			{Subject: "user:bob", Role: "admin", Resource: "root", Expires: now.Add(-time.Minute)},
			{Subject: "user:bob", Role: "lister", Resource: "room:lobby", Expires: now.Add(time.Hour)},
			{Subject: "user:cat", Role: "admin", Resource: "root"},
		},
		Blocks: []authz.Block{
			{Subject: "user:cat", Resource: "room:lobby", ID: "b2", Permissions: []string{"rooms.create"}, Reason: "spam"},
			{Subject: "user:cat", Resource: "room:lobby", ID: "b1", Permissions: []string{"rooms.create", "rooms.list"}, Reason: "noisy", Expires: now.Add(-time.Minute)},
			{Subject: "user:cat", Resource: "room:stage", ID: "b1", Expires: now.Add(-time.Minute)},
		},
	}
	type answer = refAnswer
	cases := []struct {
		name                          string
		subject, permission, resource string
		want                          answer
	}{
		{"an undeclared permission is INVALID_ARGUMENT", "user:ann", "rooms.delete", "room:lobby", answer{false, refInvalid, "", "", ""}},
		{"an unknown resource is UNKNOWN_RESOURCE", "user:ann", "rooms.list", "room:attic", answer{false, refUnknownResource, "", "", ""}},
		{"a grant applies below its resource, through implication", "user:ann", "usher.blocks.write", "room:lobby", answer{true, refGranted, "host", "account:acme", ""}},
		{"of two matching grants on one resource the first by role name decides", "user:ann", "rooms.list", "room:lobby", answer{true, refGranted, "host", "account:acme", ""}},
		{"a role is resolved at the checked resource", "user:ann", "rooms.create", "room:stage", answer{false, refNoGrant, "", "", ""}},
		{"another grant still matches where the nearest definition is narrower", "user:ann", "rooms.list", "room:stage", answer{true, refGranted, "host", "account:acme", ""}},
		{"an expired grant counts as absent", "user:bob", "users.manage", "room:lobby", answer{false, refNoGrant, "", "", ""}},
		{"an unexpired grant counts", "user:bob", "rooms.list", "room:lobby", answer{true, refGranted, "lister", "room:lobby", ""}},
		{"a block covers what its permissions imply", "user:cat", "usher.blocks.write", "room:lobby", answer{false, refBlocked, "", "room:lobby", "b2"}},
		{"a block does not cover what it does not imply", "user:cat", "rooms.list", "room:lobby", answer{true, refGranted, "admin", "root", ""}},
		{"an expired block counts as absent", "user:cat", "rooms.create", "room:stage", answer{true, refGranted, "admin", "root", ""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := referenceCheck(s, now, c.subject, c.permission, c.resource); got != c.want {
				t.Errorf("referenceCheck(%s, %s, %s) = %+v, want %+v", c.subject, c.permission, c.resource, got, c.want)
			}
		})
	}
	lists := []struct {
		subject, resource string
		want              []string
	}{
		{"user:ann", "room:stage", []string{"rooms.list"}},
		{"user:ann", "room:lobby", []string{"rooms.create", "rooms.list", "rooms.manage", "usher.blocks.write"}},
		{"user:cat", "room:lobby", []string{"rooms.list", "rooms.manage", "users.manage"}},
		{"user:bob", "account:acme", nil},
		{"user:ann", "room:attic", nil},
	}
	for _, l := range lists {
		if got := referencePermissions(s, now, l.subject, l.resource); !slices.Equal(got, l.want) {
			t.Errorf("referencePermissions(%s, %s) = %v, want %v", l.subject, l.resource, got, l.want)
		}
	}
}
