package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
)

// clientFlags are the flags every client subcommand shares.
type clientFlags struct {
	fs      *flag.FlagSet
	addr    *string
	timeout *time.Duration
}

func newClientFlags(name, args string) *clientFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: usher %s [flags] %s\n", name, args)
		fs.PrintDefaults()
	}
	return &clientFlags{
		fs:      fs,
		addr:    fs.String("addr", envOr("USHER_ADDR", "127.0.0.1:7070"), "server address (env USHER_ADDR)"),
		timeout: fs.Duration("timeout", 10*time.Second, "deadline of the call"),
	}
}

// parse parses args and requires n positional arguments.
func (c *clientFlags) parse(args []string, n int) error {
	if err := c.fs.Parse(args); err != nil {
		return err
	}
	if c.fs.NArg() != n {
		c.fs.Usage()
		return fmt.Errorf("want %d arguments, got %d", n, c.fs.NArg())
	}
	return nil
}

// dial connects to the server and returns a context bounded by the timeout.
func (c *clientFlags) dial() (*grpc.ClientConn, context.Context, context.CancelFunc, error) {
	conn, err := grpc.NewClient(*c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *c.timeout)
	return conn, ctx, cancel, nil
}

func printJSON(m proto.Message) {
	fmt.Println(protojson.MarshalOptions{Multiline: true, EmitUnpopulated: false}.Format(m))
}

func check(args []string) error {
	c := newClientFlags("check", "SUBJECT PERMISSION RESOURCE")
	if err := c.parse(args, 3); err != nil {
		return err
	}
	conn, ctx, cancel, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	defer cancel()
	a := c.fs.Args()
	resp, err := usherv1.NewAuthorizationServiceClient(conn).Check(ctx, &usherv1.CheckRequest{Subject: a[0], Permission: a[1], Resource: a[2]})
	if err != nil {
		return err
	}
	printJSON(resp)
	if !resp.GetDecision().GetAllowed() {
		os.Exit(3)
	}
	return nil
}

func grant(args []string) error {
	c := newClientFlags("grant", "SUBJECT ROLE RESOURCE")
	if err := c.parse(args, 3); err != nil {
		return err
	}
	conn, ctx, cancel, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	defer cancel()
	a := c.fs.Args()
	resp, err := usherv1.NewAdminServiceClient(conn).Grant(ctx, &usherv1.GrantRequest{Subject: a[0], Role: a[1], Resource: a[2]})
	if err != nil {
		return err
	}
	printJSON(resp)
	return nil
}

func revoke(args []string) error {
	c := newClientFlags("revoke", "SUBJECT ROLE RESOURCE")
	if err := c.parse(args, 3); err != nil {
		return err
	}
	conn, ctx, cancel, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	defer cancel()
	a := c.fs.Args()
	resp, err := usherv1.NewAdminServiceClient(conn).Revoke(ctx, &usherv1.RevokeRequest{Subject: a[0], Role: a[1], Resource: a[2]})
	if err != nil {
		return err
	}
	printJSON(resp)
	return nil
}

func apply(args []string) error {
	c := newClientFlags("apply", "POLICY_FILE")
	if err := c.parse(args, 1); err != nil {
		return err
	}
	p, err := policy.Load(c.fs.Arg(0))
	if err != nil {
		return err
	}
	conn, ctx, cancel, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	defer cancel()
	resp, err := usherv1.NewAdminServiceClient(conn).ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
	if err != nil {
		return err
	}
	printJSON(resp)
	return nil
}

func export(args []string) error {
	c := newClientFlags("export", "")
	if err := c.parse(args, 0); err != nil {
		return err
	}
	conn, ctx, cancel, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	defer cancel()
	resp, err := usherv1.NewAdminServiceClient(conn).ExportPolicy(ctx, &usherv1.ExportPolicyRequest{})
	if err != nil {
		return err
	}
	printJSON(resp.GetPolicy())
	return nil
}
