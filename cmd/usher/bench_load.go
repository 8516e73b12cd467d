package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/bench"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// loadFlags are the flags every load command takes.
type loadFlags struct {
	addr, floor         string
	serverPID, floorPID int
	concurrency         []int
	plan                bench.Plan
	requests, batch     int
	writes              int
	health              bool
	jsonPath            string
	shape               *bench.Shape
	// queries is a file of queries to replay, instead of drawing them from
	// the generated platform (check only).
	queries string
	// pageSize and pick shape the listings of lookup and admin, rate paces
	// them.
	pageSize, pick int
	rate           float64
}

// addLoadFlags defines the flags of a load command on fs, and returns what
// reads them once they are parsed.
func addLoadFlags(fs *pflag.FlagSet, mode string) func() (*loadFlags, error) {
	f := &loadFlags{}
	fs.StringVar(&f.addr, "addr", envOr("USHER_ADDR", "127.0.0.1:7070"), "usher server address (loopback) (env USHER_ADDR)")
	fs.IntVar(&f.serverPID, "server-pid", 0, "pid of the usher server, for its CPU time and resident memory (bench/run.sh passes it)")
	fs.StringVar(&f.floor, "floor", "", "address of a running 'usher bench floor'; without it, the tool starts one of its own")
	fs.IntVar(&f.floorPID, "floor-pid", 0, "pid of the --floor server, for its CPU time and resident memory")
	conc := "32"
	if mode == "check" || mode == "lookup" || mode == "admin" {
		conc = "8,32"
	}
	fs.Func("concurrency", fmt.Sprintf("calls in flight; a comma-separated list runs each in turn (default %s)", conc), func(s string) error {
		conc = s
		return nil
	})
	fs.DurationVar(&f.plan.Duration, "duration", 10*time.Second, "each phase's measured time, summed over its rounds")
	fs.DurationVar(&f.plan.Round, "round", time.Second, "how long one phase runs before the next takes over; the phases take turns until each has run --duration")
	fs.DurationVar(&f.plan.Warmup, "warmup", time.Second, "each phase's unmeasured run before the first round")
	fs.IntVar(&f.requests, "requests", 30_000, "distinct requests to replay (queries, or (subject, call) pairs for join)")
	fs.BoolVar(&f.health, "health", mode == "check", "also load usher's own health check, to tell the cost of the server as a whole from its handler's")
	fs.StringVar(&f.jsonPath, "json", "", "also write the results to this file, as JSON")
	if mode == "check" {
		fs.IntVar(&f.writes, "writes", 0, "grants per second to make in the background during a second Check phase; fails if fewer than 95% are delivered")
	}
	if mode == "check" {
		fs.StringVar(&f.queries, "queries", "", "replay the queries of this file (usher bench inprocess --save-queries) rather than generate the platform to draw them")
	}
	if mode == "checkbatch" {
		fs.IntVar(&f.batch, "batch", 100, "checks per CheckBatch call")
	}
	if mode == "lookup" || mode == "admin" {
		fs.IntVar(&f.pageSize, "page-size", 100, "answers a page of the background listings asks for")
		fs.Float64Var(&f.rate, "rate", 0, "calls a second the background client makes at most; 0 makes them back to back, as fast as the server answers")
	}
	if mode == "lookup" {
		fs.IntVar(&f.pick, "pick", 5, "subjects (and calls) of each kind to look up: those with the largest answers, and as many around the median")
	}
	f.shape = shapeFlags(fs)
	return func() (*loadFlags, error) {
		for _, s := range strings.Split(conc, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("--concurrency %q: want positive numbers separated by commas", conc)
			}
			f.concurrency = append(f.concurrency, n)
		}
		switch {
		case f.plan.Duration <= 0:
			return nil, fmt.Errorf("--duration %s: want a positive duration", f.plan.Duration)
		case f.requests <= 0:
			return nil, fmt.Errorf("--requests %d: want at least 1", f.requests)
		case f.writes < 0:
			return nil, fmt.Errorf("--writes %d: want 0 or more", f.writes)
		case mode == "checkbatch" && f.batch <= 0:
			return nil, fmt.Errorf("--batch %d: want at least 1", f.batch)
		case (mode == "lookup" || mode == "admin") && (f.pageSize <= 0 || f.pageSize > 1000):
			return nil, fmt.Errorf("--page-size %d: want 1 to 1000", f.pageSize)
		case f.rate < 0:
			return nil, fmt.Errorf("--rate %g: want 0 or more", f.rate)
		case mode == "lookup" && f.pick <= 0:
			return nil, fmt.Errorf("--pick %d: want at least 1", f.pick)
		}
		return f, nil
	}
}

// workload is what one load command sends: the pre-encoded requests of its
// Usher phase, and how to tell they are answered right.
type workload struct {
	name     string // the phase's name, "usher check"
	method   string
	requests []bench.Encoded
	items    int
	// outcome names a response's first field, for Join; nil for none.
	outcome []string
	// verify asks the server, through the generated client, what some of
	// the requests should get, before the load.
	verify func(ctx context.Context) error
}

func benchLoad(mode string, f *loadFlags) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	conn, err := benchConn(f.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if f.floor == "" {
		fl, err := startFloor()
		if err != nil {
			return fmt.Errorf("starting a floor: %w", err)
		}
		defer fl.stop()
		f.floor, f.floorPID = fl.addr, fl.cmd.Process.Pid
	}
	floorConn, err := benchConn(f.floor)
	if err != nil {
		return err
	}
	defer floorConn.Close()

	var (
		p   bench.Platform
		idx *authz.Index
		w   *workload
	)
	workloadOf := bench.Workload{Users: f.shape.Users}
	if f.queries != "" {
		qf, err := bench.LoadQueryFile(f.queries)
		if err != nil {
			return err
		}
		if w, err = checkWorkload(conn, qf.Queries); err != nil {
			return err
		}
		workloadOf.Resources, workloadOf.Grants = qf.Resources, qf.Grants
	} else {
		if p, err = generate(*f.shape); err != nil {
			return err
		}
		if idx, err = authz.NewIndex(p.Snapshot); err != nil {
			return err
		}
		if w, err = newWorkload(mode, f, p, idx, conn); err != nil {
			return err
		}
		workloadOf.Resources, workloadOf.Grants = len(p.Snapshot.Resources), len(p.Snapshot.Grants)
	}
	workloadOf.Requests = len(w.requests)
	if err := w.verify(ctx); err != nil {
		return err
	}
	if mode == "join" {
		if err := verifyFloorJoin(ctx, floorConn); err != nil {
			return err
		}
	}
	var side func(workers int) sideLoad
	switch mode {
	case "lookup":
		side, err = lookupLoad(ctx, f, p, conn)
	case "admin":
		side, err = adminLoad(ctx, f, p, conn)
	}
	if err != nil {
		return err
	}
	healthReq, err := bench.Encode(&healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	report := bench.Report{
		Mode: mode, Time: time.Now().UTC(), Duration: bench.Seconds(f.plan.Duration), Round: bench.Seconds(f.plan.Round),
		Workload: workloadOf,
		Machine:  bench.Machine{CPUs: runtime.NumCPU()},
	}
	observeLoad := func() {
		if l, err := bench.ReadLoadAverage(); err == nil {
			report.Machine.Observe(l)
		}
	}
	observeLoad()
	rounds, each := f.plan.Rounds()
	fmt.Printf("%s over %d resources and %d grants, %d distinct requests; each phase %s in %d rounds of %s, interleaved with the floor at %s\n",
		mode, workloadOf.Resources, workloadOf.Grants, len(w.requests), f.plan.Duration, rounds, each, f.floor)
	if f.serverPID == 0 {
		fmt.Println("no --server-pid: usher's CPU time and memory are not measured")
	}

	var failures []string
	for _, workers := range f.concurrency {
		targets := []bench.Target{
			{Name: "floor health", Server: "floor", PID: f.floorPID, Call: healthCall(floorConn, healthReq, workers)},
		}
		if mode == "join" {
			// The same Joins, answered by the floor without deciding.
			targets = append(targets, bench.Target{Name: floorJoin, Server: "floor", PID: f.floorPID, Call: replay(floorConn, w, workers)})
		}
		if f.health {
			targets = append(targets, bench.Target{Name: "usher health", Server: "usher", PID: f.serverPID, Call: healthCall(conn, healthReq, workers)})
		}
		usher := bench.Target{Name: w.name, Server: "usher", PID: f.serverPID, Items: w.items, Call: replay(conn, w, workers)}
		targets = append(targets, usher)
		var s sideLoad
		switch {
		case side != nil:
			s = side(workers)
		case f.writes > 0:
			s = writesLoad(f, conn)
		}
		for _, ph := range s.phases {
			t := bench.Target{Name: ph.name, Server: "usher", PID: f.serverPID, Items: w.items, Background: ph.background}
			if !ph.alone {
				t.Call = usher.Call
			}
			targets = append(targets, t)
		}
		stats := bench.Interleave(ctx, bench.Plan{Workers: workers, Duration: f.plan.Duration, Round: f.plan.Round, Warmup: f.plan.Warmup},
			targets, observeLoad)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		run := bench.Run{Concurrency: workers}
		phases := map[string]bench.Phase{}
		for i, st := range stats {
			if targets[i].Call == nil {
				continue
			}
			ph := bench.PhaseOf(st, targets[i].Server, stats[0])
			phases[ph.Name] = ph
			run.Phases = append(run.Phases, ph)
			if st.Errors > 0 {
				failures = append(failures, fmt.Sprintf("%s at concurrency %d: %d errors", st.Name, workers, st.Errors))
			}
		}
		if floor, ok := phases[floorJoin]; ok {
			run.Compared = append(run.Compared, bench.Compare(phases[usher.Name], floor, 0, 0))
		}
		for _, c := range s.compare {
			run.Compared = append(run.Compared, bench.Compare(phases[c.phase], phases[usher.Name], c.minThroughput, c.maxP99))
		}
		for _, l := range s.listers {
			run.Listings = append(run.Listings, l.Listings()...)
			if n, err := l.Errors(); n > 0 {
				failures = append(failures, fmt.Sprintf("%s at concurrency %d: %d calls failed, the first: %v", l.Name, workers, n, err))
			}
		}
		if s.pacer != nil {
			run.Writes = bench.WritesOf(s.pacer.Result())
			if !run.Writes.Delivered {
				failures = append(failures, fmt.Sprintf("at concurrency %d, %d grants/s were asked and %.0f/s delivered", workers, f.writes, run.Writes.Achieved))
			}
		}
		run.Print(os.Stdout)
		report.Runs = append(report.Runs, run)
	}
	report.Machine.Print(os.Stdout)
	if f.jsonPath != "" {
		if err := report.WriteJSON(f.jsonPath); err != nil {
			return err
		}
	}
	if len(failures) > 0 {
		return errors.New(strings.Join(failures, "; "))
	}
	return nil
}

// healthCall is a grpc.health.v1 Check.
func healthCall(conn *grpc.ClientConn, req bench.Encoded, workers int) bench.Call {
	opts := []grpc.CallOption{bench.CallOption()}
	return func(ctx context.Context, w, seq int) (string, error) {
		var r bench.Reply
		if err := conn.Invoke(ctx, healthpb.Health_Check_FullMethodName, &req, &r, opts...); err != nil {
			return "", err
		}
		if r.Field1 != uint64(healthpb.HealthCheckResponse_SERVING) {
			return "", fmt.Errorf("health: status %d, not SERVING", r.Field1)
		}
		return "", nil
	}
}

// replay sends w's requests in turn, each worker from its own place.
func replay(conn *grpc.ClientConn, w *workload, workers int) bench.Call {
	opts := []grpc.CallOption{bench.CallOption()}
	reqs := w.requests
	return func(ctx context.Context, worker, seq int) (string, error) {
		var r bench.Reply
		err := conn.Invoke(ctx, w.method, &reqs[(seq*workers+worker)%len(reqs)], &r, opts...)
		if err != nil || w.outcome == nil {
			return "", err
		}
		if r.Field1 < uint64(len(w.outcome)) {
			return w.outcome[r.Field1], nil
		}
		return "outcome " + strconv.FormatUint(r.Field1, 10), nil
	}
}

func newWorkload(mode string, f *loadFlags, p bench.Platform, idx *authz.Index, conn *grpc.ClientConn) (*workload, error) {
	w := &workload{name: "usher " + mode}
	var queries []bench.Query
	if mode != "join" {
		queries = bench.Queries(p, idx, f.requests, f.shape.Seed)
	}
	var err error
	switch mode {
	case "check", "lookup", "admin":
		// lookup and admin load Check, with their listings beside it.
		return checkWorkload(conn, queries)
	case "listpermissions":
		w.method = usherv1.AuthorizationService_ListPermissions_FullMethodName
		for _, q := range queries {
			w.requests, err = appendEncoded(w.requests, &usherv1.ListPermissionsRequest{Subject: q.Subject, Resource: q.Resource}, err)
		}
		w.verify = verifyListPermissions(conn, idx, queries)
	case "checkbatch":
		w.method = usherv1.AuthorizationService_CheckBatch_FullMethodName
		w.items = f.batch
		for at := 0; at < len(queries); at += f.batch {
			req := &usherv1.CheckBatchRequest{}
			for i := range f.batch {
				q := queries[(at+i)%len(queries)]
				req.Checks = append(req.Checks, &usherv1.CheckItem{Subject: q.Subject, Permission: q.Permission, Resource: q.Resource})
			}
			w.requests, err = appendEncoded(w.requests, req, err)
		}
		w.verify = verifyChecks(conn, queries)
	case "join":
		w.method = usherv1.AdmissionService_Join_FullMethodName
		joins, jerr := bench.Joins(p, idx, f.requests, f.shape.Seed)
		if jerr != nil {
			return nil, jerr
		}
		for _, j := range joins {
			w.requests, err = appendEncoded(w.requests, &usherv1.JoinRequest{Subject: j.Subject, Resource: j.Call}, err)
		}
		w.outcome = make([]string, len(usherv1.Outcome_name))
		for v, name := range usherv1.Outcome_name {
			if int(v) < len(w.outcome) {
				w.outcome[v] = strings.TrimPrefix(name, "OUTCOME_")
			}
		}
		w.verify = verifyJoins(conn, joins)
	default:
		return nil, fmt.Errorf("unknown load %q", mode)
	}
	return w, err
}

// checkWorkload replays queries as Checks.
func checkWorkload(conn *grpc.ClientConn, queries []bench.Query) (*workload, error) {
	w := &workload{name: "usher check", method: usherv1.AuthorizationService_Check_FullMethodName, verify: verifyChecks(conn, queries)}
	var err error
	for _, q := range queries {
		w.requests, err = appendEncoded(w.requests, &usherv1.CheckRequest{Subject: q.Subject, Permission: q.Permission, Resource: q.Resource}, err)
	}
	return w, err
}

// sideLoad is what runs beside the Usher phase in phases of its own, and
// how those compare with it: grants streaming in, lookups, admin listings.
type sideLoad struct {
	phases  []sidePhase
	pacer   *bench.Pacer
	listers []*bench.Lister
	compare []comparison
}

// sidePhase is a phase that runs background beside the Usher phase's load,
// or alone.
type sidePhase struct {
	name       string
	background func(ctx context.Context)
	alone      bool
}

// comparison holds a side phase against the Usher phase alone.
type comparison struct {
	phase                 string
	minThroughput, maxP99 float64
}

// Targets of issue 11 and of the README for Check beside other work: with
// grants streaming in, Check keeps 0.85 of its throughput and 1.5x its p99;
// beside lookups 1.3x its p99, beside admin listings and moves 1.5x.
const (
	writesMinThroughput = 0.85
	writesMaxP99        = 1.5
	lookupMaxP99        = 1.3
	adminMaxP99         = 1.5
)

// besideName names the phase of Check with a background client beside it.
func besideName(what string, f *loadFlags) string {
	if f.rate > 0 {
		return fmt.Sprintf("usher check +%s %g/s", what, f.rate)
	}
	return "usher check +" + what
}

// writesLoad streams f.writes grants a second beside Check.
func writesLoad(f *loadFlags, conn *grpc.ClientConn) sideLoad {
	pacer := &bench.Pacer{Name: "grants (background)", Rate: f.writes, Call: grantCall(conn, "bench-bg")}
	name := fmt.Sprintf("usher check +%d grants/s", f.writes)
	return sideLoad{
		phases:  []sidePhase{{name: name, background: pacer.Run}},
		pacer:   pacer,
		compare: []comparison{{phase: name, minThroughput: writesMinThroughput, maxP99: writesMaxP99}},
	}
}

// appendEncoded encodes m onto reqs, unless an earlier encoding failed.
func appendEncoded(reqs []bench.Encoded, m proto.Message, err error) ([]bench.Encoded, error) {
	if err != nil {
		return reqs, err
	}
	e, err := bench.Encode(m)
	return append(reqs, e), err
}

// verifyChecks asks every query of the load once, through CheckBatch, and
// fails if the server answers one differently from the platform the tool
// generated: a server populated with another shape or seed.
func verifyChecks(conn *grpc.ClientConn, queries []bench.Query) func(context.Context) error {
	client := usherv1.NewAuthorizationServiceClient(conn)
	return func(ctx context.Context) error {
		wrong := 0
		var first string
		for at := 0; at < len(queries); at += 100 {
			part := queries[at:min(at+100, len(queries))]
			req := &usherv1.CheckBatchRequest{}
			for _, q := range part {
				req.Checks = append(req.Checks, &usherv1.CheckItem{Subject: q.Subject, Permission: q.Permission, Resource: q.Resource})
			}
			resp, err := client.CheckBatch(ctx, req)
			if err != nil {
				return fmt.Errorf("verifying the queries: %w", err)
			}
			for i, d := range resp.GetDecisions() {
				if d.GetAllowed() != part[i].Allowed {
					wrong++
					if first == "" {
						first = fmt.Sprintf("%s %s on %s: allowed %t, want %t", part[i].Subject, part[i].Permission, part[i].Resource, d.GetAllowed(), part[i].Allowed)
					}
				}
			}
		}
		if wrong > 0 {
			return fmt.Errorf("%d of %d queries answered differently from the generated platform (the first: %s): populate and load with the same shape flags", wrong, len(queries), first)
		}
		return nil
	}
}

// verifyListPermissions compares the server's answer to the generated
// index's for the first queries.
func verifyListPermissions(conn *grpc.ClientConn, idx *authz.Index, queries []bench.Query) func(context.Context) error {
	client := usherv1.NewAuthorizationServiceClient(conn)
	return func(ctx context.Context) error {
		for _, q := range queries[:min(len(queries), 200)] {
			resp, err := client.ListPermissions(ctx, &usherv1.ListPermissionsRequest{Subject: q.Subject, Resource: q.Resource})
			if err != nil {
				return fmt.Errorf("verifying ListPermissions: %w", err)
			}
			want, _, _ := idx.ListPermissions(q.Subject, q.Resource, false)
			if !slices.Equal(resp.GetPermissions(), want) {
				return fmt.Errorf("ListPermissions %s on %s = %v, the generated platform says %v: populate and load with the same shape flags",
					q.Subject, q.Resource, resp.GetPermissions(), want)
			}
		}
		return nil
	}
}

// verifyJoins joins as the first pairs and fails unless each is admitted;
// it warns when the server signs no LiveKit token, since the load would then
// measure joins without one.
func verifyJoins(conn *grpc.ClientConn, joins []bench.Join) func(context.Context) error {
	client := usherv1.NewAdmissionServiceClient(conn)
	return func(ctx context.Context) error {
		tokens, size := 0, 0
		sample := joins[:min(len(joins), 100)]
		for _, j := range sample {
			resp, err := client.Join(ctx, &usherv1.JoinRequest{Subject: j.Subject, Resource: j.Call})
			if err != nil {
				return fmt.Errorf("verifying Join: %w", err)
			}
			if resp.GetOutcome() != usherv1.Outcome_OUTCOME_ADMITTED {
				return fmt.Errorf("Join %s to %s: %s (%s), the generated platform admits it: populate and load with the same shape flags",
					j.Subject, j.Call, resp.GetOutcome(), resp.GetReason())
			}
			if resp.GetLivekitToken() != "" {
				tokens++
			}
			size += proto.Size(resp)
		}
		fmt.Printf("usher's answers to the first %d joins: %d bytes on average\n", len(sample), size/max(len(sample), 1))
		if tokens < len(sample) {
			fmt.Printf("WARNING: %d of %d admitted joins carry no LiveKit token: start usher serve with USHER_LIVEKIT_API_KEY and USHER_LIVEKIT_API_SECRET to measure Join with one\n",
				len(sample)-tokens, len(sample))
		}
		return nil
	}
}

// floorJoin names the phase of the floor's Joins.
const floorJoin = "floor join"

// verifyFloorJoin fails unless the floor answers a Join as it should, with
// a token, and says how large its answer is.
func verifyFloorJoin(ctx context.Context, floor *grpc.ClientConn) error {
	resp, err := usherv1.NewAdmissionServiceClient(floor).Join(ctx, &usherv1.JoinRequest{Subject: floorSubject, Resource: floorCall})
	if err != nil {
		return fmt.Errorf("the floor's Join: %w (a floor of an older usher?)", err)
	}
	if resp.GetOutcome() != usherv1.Outcome_OUTCOME_ADMITTED || resp.GetLivekitToken() == "" {
		return fmt.Errorf("the floor's Join answered %s with token %q, want ADMITTED with one", resp.GetOutcome(), resp.GetLivekitToken())
	}
	fmt.Printf("the floor's answer to every join: %d bytes\n", proto.Size(resp))
	return nil
}

// floorProcess is a floor the load tool started, as a child process of the
// same binary, so that it runs as apart from the tool as usher serve does.
type floorProcess struct {
	cmd  *exec.Cmd
	addr string
}

func startFloor() (*floorProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "bench", "floor", "--addr", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	fl := &floorProcess{cmd: cmd}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), floorBanner+" ")
	if err != nil || !ok {
		fl.stop()
		return nil, fmt.Errorf("%s bench floor printed %q (%v), want %q and its address", exe, line, err, floorBanner)
	}
	fl.addr = addr
	return fl, nil
}

func (f *floorProcess) stop() {
	_ = f.cmd.Process.Signal(syscall.SIGTERM)
	_ = f.cmd.Wait()
}
