package bench

import (
	"context"
	"os"
	"sync"
	"time"
)

// Target is one load the tool compares: the floor's health check, Usher's
// own health check, Check, Join...
type Target struct {
	Name string
	// Server says which process serves it, "floor" or "usher".
	Server string
	// PID is that process, for its CPU time and resident memory; 0 when
	// unknown.
	PID int
	// Items is how many answers one call carries; 0 counts as 1.
	Items int
	// Call is the load's call; nil for a phase that runs its Background
	// alone (lookups with nothing beside them), whose figures are the
	// Background's own.
	Call Call
	// Background, when set, runs beside this target's load in each of its
	// rounds until its context ends, and is waited for before the next
	// round starts: the grants of check --writes.
	Background func(ctx context.Context)
}

// Plan says how long to load each target, in rounds of what length, with
// how many workers.
type Plan struct {
	Workers int
	// Duration is each target's measured time, summed over its rounds.
	Duration time.Duration
	// Round is the longest one target runs at a stretch.
	Round time.Duration
	// Warmup is each target's unmeasured run before the first round.
	Warmup time.Duration
}

// Rounds cuts Duration into n rounds of equal length, each no longer than
// Round.
func (p Plan) Rounds() (n int, each time.Duration) {
	if p.Duration <= 0 {
		return 0, 0
	}
	if p.Round <= 0 || p.Round >= p.Duration {
		return 1, p.Duration
	}
	n = int((p.Duration + p.Round - 1) / p.Round)
	return n, p.Duration / time.Duration(n)
}

// Order is the order in which round r loads n targets: rotated by r, so that
// over any n consecutive rounds every target runs once in every position,
// and a drift of the machine (a neighbour's job starting, a CPU throttling)
// weighs on all of them alike.
func Order(n, r int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = (i + r) % n
	}
	return out
}

// Interleave loads every target for p.Duration in all, in rounds: each round
// loads every target once, one after the other, for the round's length, so
// that each target's figures come from the same stretch of the machine's
// time. It returns one Stats per target, the sum of its rounds. afterRound,
// when not nil, is called after every round.
func Interleave(ctx context.Context, p Plan, targets []Target, afterRound func()) []Stats {
	for _, t := range targets {
		if p.Warmup > 0 && ctx.Err() == nil && t.Call != nil {
			ClosedLoop(ctx, t.Name, p.Workers, p.Warmup, t.Call)
		}
	}
	n, each := p.Rounds()
	rounds := make([][]Stats, len(targets))
	for r := range n {
		for _, i := range Order(len(targets), r) {
			if ctx.Err() != nil {
				break
			}
			rounds[i] = append(rounds[i], runRound(ctx, targets[i], p.Workers, each))
		}
		if afterRound != nil {
			afterRound()
		}
	}
	out := make([]Stats, len(targets))
	for i, t := range targets {
		out[i] = Merge(rounds[i]...)
		out[i].Name, out[i].Items = t.Name, t.Items
	}
	return out
}

// runRound loads t for d and measures, beside the calls, the CPU time its
// server and this process spend meanwhile and the server's resident memory.
func runRound(ctx context.Context, t Target, workers int, d time.Duration) Stats {
	var rss rssSampler
	rss.start(t.PID)
	bgCtx, stopBackground := context.WithCancel(ctx)
	var bg sync.WaitGroup
	if t.Background != nil {
		bg.Add(1)
		go func() { defer bg.Done(); t.Background(bgCtx) }()
	}
	server0, client0 := cpu(t.PID), cpu(os.Getpid())
	var s Stats
	if t.Call != nil {
		s = ClosedLoop(ctx, t.Name, workers, d, t.Call)
	} else {
		start := time.Now()
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		s = Stats{Name: t.Name, Elapsed: time.Since(start)}
	}
	stopBackground()
	bg.Wait()
	if t.PID != 0 {
		s.ServerCPU = cpu(t.PID) - server0
	}
	s.ClientCPU = cpu(os.Getpid()) - client0
	s.RSS, s.RSSPeak = rss.stop()
	return s
}

// cpu is ProcessCPU, 0 when pid is 0 or cannot be read.
func cpu(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	d, _ := ProcessCPU(pid)
	return d
}

// rssSampler reads a process's resident memory every rssEvery while a round
// runs, for its peak.
type rssSampler struct {
	pid  int
	peak int64
	quit chan struct{}
	done chan struct{}
}

const rssEvery = 100 * time.Millisecond

func (r *rssSampler) start(pid int) {
	if pid == 0 {
		return
	}
	r.pid, r.quit, r.done = pid, make(chan struct{}), make(chan struct{})
	go func() {
		defer close(r.done)
		t := time.NewTicker(rssEvery)
		defer t.Stop()
		for {
			r.sample()
			select {
			case <-t.C:
			case <-r.quit:
				return
			}
		}
	}()
}

func (r *rssSampler) sample() int64 {
	v, err := ProcessRSS(r.pid)
	if err != nil {
		return 0
	}
	r.peak = max(r.peak, v)
	return v
}

// stop ends the sampling and returns the memory now and the peak.
func (r *rssSampler) stop() (last, peak int64) {
	if r.pid == 0 {
		return 0, 0
	}
	close(r.quit)
	<-r.done
	last = r.sample()
	return last, r.peak
}
