package authz_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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
	t.Run("re-admitting a guest with an expiry, which would revoke it when it runs out, leaves its admission for good", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:p", "doorman", "call:1")
		w.grant("user:g", "guest", "call:1")
		w.writesNothing(func() (authz.Revision, error) {
			return w.eng.Admit(w.ctx, as("user:p"), "call:1", "user:g", w.clock.Now().Add(time.Hour))
		})
		w.clock.Advance(2 * time.Hour)
		if p := w.idx.Presence("user:g", "call:1"); !p.Joins || !p.Until.IsZero() {
			t.Errorf("user:g after the re-admission ran out: joins %v, until %v; want its grant for good", p.Joins, p.Until)
		}
	})
	t.Run("admitting a banned subject, which would give when the ban runs out what the actor lacks, admits no one: the subject is blocked", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.grant("user:p", "doorman", "call:1")
		w.block(authz.Block{Subject: "user:x", Resource: "call:1", ID: "ban", Expires: w.clock.Now().Add(time.Hour)})
		e := w.refuses(authz.FailedPrecondition, "subject", "user:x", func() (authz.Revision, error) {
			return w.eng.Admit(w.ctx, as("user:p"), "call:1", "user:x", time.Time{})
		})
		if e != nil && (authz.KindOf(e) != authz.KindSubjectBlocked || e.Meta["block"] != "ban") {
			t.Errorf("refused as %s (Meta %v), want %s naming block ban", authz.KindOf(e), e.Meta, authz.KindSubjectBlocked)
		}
	})
	t.Run("a doorman may not admit with a role that lets the admitted grant what the doorman may not", func(t *testing.T) {
		p := attackPolicy()
		p.Roles = append(p.Roles,
			authz.Role{Name: "door", Scope: "root", Permissions: []string{"call.admit", "call.join", authz.PermGrantsWrite}},
			authz.Role{Name: "attendee", Scope: "root", Permissions: []string{"call.join", authz.PermGrantsWrite}, AssignableRoles: []string{"attendee", "speaker"}},
			authz.Role{Name: "speaker", Scope: "root", Permissions: []string{"call.join", "call.speak", "call.record"}},
		)
		p.Admissions[0].Lobby.Role = "attendee"
		w := newWorld(t, p)
		w.grant("user:d", "door", "call:1")
		// Let in, the accomplice would grant user:d speaker, and with it
		// call.record, which user:d neither holds nor may assign.
		refusedAttack(t, w, "user:d", authz.RuleNoEscalation, func(by authz.Author) error {
			_, err := w.eng.Admit(w.ctx, by, "call:1", "user:x", time.Time{})
			return err
		})
		// An attendee that may assign only attendee is let in.
		w.role(authz.Role{Name: "attendee", Scope: "root", Permissions: []string{"call.join", authz.PermGrantsWrite}, AssignableRoles: []string{"attendee"}})
		rev, err := w.eng.Admit(w.ctx, as("user:d"), "call:1", "user:x", time.Time{})
		w.ok("Admit of an attendee who may invite attendees", rev, err)
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
	t.Run("a call deleted and registered again carries none of the grants, blocks or definitions it had", func(t *testing.T) {
		w := newWorld(t, attackPolicy())
		w.put("call:9", "org:a")
		w.grant("user:x", "host", "call:9")
		w.role(authz.Role{Name: "guest", Scope: "call:9", Permissions: []string{"call.join", "call.speak", "call.record"}})
		w.grant("user:g", "guest", "org:a")
		w.block(authz.Block{Subject: "user:g", Resource: "call:9", ID: "mute", Permissions: []string{"call.speak"}})
		w.block(authz.Block{Subject: "user:m", Resource: "call:9", ID: "ban"})
		w.grant("user:m", "maker", "org:a")
		w.deleteResource("call:9")
		if _, err := w.eng.PutResource(w.ctx, as("user:m"), authz.Resource{Name: "call:9", Parent: "org:a"}); err != nil {
			t.Fatalf("register again: %v", err)
		}
		for _, q := range []struct {
			subject, permission string
			want                bool
		}{
			{"user:x", "call.join", false}, {"user:g", "call.record", false}, {"user:g", "call.speak", true},
			{"user:m", "call.record", true}, {"user:m", "org.admin", true},
		} {
			if d := w.check(q.subject, q.permission, "call:9"); d.Allowed != q.want {
				t.Errorf("%s %s on call:9 after it is registered again: %v, want allowed %v", q.subject, q.permission, d, q.want)
			}
		}
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

// raceWrites plans a and b before either commits, as race does, and
// returns their revisions and errors.
func raceWrites(w *world, a, b func() (authz.Revision, error)) (revA, revB authz.Revision, errA, errB error) {
	w.be.setDelay(100 * time.Millisecond)
	defer w.be.setDelay(0)
	var wg sync.WaitGroup
	wg.Go(func() { revA, errA = a() })
	wg.Go(func() { revB, errB = b() })
	wg.Wait()
	return revA, revB, errA, errB
}

// A write by an actor is judged on every subject it could change, and
// committed only if none of them changed meanwhile: a grant committed while
// a move is planned, to a subject the move's ban would then catch, must
// not let the move take from that subject what the mover could not take
// directly.
func TestDelegationAttackRacesAMoveWithAGrant(t *testing.T) {
	for round := range 4 {
		w := newWorld(t, attackPolicy())
		w.role(authz.Role{Name: "mover", Scope: "root", Permissions: []string{"org.build", authz.PermBlocksWrite}})
		w.grant("user:a", "mover", "root")
		w.grant("user:a2", "host", "call:1")
		w.block(authz.Block{Subject: "user:z", Resource: "org:b", ID: "ban"})
		move := func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, as("user:a"), authz.Resource{Name: "call:1", Parent: "org:b"})
		}
		grant := func() (authz.Revision, error) {
			return w.eng.Grant(w.ctx, as("user:a2"), authz.Grant{Subject: "user:z", Role: "guest", Resource: "call:1"})
		}
		raceActorsWrite(t, w, round, move, grant, "user:a",
			"user:z lost \"call.join\" on call:1 to user:a's move, which user:a does not hold there")
	}
}

// The same for a role definition: a holder that keeps a permission through
// another grant when the definition is planned, and loses that grant
// before it commits, must not lose the permission to the definition.
func TestDelegationAttackRacesARoleDefinitionWithARevoke(t *testing.T) {
	for round := range 4 {
		w := newWorld(t, attackPolicy())
		w.role(authz.Role{Name: "speaker", Scope: "root", Permissions: []string{"call.speak"}})
		w.role(authz.Role{Name: "editor", Scope: "root", Permissions: []string{authz.PermRolesWrite, "call.join"}})
		w.grant("user:r", "editor", "call:1")
		w.grant("user:h", "guest", "call:1")
		w.grant("user:h", "speaker", "org:a")
		define := func() (authz.Revision, error) {
			return w.eng.PutRole(w.ctx, as("user:r"), authz.Role{Name: "guest", Scope: "call:1", Permissions: []string{"call.join"}})
		}
		revoke := func() (authz.Revision, error) {
			return w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:h", Role: "speaker", Resource: "org:a"})
		}
		raceActorsWrite(t, w, round, define, revoke, "user:r",
			"user:h lost \"call.speak\" on call:1 to user:r's definition, which user:r does not hold there")
	}
}

// raceActorsWrite races an actor's write with another that changes what
// it judges, the actor's first in even rounds: the actor's may commit only
// before the other, or be refused by the no-overreach rule naming actor;
// committed after it, loss is what the actor took.
func raceActorsWrite(t *testing.T, w *world, round int, actors, other func() (authz.Revision, error), actor, loss string) {
	t.Helper()
	var rev, otherRev authz.Revision
	var err, otherErr error
	if round%2 == 0 {
		rev, otherRev, err, otherErr = raceWrites(w, actors, other)
	} else {
		otherRev, rev, otherErr, err = raceWrites(w, other, actors)
	}
	if otherErr != nil {
		t.Fatalf("round %d: the other write: %v", round, otherErr)
	}
	if err == nil && rev > otherRev {
		t.Fatalf("round %d: %s's write committed after the other (revisions %d, %d): %s", round, actor, rev, otherRev, loss)
	}
	if err != nil {
		var e *authz.Error
		if !errors.As(err, &e) || e.Code != authz.PermissionDenied || e.Rule != authz.RuleNoOverreach || !strings.Contains(e.Error(), actor) {
			t.Fatalf("round %d: %s's write was refused with %v, want %s naming %s", round, actor, err, authz.RuleNoOverreach, actor)
		}
	}
}

// Unblocking every block one may lift is judged as the blocks are lifted
// one after another, when they may not all be lifted at once: all those
// verdicts are one write's, and share its budget of judged pairs, or a
// moderator could have one write judge a hundred times what any other may.
func TestDelegationAttackUnblockAllWithinOneBudget(t *testing.T) {
	blocked := func(t *testing.T, limits authz.Limits) *world {
		w := newLimitedWorld(t, attackPolicy(), limits)
		w.grant("user:h", "host", "org:a")
		w.grant("user:x", "maker", "org:a")
		for i := range 20 {
			call := fmt.Sprintf("call:r%02d", i)
			w.put(call, "org:a")
			w.role(authz.Role{Name: "guest", Scope: call, Permissions: []string{"call.join"}})
		}
		// The ban takes org.build, which the host may not give back; the
		// mutes take nothing the ban does not.
		w.block(authz.Block{Subject: "user:x", Resource: "org:a", ID: "ban"})
		for i := range 10 {
			w.block(authz.Block{Subject: "user:x", Resource: "org:a", ID: fmt.Sprintf("mute-%02d", i), Permissions: []string{"call.speak"}})
		}
		return w
	}
	left := func(w *world) []string {
		var ids []string
		for _, b := range load(w).Blocks {
			ids = append(ids, b.ID)
		}
		return ids
	}
	t.Run("the host lifts the mutes and not the ban", func(t *testing.T) {
		w := blocked(t, authz.Limits{})
		if _, err := w.eng.Unblock(w.ctx, as("user:h"), "user:x", "org:a", ""); err != nil {
			t.Fatalf("Unblock of all: %v", err)
		}
		if ids := left(w); len(ids) != 1 || ids[0] != "ban" {
			t.Errorf("blocks left: %v, want the ban alone", ids)
		}
	})
	t.Run("lifting them one by one is judged within one write's budget", func(t *testing.T) {
		// One verdict judges x at 22 points; the ten mutes lifted one by
		// one take ten of them.
		w := blocked(t, authz.Limits{Judged: 100})
		before := load(w)
		_, err := w.eng.Unblock(w.ctx, as("user:h"), "user:x", "org:a", "")
		var e *authz.Error
		if !errors.As(err, &e) || e.Code != authz.ResourceExhausted {
			t.Fatalf("Unblock of all, judged beyond the budget: %v, want RESOURCE_EXHAUSTED", err)
		}
		if diff := diffSnapshots(load(w), before, w.clock.Now()); diff != "" {
			t.Fatalf("a refused write changed the state:\n%s", diff)
		}
		if _, err := w.eng.Unblock(w.ctx, as("user:h"), "user:x", "org:a", "mute-00"); err != nil {
			t.Errorf("Unblock of one mute, within the budget: %v", err)
		}
	})
	t.Run("judged together beyond the budget, none is lifted", func(t *testing.T) {
		// The verdict on all of them together takes 22 points alone.
		w := blocked(t, authz.Limits{Judged: 10})
		before := load(w)
		_, err := w.eng.Unblock(w.ctx, as("user:h"), "user:x", "org:a", "")
		var e *authz.Error
		if !errors.As(err, &e) || e.Code != authz.ResourceExhausted || e.Field != "actor" || e.Value != "user:h" {
			t.Fatalf("Unblock of all, judged together beyond the budget: %v, want RESOURCE_EXHAUSTED", err)
		}
		if e.Meta["limit"] != "10" {
			t.Errorf("refusal's metadata %v, want limit 10", e.Meta)
		}
		if diff := diffSnapshots(load(w), before, w.clock.Now()); diff != "" {
			t.Fatalf("a refused write changed the state:\n%s", diff)
		}
	})
}

// A subject that holds no grant is judged at the resource the write
// concerns alone, for its permissions are empty everywhere; what the write
// lifts or imposes on it is still held to the rules of Unblock and Block.
func TestDelegationAttackOnASubjectHoldingNothing(t *testing.T) {
	w := newWorld(t, attackPolicy())
	w.grant("user:m", "maker", "root")
	w.put("call:sub", "call:1")
	w.role(authz.Role{Name: "guest", Scope: "call:sub", Permissions: []string{"call.join"}})
	w.block(authz.Block{Subject: "user:v", Resource: "org:a", ID: "ban"})
	t.Run("a move out from under a visitor's ban needs usher.blocks.write where the ban is", func(t *testing.T) {
		refusedAttack(t, w, "user:m", authz.RuleMissingPermission, func(by authz.Author) error {
			_, err := w.eng.PutResource(w.ctx, by, authz.Resource{Name: "call:1", Parent: "org:b"})
			var e *authz.Error
			if errors.As(err, &e) && (e.Meta["subject"] != "user:v" || e.Meta["permission"] != authz.PermBlocksWrite) {
				t.Errorf("refused with %v (%v), want the visitor's ban named", err, e.Meta)
			}
			return err
		})
	})
	t.Run("a visitor banned and let back by a host", func(t *testing.T) {
		w.grant("user:h", "host", "org:a")
		if _, err := w.eng.Unblock(w.ctx, as("user:h"), "user:v", "org:a", "ban"); err != nil {
			t.Fatalf("Unblock of a visitor's ban: %v", err)
		}
		if _, _, err := w.eng.Block(w.ctx, as("user:h"), authz.Block{Subject: "user:v", Resource: "org:a", ID: "ban"}); err != nil {
			t.Fatalf("Block of a visitor: %v", err)
		}
	})
}

// Granting a role through "*" hands its holder the roles it lists in
// assignable_roles: each must be one the actor may assign there, as a
// definition's are bounded by the actor's own. Otherwise an actor could
// give an accomplice the power to grant it, or anyone, a role it may
// neither hold nor assign, and take it back by a revoke it could not make.
func TestDelegationAttacksAWildcardGrantOfARoleThatAssignsMore(t *testing.T) {
	policy := func() authz.Policy {
		p := attackPolicy()
		p.Roles = append(p.Roles,
			authz.Role{Name: "coord", Scope: "root", Permissions: []string{authz.PermGrantsWrite, "call.join"}, AssignableRoles: []string{authz.Wildcard}},
			authz.Role{Name: "lead", Scope: "root", Permissions: []string{authz.PermGrantsWrite, "call.join"}, AssignableRoles: []string{"host"}},
			authz.Role{Name: "usher", Scope: "root", Permissions: []string{authz.PermGrantsWrite, "call.join"}, AssignableRoles: []string{"guest-lite", "usher"}},
			authz.Role{Name: "guest-lite", Scope: "root", Permissions: []string{"call.join"}},
		)
		return p
	}
	w := newWorld(t, policy())
	w.grant("user:a", "coord", "org:a")
	// lead carries nothing user:a lacks, but lets its holder grant host,
	// which carries call.record: user:a's accomplice would grant it back.
	refusedAttack(t, w, "user:a", authz.RuleNotAssignable, func(by authz.Author) error {
		_, err := w.eng.Grant(w.ctx, by, authz.Grant{Subject: "user:x", Role: "lead", Resource: "org:a"})
		return err
	})
	// A role that lists only what the actor may assign, itself included, is
	// granted: the cycle of its list is looked at once.
	rev, err := w.eng.Grant(w.ctx, as("user:a"), authz.Grant{Subject: "user:x", Role: "usher", Resource: "org:a"})
	w.ok("grant of usher, which assigns only what user:a may", rev, err)
	// The revoke of a binding is judged as granting it: a coord may not take
	// lead from someone it could not give it to.
	w.grant("user:l", "lead", "org:a")
	refusedAttack(t, w, "user:a", authz.RuleNotAssignable, func(by authz.Author) error {
		_, err := w.eng.Revoke(w.ctx, by, authz.Grant{Subject: "user:l", Role: "lead", Resource: "org:a"})
		return err
	})
}

// Names are global: deleting a resource one holds until tomorrow and
// registering it again under another parent, where one may register its
// type, would turn the grant into its creator role with no expiry. The
// delete is refused as it is where the resource's own parent allows it.
func TestDelegationAttacksADeleteToRegisterAgainElsewhere(t *testing.T) {
	for _, where := range []string{"workspace:vancast-live", "workspace:vancast-sales"} {
		w := newWorld(t, vancastPolicy())
		w.put("event:gala", "workspace:vancast-live")
		w.grantUntil("user:bob", "event.owner", "event:gala", w.clock.Now().Add(24*time.Hour))
		w.grant("user:bob", "workspace.administrator", where)
		refusedAttack(t, w, "user:bob", authz.RuleNoSelfService, func(by authz.Author) error {
			_, err := w.eng.DeleteResource(w.ctx, by, "event:gala")
			return err
		})
	}
}

// Roles that list each other are judged together: a cycle that reaches a
// role the actor may not assign refuses every role in it, in one listing
// or one grant at a time, and a cycle that reaches none refuses none.
func TestDelegationAttacksACycleOfAssignableRoles(t *testing.T) {
	p := attackPolicy()
	role := func(name string, assigns ...string) authz.Role {
		return authz.Role{Name: name, Scope: "root", Permissions: []string{authz.PermGrantsWrite, "call.join"}, AssignableRoles: assigns}
	}
	p.Roles = append(p.Roles,
		authz.Role{Name: "coord", Scope: "root", Permissions: []string{authz.PermGrantsWrite, "call.join"}, AssignableRoles: []string{authz.Wildcard}},
		// cyc-b is looked at on cyc-a's way, leaning on cyc-a, before
		// cyc-a's host (which carries what coord lacks) refuses it.
		role("cyc-a", "cyc-b", "host"), role("cyc-b", "cyc-a"),
		role("ok-c", "ok-d"), role("ok-d", "ok-c", "guest-lite"),
		authz.Role{Name: "guest-lite", Scope: "root", Permissions: []string{"call.join"}},
	)
	w := newWorld(t, p)
	w.grant("user:a", "coord", "org:a")
	roles, _, err := w.idx.AssignableRoles("org:a", "user:a")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, r := range roles {
		listed = append(listed, r.Name)
	}
	for _, name := range []string{"ok-c", "ok-d", "guest-lite"} {
		if !slices.Contains(listed, name) {
			t.Errorf("assignable roles %v lack %s", listed, name)
		}
	}
	for _, name := range []string{"cyc-a", "cyc-b", "host"} {
		if slices.Contains(listed, name) {
			t.Errorf("assignable roles %v hold %s", listed, name)
		}
		refusedAttack(t, w, "user:a", authz.RuleNotAssignable, func(by authz.Author) error {
			_, err := w.eng.Grant(w.ctx, by, authz.Grant{Subject: "user:x", Role: name, Resource: "org:a"})
			return err
		})
	}
}

// Where the actor may register a type is not only where it holds a grant:
// a role it holds above may be redefined below, with the power to register.
// A member of the account, who may create events only in the sales
// workspace (its member role is redefined there), would delete the event it
// owns until tomorrow and register it again there, as its owner for good.
func TestDelegationAttacksADeleteToRegisterAgainBelowAGrant(t *testing.T) {
	p := vancastPolicy()
	p.Roles = append(p.Roles,
		authz.Role{Name: "member", Scope: "root", Permissions: []string{"account.billing.view"}},
		authz.Role{Name: "member", Scope: "workspace:vancast-sales", Permissions: []string{"account.billing.view", "workspace.events.create"}})
	w := newWorld(t, p)
	w.put("event:gala", "workspace:vancast-live")
	w.grantUntil("user:bob", "event.owner", "event:gala", w.clock.Now().Add(24*time.Hour))
	w.grant("user:bob", "member", "account:vancast")
	refusedAttack(t, w, "user:bob", authz.RuleNoSelfService, func(by authz.Author) error {
		_, err := w.eng.DeleteResource(w.ctx, by, "event:gala")
		return err
	})
}

// A creator holds its creator role for good, but a definition of that role
// on the resource itself may hold it to less: deleting the resource, and
// registering it again where the role means more, sheds the definition of
// a role it holds. The delete is refused wherever it could register the
// resource again with more; where the definition on the resource gives no
// less than registering it again would, it is allowed.
func TestDelegationAttacksADeleteToShedARestatedCreatorRole(t *testing.T) {
	restated := func(perms ...string) *world {
		w := newWorld(t, attackPolicy())
		w.grant("user:h", "maker", "org:a")
		w.putAs("user:h", "call:9", "org:a")
		w.role(authz.Role{Name: "host", Scope: "call:9", Permissions: perms, AssignableRoles: []string{"guest"}})
		return w
	}
	t.Run("restated with less", func(t *testing.T) {
		w := restated("org.admin", "call.admit", "call.join", "call.speak")
		if w.check("user:h", "call.record", "call:9").Allowed {
			t.Fatal("the restated host role lets its holder record")
		}
		refusedAttack(t, w, "user:h", authz.RuleNoSelfService, func(by authz.Author) error {
			_, err := w.eng.DeleteResource(w.ctx, by, "call:9")
			return err
		})
	})
	t.Run("restated with less, registered again elsewhere", func(t *testing.T) {
		w := restated("org.admin", "call.admit", "call.join", "call.speak")
		// Only under org:b may it register calls again: not under org:a.
		w.role(authz.Role{Name: "maker", Scope: "org:a", Permissions: []string{"call.join"}})
		w.grant("user:h", "maker", "org:b")
		refusedAttack(t, w, "user:h", authz.RuleNoSelfService, func(by authz.Author) error {
			_, err := w.eng.DeleteResource(w.ctx, by, "call:9")
			return err
		})
	})
	t.Run("restated with as much", func(t *testing.T) {
		w := restated("org.admin", "call.admit", "call.join", "call.speak", "call.record", "call.stage")
		if _, err := w.eng.DeleteResource(w.ctx, as("user:h"), "call:9"); err != nil {
			t.Fatalf("deleting the call it created: %v", err)
		}
	})
}

// A block on a resource above one a creator holds for good goes with it
// wherever the resource is: a move out from under it is refused, as the
// actor would lift its own block. Deleting the resource and registering it
// again elsewhere, as its creator, would shed the block all the same.
func TestDelegationAttacksADeleteToShedABlockAbove(t *testing.T) {
	blocked := func() *world {
		w := newWorld(t, attackPolicy())
		w.grant("user:h", "maker", "org:a")
		w.grant("user:h", "maker", "org:b")
		w.putAs("user:h", "call:9", "org:a")
		w.block(authz.Block{Subject: "user:h", Resource: "org:a", ID: "no-rec", Permissions: []string{"call.record"}})
		return w
	}
	t.Run("moved out from under the block", func(t *testing.T) {
		w := blocked()
		refusedAttack(t, w, "user:h", authz.RuleNoSelfService, func(by authz.Author) error {
			_, err := w.eng.PutResource(w.ctx, by, authz.Resource{Name: "call:9", Parent: "org:b"})
			return err
		})
	})
	t.Run("deleted, to be registered again out from under the block", func(t *testing.T) {
		w := blocked()
		refusedAttack(t, w, "user:h", authz.RuleNoSelfService, func(by authz.Author) error {
			_, err := w.eng.DeleteResource(w.ctx, by, "call:9")
			return err
		})
	})
	t.Run("deleted where registering it again sheds nothing", func(t *testing.T) {
		w := blocked()
		w.block(authz.Block{Subject: "user:h", Resource: "org:b", ID: "no-rec", Permissions: []string{"call.record"}})
		if _, err := w.eng.DeleteResource(w.ctx, as("user:h"), "call:9"); err != nil {
			t.Fatalf("deleting the call it created, blocked alike wherever it may register it: %v", err)
		}
	})
}

// A move, a role definition or a deletion changes which definition of a
// role name is nearest, and with it what the role's holders may hand out:
// the roles their roles list in assignable_roles, and what those carry.
// Bounded like a definition's ("its permissions and assignable_roles are
// bounded by the actor's own"), or an actor would make an accomplice able
// to give it, or anyone, a role it may neither hold nor assign.
func TestDelegationAttacksAStructuralWriteThatLetsAHolderAssignMore(t *testing.T) {
	lead := func(scope string, assigns ...string) authz.Role {
		return authz.Role{Name: "lead", Scope: scope, Permissions: []string{authz.PermGrantsWrite, "call.join"}, AssignableRoles: assigns}
	}
	for _, tc := range []struct {
		name  string
		roles []authz.Role
	}{
		{"a move under a definition that lets a holder assign a role the mover may not",
			[]authz.Role{lead("root", "guest"), lead("org:b", "guest", "host")}},
		{"a move under a definition that makes a role a holder may assign carry what the mover lacks",
			[]authz.Role{lead("root", "helper"),
				{Name: "helper", Scope: "root", Permissions: []string{"call.join"}},
				{Name: "helper", Scope: "org:b", Permissions: []string{"call.join", "call.record"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := attackPolicy()
			p.Roles = append(p.Roles, tc.roles...)
			w := newWorld(t, p)
			w.grant("user:m", "maker", "root")
			w.grant("user:b", "lead", "call:1")
			refusedAttack(t, w, "user:m", authz.RuleNoEscalation, func(by authz.Author) error {
				_, err := w.eng.PutResource(w.ctx, by, authz.Resource{Name: "call:1", Parent: "org:b"})
				return err
			})
		})
	}
	t.Run("deleting a definition that kept a holder from assigning a role the actor may not", func(t *testing.T) {
		p := attackPolicy()
		p.Roles = append(p.Roles, lead("root", "guest", "host"), lead("call:1", "guest"),
			authz.Role{Name: "editor", Scope: "root", Permissions: []string{authz.PermRolesWrite, "call.join"}})
		w := newWorld(t, p)
		w.grant("user:e", "editor", "call:1")
		w.grant("user:b", "lead", "call:1")
		refusedAttack(t, w, "user:e", authz.RuleNoEscalation, func(by authz.Author) error {
			_, err := w.eng.DeleteRole(w.ctx, by, "call:1", "lead")
			return err
		})
	})
	t.Run("a move under a definition that lets a holder assign only what the mover may is allowed", func(t *testing.T) {
		p := attackPolicy()
		p.Roles = append(p.Roles, lead("root"), lead("org:b", "guest"),
			authz.Role{Name: "mover", Scope: "root", Permissions: []string{"org.build", "call.join", "call.speak"}, AssignableRoles: []string{"guest"}})
		w := newWorld(t, p)
		w.grant("user:m", "mover", "root")
		w.grant("user:b", "lead", "call:1")
		rev, err := w.eng.PutResource(w.ctx, as("user:m"), authz.Resource{Name: "call:1", Parent: "org:b"})
		w.ok("move of call:1 under org:b", rev, err)
	})
}

// Lifting a ban gives back what the subject's roles let it hand out, as
// well as what they let it do: an unblock "gives back only what rule 1
// allows", or a moderator would let a banned lead back in to have it grant
// the moderator a role the moderator may neither hold nor assign.
func TestDelegationAttacksAnUnblockThatLetsAHolderAssignMore(t *testing.T) {
	p := attackPolicy()
	p.Roles = append(p.Roles,
		authz.Role{Name: "lead", Scope: "root", Permissions: []string{authz.PermGrantsWrite, "call.join"}, AssignableRoles: []string{"host"}},
		authz.Role{Name: "mod", Scope: "root", Permissions: []string{authz.PermBlocksWrite, authz.PermGrantsWrite, "call.join"}, AssignableRoles: []string{"guest"}},
	)
	w := newWorld(t, p)
	w.grant("user:mod", "mod", "call:1")
	w.grant("user:b", "lead", "call:1")
	w.block(authz.Block{Subject: "user:b", Resource: "call:1", ID: "ban"})
	refusedAttack(t, w, "user:mod", authz.RuleNoEscalation, func(by authz.Author) error {
		_, err := w.eng.Unblock(w.ctx, by, "user:b", "call:1", "ban")
		return err
	})
	refusedAttack(t, w, "user:mod", authz.RuleNoEscalation, func(by authz.Author) error {
		_, _, err := w.eng.Block(w.ctx, by, authz.Block{Subject: "user:b", Resource: "call:1", ID: "ban", Permissions: []string{"call.record"}})
		return err
	})
	// A ban on a subject whose roles let it assign only what the moderator
	// may is lifted.
	w.grant("user:g", "mod", "call:1")
	w.block(authz.Block{Subject: "user:g", Resource: "call:1", ID: "ban"})
	rev, err := w.eng.Unblock(w.ctx, as("user:mod"), "user:g", "call:1", "ban")
	w.ok("Unblock of a moderator's ban by a moderator", rev, err)
}

// Through "*", a role is the actor's to assign only if it holds the role's
// permissions wherever the grant gives them: below the resource too, where
// a role the actor holds is defined again with less, or where the actor is
// muted. ListRoles with assignable_by lists only the roles a grant would
// take, and the grant is refused for the Grant rule, writing nothing.
func TestDelegationAttacksAWildcardGrantBelowWhereTheActorHoldsLess(t *testing.T) {
	policy := func() authz.Policy {
		p := attackPolicy()
		p.Roles = append(p.Roles,
			authz.Role{Name: "chief", Scope: "root", Permissions: []string{"org.admin", "call.join", "call.record"}, AssignableRoles: []string{authz.Wildcard}},
			authz.Role{Name: "recorder", Scope: "root", Permissions: []string{"call.record"}},
			authz.Role{Name: "joiner", Scope: "root", Permissions: []string{"call.join"}},
		)
		return p
	}
	for _, c := range []struct {
		name   string
		narrow func(w *world)
	}{
		{"the actor's role defined again below with less", func(w *world) {
			w.role(authz.Role{Name: "chief", Scope: "call:1", Permissions: []string{"org.admin", "call.join"}, AssignableRoles: []string{authz.Wildcard}})
		}},
		{"the actor muted below", func(w *world) {
			w.block(authz.Block{Subject: "user:c", Resource: "call:2", ID: "mute", Permissions: []string{"call.record"}})
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, policy())
			w.grant("user:c", "chief", "org:a")
			c.narrow(w)
			roles, _, err := w.idx.AssignableRoles("org:a", "user:c")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range roles {
				names = append(names, r.Name)
			}
			if slices.Contains(names, "recorder") || !slices.Contains(names, "joiner") {
				t.Errorf("AssignableRoles(org:a, user:c) = %v, want joiner and not recorder", names)
			}
			page, _, _, err := w.idx.ListRolesPage("org:a", "user:c", 100, "")
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(page, func(r authz.Role) bool { return r.Name == "recorder" }) {
				t.Errorf("ListRoles(org:a, assignable_by user:c) lists recorder")
			}
			refusedAttack(t, w, "user:c", authz.RuleNotAssignable, func(by authz.Author) error {
				_, err := w.eng.Grant(w.ctx, by, authz.Grant{Subject: "user:x", Role: "recorder", Resource: "org:a"})
				return err
			})
			rev, err := w.eng.Grant(w.ctx, as("user:c"), authz.Grant{Subject: "user:x", Role: "joiner", Resource: "org:a"})
			w.ok("grant of joiner, which user:c holds everywhere below org:a", rev, err)
		})
	}
}

// What a definition, a move, a deletion or a ban takes from a role's
// holders is bounded by rule 2 as what they may hand out, too: "you take
// away only what you could give". A deputy, who may not appoint deputies,
// may not strip its chief of appointing them, by restating the chief's
// role below or by banning the chief.
func TestDelegationAttacksAWriteThatTakesFromAHolderWhatItMayAssign(t *testing.T) {
	policy := func() authz.Policy {
		p := attackPolicy()
		p.Roles = append(p.Roles,
			authz.Role{Name: "chief", Scope: "root", Permissions: []string{"org.admin", "call.join"}, AssignableRoles: []string{"deputy", "guest"}},
			authz.Role{Name: "deputy", Scope: "root", Permissions: []string{"org.admin", "call.join"}, AssignableRoles: []string{"guest"}},
		)
		return p
	}
	t.Run("restating the chief's role below without deputy", func(t *testing.T) {
		w := newWorld(t, policy())
		w.grant("user:chief", "chief", "org:a")
		w.grant("user:dep", "deputy", "org:a")
		refusedAttack(t, w, "user:dep", authz.RuleNoOverreach, func(by authz.Author) error {
			_, err := w.eng.PutRole(w.ctx, by, authz.Role{Name: "chief", Scope: "call:1", Permissions: []string{"org.admin", "call.join"}, AssignableRoles: []string{"guest"}})
			return err
		})
	})
	t.Run("banning the chief", func(t *testing.T) {
		w := newWorld(t, policy())
		w.grant("user:chief", "chief", "org:a")
		w.grant("user:dep", "deputy", "org:a")
		refusedAttack(t, w, "user:dep", authz.RuleNoOverreach, func(by authz.Author) error {
			_, _, err := w.eng.Block(w.ctx, by, authz.Block{Subject: "user:chief", Resource: "call:1", ID: "ban"})
			return err
		})
		// A fellow deputy, who appoints no more than it may, is banned.
		w.grant("user:dep2", "deputy", "org:a")
		_, _, err := w.eng.Block(w.ctx, as("user:dep"), authz.Block{Subject: "user:dep2", Resource: "call:1", ID: "ban"})
		if err != nil {
			t.Fatalf("a deputy banning a deputy: %v", err)
		}
	})
}

// A role of "*" carries every permission a later policy declares, which an
// actor holding every permission declared today does not: it may not grant
// such a role, nor let someone come to hold one, or no longer hold one, by
// any other write.
func TestDelegationAttacksAWriteThatLetsAHolderCarryEverything(t *testing.T) {
	policy := func() authz.Policy {
		return authz.Policy{
			Permissions: []authz.Permission{
				{Name: "call.join"}, {Name: "call.record"},
				{Name: authz.PermGrantsWrite}, {Name: authz.PermRolesWrite}, {Name: authz.PermBlocksWrite},
				{Name: authz.PermResourcesCreate}, {Name: authz.PermResourcesMove},
			},
			Resources: []authz.Resource{{Name: "org:a"}, {Name: "call:1", Parent: "org:a"}, {Name: "org:b"}},
			Roles: []authz.Role{
				{Name: "boss", Scope: "root", Permissions: []string{authz.Wildcard}},
				{Name: "boss", Scope: "call:1", Permissions: []string{"call.join"}},
				{Name: "boss", Scope: "org:a", Permissions: []string{"call.join", "call.record"}},
				// Every permission declared, listed one by one, and leave to
				// grant roles whose permissions are its own.
				{Name: "owner", Scope: "root", Permissions: []string{"call.join", "call.record", authz.PermGrantsWrite, authz.PermRolesWrite,
					authz.PermBlocksWrite, authz.PermResourcesCreate, authz.PermResourcesMove}, AssignableRoles: []string{authz.Wildcard}},
				{Name: "root-owner", Scope: "root", Permissions: []string{authz.Wildcard}, AssignableRoles: []string{authz.Wildcard}},
			},
		}
	}
	undefine := func(w *world, scope, name string) {
		rev, err := w.eng.DeleteRole(w.ctx, w.by, scope, name)
		w.ok("DeleteRole", rev, err)
	}
	world := func(t *testing.T) *world {
		w := newWorld(t, policy())
		w.grant("user:b", "boss", "org:a")
		w.grant("user:a", "owner", "root")
		return w
	}
	// Each write below gives or takes, by today's permissions, only what
	// user:a holds.
	wildcard := func(t *testing.T, err error, resource string) {
		t.Helper()
		var e *authz.Error
		if errors.As(err, &e) && (e.Meta["permission"] != authz.Wildcard || e.Meta["subject"] != "user:b" || e.Meta["resource"] != resource) {
			t.Errorf("refused with details %v, want permission %q, subject user:b, resource %s", e.Meta, authz.Wildcard, resource)
		}
	}
	t.Run("granting it is refused", func(t *testing.T) {
		w := world(t)
		refusedAttack(t, w, "user:a", authz.RuleNotAssignable, func(by authz.Author) error {
			_, err := w.eng.Grant(w.ctx, by, authz.Grant{Subject: "user:c", Role: "boss", Resource: "org:b"})
			return err
		})
	})
	t.Run("so is deleting the definitions that keep a holder from it", func(t *testing.T) {
		w := world(t)
		undefine(w, "call:1", "boss")
		refusedAttack(t, w, "user:a", authz.RuleNoEscalation, func(by authz.Author) error {
			_, err := w.eng.DeleteRole(w.ctx, by, "org:a", "boss")
			wildcard(t, err, "org:a")
			return err
		})
	})
	t.Run("and moving a call its holder holds the role above out from under them", func(t *testing.T) {
		w := world(t)
		undefine(w, "call:1", "boss")
		w.grant("user:b", "boss", "call:1")
		refusedAttack(t, w, "user:a", authz.RuleNoEscalation, func(by authz.Author) error {
			_, err := w.eng.PutResource(w.ctx, by, authz.Resource{Name: "call:1", Parent: "org:b"})
			wildcard(t, err, "call:1")
			return err
		})
	})
	t.Run("and restating it, without it, where someone holds it", func(t *testing.T) {
		w := world(t)
		undefine(w, "call:1", "boss")
		w.grant("user:b", "boss", "call:1")
		undefine(w, "org:a", "boss")
		refusedAttack(t, w, "user:a", authz.RuleNoOverreach, func(by authz.Author) error {
			_, err := w.eng.PutRole(w.ctx, by, authz.Role{Name: "boss", Scope: "call:1", Permissions: []string{"call.join", "call.record",
				authz.PermGrantsWrite, authz.PermRolesWrite, authz.PermBlocksWrite, authz.PermResourcesCreate, authz.PermResourcesMove}})
			wildcard(t, err, "call:1")
			return err
		})
	})
	t.Run("and letting one who may grant it by name give it", func(t *testing.T) {
		p := policy()
		p.Roles = append(p.Roles, authz.Role{Name: "lead", Scope: "root", Permissions: []string{"call.join", authz.PermGrantsWrite}, AssignableRoles: []string{"boss"}})
		w := newWorld(t, p)
		w.grant("user:a", "owner", "root")
		w.grant("user:b", "lead", "org:a")
		undefine(w, "call:1", "boss")
		refusedAttack(t, w, "user:a", authz.RuleNoEscalation, func(by authz.Author) error {
			_, err := w.eng.DeleteRole(w.ctx, by, "org:a", "boss")
			wildcard(t, err, "org:a")
			return err
		})
	})
	t.Run("an actor whose own role carries it may", func(t *testing.T) {
		w := world(t)
		w.grant("user:r", "root-owner", "root")
		undefine(w, "call:1", "boss")
		rev, err := w.eng.DeleteRole(w.ctx, as("user:r"), "org:a", "boss")
		w.ok("DeleteRole by an actor carrying *", rev, err)
		if d := w.check("user:b", "call.record", "call:1"); !d.Allowed {
			t.Errorf("user:b call.record on call:1 after the deletion: %v", d)
		}
	})
}
