package bolt_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
	"github.com/usher-authz/usher/storage/storagetest"
)

func TestStore(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, dir string) storage.Backend {
		return openStore(t, filepath.Join(dir, "usher.db"))
	})
}

func openStore(t testing.TB, path string) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// commit commits one change set that guards nothing.
func commit(b storage.Backend, cs authz.ChangeSet) (authz.Revision, error) {
	res, err := b.Commit(context.Background(), []authz.Write{{Set: cs}})
	if err != nil {
		return 0, err
	}
	return res[0].Revision, nil
}

// snapshot loads everything b holds.
func snapshot(b storage.Backend) (authz.Snapshot, error) {
	var c authz.Collector
	rev, err := b.Load(context.Background(), &c)
	c.Snapshot.Revision = rev
	return c.Snapshot, err
}
