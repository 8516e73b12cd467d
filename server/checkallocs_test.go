package server_test

import (
	"context"
	"math"
	"testing"

	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/usher-authz/usher/server"
)

// TestACheckCallAllocatesAboutAsMuchAsABareHealthCheck holds Check's path to
// what gRPC itself allocates: over a real connection, client and server
// together, a Check makes at most a few allocations more than the health
// check of a bare gRPC server in the same process, for its larger request
// and answer and Usher's interceptors. A wrapper or an interceptor that
// allocated on every call would pass the bound.
func TestACheckCallAllocatesAboutAsMuchAsABareHealthCheck(t *testing.T) {
	f := startServer(t, t.TempDir())
	defer f.stop()
	ctx := context.Background()
	req := f.aliceHostsAcme(t)
	check := func() {
		if d, err := f.authz.Check(ctx, req); err != nil || !d.GetDecision().GetAllowed() {
			t.Fatalf("Check: %v, %v", d, err)
		}
	}
	health := func() {
		if _, err := f.health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("health Check: %v", err)
		}
	}
	// The floor: a bare gRPC server of the health service alone.
	bare := grpc.NewServer()
	healthpb.RegisterHealthServer(bare, grpchealth.NewServer())
	conn := server.ServeLoopback(t, bare)
	floorClient := healthpb.NewHealthClient(conn)
	floor := func() {
		if _, err := floorClient.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("bare health Check: %v", err)
		}
	}
	check()
	health()
	floor()
	// AllocsPerRun counts the whole process's allocations: the server's
	// own background work adds to whichever call it runs beside. Each is
	// measured in rounds, interleaved, and its least round counts.
	c, h, fl := math.Inf(1), math.Inf(1), math.Inf(1)
	for range 5 {
		c = min(c, testing.AllocsPerRun(400, check))
		h = min(h, testing.AllocsPerRun(400, health))
		fl = min(fl, testing.AllocsPerRun(400, floor))
	}
	t.Logf("allocations a call: Check %v, health check %v, bare health check %v", c, h, fl)
	if c > fl+checkAllocsOverFloor {
		t.Errorf("a Check makes %v allocations, a bare server's health check %v: want at most %d more", c, fl, checkAllocsOverFloor)
	}
}

// checkAllocsOverFloor is how many more allocations a Check may make than a
// bare server's health check: 10 today (3 on every call of Usher's, its
// health check's too, and 7 for the request's three strings and the
// answer's decision), and a margin of 2.
const checkAllocsOverFloor = 12
