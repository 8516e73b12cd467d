package etcd_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/usher-authz/usher/internal/etcdtest"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/etcd"
	"github.com/usher-authz/usher/storage/storagetest"
)

// TestStore runs the conformance suite against a three-member etcd cluster,
// each case under a prefix of its own.
func TestStore(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli := c.Client(t)
	storagetest.Run(t, func(t *testing.T, dir string) storage.Backend {
		sum := sha256.Sum256([]byte(dir))
		return etcd.New(cli, etcd.Options{Prefix: "/test/" + hex.EncodeToString(sum[:8]) + "/", MaxTxnOps: etcdtest.MaxTxnOps})
	})
}

// A write may guard more keys than one transaction may read or compare: the
// store reads them in parts at one etcd revision and compares only the
// revision key, which every commit puts.
func TestManyGuardsInFewOperationsATransaction(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	storagetest.RunManyGuards(t, func(t *testing.T, dir string) storage.Backend {
		sum := sha256.Sum256([]byte(dir))
		return etcd.New(cli, etcd.Options{Prefix: "/guards/" + hex.EncodeToString(sum[:8]) + "/", MaxTxnOps: 8})
	})
}
