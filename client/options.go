package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Option configures New.
type Option func(*options)

type options struct {
	token, tokenFile       string
	tokenSet, tokenFileSet bool
	caFile, certFile, key  string
	tlsFiles               bool
	tlsConfig              *tls.Config
	insecure               bool
	dial                   []grpc.DialOption
}

// WithToken authenticates every call with "authorization: bearer <token>",
// the token `usher token` printed for this caller.
func WithToken(token string) Option {
	return func(o *options) { o.token, o.tokenSet = token, true }
}

// WithTokenFile authenticates every call with the token in file (its
// surrounding white space trimmed), read at New and again when the copy
// in memory is older than TokenFileRefresh, so that a rotated token (a
// mounted Kubernetes secret, say) is picked up without a restart. A file
// that cannot be read later keeps the previous token in use.
func WithTokenFile(file string) Option {
	return func(o *options) { o.tokenFile, o.tokenFileSet = file, true }
}

// WithTLS secures the connection with TLS. caFile is the PEM bundle of the
// CAs the server's certificate must chain to; empty, the system's roots.
// certFile and keyFile, when given, are the PEM client certificate and key
// that identify the caller (mutual TLS); they are read at each handshake
// and loaded again when they changed, so a renewed certificate is used by
// the next connection, and a pair that fails to load keeps the previous
// one.
func WithTLS(caFile, certFile, keyFile string) Option {
	return func(o *options) { o.caFile, o.certFile, o.key, o.tlsFiles = caFile, certFile, keyFile, true }
}

// WithTLSConfig secures the connection with TLS as cfg says, for what
// WithTLS does not cover (a server name other than the target's host, a
// certificate from a secrets manager). A nil cfg is TLS with Go's
// defaults: the system's roots, no client certificate.
func WithTLSConfig(cfg *tls.Config) Option {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	return func(o *options) { o.tlsConfig = cfg.Clone() }
}

// WithInsecure sends calls in plaintext to any address, bearer token
// included: for networks that are encrypted otherwise, such as a service
// mesh. Without it, plaintext is allowed only to loopback addresses and
// Unix sockets.
func WithInsecure() Option {
	return func(o *options) { o.insecure = true }
}

// WithDialOptions adds gRPC dial options after the client's own, which
// they override: interceptors, a stats handler for OpenTelemetry, other
// keepalive parameters. Set the transport with WithTLS, WithTLSConfig or
// WithInsecure rather than grpc.WithTransportCredentials, so that the
// check on plaintext applies.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// dialOptions are the gRPC dial options for target, or why the options
// do not go together.
func (o *options) dialOptions(target string) ([]grpc.DialOption, error) {
	creds, err := o.transport(target)
	if err != nil {
		return nil, err
	}
	dial := append(defaultDialOptions(), grpc.WithTransportCredentials(creds))
	switch {
	case o.tokenSet && o.tokenFileSet:
		return nil, errors.New("usher client: WithToken and WithTokenFile both given: give one")
	case o.tokenSet:
		t, err := newStaticToken(o.token)
		if err != nil {
			return nil, err
		}
		dial = append(dial, grpc.WithPerRPCCredentials(t))
	case o.tokenFileSet:
		t, err := newTokenFile(o.tokenFile)
		if err != nil {
			return nil, err
		}
		dial = append(dial, grpc.WithPerRPCCredentials(t))
	}
	return append(dial, o.dial...), nil
}

// transport is TLS when asked for, else plaintext where that is allowed.
func (o *options) transport(target string) (credentials.TransportCredentials, error) {
	switch {
	case o.tlsFiles && o.tlsConfig != nil:
		return nil, errors.New("usher client: WithTLS and WithTLSConfig both given: give one")
	case (o.tlsFiles || o.tlsConfig != nil) && o.insecure:
		return nil, errors.New("usher client: WithInsecure given with TLS: give one")
	case o.tlsConfig != nil:
		return credentials.NewTLS(o.tlsConfig), nil
	case o.tlsFiles:
		cfg, err := o.tlsFromFiles()
		if err != nil {
			return nil, err
		}
		return credentials.NewTLS(cfg), nil
	case o.insecure || IsLoopback(target):
		return insecure.NewCredentials(), nil
	}
	return nil, fmt.Errorf("usher client: %s is not a loopback address: give WithTLS or WithTLSConfig, "+
		"or WithInsecure if the network is encrypted otherwise (calls, and any bearer token, would cross it in plaintext)", target)
}

// tlsFromFiles is the TLS configuration WithTLS describes.
func (o *options) tlsFromFiles() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("usher client: TLS CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("usher client: TLS CA %s: no PEM certificate in it", o.caFile)
		}
	}
	switch {
	case o.certFile == "" && o.key == "":
	case o.certFile == "" || o.key == "":
		return nil, fmt.Errorf("usher client: TLS client certificate %q and key %q: give both or neither", o.certFile, o.key)
	default:
		pair := &certFiles{cert: o.certFile, key: o.key}
		if _, err := pair.load(); err != nil {
			return nil, fmt.Errorf("usher client: TLS client certificate: %w", err)
		}
		cfg.GetClientCertificate = pair.get
	}
	return cfg, nil
}

// IsLoopback says whether target reaches a server on this machine: a Unix
// socket, localhost or a loopback IP, with or without a resolver scheme.
// New sends plaintext only to such a target unless WithInsecure.
func IsLoopback(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	hostport := target
	if strings.Contains(target, "://") {
		u, err := url.Parse(target)
		if err != nil {
			return false
		}
		hostport = strings.TrimPrefix(u.Path, "/")
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport // no port: gRPC adds 443
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
