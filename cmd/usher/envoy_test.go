package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/testpki"
)

// envoyMapping is the --envoy-config of these tests: the subject from a
// header a gateway sets, one rule for joining a call.
const envoyMapping = `subject:
  header: x-user-id
  prefix: "user:"
rules:
  - {method: POST, path: "/calls/{type}/{id}/join", resource: "call:{type}:{id}", permission: join-call}
`

// joinRequest is what Envoy's ext_authz filter sends Usher for a client's
// POST /calls/default/42/join with x-user-id set.
func joinRequest(user string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: &corev3.Address{}},
		Destination: &authv3.AttributeContext_Peer{},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "7f3c", Method: "POST", Path: "/calls/default/42/join?lang=de", Host: "api.example.com",
			Scheme: "https", Protocol: "HTTP/2",
			Headers: map[string]string{":method": "POST", ":path": "/calls/default/42/join?lang=de", "x-user-id": user},
		}},
	}}
}

// headersOf reads the headers of an Envoy answer as Envoy applies them.
func headersOf(hs []*corev3.HeaderValueOption) map[string]string {
	out := map[string]string{}
	for _, h := range hs {
		out[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return out
}

func TestServeAnswersEnvoy(t *testing.T) {
	bin, dir := buildUsher(t)
	adminToken, adminHash := tokenOf(t, bin)
	envoyToken, envoyHash := tokenOf(t, bin)
	callers := filepath.Join(dir, "callers.yaml")
	testpki.WriteFile(t, callers, fmt.Appendf(nil, `callers:
  - {name: backend, kind: admin, token_sha256: %s}
  - {name: envoy, kind: check, token_sha256: %s}
`, adminHash, envoyHash))
	mapping := filepath.Join(dir, "envoy.yaml")
	testpki.WriteFile(t, mapping, []byte(envoyMapping))
	addr, _ := startServe(t, bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db"),
		"--callers", callers, "--envoy-config", mapping)

	dial := func(opts ...grpc.DialOption) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// alice is a member of every call in account:acme.
	admin := usherv1.NewAdminServiceClient(dial(grpc.WithPerRPCCredentials(bearerToken(adminToken))))
	for _, r := range []*usherv1.PutResourceRequest{{Name: "account:acme"}, {Name: "call:default:42", Parent: "account:acme"}} {
		if _, err := admin.PutResource(ctx, r); err != nil {
			t.Fatalf("PutResource(%s): %v", r.GetName(), err)
		}
	}
	granted, err := admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:alice", Role: "call-member", Resource: "account:acme"})
	if err != nil {
		t.Fatal(err)
	}

	envoy := authv3.NewAuthorizationClient(dial(grpc.WithPerRPCCredentials(bearerToken(envoyToken))))
	t.Run("an allowed request goes upstream with the decision's role and scope", func(t *testing.T) {
		resp, err := envoy.Check(ctx, joinRequest("alice"), grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("Check by the check caller envoy: %v", err)
		}
		ok := resp.GetOkResponse()
		if codes.Code(resp.GetStatus().GetCode()) != codes.OK || ok == nil {
			t.Fatalf("alice's join: %v; want OK", resp)
		}
		want := map[string]string{
			"x-usher-subject":  "user:alice",
			"x-usher-role":     "call-member",
			"x-usher-scope":    "account:acme",
			"x-usher-revision": fmt.Sprint(granted.GetRevision()),
		}
		if got := headersOf(ok.GetHeaders()); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("upstream headers = %v, want %v", got, want)
		}
	})
	t.Run("a denied request is answered 403 with the reason", func(t *testing.T) {
		resp, err := envoy.Check(ctx, joinRequest("erin"))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		denied := resp.GetDeniedResponse()
		if codes.Code(resp.GetStatus().GetCode()) != codes.PermissionDenied || denied.GetStatus().GetCode() != typev3.StatusCode_Forbidden {
			t.Fatalf("erin's join: %v; want PERMISSION_DENIED with HTTP 403", resp)
		}
		if got := headersOf(denied.GetHeaders())["x-usher-reason"]; got != "NO_GRANT" {
			t.Errorf("x-usher-reason = %q, want NO_GRANT", got)
		}
		var body struct{ Reason, Message string }
		if err := json.Unmarshal([]byte(denied.GetBody()), &body); err != nil || body.Message != "user:erin holds no grant of join-call on call:default:42" {
			t.Errorf("body %q: %v", denied.GetBody(), err)
		}
	})
	t.Run("a POST the API would run as a DELETE is refused, naming the header", func(t *testing.T) {
		req := joinRequest("alice")
		req.Attributes.Request.Http.Headers["x-http-method-override"] = "DELETE"
		resp, err := envoy.Check(ctx, req)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		denied := resp.GetDeniedResponse()
		if codes.Code(resp.GetStatus().GetCode()) != codes.PermissionDenied || denied.GetStatus().GetCode() != typev3.StatusCode_Forbidden {
			t.Fatalf("alice's overridden join: %v; want PERMISSION_DENIED with HTTP 403", resp)
		}
		if got := headersOf(denied.GetHeaders())["x-usher-reason"]; got != "METHOD_OVERRIDE" {
			t.Errorf("x-usher-reason = %q, want METHOD_OVERRIDE", got)
		}
		var body struct{ Reason, Message string }
		if err := json.Unmarshal([]byte(denied.GetBody()), &body); err != nil || body.Reason != "METHOD_OVERRIDE" ||
			body.Message != "header x-http-method-override overrides POST with DELETE" {
			t.Errorf("body %q: %v", denied.GetBody(), err)
		}
	})
	t.Run("a caller without a token is refused before any check", func(t *testing.T) {
		_, err := authv3.NewAuthorizationClient(dial()).Check(ctx, joinRequest("alice"))
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Check without a token: %v; want Unauthenticated", err)
		}
	})
}

func TestServeWithoutEnvoyConfigDoesNotServeEnvoy(t *testing.T) {
	bin, dir := buildUsher(t)
	addr, _ := startServe(t, bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db"))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = authv3.NewAuthorizationClient(conn).Check(t.Context(), joinRequest("alice"))
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Envoy's Check without --envoy-config: %v; want Unimplemented", err)
	}
}

func TestServeRefusesABrokenEnvoyConfig(t *testing.T) {
	bin, dir := buildUsher(t)
	tests := []struct {
		name, config, want string
	}{
		{"an unknown field", "subject: {header: x-user-id}\nrule: []\n", `unknown field "rule"`},
		{"a resource naming a variable the path lacks",
			"subject: {header: x-user-id}\nrules:\n  - {method: GET, path: \"/calls/{id}\", resource: \"call:{type}:{id}\", permission: read-call}\n",
			`rules[0].resource "call:{type}:{id}": {type} is not a variable of the path`},
		{"a JWT key variable that is not set",
			"subject: {jwt: {algorithm: HS256, key_env: USHER_TEST_UNSET_JWT_KEY}}\nrules:\n  - {method: GET, path: /, resource: root, permission: read-call}\n",
			`subject.jwt.key_env "USHER_TEST_UNSET_JWT_KEY": the variable is not set`},
		{"a JWT leeway of an hour",
			"subject: {jwt: {algorithm: HS256, key_env: K, leeway: 1h}}\nrules:\n  - {method: GET, path: /, resource: root, permission: read-call}\n",
			`subject.jwt.leeway "1h": must be between 0s and 5m0s`},
		{"a method override neither denied nor honored",
			"subject: {header: x-user-id}\nmethod_override: allow\nrules:\n  - {method: GET, path: /, resource: root, permission: read-call}\n",
			`method_override "allow": must be "deny" or "honor"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprintf("envoy-%d.yaml", i))
			testpki.WriteFile(t, file, []byte(tt.config))
			data := filepath.Join(dir, fmt.Sprintf("usher-%d.db", i))
			out, err := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", data, "--envoy-config", file).CombinedOutput()
			if err == nil {
				t.Fatalf("usher serve started with a broken --envoy-config; output:\n%s", out)
			}
			if want := "--envoy-config: " + file + ": " + tt.want; !strings.Contains(string(out), want) {
				t.Errorf("output does not say %q:\n%s", want, out)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("the refused server created its data file (stat: %v)", err)
			}
		})
	}
	t.Run("a file that is not there", func(t *testing.T) {
		missing := filepath.Join(dir, "absent.yaml")
		out, err := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "absent.db"), "--envoy-config", missing).CombinedOutput()
		if err == nil || !strings.Contains(string(out), missing) {
			t.Fatalf("usher serve --envoy-config %s: %v\n%s", missing, err, out)
		}
	})
}
