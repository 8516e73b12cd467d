package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/admission/etcdstore"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/media/livekit"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
)

func serveCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the server on a bbolt file or an etcd cluster",
		Long: `Serve runs Usher: the AuthorizationService, AdminService and
AdmissionService over gRPC, with grpc.health.v1 and reflection, on --addr.
It keeps its data in the bbolt file --data, or with --etcd in an etcd
cluster, as one replica of many. An empty data file gets the default policy
(or --policy). It prints the address it serves on once it is ready, and
stops on SIGINT or SIGTERM, letting calls in flight finish for --drain; a
second SIGINT or SIGTERM cancels them at once. SIGHUP reads the callers
file, and --client-ca, again at once rather than at their next poll, each
second (the TLS files are also read at each handshake).

On a data file that holds a policy already, --policy-mode says what
--policy does: apply the file, leaving what it does not list alone (apply,
the default), apply it and remove what it does not list on root and on its
resources (prune), or only check that it is in force (check). A file that
cannot be applied to the data, or in check mode one that is not in force,
makes serve refuse to start, printing what differs; the data is untouched.

Without --callers, every caller is unauthenticated and may write, so it
serves only a loopback address unless --allow-unauthenticated is given.
With it, each caller holds at most its share of the server's Watch and
WatchCall streams, and of its live sessions and lobby knocks: a quarter of
each, unless --max-watches-per-caller, --max-call-watches-per-caller or
--max-sessions-per-caller says otherwise.
Flags that name a file or a secret may be set instead by the USHER_
variable their help names.`,
		Example: `  usher serve
  usher serve --addr 127.0.0.1:7070 --data data/usher.db --policy livebox
  usher serve --data data/usher.db --policy rooms.yaml --policy-mode prune
  usher serve --addr 0.0.0.0:7070 --callers callers.yaml --tls-cert server.crt --tls-key server.key
  usher serve --etcd https://etcd-0:2379,https://etcd-1:2379 --etcd-ca ca.crt`,
		Args: argsExactly(),
	}
	fs := cmd.Flags()
	addr := fs.String("addr", envOr("USHER_ADDR", "127.0.0.1:7070"), "address to listen on (env USHER_ADDR)")
	backend := addBackendFlags(fs)
	policyFile := fs.String("policy", envOr("USHER_POLICY", ""),
		"policy file or shipped policy name to apply at start-up (env USHER_POLICY); without it, an empty data file gets the default policy")
	policyMode := fs.String("policy-mode", envOr("USHER_POLICY_MODE", policyApply), policyModeUsage)
	cmd.RegisterFlagCompletionFunc("policy-mode", cobra.FixedCompletions(policyModes, cobra.ShellCompDirectiveNoFileComp))
	drain := fs.Duration("drain", 10*time.Second, "how long in-flight calls may take to finish at shutdown")
	logFormat := fs.String("log-format", envOr("USHER_LOG_FORMAT", "text"), "log as `json` lines or as text (env USHER_LOG_FORMAT)")
	logLevel := fs.String("log-level", envOr("USHER_LOG_LEVEL", "info"),
		"log from this `level` up: debug (every call), info (refused calls), warn or error (failed calls) (env USHER_LOG_LEVEL)")
	verbose := fs.BoolP("verbose", "v", false, "the same as --log-level debug")
	callersFile := fs.String("callers", envOr("USHER_CALLERS", ""),
		"callers file (YAML) naming who may call and their kind, check or admin; reread when it changes (env USHER_CALLERS)")
	tlsFiles := server.TLSFiles{}
	fs.StringVar(&tlsFiles.Cert, "tls-cert", envOr("USHER_TLS_CERT", ""), "serve TLS with this PEM certificate chain; reread when it changes (env USHER_TLS_CERT)")
	fs.StringVar(&tlsFiles.Key, "tls-key", envOr("USHER_TLS_KEY", ""), "the PEM key of --tls-cert (env USHER_TLS_KEY)")
	fs.StringVar(&tlsFiles.ClientCA, "client-ca", envOr("USHER_CLIENT_CA", ""),
		"verify client certificates against this PEM CA bundle, for callers identified by certificate; reread when it changes, "+
			"a CA taken out of it identifying nobody from then on, on open connections too (env USHER_CLIENT_CA)")
	livekitKeyFile := fs.String("livekit-key-file", envOr("USHER_LIVEKIT_KEY_FILE", ""),
		"LiveKit key file (livekit-server's format, 'key: secret' lines, readable by its owner only) to sign the tokens of admitted joins; "+
			"without it, the key comes from USHER_LIVEKIT_API_KEY and USHER_LIVEKIT_API_SECRET, and without those Join issues no token (env USHER_LIVEKIT_KEY_FILE)")
	livekitKeyName := fs.String("livekit-key", envOr("USHER_LIVEKIT_KEY", ""), "which key of --livekit-key-file to use, when it holds several (env USHER_LIVEKIT_KEY)")
	maxSessions := fs.Int("max-sessions", admission.DefaultMaxSessions, "most live sessions and lobby knocks this server keeps")
	sessionShare := fs.Int("max-sessions-per-caller", 0,
		"most live sessions and lobby knocks one caller of --callers may hold at once; more are refused with RESOURCE_EXHAUSTED (CALLER_SESSION_LIMIT) "+
			"(0: a quarter of --max-sessions, at least 1; at most --max-sessions)")
	envoyConfig := fs.String("envoy-config", envOr("USHER_ENVOY_CONFIG", ""),
		"also serve Envoy's ext_authz (envoy.service.auth.v3.Authorization), mapping requests to checks as this YAML file says; see docs/envoy.md (env USHER_ENVOY_CONFIG)")
	allowUnauthenticated := fs.Bool("allow-unauthenticated", false, "serve a non-loopback address without a callers file: anyone who can reach it may write")
	metricsAddr := fs.String("metrics-addr", envOr("USHER_METRICS_ADDR", ""),
		"serve Prometheus metrics over HTTP at this address's /metrics, apart from the gRPC port (empty: no metrics) (env USHER_METRICS_ADDR)")
	tracing := server.TracingConfig{}
	fs.StringVar(&tracing.Endpoint, "otlp-endpoint", "",
		"export traces over OTLP/gRPC to this collector, host:port (TLS) or http://host:port (plaintext); "+
			"without it, to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or else OTEL_EXPORTER_OTLP_ENDPOINT, if set, else no tracing")
	fs.Float64Var(&tracing.SampleRatio, "trace-sample-ratio", server.DefaultSampleRatio,
		"share of calls traced among those that continue no sampled trace (a call's sampled trace is always continued; with --callers only a known caller's, a stranger's calls being sampled as if it sent none)")
	decisionLog := fs.String("decision-log", envOr("USHER_DECISION_LOG", ""),
		"write Check, CheckBatch and Join decisions as JSON lines to this `file` (appended to) or to stderr; "+
			"from a queue, off the calls' path: what it cannot keep up with is dropped and counted (env USHER_DECISION_LOG)")
	decisionSample := fs.Float64("decision-sample", 1, "share of decisions --decision-log writes, 0 to 1")
	profiling := fs.Bool("pprof", false, "also serve Go's profiles at /debug/pprof/ on --metrics-addr, which should then be reachable only by operators")

	// Connection limits: one flag per field of server.ConnLimits, each
	// defaulting to server.DefaultConnLimits (see README, "Reliability and
	// limits").
	limits := server.DefaultConnLimits()
	fs.IntVar(&limits.MaxConns, "max-conns", limits.MaxConns,
		"most connections held at once; more are closed when accepted (0: as many as the file-descriptor limit allows)")
	fs.IntVar(&limits.MaxConnsPerPeer, "max-conns-per-peer", limits.MaxConnsPerPeer,
		"most connections one IPv4 address or IPv6 /64 may hold at once (0: no limit)")
	fs.Func("max-streams", fmt.Sprintf("most `calls` in flight on one connection (0: no limit) (default %d)", limits.MaxStreams),
		func(s string) error { return parseUint32(s, &limits.MaxStreams) })
	fs.Func("max-header-bytes", fmt.Sprintf("largest header list of a call, in `bytes` (default %d)", limits.MaxHeaderBytes),
		func(s string) error { return parseUint32(s, &limits.MaxHeaderBytes) })
	fs.Int64Var(&limits.ReceiveBudget, "receive-budget", limits.ReceiveBudget,
		"most bytes that requests still arriving may hold across all connections (0: no limit)")
	fs.Int64Var(&limits.SendBudget, "send-budget", limits.SendBudget,
		"most bytes that answers not yet read by their clients may hold across all connections; an answer past it is refused (0: no limit)")
	fs.DurationVar(&limits.RequestTimeout, "request-timeout", limits.RequestTimeout,
		"close a connection whose request has not arrived in full this long after its headers (0: never)")
	fs.DurationVar(&limits.HandshakeTimeout, "handshake-timeout", limits.HandshakeTimeout,
		"close a new connection that has not finished its TLS and HTTP/2 handshake in this time")
	fs.DurationVar(&limits.IdleTimeout, "idle-timeout", limits.IdleTimeout,
		"close a connection with no call in flight for this long (0: never)")
	fs.DurationVar(&limits.KeepaliveTime, "keepalive-time", limits.KeepaliveTime,
		"ping a connection silent for this long")
	fs.DurationVar(&limits.KeepaliveTimeout, "keepalive-timeout", limits.KeepaliveTimeout,
		"close a pinged connection that has not answered in this time")
	fs.DurationVar(&limits.KeepaliveMinTime, "keepalive-min-time", limits.KeepaliveMinTime,
		"disconnect a client that pings more often than this")
	fs.Func("stream-window", fmt.Sprintf("fixed HTTP/2 flow-control window of a stream, in `bytes` (default %d)", limits.StreamWindow),
		func(s string) error { return parseInt32(s, &limits.StreamWindow) })
	fs.Func("conn-window", fmt.Sprintf("fixed HTTP/2 flow-control window of a connection, in `bytes` (default %d)", limits.ConnWindow),
		func(s string) error { return parseInt32(s, &limits.ConnWindow) })
	// End of the connection limits.
	watchLimits := server.DefaultWatchLimits()
	fs.IntVar(&watchLimits.MaxStreams, "max-watches", watchLimits.MaxStreams,
		"most Watch streams held at once; more are refused with RESOURCE_EXHAUSTED (0: refuse every Watch)")
	fs.DurationVar(&watchLimits.Progress, "watch-progress", watchLimits.Progress,
		"send a Watch stream that has had no message for this long one with the revision it has reached (0: never; else at least 10ms)")
	maxCallWatches := fs.Int("max-call-watches", admission.DefaultMaxWatchers,
		fmt.Sprintf("most WatchCall streams held at once, counted apart from --max-watches; more are refused with RESOURCE_EXHAUSTED. "+
			"Each holds a buffer of %d events (about 38 KiB)", admission.DefaultWatchBuffer))
	// Each caller's share of the two pools: see README, "Callers and
	// authentication".
	shares := server.CallerShares{}
	fs.IntVar(&shares.Watches, "max-watches-per-caller", 0,
		"most Watch streams one caller of --callers may hold at once; more are refused with RESOURCE_EXHAUSTED (CALLER_WATCH_LIMIT) "+
			"(0: a quarter of --max-watches, at least 1)")
	fs.IntVar(&shares.CallWatches, "max-call-watches-per-caller", 0,
		"most WatchCall streams one caller of --callers may hold at once; more are refused with RESOURCE_EXHAUSTED (CALLER_WATCH_LIMIT) "+
			"(0: a quarter of --max-call-watches, at least 1)")

	cmd.RunE = func(cmd *cobra.Command, _ []string) (err error) {
		// A level it refuses is told at the default one, in the log's
		// format.
		level, levelErr := server.ParseLevel(*logLevel)
		if *verbose {
			level = slog.LevelDebug
		}
		logger, err := server.NewLogger(os.Stderr, *logFormat, level)
		if err != nil {
			return fmt.Errorf("--log-format: %w", err)
		}
		// In a JSON log every line is a record, the error the server
		// stops on too, a flag's value it refuses included.
		if *logFormat == "json" {
			defer func() {
				if err != nil && !errors.As(err, new(*usageError)) {
					logger.Error("usher serve stopped", "error", describeError(err))
					err = &loggedError{err}
				}
			}()
		}
		if levelErr != nil {
			return fmt.Errorf("--log-level: %w", levelErr)
		}
		// Negated, so that NaN, which no comparison holds for, is refused.
		if r := *decisionSample; !(r >= 0 && r <= 1) {
			return fmt.Errorf("--decision-sample %v: want 0 to 1", r)
		}
		if r := tracing.SampleRatio; !(r >= 0 && r <= 1) {
			return fmt.Errorf("--trace-sample-ratio %v: want 0 to 1", r)
		}
		if *drain < 0 {
			return fmt.Errorf("--drain %v: want 0 (calls cancelled at once) or more", *drain)
		}
		if *maxCallWatches < 1 {
			return fmt.Errorf("--max-call-watches %d: want at least 1", *maxCallWatches)
		}
		if shares.Watches < 0 {
			return fmt.Errorf("--max-watches-per-caller %d: want 0 (a quarter of --max-watches) or more", shares.Watches)
		}
		if *sessionShare < 0 {
			return fmt.Errorf("--max-sessions-per-caller %d: want 0 (a quarter of --max-sessions) or more", *sessionShare)
		}
		if *maxSessions < 1 {
			return fmt.Errorf("--max-sessions %d: want at least 1", *maxSessions)
		}
		if *sessionShare > *maxSessions {
			return fmt.Errorf("--max-sessions-per-caller %d: want at most --max-sessions (%d), or 0 for a quarter of it", *sessionShare, *maxSessions)
		}
		if shares.CallWatches < 0 {
			return fmt.Errorf("--max-call-watches-per-caller %d: want 0 (a quarter of --max-call-watches) or more", shares.CallWatches)
		}
		if *profiling && *metricsAddr == "" {
			return fmt.Errorf("--pprof serves on --metrics-addr: give both")
		}
		if err := limits.Validate(); err != nil {
			return limitRefused("connection limits", err, connLimitFlags)
		}
		if err := watchLimits.Validate(); err != nil {
			return limitRefused("watch limits", err, watchLimitFlags)
		}
		if err := checkPolicyMode(*policyMode); err != nil {
			return err
		}
		// A policy file that is invalid in itself stops the server before it
		// opens, or creates, its data.
		var doc *policy.Document
		if *policyFile != "" {
			if doc, err = loadValid(*policyFile, logWriter{logger}); err != nil {
				return fmt.Errorf("--policy %s", err)
			}
		}
		// Warnings stand out on a terminal; in a JSON log they are records like
		// the others, so that every line parses.
		warn := func(format string, args ...any) {
			if *logFormat == "json" {
				logger.Warn(fmt.Sprintf(format, args...))
				return
			}
			fmt.Fprintf(os.Stderr, "WARNING: "+format+"\n", args...)
		}

		// Who may call, and what the Envoy service answers, are settled before
		// the data file is opened: a server that refuses to start must not have
		// touched anything.
		var serverOpts []grpc.ServerOption
		if *envoyConfig != "" {
			envoy, err := loadEnvoy(*envoyConfig)
			if err != nil {
				return err
			}
			serverOpts = append(serverOpts, server.WithEnvoy(envoy))
			logger.Info("Envoy ext_authz mapping loaded", "config", *envoyConfig)
		}
		security := "unauthenticated"
		var callers *server.CallerSource // nil without --callers
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		switch {
		case *callersFile != "":
			var opts []server.CallerSourceOption
			if tlsFiles.ClientCA != "" {
				opts = append(opts, server.WithClientCAFile(tlsFiles.ClientCA))
			}
			src, err := server.NewCallerSource(*callersFile, logger, opts...)
			if err != nil {
				return err
			}
			go src.Watch(ctx)
			serverOpts = append(serverOpts, server.WithCallers(src))
			callers = src
			security = fmt.Sprintf("%d callers from %s", src.Current().Len(), *callersFile)
		case tlsFiles.ClientCA != "":
			return fmt.Errorf("--client-ca needs --callers: the callers file says which certificate is which caller")
		case !isLoopback(*addr) && !*allowUnauthenticated:
			return fmt.Errorf("refusing to serve %s without authentication, where anyone who can reach it could write: "+
				"give --callers FILE (see 'usher token'), listen on loopback (--addr 127.0.0.1:7070) "+
				"or pass --allow-unauthenticated", *addr)
		case !isLoopback(*addr):
			warn("no callers file and --allow-unauthenticated: every caller that can reach %s is unauthenticated and may write", *addr)
		default:
			warn("no callers file (--callers): every caller is unauthenticated and may write; serving on loopback only")
		}
		// SIGHUP, which would otherwise end the process without a drain,
		// reads the callers file again from now on; a broken one is logged
		// and the callers in force stay.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
				}
				if callers == nil {
					logger.Info("SIGHUP: no callers file to read again")
					continue
				}
				logger.Info("SIGHUP: reading the callers file again", "file", callers.File())
				_ = callers.Reload()
			}
		}()
		key, err := livekitKey(*livekitKeyFile, *livekitKeyName)
		if err != nil {
			return err
		}
		var creds credentials.TransportCredentials // nil: plaintext
		switch {
		case tlsFiles.Cert != "" || tlsFiles.Key != "" || tlsFiles.ClientCA != "":
			var opts []server.TLSOption
			if callers != nil && tlsFiles.ClientCA != "" {
				opts = append(opts, server.WithCallersOfClientCA(callers))
			}
			tlsConfig, err := server.NewTLSConfig(tlsFiles, logger, opts...)
			if err != nil {
				return err
			}
			creds = credentials.NewTLS(tlsConfig)
			security += ", TLS"
			if tlsFiles.ClientCA != "" {
				security += " with client certificates"
			}
		case *callersFile != "" && !isLoopback(*addr):
			warn("no --tls-cert: bearer tokens cross the network to %s in plaintext", *addr)
		}

		start := time.Now()
		store, err := backend.open(ctx)
		if err != nil {
			return err
		}
		defer store.close()
		// The backend itself rather than its wrapper, whose interface would
		// hide what metrics read of it (bbolt's WriteTime).
		engine, err := authz.Start(ctx, store.Backend, authz.Options{Logger: logger, Gather: store.gather})
		if err != nil {
			return fmt.Errorf("%s: %w", store.where, err)
		}
		defer engine.Close()
		idx := engine.Index()
		resources, grants, blocks := idx.Counts()
		logger.Info("index loaded", "from", store.where, "revision", idx.Revision(),
			"resources", resources, "grants", grants, "blocks", blocks, "took", time.Since(start).Round(time.Millisecond))
		// The snapshot the index was built from is garbage now; hand its memory
		// back rather than keep it resident for the life of the process.
		empty := idx.Revision() == 0
		debug.FreeOSMemory()
		boundHeapGrowth(logger)

		lis, err := net.Listen("tcp", *addr)
		if err != nil {
			return err
		}
		if callers == nil && !*allowUnauthenticated && !listensOnLoopback(lis) {
			// localhost is taken at its name above; what it resolved to
			// decides.
			lis.Close()
			return fmt.Errorf("refusing to serve %s without authentication: it resolved to %s, which is not a loopback address; "+
				"give --callers FILE, listen on 127.0.0.1, or pass --allow-unauthenticated", *addr, lis.Addr())
		}
		lis, limitOpts := limits.Apply(lis, creds, logger)
		serverOpts = append(serverOpts, limitOpts...)
		serverOpts = append(serverOpts, server.WithWatchLimits(watchLimits), server.WithCallerShares(shares))
		if store.backup != nil {
			serverOpts = append(serverOpts, server.WithBackup(store.backup))
		}
		// Sessions live in this process on one node, and in etcd leases, shared
		// by every replica, on a cluster.
		var sessionStore admission.Store
		if store.etcd != nil {
			sessionStore, err = etcdstore.New(ctx, store.etcd, etcdstore.Options{
				Prefix: store.prefix, Clock: engine.Clock(), Logger: logger, MaxSessions: *maxSessions, CallerShare: *sessionShare})
			if err != nil {
				return fmt.Errorf("%s: sessions: %w", store.where, err)
			}
		} else {
			sessionStore = admission.NewMemoryStore(admission.MemoryOptions{Clock: engine.Clock(), MaxSessions: *maxSessions, CallerShare: *sessionShare})
		}
		sessions := admission.New(engine, admission.Options{Store: sessionStore, LiveKit: key, Logger: logger, MaxWatchers: *maxCallWatches})
		defer sessions.Close()
		if key != nil {
			logger.Info("admitted joins carry LiveKit tokens where the policy maps capabilities to LiveKit", "api_key", key.Key)
		} else {
			logger.Info("no LiveKit key: admitted joins carry no token")
		}
		serverOpts = append(serverOpts, server.WithAdmission(sessions))
		tracing.Version, tracing.Logger = readBuildVersion().Version, logger
		tp, err := server.StartTracing(ctx, tracing)
		if err != nil {
			return err
		}
		if tp != nil {
			serverOpts = append(serverOpts, server.WithTracing(tp))
			defer func() {
				// What is still buffered goes out before the process does.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := tp.Shutdown(ctx); err != nil {
					logger.Warn("flushing traces failed", "error", err)
				}
			}()
			logger.Info("tracing over OTLP", "sample_ratio", tracing.SampleRatio)
		}
		if *decisionLog != "" {
			log, err := server.OpenDecisionLog(*decisionLog, *decisionSample, logger)
			if err != nil {
				return err
			}
			// Closed once the server has stopped, writing what is queued.
			defer func() {
				if err := log.Close(); err != nil {
					logger.Error("the decision log failed", "error", err)
				}
			}()
			serverOpts = append(serverOpts, server.WithDecisionLog(log))
			logger.Info("decision log", "to", *decisionLog, "sample", *decisionSample)
		}
		var metrics *server.Metrics
		if *metricsAddr != "" {
			metrics = server.NewMetrics()
			serverOpts = append(serverOpts, server.WithMetrics(metrics))
		}
		srv := server.New(engine, logger, serverOpts...)
		if metrics != nil {
			stopMetrics, err := serveMetrics(*metricsAddr, metrics, *profiling, logger)
			if err != nil {
				srv.Stop()
				return err
			}
			defer stopMetrics()
		}
		// The policy is applied last, once nothing else can fail the start
		// (the address taken, etcd's sessions out of reach): a start that
		// fails writes nothing, and a data file left empty still takes the
		// next start's --policy whole.
		if name := *policyFile; name != "" || empty {
			if name == "" {
				name = "default"
				if doc, err = loadValid(name, logWriter{logger}); err != nil {
					srv.Stop()
					return fmt.Errorf("--policy %s", err)
				}
			}
			if err := applyPolicy(engine, name, doc, *policyMode, logger); err != nil {
				srv.Stop()
				return err
			}
			logger.Info("policy applied", "policy", name, "revision", idx.Revision())
		}
		if key != nil {
			warnRoomRecord(logger, engine.Index())
		}
		// Signals are caught before the address is printed, so that whoever
		// reads it may stop the server at once.
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
		fmt.Printf("usher: serving gRPC on %s (data %s, revision %d; %s)\n", lis.Addr(), store.where, idx.Revision(), security)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(lis) }()
		select {
		case err := <-served:
			return err
		case sig := <-stop:
			logger.Info("shutting down", "signal", sig.String())
		}
		// GracefulStop stops accepting at once and waits for in-flight calls;
		// past the drain bound, or on a second signal, Stop cancels those
		// still running. Closing the store then waits for a commit in
		// progress, so the file is released between two transactions.
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(*drain):
			logger.Warn("calls still running after the drain bound were cancelled", "drain", *drain)
			srv.Stop()
		case sig := <-stop:
			logger.Warn("calls still running were cancelled on a second signal", "signal", sig.String())
			srv.Stop()
		}
		sessions.Close()
		engine.Close()
		if err := store.close(); err != nil {
			return err
		}
		logger.Info("stopped", "from", store.where, "revision", engine.Index().Revision())
		return nil
	}
	return cmd
}

// serveMetrics serves metrics (and profiles) over HTTP on addr until the
// returned stop is called.
func serveMetrics(addr string, metrics *server.Metrics, profiling bool, logger *slog.Logger) (stop func(), err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	if profiling && !listensOnLoopback(lis) {
		logger.Warn("--pprof on a non-loopback --metrics-addr: whoever reaches it can profile the server", "addr", lis.Addr().String())
	}
	hs := server.ServeMetrics(lis, metrics, profiling, logger)
	fmt.Printf("usher: serving metrics on http://%s/metrics\n", lis.Addr())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}, nil
}

// livekitKey reads the LiveKit key from file, else from the environment;
// nil when neither names one, and no name asks for one.
func livekitKey(file, name string) (*livekit.APIKey, error) {
	if file == "" && name == "" {
		if _, ok := os.LookupEnv(livekit.EnvAPIKey); !ok {
			if _, ok := os.LookupEnv(livekit.EnvAPISecret); !ok {
				return nil, nil
			}
		}
	}
	k, err := livekit.LoadKey(file, name, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("LiveKit key: %w", err)
	}
	return &k, nil
}

// listensOnLoopback reports whether lis listens on a loopback address
// alone, whatever name it was given.
func listensOnLoopback(lis net.Listener) bool {
	a, ok := lis.Addr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}

// isLoopback says whether addr (host:port) listens on loopback only:
// 127.0.0.0/8, ::1 or localhost. An empty host listens everywhere.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseUint32 and parseInt32 read a flag's value into a field of that size,
// refusing what does not fit.
func parseUint32(s string, v *uint32) error {
	n, err := strconv.ParseUint(s, 0, 32)
	*v = uint32(n)
	return err
}

func parseInt32(s string, v *int32) error {
	n, err := strconv.ParseInt(s, 0, 32)
	*v = int32(n)
	return err
}

// connLimitFlags and watchLimitFlags are the flags that set the fields of
// server.ConnLimits and server.WatchLimits, by field.
var (
	connLimitFlags = map[string]string{
		"MaxConns": "max-conns", "MaxConnsPerPeer": "max-conns-per-peer", "MaxStreams": "max-streams",
		"MaxHeaderBytes": "max-header-bytes", "ReceiveBudget": "receive-budget", "SendBudget": "send-budget",
		"RequestTimeout": "request-timeout", "HandshakeTimeout": "handshake-timeout", "IdleTimeout": "idle-timeout",
		"KeepaliveTime": "keepalive-time", "KeepaliveTimeout": "keepalive-timeout", "KeepaliveMinTime": "keepalive-min-time",
		"StreamWindow": "stream-window", "ConnWindow": "conn-window",
	}
	watchLimitFlags = map[string]string{"MaxStreams": "max-watches", "Progress": "watch-progress"}
)

// limitRefused is the refusal of limits whose Validate returned err: it
// names the flag that set the field refused, which is what serve's user
// typed.
func limitRefused(limits string, err error, flags map[string]string) error {
	var e *server.LimitError
	if errors.As(err, &e) {
		if flag, ok := flags[e.Field]; ok {
			return fmt.Errorf("--%s %s: %s", flag, e.Value, e.Problem)
		}
	}
	return fmt.Errorf("%s: %w", limits, err)
}

// loadEnvoy reads an Envoy mapping and its JWT key; errors name the file
// and the field.
func loadEnvoy(file string) (*server.EnvoyService, error) {
	cfg, err := server.LoadEnvoyConfig(file)
	if err != nil {
		return nil, fmt.Errorf("--envoy-config: %w", err)
	}
	envoy, err := server.NewEnvoyService(cfg)
	if err != nil {
		return nil, fmt.Errorf("--envoy-config: %s: %w", file, err)
	}
	return envoy, nil
}

// warnRoomRecord warns of each admission rule in force that maps LiveKit's
// roomRecord, which LiveKit checks against no room: a data file made by a
// policy that mapped it keeps the rule until a policy says otherwise.
func warnRoomRecord(logger *slog.Logger, x *authz.Index) {
	for _, a := range x.Admissions() {
		if a.Media != nil && a.Media.RoomRecord != "" {
			logger.Warn("an admission rule maps LiveKit's roomRecord, which LiveKit checks against no room: a token that carries it lets its bearer start and stop the egress of every room of the LiveKit server; apply a policy that maps nothing to room_record (the shipped ones do not)",
				"scope", a.Scope, "resource_type", a.ResourceType, "room_record", a.Media.RoomRecord)
		}
	}
}
