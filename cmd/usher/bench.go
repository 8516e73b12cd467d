package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/bench"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

const benchUsage = `usage: usher bench <command> [flags]

commands:
  populate   write a synthetic platform straight into a new data file
  check      load a running server's Check, then its health check, and compare
  grant      measure durable Grant throughput and latency with concurrent writers
`

func benchCmd(args []string) error {
	if len(args) == 0 {
		return errors.New(benchUsage)
	}
	switch args[0] {
	case "populate":
		return benchPopulate(args[1:])
	case "check":
		return benchCheck(args[1:])
	case "grant":
		return benchGrant(args[1:])
	}
	return fmt.Errorf("unknown bench command %q\n\n%s", args[0], benchUsage)
}

// shapeFlags defines the platform's size; populate and check must be given
// the same ones.
func shapeFlags(fs *flag.FlagSet) *bench.Shape {
	s := bench.DefaultShape()
	fs.IntVar(&s.Accounts, "accounts", s.Accounts, "accounts")
	fs.IntVar(&s.WorkspacesPerAccount, "workspaces", s.WorkspacesPerAccount, "workspaces per account")
	fs.IntVar(&s.CallTypesPerSpace, "calltypes", s.CallTypesPerSpace, "call types per workspace")
	fs.IntVar(&s.CallsPerType, "calls", s.CallsPerType, "calls per call type")
	fs.IntVar(&s.Users, "users", s.Users, "users")
	fs.IntVar(&s.Grants, "grants", s.Grants, "grants")
	fs.IntVar(&s.Blocks, "blocks", s.Blocks, "blocks")
	fs.Uint64Var(&s.Seed, "seed", s.Seed, "seed of the generator")
	return &s
}

func generate(s bench.Shape) (bench.Platform, error) {
	msg, err := policy.Load("default")
	if err != nil {
		return bench.Platform{}, err
	}
	return bench.Generate(s, server.FromPolicy(msg)), nil
}

func benchPopulate(args []string) error {
	fs := flag.NewFlagSet("bench populate", flag.ContinueOnError)
	data := fs.String("data", envOr("USHER_DATA", "data/usher.db"), "data file to create (must not exist)")
	shape := shapeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := os.Stat(*data); err == nil {
		return fmt.Errorf("%s exists; populate writes a new data file", *data)
	}
	start := time.Now()
	p, err := generate(*shape)
	if err != nil {
		return err
	}
	generated := time.Since(start)
	store, err := bolt.Open(*data, bolt.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := store.Import(p.Snapshot, "usher bench populate"); err != nil {
		return err
	}
	fmt.Printf("populated %s: %d resources, %d grants, %d blocks, %d roles in %s (generating took %s)\n",
		*data, len(p.Snapshot.Resources), len(p.Snapshot.Grants), len(p.Snapshot.Blocks), len(p.Snapshot.Roles),
		time.Since(start).Round(time.Millisecond), generated.Round(time.Millisecond))
	return nil
}

// benchConn dials a loopback server; the load tools never aim elsewhere.
func benchConn(addr string) (*grpc.ClientConn, error) {
	if !isLoopback(addr) {
		return nil, fmt.Errorf("--addr %s: the load tools only target loopback addresses", addr)
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func benchCheck(args []string) error {
	fs := flag.NewFlagSet("bench check", flag.ContinueOnError)
	addr := fs.String("addr", envOr("USHER_ADDR", "127.0.0.1:7070"), "server address (loopback)")
	concurrency := fs.Int("concurrency", 32, "calls in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long each phase runs")
	writes := fs.Int("writes", 0, "grants per second to make during the Check phase")
	shape := shapeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	conn, err := benchConn(*addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	p, err := generate(*shape)
	if err != nil {
		return err
	}
	idx, err := authz.NewIndex(p.Snapshot)
	if err != nil {
		return err
	}
	queries := bench.Queries(p, idx, 30_000, shape.Seed)
	client := usherv1.NewAuthorizationServiceClient(conn)
	health := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	// Warm the connection and the server up before measuring.
	bench.ClosedLoop(ctx, "warm-up", *concurrency, time.Second, func(ctx context.Context, w, seq int) error {
		_, err := client.Check(ctx, checkRequest(queries[(seq*(*concurrency)+w)%len(queries)]))
		return err
	})

	wrong := make([]int, *concurrency)
	writeCtx, stopWrites := context.WithCancel(ctx)
	writesDone := make(chan bench.Stats, 1)
	go func() {
		writesDone <- bench.Paced(writeCtx, "grant (background)", *writes, grantCall(conn, "bench-bg"))
	}()
	checks := bench.ClosedLoop(ctx, "check", *concurrency, *duration, func(ctx context.Context, w, seq int) error {
		q := queries[(seq*(*concurrency)+w)%len(queries)]
		resp, err := client.Check(ctx, checkRequest(q))
		if err == nil && resp.GetDecision().GetAllowed() != q.Allowed && *writes == 0 {
			wrong[w]++
		}
		return err
	})
	stopWrites()
	background := <-writesDone
	healths := bench.ClosedLoop(ctx, "health", *concurrency, *duration, func(ctx context.Context, w, seq int) error {
		_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	})
	mismatches := 0
	for _, n := range wrong {
		mismatches += n
	}
	fmt.Printf("%d queries over %d resources and %d grants; concurrency %d, %s per phase\n",
		len(queries), len(p.Snapshot.Resources), len(p.Snapshot.Grants), *concurrency, *duration)
	printStats(checks, healths)
	if *writes > 0 {
		printStats(background)
	}
	fmt.Printf("check/health: throughput %.2f, p50 %.2f, p99 %.2f, p99.9 %.2f\n",
		checks.RPS()/healths.RPS(), ratio(checks, healths, 0.5), ratio(checks, healths, 0.99), ratio(checks, healths, 0.999))
	if mismatches > 0 {
		return fmt.Errorf("%d checks answered differently from the platform's index", mismatches)
	}
	return nil
}

func checkRequest(q bench.Query) *usherv1.CheckRequest {
	return &usherv1.CheckRequest{Subject: q.Subject, Permission: q.Permission, Resource: q.Resource}
}

// grantCall returns a call that grants a new subject the user role on root
// each time.
func grantCall(conn *grpc.ClientConn, prefix string) func(ctx context.Context, seq int) error {
	admin := usherv1.NewAdminServiceClient(conn)
	run := time.Now().UnixNano()
	return func(ctx context.Context, seq int) error {
		_, err := admin.Grant(ctx, &usherv1.GrantRequest{
			Subject: fmt.Sprintf("user:%s-%d-%d", prefix, run, seq), Role: "user", Resource: "root",
		})
		return err
	}
}

func benchGrant(args []string) error {
	fs := flag.NewFlagSet("bench grant", flag.ContinueOnError)
	addr := fs.String("addr", envOr("USHER_ADDR", "127.0.0.1:7070"), "server address (loopback)")
	writers := fs.Int("writers", 32, "concurrent writers")
	duration := fs.Duration("duration", 10*time.Second, "how long to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conn, err := benchConn(*addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	calls := make([]func(context.Context, int) error, *writers)
	for w := range calls {
		calls[w] = grantCall(conn, fmt.Sprintf("bench-w%d", w))
	}
	grants := bench.ClosedLoop(context.Background(), "grant", *writers, *duration, func(ctx context.Context, w, seq int) error {
		return calls[w](ctx, seq)
	})
	fmt.Printf("%d writers, %s; every grant acknowledged after its commit\n", *writers, *duration)
	printStats(grants)
	if grants.Errors > 0 {
		return fmt.Errorf("%d grants failed", grants.Errors)
	}
	return nil
}

func printStats(all ...bench.Stats) {
	fmt.Printf("%-20s %9s %9s %9s %9s %9s %9s %7s\n", "", "calls", "rps", "p50", "p90", "p99", "p99.9", "errors")
	for _, s := range all {
		fmt.Printf("%-20s %9d %9.0f %9s %9s %9s %9s %7d\n", s.Name, s.Calls, s.RPS(),
			round(s.Percentile(0.5)), round(s.Percentile(0.9)), round(s.Percentile(0.99)), round(s.Percentile(0.999)), s.Errors)
	}
	for _, s := range all {
		if s.FirstError != nil {
			fmt.Printf("%s: first error: %v\n", s.Name, s.FirstError)
		}
	}
}

func round(d time.Duration) time.Duration { return d.Round(time.Microsecond) }

func ratio(a, b bench.Stats, q float64) float64 {
	if b.Percentile(q) == 0 {
		return 0
	}
	return float64(a.Percentile(q)) / float64(b.Percentile(q))
}
