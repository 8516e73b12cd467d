package authz_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// attackPolicy is a small world for composed writes by actors: an org with
// calls governed by a rule with a lobby (admitted as guest) and a stage.
// host holds everything and assigns guest; porter only admits; maker
// registers and moves resources; the creator of a call becomes its host.
func attackPolicy() authz.Policy {
	return authz.Policy{
		Permissions: []authz.Permission{
			{Name: "org.admin"},
			{Name: "org.build"},
			{Name: "call.admit"},
			{Name: "call.join"},
			{Name: "call.speak"},
			{Name: "call.record"},
			{Name: "call.stage"},
			{Name: authz.PermGrantsWrite, Parents: []string{"org.admin"}},
			{Name: authz.PermBlocksWrite, Parents: []string{"org.admin"}},
			{Name: authz.PermRolesWrite, Parents: []string{"org.admin"}},
			{Name: authz.PermQuotasWrite, Parents: []string{"org.admin"}},
			{Name: authz.PermResourcesCreate, Parents: []string{"org.admin", "org.build"}},
			{Name: authz.PermResourcesDelete, Parents: []string{"org.admin"}},
			{Name: authz.PermResourcesMove, Parents: []string{"org.admin", "org.build"}},
		},
		Resources: []authz.Resource{
			{Name: "org:a"},
			{Name: "call:1", Parent: "org:a"},
			{Name: "call:2", Parent: "org:a"},
			{Name: "org:b"},
		},
		Roles: []authz.Role{
			{Name: "host", Scope: "root", Permissions: []string{"org.admin", "call.admit", "call.join", "call.speak", "call.record", "call.stage"},
				AssignableRoles: []string{"guest"}},
			{Name: "guest", Scope: "root", Permissions: []string{"call.join", "call.speak"}},
			{Name: "porter", Scope: "root", Permissions: []string{"call.admit"}},
			{Name: "doorman", Scope: "root", Permissions: []string{"call.admit", "call.join"}},
			{Name: "maker", Scope: "root", Permissions: []string{"org.build"}},
		},
		CreatorRoles: []authz.CreatorRole{{ResourceType: "call", Role: "host"}},
		Admissions: []authz.Admission{{Scope: authz.RootName, ResourceType: "call", Join: "call.join", Stage: "call.stage",
			Lobby: &authz.Lobby{Admit: "call.admit", Role: "guest"}}},
	}
}

// refusedAttack makes write as actor and requires a refusal naming rule
// and the actor, with nothing written.
func refusedAttack(t *testing.T, w *world, actor, rule string, write func(by authz.Author) error) {
	t.Helper()
	before := load(w)
	err := write(as(actor))
	var e *authz.Error
	if !errors.As(err, &e) {
		t.Fatalf("the write by %s was not refused: %v", actor, err)
	}
	if e.Code != authz.PermissionDenied || e.Rule != rule || !strings.Contains(e.Error(), actor) {
		t.Fatalf("refused with %v (code %v, rule %q), want PERMISSION_DENIED for %q naming %s", err, e.Code, e.Rule, rule, actor)
	}
	if diff := diffSnapshots(load(w), before, w.clock.Now()); diff != "" {
		t.Fatalf("a refused write changed the state:\n%s", diff)
	}
}

func TestDelegationAttacksAdmit(t *testing.T) {
	t.Run("a porter, who only admits, may not admit with a role carrying what it lacks", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:p", "porter", "call:1")
		refusedAttack(t, w, "user:p", authz.RuleNoEscalation, func(by authz.Author) error {
			_, err := w.eng.Admit(w.ctx, by, "call:1", "user:x", time.Time{})
			return err
		})
	})
	t.Run("re-admitting a guest with an expiry is a revoke when it runs out", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:p", "doorman", "call:1")
		w.grant("user:g", "guest", "call:1")
		refusedAttack(t, w, "user:p", authz.RuleNoOverreach, func(by authz.Author) error {
			_, err := w.eng.Admit(w.ctx, by, "call:1", "user:g", w.clock.Now().Add(time.Hour))
			return err
		})
	})
	t.Run("admitting a banned subject gives, when the ban runs out, what the actor lacks", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:p", "doorman", "call:1")
		w.block(authz.Block{Subject: "user:x", Resource: "call:1", ID: "ban", Expires: w.clock.Now().Add(time.Hour)})
		refusedAttack(t, w, "user:p", authz.RuleNoEscalation, func(by authz.Author) error {
			_, err := w.eng.Admit(w.ctx, by, "call:1", "user:x", time.Time{})
			return err
		})
	})
	t.Run("an actor never admits itself", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:p", "host", "call:1")
		refusedAttack(t, w, "user:p", authz.RuleNoSelfService, func(by authz.Author) error {
			_, err := w.eng.Admit(w.ctx, by, "call:1", "user:p", time.Time{})
			return err
		})
	})
	t.Run("a blocked admit permission admits no one", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:p", "host", "call:1")
		w.block(authz.Block{Subject: "user:p", Resource: "call:1", ID: "b", Permissions: []string{"call.admit"}})
		refusedAttack(t, w, "user:p", authz.RuleMissingPermission, func(by authz.Author) error {
			_, err := w.eng.Admit(w.ctx, by, "call:1", "user:x", time.Time{})
			return err
		})
	})
}

func TestDelegationAttacksStage(t *testing.T) {
	w := newWorld(t, attackPolicy())
	w.grant("user:p", "doorman", "call:1")
	w.grant("user:h", "host", "call:2")
	refusedAttack(t, w, "user:p", authz.RuleMissingPermission, func(by authz.Author) error {
		_, err := w.eng.GoLive(w.ctx, by, "call:1", true)
		return err
	})
	refusedAttack(t, w, "user:h", authz.RuleMissingPermission, func(by authz.Author) error {
		_, err := w.eng.Schedule(w.ctx, by, "call:1", w.clock.Now().Add(time.Hour))
		return err
	})
	// Registering a call already live, under a parent where the actor may
	// create but not stage.
	w.grant("user:m", "maker", "org:a")
	refusedAttack(t, w, "user:m", authz.RuleMissingPermission, func(by authz.Author) error {
		_, err := w.eng.PutResource(w.ctx, by, authz.Resource{Name: "call:3", Parent: "org:a", Live: true})
		return err
	})
}

func TestDelegationAttacksStructure(t *testing.T) {
	t.Run("create-only on a registered name moves nothing, even for one who may move it", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:m", "maker", "root")
		before := load(w)
		_, err := w.eng.RegisterResource(w.ctx, as("user:m"), authz.Resource{Name: "call:1", Parent: "org:b"})
		var e *authz.Error
		if !errors.As(err, &e) || e.Code != authz.AlreadyExists {
			t.Fatalf("RegisterResource of a registered name: %v, want ALREADY_EXISTS", err)
		}
		if diff := diffSnapshots(load(w), before, w.clock.Now()); diff != "" {
			t.Fatalf("changed the state:\n%s", diff)
		}
	})
	t.Run("the creator role of a new call does not reach a call moved under it", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:m", "maker", "org:a")
		w.grant("user:h", "host", "call:1")
		if _, err := w.eng.PutResource(w.ctx, as("user:m"), authz.Resource{Name: "call:mine", Parent: "org:a"}); err != nil {
			t.Fatalf("register: %v", err)
		}
		refusedAttack(t, w, "user:m", authz.RuleNoSelfService, func(by authz.Author) error {
			_, err := w.eng.PutResource(w.ctx, by, authz.Resource{Name: "call:1", Parent: "call:mine"})
			return err
		})
	})
	t.Run("deleting a call does not shed one's own block there, to register it again as its host", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:h", "host", "call:1")
		w.block(authz.Block{Subject: "user:h", Resource: "call:1", ID: "mute", Permissions: []string{"call.speak"}})
		refusedAttack(t, w, "user:h", authz.RuleNoSelfService, func(by authz.Author) error {
			_, err := w.eng.DeleteResource(w.ctx, by, "call:1")
			return err
		})
	})
	t.Run("deleting a call a superior holds takes what the actor could not", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:h", "host", "call:1")
		w.grant("user:boss", "host", "call:1")
		w.grant("user:m", "maker", "org:a")
		w.role(authz.Role{Name: "wrecker", Scope: "root", Permissions: []string{"org.build", authz.PermResourcesDelete, "call.join"}})
		w.grant("user:w", "wrecker", "org:a")
		refusedAttack(t, w, "user:w", authz.RuleNoOverreach, func(by authz.Author) error {
			_, err := w.eng.DeleteResource(w.ctx, by, "call:1")
			return err
		})
	})
}
