package memory_test

import (
	"sync"
	"testing"

	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/memory"
	"github.com/usher-authz/usher/storage/storagetest"
)

func TestMemoryConformance(t *testing.T) {
	var (
		mu     sync.Mutex
		stores = map[string]*memory.Memory{}
	)
	storagetest.Run(t, func(t *testing.T, dir string) storage.Backend {
		mu.Lock()
		defer mu.Unlock()
		m, ok := stores[dir]
		if !ok {
			m = memory.New()
			stores[dir] = m
			return m
		}
		return m.Reopen()
	})
}
