package client_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/client"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/internal/testpki"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

// The tokens and the certificate subject of the world's callers.
const (
	adminToken     = "admin-0123456789abcdef0123456789abcdef"
	sidecarToken   = "sidecar-0123456789abcdef0123456789abcd"
	consoleSubject = "CN=console,O=acme"
)

// The resource tree of every world, under the default policy:
//
//	root
//	└── account:acme
//	    └── workspace:acme-sales
//	        └── calltype:meeting
//	            └── call:meeting:7
const (
	acme     = "account:acme"
	sales    = "workspace:acme-sales"
	meeting  = "calltype:meeting"
	meeting7 = "call:meeting:7"
)

// world is an Usher server as `usher serve` wires it, on a loopback
// address that stays the same across restarts: a bbolt file, the default
// policy, the resource tree above, the AdmissionService, and a callers
// file with an admin caller (adminToken), a check caller (sidecarToken)
// and, with TLS, an admin caller identified by its client certificate
// (consoleSubject). Admin is a client of it with the admin token.
type world struct {
	t    *testing.T
	dir  string
	addr string
	tls  bool
	ca   *testpki.CA
	// The CA's certificate, and the console's certificate and key, as
	// files.
	caFile, certFile, keyFile string
	lease                     time.Duration
	serverOptions             []grpc.ServerOption // beyond those usher serve sets

	mu      sync.Mutex // guards what start and stop replace
	store   *bolt.Store
	engine  *authz.Engine
	manager *admission.Manager
	srv     *server.Server
	served  chan struct{}

	Admin *client.Client
}

// worldOption adjusts a world before it starts.
type worldOption func(*world)

// withTLS serves TLS, and asks clients for certificates of the world's CA.
func withTLS() worldOption { return func(w *world) { w.tls = true } }

// withLease sets the lease of sessions in calls.
func withLease(d time.Duration) worldOption { return func(w *world) { w.lease = d } }

func newWorld(t *testing.T, opts ...worldOption) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), addr: "127.0.0.1:0"}
	for _, o := range opts {
		o(w)
	}
	w.writeCallers()
	if w.tls {
		w.ca = testpki.NewCA(t, "usher test CA")
		w.caFile = filepath.Join(w.dir, "ca.crt")
		testpki.WriteFile(t, w.caFile, w.ca.PEM())
		w.ca.Server(t, "usher").Write(t, w.dir, "server")
		w.certFile, w.keyFile = w.ca.Client(t, pkix.Name{CommonName: "console", Organization: []string{"acme"}}).Write(t, w.dir, "console")
	}
	w.start()
	t.Cleanup(w.stop)
	admin, err := client.New(w.addr, w.clientOptions(client.WithToken(adminToken))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	w.Admin = admin
	if w.lease > 0 {
		w.setLease()
	}
	return w
}

// clientOptions are opts, with the world's CA when it serves TLS.
func (w *world) clientOptions(opts ...client.Option) []client.Option {
	if w.tls {
		opts = append([]client.Option{client.WithTLS(w.caFile, "", "")}, opts...)
	}
	return opts
}

// client is a client of the world with opts, closed when the test ends.
func (w *world) client(opts ...client.Option) *client.Client {
	w.t.Helper()
	return dial(w.t, w.addr, w.clientOptions(opts...)...)
}

func dial(t *testing.T, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(addr, opts...)
	if err != nil {
		t.Fatalf("client.New(%s): %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (w *world) writeCallers() {
	hash := func(token string) string {
		sum := sha256.Sum256([]byte(token))
		return hex.EncodeToString(sum[:])
	}
	yaml := fmt.Sprintf(`callers:
  - {name: platform, kind: admin, token_sha256: %s}
  - {name: sidecar, kind: check, token_sha256: %s}
  - {name: console, kind: admin, certificate_subject: %q}
`, hash(adminToken), hash(sidecarToken), consoleSubject)
	if err := os.WriteFile(filepath.Join(w.dir, "callers.yaml"), []byte(yaml), 0o600); err != nil {
		w.t.Fatal(err)
	}
}

// start opens the data file and serves it on w.addr, which the first start
// chooses.
func (w *world) start() {
	t := w.t
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	logger := slog.New(slog.DiscardHandler)
	store, err := bolt.Open(filepath.Join(w.dir, "usher.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := authz.Start(context.Background(), store, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if engine.Index().Revision() == 0 {
		w.populate(engine)
	}
	callers, err := server.NewCallerSource(filepath.Join(w.dir, "callers.yaml"), logger)
	if err != nil {
		t.Fatal(err)
	}
	m := admission.New(engine, admission.Options{})
	opts := append([]grpc.ServerOption{server.WithCallers(callers), server.WithAdmission(m)}, w.serverOptions...)
	if w.tls {
		cfg, err := server.NewTLSConfig(server.TLSFiles{
			Cert: filepath.Join(w.dir, "server.crt"), Key: filepath.Join(w.dir, "server.key"), ClientCA: w.caFile,
		}, logger)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	lis := listen(t, w.addr)
	if w.srv == nil && w.store == nil {
		w.addr = lis.Addr().String() // the first start: later ones keep it
	}
	srv := server.New(engine, logger, opts...)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	w.store, w.engine, w.manager, w.srv, w.served = store, engine, m, srv, served
}

// listen listens on addr, waiting a little for a port the previous server
// has just let go of.
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var err error
	for range 50 {
		var lis net.Listener
		if lis, err = net.Listen("tcp", addr); err == nil {
			return lis
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("listen on %s: %v", addr, err)
	return nil
}

// populate applies the default policy and registers the resource tree.
func (w *world) populate(engine *authz.Engine) {
	w.t.Helper()
	msg, err := policy.Load("default")
	if err != nil {
		w.t.Fatal(err)
	}
	by := authz.Author{Caller: "test"}
	if _, _, err := engine.ApplyPolicy(context.Background(), by, server.FromPolicy(msg), authz.ApplyOptions{}); err != nil {
		w.t.Fatal(err)
	}
	for _, r := range []authz.Resource{{Name: acme}, {Name: sales, Parent: acme}, {Name: meeting, Parent: sales}, {Name: meeting7, Parent: meeting}} {
		if _, err := engine.PutResource(context.Background(), by, r); err != nil {
			w.t.Fatal(err)
		}
	}
}

// stop stops the server at once, as a crash would end its connections,
// and closes the data file. Stopping a stopped world does nothing.
func (w *world) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.srv == nil {
		return
	}
	w.srv.Stop()
	<-w.served
	w.manager.Close()
	w.engine.Close()
	if err := w.store.Close(); err != nil {
		w.t.Errorf("store.Close: %v", err)
	}
	w.srv = nil
}

// restart stops the server and starts it again on the same address and
// data file, and waits until Admin reaches it again: a call sent on the
// connection the stop broke fails. Sessions, which live in memory, are
// forgotten.
func (w *world) restart() {
	w.stop()
	w.start()
	eventually(w.t, 5*time.Second, "the admin client reaches the restarted server", func() bool {
		_, err := w.Admin.Authorization.GetRevision(callCtx(w.t), &usherv1.GetRevisionRequest{})
		return err == nil
	})
}

// Store is the data file of the running server.
func (w *world) Store() *bolt.Store {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.store
}

// setLease makes sessions in calls last w.lease between keep-alives.
func (w *world) setLease() {
	w.t.Helper()
	ctx := callCtx(w.t)
	p, err := w.Admin.Admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{})
	if err != nil {
		w.t.Fatal(err)
	}
	for _, a := range p.GetPolicy().GetAdmissions() {
		if a.GetResourceType() != "call" {
			continue
		}
		a.Lease = durationpb.New(w.lease)
		if _, err := w.Admin.Admin.PutAdmission(ctx, &usherv1.PutAdmissionRequest{Admission: a}); err != nil {
			w.t.Fatal(err)
		}
		return
	}
	w.t.Fatal("the default policy has no admission rule for calls")
}

// grant writes a grant as the platform, and returns its revision.
func (w *world) grant(subject, role, resource string) uint64 {
	w.t.Helper()
	resp, err := w.Admin.Admin.Grant(callCtx(w.t), &usherv1.GrantRequest{Subject: subject, Role: role, Resource: resource})
	if err != nil {
		w.t.Fatalf("Grant(%s %s on %s): %v", subject, role, resource, err)
	}
	return resp.GetRevision()
}

// block blocks subject from everything on resource.
func (w *world) block(subject, resource string) uint64 {
	w.t.Helper()
	resp, err := w.Admin.Admin.Block(callCtx(w.t), &usherv1.BlockRequest{Subject: subject, Resource: resource})
	if err != nil {
		w.t.Fatalf("Block(%s on %s): %v", subject, resource, err)
	}
	return resp.GetRevision()
}

// revision is the revision the server answers at.
func (w *world) revision() uint64 {
	w.t.Helper()
	resp, err := w.Admin.Authorization.GetRevision(callCtx(w.t), &usherv1.GetRevisionRequest{})
	if err != nil {
		w.t.Fatal(err)
	}
	return resp.GetRevision()
}

// callCtx is a per-call context that fails the test rather than hang it.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds, failing the test after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
