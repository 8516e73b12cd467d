package server

import (
	"fmt"
	"iter"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// methodOverrideHeaders are the headers many web frameworks take a POST's
// real method from (Express's method-override, Rails, Symfony and Laravel,
// ASP.NET, Google's APIs), as Envoy passes their names.
var methodOverrideHeaders = []string{"x-http-method-override", "x-http-method", "x-method-override"}

// overrideSpellings are methodOverrideHeaders and every spelling of them
// with underscores or dots for some of their dashes: a server that hands
// an API its headers as CGI variables (Rack's, PHP's, WSGI's) reads
// x_http_method_override as HTTP_X_HTTP_METHOD_OVERRIDE, the override,
// PHP reads x.http.method.override so too (it turns a '.' of a variable's
// name into '_'), and Envoy passes such a name on as it came.
var overrideSpellings = cgiSpellings(methodOverrideHeaders)

// cgiSpellings are names and, after them, every spelling of each with an
// underscore or a dot for some of its dashes, which a server that hands
// an API its headers as CGI variables reads as the name itself.
func cgiSpellings(names []string) []string {
	out := slices.Clone(names)
	for _, name := range names {
		n := 1
		for range strings.Count(name, "-") {
			n *= len(dashSpellings)
		}
		for combo := 1; combo < n; combo++ {
			b, c := []byte(name), combo
			for j := range b {
				if b[j] == '-' {
					b[j] = dashSpellings[c%len(dashSpellings)]
					c /= len(dashSpellings)
				}
			}
			out = append(out, string(b))
		}
	}
	return out
}

// dashSpellings are what a dash of a header's name may be written as for
// a CGI-style server to read the name as the one with the dash.
const dashSpellings = "-_."

// isOverrideHeader says whether a header's name is one of
// overrideSpellings, in any case.
func isOverrideHeader(name string) bool {
	return slices.Contains(methodOverrideHeaders, cgiName.Replace(strings.ToLower(name)))
}

// cgiName spells a header's name with dashes where a CGI-style server
// reads one.
var cgiName = strings.NewReplacer("_", "-", ".", "-")

// The values of EnvoyConfig.MethodOverride.
const (
	// MethodOverrideDeny refuses a request that names another method than
	// its own, and removes the override headers from one it allows.
	MethodOverrideDeny = "deny"
	// MethodOverrideHonor checks a POST as the method its override names.
	MethodOverrideHonor = "honor"
)

// methodOverride is a method a request names in place of its own.
type methodOverride struct {
	where string // "header x-http-method", "query parameter _method"
	value string // trimmed, as the request spells it
	// underscored: a header whose name has an underscore or a dot for a
	// dash
	underscored bool
}

// method is the method o names, upper-cased as the frameworks read it.
func (o methodOverride) method() string {
	return strings.ToUpper(o.value)
}

// is says whether o names method, which is upper case: as o.method() ==
// method, without a copy of o's value when it is ASCII.
func (o methodOverride) is(method string) bool {
	for i := 0; i < len(o.value); i++ {
		if o.value[i] >= utf8.RuneSelf {
			return o.method() == method
		}
	}
	if len(o.value) != len(method) {
		return false
	}
	for i := 0; i < len(o.value); i++ {
		c := o.value[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != method[i] {
			return false
		}
	}
	return true
}

// methodOverrides yields the methods http names in its override headers
// and query's _method parameters, in that order. They are read as they
// are yielded and none is kept: a request of megabytes may name millions.
func methodOverrides(http *authv3.AttributeContext_HttpRequest, query string) iter.Seq[methodOverride] {
	return func(yield func(methodOverride) bool) {
		add := func(where, value string, underscored bool) bool {
			// A header sent twice reaches Usher joined by a comma: Express
			// reads the first part, other frameworks the whole. Every part
			// counts, and an empty one, like an empty header, names nothing.
			for more := true; more; {
				var part string
				part, value, more = strings.Cut(value, ",")
				if p := strings.TrimSpace(part); p != "" {
					if !yield(methodOverride{where: where, value: p, underscored: underscored}) {
						return false
					}
				}
			}
			return true
		}
		header := func(name, value string) bool {
			return add("header "+name, value, strings.ContainsAny(name, "_."))
		}
		for _, name := range overrideSpellings {
			if v := http.GetHeaders()[name]; v != "" {
				if !header(name, v) {
					return
				}
			}
		}
		for _, hv := range http.GetHeaderMap().GetHeaders() {
			if isOverrideHeader(hv.GetKey()) {
				v := string(hv.GetRawValue())
				if v == "" {
					v = hv.GetValue()
				}
				if !header(strings.ToLower(hv.GetKey()), v) {
					return
				}
			}
		}
		for name, value := range queryPairs(query) {
			if isMethodParameter(name) {
				if !add("query parameter _method", unescapeQuery(value), false) {
					return
				}
			}
		}
	}
}

// isMethodParameter says whether a query parameter, named as the query
// spells it, is _method as PHP reads names, which Laravel and Symfony take
// the method from: decoded and cut at a NUL ("_method%00x" is "_method"),
// leading spaces dropped, and a '.', ' ' or '[' read as '_' (".method" is
// "_method"). Case is ignored, which costs only a parameter no framework
// reads.
func isMethodParameter(name string) bool {
	// Cut at an escaped NUL first: a bad escape after it, which PHP leaves
	// as it is, would leave the whole name undecoded here.
	if i := strings.Index(name, "%00"); i >= 0 {
		name = name[:i]
	}
	name = unescapeQuery(name)
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	name = strings.TrimLeft(name, " ")
	if name == "" {
		return false
	}
	if strings.IndexByte(" .[", name[0]) >= 0 {
		name = "_" + name[1:]
	}
	return strings.EqualFold(name, "_method")
}

// unescapeQuery decodes a query's name or value, '+' being a space; a bad
// escape is left as it is, as PHP leaves it.
func unescapeQuery(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	if d, err := url.QueryUnescape(s); err == nil {
		return d
	}
	return s
}

// method is the method a request is checked as: its own or, when
// overrides are honoured, the one a POST's override names. The error says
// why a request the API might run as another method than the one checked
// is refused.
func (h *envoyServer) method(http *authv3.AttributeContext_HttpRequest, query string) (string, error) {
	method := http.GetMethod()
	overrides := methodOverrides(http, query)
	if !h.honorOverride {
		for o := range overrides {
			if !o.is(method) {
				return "", fmt.Errorf("%s overrides %s with %s", o.where, clip(method), clip(o.method()))
			}
		}
		return method, nil
	}
	// A name spelt with underscores or dots is removed on the way to the API
	// (NewEnvoyService), which so runs the request as its own method.
	for o := range overrides {
		if o.underscored && !o.is(method) {
			return "", fmt.Errorf("%s overrides %s with %s: only a header spelt with dashes overrides it", o.where, clip(method), clip(o.method()))
		}
	}
	// Which of several the API reads is the API's affair: they must agree.
	var first methodOverride
	var named string // first's method
	for o := range overrides {
		switch {
		case o.underscored:
		case named == "":
			first, named = o, o.method()
		case !o.is(named):
			return "", fmt.Errorf("%s says %s, %s says %s", first.where, clip(named), o.where, clip(o.method()))
		}
	}
	switch {
	case named == "" || named == method:
		return method, nil
	case method != "POST":
		// The frameworks override a POST only: a GET so overridden is
		// still a GET to them.
		return "", fmt.Errorf("%s overrides %s with %s: only a POST may be overridden", first.where, clip(method), clip(named))
	case !methodName.MatchString(named):
		return "", fmt.Errorf("%s: %q is not a method", first.where, clip(named))
	case !slices.Contains(overridableMethods, named):
		return "", fmt.Errorf("%s overrides POST with %s: only PUT, PATCH or DELETE may override it", first.where, clip(named))
	case query != "" && strings.Count(query, "&") >= maxOverriddenParameters:
		return "", fmt.Errorf("%s overrides POST with %s: an overridden request's query holds at most %d parameters", first.where, clip(named), maxOverriddenParameters)
	}
	// Envoy sets only the parameter spelt "_method" upstream; another
	// spelling of it (%5Fmethod, .method), empty or padded as Usher does
	// not read it, goes upstream as it came, and an API that decodes names
	// and takes the first value (Tomcat, Node's querystring) would run the
	// request as the POST it is.
	if name, ok := strayMethodParameter(query); ok {
		return "", fmt.Errorf("query parameter %s: a POST overridden with %s spells _method only as _method, the one set upstream", clip(name), clip(named))
	}
	return named, nil
}

// strayMethodParameter finds a query parameter read as _method
// (isMethodParameter) whose name is spelt otherwise than "_method".
func strayMethodParameter(query string) (string, bool) {
	for name := range queryPairs(query) {
		if name != "_method" && isMethodParameter(name) {
			return name, true
		}
	}
	return "", false
}

// queryPairs yields the names and values of a raw query's parameters, as
// they are spelt, split at & and at ;.
func queryPairs(query string) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for rest := query; rest != ""; {
			pair := rest
			if i := strings.IndexAny(rest, "&;"); i >= 0 {
				pair, rest = rest[:i], rest[i+1:]
			} else {
				rest = ""
			}
			name, value, _ := strings.Cut(pair, "=")
			if !yield(name, value) {
				return
			}
		}
	}
}

// maxOverriddenParameters is the most query parameters an overridden
// request may have. Envoy sets the _method Usher asks for by writing the
// query again sorted by name, so after every parameter named before it,
// and an API reads only so many (Express's qs, PHP and Tomcat 1000 by
// default) and runs the request as the POST it is if _method comes later.
const maxOverriddenParameters = 100

// overridableMethods are the methods every framework that takes overrides
// runs a POST as when it names them. Rack's and Express's method-override
// ignore one naming a method they do not know, and Symfony 8 one naming
// GET or HEAD, and run the request as the POST it is, which Usher would
// not have checked.
var overridableMethods = []string{"PUT", "PATCH", "DELETE"}

// overridden has an allowed request, checked as the method its override
// names, carry that method in every override the API could read it from:
// an API that reads another than the client set would otherwise run the
// request as the POST it came as, which was not checked.
func overridden(ok *authv3.OkHttpResponse, method string) {
	for _, name := range methodOverrideHeaders {
		ok.Headers = append(ok.Headers, overwriteHeader(name, method))
	}
	ok.QueryParametersToSet = append(ok.QueryParametersToSet, &corev3.QueryParameter{Key: "_method", Value: method})
}
