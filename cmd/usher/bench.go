package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/usher-authz/usher/bench"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

const benchUsage = `usage: usher bench <command> [flags]

commands:
  populate         write a synthetic platform straight into a new data file
  floor            serve grpc.health.v1 only, as a bare gRPC server: the floor the load commands compare with
  check            load a running server's Check, interleaved with the floor (and usher's own health check)
  listpermissions  the same with ListPermissions
  checkbatch       the same with CheckBatch, 100 checks a call
  join             the same with AdmissionService.Join, admitted joins that carry a LiveKit token
  grant            measure durable Grant throughput and latency with concurrent writers
`

func benchCmd(args []string) error {
	if len(args) == 0 {
		return errors.New(benchUsage)
	}
	switch args[0] {
	case "populate":
		return benchPopulate(args[1:])
	case "floor":
		return benchFloor(args[1:])
	case "check", "listpermissions", "checkbatch", "join":
		return benchLoad(args[0], args[1:])
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
	grants := bench.ClosedLoop(context.Background(), "grant", *writers, *duration, func(ctx context.Context, w, seq int) (string, error) {
		return "", calls[w](ctx, seq)
	})
	fmt.Printf("%d writers, %s; every grant acknowledged after its commit\n", *writers, *duration)
	run := bench.Run{Concurrency: *writers, Phases: []bench.Phase{bench.PhaseOf(grants, "usher", bench.Stats{})}}
	run.Print(os.Stdout)
	if grants.Errors > 0 {
		return fmt.Errorf("%d grants failed", grants.Errors)
	}
	return nil
}

// benchFloor serves the floor until it is told to stop. It prints its
// address first, so that whoever started it on port 0 can read it.
func benchFloor(args []string) error {
	fs := flag.NewFlagSet("bench floor", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:7172", "address to listen on (loopback)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !isLoopback(*addr) {
		return fmt.Errorf("--addr %s: the floor listens on loopback only", *addr)
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := bench.Floor()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	fmt.Printf("%s %s\n", floorBanner, lis.Addr())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return err
	case <-stop:
		srv.Stop()
		return nil
	}
}

// floorBanner starts the line the floor prints, followed by its address.
const floorBanner = "usher bench floor: serving grpc.health.v1 on"
