package scenario_test

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/usher-authz/usher/scenario"
)

// cascade has a setup step that fails (the role does not exist) between
// expectations.
const cascade = `policy: default
steps:
  - register: {name: account:acme}
  - quote: nobody holds anything at first
    check: {subject: user:a, permission: join-call, resource: account:acme}
    allowed: false
  - grant: {subject: user:a, role: no-such-role, resource: account:acme}
  - quote: the grant gives join-call
    check: {subject: user:a, permission: join-call, resource: account:acme}
    allowed: true
  - grant: {subject: user:b, role: user, resource: account:acme}
  - permissions: {subject: user:b, resource: account:acme}
    exactly: [join-call]
`

func run(t *testing.T, name, data string) scenario.Result {
	t.Helper()
	f, err := scenario.Parse(name, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	res, err := scenario.Run(f)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A setup step that fails stops the scenario: the expectations after it
// are not run, rather than each failing for the same reason.
func TestAFailedSetupStepStopsTheScenario(t *testing.T) {
	res := run(t, "cascade.yaml", cascade)
	if res.Passed != 1 || res.Failed != 1 || res.NotRun != 2 {
		t.Fatalf("passed %d, failed %d, not run %d; want 1, 1, 2: %v", res.Passed, res.Failed, res.NotRun, res.Failures)
	}
	if len(res.Failures) != 1 || !strings.HasPrefix(res.Failures[0], `cascade.yaml:7: grant user:a no-such-role on account:acme: role "no-such-role"`) {
		t.Errorf("failures %q, want only the setup step's", res.Failures)
	}
	var statuses []string
	for _, o := range res.Steps {
		statuses = append(statuses, o.Status.String())
	}
	if want := []string{"passed", "passed", "failed", "not run", "not run", "not run"}; !slices.Equal(statuses, want) {
		t.Errorf("steps %v, want %v", statuses, want)
	}
	if o := res.Steps[3]; o.Name != "the grant gives join-call" || o.Message != "cascade.yaml:8: not run: the setup step at line 7 failed" {
		t.Errorf("a step not run: %+v", o)
	}
}

func TestPatternSelectsFilesAndExpectations(t *testing.T) {
	cases := []struct {
		pattern         string
		file, step      string
		mayMatch, match bool
	}{
		{"", "a/vancast.yaml", "anything", true, true},
		{"vancast", "a/vancast.yaml", "anything", true, true},
		{"vancast", "a/stream.yaml", "a vancast rule", true, true},
		{"vancast", "a/stream.yaml", "other", true, false},
		{"vancast/Manager", "a/vancast.yaml", "A Manager can add", true, true},
		{"vancast/Manager", "a/vancast.yaml", "A Producer can add", true, false},
		{"vancast/Manager", "a/stream.yaml", "A Manager can add", false, false},
		{"^stream$/", "a/stream.yaml", "x", true, true},
	}
	for _, c := range cases {
		p, err := scenario.ParsePattern(c.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.MayMatch(c.file); got != c.mayMatch {
			t.Errorf("%q.MayMatch(%s) = %v", c.pattern, c.file, got)
		}
		if got := p.Match(c.file, c.step); got != c.match {
			t.Errorf("%q.Match(%s, %s) = %v", c.pattern, c.file, c.step, got)
		}
	}
	if _, err := scenario.ParsePattern("a/("); err == nil {
		t.Error("a bad regular expression is accepted")
	}
}

func TestSelectKeepsFailedSetupAndRecounts(t *testing.T) {
	res := run(t, "cascade.yaml", cascade).Select(func(o scenario.Outcome) bool { return strings.Contains(o.Name, "grant gives") })
	if res.Passed != 0 || res.Failed != 1 || res.NotRun != 1 {
		t.Errorf("passed %d, failed %d, not run %d; want 0, 1 (the setup step), 1", res.Passed, res.Failed, res.NotRun)
	}
}

func TestFindTakesDirectories(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		path := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("b.yaml", "policy: mine.yaml\nsteps: []\n")
	write("mine.yaml", "permissions: [{name: a}]\n") // the policy b names: not a scenario
	write("nested/a.yml", "policy: default\nsteps: []\n")
	write("notes.txt", "steps: []\n")
	// A scenario a typo left invalid YAML is found, for Load to report,
	// not skipped as no scenario: its expectations would never run.
	write("nested/broken.yaml", "policy: default\nsteps:\n  - check: {subject: user:x, permission: join-call, resource: root\n")
	got, err := scenario.Find([]string{dir, filepath.Join(dir, "mine.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "b.yaml"), filepath.Join(dir, "nested/a.yml"), filepath.Join(dir, "nested/broken.yaml"), filepath.Join(dir, "mine.yaml")}
	if !slices.Equal(got, want) {
		t.Errorf("Find = %v, want %v (a file named is taken as it is)", got, want)
	}
	if _, err := scenario.Find([]string{filepath.Join(dir, "nested", "..", "nested", "a.yml"), t.TempDir()}); err == nil || !strings.Contains(err.Error(), "no scenario file") {
		t.Errorf("a directory without scenarios: %v", err)
	}
}

// junitReport is the part of JUnit XML CI systems read.
type junitReport struct {
	Tests    int `xml:"tests,attr"`
	Failures int `xml:"failures,attr"`
	Errors   int `xml:"errors,attr"`
	Skipped  int `xml:"skipped,attr"`
	Suites   []struct {
		Name  string `xml:"name,attr"`
		Tests int    `xml:"tests,attr"`
		Cases []struct {
			Name      string `xml:"name,attr"`
			Classname string `xml:"classname,attr"`
			Line      int    `xml:"line,attr"`
			Failure   *struct {
				Text string `xml:",chardata"`
			} `xml:"failure"`
			Error *struct {
				Text string `xml:",chardata"`
			} `xml:"error"`
			Skipped *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func TestWriteJUnit(t *testing.T) {
	failing := run(t, "dir/failing.yaml", strings.Replace(cascade, "allowed: false", "allowed: true", 1))
	var buf bytes.Buffer
	err := scenario.WriteJUnit(&buf, []scenario.FileResult{
		{Path: "dir/failing.yaml", Result: failing},
		{Path: "dir/broken.yaml", Err: os.ErrNotExist},
	})
	if err != nil {
		t.Fatal(err)
	}
	var r junitReport
	if err := xml.Unmarshal(buf.Bytes(), &r); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if r.Tests != 5 || r.Failures != 1 || r.Errors != 2 || r.Skipped != 2 || len(r.Suites) != 2 {
		t.Fatalf("tests %d, failures %d, errors %d, skipped %d, suites %d; want 5, 1, 2, 2, 2:\n%s",
			r.Tests, r.Failures, r.Errors, r.Skipped, len(r.Suites), buf.String())
	}
	cases := r.Suites[0].Cases
	if r.Suites[0].Name != "dir/failing.yaml" || len(cases) != 4 {
		t.Fatalf("first suite %q with %d cases:\n%s", r.Suites[0].Name, len(cases), buf.String())
	}
	if c := cases[0]; c.Name != "nobody holds anything at first" || c.Classname != "failing" || c.Line != 4 || c.Failure == nil ||
		!strings.Contains(c.Failure.Text, "allowed false (NO_GRANT), want allowed true") {
		t.Errorf("the failed expectation: %+v", c)
	}
	if c := cases[1]; c.Name != "setup: grant user:a no-such-role on account:acme" || c.Error == nil || c.Line != 7 {
		t.Errorf("the failed setup step: %+v", c)
	}
	if c := cases[2]; c.Skipped == nil || !strings.Contains(c.Skipped.Message, "setup step at line 7 failed") {
		t.Errorf("an expectation after it: %+v", c)
	}
	if c := cases[3]; c.Name != "permissions of user:b on account:acme" || c.Skipped == nil {
		t.Errorf("an unquoted expectation is named by what it does: %+v", c)
	}
	if c := r.Suites[1].Cases; len(c) != 1 || c[0].Error == nil {
		t.Errorf("a file that could not run: %+v", c)
	}
}
