package policy_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/scenario"
	"github.com/usher-authz/usher/server"
)

// FuzzParsePolicy feeds arbitrary bytes through the path a policy file
// takes at startup or in ApplyPolicy: Parse, server.ValidatePolicy, then
// the engine, and through Validate. Nothing may panic; every finding and
// every line of Parse's error names the file; every refusal past Parse is an *authz.Error
// (so the server maps it to INVALID_ARGUMENT and friends, not INTERNAL); a
// refused policy writes nothing; an accepted one, applied again, writes
// nothing, and what ExportPolicy gives
// back applies to an empty store and exports the same.
//
// Its seed corpus, testdata/fuzz/FuzzParsePolicy, holds small policies and
// not the shipped ones: the fuzzer minimizes every input that finds new
// code, and at a shipped policy's size that takes it most of a minute.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("permissions: [{name: a}, {name: b, parents: [a]}]\nroles: [{name: r, scope: root, permissions: [a]}]\n"))
	f.Add([]byte(`{"permissions": [{"name": "a"}], "roles": [{"name": "r", "scope": "root", "permissions": ["a"], "maxHolders": 2}]}`))
	f.Add([]byte("permissions: [&p {name: a}]\nroles:\n  - &r {name: r, scope: root, permissions: [a]}\n  - <<: *r\n    name: s\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, _ := policy.Read("fuzz.yaml", data)
		for _, d := range policy.Validate(doc) {
			if !strings.HasPrefix(d.String(), "fuzz.yaml:") {
				t.Fatalf("finding %q does not name the file", d)
			}
		}
		msg, err := policy.Parse("fuzz.yaml", data)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.yaml:") {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		p := server.FromPolicy(msg)
		if err := server.ValidatePolicy(p); err != nil {
			refusal(t, "ValidatePolicy", err)
			return
		}
		ctx, by := context.Background(), authz.Author{Caller: "fuzz"}
		engine := memoryEngine(t)
		if _, _, err := engine.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil {
			refusal(t, "ApplyPolicy", err)
			if rev := engine.Index().Revision(); rev != 0 {
				t.Fatalf("a refused policy wrote revision %d", rev)
			}
			return
		}
		rev := engine.Index().Revision()
		if again, changed, err := engine.ApplyPolicy(ctx, by, p, authz.ApplyOptions{}); err != nil || len(changed) > 0 || again != rev {
			t.Fatalf("applying the policy in force again: revision %d -> %d, changed %v, error %v; want no write", rev, again, changed, err)
		}

		exported := exportAll(t, engine)
		fresh := memoryEngine(t)
		if _, _, err := fresh.ApplyPolicy(ctx, by, exported, authz.ApplyOptions{}); err != nil {
			t.Fatalf("the export of an applied policy does not apply to an empty store: %v", err)
		}
		// Siblings are exported newest first, so an export applied in order
		// comes back with its siblings reversed: the tree is the same.
		if back := exportAll(t, fresh); !reflect.DeepEqual(byName(back), byName(exported)) {
			t.Fatalf("export -> apply -> export differs:\n%+v\n%+v", exported, back)
		}
	})
}

func memoryEngine(t *testing.T) *authz.Engine {
	t.Helper()
	engine, err := scenario.NewMemoryEngine(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	return engine
}

// exportAll is every page of an export, as one policy.
func exportAll(t *testing.T, e *authz.Engine) authz.Policy {
	t.Helper()
	var (
		all   authz.Policy
		token string
	)
	for {
		p, next, _, err := e.Index().ExportPolicy(authz.MaxPageSize, token)
		if err != nil {
			t.Fatal(err)
		}
		all.Permissions = append(all.Permissions, p.Permissions...)
		all.Resources = append(all.Resources, p.Resources...)
		all.Roles = append(all.Roles, p.Roles...)
		all.CreatorRoles = append(all.CreatorRoles, p.CreatorRoles...)
		all.Quotas = append(all.Quotas, p.Quotas...)
		all.DefaultQuotas = append(all.DefaultQuotas, p.DefaultQuotas...)
		if next == "" {
			return all
		}
		token = next
	}
}

// byName is p with its resources in name order, for comparing trees.
func byName(p authz.Policy) authz.Policy {
	p.Resources = slices.Clone(p.Resources)
	slices.SortFunc(p.Resources, func(a, b authz.Resource) int { return strings.Compare(a.Name, b.Name) })
	return p
}

// refusal fails unless err is an *authz.Error that names a field.
func refusal(t *testing.T, what string, err error) {
	t.Helper()
	var e *authz.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s refused with %T %v, want an *authz.Error", what, err, err)
	}
	if e.Field == "" {
		t.Fatalf("%s refused without naming a field: %v", what, err)
	}
}
