package storage_test

import (
	"testing"

	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/storagetest"
)

// The in-memory backend passes the same conformance suite as the bbolt one;
// a reopen of the same directory is a new handle on the same data.
func TestMemoryConformance(t *testing.T) {
	opened := map[string]*storage.Memory{}
	storagetest.Run(t, func(t *testing.T, dir string) storage.Backend {
		if m := opened[dir]; m != nil {
			return m.Reopen()
		}
		opened[dir] = storage.NewMemory()
		return opened[dir]
	})
}
