package etcdtest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// binEnv names a variable that overrides where the etcd binary is, for a
// test run outside the module.
const binEnv = "USHER_ETCD_BIN"

// binary returns the etcd binary to run: $USHER_ETCD_BIN, or bin/etcd at the
// root of the module the test runs in. A missing binary fails the test rather
// than skipping it, so that a machine without it cannot pass the etcd tests
// by running none of them.
func binary(t testing.TB) string {
	t.Helper()
	p := os.Getenv(binEnv)
	if p == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatalf("etcdtest: no etcd binary: %v: run `make tools` at the module root, or set %s to an etcd binary", err, binEnv)
		}
		p = filepath.Join(root, "bin", "etcd")
	}
	if err := executable(p); err != nil {
		t.Fatalf("etcdtest: no etcd binary: %v: run `make tools` to build bin/etcd, or set %s to an etcd binary", err, binEnv)
	}
	return p
}

// moduleRoot is the nearest directory at or above the working directory, the
// test's package directory under go test, that holds a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return &os.PathError{Op: "exec", Path: p, Err: errors.New("not an executable file")}
	}
	return nil
}
