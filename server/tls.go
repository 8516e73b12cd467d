package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// TLSFiles names the PEM files of a server's TLS: its certificate (chain) and
// key, and optionally the CA whose client certificates identify callers.
type TLSFiles struct {
	Cert, Key string
	ClientCA  string // empty: client certificates are not requested
}

// NewTLSConfig returns a server TLS configuration that reads files again when
// their modification time or size changes, checked at each handshake, so
// that a renewed certificate or CA is used by new connections without a
// restart. A reading that fails keeps the previous certificate or CA and is
// logged. With a client CA, client certificates are requested and verified
// but not required, so that callers with a bearer token connect without one.
func NewTLSConfig(files TLSFiles, logger *slog.Logger) (*tls.Config, error) {
	if files.Cert == "" || files.Key == "" {
		return nil, errors.New("TLS needs both a certificate and a key file")
	}
	r := &tlsFiles{files: files, logger: logger}
	if _, _, err := r.current(); err != nil {
		return nil, err
	}
	clientAuth := tls.NoClientCert
	if files.ClientCA != "" {
		clientAuth = tls.VerifyClientCertIfGiven
	}
	getCertificate := func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, _, err := r.current()
		return cert, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     clientAuth,
		GetCertificate: getCertificate,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			_, pool, err := r.current()
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion:     tls.VersionTLS12,
				NextProtos:     []string{"h2"}, // gRPC needs ALPN h2
				ClientAuth:     clientAuth,
				ClientCAs:      pool,
				GetCertificate: getCertificate,
			}, nil
		}}, nil
}

// tlsFiles caches what the files held when last read.
type tlsFiles struct {
	files  TLSFiles
	logger *slog.Logger

	mu          sync.Mutex
	certStamp   string
	caStamp     string
	certificate *tls.Certificate
	clientCAs   *x509.CertPool
}

// current returns the certificate and client CA pool, reading the files again
// first if they changed.
func (r *tlsFiles) current() (*tls.Certificate, *x509.CertPool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	loadCert := func() (*tls.Certificate, error) {
		cert, err := tls.LoadX509KeyPair(r.files.Cert, r.files.Key)
		return &cert, err
	}
	if err := reread(r.logger, "TLS certificate", &r.certStamp, &r.certificate, loadCert, r.files.Cert, r.files.Key); err != nil {
		return nil, nil, err
	}
	if r.files.ClientCA == "" {
		return r.certificate, nil, nil
	}
	loadCA := func() (*x509.CertPool, error) { return loadCertPool(r.files.ClientCA) }
	if err := reread(r.logger, "TLS client CA", &r.caStamp, &r.clientCAs, loadCA, r.files.ClientCA); err != nil {
		return nil, nil, err
	}
	return r.certificate, r.clientCAs, nil
}

// reread replaces *value with load's result when files changed since *stamp.
// A failed load keeps the previous value and is logged; with no previous
// value it is an error. The stamp is kept even on failure: a certificate and
// its key are rarely replaced at the same instant, and the next change of
// either file is read again.
func reread[T any](logger *slog.Logger, what string, stamp *string, value **T, load func() (*T, error), files ...string) error {
	now, err := stampFiles(files...)
	if err != nil {
		now = "unreadable: " + err.Error()
	}
	if now == *stamp && *value != nil {
		return nil
	}
	*stamp = now
	v, err := load()
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

// loadCertPool reads a PEM file of one or more CA certificates.
func loadCertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}
