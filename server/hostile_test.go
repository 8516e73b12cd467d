package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

// bytesCodec sends a []byte as the encoded request and reads the answer as
// bytes, so that a test can put any bytes in a gRPC frame. It is named
// "proto" so that the server decodes with its usual codec.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("bytesCodec: cannot send %T", v)
	}
	return b, nil
}

func (bytesCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("bytesCodec: cannot read into %T", v)
	}
	*p = slices.Clone(data)
	return nil
}

func (bytesCodec) Name() string { return "proto" }

// invokeRaw sends body as the request of method.
func invokeRaw(ctx context.Context, conn *grpc.ClientConn, method string, body []byte) error {
	var reply []byte
	return conn.Invoke(ctx, method, body, &reply, grpc.ForceCodec(bytesCodec{}))
}

// knownCheck is a question whose answer the hostile test knows.
type knownCheck struct {
	req     *usherv1.CheckRequest
	allowed bool
	reason  usherv1.Reason
}

// hostileWorld is the fixture's world with one grant, one blocked holder,
// and the checks whose answers must not move while the server is attacked.
func hostileWorld(f *fixture) []knownCheck {
	f.world()
	f.grant("user:alice", "host", stream42)
	f.grant("user:eve", "host", stream42)
	f.block(&usherv1.BlockRequest{Subject: "user:eve", Resource: acme, Reason: "fraud"})
	check := func(subject, permission, resource string, allowed bool, reason usherv1.Reason) knownCheck {
		return knownCheck{&usherv1.CheckRequest{Subject: subject, Permission: permission, Resource: resource}, allowed, reason}
	}
	return []knownCheck{
		check("user:alice", "join-call", stream42, true, usherv1.Reason_REASON_GRANTED),
		check("user:alice", "end-call", stream42, true, usherv1.Reason_REASON_GRANTED),
		check("user:alice", "join-call", meeting7, false, usherv1.Reason_REASON_NO_GRANT),
		check("user:bob", "join-call", stream42, false, usherv1.Reason_REASON_NO_GRANT),
		check("user:eve", "join-call", stream42, false, usherv1.Reason_REASON_BLOCKED),
		check("user:alice", "join-call", "call:livestream:gone", false, usherv1.Reason_REASON_UNKNOWN_RESOURCE),
	}
}

// askKnown asks each known check once and returns what went wrong.
func askKnown(ctx context.Context, client usherv1.AuthorizationServiceClient, checks []knownCheck) error {
	for _, c := range checks {
		resp, err := client.Check(ctx, c.req)
		if err != nil {
			return fmt.Errorf("Check(%s %s on %s): %v", c.req.GetSubject(), c.req.GetPermission(), c.req.GetResource(), err)
		}
		if d := resp.GetDecision(); d.GetAllowed() != c.allowed || d.GetReason() != c.reason {
			return fmt.Errorf("Check(%s %s on %s) = allowed %v, %s; want allowed %v, %s", c.req.GetSubject(), c.req.GetPermission(),
				c.req.GetResource(), d.GetAllowed(), d.GetReason(), c.allowed, c.reason)
		}
	}
	return nil
}

// attack is one malformed call and the codes it may be refused with.
type attack struct {
	kind  string
	call  func(ctx context.Context) error
	codes []codes.Code
}

// hostileAttacks builds n attacks on conn, mixing every kind the server must
// survive, in a fixed pseudo-random order.
func hostileAttacks(conn *grpc.ClientConn, n int) []attack {
	rng := rand.New(rand.NewPCG(1, 2))
	authzc := usherv1.NewAuthorizationServiceClient(conn)
	admin := usherv1.NewAdminServiceClient(conn)
	invalid := []codes.Code{codes.InvalidArgument}

	badNames := []string{"", "alice", "user:", ":alice", "USER:alice", "user:a b", "user:\x00", "user:\u200b",
		strings.Repeat("k", 33) + ":x", "user:" + strings.Repeat("a", 257), "Join-Call", "join call", "-join", "*",
		strings.Repeat("p", 129), "call:livestream:42\n", "root:", "ro ot", "user:a\tb"}
	randomString := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(' ' + rng.IntN(95))
		}
		return string(b)
	}
	// A policy with one permission too many: 10,001 entries, built once.
	tooBig := &usherv1.Policy{}
	for i := range server.MaxPolicyPermissions + 1 {
		tooBig.Permissions = append(tooBig.Permissions, &usherv1.Permission{Name: fmt.Sprintf("p-%d", i)})
	}
	tooMany := &usherv1.CheckBatchRequest{}
	for range server.MaxBatch + 1 {
		tooMany.Checks = append(tooMany.Checks, &usherv1.CheckItem{Subject: "user:alice", Permission: "join-call", Resource: stream42})
	}
	tenMB := strings.Repeat("x", 10<<20)
	validCheck, _ := proto.Marshal(&usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: stream42})
	validGrant, _ := proto.Marshal(&usherv1.GrantRequest{Subject: "user:mallory", Role: "host", Resource: stream42})
	// The methods raw frames go to: reads, and writes whose every
	// truncation is malformed.
	readMethods := []string{
		"/usher.v1.AuthorizationService/Check",
		"/usher.v1.AuthorizationService/CheckBatch",
		"/usher.v1.AuthorizationService/ListPermissions",
		"/usher.v1.AdminService/ListGrants",
		"/usher.v1.AdminService/ListRoles",
		"/usher.v1.AdminService/GetResource",
	}
	unknownMethods := []string{
		"/usher.v1.AuthorizationService/Nope",
		"/usher.v1.AuthorizationService/",
		"/usher.v1.Nope/Check",
		"/grpc.health.v1.Health/Nope",
		"/x/y",
	}

	// Each kind with its share of n.
	kinds := []struct {
		name   string
		weight int
		build  func() attack
	}{
		{"a malformed name in a Check", 300, func() attack {
			req := &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: stream42}
			bad := badNames[rng.IntN(len(badNames))]
			switch rng.IntN(3) {
			case 0:
				req.Subject = bad
			case 1:
				req.Permission = bad
			default:
				req.Resource = bad
			}
			return attack{call: func(ctx context.Context) error { _, err := authzc.Check(ctx, req); return err }, codes: invalid}
		}},
		{"a malformed name in a write", 100, func() attack {
			bad := badNames[rng.IntN(len(badNames))]
			calls := []func(ctx context.Context) error{
				func(ctx context.Context) error {
					_, err := admin.Grant(ctx, &usherv1.GrantRequest{Subject: bad, Role: "host", Resource: stream42})
					return err
				},
				func(ctx context.Context) error {
					_, err := admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: "call:x:" + bad + " ", Parent: stream42})
					return err
				},
				func(ctx context.Context) error {
					_, err := admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:alice", Resource: stream42, Permissions: []string{bad}})
					return err
				},
			}
			return attack{call: calls[rng.IntN(len(calls))], codes: invalid}
		}},
		{"a huge string", 40, func() attack {
			size := 16<<10 + rng.IntN(256<<10)
			req := &usherv1.CheckRequest{Subject: "user:" + strings.Repeat(randomString(1024), size/1024), Permission: "join-call", Resource: stream42}
			return attack{call: func(ctx context.Context) error {
				_, err := authzc.Check(ctx, req)
				if n := len(status.Convert(err).Message()); n > 2048 {
					return status.Errorf(codes.Unknown, "the refusal is %d bytes long; the value should have been cut", n)
				}
				return err
			}, codes: invalid}
		}},
		{"an empty request", 60, func() attack {
			calls := []func(ctx context.Context) error{
				func(ctx context.Context) error { _, err := authzc.Check(ctx, &usherv1.CheckRequest{}); return err },
				func(ctx context.Context) error {
					_, err := authzc.CheckBatch(ctx, &usherv1.CheckBatchRequest{})
					return err
				},
				func(ctx context.Context) error {
					_, err := authzc.ListPermissions(ctx, &usherv1.ListPermissionsRequest{})
					return err
				},
				func(ctx context.Context) error { _, err := admin.Grant(ctx, &usherv1.GrantRequest{}); return err },
				func(ctx context.Context) error { _, err := admin.Revoke(ctx, &usherv1.RevokeRequest{}); return err },
				func(ctx context.Context) error { _, err := admin.PutRole(ctx, &usherv1.PutRoleRequest{}); return err },
				func(ctx context.Context) error {
					_, err := admin.PutResource(ctx, &usherv1.PutResourceRequest{})
					return err
				},
				func(ctx context.Context) error { _, err := admin.Block(ctx, &usherv1.BlockRequest{}); return err },
				func(ctx context.Context) error { _, err := admin.PutQuota(ctx, &usherv1.PutQuotaRequest{}); return err },
				func(ctx context.Context) error {
					_, err := admin.ListGrants(ctx, &usherv1.ListGrantsRequest{})
					return err
				},
				// An empty policy would drop the catalog that roles name.
				func(ctx context.Context) error {
					_, err := admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{})
					return err
				},
			}
			return attack{call: calls[rng.IntN(len(calls))], codes: invalid}
		}},
		{"invalid UTF-8 in a string", 100, func() attack {
			b := protowire.AppendTag(nil, 1, protowire.BytesType)
			b = protowire.AppendString(b, "user:\xff\xfe"+randomString(rng.IntN(16)))
			method := readMethods[rng.IntN(len(readMethods))]
			return attack{call: func(ctx context.Context) error { return invokeRaw(ctx, conn, method, b) }, codes: invalid}
		}},
		{"random bytes", 200, func() attack {
			b := make([]byte, rng.IntN(512))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			method := readMethods[rng.IntN(len(readMethods))]
			return attack{call: func(ctx context.Context) error { return invokeRaw(ctx, conn, method, b) },
				codes: invalid}
		}},
		{"a truncated message", 100, func() attack {
			method, body := "/usher.v1.AuthorizationService/Check", validCheck
			if rng.IntN(2) == 0 {
				method, body = "/usher.v1.AdminService/Grant", validGrant
			}
			b := body[:rng.IntN(len(body))]
			return attack{call: func(ctx context.Context) error { return invokeRaw(ctx, conn, method, b) },
				codes: invalid}
		}},
		{"a CheckBatch of 1001", 20, func() attack {
			req := tooMany
			return attack{call: func(ctx context.Context) error { _, err := authzc.CheckBatch(ctx, req); return err }, codes: invalid}
		}},
		{"a 10 MB message", 2, func() attack {
			calls := []func(ctx context.Context) error{
				func(ctx context.Context) error {
					_, err := authzc.Check(ctx, &usherv1.CheckRequest{Subject: tenMB})
					return err
				},
				func(ctx context.Context) error {
					_, err := admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: &usherv1.Policy{
						Permissions: []*usherv1.Permission{{Name: "x", Description: tenMB}}}})
					return err
				},
				func(ctx context.Context) error { return invokeRaw(ctx, conn, readMethods[0], []byte(tenMB)) },
			}
			return attack{call: calls[rng.IntN(len(calls))], codes: []codes.Code{codes.ResourceExhausted}}
		}},
		{"an unknown method", 60, func() attack {
			method := unknownMethods[rng.IntN(len(unknownMethods))]
			return attack{call: func(ctx context.Context) error { return invokeRaw(ctx, conn, method, validCheck) },
				codes: []codes.Code{codes.Unimplemented}}
		}},
		{"a write past a limit", 18, func() attack {
			calls := []func(ctx context.Context) error{
				func(ctx context.Context) error {
					_, err := admin.ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: tooBig})
					return err
				},
				func(ctx context.Context) error {
					_, err := admin.PutRole(ctx, &usherv1.PutRoleRequest{Role: &usherv1.Role{Name: "big", Scope: acme,
						Permissions: nCopies("join-call", server.MaxRolePermissions+1)}})
					return err
				},
				func(ctx context.Context) error {
					_, err := admin.Block(ctx, &usherv1.BlockRequest{Subject: "user:alice", Resource: stream42,
						Reason: strings.Repeat("r", server.MaxTextLen+1)})
					return err
				},
			}
			return attack{call: calls[rng.IntN(len(calls))], codes: invalid}
		}},
		{"a bad page", 20, func() attack {
			reqs := []*usherv1.ListGrantsRequest{
				{Resource: stream42, PageSize: server.MaxPageSize + 1},
				{Resource: stream42, PageSize: -1},
				{Resource: stream42, PageToken: "!" + randomString(rng.IntN(64))}, // "!" is not base64
				{Resource: stream42, PageToken: randomString(server.MaxPageTokenLen + 1)},
			}
			req := reqs[rng.IntN(len(reqs))]
			return attack{call: func(ctx context.Context) error { _, err := admin.ListGrants(ctx, req); return err }, codes: invalid}
		}},
	}
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	var out []attack
	for _, k := range kinds {
		for range max(1, k.weight*n/total) {
			a := k.build()
			a.kind = k.name
			out = append(out, a)
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// TestHostileInput sends thousands of malformed, oversized and truncated
// requests while one client keeps asking checks whose answers it knows: every
// malformed call is refused with a status code, the known answers never
// change, nothing is written, and the server is still serving afterwards.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	f := newServer(t)
	checks := hostileWorld(f)
	if err := askKnown(f.ctx(), f.authz, checks); err != nil {
		t.Fatalf("before the attack: %v", err)
	}
	before := checkRevision(f.ctx(), t, f)

	// The attackers have their own connection; the checker keeps f's.
	conn, err := grpc.NewClient(f.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	defer conn.Close()
	attacks := hostileAttacks(conn, 5000)

	stop := make(chan struct{})
	var rounds atomic.Int64
	checkerDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				checkerDone <- nil
				return
			default:
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			err := askKnown(ctx, f.authz, checks)
			cancel()
			if err != nil {
				checkerDone <- fmt.Errorf("after %d rounds: %w", rounds.Load(), err)
				return
			}
			rounds.Add(1)
		}
	}()

	var (
		next     atomic.Int64
		mu       sync.Mutex
		failures = map[string][]string{} // by kind, the first few
		refused  = map[codes.Code]int{}
	)
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(attacks) {
					return
				}
				a := attacks[i]
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				err := a.call(ctx)
				cancel()
				code := status.Code(err)
				mu.Lock()
				refused[code]++
				if err == nil || !slices.Contains(a.codes, code) {
					if len(failures[a.kind]) < 3 {
						failures[a.kind] = append(failures[a.kind], fmt.Sprintf("%s (%.200v), want one of %v", code, err, a.codes))
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-checkerDone; err != nil {
		t.Errorf("a known check went wrong during the attack, %v", err)
	}
	t.Logf("%d malformed calls in %v, refused with %v; %d rounds of %d known checks meanwhile",
		len(attacks), time.Since(start).Round(time.Millisecond), refused, rounds.Load(), len(checks))
	for kind, fs := range failures {
		t.Errorf("%s: %s", kind, strings.Join(fs, "; "))
	}
	if rounds.Load() == 0 {
		t.Errorf("the checker finished no round during the attack")
	}

	resp, err := f.health.Check(f.ctx(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after the attack = %v, %v; want SERVING", resp.GetStatus(), err)
	}
	if err := askKnown(f.ctx(), f.authz, checks); err != nil {
		t.Errorf("after the attack: %v", err)
	}
	if after := checkRevision(f.ctx(), t, f); after != before {
		t.Errorf("the attack moved the revision from %d to %d; every malformed write must be refused", before, after)
	}
}

// TestDeadlines proves that the server honours the caller's deadline: a read
// waiting for a revision that will not come answers before the deadline, and
// an expired deadline writes nothing.
func TestDeadlines(t *testing.T) {
	t.Parallel()
	f := newServer(t)
	f.world()
	before := checkRevision(f.ctx(), t, f)
	far := before + 1_000_000

	t.Run("a call whose deadline has passed is DEADLINE_EXCEEDED at once and writes nothing", func(t *testing.T) {
		ctx, cancel := context.WithDeadline(f.ctx(), time.Now().Add(-time.Second))
		defer cancel()
		start := time.Now()
		_, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: stream42})
		wantCode(t, err, codes.DeadlineExceeded)
		_, err = f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:late", Role: "host", Resource: stream42})
		wantCode(t, err, codes.DeadlineExceeded)
		if d := time.Since(start); d > time.Second {
			t.Errorf("the calls took %v", d)
		}
		if after := checkRevision(f.ctx(), t, f); after != before {
			t.Errorf("revision moved from %d to %d", before, after)
		}
	})

	reads := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Check", func(ctx context.Context) error {
			_, err := f.authz.Check(ctx, &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: stream42, MinRevision: far})
			return err
		}},
		{"CheckBatch", func(ctx context.Context) error {
			_, err := f.authz.CheckBatch(ctx, &usherv1.CheckBatchRequest{MinRevision: far,
				Checks: []*usherv1.CheckItem{{Subject: "user:alice", Permission: "join-call", Resource: stream42}}})
			return err
		}},
		{"ListPermissions", func(ctx context.Context) error {
			_, err := f.authz.ListPermissions(ctx, &usherv1.ListPermissionsRequest{Subject: "user:alice", Resource: stream42, MinRevision: far})
			return err
		}},
	}
	for _, r := range reads {
		t.Run(r.name+" waiting for a revision far ahead answers within its 50 ms deadline", func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(f.ctx(), 50*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := r.call(ctx)
			took := time.Since(start)
			// The server gives up a little before the deadline, so that its
			// FAILED_PRECONDITION says why; on a slow machine the caller's
			// own DEADLINE_EXCEEDED may win.
			if code := status.Code(err); code != codes.FailedPrecondition && code != codes.DeadlineExceeded {
				t.Errorf("code = %s (%v), want FAILED_PRECONDITION or DEADLINE_EXCEEDED", code, err)
			}
			if took > time.Second {
				t.Errorf("answered after %v", took)
			}
		})
		t.Run(r.name+" waiting for a revision far ahead stops when the caller cancels", func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(f.ctx())
			time.AfterFunc(50*time.Millisecond, cancel)
			start := time.Now()
			err := r.call(ctx)
			wantCode(t, err, codes.Canceled)
			if took := time.Since(start); took > time.Second {
				t.Errorf("answered after %v", took)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer that the server's log and the test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// panickingHealth is a health service whose Check panics.
type panickingHealth struct{ *health.Server }

func (panickingHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	panic("test handler blew up")
}

// panickingService registers panickingHealth's Check under a service name of
// its own, so the real grpc.health.v1 stays as it is.
var panickingService = grpc.ServiceDesc{
	ServiceName: "usher.test.Panicking",
	HandlerType: (*healthpb.HealthServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Check",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(healthpb.HealthCheckRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			handle := func(ctx context.Context, req any) (any, error) {
				return srv.(healthpb.HealthServer).Check(ctx, req.(*healthpb.HealthCheckRequest))
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/usher.test.Panicking/Check"}
			return interceptor(ctx, in, info, handle)
		},
	}},
}

// startLoggedServer serves Usher under the default policy with logger and
// the panicking service registered on the *grpc.Server that server.New
// returns, and answers a connection to it.
func startLoggedServer(t *testing.T, logger *slog.Logger) *grpc.ClientConn {
	t.Helper()
	store, err := bolt.Open(filepath.Join(t.TempDir(), "usher.db"), bolt.Options{})
	if err != nil {
		t.Fatalf("storage.Open: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	engine, err := authz.Start(context.Background(), store, authz.Options{})
	if err != nil {
		t.Fatalf("authz.Start: %v", err)
	}
	msg, err := policy.Load("default")
	if err != nil {
		t.Fatalf("policy.Load(default): %v", err)
	}
	if _, _, err := engine.ApplyPolicy(t.Context(), authz.Author{Caller: "test"}, server.FromPolicy(msg), authz.ApplyOptions{}); err != nil {
		t.Fatalf("ApplyPolicy(default): %v", err)
	}

	srv := server.New(engine, logger)
	srv.RegisterService(&panickingService, panickingHealth{health.NewServer()})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestPanicInAHandler proves that a panicking handler answers INTERNAL, is
// logged with its value, and leaves the server serving.
func TestPanicInAHandler(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	conn := startLoggedServer(t, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	for range 3 {
		var resp healthpb.HealthCheckResponse
		err := conn.Invoke(ctx, "/usher.test.Panicking/Check", &healthpb.HealthCheckRequest{}, &resp)
		st := wantCode(t, err, codes.Internal)
		if strings.Contains(st.Message(), "blew up") {
			t.Errorf("the INTERNAL message %q shows the panic to the caller", st.Message())
		}
	}
	out := logs.String()
	if !strings.Contains(out, "handler panicked") || !strings.Contains(out, "test handler blew up") {
		t.Errorf("the log does not record the panic:\n%s", out)
	}
	if !strings.Contains(out, "usher.test.Panicking") || !strings.Contains(out, "Internal") {
		t.Errorf("the log does not record the call that panicked and its code:\n%s", out)
	}

	client := usherv1.NewAuthorizationServiceClient(conn)
	resp, err := client.Check(ctx, &usherv1.CheckRequest{Subject: "user:alice", Permission: "join-call", Resource: "root"})
	if err != nil {
		t.Fatalf("Check after the panics: %v", err)
	}
	if resp.GetDecision().GetReason() != usherv1.Reason_REASON_NO_GRANT {
		t.Errorf("Check after the panics = %v, want a deny for NO_GRANT", resp.GetDecision())
	}
	hresp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hresp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after the panics = %v, %v; want SERVING", hresp.GetStatus(), err)
	}
}

// A revision a client names may be any uint64. Past the largest int, the
// store's window of recent change sets took it for a negative position and
// panicked holding its lock, and every write after waited for ever. It is
// past the latest revision, and refused so.
func TestListChangesAfterAnyRevision(t *testing.T) {
	f := newServer(t)
	f.world()
	for _, after := range []uint64{1 << 63, 1<<64 - 2, 1<<64 - 1} {
		resp, err := f.admin.ListChanges(f.ctx(), &usherv1.ListChangesRequest{AfterRevision: after})
		if err == nil {
			t.Errorf("ListChanges(after_revision %d) = %d changes, token %q; want FAILED_PRECONDITION", after,
				len(resp.GetChanges()), resp.GetNextPageToken())
			continue
		}
		wantDetails(t, wantCode(t, err, codes.FailedPrecondition), refusal{reason: "FUTURE_REVISION", field: "after_revision", value: fmt.Sprint(after)})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := f.admin.Grant(ctx, &usherv1.GrantRequest{Subject: "user:alice", Role: "host", Resource: acme}); err != nil {
		t.Fatalf("a Grant after those: %v", err)
	}
}
