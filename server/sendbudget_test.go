package server

import (
	"log/slog"
	"sync"
	"testing"
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
	if ok, _, _ := a.take(sendAllowance, false); !ok || b.used != 0 {
		t.Fatalf("an answer within the allowance: ok %v, the budget holds %d, want 0", ok, b.used)
	}
	if ok, _, _ := a.take(1<<20, false); !ok || b.used != 1<<20 {
		t.Fatalf("an answer of the whole budget, when nothing else draws on it: ok %v, the budget holds %d", ok, b.used)
	}
	if ok, pending, used := c.take(sendAllowance+1, false); ok || pending != 0 || used != 1<<20 {
		t.Fatalf("an answer past the budget on another connection: ok %v, pending %d, used %d; want it refused", ok, pending, used)
	}
	if ok, _, _ := c.take(sendAllowance, false); !ok {
		t.Fatal("an answer within its connection's allowance was refused")
	}
	if ok, _, _ := c.take(1, true); !ok || b.used != 1<<20+1 {
		t.Fatalf("a stream's message is counted, never refused: ok %v, the budget holds %d", ok, b.used)
	}
	a.wrote(1 << 19)
	if a.pending != sendAllowance+1<<19 || b.used != 1<<19+1 {
		t.Fatalf("after writing half: connection %d, budget %d", a.pending, b.used)
	}
	// A stream the client resets loses what grpc-go had not sent: with no
	// stream open, the connection holds nothing.
	a.opened(3)
	a.ended(1)
	if a.pending == 0 {
		t.Fatal("the connection holds nothing while a stream is still open")
	}
	a.ended(3)
	if a.pending != 0 || b.used != 1 {
		t.Fatalf("with no stream open: connection %d, budget %d, want 0 and 1", a.pending, b.used)
	}
	c.close()
	if b.used != 0 {
		t.Fatalf("a closed connection left %d bytes drawn", b.used)
	}
	if ok, _, _ := c.take(10<<20, false); !ok || b.used != 0 {
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
				if ok, _, _ := c.take(100<<10, false); ok {
					c.wrote(100 << 10)
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
