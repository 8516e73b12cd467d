package bench

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/usher-authz/usher/authz"
)

// InProcess is what usher bench inprocess measured of a data file: the
// index built from it as usher serve builds it, and Check called on that
// index directly, with no gRPC and no other process.
type InProcess struct {
	Data      string `json:"data"`
	FileBytes int64  `json:"file_bytes"`
	Resources int    `json:"resources"`
	Grants    int    `json:"grants"`
	// Load is the time to open the file and build the index.
	Load Seconds `json:"load_s"`
	// Checks are the timings, one per query set.
	Checks []CheckCost `json:"checks"`
}

// CheckCost is Check's cost over one set of queries, called one after the
// other on one goroutine: the median of Repeats timings of Duration each.
type CheckCost struct {
	Queries     int     `json:"queries"`
	NsPerCheck  float64 `json:"ns_per_check"`
	AllocsPerOp float64 `json:"allocs_per_check"`
	// All the timings, ns a check, the median among them.
	Timings []float64 `json:"timings_ns"`
}

// TimeChecks calls idx.Check on qs, round and round, for d, repeats times,
// and returns the median cost. A set of queries larger than the CPU's caches
// costs what a server's Check costs; a small one, called again and again,
// stays in the cache and costs less.
func TimeChecks(idx *authz.Index, qs []authz.Query, d time.Duration, repeats int) (CheckCost, error) {
	c := CheckCost{Queries: len(qs)}
	if len(qs) == 0 {
		return c, fmt.Errorf("no queries to time")
	}
	qs = laidOut(qs)
	for _, q := range qs { // one pass to warm up, and to fail early
		if _, _, err := idx.Check(q); err != nil {
			return c, fmt.Errorf("check %+v: %w", q, err)
		}
	}
	var allocs []float64
	for range max(repeats, 1) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		n := 0
		start := time.Now()
		for time.Since(start) < d {
			for _, q := range qs {
				idx.Check(q)
			}
			n += len(qs)
		}
		took := time.Since(start)
		runtime.ReadMemStats(&after)
		c.Timings = append(c.Timings, float64(took.Nanoseconds())/float64(n))
		allocs = append(allocs, float64(after.Mallocs-before.Mallocs)/float64(n))
	}
	c.NsPerCheck = median(c.Timings)
	c.AllocsPerOp = median(allocs)
	return c, nil
}

// laidOut copies the strings of qs into one block, in the order they are
// asked. A server asks Check with strings it has just decoded from a
// request, which are in the CPU's cache; strings scattered over the heap
// would add the cost of reading them to every Check timed, and a server
// does not pay it.
func laidOut(qs []authz.Query) []authz.Query {
	var b strings.Builder
	for _, q := range qs {
		b.WriteString(q.Subject)
		b.WriteString(q.Permission)
		b.WriteString(q.Resource)
	}
	all := b.String()
	take := func(n int) string {
		s := all[:n]
		all = all[n:]
		return s
	}
	out := make([]authz.Query, len(qs))
	for i, q := range qs {
		out[i] = authz.Query{Subject: take(len(q.Subject)), Permission: take(len(q.Permission)), Resource: take(len(q.Resource))}
	}
	return out
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}

// Print writes the figures.
func (r InProcess) Print(w io.Writer) {
	fmt.Fprintf(w, "%s: %.0f MiB on disk, %d resources, %d grants; index built in %.2fs\n",
		r.Data, float64(r.FileBytes)/(1<<20), r.Resources, r.Grants, time.Duration(r.Load).Seconds())
	for _, c := range r.Checks {
		fmt.Fprintf(w, "Check in process over %d distinct queries: %.0f ns, %.2f allocations a check (timings %.0f ns)\n",
			c.Queries, c.NsPerCheck, c.AllocsPerOp, c.Timings)
	}
}

// WriteJSON writes r to path, indented.
func (r InProcess) WriteJSON(path string) error { return writeJSON(path, r) }
