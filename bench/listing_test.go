package bench

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A listing of three pages goes on across runs: a run that ends between
// its pages leaves the rest to the next, and the pages' times add up to the
// whole. A failed page spoils its listing, which is not counted whole.
func TestListerFollowsListingsAcrossRuns(t *testing.T) {
	refused := errors.New("refused")
	page := 0
	l := &Lister{Name: "admin", Next: func(ctx context.Context, seq int) (Step, error) {
		time.Sleep(time.Millisecond)
		if seq == 7 {
			page = 0
			return Step{Kind: "pages of three"}, refused
		}
		if seq%5 == 4 {
			return Step{Kind: "one call", Last: true}, nil
		}
		page++
		last := page == 3
		if last {
			page = 0
		}
		return Step{Kind: "pages of three", Items: 10, Last: last}, nil
	}}
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Millisecond)
		l.Run(ctx)
		cancel()
	}
	got := l.Listings()
	if len(got) != 2 || got[0].Kind != "pages of three" || got[1].Kind != "one call" {
		t.Fatalf("listings %+v, want the two kinds in the order they came", got)
	}
	three, one := got[0], got[1]
	if three.Wholes == 0 || three.ItemsMin != 30 || three.ItemsMax != 30 || three.PagesMin != 3 || three.PagesMax != 3 {
		t.Errorf("pages of three: %+v; want whole listings of 3 pages and 30 answers", three)
	}
	if three.Pages < 3*three.Wholes || three.WholeP50 < 3*Micros(time.Millisecond) || three.PageP50 < Micros(time.Millisecond) {
		t.Errorf("pages of three: %+v; want each whole the sum of its pages", three)
	}
	if one.Pages != one.Wholes || one.ItemsMax != 0 || one.Lister != "admin" {
		t.Errorf("one call: %+v", one)
	}
	if n, err := l.Errors(); n != 1 || !errors.Is(err, refused) {
		t.Errorf("errors %d (%v), want the one refusal", n, err)
	}
	// Each run's deadline starts before the run does, so a run may last a
	// little under its 15 ms.
	if a := l.Active(); a < 40*time.Millisecond || a > 200*time.Millisecond {
		t.Errorf("active %s over three runs of 15 ms", a)
	}
}

// With a rate, the calls keep to it however fast the server answers.
func TestListerKeepsToItsRate(t *testing.T) {
	calls := 0
	l := &Lister{Name: "paced", Rate: 100, Next: func(ctx context.Context, seq int) (Step, error) {
		calls++
		return Step{Kind: "page", Last: true}, nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	l.Run(ctx)
	if calls < 15 || calls > 21 {
		t.Errorf("%d calls in 200 ms at 100/s, want about 20", calls)
	}
}

// A Target without a call runs its background alone for the round.
func TestInterleaveRunsABackgroundAlone(t *testing.T) {
	runs := 0
	targets := []Target{{Name: "alone", Background: func(ctx context.Context) {
		runs++
		<-ctx.Done()
	}}}
	// The rounds' time is the harness's own count; the background starts
	// a moment into each round, so its own clock would read less.
	got := Interleave(context.Background(), Plan{Workers: 2, Duration: 60 * time.Millisecond, Round: 20 * time.Millisecond, Warmup: 10 * time.Millisecond}, targets, nil)
	if runs != 3 || got[0].Calls != 0 || got[0].Elapsed < 60*time.Millisecond {
		t.Errorf("background ran %d times; stats %+v; want 3 rounds of 20 ms and no calls", runs, got[0])
	}
}
