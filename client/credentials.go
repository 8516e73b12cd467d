package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// TokenFileRefresh is how old the copy of a WithTokenFile token may grow
// before a call reads the file again: as often as client-go reads a
// projected service-account token.
const TokenFileRefresh = time.Minute

// bearer is the metadata that carries token.
func bearer(token string) map[string]string {
	return map[string]string{"authorization": "bearer " + token}
}

// checkToken refuses a token the server could only refuse: empty, or with
// characters HTTP/2 headers cannot carry.
func checkToken(token, from string) error {
	if token == "" {
		return fmt.Errorf("usher client: the bearer token%s is empty", from)
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("usher client: the bearer token%s holds a character a header cannot carry (byte %d is 0x%02x)", from, i, c)
		}
	}
	return nil
}

// staticToken sends one token with every call.
type staticToken string

func newStaticToken(token string) (staticToken, error) {
	return staticToken(token), checkToken(token, "")
}

func (t staticToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return bearer(string(t)), nil
}

// RequireTransportSecurity is false because New has already decided where
// plaintext is allowed: loopback, or anywhere with WithInsecure.
func (staticToken) RequireTransportSecurity() bool { return false }

// tokenFile sends the token a file holds, read again when the copy is
// older than TokenFileRefresh.
type tokenFile struct {
	file string
	now  func() time.Time

	mu    sync.Mutex
	token string
	read  time.Time
}

func newTokenFile(file string) (*tokenFile, error) {
	t := &tokenFile{file: file, now: time.Now}
	token, err := t.readFile()
	if err != nil {
		return nil, err
	}
	t.token, t.read = token, t.now()
	return t, nil
}

func (t *tokenFile) readFile() (string, error) {
	data, err := os.ReadFile(t.file)
	if err != nil {
		return "", fmt.Errorf("usher client: token file: %w", err)
	}
	token := strings.TrimSpace(string(data))
	return token, checkToken(token, " in "+t.file)
}

func (t *tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := t.now(); now.Sub(t.read) >= TokenFileRefresh {
		// A file being rewritten, or gone for a moment, keeps the token
		// that worked; the next call past the refresh tries again.
		if token, err := t.readFile(); err == nil {
			t.token = token
		}
		t.read = now
	}
	return bearer(t.token), nil
}

func (*tokenFile) RequireTransportSecurity() bool { return false }

// certFiles is a client certificate and key in PEM files, loaded again at
// a handshake when their contents changed.
type certFiles struct {
	cert, key string

	mu      sync.Mutex
	digest  [sha256.Size]byte
	current *tls.Certificate
}

// get is tls.Config.GetClientCertificate: the pair as the files hold it
// now, or the last one that loaded when they do not load (a certificate
// written a moment before its key).
func (f *certFiles) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	pair, err := f.loadLocked()
	if err != nil && f.current != nil {
		return f.current, nil
	}
	return pair, err
}

func (f *certFiles) load() (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

func (f *certFiles) loadLocked() (*tls.Certificate, error) {
	certPEM, err1 := os.ReadFile(f.cert)
	keyPEM, err2 := os.ReadFile(f.key)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	digest := sha256.Sum256(bytes.Join([][]byte{certPEM, keyPEM}, []byte{0}))
	if f.current != nil && digest == f.digest {
		return f.current, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", f.cert, f.key, err)
	}
	f.digest, f.current = digest, &pair
	return f.current, nil
}
