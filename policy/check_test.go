package policy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/usher-authz/usher/policy"
)

// base is a valid policy the cases below break one way each.
const base = `permissions:
  - name: call.manage
  - {name: join-call, parents: [call.manage]}
  - {name: usher.resources.create.call, parents: [call.manage]}
resources:
  - {name: account:acme}
roles:
  - {name: host, scope: root, permissions: [call.manage], assignable_roles: [member], bindable_on: [call]}
  - {name: member, scope: root, permissions: [join-call]}
creator_roles:
  - {resource_type: call, role: host}
`

// validate is every finding about a policy file, as `usher policy
// validate` prints them.
func validate(t *testing.T, data string) policy.Diagnostics {
	t.Helper()
	d, _ := policy.Read("p.yaml", []byte(data))
	return policy.Validate(d)
}

func TestValidateChecksEveryCrossReference(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string
	}{
		{"the base policy is valid", base, nil},
		{"a permission's parent must be declared", strings.Replace(base, "parents: [call.manage]}\n  - {name: usher", "parents: [call.manag]}\n  - {name: usher", 1),
			[]string{`p.yaml:3:33: permissions[1].parents[0]: "call.manag": parent is not declared in the policy (did you mean "call.manage"?)`}},
		{"every start time out of range is an error, each at its line", strings.Replace(base, "  - {name: account:acme}\n",
			"  - {name: account:acme, start_time: \"1960-01-01T00:00:00Z\"}\n  - {name: call:acme:1, parent: account:acme, start_time: \"1969-12-31T23:59:59Z\"}\n  - {name: call:acme:2, parent: account:acme, start_time: \"0001-01-01T00:00:00Z\"}\n", 1),
			[]string{
				`p.yaml:6:38: resources[0].start_time: "1960-01-01T00:00:00Z": a start time is after the Unix epoch and at or before 2262-04-11T23:47:16.854775807Z; leave it unset for none`,
				`p.yaml:7:59: resources[1].start_time: "1969-12-31T23:59:59Z": a start time is after the Unix epoch and at or before 2262-04-11T23:47:16.854775807Z; leave it unset for none`,
				`p.yaml:8:59: resources[2].start_time: "0001-01-01T00:00:00Z": a start time is after the Unix epoch; leave it unset for none`,
			}},
		{"a field is given once", base + "permissions: []\n",
			[]string{`p.yaml:12:1: permissions: the field is given twice (first at line 1)`}},
		{"a typo is an error, not a silent hole: a permission declared twice", strings.Replace(base, "  - name: call.manage\n", "  - name: call.manage\n  - name: call.manage\n", 1),
			[]string{`p.yaml:3:11: permissions[1].name: "call.manage": permission is declared twice (first at line 2)`}},
		{"permissions form a tree or a DAG, never a cycle", strings.Replace(base, "  - name: call.manage\n", "  - {name: call.manage, parents: [join-call]}\n", 1),
			[]string{`p.yaml:3:33: permissions[1].parents[0]: "call.manage": permissions imply themselves in a cycle: call.manage, which is below join-call, which is below call.manage`}},
		{"usher.* permissions are Usher's own: one Usher does not check is an error", strings.Replace(base, "usher.resources.create.call", "usher.resource.create.call", 1),
			[]string{`p.yaml:4:12: permissions[2].name: "usher.resource.create.call": Usher checks no permission of this name; its own are usher.grants.write, usher.blocks.write, usher.roles.write, usher.quotas.write, usher.resources.create, usher.resources.move, usher.resources.delete, the last three optionally narrowed to a resource type (usher.resources.create.room)`}},
		{"usher.blocks.write narrowed to a declared permission is Usher's own", strings.Replace(base, "resources:\n", "  - {name: usher.blocks.write.join-call, parents: [call.manage]}\nresources:\n", 1), nil},
		{"usher.blocks.write is narrowed only to a declared permission", strings.Replace(base, "resources:\n", "  - {name: usher.blocks.write.send-audio, parents: [call.manage]}\nresources:\n", 1),
			[]string{`p.yaml:5:12: permissions[3].name: "usher.blocks.write.send-audio": usher.blocks.write may be narrowed only to a permission the policy declares (usher.blocks.write.send-audio), and "send-audio" is not one`}},
		{"Roles may only name declared permissions", strings.Replace(base, "permissions: [join-call]}", "permissions: [join-call, send-audio]}", 1),
			[]string{`p.yaml:9:58: roles[1].permissions[1]: "send-audio": permission is not declared in the policy`}},
		{"assignable_roles name roles the policy defines", strings.Replace(base, "assignable_roles: [member]", `assignable_roles: ["*", membr]`, 1),
			[]string{`p.yaml:8:83: roles[0].assignable_roles[1]: "membr": role is not defined in the policy (did you mean "member"?)`}},
		{"a creator role is a role the policy defines", strings.Replace(base, "role: host}", "role: owner}", 1),
			[]string{`p.yaml:11:33: creator_roles[0].role: "owner": role is not defined in the policy`}},
		{"a creator role may be granted on its type, or registering one as an actor would fail", base + "  - {resource_type: account, role: host}\n",
			[]string{`p.yaml:12:36: creator_roles[1].role: "host": role may not be granted on account resources (bindable_on [call] at root), so registering one as an actor would fail`}},
		{"a resource type has one creator role", base + "  - {resource_type: call, role: member}\n",
			[]string{`p.yaml:12:21: creator_roles[1].resource_type: "call": resource type has two creator roles (first at line 11)`}},
		{"a role is defined once at a scope", strings.Replace(base, "creator_roles", "  - {name: member, scope: root}\ncreator_roles", 1),
			[]string{`p.yaml:10:12: roles[2].name: "member": role is defined twice at "root" (first at line 9)`}},
		{"a misspelt resource type in bindable_on is a warning, with the type meant", strings.Replace(base, "bindable_on: [call]", "bindable_on: [cal]", 1),
			[]string{
				`p.yaml:8:101: warning: roles[0].bindable_on[0]: "cal": nothing else in the policy names this resource type; did you mean "call"?`,
				`p.yaml:11:33: creator_roles[0].role: "host": role may not be granted on call resources (bindable_on [cal] at root), so registering one as an actor would fail`,
			}},
		{"a type named nowhere else, and like none that is, may be registered at run time", strings.Replace(base, "permissions: [join-call]}", "permissions: [join-call], bindable_on: [workspace]}", 1),
			nil},
		{"root is no resource type a type named nowhere else is mistaken for", base + "admissions:\n  - {resource_type: room, join_permission: join-call}\n",
			nil},
		{"a parent is listed before the resources below it", strings.Replace(base, "  - {name: account:acme}\n", "  - {name: call:acme:1, parent: account:acme}\n  - {name: account:acme}\n", 1),
			[]string{`p.yaml:6:33: resources[0].parent: "account:acme": parent is listed after the resource (at line 7); list parents first`}},
		{"a resource is listed once", strings.Replace(base, "  - {name: account:acme}\n", "  - {name: account:acme}\n  - {name: account:acme}\n", 1),
			[]string{`p.yaml:7:12: resources[1].name: "account:acme": resource is listed twice (first at line 6)`}},
		{"root is the reserved resource", strings.Replace(base, "  - {name: account:acme}\n", "  - {name: root}\n", 1),
			[]string{`p.yaml:6:12: resources[0].name: "root": root is reserved and always registered`}},
		{"a scope the policy does not list may be registered already: a warning, once", base + "quotas:\n  - {scope: account:globex, resource_type: call, limit: 3}\n  - {scope: account:globex, resource_type: call, subject: user:ann, limit: 1}\n",
			[]string{`p.yaml:13:13: warning: quotas[0].scope: "account:globex": resource is not listed in the policy; applying the policy needs it registered already`}},
		{"a quota is listed once for its scope, type and subject", base + "quotas:\n  - {scope: account:acme, resource_type: call, limit: 3}\n  - {scope: account:acme, resource_type: call, limit: 4}\n",
			[]string{`p.yaml:14:42: quotas[1].resource_type: "call": quota is listed twice for scope "account:acme" and subject "" (first at line 13)`}},
		{"default quotas' types: a misspelt one is a warning", base + "default_quotas:\n  - {scope_type: account, resource_type: cal, limit: 0}\n",
			[]string{`p.yaml:13:42: warning: default_quotas[0].resource_type: "cal": nothing else in the policy names this resource type; did you mean "call"?`}},
		{"a default quota is listed once per scope type and type", base + "default_quotas:\n  - {scope_type: account, resource_type: call, limit: 0}\n  - {scope_type: account, resource_type: call, limit: 1}\n",
			[]string{`p.yaml:14:42: default_quotas[1].resource_type: "call": default quota is listed twice for scope type "account" (first at line 13)`}},
		{"admission rules name declared permissions and defined roles", base + "admissions:\n  - {resource_type: call, join_permission: join-cal, uncounted_roles: [hots], lobby: {admit_permission: call.manage, admit_role: guest}}\n",
			[]string{
				`p.yaml:13:44: admissions[0].join_permission: "join-cal": permission is not declared in the policy (did you mean "join-call"?)`,
				`p.yaml:13:72: admissions[0].uncounted_roles[0]: "hots": role is not defined in the policy (did you mean "host"?)`,
				`p.yaml:13:130: admissions[0].lobby.admit_role: "guest": role is not defined in the policy`,
			}},
		{"an admission rule's lobby names the permission that admits", base + "admissions:\n  - {resource_type: call, join_permission: join-call, lobby: {admit_role: member}}\n",
			[]string{`p.yaml:13:62: admissions[0].lobby.admit_permission: a lobby must name the permission that admits`}},
		{"a rule's missing field hides none of its undeclared names", base + "admissions:\n  - {resource_type: call, join_permission: join-cal, uncounted_roles: [hots], lobby: {admit_permission: call.manag}}\n",
			[]string{
				`p.yaml:13:44: admissions[0].join_permission: "join-cal": permission is not declared in the policy (did you mean "join-call"?)`,
				`p.yaml:13:72: admissions[0].uncounted_roles[0]: "hots": role is not defined in the policy (did you mean "host"?)`,
				`p.yaml:13:86: admissions[0].lobby.admit_role: a lobby must name the role an admission grants`,
				`p.yaml:13:105: admissions[0].lobby.admit_permission: "call.manag": permission is not declared in the policy (did you mean "call.manage"?)`,
			}},
		{"every fault of a rule's shape, at once", base + "admissions:\n  - {resource_type: call, join_permission: join-call, lease: 500ms, join_ahead: -5m, uncounted_roles: [Host], livekit: {room_join: join-call, can_publish_sources: {camra: join-call}}}\n",
			[]string{
				`p.yaml:13:62: admissions[0].lease: "500ms": a lease is from 1s to 24h0m0s; unset for 30s`,
				`p.yaml:13:81: admissions[0].join_ahead: "-5m0s": from 0 to 168h0m0s`,
				`p.yaml:13:104: admissions[0].uncounted_roles[0]: "Host": role must match [a-z0-9][a-z0-9._-]*`,
				`p.yaml:13:164: admissions[0].livekit.can_publish_sources: "camra": not a LiveKit track source; one of [camera microphone screen_share screen_share_audio]`,
			}},
		{"each permission of a LiveKit source's list is declared", base + "admissions:\n  - {resource_type: call, join_permission: join-call, livekit: {room_join: join-call, can_publish_sources: {camera: \"join-call,call.manag\"}}}\n",
			[]string{`p.yaml:13:117: admissions[0].livekit.can_publish_sources.camera: "call.manag": permission is not declared in the policy (did you mean "call.manage"?)`}},
		{"an admission rule is listed once per scope and type", base + "admissions:\n  - {resource_type: call, join_permission: join-call}\n  - {scope: root, resource_type: call, join_permission: join-call}\n",
			[]string{`p.yaml:14:34: admissions[1].resource_type: "call": admission rule is listed twice for scope "root" (first at line 13)`}},
		{"names of the wrong shape, every one", strings.Replace(strings.Replace(base, "{name: member,", "{name: Member,", 1), "{name: account:acme}", "{name: acme}", 1),
			[]string{
				`p.yaml:6:12: resources[0].name: "acme": resource must have the form type:id`,
				`p.yaml:8:78: roles[0].assignable_roles[0]: "member": role is not defined in the policy (did you mean "Member"?)`,
				`p.yaml:9:12: roles[1].name: "Member": role must match [a-z0-9][a-z0-9._-]*`,
			}},
		{"what only applying shows, at its field: a start time before the epoch", strings.Replace(base, "{name: account:acme}", `{name: account:acme, start_time: "1960-01-01T00:00:00Z"}`, 1),
			[]string{`p.yaml:6:38: resources[0].start_time: "1960-01-01T00:00:00Z": a start time is after the Unix epoch and at or before 2262-04-11T23:47:16.854775807Z; leave it unset for none`}},
		{"what only applying shows, at its line: the file's resources past the file's quota", strings.Replace(base, "  - {name: account:acme}\n", "  - {name: account:acme}\n  - {name: call:acme:1, parent: account:acme}\n  - {name: call:acme:2, parent: account:acme}\n", 1) + "quotas:\n  - {scope: account:acme, resource_type: call, limit: 1}\n",
			[]string{`p.yaml:15:5: quotas[0]: "account:acme/call": the policy would put 2 call resources below "account:acme", where at most 1 may exist`}},
		{"a misspelt list hides no error and makes none up", strings.Replace(base, "roles:\n", "role:\n", 1),
			[]string{`p.yaml:7:1: role: unknown field "role" (did you mean "roles"?)`}},
		{"an item that is not a mapping is one error, and names nothing", strings.Replace(strings.Replace(base, "  - name: call.manage\n", "  - name: call.manage\n  - 5\n  - [send-audio]\n", 1), "creator_roles:\n", "  - member\ncreator_roles:\n", 1),
			[]string{
				`p.yaml:3:5: permissions[1]: want a mapping of Permission fields, got the number 5`,
				`p.yaml:4:5: permissions[2]: want a mapping of Permission fields, got a list`,
				`p.yaml:12:5: roles[2]: want a mapping of Role fields, got "member"`,
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sameLines(t, validate(t, c.yaml), c.want...)
		})
	}
}

// The shipped policies are the examples users copy: not one finding.
func TestShippedPoliciesHaveNoFindings(t *testing.T) {
	for _, name := range policy.Shipped() {
		d, _, err := policy.LoadDocument(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range policy.Validate(d) {
			t.Errorf("%s", f)
		}
	}
}

func TestDiagnosticsSummary(t *testing.T) {
	ds := validate(t, base+"quotas:\n  - {scope: account:globex, resource_type: call, limit: 3}\n  - {scope: account:acme, resource_type: cal, limit: 3}\n")
	if got := ds.Summary(); got != "0 errors, 2 warnings" {
		t.Errorf("Summary() = %q", got)
	}
	if ds.Err() != nil {
		t.Errorf("warnings alone make an error: %v", ds.Err())
	}
	ds = validate(t, strings.Replace(base, "role: host}", "role: owner}", 1))
	if err := ds.Err(); err == nil || ds.Summary() != "1 error, 0 warnings" {
		t.Errorf("Err() = %v, Summary() = %q", err, ds.Summary())
	}
}

// A quota the file does not list, which its resources would exceed, is
// placed at a resource the quota counts: one of its type below its scope,
// registered by its subject when it names one.
func TestQuotaFieldIsAResourceTheQuotaCounts(t *testing.T) {
	d, _ := policy.Read("p.yaml", []byte(`resources:
  - {name: tenant:other}
  - {name: room:a, parent: tenant:other}
  - {name: tenant:acme}
  - {name: room:b, parent: tenant:acme}
  - {name: folder:f, parent: tenant:acme}
  - {name: room:c, parent: folder:f, creator: user:alice}
`))
	for _, c := range []struct {
		meta map[string]string
		want string
	}{
		{map[string]string{"scope": "tenant:acme", "resource_type": "room"}, "policy.resources[3]"},
		{map[string]string{"scope": "folder:f", "resource_type": "room"}, "policy.resources[5]"},
		{map[string]string{"scope": "tenant:acme", "resource_type": "room", "subject": "user:alice"}, "policy.resources[5]"},
		{map[string]string{"scope": "root", "resource_type": "room"}, "policy.resources[1]"},
		{map[string]string{"scope": "tenant:acme", "resource_type": "call"}, "quota"},
	} {
		if got := d.QuotaField("quota", c.meta); got != c.want {
			t.Errorf("QuotaField(%v) = %s, want %s", c.meta, got, c.want)
		}
	}
}

// A "did you mean" is measured for at most 1,000 distinct names a file
// misspells, each once however often it is named: past them, findings
// carry none.
func TestSuggestionsAreBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("permissions:\n")
	for i := range 1001 {
		fmt.Fprintf(&b, "  - {name: p%04d}\n", i)
	}
	b.WriteString("roles:\n  - name: r\n    scope: root\n    permissions: [")
	for i := range 1001 {
		fmt.Fprintf(&b, "q%04d, ", i)
	}
	b.WriteString("q0000]\n")
	var suggested, bare []string
	for _, d := range validate(t, b.String()) {
		if strings.Contains(d.Message, "did you mean") {
			suggested = append(suggested, d.Path)
		} else {
			bare = append(bare, d.Path)
		}
	}
	if len(suggested) != 1001 || len(bare) != 1 || bare[0] != "roles[0].permissions[1000]" {
		t.Errorf("%d findings with a suggestion, and without one %v; want the 1,000 names first misspelt with one, q0000 again with it, and the 1,001st without", len(suggested), bare)
	}
}
