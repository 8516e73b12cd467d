package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// Metrics are a server's Prometheus metrics: go-grpc-middleware's per-call
// counters and latency histogram, the decisions Usher made and why, how
// long commits take, and, read at each scrape rather than kept up on the
// way, the index's size and revision, the replica's lag, sessions and
// streams. Give it to one New with WithMetrics; Handler serves it.
type Metrics struct {
	reg *prometheus.Registry
	rpc *grpcprom.ServerMetrics

	decisions *prometheus.CounterVec
	check     decisionCounter // by authz.Reason
	batch     decisionCounter // by authz.Reason; 0 for an item with an error
	join      decisionCounter // by admission.Outcome
	envoy     map[string]prometheus.Counter

	commitSeconds  prometheus.Histogram
	commitWrites   prometheus.Histogram
	commitFailures prometheus.Counter
}

// Metric names of Usher's own, beside go-grpc-middleware's grpc_server_*.
const (
	metricDecisions = "usher_decisions_total"
)

// decisionCounter counts one method's decisions by a small integer (a
// reason or an outcome), each counter resolved once, so that counting is an
// atomic add: no label lookup, no allocation. Its zero value, a server
// without metrics, counts nothing.
type decisionCounter []prometheus.Counter

func newDecisionCounter(vec *prometheus.CounterVec, method string, names []string) decisionCounter {
	c := make(decisionCounter, len(names))
	for i, name := range names {
		if name != "" {
			c[i] = vec.WithLabelValues(method, name)
		}
	}
	return c
}

func (c decisionCounter) add(i int) {
	if uint(i) < uint(len(c)) && c[i] != nil {
		c[i].Inc()
	}
}

// addCounts adds counts[i] to the i-th counter, for every i.
func (c decisionCounter) addCounts(counts []int) {
	for i, n := range counts {
		if n > 0 && i < len(c) && c[i] != nil {
			c[i].Add(float64(n))
		}
	}
}

// reasonNames are the reason label's values for authz.Reason, as Envoy's
// x-usher-reason says them.
var reasonNames = []string{
	authz.ReasonGranted:         "GRANTED",
	authz.ReasonBlocked:         ReasonBlocked,
	authz.ReasonNoGrant:         ReasonNoGrant,
	authz.ReasonUnknownResource: ReasonUnknownResource,
}

// decisionInvalid is the reason of a CheckBatch item answered with an error.
const decisionInvalid = "INVALID"

// NewMetrics returns metrics registered on a registry of their own, with
// the Go runtime's and the process's.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		rpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(latencyBuckets))),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricDecisions,
			Help: "Decisions made, by method (Check, CheckBatch per item, Envoy, Join) and reason (Check's reason, Envoy's x-usher-reason, Join's outcome).",
		}, []string{"method", "reason"}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "usher_commit_duration_seconds",
			Help:    "How long the storage backend took to commit one transaction of writes, fsync included.",
			Buckets: latencyBuckets,
		}),
		commitWrites: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "usher_commit_writes",
			Help:    "How many writes one backend transaction carried (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 7),
		}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usher_commit_failures_total",
			Help: "Backend transactions that failed, committing nothing.",
		}),
	}
	m.check = newDecisionCounter(m.decisions, "Check", reasonNames)
	m.batch = newDecisionCounter(m.decisions, "CheckBatch", append([]string{decisionInvalid}, reasonNames[1:]...))
	m.join = newDecisionCounter(m.decisions, "Join", outcomeNames())
	m.envoy = map[string]prometheus.Counter{}
	for _, r := range []string{"GRANTED", ReasonBlocked, ReasonNoGrant, ReasonUnknownResource, ReasonNoRoute, ReasonUnauthenticated, ReasonInvalidResource, ReasonMethodOverride} {
		m.envoy[r] = m.decisions.WithLabelValues("Envoy", r)
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.rpc, m.decisions, m.commitSeconds, m.commitWrites, m.commitFailures,
	)
	return m
}

// latencyBuckets run from 100us to 10s.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func outcomeNames() []string {
	var names []string
	for o := admission.Admitted; o <= admission.InUse; o++ {
		for len(names) < int(o) {
			names = append(names, "")
		}
		names = append(names, o.String())
	}
	return names
}

// Registry is where the metrics are registered, for a caller's own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus's formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Limits of the metrics listener. It asks for no credentials, so that a
// scraper needs none: without them, whoever reaches it could hold
// connections there by the thousand, each idle after one request, until
// the process ran out of file descriptors and the gRPC port accepted no
// one. A scraper holds one connection and reuses it at each scrape.
const (
	// MaxMetricsConns is the most connections the metrics listener holds
	// at once; more are closed when accepted. fdReserve keeps room for
	// them.
	MaxMetricsConns = 16
	// MaxMetricsConnsPerPeer is the most of them one IPv4 address or IPv6
	// /64 holds, so that one peer does not keep the scrapers out.
	MaxMetricsConnsPerPeer = 4
	// MetricsIdleTimeout closes a metrics connection with no request for
	// this long: longer than a scrape interval, so that a scraper's
	// connection stays open between two scrapes.
	MetricsIdleTimeout = 2 * time.Minute
	// MetricsWriteTimeout closes a metrics connection whose answer its
	// client has not taken this long after asking (a profile's or trace's,
	// this long after its seconds): a client that asks and never reads
	// would otherwise hold its connection, and its place among
	// MaxMetricsConns, for good.
	MetricsWriteTimeout = 2 * time.Minute
)

// ServeMetrics serves MetricsMux(m, profiling) on lis, within the limits
// above, until the returned server is shut down. Connections refused are
// logged to logger at warn level, a few lines a second at most, each with
// listener=metrics: the gRPC port's refusals read the same, of limits of
// their own.
func ServeMetrics(lis net.Listener, m *Metrics, profiling bool, logger *slog.Logger) *http.Server {
	return serveMetrics(lis, m, profiling, logger, MetricsWriteTimeout)
}

// serveMetrics is ServeMetrics with answers taken within writeTimeout.
func serveMetrics(lis net.Listener, m *Metrics, profiling bool, logger *slog.Logger, writeTimeout time.Duration) *http.Server {
	hs := &http.Server{Handler: writtenWithin(MetricsMux(m, profiling), writeTimeout, profiling), ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: MetricsIdleTimeout, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	lis = newLimitListener(lis, MaxMetricsConns, MaxMetricsConnsPerPeer, newRefusalLog(logger.With("listener", "metrics")))
	go func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("the metrics listener failed", "error", err)
		}
	}()
	return hs
}

// writtenWithin has h's request read and its answer written within d of
// the request's headers, or the connection closed; with profiling, a
// profile's or a trace's within its seconds and d. A body that never comes
// would otherwise hold the connection: the server reads what is left of it
// once the answer is written. It sets the deadlines per request rather
// than as the server's ReadTimeout and WriteTimeout, which Go's profiles
// take for the longest profile that may be asked. Only a profile's seconds
// count: any other request, /metrics?seconds=86400 among them, would hold
// its connection for a day.
func writtenWithin(h http.Handler, d time.Duration, profiling bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait := d
		if s, err := strconv.ParseFloat(r.URL.Query().Get("seconds"), 64); err == nil && s > 0 &&
			profiling && strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
			wait += time.Duration(min(s, 24*60*60) * float64(time.Second))
		}
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(wait))
		_ = rc.SetWriteDeadline(time.Now().Add(wait))
		h.ServeHTTP(w, r)
	})
}

// MetricsMux serves m at /metrics and, with profiling, Go's profiles at
// /debug/pprof/: a listener of its own, apart from the gRPC port.
func MetricsMux(m *Metrics, profiling bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", scrapesLimited(m.Handler(), MetricsScrapesPerSecond, MetricsScrapeBurst, MetricsScrapeWait))
	if profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// observeCommit is the engine's commit observer.
func (m *Metrics) observeCommit(s authz.CommitStats) {
	m.commitSeconds.Observe(s.Took.Seconds())
	m.commitWrites.Observe(float64(s.Writes))
	if s.Err != nil {
		m.commitFailures.Inc()
	}
}

// countEnvoy counts one Envoy decision by its reason.
func (m *Metrics) countEnvoy(reason string) {
	if m == nil {
		return
	}
	if c := m.envoy[reason]; c != nil {
		c.Inc()
	}
}

// WithMetrics makes New record m: go-grpc-middleware's interceptor counts
// and times every call, the handlers count decisions, the engine reports
// its commits, and a scrape reads the rest from the engine, the admission
// manager and the server.
func WithMetrics(m *Metrics) grpc.ServerOption {
	return metricsOption{m: m}
}

type metricsOption struct {
	grpc.EmptyServerOption
	m *Metrics
}

func metricsOf(opts []grpc.ServerOption) *Metrics {
	m, _ := optionOf[metricsOption](opts)
	return m.m
}

// attach starts reading s (and its decision log, if any) at every scrape
// and its engine's commits as they happen, and gives every method of s a
// series at zero.
func (m *Metrics) attach(s *Server, sessions *admission.Manager, log *DecisionLog) {
	m.rpc.InitializeMetrics(s.Server)
	s.engine.ObserveCommits(m.observeCommit)
	m.reg.MustRegister(&stateCollector{s: s, sessions: sessions})
	if log != nil {
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "usher_decision_log_written_total", Help: "Decisions written to the decision log.",
			}, func() float64 { return float64(log.Written()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "usher_decision_log_dropped_total", Help: "Sampled decisions dropped: the log's queue was full, or a write failed.",
			}, func() float64 { return float64(log.Dropped()) }),
		)
	}
}

// stateCollector reads what a server holds at each scrape, so that keeping
// it costs nothing between scrapes.
type stateCollector struct {
	s        *Server
	sessions *admission.Manager
}

var (
	descResources = prometheus.NewDesc("usher_index_resources", "Resources in the index.", nil, nil)
	descGrants    = prometheus.NewDesc("usher_index_grants", "Grants in the index, expired ones not yet swept included.", nil, nil)
	descBlocks    = prometheus.NewDesc("usher_index_blocks", "Blocks in the index.", nil, nil)
	descRevision  = prometheus.NewDesc("usher_index_revision", "The latest revision the index has applied.", nil, nil)
	descLatest    = prometheus.NewDesc("usher_backend_revision", "The latest revision the storage backend has committed, as it says at the scrape.", nil, nil)
	descLag       = prometheus.NewDesc("usher_index_lag_revisions", "How many revisions the index is behind the storage backend: a replica's lag.", nil, nil)
	descResyncs   = prometheus.NewDesc("usher_index_resyncs_total", "Times the index was rebuilt from a snapshot, having lost its feed.", nil, nil)
	descServing   = prometheus.NewDesc("usher_serving", "1 while the server reports SERVING, 0 while it resyncs or drains.", nil, nil)
	descWatches   = prometheus.NewDesc("usher_watch_streams", "Watch streams open.", nil, nil)
	descDiskTime  = prometheus.NewDesc("usher_storage_write_seconds_total", "Time bbolt spent writing committed pages and fdatasync'ing the file.", nil, nil)
	descSessions  = prometheus.NewDesc("usher_sessions", "Live sessions in the session store (on a cluster, every replica's).", nil, nil)
	descKnocks    = prometheus.NewDesc("usher_lobby_knocks", "Subjects waiting in lobbies.", nil, nil)
	descCallWatch = prometheus.NewDesc("usher_call_watches", "WatchCall streams open.", nil, nil)
)

// latestTimeout bounds asking the backend its revision at a scrape: a
// backend out of reach leaves the lag out rather than hold the scrape.
const latestTimeout = 500 * time.Millisecond

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descResources, descGrants, descBlocks, descRevision, descLatest, descLag,
		descResyncs, descServing, descWatches, descDiskTime} {
		ch <- d
	}
	if c.sessions != nil {
		ch <- descSessions
		ch <- descKnocks
		ch <- descCallWatch
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	e := c.s.engine
	idx := e.Index()
	resources, grants, blocks := idx.Counts()
	rev := idx.Revision()
	gauge(descResources, float64(resources))
	gauge(descGrants, float64(grants))
	gauge(descBlocks, float64(blocks))
	gauge(descRevision, float64(rev))
	ctx, cancel := context.WithTimeout(context.Background(), latestTimeout)
	latest, err := e.Latest(ctx)
	cancel()
	if err == nil {
		gauge(descLatest, float64(latest))
		gauge(descLag, float64(max(latest, rev)-rev))
	}
	ch <- prometheus.MustNewConstMetric(descResyncs, prometheus.CounterValue, float64(e.Resyncs()))
	serving := 0.0
	if c.s.serving() {
		serving = 1
	}
	gauge(descServing, serving)
	gauge(descWatches, float64(c.s.watches.open.Load()))
	if d, ok := e.Backend().(interface{ WriteTime() time.Duration }); ok {
		ch <- prometheus.MustNewConstMetric(descDiskTime, prometheus.CounterValue, d.WriteTime().Seconds())
	}
	if c.sessions != nil {
		n := c.sessions.Counts()
		gauge(descSessions, float64(n.Sessions))
		gauge(descKnocks, float64(n.Knocks))
		gauge(descCallWatch, float64(n.Watches))
	}
}

// Scrapes of /metrics, each one peer's (an IPv4 address or an IPv6 /64, as
// the listener counts them): rendering the page costs a few milliseconds of
// CPU, and a scraper asks once every several seconds, so a peer's scrapes
// past MetricsScrapeBurst at once are rendered MetricsScrapesPerSecond a
// second, each waiting its turn up to MetricsScrapeWait, and answered 429
// Too Many Requests, with Retry-After, past that. Without it one peer's four
// connections, asking back to back, kept more than a core busy.
const (
	MetricsScrapesPerSecond = 2
	MetricsScrapeBurst      = 4
	MetricsScrapeWait       = 5 * time.Second
	// maxScrapePeers bounds the peers whose scrapes are counted; a peer
	// whose count is back to a full burst is forgotten to make room.
	maxScrapePeers = 4 * MaxMetricsConns
)

// scrapesLimited answers h's requests within each peer's rate of scrapes:
// perSecond, burst at once, each waiting its turn up to wait.
func scrapesLimited(h http.Handler, perSecond rate.Limit, burst int, wait time.Duration) http.Handler {
	var (
		mu    sync.Mutex
		peers = map[string]*rate.Limiter{}
	)
	limiter := func(peer string) *rate.Limiter {
		mu.Lock()
		defer mu.Unlock()
		if l := peers[peer]; l != nil {
			return l
		}
		if len(peers) >= maxScrapePeers {
			for k, l := range peers {
				if l.Tokens() >= float64(burst) {
					delete(peers, k)
				}
			}
			if len(peers) >= maxScrapePeers {
				return nil // so many peers scraping at once: this one is refused
			}
		}
		l := rate.NewLimiter(perSecond, burst)
		peers[peer] = l
		return l
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := r.RemoteAddr
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			peer = peerKey(net.TCPAddrFromAddrPort(ap))
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		if l := limiter(peer); l == nil || l.Wait(ctx) != nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, fmt.Sprintf("at most %v scrapes a second from one peer", perSecond), http.StatusTooManyRequests)
			return
		}
		h.ServeHTTP(w, r)
	})
}
