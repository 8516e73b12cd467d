package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/usher-authz/usher/bench"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
)

// The load tools' refusals: they aim at loopback only, and populate never
// writes into an existing data file.
func TestBenchRefusals(t *testing.T) {
	for _, addr := range []string{"10.0.0.1:7070", "example.com:7070", "0.0.0.0:7070"} {
		if _, err := benchConn(addr); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("benchConn(%s) = %v, want a refusal naming loopback", addr, err)
		}
	}
	for _, args := range [][]string{{"check", "--addr", "10.0.0.1:7070"}, {"grant", "--addr", "10.0.0.1:7070"}} {
		if _, err := runIn(append([]string{"bench"}, args...)...); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("usher bench %v = %v, want a refusal naming loopback", args, err)
		}
	}
	data := filepath.Join(t.TempDir(), "usher.db")
	if err := os.WriteFile(data, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runIn("bench", "populate", "--data", data, "--grants", "10"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("populate over an existing file = %v, want a refusal", err)
	}
	if got, _ := os.ReadFile(data); string(got) != "precious" {
		t.Errorf("populate changed the existing file to %q", got)
	}
	if _, err := runIn("bench", "nonsense"); err == nil || !strings.Contains(err.Error(), `unknown command "nonsense" for "usher bench"`) {
		t.Errorf("usher bench nonsense = %v", err)
	}
}

// A small populate writes a data file a server can start on.
func TestBenchPopulateSmall(t *testing.T) {
	data := filepath.Join(t.TempDir(), "usher.db")
	_, err := runIn("bench", "populate", "--data", data, "--accounts", "2", "--workspaces", "2", "--calltypes", "2",
		"--calls", "3", "--users", "50", "--grants", "300", "--blocks", "5")
	if err != nil {
		t.Fatal(err)
	}
	store, err := bolt.Open(data, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	snap, err := storage.Snapshot(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Revision != 1 || len(snap.Grants) != 300 || len(snap.Blocks) != 5 || len(snap.Resources) != 2+4+8+24 {
		t.Errorf("populated revision %d with %d grants, %d blocks, %d resources; want 1, 300, 5, 38",
			snap.Revision, len(snap.Grants), len(snap.Blocks), len(snap.Resources))
	}
}

// Every load command runs against a server and the floor it starts itself,
// interleaved, and writes its figures as JSON; join is admitted with a
// LiveKit token, and check --writes says what rate it delivered.
func TestBenchLoadsBesideTheFloor(t *testing.T) {
	bin, dir := buildUsher(t)
	data := filepath.Join(dir, "usher.db")
	shape := []string{"--accounts", "2", "--workspaces", "2", "--calltypes", "2", "--calls", "5", "--users", "300", "--grants", "3000", "--blocks", "10"}
	if out, err := exec.Command(bin, append([]string{"bench", "populate", "--data", data}, shape...)...).CombinedOutput(); err != nil {
		t.Fatalf("populate: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", data)
	cmd.Env = append(os.Environ(), "USHER_LIVEKIT_API_KEY=benchkey", "USHER_LIVEKIT_API_SECRET=bench-secret-long-enough-for-hmac-0123456789")
	p := startUsher(t, cmd)
	defer p.cmd.Process.Signal(syscall.SIGTERM)
	quick := append([]string{"--addr", p.addr, "--server-pid", strconv.Itoa(p.cmd.Process.Pid),
		"--duration", "300ms", "--round", "100ms", "--warmup", "50ms", "--requests", "300"}, shape...)
	for _, c := range []struct {
		mode   string
		args   []string
		phases []string
	}{
		{"check", []string{"--concurrency", "2,4", "--writes", "200"},
			[]string{"floor health", "usher health", "usher check", "usher check +200 grants/s"}},
		{"listpermissions", nil, []string{"floor health", "usher listpermissions"}},
		{"checkbatch", []string{"--batch", "10"}, []string{"floor health", "usher checkbatch"}},
		{"join", []string{"--concurrency", "4"}, []string{"floor health", "floor join", "usher join"}},
	} {
		path := filepath.Join(dir, c.mode+".json")
		args := append(append([]string{"bench", c.mode, "--json", path}, quick...), c.args...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("usher %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		var report bench.Report
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &report); err != nil {
			t.Fatal(err)
		}
		for _, run := range report.Runs {
			var names []string
			for _, ph := range run.Phases {
				names = append(names, ph.Name)
				if ph.Calls == 0 || ph.Errors != 0 || ph.ThroughputRatio <= 0 || ph.P99Ratio <= 0 || ph.RSS == 0 || ph.ServerCPUPerCall <= 0 {
					t.Errorf("%s at %d: phase %+v", c.mode, run.Concurrency, ph)
				}
			}
			if !slices.Equal(names, c.phases) {
				t.Errorf("%s at %d: phases %v, want %v", c.mode, run.Concurrency, names, c.phases)
			}
			switch c.mode {
			case "check":
				if w := run.Writes; w == nil || w.Rate != 200 || !w.Delivered || w.Errors != 0 {
					t.Errorf("check --writes 200 at %d: writes %+v", run.Concurrency, w)
				}
				if c := run.Compared; len(c) != 1 || c[0].Phase != "usher check +200 grants/s" || c[0].Base != "usher check" ||
					c[0].ThroughputRatio <= 0 || c[0].MinThroughput != 0.85 || c[0].MaxP99 != 1.5 {
					t.Errorf("check --writes 200 at %d: compared %+v, want the phase against Check alone", run.Concurrency, c)
				}
			case "checkbatch":
				if ph := run.Phases[1]; ph.ItemsPerCall != 10 || ph.ItemsPerSecond < 9*ph.RPS {
					t.Errorf("checkbatch: %+v", ph)
				}
			case "join":
				for _, ph := range run.Phases[1:] {
					if ph.Outcomes["ADMITTED"] != ph.Calls {
						t.Errorf("%s outcomes %v over %d calls, want all admitted", ph.Name, ph.Outcomes, ph.Calls)
					}
				}
				if c := run.Compared; len(c) != 1 || c[0].Phase != "usher join" || c[0].Base != "floor join" || c[0].ThroughputRatio <= 0 {
					t.Errorf("join at %d: compared %+v, want Usher's Joins against the floor's", run.Concurrency, c)
				}
				for _, want := range []string{"usher's answers to the first 100 joins: ", "the floor's answer to every join: ", "usher join / floor join: throughput "} {
					if !strings.Contains(string(out), want) {
						t.Errorf("join printed no %q:\n%s", want, out)
					}
				}
				if strings.Contains(string(out), "no LiveKit token") {
					t.Errorf("join warned of tokens missing:\n%s", out)
				}
			}
		}
		if c.mode == "check" && len(report.Runs) != 2 {
			t.Errorf("check --concurrency 2,4 ran %d times", len(report.Runs))
		}
		if report.Machine.CPUs == 0 || report.Machine.LoadMax == 0 && report.Machine.LoadEnd == (bench.LoadAverage{}) {
			t.Errorf("%s: machine %+v", c.mode, report.Machine)
		}
	}
	// A load against a server populated with another shape is refused
	// before it measures anything.
	other := append([]string{"bench", "check", "--seed", "99"}, quick...)
	if out, err := exec.Command(bin, other...).CombinedOutput(); err == nil || !strings.Contains(string(out), "same shape flags") {
		t.Errorf("a load with another seed: %v\n%s", err, out)
	}
}

// The lookup and admin loads compare Check beside their listings with Check
// alone, and report each kind of listing; inprocess times Check on a data
// file and saves its queries for check --queries to replay.
func TestBenchListingsAndInProcess(t *testing.T) {
	bin, dir := buildUsher(t)
	data := filepath.Join(dir, "usher.db")
	shape := []string{"--accounts", "2", "--workspaces", "2", "--calltypes", "1", "--calls", "5", "--users", "300", "--grants", "2000", "--blocks", "10", "--crowd", "500"}
	if out, err := exec.Command(bin, append([]string{"bench", "populate", "--data", data, "--history", "3000"}, shape...)...).CombinedOutput(); err != nil {
		t.Fatalf("populate: %v\n%s", err, out)
	}
	queries, inJSON := filepath.Join(dir, "queries.json"), filepath.Join(dir, "inprocess.json")
	out, err := exec.Command(bin, "bench", "inprocess", "--data", data, "--requests", "300", "--cached", "30",
		"--duration", "20ms", "--save-queries", queries, "--json", inJSON).CombinedOutput()
	if err != nil {
		t.Fatalf("inprocess: %v\n%s", err, out)
	}
	var in bench.InProcess
	if b, err := os.ReadFile(inJSON); err != nil || json.Unmarshal(b, &in) != nil {
		t.Fatalf("inprocess JSON: %v\n%s", err, b)
	}
	if in.Grants != 2500 || in.FileBytes == 0 || len(in.Checks) != 2 || in.Checks[0].Queries != 300 || in.Checks[1].Queries != 30 || in.Checks[0].NsPerCheck <= 0 {
		t.Errorf("inprocess %+v", in)
	}

	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", data)
	p := startUsher(t, cmd)
	defer p.cmd.Process.Signal(syscall.SIGTERM)
	quick := []string{"--addr", p.addr, "--server-pid", strconv.Itoa(p.cmd.Process.Pid),
		"--duration", "300ms", "--round", "100ms", "--warmup", "50ms", "--requests", "300", "--concurrency", "2"}
	for _, c := range []struct {
		mode   string
		args   []string
		phases []string
		kinds  []string
	}{
		{"lookup", append([]string{"--pick", "2"}, shape...), []string{"floor health", "usher check", "usher check +lookups"},
			[]string{"LookupResources, large answers", "LookupResources, typical answers", "LookupSubjects, large answers", "LookupSubjects, typical answers"}},
		{"admin", shape, []string{"floor health", "usher check", "usher check +admin"},
			[]string{"ListGrants of call:crowd", "ListChanges by subject", "PutResource, a workspace moved and back"}},
		{"check", []string{"--queries", queries, "--health=false"}, []string{"floor health", "usher check"}, nil},
	} {
		path := filepath.Join(dir, c.mode+".json")
		args := append(append([]string{"bench", c.mode, "--json", path}, quick...), c.args...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("usher %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		var report bench.Report
		if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &report) != nil {
			t.Fatalf("%s JSON: %v", c.mode, err)
		}
		run := report.Runs[0]
		var names []string
		for _, ph := range run.Phases {
			names = append(names, ph.Name)
		}
		if !slices.Equal(names, c.phases) {
			t.Errorf("%s: phases %v, want %v", c.mode, names, c.phases)
		}
		kinds := map[string]bench.Listing{}
		for _, l := range run.Listings {
			kinds[l.Kind] = l
		}
		for _, k := range c.kinds {
			if l, ok := kinds[k]; !ok || l.Pages == 0 {
				t.Errorf("%s: no %q among the listings %+v", c.mode, k, run.Listings)
			}
		}
		if c.kinds != nil && (len(run.Compared) != 1 || run.Compared[0].Base != "usher check" || run.Compared[0].P99Ratio <= 0) {
			t.Errorf("%s: compared %+v", c.mode, run.Compared)
		}
		if c.mode == "admin" {
			if l := kinds["ListGrants of call:crowd"]; l.Wholes > 0 && l.ItemsMax != 500 {
				t.Errorf("admin: a whole listing of the crowd gave %d grants, want 500", l.ItemsMax)
			}
			if !strings.Contains(string(out), "the change log holds 3001 change sets") {
				t.Errorf("admin did not find the history:\n%s", out)
			}
		}
		if c.mode == "check" && report.Workload.Grants != 2500 {
			t.Errorf("check --queries: workload %+v", report.Workload)
		}
	}
}
