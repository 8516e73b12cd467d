package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// A reader of the file's log while it is compacted gets the change set
// after the one it asks after, or ErrCompacted: never a later one, which
// would skip what it lacks. A compaction commits its deletions before the
// store's record of it moves, and readers come between the two.
func TestChangesNeverSkipWhileTheLogIsCompacted(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "usher.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	// More change sets than the store keeps in memory: the readers below
	// read the file.
	const total = 2 * recentSets
	for i := 0; i < total; i += 512 {
		var ws []authz.Write
		for j := i; j < i+512; j++ {
			g := authz.Grant{Subject: fmt.Sprintf("user:%d", j), Role: "host", Resource: "root"}
			ws = append(ws, authz.Write{Set: authz.ChangeSet{Caller: "test", Changes: []authz.Change{{Op: authz.OpPutGrant, Grant: &g}}}})
		}
		if _, err := s.Commit(ctx, ws); err != nil {
			t.Fatal(err)
		}
	}
	var stop atomic.Bool
	var reads, skips atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				after, _ := s.LogStart(ctx)
				css, err := s.Changes(ctx, after, 1)
				reads.Add(1)
				switch {
				case errors.Is(err, authz.ErrCompacted):
				case err != nil:
					t.Error(err)
					return
				case len(css) == 0 || css[0].Revision != after+1:
					if skips.Add(1) == 1 {
						first.Store(fmt.Sprintf("Changes(after %d) began at %v", after, revisions(css[:min(1, len(css))])))
					}
				}
			}
		})
	}
	for before := authz.Revision(8); before <= total/2; before += 8 {
		if err := s.Compact(ctx, before); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := skips.Load(); n > 0 {
		t.Fatalf("%d of %d reads skipped change sets without ErrCompacted; the first: %s", n, reads.Load(), first.Load())
	}
}
