package server_test

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	"github.com/usher-authz/usher/server"
)

// FuzzEnvoyCheck sends arbitrary methods, paths and subject headers to the
// real Envoy handler over a loopback connection. The answer is always a
// CheckResponse, never a call error or a panic: allowed, or denied with one
// of the documented reasons and its HTTP status. An allowed request's path
// has only segments a rule could match, so no spelling of a path (dot
// segments, escaped slashes) slips through.
//
// Strings that are not UTF-8 are skipped: Envoy replaces such bytes before
// it sends a request, and the client here could not marshal them.
func FuzzEnvoyCheck(f *testing.F) {
	f.Add("POST", "/calls/meeting/7/join", "alice")
	f.Add("GET", "/calls/meeting/8?x=1", "bob")
	f.Add("GET", "/calls/meeting/7", "carol")
	f.Add("DELETE", "/accounts/globex/calls", "bob")
	f.Add("GET", "/calls/%2e%2e/7", "alice")
	f.Add("GET", "/calls/meeting/7%2F8", "alice")
	f.Add("GET", "/calls/meeting//7", "alice")
	f.Add("GET", "", "alice")
	f.Add("", "*", "")
	f.Add("POST", "/calls/m%zz/7/join", "al ice")
	f.Add("GET", "/calls/meeting/"+strings.Repeat("9", 300), "alice")
	f.Add("POST", "/calls/meeting/7/join?_method=DELETE", "alice")

	w := startEnvoy(f, headerConfig(), nil)
	want := map[string]int{
		"NO_GRANT": 403, "BLOCKED": 403, "UNKNOWN_RESOURCE": 403, "NO_ROUTE": 403,
		"UNAUTHENTICATED": 401, "INVALID_RESOURCE": 400, "METHOD_OVERRIDE": 403,
	}
	f.Fuzz(func(t *testing.T, method, path, user string) {
		if !utf8.ValidString(method) || !utf8.ValidString(path) || !utf8.ValidString(user) {
			t.Skip("not UTF-8")
		}
		a := w.ask(t, httpRequest(method, path, map[string]string{"x-user-id": user}))
		if a.code != codes.OK {
			if code, ok := want[a.reason]; !ok || code != a.http {
				t.Fatalf("denied with %d %q (%q)", a.http, a.reason, a.message)
			}
			return
		}
		if a.headers["x-usher-subject"] != "user:"+user {
			t.Fatalf("allowed as %q, sent %q", a.headers["x-usher-subject"], user)
		}
		p, _, _ := strings.Cut(path, "?")
		for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
			d, err := url.PathUnescape(seg)
			if err != nil || d == "" || d == "." || d == ".." || strings.Contains(d, "/") {
				t.Fatalf("allowed %s %q, whose segment %q no rule may match", method, path, seg)
			}
		}
	})
}

// FuzzParseEnvoyConfig parses arbitrary configuration files: an error or a
// configuration that validates, never a panic.
func FuzzParseEnvoyConfig(f *testing.F) {
	f.Add("subject: {header: x-user-id, prefix: \"user:\"}\nrules:\n  - {method: POST, path: \"/calls/{type}/{id}/join\", resource: \"call:{type}:{id}\", permission: join-call}\n")
	f.Add("subject: {jwt: {algorithm: HS256, key_env: K}}\nrules:\n  - {method: \"*\", path: /, resource: root, permission: p}\n")
	f.Add("subject: {header: x}\nrules:\n  - {method: GET, path: \"/{a}/{b}\", resource: \"t:{a}{b}}{\", permission: p}\n")
	f.Add("subject: {header: x}\nrules:\n  - {method: GET, path: \"/{\", resource: \"t:{}\", permission: p}\n")
	f.Fuzz(func(t *testing.T, data string) {
		cfg, err := server.ParseEnvoyConfig([]byte(data))
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed, but Validate says %v", err)
		}
	})
}

// BenchmarkEnvoyCheckRPC measures Envoy's Check over a real loopback
// connection; compare BenchmarkCheckRPC, the same decision asked natively.
func BenchmarkEnvoyCheckRPC(b *testing.B) {
	w := startEnvoy(b, headerConfig(), nil)
	req := httpRequest("POST", "/calls/meeting/7/join", map[string]string{"x-user-id": "alice"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := w.client.Check(b.Context(), req)
			if err != nil || resp.GetStatus().GetCode() != 0 {
				b.Fatalf("Check: %v %v", resp, err)
			}
		}
	})
}
