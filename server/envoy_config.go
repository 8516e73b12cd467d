package server

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"sigs.k8s.io/yaml"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/internal/yamldoc"
)

// EnvoyConfig says how Usher turns an HTTP request that Envoy's
// ext_authz filter asks about into an Usher check: who the subject is, and,
// from the first rule that matches the method and path, which permission
// on which resource. In YAML:
//
//	subject:
//	  header: x-user-id        # or jwt: {algorithm: RS256, key_file: /etc/usher/jwt.pem}
//	  prefix: "user:"
//	rules:
//	  - {method: POST, path: "/calls/{type}/{id}/join", resource: "call:{type}:{id}", permission: join-call}
//	  - {method: GET,  path: "/calls/{type}/{id}",      resource: "call:{type}:{id}", permission: read-call}
type EnvoyConfig struct {
	Subject EnvoySubject `json:"subject"`
	// Rules are tried in order; the first whose method and path match
	// decides the check. A request no rule matches is denied.
	Rules []EnvoyRule `json:"rules"`
	// MethodOverride says what to do with a request that names another
	// method than its own in an X-HTTP-Method-Override, X-HTTP-Method or
	// X-Method-Override header or a _method query parameter, which the API
	// behind Envoy may run it as. "deny", the default, refuses it, and
	// removes those headers from a request it allows; "honor", for an API
	// that does take a POST's override for its method, checks the POST as
	// that method, PUT, PATCH or DELETE (another is refused), and removes
	// the headers from a request it allows without overriding it.
	MethodOverride string `json:"method_override,omitempty"`
}

// EnvoySubject says where the subject of a request comes from: a header
// that something before Usher has set (Envoy's jwt_authn filter, an auth
// proxy), or a JWT that Usher verifies itself. Exactly one is set.
type EnvoySubject struct {
	// Header is the request header holding the subject. Envoy passes it on
	// as the client sent it, so use it only when the route strips or sets
	// it before ext_authz runs. One sent twice is refused: Envoy joins it
	// with a comma, so one holding a comma is refused unless Envoy sends
	// raw headers.
	Header string `json:"header,omitempty"`
	// JWT verifies a bearer token and takes the subject from a claim.
	JWT *EnvoyJWT `json:"jwt,omitempty"`
	// Prefix is put before the header's value or the claim to make a
	// subject name: with "user:", the id "alice" is user:alice.
	Prefix string `json:"prefix,omitempty"`
}

// EnvoyJWT is a JWT Usher verifies: its signature with the configured key,
// and its exp (required), nbf, iat and, when set here, iss and aud.
type EnvoyJWT struct {
	// Header holds the token, as "Bearer <token>" or bare; default
	// "authorization".
	Header string `json:"header,omitempty"`
	// Claim is the string claim naming the subject; default "sub".
	Claim string `json:"claim,omitempty"`
	// Algorithm is HS256 (a shared secret) or RS256 (an RSA public key in
	// PEM). Tokens signed any other way, "none" included, are refused.
	Algorithm string `json:"algorithm"`
	// KeyFile is a file holding the key; KeyEnv an environment variable
	// holding it. Exactly one is set, so that the key is never a flag or a
	// line of this file.
	KeyFile string `json:"key_file,omitempty"`
	KeyEnv  string `json:"key_env,omitempty"`
	// Issuer and Audience, when set, must match the token's iss and aud
	// (one of its audiences); a token without the claim is refused.
	Issuer   string `json:"issuer,omitempty"`
	Audience string `json:"audience,omitempty"`
	// Leeway, a duration such as "30s", widens exp, nbf and iat by as much
	// for an issuer whose clock is not quite Usher's; default none, at
	// most maxJWTLeeway.
	Leeway string `json:"leeway,omitempty"`
}

// EnvoyRule maps requests to a check. Path is a template of segments,
// each literal or a {variable} that matches one whole non-empty segment;
// Resource is a resource name whose {variables} the path defines.
type EnvoyRule struct {
	// Method is an HTTP method such as POST, or * for any.
	Method     string `json:"method"`
	Path       string `json:"path"`
	Resource   string `json:"resource"`
	Permission string `json:"permission"`
}

// The shortest keys NewEnvoyService accepts: an HS256 secret shorter than the
// hash, or an RSA key under 2048 bits, is weaker than what it signs.
const (
	minHMACSecretLen = 32
	minRSABits       = 2048
)

// maxJWTLeeway is the most clock skew a leeway may forgive: more would
// keep an expired token, or one issued for later, good for long.
const maxJWTLeeway = 5 * time.Minute

// LoadEnvoyConfig reads a YAML (or JSON) EnvoyConfig strictly, an unknown
// field being an error, and validates it. Keys are read later, by
// NewEnvoyService.
func LoadEnvoyConfig(file string) (EnvoyConfig, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return EnvoyConfig{}, err
	}
	cfg, err := ParseEnvoyConfig(data)
	if err != nil {
		return EnvoyConfig{}, fmt.Errorf("%s: %w", file, err)
	}
	return cfg, nil
}

// ParseEnvoyConfig parses and validates the YAML (or JSON) of an
// EnvoyConfig.
func ParseEnvoyConfig(data []byte) (EnvoyConfig, error) {
	var cfg EnvoyConfig
	if err := yamldoc.One(data); err != nil {
		return cfg, err
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return cfg, err
	}
	if err := yamldoc.Spelt(js, &cfg, ""); err != nil {
		return cfg, err
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	if err := d.Decode(&cfg); err != nil {
		// The "json: " prefix would mislead: the file is YAML more often.
		return cfg, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return cfg, cfg.Validate()
}

var (
	headerName   = regexp.MustCompile(`^[a-z0-9!#$%&'*+.^_|~-]+$`)
	methodName   = regexp.MustCompile(`^[A-Z]+$`)
	variableName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
)

// Validate checks the configuration's shape. Errors are *authz.Error
// values naming the field and value, e.g. `rules[2].resource
// "call:{type}:{id}": {id} is not a variable of the path`.
func (c EnvoyConfig) Validate() error {
	_, err := c.compile()
	return err
}

func configError(field, value, format string, args ...any) error {
	return &authz.Error{Code: authz.Invalid, Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

func (s EnvoySubject) validate() error {
	switch {
	case s.Header == "" && s.JWT == nil:
		return configError("subject", "", "set header or jwt: a request's subject must come from somewhere")
	case s.Header != "" && s.JWT != nil:
		return configError("subject.header", s.Header, "set header or jwt, not both")
	case s.Header != "" && !headerName.MatchString(s.Header):
		return configError("subject.header", s.Header, "a header name is lower case, as Envoy passes it")
	}
	if s.Prefix != "" {
		// A prefix must make a well-formed subject of any id.
		if err := authz.ValidateSubject("subject.prefix", s.Prefix+"x"); err != nil || strings.IndexByte(s.Prefix, ':') != len(s.Prefix)-1 {
			return configError("subject.prefix", s.Prefix, "must be a subject kind and a colon, such as \"user:\"")
		}
	}
	if s.JWT == nil {
		return nil
	}
	j := s.JWT
	if j.Header != "" && !headerName.MatchString(j.Header) {
		return configError("subject.jwt.header", j.Header, "a header name is lower case, as Envoy passes it")
	}
	if j.Algorithm != "HS256" && j.Algorithm != "RS256" {
		return configError("subject.jwt.algorithm", j.Algorithm, "must be HS256 or RS256")
	}
	if (j.KeyFile == "") == (j.KeyEnv == "") {
		return configError("subject.jwt.key_file", j.KeyFile, "set key_file or key_env, exactly one")
	}
	if _, err := j.leeway(); err != nil {
		return err
	}
	return nil
}

// leeway reads Leeway: none when it is not set.
func (j *EnvoyJWT) leeway() (time.Duration, error) {
	if j.Leeway == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(j.Leeway)
	switch {
	case err != nil:
		return 0, configError("subject.jwt.leeway", j.Leeway, "must be a duration such as \"30s\"")
	case d < 0 || d > maxJWTLeeway:
		return 0, configError("subject.jwt.leeway", j.Leeway, "must be between 0s and %s", maxJWTLeeway)
	}
	return d, nil
}

// verificationKey reads the JWT key from its file or variable.
func (j *EnvoyJWT) verificationKey() (any, error) {
	field, where := "subject.jwt.key_file", j.KeyFile
	var raw []byte
	if j.KeyFile != "" {
		b, err := os.ReadFile(j.KeyFile)
		if err != nil {
			return nil, configError(field, where, "%v", err)
		}
		raw = b
	} else {
		field, where = "subject.jwt.key_env", j.KeyEnv
		v, ok := os.LookupEnv(j.KeyEnv)
		if !ok || v == "" {
			return nil, configError(field, where, "the variable is not set")
		}
		raw = []byte(v)
	}
	switch j.Algorithm {
	case "HS256":
		// A secret file written by echo ends in a newline that is no part
		// of the secret.
		secret := bytes.TrimRight(raw, "\r\n")
		if len(secret) < minHMACSecretLen {
			return nil, configError(field, where, "the HS256 secret is %d bytes long; at least %d are needed", len(secret), minHMACSecretLen)
		}
		// An issuer's public key or certificate, which anyone may have,
		// would let anyone sign an HS256 token Usher takes.
		form := publicKeyForm(secret)
		var jwk struct {
			Kty  string            `json:"kty"`
			Keys []json.RawMessage `json:"keys"`
		}
		if json.Unmarshal(secret, &jwk) == nil {
			switch {
			case jwk.Kty == "oct":
				return nil, configError(field, where, "the HS256 secret is a JSON Web Key of a shared secret: give the secret itself (its k, decoded), not the key's JSON")
			case jwk.Kty != "" || len(jwk.Keys) > 0:
				form = "a JSON Web Key" // or an issuer's key set
			}
		}
		if form != "" {
			return nil, configError(field, where, "the HS256 secret is %s, which is public: HS256 needs a secret shared only with the issuer, RS256 verifies with a public key", form)
		}
		return secret, nil
	default:
		key, err := jwt.ParseRSAPublicKeyFromPEM(raw)
		if err != nil {
			return nil, configError(field, where, "not an RSA public key in PEM: %v", err)
		}
		if key.N.BitLen() < minRSABits {
			return nil, configError(field, where, "the RSA key has %d bits; at least %d are needed", key.N.BitLen(), minRSABits)
		}
		return key, nil
	}
}

// publicKeyForm names the form in which secret holds a public key or a
// certificate, as an issuer publishes them; "" when it holds none. A PEM
// block counts however its lines are broken: escaped ("\n") in a
// variable, or indented, it is no PEM block to a decoder but the same key.
// So do the DER of a key or certificate, raw, in hex or in base64 of any
// alphabet and line breaks, and a PEM block in base64. (A JSON Web Key is
// verificationKey's to tell.)
func publicKeyForm(secret []byte) string {
	if m := pemBegin.FindSubmatch(secret); m != nil {
		return "a PEM " + string(m[1])
	}
	der := func(b []byte) string {
		if _, err := x509.ParsePKIXPublicKey(b); err == nil {
			return "public key"
		}
		if _, err := x509.ParsePKCS1PublicKey(b); err == nil {
			return "public key"
		}
		if _, err := x509.ParseCertificate(b); err == nil {
			return "certificate"
		}
		return ""
	}
	if what := der(secret); what != "" {
		return "the DER of a " + what
	}
	text := strings.Join(strings.Fields(string(secret)), "")
	if b, err := hex.DecodeString(text); err == nil {
		if what := der(b); what != "" {
			return "the DER of a " + what + " in hex"
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(text); err == nil {
			if what := der(b); what != "" {
				return "the DER of a " + what + " in base64"
			}
			// As a Kubernetes Secret's data shows a file.
			if m := pemBegin.FindSubmatch(b); m != nil {
				return "a PEM " + string(m[1]) + " in base64"
			}
		}
	}
	return ""
}

// pemBegin finds the line that starts a PEM block, however the lines
// around it are broken, and its type.
var pemBegin = regexp.MustCompile(`-----BEGIN ([^-\r\n]*)-----`)

// envoyRoute is a compiled EnvoyRule.
type envoyRoute struct {
	index      int
	rule       string // the rule's method and path, for messages
	method     string // "*" matches any
	segments   []templatePart
	resource   []templatePart // literal pieces and variables, concatenated
	permission string
}

// templatePart is a literal, or a variable when name is set.
type templatePart struct {
	literal string
	name    string
}

func (c EnvoyConfig) compile() ([]envoyRoute, error) {
	if err := c.Subject.validate(); err != nil {
		return nil, err
	}
	switch c.MethodOverride {
	case "", MethodOverrideDeny, MethodOverrideHonor:
	default:
		return nil, configError("method_override", c.MethodOverride, "must be %q or %q", MethodOverrideDeny, MethodOverrideHonor)
	}
	if len(c.Rules) == 0 {
		return nil, configError("rules", "", "no rules: every request would be denied")
	}
	routes := make([]envoyRoute, len(c.Rules))
	for i, r := range c.Rules {
		rt, err := compileRule(i, r)
		if err != nil {
			return nil, err
		}
		for _, earlier := range routes[:i] {
			if how := earlier.shadows(rt); how != "" {
				return nil, configError(fmt.Sprintf("rules[%d].path", i), r.Path,
					"never decides: rules[%d] (%s %s) %s every request it matches", earlier.index, c.Rules[earlier.index].Method, c.Rules[earlier.index].Path, how)
			}
		}
		routes[i] = rt
	}
	return routes, nil
}

func compileRule(i int, r EnvoyRule) (envoyRoute, error) {
	field := func(name string) string { return fmt.Sprintf("rules[%d].%s", i, name) }
	rt := envoyRoute{index: i, rule: r.Method + " " + r.Path, method: r.Method, permission: r.Permission}
	if r.Method != "*" && !methodName.MatchString(r.Method) {
		return rt, configError(field("method"), r.Method, "must be an upper-case HTTP method such as GET, or * for any")
	}
	if !strings.HasPrefix(r.Path, "/") {
		return rt, configError(field("path"), r.Path, "must start with /")
	}
	vars := map[string]bool{}
	if r.Path != "/" {
		for _, s := range strings.Split(r.Path[1:], "/") {
			seg, err := parseSegment(s)
			if err != nil {
				return rt, configError(field("path"), r.Path, "%v", err)
			}
			if seg.name != "" {
				if vars[seg.name] {
					return rt, configError(field("path"), r.Path, "{%s} appears twice", seg.name)
				}
				vars[seg.name] = true
			}
			rt.segments = append(rt.segments, seg)
		}
	}
	res, err := parseTemplate(r.Resource)
	if err != nil {
		return rt, configError(field("resource"), r.Resource, "%v", err)
	}
	for _, p := range res {
		if p.name != "" && !vars[p.name] {
			return rt, configError(field("resource"), r.Resource, "{%s} is not a variable of the path %q", p.name, r.Path)
		}
	}
	// Any value of the variables must be able to make a well-formed name.
	if err := authz.ValidateResource(field("resource"), expand(res, func(string) string { return "x" })); err != nil {
		return rt, configError(field("resource"), r.Resource, "does not make a resource name: %v", err)
	}
	rt.resource = res
	if err := authz.ValidatePermission(field("permission"), r.Permission); err != nil {
		return rt, err
	}
	return rt, nil
}

// parseSegment reads one path segment: a literal or a whole {variable}.
func parseSegment(s string) (templatePart, error) {
	switch {
	case s == "":
		return templatePart{}, fmt.Errorf("an empty segment (// or a trailing /) matches nothing")
	case s == "." || s == "..":
		return templatePart{}, fmt.Errorf("a %q segment matches nothing: requests with one are denied", s)
	case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
		name := s[1 : len(s)-1]
		if !variableName.MatchString(name) {
			return templatePart{}, fmt.Errorf("variable {%s} must match [a-z_][a-z0-9_]*", name)
		}
		return templatePart{name: name}, nil
	case strings.ContainsAny(s, "{}"):
		return templatePart{}, fmt.Errorf("segment %q: a variable must be a whole segment", s)
	case strings.ContainsAny(s, "?#%"):
		return templatePart{}, fmt.Errorf("segment %q: write a literal unescaped, without query or fragment", s)
	}
	return templatePart{literal: s}, nil
}

// parseTemplate splits "call:{type}:{id}" into literals and variables.
func parseTemplate(s string) ([]templatePart, error) {
	var out []templatePart
	for s != "" {
		open := strings.IndexByte(s, '{')
		if open < 0 {
			if strings.IndexByte(s, '}') >= 0 {
				return nil, fmt.Errorf("a } without its {")
			}
			out = append(out, templatePart{literal: s})
			break
		}
		if open > 0 {
			if strings.IndexByte(s[:open], '}') >= 0 {
				return nil, fmt.Errorf("a } without its {")
			}
			out = append(out, templatePart{literal: s[:open]})
		}
		end := strings.IndexByte(s[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("a { without its }")
		}
		name := s[open+1 : open+end]
		if !variableName.MatchString(name) {
			return nil, fmt.Errorf("variable {%s} must match [a-z_][a-z0-9_]*", name)
		}
		out = append(out, templatePart{name: name})
		s = s[open+end+1:]
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("must not be empty")
	}
	return out, nil
}

func expand(tmpl []templatePart, value func(name string) string) string {
	var b strings.Builder
	for _, p := range tmpl {
		if p.name != "" {
			b.WriteString(value(p.name))
		} else {
			b.WriteString(p.literal)
		}
	}
	return b.String()
}

// shadows says how r decides every request later matches, so that later
// never decides anything: r matches each of them ("matches"), or would
// but for case ("matches but for case"), or is the GET rule of each HEAD
// that later matches ("is the GET rule of"), and route answers it by r or
// refuses it (NO_ROUTE). It is "" when later decides some request.
func (r envoyRoute) shadows(later envoyRoute) string {
	how := "matches"
	switch {
	case r.method == "*" || r.method == later.method:
	case r.method == "GET" && later.method == "HEAD":
		how = "is the GET rule of"
	default:
		return ""
	}
	if len(r.segments) != len(later.segments) {
		return ""
	}
	for i, s := range r.segments {
		l := later.segments[i]
		if s.name == "" {
			if l.name != "" || !equalFold(l.literal, s.literal) {
				return ""
			}
			if l.literal != s.literal && how == "matches" {
				how = "matches but for case"
			}
		}
		// A variable fills with no segment that has one of unfillable,
		// which a literal may have.
		if s.name != "" && l.name == "" && strings.ContainsAny(l.literal, unfillable) {
			return ""
		}
	}
	return how
}

// unfillable are the characters of a segment that fills no variable; see
// envoyRoute.matches.
const unfillable = ":;\\%?#"

// match returns the path's variables if the request matches r. segments
// are the request path's, already decoded and screened by
// envoyServer.route.
func (r envoyRoute) match(method string, segments []string) (map[string]string, bool) {
	if !r.matches(method, segments, false) {
		return nil, false
	}
	var vars map[string]string
	for i, s := range r.segments {
		if s.name != "" {
			if vars == nil {
				vars = make(map[string]string, len(r.segments))
			}
			vars[s.name] = segments[i]
		}
	}
	return vars, true
}

// equalFold says whether a and b are equal ignoring case as an API that
// ignores it may find them: as strings.EqualFold does, or once the dotted
// and the dotless i (U+0130, U+0131), whose upper and lower cases are 'I'
// and 'i', are each read as 'i'. EqualFold keeps them apart, but Java's
// equalsIgnoreCase (Spring's case-insensitive paths) and Python's
// re.IGNORECASE take "joın" and "joİn" for "join".
func equalFold(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	// Folding keeps the count of runes, of 1 to 4 bytes each: a segment
	// of megabytes is not scanned against a short literal.
	const dotted = "\u0130\u0131"
	if len(a) > 4*len(b) || len(b) > 4*len(a) || !strings.ContainsAny(a, dotted) && !strings.ContainsAny(b, dotted) {
		return false
	}
	return strings.EqualFold(turkishI.Replace(a), turkishI.Replace(b))
}

// turkishI reads the dotted and the dotless i as 'i'.
var turkishI = strings.NewReplacer("\u0130", "i", "\u0131", "i")

// matches says whether a request matches r, its method and r's literals
// compared exactly or, with fold, ignoring case (equalFold). A segment
// with ':', ';', '\', '%', '?' or '#' fills no variable.
func (r envoyRoute) matches(method string, segments []string, fold bool) bool {
	same := func(a, b string) bool { return a == b || fold && equalFold(a, b) }
	if r.method != "*" && !same(r.method, method) {
		return false
	}
	if len(segments) != len(r.segments) {
		return false
	}
	for i, s := range r.segments {
		v := segments[i]
		if s.name == "" {
			if !same(v, s.literal) {
				return false
			}
			continue
		}
		// A variable is one part of a name, and ':' separates a name's
		// parts: /calls/a:b/c and /calls/a/b:c would both name call:a:b:c.
		// The API behind Envoy may read ';' as the start of a path
		// parameter (servlet containers, Spring) and '\' as a '/', and see
		// /calls/a/b;x/end or /calls/a/x%5C..%5Cb/end as /calls/a/b/end:
		// a resource so named, which anyone who may register calls may
		// register and hold, must not answer for another. A '%' left after
		// decoding was escaped twice: an API that decodes the path again
		// reads /calls/a/x%252F..%252Fb/end as /calls/a/x/../b/end. A '?'
		// or '#' left after decoding starts a query or a fragment there:
		// /calls/a/b%3Fx/end read again is /calls/a/b.
		if strings.ContainsAny(v, unfillable) {
			return false
		}
	}
	return true
}
