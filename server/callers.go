package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"sigs.k8s.io/yaml"

	"github.com/usher-authz/usher/internal/yamldoc"
)

// CallerKind says which services a caller may call.
type CallerKind string

const (
	// KindCheck callers, such as the sidecars next to media servers and
	// Envoy, may call only the AuthorizationService, the AdmissionService
	// and Envoy's envoy.service.auth.v3.Authorization, and server
	// reflection, as every caller may.
	KindCheck CallerKind = "check"
	// KindAdmin callers, the platform's services, may call everything.
	KindAdmin CallerKind = "admin"
)

// Caller is one entry of a callers file: a name for the change log, a kind,
// and the credentials that identify it. Usher keeps only the SHA-256 of a
// bearer token, never the token.
type Caller struct {
	Name string
	Kind CallerKind

	tokenSHA256        []byte // 32 bytes, or nil
	certificateSubject string // RFC 2253, as distinguishedName writes it
	certificateSHA256  []byte // of the DER certificate, or nil
}

// Callers is the set of callers one reading of a callers file defines.
type Callers struct {
	list []Caller
	// cas holds each CA of the client CA file read with the callers file,
	// by its name and then its public key, or is nil: a client certificate
	// identifies a caller only through a chain that ends at one of them.
	cas caSet
}

// caSet holds CAs by what makes a CA the one that verified a chain: its
// name and public key, which a renewal of its certificate keeps, as the
// handshake's verification does. Looking one up allocates nothing.
type caSet map[string]map[string]struct{}

func (s caSet) add(ca *x509.Certificate) {
	keys := s[string(ca.RawSubject)]
	if keys == nil {
		keys = map[string]struct{}{}
		s[string(ca.RawSubject)] = keys
	}
	keys[string(ca.RawSubjectPublicKeyInfo)] = struct{}{}
}

func (s caSet) has(ca *x509.Certificate) bool {
	_, ok := s[string(ca.RawSubject)][string(ca.RawSubjectPublicKeyInfo)]
	return ok
}

// trusts reports whether one of chains, those the handshake verified a
// client certificate by, ends at a CA the client CA file still holds.
func (c *Callers) trusts(chains [][]*x509.Certificate) bool {
	if c.cas == nil {
		return true
	}
	for _, chain := range chains {
		if len(chain) > 0 && c.cas.has(chain[len(chain)-1]) {
			return true
		}
	}
	return false
}

// Len is the number of callers.
func (c *Callers) Len() int { return len(c.list) }

// ByToken returns the caller whose stored hash is the SHA-256 of token. It
// compares against every entry in constant time, so neither the answer's
// timing nor a lookup structure tells how close a guess came.
func (c *Callers) ByToken(token string) (Caller, bool) {
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i := range c.list {
		if c.list[i].tokenSHA256 == nil {
			continue
		}
		if subtle.ConstantTimeCompare(sum[:], c.list[i].tokenSHA256) == 1 && found < 0 {
			found = i
		}
	}
	if found < 0 {
		return Caller{}, false
	}
	return c.list[found], true
}

// ByCertificate returns the caller a verified client certificate identifies,
// by the SHA-256 of its DER encoding or else by its subject: a pinned
// certificate is the more precise match.
func (c *Callers) ByCertificate(cert *x509.Certificate) (Caller, bool) {
	sum := sha256.Sum256(cert.Raw)
	for _, caller := range c.list {
		if caller.certificateSHA256 != nil && subtle.ConstantTimeCompare(sum[:], caller.certificateSHA256) == 1 {
			return caller, true
		}
	}
	subject := distinguishedName(cert)
	for _, caller := range c.list {
		if caller.certificateSubject != "" && caller.certificateSubject == subject {
			return caller, true
		}
	}
	return Caller{}, false
}

// callerEntry is one entry of the callers file as written.
type callerEntry struct {
	Name               string `json:"name"`
	Kind               string `json:"kind"`
	TokenSHA256        string `json:"token_sha256"`
	CertificateSubject string `json:"certificate_subject"`
	CertificateSHA256  string `json:"certificate_sha256"`
}

// LoadCallers reads and parses a callers file.
func LoadCallers(file string) (*Callers, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return ParseCallers(file, data)
}

// ParseCallers parses the YAML (or JSON) of a callers file; file names it in
// errors. Parsing is strict: an unknown field, a malformed hash, an unknown
// kind, the hash of an empty token, a duplicate name or credential, an entry
// nothing identifies or a file without callers is an error naming the entry's
// field and value.
func ParseCallers(file string, data []byte) (*Callers, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", file, fmt.Sprintf(format, args...))
	}
	if err := yamldoc.One(data); err != nil {
		return nil, fail("%v", err)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fail("%v", err)
	}
	var doc struct {
		Callers []json.RawMessage `json:"callers"`
	}
	if err := decodeStrict(js, &doc, ""); err != nil {
		return nil, fail("%v", err)
	}
	if len(doc.Callers) == 0 {
		return nil, fail("callers: the file names no callers, so nobody could call")
	}
	c := &Callers{}
	names := map[string]int{}
	credentials := map[string]int{} // "token_sha256 <hex>" etc. to the entry using it
	for i, raw := range doc.Callers {
		path := fmt.Sprintf("callers[%d]", i)
		var e callerEntry
		if err := decodeStrict(raw, &e, path); err != nil {
			return nil, fail("%v", err)
		}
		caller, err := e.caller(path)
		if err != nil {
			return nil, fail("%v", err)
		}
		if j, dup := names[caller.Name]; dup {
			return nil, fail("%s.name %q: callers[%d] has the same name", path, e.Name, j)
		}
		names[caller.Name] = i
		for _, cred := range []struct {
			field string
			value []byte
		}{
			{"token_sha256", caller.tokenSHA256},
			{"certificate_subject", []byte(caller.certificateSubject)},
			{"certificate_sha256", caller.certificateSHA256},
		} {
			if len(cred.value) == 0 {
				continue
			}
			key := cred.field + " " + string(cred.value)
			if j, dup := credentials[key]; dup {
				return nil, fail("%s.%s: callers[%d] has the same %s, so it would not say which caller presented it", path, cred.field, j, cred.field)
			}
			credentials[key] = i
		}
		c.list = append(c.list, caller)
	}
	return c, nil
}

// caller checks an entry and converts it; path is where it is in the file.
func (e callerEntry) caller(path string) (Caller, error) {
	c := Caller{Name: e.Name, Kind: CallerKind(e.Kind), certificateSubject: e.CertificateSubject}
	switch {
	case e.Name == "":
		return c, fmt.Errorf("%s.name: must not be empty", path)
	case len(e.Name) > 128:
		return c, fmt.Errorf("%s.name %q: longer than 128 characters", path, e.Name)
	case strings.IndexFunc(e.Name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return c, fmt.Errorf("%s.name %q: must be printable without spaces", path, e.Name)
	}
	if c.Kind != KindCheck && c.Kind != KindAdmin {
		return c, fmt.Errorf("%s.kind %q: must be %q or %q", path, e.Kind, KindCheck, KindAdmin)
	}
	var err error
	if e.TokenSHA256 != "" {
		// The value is not quoted: what is not a hash may be the token
		// itself, which usher token prints beside it, and the refusal
		// goes to the log.
		if c.tokenSHA256, err = parseSHA256(e.TokenSHA256); err != nil {
			return c, fmt.Errorf("%s.token_sha256: %v (the value is not shown: it may be the token itself)", path, err)
		}
		if bytes.Equal(c.tokenSHA256, emptyTokenSHA256[:]) {
			return c, fmt.Errorf("%s.token_sha256 %q: the SHA-256 of an empty token, which identifies nobody: hash the caller's token (was the variable holding it empty?)", path, e.TokenSHA256)
		}
	}
	if e.CertificateSHA256 != "" {
		// openssl x509 -fingerprint -sha256 prints the hash with colons.
		if c.certificateSHA256, err = parseSHA256(strings.ReplaceAll(e.CertificateSHA256, ":", "")); err != nil {
			return c, fmt.Errorf("%s.certificate_sha256 %q: %v", path, e.CertificateSHA256, err)
		}
	}
	if e.CertificateSubject != "" && !strings.Contains(e.CertificateSubject, "=") {
		return c, fmt.Errorf("%s.certificate_subject %q: must be a distinguished name such as CN=console,O=acme", path, e.CertificateSubject)
	}
	if e.CertificateSubject != "" && e.CertificateSHA256 != "" {
		return c, fmt.Errorf("%s.certificate_subject %q: give certificate_subject or certificate_sha256, not both", path, e.CertificateSubject)
	}
	if c.tokenSHA256 == nil && c.certificateSHA256 == nil && c.certificateSubject == "" {
		return c, fmt.Errorf("%s (name %q): needs token_sha256, certificate_subject or certificate_sha256 to identify the caller", path, e.Name)
	}
	return c, nil
}

// emptyTokenSHA256 is what hashing an unset variable gives
// (printf %s "$TOKEN" | sha256sum), never a caller's token's hash.
var emptyTokenSHA256 = sha256.Sum256(nil)

// parseSHA256 decodes 64 hexadecimal characters.
func parseSHA256(s string) ([]byte, error) {
	if len(s) != 2*sha256.Size {
		return nil, fmt.Errorf("must be %d hexadecimal characters (a SHA-256), got %d", 2*sha256.Size, len(s))
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("must be hexadecimal (a SHA-256)")
	}
	return b, nil
}

// decodeStrict decodes JSON refusing unknown fields; path is where js is in
// the file, for the message.
func decodeStrict(js []byte, v any, path string) error {
	if err := yamldoc.Spelt(js, v, path); err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	err := d.Decode(v)
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr):
		at := strings.TrimPrefix(strings.Join([]string{path, typeErr.Field}, "."), ".")
		if at == "" {
			return fmt.Errorf("want a mapping with a callers list, got %s", typeErr.Value)
		}
		want := "a string"
		if at == "callers" {
			want = "a list of callers"
		} else if typeErr.Value == "number" {
			want = "a string (quote it: YAML read a number)"
		}
		return fmt.Errorf("%s: want %s, got %s", at, want, typeErr.Value)
	default:
		// The "json: " prefix would confuse: the file is YAML more often.
		msg := strings.TrimPrefix(err.Error(), "json: ")
		if path != "" {
			msg = path + ": " + msg
		}
		return errors.New(msg)
	}
}

// CallerSource holds the callers of a callers file and reads the file again
// when it changes, so that callers are added and removed without a restart.
// A reading that fails keeps the previous callers.
type CallerSource struct {
	file    string
	caFile  string // the client CA file, or ""
	logger  *slog.Logger
	current atomic.Pointer[Callers]
	// changed is closed, and replaced, when current is: streams opened
	// before then look at their credentials again.
	changed atomic.Pointer[chan struct{}]

	mu     sync.Mutex // serializes reloads
	digest string     // of the file's contents as last read
}

// CallerSourceOption configures a CallerSource.
type CallerSourceOption func(*CallerSource)

// WithClientCAFile makes a CallerSource read the PEM bundle of the CAs that
// verify client certificates (usher serve's --client-ca) with the callers
// file, and again whenever either changes: a certificate verified when its
// connection opened by a CA since taken out of the file identifies no
// caller from then on, on that connection too.
func WithClientCAFile(file string) CallerSourceOption {
	return func(s *CallerSource) { s.caFile = file }
}

// NewCallerSource reads file, which must parse: a server does not start with
// a broken callers file.
func NewCallerSource(file string, logger *slog.Logger, opts ...CallerSourceOption) (*CallerSource, error) {
	s := &CallerSource{file: file, logger: logger}
	for _, o := range opts {
		o(s)
	}
	changed := make(chan struct{})
	s.changed.Store(&changed)
	if _, err := s.reload(true); err != nil {
		return nil, err
	}
	return s, nil
}

// File is the callers file's path.
func (s *CallerSource) File() string { return s.file }

// Current is the callers as last read successfully.
func (s *CallerSource) Current() *Callers { return s.current.Load() }

// Changed is closed when the callers are next replaced.
func (s *CallerSource) Changed() <-chan struct{} { return *s.changed.Load() }

// Reload reads the file again now, whether or not it changed.
func (s *CallerSource) Reload() error {
	_, err := s.reload(true)
	return err
}

// Watch reads the file every second until ctx ends and reloads the callers
// when its contents changed.
func (s *CallerSource) Watch(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			_, _ = s.reload(false)
		}
	}
}

// reload parses the file if force or if its contents changed since the
// last reading, and reports whether it did. Failures are logged once per
// change of the file, not once per poll. The callers file and the client
// CA file are each kept as last read successfully: one that fails keeps
// the other's change in force all the same.
func (s *CallerSource) reload(force bool) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	contents, digest, err := readFiles(s.file)
	var ca [][]byte
	var caErr error
	if s.caFile != "" {
		var caDigest string
		ca, caDigest, caErr = readFiles(s.caFile)
		digest += caDigest
	}
	if !force && digest == s.digest {
		return false, nil
	}
	s.digest = digest
	previous := s.current.Load()
	var c *Callers
	if err == nil {
		c, err = ParseCallers(s.file, contents[0])
	}
	if err != nil {
		if previous == nil {
			return true, err
		}
		s.logger.Error("callers file not reloaded; the previous callers stay in force", "file", s.file, "err", err)
		c = &Callers{list: previous.list}
	}
	if s.caFile != "" {
		if caErr == nil {
			c.cas, caErr = caCertificates(s.caFile, ca[0])
		}
		if caErr != nil {
			caErr = fmt.Errorf("TLS client CA: %w", caErr)
			if previous == nil {
				return true, caErr
			}
			s.logger.Error("TLS client CA not reloaded with the callers; the previous one stays in force", "file", s.caFile, "err", caErr)
			c.cas = previous.cas
		}
	}
	if err != nil && caErr != nil {
		return true, errors.Join(err, caErr)
	}
	s.current.Store(c)
	next := make(chan struct{})
	close(*s.changed.Swap(&next))
	if previous != nil && err == nil {
		s.logger.Info("callers file reloaded", "file", s.file, "callers", c.Len())
	}
	return true, errors.Join(err, caErr)
}

// caCertificates returns the CAs of the PEM bundle read from file, those a
// pool of it holds, or an error if it holds none.
func caCertificates(file string, bundle []byte) (caSet, error) {
	cas := caSet{}
	for rest := bundle; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			continue // as x509.CertPool.AppendCertsFromPEM skips it
		}
		if ca, err := x509.ParseCertificate(block.Bytes); err == nil {
			cas.add(ca)
		}
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file) // as certPool says
	}
	return cas, nil
}

// readFiles reads files and returns their contents and a digest of them:
// the SHA-256 of each, so that a change is seen whatever it leaves of the
// modification time and size (a rotation that writes a same-sized file and
// keeps the time, a copy with cp -p). A failure to read is its own digest,
// so that it is logged once, not at every reading.
func readFiles(files ...string) ([][]byte, string, error) {
	contents := make([][]byte, len(files))
	digest := make([]byte, 0, len(files)*sha256.Size)
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, "unreadable: " + err.Error(), err
		}
		sum := sha256.Sum256(data)
		contents[i], digest = data, append(digest, sum[:]...)
	}
	return contents, string(digest), nil
}
