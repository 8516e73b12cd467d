package authz_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/memory"
)

// Quoted rules: DESIGN.md's "Delegation: who may change what", and the seeds
// that it serves.
const (
	ruleBind         = "some role the actor holds at s (inherited counts) lists R in assignable_roles (like Kubernetes' bind: no further test)"
	ruleNoEscalate   = "lists * and R's permissions at s are a subset of the actor's effective permissions at s (no escalation: \"only permissions that the user has can be granted\")"
	ruleExpired      = "expired grants give no power"
	ruleBlocked      = "a block takes the blocked powers away"
	vancastOwner     = "The Owner of an event can add new Collaborators to help him manage the event"
	vancastManager   = "A Manager can add new collaborators with any role except Owner"
	vancastProd      = "A Producer can add only new Producer collaborators"
	vancastMod       = "Moderator | Can Only: - Access de Q&A moderators console"
	alfaOnlyAdmins   = "Only users with the Administrate users permission can grant or revoke permissions for other users"
	alfaOnlyHeld     = "Only permissions that the user has can be granted to other users"
	alfaNotOwn       = "It is not possible to revoke your own permissions"
	alfaSettings     = "in order to grant or revoke the Manage company settings permission, you must have this permission yourself. The Administrate users permission alone is not sufficient"
	ruleRevoke       = "Revoke: allowed when the actor could grant that binding now"
	ruleNoEscalation = "No escalation"
)

// vancastWorld is vancastPolicy's world with one holder of each event role on
// event:launch, and a workspace Owner and Producer on its workspace.
func vancastWorld(t *testing.T) *world {
	w := newWorld(t, vancastPolicy())
	for _, r := range []string{"owner", "manager", "producer", "moderator"} {
		w.grant("user:"+r, "event."+r, "event:launch")
	}
	w.grant("user:ws-owner", "workspace.owner", "workspace:vancast-live")
	w.grant("user:ws-admin", "workspace.administrator", "workspace:vancast-live")
	w.grant("user:ws-producer", "workspace.producer", "workspace:vancast-live")
	return w
}

// alfaviewWorld is alfaviewUsersPolicy's world: user:owner holds Manage
// company settings, user:admin Administrate users, user:roomie Create a
// room and Administrate rooms, user:bob List all users and Manage company
// settings, all at company:alfa.
func alfaviewWorld(t *testing.T) *world {
	w := newWorld(t, alfaviewUsersPolicy())
	w.grant("user:owner", "manage-company-settings", "company:alfa")
	w.grant("user:admin", "administrate-users", "company:alfa")
	w.grant("user:roomie", "create-a-room", "company:alfa")
	w.grant("user:roomie", "administrate-rooms", "company:alfa")
	w.grant("user:bob", "list-all-users", "company:alfa")
	w.grant("user:bob", "manage-company-settings", "company:alfa")
	return w
}

// delegation is one delegated write: actor does it on world's state after
// setup; allowed says whether the rule lets it through, and a refusal must
// name mention (besides the actor).
type delegation struct {
	name     string
	world    func(*testing.T) *world
	setup    func(w *world)
	actor    string
	grant    authz.Grant
	allowed  bool
	mentions []string
}

// grantCases are Grant's rule, by VancastVideo's and alfaview's words.
func grantCases() []delegation {
	var cases []delegation
	add := func(name string, world func(*testing.T) *world, actor, role, resource string, allowed bool) {
		cases = append(cases, delegation{name: name, world: world, actor: actor,
			grant: authz.Grant{Subject: "user:new", Role: role, Resource: resource}, allowed: allowed})
	}
	// VancastVideo's event level, every role by every role.
	matrix := []struct {
		rule   string
		actor  string
		allows []string
	}{
		{vancastOwner, "user:owner", vancastEventRoles},
		{vancastManager, "user:manager", []string{"event.manager", "event.moderator", "event.producer"}},
		{vancastProd, "user:producer", []string{"event.producer"}},
		{vancastMod, "user:moderator", nil},
	}
	for _, m := range matrix {
		for _, role := range vancastEventRoles {
			allowed := slices.Contains(m.allows, role)
			verb := " may not add "
			if allowed {
				verb = " adds "
			}
			add(m.rule+": "+m.actor+verb+role, vancastWorld, m.actor, role, "event:launch", allowed)
		}
	}
	add(ruleBind+": a workspace Owner adds an event Producer to an event of its workspace", vancastWorld, "user:ws-owner", "event.producer", "event:launch", true)
	add(ruleBind+": a workspace Producer's role lists nothing, so it adds no event collaborator", vancastWorld, "user:ws-producer", "event.producer", "event:launch", false)
	add(ruleBind+": a workspace Administrator may add a workspace Producer", vancastWorld, "user:ws-admin", "workspace.producer", "workspace:vancast-live", true)
	add("Administrator | All permissions over the Workspace except: - Add new Administrators to the Workspace", vancastWorld, "user:ws-admin", "workspace.administrator", "workspace:vancast-live", false)
	add(ruleBind+": an event role held on one event gives no power on another", func(t *testing.T) *world {
		w := vancastWorld(t)
		w.put("event:gala", "workspace:vancast-live")
		return w
	}, "user:manager", "event.producer", "event:gala", false)
	add(ruleBind+": an actor with no grants at all", vancastWorld, "user:stranger", "event.moderator", "event:launch", false)

	// alfaview: "*" and the subset test.
	add(alfaOnlyHeld+": Administrate users grants List all users, which it implies", alfaviewWorld, "user:admin", "list-all-users", "company:alfa", true)
	add(alfaOnlyHeld+": Administrate users grants Administrate users", alfaviewWorld, "user:admin", "administrate-users", "company:alfa", true)
	add(alfaOnlyHeld+": Administrate users may not grant Show all usernames, which it lacks", alfaviewWorld, "user:admin", "show-all-usernames", "company:alfa", false)
	add(alfaOnlyHeld+": Administrate users may not grant Create a room, which it lacks", alfaviewWorld, "user:admin", "create-a-room", "company:alfa", false)
	add(alfaSettings+" (grant, by Administrate users)", alfaviewWorld, "user:admin", "manage-company-settings", "company:alfa", false)
	add(alfaSettings+" (grant, by one who has it)", alfaviewWorld, "user:owner", "manage-company-settings", "company:alfa", true)
	add(alfaOnlyHeld+": Manage company settings implies, so grants, Create a room", alfaviewWorld, "user:owner", "create-a-room", "company:alfa", true)
	add(alfaOnlyAdmins+": Create a room may not grant Create a room", alfaviewWorld, "user:roomie", "create-a-room", "company:alfa", false)
	add(alfaOnlyAdmins+": Administrate rooms may not grant List all rooms", alfaviewWorld, "user:roomie", "list-all-rooms", "company:alfa", false)
	add(ruleNoEscalate+" (inherited counts: granted at the company, granting on a room)", alfaviewWorld, "user:admin", "list-all-users", "room:alfa-lobby", true)

	// The mentions of refusals, and the cases whose state needs more.
	for i := range cases {
		c := &cases[i]
		c.mentions = []string{c.grant.Role, c.grant.Resource}
	}
	more := []delegation{
		{name: ruleExpired + ": a Manager whose grant has expired adds no one", world: vancastWorld,
			setup: func(w *world) {
				w.store(authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:lapsed", Role: "event.manager", Resource: "event:launch", Expires: time.Now().Add(-time.Minute)}})
			},
			actor: "user:lapsed", grant: authz.Grant{Subject: "user:new", Role: "event.producer", Resource: "event:launch"}},
		{name: ruleExpired + ": Administrate users that has expired grants nothing", world: alfaviewWorld,
			setup: func(w *world) {
				w.store(authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:lapsed", Role: "administrate-users", Resource: "company:alfa", Expires: time.Now().Add(-time.Minute)}})
			},
			actor: "user:lapsed", grant: authz.Grant{Subject: "user:new", Role: "list-all-users", Resource: "company:alfa"}},
		{name: ruleExpired + ": a grant with an expiry still ahead gives power", world: vancastWorld,
			setup: func(w *world) { w.grantUntil("user:temp", "event.manager", "event:launch", time.Now().Add(time.Hour)) },
			actor: "user:temp", grant: authz.Grant{Subject: "user:new", Role: "event.producer", Resource: "event:launch"}, allowed: true},
		{name: ruleBlocked + ": a block of everything above the event removes a Manager's power to add", world: vancastWorld,
			setup: func(w *world) { w.block(authz.Block{Subject: "user:manager", Resource: "workspace:vancast-live"}) },
			actor: "user:manager", grant: authz.Grant{Subject: "user:new", Role: "event.moderator", Resource: "event:launch"}},
		{name: ruleBlocked + ": a block of everything removes the power of \"*\" too", world: alfaviewWorld,
			setup: func(w *world) { w.block(authz.Block{Subject: "user:admin", Resource: "company:alfa"}) },
			actor: "user:admin", grant: authz.Grant{Subject: "user:new", Role: "list-all-users", Resource: "company:alfa"}},
		{name: ruleBlocked + ": a block of everything on a room removes the power there", world: alfaviewWorld,
			setup: func(w *world) { w.block(authz.Block{Subject: "user:admin", Resource: "room:alfa-lobby"}) },
			actor: "user:admin", grant: authz.Grant{Subject: "user:new", Role: "list-all-users", Resource: "room:alfa-lobby"}},
		{name: ruleBlocked + ": a block on a room leaves the power on the company where the grant does not reach the room", world: alfaviewWorld,
			setup: func(w *world) {
				w.put("room:alfa-other", "company:alfa")
				w.block(authz.Block{Subject: "user:admin", Resource: "room:alfa-lobby"})
			},
			actor: "user:admin", grant: authz.Grant{Subject: "user:new", Role: "list-all-users", Resource: "room:alfa-other"}, allowed: true},
		{name: ruleNoEscalation + ": a permission that a subject gains on a resource is one the actor holds there, so an actor blocked in a room may not grant above it what would reach the room", world: alfaviewWorld,
			setup: func(w *world) { w.block(authz.Block{Subject: "user:admin", Resource: "room:alfa-lobby"}) },
			actor: "user:admin", grant: authz.Grant{Subject: "user:new", Role: "list-all-users", Resource: "company:alfa"}, mentions: []string{"users.list", "room:alfa-lobby"}},
		{name: ruleBlocked + ": a block that has expired takes nothing away", world: alfaviewWorld,
			setup: func(w *world) {
				w.store(authz.Change{Op: authz.OpPutBlock, Block: &authz.Block{Subject: "user:admin", Resource: "company:alfa", Expires: time.Now().Add(-time.Minute)}})
			},
			actor: "user:admin", grant: authz.Grant{Subject: "user:new", Role: "list-all-users", Resource: "company:alfa"}, allowed: true},
		{name: ruleBlocked + ": a block of Create a room takes it out of the subset test", world: alfaviewWorld,
			setup: func(w *world) {
				w.grant("user:admin", "create-a-room", "company:alfa")
				w.block(authz.Block{Subject: "user:admin", Resource: "company:alfa", Permissions: []string{"rooms.create"}})
			},
			actor: "user:admin", grant: authz.Grant{Subject: "user:new", Role: "create-a-room", Resource: "company:alfa"}, mentions: []string{"rooms.create"}},
		{name: ruleBlocked + ": a block of Create a room leaves the rest of the subset test", world: alfaviewWorld,
			setup: func(w *world) {
				w.grant("user:admin", "create-a-room", "company:alfa")
				w.block(authz.Block{Subject: "user:admin", Resource: "company:alfa", Permissions: []string{"rooms.create"}})
			},
			actor: "user:admin", grant: authz.Grant{Subject: "user:new", Role: "list-all-users", Resource: "company:alfa"}, allowed: true},
		{name: ruleBind + ": a partial block does not undo the listing, which needs no further test", world: vancastWorld,
			setup: func(w *world) {
				w.block(authz.Block{Subject: "user:manager", Resource: "event:launch", Permissions: []string{"event.qa.moderate"}})
			},
			actor: "user:manager", grant: authz.Grant{Subject: "user:new", Role: "event.moderator", Resource: "event:launch"}, allowed: true},
		{name: ruleNoEscalate + ": R's permissions at s, where a custom definition of R applies", world: alfaviewWorld,
			setup: func(w *world) {
				w.role(authz.Role{Name: "list-all-users", Scope: "room:alfa-lobby", Permissions: []string{"users.list", "rooms.list"}})
			},
			actor: "user:admin", grant: authz.Grant{Subject: "user:new", Role: "list-all-users", Resource: "room:alfa-lobby"}, mentions: []string{"rooms.list"}},
		{name: ruleNoEscalate + ": the actor's effective permissions at s count every role it holds", world: alfaviewWorld,
			setup: func(w *world) {
				w.grant("user:admin", "list-all-rooms", "company:alfa")
				w.role(authz.Role{Name: "room-helper", Scope: "company:alfa", Permissions: []string{"users.list", "rooms.list"}})
			},
			actor: "user:admin", grant: authz.Grant{Subject: "user:new", Role: "room-helper", Resource: "company:alfa"}, allowed: true},
	}
	for _, c := range more {
		c.mentions = append(c.mentions, c.grant.Role, c.grant.Resource)
		cases = append(cases, c)
	}
	return cases
}

func TestDelegatedGrant(t *testing.T) {
	for _, c := range grantCases() {
		t.Run(c.name, func(t *testing.T) {
			w := c.world(t)
			if c.setup != nil {
				c.setup(w)
			}
			grant := func() (authz.Revision, error) { return w.eng.Grant(w.ctx, as(c.actor), c.grant) }
			if !c.allowed {
				e := w.refuses(authz.PermissionDenied, "actor", c.actor, grant)
				mentions(t, e, c.mentions...)
				return
			}
			rev := w.idx.Revision()
			got, err := grant()
			if err != nil {
				t.Fatalf("Grant by %s: %v", c.actor, err)
			}
			if got != rev+1 {
				t.Errorf("Grant by %s answered revision %d, want %d", c.actor, got, rev+1)
			}
			gs, _, _, err := w.idx.ListGrants(authz.GrantFilter{Subject: c.grant.Subject, Resource: c.grant.Resource}, 0, "")
			if err != nil || len(gs) != 1 || gs[0].Role != c.grant.Role {
				t.Errorf("after Grant by %s, ListGrants = %v, %v", c.actor, gs, err)
			}
			if cs := w.be.committed(); cs[len(cs)-1].Actor != c.actor || cs[len(cs)-1].Caller != "svc:console" {
				t.Errorf("the change record names caller %q and actor %q", cs[len(cs)-1].Caller, cs[len(cs)-1].Actor)
			}
		})
	}
}

// TestDelegatedGrantMessages pins the two refusals' sentences: which rule
// refused, and what the actor lacks.
func TestDelegatedGrantMessages(t *testing.T) {
	t.Run("Every refusal says which rule refused it: not listed in assignable_roles", func(t *testing.T) {
		w := vancastWorld(t)
		e := w.refuses(authz.PermissionDenied, "actor", "user:manager", func() (authz.Revision, error) {
			return w.eng.Grant(w.ctx, as("user:manager"), authz.Grant{Subject: "user:new", Role: "event.owner", Resource: "event:launch"})
		})
		mentions(t, e, "user:manager", "event.owner", "event:launch")
		if e != nil && !strings.Contains(e.Reason, "assignable_roles") {
			t.Errorf("the refusal %q does not name assignable_roles", e.Reason)
		}
	})
	t.Run("Every refusal says which rule refused it: "+alfaOnlyHeld, func(t *testing.T) {
		w := alfaviewWorld(t)
		e := w.refuses(authz.PermissionDenied, "actor", "user:admin", func() (authz.Revision, error) {
			return w.eng.Grant(w.ctx, as("user:admin"), authz.Grant{Subject: "user:new", Role: "manage-company-settings", Resource: "company:alfa"})
		})
		mentions(t, e, "manage-company-settings", "company:alfa", "company.manage-settings")
		if e != nil && !strings.Contains(e.Reason, "only permissions the actor has can be granted") {
			t.Errorf("the refusal %q does not name the rule", e.Reason)
		}
	})
	t.Run("a role not visible at the scope is NOT_FOUND to an actor who may grant there, before the rest of the delegation test", func(t *testing.T) {
		w := vancastWorld(t)
		w.refuses(authz.NotFound, "role", "event.janitor", func() (authz.Revision, error) {
			return w.eng.Grant(w.ctx, as("user:owner"), authz.Grant{Subject: "user:new", Role: "event.janitor", Resource: "event:launch"})
		})
		w.refuses(authz.PermissionDenied, "actor", "user:stranger", func() (authz.Revision, error) {
			return w.eng.Grant(w.ctx, as("user:stranger"), authz.Grant{Subject: "user:new", Role: "event.janitor", Resource: "event:launch"})
		})
	})
	t.Run("granting again what is already granted is still refused to an actor without the power", func(t *testing.T) {
		w := vancastWorld(t)
		w.refuses(authz.PermissionDenied, "actor", "user:moderator", func() (authz.Revision, error) {
			return w.eng.Grant(w.ctx, as("user:moderator"), authz.Grant{Subject: "user:producer", Role: "event.producer", Resource: "event:launch"})
		})
	})
}

func TestVancastWorkspace(t *testing.T) {
	newEvent := authz.Resource{Name: "event:gala", Parent: "workspace:vancast-live"}
	t.Run("A Workspace Producer cannot create a new event", func(t *testing.T) {
		w := vancastWorld(t)
		e := w.refuses(authz.PermissionDenied, "actor", "user:ws-producer", func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, as("user:ws-producer"), newEvent)
		})
		mentions(t, e, "usher.resources.create.event", "workspace:vancast-live")
	})
	t.Run("A Workspace Producer could become an event owner when someone else, with the appropriate permission, creates the event and adds them as an event owner", func(t *testing.T) {
		w := vancastWorld(t)
		if _, err := w.eng.PutResource(w.ctx, as("user:ws-admin"), newEvent); err != nil {
			t.Fatalf("a workspace Administrator creates an event: %v", err)
		}
		if _, err := w.eng.Grant(w.ctx, as("user:ws-admin"), authz.Grant{Subject: "user:ws-producer", Role: "event.owner", Resource: "event:gala"}); err != nil {
			t.Fatalf("the event's creator, its Owner, adds the workspace Producer as an event owner: %v", err)
		}
		if d := w.check("user:ws-producer", "event.delete", "event:gala"); !d.Allowed || d.Role != "event.owner" {
			t.Errorf("the workspace Producer is not the event's owner: %+v", d)
		}
		// As an Owner now, they add collaborators of any role.
		if _, err := w.eng.Grant(w.ctx, as("user:ws-producer"), authz.Grant{Subject: "user:new", Role: "event.manager", Resource: "event:gala"}); err != nil {
			t.Errorf("the new event owner adds a Manager: %v", err)
		}
		// And still cannot create an event of their own.
		w.refuses(authz.PermissionDenied, "actor", "user:ws-producer", func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, as("user:ws-producer"), authz.Resource{Name: "event:own", Parent: "workspace:vancast-live"})
		})
	})
	t.Run("The Account user that creates a new Workspace becomes the Owner of that Workspace", func(t *testing.T) {
		w := vancastWorld(t)
		w.grant("user:acct-admin", "account.administrator", "account:vancast")
		if _, err := w.eng.PutResource(w.ctx, as("user:acct-admin"), authz.Resource{Name: "workspace:new", Parent: "account:vancast"}); err != nil {
			t.Fatal(err)
		}
		if d := w.check("user:acct-admin", "workspace.settings.manage", "workspace:new"); !d.Allowed || d.Role != "workspace.owner" {
			t.Errorf("the creator is not the workspace's Owner: %+v", d)
		}
	})
	t.Run("To create a new Workspace you must be an Account user", func(t *testing.T) {
		w := vancastWorld(t)
		e := w.refuses(authz.PermissionDenied, "actor", "user:ws-owner", func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, as("user:ws-owner"), authz.Resource{Name: "workspace:new", Parent: "account:vancast"})
		})
		mentions(t, e, "usher.resources.create.workspace", "account:vancast")
	})
}

func TestDelegatedRevoke(t *testing.T) {
	cases := []delegation{
		{name: ruleRevoke + ": a Manager removes a Producer", world: vancastWorld,
			actor: "user:manager", grant: authz.Grant{Subject: "user:producer", Role: "event.producer", Resource: "event:launch"}, allowed: true},
		{name: ruleRevoke + ": a Manager may not remove the Owner, whom it could not add", world: vancastWorld,
			actor: "user:manager", grant: authz.Grant{Subject: "user:owner", Role: "event.owner", Resource: "event:launch"}},
		{name: ruleRevoke + ": a Producer removes another Producer", world: vancastWorld,
			actor: "user:producer", grant: authz.Grant{Subject: "user:other", Role: "event.producer", Resource: "event:launch"}, allowed: true,
			setup: func(w *world) { w.grant("user:other", "event.producer", "event:launch") }},
		{name: ruleRevoke + ": a Producer may not remove the Moderator", world: vancastWorld,
			actor: "user:producer", grant: authz.Grant{Subject: "user:moderator", Role: "event.moderator", Resource: "event:launch"}},
		{name: ruleRevoke + ": a Moderator removes no one", world: vancastWorld,
			actor: "user:moderator", grant: authz.Grant{Subject: "user:producer", Role: "event.producer", Resource: "event:launch"}},
		{name: ruleRevoke + ": the Owner removes a Manager", world: vancastWorld,
			actor: "user:owner", grant: authz.Grant{Subject: "user:manager", Role: "event.manager", Resource: "event:launch"}, allowed: true},
		{name: ruleRevoke + " (" + ruleExpired + ")", world: vancastWorld,
			setup: func(w *world) {
				w.store(authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:lapsed", Role: "event.manager", Resource: "event:launch", Expires: time.Now().Add(-time.Minute)}})
			},
			actor: "user:lapsed", grant: authz.Grant{Subject: "user:producer", Role: "event.producer", Resource: "event:launch"}},
		{name: ruleRevoke + " (" + ruleBlocked + ")", world: vancastWorld,
			setup: func(w *world) { w.block(authz.Block{Subject: "user:manager", Resource: "account:vancast"}) },
			actor: "user:manager", grant: authz.Grant{Subject: "user:producer", Role: "event.producer", Resource: "event:launch"}},
		{name: alfaNotOwn + ": even for an Owner", world: vancastWorld,
			actor: "user:owner", grant: authz.Grant{Subject: "user:owner", Role: "event.owner", Resource: "event:launch"}},
		{name: alfaNotOwn + ": a Manager's own role", world: vancastWorld,
			actor: "user:manager", grant: authz.Grant{Subject: "user:manager", Role: "event.manager", Resource: "event:launch"}},
		{name: alfaNotOwn + ": Administrate users", world: alfaviewWorld,
			actor: "user:admin", grant: authz.Grant{Subject: "user:admin", Role: "administrate-users", Resource: "company:alfa"}},
		{name: alfaNotOwn + ": Manage company settings", world: alfaviewWorld,
			actor: "user:owner", grant: authz.Grant{Subject: "user:owner", Role: "manage-company-settings", Resource: "company:alfa"}},
		{name: alfaOnlyAdmins + " (revoke)", world: alfaviewWorld,
			actor: "user:admin", grant: authz.Grant{Subject: "user:bob", Role: "list-all-users", Resource: "company:alfa"}, allowed: true},
		{name: alfaOnlyAdmins + " (revoke, by one without it)", world: alfaviewWorld,
			actor: "user:roomie", grant: authz.Grant{Subject: "user:bob", Role: "list-all-users", Resource: "company:alfa"}},
		{name: alfaSettings + " (revoke, by Administrate users)", world: alfaviewWorld,
			actor: "user:admin", grant: authz.Grant{Subject: "user:bob", Role: "manage-company-settings", Resource: "company:alfa"}, mentions: []string{"company.manage-settings"}},
		{name: alfaSettings + " (revoke, by one who has it)", world: alfaviewWorld,
			actor: "user:owner", grant: authz.Grant{Subject: "user:bob", Role: "manage-company-settings", Resource: "company:alfa"}, allowed: true},
		{name: alfaOnlyHeld + " (revoke): Administrate users may not revoke Create a room", world: alfaviewWorld,
			actor: "user:admin", grant: authz.Grant{Subject: "user:roomie", Role: "create-a-room", Resource: "company:alfa"}, mentions: []string{"rooms.create"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := c.world(t)
			if c.setup != nil {
				c.setup(w)
			}
			revoke := func() (authz.Revision, error) { return w.eng.Revoke(w.ctx, as(c.actor), c.grant) }
			if !c.allowed {
				e := w.refuses(authz.PermissionDenied, "actor", c.actor, revoke)
				mentions(t, e, append([]string{c.grant.Role, c.grant.Resource}, c.mentions...)...)
				if e != nil && !strings.Contains(e.Reason, "revoke") {
					t.Errorf("the refusal %q does not say it refused a revoke", e.Reason)
				}
				if own := "not possible to revoke your own"; e != nil && c.grant.Subject == c.actor && !strings.Contains(e.Reason, own) {
					t.Errorf("the refusal %q does not say %q", e.Reason, own)
				}
				return
			}
			if _, err := revoke(); err != nil {
				t.Fatalf("Revoke by %s: %v", c.actor, err)
			}
			if gs, _, _, _ := w.idx.ListGrants(authz.GrantFilter{Subject: c.grant.Subject, Resource: c.grant.Resource}, 0, ""); slices.ContainsFunc(gs, func(g authz.Grant) bool { return g.Role == c.grant.Role }) {
				t.Errorf("the grant is still there: %v", gs)
			}
		})
	}
}

// reserved is one write governed by a reserved permission, by an actor.
type reserved struct {
	name     string
	world    func(*testing.T) *world
	setup    func(w *world)
	actor    string
	write    func(w *world, by authz.Author) (authz.Revision, error)
	allowed  bool
	mentions []string // a refusal's permission and scope
}

func TestReservedPermissions(t *testing.T) {
	const implied = "these reserved permissions are implied from domain permissions through the permission tree"
	putEvent := func(name, parent string) func(w *world, by authz.Author) (authz.Revision, error) {
		return func(w *world, by authz.Author) (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, by, authz.Resource{Name: name, Parent: parent})
		}
	}
	customRole := authz.Role{Name: "event.translator", Scope: "account:vancast", Permissions: []string{"event.qa.moderate"}}
	putRole := func(r authz.Role) func(w *world, by authz.Author) (authz.Revision, error) {
		return func(w *world, by authz.Author) (authz.Revision, error) { return w.eng.PutRole(w.ctx, by, r) }
	}
	deleteRole := func(scope, name string) func(w *world, by authz.Author) (authz.Revision, error) {
		return func(w *world, by authz.Author) (authz.Revision, error) {
			return w.eng.DeleteRole(w.ctx, by, scope, name)
		}
	}
	quota := authz.Quota{Scope: "account:vancast", ResourceType: "event", Limit: 10}
	putQuota := func(w *world, by authz.Author) (authz.Revision, error) { return w.eng.PutQuota(w.ctx, by, quota) }
	deleteQuota := func(w *world, by authz.Author) (authz.Revision, error) { return w.eng.DeleteQuota(w.ctx, by, quota) }
	block := func(resource string) func(w *world, by authz.Author) (authz.Revision, error) {
		return func(w *world, by authz.Author) (authz.Revision, error) {
			return noID(w.eng.Block(w.ctx, by, authz.Block{Subject: "user:troll", Resource: resource, Reason: "spam"}))
		}
	}
	unblock := func(resource string) func(w *world, by authz.Author) (authz.Revision, error) {
		return func(w *world, by authz.Author) (authz.Revision, error) {
			return w.eng.Unblock(w.ctx, by, "user:troll", resource, "")
		}
	}
	accountUsers := func(t *testing.T) *world {
		w := vancastWorld(t)
		w.grant("user:acct-owner", "account.owner", "account:vancast")
		w.grant("user:acct-admin", "account.administrator", "account:vancast")
		w.role(customRole)
		rev, err := w.eng.PutQuota(w.ctx, w.by, quota)
		w.ok("PutQuota", rev, err)
		return w
	}
	streamModerator := func(t *testing.T) *world {
		w := newWorld(t, streamPolicy())
		w.grant("user:mod", "moderator", "call:livestream:42")
		w.block(authz.Block{Subject: "user:troll", Resource: "call:livestream:42"})
		w.block(authz.Block{Subject: "user:troll", Resource: "account:acme"})
		return w
	}
	const (
		create, move, del = "usher.resources.create.event", "usher.resources.move.event", "usher.resources.delete.event"
		qw, rolew, bw     = "usher.quotas.write", "usher.roles.write", "usher.blocks.write"
	)
	deleteEvent := func(w *world, by authz.Author) (authz.Revision, error) {
		return w.eng.DeleteResource(w.ctx, by, "event:launch")
	}
	cases := []reserved{
		{name: "usher.resources.create at the parent registers a child: " + implied + " (workspace.events.create)", world: vancastWorld,
			actor: "user:ws-admin", write: putEvent("event:gala", "workspace:vancast-live"), allowed: true},
		{name: "usher.resources.create at the parent registers a child: refused below another workspace", world: vancastWorld,
			actor: "user:ws-admin", write: putEvent("event:gala", "workspace:vancast-sales"), mentions: []string{create, "workspace:vancast-sales"}},
		{name: "usher.resources.create at the parent registers a child: an event Owner registers nothing beside its event", world: vancastWorld,
			actor: "user:owner", write: putEvent("event:gala", "workspace:vancast-live"), mentions: []string{create, "workspace:vancast-live"}},
		{name: "usher.resources.create at the parent, even to register again what is already there", world: vancastWorld,
			actor: "user:ws-producer", write: putEvent("event:launch", "workspace:vancast-live"), mentions: []string{create, "workspace:vancast-live"}},
		{name: "usher.resources.move at the resource plus create at the new parent moves it: refused without move at the resource", world: vancastWorld,
			setup: func(w *world) { w.grant("user:sales-admin", "workspace.administrator", "workspace:vancast-sales") },
			actor: "user:sales-admin", write: putEvent("event:launch", "workspace:vancast-sales"), mentions: []string{move, "event:launch"}},
		{name: "usher.resources.move at the resource plus create at the new parent moves it: refused without create at the new parent", world: vancastWorld,
			actor: "user:ws-admin", write: putEvent("event:launch", "workspace:vancast-sales"), mentions: []string{create, "workspace:vancast-sales"}},
		{name: "usher.resources.move at the resource plus create at the new parent moves it: the Owner of both workspaces", world: vancastWorld,
			setup: func(w *world) { w.grant("user:ws-owner", "workspace.owner", "workspace:vancast-sales") },
			actor: "user:ws-owner", write: putEvent("event:launch", "workspace:vancast-sales"), allowed: true},
		{name: "usher.resources.delete at the resource itself deletes it: an event's Owner deletes the event", world: vancastWorld,
			actor: "user:owner", write: deleteEvent, allowed: true},
		{name: "usher.resources.delete at the resource itself: a workspace Administrator with no role on the event may not delete it", world: vancastWorld,
			actor: "user:ws-admin", write: deleteEvent, mentions: []string{del, "event:launch"}},
		{name: "Cannot: - Delete the event (a Manager)", world: vancastWorld,
			actor: "user:manager", write: deleteEvent, mentions: []string{del, "event:launch"}},
		{name: "PutRole needs usher.roles.write at the role's scope: " + implied + " (account.roles.manage)", world: accountUsers,
			actor: "user:acct-admin", write: putRole(authz.Role{Name: "account.auditor", Scope: "account:vancast", Permissions: []string{"account.console"}}), allowed: true},
		{name: "a role definition is bounded by the actor's own permissions: an Administrator may not define an event role it does not hold", world: accountUsers,
			actor: "user:acct-admin", write: putRole(authz.Role{Name: "event.interpreter", Scope: "account:vancast", Permissions: []string{"event.qa.moderate"}}),
			mentions: []string{"event.qa.moderate", "account:vancast"}},
		{name: "PutRole needs usher.roles.write at the role's scope: a workspace Owner has none", world: accountUsers,
			actor: "user:ws-owner", write: putRole(authz.Role{Name: "event.interpreter", Scope: "workspace:vancast-live", Permissions: []string{"event.qa.moderate"}}),
			mentions: []string{rolew, "workspace:vancast-live"}},
		{name: "PutRole needs usher.roles.write at the role's scope: not at root", world: accountUsers,
			actor: "user:acct-admin", write: putRole(authz.Role{Name: "event.interpreter", Scope: "root", Permissions: []string{"event.qa.moderate"}}),
			mentions: []string{rolew, "root"}},
		{name: "DeleteRole needs usher.roles.write at the role's scope", world: accountUsers,
			actor: "user:acct-admin", write: deleteRole("account:vancast", "event.translator"), allowed: true},
		{name: "DeleteRole needs usher.roles.write at the role's scope: refused to one without it", world: accountUsers,
			actor: "user:owner", write: deleteRole("account:vancast", "event.translator"), mentions: []string{rolew, "account:vancast"}},
		{name: "PutQuota needs usher.quotas.write at the quota scope: " + implied + " (the Account's Plan)", world: accountUsers,
			actor: "user:acct-owner", write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutQuota(w.ctx, by, authz.Quota{Scope: "account:vancast", ResourceType: "workspace", Limit: 3})
			}, allowed: true},
		{name: "PutQuota needs usher.quotas.write: an Administrator \"Cannot see or update the Account's Plan\"", world: accountUsers,
			actor: "user:acct-admin", write: putQuota, mentions: []string{qw, "account:vancast"}},
		{name: "DeleteQuota needs usher.quotas.write at the quota scope", world: accountUsers,
			actor: "user:acct-owner", write: deleteQuota, allowed: true},
		{name: "DeleteQuota needs usher.quotas.write: an Administrator \"Cannot see or update the Account's Plan\"", world: accountUsers,
			actor: "user:acct-admin", write: deleteQuota, mentions: []string{qw, "account:vancast"}},
		{name: "Block needs usher.blocks.write at the block's resource: Stream's block-users implies it, in a call", world: streamModerator,
			actor: "user:mod", write: func(w *world, by authz.Author) (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, by, authz.Block{Subject: "user:heckler", Resource: "call:livestream:42"}))
			}, allowed: true},
		{name: "Block needs usher.blocks.write at the block's resource: a call's moderator may not block at the account", world: streamModerator,
			actor: "user:mod", write: block("account:acme"), mentions: []string{bw, "account:acme"}},
		{name: "Block needs usher.blocks.write at the block's resource: nor in another call", world: streamModerator,
			actor: "user:mod", write: block("call:livestream:43"), mentions: []string{bw, "call:livestream:43"}},
		{name: "Unblock needs usher.blocks.write at the block's resource: in a call", world: streamModerator,
			actor: "user:mod", write: unblock("call:livestream:42"), allowed: true},
		{name: "Unblock needs usher.blocks.write at the block's resource: not at the account", world: streamModerator,
			actor: "user:mod", write: unblock("account:acme"), mentions: []string{bw, "account:acme"}},
		{name: ruleBlocked + ": a moderator blocked from block-users loses usher.blocks.write", world: streamModerator,
			setup: func(w *world) {
				w.block(authz.Block{Subject: "user:mod", Resource: "call:livestream:42", Permissions: []string{"block-users"}})
			},
			actor: "user:mod", write: block("call:livestream:42"), mentions: []string{bw, "call:livestream:42"}},
		{name: ruleBlocked + ": an Account Administrator blocked from everything creates no workspace", world: accountUsers,
			setup: func(w *world) { w.block(authz.Block{Subject: "user:acct-admin", Resource: "account:vancast"}) },
			actor: "user:acct-admin", write: putEvent("workspace:new", "account:vancast"), mentions: []string{"usher.resources.create.workspace", "account:vancast"}},
		{name: ruleExpired + ": an expired Administrator creates no workspace", world: vancastWorld,
			setup: func(w *world) {
				w.store(authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:lapsed", Role: "account.administrator", Resource: "account:vancast", Expires: time.Now().Add(-time.Minute)}})
			},
			actor: "user:lapsed", write: putEvent("workspace:new", "account:vancast"), mentions: []string{"usher.resources.create.workspace", "account:vancast"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := c.world(t)
			if c.setup != nil {
				c.setup(w)
			}
			write := func() (authz.Revision, error) { return c.write(w, as(c.actor)) }
			if !c.allowed {
				e := w.refuses(authz.PermissionDenied, "actor", c.actor, write)
				mentions(t, e, c.mentions...)
				return
			}
			rev := w.idx.Revision()
			if got, err := write(); err != nil || got != rev+1 {
				t.Fatalf("write by %s = revision %d, %v; want %d", c.actor, got, err, rev+1)
			}
		})
	}
}

func TestAssignableRoles(t *testing.T) {
	cases := []struct {
		name     string
		world    func(*testing.T) *world
		resource string
		actor    string
		want     []string
	}{
		{vancastOwner, vancastWorld, "event:launch", "user:owner", vancastEventRoles},
		{vancastManager, vancastWorld, "event:launch", "user:manager", []string{"event.manager", "event.moderator", "event.producer"}},
		{vancastProd, vancastWorld, "event:launch", "user:producer", []string{"event.producer"}},
		{vancastMod + ": no one", vancastWorld, "event:launch", "user:moderator", nil},
		{"ListRoles (optionally only those a given actor may assign): an actor with no grants assigns none", vancastWorld, "event:launch", "user:stranger", nil},
		{"a workspace Owner's roles on an event of its workspace: those bindable on events", vancastWorld, "event:launch", "user:ws-owner", vancastEventRoles},
		{"a workspace Owner's roles on its workspace: those bindable on workspaces", vancastWorld, "workspace:vancast-live", "user:ws-owner", vancastWorkspaceRoles},
		{"an event role gives nothing to assign on the workspace above it", vancastWorld, "workspace:vancast-live", "user:owner", nil},
		{alfaOnlyHeld + ": Administrate users", alfaviewWorld, "company:alfa", "user:admin", []string{"administrate-users", "list-all-users"}},
		{alfaOnlyHeld + ": Manage company settings, every permission below it", alfaviewWorld, "company:alfa", "user:owner",
			[]string{"administrate-rooms", "administrate-users", "create-a-room", "list-all-rooms", "list-all-users", "manage-company-settings", "show-all-usernames"}},
		{alfaOnlyAdmins + ": Create a room and Administrate rooms assign nothing", alfaviewWorld, "company:alfa", "user:roomie", nil},
	}
	for _, c := range cases {
		t.Run("AssignableRoles returns exactly the roles the actor may grant there: "+c.name, func(t *testing.T) {
			w := c.world(t)
			roles, rev, err := w.idx.AssignableRoles(c.resource, c.actor)
			if err != nil {
				t.Fatal(err)
			}
			if rev != w.idx.Revision() {
				t.Errorf("answered at revision %d, want %d", rev, w.idx.Revision())
			}
			var got []string
			for _, r := range roles {
				got = append(got, r.Name)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("AssignableRoles(%s, %s) = %v, want %v", c.resource, c.actor, got, c.want)
			}
			// Each one listed is a grant the actor may make, and no other.
			all, _, _ := w.idx.ListRoles(c.resource)
			for _, r := range all {
				_, err := w.eng.Grant(w.ctx, as(c.actor), authz.Grant{Subject: "user:probe", Role: r.Name, Resource: c.resource})
				if listed := slices.Contains(c.want, r.Name); listed != (err == nil) {
					t.Errorf("role %s: listed %v, but Grant by %s = %v", r.Name, listed, c.actor, err)
				}
				if err == nil {
					if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:probe", Role: r.Name, Resource: c.resource}); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
	t.Run("AssignableRoles of a resource not registered is NOT_FOUND", func(t *testing.T) {
		w := vancastWorld(t)
		_, _, err := w.idx.AssignableRoles("event:nowhere", "user:owner")
		wantError(t, err, authz.NotFound, "resource", "event:nowhere")
	})
}

// usher.resources.create|delete|move, each narrowed to one type by a suffix,
// with delete held at the resource itself: "Create a room" registers rooms
// and nothing else, and moves or deletes no one's rooms; an event's owner
// deletes the event it owns (VancastVideo: "Owner | All permissions over the
// event"; "Manager | Full permissions over the event, except deleting the
// event").
func TestNarrowResourceWrites(t *testing.T) {
	p := authz.Policy{
		Permissions: []authz.Permission{
			{Name: "create-a-room"},
			{Name: "usher.resources.create.room", Parents: []string{"create-a-room"}},
			{Name: "event.delete"},
			{Name: "usher.resources.delete", Parents: []string{"event.delete"}},
			{Name: "usher.resources.create"},
			{Name: "usher.resources.move"},
		},
		Resources: []authz.Resource{{Name: "company:alfa"}, {Name: "department:d1", Parent: "company:alfa"}, {Name: "event:launch", Parent: "company:alfa"}},
		Roles: []authz.Role{
			{Name: "room-creator", Scope: "root", Permissions: []string{"create-a-room"}},
			{Name: "event-owner", Scope: "root", Permissions: []string{"event.delete"}},
			{Name: "event-manager", Scope: "root"},
		},
	}
	w := newWorld(t, p)
	w.grant("apikey:k7", "room-creator", "company:alfa")
	w.grant("apikey:k8", "room-creator", "company:alfa")
	w.grant("user:owner", "event-owner", "event:launch")
	w.grant("user:manager", "event-manager", "event:launch")
	as := func(actor string) authz.Author { return authz.Author{Caller: "svc:test", Actor: actor} }

	if _, err := w.eng.PutResource(w.ctx, as("apikey:k7"), authz.Resource{Name: "room:r1", Parent: "company:alfa"}); err != nil {
		t.Fatalf("usher.resources.create.room registers a room: %v", err)
	}
	e := w.refuses(authz.PermissionDenied, "actor", "apikey:k7", func() (authz.Revision, error) {
		return w.eng.PutResource(w.ctx, as("apikey:k7"), authz.Resource{Name: "event:other", Parent: "company:alfa"})
	})
	mentions(t, e, "usher.resources.create.event", "company:alfa")
	e = w.refuses(authz.PermissionDenied, "actor", "apikey:k8", func() (authz.Revision, error) {
		return w.eng.DeleteResource(w.ctx, as("apikey:k8"), "room:r1")
	})
	mentions(t, e, "usher.resources.delete.room", "room:r1")
	e = w.refuses(authz.PermissionDenied, "actor", "apikey:k8", func() (authz.Revision, error) {
		return w.eng.PutResource(w.ctx, as("apikey:k8"), authz.Resource{Name: "room:r1", Parent: "department:d1"})
	})
	mentions(t, e, "usher.resources.move.room", "room:r1")
	// A registration repeated (a retry) moves nothing: what registering
	// it there needs will do, and nothing is written.
	w.writesNothing(func() (authz.Revision, error) {
		return w.eng.PutResource(w.ctx, as("apikey:k7"), authz.Resource{Name: "room:r1", Parent: "company:alfa"})
	})
	e = w.refuses(authz.PermissionDenied, "actor", "user:owner", func() (authz.Revision, error) {
		return w.eng.PutResource(w.ctx, as("user:owner"), authz.Resource{Name: "room:r1", Parent: "company:alfa"})
	})
	mentions(t, e, "usher.resources.create.room", "company:alfa")
	w.refuses(authz.PermissionDenied, "actor", "user:manager", func() (authz.Revision, error) {
		return w.eng.DeleteResource(w.ctx, as("user:manager"), "event:launch")
	})
	if _, err := w.eng.DeleteResource(w.ctx, as("user:owner"), "event:launch"); err != nil {
		t.Fatalf("usher.resources.delete on the event lets its owner delete it: %v", err)
	}
}

// roomPolicy is a room under an account, and roles to hold there: a
// manager manages rooms and assigns guests; an organizer writes roles
// without granting any, though its role lists the guest; in room:r a
// narrower manager assigns no one.
func roomPolicy() authz.Policy {
	return authz.Policy{
		Permissions: []authz.Permission{
			{Name: "room.manage"},
			{Name: "room.join"},
			{Name: "roles.manage"},
			{Name: "usher.grants.write", Parents: []string{"room.manage"}},
			{Name: "usher.resources.delete", Parents: []string{"room.manage"}},
			{Name: "usher.blocks.write", Parents: []string{"room.manage"}},
			{Name: "usher.roles.write", Parents: []string{"roles.manage"}},
		},
		Resources: []authz.Resource{{Name: "account:a"}, {Name: "room:r", Parent: "account:a"}},
		Roles: []authz.Role{
			{Name: "manager", Scope: "root", Permissions: []string{"room.manage"}, AssignableRoles: []string{"guest"}},
			{Name: "manager", Scope: "room:r", Permissions: []string{"room.manage"}},
			{Name: "guest", Scope: "root", Permissions: []string{"room.join"}},
			{Name: "organizer", Scope: "root", Permissions: []string{"roles.manage", "room.join"}, AssignableRoles: []string{"guest"}},
		},
	}
}

// creatorWorld has user:a holding admin on account:acme, where admin
// carries org.admin (and with it usher.roles.write, usher.resources.create
// and usher.resources.move) and secret; in workspace:w below, admin is
// defined again with only usher.roles.write, usher.resources.create and
// event.view. The creator role of events is owner, which carries
// event.view.
func creatorWorld(t *testing.T) *world {
	w := newWorld(t, creatorPolicy())
	w.grant("user:a", "admin", "account:acme")
	return w
}

// TestACreatorRoleRefusalNamesWhatTheActorLacks: "Every refusal is
// PERMISSION_DENIED with a message naming the rule, the actor, and what it
// lacked", and "the status carries the same as machine-readable details".
func TestACreatorRoleRefusalNamesWhatTheActorLacks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		world func(*testing.T) *world
		role  authz.Role
		meta  map[string]string
	}{
		{"a permission", creatorWorld,
			authz.Role{Name: "owner", Scope: "account:acme", Permissions: []string{"event.view", "secret"}},
			map[string]string{"role": "owner", "permission": "secret", "resource": "workspace:w"}},
		{"a listed role", creatorWorldWith(
			authz.Role{Name: "helper", Scope: "root", Permissions: []string{"secret"}},
			authz.Role{Name: "admin", Scope: "root", Permissions: []string{"org.admin", "secret", "event.view"}, AssignableRoles: []string{"helper"}}),
			authz.Role{Name: "owner", Scope: "account:acme", Permissions: []string{"event.view"}, AssignableRoles: []string{"helper"}},
			map[string]string{"role": "helper", "listed_by": "owner", "resource": "workspace:w"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.world(t)
			e := w.refuses(authz.PermissionDenied, "actor", "user:a", func() (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, as("user:a"), tc.role)
			})
			if e.Rule != authz.RuleNoEscalation || !maps.Equal(e.Meta, tc.meta) {
				t.Errorf("refusal %q: rule %q, meta %v; want %q, %v", e.Error(), e.Rule, e.Meta, authz.RuleNoEscalation, tc.meta)
			}
		})
	}
}

// plainCreatorWorld has creatorWorld's policy, with admin defined at root
// only, and no grants.
func plainCreatorWorld(t *testing.T) *world {
	p := creatorPolicy()
	p.Roles = slices.DeleteFunc(p.Roles, func(r authz.Role) bool { return r.Scope == "workspace:w" })
	return newWorld(t, p)
}

// putOwnerWithSecret defines owner, the creator role of events, at
// account:acme with event.view and secret.
func putOwnerWithSecret(w *world, by authz.Author) (authz.Revision, error) {
	return w.eng.PutRole(w.ctx, by, authz.Role{Name: "owner", Scope: "account:acme", Permissions: []string{"event.view", "secret"}})
}

// creatorWorldWith is creatorWorld with roles defined in it, in order.
func creatorWorldWith(roles ...authz.Role) func(*testing.T) *world {
	return func(t *testing.T) *world {
		w := creatorWorld(t)
		for _, r := range roles {
			w.role(r)
		}
		return w
	}
}

// deleteOwnerAtW deletes the definition of owner at workspace:w.
func deleteOwnerAtW(w *world, by authz.Author) (authz.Revision, error) {
	return w.eng.DeleteRole(w.ctx, by, "workspace:w", "owner")
}

func creatorPolicy() authz.Policy {
	return authz.Policy{
		Permissions: []authz.Permission{
			{Name: "org.admin"},
			{Name: "secret"},
			{Name: "event.view"},
			{Name: authz.PermRolesWrite, Parents: []string{"org.admin"}},
			{Name: authz.PermResourcesCreate, Parents: []string{"org.admin"}},
			{Name: authz.PermResourcesMove, Parents: []string{"org.admin"}},
		},
		Resources: []authz.Resource{{Name: "account:acme"}, {Name: "workspace:w", Parent: "account:acme"}},
		Roles: []authz.Role{
			{Name: "admin", Scope: "root", Permissions: []string{"org.admin", "secret", "event.view"}},
			{Name: "admin", Scope: "workspace:w", Permissions: []string{authz.PermRolesWrite, authz.PermResourcesCreate, "event.view"}},
			{Name: "owner", Scope: "root", Permissions: []string{"event.view"}},
		},
		CreatorRoles: []authz.CreatorRole{{ResourceType: "event", Role: "owner"}},
	}
}

// everythingWorld has an owner of account:a who holds every permission
// the catalog declares, through the one at the top of its tree, and an
// admin who holds "*" there.
func everythingWorld(t *testing.T) *world {
	w := newWorld(t, authz.Policy{
		Permissions: []authz.Permission{
			{Name: "account.manage"},
			{Name: "room.join", Parents: []string{"account.manage"}},
			{Name: "usher.grants.write", Parents: []string{"account.manage"}},
			{Name: "usher.roles.write", Parents: []string{"account.manage"}},
		},
		Resources: []authz.Resource{{Name: "account:a"}},
		Roles: []authz.Role{
			{Name: "owner", Scope: "root", Permissions: []string{"account.manage"}, AssignableRoles: []string{authz.Wildcard}},
			{Name: "admin", Scope: "root", Permissions: []string{authz.Wildcard}, AssignableRoles: []string{authz.Wildcard}},
		},
	})
	w.grant("user:owner", "owner", "account:a")
	w.grant("user:admin", "admin", "account:a")
	return w
}

// guestWorld is roomPolicy's world with a manager of the account, who in
// room:r assigns no one, and a guest of the account.
func guestWorld(t *testing.T) *world {
	w := newWorld(t, roomPolicy())
	w.grant("user:m", "manager", "account:a")
	w.grant("user:g", "guest", "account:a")
	return w
}

// bannedGuestWorld is guestWorld with the guest banned from the account,
// until expires (zero: for good).
func bannedGuestWorld(expires time.Time) func(t *testing.T) *world {
	return func(t *testing.T) *world {
		w := guestWorld(t)
		w.block(authz.Block{Subject: "user:g", Resource: "account:a", ID: "ban", Expires: expires})
		return w
	}
}

// TestDelegationInvariantCases are delegated writes on the edges of the
// rules per operation, each named after the sentence of DESIGN.md that
// decides it.
func TestDelegationInvariantCases(t *testing.T) {
	type invariantCase struct {
		reserved
		field, value string // the refusal's, when not the actor
	}
	cases := []invariantCase{
		{reserved: reserved{name: "Roles: its permissions and assignable_roles are bounded by the actor's own (rule 1): an organizer whose role lists guest defines a role that lists guest, though it holds no usher.grants.write",
			world: func(t *testing.T) *world {
				w := newWorld(t, roomPolicy())
				w.grant("user:org", "organizer", "account:a")
				return w
			},
			actor: "user:org", allowed: true,
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, by, authz.Role{Name: "host", Scope: "account:a", Permissions: []string{"room.join"}, AssignableRoles: []string{"guest"}})
			}}},
		{reserved: reserved{name: "Roles: its permissions and assignable_roles are bounded by the actor's own (rule 1): not a role its own roles do not list",
			world: func(t *testing.T) *world {
				w := newWorld(t, roomPolicy())
				w.grant("user:org", "organizer", "account:a")
				return w
			},
			actor: "user:org", mentions: []string{"manager", "account:a"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, by, authz.Role{Name: "host", Scope: "account:a", Permissions: []string{"room.join"}, AssignableRoles: []string{"manager"}})
			}}, field: "role.assignable_roles[0]", value: "manager"},
		{reserved: reserved{name: "No self-service: the actor never gets around that indirectly, by deleting the resource they are on, or by redefining a role it holds: deleting a room that narrows the actor's role there is deleting that definition",
			world: func(t *testing.T) *world {
				w := newWorld(t, roomPolicy())
				w.grant("user:m", "manager", "account:a")
				return w
			},
			actor: "user:m", mentions: []string{"room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.DeleteResource(w.ctx, by, "room:r")
			}}},
		{reserved: reserved{name: "No self-service: by redefining a role it holds: the same definition deleted directly",
			world: func(t *testing.T) *world {
				w := newWorld(t, roomPolicy())
				w.grant("user:m", "manager", "account:a")
				w.grant("user:m", "organizer", "account:a")
				return w
			},
			actor: "user:m", mentions: []string{"manager", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.DeleteRole(w.ctx, by, "room:r", "manager")
			}}},
		{reserved: reserved{name: "Revoke: what the holder loses is bounded by rule 2: a manager narrowed in room:r may not revoke a guest of the account, who would lose room.join in room:r",
			world: guestWorld, actor: "user:m", mentions: []string{"room.join", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.Revoke(w.ctx, by, authz.Grant{Subject: "user:g", Role: "guest", Resource: "account:a"})
			}}},
		{reserved: reserved{name: "A re-grant that changes an expiry is a grant (and, if it shortens it, a revoke): nor may it cut that grant short",
			world: guestWorld, actor: "user:m", mentions: []string{"room.join", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.Grant(w.ctx, by, authz.Grant{Subject: "user:g", Role: "guest", Resource: "account:a", Expires: w.clock.Now().Add(time.Hour)})
			}}},
		{reserved: reserved{name: "A re-grant that changes an expiry is a grant: lengthening it gives, for the time it adds, what a grant would: room.join in room:r, which a manager narrowed there may not give",
			world: func(t *testing.T) *world {
				w := guestWorld(t)
				w.grantUntil("user:g", "guest", "account:a", w.clock.Now().Add(time.Hour))
				return w
			},
			actor: "user:m", mentions: []string{"room.join", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.Grant(w.ctx, by, authz.Grant{Subject: "user:g", Role: "guest", Resource: "account:a", Expires: w.clock.Now().Add(2 * time.Hour)})
			}}},
		{reserved: reserved{name: "an unblock gives back only what rule 1 allows: a manager narrowed in room:r may not lift a ban of the guest, who would get room.join back in room:r",
			world: bannedGuestWorld(time.Time{}), actor: "user:m", mentions: []string{"room.join", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.Unblock(w.ctx, by, "user:g", "account:a", "ban")
			}}},
		{reserved: reserved{name: "a later block never weakens an earlier one: nor does one that replaces the ban to run out sooner, which lifts it then",
			world: bannedGuestWorld(time.Time{}), actor: "user:m", mentions: []string{"room.join", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, by, authz.Block{Subject: "user:g", Resource: "account:a", ID: "ban", Expires: w.clock.Now().Add(time.Hour)}))
			}}},
		{reserved: reserved{name: "a later block never weakens an earlier one, and one that outlasts it is a block for the time it adds: a manager narrowed in room:r may not make the ban last longer, taking room.join in room:r then",
			world: bannedGuestWorld(time.Now().Add(time.Hour)), actor: "user:m", mentions: []string{"room.join", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, by, authz.Block{Subject: "user:g", Resource: "account:a", ID: "ban", Expires: w.clock.Now().Add(2 * time.Hour)}))
			}}},
		{reserved: reserved{name: "Blocks are additive, and a block is judged for as long as it lasts: a manager narrowed in room:r may not add a ban for good under the platform's ban of an hour, which would take room.join in room:r when that one runs out",
			world: bannedGuestWorld(time.Now().Add(time.Hour)), actor: "user:m", mentions: []string{"room.join", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, by, authz.Block{Subject: "user:g", Resource: "account:a"}))
			}}},
		{reserved: reserved{name: "Blocks are additive: a block for good under the platform's ban of an hour is within a manager's power on the account where it holds room.join",
			world: func(t *testing.T) *world {
				w := bannedGuestWorld(time.Now().Add(time.Hour))(t)
				w.grant("user:m", "organizer", "room:r")
				return w
			},
			actor: "user:m", allowed: true,
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return noID(w.eng.Block(w.ctx, by, authz.Block{Subject: "user:g", Resource: "account:a", Permissions: []string{"room.join"}}))
			}}},
		{reserved: reserved{name: "an unblock gives back only what rule 1 allows, whenever it gives it: lifting a ban for good under a block of an hour gives room.join in room:r back when that one runs out",
			world: func(t *testing.T) *world {
				w := bannedGuestWorld(time.Time{})(t)
				w.block(authz.Block{Subject: "user:g", Resource: "account:a", ID: "hour", Expires: w.clock.Now().Add(time.Hour)})
				return w
			},
			actor: "user:m", mentions: []string{"room.join", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.Unblock(w.ctx, by, "user:g", "account:a", "ban")
			}}},
		{reserved: reserved{name: "No self-service: a role the actor may assign by name is not a way around its own block: an organizer blocked from roles.manage in room:r may not put roles.manage into guest, which it could then give there",
			world: func(t *testing.T) *world {
				w := newWorld(t, roomPolicy())
				w.grant("user:o", "organizer", "account:a")
				w.block(authz.Block{Subject: "user:o", Resource: "room:r", Permissions: []string{"roles.manage"}})
				return w
			},
			actor: "user:o", mentions: []string{"roles.manage", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, by, authz.Role{Name: "guest", Scope: "account:a", Permissions: []string{"room.join", "roles.manage"}})
			}}},
		{reserved: reserved{name: "Roles: an organizer not blocked anywhere may put a permission it holds into a role it assigns by name",
			world: func(t *testing.T) *world {
				w := newWorld(t, roomPolicy())
				w.grant("user:o", "organizer", "account:a")
				return w
			},
			actor: "user:o", allowed: true,
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, by, authz.Role{Name: "guest", Scope: "account:a", Permissions: []string{"room.join", "roles.manage"}})
			}}},
		{reserved: reserved{name: "Roles: its permissions are bounded by the actor's own: not \"*\", every permission the catalog will ever declare, from an owner who holds every permission declared now through the tree but not \"*\", whose role would gain what a later policy adds and the owner does not hold",
			world: everythingWorld,
			actor: "user:owner", mentions: []string{"*", "account:a"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, by, authz.Role{Name: "blank-cheque", Scope: "account:a", Permissions: []string{authz.Wildcard}})
			}}, field: "role.permissions[0]", value: authz.Wildcard},
		{reserved: reserved{name: "Roles: its permissions are bounded by the actor's own: \"*\" from an actor that holds \"*\" itself",
			world: everythingWorld,
			actor: "user:admin", allowed: true,
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, by, authz.Role{Name: "blank-cheque", Scope: "account:a", Permissions: []string{authz.Wildcard}})
			}}},
		{reserved: reserved{name: "Grant: lists * and R's permissions are a subset of the actor's effective permissions: not those of a role of \"*\", every permission the catalog will ever declare, from an owner who holds every permission declared now but not \"*\"",
			world: everythingWorld,
			actor: "user:owner", mentions: []string{"admin", "*"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.Grant(w.ctx, by, authz.Grant{Subject: "user:puppet", Role: "admin", Resource: "account:a"})
			}}},
		{reserved: reserved{name: "Grant: a role of \"*\" from an actor that holds \"*\" itself",
			world: everythingWorld,
			actor: "user:admin", allowed: true,
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.Grant(w.ctx, by, authz.Grant{Subject: "user:puppet", Role: "admin", Resource: "account:a"})
			}}},
		{reserved: reserved{name: "Grant: a role of \"*\" below, where the actor's own \"*\" role is redefined without it, is not the actor's to give there",
			world: func(t *testing.T) *world {
				w := everythingWorld(t)
				w.put("room:r", "account:a")
				w.role(authz.Role{Name: "admin", Scope: "room:r", Permissions: []string{"account.manage"}})
				w.role(authz.Role{Name: "deputy", Scope: "root", Permissions: []string{"room.join"}})
				w.role(authz.Role{Name: "deputy", Scope: "room:r", Permissions: []string{authz.Wildcard}})
				return w
			},
			actor: "user:admin", mentions: []string{"deputy", "*", "room:r"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.Grant(w.ctx, by, authz.Grant{Subject: "user:puppet", Role: "deputy", Resource: "account:a"})
			}}},
		{reserved: reserved{name: "The one exception is the creator role, granted when the actor registers a resource; a definition's permissions are bounded by the actor's own (rule 1): not the creator role, above a resource where the actor's own role is defined with less",
			world: creatorWorld, actor: "user:a", mentions: []string{"owner", "secret", "workspace:w"},
			write: putOwnerWithSecret}},
		{reserved: reserved{name: "The one exception is the creator role; a definition is bounded by the actor's own (rule 1): the creator role above, carrying only what the actor holds wherever it applies",
			world: creatorWorld, actor: "user:a", allowed: true,
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, by, authz.Role{Name: "owner", Scope: "account:acme", Permissions: []string{"event.view", authz.PermResourcesCreate}})
			}}},
		{reserved: reserved{name: "The one exception is the creator role; usher.roles.write deletes a role, bounded by rule 1: not the creator role's narrower definition, putting one that carries what the actor lacks in its place",
			world: creatorWorldWith(
				authz.Role{Name: "owner", Scope: "workspace:w", Permissions: []string{"event.view"}},
				authz.Role{Name: "owner", Scope: "root", Permissions: []string{"event.view", "secret"}}),
			actor: "user:a", mentions: []string{"owner", "secret", "workspace:w"},
			write: deleteOwnerAtW}},
		{reserved: reserved{name: "The one exception is the creator role; usher.roles.write deletes a role: the creator role's definition, when the one above carries nothing more",
			world: creatorWorldWith(
				authz.Role{Name: "owner", Scope: "workspace:w", Permissions: []string{"event.view", authz.PermResourcesCreate}}),
			actor: "user:a", allowed: true,
			write: deleteOwnerAtW}},
		{reserved: reserved{name: "one may not delete (or move) a resource ... to take ... what one could not take directly: not a workspace out from under the creator role's narrower definition, where the actor's own role is defined with less",
			world: func(t *testing.T) *world {
				w := creatorWorld(t)
				w.put("dept:d", "account:acme")
				w.put("workspace:w", "dept:d")
				w.role(authz.Role{Name: "owner", Scope: "root", Permissions: []string{"event.view", "secret"}})
				w.role(authz.Role{Name: "owner", Scope: "dept:d", Permissions: []string{"event.view"}})
				w.role(authz.Role{Name: "admin", Scope: "workspace:w", Permissions: []string{authz.PermRolesWrite, authz.PermResourcesCreate, authz.PermResourcesMove, "event.view"}})
				return w
			},
			actor: "user:a", mentions: []string{"owner", "secret", "workspace:w"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, by, authz.Resource{Name: "workspace:w", Parent: "account:acme"})
			}}},
		{reserved: reserved{name: "The one exception is the creator role; its assignable_roles are bounded by the actor's own (rule 1): not a role the actor may not assign where its own role is defined with less",
			world: creatorWorldWith(
				authz.Role{Name: "helper", Scope: "root", Permissions: []string{"secret"}},
				authz.Role{Name: "admin", Scope: "root", Permissions: []string{"org.admin", "secret", "event.view"}, AssignableRoles: []string{"helper"}}),
			actor: "user:a", mentions: []string{"owner", "helper", "workspace:w"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, by, authz.Role{Name: "owner", Scope: "account:acme", Permissions: []string{"event.view"}, AssignableRoles: []string{"helper"}})
			}}},
		{reserved: reserved{name: "The one exception is the creator role; usher.roles.write deletes a role, bounded by rule 1: not the creator role's narrower definition, putting one that lists what the actor may not assign in its place",
			world: creatorWorldWith(
				authz.Role{Name: "helper", Scope: "root", Permissions: []string{"secret"}},
				authz.Role{Name: "admin", Scope: "root", Permissions: []string{"org.admin", "secret", "event.view"}, AssignableRoles: []string{"helper"}},
				authz.Role{Name: "owner", Scope: "root", Permissions: []string{"event.view"}, AssignableRoles: []string{"helper"}},
				authz.Role{Name: "owner", Scope: "workspace:w", Permissions: []string{"event.view"}}),
			actor: "user:a", mentions: []string{"owner", "helper", "workspace:w"},
			write: deleteOwnerAtW}},
		{reserved: reserved{name: "The one exception is the creator role; a block applies on the resource and its descendants: the creator role above a block of the actor may carry what the block covers, which it gives the actor nowhere below",
			world: func(t *testing.T) *world {
				w := plainCreatorWorld(t)
				w.grant("user:a", "admin", "account:acme")
				w.block(authz.Block{Subject: "user:a", Resource: "workspace:w", Permissions: []string{"secret"}})
				return w
			},
			actor: "user:a", allowed: true,
			write: putOwnerWithSecret}},
		{reserved: reserved{name: "Grant ... some role the actor holds at s lists R in assignable_roles (no further test): not a role the creator role lists, defined above a resource where the actor's own role is defined with less, to carry what the actor lacks there",
			world: creatorWorldWith(
				authz.Role{Name: "helper", Scope: "root", Permissions: []string{"event.view"}},
				authz.Role{Name: "owner", Scope: "root", Permissions: []string{"event.view"}, AssignableRoles: []string{"helper"}}),
			actor: "user:a", mentions: []string{"helper", "owner", "secret", "workspace:w"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, by, authz.Role{Name: "helper", Scope: "account:acme", Permissions: []string{"event.view", "secret"}})
			}}},
		{reserved: reserved{name: "The one exception is the creator role; \"*\" only for an actor whose own roles carry it: not by deleting the definition that stands in the way of one that carries it",
			world: func(t *testing.T) *world {
				// The actor holds every permission declared, wherever it
				// holds admin, but not "*".
				w := plainCreatorWorld(t)
				w.grant("user:a", "admin", "account:acme")
				w.role(authz.Role{Name: "owner", Scope: "root", Permissions: []string{authz.Wildcard}})
				w.role(authz.Role{Name: "owner", Scope: "account:acme", Permissions: []string{"event.view"}})
				return w
			},
			actor: "user:a", mentions: []string{"owner", "*", "account:acme"},
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.DeleteRole(w.ctx, by, "account:acme", "owner")
			}}},
		{reserved: reserved{name: "Grant ... some role the actor holds at s lists R in assignable_roles (no further test): a role that the creator role lists only in another account's definition is the actor's to define as it may any other",
			world: func(t *testing.T) *world {
				w := creatorWorldWith(authz.Role{Name: "helper", Scope: "root", Permissions: []string{"event.view"}})(t)
				w.put("account:other", "root")
				w.role(authz.Role{Name: "owner", Scope: "account:other", Permissions: []string{"event.view"}, AssignableRoles: []string{"helper"}})
				return w
			},
			actor: "user:a", allowed: true,
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.PutRole(w.ctx, by, authz.Role{Name: "helper", Scope: "account:acme", Permissions: []string{"event.view", "secret"}})
			}}},
		{reserved: reserved{name: "The one exception is the creator role; a block ends, and the creator role stays: a block of the actor where its own role lacks a permission does not let it put that permission in the creator role",
			world: func(t *testing.T) *world {
				w := creatorWorld(t)
				w.block(authz.Block{Subject: "user:a", Resource: "workspace:w", Permissions: []string{"secret"}})
				return w
			},
			actor: "user:a", mentions: []string{"owner", "secret", "workspace:w"},
			write: putOwnerWithSecret}},
		{reserved: reserved{name: "The one exception is the creator role; the actor's own power decides: the roles and effective permissions that Check would see for the actor at that scope, a grant that has yet to run out among them",
			world: func(t *testing.T) *world {
				w := plainCreatorWorld(t)
				w.grantUntil("user:a", "admin", "account:acme", time.Now().Add(time.Hour))
				return w
			},
			actor: "user:a", allowed: true,
			write: putOwnerWithSecret}},
		{reserved: reserved{name: "an event's Owner deletes the event: the actor may lose its own grants on the resource it deletes",
			world: func(t *testing.T) *world {
				w := newWorld(t, roomPolicy())
				w.grant("user:m", "manager", "room:r")
				return w
			},
			actor: "user:m", allowed: true,
			write: func(w *world, by authz.Author) (authz.Revision, error) {
				return w.eng.DeleteResource(w.ctx, by, "room:r")
			}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := c.world(t)
			write := func() (authz.Revision, error) { return c.write(w, as(c.actor)) }
			if !c.allowed {
				field, value := cmp.Or(c.field, "actor"), cmp.Or(c.value, c.actor)
				e := w.refuses(authz.PermissionDenied, field, value, write)
				mentions(t, e, c.mentions...)
				return
			}
			rev := w.idx.Revision()
			if got, err := write(); err != nil || got != rev+1 {
				t.Fatalf("write by %s = revision %d, %v; want %d", c.actor, got, err, rev+1)
			}
		})
	}
}

// ruleActorMove is MaxActorMove's rule: the engine judges an actor's move
// over the whole subtree, so an actor's move is bounded; the platform's is
// not judged.
const ruleActorMove = "an actor may move a subtree of at most MaxActorMove resources; the platform may move it without an actor"

func TestActorMoveLimit(t *testing.T) {
	if authz.MaxActorMove != 10_000 {
		t.Errorf("MaxActorMove = %d, want 10,000 as documented", authz.MaxActorMove)
	}
	// calltype:livestream holds itself and two calls; a third makes four.
	world := func(t *testing.T) *world {
		p := streamPolicy()
		p.Permissions = append(p.Permissions, authz.Permission{Name: authz.PermResourcesMove}, authz.Permission{Name: authz.PermResourcesCreate})
		w := newLimitedWorld(t, p, authz.Limits{ActorMove: 3})
		w.grant("user:ann", "admin", "account:acme")
		w.put("event:launch", "account:acme")
		return w
	}
	t.Run(ruleActorMove+": a subtree of the limit moves", func(t *testing.T) {
		w := world(t)
		w.must("PutResource as user:ann")(w.eng.PutResource(w.ctx, as("user:ann"), authz.Resource{Name: "calltype:livestream", Parent: "event:launch"}))
	})
	t.Run(ruleActorMove+": one more and the actor's move is RESOURCE_EXHAUSTED, naming the limit", func(t *testing.T) {
		w := world(t)
		w.put("call:livestream:44", "calltype:livestream")
		e := w.refuses(authz.ResourceExhausted, "name", "calltype:livestream", func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, as("user:ann"), authz.Resource{Name: "calltype:livestream", Parent: "event:launch"})
		})
		if msg := e.Error(); !strings.Contains(msg, "at most 3 resources") || !strings.Contains(msg, "without an actor") {
			t.Errorf("refusal %q does not name the limit, 3 resources, and the platform's way", msg)
		}
		if e.Meta["limit"] != "3" {
			t.Errorf("refusal's metadata %v, want limit 3", e.Meta)
		}
		if w.parentOf("calltype:livestream") != "account:acme" {
			t.Errorf("the refused move moved calltype:livestream to %q", w.parentOf("calltype:livestream"))
		}
	})
	t.Run(ruleActorMove+": the platform moves it", func(t *testing.T) {
		w := world(t)
		w.put("call:livestream:44", "calltype:livestream")
		w.put("calltype:livestream", "event:launch")
		if got := w.parentOf("calltype:livestream"); got != "event:launch" {
			t.Errorf("parent after the platform's move = %q, want event:launch", got)
		}
	})
}

func (w *world) parentOf(name string) string {
	w.t.Helper()
	info, _, err := w.idx.GetResource(name)
	if err != nil {
		w.t.Fatalf("GetResource(%s): %v", name, err)
	}
	return info.Resource.Parent
}

// A refusal found at a later moment names that moment to the nanosecond:
// before it, the write would take nothing, and a moment cut to the second
// before it names a time at which the refusal does not hold.
func TestAWriteRefusedAtALaterMomentNamesIt(t *testing.T) {
	w := guestWorld(t)
	ends := w.clock.Now().Add(time.Hour + 500*time.Millisecond).UTC()
	w.block(authz.Block{Subject: "user:g", Resource: "account:a", ID: "ban", Expires: ends})
	e := w.refuses(authz.PermissionDenied, "actor", "user:m", func() (authz.Revision, error) {
		return noID(w.eng.Block(w.ctx, as("user:m"), authz.Block{Subject: "user:g", Resource: "account:a"}))
	})
	if want := "from " + ends.Format(time.RFC3339Nano) + " on"; !strings.Contains(e.Error(), want) {
		t.Errorf("refusal %q does not say %q, when the platform's ban runs out", e, want)
	}
}

// A write by an actor is judged at every moment one of a subject's grants
// or blocks runs out; a subject carrying more such moments on the way to a
// resource than MaxJudgedMoments makes the write too costly to judge, and
// it is refused rather than judged for as long as that takes. The platform
// may still make it.
func TestActorWritesJudgeABoundedNumberOfMoments(t *testing.T) {
	w := newWorld(t, roomPolicy())
	w.grant("user:m", "manager", "account:a")
	start := w.clock.Now()
	for i := range authz.MaxJudgedMoments {
		resource := []string{"account:a", "room:r", "root"}[i%3]
		w.block(authz.Block{Subject: "user:g", Resource: resource, ID: fmt.Sprintf("b%d", i),
			Permissions: []string{"roles.manage"}, Expires: start.Add(time.Duration(i+1) * time.Minute)})
	}
	grant := authz.Grant{Subject: "user:g", Role: "guest", Resource: "account:a"}
	e := w.refuses(authz.ResourceExhausted, "actor", "user:m", func() (authz.Revision, error) {
		return w.eng.Grant(w.ctx, authz.Author{Caller: "test", Actor: "user:m"}, grant)
	})
	if !strings.Contains(e.Error(), fmt.Sprint(authz.MaxJudgedMoments)) || !strings.Contains(e.Error(), "without an actor") {
		t.Errorf("refusal %q does not name the limit and the way around it", e)
	}
	if e.Meta["limit"] != fmt.Sprint(authz.MaxJudgedMoments) {
		t.Errorf("refusal's metadata %v, want limit %d", e.Meta, authz.MaxJudgedMoments)
	}
	if _, err := w.eng.Grant(w.ctx, w.by, grant); err != nil {
		t.Errorf("the platform's grant: %v", err)
	}
}

// Judging an actor's write can cost seconds when a role has many holders;
// the judge stops when the caller gives up, rather than judge for a caller
// no longer there. user:mgr's narrowing of the user role that 3,000
// subjects hold takes create-reaction, which mgr does not hold, from each:
// the judge refuses it as overreach. A caller gone before judging gets its
// context's error instead, and nothing is written.
func TestJudgingStopsWhenTheCallerGivesUp(t *testing.T) {
	p := streamPolicy()
	p.Permissions = append(p.Permissions, authz.Permission{Name: authz.PermRolesWrite})
	p.Roles = append(p.Roles, authz.Role{Name: "manager", Scope: "root", Permissions: []string{authz.PermRolesWrite, "join-call", "read-call"}})
	w := newWorld(t, p)
	w.grant("user:mgr", "manager", "account:acme")
	for i := range 3000 {
		w.grant(fmt.Sprintf("user:u%d", i), "user", "account:acme")
	}
	narrower := authz.Role{Name: "user", Scope: "account:acme", Permissions: []string{"join-call", "read-call"}}
	var e *authz.Error
	if _, err := w.eng.PutRole(w.ctx, as("user:mgr"), narrower); !errors.As(err, &e) || e.Rule != authz.RuleNoOverreach {
		t.Fatalf("PutRole narrowing the user role = %v, want a refusal by %q", err, authz.RuleNoOverreach)
	}
	ctx, cancel := context.WithCancel(w.ctx)
	cancel()
	sets, rev := w.be.count(), w.idx.Revision()
	if _, err := w.eng.PutRole(ctx, as("user:mgr"), narrower); !errors.Is(err, context.Canceled) {
		t.Errorf("PutRole with its caller gone = %v, want %v", err, context.Canceled)
	}
	w.unchanged(sets, rev)
}

// BenchmarkJudgingCostsWhatTheWriteTouches measures an actor's
// redefinition of a role held by 2,000, judged for each holder, in a world
// with no other role definitions or grants of the actor, and in one with
// 20,000 of each elsewhere: what is not below the write's scope costs
// nothing per subject. Before, each holder was judged at every resource of
// the world that defines a role and every resource the actor holds a grant
// on, each then set aside as not below the scope, so that an actor could
// make each of its writes cost holders times definitions, under the lock
// that every write's planning and the index's next Apply share: 4.6 ms
// without, 1.03 s with.
//
//	go test -run '^$' -bench 'JudgingCostsWhatTheWriteTouches' -benchtime 6x ./authz/
func BenchmarkJudgingCostsWhatTheWriteTouches(b *testing.B) {
	const holders = 2000
	for _, elsewhere := range []int{0, 20_000} {
		b.Run(fmt.Sprintf("%d elsewhere", elsewhere), func(b *testing.B) {
			p := streamPolicy()
			p.Permissions = append(p.Permissions, authz.Permission{Name: authz.PermRolesWrite, Parents: []string{"update-call"}})
			snap := authz.Snapshot{Permissions: p.Permissions, Roles: p.Roles, Resources: []authz.Resource{
				{Name: "account:acme"}, {Name: "calltype:livestream", Parent: "account:acme"}}}
			snap.Roles = append(snap.Roles,
				authz.Role{Name: "owner", Scope: "root", Permissions: []string{"update-call", "join-call", "read-call"}},
				authz.Role{Name: "staff", Scope: "account:acme", Permissions: []string{"join-call"}})
			snap.Grants = append(snap.Grants, authz.Grant{Subject: "user:owner", Role: "owner", Resource: "account:acme"})
			for i := range holders {
				snap.Grants = append(snap.Grants, authz.Grant{Subject: fmt.Sprintf("user:h%d", i), Role: "staff", Resource: "account:acme"})
			}
			for i := range elsewhere {
				other, own := fmt.Sprintf("account:o%d", i), fmt.Sprintf("call:own-%d", i)
				snap.Resources = append(snap.Resources, authz.Resource{Name: other}, authz.Resource{Name: own})
				snap.Roles = append(snap.Roles, authz.Role{Name: "custom", Scope: other, Permissions: []string{"join-call"}})
				snap.Grants = append(snap.Grants, authz.Grant{Subject: "user:owner", Role: "user", Resource: own})
			}
			eng := startWith(b, snap)
			for i := 0; b.Loop(); i++ {
				perms := [][]string{{"join-call", "read-call"}, {"join-call"}}[i%2]
				if _, err := eng.PutRole(b.Context(), as("user:owner"), authz.Role{Name: "staff", Scope: "calltype:livestream", Permissions: perms}); err != nil {
					b.Fatalf("PutRole of staff for its %d holders: %v", holders, err)
				}
			}
		})
	}
}

// BenchmarkActorMoveCostsWhatItMoves measures an actor's move of an event
// of 9,999 calls between two teams, with one role defined on each of the
// workspaces and teams it leaves or joins, and with 1,000: the move costs
// the resources and grants it moves, not those times the roles. Before, the
// moved subtree was walked once for each such role, both to find the
// holders to judge and a grant the move would orphan: 256 ms a move with
// 1,000 roles.
//
//	go test -run '^$' -bench 'ActorMoveCostsWhatItMoves' -benchtime 6x ./authz/
func BenchmarkActorMoveCostsWhatItMoves(b *testing.B) {
	const calls = 9_999
	for _, roles := range []int{1, 1000} {
		b.Run(fmt.Sprintf("%d roles", roles), func(b *testing.B) {
			p := streamPolicy()
			p.Permissions = append(p.Permissions,
				authz.Permission{Name: authz.PermResourcesMove, Parents: []string{"update-call"}},
				authz.Permission{Name: authz.PermResourcesCreate, Parents: []string{"update-call"}})
			snap := authz.Snapshot{Permissions: p.Permissions, Roles: p.Roles, Resources: []authz.Resource{
				{Name: "account:acme"}, {Name: "workspace:w1", Parent: "account:acme"}, {Name: "workspace:w2", Parent: "account:acme"},
				{Name: "team:t1", Parent: "workspace:w1"}, {Name: "team:t2", Parent: "workspace:w2"}, {Name: "event:big", Parent: "team:t1"}}}
			snap.Roles = append(snap.Roles, authz.Role{Name: "owner", Scope: "root", Permissions: []string{"update-call", "join-call"}})
			snap.Grants = append(snap.Grants, authz.Grant{Subject: "user:owner", Role: "owner", Resource: "account:acme"})
			for i := range roles {
				for _, ws := range []string{"workspace:w1", "workspace:w2", "team:t1", "team:t2"} {
					snap.Roles = append(snap.Roles, authz.Role{Name: fmt.Sprintf("custom-%s-%d", authz.TypeOf(ws), i), Scope: ws, Permissions: []string{"join-call"}})
				}
			}
			for i := range calls {
				snap.Resources = append(snap.Resources, authz.Resource{Name: fmt.Sprintf("call:big-%d", i), Parent: "event:big"})
			}
			eng := startWith(b, snap)
			for i := 0; b.Loop(); i++ {
				if _, err := eng.PutResource(b.Context(), as("user:owner"), authz.Resource{Name: "event:big", Parent: []string{"team:t2", "team:t1"}[i%2]}); err != nil {
					b.Fatalf("moving event:big: %v", err)
				}
			}
		})
	}
}

// BenchmarkJudgingADeleteCostsWhatItRemoves measures a host's delete of the
// call it created, with 40,000 members it added, judged for each member at
// what the delete changes for that member, looked up by member. Before,
// each member's judgement scanned the write's changes for all the members:
// 18.5 s, under the lock that every write's planning and the index's next
// Apply share.
//
//	go test -run '^$' -bench 'JudgingADeleteCostsWhatItRemoves' -benchtime 3x ./authz/
func BenchmarkJudgingADeleteCostsWhatItRemoves(b *testing.B) {
	const members = 40_000
	p := streamPolicy()
	p.Permissions = append(p.Permissions, authz.Permission{Name: authz.PermResourcesDelete, Parents: []string{"end-call"}})
	snap := authz.Snapshot{Permissions: p.Permissions, Roles: p.Roles, Resources: []authz.Resource{
		{Name: "account:acme"}, {Name: "call:big", Parent: "account:acme"}}}
	snap.Grants = append(snap.Grants, authz.Grant{Subject: "user:host", Role: "host", Resource: "call:big"})
	for i := range members {
		snap.Grants = append(snap.Grants, authz.Grant{Subject: fmt.Sprintf("user:m%d", i), Role: "call-member", Resource: "call:big"})
	}
	benchDelete(b, snap, as("user:host"), "call:big")
}

// benchDelete times by's delete of name, each time from an engine newly
// started on snap, which is not timed.
func benchDelete(b *testing.B, snap authz.Snapshot, by authz.Author, name string) {
	for b.Loop() {
		b.StopTimer()
		eng := startWith(b, snap)
		b.StartTimer()
		if _, err := eng.DeleteResource(b.Context(), by, name); err != nil {
			b.Fatalf("DeleteResource(%s) by %q: %v", name, by.Actor, err)
		}
		b.StopTimer()
		if _, _, err := eng.Index().GetResource(name); authz.CodeOf(err) != authz.NotFound {
			b.Errorf("GetResource(%s) after its deletion = %v, want NotFound", name, err)
		}
		eng.Close()
		b.StartTimer()
	}
}

// startWith starts an engine on a memory backend holding snap.
func startWith(tb testing.TB, snap authz.Snapshot) *authz.Engine {
	tb.Helper()
	be := memory.New()
	if _, err := be.Commit(tb.Context(), []authz.Write{{Set: authz.ChangeSet{Caller: "test", Changes: storage.Puts(snap)}}}); err != nil {
		tb.Fatal(err)
	}
	eng, err := authz.Start(tb.Context(), be, authz.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(eng.Close)
	return eng
}

// An actor's grant of a role redefined on every call, whose definitions
// each list another role redefined on every call, weighs each call a few
// times, not every definition at each call: a tenant defining roles on its
// calls made each such grant cost the square of their number.
func TestAGrantWeighsRedefinitionsOnceEach(t *testing.T) {
	p := streamPolicy()
	p.Roles = append(p.Roles,
		authz.Role{Name: "boss", Scope: "root", Permissions: []string{"join-call", "update-call-permissions"}, AssignableRoles: []string{authz.Wildcard}},
		authz.Role{Name: "lead", Scope: "root", Permissions: []string{"join-call"}, AssignableRoles: []string{"guest"}},
		authz.Role{Name: "guest", Scope: "root", Permissions: []string{"join-call"}})
	w := newWorld(t, p)
	const calls = 2000
	var changes []authz.Change
	for i := range calls {
		call := fmt.Sprintf("call:livestream:c%d", i)
		changes = append(changes,
			authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: call, Parent: "calltype:livestream"}},
			authz.Change{Op: authz.OpPutRole, Role: &authz.Role{Name: "lead", Scope: call, Permissions: []string{"join-call"}, AssignableRoles: []string{"guest"}}},
			authz.Change{Op: authz.OpPutRole, Role: &authz.Role{Name: "guest", Scope: call, Permissions: []string{"join-call"}}})
	}
	w.store(changes...)
	w.grant("user:ann", "boss", "account:acme")
	weighed, err := authz.AssignWeighs(w.idx, "user:ann", "lead", "calltype:livestream")
	if err != nil || weighed > 8*calls {
		t.Errorf("ann's grant of lead over %d calls weighed %d resources, %v; want at most %d and no refusal", calls, weighed, err, 8*calls)
	}
	rev, err := w.eng.Grant(w.ctx, authz.Author{Caller: "test", Actor: "user:ann"}, authz.Grant{Subject: "user:bob", Role: "lead", Resource: "calltype:livestream"})
	w.ok("Grant", rev, err)
}

// A page of ListRoles with assignable_by weighs a bounded number of
// resources, however many roles it judges: each role judged through "*"
// weighs every resource below where the actor's own role is defined again,
// so a tenant that redefines its admins' role on each of its calls made a
// page of its roles cost their number times the calls, holding the index.
func TestAListRolesPageOfAssignableRolesWeighsABoundedNumberOfResources(t *testing.T) {
	p := streamPolicy()
	boss := authz.Role{Name: "boss", Scope: "root", Permissions: []string{"join-call", "update-call-permissions"}, AssignableRoles: []string{authz.Wildcard}}
	p.Roles = append(p.Roles, boss)
	const roles, calls = 100, 500
	for i := range roles {
		p.Roles = append(p.Roles, authz.Role{Name: fmt.Sprintf("guest-%d", i), Scope: "root", Permissions: []string{"join-call"}})
	}
	w := newWorld(t, p)
	var changes []authz.Change
	for i := range calls {
		call := fmt.Sprintf("call:livestream:c%d", i)
		again := boss
		again.Scope = call
		changes = append(changes,
			authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: call, Parent: "calltype:livestream"}},
			authz.Change{Op: authz.OpPutRole, Role: &again})
	}
	w.store(changes...)
	w.grant("user:ann", "boss", "account:acme")
	const most = 10_000 + 4*calls // the budget, and the role that passes it
	var listed int
	token := ""
	for pages := 0; ; pages++ {
		if pages > 2*roles {
			t.Fatalf("ListRoles(account:acme, assignable_by user:ann) still going after %d pages", pages)
		}
		page, next, weighed, err := authz.RolesPageWeighs(w.idx, "account:acme", "user:ann", authz.MaxPageSize, token)
		if err != nil {
			t.Fatal(err)
		}
		if weighed > most {
			t.Errorf("a page of %d roles weighed %d resources; want at most %d", len(page), weighed, most)
		}
		for _, r := range page {
			if strings.HasPrefix(r.Name, "guest-") {
				listed++
			}
		}
		if token = next; token == "" {
			break
		}
	}
	if listed != roles {
		t.Errorf("the pages listed %d of the %d guest roles, each of which user:ann may assign", listed, roles)
	}
}

// An actor without usher.grants.write on a resource learns nothing of the
// roles defined there: a grant of a role defined only in another tenant's
// account, or of no role at all, is refused for what the actor lacks, as a
// grant of a role it could see is; one that holds it is told the role is
// not defined there.
func TestAGrantByAnActorWithoutThePowerNamesNoRole(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.role(authz.Role{Name: "acme-vip", Scope: "account:acme", Permissions: []string{"join-call"}})
	w.grant("user:g-mod", "moderator", "account:globex")
	w.grant("user:a-admin", "admin", "account:acme")
	for _, role := range []string{"acme-vip", "no-such-role", "call-member"} {
		grant := func() (authz.Revision, error) {
			return w.eng.Grant(w.ctx, as("user:g-mod"), authz.Grant{Subject: "user:x", Role: role, Resource: "call:livestream:42"})
		}
		e := w.refuses(authz.PermissionDenied, "actor", "user:g-mod", grant)
		if e.Rule != authz.RuleMissingPermission || e.Meta["permission"] != "usher.grants.write" {
			t.Errorf("granting %q: rule %q, meta %v; want %q lacking usher.grants.write", role, e.Rule, e.Meta, authz.RuleMissingPermission)
		}
	}
	e := w.refuses(authz.NotFound, "role", "no-such-role", func() (authz.Revision, error) {
		return w.eng.Grant(w.ctx, as("user:a-admin"), authz.Grant{Subject: "user:x", Role: "no-such-role", Resource: "call:livestream:42"})
	})
	if e.Kind != authz.KindRoleNotFound {
		t.Errorf("a role that is not defined, granted by one who may grant: kind %q, want %q", e.Kind, authz.KindRoleNotFound)
	}
}
