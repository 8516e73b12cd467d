package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

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

// At most MaxHealthWatches health Watch streams are open at once; one past
// it is refused with RESOURCE_EXHAUSTED, and a stream that ends makes room.
func TestHealthWatchesAreBounded(t *testing.T) {
	f := newServer(t)
	ctx, cancel := context.WithCancel(f.ctx())
	defer cancel()
	watch := func(ctx context.Context) (healthpb.Health_WatchClient, error) {
		w, err := f.health.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return nil, err
		}
		// The first message says the stream is open on the server.
		if resp, err := w.Recv(); err != nil {
			return nil, err
		} else if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("a health Watch first says %s, want SERVING", resp.GetStatus())
		}
		return w, nil
	}
	first, cancelFirst := context.WithCancel(ctx)
	if _, err := watch(first); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < server.MaxHealthWatches; i++ {
		if _, err := watch(ctx); err != nil {
			t.Fatalf("health Watch %d of %d: %v", i+1, server.MaxHealthWatches, err)
		}
	}
	_, err := watch(ctx)
	st := wantCode(t, err, codes.ResourceExhausted)
	wantDetails(t, st, refusal{reason: "WATCH_LIMIT", meta: map[string]string{"limit": "1024"}})

	cancelFirst()
	var again error
	for range 100 { // the server counts the first stream out once it sees it end
		if _, again = watch(ctx); again == nil {
			break
		}
		wantCode(t, again, codes.ResourceExhausted)
		time.Sleep(10 * time.Millisecond)
	}
	if again != nil {
		t.Fatalf("after a stream ended, a new health Watch is still refused: %v", again)
	}
}
