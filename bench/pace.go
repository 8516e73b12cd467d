package bench

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Delivered is the share of the asked rate a Pacer must achieve for its
// load to count as delivered.
const Delivered = 0.95

// Pacer makes calls at a fixed rate, open loop: each call is sent when the
// schedule says, whether or not earlier ones are back, so that a slow server
// gets the rate it was asked to take rather than a politer one. At most
// MaxInFlight calls are out at once; one the schedule asks for beyond that
// is not sent, and counted as missed. Run may be called many times, once per
// round; the totals add up.
type Pacer struct {
	Name string
	// Rate is the calls a second to send.
	Rate int
	// MaxInFlight bounds the calls out at once; 0 means 256.
	MaxInFlight int
	// Timeout bounds each call; 0 means 10 s.
	Timeout time.Duration
	Call    func(ctx context.Context, seq int) error

	mu      sync.Mutex
	seq     int
	issued  int // calls the schedule asked for, sent or missed
	missed  int
	active  time.Duration
	latency []time.Duration
	errors  int
	first   error
}

// Run sends calls at Rate until ctx ends, then waits for those still out.
// The calls do not run under ctx: its end stops the schedule, not the calls.
func (p *Pacer) Run(ctx context.Context) {
	if p.Rate <= 0 {
		return
	}
	limit := p.MaxInFlight
	if limit <= 0 {
		limit = 256
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	slots := make(chan struct{}, limit)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	// The schedule's clock runs only while Run does, and carries over from
	// one run to the next, so that short rounds add up to the rate rather
	// than each losing its last fraction of a call.
	start := time.Now()
	p.mu.Lock()
	before, issued := p.active, p.issued
	p.mu.Unlock()
	var active time.Duration
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
		}
		// At the end too, what is due by then is sent: the schedule asks
		// for Rate a second over the whole time it ran, however late this
		// loop was woken.
		active = time.Since(start)
		for due := Due(before+active, p.Rate) - issued; due > 0; due-- {
			issued++
			select {
			case slots <- struct{}{}:
			default:
				p.mu.Lock()
				p.missed++
				p.mu.Unlock()
				continue
			}
			p.mu.Lock()
			seq := p.seq
			p.seq++
			p.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				callCtx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				t0 := time.Now()
				err := p.Call(callCtx, seq)
				lat := time.Since(t0)
				<-slots
				p.mu.Lock()
				defer p.mu.Unlock()
				p.latency = append(p.latency, lat)
				if err != nil {
					p.errors++
					if p.first == nil {
						p.first = err
					}
				}
			}()
		}
	}
	wg.Wait()
	p.mu.Lock()
	p.active += active
	p.issued = issued
	p.mu.Unlock()
}

// Due is how many calls a schedule of rate a second has sent after
// elapsed: one at the end of every 1/rate, so that a run of any length asks
// for no more than the rate.
func Due(elapsed time.Duration, rate int) int {
	if elapsed <= 0 || rate <= 0 {
		return 0
	}
	return int(elapsed.Seconds() * float64(rate))
}

// PacedResult is what a Pacer's runs did, summed.
type PacedResult struct {
	// Stats are the calls sent; Elapsed is the time the schedule ran.
	Stats Stats
	// Rate is the rate asked for.
	Rate int
	// Missed counts the calls the schedule asked for but that were not sent
	// because MaxInFlight were out.
	Missed int
}

// Result sums the runs so far.
func (p *Pacer) Result() PacedResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	lat := slices.Clone(p.latency)
	slices.Sort(lat)
	return PacedResult{
		Stats: Stats{Name: p.Name, Calls: len(lat), Errors: p.errors, FirstError: p.first, Elapsed: p.active, latency: lat},
		Rate:  p.Rate, Missed: p.missed,
	}
}

// Achieved is the rate of calls that succeeded, over the time the schedule
// ran.
func (r PacedResult) Achieved() float64 {
	if r.Stats.Elapsed <= 0 {
		return 0
	}
	return float64(r.Stats.Calls-r.Stats.Errors) / r.Stats.Elapsed.Seconds()
}

// Delivered says whether the achieved rate reached Delivered of the asked
// one.
func (r PacedResult) Delivered() bool {
	return r.Achieved() >= Delivered*float64(r.Rate)
}
