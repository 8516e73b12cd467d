package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

// fixture is one Usher server on a loopback listener, backed by a bbolt file
// in dir, with generated clients connected to it over a real gRPC connection.
type fixture struct {
	t      testing.TB
	dir    string
	conn   *grpc.ClientConn
	authz  usherv1.AuthorizationServiceClient
	admin  usherv1.AdminServiceClient
	health healthpb.HealthClient
	engine *authz.Engine
	addr   string
	// stop closes the connection, stops the server gracefully and closes the
	// store; calling it again does nothing.
	stop func()
}

// defaultEngine starts an engine on be with the default policy applied,
// closed when the test ends.
func defaultEngine(t testing.TB, be authz.Backend) *authz.Engine {
	t.Helper()
	engine, err := authz.Start(t.Context(), be, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := engine.ApplyPolicy(t.Context(), authz.Author{Caller: "test"}, server.FromPolicy(msg), authz.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	return engine
}

// aliceHostsAcme registers account:acme with user:alice its host, and
// returns a Check that alice may join calls there.
func (f *fixture) aliceHostsAcme(t testing.TB) *usherv1.CheckRequest {
	t.Helper()
	ctx := context.Background()
	if _, err := f.admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "account:acme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:alice", Role: "host", Resource: "account:acme"}); err != nil {
		t.Fatal(err)
	}
	return &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: "account:acme"}
}

// startServer wires a server the way `usher serve` does: storage.Open,
// authz.Start, then the default policy when the store is empty, then
// server.New on 127.0.0.1:0.
func startServer(t testing.TB, dir string) *fixture {
	t.Helper()
	return startServerWith(t, dir, slog.New(slog.DiscardHandler), nil)
}

// startServerWith starts a server as startServer does, it and its engine
// logging to logger, with the options opts makes (given the engine, when not nil) passed to
// server.New.
func startServerWith(t testing.TB, dir string, logger *slog.Logger, opts func(*authz.Engine) []grpc.ServerOption) *fixture {
	t.Helper()
	store, err := bolt.Open(filepath.Join(dir, "usher.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("storage.Open: %v", err)
	}
	engine, err := authz.Start(context.Background(), store, authz.Options{Logger: logger})
	if err != nil {
		_ = store.Close()
		t.Fatalf("authz.Start: %v", err)
	}
	if engine.Index().Revision() == 0 {
		msg, err := policy.Load("default")
		if err != nil {
			_ = store.Close()
			t.Fatalf("policy.Load(default): %v", err)
		}
		p := server.FromPolicy(msg)
		if err := server.ValidatePolicy(p); err != nil {
			_ = store.Close()
			t.Fatalf("default policy: %v", err)
		}
		if _, _, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "test"}, p, authz.ApplyOptions{}); err != nil {
			_ = store.Close()
			t.Fatalf("ApplyPolicy(default): %v", err)
		}
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = store.Close()
		t.Fatalf("listen: %v", err)
	}
	var serverOpts []grpc.ServerOption
	if opts != nil {
		serverOpts = opts(engine)
	}
	srv := server.New(engine, logger, serverOpts...)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		_ = store.Close()
		t.Fatalf("grpc.NewClient: %v", err)
	}
	f := &fixture{
		t: t, dir: dir, conn: conn, engine: engine, addr: lis.Addr().String(),
		authz:  usherv1.NewAuthorizationServiceClient(conn),
		admin:  usherv1.NewAdminServiceClient(conn),
		health: healthpb.NewHealthClient(conn),
	}
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			_ = conn.Close()
			srv.GracefulStop()
			<-served
			if err := store.Close(); err != nil {
				t.Errorf("store.Close: %v", err)
			}
		})
	}
	t.Cleanup(f.stop)
	return f
}

// serveEngine serves engine on a loopback listener until the test ends, as
// a fixture whose helpers call it; stopping it early is the test's end.
func serveEngine(t testing.TB, engine *authz.Engine) *fixture {
	t.Helper()
	conn := server.ServeLoopback(t, server.New(engine, slog.New(slog.DiscardHandler)))
	return &fixture{
		t: t, conn: conn, engine: engine, stop: func() {},
		authz:  usherv1.NewAuthorizationServiceClient(conn),
		admin:  usherv1.NewAdminServiceClient(conn),
		health: healthpb.NewHealthClient(conn),
	}
}

// newServer starts a server on a fresh directory.
func newServer(t *testing.T) *fixture {
	t.Helper()
	return startServer(t, t.TempDir())
}

// restart stops f and starts a server on the same directory, as an operator
// restarting `usher serve` would.
func (f *fixture) restart() *fixture {
	f.t.Helper()
	f.stop()
	return startServer(f.t, f.dir)
}

// ctx is a per-call context that fails the test rather than hang it.
func (f *fixture) ctx() context.Context {
	ctx, cancel := context.WithTimeout(f.t.Context(), 10*time.Second)
	f.t.Cleanup(cancel)
	return ctx
}

// revision is the revision the server answers reads at.
func (f *fixture) revision() uint64 {
	f.t.Helper()
	resp, err := f.admin.ExportPolicy(f.ctx(), &usherv1.ExportPolicyRequest{})
	if err != nil {
		f.t.Fatalf("ExportPolicy: %v", err)
	}
	return resp.GetRevision()
}

func (f *fixture) putResource(name, parent string) uint64 {
	f.t.Helper()
	resp, err := f.admin.PutResource(f.ctx(), &usherv1.PutResourceRequest{Name: name, Parent: parent})
	if err != nil {
		f.t.Fatalf("PutResource(%s under %q): %v", name, parent, err)
	}
	return resp.GetRevision()
}

func (f *fixture) putRole(r *usherv1.Role) uint64 {
	f.t.Helper()
	resp, err := f.admin.PutRole(f.ctx(), &usherv1.PutRoleRequest{Role: r})
	if err != nil {
		f.t.Fatalf("PutRole(%s at %s): %v", r.GetName(), r.GetScope(), err)
	}
	return resp.GetRevision()
}

func (f *fixture) grant(subject, role, resource string) uint64 {
	f.t.Helper()
	return f.grantUntil(subject, role, resource, time.Time{})
}

func (f *fixture) grantUntil(subject, role, resource string, expires time.Time) uint64 {
	f.t.Helper()
	req := &usherv1.GrantRequest{Subject: subject, Role: role, Resource: resource}
	if !expires.IsZero() {
		req.ExpireTime = timestamp(expires)
	}
	resp, err := f.admin.Grant(f.ctx(), req)
	if err != nil {
		f.t.Fatalf("Grant(%s %s on %s): %v", subject, role, resource, err)
	}
	return resp.GetRevision()
}

func (f *fixture) block(req *usherv1.BlockRequest) uint64 {
	f.t.Helper()
	resp, err := f.admin.Block(f.ctx(), req)
	if err != nil {
		f.t.Fatalf("Block(%s on %s): %v", req.GetSubject(), req.GetResource(), err)
	}
	return resp.GetRevision()
}

// check asks one question and returns the decision with its revision.
func (f *fixture) check(subject, permission, resource string) (*usherv1.Decision, uint64) {
	f.t.Helper()
	resp, err := f.authz.Check(f.ctx(), &usherv1.CheckRequest{Subject: subject, Permission: permission, Resource: resource})
	if err != nil {
		f.t.Fatalf("Check(%s %s on %s): %v", subject, permission, resource, err)
	}
	return resp.GetDecision(), resp.GetRevision()
}

func (f *fixture) listPermissions(subject, resource string) []string {
	f.t.Helper()
	resp, err := f.authz.ListPermissions(f.ctx(), &usherv1.ListPermissionsRequest{Subject: subject, Resource: resource})
	if err != nil {
		f.t.Fatalf("ListPermissions(%s on %s): %v", subject, resource, err)
	}
	return resp.GetPermissions()
}

// listGrants returns every page of a ListGrants query.
func (f *fixture) listGrants(subject, resource string) []*usherv1.Grant {
	f.t.Helper()
	var all []*usherv1.Grant
	token := ""
	for {
		resp, err := f.admin.ListGrants(f.ctx(), &usherv1.ListGrantsRequest{Subject: subject, Resource: resource, PageToken: token})
		if err != nil {
			f.t.Fatalf("ListGrants(subject %q, resource %q): %v", subject, resource, err)
		}
		all = append(all, resp.GetGrants()...)
		if token = resp.GetNextPageToken(); token == "" {
			return all
		}
	}
}

// The world most tests start from, under the default policy:
//
//	root
//	└── account:acme
//	    └── workspace:acme-sales
//	        ├── calltype:livestream
//	        │   └── call:livestream:42
//	        └── calltype:meeting
//	            └── call:meeting:7
const (
	acme       = "account:acme"
	sales      = "workspace:acme-sales"
	livestream = "calltype:livestream"
	meeting    = "calltype:meeting"
	stream42   = "call:livestream:42"
	meeting7   = "call:meeting:7"
)

// world registers the resource tree above and answers the last revision.
func (f *fixture) world() uint64 {
	f.t.Helper()
	f.putResource(acme, "")
	f.putResource(sales, acme)
	f.putResource(livestream, sales)
	f.putResource(meeting, sales)
	f.putResource(stream42, livestream)
	return f.putResource(meeting7, meeting)
}

// state is everything a client can read back, to prove that a refused write
// wrote nothing.
type state struct {
	revision    uint64
	policy      *usherv1.Policy
	grants      map[string][]*usherv1.Grant // by resource
	permissions map[string][]string         // by "subject on resource"
}

// snapshotState reads the policy, the grants on every resource and the
// effective permissions of subjects on every resource.
func (f *fixture) snapshotState(subjects ...string) state {
	f.t.Helper()
	resp, err := f.admin.ExportPolicy(f.ctx(), &usherv1.ExportPolicyRequest{})
	if err != nil {
		f.t.Fatalf("ExportPolicy: %v", err)
	}
	s := state{
		revision:    resp.GetRevision(),
		policy:      resp.GetPolicy(),
		grants:      map[string][]*usherv1.Grant{},
		permissions: map[string][]string{},
	}
	resources := []string{authz.RootName}
	for _, r := range resp.GetPolicy().GetResources() {
		resources = append(resources, r.GetName())
	}
	for _, r := range resources {
		s.grants[r] = f.listGrants("", r)
		for _, sub := range subjects {
			s.permissions[sub+" on "+r] = f.listPermissions(sub, r)
		}
	}
	return s
}

// diff names what differs between two states, or is empty.
func (s state) diff(o state) []string {
	var out []string
	if s.revision != o.revision {
		out = append(out, fmt.Sprintf("revision moved from %d to %d", s.revision, o.revision))
	}
	if !proto.Equal(s.policy, o.policy) {
		out = append(out, "the exported policy changed")
	}
	for r, g := range s.grants {
		if !equalGrants(g, o.grants[r]) {
			out = append(out, "the grants on "+r+" changed")
		}
	}
	for k, p := range s.permissions {
		if strings.Join(p, ",") != strings.Join(o.permissions[k], ",") {
			out = append(out, "the permissions of "+k+" changed")
		}
	}
	return out
}

func equalGrants(a, b []*usherv1.Grant) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// timestamp converts an expiry for a request.
func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// wantCode fails the test unless err is a status with code.
func wantCode(t *testing.T, err error, code codes.Code) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != code {
		t.Fatalf("code = %s (%q), want %s", st.Code(), st.Message(), code)
	}
	return st
}
