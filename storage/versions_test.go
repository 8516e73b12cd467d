package storage

import (
	"fmt"
	"strings"
	"testing"

	"github.com/usher-authz/usher/authz"
)

// Versions remembers the keys of at most MaxVersionBytes besides the
// latest commit's: commits of many keys end its window early, and a write
// planned before the window is then taken for conflicting, to be planned
// again; one planned since is judged exactly.
func TestVersionsHoldAtMostTheirBytes(t *testing.T) {
	v := NewVersions(0, 0)
	long := strings.Repeat("k", 200)
	const perCommit = 10_000
	commits := 0
	for rev := authz.Revision(1); rev <= 40; rev++ {
		keys := make([]string, perCommit)
		for i := range keys {
			keys[i] = fmt.Sprintf("%s-%d-%d", long, rev, i)
		}
		v.Touch(rev, keys)
		commits++
		if v.held > MaxVersionBytes+perCommit*keyBytes(keys[0]) {
			t.Fatalf("after %d commits of %d keys: %d bytes held, want at most %d besides the latest", commits, perCommit, v.held, MaxVersionBytes)
		}
	}
	if len(v.log) >= commits || len(v.last) > len(v.log)*perCommit {
		t.Fatalf("the window holds %d commits and %d keys of %d commits", len(v.log), len(v.last), commits)
	}
	if v.horizon == 0 {
		t.Fatal("the window forgot commits but judges every plan exactly")
	}
	old := authz.Write{Planned: v.horizon - 1, Guards: []string{"untouched"}}
	if c := v.Conflict(old); c == "" {
		t.Errorf("a write planned at %d, before the window's %d: no conflict, want it planned again", old.Planned, v.horizon)
	}
	latest := fmt.Sprintf("%s-%d-%d", long, 40, 7)
	if c := v.Conflict(authz.Write{Planned: 39, Guards: []string{"untouched", latest}}); c != latest {
		t.Errorf("a write planned at 39 guarding a key touched at 40: conflict %q, want %q", c, latest)
	}
	if c := v.Conflict(authz.Write{Planned: 40, Guards: []string{latest}}); c != "" {
		t.Errorf("a write planned at 40: conflict %q, want none", c)
	}
}
