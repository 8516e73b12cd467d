package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// `usher serve --metrics-addr --log-format json --decision-log FILE`:
// metrics on their own listener, a stderr every line of which is a JSON
// record, and decisions in a file of their own.
func TestServeMetricsAndJSONLogs(t *testing.T) {
	bin, dir := buildUsher(t)
	decisions := filepath.Join(dir, "decisions.jsonl")
	addr, printed, stderr := startServeOutput(t, bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db"),
		"--metrics-addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "info", "--decision-log", decisions)
	m := regexp.MustCompile(`serving metrics on (http://\S+/metrics)`).FindStringSubmatch(printed.String())
	if m == nil {
		t.Fatalf("usher serve did not say where it serves metrics; stdout:\n%s", printed)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := usherv1.NewAuthorizationServiceClient(conn)
	if _, err := client.Check(t.Context(), &usherv1.CheckRequest{Subject: "user:a", Permission: "join-call", Resource: "call:x:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Check(t.Context(), &usherv1.CheckRequest{Subject: "a", Permission: "join-call", Resource: "call:x:1"}); err == nil {
		t.Fatal("a malformed Check succeeded")
	}

	families := scrape(t, m[1])
	for _, name := range []string{"grpc_server_handled_total", "grpc_server_handling_seconds", "usher_decisions_total",
		"usher_index_revision", "usher_backend_revision", "usher_index_grants", "usher_sessions", "usher_commit_duration_seconds",
		"usher_storage_write_seconds_total", "go_goroutines", "process_resident_memory_bytes"} {
		if families[name] == nil {
			t.Errorf("%s has no %s", m[1], name)
		}
	}
	if resp, err := http.Get(strings.TrimSuffix(m[1], "/metrics") + "/debug/pprof/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("/debug/pprof/ without --pprof: %s", resp.Status)
		}
	}

	// The decision log is written as its queue drains.
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(decisions)
		if strings.Contains(string(data), `"method":"Check","caller":"anonymous","subject":"user:a","permission":"join-call","resource":"call:x:1","allowed":false,"reason":"UNKNOWN_RESOURCE"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the decision log holds no Check after 10s:\n%s", data)
		}
		time.Sleep(20 * time.Millisecond)
	}

	logged := stderr.String()
	if !strings.Contains(logged, `"grpc.code":"InvalidArgument"`) {
		t.Errorf("the refused Check was not logged:\n%s", logged)
	}
	for line := range strings.Lines(logged) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("stderr line is not JSON (%v): %s", err, line)
			continue
		}
		if rec["level"] == nil || rec["msg"] == nil {
			t.Errorf("stderr record has no level or msg: %s", line)
		}
		if rec["level"] == "DEBUG" {
			t.Errorf("a debug record at --log-level info: %s", line)
		}
	}
}

// With --log-format json, the error that stops usher serve is a record
// too, at ERROR: a collector that parses every line learns why the server
// did not start.
func TestServeLogsTheErrorItStopsOnAsJSON(t *testing.T) {
	bin, dir := buildUsher(t)
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("permissions: [{name: a}]\nroles: [{name: r, scope: root, permissions: [b]}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--policy", bad}, bad + ":2:"},
		{[]string{"--decision-sample", "2"}, "--decision-sample 2: want 0 to 1"},
		{[]string{"--log-level", "bogus"}, `--log-level: log level "bogus"`},
	} {
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db"), "--log-format", "json"}, c.args...)
		cmd := exec.Command(bin, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); cmd.ProcessState.ExitCode() != exitError {
			t.Fatalf("usher serve %v: %v, want exit %d; stderr:\n%s", c.args, err, exitError, stderr.String())
		}
		found := false
		for line := range strings.Lines(stderr.String()) {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("usher serve %v: stderr line is not JSON (%v): %s", c.args, err, line)
				continue
			}
			if rec["level"] == "ERROR" && strings.Contains(fmt.Sprint(rec["error"]), c.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("usher serve %v: no ERROR record says %q:\n%s", c.args, c.want, stderr.String())
		}
	}
}

func TestServeRefusesBadObservabilityFlags(t *testing.T) {
	bin, dir := buildUsher(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-format", "xml"}, `log format "xml"`},
		{[]string{"--log-level", "loud"}, `log level "loud"`},
		{[]string{"--pprof"}, "--pprof serves on --metrics-addr"},
		{[]string{"--decision-sample", "-1"}, "--decision-sample -1: want 0 to 1"},
		{[]string{"--trace-sample-ratio", "1.5"}, "--trace-sample-ratio 1.5: want 0 to 1"},
		// NaN is no share: traced, it would sample every call. A serve
		// that takes it stops at --policy-mode rather than serve.
		{[]string{"--trace-sample-ratio", "NaN", "--policy-mode", "no-such-mode"}, "--trace-sample-ratio NaN: want 0 to 1"},
		{[]string{"--decision-sample", "NaN", "--policy-mode", "no-such-mode"}, "--decision-sample NaN: want 0 to 1"},
	} {
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db")}, c.args...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("usher %s: %v\n%s\nwant it refused saying %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
}

// With a collector named, calls are traced and the exporter is shut down
// at exit, even when the collector is not there.
func TestServeTracesToAnOTLPEndpoint(t *testing.T) {
	bin, dir := buildUsher(t)
	addr, _, stderr := startServeOutput(t, bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db"),
		"--otlp-endpoint", "http://127.0.0.1:1", "--trace-sample-ratio", "1")
	// The log goes to stderr, the line that says where it serves to stdout:
	// the log line may reach its pipe's reader a little after.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(stderr.String(), "tracing over OTLP"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("usher serve did not say it traces:\n%s", stderr)
			break
		}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := usherv1.NewAuthorizationServiceClient(conn).Check(t.Context(),
		&usherv1.CheckRequest{Subject: "user:a", Permission: "join-call", Resource: "call:x:1"}); err != nil {
		t.Fatal(err)
	}
}

// The metrics listener needs no credentials, so whoever reaches it may not
// hold connections there by the thousand, idle between two requests,
// until the process runs out of file descriptors and the gRPC port
// accepts no one: one peer holds at most server.MaxMetricsConnsPerPeer of
// them, a connection past that is closed unserved, and a scraper at
// another address is still served.
func TestServeMetricsHoldsFewConnectionsOfOnePeer(t *testing.T) {
	bin, dir := buildUsher(t)
	_, printed, _ := startServeOutput(t, bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db"),
		"--metrics-addr", "127.0.0.1:0")
	m := regexp.MustCompile(`serving metrics on http://(\S+)/metrics`).FindStringSubmatch(printed.String())
	if m == nil {
		t.Fatalf("usher serve did not say where it serves metrics; stdout:\n%s", printed)
	}
	// scrapeOver asks for the metrics over a new connection from the
	// address from, keeping the connection open.
	scrapeOver := func(from net.IP) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from}}
		c, err := d.DialContext(t.Context(), "tcp", m[1])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: usher\r\n\r\n"); err != nil {
			return c, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return c, err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return c, err
		}
		if resp.StatusCode != http.StatusOK {
			return c, fmt.Errorf("%s", resp.Status)
		}
		return c, nil
	}
	crowd := net.IPv4(127, 0, 0, 7)
	for i := range server.MaxMetricsConnsPerPeer {
		if _, err := scrapeOver(crowd); err != nil {
			t.Fatalf("connection %d of one peer: %v", i+1, err)
		}
	}
	if _, err := scrapeOver(crowd); err == nil {
		t.Errorf("connection %d of one peer, while it holds %d open, was served", server.MaxMetricsConnsPerPeer+1, server.MaxMetricsConnsPerPeer)
	}
	if _, err := scrapeOver(net.IPv4(127, 0, 0, 8)); err != nil {
		t.Errorf("a scrape from another peer: %v", err)
	}
}

// serve's help says whose sampled trace is continued: with --callers only
// a known caller's, since a stranger's would have each of its calls,
// every one refused, traced and exported.
func TestServeHelpSaysWhoseTraceIsContinued(t *testing.T) {
	_, stdout, _ := runCode("serve", "--help")
	for _, line := range strings.Split(stdout, "\n") {
		if strings.Contains(line, "--trace-sample-ratio") && !strings.Contains(line, "with --callers") {
			t.Errorf("serve --help says of --trace-sample-ratio:\n%s\nwant it to say whose trace is continued with --callers", line)
		}
	}
	if !strings.Contains(stdout, "--trace-sample-ratio") {
		t.Errorf("serve --help does not name --trace-sample-ratio:\n%s", stdout)
	}
}

// serve's help names both variables that turn tracing on without
// --otlp-endpoint: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT does as well as
// OTEL_EXPORTER_OTLP_ENDPOINT, and a help that names only the second says
// there is no tracing where there is.
func TestServeHelpNamesEveryVariableThatTurnsTracingOn(t *testing.T) {
	_, stdout, _ := runCode("serve", "--help")
	for _, line := range strings.Split(stdout, "\n") {
		if !strings.Contains(line, "--otlp-endpoint") {
			continue
		}
		for _, v := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
			if !strings.Contains(line, v) {
				t.Errorf("serve --help says of --otlp-endpoint:\n%s\nwant it to name %s, which turns tracing on without it", line, v)
			}
		}
		return
	}
	t.Errorf("serve --help does not name --otlp-endpoint:\n%s", stdout)
}

// scrape reads the metrics a server serves at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return families
}
