package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usher-authz/usher/internal/testpki"
)

// TestHealthCommand runs `usher health` as the Kubernetes manifests' exec
// probes do: against a server on TLS with a callers file, with no
// credentials, verifying the server's certificate under the name it carries.
func TestHealthCommand(t *testing.T) {
	bin, dir := buildUsher(t)
	_, hash := tokenOf(t, bin)
	ca := testpki.NewCA(t, "acme CA")
	certFile, keyFile := ca.Server(t, "usher").Write(t, dir, "server")
	caFile := filepath.Join(dir, "ca.crt")
	testpki.WriteFile(t, caFile, ca.PEM())
	callers := filepath.Join(dir, "callers.yaml")
	testpki.WriteFile(t, callers, []byte("callers:\n  - {name: backend, kind: admin, token_sha256: "+hash+"}\n"))
	addr, _ := startServe(t, bin, "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "usher.db"),
		"--callers", callers, "--tls-cert", certFile, "--tls-key", keyFile)

	for _, tc := range []struct {
		name    string
		args    []string
		serving bool
		says    string
	}{
		{"the server as a whole is serving", []string{"--tls-ca", caFile}, true, `"status": "SERVING"`},
		{"the service readiness asks about is serving", []string{"--tls-ca", caFile, "--service", "usher.v1.AuthorizationService"}, true, `"status": "SERVING"`},
		{"the certificate is verified under the name given", []string{"--tls-ca", caFile, "--tls-server-name", "localhost"}, true, `"status": "SERVING"`},
		{"a service the server does not have fails", []string{"--tls-ca", caFile, "--service", "usher.v1.Nothing"}, false, "NotFound"},
		{"a certificate under another name fails", []string{"--tls-ca", caFile, "--tls-server-name", "usher.elsewhere"}, false, "certificate"},
		{"plaintext against TLS fails", nil, false, "Unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(bin, append([]string{"health", "--addr", addr, "--timeout", "5s"}, tc.args...)...).CombinedOutput()
			if (err == nil) != tc.serving || !strings.Contains(string(out), tc.says) {
				t.Errorf("usher health %s: err %v, output\n%s\nwant success %v and %q", strings.Join(tc.args, " "), err, out, tc.serving, tc.says)
			}
		})
	}
}
