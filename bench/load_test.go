package bench

import (
	"errors"
	"math"
	"testing"
	"time"
)

// stats builds a Stats from latencies in microseconds, as a round that
// lasted elapsed.
func stats(name string, elapsed time.Duration, us ...int) Stats {
	s := Stats{Name: name, Calls: len(us), Elapsed: elapsed}
	for _, u := range us {
		s.latency = append(s.latency, time.Duration(u)*time.Microsecond)
	}
	return Merge(s)
}

func oneTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = n - i // unsorted on purpose
	}
	return out
}

func TestPercentileIsTheNearestRank(t *testing.T) {
	s := stats("x", time.Second, oneTo(1000)...)
	for _, c := range []struct {
		q    float64
		want int
	}{
		{0.5, 500}, {0.9, 900}, {0.99, 990}, {0.999, 999}, {1, 1000}, {0, 1},
	} {
		if got := s.Percentile(c.q); got != time.Duration(c.want)*time.Microsecond {
			t.Errorf("p%v of 1..1000 us = %s, want %dus", c.q*100, got, c.want)
		}
	}
	if got := stats("x", time.Second, 7).Percentile(0.999); got != 7*time.Microsecond {
		t.Errorf("p99.9 of one call = %s, want that call", got)
	}
	if got := stats("x", time.Second, 1, 2).Percentile(0.5); got != time.Microsecond {
		t.Errorf("p50 of 1 and 2 us = %s, want 1us: half the calls took no more", got)
	}
	if got := (Stats{}).Percentile(0.99); got != 0 {
		t.Errorf("p99 of no calls = %s, want 0", got)
	}
}

func TestMergeSumsRoundsAndPoolsLatencies(t *testing.T) {
	fail := errors.New("refused")
	a := stats("check", 2*time.Second, 1, 2, 3)
	a.Errors, a.FirstError, a.ServerCPU, a.RSS, a.RSSPeak = 1, fail, time.Millisecond, 100, 150
	a.Outcomes = map[string]int{"ADMITTED": 2, "LOBBY": 1}
	b := stats("check", time.Second, 10, 20)
	b.ServerCPU, b.RSS, b.RSSPeak = 2*time.Millisecond, 120, 130
	b.Outcomes = map[string]int{"ADMITTED": 2}
	m := Merge(a, b)
	if m.Calls != 5 || m.Errors != 1 || m.Elapsed != 3*time.Second || !errors.Is(m.FirstError, fail) {
		t.Errorf("merged %d calls, %d errors in %s (%v); want 5, 1 in 3s (refused)", m.Calls, m.Errors, m.Elapsed, m.FirstError)
	}
	if m.ServerCPU != 3*time.Millisecond || m.RSS != 120 || m.RSSPeak != 150 {
		t.Errorf("CPU %s, RSS %d, peak %d; want 3ms, the last round's 120 and the highest 150", m.ServerCPU, m.RSS, m.RSSPeak)
	}
	if m.Outcomes["ADMITTED"] != 4 || m.Outcomes["LOBBY"] != 1 {
		t.Errorf("outcomes %v", m.Outcomes)
	}
	if got := m.Percentile(1); got != 20*time.Microsecond {
		t.Errorf("slowest of the pooled calls %s, want 20us", got)
	}
	if got := m.RPS(); got != 5.0/3 {
		t.Errorf("RPS %v, want 5 calls over the 3 s the rounds lasted", got)
	}
	if got := m.PerCall(m.ServerCPU); got != 600*time.Microsecond {
		t.Errorf("CPU per call %s, want 600us", got)
	}
}

func TestRatiosAreToTheFloor(t *testing.T) {
	floor := stats("floor", time.Second, oneTo(1000)...)
	usher := stats("usher", 2*time.Second, oneTo(1000)...)
	for i := range usher.latency {
		usher.latency[i] *= 2
	}
	tput, p99 := Ratios(usher, floor)
	if math.Abs(tput-0.5) > 1e-9 || math.Abs(p99-2) > 1e-9 {
		t.Errorf("half the throughput at twice the latency: ratios %v and %v, want 0.5 and 2", tput, p99)
	}
	if tput, p99 := Ratios(floor, floor); tput != 1 || p99 != 1 {
		t.Errorf("the floor to itself: %v and %v, want 1 and 1", tput, p99)
	}
	if tput, p99 := Ratios(usher, Stats{}); tput != 0 || p99 != 0 {
		t.Errorf("against no floor: %v and %v, want 0 and 0", tput, p99)
	}
	batch := stats("batch", time.Second, 1, 2)
	batch.Items = 100
	if got := batch.ItemsPerSecond(); got != 200 {
		t.Errorf("2 calls of 100 checks in 1 s: %v checks/s, want 200", got)
	}
}
