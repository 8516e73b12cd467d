package bench

import (
	"context"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRoundsCutTheDurationEvenly(t *testing.T) {
	for _, c := range []struct {
		d, round time.Duration
		n        int
		each     time.Duration
	}{
		{10 * time.Second, time.Second, 10, time.Second},
		{5 * time.Second, 2 * time.Second, 3, 5 * time.Second / 3},
		{time.Second, 5 * time.Second, 1, time.Second},
		{time.Second, 0, 1, time.Second},
		{0, time.Second, 0, 0},
	} {
		n, each := Plan{Duration: c.d, Round: c.round}.Rounds()
		if n != c.n || each != c.each {
			t.Errorf("%s in rounds of at most %s: %d of %s, want %d of %s", c.d, c.round, n, each, c.n, c.each)
		}
	}
}

// Over any n consecutive rounds every target runs once in every position.
func TestOrderIsALatinSquare(t *testing.T) {
	for n := 1; n <= 4; n++ {
		for from := range 3 {
			at := make([][]int, n) // at[target] = positions it took
			for r := from; r < from+n; r++ {
				order := Order(n, r)
				if got := slices.Sorted(slices.Values(order)); !slices.Equal(got, Order(n, 0)) {
					t.Fatalf("round %d of %d targets: %v does not run each once", r, n, order)
				}
				for pos, target := range order {
					at[target] = append(at[target], pos)
				}
			}
			for target, positions := range at {
				if slices.Sort(positions); !slices.Equal(positions, Order(n, 0)) {
					t.Errorf("%d targets, rounds %d..%d: target %d ran at positions %v", n, from, from+n-1, target, positions)
				}
			}
		}
	}
	if got := Order(2, 1); !slices.Equal(got, []int{1, 0}) {
		t.Errorf("two targets alternate who goes first: round 1 is %v", got)
	}
}

// Interleave takes turns: every round runs each target once, each target's
// time sums to the duration, and a target's background load runs during its
// rounds only.
func TestInterleaveTakesTurnsAndSumsEachTarget(t *testing.T) {
	var mu sync.Mutex
	var log []string
	var background atomic.Bool
	overlaps := 0
	call := func(name string) Call {
		return func(ctx context.Context, w, seq int) (string, error) {
			mu.Lock()
			if len(log) == 0 || log[len(log)-1] != name {
				log = append(log, name)
			}
			if name == "a" && background.Load() {
				overlaps++
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
			return "", nil
		}
	}
	bgRuns := 0
	bg := func(ctx context.Context) {
		bgRuns++
		background.Store(true)
		<-ctx.Done()
		background.Store(false)
	}
	targets := []Target{
		{Name: "a", Call: call("a"), PID: os.Getpid()},
		{Name: "b", Call: call("b"), Items: 10, Background: bg},
	}
	p := Plan{Workers: 2, Duration: 200 * time.Millisecond, Round: 50 * time.Millisecond, Warmup: 10 * time.Millisecond}
	got := Interleave(context.Background(), p, targets, func() {
		mu.Lock()
		log = append(log, "|")
		mu.Unlock()
	})
	want := []string{"a", "b", "|", "b", "a", "|", "a", "b", "|", "b", "a", "|"}
	if warm := log[:2]; !slices.Equal(warm, []string{"a", "b"}) {
		t.Errorf("warm-up %v, want each target once", warm)
	}
	if log = log[2:]; !slices.Equal(log, want) {
		t.Errorf("turns %v, want %v", log, want)
	}
	if bgRuns != 4 || overlaps != 0 {
		t.Errorf("background ran %d times, %d calls of the other target saw it; want 4 (once per round of b) and 0", bgRuns, overlaps)
	}
	for i, s := range got {
		if s.Name != targets[i].Name || s.Items != targets[i].Items {
			t.Errorf("stats %d named %q with %d items, want %q with %d", i, s.Name, s.Items, targets[i].Name, targets[i].Items)
		}
		if s.Elapsed < p.Duration || s.Elapsed > p.Duration+100*time.Millisecond {
			t.Errorf("%s ran %s in all, want about %s", s.Name, s.Elapsed, p.Duration)
		}
		if s.Calls < 100 {
			t.Errorf("%s: %d calls, want about 2 workers x 200 ms / 1 ms", s.Name, s.Calls)
		}
	}
	if got[0].RSS == 0 || got[0].RSSPeak < got[0].RSS {
		t.Errorf("this process's memory: %d, peak %d; want it read", got[0].RSS, got[0].RSSPeak)
	}
	if got[1].RSS != 0 || got[1].ServerCPU != 0 {
		t.Errorf("a target without a pid has memory %d and CPU %s; want none", got[1].RSS, got[1].ServerCPU)
	}
}
