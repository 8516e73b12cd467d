package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
)

// errDenied makes `usher check` exit non-zero on a denial, so scripts can
// branch on it.
var errDenied = fmt.Errorf("denied")

// rpc is a client subcommand: it turns its positional arguments into one call
// and returns the response to print.
type rpc func(ctx context.Context, conn *grpc.ClientConn, args []string) (proto.Message, error)

// runClient parses the shared client flags and nargs positional arguments,
// dials the server, makes the call and prints the response as JSON.
func runClient(name, argsUsage string, nargs int, args []string, call rpc) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: usher %s [flags] %s\n", name, argsUsage)
		fs.PrintDefaults()
	}
	addr := fs.String("addr", envOr("USHER_ADDR", "127.0.0.1:7070"), "server address (env USHER_ADDR)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of the call")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != nargs {
		fs.Usage()
		return fmt.Errorf("want %d arguments, got %d", nargs, fs.NArg())
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := call(ctx, conn, fs.Args())
	if resp != nil {
		printJSON(resp)
	}
	return err
}

// printJSON prints m indented; protojson's own indentation is deliberately
// unstable, so encoding/json lays it out.
func printJSON(m proto.Message) {
	raw, err := protojson.Marshal(m)
	if err != nil {
		fmt.Println(err)
		return
	}
	var out bytes.Buffer
	json.Indent(&out, raw, "", "  ")
	fmt.Println(out.String())
}

func check(args []string) error {
	return runClient("check", "SUBJECT PERMISSION RESOURCE", 3, args, func(ctx context.Context, conn *grpc.ClientConn, a []string) (proto.Message, error) {
		resp, err := usherv1.NewAuthorizationServiceClient(conn).Check(ctx, &usherv1.CheckRequest{Subject: a[0], Permission: a[1], Resource: a[2]})
		if err == nil && !resp.GetDecision().GetAllowed() {
			return resp, errDenied
		}
		return resp, err
	})
}

func grant(args []string) error {
	return runClient("grant", "SUBJECT ROLE RESOURCE", 3, args, func(ctx context.Context, conn *grpc.ClientConn, a []string) (proto.Message, error) {
		return usherv1.NewAdminServiceClient(conn).Grant(ctx, &usherv1.GrantRequest{Subject: a[0], Role: a[1], Resource: a[2]})
	})
}

func revoke(args []string) error {
	return runClient("revoke", "SUBJECT ROLE RESOURCE", 3, args, func(ctx context.Context, conn *grpc.ClientConn, a []string) (proto.Message, error) {
		return usherv1.NewAdminServiceClient(conn).Revoke(ctx, &usherv1.RevokeRequest{Subject: a[0], Role: a[1], Resource: a[2]})
	})
}

func apply(args []string) error {
	return runClient("apply", "POLICY_FILE", 1, args, func(ctx context.Context, conn *grpc.ClientConn, a []string) (proto.Message, error) {
		p, err := policy.Load(a[0])
		if err != nil {
			return nil, err
		}
		return usherv1.NewAdminServiceClient(conn).ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
	})
}

func export(args []string) error {
	return runClient("export", "", 0, args, func(ctx context.Context, conn *grpc.ClientConn, _ []string) (proto.Message, error) {
		resp, err := usherv1.NewAdminServiceClient(conn).ExportPolicy(ctx, &usherv1.ExportPolicyRequest{})
		if err != nil {
			return nil, err
		}
		return resp.GetPolicy(), nil
	})
}
