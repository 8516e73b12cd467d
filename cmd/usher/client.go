package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
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
	return runClientWith(name, argsUsage, nargs, args, nil, call)
}

// runClientWith is runClient for a subcommand with flags of its own, which
// moreFlags defines.
func runClientWith(name, argsUsage string, nargs int, args []string, moreFlags func(*flag.FlagSet), call rpc) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	if moreFlags != nil {
		moreFlags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: usher %s [flags] %s\n", name, argsUsage)
		fs.PrintDefaults()
	}
	addr := fs.String("addr", envOr("USHER_ADDR", "127.0.0.1:7070"), "server address (env USHER_ADDR)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of the call")
	bearer := fs.String("token", envOr("USHER_TOKEN", ""), "bearer token to authenticate with, from 'usher token' (env USHER_TOKEN)")
	var tc tlsClient
	fs.BoolVar(&tc.enabled, "tls", false, "use TLS, verifying the server against the system's roots (implied by the other --tls flags)")
	fs.StringVar(&tc.ca, "tls-ca", envOr("USHER_TLS_CA", ""), "use TLS, verifying the server against this PEM CA bundle (env USHER_TLS_CA)")
	fs.StringVar(&tc.cert, "tls-cert", envOr("USHER_CLIENT_CERT", ""), "use TLS and present this PEM client certificate (env USHER_CLIENT_CERT)")
	fs.StringVar(&tc.key, "tls-key", envOr("USHER_CLIENT_KEY", ""), "the PEM key of --tls-cert (env USHER_CLIENT_KEY)")
	fs.StringVar(&tc.serverName, "tls-server-name", "", "name to verify the server's certificate against, if not the host of --addr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != nargs {
		fs.Usage()
		return fmt.Errorf("want %d arguments, got %d", nargs, fs.NArg())
	}
	creds, err := tc.credentials()
	if err != nil {
		return err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if *bearer != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(*bearer)))
	}
	conn, err := grpc.NewClient(*addr, opts...)
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

// tlsClient is the TLS a client subcommand dials with.
type tlsClient struct {
	enabled                   bool
	ca, cert, key, serverName string
}

// credentials are TLS if any TLS flag is given, else plaintext.
func (c tlsClient) credentials() (credentials.TransportCredentials, error) {
	if !c.enabled && c.ca == "" && c.cert == "" && c.key == "" && c.serverName == "" {
		return insecure.NewCredentials(), nil
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
	return credentials.NewTLS(cfg), nil
}

// bearerToken sends "authorization: bearer <token>" with every call. It is
// sent over plaintext too, for a server on loopback or behind a proxy that
// terminates TLS.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

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
	return runClient("policy apply", "POLICY_FILE", 1, args, func(ctx context.Context, conn *grpc.ClientConn, a []string) (proto.Message, error) {
		p, err := policy.Load(a[0])
		if err != nil {
			return nil, err
		}
		resp, err := usherv1.NewAdminServiceClient(conn).ApplyPolicy(ctx, &usherv1.ApplyPolicyRequest{Policy: p})
		if err != nil {
			// The server names the field's path; say which file it is in.
			return nil, fmt.Errorf("%s: %s", a[0], strings.TrimPrefix(status.Convert(err).Message(), "policy."))
		}
		return resp, nil
	})
}

func export(args []string) error {
	return runClient("policy export", "", 0, args, func(ctx context.Context, conn *grpc.ClientConn, _ []string) (proto.Message, error) {
		// Every page, merged into one policy: the first carries the catalog,
		// each the resources, roles, quotas and rules of its part of the tree.
		admin := usherv1.NewAdminServiceClient(conn)
		policy := &usherv1.Policy{}
		req := &usherv1.ExportPolicyRequest{PageSize: 1000}
		for {
			resp, err := admin.ExportPolicy(ctx, req)
			if err != nil {
				return nil, err
			}
			proto.Merge(policy, resp.GetPolicy())
			if resp.GetNextPageToken() == "" {
				return policy, nil
			}
			req.PageToken = resp.GetNextPageToken()
		}
	})
}
