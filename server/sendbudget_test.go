package server

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// An answer counts against its connection from when a call hands it to
// grpc-go until the connection writes it; beyond each connection's
// allowance it draws on the budget, and one that does not fit is refused,
// unless forced (a stream's message) or nothing else draws on the budget.
func TestSendTallyHoldsWhatAnswersNotYetWrittenKeep(t *testing.T) {
	b := newSendBudget(1<<20, newRefusalLog(slog.New(slog.DiscardHandler)))
	a, c := newSendTally(b), newSendTally(b)
	a.opened(1)
	c.opened(1)
	if ok, _, _ := a.take(1, sendAllowance, false); !ok || b.used != 0 {
		t.Fatalf("an answer within the allowance: ok %v, the budget holds %d, want 0", ok, b.used)
	}
	if ok, _, _ := a.take(1, 1<<20, false); !ok || b.used != 1<<20 {
		t.Fatalf("an answer of the whole budget, when nothing else draws on it: ok %v, the budget holds %d", ok, b.used)
	}
	if ok, pending, used := c.take(1, sendAllowance+1, false); ok || pending != 0 || used != 1<<20 {
		t.Fatalf("an answer past the budget on another connection: ok %v, pending %d, used %d; want it refused", ok, pending, used)
	}
	if ok, _, _ := c.take(1, sendAllowance, false); !ok {
		t.Fatal("an answer within its connection's allowance was refused")
	}
	if ok, _, _ := c.take(1, 1, true); !ok || b.used != 1<<20+1 {
		t.Fatalf("a stream's message is counted, never refused: ok %v, the budget holds %d", ok, b.used)
	}
	a.wrote(1, 1<<19)
	if a.pending != sendAllowance+1<<19 || b.used != 1<<19+1 {
		t.Fatalf("after writing half: connection %d, budget %d", a.pending, b.used)
	}
	// DATA on another stream, or one already ended, counts off nothing of
	// stream 1's answer.
	a.opened(3)
	a.wrote(3, 100)
	a.wrote(5, 100)
	if a.pending != sendAllowance+1<<19 {
		t.Fatalf("DATA of other streams counted off stream 1's answer: connection %d", a.pending)
	}
	if ok, _, _ := a.take(3, 1000, true); !ok || a.pending != sendAllowance+1<<19+1000 {
		t.Fatalf("stream 3's message: ok %v, connection %d", ok, a.pending)
	}
	// A stream reset loses what grpc-go had not sent, though another stays
	// open: the connection holds what the other holds.
	a.ended(1)
	if a.pending != 1000 || b.used != 1 {
		t.Fatalf("with stream 1 reset and stream 3 open: connection %d, budget %d, want 1000 and 1", a.pending, b.used)
	}
	if ok, _, _ := a.take(1, 1<<20, false); !ok || a.pending != 1000 {
		t.Fatalf("an answer of a stream already ended: ok %v, connection %d; want it let through uncounted", ok, a.pending)
	}
	a.ended(3)
	if a.pending != 0 || b.used != 1 {
		t.Fatalf("with no stream open: connection %d, budget %d, want 0 and 1", a.pending, b.used)
	}
	c.close()
	if b.used != 0 {
		t.Fatalf("a closed connection left %d bytes drawn", b.used)
	}
	if ok, _, _ := c.take(1, 10<<20, false); !ok || b.used != 0 {
		t.Fatalf("a closed connection's answer: ok %v, the budget holds %d", ok, b.used)
	}
}

func TestSendTallyConcurrently(t *testing.T) {
	b := newSendBudget(1<<20, newRefusalLog(slog.New(slog.DiscardHandler)))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c := newSendTally(b)
			for i := range 1000 {
				id := uint32(2*i + 1)
				c.opened(id)
				if ok, _, _ := c.take(id, 100<<10, false); ok {
					c.wrote(id, 100<<10)
				}
				c.ended(id)
			}
			c.close()
		})
	}
	wg.Wait()
	if b.used != 0 {
		t.Fatalf("the budget holds %d once every connection closed", b.used)
	}
}

// The budget counts an answer against the HTTP/2 stream it goes out on,
// which grpc-go says only in a field of its own: a grpc-go that keeps it
// elsewhere would have no answer counted.
func TestStreamIDIsFound(t *testing.T) {
	if _, ok := streamID(nil); ok {
		t.Error("a stream id found in no stream")
	}
	var ids []uint32
	var mu sync.Mutex
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		id, ok := streamID(grpc.ServerTransportStreamFromContext(ctx))
		if !ok {
			return nil, status.Error(codes.Internal, "no stream id")
		}
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	conn := serveLoopback(t, srv)
	for range 2 {
		if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if len(ids) != 2 || ids[0] != 1 || ids[1] != 3 {
		t.Errorf("two calls on a new connection came on streams %v, want [1 3]", ids)
	}
}

// otherTransportStream is a transport stream that keeps no stream id.
type otherTransportStream struct{}

func (otherTransportStream) Method() string               { return "/usher.v1.AuthorizationService/Check" }
func (otherTransportStream) SetHeader(metadata.MD) error  { return nil }
func (otherTransportStream) SendHeader(metadata.MD) error { return nil }
func (otherTransportStream) SetTrailer(metadata.MD) error { return nil }

// A call whose stream the budget cannot tell goes uncounted, and the log
// says so, once: the budget must not stop counting unseen.
func TestSendBudgetSaysWhenItCannotTellTheStream(t *testing.T) {
	var logs bytes.Buffer
	b := newSendBudget(1<<20, newRefusalLog(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{}, AuthInfo: meteredInfo{sent: newSendTally(b)}})
	ctx = grpc.NewContextWithServerTransportStream(ctx, otherTransportStream{})
	for range 2 {
		if _, err := b.unaryInterceptor(ctx, nil, nil, func(context.Context, any) (any, error) {
			return &healthpb.HealthCheckResponse{}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "cannot tell the HTTP/2 stream"); n != 1 {
		t.Errorf("the log says %d times that calls' streams cannot be told, want once:\n%s", n, logs.String())
	}
}
