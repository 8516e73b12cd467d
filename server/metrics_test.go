package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
)

// scrape is one reading of a /metrics endpoint, parsed by Prometheus's own
// text parser.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, url string) scrape {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return families
}

// value is the series of name with labels (name, value pairs): a counter's
// or a gauge's value, or, for name_count and name_sum, a histogram's count
// and sum. ok is false when there is no such series.
func (s scrape) value(name string, labels ...string) (v float64, ok bool) {
	family, part := name, ""
	if s[name] == nil {
		for _, suffix := range []string{"_count", "_sum"} {
			if base, found := strings.CutSuffix(name, suffix); found && s[base] != nil {
				family, part = base, suffix
			}
		}
	}
	f := s[family]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case part == "_count":
			return float64(m.GetHistogram().GetSampleCount()), true
		case part == "_sum":
			return m.GetHistogram().GetSampleSum(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// metricsWorld is a server with metrics, admission and Envoy's service,
// and its metrics endpoint.
type metricsWorld struct {
	*fixture
	url   string
	joins usherv1.AdmissionServiceClient
	envoy authv3.AuthorizationClient
}

func newMetricsWorld(t *testing.T) *metricsWorld {
	t.Helper()
	m := server.NewMetrics()
	envoy, err := server.NewEnvoyService(headerConfig())
	if err != nil {
		t.Fatal(err)
	}
	f := startServerWith(t, t.TempDir(), slog.New(slog.DiscardHandler), func(e *authz.Engine) []grpc.ServerOption {
		sessions := admission.New(e, admission.Options{})
		t.Cleanup(func() { sessions.Close() })
		log := server.NewDecisionLog(io.Discard, nil, 1, slog.New(slog.DiscardHandler))
		t.Cleanup(func() { log.Close() })
		return []grpc.ServerOption{server.WithMetrics(m), server.WithAdmission(sessions), server.WithEnvoy(envoy), server.WithDecisionLog(log)}
	})
	h := httptest.NewServer(server.MetricsMux(m, false))
	t.Cleanup(h.Close)
	return &metricsWorld{fixture: f, url: h.URL + "/metrics",
		joins: usherv1.NewAdmissionServiceClient(f.conn), envoy: authv3.NewAuthorizationClient(f.conn)}
}

// delta is what a scrape after says moved since one before.
type delta struct {
	t             *testing.T
	before, after scrape
}

func (d delta) moved(want float64, name string, labels ...string) {
	d.t.Helper()
	a, ok := d.after.value(name, labels...)
	if !ok {
		d.t.Errorf("no series %s%v", name, labels)
		return
	}
	b, _ := d.before.value(name, labels...)
	if a-b != want {
		d.t.Errorf("%s%v moved by %v, want %v", name, labels, a-b, want)
	}
}

func TestMetricsMoveWithCalls(t *testing.T) {
	w := newMetricsWorld(t)
	before := scrapeMetrics(t, w.url)

	w.putResource("account:acme", "")
	w.putResource("call:acme:1", "account:acme")
	w.grant("user:hana", "host", "call:acme:1")
	w.check("user:hana", "join-call", "call:acme:1")
	w.check("user:hana", "join-call", "call:acme:1")
	w.check("user:zed", "join-call", "call:acme:1")
	w.check("user:hana", "join-call", "call:acme:nowhere")
	if _, err := w.authz.Check(w.ctx(), &usherv1.CheckRequest{Subject: "zed", Permission: "join-call", Resource: "call:acme:1"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Check of a malformed subject: %v", err)
	}
	if _, err := w.authz.CheckBatch(w.ctx(), &usherv1.CheckBatchRequest{Checks: []*usherv1.CheckItem{
		{Subject: "user:hana", Permission: "join-call", Resource: "call:acme:1"},
		{Subject: "user:zed", Permission: "join-call", Resource: "call:acme:1"},
		{Subject: "zed", Permission: "join-call", Resource: "call:acme:1"},
	}}); err != nil {
		t.Fatal(err)
	}
	for subject, want := range map[string]usherv1.Outcome{"user:hana": usherv1.Outcome_OUTCOME_ADMITTED, "user:zed": usherv1.Outcome_OUTCOME_NO_GRANT} {
		resp, err := w.joins.Join(w.ctx(), &usherv1.JoinRequest{Subject: subject, Resource: "call:acme:1"})
		if err != nil || resp.GetOutcome() != want {
			t.Fatalf("Join(%s) = %v, %v; want %v", subject, resp.GetOutcome(), err, want)
		}
	}
	for _, req := range []*authv3.CheckRequest{
		httpRequest("POST", "/calls/acme/1/join", map[string]string{"x-user-id": "hana"}),
		httpRequest("POST", "/calls/acme/1/join", nil),
		httpRequest("POST", "/nowhere", map[string]string{"x-user-id": "hana"}),
	} {
		if _, err := w.envoy.Check(w.ctx(), req); err != nil {
			t.Fatal(err)
		}
	}
	d := delta{t: t, before: before, after: scrapeMetrics(t, w.url)}

	decisions := "usher_decisions_total"
	d.moved(2, decisions, "method", "Check", "reason", "GRANTED")
	d.moved(1, decisions, "method", "Check", "reason", "NO_GRANT")
	d.moved(1, decisions, "method", "Check", "reason", "UNKNOWN_RESOURCE")
	d.moved(0, decisions, "method", "Check", "reason", "BLOCKED")
	d.moved(1, decisions, "method", "CheckBatch", "reason", "GRANTED")
	d.moved(1, decisions, "method", "CheckBatch", "reason", "NO_GRANT")
	d.moved(1, decisions, "method", "CheckBatch", "reason", "INVALID")
	d.moved(1, decisions, "method", "Join", "reason", "ADMITTED")
	d.moved(1, decisions, "method", "Join", "reason", "NO_GRANT")
	d.moved(0, decisions, "method", "Join", "reason", "LOBBY")
	d.moved(1, decisions, "method", "Envoy", "reason", "GRANTED")
	d.moved(1, decisions, "method", "Envoy", "reason", "UNAUTHENTICATED")
	d.moved(1, decisions, "method", "Envoy", "reason", "NO_ROUTE")

	check := []string{"grpc_service", "usher.v1.AuthorizationService", "grpc_method", "Check"}
	d.moved(4, "grpc_server_handled_total", append(check, "grpc_code", "OK")...)
	d.moved(1, "grpc_server_handled_total", append(check, "grpc_code", "InvalidArgument")...)
	d.moved(5, "grpc_server_handling_seconds_count", check...)
	d.moved(3, "grpc_server_handled_total", "grpc_method", "Check", "grpc_service", "envoy.service.auth.v3.Authorization", "grpc_code", "OK")
	d.moved(1, "grpc_server_handled_total", "grpc_method", "Grant", "grpc_code", "OK")

	// Three writes, one after the other: three transactions.
	d.moved(3, "usher_commit_duration_seconds_count")
	d.moved(3, "usher_commit_writes_count")
	d.moved(0, "usher_commit_failures_total")
	if s, _ := d.after.value("usher_commit_duration_seconds_sum"); s <= 0 {
		t.Errorf("usher_commit_duration_seconds_sum = %v", s)
	}
	if a, _ := d.after.value("usher_storage_write_seconds_total"); a <= 0 {
		t.Errorf("usher_storage_write_seconds_total = %v after commits", a)
	}

	idx := w.engine.Index()
	resources, grants, blocks := idx.Counts()
	for name, want := range map[string]float64{
		"usher_index_resources": float64(resources), "usher_index_grants": float64(grants), "usher_index_blocks": float64(blocks),
		"usher_index_revision": float64(idx.Revision()), "usher_backend_revision": float64(idx.Revision()),
		"usher_index_lag_revisions": 0, "usher_index_resyncs_total": 0, "usher_serving": 1,
		"usher_sessions": 1, "usher_lobby_knocks": 0, "usher_call_watches": 0, "usher_watch_streams": 0,
	} {
		if got, ok := d.after.value(name); !ok || got != want {
			t.Errorf("%s = %v (present %t), want %v", name, got, ok, want)
		}
	}
	// Check, CheckBatch and Join: 4, 3 and 2 decisions, written or dropped.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := scrapeMetrics(t, w.url)
		written, _ := s.value("usher_decision_log_written_total")
		dropped, ok := s.value("usher_decision_log_dropped_total")
		if ok && written+dropped == 9 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the decision log wrote %v and dropped %v decisions; want 9 in all", written, dropped)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if resources != 2 || grants == 0 {
		t.Errorf("index holds %d resources and %d grants; the test expected 2 and some", resources, grants)
	}
}

func TestMetricsCountOpenStreams(t *testing.T) {
	w := newMetricsWorld(t)
	w.putResource("account:acme", "")
	w.putResource("call:acme:1", "account:acme")
	ctx, cancel := context.WithCancel(w.ctx())
	defer cancel()
	if _, err := w.authz.Watch(ctx, &usherv1.WatchRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.joins.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: "call:acme:1"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := scrapeMetrics(t, w.url)
		watches, _ := s.value("usher_watch_streams")
		calls, _ := s.value("usher_call_watches")
		if watches == 1 && calls == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usher_watch_streams = %v, usher_call_watches = %v; want 1 and 1", watches, calls)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMetricsMuxServesProfilesOnlyWhenAsked(t *testing.T) {
	m := server.NewMetrics()
	for _, profiling := range []bool{false, true} {
		h := httptest.NewServer(server.MetricsMux(m, profiling))
		resp, err := http.Get(h.URL + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.StatusCode == http.StatusOK; got != profiling {
			t.Errorf("with profiling %t, /debug/pprof/ answered %s", profiling, resp.Status)
		}
		h.Close()
	}
}

// A WatchCall that its deadline ends ends so on the server too
// (DEADLINE_EXCEEDED, or CANCELLED when the client's word of it comes
// first), never OK: the server's metrics and logs tell a stream the client
// gave up on from one that ended as it should, and a client whose deadline
// the server sees pass first is not told the stream ended well.
func TestAWatchCallEndedByItsDeadlineEndsNotOK(t *testing.T) {
	w := newMetricsWorld(t)
	w.putResource("account:acme", "")
	w.putResource("call:acme:1", "account:acme")
	ctx, cancel := context.WithTimeout(w.ctx(), 300*time.Millisecond)
	defer cancel()
	stream, err := w.joins.WatchCall(ctx, &usherv1.WatchCallRequest{Resource: "call:acme:1"})
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("the WatchCall ended with %v; want DeadlineExceeded", err)
	}
	watchCall := []string{"grpc_service", "usher.v1.AdmissionService", "grpc_method", "WatchCall", "grpc_code"}
	ended := func(s scrape, code string) float64 {
		n, _ := s.value("grpc_server_handled_total", append(watchCall, code)...)
		return n
	}
	s := scrapeMetrics(t, w.url)
	for wait := time.Now().Add(10 * time.Second); ended(s, "OK")+ended(s, "DeadlineExceeded")+ended(s, "Canceled") == 0; s = scrapeMetrics(t, w.url) {
		if time.Now().After(wait) {
			t.Fatal("the server never counted the WatchCall as ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ok, late, cancelled := ended(s, "OK"), ended(s, "DeadlineExceeded"), ended(s, "Canceled"); ok != 0 || late+cancelled != 1 {
		t.Errorf("the server counted the WatchCall its deadline ended as OK %v times, DeadlineExceeded %v and Canceled %v; want it ended once, not OK", ok, late, cancelled)
	}
}

// One peer's scrapes past a burst of four are rendered two a second, each
// waiting its turn, so that a peer asking back to back cannot keep the
// server busy rendering the page; another peer's scrapes do not wait for
// its turns.
func TestAPeersScrapesAreRenderedAFewASecond(t *testing.T) {
	h := httptest.NewServer(server.MetricsMux(server.NewMetrics(), false))
	defer h.Close()
	from := func(ip string) *http.Client {
		return &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}}
	}
	var done atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			resp, err := from("127.0.0.1").Get(h.URL + "/metrics")
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("a scrape: %v, %v; want 200 once its turn came", resp, err)
				return
			}
			resp.Body.Close()
			done.Add(1)
		})
	}
	time.Sleep(300 * time.Millisecond)
	if n := done.Load(); n != server.MetricsScrapeBurst {
		t.Errorf("%d of 8 scrapes from one peer answered in 300ms, want the burst of %d", n, server.MetricsScrapeBurst)
	}
	resp, err := from("127.0.0.2").Get(h.URL + "/metrics")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("another peer's scrape: %v, %v", resp, err)
	}
	resp.Body.Close()
	if n := done.Load(); n >= 8 {
		t.Errorf("the first peer's scrapes were all answered before the other peer's: %d", n)
	}
	wg.Wait()
	// Four past the burst, two a second: at least 1.5 s.
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Errorf("8 scrapes from one peer took %s, want at least 1.5s", took)
	}
}
