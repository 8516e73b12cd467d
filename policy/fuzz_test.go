package policy_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/scenario"
	"github.com/usher-authz/usher/server"
)

// FuzzParsePolicy feeds arbitrary bytes through the path a policy file
// takes at startup or in ApplyPolicy: Parse, server.ValidatePolicy, then
// the engine. Nothing may panic; every refusal past Parse is an *authz.Error
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
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := policy.Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml: ") {
				t.Fatalf("error %q does not name the file", err)
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
		if _, _, err := engine.ApplyPolicy(ctx, by, p); err != nil {
			refusal(t, "ApplyPolicy", err)
			if rev := engine.Index().Revision(); rev != 0 {
				t.Fatalf("a refused policy wrote revision %d", rev)
			}
			return
		}
		rev := engine.Index().Revision()
		if again, changed, err := engine.ApplyPolicy(ctx, by, p); err != nil || changed || again != rev {
			t.Fatalf("applying the policy in force again: revision %d -> %d, changed %v, error %v; want no write", rev, again, changed, err)
		}

		exported, _ := engine.Index().ExportPolicy()
		fresh := memoryEngine(t)
		if _, _, err := fresh.ApplyPolicy(ctx, by, exported); err != nil {
			t.Fatalf("the export of an applied policy does not apply to an empty store: %v", err)
		}
		if back, _ := fresh.Index().ExportPolicy(); !reflect.DeepEqual(back, exported) {
			t.Fatalf("export -> apply -> export differs:\n%+v\n%+v", exported, back)
		}
	})
}

func memoryEngine(t *testing.T) *authz.Engine {
	t.Helper()
	engine, err := scenario.NewMemoryEngine()
	if err != nil {
		t.Fatal(err)
	}
	return engine
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
