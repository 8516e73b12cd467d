package bench

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"
)

// Call is one request of a closed-loop load, made by worker as its seq-th
// call. outcome, when not empty, is counted (a Join's ADMITTED or LOBBY).
type Call func(ctx context.Context, worker, seq int) (outcome string, err error)

// Stats is what a closed-loop load measured, over one round or, merged, over
// all the rounds of one target.
type Stats struct {
	Name    string
	Calls   int
	Errors  int
	Elapsed time.Duration
	// Items is how many answers one call carries (a CheckBatch of 100: 100);
	// 0 counts as 1.
	Items int
	// FirstError is the first failure seen, to say what the errors were.
	FirstError error
	// Outcomes counts the outcomes the calls reported.
	Outcomes map[string]int
	// ServerCPU is the CPU time the serving process spent while this load
	// ran, ClientCPU the load tool's own; 0 when not measured.
	ServerCPU, ClientCPU time.Duration
	// RSS is the serving process's resident memory at the end of the last
	// round, RSSPeak the most seen while it ran, in bytes; 0 when not
	// measured.
	RSS, RSSPeak int64
	latency      []time.Duration // sorted
}

// RPS is completed calls per second.
func (s Stats) RPS() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Calls) / s.Elapsed.Seconds()
}

// ItemsPerSecond is answers per second: RPS times Items.
func (s Stats) ItemsPerSecond() float64 {
	return s.RPS() * float64(max(s.Items, 1))
}

// Percentile is the latency below which the fraction q of calls completed,
// by nearest rank: the smallest latency that at least q of the calls did not
// exceed.
func (s Stats) Percentile(q float64) time.Duration {
	n := len(s.latency)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(n))) - 1
	return s.latency[min(max(i, 0), n-1)]
}

// PerCall divides a total, such as CPU time, by the calls made.
func (s Stats) PerCall(total time.Duration) time.Duration {
	if s.Calls == 0 {
		return 0
	}
	return total / time.Duration(s.Calls)
}

// Merge sums rounds of one target into one Stats: calls, errors, time and
// CPU add up, latencies are pooled, and the memory figures are those of the
// last round and the peak of all.
func Merge(rounds ...Stats) Stats {
	var s Stats
	n := 0
	for _, r := range rounds {
		n += len(r.latency)
	}
	s.latency = make([]time.Duration, 0, n)
	for _, r := range rounds {
		if s.Name == "" {
			s.Name, s.Items = r.Name, r.Items
		}
		s.Calls += r.Calls
		s.Errors += r.Errors
		s.Elapsed += r.Elapsed
		s.ServerCPU += r.ServerCPU
		s.ClientCPU += r.ClientCPU
		if s.FirstError == nil {
			s.FirstError = r.FirstError
		}
		for k, v := range r.Outcomes {
			if s.Outcomes == nil {
				s.Outcomes = map[string]int{}
			}
			s.Outcomes[k] += v
		}
		if r.RSS != 0 {
			s.RSS = r.RSS
		}
		s.RSSPeak = max(s.RSSPeak, r.RSSPeak)
		s.latency = append(s.latency, r.latency...)
	}
	slices.Sort(s.latency)
	return s
}

// ClosedLoop runs workers goroutines, each calling call back to back until
// d has passed or ctx ends, and measures every call. A call still in flight
// when d has passed is let finish and measured, so that no call is cut off
// and neither side sees cancellations; the run lasts until the last one is
// back.
func ClosedLoop(ctx context.Context, name string, workers int, d time.Duration, call Call) Stats {
	lats := make([][]time.Duration, workers)
	errs := make([]int, workers)
	firstErrs := make([]error, workers)
	outcomes := make([]map[string]int, workers)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1<<14)
			for seq := 0; ctx.Err() == nil; seq++ {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				outcome, err := call(ctx, w, seq)
				lat = append(lat, time.Since(t0))
				if outcome != "" {
					if outcomes[w] == nil {
						outcomes[w] = map[string]int{}
					}
					outcomes[w][outcome]++
				}
				if err != nil {
					errs[w]++
					if firstErrs[w] == nil {
						firstErrs[w] = err
					}
				}
			}
			lats[w] = lat
		}()
	}
	wg.Wait()
	parts := make([]Stats, workers)
	for w := range workers {
		parts[w] = Stats{Name: name, Calls: len(lats[w]), Errors: errs[w], FirstError: firstErrs[w], Outcomes: outcomes[w], latency: lats[w]}
	}
	s := Merge(parts...)
	s.Elapsed = time.Since(start)
	return s
}
