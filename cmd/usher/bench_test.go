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
		{"join", []string{"--concurrency", "4"}, []string{"floor health", "usher join"}},
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
			case "checkbatch":
				if ph := run.Phases[1]; ph.ItemsPerCall != 10 || ph.ItemsPerSecond < 9*ph.RPS {
					t.Errorf("checkbatch: %+v", ph)
				}
			case "join":
				if ph := run.Phases[1]; ph.Outcomes["ADMITTED"] != ph.Calls {
					t.Errorf("join outcomes %v over %d calls, want all admitted", ph.Outcomes, ph.Calls)
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
