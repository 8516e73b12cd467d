package livekit_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usher-authz/usher/media/livekit"
)

const (
	secretA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	secretB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func writeKeyFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // the umask may have narrowed it
		t.Fatal(err)
	}
	return path
}

func TestLoadKeyFile(t *testing.T) {
	one := writeKeyFile(t, "APIone: "+secretA+"\n", 0o600)
	two := writeKeyFile(t, "# livekit-server --key-file\nAPIone: "+secretA+"\nAPItwo: "+secretB+"\n", 0o400)

	if k, err := livekit.LoadKeyFile(one, ""); err != nil || k != (livekit.APIKey{Key: "APIone", Secret: secretA}) {
		t.Errorf("a file with one key: %v, %v", k, err)
	}
	if k, err := livekit.LoadKeyFile(two, "APItwo"); err != nil || k != (livekit.APIKey{Key: "APItwo", Secret: secretB}) {
		t.Errorf("a named key of two: %v, %v", k, err)
	}

	refusals := []struct {
		name, path, key, want string
	}{
		{"several keys and no name", two, "", "holds 2 keys ([APIone APItwo]); name the one to use"},
		{"a name the file lacks", two, "APIthree", `no key "APIthree"`},
		{"a file others may read", writeKeyFile(t, "APIone: "+secretA+"\n", 0o644), "", "mode 0644 lets others read the secrets"},
		{"a short secret", writeKeyFile(t, "APIone: tooshort\n", 0o600), "", `api key "APIone": the secret is 8 bytes long`},
		{"not YAML", writeKeyFile(t, "APIone: "+secretA+"\n  : [\n", 0o600), "", "not a YAML map"},
		{"not a map", writeKeyFile(t, "- "+secretA+"\n", 0o600), "", "not a YAML map"},
		{"an empty file", writeKeyFile(t, "", 0o600), "", "not a YAML map"},
		{"a nested value", writeKeyFile(t, "APIone: {x: "+secretA+"}\n", 0o600), "", "line 1: not a key: secret line"},
		{"a second document", writeKeyFile(t, "APIone: "+secretA+"\n---\nAPItwo: "+secretB+"\n", 0o600), "", "holds more than one YAML document"},
		{"a key twice", writeKeyFile(t, "APIone: "+secretA+"\nAPIone: "+secretB+"\n", 0o600), "", `line 2: key "APIone" appears twice`},
		{"no file", filepath.Join(t.TempDir(), "absent"), "", "no such file"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			k, err := livekit.LoadKeyFile(tt.path, tt.key)
			if err == nil {
				t.Fatalf("LoadKeyFile succeeded: %v", k)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secretA) || strings.Contains(err.Error(), secretB) || strings.Contains(err.Error(), "tooshort") {
				t.Errorf("error %q shows a secret", err)
			}
		})
	}
}

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestKeyFromEnv(t *testing.T) {
	k, err := livekit.KeyFromEnv(env(map[string]string{livekit.EnvAPIKey: "APIenv", livekit.EnvAPISecret: secretA}))
	if err != nil || k != (livekit.APIKey{Key: "APIenv", Secret: secretA}) {
		t.Errorf("KeyFromEnv = %v, %v", k, err)
	}
	refusals := []struct {
		name string
		vars map[string]string
		want string
	}{
		{"no key", map[string]string{livekit.EnvAPISecret: secretA}, "USHER_LIVEKIT_API_KEY: not set"},
		{"an empty key", map[string]string{livekit.EnvAPIKey: "", livekit.EnvAPISecret: secretA}, "USHER_LIVEKIT_API_KEY: not set"},
		{"no secret", map[string]string{livekit.EnvAPIKey: "APIenv"}, "USHER_LIVEKIT_API_SECRET: not set"},
		{"a short secret", map[string]string{livekit.EnvAPIKey: "APIenv", livekit.EnvAPISecret: "tooshort"}, `USHER_LIVEKIT_API_SECRET: api key "APIenv": the secret is 8 bytes long`},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			k, err := livekit.KeyFromEnv(env(tt.vars))
			if err == nil {
				t.Fatalf("KeyFromEnv succeeded: %v", k)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "tooshort") {
				t.Errorf("error %q shows the secret", err)
			}
		})
	}
}

func TestLoadKeyTakesTheFileOrTheEnvironmentNotBoth(t *testing.T) {
	path := writeKeyFile(t, "APIone: "+secretA+"\n", 0o600)
	vars := map[string]string{livekit.EnvAPIKey: "APIenv", livekit.EnvAPISecret: secretB}
	if k, err := livekit.LoadKey(path, "", env(nil)); err != nil || k.Key != "APIone" {
		t.Errorf("from the file: %v, %v", k, err)
	}
	if k, err := livekit.LoadKey("", "", env(vars)); err != nil || k.Key != "APIenv" {
		t.Errorf("from the environment: %v, %v", k, err)
	}
	if _, err := livekit.LoadKey(path, "", env(vars)); err == nil || !strings.Contains(err.Error(), "USHER_LIVEKIT_API_KEY is set too") {
		t.Errorf("both: %v, want a refusal", err)
	}
	if k, err := livekit.LoadKey("", "APIenv", env(vars)); err != nil || k.Key != "APIenv" {
		t.Errorf("from the environment, named: %v, %v", k, err)
	}
	if k, err := livekit.LoadKey("", "APIother", env(vars)); err == nil || !strings.Contains(err.Error(), `key "APIother": USHER_LIVEKIT_API_KEY holds the key "APIenv"`) {
		t.Errorf("from the environment, another key named: %v, %v; want a refusal", k, err)
	}
}

func TestAPIKeyNeverPrintsItsSecret(t *testing.T) {
	k := livekit.APIKey{Key: "APIone", Secret: secretA}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(verb, k); strings.Contains(out, secretA) || !strings.Contains(out, "APIone") {
			t.Errorf("%s prints %q", verb, out)
		}
	}
}
