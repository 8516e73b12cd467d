package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// TLSFiles names the PEM files of a server's TLS: its certificate (chain) and
// key, and optionally the CA whose client certificates identify callers.
type TLSFiles struct {
	Cert, Key string
	ClientCA  string // empty: client certificates are not requested
}

// NewTLSConfig returns a server TLS configuration that reads its files at
// each handshake and loads them again when their contents changed, so that
// a renewed certificate or CA is used by new connections without a
// restart. A reading that fails keeps the previous certificate or CA and is
// logged. With a client CA, client certificates are requested and verified
// but not required, so that callers with a bearer token connect without one.
func NewTLSConfig(files TLSFiles, logger *slog.Logger, opts ...TLSOption) (*tls.Config, error) {
	if files.Cert == "" || files.Key == "" {
		return nil, errors.New("TLS needs both a certificate and a key file")
	}
	r := &tlsFiles{files: files, logger: logger}
	for _, o := range opts {
		o(r)
	}
	if _, _, err := r.current(); err != nil {
		return nil, err
	}
	clientAuth := tls.NoClientCert
	if files.ClientCA != "" {
		clientAuth = tls.VerifyClientCertIfGiven
	}
	// The files are read once per handshake, here, and the certificate
	// and CA pool returned go together.
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: clientAuth,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool, err := r.current()
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   []string{"h2"}, // gRPC needs ALPN h2
				ClientAuth:   clientAuth,
				ClientCAs:    pool,
				Certificates: []tls.Certificate{*cert},
			}, nil
		}}, nil
}

// TLSOption configures NewTLSConfig.
type TLSOption func(*tlsFiles)

// WithCallersOfClientCA makes a handshake that finds the client CA file
// changed have src, made WithClientCAFile of the same file, read it again
// before the handshake ends: a certificate of a CA just put in the file
// then identifies its caller on the connection it verified, rather than
// from src's next poll.
func WithCallersOfClientCA(src *CallerSource) TLSOption {
	return func(r *tlsFiles) { r.caChanged = func() { _, _ = src.reload(false) } }
}

// tlsFiles caches what the files held when last read.
type tlsFiles struct {
	files     TLSFiles
	logger    *slog.Logger
	caChanged func() // or nil

	mu          sync.Mutex
	certDigest  string
	caDigest    string
	certificate *tls.Certificate
	clientCAs   *x509.CertPool
}

// current returns the certificate and client CA pool, loading them again
// first if the files' contents changed.
func (r *tlsFiles) current() (*tls.Certificate, *x509.CertPool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	loadCert := func(pem [][]byte) (*tls.Certificate, error) {
		cert, err := tls.X509KeyPair(pem[0], pem[1])
		return &cert, err
	}
	if err := reread(r.logger, "TLS certificate", &r.certDigest, &r.certificate, loadCert, r.files.Cert, r.files.Key); err != nil {
		return nil, nil, err
	}
	if r.files.ClientCA == "" {
		return r.certificate, nil, nil
	}
	loadCA := func(pem [][]byte) (*x509.CertPool, error) { return certPool(r.files.ClientCA, pem[0]) }
	was := r.caDigest
	if err := reread(r.logger, "TLS client CA", &r.caDigest, &r.clientCAs, loadCA, r.files.ClientCA); err != nil {
		return nil, nil, err
	}
	if r.caDigest != was && was != "" && r.caChanged != nil {
		r.caChanged()
	}
	return r.certificate, r.clientCAs, nil
}

// reread replaces *value with what load makes of files' contents when they
// changed since *digest. A failed load keeps the previous value and is
// logged; with no previous value it is an error. The digest is kept even
// on failure: a certificate and its key are rarely replaced at the same
// instant, and the next change of either file is loaded again.
func reread[T any](logger *slog.Logger, what string, digest *string, value **T, load func([][]byte) (*T, error), files ...string) error {
	contents, now, err := readFiles(files...)
	if now == *digest && *value != nil {
		return nil
	}
	*digest = now
	var v *T
	if err == nil {
		v, err = load(contents)
	}
	switch {
	case err == nil:
		if *value != nil {
			logger.Info(what+" reloaded", "files", files)
		}
		*value = v
	case *value == nil:
		return fmt.Errorf("%s: %w", what, err)
	default:
		logger.Error(what+" not reloaded; the previous one stays in use", "files", files, "err", err)
	}
	return nil
}

// certPool parses the PEM of one or more CA certificates read from file.
func certPool(file string, pem []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}
