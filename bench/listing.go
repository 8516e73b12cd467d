package bench

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Step is what one call of a Lister was: a page of which listing, how many
// answers it carried, and whether the listing ended with it.
type Step struct {
	// Kind names the listing the call is a page of ("LookupResources,
	// large answer", "ListGrants of one resource"); figures are kept per
	// kind.
	Kind  string
	Items int
	// Last says the listing is complete with this page: its pages, back to
	// back, are one whole answer.
	Last bool
}

// Lister is a client that makes calls back to back, one at a time, in the
// background of another load: the pages of lookups or admin listings,
// followed through their page tokens to the end, and writes between them.
// Next makes its seq-th call and says what it was; it keeps its own place
// (the listing it is in, the token of its next page) from one call to the
// next and across runs, so that a listing longer than a round goes on in
// the next. Run may be called many times, once per round; the figures add
// up.
type Lister struct {
	Name string
	// Timeout bounds each call; 0 means 10 s.
	Timeout time.Duration
	// Rate, when above 0, is the most calls a second: a call waits for its
	// turn on a schedule of Rate a second, as a client asked for pages now
	// and then would; 0 calls back to back, as fast as the server answers.
	Rate float64
	Next func(ctx context.Context, seq int) (Step, error)

	mu     sync.Mutex
	seq    int
	active time.Duration
	kinds  []string
	by     map[string]*listed
	errors int
	first  error
}

// listed is what a Lister measured of one kind of listing.
type listed struct {
	pages  []time.Duration
	wholes []time.Duration
	items  []int // per whole listing
	npages []int // per whole listing
	// The listing under way: its pages' time and answers so far.
	sum   time.Duration
	got   int
	count int
}

// Run makes calls until ctx ends. A call under way when it ends is let
// finish, under a context of its own: ctx's end stops the calls, it does not
// cut one short.
func (l *Lister) Run(ctx context.Context) {
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	start := time.Now()
	due := start
	for ctx.Err() == nil {
		if l.Rate > 0 {
			// A call that came back late does not make the next ones
			// hurry: the schedule starts again from now.
			due = maxTime(due.Add(time.Duration(float64(time.Second)/l.Rate)), time.Now())
			select {
			case <-ctx.Done():
				continue
			case <-time.After(time.Until(due)):
			}
		}
		l.mu.Lock()
		seq := l.seq
		l.seq++
		l.mu.Unlock()
		callCtx, cancel := context.WithTimeout(context.Background(), timeout)
		t0 := time.Now()
		step, err := l.Next(callCtx, seq)
		lat := time.Since(t0)
		cancel()
		l.record(step, lat, err)
	}
	l.mu.Lock()
	l.active += time.Since(start)
	l.mu.Unlock()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (l *Lister) record(step Step, lat time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errors++
		if l.first == nil {
			l.first = err
		}
	}
	if step.Kind == "" {
		return
	}
	if l.by == nil {
		l.by = map[string]*listed{}
	}
	k := l.by[step.Kind]
	if k == nil {
		k = &listed{}
		l.by[step.Kind] = k
		l.kinds = append(l.kinds, step.Kind)
	}
	k.pages = append(k.pages, lat)
	if err != nil {
		// A failed page spoils its listing, which Next starts again.
		k.sum, k.got, k.count = 0, 0, 0
		return
	}
	k.sum += lat
	k.got += step.Items
	k.count++
	if step.Last {
		k.wholes = append(k.wholes, k.sum)
		k.items = append(k.items, k.got)
		k.npages = append(k.npages, k.count)
		k.sum, k.got, k.count = 0, 0, 0
	}
}

// Listings is what the Lister's runs measured so far, a Listing per kind in
// the order the kinds first came.
func (l *Lister) Listings() []Listing {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Listing, 0, len(l.kinds))
	for _, name := range l.kinds {
		k := l.by[name]
		pages := Stats{latency: slices.Sorted(slices.Values(k.pages))}
		wholes := Stats{latency: slices.Sorted(slices.Values(k.wholes))}
		li := Listing{
			Lister: l.Name, Kind: name, Pages: len(k.pages), Wholes: len(k.wholes),
			PageP50: Micros(pages.Percentile(0.5)), PageP99: Micros(pages.Percentile(0.99)), PageMax: Micros(pages.Percentile(1)),
			WholeP50: Micros(wholes.Percentile(0.5)), WholeP99: Micros(wholes.Percentile(0.99)), WholeMax: Micros(wholes.Percentile(1)),
		}
		if len(k.items) > 0 {
			li.ItemsMin, li.ItemsMax = slices.Min(k.items), slices.Max(k.items)
			li.PagesMin, li.PagesMax = slices.Min(k.npages), slices.Max(k.npages)
		}
		out = append(out, li)
	}
	return out
}

// Errors is how many calls failed, and the first failure.
func (l *Lister) Errors() (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errors, l.first
}

// Active is how long the Lister's runs lasted, summed.
func (l *Lister) Active() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active
}
