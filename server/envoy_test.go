package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"iter"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	policies "github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
	"github.com/usher-authz/usher/storage/memory"
)

// The world of the Envoy tests, under a small policy of its own:
//
//	root
//	└── account:globex            bob: member
//	    ├── call:meeting:7        alice: host; carol: member; dave: blocked from join-call
//	    └── call:meeting:8
//
// carol is blocked from join-call at account:globex, where dave holds
// member; erin holds nothing.
const (
	globex   = "account:globex"
	meeting8 = "call:meeting:8"
)

var envoyPolicy = authz.Policy{
	Permissions: []authz.Permission{
		{Name: "call.manage"},
		{Name: "join-call", Parents: []string{"call.manage"}},
		{Name: "read-call", Parents: []string{"call.manage"}},
		{Name: "send-audio", Parents: []string{"call.manage"}},
	},
	Roles: []authz.Role{
		{Name: "host", Scope: authz.RootName, Permissions: []string{"call.manage"}},
		{Name: "member", Scope: authz.RootName, Permissions: []string{"join-call", "read-call", "send-audio"}},
	},
}

// envoyWorld is an Usher server with Envoy's service registered, on a
// loopback listener, and a client speaking Envoy's ext_authz protocol.
type envoyWorld struct {
	engine *authz.Engine
	conn   *grpc.ClientConn
	client authv3.AuthorizationClient
}

// newEnvoyEngine builds an engine on a bbolt file, applies envoyPolicy and
// registers and grants the world above.
func newEnvoyEngine(t testing.TB) *authz.Engine {
	t.Helper()
	store, err := bolt.Open(filepath.Join(t.TempDir(), "usher.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("storage.Open: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return newEnvoyEngineOn(t, store)
}

// newEnvoyEngineOn is newEnvoyEngine on a backend of the caller's.
func newEnvoyEngineOn(t testing.TB, backend authz.Backend) *authz.Engine {
	t.Helper()
	engine, err := authz.Start(context.Background(), backend, authz.Options{})
	if err != nil {
		t.Fatalf("authz.Start: %v", err)
	}
	t.Cleanup(engine.Close)
	ctx, by := t.Context(), authz.Author{Caller: "test"}
	if _, _, err := engine.ApplyPolicy(ctx, by, envoyPolicy, authz.ApplyOptions{}); err != nil {
		t.Fatalf("ApplyPolicy: %v", err)
	}
	for _, r := range []authz.Resource{{Name: globex}, {Name: meeting7, Parent: globex}, {Name: meeting8, Parent: globex}} {
		if _, err := engine.PutResource(ctx, by, r); err != nil {
			t.Fatalf("PutResource(%s): %v", r.Name, err)
		}
	}
	for _, g := range []authz.Grant{
		{Subject: "user:alice", Role: "host", Resource: meeting7},
		{Subject: "user:bob", Role: "member", Resource: globex},
		{Subject: "user:carol", Role: "member", Resource: meeting7},
		{Subject: "user:dave", Role: "member", Resource: globex},
	} {
		if _, err := engine.Grant(ctx, by, g); err != nil {
			t.Fatalf("Grant(%+v): %v", g, err)
		}
	}
	if _, _, err := engine.Block(ctx, by, authz.Block{Subject: "user:carol", Resource: globex, Permissions: []string{"join-call"}, Reason: "spam in the lobby"}); err != nil {
		t.Fatalf("Block: %v", err)
	}
	return engine
}

// startEnvoy serves cfg against a fresh world on the server server.New
// builds: as `usher serve --envoy-config` does, through WithEnvoy, when
// checker is nil, else asking checker, through RegisterEnvoy.
func startEnvoy(t testing.TB, cfg server.EnvoyConfig, checker server.Checker) *envoyWorld {
	t.Helper()
	return serveEnvoy(t, newEnvoyEngine(t), cfg, checker)
}

// serveEnvoy is startEnvoy on an engine of the caller's.
func serveEnvoy(t testing.TB, engine *authz.Engine, cfg server.EnvoyConfig, checker server.Checker) *envoyWorld {
	t.Helper()
	var srv *server.Server
	if checker == nil {
		e, err := server.NewEnvoyService(cfg)
		if err != nil {
			t.Fatalf("NewEnvoyService: %v", err)
		}
		srv = server.New(engine, slog.New(slog.DiscardHandler), server.WithEnvoy(e))
	} else {
		srv = server.New(engine, slog.New(slog.DiscardHandler))
		if err := server.RegisterEnvoy(srv.Server, cfg, checker); err != nil {
			t.Fatalf("RegisterEnvoy: %v", err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.GracefulStop()
		<-served
	})
	return &envoyWorld{engine: engine, conn: conn, client: authv3.NewAuthorizationClient(conn)}
}

var callRules = []server.EnvoyRule{
	{Method: "POST", Path: "/calls/{type}/{id}/join", Resource: "call:{type}:{id}", Permission: "join-call"},
	{Method: "GET", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "read-call"},
	{Method: "*", Path: "/accounts/{account}/calls", Resource: "account:{account}", Permission: "read-call"},
}

func headerConfig() server.EnvoyConfig {
	return server.EnvoyConfig{Subject: server.EnvoySubject{Header: "x-user-id", Prefix: "user:"}, Rules: callRules}
}

// httpRequest is what Envoy's ext_authz filter sends for one request.
func httpRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "req-1", Method: method, Path: path, Host: "api.example.com", Scheme: "https", Protocol: "HTTP/1.1",
			Headers: headers,
		}},
	}}
}

// envoyAnswer is a CheckResponse read the way Envoy reads it.
type envoyAnswer struct {
	code    codes.Code        // the response's status: OK lets the request through
	http    int               // the denied response's HTTP status; 0 when allowed
	headers map[string]string // added upstream when allowed, sent to the client when denied
	removed []string
	query   map[string]string // query parameters set upstream when allowed
	reason  string            // the denied body's reason
	message string            // the denied body's message
	body    string
}

func (w *envoyWorld) ask(t *testing.T, req *authv3.CheckRequest) envoyAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := w.client.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	a := envoyAnswer{code: codes.Code(resp.GetStatus().GetCode()), headers: map[string]string{}}
	var hs []*corev3.HeaderValueOption
	if ok := resp.GetOkResponse(); ok != nil {
		if a.code != codes.OK {
			t.Errorf("an OkResponse with status %s", a.code)
		}
		hs, a.removed = ok.GetHeaders(), ok.GetHeadersToRemove()
		for _, q := range ok.GetQueryParametersToSet() {
			if a.query == nil {
				a.query = map[string]string{}
			}
			a.query[q.GetKey()] = q.GetValue()
		}
	} else if d := resp.GetDeniedResponse(); d != nil {
		if a.code == codes.OK {
			t.Errorf("a DeniedResponse with status OK")
		}
		a.http, hs, a.body = int(d.GetStatus().GetCode()), d.GetHeaders(), d.GetBody()
		var body struct{ Reason, Message string }
		if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
			t.Errorf("the denied body %q is not JSON: %v", d.GetBody(), err)
		}
		a.reason, a.message = body.Reason, body.Message
		if body.Reason == "" {
			t.Errorf("the denied body %q has no reason", d.GetBody())
		}
	} else {
		t.Fatalf("the response has neither an ok nor a denied HTTP response: %v", resp)
	}
	for _, h := range hs {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || h.GetAppend() != nil {
			t.Errorf("header %s does not overwrite what the client sent: %v", h.GetHeader().GetKey(), h)
		}
		a.headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return a
}

func revisionOf(w *envoyWorld) string {
	return strconv.FormatUint(uint64(w.engine.Index().Revision()), 10)
}

func TestEnvoyAllowsWithTheDecisionInHeaders(t *testing.T) {
	w := startEnvoy(t, headerConfig(), nil)
	tests := []struct {
		name, method, path, user, role, scope string
	}{
		{"a host joins her call", "POST", "/calls/meeting/7/join", "alice", "host", meeting7},
		{"an account member's grant reaches every call below it", "GET", "/calls/meeting/8", "bob", "member", globex},
		{"the query string plays no part", "POST", "/calls/meeting/7/join?lang=de&x=/accounts", "alice", "host", meeting7},
		{"a percent-escaped segment is compared decoded", "POST", "/calls/meet%69ng/7/join", "alice", "host", meeting7},
		{"a rule with method * matches any method", "DELETE", "/accounts/globex/calls", "bob", "member", globex},
		{"a block of join-call leaves read-call", "GET", "/calls/meeting/7", "carol", "member", meeting7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := w.ask(t, httpRequest(tt.method, tt.path, map[string]string{"x-user-id": tt.user, "x-usher-role": "forged"}))
			if a.code != codes.OK {
				t.Fatalf("denied: %+v", a)
			}
			want := map[string]string{
				"x-usher-subject":  "user:" + tt.user,
				"x-usher-role":     tt.role,
				"x-usher-scope":    tt.scope,
				"x-usher-revision": revisionOf(w),
			}
			if !mapsEqual(a.headers, want) {
				t.Errorf("headers = %v, want %v", a.headers, want)
			}
			// A forged reason, and the method overrides Usher refuses.
			for _, h := range append([]string{"x-usher-reason"}, overrideHeaders...) {
				if !slices.Contains(a.removed, h) {
					t.Errorf("headers to remove = %v, want %s among them", a.removed, h)
				}
			}
		})
	}
}

// Rack, PHP and WSGI hand an API its headers as CGI variables, in which
// x_usher_subject and x-usher-subject are both HTTP_X_USHER_SUBJECT, and
// PHP reads x.usher.subject as that too: Envoy passes a name with
// underscores or dots on as the client sent it, and the API may read it
// in place of the one Usher set.
func TestEnvoyRemovesTheUsherHeadersSpeltWithUnderscoresOrDots(t *testing.T) {
	w := startEnvoy(t, headerConfig(), nil)
	forged := map[string]string{"x-user-id": "bob"}
	var want []string
	for _, name := range []string{"x-usher-subject", "x-usher-role", "x-usher-scope", "x-usher-revision", "x-usher-reason"} {
		rest := strings.TrimPrefix(name, "x-usher-")
		spellings := append([]string{"x_usher_" + rest, "x_usher-" + rest, "x-usher_" + rest}, dotted([]string{name})...)
		for _, s := range spellings {
			forged[s] = "forged"
		}
		want = append(want, spellings...)
	}
	forged["x_usher_subject"] = "user:alice"
	forged["x.usher.subject"] = "user:alice"
	a := w.ask(t, httpRequest("GET", "/calls/meeting/8", forged))
	if a.code != codes.OK || a.headers["x-usher-subject"] != "user:bob" {
		t.Fatalf("answer = %+v, want bob allowed", a)
	}
	var missing []string
	for _, h := range want {
		if !slices.Contains(a.removed, h) {
			missing = append(missing, h)
		}
	}
	if len(missing) > 0 {
		t.Errorf("headers to remove lack %v", missing)
	}
	for _, h := range []string{"x-usher-subject", "x-usher-role", "x-usher-scope", "x-usher-revision"} {
		if slices.Contains(a.removed, h) {
			t.Errorf("headers to remove = %v: %s is Usher's own, set on the request", a.removed, h)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func TestEnvoyDenies(t *testing.T) {
	w := startEnvoy(t, headerConfig(), nil)
	tests := []struct {
		name    string
		req     *authv3.CheckRequest
		code    codes.Code
		http    int
		reason  string
		message string
	}{
		{"a subject without a grant is denied NO_GRANT",
			httpRequest("POST", "/calls/meeting/7/join", map[string]string{"x-user-id": "erin"}),
			codes.PermissionDenied, 403, "NO_GRANT", "user:erin holds no grant of join-call on call:meeting:7"},
		{"a host of one call holds nothing on another",
			httpRequest("GET", "/calls/meeting/8", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_GRANT", "user:alice holds no grant of read-call on call:meeting:8"},
		{"a block at the account overrides a call grant: BLOCKED",
			httpRequest("POST", "/calls/meeting/7/join", map[string]string{"x-user-id": "carol"}),
			codes.PermissionDenied, 403, "BLOCKED", "user:carol is blocked from join-call on account:globex"},
		{"an unregistered call is denied UNKNOWN_RESOURCE",
			httpRequest("POST", "/calls/meeting/99/join", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "UNKNOWN_RESOURCE", "call:meeting:99 is not registered"},
		{"a method no rule names is denied NO_ROUTE",
			httpRequest("DELETE", "/calls/meeting/7", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches DELETE /calls/meeting/7"},
		{"a path no rule names is denied NO_ROUTE",
			httpRequest("GET", "/admin/users", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /admin/users"},
		{"a trailing slash is another path",
			httpRequest("GET", "/calls/meeting/7/", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/meeting/7/"},
		{"a double slash is an empty segment",
			httpRequest("GET", "/calls//meeting/7", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls//meeting/7"},
		{"a leading double slash is an empty segment",
			httpRequest("GET", "//calls/meeting/7", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET //calls/meeting/7"},
		{"a dot segment matches no rule",
			httpRequest("GET", "/calls/./meeting/7", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/./meeting/7"},
		{"a fragment Envoy did not strip fills no variable",
			httpRequest("GET", "/calls/meeting/7#/../8", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/meeting/7#/../8"},
		{"a fragment ends no literal",
			httpRequest("POST", "/calls/meeting/7/join#x", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches POST /calls/meeting/7/join#x"},
		{"a dot-dot with a path parameter, which Tomcat reads as dot-dot, matches no rule",
			httpRequest("GET", "/calls/..;/8", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/..;/8"},
		{"a dot-dot segment matches no rule",
			httpRequest("GET", "/calls/meeting/../7", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/meeting/../7"},
		{"an escaped dot-dot segment matches no rule",
			httpRequest("GET", "/calls/%2e%2e/7", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/%2e%2e/7"},
		{"an escaped slash does not make two segments one",
			httpRequest("GET", "/calls/meeting/7%2F8", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/meeting/7%2F8"},
		{"a variable with a colon matches no rule, which would read it as two parts of the name",
			httpRequest("GET", "/calls/meeting:7/8", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/meeting:7/8"},
		{"an escaped colon in a variable matches no rule either",
			httpRequest("GET", "/calls/meeting/7%3A8", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/meeting/7%3A8"},
		{"a variable with a semicolon matches no rule, which the API may read as a path parameter",
			httpRequest("GET", "/calls/meeting/7;x", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/meeting/7;x"},
		{"a variable with an escaped backslash matches no rule, which the API may read as a slash",
			httpRequest("GET", "/calls/meeting/x%5C..%5C7", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/meeting/x%5C..%5C7"},
		{"a bad escape matches no rule",
			httpRequest("GET", "/calls/meeting/7%zz", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches GET /calls/meeting/7%zz"},
		{"a method of any length is clipped in the denial",
			httpRequest(strings.Repeat("A", 100_000), "/calls/meeting/7", map[string]string{"x-user-id": "alice"}),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches AAAAAAAA"},
		{"a request without HTTP attributes is denied NO_ROUTE",
			&authv3.CheckRequest{Attributes: &authv3.AttributeContext{}},
			codes.PermissionDenied, 403, "NO_ROUTE", "not an HTTP request: Usher maps only HTTP requests to checks"},
		{"a missing subject header is 401",
			httpRequest("POST", "/calls/meeting/7/join", map[string]string{"x-other": "alice"}),
			codes.Unauthenticated, 401, "UNAUTHENTICATED", "header x-user-id: missing"},
		{"an empty subject header is 401",
			httpRequest("POST", "/calls/meeting/7/join", map[string]string{"x-user-id": ""}),
			codes.Unauthenticated, 401, "UNAUTHENTICATED", "header x-user-id: missing"},
		{"a subject header sent twice, which Envoy joins with a comma, is 401",
			httpRequest("POST", "/calls/meeting/7/join", map[string]string{"x-user-id": "mallory,alice"}),
			codes.Unauthenticated, 401, "UNAUTHENTICATED", "header x-user-id: holds a comma, as a header sent twice does once Envoy joins it"},
		{"a subject that is no name is 401",
			httpRequest("POST", "/calls/meeting/7/join", map[string]string{"x-user-id": "al\x01ice"}),
			codes.Unauthenticated, 401, "UNAUTHENTICATED", `subject "user:al\x01ice"`},
		{"the subject is checked before the route, so it is 401 on any path",
			httpRequest("GET", "/admin/users", nil),
			codes.Unauthenticated, 401, "UNAUTHENTICATED", "header x-user-id: missing"},
		{"a path that makes no resource name is 400",
			httpRequest("GET", "/calls/meeting/"+strings.Repeat("9", 300), map[string]string{"x-user-id": "alice"}),
			codes.InvalidArgument, 400, "INVALID_RESOURCE", `resource "call:meeting:99999`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := w.ask(t, tt.req)
			if a.code != tt.code || a.http != tt.http || a.reason != tt.reason {
				t.Fatalf("answer = %s %d %s (%q), want %s %d %s", a.code, a.http, a.reason, a.message, tt.code, tt.http, tt.reason)
			}
			if !strings.HasPrefix(a.message, tt.message) {
				t.Errorf("message = %q, want it to start with %q", a.message, tt.message)
			}
			if a.headers["x-usher-reason"] != tt.reason || a.headers["content-type"] != "application/json" {
				t.Errorf("headers = %v", a.headers)
			}
			if _, ok := a.headers["x-usher-role"]; ok {
				t.Errorf("a denial carries a role: %v", a.headers)
			}
			if strings.Contains(a.body, "spam") {
				t.Errorf("the body %q shows the block's reason text, a moderator's note", a.body)
			}
			if len(a.body) > 1024 || len(a.message) > 1024 {
				t.Errorf("the body is %d bytes, its message %d: long values must be clipped", len(a.body), len(a.message))
			}
		})
	}
	// A denial decided by Check says at which revision.
	a := w.ask(t, httpRequest("POST", "/calls/meeting/7/join", map[string]string{"x-user-id": "erin"}))
	if a.headers["x-usher-revision"] != revisionOf(w) {
		t.Errorf("x-usher-revision = %q, want %s", a.headers["x-usher-revision"], revisionOf(w))
	}
}

// A variable that an API behind Envoy would read as more than the segment
// Usher checked matches no rule (403 NO_ROUTE), even for the holder of a
// resource so named, which anyone who may register calls may register: a
// '%' left after decoding was escaped twice, and decoding the path again
// reads /calls/meeting/x%252F..%252F8 as call 8; a '?' or '#' starts a
// query or a fragment when the decoded path is read again, and
// /calls/meeting/8%3Fx reads as call 8.
func TestEnvoyRefusesAVariableReadAgainAsAnother(t *testing.T) {
	for _, tc := range []struct {
		planted []string
		paths   []string
	}{
		{[]string{"call:meeting:x%2F..%2F8"}, []string{"/calls/meeting/x%252F..%252F8", "/calls/meeting/x%25252F..%25252F8", "/calls/meeting/100%25"}},
		{[]string{"call:meeting:8?x", "call:meeting:8#x"}, []string{"/calls/meeting/8%3Fx", "/calls/meeting/8%3fx", "/calls/meeting/8%23x"}},
	} {
		engine := newEnvoyEngine(t)
		by := authz.Author{Caller: "test"}
		for _, planted := range tc.planted {
			if _, err := engine.PutResource(t.Context(), by, authz.Resource{Name: planted, Parent: globex}); err != nil {
				t.Fatal(err)
			}
			if _, err := engine.Grant(t.Context(), by, authz.Grant{Subject: "user:erin", Role: "host", Resource: planted}); err != nil {
				t.Fatal(err)
			}
		}
		w := serveEnvoy(t, engine, headerConfig(), nil)
		erin := map[string]string{"x-user-id": "erin"}
		for _, path := range tc.paths {
			a := w.ask(t, httpRequest("GET", path, erin))
			if a.code != codes.PermissionDenied || a.http != 403 || a.reason != "NO_ROUTE" || a.message != "no rule matches GET "+path {
				t.Errorf("GET %s = %s %d %s (%q); want 403 NO_ROUTE naming the path", path, a.code, a.http, a.reason, a.message)
			}
		}
		if a := w.ask(t, httpRequest("GET", "/calls/meeting/8", erin)); a.reason != "NO_GRANT" {
			t.Errorf("GET /calls/meeting/8 as erin = %+v; want NO_GRANT", a)
		}
	}
}

// An API that ignores case in its routes (ASP.NET's, Express's by
// default) or in methods (Flask's) serves GET /calls/MEETING/7 as
// GET /calls/meeting/{id}, and "delete" as DELETE. A request that would
// match an earlier rule but for case is refused (403 NO_ROUTE, naming the
// rule), even when a later rule matches it: else it would be checked as
// the later rule, here on a resource anyone who may register calls may
// register and hold.
func TestEnvoyRefusesARequestAnEarlierRuleMatchesButForCase(t *testing.T) {
	engine := newEnvoyEngine(t)
	by := authz.Author{Caller: "test"}
	for _, planted := range []string{"call:MEETING:7", "call:meet\u0131ng:7", "call:meet\u0130ng:7"} {
		if _, err := engine.PutResource(t.Context(), by, authz.Resource{Name: planted, Parent: globex}); err != nil {
			t.Fatal(err)
		}
		if _, err := engine.Grant(t.Context(), by, authz.Grant{Subject: "user:erin", Role: "host", Resource: planted}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := headerConfig()
	cfg.Rules = []server.EnvoyRule{
		{Method: "GET", Path: "/calls/meeting/{id}", Resource: "call:meeting:{id}", Permission: "join-call"},
		{Method: "DELETE", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "call.manage"},
		{Method: "*", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "read-call"},
	}
	w := serveEnvoy(t, engine, cfg, nil)
	before := engine.Index().Revision()
	for _, tt := range []struct {
		name    string
		req     *authv3.CheckRequest
		message string
	}{
		{"a literal in another case", requestAs("erin", "GET", "/calls/MEETING/7"),
			"GET /calls/MEETING/7 differs only in case from rules[0] (GET /calls/meeting/{id})"},
		{"a literal in mixed case", requestAs("erin", "GET", "/calls/Meeting/7"),
			"GET /calls/Meeting/7 differs only in case from rules[0] (GET /calls/meeting/{id})"},
		{"a method in lower case", requestAs("bob", "delete", "/calls/meeting/7"),
			"delete /calls/meeting/7 differs only in case from rules[1] (DELETE /calls/{type}/{id})"},
		{"a method in mixed case", requestAs("bob", "Get", "/calls/meeting/7"),
			"Get /calls/meeting/7 differs only in case from rules[0] (GET /calls/meeting/{id})"},
		// Java's equalsIgnoreCase and Python's re.IGNORECASE take the
		// dotless and the dotted i for an i, though Go's EqualFold does not.
		{"a literal with a dotless i", requestAs("erin", "GET", "/calls/meet%C4%B1ng/7"),
			"GET /calls/meet%C4%B1ng/7 differs only in case from rules[0] (GET /calls/meeting/{id})"},
		{"a literal with a dotted capital I", requestAs("erin", "GET", "/calls/meet\u0130ng/7"),
			"GET /calls/meet\u0130ng/7 differs only in case from rules[0] (GET /calls/meeting/{id})"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantDenial(t, w.ask(t, tt.req), codes.PermissionDenied, 403, "NO_ROUTE", tt.message)
		})
	}
	if rev := engine.Index().Revision(); rev != before {
		t.Errorf("revision = %d after the refusals, want %d: nothing written", rev, before)
	}
	// What no earlier rule matches in any case is the later rule's.
	for _, tt := range []struct{ user, method, path, role string }{
		{"erin", "POST", "/calls/MEETING/7", "host"},
		{"bob", "GET", "/calls/meeting/8", "member"},
		{"bob", "PUT", "/calls/meeting/8", "member"},
	} {
		if a := w.ask(t, requestAs(tt.user, tt.method, tt.path)); a.code != codes.OK || a.headers["x-usher-role"] != tt.role {
			t.Errorf("%s %s as %s = %+v; want it allowed as %s", tt.method, tt.path, tt.user, a, tt.role)
		}
	}
}

func TestEnvoySeesWritesAsTheyCommit(t *testing.T) {
	w := startEnvoy(t, headerConfig(), nil)
	join := httpRequest("POST", "/calls/meeting/8/join", map[string]string{"x-user-id": "erin"})
	if a := w.ask(t, join); a.reason != "NO_GRANT" {
		t.Fatalf("before the grant: %+v", a)
	}
	rev, err := w.engine.Grant(t.Context(), authz.Author{Caller: "test"}, authz.Grant{Subject: "user:erin", Role: "member", Resource: meeting8})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.engine.Await(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	a := w.ask(t, join)
	if a.code != codes.OK || a.headers["x-usher-revision"] != strconv.FormatUint(uint64(rev), 10) {
		t.Fatalf("after the grant at revision %d: %+v", rev, a)
	}
	rev, _, err = w.engine.Block(t.Context(), authz.Author{Caller: "test"}, authz.Block{Subject: "user:erin", Resource: meeting8})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.engine.Await(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	if a := w.ask(t, join); a.reason != "BLOCKED" {
		t.Fatalf("after a block of everything: %+v", a)
	}
}

// heldFeed is a backend whose feed to the engine can be held back and then
// cut with ErrCompacted, as a replica's is when it falls behind the change
// log's retention: the engine then loads a fresh index in place of its own.
type heldFeed struct {
	*memory.Memory
	held    atomic.Bool
	holding chan struct{} // gets a value once a change set is held back
	release chan struct{}
}

func (b *heldFeed) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		for cs, err := range b.Memory.Watch(ctx, after) {
			if err == nil && b.held.Load() {
				select {
				case b.holding <- struct{}{}:
				default:
				}
				select {
				case <-b.release:
					yield(authz.ChangeSet{}, authz.ErrCompacted)
				case <-ctx.Done():
				}
				return
			}
			if !yield(cs, err) {
				return
			}
		}
	}
}

func TestEnvoyAnswersFromTheIndexAResyncPutsInPlace(t *testing.T) {
	feed := &heldFeed{Memory: memory.New(), holding: make(chan struct{}, 1), release: make(chan struct{})}
	w := serveEnvoy(t, newEnvoyEngineOn(t, feed), headerConfig(), nil)
	stale := w.engine.Index()
	join := httpRequest("POST", "/calls/meeting/8/join", map[string]string{"x-user-id": "erin"})
	if a := w.ask(t, join); a.reason != "NO_GRANT" {
		t.Fatalf("before the grant: %+v", a)
	}

	// Another replica grants while this one's feed is held, then the feed
	// is cut, and this one reloads.
	feed.held.Store(true)
	replica, err := authz.Start(t.Context(), feed.Memory, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	rev, err := replica.Grant(t.Context(), authz.Author{Caller: "test"}, authz.Grant{Subject: "user:erin", Role: "member", Resource: meeting8})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-feed.holding:
	case <-time.After(10 * time.Second):
		t.Fatalf("the engine's feed never received the replica's grant")
	}
	feed.held.Store(false)
	close(feed.release)
	for deadline := time.Now().Add(10 * time.Second); w.engine.Resyncs() == 0 || w.engine.Index().Revision() < rev; {
		if time.Now().After(deadline) {
			t.Fatalf("no resync to revision %d: %d resyncs, at revision %d", rev, w.engine.Resyncs(), w.engine.Index().Revision())
		}
		time.Sleep(10 * time.Millisecond)
	}

	if d, _, err := stale.Check(authz.Query{Subject: "user:erin", Permission: "join-call", Resource: meeting8}); err != nil || d.Allowed {
		t.Fatalf("the replaced index answers %+v, %v: the test proves nothing", d, err)
	}
	a := w.ask(t, join)
	if a.code != codes.OK || a.headers["x-usher-revision"] != strconv.FormatUint(uint64(rev), 10) {
		t.Fatalf("after the resync to revision %d: %+v", rev, a)
	}
}

func TestEnvoyIsServedOnlyWithWithEnvoy(t *testing.T) {
	const service = "envoy.service.auth.v3.Authorization"
	health := func(conn *grpc.ClientConn) (healthpb.HealthCheckResponse_ServingStatus, error) {
		resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
		return resp.GetStatus(), err
	}

	w := startEnvoy(t, headerConfig(), nil)
	if got, err := health(w.conn); err != nil || got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of %s with WithEnvoy: %v, %v; want SERVING", service, got, err)
	}

	srv := server.New(newEnvoyEngine(t), slog.New(slog.DiscardHandler))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = authv3.NewAuthorizationClient(conn).Check(t.Context(), httpRequest("GET", "/calls/meeting/7", map[string]string{"x-user-id": "alice"}))
	wantCode(t, err, codes.Unimplemented)
	_, err = health(conn)
	wantCode(t, err, codes.NotFound)
}

func TestEnvoyReadsRawHeaders(t *testing.T) {
	w := startEnvoy(t, headerConfig(), nil)
	raw := func(kv ...string) *authv3.CheckRequest {
		req := httpRequest("POST", "/calls/meeting/7/join", nil)
		hm := &corev3.HeaderMap{}
		for i := 0; i < len(kv); i += 2 {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		req.Attributes.Request.Http.HeaderMap = hm
		return req
	}
	if a := w.ask(t, raw(":path", "/calls/meeting/7/join", "x-user-id", "alice")); a.code != codes.OK || a.headers["x-usher-subject"] != "user:alice" {
		t.Errorf("encode_raw_headers: %+v", a)
	}
	if a := w.ask(t, raw("x-user-id", "erin", "x-user-id", "alice")); a.http != 401 || a.message != "header x-user-id: sent 2 times" {
		t.Errorf("a subject header sent twice: %+v", a)
	}
	// Raw headers keep a header sent twice apart: a comma in one is a
	// character of the subject's id.
	if a := w.ask(t, raw("x-user-id", "erin,alice")); a.reason != "NO_GRANT" || a.message != "user:erin,alice holds no grant of join-call on call:meeting:7" {
		t.Errorf("a raw subject header holding a comma: %+v", a)
	}
}

// The JWT tests' keys.
var (
	hmacSecret = []byte("0123456789abcdef0123456789abcdef-usher")
	rsaKeys    = sync.OnceValues(func() (*rsa.PrivateKey, *rsa.PrivateKey) {
		a, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		b, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return a, b
	})
)

func publicPEM(t *testing.T, k *rsa.PrivateKey) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: publicDER(t, k)})
}

func publicDER(t *testing.T, k *rsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return s
}

// claims are valid claims for sub, from a minute ago to a minute ahead.
func claims(sub string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"sub": sub, "iss": "https://id.example.com", "aud": "usher", "iat": now.Add(-time.Minute).Unix(),
		"nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Minute).Unix()}
}

// unsigned is a token of claims whose header names alg and whose
// signature is empty.
func unsigned(t *testing.T, alg string, claims jwt.MapClaims) string {
	t.Helper()
	header, err := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
}

// critical is a token signed with hmacSecret whose header lists ext in
// crit (none for "") and carries claims.
func critical(t *testing.T, ext string, claims jwt.MapClaims) string {
	t.Helper()
	token := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	token.Header["crit"] = []string{}
	if ext != "" {
		token.Header["crit"] = []string{ext}
		token.Header[ext] = false
	}
	s, err := token.SignedString(hmacSecret)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return s
}

// criticalAs is a token signed with hmacSecret whose header's crit is
// crit, of any JSON type.
func criticalAs(t *testing.T, crit any, claims jwt.MapClaims) string {
	t.Helper()
	token := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	token.Header["crit"] = crit
	s, err := token.SignedString(hmacSecret)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return s
}

func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func TestEnvoyJWTHS256(t *testing.T) {
	cfg := headerConfig()
	cfg.Subject = server.EnvoySubject{Prefix: "user:", JWT: &server.EnvoyJWT{
		Algorithm: "HS256", KeyFile: writeFile(t, "jwt.secret", append(slices.Clone(hmacSecret), '\n')),
		Issuer: "https://id.example.com", Audience: "usher",
	}}
	w := startEnvoy(t, cfg, nil)
	join := func(authorization string) *authv3.CheckRequest {
		h := map[string]string{}
		if authorization != "" {
			h["authorization"] = authorization
		}
		return httpRequest("POST", "/calls/meeting/7/join", h)
	}
	hs := func(c jwt.MapClaims) string { return "Bearer " + sign(t, jwt.SigningMethodHS256, hmacSecret, c) }

	a := w.ask(t, join(hs(claims("alice"))))
	if a.code != codes.OK || a.headers["x-usher-subject"] != "user:alice" || a.headers["x-usher-role"] != "host" {
		t.Fatalf("a valid token: %+v", a)
	}
	if a := w.ask(t, join(hs(with(claims("alice"), "exp", int64(253402300799))))); a.code != codes.OK {
		t.Errorf("a token valid until the last second of the year 9999: %+v", a)
	}
	if a := w.ask(t, join(hs(with(claims("alice"), "aud", []string{"billing", "usher"})))); a.code != codes.OK {
		t.Errorf("a token for several audiences, the configured one among them: %+v", a)
	}
	if a := w.ask(t, join("bearer "+sign(t, jwt.SigningMethodHS256, hmacSecret, claims("erin")))); a.reason != "NO_GRANT" {
		t.Errorf("a valid token of a subject without a grant (and a lower-case scheme): %+v", a)
	}

	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("alice"))
	refusals := []struct {
		name, authorization, message string
	}{
		{"no token", "", "header authorization: missing"},
		{"a bad signature", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-another"), claims("alice")), "signature is invalid"},
		{"an expired token", hs(with(claims("alice"), "exp", time.Now().Add(-time.Second).Unix())), "token is expired"},
		{"a token not valid yet", hs(with(claims("alice"), "nbf", time.Now().Add(time.Hour).Unix())), "token is not valid yet"},
		{"a token without exp", hs(with(claims("alice"), "exp", nil)), "exp claim is required"},
		{"another issuer", hs(with(claims("alice"), "iss", "https://evil.example.com")), "token has invalid issuer"},
		{"another audience", hs(with(claims("alice"), "aud", "billing")), "token has invalid audience"},
		{"no subject claim", hs(with(claims("alice"), "sub", nil)), `the token has no string claim "sub"`},
		{"a subject claim that is not a string", hs(with(claims("alice"), "sub", 42)), `the token has no string claim "sub"`},
		{"a token issued in the future", hs(with(claims("alice"), "iat", time.Now().Add(time.Hour).Unix())), "token used before issued"},
		{"no issuer where one is configured", hs(with(claims("alice"), "iss", nil)), "iss claim is required"},
		{"no audience where one is configured", hs(with(claims("alice"), "aud", nil)), "aud claim is required"},
		{"an empty audience where one is configured", hs(with(claims("alice"), "aud", []string{})), "aud claim is required"},
		{"alg none", "Bearer " + none, "signing method none is invalid"},
		{"alg NONE", "Bearer " + unsigned(t, "NONE", claims("alice")), "signing method (alg) is unavailable"},
		{"alg HS256 without a signature", "Bearer " + unsigned(t, "HS256", claims("alice")), "signature is invalid"},
		{"an RS256 token where HS256 is configured", "Bearer " + sign(t, jwt.SigningMethodRS256, func() *rsa.PrivateKey { k, _ := rsaKeys(); return k }(), claims("alice")), "signing method RS256 is invalid"},
		{"another scheme", "Basic YWxpY2U6c2VjcmV0", `want a bearer token, got scheme "Basic"`},
		{"not a JWT", "Bearer not.a.jwt", "token is malformed"},
		{"a subject claim that makes no subject name", hs(with(claims("alice"), "sub", "al\x01ice")), `subject "user:al\x01ice"`},
		// RFC 7515, 4.1.11: a token whose crit lists an extension the
		// recipient does not understand is invalid, and Usher knows none.
		{"a critical extension", "Bearer " + critical(t, "b64", with(claims("alice"), "b64", false)), `critical header extensions ["b64"]`},
		{"an empty crit", "Bearer " + critical(t, "", claims("alice")), "critical header extensions []"},
		{"a crit of null", "Bearer " + criticalAs(t, nil, claims("alice")), "critical header extensions null"},
		{"a crit that is a number", "Bearer " + criticalAs(t, 1, claims("alice")), "critical header extensions 1"},
		// The parser reads time claims as int64 seconds: past them, a
		// number would overflow into the far past and pass.
		{"a not-before past int64 seconds", hs(with(claims("alice"), "nbf", 1e19)), "claim nbf 1e+19 is out of range"},
		{"a not-before of 2^63 seconds", hs(with(claims("alice"), "nbf", float64(math.MaxInt64))), "claim nbf 9.223372036854776e+18 is out of range"},
		{"an issued-at of 1e300", hs(with(claims("alice"), "iat", 1e300)), "claim iat 1e+300 is out of range"},
		{"a not-before of -1e19", hs(with(claims("alice"), "nbf", -1e19)), "claim nbf -1e+19 is out of range: a time claim counts at most 253402300799 seconds"},
		{"an expiry of 1e19", hs(with(claims("alice"), "exp", 1e19)), "token is expired"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			a := w.ask(t, join(tt.authorization))
			if a.code != codes.Unauthenticated || a.http != 401 || a.reason != "UNAUTHENTICATED" {
				t.Fatalf("answer = %+v, want 401 UNAUTHENTICATED", a)
			}
			if !strings.Contains(a.message, tt.message) {
				t.Errorf("message = %q, want it to say %q", a.message, tt.message)
			}
			// RFC 6750, 3.1: a request that presented no token gets no
			// error code.
			want := `Bearer error="invalid_token"`
			if tt.authorization == "" {
				want = "Bearer"
			}
			if a.headers["www-authenticate"] != want {
				t.Errorf("www-authenticate = %q, want %q", a.headers["www-authenticate"], want)
			}
		})
	}
}

func TestEnvoyJWTRS256(t *testing.T) {
	key, other := rsaKeys()
	pub := publicPEM(t, key)
	t.Setenv("USHER_TEST_JWT_KEY", string(pub))
	cfg := headerConfig()
	cfg.Subject = server.EnvoySubject{Prefix: "user:", JWT: &server.EnvoyJWT{
		Algorithm: "RS256", KeyEnv: "USHER_TEST_JWT_KEY", Header: "x-id-token", Claim: "email",
	}}
	w := startEnvoy(t, cfg, nil)
	join := func(token string) *authv3.CheckRequest {
		return httpRequest("POST", "/calls/meeting/7/join", map[string]string{"x-id-token": token})
	}
	c := with(claims(""), "email", "alice")
	if a := w.ask(t, join(sign(t, jwt.SigningMethodRS256, key, c))); a.code != codes.OK || a.headers["x-usher-subject"] != "user:alice" {
		t.Fatalf("a valid bare token in a custom header, subject from a custom claim: %+v", a)
	}
	for _, tt := range []struct{ name, token, message string }{
		{"signed by another key", sign(t, jwt.SigningMethodRS256, other, c), "verification error"},
		{"HS256 signed with the public key as the secret", sign(t, jwt.SigningMethodHS256, pub, c), "signing method HS256 is invalid"},
		{"expired", sign(t, jwt.SigningMethodRS256, key, with(c, "exp", time.Now().Add(-time.Minute).Unix())), "token is expired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if a := w.ask(t, join(tt.token)); a.http != 401 || !strings.Contains(a.message, tt.message) {
				t.Errorf("answer = %+v, want 401 saying %q", a, tt.message)
			}
		})
	}
}

// An issuer's clock a little ahead of Usher's, or a little behind, need not
// refuse its fresh tokens, nor accept its stale ones for long: leeway
// widens exp, nbf and iat by as much as it says, and no more.
func TestEnvoyJWTLeeway(t *testing.T) {
	cfg := headerConfig()
	cfg.Subject = server.EnvoySubject{Prefix: "user:", JWT: &server.EnvoyJWT{
		Algorithm: "HS256", KeyFile: writeFile(t, "jwt.secret", hmacSecret), Leeway: "30s",
	}}
	w := startEnvoy(t, cfg, nil)
	join := func(c jwt.MapClaims) *authv3.CheckRequest {
		return httpRequest("POST", "/calls/meeting/7/join", map[string]string{"authorization": "Bearer " + sign(t, jwt.SigningMethodHS256, hmacSecret, c)})
	}
	now := time.Now()
	for _, tt := range []struct {
		name    string
		claims  jwt.MapClaims
		message string // "" when allowed
	}{
		{"issued 10s ahead", with(claims("alice"), "iat", now.Add(10*time.Second).Unix(), "nbf", now.Add(10*time.Second).Unix()), ""},
		{"expired 10s ago", with(claims("alice"), "exp", now.Add(-10*time.Second).Unix()), ""},
		{"issued a minute ahead", with(claims("alice"), "iat", now.Add(time.Minute).Unix()), "token used before issued"},
		{"valid from a minute ahead", with(claims("alice"), "nbf", now.Add(time.Minute).Unix()), "token is not valid yet"},
		{"expired a minute ago", with(claims("alice"), "exp", now.Add(-time.Minute).Unix()), "token is expired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := w.ask(t, join(tt.claims))
			if tt.message == "" {
				if a.code != codes.OK {
					t.Errorf("answer = %+v, want it allowed", a)
				}
				return
			}
			if a.code != codes.Unauthenticated || a.http != 401 || a.reason != "UNAUTHENTICATED" || !strings.Contains(a.message, tt.message) {
				t.Errorf("answer = %+v, want 401 UNAUTHENTICATED saying %q", a, tt.message)
			}
		})
	}
}

// A token's JSON, decoded into claims, takes many times its size in memory:
// a large token is decoded only once its signature verifies, so that a
// client without the key spends the server a hash of its bytes, no more.
// One that the key's holder signed is decoded and answered as any other.
func TestEnvoyJWTDecodesALargeTokenOnlyOnceSigned(t *testing.T) {
	cfg := headerConfig()
	cfg.Subject = server.EnvoySubject{Prefix: "user:", JWT: &server.EnvoyJWT{
		Algorithm: "HS256", KeyFile: writeFile(t, "jwt.secret", hmacSecret),
	}}
	w := startEnvoy(t, cfg, nil)
	large := claims("alice")
	for i := range 100_000 {
		large["k"+strconv.FormatInt(int64(i), 36)] = 0
	}
	join := func(token string) *authv3.CheckRequest {
		return httpRequest("POST", "/calls/meeting/7/join", map[string]string{"authorization": "Bearer " + token})
	}

	forged := sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-another"), large)
	// The process's allocations count whatever else runs beside the call:
	// each refusal is measured apart, and the least of them counts.
	per := uint64(math.MaxUint64)
	for range 5 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		a := w.ask(t, join(forged))
		runtime.ReadMemStats(&after)
		if a.code != codes.Unauthenticated || a.http != 401 || !strings.Contains(a.message, "signature is invalid") {
			t.Fatalf("a %d-byte token signed by another key: %+v; want 401 saying the signature is invalid", len(forged), a)
		}
		per = min(per, after.TotalAlloc-before.TotalAlloc)
	}
	// Client and server both: the request encoded, sent and read, and the
	// signature's hash. Decoding the claims took 17 times the token.
	if per > 6*uint64(len(forged)) {
		t.Errorf("each refusal of a %d-byte forged token allocated %d bytes; want at most 6 times the token", len(forged), per)
	}

	if a := w.ask(t, join(sign(t, jwt.SigningMethodHS256, hmacSecret, large))); a.code != codes.OK || a.headers["x-usher-subject"] != "user:alice" {
		t.Errorf("a large token signed by the key: %+v; want it allowed as user:alice", a)
	}
}

// failingChecker fails every check with err.
type failingChecker struct{ err error }

func (c failingChecker) Check(authz.Query) (authz.Decision, authz.Revision, error) {
	return authz.Decision{}, 0, c.err
}

func TestEnvoyCheckerErrorsAreStatuses(t *testing.T) {
	cfg := headerConfig()
	cfg.Rules = append(cfg.Rules, server.EnvoyRule{Method: "POST", Path: "/calls/{type}/{id}/fly", Resource: "call:{type}:{id}", Permission: "fly"})
	w := startEnvoy(t, cfg, nil)
	_, err := w.client.Check(t.Context(), httpRequest("POST", "/calls/meeting/7/fly", map[string]string{"x-user-id": "alice"}))
	st := wantCode(t, err, codes.InvalidArgument)
	if want := `rules[3].permission "fly": permission is not declared in the catalog`; st.Message() != want {
		t.Errorf("message = %q, want %q", st.Message(), want)
	}

	down := startEnvoy(t, headerConfig(), failingChecker{&authz.Error{Code: authz.Unavailable, Reason: "the index is reloading"}})
	_, err = down.client.Check(t.Context(), httpRequest("GET", "/calls/meeting/7", map[string]string{"x-user-id": "alice"}))
	wantCode(t, err, codes.Unavailable)
}

func TestRegisterEnvoyRefuses(t *testing.T) {
	key, _ := rsaKeys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	jwtConfig := func(j server.EnvoyJWT) server.EnvoyConfig {
		cfg := headerConfig()
		cfg.Subject = server.EnvoySubject{JWT: &j}
		return cfg
	}
	tests := []struct {
		name string
		cfg  server.EnvoyConfig
		want string
	}{
		{"a config that does not validate", server.EnvoyConfig{Subject: server.EnvoySubject{Header: "x-user-id"}}, `rules "": no rules`},
		{"a key file that is not there", jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: "/nonexistent/jwt.secret"}), `subject.jwt.key_file "/nonexistent/jwt.secret"`},
		{"a short HS256 secret", jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "s", []byte("short\n"))}), "the HS256 secret is 5 bytes long; at least 32 are needed"},
		{"an RS256 public key as an HS256 secret, with which anyone could sign",
			jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "k", publicPEM(t, key))}),
			"the HS256 secret is a PEM PUBLIC KEY, which is public"},
		{"a public key as an HS256 secret with its line breaks escaped, as a variable may hold it",
			jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "k", bytes.ReplaceAll(publicPEM(t, key), []byte("\n"), []byte(`\n`)))}),
			"the HS256 secret is a PEM PUBLIC KEY, which is public"},
		{"a public key as an HS256 secret with its lines indented",
			jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "k", bytes.ReplaceAll(publicPEM(t, key), []byte("\n"), []byte("\n  ")))}),
			"the HS256 secret is a PEM PUBLIC KEY, which is public"},
		{"an RS256 public key as an HS256 secret in an issuer's JSON Web Key Set",
			jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "k", []byte(`{"keys":[{"kty":"RSA","e":"AQAB","n":"`+base64.RawURLEncoding.EncodeToString(key.PublicKey.N.Bytes())+`"}]}`))}),
			"the HS256 secret is a JSON Web Key, which is public"},
		{"an RS256 public key as an HS256 secret, one JSON Web Key",
			jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "k", []byte(`{"kty":"RSA","e":"AQAB","n":"`+base64.RawURLEncoding.EncodeToString(key.PublicKey.N.Bytes())+`"}`))}),
			"the HS256 secret is a JSON Web Key, which is public"},
		{"an RS256 public key as an HS256 secret, its DER in base64 without the PEM lines",
			jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "k", []byte(base64.StdEncoding.EncodeToString(publicDER(t, key))+"\n"))}),
			"the HS256 secret is the DER of a public key in base64, which is public"},
		{"an RS256 public key as an HS256 secret, its PEM in base64, as a Kubernetes Secret's data shows it",
			jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "k", []byte(base64.StdEncoding.EncodeToString(publicPEM(t, key))))}),
			"the HS256 secret is a PEM PUBLIC KEY in base64, which is public"},
		{"an RS256 public key as an HS256 secret, its DER in hex",
			jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "k", []byte(hex.EncodeToString(publicDER(t, key))))}),
			"the HS256 secret is the DER of a public key in hex, which is public"},
		{"a shared secret as a JSON Web Key, which is no secret's bytes",
			jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "k", []byte(`{"kty":"oct","k":"`+base64.RawURLEncoding.EncodeToString(hmacSecret)+`"}`))}),
			"the HS256 secret is a JSON Web Key of a shared secret: give the secret itself"},
		{"an RS256 public key as an HS256 secret, its DER as it is",
			jwtConfig(server.EnvoyJWT{Algorithm: "HS256", KeyFile: writeFile(t, "k", publicDER(t, key))}),
			"the HS256 secret is the DER of a public key, which is public"},
		{"an RS256 key that is not PEM", jwtConfig(server.EnvoyJWT{Algorithm: "RS256", KeyFile: writeFile(t, "k", hmacSecret)}), "not an RSA public key in PEM"},
		{"an RSA key under 2048 bits", jwtConfig(server.EnvoyJWT{Algorithm: "RS256", KeyFile: writeFile(t, "k", publicPEM(t, small))}), "the RSA key has 1024 bits"},
		{"an unset key variable", jwtConfig(server.EnvoyJWT{Algorithm: "RS256", KeyEnv: "USHER_TEST_UNSET_KEY"}), `subject.jwt.key_env "USHER_TEST_UNSET_KEY": the variable is not set`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := server.RegisterEnvoy(grpc.NewServer(), tt.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("RegisterEnvoy = %v, want an error saying %q", err, tt.want)
			}
			if strings.Contains(err.Error(), string(hmacSecret)) {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
	if err := server.RegisterEnvoy(grpc.NewServer(), jwtConfig(server.EnvoyJWT{Algorithm: "RS256", KeyFile: writeFile(t, "k", publicPEM(t, key))}), nil); err != nil {
		t.Errorf("a good RS256 key file: %v", err)
	}
}

func TestEnvoyConfigValidateNamesFieldAndValue(t *testing.T) {
	rule := server.EnvoyRule{Method: "GET", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "read-call"}
	withRule := func(change func(*server.EnvoyRule)) server.EnvoyConfig {
		r := rule
		change(&r)
		return server.EnvoyConfig{Subject: server.EnvoySubject{Header: "x-user-id"}, Rules: []server.EnvoyRule{r}}
	}
	withSubject := func(s server.EnvoySubject) server.EnvoyConfig {
		return server.EnvoyConfig{Subject: s, Rules: []server.EnvoyRule{rule}}
	}
	hs := func(j server.EnvoyJWT) *server.EnvoyJWT { return &j }
	tests := []struct {
		name         string
		cfg          server.EnvoyConfig
		field, value string
	}{
		{"a subject must come from somewhere", withSubject(server.EnvoySubject{}), "subject", ""},
		{"a header or a JWT, not both", withSubject(server.EnvoySubject{Header: "x-user-id", JWT: hs(server.EnvoyJWT{Algorithm: "HS256", KeyFile: "k"})}), "subject.header", "x-user-id"},
		{"Envoy passes header names in lower case", withSubject(server.EnvoySubject{Header: "X-User-Id"}), "subject.header", "X-User-Id"},
		{"a prefix must be a subject kind and a colon", withSubject(server.EnvoySubject{Header: "x-user-id", Prefix: "user"}), "subject.prefix", "user"},
		{"a prefix kind must be well formed", withSubject(server.EnvoySubject{Header: "x-user-id", Prefix: "User:"}), "subject.prefix", "User:"},
		{"a prefix is a kind and a colon, no part of an id", withSubject(server.EnvoySubject{Header: "x-user-id", Prefix: "user:a"}), "subject.prefix", "user:a"},
		{"only HS256 and RS256", withSubject(server.EnvoySubject{JWT: hs(server.EnvoyJWT{Algorithm: "none", KeyFile: "k"})}), "subject.jwt.algorithm", "none"},
		{"a JWT needs a key", withSubject(server.EnvoySubject{JWT: hs(server.EnvoyJWT{Algorithm: "RS256"})}), "subject.jwt.key_file", ""},
		{"a key from one place", withSubject(server.EnvoySubject{JWT: hs(server.EnvoyJWT{Algorithm: "RS256", KeyFile: "k", KeyEnv: "K"})}), "subject.jwt.key_file", "k"},
		{"a leeway is a duration", withSubject(server.EnvoySubject{JWT: hs(server.EnvoyJWT{Algorithm: "RS256", KeyFile: "k", Leeway: "30"})}), "subject.jwt.leeway", "30"},
		{"a leeway is not negative", withSubject(server.EnvoySubject{JWT: hs(server.EnvoyJWT{Algorithm: "RS256", KeyFile: "k", Leeway: "-1s"})}), "subject.jwt.leeway", "-1s"},
		{"a leeway is at most five minutes", withSubject(server.EnvoySubject{JWT: hs(server.EnvoyJWT{Algorithm: "RS256", KeyFile: "k", Leeway: "1h"})}), "subject.jwt.leeway", "1h"},
		{"a JWT header name in lower case", withSubject(server.EnvoySubject{JWT: hs(server.EnvoyJWT{Algorithm: "RS256", KeyFile: "k", Header: "Authorization"})}), "subject.jwt.header", "Authorization"},
		{"no rules would deny everything", server.EnvoyConfig{Subject: server.EnvoySubject{Header: "x-user-id"}}, "rules", ""},
		{"a method is upper case", withRule(func(r *server.EnvoyRule) { r.Method = "get" }), "rules[0].method", "get"},
		{"a method is required", withRule(func(r *server.EnvoyRule) { r.Method = "" }), "rules[0].method", ""},
		{"a path starts with /", withRule(func(r *server.EnvoyRule) { r.Path = "calls/{id}" }), "rules[0].path", "calls/{id}"},
		{"an empty segment matches nothing", withRule(func(r *server.EnvoyRule) { r.Path = "/calls//{type}/{id}" }), "rules[0].path", "/calls//{type}/{id}"},
		{"a trailing slash is an empty segment", withRule(func(r *server.EnvoyRule) { r.Path = "/calls/{type}/{id}/" }), "rules[0].path", "/calls/{type}/{id}/"},
		{"a dot-dot segment matches nothing", withRule(func(r *server.EnvoyRule) { r.Path = "/calls/../{type}/{id}" }), "rules[0].path", "/calls/../{type}/{id}"},
		{"a variable is a whole segment", withRule(func(r *server.EnvoyRule) { r.Path = "/calls/{type}/{id}.json" }), "rules[0].path", "/calls/{type}/{id}.json"},
		{"a variable appears once", withRule(func(r *server.EnvoyRule) { r.Path = "/calls/{id}/{id}" }), "rules[0].path", "/calls/{id}/{id}"},
		{"a variable name is lower case", withRule(func(r *server.EnvoyRule) { r.Path = "/calls/{Type}/{id}" }), "rules[0].path", "/calls/{Type}/{id}"},
		{"a literal is written unescaped", withRule(func(r *server.EnvoyRule) { r.Path = "/c%61lls/{type}/{id}" }), "rules[0].path", "/c%61lls/{type}/{id}"},
		{"the resource's variables come from the path", withRule(func(r *server.EnvoyRule) { r.Resource = "call:{kind}:{id}" }), "rules[0].resource", "call:{kind}:{id}"},
		{"the resource must make a resource name", withRule(func(r *server.EnvoyRule) { r.Resource = "Call:{type}:{id}" }), "rules[0].resource", "Call:{type}:{id}"},
		{"the resource must have a type", withRule(func(r *server.EnvoyRule) { r.Resource = "{id}" }), "rules[0].resource", "{id}"},
		{"the resource's braces balance", withRule(func(r *server.EnvoyRule) { r.Resource = "call:{type:{id}" }), "rules[0].resource", "call:{type:{id}"},
		{"a stray closing brace", withRule(func(r *server.EnvoyRule) { r.Resource = "call:type}:{id}" }), "rules[0].resource", "call:type}:{id}"},
		{"a resource is required", withRule(func(r *server.EnvoyRule) { r.Resource = "" }), "rules[0].resource", ""},
		{"a method override is denied or honored", server.EnvoyConfig{Subject: server.EnvoySubject{Header: "x-user-id"}, Rules: []server.EnvoyRule{rule}, MethodOverride: "allow"}, "method_override", "allow"},
		{"a permission is well formed", withRule(func(r *server.EnvoyRule) { r.Permission = "Read Call" }), "rules[0].permission", "Read Call"},
		{"a rule an earlier one always wins over is refused",
			server.EnvoyConfig{Subject: server.EnvoySubject{Header: "x-user-id"}, Rules: []server.EnvoyRule{
				{Method: "*", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "read-call"},
				{Method: "GET", Path: "/calls/meeting/{id}", Resource: "call:meeting:{id}", Permission: "join-call"},
			}}, "rules[1].path", "/calls/meeting/{id}"},
		{"a HEAD rule after a GET rule that matches its paths is refused: each HEAD it matches is refused as a GET of the earlier",
			server.EnvoyConfig{Subject: server.EnvoySubject{Header: "x-user-id"}, Rules: []server.EnvoyRule{
				{Method: "GET", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "join-call"},
				{Method: "HEAD", Path: "/calls/meeting/{id}", Resource: "call:meeting:{id}", Permission: "read-call"},
			}}, "rules[1].path", "/calls/meeting/{id}"},
		{"a rule whose literal differs only in case from an earlier one's is refused: each request it matches is refused as the earlier one's but for case",
			server.EnvoyConfig{Subject: server.EnvoySubject{Header: "x-user-id"}, Rules: []server.EnvoyRule{
				{Method: "GET", Path: "/calls/meeting/{id}", Resource: "call:meeting:{id}", Permission: "join-call"},
				{Method: "GET", Path: "/calls/MEETING/{id}", Resource: "call:meeting:{id}", Permission: "read-call"},
			}}, "rules[1].path", "/calls/MEETING/{id}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			var e *authz.Error
			if !errors.As(err, &e) {
				t.Fatalf("Validate() = %v, want an *authz.Error", err)
			}
			if e.Code != authz.Invalid || e.Field != tt.field || e.Value != tt.value {
				t.Errorf("Validate() = %q: field %q value %q, want %q %q", err, e.Field, e.Value, tt.field, tt.value)
			}
		})
	}

	// A literal rule before a general one is how exceptions are written.
	ok := server.EnvoyConfig{Subject: server.EnvoySubject{Header: "x-user-id"}, Rules: []server.EnvoyRule{
		{Method: "GET", Path: "/calls/meeting/{id}", Resource: "call:meeting:{id}", Permission: "join-call"},
		{Method: "*", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "read-call"},
		{Method: "GET", Path: "/", Resource: "root", Permission: "read-call"},
	}}
	if err := ok.Validate(); err != nil {
		t.Errorf("a specific rule before a general one: %v", err)
	}
}

// A variable matches no segment with a ':', so a rule whose literal has one
// in its place decides what the earlier rule does not: a custom method such
// as GET /accounts/globex:export, after GET /accounts/{account}.
func TestEnvoyRuleWithAColonAfterAVariableIsMatched(t *testing.T) {
	cfg := headerConfig()
	cfg.Rules = []server.EnvoyRule{
		{Method: "GET", Path: "/accounts/{account}", Resource: "account:{account}", Permission: "read-call"},
		{Method: "GET", Path: "/accounts/globex:export", Resource: "account:globex", Permission: "call.manage"},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() = %v; want the second rule accepted, the first matching none of its requests", err)
	}
	w := startEnvoy(t, cfg, nil)
	wantDenial(t, w.ask(t, requestAs("bob", "GET", "/accounts/globex:export")), codes.PermissionDenied, 403, "NO_GRANT",
		"user:bob holds no grant of call.manage on account:globex")
	if a := w.ask(t, requestAs("bob", "GET", "/accounts/globex")); a.code != codes.OK {
		t.Errorf("GET /accounts/globex as bob = %+v; want it allowed", a)
	}
}

func TestParseEnvoyConfigIsStrict(t *testing.T) {
	_, err := server.ParseEnvoyConfig([]byte("subject: {header: x-user-id}\nrules:\n  - {method: GET, path: /, resource: root, permision: read-call}\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown field "permision"`) {
		t.Errorf("a misspelt field: %v", err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"subject: {header: x-user-id}\nrules:\n  - {method: GET, path: /, resource: root, Permission: read-call}\n", `rules[0].Permission: unknown field "Permission"`},
		{"subject: {Header: x-user-id}\nrules:\n  - {method: GET, path: /, resource: root, permission: read-call}\n", `subject.Header: unknown field "Header"`},
		{"subject: {jwt: {algorithm: HS256, key_env: K, Issuer: x}}\nrules:\n  - {method: GET, path: /, resource: root, permission: read-call}\n", `subject.jwt.Issuer: unknown field "Issuer"`},
		{"SUBJECT: {header: x-user-id}\nrules:\n  - {method: GET, path: /, resource: root, permission: read-call}\n", `SUBJECT: unknown field "SUBJECT"`},
	} {
		// encoding/json matches keys to fields whatever their case.
		if _, err := server.ParseEnvoyConfig([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("a field spelt in another case: %v; want an error saying %s", err, tc.want)
		}
	}
	_, err = server.ParseEnvoyConfig([]byte("subject: {header: x-user-id}\nsubject: {header: x-other}\n"))
	if err == nil || !strings.Contains(err.Error(), `key "subject" already set`) {
		t.Errorf("a field twice: %v", err)
	}
	// A second YAML document would be dropped unread: rules added after a
	// separator, or a subject moved to a verified JWT, would not apply.
	const first = "subject: {header: x-user-id, prefix: \"user:\"}\n" +
		"rules:\n  - {method: GET, path: \"/calls/{type}/{id}\", resource: \"call:{type}:{id}\", permission: read-call}\n"
	for _, rest := range []string{
		"---\nsubject: {jwt: {algorithm: RS256, key_file: /etc/usher/jwt-public.pem}}\n",
		"---\nrules: [unclosed\n",
		"...\n}}} not yaml {{{\n",
	} {
		path := writeFile(t, "envoy.yaml", []byte(first+rest))
		if cfg, err := server.LoadEnvoyConfig(path); err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), "one YAML document") {
			t.Errorf("a file with %q after its first document: %+v, %v; want an error naming the file", rest, cfg.Subject, err)
		}
	}
	if _, err := server.LoadEnvoyConfig(filepath.Join(t.TempDir(), "absent.yaml")); err == nil {
		t.Error("a missing file loads")
	}
	path := writeFile(t, "envoy.yaml", []byte("subject: {header: x-user-id}\nrules: []\n"))
	if _, err := server.LoadEnvoyConfig(path); err == nil || !strings.HasPrefix(err.Error(), path+": rules") {
		t.Errorf("an error names the file and the field: %v", err)
	}
}

// An API runs a HEAD by its GET route and drops only the body: a HEAD
// that an earlier GET rule matches is refused (403 NO_ROUTE, naming the
// rule), even when a later rule matches it, or carol, blocked from
// join-call, which the GET asks, would have the GET run under the later
// rule's read-call, and see its headers.
func TestEnvoyRefusesAHeadAnEarlierGetRuleMatches(t *testing.T) {
	cfg := headerConfig()
	cfg.Rules = []server.EnvoyRule{
		{Method: "GET", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "join-call"},
		{Method: "*", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "read-call"},
		{Method: "*", Path: "/accounts/{account}/calls", Resource: "account:{account}", Permission: "read-call"},
	}
	w := startEnvoy(t, cfg, nil)
	wantDenial(t, w.ask(t, requestAs("carol", "GET", "/calls/meeting/7")), codes.PermissionDenied, 403, "BLOCKED",
		"user:carol is blocked from join-call on account:globex")
	wantDenial(t, w.ask(t, requestAs("carol", "HEAD", "/calls/meeting/7")), codes.PermissionDenied, 403, "NO_ROUTE",
		"HEAD /calls/meeting/7 is a GET of rules[0] (GET /calls/{type}/{id}) to an API, which runs a HEAD by its GET route")
	// An API that ignores case in methods (Flask) runs a "head" by the GET
	// route too.
	wantDenial(t, w.ask(t, requestAs("carol", "head", "/calls/meeting/7")), codes.PermissionDenied, 403, "NO_ROUTE",
		"head /calls/meeting/7 is a GET of rules[0] (GET /calls/{type}/{id}) to an API, which runs a HEAD by its GET route")
	// What no GET rule matches is the rule's that matches it.
	for _, tt := range []struct{ user, method, path string }{{"bob", "HEAD", "/accounts/globex/calls"}, {"carol", "PUT", "/calls/meeting/7"}} {
		if a := w.ask(t, requestAs(tt.user, tt.method, tt.path)); a.code != codes.OK || a.headers["x-usher-role"] != "member" {
			t.Errorf("%s %s as %s = %+v; want it allowed as member", tt.method, tt.path, tt.user, a)
		}
	}
}

// An API that ignores case in its routes runs HEAD /CALLS/meeting/7 by
// the route of GET /calls/{type}/{id}, as it runs GET /CALLS/meeting/7:
// a HEAD that an earlier GET rule matches but for case is refused too.
func TestEnvoyRefusesAHeadAnEarlierGetRuleMatchesButForCase(t *testing.T) {
	cfg := headerConfig()
	cfg.Rules = []server.EnvoyRule{
		{Method: "GET", Path: "/calls/{type}/{id}", Resource: "call:{type}:{id}", Permission: "join-call"},
		{Method: "*", Path: "/{section}/{type}/{id}", Resource: "call:{type}:{id}", Permission: "read-call"},
	}
	w := startEnvoy(t, cfg, nil)
	wantDenial(t, w.ask(t, requestAs("carol", "GET", "/CALLS/meeting/7")), codes.PermissionDenied, 403, "NO_ROUTE",
		"GET /CALLS/meeting/7 differs only in case from rules[0] (GET /calls/{type}/{id})")
	for _, method := range []string{"HEAD", "head"} {
		wantDenial(t, w.ask(t, requestAs("carol", method, "/CALLS/meeting/7")), codes.PermissionDenied, 403, "NO_ROUTE",
			method+" /CALLS/meeting/7 is a GET of rules[0] (GET /calls/{type}/{id}) to an API, which runs a HEAD by its GET route")
	}
}

// A policy that leaves out a permission a rule of the Envoy mapping checks
// is refused: every request the rule matches would fail, refused by Envoy
// for all. INVALID_ARGUMENT (PERMISSION_IN_USE) names the permission and
// the rule, and nothing is written; the policy that keeps it applies.
func TestAPolicyKeepsThePermissionsTheEnvoyMappingChecks(t *testing.T) {
	w := startEnvoy(t, headerConfig(), nil)
	admin := usherv1.NewAdminServiceClient(w.conn)
	p := envoyPolicy
	p.Permissions = slices.DeleteFunc(slices.Clone(p.Permissions), func(d authz.Permission) bool { return d.Name == "read-call" })
	p.Roles = []authz.Role{
		{Name: "host", Scope: authz.RootName, Permissions: []string{"call.manage"}},
		{Name: "member", Scope: authz.RootName, Permissions: []string{"join-call", "send-audio"}},
	}
	rev := w.engine.Index().Revision()
	_, err := admin.ApplyPolicy(t.Context(), &usherv1.ApplyPolicyRequest{Policy: policies.FromAuthz(p)})
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), `"read-call"`) || !strings.Contains(st.Message(), "rules[1].permission") {
		t.Fatalf("ApplyPolicy without read-call = %v; want INVALID_ARGUMENT naming read-call and rules[1]", err)
	}
	wantDetails(t, st, refusal{reason: "PERMISSION_IN_USE", field: "policy.permissions", value: "read-call"})
	if got := w.engine.Index().Revision(); got != rev {
		t.Errorf("the refused policy moved the revision from %d to %d", rev, got)
	}
	if _, err := admin.ApplyPolicy(t.Context(), &usherv1.ApplyPolicyRequest{Policy: policies.FromAuthz(envoyPolicy)}); err != nil {
		t.Errorf("ApplyPolicy of the policy that keeps it: %v", err)
	}
}
