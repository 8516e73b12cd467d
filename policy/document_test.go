package policy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
)

// lines renders findings as `usher policy validate` prints them.
func lines(ds policy.Diagnostics) []string {
	var out []string
	for _, d := range ds.Sorted() {
		out = append(out, d.String())
	}
	return out
}

func sameLines(t *testing.T, got policy.Diagnostics, want ...string) {
	t.Helper()
	g := lines(got)
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
}

func TestReadReportsEverySchemaErrorAtItsLine(t *testing.T) {
	const file = `permissions:
  - name: join-call
  - {name: send-audio, parent: [join-call]}
roles:
  - name: host
    scope: root
    permisions: [join-call]
    max_holders: -1
  - name: guest
    scope: root
    permissions: join-call
    bindable_on: [[call]]
    max_holders: lots
    name: visitor
quotas:
  - {scope: account:a, resource_type: call, limit: 4294967296}
admissions:
  - resource_type: call
    join_permission: join-call
    lease: soon
    backstage: maybe
    livekit: {room_join: join-call, can_publish_sources: {camera: [send-video]}}
creators: []
`
	_, diags := policy.Read("acme.yaml", []byte(file))
	sameLines(t, diags,
		`acme.yaml:3:24: permissions[1].parent: unknown field "parent" (did you mean "parents"?)`,
		`acme.yaml:7:5: roles[0].permisions: unknown field "permisions" (did you mean "permissions"?)`,
		`acme.yaml:8:18: roles[0].max_holders: must not be negative, got -1`,
		`acme.yaml:11:18: roles[1].permissions: want a list, got "join-call"`,
		`acme.yaml:12:19: roles[1].bindable_on[0]: want a single value, got a list`,
		`acme.yaml:13:18: roles[1].max_holders: want a whole number from 0 to 4294967295, got "lots"`,
		`acme.yaml:14:5: roles[1].name: the field is given twice (first at line 9)`,
		`acme.yaml:16:52: quotas[0].limit: want a whole number from 0 to 4294967295, got 4294967296`,
		`acme.yaml:20:12: admissions[0].lease: want a duration such as 30s or 15m, got "soon"`,
		`acme.yaml:21:16: admissions[0].backstage: want true or false, got "maybe"`,
		`acme.yaml:22:67: admissions[0].livekit.can_publish_sources.camera: want a single value, got a list`,
		`acme.yaml:23:1: creators: unknown field "creators" (Policy has permissions, resources, roles, creator_roles, quotas, default_quotas, admissions)`,
	)
}

func TestReadPointsIntoJSONByColumn(t *testing.T) {
	_, diags := policy.Read("p.json", []byte(`{"permissions": [{"name": "a"}], "roles": [{"name": "r", "scope": "root", "permisions": ["a"], "maxHolders": 2}]}`))
	sameLines(t, diags, `p.json:1:75: roles[0].permisions: unknown field "permisions" (did you mean "permissions"?)`)
}

func TestReadRefusesWhatIsNoPolicy(t *testing.T) {
	cases := []struct{ name, data, want string }{
		{"an empty file", "", `e.yaml: the file holds no policy; a policy is a mapping with permissions, roles and the rest`},
		{"a file of comments", "# nothing\n", `e.yaml: the file holds no policy; a policy is a mapping with permissions, roles and the rest`},
		{"null", "~\n", `e.yaml: the file holds no policy; a policy is a mapping with permissions, roles and the rest`},
		{"a list", "- name: a\n", `e.yaml:1:1: want a mapping of Policy fields, got a list`},
		{"not YAML", "permissions: [a\nroles: x\n", `e.yaml:1:1: not valid YAML: did not find expected ',' or ']'`},
		{"two documents", "permissions: []\n---\nroles: []\n", `e.yaml:2:1: a policy file holds one YAML document; a second one starts here`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, diags := policy.Read("e.yaml", []byte(c.data))
			sameLines(t, diags, c.want)
		})
	}
}

func TestReadFollowsAnchorsAndMergeKeys(t *testing.T) {
	p, err := policy.Parse("a.yaml", []byte(`permissions:
  - &join {name: join-call}
  - {name: send-audio, parents: [join-call]}
roles:
  - &base {name: user, scope: root, permissions: [join-call], max_holders: 2}
  - <<: *base
    name: speaker
    permissions: [join-call, send-audio]
`))
	if err != nil {
		t.Fatal(err)
	}
	if r := p.GetRoles()[1]; r.GetName() != "speaker" || r.GetScope() != "root" || r.GetMaxHolders() != 2 || len(r.GetPermissions()) != 2 {
		t.Errorf("merged role = %v", r)
	}
}

// The reader takes the proto as its schema: for every shipped policy it
// reads exactly what protojson reads from the same file converted to JSON.
func TestReadAgreesWithProtojson(t *testing.T) {
	files, _ := filepath.Glob("policies/*.yaml")
	files = append(files, "testdata/all-fields.yaml")
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got, err := policy.Parse(file, data)
			if err != nil {
				t.Fatal(err)
			}
			js, err := yaml.YAMLToJSON(data)
			if err != nil {
				t.Fatal(err)
			}
			want := &usherv1.Policy{}
			if err := protojson.Unmarshal(js, want); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("read\n%v\nprotojson reads\n%v", got, want)
			}
		})
	}
}

func TestPositionFallsBackToTheEnclosingField(t *testing.T) {
	d, diags := policy.Read("p.yaml", []byte("admissions:\n  - resource_type: call\n    lobby: {admit_role: x}\n"))
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	for path, want := range map[string]policy.Position{
		"admissions[0].lobby.admit_permission":        {3, 12}, // left out: the lobby
		"policy.admissions[0].join_permission":        {2, 5},  // left out: the rule; the engine's prefix ignored
		"admissions[0].lobby.admit_role":              {3, 25},
		"admissions[0].resource_type":                 {2, 20},
		"roles[3].permissions[1]":                     {1, 1}, // nothing of it: the file
		"admissions[0].livekit.can_publish_sources.x": {2, 5},
	} {
		if got := d.Position(path); got != want {
			t.Errorf("Position(%s) = %v, want %v", path, got, want)
		}
	}
}

// aliasedRoles is a policy of n permissions and n roles, each of which names
// the first role's list of every permission by an alias: a file of O(n)
// lines that reads as O(n²) nodes.
func aliasedRoles(n int) []byte {
	var b strings.Builder
	b.WriteString("permissions:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: p%d\n", i)
	}
	b.WriteString("roles:\n  - name: r0\n    scope: root\n    permissions: &every\n")
	for i := range n {
		fmt.Fprintf(&b, "      - p%d\n", i)
	}
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  - name: r%d\n    scope: root\n    permissions: *every\n", i)
	}
	return []byte(b.String())
}

// Aliases read as what they name, up to a million nodes in all: a small file
// whose anchors are named from many places is refused, not read for minutes.
func TestReadBoundsWhatAliasesExpandTo(t *testing.T) {
	if _, diags := policy.Read("small.yaml", aliasedRoles(100)); len(diags) != 0 {
		t.Fatalf("100 roles naming one list of 100 permissions: %v", diags)
	}
	_, diags := policy.Read("large.yaml", aliasedRoles(1_001))
	if len(diags) != 1 || !strings.Contains(diags[0].Message, "aliases expand to more than 1000000 nodes") {
		t.Fatalf("1,001 roles naming one list of 1,001 permissions: %v, want the one error that the aliases expand too far", diags)
	}
}

// Merge keys are aliases too: a mapping merged into itself, or a chain of
// mappings each merging the one before from many places, reads as what it
// says, each mapping merged once, and the reader neither recurses forever
// nor expands the chain.
func TestReadMergesEachMappingOnce(t *testing.T) {
	var chain strings.Builder
	chain.WriteString("permissions:\n  - &m0 {name: a}\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&chain, "  - &m%d {<<: [*m%d, *m%d, *m%d], name: p%d}\n", i, i-1, i-1, i-1, i)
	}
	for _, file := range []string{
		"permissions:\n  - &a {name: a, <<: *a}\n",
		"permissions:\n  - &a {<<: *a, name: a, parents: [b]}\n  - {name: b}\n",
		chain.String(),
	} {
		p, err := policy.Parse("m.yaml", []byte(file))
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if got := p.GetPermissions()[0].GetName(); got != "a" {
			t.Errorf("%s: the first permission is %q, want a", file, got)
		}
	}
}

// An item the reader drops (empty, or of the wrong shape) leaves the
// message's indexes behind the file's: the findings about the items after
// it are still placed at their own lines and named by the file's indexes.
func TestFindingsAfterADroppedItemPointAtTheirOwnItems(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"permissions:\n  - {name: join-call}\nroles:\n  -\n  - name: host\n    scope: root\n    permissions: [join-cal]\n",
			`v.yaml:7:19: roles[1].permissions[0]: "join-cal"`},
		{"permissions:\n  - {name: join-call}\n  - {name: mute}\nroles:\n  - name: host\n    scope: root\n    permissions: [{x: 1}, join-call, mutee]\n",
			`v.yaml:7:38: roles[0].permissions[2]: "mutee"`},
	} {
		doc, _ := policy.Read("v.yaml", []byte(tc.file))
		diags := policy.Validate(doc)
		found := false
		for _, d := range diags {
			found = found || strings.HasPrefix(d.String(), tc.want)
		}
		if !found {
			t.Errorf("no finding starts %q; the findings:\n%v", tc.want, diags)
		}
	}
}

// YAML's merge key takes a mapping or a list of them; anything else, as an
// anchor of a permission list, would merge nothing, silently.
func TestReadRefusesAMergeOfWhatIsNoMapping(t *testing.T) {
	const file = `permissions: [{name: a}]
roles:
  - name: r
    scope: root
    permissions: &perms [a]
  - <<: *perms
    name: s
  - <<: 5
    name: t
`
	_, diags := policy.Read("m.yaml", []byte(file))
	sameLines(t, diags,
		`m.yaml:5:26: roles[1]: a merge key (<<) takes a mapping or a list of mappings, got "a"`,
		`m.yaml:8:9: roles[2]: a merge key (<<) takes a mapping or a list of mappings, got the number 5`,
	)
}

// A time is read as RFC 3339 writes it: an offset past ±23:59, which Go's
// time.Parse takes, is refused at its line; a lowercase "t" or "z" is read.
func TestReadTakesTimesAsRFC3339WritesThem(t *testing.T) {
	const file = `resources:
  - {name: "account:a"}
  - {name: "call:a:1", parent: "account:a", start_time: "2030-01-01T00:00:00+24:00"}
  - {name: "call:a:2", parent: "account:a", start_time: "2030-01-01T00:00:00+00:60"}
  - {name: "call:a:3", parent: "account:a", start_time: "2030-01-01t09:00:00z"}
  - {name: "call:a:4", parent: "account:a", start_time: "2030-12-31T23:59:60Z"}
`
	p, diags := policy.Read("t.yaml", []byte(file))
	sameLines(t, diags,
		`t.yaml:3:57: resources[1].start_time: want a time such as 2030-01-01T09:00:00Z, got "2030-01-01T00:00:00+24:00"`,
		`t.yaml:4:57: resources[2].start_time: want a time such as 2030-01-01T09:00:00Z, got "2030-01-01T00:00:00+00:60"`,
		`t.yaml:6:57: resources[4].start_time: a leap second (:60) is not taken: write :59 or the next minute's :00, got "2030-12-31T23:59:60Z"`,
	)
	if got := p.Policy.GetResources()[3].GetStartTime().AsTime(); !got.Equal(time.Date(2030, 1, 1, 9, 0, 0, 0, time.UTC)) {
		t.Errorf("resources[3].start_time = %v, want 2030-01-01T09:00:00Z", got)
	}
}
