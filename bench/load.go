package bench

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Stats is what a closed-loop run measured.
type Stats struct {
	Name    string
	Calls   int
	Errors  int
	Elapsed time.Duration
	// FirstError is the first failure seen, to say what the errors were.
	FirstError error
	latency    []time.Duration // sorted
}

// RPS is completed calls per second.
func (s Stats) RPS() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Calls) / s.Elapsed.Seconds()
}

// Percentile is the latency below which the fraction q of calls completed.
func (s Stats) Percentile(q float64) time.Duration {
	if len(s.latency) == 0 {
		return 0
	}
	i := int(q * float64(len(s.latency)))
	return s.latency[min(i, len(s.latency)-1)]
}

// ClosedLoop runs workers goroutines, each calling call back to back until d
// has passed or ctx ends, and measures every call. call gets the worker and
// a per-worker sequence number.
func ClosedLoop(ctx context.Context, name string, workers int, d time.Duration, call func(ctx context.Context, worker, seq int) error) Stats {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	lats := make([][]time.Duration, workers)
	errs := make([]int, workers)
	firstErrs := make([]error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1<<16)
			for seq := 0; ctx.Err() == nil; seq++ {
				t0 := time.Now()
				err := call(ctx, w, seq)
				if ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded {
					break // a call cut by the end of the run is not measured
				}
				lat = append(lat, time.Since(t0))
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
	s := Stats{Name: name, Elapsed: time.Since(start)}
	for w := range workers {
		s.latency = append(s.latency, lats[w]...)
		s.Errors += errs[w]
		if s.FirstError == nil {
			s.FirstError = firstErrs[w]
		}
	}
	slices.Sort(s.latency)
	s.Calls = len(s.latency)
	return s
}

// Paced calls call about rate times a second until ctx ends, one at a time,
// and measures each, for a background write load.
func Paced(ctx context.Context, name string, rate int, call func(ctx context.Context, seq int) error) Stats {
	s := Stats{Name: name}
	if rate <= 0 {
		return s
	}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
	for seq := 0; ; seq++ {
		select {
		case <-ctx.Done():
			s.Elapsed = time.Since(start)
			slices.Sort(s.latency)
			s.Calls = len(s.latency)
			return s
		case <-tick.C:
		}
		t0 := time.Now()
		err := call(ctx, seq)
		if ctx.Err() != nil {
			continue
		}
		s.latency = append(s.latency, time.Since(t0))
		if err != nil {
			s.Errors++
			if s.FirstError == nil {
				s.FirstError = err
			}
		}
	}
}
