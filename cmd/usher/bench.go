package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/bench"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/media/livekit"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

func benchCommand() *cobra.Command {
	load := func(mode, short, long string) *cobra.Command {
		cmd := &cobra.Command{
			Use:   mode,
			Short: short,
			Long: long + `

Run it against a server started on a data file that 'usher bench populate'
wrote with the same shape flags; it refuses a server of another shape
before it measures anything.`,
			Example: "  usher bench " + mode + " --addr 127.0.0.1:7171 --duration 10s",
			Args:    argsExactly(),
		}
		parsed := addLoadFlags(cmd.Flags(), mode)
		cmd.RunE = func(*cobra.Command, []string) error {
			f, err := parsed()
			if err != nil {
				return &usageError{err}
			}
			return benchLoad(mode, f)
		}
		return cmd
	}
	return group("bench", "Populate a synthetic platform and load a running server",
		`Bench measures a running server against a floor: a bare gRPC server that
serves only grpc.health.v1, run interleaved with Usher so that both meet the
same machine. The load tools aim at loopback addresses only.`,
		`  usher bench populate --data /tmp/bench/usher.db
  usher bench check --addr 127.0.0.1:7171 --duration 10s`,
		benchPopulateCommand(), benchFloorCommand(),
		load("check", "Load a running server's Check, interleaved with the floor (and usher's own health check)",
			"Check replays distinct Check queries, a third allowed by a grant on the call, a third inherited, a third denied."),
		load("listpermissions", "The same with ListPermissions", "Listpermissions replays ListPermissions over the same (subject, call) pairs."),
		load("checkbatch", "The same with CheckBatch, 100 checks a call", "Checkbatch replays CheckBatch calls of --batch checks each, and reports answers per second."),
		load("join", "The same with AdmissionService.Join, admitted joins that carry a LiveKit token",
			"Join replays joins the default policy admits; a join replaces the subject's session in that call."),
		load("lookup", "Check alone, beside lookups (LookupResources, LookupSubjects) paged to their end, and the lookups alone",
			`Lookup runs Check alone, Check beside a client that follows lookups page by
page to their end (LookupResources of the calls a user may join,
LookupSubjects of the users who may join a call, for the users and calls
with the largest answers and as many with typical ones), and the lookups
alone, and compares Check's p99 beside them with Check's alone.`),
		load("admin", "Check alone, and beside an administrator paging ListGrants and ListChanges and moving a workspace",
			`Admin runs Check alone, Check beside an administrator who pages through a
resource's grants (the crowd's, when populate was given --crowd), pages
through the change log with filters (populate --history makes it long) and
moves a workspace to another account and back, and the administrator alone;
it compares Check's p99 beside the administrator with Check's alone.`),
		benchGrantCommand(), benchInProcessCommand())
}

// shapeFlags defines the platform's size; populate and check must be given
// the same ones.
func shapeFlags(fs *pflag.FlagSet) *bench.Shape {
	s := bench.DefaultShape()
	fs.IntVar(&s.Accounts, "accounts", s.Accounts, "accounts")
	fs.IntVar(&s.WorkspacesPerAccount, "workspaces", s.WorkspacesPerAccount, "workspaces per account")
	fs.IntVar(&s.CallTypesPerSpace, "calltypes", s.CallTypesPerSpace, "call types per workspace")
	fs.IntVar(&s.CallsPerType, "calls", s.CallsPerType, "calls per call type")
	fs.IntVar(&s.Users, "users", s.Users, "users")
	fs.IntVar(&s.Grants, "grants", s.Grants, "grants")
	fs.IntVar(&s.Blocks, "blocks", s.Blocks, "blocks")
	fs.IntVar(&s.Crowd, "crowd", s.Crowd, "grants on one more call, "+bench.CrowdCall+", each to a subject of its own (the admin load pages through them)")
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

func benchPopulateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "populate",
		Short: "Write a synthetic platform straight into a new data file",
		Long: `Populate generates a platform of accounts, workspaces, call types, calls,
users, grants and blocks on the default policy, as the shape flags say, and
writes it straight into a new data file for 'usher serve'.`,
		Example: `  usher bench populate --data /tmp/bench/usher.db
  usher bench populate --data /tmp/bench/usher.db --grants 100000 --seed 7`,
		Args: argsExactly(),
	}
	fs := cmd.Flags()
	data := fs.String("data", envOr("USHER_DATA", "data/usher.db"), "data file to create (must not exist) (env USHER_DATA)")
	history := fs.Int("history", 0, "change sets to write after the platform, grants then their revokes, which leave it as it was: a long change log")
	shape := shapeFlags(fs)
	cmd.RunE = func(*cobra.Command, []string) error {
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
		if err := writeHistory(store, bench.History(p, *history, shape.Seed)); err != nil {
			return err
		}
		fmt.Printf("populated %s: %d resources, %d grants, %d blocks, %d roles, %d change sets of history in %s (generating took %s)\n",
			*data, len(p.Snapshot.Resources), len(p.Snapshot.Grants), len(p.Snapshot.Blocks), len(p.Snapshot.Roles), *history,
			time.Since(start).Round(time.Millisecond), generated.Round(time.Millisecond))
		return nil
	}
	return cmd
}

// writeHistory commits sets, a thousand to a transaction, each at a
// revision of its own.
func writeHistory(store *bolt.Store, sets []authz.ChangeSet) error {
	for at := 0; at < len(sets); at += 1000 {
		rev, err := store.Revision(context.Background())
		if err != nil {
			return err
		}
		var ws []authz.Write
		for _, cs := range sets[at:min(at+1000, len(sets))] {
			ws = append(ws, authz.Write{Planned: rev, Set: cs})
		}
		done, err := store.Commit(context.Background(), ws)
		if err != nil {
			return fmt.Errorf("writing the history: %w", err)
		}
		for _, c := range done {
			if c.Revision == 0 {
				return fmt.Errorf("writing the history: a change set conflicted on %s", c.Conflict)
			}
		}
	}
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

func benchGrantCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "grant",
		Short:   "Measure durable Grant throughput and latency with concurrent writers",
		Long:    "Grant makes grants of new subjects from --writers concurrent writers for --duration, each acknowledged after its commit, and reports their rate and latency.",
		Example: "  usher bench grant --addr 127.0.0.1:7171 --writers 32 --duration 10s",
		Args:    argsExactly(),
	}
	fs := cmd.Flags()
	addr := fs.String("addr", envOr("USHER_ADDR", "127.0.0.1:7070"), "server address (loopback) (env USHER_ADDR)")
	writers := fs.Int("writers", 32, "concurrent writers")
	duration := fs.Duration("duration", 10*time.Second, "how long to write")
	cmd.RunE = func(*cobra.Command, []string) error {
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
	return cmd
}

// benchFloor serves the floor until it is told to stop. It prints its
// address first, so that whoever started it on port 0 can read it.
func benchFloorCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "floor",
		Short: "Serve grpc.health.v1 and a Join that decides nothing, as a bare gRPC server: the floor the load commands compare with",
		Long: `Floor serves grpc.health.v1, with grpc-go's own health server: the floor
the load commands measure Usher against. It also answers every
usher.v1.AdmissionService Join with the one answer Usher gives a
call-member of the default policy's calls, its LiveKit token signed once at
start: what gRPC alone costs to carry a Join and its answer. It prints its
address, and serves until SIGINT or SIGTERM. Without --floor, the load
commands start one of their own.`,
		Example: "  usher bench floor --addr 127.0.0.1:7172",
		Args:    argsExactly(),
	}
	fs := cmd.Flags()
	addr := fs.String("addr", "127.0.0.1:7172", "address to listen on (loopback)")
	cmd.RunE = func(*cobra.Command, []string) error {
		if !isLoopback(*addr) {
			return fmt.Errorf("--addr %s: the floor listens on loopback only", *addr)
		}
		lis, err := net.Listen("tcp", *addr)
		if err != nil {
			return err
		}
		answer, err := floorJoinAnswer()
		if err != nil {
			return err
		}
		srv := bench.Floor(answer)
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
	return cmd
}

// floorJoinAnswer is the answer the floor gives every Join: the one Usher
// gives a call-member of the default policy's calls, with a LiveKit token
// signed once, by a key of the floor's own.
func floorJoinAnswer() (*usherv1.JoinResponse, error) {
	msg, err := policy.Load("default")
	if err != nil {
		return nil, err
	}
	p := server.FromPolicy(msg)
	var rule *authz.Admission
	for i, a := range p.Admissions {
		if a.ResourceType == "call" && a.Media != nil {
			rule = &p.Admissions[i]
		}
	}
	i := slices.IndexFunc(p.Roles, func(r authz.Role) bool { return r.Name == floorRole })
	if rule == nil || i < 0 {
		return nil, fmt.Errorf("the default policy has no LiveKit mapping for calls, or no role %q", floorRole)
	}
	subject, call := floorSubject, floorCall
	caps := slices.Sorted(slices.Values(p.Roles[i].Permissions))
	grant := livekit.Mapping(*rule.Media).VideoGrant(call, caps)
	lease := rule.LeaseOf()
	key := livekit.APIKey{Key: "floor", Secret: strings.Repeat("f", livekit.MinSecretLen)}
	token, err := key.Signer().Sign(subject, grant, lease)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return server.JoinResponse(admission.Result{
		Outcome:      admission.Admitted,
		Reason:       subject + " joins " + call + ` by "` + rule.Join + `", held as "` + floorRole + `" on "` + call + `"`,
		Capabilities: caps, Session: strings.Repeat("0", 32), Expires: now.Add(lease), Lease: lease,
		Token: token, Grant: grant, Role: floorRole, Scope: call, Revision: 1,
	}), nil
}

// floorRole, floorSubject and floorCall are whose Join the floor's answer
// is: it answers every Join so, whoever asks.
const floorRole, floorSubject, floorCall = "call-member", "user:u1", "call:a1-w1-t1-c1"

// floorBanner starts the line the floor prints, followed by its address.
const floorBanner = "usher bench floor: serving grpc.health.v1 and Join on"
