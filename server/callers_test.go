package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/internal/testpki"
	"github.com/usher-authz/usher/server"
)

// newToken makes a bearer token the way `usher token` does.
func newToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashOf is the token_sha256 of a token.
func hashOf(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// writeCallers writes a callers file in dir and returns its path.
func writeCallers(t *testing.T, file, yaml string) {
	t.Helper()
	testpki.WriteFile(t, file, []byte(yaml))
}

// logBuffer collects a server's log lines for tests to read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// usher token prints a token and its token_sha256: one pasted in place
// of the other is refused without being shown, for the refusal goes to
// the log, where the token would be anyone's who reads it.
func TestParseCallersDoesNotShowATokenInPlaceOfItsHash(t *testing.T) {
	for _, token := range []string{newToken(t), strings.Repeat("7f", 32) + "zz"} {
		_, err := server.ParseCallers("etc/callers.yaml", []byte("callers:\n  - {name: a, kind: check, token_sha256: '"+token+"'}\n"))
		if err == nil || !strings.Contains(err.Error(), "callers[0].token_sha256") {
			t.Fatalf("a token in place of its hash: %v; want it refused naming callers[0].token_sha256", err)
		}
		if strings.Contains(err.Error(), token) {
			t.Errorf("the refusal shows the token: %v", err)
		}
	}
}

func TestParseCallersRefuses(t *testing.T) {
	good := strings.Repeat("ab", 32)
	other := strings.Repeat("cd", 32)
	cases := []struct {
		name string
		yaml string
		want []string // substrings of the error, besides the file name
	}{
		{"an unknown field is an error naming the entry",
			"callers:\n  - {name: a, kind: check, tokn_sha256: " + good + "}\n",
			[]string{"callers[0]", `unknown field "tokn_sha256"`}},
		{"a second YAML document is an error, not dropped unread",
			"callers:\n  - {name: a, kind: check, token_sha256: " + good + "}\n---\ncallers:\n  - {name: b, kind: admin, token_sha256: " + other + "}\n",
			[]string{"line 3: the file holds one YAML document; a second one starts here"}},
		// encoding/json matches keys to fields whatever their case: a
		// "Kind: admin" would make a check caller an administrator.
		{"a field spelt in another case is an error naming it",
			"callers:\n  - {name: a, Kind: admin, token_sha256: " + good + "}\n",
			[]string{`callers[0].Kind: unknown field "Kind"`, `"kind"`}},
		{"a field spelt in another case is an error, beside its own spelling",
			"callers:\n  - {name: a, kind: check, KIND: admin, token_sha256: " + good + "}\n",
			[]string{`callers[0].KIND: unknown field "KIND"`}},
		{"a top-level field spelt in another case is an error",
			"Callers:\n  - {name: a, kind: check, token_sha256: " + good + "}\n",
			[]string{`Callers: unknown field "Callers"`}},
		{"an unknown top-level field is an error",
			"caller:\n  - {name: a, kind: check, token_sha256: " + good + "}\n",
			[]string{`unknown field "caller"`}},
		{"a kind other than check or admin is an error",
			"callers:\n  - {name: a, kind: check, token_sha256: " + good + "}\n  - {name: b, kind: superuser, token_sha256: " + other + "}\n",
			[]string{`callers[1].kind "superuser"`, `"check" or "admin"`}},
		{"a token hash that is not 64 characters is an error",
			"callers:\n  - {name: a, kind: check, token_sha256: 9f86d081}\n",
			[]string{`callers[0].token_sha256: must be 64 hexadecimal characters`, "got 8"}},
		{"a token hash that is not hexadecimal is an error",
			"callers:\n  - {name: a, kind: check, token_sha256: " + strings.Repeat("zz", 32) + "}\n",
			[]string{`callers[0].token_sha256: must be hexadecimal`}},
		{"the hash of an empty token is an error: an unset variable hashed, that a bare \"bearer \" would match",
			"callers:\n  - {name: a, kind: admin, token_sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855}\n",
			[]string{`callers[0].token_sha256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"`, "empty token"}},
		{"a certificate hash that is not 64 characters is an error",
			"callers:\n  - {name: a, kind: admin, certificate_sha256: abc}\n",
			[]string{`callers[0].certificate_sha256 "abc"`}},
		{"two callers may not share a name",
			"callers:\n  - {name: a, kind: check, token_sha256: " + good + "}\n  - {name: a, kind: admin, token_sha256: " + other + "}\n",
			[]string{`callers[1].name "a"`, "callers[0] has the same name"}},
		{"two callers may not share a token",
			"callers:\n  - {name: a, kind: check, token_sha256: " + good + "}\n  - {name: b, kind: admin, token_sha256: " + good + "}\n",
			[]string{"callers[1].token_sha256", "callers[0] has the same token_sha256"}},
		{"two callers may not share a certificate subject",
			"callers:\n  - {name: a, kind: check, certificate_subject: 'CN=x'}\n  - {name: b, kind: admin, certificate_subject: 'CN=x'}\n",
			[]string{"callers[1].certificate_subject", "callers[0]"}},
		{"an entry with neither a token hash nor a certificate match is an error",
			"callers:\n  - {name: a, kind: check, token_sha256: " + good + "}\n  - {name: lonely, kind: admin}\n",
			[]string{`callers[1] (name "lonely")`, "token_sha256, certificate_subject or certificate_sha256"}},
		{"a certificate subject must be a distinguished name",
			"callers:\n  - {name: a, kind: admin, certificate_subject: console}\n",
			[]string{`callers[0].certificate_subject "console"`}},
		{"a certificate is matched by subject or by hash, not both",
			"callers:\n  - {name: a, kind: admin, certificate_subject: 'CN=a', certificate_sha256: " + good + "}\n",
			[]string{`callers[0].certificate_subject "CN=a"`, "not both"}},
		{"a caller needs a name",
			"callers:\n  - {kind: admin, token_sha256: " + good + "}\n",
			[]string{"callers[0].name", "empty"}},
		{"a name has no spaces",
			"callers:\n  - {name: 'my sidecar', kind: admin, token_sha256: " + good + "}\n",
			[]string{`callers[0].name "my sidecar"`}},
		{"a file without callers is an error, not a lock-out",
			"callers: []\n",
			[]string{"names no callers"}},
		{"an empty file is an error",
			"",
			[]string{"names no callers"}},
		{"a YAML key given twice is an error",
			"callers:\n  - {name: a, name: b, kind: admin, token_sha256: " + good + "}\n",
			[]string{"name"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := server.ParseCallers("etc/callers.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("parsed; want an error")
			}
			for _, w := range append([]string{"etc/callers.yaml: "}, c.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestCallersIdentifyByTokenAndCertificate(t *testing.T) {
	ca := testpki.NewCA(t, "callers test CA")
	console := ca.Client(t, pkix.Name{CommonName: "console", Organization: []string{"acme"}})
	pinned := ca.Client(t, pkix.Name{CommonName: "recorder"})
	stranger := ca.Client(t, pkix.Name{CommonName: "stranger"})
	sum := sha256.Sum256(pinned.Cert.Raw)
	var colons []string
	for _, b := range sum {
		colons = append(colons, fmt.Sprintf("%02X", b))
	}
	sidecarToken := newToken(t)
	file := fmt.Sprintf(`callers:
  - name: sidecar-eu1
    kind: check
    token_sha256: %s   # hex SHA-256 of the bearer token
  - name: console
    kind: admin
    certificate_subject: CN=console,O=acme
  - name: recorder
    kind: admin
    certificate_sha256: %s   # as openssl x509 -fingerprint -sha256 prints it
`, hashOf(sidecarToken), strings.Join(colons, ":"))
	callers, err := server.ParseCallers("callers.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := callers.ByToken(sidecarToken); !ok || c.Name != "sidecar-eu1" || c.Kind != server.KindCheck {
		t.Errorf("ByToken(sidecar's token) = %+v, %v; want sidecar-eu1, check", c, ok)
	}
	if c, ok := callers.ByToken(newToken(t)); ok {
		t.Errorf("ByToken(another token) = %+v; want no caller", c)
	}
	if c, ok := callers.ByToken(hashOf(sidecarToken)); ok {
		t.Errorf("the stored hash itself identified %+v; only the token may", c)
	}
	if c, ok := callers.ByCertificate(console.Cert); !ok || c.Name != "console" || c.Kind != server.KindAdmin {
		t.Errorf("ByCertificate(CN=console,O=acme) = %+v, %v; want console, admin", c, ok)
	}
	if c, ok := callers.ByCertificate(pinned.Cert); !ok || c.Name != "recorder" {
		t.Errorf("ByCertificate(pinned) = %+v, %v; want recorder", c, ok)
	}
	if c, ok := callers.ByCertificate(stranger.Cert); ok {
		t.Errorf("ByCertificate(CN=stranger) = %+v; want no caller", c)
	}
}

func TestCallersFileHoldsOnlyTheTokensHash(t *testing.T) {
	token := newToken(t)
	file := filepath.Join(t.TempDir(), "callers.yaml")
	writeCallers(t, file, "callers:\n  - {name: sidecar, kind: check, token_sha256: "+hashOf(token)+"}\n")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(token)) {
		t.Fatal("the callers file contains the token")
	}
	callers, err := server.LoadCallers(file)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := callers.ByToken(token); !ok || c.Name != "sidecar" {
		t.Fatalf("ByToken = %+v, %v; want sidecar", c, ok)
	}
}

func TestCallerSourceReloadKeepsTheLastGoodCallers(t *testing.T) {
	var logs logBuffer
	first, second := newToken(t), newToken(t)
	file := filepath.Join(t.TempDir(), "callers.yaml")
	writeCallers(t, file, "callers:\n  - {name: first, kind: check, token_sha256: "+hashOf(first)+"}\n")
	src, err := server.NewCallerSource(file, logs.logger())
	if err != nil {
		t.Fatal(err)
	}

	writeCallers(t, file, "callers:\n  - {name: second, kind: admin, token_sha256: "+hashOf(second)+"}\n")
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := src.Current().ByToken(first); ok {
		t.Error("a removed caller is still known after Reload")
	}
	if c, ok := src.Current().ByToken(second); !ok || c.Name != "second" {
		t.Errorf("an added caller is unknown after Reload: %+v, %v", c, ok)
	}

	writeCallers(t, file, "callers:\n  - {name: second, kind: root, token_sha256: "+hashOf(second)+"}\n")
	err = src.Reload()
	if err == nil || !strings.Contains(err.Error(), `callers[0].kind "root"`) {
		t.Fatalf("Reload of a broken file: %v; want the kind error", err)
	}
	if c, ok := src.Current().ByToken(second); !ok || c.Name != "second" {
		t.Errorf("a failed reload dropped the previous callers: %+v, %v", c, ok)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "callers file not reloaded") {
		t.Errorf("a failed reload was not logged as an error; logs:\n%s", logs.String())
	}
}

// The client CA file read with the callers file keeps only its own CAs in
// force when it does not parse: a caller taken out of the callers file
// meanwhile is out all the same.
func TestABrokenClientCAFileKeepsNoRemovedCallerIn(t *testing.T) {
	var logs logBuffer
	first, second := newToken(t), newToken(t)
	dir := t.TempDir()
	file, caFile := filepath.Join(dir, "callers.yaml"), filepath.Join(dir, "client-ca.crt")
	writeCallers(t, file, "callers:\n  - {name: first, kind: admin, token_sha256: "+hashOf(first)+"}\n"+
		"  - {name: second, kind: admin, token_sha256: "+hashOf(second)+"}\n")
	testpki.WriteFile(t, caFile, testpki.NewCA(t, "acme CA").PEM())
	src, err := server.NewCallerSource(file, logs.logger(), server.WithClientCAFile(caFile))
	if err != nil {
		t.Fatal(err)
	}

	testpki.WriteFile(t, caFile, []byte("half a CA bundle, being written\n"))
	writeCallers(t, file, "callers:\n  - {name: second, kind: admin, token_sha256: "+hashOf(second)+"}\n")
	if err := src.Reload(); err == nil || !strings.Contains(err.Error(), caFile) {
		t.Errorf("Reload with a client CA file that does not parse: %v; want an error naming %s", err, caFile)
	}
	if c, ok := src.Current().ByToken(first); ok {
		t.Errorf("caller %q, taken out of the callers file, is still known while the client CA file does not parse", c.Name)
	}
	if c, ok := src.Current().ByToken(second); !ok || c.Name != "second" {
		t.Errorf("the caller left in the callers file: %+v, %v", c, ok)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), caFile) {
		t.Errorf("the client CA file that does not parse was not logged as an error; logs:\n%s", logs.String())
	}
}

func TestNewCallerSourceRefusesABrokenFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "callers.yaml")
	writeCallers(t, file, "callers:\n  - {name: a, kind: check}\n")
	if _, err := server.NewCallerSource(file, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("NewCallerSource: %v; want an error naming %s", err, file)
	}
	if _, err := server.NewCallerSource(filepath.Join(t.TempDir(), "missing.yaml"), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("NewCallerSource of a missing file: no error")
	}
}

func TestCallerSourceWatchPicksUpAChangedFile(t *testing.T) {
	first, second := newToken(t), newToken(t)
	file := filepath.Join(t.TempDir(), "callers.yaml")
	writeCallers(t, file, "callers:\n  - {name: first, kind: check, token_sha256: "+hashOf(first)+"}\n")
	src, err := server.NewCallerSource(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { src.Watch(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	writeCallers(t, file, "callers:\n  - {name: second, kind: check, token_sha256: "+hashOf(second)+"}\n")
	eventually(t, 5*time.Second, "the watcher reads the rewritten file", func() bool {
		_, ok := src.Current().ByToken(second)
		return ok
	})
	if _, ok := src.Current().ByToken(first); ok {
		t.Error("the removed caller is still known")
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func FuzzParseCallers(f *testing.F) {
	f.Add([]byte("callers:\n  - {name: a, kind: check, token_sha256: " + strings.Repeat("ab", 32) + "}\n"))
	f.Add([]byte("callers:\n  - {name: console, kind: admin, certificate_subject: 'CN=console,O=acme'}\n"))
	f.Add([]byte("callers:\n  - {name: r, kind: admin, certificate_sha256: '" + strings.Repeat("AB:", 31) + "AB'}\n"))
	f.Add([]byte("callers: [{name: a, kind: superuser}]"))
	f.Add([]byte("callers:\n  - {name: a, kind: admin, token_sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		callers, err := server.ParseCallers("callers.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "callers.yaml: ") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if callers.Len() == 0 {
			t.Fatal("parsed a file without callers")
		}
		if c, ok := callers.ByToken(""); ok {
			t.Fatalf("the empty token identifies %+v", c)
		}
	})
}

func BenchmarkCallersByToken(b *testing.B) {
	var file strings.Builder
	file.WriteString("callers:\n")
	var last string
	for i := range 50 {
		last = fmt.Sprintf("token-%d", i)
		fmt.Fprintf(&file, "  - {name: c%d, kind: check, token_sha256: %s}\n", i, hashOf(last))
	}
	callers, err := server.ParseCallers("callers.yaml", []byte(file.String()))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := callers.ByToken(last); !ok {
			b.Fatal("not found")
		}
	}
}
