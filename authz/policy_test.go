package authz_test

import (
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/authz"
)

func TestApplyPolicy(t *testing.T) {
	t.Run("a policy is applied in one write", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		sets := w.be.committed()
		if len(sets) != 1 || sets[0].Revision != 1 {
			t.Fatalf("committed %d change sets, want one at revision 1", len(sets))
		}
		count := map[string]int{}
		for _, op := range w.lastOps() {
			count[op]++
		}
		want := map[string]int{"put_permission": 25, "put_resource": 9, "put_role": 5}
		if !reflect.DeepEqual(count, want) {
			t.Errorf("the policy committed %v, want %v", count, want)
		}
	})

	t.Run("Applying a policy already in force writes nothing and reports changed false", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		p := streamPolicy()
		slices.Reverse(p.Roles[1].Permissions) // the same definition, listed differently
		p.Roles[1].Permissions = append(p.Roles[1].Permissions, "join-call")
		sets, rev := w.be.count(), w.idx.Revision()
		got, changed, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(changed) > 0 || got != rev {
			t.Errorf("ApplyPolicy again = revision %d, changed %v; want %d, false", got, changed, rev)
		}
		w.unchanged(sets, rev)
	})

	t.Run("Applying a policy already in force writes nothing, even one that registers a resource and moves it", func(t *testing.T) {
		p := streamPolicy()
		// call:globex:7 is listed under account:acme first, then moved back.
		p.Resources = append(p.Resources[:8], authz.Resource{Name: "call:globex:7", Parent: "account:acme"},
			authz.Resource{Name: "call:globex:7", Parent: "calltype:globex"})
		w := newWorld(t, p)
		sets, rev := w.be.count(), w.idx.Revision()
		got, changed, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
		if err != nil || len(changed) > 0 || got != rev {
			t.Errorf("ApplyPolicy again = revision %d, changed %v, %v; want %d, false", got, changed, err, rev)
		}
		w.unchanged(sets, rev)
	})

	t.Run("What p does not list is left alone", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.put("call:livestream:99", "calltype:livestream")
		w.role(authz.Role{Name: "stage-manager", Scope: "account:acme", Permissions: []string{"start-broadcast-call"}})
		w.grant("user:alice", "stage-manager", "call:livestream:99")
		p := streamPolicy()
		p.Roles[0].Permissions = []string{"join-call"}
		_, changed, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
		if err != nil || len(changed) == 0 {
			t.Fatalf("ApplyPolicy(changed user role) = changed %v, %v", changed, err)
		}
		if got := w.lastOps(); !slices.Equal(got, []string{"put_role"}) {
			t.Errorf("the policy committed %v, want only the changed role", got)
		}
		if d := w.check("user:alice", "start-broadcast-call", "call:livestream:99"); !d.Allowed {
			t.Errorf("a role and a resource the policy does not list were disturbed: %+v", d)
		}
	})

	t.Run("the policy's resources are put in order, so it may move one", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		p := streamPolicy()
		p.Resources = append(p.Resources, authz.Resource{Name: "call:livestream:42", Parent: "calltype:default"})
		if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		wantResource(t, w, "call:livestream:42", "calltype:default", []string{"calltype:default", "account:acme", "root"}, 0)
	})

	t.Run("changing the permission tree changes what every role implies", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.grant("user:alice", "moderator", "call:livestream:42")
		w.block(authz.Block{Subject: "user:bob", Resource: "call:livestream:42", Permissions: []string{"end-call"}})
		w.grant("user:bob", "host", "call:livestream:42")
		if !w.check("user:alice", "usher.blocks.write", "call:livestream:42").Allowed {
			t.Fatal("block-users should imply usher.blocks.write before the change")
		}
		p := streamPolicy()
		for i := range p.Permissions {
			if p.Permissions[i].Name == "usher.blocks.write" {
				p.Permissions[i].Parents = nil // no longer below block-users
			}
		}
		p.Permissions = append(p.Permissions, authz.Permission{Name: "usher.quotas.write", Parents: []string{"end-call"}})
		if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		if d := w.check("user:alice", "usher.blocks.write", "call:livestream:42"); d.Allowed {
			t.Errorf("block-users still implies usher.blocks.write after the policy removed the link: %+v", d)
		}
		if d := w.check("user:alice", "block-users", "call:livestream:42"); !d.Allowed {
			t.Errorf("moderator lost block-users: %+v", d)
		}
		if d := w.check("user:bob", "usher.quotas.write", "call:livestream:42"); d.Reason != authz.ReasonBlocked {
			t.Errorf("a block of end-call should now cover its new child usher.quotas.write: %+v", d)
		}
		if d := w.check("user:bob", "mute-users", "call:livestream:42"); !d.Allowed {
			t.Errorf("host lost mute-users when the catalog was renumbered: %+v", d)
		}
	})
}

func TestApplyPolicyRefusals(t *testing.T) {
	without := func(p authz.Policy, name string) authz.Policy {
		p.Permissions = slices.DeleteFunc(p.Permissions, func(perm authz.Permission) bool { return perm.Name == name })
		return p
	}
	cases := []struct {
		name   string
		setup  func(w *world)
		policy func() authz.Policy
		code   authz.Code
		field  string
		value  string
		kind   authz.Kind         // when set, the refusal's kind
		opts   authz.ApplyOptions // how the policy is applied
	}{
		{
			name: "removing a permission still named by a role is INVALID_ARGUMENT and writes nothing",
			setup: func(w *world) {
				w.role(authz.Role{Name: "stage-manager", Scope: "account:acme", Permissions: []string{"start-broadcast-call"}})
			},
			policy: func() authz.Policy {
				return without(streamPolicy(), "start-broadcast-call")
			},
			code: authz.Invalid, field: "policy.permissions", value: "start-broadcast-call",
		},
		{
			name: "removing a permission still named by a block is INVALID_ARGUMENT and writes nothing",
			setup: func(w *world) {
				w.block(authz.Block{Subject: "user:bob", Resource: "account:acme", Permissions: []string{"join-backstage"}})
			},
			policy: func() authz.Policy { return without(streamPolicy(), "join-backstage") },
			code:   authz.Invalid, field: "policy.permissions", value: "join-backstage",
		},
		{
			name: "Roles may only name declared permissions: policy.roles[1].permissions[0]",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Roles[1].Permissions = []string{"join-cal"}
				return p
			},
			code: authz.Invalid, field: "policy.roles[1].permissions[0]", value: "join-cal",
		},
		{
			name: "Roles may only name declared permissions: the index is the policy's, not the sorted one",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Roles[2].Permissions = []string{"send-video", "join-cal"}
				return p
			},
			code: authz.Invalid, field: "policy.roles[2].permissions[1]", value: "join-cal",
		},
		{
			name: "a role defined twice at one scope",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Roles = append(p.Roles, authz.Role{Name: "user", Scope: "root", Permissions: []string{"join-call"}})
				return p
			},
			code: authz.Invalid, field: "policy.roles[5].name", value: "user",
		},
		{
			name: "on a write: resource not registered -> NOT_FOUND (a role's scope)",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Roles[3].Scope = "account:initech"
				return p
			},
			code: authz.NotFound, field: "policy.roles[3].scope", value: "account:initech",
		},
		{
			name: "on a write: resource not registered -> NOT_FOUND (a parent listed after its child)",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Resources = append([]authz.Resource{{Name: "call:webinar:1", Parent: "calltype:webinar"}, {Name: "calltype:webinar"}}, p.Resources...)
				return p
			},
			code: authz.NotFound, field: "policy.resources[0].parent", value: "calltype:webinar",
		},
		{
			name: "root is the reserved resource",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Resources = append(p.Resources, authz.Resource{Name: "root"})
				return p
			},
			code: authz.Invalid, field: "policy.resources[9].name", value: "root",
		},
		{
			name: "it may be moved to another parent (never under itself): a stored descendant",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Resources = append(p.Resources, authz.Resource{Name: "account:acme", Parent: "call:livestream:42"})
				return p
			},
			code: authz.FailedPrecondition, field: "policy.resources[9].parent", value: "call:livestream:42",
		},
		{
			name: "it may be moved to another parent (never under itself): a descendant earlier in the policy",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Resources = append(p.Resources,
					authz.Resource{Name: "workspace:a"}, authz.Resource{Name: "workspace:b", Parent: "workspace:a"},
					authz.Resource{Name: "workspace:a", Parent: "workspace:b"})
				return p
			},
			code: authz.FailedPrecondition, field: "policy.resources[11].parent", value: "workspace:b",
		},
		{
			name: ruleQuota + ": a policy registering a resource past a quota",
			setup: func(w *world) {
				w.quota(authz.Quota{Scope: "account:acme", ResourceType: "call", Limit: 3})
			},
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Resources = append(p.Resources, authz.Resource{Name: "call:default:2", Parent: "calltype:default"})
				return p
			},
			code: authz.ResourceExhausted, field: "quota", value: "account:acme/call", kind: authz.KindQuotaExceeded,
		},
		{
			name: ruleQuota + ": a quota the policy itself sets",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Quotas = []authz.Quota{{Scope: "account:globex", ResourceType: "call", Limit: 1}}
				p.Resources = append(p.Resources, authz.Resource{Name: "call:globex:8", Parent: "calltype:globex"})
				return p
			},
			code: authz.ResourceExhausted, field: "quota", value: "account:globex/call", kind: authz.KindQuotaExceeded,
		},
		{
			name: ruleQuotaSubject + ": a policy moving a subject's resources under its quota",
			setup: func(w *world) {
				w.put("workspace:w", "root")
				for _, call := range []string{"call:w:1", "call:w:2"} {
					w.store(authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: call, Parent: "workspace:w", Creator: "user:alice"}})
				}
				w.store(authz.Change{Op: authz.OpPutResource, Resource: &authz.Resource{Name: "call:livestream:a", Parent: "calltype:livestream", Creator: "user:alice"}})
				w.quota(authz.Quota{Scope: "account:acme", ResourceType: "call", Subject: "user:alice", Limit: 2})
			},
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Resources = append(p.Resources, authz.Resource{Name: "workspace:w", Parent: "account:acme"})
				return p
			},
			code: authz.ResourceExhausted, field: "quota", value: "account:acme/call", kind: authz.KindQuotaExceeded,
		},
		{
			name: ruleQuotaSubject + ": a policy registering resources its creator's quota has no room for",
			setup: func(w *world) {
				w.quota(authz.Quota{Scope: "account:acme", ResourceType: "call", Subject: "user:alice", Limit: 1})
			},
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Resources = append(p.Resources,
					authz.Resource{Name: "call:default:2", Parent: "calltype:default", Creator: "user:alice"},
					authz.Resource{Name: "call:default:3", Parent: "calltype:default", Creator: "user:alice"})
				return p
			},
			code: authz.ResourceExhausted, field: "quota", value: "account:acme/call", kind: authz.KindQuotaExceeded,
		},
		{
			name: "the policy would leave a grant with no definition of its role: a resource moved away from the definition",
			setup: func(w *world) {
				w.role(authz.Role{Name: "stage-manager", Scope: "account:acme", Permissions: []string{"join-call"}})
				w.grant("user:bob", "stage-manager", "call:livestream:42")
			},
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Resources = append(p.Resources, authz.Resource{Name: "calltype:livestream", Parent: "account:globex"})
				return p
			},
			code: authz.FailedPrecondition, field: "policy.roles", value: "stage-manager", kind: authz.KindRoleInUse,
		},
		{
			name: "the policy would leave a grant with no definition of its role: a pruned definition",
			setup: func(w *world) {
				w.role(authz.Role{Name: "stage-manager", Scope: "account:acme", Permissions: []string{"join-call"}})
				w.grant("user:bob", "stage-manager", "call:livestream:42")
			},
			policy: streamPolicy,
			opts:   authz.ApplyOptions{Prune: true},
			code:   authz.FailedPrecondition, field: "policy.roles", value: "stage-manager", kind: authz.KindRoleInUse,
		},
		{
			name: "a creator role naming a role defined nowhere is INVALID_ARGUMENT: no actor could register the type",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.CreatorRoles = []authz.CreatorRole{{ResourceType: "call", Role: "hots"}}
				return p
			},
			code: authz.Invalid, field: "policy.creator_roles[0].role", value: "hots", kind: authz.KindRoleNotFound,
		},
		{
			name: "a lobby whose admit_role is defined nowhere is INVALID_ARGUMENT: no Admit could let anyone in",
			policy: func() authz.Policy {
				p := streamPolicy()
				p.Admissions = []authz.Admission{{ResourceType: "call", Join: "join-call", Lobby: &authz.Lobby{Admit: "join-call", Role: "gest"}}}
				return p
			},
			code: authz.Invalid, field: "policy.admissions[0].lobby.admit_role", value: "gest", kind: authz.KindRoleNotFound,
		},
		{
			name: "pruning the only definition of the admit_role of a rule set at run time is ROLE_IN_USE",
			setup: func(w *world) {
				w.role(authz.Role{Name: "front-desk", Scope: "root", Permissions: []string{"join-call"}})
				w.put("account:initech", "root")
				w.putAdmission(authz.Admission{Scope: "account:initech", ResourceType: "call", Join: "join-call",
					Lobby: &authz.Lobby{Admit: "join-call", Role: "front-desk"}})
			},
			policy: streamPolicy,
			opts:   authz.ApplyOptions{Prune: true},
			code:   authz.FailedPrecondition, field: "policy.roles", value: "front-desk", kind: authz.KindRoleInUse,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, streamPolicy())
			if tc.setup != nil {
				tc.setup(w)
			}
			before, _ := exportAll(w)
			e := w.refuses(tc.code, tc.field, tc.value, func() (authz.Revision, error) {
				rev, changed, err := w.eng.ApplyPolicy(w.ctx, w.by, tc.policy(), tc.opts)
				if changed != nil {
					t.Errorf("a refused policy reports changes %v", changed)
				}
				return rev, err
			})
			if tc.kind != "" && e.Kind != tc.kind {
				t.Errorf("refusal kind %s, want %s (%v)", e.Kind, tc.kind, e)
			}
			if after, _ := exportAll(w); !reflect.DeepEqual(before, after) {
				t.Errorf("A failed write changes nothing: the export differs\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

func TestExportPolicy(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.role(streamAdminOverride)
	w.role(authz.Role{Name: "stage-manager", Scope: "account:acme", Permissions: []string{"stop-broadcast-call", "start-broadcast-call"},
		AssignableRoles: []string{"call-member"}, BindableOn: []string{"call"}, MaxHolders: 3, Description: "runs the show"})
	w.put("workspace:acme-sales", "account:acme")
	w.put("calltype:livestream", "workspace:acme-sales") // moved: a parent registered after its child
	w.put("event:launch", "workspace:acme-sales")
	w.role(authz.Role{Name: "producer", Scope: "event:launch", Permissions: []string{"join-backstage"}})

	export, rev := exportAll(w)
	if rev != w.idx.Revision() {
		t.Errorf("exported at revision %d, want %d", rev, w.idx.Revision())
	}
	for i, r := range export.Resources {
		for _, earlier := range export.Resources[i:] {
			if earlier.Name == r.Parent {
				t.Errorf("the export lists %s before its parent %s", r.Name, r.Parent)
			}
		}
	}

	t.Run("ExportPolicy then ApplyPolicy to a fresh index reproduces the same export", func(t *testing.T) {
		fresh := newWorld(t, export)
		again, _ := exportAll(fresh)
		if !reflect.DeepEqual(normalPolicy(again), normalPolicy(export)) {
			t.Errorf("re-exported policy differs:\n got %+v\nwant %+v", again, export)
		}
		for _, q := range [][3]string{{"admin", "end-call", "call:livestream:42"}, {"admin", "end-call", "call:default:1"}, {"producer", "join-backstage", "event:launch"}} {
			w.grant("user:probe", q[0], q[2])
			fresh.grant("user:probe", q[0], q[2])
			if a, b := w.check("user:probe", q[1], q[2]), fresh.check("user:probe", q[1], q[2]); a != b {
				t.Errorf("Check(%v) differs: %+v in the original, %+v in the copy", q, a, b)
			}
		}
	})

	t.Run("ExportPolicy then ApplyPolicy to the same index changes nothing", func(t *testing.T) {
		w.writesNothing(func() (authz.Revision, error) {
			rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, export, authz.ApplyOptions{})
			return rev, err
		})
	})
}

// normalPolicy sorts a policy's lists, which an export orders parents
// before children but otherwise as the index keeps them.
func normalPolicy(p authz.Policy) authz.Policy {
	p.Resources = slices.Clone(p.Resources)
	slices.SortFunc(p.Resources, func(a, b authz.Resource) int { return strings.Compare(a.Name, b.Name) })
	p.Roles = slices.Clone(p.Roles)
	slices.SortFunc(p.Roles, func(a, b authz.Role) int {
		return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.Name, b.Name))
	})
	p.Quotas = slices.Clone(p.Quotas)
	slices.SortFunc(p.Quotas, func(a, b authz.Quota) int {
		return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.ResourceType, b.ResourceType), strings.Compare(a.Subject, b.Subject))
	})
	return p
}

func TestApplyPolicyPrune(t *testing.T) {
	t.Run("prune removes what root and the policy's resources define beyond the policy, and leaves what resources registered at run time define", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.put("account:initech", "root") // registered by the platform, not listed in the policy
		w.role(authz.Role{Name: "stage-manager", Scope: "account:initech", Permissions: []string{"start-broadcast-call"}})
		w.quota(authz.Quota{Scope: "account:initech", ResourceType: "call", Limit: 5})
		w.putAdmission(authz.Admission{Scope: "account:initech", ResourceType: "call", Join: "join-call"})
		w.role(authz.Role{Name: "extra", Scope: "root", Permissions: []string{"join-call"}})
		w.quota(authz.Quota{Scope: "account:acme", ResourceType: "call", Limit: 5})
		w.putAdmission(authz.Admission{Scope: "calltype:livestream", ResourceType: "call", Join: "join-call"})

		_, changed, err := w.eng.ApplyPolicy(w.ctx, w.by, streamPolicy(), authz.ApplyOptions{Prune: true})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range changed {
			switch {
			case c.Role != nil:
				got = append(got, c.Op.String()+" "+c.Role.Name+"@"+c.Role.Scope)
			case c.Quota != nil:
				got = append(got, c.Op.String()+" "+c.Quota.Scope)
			case c.Admission != nil:
				got = append(got, c.Op.String()+" "+c.Admission.Scope)
			default:
				got = append(got, c.Op.String())
			}
		}
		want := []string{"delete_role extra@root", "delete_admission calltype:livestream", "delete_quota account:acme"}
		if !slices.Equal(got, want) {
			t.Errorf("prune changed %v, want %v", got, want)
		}
		roles, _, _ := w.idx.ListRoles("account:initech")
		if !slices.ContainsFunc(roles, func(r authz.Role) bool { return r.Name == "stage-manager" }) {
			t.Error("prune removed a custom role of a resource the policy does not list")
		}
		if w.used("account:initech", "call", "") < 0 {
			t.Error("prune removed the quota of a resource the policy does not list")
		}
	})

	// DESIGN.md: "every new account starts with a room limit of 0 until its
	// plan allocates one": registering an account gave it the policy's
	// default quota, which listing the account in the policy must not take
	// away, leaving it without a limit, whether the policy keeps the
	// default or changes it.
	for _, tc := range []struct {
		name  string
		limit uint32 // the default the policy applied then says
	}{
		{"prune keeps the default quota a listed resource got when it was registered", 0},
		{"prune keeps the default quota a listed resource got, when the policy changes the default", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := streamPolicy()
			p.DefaultQuotas = []authz.DefaultQuota{{ScopeType: "account", ResourceType: "call", Limit: 0}}
			w := newWorld(t, p)
			w.put("account:initech", "root")
			if w.used("account:initech", "call", "") < 0 {
				t.Fatal("registering the account gave it no default quota")
			}
			p.DefaultQuotas[0].Limit = tc.limit
			p.Resources = append(p.Resources, authz.Resource{Name: "account:initech"})
			// Applied twice: the second apply, with the default in force
			// already, keeps the quota as the first did.
			for range 2 {
				_, changed, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{Prune: true})
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range changed {
					if c.Op == authz.OpDeleteQuota {
						t.Errorf("prune removed the quota %+v, which the default for accounts gave", *c.Quota)
					}
				}
			}
			if w.used("account:initech", "call", "") < 0 {
				t.Error("the account has no call quota after the prune: its calls are unlimited")
			}
			qs, _, err := w.idx.ListQuotas("account:initech")
			if err != nil {
				t.Fatal(err)
			}
			if i := slices.IndexFunc(qs, func(q authz.QuotaUse) bool { return q.ResourceType == "call" && q.Subject == "" }); i < 0 || qs[i].Limit != 0 {
				t.Errorf("the account's quotas after the prune = %+v; want its call quota kept at 0, the default it was registered with", qs)
			}
		})
	}

	t.Run("a pruned role still held is refused, naming every grant that holds it", func(t *testing.T) {
		w := newWorld(t, streamPolicy())
		w.role(authz.Role{Name: "extra", Scope: "root", Permissions: []string{"join-call"}})
		w.role(authz.Role{Name: "spare", Scope: "account:acme", Permissions: []string{"join-call"}})
		w.role(authz.Role{Name: "unheld", Scope: "root", Permissions: []string{"join-call"}})
		w.grant("user:ann", "extra", "account:acme")
		w.grant("user:bo", "extra", "call:livestream:42")
		w.grant("user:cy", "spare", "calltype:default")
		before, _ := exportAll(w)
		e := w.refuses(authz.FailedPrecondition, "policy.roles", "extra", func() (authz.Revision, error) {
			rev, _, err := w.eng.ApplyPolicy(w.ctx, w.by, streamPolicy(), authz.ApplyOptions{Prune: true})
			return rev, err
		})
		for _, want := range []string{`3 grants`, `"extra", held by user:ann on account:acme, user:bo on call:livestream:42`,
			`"spare", held by user:cy on calltype:default`} {
			if e == nil || !strings.Contains(e.Reason, want) {
				t.Errorf("refusal %v does not say %s", e, want)
			}
		}
		if e != nil && strings.Contains(e.Reason, "unheld") {
			t.Errorf("refusal %v names a role no grant holds", e)
		}
		if after, _ := exportAll(w); !reflect.DeepEqual(before, after) {
			t.Error("A failed write changes nothing: the export differs")
		}
	})
}

// A policy's resources past their creator's quota are refused naming that
// quota's subject, as a write's are: the scope's own quota may have room.
func TestApplyPolicyPastACreatorsQuotaNamesTheCreator(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.quota(authz.Quota{Scope: "account:acme", ResourceType: "call", Limit: 100})
	w.quota(authz.Quota{Scope: "account:acme", ResourceType: "call", Subject: "user:alice", Limit: 1})
	p := streamPolicy()
	p.Resources = append(p.Resources,
		authz.Resource{Name: "call:default:2", Parent: "calltype:default", Creator: "user:alice"},
		authz.Resource{Name: "call:default:3", Parent: "calltype:default", Creator: "user:alice"})
	_, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
	var e *authz.Error
	if !errors.As(err, &e) || e.Kind != authz.KindQuotaExceeded {
		t.Fatalf("ApplyPolicy = %v, want QUOTA_EXCEEDED", err)
	}
	if e.Meta["subject"] != "user:alice" || !strings.Contains(e.Reason, `"user:alice"`) {
		t.Errorf("the refusal (%q, details %v) does not name user:alice, whose quota it is", e.Reason, e.Meta)
	}
}

// A policy that moves a resource looks at each grant on it once to find
// the grants the move would leave with no definition of their role, not at
// every holder of a role once for each of them: a call with many holders
// of one role made the move cost their number squared.
func TestAPolicyMoveLooksAtEachGrantOnce(t *testing.T) {
	p := streamPolicy()
	p.Roles = append(p.Roles, authz.Role{Name: "viewer", Scope: "calltype:livestream", Permissions: []string{"join-call"}})
	const holders = 1000
	for _, c := range []struct {
		name, role string
		orphaned   bool
	}{
		{"holders of a role defined at root", "user", false},
		{"holders of a role defined above the call only where it was", "viewer", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, p)
			var grants []authz.Change
			for i := range holders {
				grants = append(grants, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{
					Subject: fmt.Sprintf("user:u%d", i), Role: c.role, Resource: "call:livestream:42"}})
			}
			w.store(grants...)
			looked, err := authz.PolicyMoveLooks(w.idx, "call:livestream:42", "calltype:default")
			if looked > 2*holders {
				t.Errorf("moving a call with %d holders of %s looked at %d grants; want at most %d", holders, c.role, looked, 2*holders)
			}
			if orphaned := authz.CodeOf(err) == authz.FailedPrecondition; orphaned != c.orphaned ||
				c.orphaned && !strings.Contains(err.Error(), fmt.Sprintf("%d grants", holders)) {
				t.Errorf("moving the call: %v; want orphans %v, %d grants named", err, c.orphaned, holders)
			}
		})
	}
}

// A policy that lists a resource again and again, moving it back and
// forth, looks at the grants on it once: only where the policy leaves it
// counts, and each listing made the search for orphans look at them all.
func TestAPolicyListingAResourceAgainLooksAtItsGrantsOnce(t *testing.T) {
	w := newWorld(t, streamPolicy())
	const holders, listings = 100, 20
	var grants []authz.Change
	for i := range holders {
		grants = append(grants, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{
			Subject: fmt.Sprintf("user:u%d", i), Role: "user", Resource: "call:livestream:42"}})
	}
	w.store(grants...)
	var moves [][2]string
	for i := range listings {
		moves = append(moves, [2]string{"call:livestream:42", []string{"calltype:default", "calltype:livestream"}[i%2]})
	}
	looked, err := authz.PolicyMovesLook(w.idx, moves)
	if err != nil || looked > holders {
		t.Errorf("a policy listing a call with %d holders %d times looked at %d grants, %v; want at most %d and no refusal",
			holders, listings, looked, err, holders)
	}
}

// A policy that prunes roles walks the tree below their scope once to find
// the grants left with no definition, not once for each role: pruning the
// roles a platform defined at root walked the whole tree as many times.
func TestAPolicyPruneWalksEachScopeOnce(t *testing.T) {
	p := streamPolicy()
	const roles = 20
	var names []string
	for i := range roles {
		name := fmt.Sprintf("guest-%d", i)
		names = append(names, name)
		p.Roles = append(p.Roles, authz.Role{Name: name, Scope: "root", Permissions: []string{"join-call"}})
	}
	w := newWorld(t, p)
	for _, name := range names {
		w.grant("user:"+name, name, "call:livestream:42")
	}
	resources, _, _ := w.idx.Counts()
	walked, err := authz.PolicyPruneWalks(w.idx, "root", names)
	if walked > resources+1 {
		t.Errorf("pruning %d roles at root walked past %d resources; want at most the %d there are, and root", roles, walked, resources)
	}
	if authz.CodeOf(err) != authz.FailedPrecondition || !strings.Contains(err.Error(), fmt.Sprintf("%d grants", roles)) {
		t.Errorf("pruning roles held: %v; want the %d grants named", err, roles)
	}
}

// An export lists every quota there is, and a policy gives the resources it
// registers only the quotas it lists (README): applied to an empty store,
// an export rebuilds an account registered before its type's default quota
// without that default, not with a limit of 0 that its calls already pass,
// and one registered after it with the default it was given.
func TestAnExportRebuildsAResourceRegisteredBeforeItsDefault(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.put("account:old", "root")
	w.put("call:old:1", "account:old")
	p := streamPolicy()
	p.DefaultQuotas = []authz.DefaultQuota{{ScopeType: "account", ResourceType: "call"}}
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	w.put("account:new", "root")
	export, _ := exportAll(w)
	fresh := newWorld(t, export)
	if again, _ := exportAll(fresh); !reflect.DeepEqual(normalPolicy(again), normalPolicy(export)) {
		t.Errorf("re-exported policy differs:\n got %+v\nwant %+v", again, export)
	}
	if used := fresh.used("account:old", "call", ""); used >= 0 {
		t.Errorf("rebuilt, account:old has a call quota, %d used; it had none", used)
	}
	if used := fresh.used("account:new", "call", ""); used != 0 {
		t.Errorf("rebuilt, account:new's call quota: %d used (-1: none); want its default, 0 used", used)
	}
}

// A policy rewrites the catalog every scope shares, the creator roles and
// the default quotas: no actor's power reaches them, however much it holds.
func TestAnActorAppliesNoPolicy(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.grant("user:root-admin", "admin", "root") // "*" at root
	by := authz.Author{Caller: "svc:console", Actor: "user:root-admin"}
	p := streamPolicy()
	p.Resources = append(p.Resources, authz.Resource{Name: "account:globex"})
	for _, dry := range []bool{false, true} {
		e := w.refuses(authz.PermissionDenied, "actor", "user:root-admin", func() (authz.Revision, error) {
			rev, _, err := w.eng.ApplyPolicy(w.ctx, by, p, authz.ApplyOptions{DryRun: dry})
			return rev, err
		})
		if authz.KindOf(e) != authz.KindPlatformOnly || !strings.Contains(e.Error(), "policies are the platform's") {
			t.Errorf("dry run %v: refusal %v (kind %s), want %s saying policies are the platform's", dry, e, authz.KindOf(e), authz.KindPlatformOnly)
		}
	}
}

// A role that a creator role or a lobby's admit_role names keeps a
// definition: a rule naming one defined nowhere is NOT_FOUND, and the
// deletion of its last definition is ROLE_IN_USE, naming what names it;
// neither writes anything. A definition with another beside it goes.
func TestWhatNamesARoleKeepsItDefined(t *testing.T) {
	p := streamPolicy()
	p.CreatorRoles = []authz.CreatorRole{{ResourceType: "call", Role: "host"}}
	w := newWorld(t, p)
	w.put("account:initech", "root")
	w.refuses(authz.NotFound, "admission.lobby.admit_role", "front-desk", func() (authz.Revision, error) {
		return w.eng.PutAdmission(w.ctx, w.by, authz.Admission{Scope: "account:initech", ResourceType: "call", Join: "join-call",
			Lobby: &authz.Lobby{Admit: "join-call", Role: "front-desk"}})
	})
	w.role(authz.Role{Name: "front-desk", Scope: "account:initech", Permissions: []string{"join-call"}})
	w.putAdmission(authz.Admission{Scope: "account:initech", ResourceType: "call", Join: "join-call",
		Lobby: &authz.Lobby{Admit: "join-call", Role: "front-desk"}})
	e := w.refuses(authz.FailedPrecondition, "name", "front-desk", func() (authz.Revision, error) {
		return w.eng.DeleteRole(w.ctx, w.by, "account:initech", "front-desk")
	})
	if e.Kind != authz.KindRoleInUse || !strings.Contains(e.Reason, `the admission rule for call at "account:initech"`) {
		t.Errorf("deleting the lobby's only admit role: %v (%s); want ROLE_IN_USE naming the rule", e, e.Kind)
	}
	w.role(authz.Role{Name: "front-desk", Scope: "root", Permissions: []string{"join-call"}})
	if _, err := w.eng.DeleteRole(w.ctx, w.by, "account:initech", "front-desk"); err != nil {
		t.Errorf("deleting a definition with another beside it: %v", err)
	}

	creator := p.CreatorRoles[0]
	var defs []string
	for _, r := range p.Roles {
		if r.Name == creator.Role {
			defs = append(defs, r.Scope)
		}
	}
	if len(defs) != 1 {
		t.Fatalf("the creator role %q is defined at %v; want one scope", creator.Role, defs)
	}
	e = w.refuses(authz.FailedPrecondition, "name", creator.Role, func() (authz.Revision, error) {
		return w.eng.DeleteRole(w.ctx, w.by, defs[0], creator.Role)
	})
	if e.Kind != authz.KindRoleInUse || !strings.Contains(e.Reason, "the creator role of "+creator.ResourceType) {
		t.Errorf("deleting the creator role's only definition: %v (%s); want ROLE_IN_USE naming the creator role", e, e.Kind)
	}
}

// An expired grant counts as absent, but its record stays until revoked:
// a move that would leave it with no definition of its role is refused
// as for any grant, and the refusal says it has expired, since no listing
// shows it, and that Revoke removes it. Revoked, the move goes.
func TestAMoveRefusedForAnExpiredGrantSaysSo(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.role(authz.Role{Name: "temp", Scope: "account:acme", Permissions: []string{"join-call"}})
	w.grantUntil("user:old", "temp", "call:livestream:42", w.clock.Now().Add(time.Minute))
	w.clock.Advance(2 * time.Minute)
	e := w.refuses(authz.FailedPrecondition, "parent", "account:globex", func() (authz.Revision, error) {
		return w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "calltype:livestream", Parent: "account:globex"})
	})
	if e.Kind != authz.KindRoleInUse || !strings.Contains(e.Reason, `the grant of "temp" to "user:old"`) || !strings.Contains(e.Reason, "expired at") {
		t.Errorf("the move = %v (%s); want ROLE_IN_USE naming the expired grant, and that it expired", e, e.Kind)
	}
	if _, err := w.eng.Revoke(w.ctx, w.by, authz.Grant{Subject: "user:old", Role: "temp", Resource: "call:livestream:42"}); err != nil {
		t.Fatalf("Revoke of the expired grant: %v", err)
	}
	if _, err := w.eng.PutResource(w.ctx, w.by, authz.Resource{Name: "calltype:livestream", Parent: "account:globex"}); err != nil {
		t.Errorf("the move once the grant is revoked: %v", err)
	}
}

// DeleteResource keeps the last definition of a role that a creator role
// or a lobby's admit_role names, as DeleteRole does: the resource that
// holds it is ROLE_IN_USE, naming the role and what names it, and nothing
// is written. A rule on the resource itself goes with it, and does not
// keep it.
func TestADeletionKeepsTheOnlyDefinitionOfARoleThatIsNamed(t *testing.T) {
	p := streamPolicy()
	w := newWorld(t, p)
	w.put("account:initech", "root")
	w.put("account:hooli", "root")
	w.role(authz.Role{Name: "concierge", Scope: "account:hooli", Permissions: []string{"join-call"}})
	w.putAdmission(authz.Admission{Scope: "account:initech", ResourceType: "call", Join: "join-call",
		Lobby: &authz.Lobby{Admit: "join-call", Role: "concierge"}})
	e := w.refuses(authz.FailedPrecondition, "name", "account:hooli", func() (authz.Revision, error) {
		return w.eng.DeleteResource(w.ctx, w.by, "account:hooli")
	})
	if e.Kind != authz.KindRoleInUse || !strings.Contains(e.Reason, `"concierge"`) || !strings.Contains(e.Reason, `the admission rule for call at "account:initech"`) {
		t.Errorf("deleting the only definition's resource: %v (%s); want ROLE_IN_USE naming the role and the rule", e, e.Kind)
	}

	// The rule and the only definition on one resource go together.
	w.put("account:umbrella", "root")
	w.role(authz.Role{Name: "usher-desk", Scope: "account:umbrella", Permissions: []string{"join-call"}})
	w.putAdmission(authz.Admission{Scope: "account:umbrella", ResourceType: "call", Join: "join-call",
		Lobby: &authz.Lobby{Admit: "join-call", Role: "usher-desk"}})
	if _, err := w.eng.DeleteResource(w.ctx, w.by, "account:umbrella"); err != nil {
		t.Errorf("deleting the resource of a rule and the only definition it names: %v", err)
	}
	// With a definition elsewhere, the resource goes.
	w.role(authz.Role{Name: "concierge", Scope: "root", Permissions: []string{"join-call"}})
	if _, err := w.eng.DeleteResource(w.ctx, w.by, "account:hooli"); err != nil {
		t.Errorf("deleting a definition with another beside it: %v", err)
	}

	// A creator role's only definition, likewise.
	p.Resources = append(p.Resources, authz.Resource{Name: "account:founders"})
	p.Roles = append(p.Roles, authz.Role{Name: "founder", Scope: "account:founders", Permissions: []string{"join-call"}})
	p.CreatorRoles = []authz.CreatorRole{{ResourceType: "call", Role: "founder"}}
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	e = w.refuses(authz.FailedPrecondition, "name", "account:founders", func() (authz.Revision, error) {
		return w.eng.DeleteResource(w.ctx, w.by, "account:founders")
	})
	if e.Kind != authz.KindRoleInUse || !strings.Contains(e.Reason, "the creator role of call") {
		t.Errorf("deleting the creator role's only definition's resource: %v (%s); want ROLE_IN_USE naming the creator role", e, e.Kind)
	}
}

// A policy is one write: a quota is judged by the tree it leaves, so a
// policy that moves a call out from below a full workspace and registers
// another there is within the quota, and one that registers two is not,
// named by the count it would leave.
func TestApplyPolicyJudgesQuotasByTheTreeItLeaves(t *testing.T) {
	w := newWorld(t, streamPolicy())
	w.put("workspace:pw", "account:acme")
	w.put("workspace:pt", "account:acme")
	w.put("call:pa1", "workspace:pw")
	w.quota(authz.Quota{Scope: "workspace:pw", ResourceType: "call", Limit: 1})
	p := streamPolicy()
	p.Resources = append(p.Resources,
		authz.Resource{Name: "workspace:pw", Parent: "account:acme"},
		authz.Resource{Name: "workspace:pt", Parent: "account:acme"},
		authz.Resource{Name: "call:pa1", Parent: "workspace:pt"},
		authz.Resource{Name: "call:pb1", Parent: "workspace:pw"})
	before := w.idx.Revision()
	if _, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{}); err != nil {
		t.Fatalf("a policy that leaves one call below workspace:pw: %v", err)
	}
	if w.idx.Revision() == before {
		t.Fatal("the policy wrote nothing")
	}
	p.Resources = append(p.Resources, authz.Resource{Name: "call:pc1", Parent: "workspace:pw"})
	before = w.idx.Revision()
	_, _, err := w.eng.ApplyPolicy(w.ctx, w.by, p, authz.ApplyOptions{})
	var e *authz.Error
	if !errors.As(err, &e) || e.Kind != authz.KindQuotaExceeded || e.Meta["used"] != "2" || e.Meta["limit"] != "1" || e.Meta["scope"] != "workspace:pw" {
		t.Fatalf("a policy that would leave two calls below workspace:pw = %v (details %v), want QUOTA_EXCEEDED used 2 of 1", err, e)
	}
	if w.idx.Revision() != before {
		t.Errorf("the refused policy wrote: revision %d, was %d", w.idx.Revision(), before)
	}
}
