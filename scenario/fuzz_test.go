package scenario_test

import (
	"strings"
	"testing"

	"github.com/usher-authz/usher/scenario"
)

// FuzzParseScenario: Parse never panics, its errors name the file, and what
// it accepts names a policy and holds no step with two actions.
//
// Its seed corpus, testdata/fuzz/FuzzParseScenario, holds small scenarios
// and not the shipped ones, which would take the fuzzer most of a minute to
// minimize each time it finds new code from one.
func FuzzParseScenario(f *testing.F) {
	f.Add([]byte("policy: default\nsteps:\n  - check: {subject: \"user:a\", permission: p, resource: \"room:1\"}\n    allowed: false\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := scenario.Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if sc.Policy == "" {
			t.Fatal("accepted a scenario that names no policy")
		}
		// At most one: Parse counts a step's keys, so "- grant:" (a null
		// action) passes it with none, and Run fails that step with "no
		// action".
		for i, s := range sc.Steps {
			if n := actions(s); n > 1 {
				t.Fatalf("step %d (line %d) has %d actions, want exactly one", i, s.Line, n)
			}
		}
	})
}

func actions(s scenario.Step) int {
	n := 0
	for _, set := range []bool{
		s.Register != nil, s.Delete != nil, s.Grant != nil, s.Revoke != nil, s.Block != nil, s.Unblock != nil,
		s.PutRole != nil, s.DeleteRole != nil, s.PutQuota != nil, s.DeleteQuota != nil, s.Admit != nil, s.GoLive != nil,
		s.Advance != "", s.Join != nil, s.Leave != nil, s.Check != nil, s.Permissions != nil, s.Roles != nil,
	} {
		if set {
			n++
		}
	}
	return n
}
