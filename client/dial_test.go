package client_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/client"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/testpki"
)

func TestNewAllowsPlaintextOnlyOnLoopback(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		target  string
		opts    []client.Option
		refused string // in the error; "" when New succeeds
	}{
		{"a token to a loopback address in plaintext", "127.0.0.1:7070", []client.Option{client.WithToken(adminToken)}, ""},
		{"localhost", "localhost:7070", []client.Option{client.WithToken(adminToken)}, ""},
		{"IPv6 loopback", "[::1]:7070", []client.Option{client.WithToken(adminToken)}, ""},
		{"a resolver scheme", "dns:///localhost:7070", []client.Option{client.WithTokenFile(tokenFile)}, ""},
		{"a Unix socket", "unix:///run/usher.sock", []client.Option{client.WithToken(adminToken)}, ""},
		{"a token off loopback in plaintext is refused", "usher.internal:7070", []client.Option{client.WithToken(adminToken)}, "not a loopback address"},
		{"plaintext off loopback is refused even without a token", "10.0.0.7:7070", nil, "WithInsecure"},
		{"a resolver scheme off loopback", "dns:///usher.internal:7070", []client.Option{client.WithToken(adminToken)}, "not a loopback address"},
		{"WithInsecure allows plaintext anywhere", "usher.internal:7070", []client.Option{client.WithToken(adminToken), client.WithInsecure()}, ""},
		{"TLS anywhere", "usher.internal:7070", []client.Option{client.WithToken(adminToken), client.WithTLS("", "", "")}, ""},
		{"TLS and insecure together", "usher.internal:7070", []client.Option{client.WithTLS("", "", ""), client.WithInsecure()}, "give one"},
		{"two kinds of TLS", "usher.internal:7070", []client.Option{client.WithTLS("", "", ""), client.WithTLSConfig(&tls.Config{})}, "give one"},
		{"a token and a token file", "127.0.0.1:7070", []client.Option{client.WithToken(adminToken), client.WithTokenFile(tokenFile)}, "give one"},
		{"an empty token", "127.0.0.1:7070", []client.Option{client.WithToken("")}, "empty"},
		{"a token a header cannot carry", "127.0.0.1:7070", []client.Option{client.WithToken("two words")}, "header"},
		{"no token file named", "127.0.0.1:7070", []client.Option{client.WithTokenFile("")}, "token file"},
		{"a missing token file", "127.0.0.1:7070", []client.Option{client.WithTokenFile(filepath.Join(dir, "missing"))}, "token file"},
		{"a certificate without its key", "usher.internal:7070", []client.Option{client.WithTLS("", "client.crt", "")}, "give both"},
		{"a CA file that is not PEM", "usher.internal:7070", []client.Option{client.WithTLS(tokenFile, "", "")}, "no PEM certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(tc.target, tc.opts...)
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("New(%s): %v", tc.target, err)
			case tc.refused == "":
				c.Close()
			case err == nil:
				c.Close()
				t.Fatalf("New(%s) succeeded; want an error saying %q", tc.target, tc.refused)
			case !strings.Contains(err.Error(), tc.refused):
				t.Fatalf("New(%s): %v; want it to say %q", tc.target, err, tc.refused)
			}
		})
	}
}

func TestTokensAuthenticateCallers(t *testing.T) {
	w := newWorld(t)
	w.grant("user:alice", "call-member", meeting7)

	sidecar := w.client(client.WithToken(sidecarToken))
	if ok, _, err := sidecar.Check(callCtx(t), "user:alice", "join-call", meeting7); err != nil || !ok {
		t.Fatalf("a check caller's Check: %v, %v; want allowed", ok, err)
	}
	_, err := sidecar.Admin.Grant(callCtx(t), &usherv1.GrantRequest{Subject: "user:bob", Role: "host", Resource: meeting7})
	if !client.IsDenied(err) || client.Reason(err) != client.ReasonCallerKind {
		t.Fatalf("a check caller's Grant: %v; want PermissionDenied, CALLER_KIND", err)
	}
	var e *client.Error
	if !errors.As(err, &e) || e.Metadata["caller"] != "sidecar" || e.Metadata["kind"] != "check" {
		t.Fatalf("the refusal's metadata: %+v; want it to name the sidecar caller and its kind", e)
	}

	for _, tc := range []struct {
		name   string
		opts   []client.Option
		reason string
	}{
		{"no token", nil, client.ReasonNoCredentials},
		{"a token no caller has", []client.Option{client.WithToken("not-a-callers-token")}, client.ReasonBadToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := w.client(tc.opts...).Check(callCtx(t), "user:alice", "join-call", meeting7)
			if !client.IsUnauthenticated(err) || client.Reason(err) != tc.reason {
				t.Fatalf("Check: %v; want Unauthenticated, %s", err, tc.reason)
			}
		})
	}
}

func TestMutualTLSIdentifiesCallersByCertificate(t *testing.T) {
	w := newWorld(t, withTLS())
	grant := func(c *client.Client) error {
		_, err := c.Admin.Grant(callCtx(t), &usherv1.GrantRequest{Subject: "user:carol", Role: "host", Resource: meeting7})
		return err
	}

	// The console's certificate makes it an admin caller.
	console := dial(t, w.addr, client.WithTLS(w.caFile, w.certFile, w.keyFile))
	if err := grant(console); err != nil {
		t.Fatalf("Grant by the console's certificate: %v", err)
	}

	// The same, from a tls.Config.
	pool := x509.NewCertPool()
	pool.AddCert(w.ca.Cert)
	pair, err := tls.LoadX509KeyPair(w.certFile, w.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	fromConfig := dial(t, w.addr, client.WithTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}))
	if err := grant(fromConfig); err != nil {
		t.Fatalf("Grant with WithTLSConfig: %v", err)
	}

	// A certificate of the CA that the callers file does not name.
	cert, key := w.ca.Client(t, pkix.Name{CommonName: "stranger"}).Write(t, t.TempDir(), "stranger")
	err = grant(dial(t, w.addr, client.WithTLS(w.caFile, cert, key)))
	if !client.IsUnauthenticated(err) || client.Reason(err) != client.ReasonUnknownCertificate {
		t.Fatalf("Grant by an unknown certificate: %v; want Unauthenticated, UNKNOWN_CERTIFICATE", err)
	}

	// A token over TLS needs no certificate.
	if err := grant(dial(t, w.addr, client.WithTLS(w.caFile, "", ""), client.WithToken(adminToken))); err != nil {
		t.Fatalf("Grant with a token over TLS: %v", err)
	}

	// A server whose certificate the client's CA did not sign.
	other := testpki.NewCA(t, "another CA")
	otherFile := filepath.Join(t.TempDir(), "other.crt")
	testpki.WriteFile(t, otherFile, other.PEM())
	err = grant(dial(t, w.addr, client.WithTLS(otherFile, "", ""), client.WithToken(adminToken)))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Grant to a server of another CA: %v; want Unavailable over its certificate", err)
	}
}
