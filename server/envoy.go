package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/golang-jwt/jwt/v5"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/usher-authz/usher/authz"
)

// Checker answers one check; the Envoy handler needs nothing else of the
// engine. *authz.Engine is one, answering from whichever index is current;
// an *authz.Index is one too, but one that a resync has replaced goes on
// answering from the revision it stopped at.
type Checker interface {
	Check(authz.Query) (authz.Decision, authz.Revision, error)
}

// The headers an allowed request carries upstream. Each overwrites what
// the client may have sent under that name, so an upstream can trust them.
const (
	HeaderSubject  = "x-usher-subject"
	HeaderRole     = "x-usher-role"
	HeaderScope    = "x-usher-scope"
	HeaderRevision = "x-usher-revision"
	// HeaderReason carries a denial's reason to the client; on an allowed
	// request it is removed, so that upstream never sees a forged one.
	HeaderReason = "x-usher-reason"
)

// The reasons a denied request's x-usher-reason header and body give:
// Check's, and the Envoy mapping's own.
const (
	ReasonNoGrant         = "NO_GRANT"
	ReasonBlocked         = "BLOCKED"
	ReasonUnknownResource = "UNKNOWN_RESOURCE"
	// ReasonNoRoute: no rule matches the method and path.
	ReasonNoRoute = "NO_ROUTE"
	// ReasonUnauthenticated: the subject is missing or its token invalid.
	ReasonUnauthenticated = "UNAUTHENTICATED"
	// ReasonInvalidResource: the path makes a resource name that cannot
	// exist, such as one with a control character.
	ReasonInvalidResource = "INVALID_RESOURCE"
	// ReasonMethodOverride: a header or the query names another method
	// than the request's, which the API might run in its place.
	ReasonMethodOverride = "METHOD_OVERRIDE"
)

// usherHeaders are the headers Usher sets on an allowed request or removes
// from it.
var usherHeaders = []string{HeaderSubject, HeaderRole, HeaderScope, HeaderRevision, HeaderReason}

var envoyReasons = map[authz.Reason]string{
	authz.ReasonBlocked:         ReasonBlocked,
	authz.ReasonNoGrant:         ReasonNoGrant,
	authz.ReasonUnknownResource: ReasonUnknownResource,
}

// RegisterEnvoy serves envoy.service.auth.v3.Authorization/Check on s,
// answering each request with the check cfg maps it to. It reads the JWT
// key, if cfg has one, and refuses a configuration that does not validate.
//
// Allowed requests go upstream with x-usher-subject, x-usher-role,
// x-usher-scope and x-usher-revision; denied ones get 403 (401 for a
// missing or invalid subject, 400 for a path that makes no resource name)
// with the reason in x-usher-reason and a JSON body. An error of the
// checker is the call's gRPC status, and Envoy's failure_mode_allow
// decides.
func RegisterEnvoy(s *grpc.Server, cfg EnvoyConfig, c Checker) error {
	e, err := NewEnvoyService(cfg)
	if err != nil {
		return err
	}
	e.register(s.RegisterService, c, nil)
	return nil
}

// EnvoyService is an EnvoyConfig made ready to serve: its rules compiled
// and its JWT key read, so that `usher serve` refuses a bad file or key
// before it listens. WithEnvoy hands it to New.
type EnvoyService struct {
	h envoyServer // without its checker, which New supplies
}

// NewEnvoyService validates cfg and reads its JWT key, if it has one.
func NewEnvoyService(cfg EnvoyConfig) (*EnvoyService, error) {
	routes, err := cfg.compile()
	if err != nil {
		return nil, err
	}
	h := envoyServer{routes: routes, header: cfg.Subject.Header, prefix: cfg.Subject.Prefix,
		honorOverride: cfg.MethodOverride == MethodOverrideHonor}
	// A server that hands the API its headers as CGI variables (Rack's,
	// PHP's, WSGI's) reads x_usher_subject as x-usher-subject, PHP
	// x.usher.subject too, and may take the client's, which Usher does not
	// overwrite, for its own.
	h.removed = append([]string{HeaderReason}, cgiSpellings(usherHeaders)[len(usherHeaders):]...)
	// Envoy may not send Usher these headers (allowed_headers): the API
	// must not see an override Usher did not. A name spelt with
	// underscores or dots goes either way: no client means it but to pass as the
	// override under a name Usher was not sent.
	if h.honorOverride {
		h.removed = append(h.removed, overrideSpellings[len(methodOverrideHeaders):]...)
	} else {
		h.removed = append(h.removed, overrideSpellings...)
	}
	for _, rt := range routes {
		h.maxSegments = max(h.maxSegments, len(rt.segments))
	}
	if j := cfg.Subject.JWT; j != nil {
		key, err := j.verificationKey()
		if err != nil {
			return nil, err
		}
		opts := []jwt.ParserOption{
			jwt.WithValidMethods([]string{j.Algorithm}),
			jwt.WithExpirationRequired(),
			// A token issued in the future comes from a clock gone wrong or
			// from a key used outside its issuer.
			jwt.WithIssuedAt(),
		}
		leeway, err := j.leeway()
		if err != nil {
			return nil, err
		}
		if leeway > 0 {
			opts = append(opts, jwt.WithLeeway(leeway))
		}
		if j.Issuer != "" {
			opts = append(opts, jwt.WithIssuer(j.Issuer))
		}
		if j.Audience != "" {
			opts = append(opts, jwt.WithAudience(j.Audience))
		}
		h.jwt = &jwtSubject{
			parser: jwt.NewParser(opts...),
			method: jwt.GetSigningMethod(j.Algorithm),
			key:    key,
			header: cmp.Or(j.Header, "authorization"),
			claim:  cmp.Or(j.Claim, "sub"),
		}
	}
	return &EnvoyService{h: h}, nil
}

// register serves e through register, asking c, counting decisions in m
// (when not nil).
func (e *EnvoyService) register(register func(*grpc.ServiceDesc, any), c Checker, m *Metrics) {
	h := e.h
	h.checker = c
	h.metrics = m
	register(&authv3.Authorization_ServiceDesc, &h)
}

// WithEnvoy makes New serve envoy.service.auth.v3.Authorization with e
// beside Usher's own services, answering from the engine's index as it is
// at each call, so that a rebuilt index is used as soon as it is in place.
// Without it, the service is not registered.
func WithEnvoy(e *EnvoyService) grpc.ServerOption {
	return envoyOption{service: e}
}

// envoyOption carries an EnvoyService through New's options.
type envoyOption struct {
	grpc.EmptyServerOption
	service *EnvoyService
}

// keeps refuses a policy whose catalog leaves out a permission a rule of
// the mapping checks: every request the rule matches would then fail,
// refused by Envoy for all. A nil service keeps nothing.
func (e *EnvoyService) keeps(p authz.Policy) error {
	if e == nil {
		return nil
	}
	for _, rt := range e.h.routes {
		if !slices.ContainsFunc(p.Permissions, func(d authz.Permission) bool { return d.Name == rt.permission }) {
			return &authz.Error{Code: authz.Invalid, Kind: authz.KindPermissionInUse, Field: "policy.permissions", Value: rt.permission,
				Reason: fmt.Sprintf("permission is missing from the policy but named by rules[%d].permission (%s) of the server's Envoy mapping (--envoy-config)", rt.index, rt.rule)}
		}
	}
	return nil
}

// envoyService finds the EnvoyService among opts, if any.
func envoyService(opts []grpc.ServerOption) *EnvoyService {
	for _, o := range opts {
		if e, ok := o.(envoyOption); ok && e.service != nil {
			return e.service
		}
	}
	return nil
}

type envoyServer struct {
	authv3.UnimplementedAuthorizationServer
	checker Checker
	routes  []envoyRoute
	// maxSegments is the most segments a rule's path has: a request path
	// of more matches none.
	maxSegments int
	header      string      // the subject's header, or
	jwt         *jwtSubject // the token it comes from
	prefix      string
	// honorOverride checks a POST as the method its override names;
	// otherwise an override of the method is refused.
	honorOverride bool
	// removed are the headers an allowed request loses on its way upstream.
	removed []string
	metrics *Metrics // nil: decisions are not counted
}

type jwtSubject struct {
	parser *jwt.Parser
	method jwt.SigningMethod // the configured algorithm's
	key    any
	header string
	claim  string
}

// Check answers Envoy, counting the decision by its reason.
func (h *envoyServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	resp, reason, err := h.decide(req)
	if err == nil {
		h.metrics.countEnvoy(reason)
	}
	return resp, err
}

// decide authenticates the subject first, so that a client without one
// learns nothing of the routes, then settles the method, then finds the
// rule, then asks the checker.
// It says the reason of its answer: GRANTED or the denial's.
func (h *envoyServer) decide(req *authv3.CheckRequest) (*authv3.CheckResponse, string, error) {
	http := req.GetAttributes().GetRequest().GetHttp()
	if http == nil {
		return denied(typev3.StatusCode_Forbidden, ReasonNoRoute, "not an HTTP request: Usher maps only HTTP requests to checks", nil), ReasonNoRoute, nil
	}
	subject, err := h.subject(http)
	if err != nil {
		var extra []*corev3.HeaderValueOption
		switch {
		case h.jwt != nil && errors.Is(err, errMissing):
			// RFC 6750, 3.1: no token, no error code.
			extra = append(extra, overwriteHeader("www-authenticate", "Bearer"))
		case h.jwt != nil:
			extra = append(extra, overwriteHeader("www-authenticate", `Bearer error="invalid_token"`))
		}
		return denied(typev3.StatusCode_Unauthorized, ReasonUnauthenticated, err.Error(), extra), ReasonUnauthenticated, nil
	}
	path, query, _ := strings.Cut(http.GetPath(), "?")
	method, err := h.method(http, query)
	if err != nil {
		return denied(typev3.StatusCode_Forbidden, ReasonMethodOverride, err.Error(), nil), ReasonMethodOverride, nil
	}
	rt, vars, err := h.route(method, path)
	if err != nil {
		return denied(typev3.StatusCode_Forbidden, ReasonNoRoute, err.Error(), nil), ReasonNoRoute, nil
	}
	resource := expand(rt.resource, func(name string) string { return vars[name] })
	if err := authz.ValidateResource("resource", resource); err != nil {
		var e *authz.Error
		if errors.As(err, &e) {
			e.Value = clip(e.Value)
		}
		return denied(typev3.StatusCode_BadRequest, ReasonInvalidResource, err.Error(), nil), ReasonInvalidResource, nil
	}
	d, rev, err := h.checker.Check(authz.Query{Subject: subject, Permission: rt.permission, Resource: resource})
	if err != nil {
		var e *authz.Error
		if errors.As(err, &e) {
			err = e.WithField(fmt.Sprintf("rules[%d].", rt.index))
		}
		return nil, "", toStatus(err)
	}
	revision := strconv.FormatUint(uint64(rev), 10)
	if !d.Allowed {
		reason := envoyReasons[d.Reason]
		return denied(typev3.StatusCode_Forbidden, reason, denial(subject, rt.permission, resource, d),
			[]*corev3.HeaderValueOption{overwriteHeader(HeaderRevision, revision)}), reason, nil
	}
	ok := &authv3.OkHttpResponse{
		Headers: []*corev3.HeaderValueOption{
			overwriteHeader(HeaderSubject, subject),
			overwriteHeader(HeaderRole, d.Role),
			overwriteHeader(HeaderScope, d.Scope),
			overwriteHeader(HeaderRevision, revision),
		},
		HeadersToRemove: h.removed,
	}
	switch {
	case method != http.GetMethod():
		overridden(ok, method)
	case h.honorOverride:
		// An override header Envoy did not send Usher (allowed_headers)
		// would have the API run the request as a method Usher did not
		// check; one it did send named the request's own.
		ok.HeadersToRemove = append(slices.Clip(h.removed), methodOverrideHeaders...)
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}, reasonNames[authz.ReasonGranted], nil
}

// subject finds the request's subject, or says why there is none.
func (h *envoyServer) subject(http *authv3.AttributeContext_HttpRequest) (string, error) {
	name := h.header
	if h.jwt != nil {
		name = h.jwt.header
	}
	value, err := headerValue(http, name)
	if err != nil {
		return "", err
	}
	if h.jwt != nil {
		if value, err = h.jwt.subject(value); err != nil {
			return "", err
		}
	}
	subject := h.prefix + value
	if err := authz.ValidateSubject("subject", subject); err != nil {
		var e *authz.Error
		if errors.As(err, &e) {
			e.Value = clip(e.Value)
		}
		return "", err
	}
	return subject, nil
}

// headerValue reads one header, from headers or, when Envoy sends raw
// headers (encode_raw_headers), from header_map. A header sent twice is
// refused rather than guessed at: header_map holds each value apart, and
// headers holds them joined by a comma, so a value there with a comma is
// refused too. Envoy's jwt_authn adds the claim of claim_to_headers to a
// header the client sent: "mallory,alice" names neither.
func headerValue(http *authv3.AttributeContext_HttpRequest, name string) (string, error) {
	if v, ok := http.GetHeaders()[name]; ok && v != "" {
		if strings.IndexByte(v, ',') >= 0 {
			return "", fmt.Errorf("header %s: holds a comma, as a header sent twice does once Envoy joins it", name)
		}
		return v, nil
	}
	var values []string
	for _, hv := range http.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), name) {
			v := string(hv.GetRawValue())
			if v == "" {
				v = hv.GetValue()
			}
			values = append(values, v)
		}
	}
	switch {
	case len(values) > 1:
		return "", fmt.Errorf("header %s: sent %d times", name, len(values))
	case len(values) == 0 || values[0] == "":
		return "", fmt.Errorf("header %s: %w", name, errMissing)
	}
	return values[0], nil
}

// errMissing is a subject's header that a request lacks, or sends empty.
var errMissing = errors.New("missing")

// subject verifies the token in value and returns its subject claim.
func (j *jwtSubject) subject(value string) (string, error) {
	token := value
	if scheme, rest, ok := strings.Cut(value, " "); ok {
		if !strings.EqualFold(scheme, "bearer") {
			return "", fmt.Errorf("header %s: want a bearer token, got scheme %q", j.header, clip(scheme))
		}
		token = strings.TrimSpace(rest)
	}
	if len(token) > maxUnverifiedToken {
		if err := j.signed(token); err != nil {
			return "", fmt.Errorf("header %s: invalid token: %v", j.header, err)
		}
	}
	claims := jwt.MapClaims{}
	parsed, err := j.parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return j.key, nil })
	if err != nil {
		return "", fmt.Errorf("header %s: invalid token: %v", j.header, err)
	}
	// RFC 7515, 4.1.11: a recipient that does not understand an extension
	// crit lists must refuse the token, and Usher understands none (such as
	// RFC 7797's unencoded payload, whose signature covers other bytes).
	if crit, ok := parsed.Header["crit"]; ok {
		listed, _ := json.Marshal(crit)
		return "", fmt.Errorf("header %s: invalid token: it lists critical header extensions %s, and Usher understands none", j.header, clip(string(listed)))
	}
	// The parser turns a time claim into seconds of an int64, which a
	// number past it overflows into the far past: a not-before or an
	// issued-at of 1e19 would read as passed.
	for _, name := range [...]string{"exp", "nbf", "iat"} {
		if v, ok := claims[name].(float64); ok && math.Abs(v) > maxClaimSeconds {
			return "", fmt.Errorf("header %s: invalid token: claim %s %g is out of range: a time claim counts at most %d seconds, the end of the year 9999, either way from 1970", j.header, name, v, int64(maxClaimSeconds))
		}
	}
	sub, ok := claims[j.claim].(string)
	if !ok || sub == "" {
		return "", fmt.Errorf("header %s: the token has no string claim %q", j.header, j.claim)
	}
	return sub, nil
}

// maxClaimSeconds is the last second of the year 9999, the latest time a
// token's time claims may name.
const maxClaimSeconds = 253402300799

// maxUnverifiedToken is the longest token whose header and claims are
// decoded before its signature is checked, as the JWT library does: JSON
// decoded into claims takes some 17 bytes of memory per byte of token, and
// a client of the API behind Envoy, holding no key, chooses the token. A
// longer one is decoded only once its signature, which costs a hash of its
// bytes, shows that the key's holder made it.
const maxUnverifiedToken = 8 << 10

// signed checks the signature of a token of three parts with the
// configured algorithm and key. A token of another shape is left to the
// parser, which refuses it before decoding anything.
func (j *jwtSubject) signed(token string) error {
	dot := strings.LastIndexByte(token, '.')
	if dot < 0 || strings.Count(token[:dot], ".") != 1 {
		return nil
	}
	sig, err := j.parser.DecodeSegment(token[dot+1:])
	if err != nil {
		return fmt.Errorf("%w: could not base64 decode signature: %w", jwt.ErrTokenMalformed, err)
	}
	if err := j.method.Verify(token[:dot], sig, j.key); err != nil {
		return fmt.Errorf("%w: %w", jwt.ErrTokenSignatureInvalid, err)
	}
	return nil
}

// route finds the first rule matching the request, or says why none
// decides it. Every segment is percent-decoded first; a path with an empty,
// "." or ".." segment, a bad escape, or an escaped "/", matches no rule, so
// that no spelling of a path reaches a rule written for another.
func (h *envoyServer) route(method, path string) (envoyRoute, map[string]string, error) {
	noRoute := func() (envoyRoute, map[string]string, error) {
		return envoyRoute{}, nil, fmt.Errorf("no rule matches %s %s", clip(method), clip(path))
	}
	if !strings.HasPrefix(path, "/") {
		return noRoute()
	}
	var segments []string
	if path != "/" {
		// A path of more segments than any rule's matches none: counted
		// rather than split, so that a request of megabytes of "a/" costs
		// no slice of millions of strings.
		if strings.Count(path, "/") > h.maxSegments {
			return noRoute()
		}
		segments = strings.Split(path[1:], "/")
	}
	for i, s := range segments {
		d, err := url.PathUnescape(s)
		if err != nil || d == "" || d == "." || d == ".." || strings.Contains(d, "/") {
			return noRoute()
		}
		segments[i] = d
	}
	// An API that ignores case in its routes or methods would serve a
	// request that an earlier rule matches but for case as that rule's,
	// whichever rule Usher finds: such a request is refused. So is a HEAD
	// that an earlier GET rule matches: the API runs it by its GET route
	// (Express, Rails, Laravel, Flask, Spring, Go's ServeMux), and only
	// its body is dropped; one that ignores case in methods runs a "head"
	// so too, and one that ignores case in routes a HEAD that the GET rule
	// matches but for case.
	folded, head := -1, -1
	isHead := strings.EqualFold(method, "HEAD")
	for i, rt := range h.routes {
		if vars, ok := rt.match(method, segments); ok {
			switch {
			case folded >= 0:
				earlier := h.routes[folded]
				return envoyRoute{}, nil, fmt.Errorf("%s %s differs only in case from rules[%d] (%s)", clip(method), clip(path), earlier.index, earlier.rule)
			case head >= 0:
				earlier := h.routes[head]
				return envoyRoute{}, nil, fmt.Errorf("%s %s is a GET of rules[%d] (%s) to an API, which runs a HEAD by its GET route", clip(method), clip(path), earlier.index, earlier.rule)
			}
			return rt, vars, nil
		}
		if folded < 0 && rt.matches(method, segments, true) {
			folded = i
		}
		if head < 0 && isHead && rt.method == "GET" && rt.matches("GET", segments, true) {
			head = i
		}
	}
	return noRoute()
}

// denial explains a denied check to the client. A block's reason text is a
// moderator's note and stays in Usher.
func denial(subject, permission, resource string, d authz.Decision) string {
	switch d.Reason {
	case authz.ReasonBlocked:
		return fmt.Sprintf("%s is blocked from %s on %s", subject, permission, d.Scope)
	case authz.ReasonUnknownResource:
		return fmt.Sprintf("%s is not registered", resource)
	default:
		return fmt.Sprintf("%s holds no grant of %s on %s", subject, permission, resource)
	}
}

func denied(code typev3.StatusCode, reason, message string, extra []*corev3.HeaderValueOption) *authv3.CheckResponse {
	rpc := codes.PermissionDenied
	switch code {
	case typev3.StatusCode_Unauthorized:
		rpc = codes.Unauthenticated
	case typev3.StatusCode_BadRequest:
		rpc = codes.InvalidArgument
	}
	body, _ := json.Marshal(struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}{reason, message})
	headers := append([]*corev3.HeaderValueOption{
		overwriteHeader(HeaderReason, reason),
		overwriteHeader("content-type", "application/json"),
	}, extra...)
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(rpc), Message: message},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: code},
			Headers: headers,
			Body:    string(body) + "\n",
		}},
	}
}

// header sets a header, replacing any value it had.
func overwriteHeader(key, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
