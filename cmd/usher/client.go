package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/client"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// clientFlags are the flags every client command takes: where the server
// is, how to authenticate, how long to wait and how to print the answer.
type clientFlags struct {
	addr      string
	timeout   time.Duration
	token     string
	tokenFile string
	// tokenFileFlag tells a --token-file given from one USHER_TOKEN_FILE
	// names.
	tokenFileFlag *pflag.Flag
	tls           tlsClient
	insecure      bool
	output        string
}

// addClientFlags defines the client flags on cmd; timeout is the default
// deadline of its call, 0 for none (a stream that follows until stopped).
func addClientFlags(cmd *cobra.Command, timeout time.Duration) *clientFlags {
	c := &clientFlags{}
	fs := cmd.Flags()
	fs.StringVarP(&c.output, "output", "o", "json", "print the answer in this `format`: json (protojson, for programs) or table (aligned, for people)")
	conn := pflag.NewFlagSet("connection", pflag.ContinueOnError)
	conn.StringVar(&c.addr, "addr", envOr("USHER_ADDR", "127.0.0.1:7070"), "server address (env USHER_ADDR)")
	conn.DurationVar(&c.timeout, "timeout", timeout, "deadline of the call (0: none)")
	// USHER_TOKEN is read when the command dials, not made the flag's
	// default: help shows a flag's default, and the token is a secret.
	conn.StringVar(&c.token, "token", "", "bearer token to authenticate with, from 'usher token'; every user of the machine sees a command line (ps): prefer --token-file or USHER_TOKEN")
	conn.StringVar(&c.tokenFile, "token-file", envOr("USHER_TOKEN_FILE", ""), "read the bearer token from this file, e.g. a mounted Secret, in place of --token (env USHER_TOKEN_FILE)")
	c.tokenFileFlag = conn.Lookup("token-file")
	conn.BoolVar(&c.tls.enabled, "tls", false, "use TLS, verifying the server against the system's roots (implied by the other --tls flags)")
	conn.StringVar(&c.tls.ca, "tls-ca", envOr("USHER_TLS_CA", ""), "use TLS, verifying the server against this PEM CA bundle (env USHER_TLS_CA)")
	conn.StringVar(&c.tls.cert, "tls-cert", envOr("USHER_CLIENT_CERT", ""), "use TLS and present this PEM client certificate (env USHER_CLIENT_CERT)")
	conn.StringVar(&c.tls.key, "tls-key", envOr("USHER_CLIENT_KEY", ""), "the PEM key of --tls-cert (env USHER_CLIENT_KEY)")
	conn.StringVar(&c.tls.serverName, "tls-server-name", "", "name to verify the server's certificate against, if not the host of --addr")
	conn.BoolVar(&c.insecure, "insecure", false, "call an --addr that is not loopback in plaintext, the token included: only where something else encrypts the network (a mesh)")
	conn.VisitAll(func(f *pflag.Flag) {
		f.Annotations = map[string][]string{flagGroupAnnotation: {"connection"}}
	})
	fs.AddFlagSet(conn)
	cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json", "table"}, cobra.ShellCompDirectiveNoFileComp))
	for _, name := range []string{"addr", "tls-server-name", "token"} {
		cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
	return c
}

// printer is how the answer is printed, as --output says.
func (c *clientFlags) printer(cmd *cobra.Command) (*printer, error) {
	switch c.output {
	case "json", "table":
		return &printer{w: cmd.OutOrStdout(), table: c.output == "table"}, nil
	}
	return nil, usagef("--output %q: want json or table", c.output)
}

// An rpc makes the calls of one command over conn and returns the answer
// to print, if any. It may return an answer and an error both: a denied
// check prints the decision and exits 3.
type rpc func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error)

// call dials the server, makes the command's calls within --timeout and
// prints the answer with table, or the generic table when table is nil.
func (c *clientFlags) call(cmd *cobra.Command, do rpc, table tableFunc) error {
	return c.session(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
		resp, err := do(ctx, conn)
		// A failed call answers a nil message: nothing is printed, rather
		// than an empty one.
		if resp != nil && resp.ProtoReflect().IsValid() {
			p.print(resp, table)
		}
		return err
	})
}

// session dials the server and runs do within --timeout, with the printer
// --output asks for.
func (c *clientFlags) session(cmd *cobra.Command, do func(ctx context.Context, conn *grpc.ClientConn, p *printer) error) error {
	p, err := c.printer(cmd)
	if err != nil {
		return err
	}
	if c.timeout < 0 {
		return usagef("--timeout %s: must not be negative (0: no deadline)", c.timeout)
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := c.context()
	defer cancel()
	return do(ctx, conn, p)
}

// stream is call for a command that prints as it receives: do prints each
// message with the printer it is given. A stream that --timeout ends has
// done what was asked of it.
func (c *clientFlags) stream(cmd *cobra.Command, do func(ctx context.Context, conn *grpc.ClientConn, p *printer) error) error {
	err := c.session(cmd, do)
	if c.timeout > 0 && status.Code(err) == codes.DeadlineExceeded {
		return nil
	}
	return err
}

func (c *clientFlags) context() (context.Context, context.CancelFunc) {
	if c.timeout <= 0 {
		return context.WithCancel(context.Background())
	}
	return context.WithTimeout(context.Background(), c.timeout)
}

// dial connects to --addr as client/ does (keepalives, retried reads,
// pages up to 64 MiB), with the TLS and bearer token the flags give.
// Plaintext goes to a loopback address, or anywhere with --insecure: a
// token never crosses a network in the clear by accident.
func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	cfg, err := c.tls.config()
	if err != nil {
		return nil, err
	}
	var opts []client.Option
	switch {
	case cfg != nil && c.insecure:
		return nil, usagef("--insecure with TLS: give one")
	case cfg != nil:
		opts = append(opts, client.WithTLSConfig(cfg))
	case c.insecure:
		opts = append(opts, client.WithInsecure())
	case !client.IsLoopback(c.addr):
		return nil, usagef("--addr %s is not a loopback address: give --tls or --tls-ca, or --insecure if something else encrypts the network (calls and the token would cross it in plaintext)", c.addr)
	}
	// A --token given beats the file USHER_TOKEN_FILE names, as a flag
	// beats the variable it defaults from; a --token-file given beats it.
	switch {
	case c.tokenFile != "" && (c.token == "" || c.tokenFileFlag.Changed):
		opts = append(opts, client.WithTokenFile(c.tokenFile))
	case c.token != "":
		opts = append(opts, client.WithToken(c.token))
	case os.Getenv("USHER_TOKEN") != "":
		opts = append(opts, client.WithToken(os.Getenv("USHER_TOKEN")))
	}
	cl, err := client.New(c.addr, opts...)
	if err != nil {
		return nil, err
	}
	return cl.Conn(), nil
}

// tlsClient is the TLS a client subcommand dials with.
type tlsClient struct {
	enabled                   bool
	ca, cert, key, serverName string
}

// config is the TLS configuration if any TLS flag is given, else nil for
// plaintext.
func (c tlsClient) config() (*tls.Config, error) {
	if !c.enabled && c.ca == "" && c.cert == "" && c.key == "" && c.serverName == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.serverName}
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", c.ca)
		}
	}
	if c.cert != "" || c.key != "" {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// export reads a running server's policy, every page at minRevision or
// later.
func export(ctx context.Context, conn *grpc.ClientConn, minRevision uint64) (proto.Message, error) {
	// Every page, merged into one policy: the first carries the catalog,
	// each the resources, roles, quotas and rules of its part of the tree.
	page := serverPages(ctx, admin(conn), minRevision)
	all := &usherv1.Policy{}
	for token := ""; ; {
		p, next, err := page(token)
		if err != nil {
			return nil, err
		}
		proto.Merge(all, p)
		if next == "" {
			return all, nil
		}
		token = next
	}
}
