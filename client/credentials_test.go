package client

import (
	"context"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/usher-authz/usher/internal/testpki"
)

func TestATokenFileIsReadAgainOnceItsCopyIsOld(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("first-token\n")
	tf, err := newTokenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tf.now = func() time.Time { return now }
	sends := func(want string) {
		t.Helper()
		md, err := tf.GetRequestMetadata(context.Background())
		if err != nil || md["authorization"] != "bearer "+want {
			t.Fatalf("metadata %v, %v; want the bearer %s", md, err, want)
		}
	}
	sends("first-token")

	write("second-token")
	sends("first-token") // not yet read again
	now = now.Add(TokenFileRefresh)
	sends("second-token")

	// A file being replaced, gone or empty for a moment keeps the token
	// that worked.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	now = now.Add(TokenFileRefresh)
	sends("second-token")
	write("")
	now = now.Add(TokenFileRefresh)
	sends("second-token")
	write("third-token")
	now = now.Add(TokenFileRefresh)
	sends("third-token")
}

func TestAClientCertificateIsLoadedAgainWhenItsFilesChange(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test CA")
	issue := func(cn string) testpki.Pair { return ca.Client(t, pkix.Name{CommonName: cn}) }
	certFile, keyFile := issue("first").Write(t, dir, "client")
	f := &certFiles{cert: certFile, key: keyFile}
	presents := func(want string) {
		t.Helper()
		pair, err := f.get(nil)
		if err != nil || pair.Leaf == nil || pair.Leaf.Subject.CommonName != want {
			t.Fatalf("presents %v, %v; want %s", pair, err, want)
		}
	}
	presents("first")

	issue("second").Write(t, dir, "client")
	presents("second")

	// A certificate written before its key does not load: the previous
	// pair stays in use until the key follows.
	third := issue("third")
	testpki.WriteFile(t, certFile, third.CertPEM)
	presents("second")
	testpki.WriteFile(t, keyFile, third.KeyPEM)
	presents("third")
}
