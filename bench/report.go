package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// Report is one usher bench run, as --json writes it: the machine's state,
// and per concurrency the phases, each beside the floor measured in the same
// interleaved rounds.
type Report struct {
	Mode string    `json:"mode"`
	Time time.Time `json:"time"`
	// Duration is each phase's measured time, Round the longest stretch one
	// phase ran before the next took over.
	Duration Seconds  `json:"duration_s"`
	Round    Seconds  `json:"round_s"`
	Workload Workload `json:"workload"`
	Machine  Machine  `json:"machine"`
	Runs     []Run    `json:"runs"`
}

// Seconds is a duration that JSON shows in seconds.
type Seconds time.Duration

// MarshalJSON writes the seconds as a number.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(s).Seconds())
}

// UnmarshalJSON reads the seconds back.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

// Workload is what the load ran over.
type Workload struct {
	Resources int `json:"resources"`
	Grants    int `json:"grants"`
	Users     int `json:"users"`
	// Requests is how many distinct pre-encoded requests the load replays.
	Requests int `json:"requests"`
}

// Machine is where the load ran and how busy it was.
type Machine struct {
	CPUs int `json:"cpus"`
	// Load average (1, 5, 15 minutes) as the run started and as it ended,
	// and the highest 1-minute figure seen after any round.
	LoadStart LoadAverage `json:"load_start"`
	LoadEnd   LoadAverage `json:"load_end"`
	LoadMax   float64     `json:"load_max_1m"`
}

// Observe notes a load average reading taken during the run.
func (m *Machine) Observe(l LoadAverage) {
	if m.LoadStart == (LoadAverage{}) {
		m.LoadStart = l
	}
	m.LoadEnd = l
	m.LoadMax = max(m.LoadMax, l[0])
}

// Run is the phases measured together at one concurrency.
type Run struct {
	Concurrency int     `json:"concurrency"`
	Phases      []Phase `json:"phases"`
	// Writes is the background grant load of check --writes.
	Writes *Writes `json:"writes,omitempty"`
	// Listings are the background listings of lookup and admin, per kind.
	Listings []Listing `json:"listings,omitempty"`
	// Compared are phases measured against another phase of the run
	// rather than the floor: Check with something beside it against Check
	// alone.
	Compared []Comparison `json:"compared,omitempty"`
}

// Listing is what a Lister measured of one kind of listing: each call (a
// page), and each whole listing, its pages' times added up.
type Listing struct {
	// Lister names the phase it ran beside ("usher check +lookups", or
	// alone).
	Lister   string `json:"lister"`
	Kind     string `json:"kind"`
	Pages    int    `json:"pages"`
	PageP50  Micros `json:"page_p50_us"`
	PageP99  Micros `json:"page_p99_us"`
	PageMax  Micros `json:"page_max_us"`
	Wholes   int    `json:"wholes"`
	WholeP50 Micros `json:"whole_p50_us,omitempty"`
	WholeP99 Micros `json:"whole_p99_us,omitempty"`
	WholeMax Micros `json:"whole_max_us,omitempty"`
	// The answers and pages of a whole listing, fewest and most.
	ItemsMin int `json:"items_min,omitempty"`
	ItemsMax int `json:"items_max,omitempty"`
	PagesMin int `json:"pages_min,omitempty"`
	PagesMax int `json:"pages_max,omitempty"`
}

// Comparison is one phase against another of the same run, with the
// targets the ratios are held to (0 for none).
type Comparison struct {
	Phase           string  `json:"phase"`
	Base            string  `json:"base"`
	ThroughputRatio float64 `json:"throughput_ratio"`
	P99Ratio        float64 `json:"p99_ratio"`
	MinThroughput   float64 `json:"min_throughput_ratio,omitempty"`
	MaxP99          float64 `json:"max_p99_ratio,omitempty"`
	Met             bool    `json:"met"`
}

// Compare holds phase a against base, within the targets given (0 for
// none).
func Compare(a, base Phase, minThroughput, maxP99 float64) Comparison {
	c := Comparison{Phase: a.Name, Base: base.Name, MinThroughput: minThroughput, MaxP99: maxP99}
	if base.RPS > 0 {
		c.ThroughputRatio = a.RPS / base.RPS
	}
	if base.P99 > 0 {
		c.P99Ratio = float64(a.P99) / float64(base.P99)
	}
	c.Met = (minThroughput == 0 || c.ThroughputRatio >= minThroughput) && (maxP99 == 0 || c.P99Ratio > 0 && c.P99Ratio <= maxP99)
	return c
}

// Phase is one target's figures, summed over its rounds.
type Phase struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	Calls  int    `json:"calls"`
	Errors int    `json:"errors"`
	// FirstError says what the errors were.
	FirstError string  `json:"first_error,omitempty"`
	Elapsed    Seconds `json:"elapsed_s"`
	RPS        float64 `json:"rps"`
	// ItemsPerCall and ItemsPerSecond count answers: a CheckBatch's checks.
	ItemsPerCall   int     `json:"items_per_call,omitempty"`
	ItemsPerSecond float64 `json:"items_per_second,omitempty"`
	P50            Micros  `json:"p50_us"`
	P90            Micros  `json:"p90_us"`
	P99            Micros  `json:"p99_us"`
	P999           Micros  `json:"p999_us"`
	// ThroughputRatio is RPS over the floor's, P99Ratio p99 over the
	// floor's; both 1 for the floor itself.
	ThroughputRatio float64 `json:"throughput_ratio"`
	P99Ratio        float64 `json:"p99_ratio"`
	// CPU time per call of the serving process and of the load tool.
	ServerCPUPerCall Micros `json:"server_cpu_per_call_us,omitempty"`
	ClientCPUPerCall Micros `json:"client_cpu_per_call_us,omitempty"`
	// The serving process's resident memory at the end and at its peak.
	RSS      int64          `json:"rss_bytes,omitempty"`
	RSSPeak  int64          `json:"rss_peak_bytes,omitempty"`
	Outcomes map[string]int `json:"outcomes,omitempty"`
}

// Micros is a duration that JSON shows in microseconds.
type Micros time.Duration

// MarshalJSON writes the microseconds as a number.
func (m Micros) MarshalJSON() ([]byte, error) {
	return json.Marshal(float64(m) / float64(time.Microsecond))
}

// UnmarshalJSON reads the microseconds back.
func (m *Micros) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*m = Micros(f * float64(time.Microsecond))
	return nil
}

// Writes is what a background Pacer delivered.
type Writes struct {
	Name      string  `json:"name"`
	Rate      int     `json:"rate"`
	Achieved  float64 `json:"achieved"`
	Delivered bool    `json:"delivered"`
	Sent      int     `json:"sent"`
	Errors    int     `json:"errors"`
	Missed    int     `json:"missed"`
	Elapsed   Seconds `json:"elapsed_s"`
	P50       Micros  `json:"p50_us"`
	P99       Micros  `json:"p99_us"`
	// FirstError says what the errors were.
	FirstError string `json:"first_error,omitempty"`
}

// Ratios are a's throughput and p99 over floor's; 0 where floor has none.
func Ratios(a, floor Stats) (throughput, p99 float64) {
	if r := floor.RPS(); r > 0 {
		throughput = a.RPS() / r
	}
	if f := floor.Percentile(0.99); f > 0 {
		p99 = float64(a.Percentile(0.99)) / float64(f)
	}
	return throughput, p99
}

// PhaseOf turns a target's Stats into a Phase, with its ratios to floor.
func PhaseOf(s Stats, server string, floor Stats) Phase {
	p := Phase{
		Name: s.Name, Server: server, Calls: s.Calls, Errors: s.Errors, Elapsed: Seconds(s.Elapsed), RPS: s.RPS(),
		P50: Micros(s.Percentile(0.5)), P90: Micros(s.Percentile(0.9)), P99: Micros(s.Percentile(0.99)), P999: Micros(s.Percentile(0.999)),
		ServerCPUPerCall: Micros(s.PerCall(s.ServerCPU)), ClientCPUPerCall: Micros(s.PerCall(s.ClientCPU)),
		RSS: s.RSS, RSSPeak: s.RSSPeak, Outcomes: s.Outcomes,
	}
	if s.Items > 1 {
		p.ItemsPerCall, p.ItemsPerSecond = s.Items, s.ItemsPerSecond()
	}
	if s.FirstError != nil {
		p.FirstError = s.FirstError.Error()
	}
	p.ThroughputRatio, p.P99Ratio = Ratios(s, floor)
	return p
}

// WritesOf turns a Pacer's result into Writes.
func WritesOf(r PacedResult) *Writes {
	w := &Writes{
		Name: r.Stats.Name, Rate: r.Rate, Achieved: r.Achieved(), Delivered: r.Delivered(),
		Sent: r.Stats.Calls, Errors: r.Stats.Errors, Missed: r.Missed, Elapsed: Seconds(r.Stats.Elapsed),
		P50: Micros(r.Stats.Percentile(0.5)), P99: Micros(r.Stats.Percentile(0.99)),
	}
	if r.Stats.FirstError != nil {
		w.FirstError = r.Stats.FirstError.Error()
	}
	return w
}

// WriteJSON writes the report to path, indented.
func (r Report) WriteJSON(path string) error { return writeJSON(path, r) }

// writeJSON writes v to path as indented JSON.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Print writes one run's table: a line per phase with its figures and its
// ratios to the floor, then the outcomes, the background writes and the
// errors.
func (run Run) Print(w io.Writer) {
	fmt.Fprintf(w, "%-28s %9s %9s %8s %8s %8s %8s %6s %6s %6s %8s %8s %9s\n",
		"concurrency "+fmt.Sprint(run.Concurrency), "calls", "rps", "p50", "p90", "p99", "p99.9", "errors",
		"x rps", "x p99", "srv cpu", "cli cpu", "srv rss")
	for _, p := range run.Phases {
		fmt.Fprintf(w, "%-28s %9d %9.0f %8s %8s %8s %8s %6d %6s %6s %8s %8s %9s\n",
			p.Name, p.Calls, p.RPS, us(p.P50), us(p.P90), us(p.P99), us(p.P999), p.Errors,
			ratio(p.ThroughputRatio), ratio(p.P99Ratio), us(p.ServerCPUPerCall), us(p.ClientCPUPerCall), mib(p.RSSPeak))
	}
	for _, p := range run.Phases {
		if p.ItemsPerCall > 1 {
			fmt.Fprintf(w, "%s: %.0f answers/s (%d per call)\n", p.Name, p.ItemsPerSecond, p.ItemsPerCall)
		}
		if len(p.Outcomes) > 0 {
			names := make([]string, 0, len(p.Outcomes))
			for k := range p.Outcomes {
				names = append(names, k)
			}
			slices.Sort(names)
			parts := make([]string, len(names))
			for i, k := range names {
				parts[i] = fmt.Sprintf("%s %d (%.1f%%)", k, p.Outcomes[k], 100*float64(p.Outcomes[k])/float64(max(p.Calls, 1)))
			}
			fmt.Fprintf(w, "%s outcomes: %s\n", p.Name, strings.Join(parts, ", "))
		}
		if p.FirstError != "" {
			fmt.Fprintf(w, "%s: %d errors, the first: %s\n", p.Name, p.Errors, p.FirstError)
		}
	}
	if len(run.Listings) > 0 {
		fmt.Fprintf(w, "%-28s %-40s %7s %8s %8s %8s %6s %8s %8s %8s %11s %7s\n",
			"listings beside", "kind", "pages", "p50", "p99", "max", "whole", "p50", "p99", "max", "answers", "pages")
		for _, l := range run.Listings {
			fmt.Fprintf(w, "%-28s %-40s %7d %8s %8s %8s %6d %8s %8s %8s %11s %7s\n",
				l.Lister, l.Kind, l.Pages, us(l.PageP50), us(l.PageP99), us(l.PageMax), l.Wholes,
				us(l.WholeP50), us(l.WholeP99), us(l.WholeMax), span(l.ItemsMin, l.ItemsMax), span(l.PagesMin, l.PagesMax))
		}
	}
	for _, c := range run.Compared {
		verdict := ": met"
		switch {
		case c.MinThroughput == 0 && c.MaxP99 == 0:
			verdict = ""
		case !c.Met:
			verdict = ": NOT met"
		}
		fmt.Fprintf(w, "%s / %s: throughput %s%s, p99 %s%s%s\n", c.Phase, c.Base,
			ratio(c.ThroughputRatio), bound(">=", c.MinThroughput), ratio(c.P99Ratio), bound("<=", c.MaxP99), verdict)
	}
	if wr := run.Writes; wr != nil {
		fmt.Fprintf(w, "%s: asked %d/s, delivered %.0f/s (%.1f%%) over %.1fs: %d sent, %d failed, %d not sent (too many in flight); p50 %s, p99 %s\n",
			wr.Name, wr.Rate, wr.Achieved, 100*wr.Achieved/float64(max(wr.Rate, 1)), time.Duration(wr.Elapsed).Seconds(),
			wr.Sent, wr.Errors, wr.Missed, us(wr.P50), us(wr.P99))
		if !wr.Delivered {
			fmt.Fprintf(w, "WARNING: %s: could not deliver %d writes/s: %.0f/s is below %.0f%% of it; the figures above are not those of %d writes/s\n",
				wr.Name, wr.Rate, wr.Achieved, 100*Delivered, wr.Rate)
		}
		if wr.FirstError != "" {
			fmt.Fprintf(w, "%s: %d errors, the first: %s\n", wr.Name, wr.Errors, wr.FirstError)
		}
	}
}

// Print writes the load average line.
func (m Machine) Print(w io.Writer) {
	fmt.Fprintf(w, "machine: %d CPUs; load average %.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end, 1-minute peak %.2f\n",
		m.CPUs, m.LoadStart[0], m.LoadStart[1], m.LoadStart[2], m.LoadEnd[0], m.LoadEnd[1], m.LoadEnd[2], m.LoadMax)
}

// us prints a duration in the unit that suits it.
func us(m Micros) string {
	d := time.Duration(m)
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fus", float64(d)/float64(time.Microsecond))
	default:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
}

// span prints a range of counts, or one count.
func span(lo, hi int) string {
	switch {
	case hi == 0:
		return "-"
	case lo == hi:
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

// bound prints a target, if there is one.
func bound(op string, v float64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf(" (target %s %.2f)", op, v)
}

func ratio(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", r)
}

func mib(b int64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}
