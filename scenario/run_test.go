package scenario_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/usher-authz/usher/scenario"
)

// Every shipped scenario replays cleanly.
func TestShippedScenarios(t *testing.T) {
	files, err := filepath.Glob("../policy/scenarios/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			f, err := scenario.Load(file)
			if err != nil {
				t.Fatal(err)
			}
			res, err := scenario.Run(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range res.Failures {
				t.Error(line)
			}
			if res.Passed == 0 {
				t.Error("no expectation ran")
			}
		})
	}
}

// The example in the README's "Policy tests" section passes.
func TestREADMEScenarioExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Policy tests.*?```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no scenario example under Policy tests")
	}
	f, err := scenario.Parse("README example", m[1])
	if err != nil {
		t.Fatal(err)
	}
	res, err := scenario.Run(f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 0 || res.Passed != 3 {
		t.Fatalf("passed %d, failed %d: %v", res.Passed, res.Failed, res.Failures)
	}
}

const sample = `policy: default
steps:
  - register: {name: account:acme}
  - grant: {subject: user:a, role: user, resource: account:acme}
  - check: {subject: user:a, permission: join-call, resource: account:acme}
    allowed: true
  - quote: a user cannot end calls
    check: {subject: user:a, permission: end-call, resource: account:acme}
    allowed: true
  - grant: {subject: user:b, role: owner, resource: account:acme, actor: user:a}
    refused: NOT_FOUND
  - grant: {subject: user:b, role: owner, resource: account:acme, actor: user:a}
    refused: PERMISSION_DENIED
  - permissions: {subject: user:a, resource: account:acme}
    exactly: [join-call]
  - grant: {subject: user:c, role: nobody, resource: account:acme}
`

func TestRunReportsEachFailingExpectationWithItsLine(t *testing.T) {
	f, err := scenario.Parse("sample.yaml", []byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	res, err := scenario.Run(f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Passed != 2 || res.Failed != 4 {
		t.Fatalf("passed %d, failed %d, want 2 and 4; failures: %v", res.Passed, res.Failed, res.Failures)
	}
	want := []string{
		`sample.yaml:7: "a user cannot end calls": check user:a end-call on account:acme: allowed false (NO_GRANT), want allowed true`,
		`sample.yaml:10: grant user:b owner on account:acme was refused with PERMISSION_DENIED`,
		`sample.yaml:14: permissions of user:a on account:acme: missing [], unexpected [`,
		`sample.yaml:16: grant user:c nobody on account:acme: role "nobody"`,
	}
	for i, w := range want {
		if !strings.HasPrefix(res.Failures[i], w) {
			t.Errorf("failure %d = %q, want it to start with %q", i, res.Failures[i], w)
		}
	}
}

func TestParseRefusesMalformedSteps(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"an unknown field", "policy: default\nsteps:\n  - grant: {subject: user:a, role: user, resource: root}\n    alowed: true\n", `sample.yaml:3: unknown field "alowed"`},
		{"an unknown field inside an action", "policy: default\nsteps:\n  - grant: {subjet: user:a}\n", "sample.yaml:3:"},
		{"two actions in one step", "policy: default\nsteps:\n  - grant: {subject: user:a}\n    revoke: {subject: user:a}\n", "exactly one of"},
		{"no policy", "steps: []\n", "no policy named"},
		{"a second document", "policy: default\nsteps: []\n---\nsteps: []\n", "sample.yaml: line 3: the file holds one YAML document"},
		{"an action with no value", "policy: default\nsteps:\n  - grant:\n", "the step's grant has no value"},
		// An expectation its action does not read would pass unchecked.
		{"allowed on a write", "policy: default\nsteps:\n  - grant: {subject: user:a, role: user, resource: root}\n    allowed: false\n", `sample.yaml:3: field "allowed" does not apply to a grant step`},
		{"refused on a check", "policy: default\nsteps:\n  - check: {subject: user:a, permission: join-call, resource: root}\n    allowed: true\n    refused: PERMISSION_DENIED\n", `sample.yaml:3: field "refused" does not apply to a check step`},
		{"exactly on a check", "policy: default\nsteps:\n  - check: {subject: user:a, permission: join-call, resource: root}\n    allowed: true\n    exactly: []\n", `field "exactly" does not apply to a check step`},
		{"outcome on a write", "policy: default\nsteps:\n  - grant: {subject: user:a, role: user, resource: root}\n    outcome: BLOCKED\n", `field "outcome" does not apply to a grant step`},
		{"refused on a join", "policy: default\nsteps:\n  - join: {subject: user:a, resource: root}\n    refused: PERMISSION_DENIED\n", `field "refused" does not apply to a join step`},
		{"role on a permissions read", "policy: default\nsteps:\n  - permissions: {subject: user:a, resource: root}\n    role: user\n", `field "role" does not apply to a permissions step`},
		// A field of an action that the action does not read would be a
		// claim left unchecked: an unblock lifts every block it names.
		{"permissions on an unblock", "policy: default\nsteps:\n  - unblock: {subject: user:a, resource: root, permissions: [send-audio]}\n", `sample.yaml:3: field "permissions" does not apply to an unblock`},
		{"expires_in on a revoke", "policy: default\nsteps:\n  - revoke: {subject: user:a, role: user, resource: root, expires_in: 1h}\n", `field "expires_in" does not apply to a revoke`},
		{"limit on a quota deletion", "policy: default\nsteps:\n  - delete_quota: {scope: root, resource_type: call, limit: 3}\n", `field "limit" does not apply to a delete_quota`},
		{"permissions on a role deletion", "policy: default\nsteps:\n  - delete_role: {name: user, scope: root, permissions: [join-call]}\n", `field "permissions" does not apply to a delete_role`},
		{"role on an admit", "policy: default\nsteps:\n  - admit: {subject: user:a, role: host, resource: root}\n", `field "role" does not apply to an admit`},
		{"a rule with no refusal", "policy: default\nsteps:\n  - grant: {subject: user:a, role: user, resource: root}\n    rule: no escalation\n", `sample.yaml:3: rule names the rule of a refusal: the step has no refused`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := scenario.Parse("sample.yaml", []byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// A go_live step takes a backstage call live, as AdmissionService.GoLive,
// bound by the admission rule's stage permission.
func TestGoLiveOpensABackstageCall(t *testing.T) {
	const live = `policy: stream
steps:
  - register: {name: "call:livestream:9", parent: "calltype:livestream"}
  - grant: {subject: "user:mem", role: call-member, resource: "call:livestream:9"}
  - grant: {subject: "user:hank", role: host, resource: "call:livestream:9"}
  - join: {subject: "user:mem", resource: "call:livestream:9"}
    outcome: NOT_STARTED
  - go_live: {resource: "call:livestream:9", actor: "user:mem"}
    refused: PERMISSION_DENIED
    rule: missing permission
  - go_live: {resource: "call:livestream:9", actor: "user:hank"}
    refused: PERMISSION_DENIED
  - go_live: {resource: "call:livestream:9", actor: "user:hank"}
  - join: {subject: "user:mem", resource: "call:livestream:9"}
    outcome: ADMITTED
`
	f, err := scenario.Parse("live.yaml", []byte(live))
	if err != nil {
		t.Fatal(err)
	}
	res, err := scenario.Run(f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Passed != 3 || res.Failed != 1 {
		t.Fatalf("passed %d, failed %d, want 3 and 1; failures: %v", res.Passed, res.Failed, res.Failures)
	}
	if want := `live.yaml:11: take call:livestream:9 live was allowed, want it refused with PERMISSION_DENIED`; res.Failures[0] != want {
		t.Errorf("failure %q, want %q", res.Failures[0], want)
	}
}

// Usher keeps time to the nanosecond up to 2262: an advance step that
// would take the scenario's clock past that is refused, rather than let the
// clock's reading wrap around and bring back grants that ran out long ago.
func TestAnAdvancePastTheLastInstantIsRefused(t *testing.T) {
	const far = `policy: default
steps:
  - register: {name: account:acme}
  - grant: {subject: user:tim, role: owner, resource: account:acme, expires_in: 1h}
  - advance: 2562047h
  - check: {subject: user:tim, permission: end-call, resource: account:acme}
    allowed: false
    reason: NO_GRANT
`
	f, err := scenario.Parse("far.yaml", []byte(far))
	if err != nil {
		t.Fatal(err)
	}
	res, err := scenario.Run(f)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 1 || res.NotRun != 1 || len(res.Failures) != 1 ||
		!strings.HasPrefix(res.Failures[0], `far.yaml:5: advance "2562047h": `) || !strings.Contains(res.Failures[0], "2262-04-11T23:47:16.854775807Z") {
		t.Fatalf("failed %d, not run %d, failures %q; want the advance at line 5 refused, naming the last instant, and the check not run", res.Failed, res.NotRun, res.Failures)
	}
}
