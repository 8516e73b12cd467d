package bench

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDueNeverAsksForMoreThanTheRate(t *testing.T) {
	for _, c := range []struct {
		elapsed time.Duration
		rate    int
		want    int
	}{
		{0, 1000, 0},
		{999 * time.Microsecond, 1000, 0},
		{time.Millisecond, 1000, 1},
		{time.Second, 1000, 1000},
		{1500 * time.Millisecond, 10, 15},
		{time.Second, 0, 0},
		{-time.Second, 10, 0},
	} {
		if got := Due(c.elapsed, c.rate); got != c.want {
			t.Errorf("Due(%s, %d/s) = %d, want %d", c.elapsed, c.rate, got, c.want)
		}
	}
}

// A server that keeps up gets the rate asked, over several rounds.
func TestPacerDeliversTheRateToAServerThatKeepsUp(t *testing.T) {
	p := &Pacer{Name: "writes", Rate: 500, Call: func(ctx context.Context, seq int) error {
		time.Sleep(2 * time.Millisecond) // open loop: about one call in flight
		return nil
	}}
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		p.Run(ctx)
		cancel()
	}
	r := p.Result()
	scheduled := 500 * r.Stats.Elapsed.Seconds()
	// Each round's clock starts a little after its 200 ms deadline was set,
	// so two rounds add up to a little under 400 ms; more than one round's
	// worth shows they were added up.
	if r.Stats.Elapsed <= 200*time.Millisecond || float64(r.Stats.Calls) < scheduled-2 || float64(r.Stats.Calls) > scheduled || r.Missed != 0 {
		t.Errorf("%d calls sent and %d missed in %s at 500/s; want %.0f and none", r.Stats.Calls, r.Missed, r.Stats.Elapsed, scheduled)
	}
	if !r.Delivered() || r.Achieved() > 500 {
		t.Errorf("achieved %.0f/s of 500/s; want delivered and never more than asked", r.Achieved())
	}
	if got := WritesOf(r); !got.Delivered || got.Sent != r.Stats.Calls || got.P50 < Micros(2*time.Millisecond) {
		t.Errorf("writes %+v", got)
	}
}

// A server that cannot keep up is not given a politer rate: calls beyond
// the in-flight limit are counted as missed, failures do not count as
// delivered, and the result says the rate was not delivered.
func TestPacerSaysWhenItCouldNotDeliver(t *testing.T) {
	slow := &Pacer{Name: "slow", Rate: 1000, MaxInFlight: 2, Call: func(ctx context.Context, seq int) error {
		time.Sleep(20 * time.Millisecond)
		return nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	slow.Run(ctx)
	r := slow.Result()
	if r.Delivered() || r.Missed < 100 || r.Achieved() > 200 {
		t.Errorf("2 in flight of 20 ms each at 1000/s: achieved %.0f/s, %d missed, delivered %t; want about 100/s, most missed, not delivered",
			r.Achieved(), r.Missed, r.Delivered())
	}

	refused := errors.New("refused")
	failing := &Pacer{Name: "failing", Rate: 200, Call: func(ctx context.Context, seq int) error { return refused }}
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	failing.Run(ctx)
	r = failing.Result()
	if r.Delivered() || r.Achieved() != 0 || r.Stats.Errors == 0 || !errors.Is(r.Stats.FirstError, refused) {
		t.Errorf("every call refused: achieved %.0f/s, %d errors (%v), delivered %t", r.Achieved(), r.Stats.Errors, r.Stats.FirstError, r.Delivered())
	}
}

// Short rounds add up: the schedule carries over from one run to the next
// instead of each round losing the fraction of a call it ends in.
func TestPacerScheduleCarriesOverRounds(t *testing.T) {
	p := &Pacer{Name: "writes", Rate: 30, Call: func(ctx context.Context, seq int) error { return nil }}
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Millisecond)
		p.Run(ctx)
		cancel()
	}
	r := p.Result()
	// Alone, each 25 ms round at 30/s would ask for no call at all.
	if want := Due(r.Stats.Elapsed, 30); r.Stats.Calls != want || want < 7 {
		t.Errorf("%d calls in 10 rounds, %s in all, at 30/s; want %d", r.Stats.Calls, r.Stats.Elapsed, want)
	}
}
