package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/usher-authz/usher/server"
)

// The health service answers without credentials, and a Watch keeps its
// request for as long as its stream lasts: a name longer than any service's
// is refused, naming the field, rather than held.
func TestHealthRefusesAServiceNameLongerThanAnyService(t *testing.T) {
	f := newServer(t)
	long := strings.Repeat("s", server.MaxHealthServiceLen+1)
	_, err := f.health.Check(f.ctx(), &healthpb.HealthCheckRequest{Service: long})
	wantDetails(t, wantCode(t, err, codes.InvalidArgument), refusal{reason: "INVALID_FIELD", field: "service", value: long})

	w, err := f.health.Watch(f.ctx(), &healthpb.HealthCheckRequest{Service: long})
	if err == nil {
		_, err = w.Recv()
	}
	wantDetails(t, wantCode(t, err, codes.InvalidArgument), refusal{reason: "INVALID_FIELD", field: "service", value: long})

	// A huge name is quoted cut short, as every refusal quotes a value.
	_, err = f.health.Check(f.ctx(), &healthpb.HealthCheckRequest{Service: strings.Repeat("s", 1<<20)})
	if st := wantCode(t, err, codes.InvalidArgument); len(st.Message()) > 2048 {
		t.Errorf("the refusal of a 1 MiB name is %d bytes long; want the name cut short", len(st.Message()))
	}

	// A name at the limit is asked about like any other: no such service.
	_, err = f.health.Check(f.ctx(), &healthpb.HealthCheckRequest{Service: long[1:]})
	wantCode(t, err, codes.NotFound)
	if resp, err := f.health.Check(f.ctx(), &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health of the server = %v, %v; want SERVING", resp, err)
	}
}

// healthWatch opens a health Watch of the server's health and reads its
// first message, which says the stream is open on the server.
func healthWatch(t *testing.T, ctx context.Context, c healthpb.HealthClient) (healthpb.Health_WatchClient, error) {
	t.Helper()
	w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return nil, err
	}
	if resp, err := w.Recv(); err != nil {
		return nil, err
	} else if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("a health Watch first says %s, want SERVING", resp.GetStatus())
	}
	return w, nil
}

// healthClient is a new connection to addr's health service, closed when
// the test ends.
func healthClient(t *testing.T, addr string) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// At most MaxHealthWatches health Watch streams are open at once, however
// many connections hold them; one past it is refused with
// RESOURCE_EXHAUSTED, and a stream that ends makes room.
func TestHealthWatchesAreBounded(t *testing.T) {
	f := newServer(t)
	// The streams last the whole test, whose 1,024 opens one after
	// another take longer than a call's usual deadline on a loaded
	// machine: they end with the test instead.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	first, cancelFirst := context.WithCancel(ctx)
	if _, err := healthWatch(t, first, f.health); err != nil {
		t.Fatal(err)
	}
	// The fixture's connection holds the first; new ones, their share each,
	// the rest.
	var clients []healthpb.HealthClient
	for len(clients)*server.MaxHealthWatchesPerConn < server.MaxHealthWatches {
		clients = append(clients, healthClient(t, f.addr))
	}
	for i := 1; i < server.MaxHealthWatches; i++ {
		if _, err := healthWatch(t, ctx, clients[i/server.MaxHealthWatchesPerConn]); err != nil {
			t.Fatalf("health Watch %d of %d: %v", i+1, server.MaxHealthWatches, err)
		}
	}
	_, err := healthWatch(t, ctx, f.health)
	st := wantCode(t, err, codes.ResourceExhausted)
	wantDetails(t, st, refusal{reason: "WATCH_LIMIT", meta: map[string]string{"limit": "1024"}})

	cancelFirst()
	// The server counts the first stream out once it sees it end.
	eventually(t, 5*time.Second, "a health Watch once one of the limit's ended", func() bool {
		_, err := healthWatch(t, ctx, f.health)
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted)
		}
		return err == nil
	})
}

// A health Watch needs no credentials, so one caller cannot be told from
// another: each connection may hold MaxHealthWatchesPerConn, one for each
// service a client's health checking follows and room to spare. One more
// is refused, naming the limit, while another connection still watches; a
// stream that ends makes room.
func TestAConnectionHoldsAtMostFourHealthWatches(t *testing.T) {
	const perConn = server.MaxHealthWatchesPerConn
	f := newServer(t)
	ctx := f.ctx()
	first, cancelFirst := context.WithCancel(ctx)
	defer cancelFirst()
	if _, err := healthWatch(t, first, f.health); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < perConn; i++ {
		if _, err := healthWatch(t, ctx, f.health); err != nil {
			t.Fatalf("health Watch %d of %d on one connection: %v", i+1, perConn, err)
		}
	}
	refused := func(c healthpb.HealthClient) {
		t.Helper()
		_, err := healthWatch(t, ctx, c)
		if err == nil {
			t.Fatalf("health Watch %d on one connection opened; want it refused", perConn+1)
		}
		st := wantCode(t, err, codes.ResourceExhausted)
		if !strings.Contains(st.Message(), fmt.Sprintf("at most %d", perConn)) {
			t.Errorf("message %q does not name the limit of %d", st.Message(), perConn)
		}
		wantDetails(t, st, refusal{reason: "CONNECTION_WATCH_LIMIT", meta: map[string]string{"limit": fmt.Sprint(perConn)}})
		if v := quotaValue(t, st); v != perConn {
			t.Errorf("QuotaFailure quota_value %d, want %d", v, perConn)
		}
	}
	refused(f.health)

	other := healthClient(t, f.addr)
	for i := range perConn {
		if _, err := healthWatch(t, ctx, other); err != nil {
			t.Fatalf("health Watch %d on another connection: %v", i+1, err)
		}
	}
	refused(other)

	cancelFirst()
	eventually(t, 5*time.Second, "a health Watch once one on its connection ended", func() bool {
		_, err := healthWatch(t, ctx, f.health)
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted)
		}
		return err == nil
	})
	refused(f.health)
}

// stopsWithin10s stops f gracefully and fails the test if it still waits,
// for a stream of what, after 10 s.
func stopsWithin10s(t *testing.T, f *fixture, what string) {
	t.Helper()
	stopped := make(chan struct{})
	go func() { f.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatalf("GracefulStop still waits for %s after 10s", what)
	}
}

// A health Watch, which a client's health checking holds open for as long
// as it uses the server, is told NOT_SERVING when the server drains and
// then ends, UNAVAILABLE, so that it does not keep a stopping server
// waiting until the drain runs out.
func TestGracefulStopEndsHealthWatches(t *testing.T) {
	f := newServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w, err := healthWatch(t, ctx, healthClient(t, f.addr))
	if err != nil {
		t.Fatal(err)
	}
	stopsWithin10s(t, f, "a health Watch")
	if resp, err := w.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("the health Watch of a draining server said %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	_, err = w.Recv()
	st := wantCode(t, err, codes.Unavailable)
	wantDetails(t, st, refusal{reason: "SHUTTING_DOWN"})
}

// A server reflection stream, which grpcui and the like keep open on their
// connection, ends UNAVAILABLE when the server drains, rather than keep a
// stopping server waiting until its drain runs out.
func TestGracefulStopEndsReflectionStreams(t *testing.T) {
	f := newServer(t)
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("reflection before the drain: %v", err)
	}
	stopsWithin10s(t, f, "a reflection stream")
	_, err = stream.Recv()
	st := wantCode(t, err, codes.Unavailable)
	wantDetails(t, st, refusal{reason: "SHUTTING_DOWN"})
}
