package bench

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleReport() Report {
	floor := stats("floor health", time.Second, oneTo(1000)...)
	floor.ServerCPU, floor.RSS, floor.RSSPeak = 20*time.Millisecond, 30<<20, 31<<20
	join := stats("usher join", 2*time.Second, oneTo(1000)...)
	join.Outcomes = map[string]int{"ADMITTED": 990, "LOBBY": 10}
	join.Errors, join.FirstError = 1, errors.New("boom")
	batch := stats("usher checkbatch", time.Second, 1, 2, 3, 4)
	batch.Items = 100
	writes := PacedResult{Stats: stats("grants (background)", time.Second, oneTo(900)...), Rate: 1000}
	var m Machine
	m.Observe(LoadAverage{1, 2, 3})
	m.Observe(LoadAverage{4, 2, 3})
	m.Observe(LoadAverage{2, 2, 3})
	m.CPUs = 2
	return Report{
		Mode: "join", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Duration: Seconds(5 * time.Second), Round: Seconds(time.Second),
		Workload: Workload{Resources: 10, Grants: 20, Users: 30, Requests: 40},
		Machine:  m,
		Runs: []Run{{Concurrency: 32, Phases: []Phase{
			PhaseOf(floor, "floor", floor), PhaseOf(join, "usher", floor), PhaseOf(batch, "usher", floor),
		}, Writes: WritesOf(writes)}},
	}
}

func TestMachineKeepsTheFirstLastAndHighestLoad(t *testing.T) {
	m := sampleReport().Machine
	if m.LoadStart != (LoadAverage{1, 2, 3}) || m.LoadEnd != (LoadAverage{2, 2, 3}) || m.LoadMax != 4 {
		t.Errorf("machine %+v", m)
	}
}

// The JSON a run writes names every figure with its unit, and reads back
// into the same report.
func TestReportJSON(t *testing.T) {
	r := sampleReport()
	path := filepath.Join(t.TempDir(), "bench.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Mode     string             `json:"mode"`
		Duration float64            `json:"duration_s"`
		Machine  map[string]any     `json:"machine"`
		Runs     []map[string]any   `json:"runs"`
		Workload map[string]float64 `json:"workload"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Mode != "join" || raw.Duration != 5 || raw.Workload["requests"] != 40 || raw.Machine["load_max_1m"] != 4.0 {
		t.Errorf("top level %+v", raw)
	}
	phases := raw.Runs[0]["phases"].([]any)
	join := phases[1].(map[string]any)
	for k, want := range map[string]any{
		"name": "usher join", "server": "usher", "calls": 1000.0, "errors": 1.0, "first_error": "boom",
		"elapsed_s": 2.0, "rps": 500.0, "p50_us": 500.0, "p90_us": 900.0, "p99_us": 990.0, "p999_us": 999.0,
		"throughput_ratio": 0.5, "p99_ratio": 1.0,
		"outcomes": map[string]any{"ADMITTED": 990.0, "LOBBY": 10.0},
	} {
		if !reflect.DeepEqual(join[k], want) {
			t.Errorf("join phase %s = %v, want %v", k, join[k], want)
		}
	}
	floor := phases[0].(map[string]any)
	if floor["server_cpu_per_call_us"] != 20.0 || floor["rss_bytes"] != float64(30<<20) || floor["rss_peak_bytes"] != float64(31<<20) {
		t.Errorf("floor phase %v", floor)
	}
	if batch := phases[2].(map[string]any); batch["items_per_call"] != 100.0 || batch["items_per_second"] != 400.0 {
		t.Errorf("checkbatch phase %v", batch)
	}
	writes := raw.Runs[0]["writes"].(map[string]any)
	if writes["rate"] != 1000.0 || writes["achieved"] != 900.0 || writes["delivered"] != false {
		t.Errorf("writes %v", writes)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("read back\n%+v\nwrote\n%+v", back, r)
	}
}

// The text says the ratios, the outcomes, and loudly when the writes were
// not delivered.
func TestRunPrint(t *testing.T) {
	var out strings.Builder
	r := sampleReport()
	r.Runs[0].Print(&out)
	r.Machine.Print(&out)
	text := out.String()
	for _, want := range []string{
		"usher join", "0.50", "ADMITTED 990 (99.0%), LOBBY 10 (1.0%)", "usher join: 1 errors, the first: boom",
		"usher checkbatch: 400 answers/s (100 per call)",
		"asked 1000/s, delivered 900/s (90.0%)", "WARNING: grants (background): could not deliver 1000 writes/s",
		"31 MiB", "load average 1.00 2.00 3.00 at the start, 2.00 2.00 3.00 at the end, 1-minute peak 4.00",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the text lacks %q:\n%s", want, text)
		}
	}
}

// A phase held against another of its run: the ratios, and whether they
// keep to the targets.
func TestCompareHoldsAPhaseToItsTargets(t *testing.T) {
	idle := Phase{Name: "usher check", RPS: 1000, P99: Micros(time.Millisecond)}
	busy := Phase{Name: "usher check +lookups", RPS: 900, P99: Micros(1200 * time.Microsecond)}
	for _, c := range []struct {
		minThroughput, maxP99 float64
		met                   bool
	}{
		{0.85, 1.5, true},
		{0.95, 1.5, false},
		{0, 1.1, false},
		{0, 1.3, true},
		{0, 0, true},
	} {
		got := Compare(busy, idle, c.minThroughput, c.maxP99)
		if got.ThroughputRatio != 0.9 || got.P99Ratio != 1.2 || got.Met != c.met {
			t.Errorf("targets %g and %g: %+v, want ratios 0.9 and 1.2, met %t", c.minThroughput, c.maxP99, got, c.met)
		}
	}
	var out strings.Builder
	run := Run{Concurrency: 8,
		Listings: []Listing{{Lister: "lookups alone", Kind: "LookupSubjects, large answers", Pages: 40, PageP50: Micros(300 * time.Microsecond),
			Wholes: 10, WholeP50: Micros(1200 * time.Microsecond), ItemsMin: 380, ItemsMax: 395, PagesMin: 4, PagesMax: 4}},
		Compared: []Comparison{Compare(busy, idle, 0, 1.1)},
	}
	run.Print(&out)
	for _, want := range []string{"LookupSubjects, large answers", "300.0us", "1.20ms", "380-395",
		"usher check +lookups / usher check: throughput 0.90, p99 1.20 (target <= 1.10): NOT met"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the text lacks %q:\n%s", want, out.String())
		}
	}
}
