package server_test

import (
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/usher-authz/usher/server"
)

// overrideHeaders are the headers many frameworks take a POST's real
// method from: Express's method-override, Rails, Symfony and Laravel,
// ASP.NET's, Google's APIs.
var overrideHeaders = []string{"x-http-method-override", "x-http-method", "x-method-override"}

// wantDenial checks that a is Envoy's denial of a request: the gRPC code,
// the HTTP status, the reason in the header and the body, and the message.
func wantDenial(t *testing.T, a envoyAnswer, code codes.Code, http int, reason, message string) {
	t.Helper()
	if a.code != code || a.http != http || a.reason != reason || a.headers["x-usher-reason"] != reason {
		t.Fatalf("answer = %s %d %s (%q), headers %v; want %s %d %s", a.code, a.http, a.reason, a.message, a.headers, code, http, reason)
	}
	if a.message != message {
		t.Errorf("message = %q, want %q", a.message, message)
	}
}

// requestAs is a request of method to path by user (header x-user-id),
// with the headers kv lists as name, value pairs.
func requestAs(user, method, path string, kv ...string) *authv3.CheckRequest {
	h := map[string]string{"x-user-id": user}
	for i := 0; i < len(kv); i += 2 {
		h[kv[i]] = kv[i+1]
	}
	return httpRequest(method, path, h)
}

// The API behind Envoy may run a POST as the method a header or a _method
// query parameter names; Usher checks the request's own method, so by
// default it refuses an override of the method with another (403
// METHOD_OVERRIDE, naming where the override is), and removes the headers
// from a request it allows, in case Envoy did not send them.
func TestEnvoyRefusesAMethodOverride(t *testing.T) {
	w := startEnvoy(t, headerConfig(), nil)
	before := w.engine.Index().Revision()
	join := func(path string, kv ...string) *authv3.CheckRequest { return requestAs("alice", "POST", path, kv...) }
	refused := []struct {
		name    string
		req     *authv3.CheckRequest
		message string
	}{
		{"X-HTTP-Method-Override names another method",
			join("/calls/meeting/7/join", "x-http-method-override", "DELETE"),
			"header x-http-method-override overrides POST with DELETE"},
		{"X-HTTP-Method names another method",
			join("/calls/meeting/7/join", "x-http-method", "PUT"),
			"header x-http-method overrides POST with PUT"},
		{"X-Method-Override names another method",
			join("/calls/meeting/7/join", "x-method-override", "PATCH"),
			"header x-method-override overrides POST with PATCH"},
		{"an override in lower case is the method in upper case",
			join("/calls/meeting/7/join", "x-http-method-override", " delete "),
			"header x-http-method-override overrides POST with DELETE"},
		{"an override header sent twice, which Envoy joins with a comma",
			join("/calls/meeting/7/join", "x-http-method-override", "POST, DELETE"),
			"header x-http-method-override overrides POST with DELETE"},
		{"a _method query parameter names another method",
			join("/calls/meeting/7/join?lang=de&_method=DELETE"),
			"query parameter _method overrides POST with DELETE"},
		{"an escaped _method query parameter",
			join("/calls/meeting/7/join?%5Fmethod=d%65lete"),
			"query parameter _method overrides POST with DELETE"},
		{"PHP reads a parameter .method as _method",
			join("/calls/meeting/7/join?.method=DELETE"),
			"query parameter _method overrides POST with DELETE"},
		{"PHP reads a parameter's name up to a NUL: _method%00x is _method",
			join("/calls/meeting/7/join?_method%00x=DELETE"),
			"query parameter _method overrides POST with DELETE"},
		{"PHP decodes the good escapes of a name with a bad one",
			join("/calls/meeting/7/join?_method%00%zz=DELETE"),
			"query parameter _method overrides POST with DELETE"},
		{"an override header spelt with underscores, which CGI-style servers read as the header",
			join("/calls/meeting/7/join", "x_http_method_override", "DELETE"),
			"header x_http_method_override overrides POST with DELETE"},
		{"an override header spelt with a dash and an underscore",
			join("/calls/meeting/7/join", "x-http_method", "PUT"),
			"header x-http_method overrides POST with PUT"},
		{"an override header spelt with dots, which PHP reads as the header",
			join("/calls/meeting/7/join", "x.http.method.override", "DELETE"),
			"header x.http.method.override overrides POST with DELETE"},
		{"an override header spelt with a dot and an underscore",
			join("/calls/meeting/7/join", "x.method_override", "PUT"),
			"header x.method_override overrides POST with PUT"},
		{"an override is refused before the route is looked for",
			join("/admin/users", "x-http-method-override", "DELETE"),
			"header x-http-method-override overrides POST with DELETE"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			wantDenial(t, w.ask(t, tt.req), codes.PermissionDenied, 403, "METHOD_OVERRIDE", tt.message)
		})
	}

	t.Run("an override header spelt with dots in raw headers", func(t *testing.T) {
		req := join("/calls/meeting/7/join")
		req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: "x-user-id", RawValue: []byte("alice")},
			{Key: "X.HTTP-Method", RawValue: []byte("DELETE")},
		}}
		req.Attributes.Request.Http.Headers = nil
		wantDenial(t, w.ask(t, req), codes.PermissionDenied, 403, "METHOD_OVERRIDE", "header x.http-method overrides POST with DELETE")
	})
	if rev := w.engine.Index().Revision(); rev != before {
		t.Errorf("revision = %d after the refusals, want %d: nothing written", rev, before)
	}

	t.Run("an override header sent twice in raw headers", func(t *testing.T) {
		req := join("/calls/meeting/7/join")
		req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: "x-user-id", RawValue: []byte("alice")},
			{Key: "x-http-method-override", RawValue: []byte("POST")},
			{Key: "x-http-method-override", RawValue: []byte("DELETE")},
		}}
		req.Attributes.Request.Http.Headers = nil
		wantDenial(t, w.ask(t, req), codes.PermissionDenied, 403, "METHOD_OVERRIDE", "header x-http-method-override overrides POST with DELETE")
	})

	allowed := []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"no override", join("/calls/meeting/7/join")},
		{"an override naming the request's own method", join("/calls/meeting/7/join", "x-http-method-override", "post")},
		{"an empty override", join("/calls/meeting/7/join", "x-http-method", "")},
		{"a query parameter that is not _method", join("/calls/meeting/7/join?x_method=DELETE&_methods=PUT&method=PATCH")},
	}
	for _, tt := range allowed {
		t.Run(tt.name, func(t *testing.T) {
			a := w.ask(t, tt.req)
			if a.code != codes.OK || a.headers["x-usher-subject"] != "user:alice" {
				t.Fatalf("answer = %+v, want it allowed", a)
			}
			want := append([]string{"x-usher-reason"}, overrideHeaders...)
			want = append(want, "x_http_method_override", "x_http-method_override", "x-http_method_override",
				"x-http-method_override", "x_http-method-override", "x-http_method-override",
				"x_http_method-override", "x_http_method", "x_http-method", "x-http_method",
				"x_method_override", "x_method-override", "x-method_override")
			for _, h := range []string{"subject", "role", "scope", "revision", "reason"} {
				want = append(want, "x_usher_"+h, "x_usher-"+h, "x-usher_"+h)
			}
			want = append(want, dotted(overrideHeaders)...)
			want = append(want, dotted([]string{"x-usher-subject", "x-usher-role", "x-usher-scope", "x-usher-revision", "x-usher-reason"})...)
			if got := slices.Sorted(slices.Values(a.removed)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
				t.Errorf("headers to remove = %v, want %v", a.removed, want)
			}
		})
	}
}

// With method_override: honor, the API is trusted to run a POST as the
// method its override names, as Rails, Laravel and Express's
// method-override do, and Usher checks it as that method. An override of
// another method than POST, overrides that disagree, one that is no
// method, or one naming another method than PUT, PATCH or DELETE, which
// some of those frameworks run as the POST it is, are refused.
func TestEnvoyHonorsAMethodOverride(t *testing.T) {
	cfg := headerConfig()
	cfg.MethodOverride = server.MethodOverrideHonor
	w := startEnvoy(t, cfg, nil)
	bob := func(method, path string, kv ...string) *authv3.CheckRequest {
		return requestAs("bob", method, path, kv...)
	}

	a := w.ask(t, bob("POST", "/accounts/globex/calls", "x-http-method-override", "delete"))
	if a.code != codes.OK || a.headers["x-usher-subject"] != "user:bob" || a.headers["x-usher-role"] != "member" {
		t.Fatalf("a POST overridden to DELETE, checked as DELETE's rule: %+v", a)
	}
	if slices.ContainsFunc(a.removed, func(h string) bool { return slices.Contains(overrideHeaders, h) }) ||
		!slices.Contains(a.removed, "x-usher-reason") || !slices.Contains(a.removed, "x_http_method_override") ||
		!slices.Contains(a.removed, "x.http.method.override") {
		t.Errorf("headers to remove = %v; want the override left for the API, and its spellings with underscores or dots removed", a.removed)
	}
	// The API may read another override than the client set: each says
	// DELETE on the way upstream, or the API would run the POST unchecked.
	wantOverriddenUpstream := func(a envoyAnswer, method string) {
		t.Helper()
		for _, h := range overrideHeaders {
			if a.headers[h] != method {
				t.Errorf("header %s upstream = %q, want %q (headers %v)", h, a.headers[h], method, a.headers)
			}
		}
		if a.query["_method"] != method || len(a.query) != 1 {
			t.Errorf("query parameters set upstream = %v, want _method=%s", a.query, method)
		}
	}
	wantOverriddenUpstream(a, "DELETE")
	a = w.ask(t, bob("POST", "/accounts/globex/calls?"+strings.Repeat("A=1&", 99)+"_method=DELETE"))
	if a.code != codes.OK {
		t.Errorf("a POST overridden to DELETE by _method, in a query of 100 parameters: %+v", a)
	}
	wantOverriddenUpstream(a, "DELETE")
	// A request run as its own method goes upstream without an override
	// header: one that Envoy did not send Usher (allowed_headers) would
	// have the API run it as a method Usher did not check, and one it did
	// send named the request's own.
	for _, req := range []*authv3.CheckRequest{
		bob("POST", "/calls/meeting/8/join", "x-http-method-override", "POST"),
		bob("POST", "/calls/meeting/8/join"),
	} {
		a = w.ask(t, req)
		if a.code != codes.OK {
			t.Fatalf("a POST not overridden: %+v", a)
		}
		var kept []string
		for _, h := range overrideHeaders {
			if v, set := a.headers[h]; set {
				t.Errorf("header %s set upstream to %q on a request not overridden", h, v)
			}
			if !slices.Contains(a.removed, h) {
				kept = append(kept, h)
			}
		}
		if kept != nil {
			t.Errorf("%s %s not overridden: headers to remove lack %v", req.GetAttributes().GetRequest().GetHttp().GetMethod(), req.GetAttributes().GetRequest().GetHttp().GetPath(), kept)
		}
		if a.query != nil {
			t.Errorf("query parameters set upstream on a request not overridden: %v", a.query)
		}
	}

	tests := []struct {
		name    string
		req     *authv3.CheckRequest
		code    codes.Code
		http    int
		reason  string
		message string
	}{
		{"an overridden request is routed as the method it names",
			bob("POST", "/calls/meeting/8/join", "x-http-method-override", "DELETE"),
			codes.PermissionDenied, 403, "NO_ROUTE", "no rule matches DELETE /calls/meeting/8/join"},
		{"only a POST is overridden",
			bob("GET", "/calls/meeting/8", "x-http-method-override", "DELETE"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "header x-http-method-override overrides GET with DELETE: only a POST may be overridden"},
		{"overrides that disagree",
			bob("POST", "/calls/meeting/8", "x-http-method", "GET", "x-http-method-override", "DELETE"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "header x-http-method-override says DELETE, header x-http-method says GET"},
		{"an override agreeing with the method and one that does not",
			bob("POST", "/calls/meeting/8?_method=GET", "x-method-override", "POST"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "header x-method-override says POST, query parameter _method says GET"},
		{"an override header spelt with underscores, which the API is not sent",
			bob("POST", "/calls/meeting/8", "x_http_method_override", "GET"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "header x_http_method_override overrides POST with GET: only a header spelt with dashes overrides it"},
		{"an override header spelt with dots, which the API is not sent",
			bob("POST", "/accounts/globex/calls", "x.http.method", "DELETE"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "header x.http.method overrides POST with DELETE: only a header spelt with dashes overrides it"},
		// bob may read the calls of globex, which a rule of method * asks
		// of any method: Symfony 8 runs a POST whose override names GET,
		// and Rack and Express one naming a method they do not know, as
		// the POST it is.
		{"an override naming GET, which Symfony 8 does not take",
			bob("POST", "/calls/meeting/8", "x-http-method-override", "GET"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "header x-http-method-override overrides POST with GET: only PUT, PATCH or DELETE may override it"},
		{"a _method naming HEAD",
			bob("POST", "/accounts/globex/calls?_method=head"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "query parameter _method overrides POST with HEAD: only PUT, PATCH or DELETE may override it"},
		{"an override naming a method Rack and Express do not know",
			bob("POST", "/accounts/globex/calls", "x-http-method-override", "PROPFIND"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "header x-http-method-override overrides POST with PROPFIND: only PUT, PATCH or DELETE may override it"},
		// Envoy writes the _method Usher sets after every parameter named
		// before it, where an API that reads only the first thousand, as
		// Express's qs, PHP and Tomcat do, does not see it.
		{"an overridden request with a query of many parameters",
			bob("POST", "/accounts/globex/calls?"+strings.Repeat("A=1&", 1000)+"_method=DELETE"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "query parameter _method overrides POST with DELETE: an overridden request's query holds at most 100 parameters"},
		{"a request overridden by a header with a query of many parameters",
			bob("POST", "/accounts/globex/calls?"+strings.Repeat("A=1&", 100)+"B=1", "x-http-method-override", "DELETE"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "header x-http-method-override overrides POST with DELETE: an overridden request's query holds at most 100 parameters"},
		// Envoy sets upstream only the parameter spelt _method; another
		// spelling, empty or padded, goes upstream as it came, where an
		// API that decodes names and takes the first value (Tomcat's
		// getParameter, Node's querystring) runs the POST it is.
		{"an empty %5Fmethod beside the _method that overrides",
			bob("POST", "/accounts/globex/calls?%5Fmethod=&_method=DELETE"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "query parameter %5Fmethod: a POST overridden with DELETE spells _method only as _method, the one set upstream"},
		{"a padded %5Fmethod",
			bob("POST", "/accounts/globex/calls?%5Fmethod=+DELETE"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "query parameter %5Fmethod: a POST overridden with DELETE spells _method only as _method, the one set upstream"},
		{"an empty %5Fmethod beside an override header",
			bob("POST", "/accounts/globex/calls?%5Fmethod=", "x-http-method-override", "DELETE"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", "query parameter %5Fmethod: a POST overridden with DELETE spells _method only as _method, the one set upstream"},
		{"an override that is no method",
			bob("POST", "/calls/meeting/8", "x-http-method-override", "GET /admin"),
			codes.PermissionDenied, 403, "METHOD_OVERRIDE", `header x-http-method-override: "GET /ADMIN" is not a method`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantDenial(t, w.ask(t, tt.req), tt.code, tt.http, tt.reason, tt.message)
		})
	}
}

// dotted are the spellings of names with a dot for at least one dash, and
// an underscore or a dash for each other, which PHP reads as the name.
func dotted(names []string) []string {
	var out []string
	for _, name := range names {
		spellings := []string{""}
		for _, c := range name {
			var next []string
			for _, s := range spellings {
				if c != '-' {
					next = append(next, s+string(c))
					continue
				}
				next = append(next, s+"-", s+"_", s+".")
			}
			spellings = next
		}
		for _, s := range spellings {
			if strings.Contains(s, ".") {
				out = append(out, s)
			}
		}
	}
	return out
}
