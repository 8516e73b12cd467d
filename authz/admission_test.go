package authz_test

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

// The calls admissionPolicy's rules govern.
const (
	lobbyCall  = "call:default:1"     // root's rule: a lobby, a backstage
	liveCall   = "call:livestream:42" // calltype:livestream's rule: exclusive host and end-call
	liveCall2  = "call:livestream:43"
	globexCall = "call:globex:7" // calltype:globex's rule: no stage permission, an admit role defined only at another account
)

// rootCallRule governs every call that no nearer rule does: it joins with
// join-call, lets join-backstage in early, is staged with update-call, and
// keeps a lobby that admit-participants admits from (with the guest role)
// and skip-lobby bypasses.
func rootCallRule() authz.Admission {
	return authz.Admission{Scope: authz.RootName, ResourceType: "call", Join: "join-call", Backstage: "join-backstage",
		Stage: "update-call", JoinAhead: 10 * time.Minute, MaxParticipants: 100, UncountedRoles: []string{"host"},
		Lobby: &authz.Lobby{Admit: "admit-participants", Role: "guest", Bypass: "skip-lobby"}}
}

// livestreamRule overrides root's for calltype:livestream's calls: no
// lobby, closed until live, one host and one holder of end-call at a time,
// and a LiveKit mapping.
func livestreamRule() authz.Admission {
	return authz.Admission{Scope: "calltype:livestream", ResourceType: "call", Join: "join-call", Stage: "update-call",
		RequireLive: true, ExclusiveRoles: []string{"host"}, ExclusivePermissions: []string{"end-call"}, Lease: time.Minute,
		Media: &authz.MediaMapping{RoomJoin: "join-call", CanPublish: "send-video", CanSubscribe: "read-call", RoomAdmin: "end-call",
			CanPublishSources: map[string]string{"camera": "send-video", "microphone": "send-audio"}}}
}

// globexRule names no stage permission, so only the platform stages
// globex's calls, and a lobby whose admit role is defined only at acme,
// which globex's calls do not see.
func globexRule() authz.Admission {
	return authz.Admission{Scope: "calltype:globex", ResourceType: "call", Join: "join-call",
		Lobby: &authz.Lobby{Admit: "admit-participants", Role: "globex-guest"}}
}

// admissionPolicy is streamPolicy with what its calls' admission needs:
// permissions to admit from a lobby and to skip it, call.control above
// end-call, roles that hold them, and the three rules above.
func admissionPolicy() authz.Policy {
	p := streamPolicy()
	for i := range p.Permissions {
		if p.Permissions[i].Name == "end-call" {
			p.Permissions[i].Parents = []string{"call.control"}
		}
	}
	p.Permissions = append(p.Permissions,
		authz.Permission{Name: "admit-participants"},
		authz.Permission{Name: "skip-lobby"},
		authz.Permission{Name: "call.control"},
		authz.Permission{Name: "usher.resources.create.call", Parents: []string{"create-call"}})
	p.Roles = append(p.Roles,
		authz.Role{Name: "guest", Scope: "root", Permissions: []string{"join-call", "read-call"}},
		authz.Role{Name: "doorkeeper", Scope: "root", Permissions: []string{"admit-participants", "join-call", "read-call"}},
		authz.Role{Name: "producer", Scope: "root", Permissions: []string{"join-call", "update-call"}},
		authz.Role{Name: "crew", Scope: "root", Permissions: []string{"join-backstage", "join-call"}},
		authz.Role{Name: "director", Scope: "root", Permissions: []string{"call.control", "join-call"}},
		authz.Role{Name: "organizer", Scope: "root", Permissions: []string{"create-call", "join-call"}},
		authz.Role{Name: "globex-guest", Scope: "account:acme", Permissions: []string{"join-call"}})
	p.Admissions = []authz.Admission{rootCallRule(), livestreamRule(), globexRule()}
	return p
}

// ruleScope is the scope of the rule that governs resource, "" for none.
func ruleScope(w *world, resource string) string {
	if r := w.idx.Presence("user:nobody", resource).Rule; r != nil {
		return r.Scope
	}
	return ""
}

func (w *world) putAdmission(a authz.Admission) {
	w.t.Helper()
	rev, err := w.eng.PutAdmission(w.ctx, w.by, a)
	w.ok("PutAdmission "+a.ResourceType+" at "+a.Scope, rev, err)
}

func (w *world) deleteAdmission(scope, typ string) {
	w.t.Helper()
	rev, err := w.eng.DeleteAdmission(w.ctx, w.by, scope, typ)
	w.ok("DeleteAdmission "+typ+" at "+scope, rev, err)
}

func (w *world) deleteResource(name string) {
	w.t.Helper()
	rev, err := w.eng.DeleteResource(w.ctx, w.by, name)
	w.ok("DeleteResource "+name, rev, err)
}

func (w *world) schedule(resource string, startsAt time.Time) {
	w.t.Helper()
	rev, err := w.eng.Schedule(w.ctx, w.by, resource, startsAt)
	w.ok("Schedule "+resource, rev, err)
}

func (w *world) goLive(resource string, live bool) {
	w.t.Helper()
	rev, err := w.eng.GoLive(w.ctx, w.by, resource, live)
	w.ok("GoLive "+resource, rev, err)
}

func (w *world) putResource(r authz.Resource) {
	w.t.Helper()
	rev, err := w.eng.PutResource(w.ctx, w.by, r)
	w.ok("PutResource "+r.Name, rev, err)
}

func (w *world) admit(resource, subject string, expires time.Time) {
	w.t.Helper()
	rev, err := w.eng.Admit(w.ctx, w.by, resource, subject, expires)
	w.ok("Admit "+subject+" to "+resource, rev, err)
}

// stageOf is resource's stage as GetResource reports it.
func stageOf(w *world, resource string) (time.Time, bool) {
	w.t.Helper()
	info, _, err := w.idx.GetResource(resource)
	if err != nil {
		w.t.Fatalf("GetResource(%s): %v", resource, err)
	}
	return info.StartsAt, info.Live
}

// exportPages pages through ExportPolicy size resources at a time and
// returns every page's policy as one.
func exportPages(w *world, size int) authz.Policy {
	w.t.Helper()
	var all authz.Policy
	token := ""
	for {
		p, next, _, err := w.idx.ExportPolicy(size, token)
		if err != nil {
			w.t.Fatalf("ExportPolicy: %v", err)
		}
		all.Permissions = append(all.Permissions, p.Permissions...)
		all.Resources = append(all.Resources, p.Resources...)
		all.Roles = append(all.Roles, p.Roles...)
		all.CreatorRoles = append(all.CreatorRoles, p.CreatorRoles...)
		all.Quotas = append(all.Quotas, p.Quotas...)
		all.DefaultQuotas = append(all.DefaultQuotas, p.DefaultQuotas...)
		all.Admissions = append(all.Admissions, p.Admissions...)
		if next == "" {
			return all
		}
		token = next
	}
}

// normalAdmissions is normalPolicy with the admission rules sorted too.
func normalAdmissions(p authz.Policy) authz.Policy {
	p = normalPolicy(p)
	p.Admissions = slices.Clone(p.Admissions)
	slices.SortFunc(p.Admissions, func(a, b authz.Admission) int {
		return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.ResourceType, b.ResourceType))
	})
	return p
}

func scopesOf(rules []authz.Admission) []string {
	var out []string
	for _, a := range rules {
		out = append(out, a.ResourceType+"@"+a.Scope)
	}
	slices.Sort(out)
	return out
}

func TestAdmissionRules(t *testing.T) {
	t.Run("the rule at the nearest scope wins: a call type's rule overrides root's", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		for res, want := range map[string]string{lobbyCall: "root", liveCall: "calltype:livestream", globexCall: "calltype:globex",
			"account:acme": "", "calltype:livestream": ""} {
			if got := ruleScope(w, res); got != want {
				t.Errorf("the rule governing %s is at %q, want %q", res, got, want)
			}
		}
		// A rule between root and the call type: nearer than root's, farther
		// than the call type's.
		w.putAdmission(authz.Admission{Scope: "account:acme", ResourceType: "call", Join: "join-call"})
		if got := ruleScope(w, lobbyCall); got != "account:acme" {
			t.Errorf("after a rule at account:acme, %s is governed from %q", lobbyCall, got)
		}
		if got := ruleScope(w, liveCall); got != "calltype:livestream" {
			t.Errorf("after a rule at account:acme, %s is governed from %q, want its call type's", liveCall, got)
		}
		w.deleteAdmission("calltype:livestream", "call")
		if got := ruleScope(w, liveCall); got != "account:acme" {
			t.Errorf("with the call type's rule deleted, %s is governed from %q, want account:acme", liveCall, got)
		}
		if r := w.idx.Presence("user:nobody", liveCall).Rule; r == nil || r.Lobby != nil || r.RequireLive {
			t.Errorf("the governing rule is %+v, want account:acme's as put", r)
		}
	})

	t.Run("a rule governs only its resource type", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.putAdmission(authz.Admission{Scope: "root", ResourceType: "calltype", Join: "read-call"})
		if got := ruleScope(w, "calltype:default"); got != "root" {
			t.Errorf("calltype:default is governed from %q, want root's calltype rule", got)
		}
		if r := w.idx.Presence("user:nobody", lobbyCall).Rule; r == nil || r.ResourceType != "call" {
			t.Errorf("a call is governed by %+v, want root's call rule", r)
		}
		if r := w.idx.Presence("user:nobody", "account:acme").Rule; r != nil {
			t.Errorf("an account is governed by %+v, want no rule", r)
		}
	})

	t.Run("deleting a scope deletes its rules, in the same change set", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.put("workspace:w", "account:acme")
		w.put("call:w:1", "workspace:w")
		w.putAdmission(authz.Admission{Scope: "workspace:w", ResourceType: "call", Join: "read-call"})
		w.putAdmission(authz.Admission{Scope: "workspace:w", ResourceType: "event", Join: "read-call"})
		if got := ruleScope(w, "call:w:1"); got != "workspace:w" {
			t.Fatalf("call:w:1 is governed from %q, want workspace:w", got)
		}
		w.deleteResource("call:w:1")
		w.deleteResource("workspace:w")
		if got, want := w.lastOps(), []string{"delete_admission", "delete_admission", "delete_resource"}; !slices.Equal(got, want) {
			t.Errorf("the delete committed %v, want %v", got, want)
		}
		for _, a := range exportPages(w, authz.MaxPageSize).Admissions {
			if a.Scope == "workspace:w" {
				t.Errorf("the export still lists %+v", a)
			}
		}
		// Registered again, the scope has no rules: they went with it.
		w.put("workspace:w", "account:acme")
		w.put("call:w:1", "workspace:w")
		if got := ruleScope(w, "call:w:1"); got != "root" {
			t.Errorf("call:w:1 under a re-registered workspace:w is governed from %q, want root", got)
		}
	})

	t.Run("rules survive a restart from the stored snapshot", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.schedule(lobbyCall, time.Date(2031, 5, 1, 9, 0, 0, 0, time.UTC))
		w.goLive(liveCall, true)
		eng, err := authz.Start(t.Context(), w.be, authz.Options{Clock: w.clock})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(eng.Close)
		before, _, _, _ := w.idx.ExportPolicy(authz.MaxPageSize, "")
		after, _, _, _ := eng.Index().ExportPolicy(authz.MaxPageSize, "")
		if !reflect.DeepEqual(normalAdmissions(before), normalAdmissions(after)) {
			t.Errorf("restarted, the export differs:\nbefore %+v\nafter  %+v", before.Admissions, after.Admissions)
		}
		if p := eng.Index().Presence("user:nobody", liveCall); p.Rule == nil || p.Rule.Scope != "calltype:livestream" || !p.Live {
			t.Errorf("restarted, Presence(%s) = rule %+v, live %v", liveCall, p.Rule, p.Live)
		}
	})
}

func TestAdmissionPolicy(t *testing.T) {
	t.Run("ExportPolicy, every page, into a fresh engine reproduces the rules and the stages", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		starts := time.Date(2031, 5, 1, 9, 0, 0, 0, time.UTC)
		w.schedule(lobbyCall, starts)
		w.goLive(liveCall, true)
		w.schedule(liveCall, starts.Add(time.Hour))
		w.put("workspace:w", "account:globex")
		w.putAdmission(authz.Admission{Scope: "workspace:w", ResourceType: "event", Join: "read-call", JoinAhead: time.Hour})
		w.putAdmission(authz.Admission{Scope: "account:globex", ResourceType: "call", Join: "join-call", Lease: 5 * time.Minute})

		export := exportPages(w, 2) // rules and stages on later pages too
		if got, want := scopesOf(export.Admissions), []string{"call@account:globex", "call@calltype:globex", "call@calltype:livestream",
			"call@root", "event@workspace:w"}; !slices.Equal(got, want) {
			t.Fatalf("the pages export rules %v, want %v", got, want)
		}
		fresh := newWorld(t, export)
		if got, want := normalAdmissions(exportPages(fresh, authz.MaxPageSize)), normalAdmissions(export); !reflect.DeepEqual(got, want) {
			t.Errorf("re-exported policy differs:\n got %+v\nwant %+v", got.Admissions, want.Admissions)
		}
		for _, res := range []string{lobbyCall, liveCall, liveCall2, globexCall} {
			a, b := w.idx.Presence("user:nobody", res), fresh.idx.Presence("user:nobody", res)
			if !reflect.DeepEqual(a.Rule, b.Rule) || !a.StartsAt.Equal(b.StartsAt) || a.Live != b.Live {
				t.Errorf("Presence(%s) differs: %+v %v %v in the original, %+v %v %v in the copy", res, a.Rule, a.StartsAt, a.Live, b.Rule, b.StartsAt, b.Live)
			}
		}
		if at, live := stageOf(fresh, liveCall); !at.Equal(starts.Add(time.Hour)) || !live {
			t.Errorf("the copy's %s starts at %v, live %v; want %v, live", liveCall, at, live, starts.Add(time.Hour))
		}
		w.writesNothing(func() (authz.Revision, error) {
			rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, export, authz.ApplyOptions{})
			return rev, err
		})
	})

	t.Run("re-applying a policy with rules writes nothing, however its rules are spelled", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		p := admissionPolicy()
		p.Admissions[0].Scope = ""                                // root
		p.Admissions[0].UncountedRoles = []string{"host", "host"} // repeated
		p.Admissions[1].Lease = time.Minute
		p.Admissions[2].Lease = authz.DefaultLease // the default, spelled out
		w.writesNothing(func() (authz.Revision, error) {
			rev, changed, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
			if len(changed) > 0 {
				t.Errorf("re-applying reports changes %v", changed)
			}
			return rev, err
		})
	})

	t.Run("a changed rule is put, and nothing else", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		p := admissionPolicy()
		p.Admissions[1].MaxParticipants = 7
		if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := w.lastOps(); !slices.Equal(got, []string{"put_admission"}) {
			t.Errorf("the policy committed %v, want one put_admission", got)
		}
		if r := w.idx.Presence("user:nobody", liveCall).Rule; r == nil || r.MaxParticipants != 7 {
			t.Errorf("the livestream rule is %+v, want max_participants 7", r)
		}
	})

	t.Run("without prune, rules the policy does not list are left alone; with it, they are deleted", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		p := admissionPolicy()
		p.Admissions = p.Admissions[:1]
		w.writesNothing(func() (authz.Revision, error) {
			rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
			return rev, err
		})
		if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{Prune: true}); err != nil {
			t.Fatal(err)
		}
		if got := w.lastOps(); !slices.Equal(got, []string{"delete_admission", "delete_admission"}) {
			t.Errorf("pruning committed %v, want two delete_admission", got)
		}
		if got := scopesOf(exportPages(w, authz.MaxPageSize).Admissions); !slices.Equal(got, []string{"call@root"}) {
			t.Errorf("after pruning the rules are %v, want root's only", got)
		}
		if got := ruleScope(w, liveCall); got != "root" {
			t.Errorf("after pruning %s is governed from %q, want root", liveCall, got)
		}
	})

	t.Run("a dry run plans the rule's change and writes nothing", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		p := admissionPolicy()
		p.Admissions = p.Admissions[:2]
		sets, rev := w.be.count(), w.idx.Revision()
		_, changed, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{Prune: true, DryRun: true})
		if err != nil || len(changed) != 1 || changed[0].Op != authz.OpDeleteAdmission || changed[0].Admission.Scope != "calltype:globex" {
			t.Errorf("dry run = %v, %v; want one delete_admission at calltype:globex", changed, err)
		}
		w.unchanged(sets, rev)
	})

	without := func(p authz.Policy, name string) authz.Policy {
		p.Permissions = slices.DeleteFunc(p.Permissions, func(perm authz.Permission) bool { return perm.Name == name })
		return p
	}
	refusals := []struct {
		name   string
		policy func() authz.Policy
		code   authz.Code
		field  string
		value  string
	}{
		{
			name: "a policy that drops a permission a rule it leaves alone names is refused, naming it",
			policy: func() authz.Policy {
				p := without(admissionPolicy(), "skip-lobby")
				p.Admissions = nil
				return p
			},
			code: authz.Invalid, field: "policy.permissions", value: "skip-lobby",
		},
		{
			name: "a policy that drops a permission its own rule names is refused at the rule's field",
			policy: func() authz.Policy {
				return without(admissionPolicy(), "skip-lobby")
			},
			code: authz.Invalid, field: "policy.admissions[0].lobby.bypass_permission", value: "skip-lobby",
		},
		{
			name: "a rule's undeclared permission is named at its index in the policy's list, not the sorted one",
			policy: func() authz.Policy {
				p := admissionPolicy()
				p.Admissions[1].ExclusivePermissions = []string{"end-call", "aa-undeclared"}
				return p
			},
			code: authz.Invalid, field: "policy.admissions[1].exclusive_permissions[1]", value: "aa-undeclared",
		},
		{
			name: "a rule listed twice for one scope and type",
			policy: func() authz.Policy {
				p := admissionPolicy()
				p.Admissions = append(p.Admissions, authz.Admission{Scope: "calltype:livestream", ResourceType: "call", Join: "read-call"})
				return p
			},
			code: authz.Invalid, field: "policy.admissions[3].resource_type", value: "call",
		},
		{
			name: "a rule's scope neither registered nor listed is NOT_FOUND",
			policy: func() authz.Policy {
				p := admissionPolicy()
				p.Admissions[2].Scope = "calltype:initech"
				return p
			},
			code: authz.NotFound, field: "policy.admissions[2].scope", value: "calltype:initech",
		},
		{
			name: "a rule's shape is validated with the policy's field names",
			policy: func() authz.Policy {
				p := admissionPolicy()
				p.Admissions[1].Lease = 25 * time.Hour
				return p
			},
			code: authz.Invalid, field: "policy.admissions[1].lease", value: "25h0m0s",
		},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, admissionPolicy())
			before := exportPages(w, authz.MaxPageSize)
			w.refuses(tc.code, tc.field, tc.value, func() (authz.Revision, error) {
				rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, tc.policy(), authz.ApplyOptions{})
				return rev, err
			})
			if after := exportPages(w, authz.MaxPageSize); !reflect.DeepEqual(before, after) {
				t.Errorf("A failed write changes nothing: the export differs")
			}
		})
	}
}

func TestValidateAdmission(t *testing.T) {
	valid := func(change func(a *authz.Admission)) authz.Admission {
		a := livestreamRule()
		a.Lobby = &authz.Lobby{Admit: "admit-participants", Role: "guest", Bypass: "skip-lobby"}
		a.Backstage, a.UncountedRoles = "join-backstage", []string{"host"}
		change(&a)
		return a
	}
	const f = "policy.admissions[2]."
	cases := []struct {
		name         string
		change       func(a *authz.Admission)
		field, value string // "" field: valid
	}{
		{"a complete rule is valid", func(a *authz.Admission) {}, "", ""},
		{"an empty scope is root", func(a *authz.Admission) { a.Scope = "" }, "", ""},
		{"a lease of 1s is valid", func(a *authz.Admission) { a.Lease = time.Second }, "", ""},
		{"a lease of 24h is valid", func(a *authz.Admission) { a.Lease = 24 * time.Hour }, "", ""},
		{"an unset lease is the default", func(a *authz.Admission) { a.Lease = 0 }, "", ""},
		{"join_ahead of 7 days is valid", func(a *authz.Admission) { a.JoinAhead = 7 * 24 * time.Hour }, "", ""},
		{"max_participants of 1,000,000 is valid", func(a *authz.Admission) { a.MaxParticipants = 1_000_000 }, "", ""},
		{"64 exclusive roles are valid", func(a *authz.Admission) { a.ExclusiveRoles = roleNames(64) }, "", ""},
		{"every LiveKit source is valid", func(a *authz.Admission) {
			a.Media.CanPublishSources = map[string]string{"camera": "send-video", "microphone": "send-audio", "screen_share": "screenshare", "screen_share_audio": "screenshare"}
		}, "", ""},

		{"a malformed scope", func(a *authz.Admission) { a.Scope = "calltype" }, f + "scope", "calltype"},
		{"a malformed resource type", func(a *authz.Admission) { a.ResourceType = "Call" }, f + "resource_type", "Call"},
		{"no resource type", func(a *authz.Admission) { a.ResourceType = "" }, f + "resource_type", ""},
		{"no join permission", func(a *authz.Admission) { a.Join = "" }, f + "join_permission", ""},
		{"a malformed join permission", func(a *authz.Admission) { a.Join = "Join" }, f + "join_permission", "Join"},
		{"a malformed backstage permission", func(a *authz.Admission) { a.Backstage = "-x" }, f + "backstage_permission", "-x"},
		{"a malformed stage permission", func(a *authz.Admission) { a.Stage = "stage call" }, f + "stage_permission", "stage call"},
		{"a lobby without its admit permission", func(a *authz.Admission) { a.Lobby.Admit = "" }, f + "lobby.admit_permission", ""},
		{"a lobby without its admit role", func(a *authz.Admission) { a.Lobby.Role = "" }, f + "lobby.admit_role", ""},
		{"a malformed admit role", func(a *authz.Admission) { a.Lobby.Role = "Guest" }, f + "lobby.admit_role", "Guest"},
		{"a malformed admit permission", func(a *authz.Admission) { a.Lobby.Admit = "admit!" }, f + "lobby.admit_permission", "admit!"},
		{"a malformed bypass permission", func(a *authz.Admission) { a.Lobby.Bypass = ".skip" }, f + "lobby.bypass_permission", ".skip"},
		{"a reserved backstage permission", func(a *authz.Admission) { a.Backstage = "usher.grants.write" }, f + "backstage_permission", "usher.grants.write"},
		{"a reserved admit permission", func(a *authz.Admission) { a.Lobby.Admit = "usher.grants.write" }, f + "lobby.admit_permission", "usher.grants.write"},
		{"a reserved bypass permission", func(a *authz.Admission) { a.Lobby.Bypass = "usher.grants.write" }, f + "lobby.bypass_permission", "usher.grants.write"},
		{"a malformed exclusive permission", func(a *authz.Admission) { a.ExclusivePermissions = []string{"end-call", "End"} }, f + "exclusive_permissions[1]", "End"},
		{"65 exclusive permissions", func(a *authz.Admission) { a.ExclusivePermissions = roleNames(65) }, f + "exclusive_permissions", "65"},
		{"65 exclusive roles", func(a *authz.Admission) { a.ExclusiveRoles = roleNames(65) }, f + "exclusive_roles", "65"},
		{"65 uncounted roles", func(a *authz.Admission) { a.UncountedRoles = roleNames(65) }, f + "uncounted_roles", "65"},
		{"a malformed exclusive role", func(a *authz.Admission) { a.ExclusiveRoles = []string{"host", "co host", "x"} }, f + "exclusive_roles[1]", "co host"},
		{"a malformed uncounted role", func(a *authz.Admission) { a.UncountedRoles = []string{"Host"} }, f + "uncounted_roles[0]", "Host"},
		{"max_participants over 1,000,000", func(a *authz.Admission) { a.MaxParticipants = 1_000_001 }, f + "max_participants", "1000001"},
		{"a lease under 1s", func(a *authz.Admission) { a.Lease = 999 * time.Millisecond }, f + "lease", "999ms"},
		{"a lease over 24h", func(a *authz.Admission) { a.Lease = 24*time.Hour + time.Second }, f + "lease", "24h0m1s"},
		{"a negative lease", func(a *authz.Admission) { a.Lease = -time.Second }, f + "lease", "-1s"},
		{"a negative join_ahead", func(a *authz.Admission) { a.JoinAhead = -time.Second }, f + "join_ahead", "-1s"},
		{"join_ahead over 7 days", func(a *authz.Admission) { a.JoinAhead = 7*24*time.Hour + time.Nanosecond }, f + "join_ahead", "168h0m0.000000001s"},
		{"a LiveKit mapping without room_join", func(a *authz.Admission) { a.Media.RoomJoin = "" }, f + "livekit.room_join", ""},
		{"a malformed LiveKit can_publish", func(a *authz.Admission) { a.Media.CanPublish = "Publish" }, f + "livekit.can_publish", "Publish"},
		{"a malformed LiveKit can_subscribe", func(a *authz.Admission) { a.Media.CanSubscribe = "read call" }, f + "livekit.can_subscribe", "read call"},
		{"a malformed LiveKit can_publish_data", func(a *authz.Admission) { a.Media.CanPublishData = "_data" }, f + "livekit.can_publish_data", "_data"},
		{"a malformed LiveKit room_admin", func(a *authz.Admission) { a.Media.RoomAdmin = "Admin" }, f + "livekit.room_admin", "Admin"},
		{"a malformed LiveKit room_record", func(a *authz.Admission) { a.Media.RoomRecord = "rec!" }, f + "livekit.room_record", "rec!"},
		{"a malformed permission in a LiveKit room_admin list", func(a *authz.Admission) { a.Media.RoomAdmin = "end-call,Admin" }, f + "livekit.room_admin", "Admin"},
		{"64 permissions in a LiveKit room_admin list are valid", func(a *authz.Admission) { a.Media.RoomAdmin = strings.Join(roleNames(64), ",") }, "", ""},
		{"65 permissions in a LiveKit room_admin list", func(a *authz.Admission) { a.Media.RoomAdmin = strings.Join(roleNames(65), ",") }, f + "livekit.room_admin", "65"},
		{"65 permissions in a LiveKit room_record list", func(a *authz.Admission) { a.Media.RoomRecord = strings.Join(roleNames(65), ",") }, f + "livekit.room_record", "65"},
		{"a malformed LiveKit hidden", func(a *authz.Admission) { a.Media.Hidden = "Hidden" }, f + "livekit.hidden", "Hidden"},
		{"a source LiveKit does not know", func(a *authz.Admission) { a.Media.CanPublishSources["webcam"] = "send-video" }, f + "livekit.can_publish_sources", "webcam"},
		{"a source without its permission", func(a *authz.Admission) { a.Media.CanPublishSources["camera"] = "" }, f + "livekit.can_publish_sources.camera", ""},
		{"a malformed permission in a LiveKit source's list", func(a *authz.Admission) { a.Media.CanPublishSources["camera"] = "send-video,Camera" }, f + "livekit.can_publish_sources.camera", "Camera"},
		{"an empty permission in a LiveKit source's list", func(a *authz.Admission) { a.Media.CanPublishSources["camera"] = "send-video," }, f + "livekit.can_publish_sources.camera", ""},
		{"64 permissions in a LiveKit source's list are valid", func(a *authz.Admission) { a.Media.CanPublishSources["camera"] = strings.Join(roleNames(64), ",") }, "", ""},
		{"65 permissions in a LiveKit source's list", func(a *authz.Admission) { a.Media.CanPublishSources["camera"] = strings.Join(roleNames(65), ",") }, f + "livekit.can_publish_sources.camera", "65"},
		{"a reserved permission in a LiveKit source's list", func(a *authz.Admission) { a.Media.CanPublishSources["camera"] = "send-video,usher.grants.write" }, f + "livekit.can_publish_sources.camera", "usher.grants.write"},
		{"a LiveKit source of a reserved permission", func(a *authz.Admission) { a.Media.CanPublishSources["camera"] = "usher.grants.write" }, f + "livekit.can_publish_sources.camera", "usher.grants.write"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := authz.ValidateAdmission("policy.admissions[2]", valid(tc.change))
			if tc.field == "" {
				if err != nil {
					t.Errorf("ValidateAdmission = %v, want valid", err)
				}
				return
			}
			e, ok := err.(*authz.Error)
			if !ok {
				t.Fatalf("ValidateAdmission = %v, want an Invalid error on %s %q", err, tc.field, tc.value)
			}
			if e.Code != authz.Invalid || e.Field != tc.field || e.Value != tc.value {
				t.Errorf("ValidateAdmission = code %d on %s %q (%v), want Invalid on %s %q", e.Code, e.Field, e.Value, e, tc.field, tc.value)
			}
			if !strings.Contains(e.Error(), tc.field) {
				t.Errorf("message %q does not name %s", e.Error(), tc.field)
			}
		})
	}
	t.Run("with no prefix the fields are the rule's own", func(t *testing.T) {
		err := authz.ValidateAdmission("", valid(func(a *authz.Admission) { a.Lease = time.Millisecond }))
		if e, ok := err.(*authz.Error); !ok || e.Field != "lease" {
			t.Errorf("ValidateAdmission = %v, want field lease", err)
		}
	})
}

// roleNames is n well-formed role names.
func roleNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("r%d", i)
	}
	return out
}

func TestPutAdmission(t *testing.T) {
	acmeRule := authz.Admission{Scope: "account:acme", ResourceType: "call", Join: "join-call", Backstage: "join-backstage",
		ExclusiveRoles: []string{"moderator", "host"}}

	t.Run("the platform puts a rule", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.putAdmission(acmeRule)
		if got := w.lastOps(); !slices.Equal(got, []string{"put_admission"}) {
			t.Errorf("PutAdmission committed %v", got)
		}
		r := w.idx.Presence("user:nobody", lobbyCall).Rule
		if r == nil || r.Scope != "account:acme" || r.Backstage != "join-backstage" || !slices.Equal(r.ExclusiveRoles, []string{"host", "moderator"}) {
			t.Errorf("the rule governing %s is %+v, want account:acme's, its roles sorted", lobbyCall, r)
		}
	})

	t.Run("an identical put writes nothing, however it is spelled", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.putAdmission(acmeRule)
		same := acmeRule
		same.ExclusiveRoles = []string{"host", "moderator", "host"}
		same.Lease = authz.DefaultLease
		w.writesNothing(func() (authz.Revision, error) { return w.eng.PutAdmission(w.ctx, w.by, same) })
		root := rootCallRule()
		root.Scope = ""
		w.writesNothing(func() (authz.Revision, error) { return w.eng.PutAdmission(w.ctx, w.by, root) })
	})

	t.Run("a put replaces the rule at its scope", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		r := livestreamRule()
		r.RequireLive, r.Media = false, nil
		w.putAdmission(r)
		if got := w.idx.Presence("user:nobody", liveCall).Rule; got == nil || got.RequireLive || got.Media != nil {
			t.Errorf("the rule is %+v after the put", got)
		}
	})

	t.Run("the platform deletes a rule", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.deleteAdmission("calltype:livestream", "call")
		if got := w.lastOps(); !slices.Equal(got, []string{"delete_admission"}) {
			t.Errorf("DeleteAdmission committed %v", got)
		}
		if got := ruleScope(w, liveCall); got != "root" {
			t.Errorf("%s is governed from %q, want root", liveCall, got)
		}
		w.deleteAdmission("", "call")
		if got := ruleScope(w, lobbyCall); got != "" {
			t.Errorf("%s is governed from %q, want no rule", lobbyCall, got)
		}
	})

	refusals := []struct {
		name         string
		write        func(w *world) (authz.Revision, error)
		code         authz.Code
		field, value string
		rule         string
	}{
		{
			name: "an actor may not put a rule, not even one who holds everything",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.PutAdmission(w.ctx, as("user:root-admin"), acmeRule)
			},
			code: authz.PermissionDenied, field: "actor", value: "user:root-admin", rule: "platform only",
		},
		{
			name: "an actor may not delete a rule",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.DeleteAdmission(w.ctx, as("user:root-admin"), "calltype:livestream", "call")
			},
			code: authz.PermissionDenied, field: "actor", value: "user:root-admin", rule: "platform only",
		},
		{
			name: "an undeclared join permission",
			write: func(w *world) (authz.Revision, error) {
				r := acmeRule
				r.Join = "join-cal"
				return w.eng.PutAdmission(w.ctx, w.by, r)
			},
			code: authz.Invalid, field: "admission.join_permission", value: "join-cal",
		},
		{
			name: "an undeclared bypass permission",
			write: func(w *world) (authz.Revision, error) {
				r := rootCallRule()
				r.Lobby.Bypass = "skip-the-lobby"
				return w.eng.PutAdmission(w.ctx, w.by, r)
			},
			code: authz.Invalid, field: "admission.lobby.bypass_permission", value: "skip-the-lobby",
		},
		{
			name: "an undeclared LiveKit source permission",
			write: func(w *world) (authz.Revision, error) {
				r := livestreamRule()
				r.Media.CanPublishSources["screen_share"] = "share-screen"
				return w.eng.PutAdmission(w.ctx, w.by, r)
			},
			code: authz.Invalid, field: "admission.livekit.can_publish_sources.screen_share", value: "share-screen",
		},
		{
			// Join gave no one roomAdmin, and answered "lacks it" to holders
			// Check allows: the mapping reads capabilities, which leave
			// Usher's own permissions out.
			name: "a LiveKit room_admin of a reserved permission, which is no capability",
			write: func(w *world) (authz.Revision, error) {
				r := livestreamRule()
				r.Media.RoomAdmin = "end-call,usher.blocks.write"
				return w.eng.PutAdmission(w.ctx, w.by, r)
			},
			code: authz.Invalid, field: "admission.livekit.room_admin", value: "usher.blocks.write",
		},
		{
			name: "a LiveKit room_join of a reserved permission",
			write: func(w *world) (authz.Revision, error) {
				r := livestreamRule()
				r.Media.RoomJoin = "usher.grants.write"
				return w.eng.PutAdmission(w.ctx, w.by, r)
			},
			code: authz.Invalid, field: "admission.livekit.room_join", value: "usher.grants.write",
		},
		{
			name: "an undeclared exclusive permission is named at its index in the request, not the sorted one",
			write: func(w *world) (authz.Revision, error) {
				r := livestreamRule()
				r.ExclusivePermissions = []string{"end-call", "aa-undeclared"}
				return w.eng.PutAdmission(w.ctx, w.by, r)
			},
			code: authz.Invalid, field: "admission.exclusive_permissions[1]", value: "aa-undeclared",
		},
		{
			name: "a malformed rule is refused before anything is read",
			write: func(w *world) (authz.Revision, error) {
				r := acmeRule
				r.JoinAhead = -time.Minute
				return w.eng.PutAdmission(w.ctx, w.by, r)
			},
			code: authz.Invalid, field: "admission.join_ahead", value: "-1m0s",
		},
		{
			name: "an unregistered scope is NOT_FOUND",
			write: func(w *world) (authz.Revision, error) {
				r := acmeRule
				r.Scope = "account:initech"
				return w.eng.PutAdmission(w.ctx, w.by, r)
			},
			code: authz.NotFound, field: "admission.scope", value: "account:initech",
		},
		{
			name: "deleting a rule that is not there is NOT_FOUND",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.DeleteAdmission(w.ctx, w.by, "calltype:livestream", "event")
			},
			code: authz.NotFound, field: "resource_type", value: "event",
		},
		{
			name: "deleting a rule below its nearest scope is NOT_FOUND: only the scope's own rule goes",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.DeleteAdmission(w.ctx, w.by, "calltype:default", "call")
			},
			code: authz.NotFound, field: "resource_type", value: "call",
		},
		{
			name: "deleting a rule at an unregistered scope is NOT_FOUND",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.DeleteAdmission(w.ctx, w.by, "account:initech", "call")
			},
			code: authz.NotFound, field: "scope", value: "account:initech",
		},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, admissionPolicy())
			w.grant("user:root-admin", "admin", "root")
			e := w.refuses(tc.code, tc.field, tc.value, func() (authz.Revision, error) { return tc.write(w) })
			if e != nil && e.Rule != tc.rule {
				t.Errorf("refusal names rule %q, want %q", e.Rule, tc.rule)
			}
		})
	}
}

func TestStage(t *testing.T) {
	starts := time.Date(2031, 5, 1, 9, 0, 0, 0, time.UTC)

	t.Run("the platform schedules a call and takes it live and back", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.schedule(lobbyCall, starts)
		if got := w.lastOps(); !slices.Equal(got, []string{"put_resource"}) {
			t.Errorf("Schedule committed %v", got)
		}
		w.goLive(lobbyCall, true)
		if at, live := stageOf(w, lobbyCall); !at.Equal(starts) || !live {
			t.Errorf("%s starts at %v, live %v; want %v, live", lobbyCall, at, live, starts)
		}
		if p := w.idx.Presence("user:nobody", lobbyCall); !p.StartsAt.Equal(starts) || !p.Live {
			t.Errorf("Presence(%s) says it starts at %v, live %v", lobbyCall, p.StartsAt, p.Live)
		}
		w.writesNothing(func() (authz.Revision, error) { return w.eng.GoLive(w.ctx, w.by, lobbyCall, true) })
		w.writesNothing(func() (authz.Revision, error) {
			return w.eng.Schedule(w.ctx, w.by, lobbyCall, starts.In(time.FixedZone("CEST", 7200)))
		})
		w.goLive(lobbyCall, false)
		w.schedule(lobbyCall, time.Time{})
		if at, live := stageOf(w, lobbyCall); !at.IsZero() || live {
			t.Errorf("cleared, %s starts at %v, live %v", lobbyCall, at, live)
		}
		info, _, _ := w.idx.GetResource(lobbyCall)
		if info.Parent != "calltype:default" {
			t.Errorf("a stage change moved %s under %q", lobbyCall, info.Parent)
		}
	})

	t.Run("an actor holding the rule's stage permission stages the call", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.grant("user:pat", "producer", lobbyCall)
		if _, err := w.eng.Schedule(w.ctx, as("user:pat"), lobbyCall, starts); err != nil {
			t.Fatalf("Schedule by the producer: %v", err)
		}
		if _, err := w.eng.GoLive(w.ctx, as("user:pat"), lobbyCall, true); err != nil {
			t.Fatalf("GoLive by the producer: %v", err)
		}
		if sets := w.be.committed(); sets[len(sets)-1].Actor != "user:pat" {
			t.Errorf("the change set names actor %q", sets[len(sets)-1].Actor)
		}
		if at, live := stageOf(w, lobbyCall); !at.Equal(starts) || !live {
			t.Errorf("%s starts at %v, live %v", lobbyCall, at, live)
		}
	})

	t.Run("the stage is set at registration, kept by moves and by policies that name none", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.putResource(authz.Resource{Name: "call:default:9", Parent: "calltype:default", StartsAt: starts, Live: true})
		if at, live := stageOf(w, "call:default:9"); !at.Equal(starts) || !live {
			t.Errorf("registered with a stage, call:default:9 starts at %v, live %v", at, live)
		}
		w.schedule(liveCall2, starts)
		w.goLive(liveCall2, true)
		w.put(liveCall2, "calltype:default")
		if at, live := stageOf(w, liveCall2); !at.Equal(starts) || !live {
			t.Errorf("moved, %s starts at %v, live %v", liveCall2, at, live)
		}
		if got := ruleScope(w, liveCall2); got != "root" {
			t.Errorf("moved out of calltype:livestream, %s is governed from %q", liveCall2, got)
		}
		p := admissionPolicy()
		p.Resources = append(p.Resources, authz.Resource{Name: liveCall2, Parent: "calltype:livestream"})
		if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		if at, live := stageOf(w, liveCall2); !at.Equal(starts) || !live {
			t.Errorf("moved back by a policy, %s starts at %v, live %v", liveCall2, at, live)
		}
		// Moved by the same PutResource, naming the stage it has.
		w.putResource(authz.Resource{Name: liveCall2, Parent: "calltype:default", StartsAt: starts, Live: true})
		if info, _, _ := w.idx.GetResource(liveCall2); info.Parent != "calltype:default" || !info.StartsAt.Equal(starts) || !info.Live {
			t.Errorf("after a move naming its stage, %s is %+v", liveCall2, info.Resource)
		}
	})

	t.Run("a policy that names a stage sets it", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		p := admissionPolicy()
		for i := range p.Resources {
			if p.Resources[i].Name == liveCall {
				p.Resources[i].StartsAt, p.Resources[i].Live = starts, true
			}
		}
		if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := w.lastOps(); !slices.Equal(got, []string{"put_resource"}) {
			t.Errorf("the policy committed %v", got)
		}
		if at, live := stageOf(w, liveCall); !at.Equal(starts) || !live {
			t.Errorf("%s starts at %v, live %v", liveCall, at, live)
		}
		w.writesNothing(func() (authz.Revision, error) {
			rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
			return rev, err
		})
	})

	t.Run("PutResource of a registered resource with its own stage writes nothing", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.schedule(lobbyCall, starts)
		w.writesNothing(func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: lobbyCall, Parent: "calltype:default", StartsAt: starts})
		})
		w.writesNothing(func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: lobbyCall, Parent: "calltype:default"})
		})
	})

	refusals := []struct {
		name         string
		setup        func(w *world)
		write        func(w *world) (authz.Revision, error)
		code         authz.Code
		field, value string
		rule         string
		says         string // a phrase of the message
	}{
		{
			name:  "an actor without the stage permission may not schedule",
			setup: func(w *world) { w.grant("user:gus", "guest", lobbyCall) },
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Schedule(w.ctx, as("user:gus"), lobbyCall, starts)
			},
			code: authz.PermissionDenied, field: "actor", value: "user:gus", rule: "missing permission",
			says: "which scheduling it requires",
		},
		{
			name:  "an actor who may register calls but not stage them may not register one with a stage",
			setup: func(w *world) { w.grant("user:ola", "organizer", "calltype:default") },
			write: func(w *world) (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, as("user:ola"), authz.Resource{Name: "call:default:77", Parent: "calltype:default", StartsAt: starts})
			},
			code: authz.PermissionDenied, field: "actor", value: "user:ola", rule: "missing permission",
		},
		{
			name:  "an actor without the stage permission may not go live",
			setup: func(w *world) { w.grant("user:mo", "moderator", "account:acme") },
			write: func(w *world) (authz.Revision, error) { return w.eng.GoLive(w.ctx, as("user:mo"), liveCall, true) },
			code:  authz.PermissionDenied, field: "actor", value: "user:mo", rule: "missing permission",
			says: "which taking it live requires",
		},
		{
			name: "a block of the stage permission takes it away",
			setup: func(w *world) {
				w.grant("user:pat", "producer", lobbyCall)
				w.block(authz.Block{Subject: "user:pat", Resource: "calltype:default", Permissions: []string{"update-call"}})
			},
			write: func(w *world) (authz.Revision, error) { return w.eng.GoLive(w.ctx, as("user:pat"), lobbyCall, true) },
			code:  authz.PermissionDenied, field: "actor", value: "user:pat", rule: "missing permission",
		},
		{
			name:  "a rule without a stage permission refuses every actor, even one holding everything",
			setup: func(w *world) { w.grant("user:root-admin", "admin", "root") },
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Schedule(w.ctx, as("user:root-admin"), globexCall, starts)
			},
			code: authz.PermissionDenied, field: "actor", value: "user:root-admin", rule: "platform only",
		},
		{
			name:  "a resource no rule governs has no stage (FAILED_PRECONDITION)",
			write: func(w *world) (authz.Revision, error) { return w.eng.Schedule(w.ctx, w.by, "calltype:default", starts) },
			code:  authz.FailedPrecondition, field: "resource", value: "calltype:default",
		},
		{
			name: "the platform registering a resource no rule governs with a start (FAILED_PRECONDITION, as Schedule)",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "calltype:staged", Parent: "account:acme", StartsAt: starts})
			},
			code: authz.FailedPrecondition, field: "name", value: "calltype:staged", says: "no admission rule governs calltype resources there",
		},
		{
			name: "the platform registering a resource no rule governs live (FAILED_PRECONDITION, as GoLive)",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "calltype:staged", Parent: "account:acme", Live: true})
			},
			code: authz.FailedPrecondition, field: "name", value: "calltype:staged", says: "so a stage means nothing",
		},
		{
			name:  "going live needs a rule too",
			write: func(w *world) (authz.Revision, error) { return w.eng.GoLive(w.ctx, w.by, "account:acme", true) },
			code:  authz.FailedPrecondition, field: "resource", value: "account:acme",
		},
		{
			name:  "root has no stage",
			write: func(w *world) (authz.Revision, error) { return w.eng.GoLive(w.ctx, w.by, authz.RootName, true) },
			code:  authz.Invalid, field: "resource", value: "root",
		},
		{
			name:  "an unregistered resource is NOT_FOUND",
			write: func(w *world) (authz.Revision, error) { return w.eng.Schedule(w.ctx, w.by, "call:default:404", starts) },
			code:  authz.NotFound, field: "resource", value: "call:default:404",
		},
		{
			name: "a start before 1970",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Schedule(w.ctx, w.by, lobbyCall, time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC))
			},
			code: authz.Invalid, field: "start_time", value: "1969-07-20T20:17:00Z",
		},
		{
			name:  "a start at the Unix epoch, which would read as none",
			write: func(w *world) (authz.Revision, error) { return w.eng.Schedule(w.ctx, w.by, lobbyCall, time.Unix(0, 0)) },
			code:  authz.Invalid, field: "start_time", value: "1970-01-01T00:00:00Z",
		},
		{
			name: "a start past 2262",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Schedule(w.ctx, w.by, lobbyCall, time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC))
			},
			code: authz.Invalid, field: "start_time", value: "2263-01-01T00:00:00Z",
		},
		{
			name: "registering a resource with a start before 1970",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "call:default:2", Parent: "calltype:default", StartsAt: time.Unix(-1, 0)})
			},
			code: authz.Invalid, field: "start_time", value: "1969-12-31T23:59:59Z",
		},
		{
			name: "a policy's resource with a start at the Unix epoch",
			write: func(w *world) (authz.Revision, error) {
				p := admissionPolicy()
				p.Resources = append(p.Resources, authz.Resource{Name: "call:default:2", Parent: "calltype:default", StartsAt: time.Unix(0, 0)})
				rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
				return rev, err
			},
			code: authz.Invalid, field: "policy.resources[9].start_time", value: "1970-01-01T00:00:00Z",
		},
		{
			name:  "PutResource may not change a registered resource's start",
			setup: func(w *world) { w.schedule(lobbyCall, starts) },
			write: func(w *world) (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: lobbyCall, Parent: "calltype:default", StartsAt: starts.Add(time.Hour)})
			},
			code: authz.Invalid, field: "start_time", value: "2031-05-01T10:00:00Z",
		},
		{
			name:  "PutResource may not change a registered resource's start by a fraction of a second either, and quotes it as sent",
			setup: func(w *world) { w.schedule(lobbyCall, starts) },
			write: func(w *world) (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: lobbyCall, Parent: "calltype:default", StartsAt: starts.Add(500 * time.Millisecond)})
			},
			code: authz.Invalid, field: "start_time", value: "2031-05-01T09:00:00.5Z",
		},
		{
			name: "PutResource may not take a registered resource live, even while moving it",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: lobbyCall, Parent: "calltype:livestream", Live: true})
			},
			code: authz.Invalid, field: "live", value: "true",
		},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, admissionPolicy())
			if tc.setup != nil {
				tc.setup(w)
			}
			e := w.refuses(tc.code, tc.field, tc.value, func() (authz.Revision, error) { return tc.write(w) })
			if e != nil && e.Rule != tc.rule {
				t.Errorf("refusal names rule %q, want %q", e.Rule, tc.rule)
			}
			if e != nil && !strings.Contains(e.Error(), tc.says) {
				t.Errorf("refusal %q does not say %q", e.Error(), tc.says)
			}
		})
	}
}

func TestAdmit(t *testing.T) {
	t.Run("a holder of the admit permission admits: the subject holds the admit role on the call", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.grant("user:dora", "doorkeeper", "calltype:default")
		if p := w.idx.Presence("user:kim", lobbyCall); p.Joins || p.SkipsLobby {
			t.Fatalf("before admission: %+v", p)
		}
		if _, err := w.eng.Admit(w.ctx, as("user:dora"), lobbyCall, "user:kim", time.Time{}); err != nil {
			t.Fatalf("Admit: %v", err)
		}
		if got := w.lastOps(); !slices.Equal(got, []string{"put_grant"}) {
			t.Errorf("Admit committed %v", got)
		}
		grants, _, _, err := w.idx.ListGrants(authz.GrantFilter{Subject: "user:kim"}, 0, "")
		if err != nil || len(grants) != 1 || grants[0].Role != "guest" || grants[0].Resource != lobbyCall {
			t.Errorf("user:kim's grants are %+v (%v), want guest on %s", grants, err, lobbyCall)
		}
		if p := w.idx.Presence("user:kim", lobbyCall); !p.Joins || p.Role != "guest" || p.Scope != lobbyCall || !p.SkipsLobby {
			t.Errorf("after admission: %+v", p)
		}
		w.writesNothing(func() (authz.Revision, error) {
			return w.eng.Admit(w.ctx, as("user:dora"), lobbyCall, "user:kim", time.Time{})
		})
	})

	t.Run("an admission until a time lets the subject skip the lobby until then", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		until := w.clock.Now().Add(time.Hour)
		w.admit(lobbyCall, "user:kim", until)
		if p := w.idx.Presence("user:kim", lobbyCall); !p.SkipsLobby || !p.Until.Equal(until) {
			t.Errorf("admitted until %v: skips lobby %v, until %v", until, p.SkipsLobby, p.Until)
		}
		w.clock.Advance(time.Hour)
		if p := w.idx.Presence("user:kim", lobbyCall); p.SkipsLobby || p.Joins || !p.Until.IsZero() {
			t.Errorf("the admission expired: %+v", p)
		}
	})

	t.Run("an admission never cuts short a longer one: it only lets in, or lets in for longer", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.grant("user:dora", "doorkeeper", "calltype:default")
		hour := w.clock.Now().Add(time.Hour)
		w.admit(lobbyCall, "user:kim", time.Time{}) // for good, by the platform
		w.admit(lobbyCall, "user:lee", hour)
		w.writesNothing(func() (authz.Revision, error) {
			return w.eng.Admit(w.ctx, as("user:dora"), lobbyCall, "user:kim", hour)
		})
		w.writesNothing(func() (authz.Revision, error) {
			return w.eng.Admit(w.ctx, as("user:dora"), lobbyCall, "user:lee", hour.Add(-time.Minute))
		})
		if p := w.idx.Presence("user:kim", lobbyCall); !p.SkipsLobby || !p.Until.IsZero() {
			t.Errorf("user:kim, admitted for good, after an admission for an hour: skips the lobby %v, until %v", p.SkipsLobby, p.Until)
		}
		if p := w.idx.Presence("user:lee", lobbyCall); !p.Until.Equal(hour) {
			t.Errorf("user:lee, admitted for an hour, after an admission for less: until %v, want %v", p.Until, hour)
		}
		// For longer, or for good, it lets in for longer.
		if _, err := w.eng.Admit(w.ctx, as("user:dora"), lobbyCall, "user:lee", hour.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if p := w.idx.Presence("user:lee", lobbyCall); !p.Until.Equal(hour.Add(time.Hour)) {
			t.Errorf("user:lee, admitted again for two hours: until %v", p.Until)
		}
		if _, err := w.eng.Admit(w.ctx, as("user:dora"), lobbyCall, "user:lee", time.Time{}); err != nil {
			t.Fatal(err)
		}
		if p := w.idx.Presence("user:lee", lobbyCall); !p.SkipsLobby || !p.Until.IsZero() {
			t.Errorf("user:lee, admitted again for good: until %v", p.Until)
		}
	})

	t.Run("an actor whose role lists the admit role by name may admit into it", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.putAdmission(authz.Admission{Scope: "calltype:default", ResourceType: "call", Join: "join-call",
			Lobby: &authz.Lobby{Admit: "admit-participants", Role: "call-member"}})
		w.role(authz.Role{Name: "usher", Scope: "root", Permissions: []string{"admit-participants"}, AssignableRoles: []string{"call-member"}})
		w.grant("user:una", "usher", "calltype:default")
		if _, err := w.eng.Admit(w.ctx, as("user:una"), lobbyCall, "user:kim", time.Time{}); err != nil {
			t.Fatalf("Admit: %v", err)
		}
		if d := w.check("user:kim", "send-video", lobbyCall); !d.Allowed || d.Role != "call-member" {
			t.Errorf("the admitted subject's send-video: %+v", d)
		}
	})

	t.Run("a block of permissions other than the join permission keeps no one from being admitted", func(t *testing.T) {
		w := newWorld(t, admissionPolicy())
		w.grant("user:dora", "doorkeeper", "calltype:default")
		w.block(authz.Block{Subject: "user:kim", Resource: lobbyCall, Permissions: []string{"send-video"}})
		if _, err := w.eng.Admit(w.ctx, as("user:dora"), lobbyCall, "user:kim", time.Time{}); err != nil {
			t.Fatalf("Admit: %v", err)
		}
		if p := w.idx.Presence("user:kim", lobbyCall); !p.Joins || !p.SkipsLobby {
			t.Errorf("after admission: %+v", p)
		}
	})

	refusals := []struct {
		name         string
		setup        func(w *world)
		write        func(w *world) (authz.Revision, error)
		code         authz.Code
		field, value string
		rule         string
		kind         authz.Kind        // "": not looked at
		meta         map[string]string // entries Meta must hold
		says         string            // a phrase of the message
	}{
		{
			name: "a subject blocked from the join permission since it knocked is admitted by no doorkeeper",
			setup: func(w *world) {
				w.grant("user:dora", "doorkeeper", "calltype:default")
				w.block(authz.Block{Subject: "user:kim", Resource: lobbyCall, Permissions: []string{"join-call"}})
			},
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Admit(w.ctx, as("user:dora"), lobbyCall, "user:kim", time.Time{})
			},
			code: authz.FailedPrecondition, field: "subject", value: "user:kim", kind: authz.KindSubjectBlocked,
			meta: map[string]string{"resource": lobbyCall, "permission": "join-call", "scope": lobbyCall},
		},
		{
			name:  "nor by the platform, however far above the call the block is",
			setup: func(w *world) { w.block(authz.Block{Subject: "user:kim", Resource: "calltype:default"}) },
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Admit(w.ctx, w.by, lobbyCall, "user:kim", time.Time{})
			},
			code: authz.FailedPrecondition, field: "subject", value: "user:kim", kind: authz.KindSubjectBlocked,
			meta: map[string]string{"resource": lobbyCall, "permission": "join-call", "scope": "calltype:default"},
		},
		{
			name: "an actor without the admit permission learns nothing of a block",
			setup: func(w *world) {
				w.block(authz.Block{Subject: "user:kim", Resource: lobbyCall})
			},
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Admit(w.ctx, as("user:mo"), lobbyCall, "user:kim", time.Time{})
			},
			code: authz.PermissionDenied, field: "actor", value: "user:mo", rule: "missing permission",
			says: "which admitting to it requires",
		},
		{
			name: "an actor without the admit permission may not admit, even holding usher.grants.write",
			setup: func(w *world) {
				w.role(authz.Role{Name: "permissions-manager", Scope: "root", Permissions: []string{"update-call-permissions", "join-call", "read-call"},
					AssignableRoles: []string{"guest"}})
				w.grant("user:mo", "permissions-manager", lobbyCall)
				if !w.check("user:mo", authz.PermGrantsWrite, lobbyCall).Allowed {
					w.t.Fatal("the fixture's permissions-manager should hold usher.grants.write")
				}
			},
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Admit(w.ctx, as("user:mo"), lobbyCall, "user:kim", time.Time{})
			},
			code: authz.PermissionDenied, field: "actor", value: "user:mo", rule: "missing permission",
		},
		{
			name:  "admitting oneself is self-service",
			setup: func(w *world) { w.grant("user:dora", "doorkeeper", "calltype:default") },
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Admit(w.ctx, as("user:dora"), lobbyCall, "user:dora", time.Time{})
			},
			code: authz.PermissionDenied, field: "actor", value: "user:dora", rule: authz.RuleNoSelfService,
		},
		{
			name: "an admit role carrying what the actor lacks, and does not assign by name, is escalation",
			setup: func(w *world) {
				w.putAdmission(authz.Admission{Scope: "calltype:default", ResourceType: "call", Join: "join-call",
					Lobby: &authz.Lobby{Admit: "admit-participants", Role: "call-member"}})
				w.grant("user:dora", "doorkeeper", "calltype:default")
			},
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Admit(w.ctx, as("user:dora"), lobbyCall, "user:kim", time.Time{})
			},
			code: authz.PermissionDenied, field: "actor", value: "user:dora", rule: authz.RuleNoEscalation,
		},
		{
			name:  "a call whose rule has no lobby is FAILED_PRECONDITION",
			setup: func(w *world) { w.grant("user:dora", "doorkeeper", "account:acme") },
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Admit(w.ctx, as("user:dora"), liveCall, "user:kim", time.Time{})
			},
			code: authz.FailedPrecondition, field: "resource", value: liveCall, kind: authz.KindNoLobby,
		},
		{
			name: "a resource no rule governs has no lobby, for want of a rule",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Admit(w.ctx, w.by, "calltype:default", "user:kim", time.Time{})
			},
			code: authz.FailedPrecondition, field: "resource", value: "calltype:default", kind: authz.KindNoAdmissionRule,
		},
		{
			name: "an admit role defined nowhere on the call's path is NOT_FOUND",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Admit(w.ctx, w.by, globexCall, "user:kim", time.Time{})
			},
			code: authz.NotFound, field: "resource", value: globexCall, meta: map[string]string{"role": "globex-guest"},
		},
		{
			name: "an unregistered call is NOT_FOUND",
			write: func(w *world) (authz.Revision, error) {
				return w.eng.Admit(w.ctx, w.by, "call:default:404", "user:kim", time.Time{})
			},
			code: authz.NotFound, field: "resource", value: "call:default:404",
		},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, admissionPolicy())
			if tc.setup != nil {
				tc.setup(w)
			}
			e := w.refuses(tc.code, tc.field, tc.value, func() (authz.Revision, error) { return tc.write(w) })
			if e != nil && e.Rule != tc.rule {
				t.Errorf("refusal names rule %q, want %q (%v)", e.Rule, tc.rule, e)
			}
			if e != nil && tc.kind != "" && authz.KindOf(e) != tc.kind {
				t.Errorf("refusal is of kind %q, want %q (%v)", authz.KindOf(e), tc.kind, e)
			}
			if e != nil && !strings.Contains(e.Error(), tc.says) {
				t.Errorf("refusal %q does not say %q", e.Error(), tc.says)
			}
			for k, v := range tc.meta {
				if e != nil && e.Meta[k] != v {
					t.Errorf("refusal's Meta[%q] = %q, want %q (Meta %v)", k, e.Meta[k], v, e.Meta)
				}
			}
		})
	}
}

// presenceDiff lists how got differs from want, Rule and Revision aside;
// an empty list and none are the same.
func presenceDiff(got, want authz.Presence) []string {
	var out []string
	diff := func(field string, g, w any) {
		out = append(out, fmt.Sprintf("%s = %v, want %v", field, g, w))
	}
	same := func(a, b []string) bool { return len(a) == 0 && len(b) == 0 || slices.Equal(a, b) }
	if got.Known != want.Known {
		diff("Known", got.Known, want.Known)
	}
	if !got.StartsAt.Equal(want.StartsAt) || got.Live != want.Live {
		diff("stage", fmt.Sprint(got.StartsAt, " live ", got.Live), fmt.Sprint(want.StartsAt, " live ", want.Live))
	}
	if got.Blocked != want.Blocked || got.BlockID != want.BlockID {
		diff("Blocked", fmt.Sprint(got.Blocked, " ", got.BlockID), fmt.Sprint(want.Blocked, " ", want.BlockID))
	}
	if got.Joins != want.Joins || got.Role != want.Role || got.Scope != want.Scope {
		diff("Joins, Role, Scope", fmt.Sprint(got.Joins, " ", got.Role, " ", got.Scope), fmt.Sprint(want.Joins, " ", want.Role, " ", want.Scope))
	}
	if !same(got.Capabilities, want.Capabilities) {
		diff("Capabilities", got.Capabilities, want.Capabilities)
	}
	if !same(got.Roles, want.Roles) {
		diff("Roles", got.Roles, want.Roles)
	}
	if !same(got.Exclusive, want.Exclusive) {
		diff("Exclusive", got.Exclusive, want.Exclusive)
	}
	if got.Backstage != want.Backstage {
		diff("Backstage", got.Backstage, want.Backstage)
	}
	if got.SkipsLobby != want.SkipsLobby {
		diff("SkipsLobby", got.SkipsLobby, want.SkipsLobby)
	}
	if got.GrantedBackstage != want.GrantedBackstage || got.GrantedAdmit != want.GrantedAdmit || got.GrantedBypass != want.GrantedBypass {
		diff("GrantedBackstage, GrantedAdmit, GrantedBypass", fmt.Sprint(got.GrantedBackstage, " ", got.GrantedAdmit, " ", got.GrantedBypass),
			fmt.Sprint(want.GrantedBackstage, " ", want.GrantedAdmit, " ", want.GrantedBypass))
	}
	if !got.Until.Equal(want.Until) {
		diff("Until", got.Until, want.Until)
	}
	return out
}

func TestPresence(t *testing.T) {
	w := newWorld(t, admissionPolicy())
	w.role(authz.Role{Name: "vip", Scope: "root", Permissions: []string{"join-call", "skip-lobby"}})
	t0 := w.clock.Now()
	starts := t0.Add(time.Hour).Truncate(time.Second).UTC()
	w.schedule(lobbyCall, starts)
	w.goLive(liveCall, true)
	stages := map[string]authz.Presence{lobbyCall: {StartsAt: starts}, liveCall: {Live: true}}

	w.grant("user:guest-parent", "guest", "calltype:default")
	w.grant("user:guest-here", "guest", lobbyCall)
	w.grantUntil("user:guest-expired", "guest", lobbyCall, t0.Add(time.Minute))
	w.grant("user:door", "doorkeeper", "account:acme")
	w.grant("user:vip", "vip", "account:acme")
	w.grant("user:blocked", "guest", lobbyCall)
	blockedID := w.block(authz.Block{Subject: "user:blocked", Resource: "account:acme", Permissions: []string{"join-call"}, Reason: "spam"})
	w.grant("user:banned", "moderator", lobbyCall)
	bannedID := w.block(authz.Block{Subject: "user:banned", Resource: "calltype:default", Expires: t0.Add(3 * time.Hour)})
	w.grant("user:mod", "moderator", lobbyCall)
	w.grant("user:crew", "crew", lobbyCall)
	w.grant("user:muted-vip", "vip", "account:acme")
	w.block(authz.Block{Subject: "user:muted-vip", Resource: lobbyCall, Permissions: []string{"skip-lobby"}})
	w.grant("user:muted-crew", "crew", lobbyCall)
	w.block(authz.Block{Subject: "user:muted-crew", Resource: "account:acme", Permissions: []string{"join-backstage"}})
	w.grant("user:host", "host", liveCall)
	w.grant("user:admin", "admin", "account:acme")
	w.grant("user:director", "director", liveCall)
	w.grant("user:muted-host", "host", liveCall2)
	w.block(authz.Block{Subject: "user:muted-host", Resource: liveCall2, Permissions: []string{"end-call"}})
	w.grant("user:muted-director", "director", liveCall)
	w.block(authz.Block{Subject: "user:muted-director", Resource: "calltype:livestream", Permissions: []string{"call.control"}})
	w.grantUntil("user:until", "guest", lobbyCall, t0.Add(2*time.Hour))
	w.block(authz.Block{Subject: "user:until", Resource: "account:acme", Permissions: []string{"send-video"}, Expires: t0.Add(time.Hour)})
	w.grantUntil("user:until", "guest", globexCall, t0.Add(10*time.Minute))
	w.block(authz.Block{Subject: "user:until", Resource: "calltype:livestream", Expires: t0.Add(5 * time.Minute)})
	w.grantUntil("user:until2", "guest", "calltype:default", t0.Add(30*time.Minute))
	w.block(authz.Block{Subject: "user:until2", Resource: "root", Permissions: []string{"join-backstage"}, Expires: t0.Add(4 * time.Hour)})
	w.grant("user:was-blocked", "guest", "calltype:default")
	w.block(authz.Block{Subject: "user:was-blocked", Resource: "root", Expires: t0.Add(time.Minute)})
	w.clock.Advance(2 * time.Minute) // past the expiries at t0+1m

	var everything []string
	for _, p := range admissionPolicy().Permissions {
		if !authz.IsReserved(p.Name) {
			everything = append(everything, p.Name)
		}
	}
	slices.Sort(everything)
	guest := []string{"join-call", "read-call"}
	moderator := []string{"block-users", "create-reaction", "join-call", "mute-users", "pin-for-everyone", "read-call",
		"remove-call-member", "screenshare", "send-audio", "send-video"}
	host := []string{"block-users", "create-reaction", "end-call", "join-call", "mute-users", "pin-for-everyone", "read-call",
		"remove-call-member", "screenshare", "send-audio", "send-video", "start-record-call", "stop-record-call", "update-call"}
	without := func(list []string, drop string) []string {
		return slices.DeleteFunc(slices.Clone(list), func(s string) bool { return s == drop })
	}
	cases := []struct {
		name              string
		subject, resource string
		rule              string // the governing rule's scope; "" for none
		want              authz.Presence
	}{
		{name: "an unknown resource is not known, and nothing more",
			subject: "user:guest-here", resource: "call:default:404"},
		{name: "an unknown subject holds nothing, under the rule that governs",
			subject: "user:nobody", resource: lobbyCall, rule: "root"},
		{name: "a resource no rule governs: capabilities, but no join and no roles a rule names",
			subject: "user:door", resource: "account:acme",
			want: authz.Presence{Capabilities: []string{"admit-participants", "join-call", "read-call"}}},
		{name: "a grant above the call joins, and does not skip the lobby",
			subject: "user:guest-parent", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "guest", Scope: "calltype:default", Capabilities: guest, Roles: []string{"guest"}}},
		{name: "a grant of the admit role on the call itself skips the lobby",
			subject: "user:guest-here", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "guest", Scope: lobbyCall, Capabilities: guest, Roles: []string{"guest"}, SkipsLobby: true}},
		{name: "an expired grant counts as absent",
			subject: "user:guest-expired", resource: lobbyCall, rule: "root"},
		{name: "the lobby's admit permission skips it",
			subject: "user:door", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "doorkeeper", Scope: "account:acme", Capabilities: []string{"admit-participants", "join-call", "read-call"},
				Roles: []string{"doorkeeper"}, SkipsLobby: true, GrantedAdmit: true}},
		{name: "the lobby's bypass permission skips it",
			subject: "user:vip", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "vip", Scope: "account:acme", Capabilities: []string{"join-call", "skip-lobby"}, Roles: []string{"vip"}, SkipsLobby: true, GrantedBypass: true}},
		{name: "a block of the join permission: blocked, naming the block and where it is",
			subject: "user:blocked", resource: lobbyCall, rule: "root",
			want: authz.Presence{Blocked: true, BlockID: blockedID, Scope: "account:acme", Capabilities: []string{"read-call"}, Roles: []string{"guest"}, SkipsLobby: true}},
		{name: "a block of everything: no capabilities, no roles, and when it ends",
			subject: "user:banned", resource: lobbyCall, rule: "root",
			want: authz.Presence{Blocked: true, BlockID: bannedID, Scope: "calltype:default", Until: t0.Add(3 * time.Hour)}},
		{name: "an expired block counts as absent",
			subject: "user:was-blocked", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "guest", Scope: "calltype:default", Capabilities: guest, Roles: []string{"guest"}}},
		{name: "capabilities leave out Usher's reserved permissions",
			subject: "user:mod", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "moderator", Scope: lobbyCall, Capabilities: moderator, Roles: []string{"moderator"}}},
		{name: "the backstage permission",
			subject: "user:crew", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "crew", Scope: lobbyCall, Capabilities: []string{"join-backstage", "join-call"}, Roles: []string{"crew"}, Backstage: true, GrantedBackstage: true}},
		{name: "a block of the bypass permission: no skip of the lobby, but a grant of it",
			subject: "user:muted-vip", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "vip", Scope: "account:acme", Capabilities: []string{"join-call"}, Roles: []string{"vip"}, GrantedBypass: true}},
		{name: "a block of the backstage permission: not backstage, but a participant stays there",
			subject: "user:muted-crew", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "crew", Scope: lobbyCall, Capabilities: []string{"join-call"}, Roles: []string{"crew"}, GrantedBackstage: true}},
		{name: "an exclusive role, and the exclusive permission it names",
			subject: "user:host", resource: liveCall, rule: "calltype:livestream",
			want: authz.Presence{Joins: true, Role: "host", Scope: liveCall, Capabilities: host, Roles: []string{"host"},
				Exclusive: []string{"role host", "permission end-call", authz.OccupantMark}}},
		{name: "a role of * holds everything and marks no one",
			subject: "user:admin", resource: liveCall, rule: "calltype:livestream",
			want: authz.Presence{Joins: true, Role: "admin", Scope: "account:acme", Capabilities: everything, Roles: []string{"admin"}}},
		{name: "a role naming a permission that implies the exclusive one marks its holder",
			subject: "user:director", resource: liveCall, rule: "calltype:livestream",
			want: authz.Presence{Joins: true, Role: "director", Scope: liveCall, Capabilities: []string{"call.control", "end-call", "join-call"},
				Roles: []string{"director"}, Exclusive: []string{"permission end-call", authz.OccupantMark}}},
		{name: "a block of the exclusive permission unmarks it, but not the role",
			subject: "user:muted-host", resource: liveCall2, rule: "calltype:livestream",
			want: authz.Presence{Joins: true, Role: "host", Scope: liveCall2, Capabilities: without(host, "end-call"), Roles: []string{"host"},
				Exclusive: []string{"role host", authz.OccupantMark}}},
		{name: "a block of a permission implying the exclusive one unmarks it",
			subject: "user:muted-director", resource: liveCall, rule: "calltype:livestream",
			want: authz.Presence{Joins: true, Role: "director", Scope: liveCall, Capabilities: []string{"join-call"}, Roles: []string{"director"},
				Exclusive: []string{authz.OccupantMark}}},
		{name: "Until is the earliest expiry on the path: a block's, before a grant's, ignoring those elsewhere",
			subject: "user:until", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "guest", Scope: lobbyCall, Capabilities: guest, Roles: []string{"guest"}, SkipsLobby: true,
				Until: t0.Add(time.Hour)}},
		{name: "Until is the earliest expiry on the path: a grant's, before a block's",
			subject: "user:until2", resource: lobbyCall, rule: "root",
			want: authz.Presence{Joins: true, Role: "guest", Scope: "calltype:default", Capabilities: guest, Roles: []string{"guest"},
				Until: t0.Add(30 * time.Minute)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := w.idx.Presence(tc.subject, tc.resource)
			want := tc.want
			if tc.resource != "call:default:404" {
				want.Known = true
				want.StartsAt, want.Live = stages[tc.resource].StartsAt, stages[tc.resource].Live
			}
			if got.Revision != w.idx.Revision() {
				t.Errorf("Presence answered at revision %d, want %d", got.Revision, w.idx.Revision())
			}
			if scope := ""; got.Rule != nil {
				scope = got.Rule.Scope
				if scope != tc.rule {
					t.Errorf("the governing rule is at %q, want %q", scope, tc.rule)
				}
			} else if tc.rule != "" {
				t.Errorf("no rule governs, want the one at %q", tc.rule)
			}
			for _, d := range presenceDiff(got, want) {
				t.Errorf("Presence(%s, %s): %s", tc.subject, tc.resource, d)
			}
		})
	}
}

// presenceWorlds is how many random worlds TestPresenceDifferential builds.
const presenceWorlds = 150

// The roles a rule's uncounted_roles name are those defined where the rule
// is or above it. A role of the same name that a tenant defines on its
// account is another role: holding it does not make a participant
// uncounted by the platform's capacity.
func TestUncountedRolesARuleNamesAreDefinedWhereItIsOrAbove(t *testing.T) {
	w := newWorld(t, admissionPolicy())
	w.grant("user:host", "host", lobbyCall)
	if got := w.idx.Presence("user:host", lobbyCall).Roles; !slices.Equal(got, []string{"host"}) {
		t.Fatalf("root's host on %s: Roles = %v, want [host], which root's rule leaves uncounted", lobbyCall, got)
	}
	w.role(authz.Role{Name: "host", Scope: "account:acme", Permissions: []string{"join-call", "read-call"}})
	p := w.idx.Presence("user:host", lobbyCall)
	if !p.Joins || p.Role != "host" {
		t.Fatalf("account:acme's host on %s: Joins %v by %q, want a join by host", lobbyCall, p.Joins, p.Role)
	}
	if len(p.Roles) != 0 {
		t.Errorf("account:acme's host on %s: Roles = %v, want none: root's rule names root's host", lobbyCall, p.Roles)
	}
}

// TestPresenceDifferential holds Index.Presence to a reference written from
// DESIGN.md and Presence's documentation, over random small worlds: a tree
// of at most 12 resources, at most 4 role names defined and redefined at
// random scopes, grants and blocks with and without expiry, and admission
// rules at random scopes, asked of every subject on every resource at
// instants around the expiries. Each world is asked of an index loaded
// from its snapshot and of an engine's index fed it as one change set.
func TestPresenceDifferential(t *testing.T) {
	for seed := range uint64(presenceWorlds) {
		rng := rand.New(rand.NewPCG(seed, 0xad317))
		s, subjects, instants := randomPresenceWorld(rng)

		clock := authz.NewManualClock(instants[0])
		b := authz.NewBuilder(clock)
		if err := s.Load(b); err != nil {
			t.Fatalf("seed %d: loading the snapshot: %v", seed, err)
		}
		loaded, err := b.Build(1)
		if err != nil {
			t.Fatalf("seed %d: Build: %v", seed, err)
		}
		fed := newWorld(t, authz.Policy{})
		fed.store(snapshotChanges(s)...)
		indexes := []struct {
			name  string
			idx   *authz.Index
			clock *authz.ManualClock
		}{{"an index loaded from the snapshot", loaded, clock}, {"an engine's index, fed", fed.idx, fed.clock}}

		resources := []string{authz.RootName, "ghost:1"}
		for _, r := range s.Resources {
			resources = append(resources, r.Name)
		}
		for _, at := range instants {
			for _, subject := range append(subjects, "user:nobody") {
				for _, resource := range resources {
					want, wantRule := referencePresence(s, at, subject, resource)
					for _, x := range indexes {
						x.clock.Set(at)
						got := x.idx.Presence(subject, resource)
						diffs := presenceDiff(got, want)
						if !reflect.DeepEqual(got.Rule, wantRule) {
							diffs = append(diffs, fmt.Sprintf("Rule = %+v, want %+v", got.Rule, wantRule))
						}
						if len(diffs) > 0 {
							t.Fatalf("seed %d, at +%v, Presence(%s, %s) on %s:\n  %s\n%s", seed, at.Sub(instants[0]), subject, resource, x.name,
								strings.Join(diffs, "\n  "), describePresenceWorld(s, subject))
						}
					}
				}
			}
		}
	}
}

// presenceBase is the instant the random worlds' expiries count from.
var presenceBase = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// randomPresenceWorld returns a random world, its subjects, and the
// instants to ask it at, in order.
func randomPresenceWorld(rng *rand.Rand) (authz.Snapshot, []string, []time.Time) {
	var s authz.Snapshot
	// A permission DAG in a random order, with one reserved permission.
	names := []string{"call.join", "call.stage", "lobby.admit", "lobby.skip", "call.backstage", "media.mute", "usher.grants.write"}
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	for i, n := range names {
		p := authz.Permission{Name: n}
		for range rng.IntN(3) {
			if i > 0 {
				if parent := pick(rng, names[:i]); !slices.Contains(p.Parents, parent) {
					p.Parents = append(p.Parents, parent)
				}
			}
		}
		s.Permissions = append(s.Permissions, p)
	}
	slices.Sort(names)
	subset := func(list []string, max int) []string {
		var out []string
		for range rng.IntN(max + 1) {
			if v := pick(rng, list); !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
		slices.Sort(out)
		return out
	}
	minute := func(k int) time.Time { return presenceBase.Add(time.Duration(k) * time.Minute) }
	expiry := func() time.Time {
		if rng.IntN(2) == 0 {
			return time.Time{}
		}
		return minute(rng.IntN(8) - 2) // some expired before the base
	}

	// A tree of 1-12 resources.
	types := []string{"account", "room", "call"}
	scopes := []string{authz.RootName}
	for i := range 1 + rng.IntN(12) {
		r := authz.Resource{Name: fmt.Sprintf("%s:%d", pick(rng, types), i), Parent: pick(rng, scopes)}
		if rng.IntN(3) == 0 {
			r.StartsAt = minute(rng.IntN(10))
		}
		r.Live = rng.IntN(3) == 0
		s.Resources = append(s.Resources, r)
		scopes = append(scopes, r.Name)
	}

	// 1-4 role names, each defined at root or not, and redefined below.
	roles := []string{"host", "guest", "mod", "admin"}[:1+rng.IntN(4)]
	defined := map[[2]string]bool{}
	for range 1 + rng.IntN(7) {
		r := authz.Role{Name: pick(rng, roles), Scope: authz.RootName}
		if rng.IntN(2) == 0 {
			r.Scope = pick(rng, scopes)
		}
		if defined[[2]string{r.Scope, r.Name}] {
			continue
		}
		defined[[2]string{r.Scope, r.Name}] = true
		if rng.IntN(6) == 0 {
			r.Permissions = []string{authz.Wildcard}
		} else {
			r.Permissions = subset(names, 3)
		}
		s.Roles = append(s.Roles, r)
	}

	subjects := []string{"user:s0", "user:s1", "user:s2"}
	granted := map[[3]string]bool{}
	for range rng.IntN(16) {
		g := authz.Grant{Subject: pick(rng, subjects), Role: pick(rng, append(roles, "undefined")), Resource: pick(rng, scopes), Expires: expiry()}
		if granted[[3]string{g.Subject, g.Role, g.Resource}] {
			continue
		}
		granted[[3]string{g.Subject, g.Role, g.Resource}] = true
		s.Grants = append(s.Grants, g)
	}
	for i := range rng.IntN(6) {
		b := authz.Block{Subject: pick(rng, subjects), Resource: pick(rng, scopes), ID: fmt.Sprintf("b%d", i), Expires: expiry()}
		if rng.IntN(3) > 0 {
			b.Permissions = subset(names, 2)
		}
		s.Blocks = append(s.Blocks, b)
	}

	// 0-2 rules per type, at random scopes.
	ruled := map[[2]string]bool{}
	optional := func() string {
		if rng.IntN(2) == 0 {
			return ""
		}
		return pick(rng, names)
	}
	for _, typ := range types {
		for range rng.IntN(3) {
			a := authz.Admission{Scope: pick(rng, scopes), ResourceType: typ, Join: pick(rng, names), Backstage: optional(), Stage: optional(),
				ExclusiveRoles: subset(append(roles, "undefined"), 2), ExclusivePermissions: subset(names, 2)}
			if ruled[[2]string{a.Scope, typ}] {
				continue
			}
			ruled[[2]string{a.Scope, typ}] = true
			if rng.IntN(2) == 0 {
				a.Lobby = &authz.Lobby{Admit: pick(rng, names), Role: pick(rng, append(roles, "undefined")), Bypass: optional()}
			}
			s.Admissions = append(s.Admissions, a)
		}
	}

	// The base, and four instants just before, at or just after an expiry.
	instants := []time.Time{presenceBase}
	for range 4 {
		instants = append(instants, minute(rng.IntN(7)).Add(time.Duration(rng.IntN(3)-1)))
	}
	slices.SortFunc(instants, func(a, b time.Time) int { return a.Compare(b) })
	return s, subjects, slices.Compact(instants)
}

// snapshotChanges is s as one change set's changes, parents before
// children.
func snapshotChanges(s authz.Snapshot) []authz.Change {
	var out []authz.Change
	for _, p := range s.Permissions {
		out = append(out, authz.Change{Op: authz.OpPutPermission, Permission: &p})
	}
	for _, r := range s.Resources {
		out = append(out, authz.Change{Op: authz.OpPutResource, Resource: &r})
	}
	for _, r := range s.Roles {
		out = append(out, authz.Change{Op: authz.OpPutRole, Role: &r})
	}
	for _, g := range s.Grants {
		out = append(out, authz.Change{Op: authz.OpPutGrant, Grant: &g})
	}
	for _, b := range s.Blocks {
		out = append(out, authz.Change{Op: authz.OpPutBlock, Block: &b})
	}
	for _, a := range s.Admissions {
		out = append(out, authz.Change{Op: authz.OpPutAdmission, Admission: &a})
	}
	return out
}

// referencePresence is Presence from DESIGN.md: the reference evaluator's
// Check and ListPermissions decide what Check would, and the rule, the
// roles, Exclusive, SkipsLobby and Until are worked out here from the
// snapshot, with none of the index's structures. It returns the rule apart.
func referencePresence(s authz.Snapshot, now time.Time, subject, resource string) (authz.Presence, *authz.Admission) {
	r := newReference(s, now)
	var out authz.Presence
	if !r.registered(resource) {
		return out, nil
	}
	out.Known = true
	path := r.path(resource)
	for _, res := range s.Resources {
		if res.Name == resource {
			out.StartsAt, out.Live = res.StartsAt, res.Live
		}
	}
	// The rule for the resource's type at the nearest scope on its path.
	var rule *authz.Admission
	for _, at := range path {
		for _, a := range s.Admissions {
			scope := cmp.Or(a.Scope, authz.RootName)
			if scope == at && a.ResourceType == authz.TypeOf(resource) && rule == nil {
				rule = &a
			}
		}
	}
	holds := func(perm string) bool { return perm != "" && r.check(subject, perm, resource).Allowed }
	var live []authz.Grant // the subject's unexpired grants on the path
	for _, g := range s.Grants {
		if g.Subject == subject && slices.Contains(path, g.Resource) && r.unexpired(g.Expires) {
			live = append(live, g)
		}
	}
	if rule != nil {
		switch c := r.check(subject, rule.Join, resource); c.Reason {
		case refBlocked:
			out.Blocked, out.BlockID, out.Scope = true, c.Block, c.Scope
		case refGranted:
			out.Joins, out.Role, out.Scope = true, c.Role, c.Scope
		}
		// granted: a live grant's role holds perm, whatever blocks it.
		granted := func(perm string) bool {
			for _, g := range live {
				if perms, ok := r.resolve(g.Role, path); perm != "" && r.declared(perm) && ok && r.grants(perms, perm) {
					return true
				}
			}
			return false
		}
		out.Backstage = holds(rule.Backstage)
		out.GrantedBackstage = out.Backstage || !out.Live && (rule.RequireLive || !out.StartsAt.IsZero()) && granted(rule.Backstage)
		if l := rule.Lobby; l != nil {
			out.SkipsLobby = holds(l.Admit) || holds(l.Bypass)
			for _, g := range live {
				if g.Role == l.Role && g.Resource == resource {
					out.SkipsLobby = true
				}
			}
			// Read from the grants only for one that does not skip it.
			out.GrantedAdmit = holds(l.Admit) || !out.SkipsLobby && granted(l.Admit)
			out.GrantedBypass = holds(l.Bypass) || !out.SkipsLobby && granted(l.Bypass)
		}
	}
	for _, p := range r.permissions(subject, resource) {
		if !authz.IsReserved(p) {
			out.Capabilities = append(out.Capabilities, p)
		}
	}
	whole := false
	var until time.Time
	soonest := func(t time.Time) {
		if !t.IsZero() && (until.IsZero() || t.Before(until)) {
			until = t
		}
	}
	for _, b := range s.Blocks {
		if b.Subject == subject && slices.Contains(path, b.Resource) && r.unexpired(b.Expires) {
			whole = whole || len(b.Permissions) == 0
			soonest(b.Expires)
		}
	}
	// The roles a rule's uncounted_roles name are those defined where it is
	// or above it: the definition in force on the path lies at or past the
	// rule's scope.
	ruleScope := -1
	if rule != nil {
		ruleScope = slices.Index(path, cmp.Or(rule.Scope, authz.RootName))
	}
	definedFrom := func(role string) int {
		for i, at := range path {
			for _, d := range s.Roles {
				if d.Name == role && cmp.Or(d.Scope, authz.RootName) == at {
					return i
				}
			}
		}
		return -1
	}
	for _, g := range live {
		soonest(g.Expires)
		if rule != nil && !whole && definedFrom(g.Role) >= ruleScope && !slices.Contains(out.Roles, g.Role) {
			out.Roles = append(out.Roles, g.Role)
		}
	}
	slices.Sort(out.Roles)
	out.Until = until
	if rule != nil {
		// An exclusive role is held by its name, wherever it is defined.
		for _, role := range rule.ExclusiveRoles {
			if !whole && slices.ContainsFunc(live, func(g authz.Grant) bool { return g.Role == role }) {
				out.Exclusive = append(out.Exclusive, "role "+role)
			}
		}
		// namedBy: perm is not blocked, and a live role that does not hold
		// "*" names it or a permission that implies it.
		namedBy := func(perm string) bool {
			if r.check(subject, perm, resource).Reason == refBlocked {
				return false
			}
			named := false
			for _, g := range live {
				perms, ok := r.resolve(g.Role, path)
				if !ok || slices.Contains(perms, authz.Wildcard) {
					continue
				}
				for _, p := range perms {
					named = named || r.implies(p, perm)
				}
			}
			return named
		}
		for _, perm := range rule.ExclusivePermissions {
			if namedBy(perm) {
				out.Exclusive = append(out.Exclusive, "permission "+perm)
			}
		}
		// A holder of an exclusive permission enters no call another
		// occupant, one who holds the join permission by a named role, is in.
		if len(rule.ExclusivePermissions) > 0 && namedBy(rule.Join) {
			out.Exclusive = append(out.Exclusive, authz.OccupantMark)
		}
	}
	return out, rule
}

// describePresenceWorld prints a world for a failure message: the tree, the
// roles, the rules, and the subject's grants and blocks.
func describePresenceWorld(s authz.Snapshot, subject string) string {
	var b strings.Builder
	for _, p := range s.Permissions {
		fmt.Fprintf(&b, "  permission %s parents %v\n", p.Name, p.Parents)
	}
	for _, r := range s.Resources {
		fmt.Fprintf(&b, "  resource %s under %s, starts %v, live %v\n", r.Name, r.Parent, r.StartsAt.Sub(presenceBase), r.Live)
	}
	for _, r := range s.Roles {
		fmt.Fprintf(&b, "  role %s at %s: %v\n", r.Name, r.Scope, r.Permissions)
	}
	for _, a := range s.Admissions {
		fmt.Fprintf(&b, "  rule for %s at %s: join %s, backstage %q, exclusive %v %v, lobby %+v\n", a.ResourceType, a.Scope, a.Join, a.Backstage,
			a.ExclusiveRoles, a.ExclusivePermissions, a.Lobby)
	}
	for _, g := range s.Grants {
		if g.Subject == subject {
			fmt.Fprintf(&b, "  grant %s on %s, expires %v\n", g.Role, g.Resource, g.Expires.Sub(presenceBase))
		}
	}
	for _, bl := range s.Blocks {
		if bl.Subject == subject {
			fmt.Fprintf(&b, "  block %s on %s of %v, expires %v\n", bl.ID, bl.Resource, bl.Permissions, bl.Expires.Sub(presenceBase))
		}
	}
	return b.String()
}

// An actor may not get around the platform's rules and quotas by deleting
// (and registering again) or moving the resource they are on: "one may not
// delete (or move) a resource to ... take from others what one could not
// take from them directly", rules being the platform's and quotas needing
// "usher.quotas.write at the scope".
func TestActorsMayNotShedThePlatformsRulesAndQuotas(t *testing.T) {
	// janitor may delete, move and register calls, but not write quotas.
	policy := func() authz.Policy {
		p := admissionPolicy()
		p.Permissions = append(p.Permissions,
			authz.Permission{Name: "usher.resources.delete"},
			authz.Permission{Name: "usher.resources.move"},
			authz.Permission{Name: "usher.quotas.write"})
		p.Roles = append(p.Roles, authz.Role{Name: "janitor", Scope: "root",
			Permissions: []string{"usher.resources.delete", "usher.resources.move", "usher.resources.create.call"}})
		return p
	}
	own := authz.Admission{Scope: "call:livestream:43", ResourceType: "call", Join: "join-call", MaxParticipants: 1,
		Lobby: &authz.Lobby{Admit: "admit-participants", Role: "guest"}}

	t.Run("deleting a resource that holds a rule", func(t *testing.T) {
		w := newWorld(t, policy())
		w.grant("user:root-admin", "admin", "root")
		w.putAdmission(own)
		e := w.refuses(authz.PermissionDenied, "actor", "user:root-admin", func() (authz.Revision, error) {
			return w.eng.DeleteResource(w.ctx, as("user:root-admin"), "call:livestream:43")
		})
		if e.Rule != authz.RulePlatformOnly {
			t.Errorf("refusal names rule %q, want %q", e.Rule, authz.RulePlatformOnly)
		}
		mentions(t, e, "call:livestream:43")
		if !strings.Contains(e.Error(), "holds the admission rule") {
			t.Errorf("message %q does not say the resource holds an admission rule", e.Error())
		}
		if got := ruleScope(w, "call:livestream:43"); got != "call:livestream:43" {
			t.Errorf("after the refusal the call is governed from %q, want its own rule", got)
		}
		w.deleteResource("call:livestream:43") // the platform may
	})

	t.Run("deleting a resource that holds a quota", func(t *testing.T) {
		w := newWorld(t, policy())
		w.grant("user:janitor", "janitor", "root")
		w.grant("user:root-admin", "admin", "root")
		quota := authz.Quota{Scope: "calltype:default", ResourceType: "call", Limit: 1}
		if rev, err := w.eng.PutQuota(w.ctx, w.by, quota); err != nil {
			w.ok("PutQuota", rev, err)
		}
		if rev, err := w.eng.DeleteResource(w.ctx, as("user:janitor"), "call:default:1"); err != nil {
			w.ok("DeleteResource call:default:1 by janitor", rev, err)
		}
		e := w.refuses(authz.PermissionDenied, "actor", "user:janitor", func() (authz.Revision, error) {
			return w.eng.DeleteResource(w.ctx, as("user:janitor"), "calltype:default")
		})
		mentions(t, e, "usher.quotas.write", "calltype:default")
		// One who may remove the quota may delete what holds it.
		if rev, err := w.eng.DeleteResource(w.ctx, as("user:root-admin"), "calltype:default"); err != nil {
			w.ok("DeleteResource calltype:default by root-admin", rev, err)
		}
	})

	t.Run("deleting a resource whose quota registering it sets again", func(t *testing.T) {
		p := policy()
		p.DefaultQuotas = []authz.DefaultQuota{{ScopeType: "call", ResourceType: "room", Limit: 2}}
		w := newWorld(t, p)
		w.grant("user:janitor", "janitor", "root")
		call := authz.Resource{Name: "call:default:9", Parent: "calltype:default"}
		rev, err := w.eng.PutResource(w.ctx, as("user:janitor"), call)
		w.ok("registering call:default:9", rev, err)
		// Its quota is its type's default: deleting it sheds nothing.
		rev, err = w.eng.DeleteResource(w.ctx, as("user:janitor"), call.Name)
		w.ok("deleting call:default:9 with its default quota", rev, err)
		rev, err = w.eng.PutResource(w.ctx, as("user:janitor"), call)
		w.ok("registering call:default:9 again", rev, err)
		rev, err = w.eng.PutQuota(w.ctx, w.by, authz.Quota{Scope: call.Name, ResourceType: "room", Limit: 1})
		w.ok("the platform lowering its quota", rev, err)
		w.refuses(authz.PermissionDenied, "actor", "user:janitor", func() (authz.Revision, error) {
			return w.eng.DeleteResource(w.ctx, as("user:janitor"), call.Name)
		})
	})

	t.Run("moving a call out from under its rule", func(t *testing.T) {
		w := newWorld(t, policy())
		w.grant("user:janitor", "janitor", "root")
		// call:livestream:43 is governed by calltype:livestream's rule;
		// under calltype:default, root's would govern it.
		e := w.refuses(authz.PermissionDenied, "actor", "user:janitor", func() (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, as("user:janitor"), authz.Resource{Name: "call:livestream:43", Parent: "calltype:default"})
		})
		if e.Rule != authz.RulePlatformOnly {
			t.Errorf("refusal names rule %q, want %q", e.Rule, authz.RulePlatformOnly)
		}
		mentions(t, e, "call:livestream:43", "calltype:livestream", "root")
		// A move that keeps the rule is the actor's to make: root's rule
		// governs call:default:1 under calltype:default and under
		// account:acme alike.
		if rev, err := w.eng.PutResource(w.ctx, as("user:janitor"), authz.Resource{Name: "call:default:1", Parent: "account:acme"}); err != nil {
			w.ok("moving call:default:1 under account:acme", rev, err)
		}
		// A call whose own rule goes with it may move anywhere.
		w.putAdmission(own)
		if rev, err := w.eng.PutResource(w.ctx, as("user:janitor"), authz.Resource{Name: "call:livestream:43", Parent: "calltype:default"}); err != nil {
			w.ok("moving call:livestream:43, with its own rule, under calltype:default", rev, err)
		}
		if got := ruleScope(w, "call:livestream:43"); got != "call:livestream:43" {
			t.Errorf("after the move the call is governed from %q, want its own rule", got)
		}
		// The platform moves what it likes.
		w.deleteAdmission("call:livestream:43", "call")
		rev, err := w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "call:livestream:43", Parent: "calltype:livestream"})
		w.ok("the platform moving call:livestream:43 back", rev, err)
	})
}

func TestActorsMayNotShedAScheduledStart(t *testing.T) {
	// janitor may delete and register calls, but not stage them; stagehand
	// may do both.
	policy := func() authz.Policy {
		p := admissionPolicy()
		p.Permissions = append(p.Permissions, authz.Permission{Name: "usher.resources.delete"})
		p.Roles = append(p.Roles,
			authz.Role{Name: "janitor", Scope: "root", Permissions: []string{"usher.resources.delete", "usher.resources.create.call"}},
			authz.Role{Name: "stagehand", Scope: "root", Permissions: []string{"usher.resources.delete", "update-call"}})
		return p
	}

	t.Run("deleting a call before its scheduled start", func(t *testing.T) {
		w := newWorld(t, policy())
		w.grant("user:janitor", "janitor", "root")
		w.grant("user:stagehand", "stagehand", "root")
		start := w.clock.Now().Add(24 * time.Hour)
		w.schedule(lobbyCall, start)
		e := w.refuses(authz.PermissionDenied, "actor", "user:janitor", func() (authz.Revision, error) {
			return w.eng.DeleteResource(w.ctx, as("user:janitor"), lobbyCall)
		})
		if e.Rule != authz.RuleMissingPermission {
			t.Errorf("refusal names rule %q, want %q", e.Rule, authz.RuleMissingPermission)
		}
		mentions(t, e, "update-call", lobbyCall)
		if e.Meta["permission"] != "update-call" || e.Meta["resource"] != lobbyCall {
			t.Errorf("refusal's metadata %v, want permission update-call on %s", e.Meta, lobbyCall)
		}
		if got, _ := stageOf(w, lobbyCall); !got.Equal(start) {
			t.Errorf("after the refusal %s starts at %v, want %v", lobbyCall, got, start)
		}
		// One who may change the schedule may delete the call.
		rev, err := w.eng.DeleteResource(w.ctx, as("user:stagehand"), lobbyCall)
		w.ok("DeleteResource by stagehand", rev, err)
	})

	t.Run("a call whose rule names no stage permission", func(t *testing.T) {
		w := newWorld(t, policy())
		w.grant("user:stagehand", "stagehand", "root")
		w.schedule(globexCall, w.clock.Now().Add(time.Hour))
		e := w.refuses(authz.PermissionDenied, "actor", "user:stagehand", func() (authz.Revision, error) {
			return w.eng.DeleteResource(w.ctx, as("user:stagehand"), globexCall)
		})
		if e.Rule != authz.RulePlatformOnly {
			t.Errorf("refusal names rule %q, want %q", e.Rule, authz.RulePlatformOnly)
		}
		w.deleteResource(globexCall) // the platform may
	})

	t.Run("a call that has started or is live sheds nothing", func(t *testing.T) {
		w := newWorld(t, policy())
		w.grant("user:janitor", "janitor", "root")
		w.schedule(lobbyCall, w.clock.Now().Add(time.Hour))
		w.clock.Advance(2 * time.Hour)
		rev, err := w.eng.DeleteResource(w.ctx, as("user:janitor"), lobbyCall)
		w.ok("DeleteResource of a call that started", rev, err)
		w.goLive(liveCall, true)
		rev, err = w.eng.DeleteResource(w.ctx, as("user:janitor"), liveCall)
		w.ok("DeleteResource of a live call", rev, err)
	})
}

// A rule that names no stage permission leaves its calls' stage to the
// platform: an actor who schedules one, takes it live or registers it with
// a stage is refused as platform only, as one who deletes it before its
// start is, not as lacking a permission that no permission is.
func TestAStageOnlyThePlatformSetsIsRefusedAsPlatformOnly(t *testing.T) {
	starts := time.Date(2031, 5, 1, 9, 0, 0, 0, time.UTC)
	for name, write := range map[string]func(w *world, by authz.Author) (authz.Revision, error){
		"Schedule": func(w *world, by authz.Author) (authz.Revision, error) {
			return w.eng.Schedule(w.ctx, by, globexCall, starts)
		},
		"GoLive": func(w *world, by authz.Author) (authz.Revision, error) {
			return w.eng.GoLive(w.ctx, by, globexCall, true)
		},
		"PutResource with a stage": func(w *world, by authz.Author) (authz.Revision, error) {
			return w.eng.PutResource(w.ctx, by, authz.Resource{Name: "call:globex:8", Parent: "calltype:globex", StartsAt: starts})
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, admissionPolicy())
			w.grant("user:root-admin", "admin", "root")
			e := w.refuses(authz.PermissionDenied, "actor", "user:root-admin", func() (authz.Revision, error) {
				return write(w, as("user:root-admin"))
			})
			if e.Rule != authz.RulePlatformOnly || authz.KindOf(e) != authz.KindPlatformOnly {
				t.Errorf("refusal names rule %q (kind %s), want %q: %v", e.Rule, authz.KindOf(e), authz.RulePlatformOnly, e)
			}
			if _, err := write(w, w.by); err != nil {
				t.Errorf("the platform: %v", err)
			}
		})
	}
}

// A page of ExportPolicy ends once it holds 10,000 roles, quotas and
// admission rules, the resource that reaches it whole: a page of 1,000
// resources that each carried 10,000 quotas held ten million, far past what
// a client reads of one message, and `usher policy apply` failed on it.
func TestAnExportPageHoldsABoundedNumberOfEntries(t *testing.T) {
	w := newWorld(t, streamPolicy())
	for _, account := range []string{"account:a1", "account:a2", "account:a3"} {
		w.put(account, "root")
		var changes []authz.Change
		for i := range 6000 {
			changes = append(changes, authz.Change{Op: authz.OpPutQuota, Quota: &authz.Quota{Scope: account, ResourceType: "call", Subject: fmt.Sprintf("user:u%d", i), Limit: 1}})
		}
		w.store(changes...)
	}
	p, next, _, err := w.idx.ExportPolicy(authz.MaxPageSize, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Quotas) > 12000 || next == "" {
		t.Errorf("the first page of 1,000 resources holds %d quotas, and the token %q; want at most 12,000 (10,000 and the last resource's) and a next page", len(p.Quotas), next)
	}
	if all := exportPages(w, authz.MaxPageSize); len(all.Quotas) != 18000 {
		t.Errorf("the pages hold %d quotas, want 18,000", len(all.Quotas))
	}
}

// An exclusive role is held by its name wherever it is defined, while an
// uncounted role is the rule's own definition only: a role defined again
// below the rule neither lifts the rule's restriction (who may define roles
// on its account cannot let two hosts share a room by restating "host"
// there) nor gains its exemption.
func TestAnExclusiveRoleDefinedAgainBelowTheRuleIsStillExclusive(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.putAdmission(authz.Admission{Scope: "account:acme", ResourceType: "call", Join: "join-call", MaxParticipants: 10,
		ExclusiveRoles: []string{"host"}, UncountedRoles: []string{"moderator"}})
	w.grant("user:h", "host", "call:livestream:42")
	w.grant("user:m", "moderator", "call:livestream:42")
	before := w.idx.Presence("user:h", "call:livestream:42")
	if !slices.Equal(before.Exclusive, []string{authz.RoleMark + "host"}) {
		t.Fatalf("the host holds %v exclusively, want [role host]", before.Exclusive)
	}
	w.role(authz.Role{Name: "host", Scope: "calltype:livestream", Permissions: []string{"join-call", "read-call", "end-call"}, BindableOn: []string{"call"}})
	w.role(authz.Role{Name: "moderator", Scope: "calltype:livestream", Permissions: []string{"join-call", "read-call"}})
	after := w.idx.Presence("user:h", "call:livestream:42")
	if !slices.Equal(after.Exclusive, []string{authz.RoleMark + "host"}) {
		t.Errorf("with host defined again below the rule, the host holds %v exclusively, want [role host]", after.Exclusive)
	}
	if m := w.idx.Presence("user:m", "call:livestream:42"); slices.Contains(m.Roles, "moderator") {
		t.Errorf("with moderator defined again below the rule, the moderator's roles %v name it: it would be uncounted", m.Roles)
	}
	w.block(authz.Block{Subject: "user:h", Resource: "calltype:livestream"})
	if p := w.idx.Presence("user:h", "call:livestream:42"); len(p.Exclusive) != 0 {
		t.Errorf("blocked from everything, the host holds %v exclusively, want nothing", p.Exclusive)
	}
}
