package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// A log that keeps more change sets than a revision can count (--log-retention
// past 2^63) keeps them all, as one that keeps them all (0) does: it is
// never compacted whole for the count overflowing.
func TestALogRetainingMoreThanCanBeCountedIsNotCompacted(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "usher.db"), Options{Retain: 1<<63 + 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range 3 {
		g := authz.Grant{Subject: fmt.Sprintf("user:%d", i), Role: "host", Resource: "root"}
		if _, err := s.Commit(ctx, []authz.Write{{Set: authz.ChangeSet{Caller: "test", Changes: []authz.Change{{Op: authz.OpPutGrant, Grant: &g}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	for s.compacting.Load() {
		// A compaction started by the last commit ends before the log is read.
	}
	if start, err := s.LogStart(ctx); err != nil || start != 0 {
		t.Errorf("LogStart = %d, %v; want 0, the whole log kept", start, err)
	}
}
