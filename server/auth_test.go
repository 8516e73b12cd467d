package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/testpki"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

// authWorld is a server that authenticates callers over TLS with client
// certificates, the callers file it reads, and the credentials of its
// callers.
type authWorld struct {
	t     *testing.T
	addr  string
	store *bolt.Store
	logs  *logBuffer

	callersFile               string
	certFile, keyFile, caFile string
	ca, foreignCA             *testpki.CA
	adminToken, checkToken    string
	adminCert, checkCert      testpki.Pair
	strangerCert, forgedCert  testpki.Pair
	serverCert                testpki.Pair
}

// The callers file of authWorld: a check and an admin caller by token, and
// the same by certificate subject.
const authCallers = `callers:
  - name: sidecar-eu1
    kind: check
    token_sha256: %s
  - name: backend
    kind: admin
    token_sha256: %s
  - name: console
    kind: admin
    certificate_subject: CN=console,O=acme
  - name: sidecar-us1
    kind: check
    certificate_subject: CN=sidecar-us1,O=acme
  - name: recorder
    kind: admin
    certificate_subject: CN=recorder,OU=media,OU=eu,O=acme,DC=acme,DC=com
`

func newAuthWorld(t *testing.T) *authWorld {
	t.Helper()
	dir := t.TempDir()
	w := &authWorld{t: t, logs: &logBuffer{}, ca: testpki.NewCA(t, "acme CA"), foreignCA: testpki.NewCA(t, "foreign CA")}
	w.adminToken, w.checkToken = newToken(t), newToken(t)
	w.adminCert = w.ca.Client(t, pkix.Name{CommonName: "console", Organization: []string{"acme"}})
	w.checkCert = w.ca.Client(t, pkix.Name{CommonName: "sidecar-us1", Organization: []string{"acme"}})
	w.strangerCert = w.ca.Client(t, pkix.Name{CommonName: "stranger", Organization: []string{"acme"}})
	// The foreign CA issues a certificate with the admin's very subject.
	w.forgedCert = w.foreignCA.Client(t, pkix.Name{CommonName: "console", Organization: []string{"acme"}})
	w.serverCert = w.ca.Server(t, "usher")
	w.certFile, w.keyFile = w.serverCert.Write(t, dir, "server")
	w.caFile = filepath.Join(dir, "client-ca.crt")
	testpki.WriteFile(t, w.caFile, w.ca.PEM())
	w.callersFile = filepath.Join(dir, "callers.yaml")
	writeCallers(t, w.callersFile, fmt.Sprintf(authCallers, hashOf(w.checkToken), hashOf(w.adminToken)))

	logger := w.logs.logger()
	src, err := server.NewCallerSource(w.callersFile, logger, server.WithClientCAFile(w.caFile))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { src.Watch(ctx); close(watched) }()
	t.Cleanup(func() { cancel(); <-watched })
	tlsConfig, err := server.NewTLSConfig(server.TLSFiles{Cert: w.certFile, Key: w.keyFile, ClientCA: w.caFile}, logger, server.WithCallersOfClientCA(src))
	if err != nil {
		t.Fatal(err)
	}
	envoy, err := server.NewEnvoyService(server.EnvoyConfig{
		Subject: server.EnvoySubject{Header: "x-user-id", Prefix: "user:"},
		Rules:   []server.EnvoyRule{{Method: "GET", Path: "/", Resource: "root", Permission: "join-call"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.addr, w.store = serveWith(t, dir, logger, server.WithCallers(src), server.WithEnvoy(envoy), grpc.Creds(credentials.NewTLS(tlsConfig)))
	return w
}

// serveWith wires a server as `usher serve` does, with the default policy,
// passing opts to server.New, and returns its address and store.
func serveWith(t *testing.T, dir string, logger *slog.Logger, opts ...grpc.ServerOption) (string, *bolt.Store) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, lis, dir, logger, opts...)
}

// serveOn is serveWith on a listener of the caller's.
func serveOn(t *testing.T, lis net.Listener, dir string, logger *slog.Logger, opts ...grpc.ServerOption) (string, *bolt.Store) {
	t.Helper()
	store, err := bolt.Open(filepath.Join(dir, "usher.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := authz.Start(context.Background(), store, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, server.FromPolicy(msg), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	srv := server.New(engine, logger, opts...)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
		if err := store.Close(); err != nil {
			t.Errorf("store.Close: %v", err)
		}
	})
	return lis.Addr().String(), store
}

// bearer sends a token as "authorization: bearer <token>" on every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// credential is how a test client presents itself.
type credential struct {
	token  string
	header string // a raw authorization header, instead of a token
	cert   *testpki.Pair
}

// dial connects to the world's server over TLS, trusting its CA, with cred.
func (w *authWorld) dial(cred credential) *grpc.ClientConn {
	w.t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(w.ca.Cert)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cred.cert != nil {
		pair, err := tls.X509KeyPair(cred.cert.CertPEM, cred.cert.KeyPEM)
		if err != nil {
			w.t.Fatal(err)
		}
		// Sent whatever CAs the server says it accepts, as an attacker would.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	switch {
	case cred.token != "":
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(cred.token)))
	case cred.header != "":
		opts = append(opts, grpc.WithPerRPCCredentials(rawHeader(cred.header)))
	}
	conn, err := grpc.NewClient(w.addr, opts...)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { conn.Close() })
	return conn
}

// rawHeader sends an authorization header as given.
type rawHeader string

func (h rawHeader) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(h)}, nil
}
func (rawHeader) RequireTransportSecurity() bool { return false }

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func checkCall(t *testing.T, conn *grpc.ClientConn) error {
	_, err := usherv1.NewAuthorizationServiceClient(conn).Check(callCtx(t),
		&usherv1.CheckRequest{Subject: "user:dana", Permission: "join-call", Resource: "root"})
	return err
}

// envoyCall asks what authWorld's Envoy service answers for user:dana's
// GET /, as Envoy's ext_authz filter would: an error only when the call
// itself fails.
func envoyCall(t *testing.T, conn *grpc.ClientConn) error {
	resp, err := authv3.NewAuthorizationClient(conn).Check(callCtx(t), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/", Headers: map[string]string{"x-user-id": "dana"}}},
	}})
	if err == nil && resp.GetHttpResponse() == nil {
		t.Errorf("Envoy's Check answered without an HTTP response: %v", resp)
	}
	return err
}

// grantCall grants subject the host role on root.
func grantCall(t *testing.T, conn *grpc.ClientConn, subject string) (*usherv1.GrantResponse, error) {
	return usherv1.NewAdminServiceClient(conn).Grant(callCtx(t),
		&usherv1.GrantRequest{Subject: subject, Role: "host", Resource: "root"})
}

// lastCaller is the caller the change log recorded for the newest write.
func (w *authWorld) lastCaller() (string, authz.Revision) {
	w.t.Helper()
	rev, err := w.store.Revision(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	changes, err := w.store.Changes(context.Background(), rev-1, 1)
	if err != nil || len(changes) != 1 {
		w.t.Fatalf("Changes(%d): %v, %d records", rev-1, err, len(changes))
	}
	return changes[0].Caller, rev
}

func TestCallsWithoutValidCredentialsAreUnauthenticated(t *testing.T) {
	w := newAuthWorld(t)
	cases := []struct {
		name    string
		cred    credential
		want    string
		details refusal
	}{
		{"a call without credentials is UNAUTHENTICATED", credential{}, "no credentials", refusal{reason: "NO_CREDENTIALS"}},
		{"an unknown bearer token is UNAUTHENTICATED", credential{token: newToken(t)}, "matches no caller", refusal{reason: "BAD_TOKEN"}},
		{"the stored hash is not a token", credential{token: hashOf(w.adminToken)}, "matches no caller", refusal{reason: "BAD_TOKEN"}},
		{"an authorization header without the bearer scheme is UNAUTHENTICATED", credential{header: "basic " + w.adminToken}, "bearer <token>",
			refusal{reason: "MALFORMED_AUTHORIZATION"}},
		{"an empty bearer token is no token, and identifies no caller", credential{header: "bearer "}, "bearer <token>",
			refusal{reason: "MALFORMED_AUTHORIZATION"}},
		{"a client certificate of the CA that no caller names is UNAUTHENTICATED", credential{cert: &w.strangerCert}, `"CN=stranger,O=acme" matches no caller`,
			refusal{reason: "UNKNOWN_CERTIFICATE", meta: map[string]string{"certificate_subject": "CN=stranger,O=acme"}}},
		{"a wrong token is refused even with a good certificate", credential{token: newToken(t), cert: &w.adminCert}, "matches no caller", refusal{reason: "BAD_TOKEN"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn := w.dial(c.cred)
			st := wantCode(t, checkCall(t, conn), codes.Unauthenticated)
			if !strings.Contains(st.Message(), c.want) {
				t.Errorf("message %q does not say %q", st.Message(), c.want)
			}
			wantDetails(t, st, c.details)
			wantDetails(t, wantCode(t, envoyCall(t, conn), codes.Unauthenticated), c.details)
			rev, _ := w.store.Revision(context.Background())
			_, err := grantCall(t, conn, "user:dana")
			wantDetails(t, wantCode(t, err, codes.Unauthenticated), c.details)
			if now, _ := w.store.Revision(context.Background()); now != rev {
				t.Errorf("an unauthenticated Grant moved the revision from %d to %d", rev, now)
			}
		})
	}
	// The logging interceptor sits outside authentication, so refusals are
	// logged.
	if !strings.Contains(w.logs.String(), "grpc.code=Unauthenticated") {
		t.Errorf("refused calls were not logged; logs:\n%s", w.logs.String())
	}
}

// grpc-go decodes a unary request before any interceptor runs, and 4 MiB of
// empty repeated entries decode into some 70 times that: a call that
// authentication refuses is refused before its request is decoded, with
// the status it always had.
func TestRefusedCallsAreNotDecoded(t *testing.T) {
	w := newAuthWorld(t)
	// Each entry is an empty message or string: a tag and a zero length.
	entries := func(tag byte) []byte { return bytes.Repeat([]byte{tag, 0}, (server.MaxMessageSize-64)/2) }
	// Envoy's headers: attributes (1), request (4), http (2), header_map
	// (13), its headers (1) repeated.
	nest := func(field protowire.Number, inner []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), inner)
	}
	envoy := nest(1, nest(4, nest(2, nest(13, entries(0x0a)[:server.MaxMessageSize-128]))))
	// A policy (1) of empty admission rules (7).
	policy := nest(1, entries(0x3a)[:server.MaxMessageSize-128])
	for _, c := range []struct {
		name, method string
		body         []byte
		cred         credential
		code         codes.Code
		reason       string
		field, value string
	}{
		{"a CheckBatch of two million checks without credentials", "/usher.v1.AuthorizationService/CheckBatch", entries(0x0a), credential{},
			codes.Unauthenticated, "NO_CREDENTIALS", "", ""},
		{"Envoy's Check of two million headers with a wrong token", "/envoy.service.auth.v3.Authorization/Check", envoy, credential{token: newToken(t)},
			codes.Unauthenticated, "BAD_TOKEN", "", ""},
		{"a Block of two million permissions by a check caller", "/usher.v1.AdminService/Block", entries(0x1a), credential{token: w.checkToken},
			codes.PermissionDenied, "CALLER_KIND", "", ""},
		{"an admin's ApplyPolicy of two million admission rules", "/usher.v1.AdminService/ApplyPolicy", policy, credential{token: w.adminToken},
			codes.InvalidArgument, "INVALID_FIELD", "policy.admissions", "2097088"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := w.dial(c.cred)
			wantCode(t, invokeRaw(callCtx(t), conn, c.method, []byte{}), c.code) // connected
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			const calls = 3
			for range calls {
				wantDetails(t, wantCode(t, invokeRaw(callCtx(t), conn, c.method, c.body), c.code), refusal{reason: c.reason, field: c.field, value: c.value})
			}
			runtime.ReadMemStats(&after)
			// Client and server: the request's 4 MiB written and read over
			// TLS. Decoded, it took 280 MB.
			if per := (after.TotalAlloc - before.TotalAlloc) / calls; per > 4*uint64(len(c.body)) {
				t.Errorf("each refused call of %d bytes allocated %d bytes; want at most 4 times the request", len(c.body), per)
			}
		})
	}
	// An admin's batch is refused for its size as ever.
	err := invokeRaw(callCtx(t), w.dial(credential{token: w.adminToken}), "/usher.v1.AuthorizationService/CheckBatch", entries(0x0a))
	wantDetails(t, wantCode(t, err, codes.InvalidArgument), refusal{reason: "INVALID_FIELD", field: "checks", value: "2097120"})
}

func TestCheckCallersMayOnlyCallTheChecksOfUsherAndEnvoy(t *testing.T) {
	w := newAuthWorld(t)
	for _, c := range []struct {
		name, caller string
		cred         credential
	}{
		{"a check caller by token", "sidecar-eu1", credential{token: w.checkToken}},
		{"a check caller by certificate", "sidecar-us1", credential{cert: &w.checkCert}},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := w.dial(c.cred)
			if err := checkCall(t, conn); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if _, err := usherv1.NewAuthorizationServiceClient(conn).ListPermissions(callCtx(t),
				&usherv1.ListPermissionsRequest{Subject: "user:dana", Resource: "root"}); err != nil {
				t.Fatalf("ListPermissions: %v", err)
			}
			// Envoy is a check caller: its ext_authz filter asks only this.
			if err := envoyCall(t, conn); err != nil {
				t.Fatalf("Envoy's Check: %v", err)
			}
			rev, _ := w.store.Revision(context.Background())
			_, err := grantCall(t, conn, "user:dana")
			st := wantCode(t, err, codes.PermissionDenied)
			for _, want := range []string{fmt.Sprintf("%q", c.caller), "check caller", "/usher.v1.AdminService/Grant",
				"may call only usher.v1.AuthorizationService, usher.v1.AdmissionService and envoy.service.auth.v3.Authorization"} {
				if !strings.Contains(st.Message(), want) {
					t.Errorf("message %q does not name %s", st.Message(), want)
				}
			}
			wantDetails(t, st, refusal{reason: "CALLER_KIND",
				meta: map[string]string{"caller": c.caller, "kind": "check", "method": "/usher.v1.AdminService/Grant"}})
			if now, _ := w.store.Revision(context.Background()); now != rev {
				t.Errorf("a refused Grant moved the revision from %d to %d", rev, now)
			}
			if _, err := usherv1.NewAdminServiceClient(conn).ExportPolicy(callCtx(t), &usherv1.ExportPolicyRequest{}); status.Code(err) != codes.PermissionDenied {
				t.Errorf("ExportPolicy by a check caller: %v; want PermissionDenied", err)
			}
		})
	}
	admin := w.dial(credential{token: w.adminToken})
	grants, err := usherv1.NewAdminServiceClient(admin).ListGrants(callCtx(t), &usherv1.ListGrantsRequest{Subject: "user:dana"})
	if err != nil || len(grants.GetGrants()) != 0 {
		t.Fatalf("after refused Grants: %v, grants %v; want none", err, grants.GetGrants())
	}
	if err := envoyCall(t, admin); err != nil {
		t.Fatalf("Envoy's Check by an admin caller: %v", err)
	}
}

func TestAdminCallersWriteUnderTheirName(t *testing.T) {
	w := newAuthWorld(t)
	for _, c := range []struct {
		name, caller string
		cred         credential
	}{
		{"an admin caller by token", "backend", credential{token: w.adminToken}},
		{"an admin caller by client certificate", "console", credential{cert: &w.adminCert}},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := w.dial(c.cred)
			resp, err := grantCall(t, conn, "user:granted-by-"+c.caller)
			if err != nil {
				t.Fatalf("Grant: %v", err)
			}
			caller, rev := w.lastCaller()
			if uint64(rev) != resp.GetRevision() || caller != c.caller {
				t.Errorf("change log: revision %d by %q; want revision %d by %q", rev, caller, resp.GetRevision(), c.caller)
			}
			if err := checkCall(t, conn); err != nil {
				t.Errorf("an admin caller's Check: %v", err)
			}
		})
	}
}

func TestACertificateFromAnotherCAIsRefused(t *testing.T) {
	w := newAuthWorld(t)
	// It carries the admin's subject: only the CA tells them apart.
	conn := w.dial(credential{cert: &w.forgedCert})
	_, err := grantCall(t, conn, "user:dana")
	if code := status.Code(err); code != codes.Unavailable && code != codes.Unauthenticated {
		t.Fatalf("Grant with a foreign CA's certificate: %v; want a failed handshake or Unauthenticated", err)
	}
	if rev, _ := w.store.Revision(context.Background()); rev != 1 {
		t.Fatalf("revision %d after the refused Grant; want 1", rev)
	}
}

// A certificate's subject is compared as RFC 2253 writes it, as openssl
// x509 -subject -nameopt RFC2253 prints it: all of it, in its order.
func TestACertificatesSubjectIsReadAsRFC2253WritesIt(t *testing.T) {
	w := newAuthWorld(t)
	var (
		cn = asn1.ObjectIdentifier{2, 5, 4, 3}
		o  = asn1.ObjectIdentifier{2, 5, 4, 10}
		ou = asn1.ObjectIdentifier{2, 5, 4, 11}
		dc = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}
	)
	// names makes a subject of one attribute per relative name, in order.
	names := func(atvs ...pkix.AttributeTypeAndValue) pkix.Name { return pkix.Name{ExtraNames: atvs} }
	atv := func(oid asn1.ObjectIdentifier, v string) pkix.AttributeTypeAndValue {
		return pkix.AttributeTypeAndValue{Type: oid, Value: v}
	}
	rev, _ := w.store.Revision(context.Background())

	recorder := w.ca.Client(t, names(atv(dc, "com"), atv(dc, "acme"), atv(o, "acme"), atv(ou, "eu"), atv(ou, "media"), atv(cn, "recorder")))
	if _, err := grantCall(t, w.dial(credential{cert: &recorder}), "user:dana"); err != nil {
		t.Errorf("Grant by a certificate of the subject the callers file names as openssl prints it: %v", err)
	} else if caller, now := w.lastCaller(); caller != "recorder" {
		t.Errorf("change log caller %q; want recorder", caller)
	} else {
		rev = now
	}

	for _, c := range []struct {
		name, subject string
		issue         func() testpki.Pair
	}{
		{"a certificate with the admin's common name after another is not the admin's", "CN=console,CN=stranger,O=acme",
			func() testpki.Pair {
				return w.ca.Client(t, names(atv(o, "acme"), atv(cn, "stranger"), atv(cn, "console")))
			}},
		{"a certificate whose one relative name holds the admin's attributes is not the admin's", "CN=console+O=acme",
			func() testpki.Pair {
				raw, err := asn1.Marshal(pkix.RDNSequence{{{Type: o, Value: "acme"}, {Type: cn, Value: "console"}}})
				if err != nil {
					t.Fatal(err)
				}
				return w.ca.ClientRaw(t, raw)
			}},
		{"a certificate with the admin's attributes in another order is not the admin's", "O=acme,CN=console",
			func() testpki.Pair { return w.ca.Client(t, names(atv(cn, "console"), atv(o, "acme"))) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cert := c.issue()
			_, err := grantCall(t, w.dial(credential{cert: &cert}), "user:mallory")
			st := wantCode(t, err, codes.Unauthenticated)
			if want := fmt.Sprintf("%q matches no caller", c.subject); !strings.Contains(st.Message(), want) {
				t.Errorf("message %q does not say %s", st.Message(), want)
			}
			wantDetails(t, st, refusal{reason: "UNKNOWN_CERTIFICATE", meta: map[string]string{"certificate_subject": c.subject}})
			if now, _ := w.store.Revision(context.Background()); now != rev {
				t.Errorf("a refused Grant moved the revision from %d to %d", rev, now)
			}
		})
	}
}

// watching opens a Watch on conn and reads its first message, which says
// the stream runs; before says when, for the failure.
func watching(t *testing.T, conn *grpc.ClientConn, before string) usherv1.AuthorizationService_WatchClient {
	t.Helper()
	stream, err := usherv1.NewAuthorizationServiceClient(conn).Watch(callCtx(t), &usherv1.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Watch %s: %v", before, err)
	}
	return stream
}

// endOf reads stream until it ends, and returns the last message it sent
// and how it ended.
func endOf(stream usherv1.AuthorizationService_WatchClient) (*usherv1.WatchResponse, error) {
	var last *usherv1.WatchResponse
	for {
		resp, err := stream.Recv()
		if err != nil {
			return last, err
		}
		last = resp
	}
}

// A client certificate is good until it expires, not for as long as the
// connection it came on lasts: once it has, the calls that connection
// carries are refused, and the streams it opened end, as a new
// connection's handshake would be refused.
func TestAnExpiredClientCertificateIsRefusedOnTheConnectionItOpened(t *testing.T) {
	w := newAuthWorld(t)
	expires := time.Now().Add(4 * time.Second).Truncate(time.Second)
	cert := w.ca.ClientUntil(t, pkix.Name{CommonName: "console", Organization: []string{"acme"}}, expires)
	conn := w.dial(credential{cert: &cert})
	stream := watching(t, conn, "before the certificate expired")
	if _, err := grantCall(t, conn, "user:dana"); err != nil {
		t.Fatalf("Grant before the certificate expired: %v", err)
	}
	rev, _ := w.store.Revision(context.Background())

	// The stream ends once the certificate has expired.
	resp, err := endOf(stream)
	want := refusal{reason: "EXPIRED_CERTIFICATE", meta: map[string]string{"certificate_subject": "CN=console,O=acme"}}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the Watch of a certificate expired at %s: last sent %v, ended %v; want it ended Unauthenticated", expires, resp, err)
	}
	wantDetails(t, status.Convert(err), want)

	_, err = grantCall(t, conn, "user:erin")
	st := wantCode(t, err, codes.Unauthenticated)
	if !strings.Contains(st.Message(), "expired") {
		t.Errorf("message %q does not say the certificate expired", st.Message())
	}
	wantDetails(t, st, want)
	if now, _ := w.store.Revision(context.Background()); now != rev {
		t.Errorf("a Grant with an expired certificate moved the revision from %d to %d", rev, now)
	}
}

// A client certificate identifies its caller only while the CA that
// verified it is in the client CA file: once the operator takes the CA out
// (its key leaked, say), the connections it verified are refused and their
// streams end, as a new connection's handshake would be refused, rather
// than stay identified for as long as they stay open.
func TestACertificateWhoseCALeftTheClientCAFileIsRefusedOnItsConnection(t *testing.T) {
	w := newAuthWorld(t)
	conn := w.dial(credential{cert: &w.adminCert})
	stream := watching(t, conn, "before the CA was taken out")
	if _, err := grantCall(t, conn, "user:dana"); err != nil {
		t.Fatalf("Grant before the CA was taken out: %v", err)
	}
	tokens := w.dial(credential{token: w.adminToken})
	rev, _ := w.store.Revision(context.Background())

	testpki.WriteFile(t, w.caFile, w.foreignCA.PEM()) // read at the next poll
	resp, err := endOf(stream)
	want := refusal{reason: "UNTRUSTED_CERTIFICATE", meta: map[string]string{"certificate_subject": "CN=console,O=acme"}}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the Watch of a certificate whose CA was taken out: last sent %v, ended %v; want it ended Unauthenticated", resp, err)
	}
	wantDetails(t, status.Convert(err), want)

	_, err = grantCall(t, conn, "user:erin")
	st := wantCode(t, err, codes.Unauthenticated)
	if !strings.Contains(st.Message(), `"CN=console,O=acme" was verified by a CA no longer in the client CA file`) {
		t.Errorf("message %q does not say the certificate's CA left the client CA file", st.Message())
	}
	wantDetails(t, st, want)
	if now, _ := w.store.Revision(context.Background()); now != rev {
		t.Errorf("a Grant with a certificate whose CA was taken out moved the revision from %d to %d", rev, now)
	}
	// A caller by token is let be, and the file's CA now identifies.
	if _, err := grantCall(t, tokens, "user:erin"); err != nil {
		t.Errorf("Grant by token after the CA was taken out: %v", err)
	}
	if _, err := grantCall(t, w.dial(credential{cert: &w.forgedCert}), "user:frank"); err != nil {
		t.Errorf("Grant by a certificate of the CA put in the file: %v", err)
	}
}

// The client CA file is read with the callers file but is its own file: a
// callers file that does not parse keeps the callers in force, not the CAs
// the handshake already verifies by, so that a certificate the handshake
// admitted is not refused as verified by a CA outside the file.
func TestACAPutInTheClientCAFileIdentifiesWhileTheCallersFileIsBroken(t *testing.T) {
	w := newAuthWorld(t)
	writeCallers(t, w.callersFile, "callers: [{name: half-written\n")
	testpki.WriteFile(t, w.caFile, append(w.ca.PEM(), w.foreignCA.PEM()...))
	// The foreign CA's certificate has console's subject.
	if _, err := grantCall(t, w.dial(credential{cert: &w.forgedCert}), "user:frank"); err != nil {
		t.Errorf("Grant by a certificate of a CA put in the client CA file, the callers file broken: %v", err)
	} else if caller, _ := w.lastCaller(); caller != "console" {
		t.Errorf("the Grant was written by %q; want console", caller)
	}
}

// A CA renewed in the client CA file, its certificate issued again with
// the same name and key, is the CA that verified the connections open: they
// stay identified, as a new connection's handshake would verify them.
func TestACARenewedInTheClientCAFileStillIdentifiesOnOpenConnections(t *testing.T) {
	w := newAuthWorld(t)
	conn := w.dial(credential{cert: &w.adminCert})
	stream := watching(t, conn, "before the CA was renewed")

	testpki.WriteFile(t, w.caFile, w.ca.Renewed(t).PEM())
	// A new connection's handshake reads the renewed CA, and has the
	// callers read it too.
	if err := checkCall(t, w.dial(credential{cert: &w.checkCert})); err != nil {
		t.Fatalf("Check on a connection the renewed CA verified: %v", err)
	}
	resp, err := grantCall(t, conn, "user:erin")
	if err != nil {
		t.Fatalf("Grant on a connection the CA verified before it was renewed: %v", err)
	}
	for {
		got, err := stream.Recv()
		if err != nil {
			t.Fatalf("the Watch of a connection the CA verified before it was renewed ended: %v", err)
		}
		if got.GetChange().GetRevision() == resp.GetRevision() {
			break
		}
	}
}

func TestHealthNeedsNoCredentials(t *testing.T) {
	w := newAuthWorld(t)
	resp, err := healthpb.NewHealthClient(w.dial(credential{})).Check(callCtx(t), &healthpb.HealthCheckRequest{Service: "usher.v1.AuthorizationService"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check without credentials: %v, %v", resp, err)
	}
}

func TestReflectionNeedsAnAuthenticatedCaller(t *testing.T) {
	w := newAuthWorld(t)
	list := func(conn *grpc.ClientConn) error {
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(callCtx(t))
		if err != nil {
			return err
		}
		// A stream the server has already refused reports io.EOF on Send;
		// Recv then returns the status it ended with.
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	wantCode(t, list(w.dial(credential{})), codes.Unauthenticated)
	if err := list(w.dial(credential{token: w.checkToken})); err != nil {
		t.Fatalf("reflection for a check caller: %v", err)
	}
	if err := list(w.dial(credential{cert: &w.adminCert})); err != nil {
		t.Fatalf("reflection for an admin caller: %v", err)
	}
}

func TestCallersFileChangesTakeEffectWithoutRestart(t *testing.T) {
	w := newAuthWorld(t)
	newcomer := newToken(t)
	oldAdmin := w.dial(credential{token: w.adminToken})
	if _, err := grantCall(t, oldAdmin, "user:dana"); err != nil {
		t.Fatalf("Grant before the change: %v", err)
	}
	// The backend's token is replaced by the newcomer's.
	writeCallers(t, w.callersFile, fmt.Sprintf(`callers:
  - {name: sidecar-eu1, kind: check, token_sha256: %s}
  - {name: newcomer, kind: admin, token_sha256: %s}
`, hashOf(w.checkToken), hashOf(newcomer)))
	newAdmin := w.dial(credential{token: newcomer})
	eventually(t, 5*time.Second, "the added token is accepted", func() bool {
		_, err := usherv1.NewAdminServiceClient(newAdmin).ExportPolicy(callCtx(t), &usherv1.ExportPolicyRequest{})
		return err == nil
	})
	wantCode(t, checkCall(t, oldAdmin), codes.Unauthenticated)
	if _, err := usherv1.NewAdminServiceClient(newAdmin).Revoke(callCtx(t), &usherv1.RevokeRequest{Subject: "user:dana", Role: "host", Resource: "root"}); err != nil {
		t.Fatalf("Revoke by the newcomer: %v", err)
	}
	if caller, _ := w.lastCaller(); caller != "newcomer" {
		t.Errorf("change log caller %q; want newcomer", caller)
	}

	// A broken file keeps the callers in force and says why.
	writeCallers(t, w.callersFile, "callers:\n  - {name: newcomer, kind: wizard, token_sha256: "+hashOf(newcomer)+"}\n")
	eventually(t, 5*time.Second, "the broken file is reported", func() bool {
		return strings.Contains(w.logs.String(), `callers[0].kind \"wizard\"`)
	})
	if err := checkCall(t, newAdmin); err != nil {
		t.Fatalf("after a broken callers file, the previous callers stay: %v", err)
	}
}

// A caller removed from the callers file keeps no stream it opened before:
// its Watch ends with the refusal a new call would get, whether it came
// with a token or a certificate, while a caller that stays keeps its own.
func TestARemovedCallersOpenStreamsEnd(t *testing.T) {
	w := newAuthWorld(t)
	admin := w.dial(credential{token: w.adminToken})
	// next is the next change the stream sends, past progress messages.
	next := func(stream usherv1.AuthorizationService_WatchClient) (*usherv1.ChangeRecord, error) {
		for {
			resp, err := stream.Recv()
			if err != nil || resp.GetChange() != nil {
				return resp.GetChange(), err
			}
		}
	}
	streams := map[string]usherv1.AuthorizationService_WatchClient{
		"a check caller by token":       watching(t, w.dial(credential{token: w.checkToken}), "of a check caller by token"),
		"a check caller by certificate": watching(t, w.dial(credential{cert: &w.checkCert}), "of a check caller by certificate"),
		"an admin that stays":           watching(t, admin, "of an admin that stays"),
	}
	if _, err := grantCall(t, admin, "user:dana"); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	for name, stream := range streams {
		if _, err := next(stream); err != nil {
			t.Fatalf("%s: the first change: %v", name, err)
		}
	}
	writeCallers(t, w.callersFile, fmt.Sprintf("callers:\n  - {name: backend, kind: admin, token_sha256: %s}\n", hashOf(w.adminToken)))
	eventually(t, 5*time.Second, "the removed callers are refused", func() bool {
		return status.Code(checkCall(t, w.dial(credential{token: w.checkToken}))) == codes.Unauthenticated
	})
	if _, err := grantCall(t, admin, "user:erin"); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	for _, name := range []string{"a check caller by token", "a check caller by certificate"} {
		change, err := next(streams[name])
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s removed from the callers file: its Watch sent %v, %v; want it ended Unauthenticated", name, change, err)
		}
	}
	if _, err := next(streams["an admin that stays"]); err != nil {
		t.Errorf("the admin that stays: its Watch ended: %v", err)
	}
}

// rewriteKeepingStat writes data over file in place, as an editor or a
// rotation that keeps the modification time (cp -p, rsync -t) does, and
// fails the test unless the file's size and modification time are what
// they were: only its contents tell that it changed.
func rewriteKeepingStat(t *testing.T, file string, data []byte) {
	t.Helper()
	before, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(file, time.Time{}, before.ModTime()); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("%s: rewritten with size %d and time %s, want %d and %s", file, after.Size(), after.ModTime(), before.Size(), before.ModTime())
	}
}

func TestACallersFileRewrittenWithItsSizeAndTimeTakesEffect(t *testing.T) {
	w := newAuthWorld(t)
	oldAdmin := w.dial(credential{token: w.adminToken})
	if err := checkCall(t, oldAdmin); err != nil {
		t.Fatalf("the backend's token before the rotation: %v", err)
	}
	// The backend's token is rotated: the same line with another hash.
	rotated := newToken(t)
	rewriteKeepingStat(t, w.callersFile, fmt.Appendf(nil, authCallers, hashOf(w.checkToken), hashOf(rotated)))
	newAdmin := w.dial(credential{token: rotated})
	eventually(t, 5*time.Second, "the rotated token is accepted", func() bool { return checkCall(t, newAdmin) == nil })
	wantCode(t, checkCall(t, oldAdmin), codes.Unauthenticated)
	if !strings.Contains(w.logs.String(), "callers file reloaded") {
		t.Errorf("the reload was not logged; logs:\n%s", w.logs.String())
	}
}

func TestAServerCertificateRewrittenWithItsSizeAndTimeIsServed(t *testing.T) {
	w := newAuthWorld(t)
	// ECDSA signatures vary in length by a byte or two: issue until the
	// renewed certificate and key are as long as the first.
	var renewed testpki.Pair
	for range 100 {
		renewed = w.ca.Server(t, "usher")
		if len(renewed.CertPEM) == len(w.serverCert.CertPEM) && len(renewed.KeyPEM) == len(w.serverCert.KeyPEM) {
			break
		}
	}
	if len(renewed.CertPEM) != len(w.serverCert.CertPEM) || len(renewed.KeyPEM) != len(w.serverCert.KeyPEM) {
		t.Fatal("no renewed certificate of the first one's length in 100 tries")
	}
	rewriteKeepingStat(t, w.keyFile, renewed.KeyPEM)
	rewriteKeepingStat(t, w.certFile, renewed.CertPEM)
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(w.dial(credential{})).Check(callCtx(t), &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		t.Fatalf("health check: %v", err)
	}
	if got := p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0]; !got.Equal(renewed.Cert) {
		t.Fatalf("a new connection got certificate %d after the files were rewritten; want the renewed %d", got.SerialNumber, renewed.Cert.SerialNumber)
	}
}

func TestServerCertificateAndClientCAReloadWithoutRestart(t *testing.T) {
	w := newAuthWorld(t)
	servedCert := func(conn *grpc.ClientConn) *x509.Certificate {
		t.Helper()
		var p peer.Peer
		if _, err := healthpb.NewHealthClient(conn).Check(callCtx(t), &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatalf("health check: %v", err)
		}
		return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0]
	}
	if got := servedCert(w.dial(credential{})); !got.Equal(w.serverCert.Cert) {
		t.Fatalf("served %s, want the first certificate", got.Subject)
	}
	renewed := w.ca.Server(t, "usher renewed")
	renewed.Write(t, filepath.Dir(w.certFile), "server")
	if got := servedCert(w.dial(credential{})); !got.Equal(renewed.Cert) {
		t.Fatalf("a new connection got %s after the files were replaced; want the renewed certificate", got.Subject)
	}

	// The client CA file now also trusts the foreign CA.
	testpki.WriteFile(t, w.caFile, append(w.ca.PEM(), w.foreignCA.PEM()...))
	if _, err := grantCall(t, w.dial(credential{cert: &w.forgedCert}), "user:dana"); err != nil {
		t.Fatalf("Grant with a certificate of the newly trusted CA: %v", err)
	}
	if caller, _ := w.lastCaller(); caller != "console" {
		t.Errorf("change log caller %q; want console", caller)
	}

	// A broken certificate file keeps the last good one in use.
	if err := os.WriteFile(w.certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := servedCert(w.dial(credential{})); !got.Equal(renewed.Cert) {
		t.Fatalf("after a broken certificate file, served %s; want the renewed certificate", got.Subject)
	}
	if !strings.Contains(w.logs.String(), "TLS certificate not reloaded") {
		t.Errorf("the broken certificate file was not logged; logs:\n%s", w.logs.String())
	}
}

func TestWithoutCallersEveryCallerIsAnonymous(t *testing.T) {
	addr, store := serveWith(t, t.TempDir(), slog.New(slog.DiscardHandler))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := grantCall(t, conn, "user:dana"); err != nil {
		t.Fatalf("Grant without callers: %v", err)
	}
	changes, err := store.Changes(context.Background(), 1, 1)
	if err != nil || len(changes) != 1 || changes[0].Caller != "anonymous" {
		t.Fatalf("change log: %v, %+v; want one write by anonymous", err, changes)
	}
}

func TestTokensWorkWithoutTLS(t *testing.T) {
	token := newToken(t)
	file := filepath.Join(t.TempDir(), "callers.yaml")
	writeCallers(t, file, "callers:\n  - {name: local-admin, kind: admin, token_sha256: "+hashOf(token)+"}\n")
	src, err := server.NewCallerSource(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr, store := serveWith(t, t.TempDir(), slog.New(slog.DiscardHandler), server.WithCallers(src))
	dial := func(opts ...grpc.DialOption) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	wantCode(t, checkCall(t, dial()), codes.Unauthenticated)
	if _, err := grantCall(t, dial(grpc.WithPerRPCCredentials(bearer(token))), "user:dana"); err != nil {
		t.Fatalf("Grant with the token: %v", err)
	}
	if changes, err := store.Changes(context.Background(), 1, 1); err != nil || len(changes) != 1 || changes[0].Caller != "local-admin" {
		t.Fatalf("change log: %v, %+v; want one write by local-admin", err, changes)
	}
}
