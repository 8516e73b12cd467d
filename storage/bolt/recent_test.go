package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/usher-authz/usher/authz"
)

func revisions(sets []authz.ChangeSet) []authz.Revision {
	var out []authz.Revision
	for _, cs := range sets {
		out = append(out, cs.Revision)
	}
	return out
}

func revisionRange(from, to authz.Revision) []authz.Revision {
	var out []authz.Revision
	for r := from; r <= to; r++ {
		out = append(out, r)
	}
	return out
}

func TestChangeRingKeepsTheLatest(t *testing.T) {
	r := newChangeRing(4, 1<<20)
	if got := r.copyRange(0, r.len()); got != nil {
		t.Fatalf("an empty ring copies %v, want nil", got)
	}
	for rev := authz.Revision(1); rev <= 10; rev++ {
		r.push(authz.ChangeSet{Revision: rev}, 1)
		want := revisionRange(max(4, rev)-3, rev)
		if got := revisions(r.copyRange(0, r.len())); !slices.Equal(got, want) {
			t.Fatalf("after pushing %d: holds %v, want %v", rev, got, want)
		}
	}
	if got := revisions(r.copyRange(1, 3)); !slices.Equal(got, []authz.Revision{8, 9}) {
		t.Errorf("copyRange(1, 3) = %v, want [8 9]", got)
	}
	if got := r.copyRange(2, 2); got != nil {
		t.Errorf("copyRange(2, 2) = %v, want nil", got)
	}
}

func TestChangeRingDropsThroughARevision(t *testing.T) {
	r := newChangeRing(4, 1<<20)
	for rev := authz.Revision(1); rev <= 6; rev++ {
		r.push(authz.ChangeSet{Revision: rev}, 1)
	}
	r.dropThrough(4)
	if got := revisions(r.copyRange(0, r.len())); !slices.Equal(got, []authz.Revision{5, 6}) {
		t.Fatalf("after dropping through 4: holds %v, want [5 6]", got)
	}
	// The slots dropped are refilled before the oldest is replaced.
	for rev := authz.Revision(7); rev <= 9; rev++ {
		r.push(authz.ChangeSet{Revision: rev}, 1)
	}
	if got := revisions(r.copyRange(0, r.len())); !slices.Equal(got, []authz.Revision{6, 7, 8, 9}) {
		t.Fatalf("after pushing 7 to 9: holds %v, want [6 7 8 9]", got)
	}
	r.dropThrough(100)
	if r.len() != 0 {
		t.Fatalf("after dropping everything: holds %v", revisions(r.copyRange(0, r.len())))
	}
	r.push(authz.ChangeSet{Revision: 101}, 1)
	if got := revisions(r.copyRange(0, r.len())); !slices.Equal(got, []authz.Revision{101}) {
		t.Fatalf("after pushing 101 to an emptied ring: holds %v", got)
	}
}

// The window holds at most its bytes besides the latest change set: a
// window of large policies would hold gigabytes. Change sets it forgets
// are read from the file.
func TestChangeRingHoldsAtMostItsBytes(t *testing.T) {
	r := newChangeRing(8, 100)
	for rev := authz.Revision(1); rev <= 4; rev++ {
		r.push(authz.ChangeSet{Revision: rev}, 30)
	}
	if got := revisions(r.copyRange(0, r.len())); !slices.Equal(got, []authz.Revision{2, 3, 4}) || r.held != 90 {
		t.Fatalf("four sets of 30 bytes in 100: holds %v, %d bytes; want [2 3 4], 90", got, r.held)
	}
	r.push(authz.ChangeSet{Revision: 5}, 500)
	if got := revisions(r.copyRange(0, r.len())); !slices.Equal(got, []authz.Revision{5}) || r.held != 500 {
		t.Fatalf("a set larger than the window: holds %v, %d bytes; want it alone", got, r.held)
	}
	r.push(authz.ChangeSet{Revision: 6}, 10)
	r.dropThrough(6)
	if r.len() != 0 || r.held != 0 {
		t.Fatalf("after dropping everything: holds %v, %d bytes", revisions(r.copyRange(0, r.len())), r.held)
	}
}

func TestTheStoreServesWhatItsWindowForgotFromTheFile(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "usher.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Change sets of about 1 MiB each: the window holds fewer than 40.
	big := strings.Repeat("x", 1000)
	const n = 40
	for i := range n {
		var changes []authz.Change
		for j := range 1000 {
			changes = append(changes, authz.Change{Op: authz.OpPutPermission, Permission: &authz.Permission{Name: fmt.Sprintf("p-%d-%d", i, j), Description: big[:900]}})
		}
		if _, err := s.Commit(context.Background(), []authz.Write{{Planned: authz.Revision(i), Set: authz.ChangeSet{Caller: "test", Changes: changes}}}); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	held, kept := s.recent.held, s.recent.len()
	s.mu.Unlock()
	if held > recentBytes+2<<20 || kept >= n {
		t.Errorf("the window holds %d change sets, %d bytes encoded; want at most %d bytes besides the latest", kept, held, recentBytes)
	}
	got, err := s.Changes(context.Background(), 0, n)
	if err != nil {
		t.Fatal(err)
	}
	if want := revisionRange(1, n); !slices.Equal(revisions(got), want) {
		t.Errorf("Changes after 0 holds %v, want %v", revisions(got), want)
	}
}

// A commit once the window is full must not copy the window: that made
// every write allocate and the collector scan hundreds of kilobytes.
func TestPublishOnAFullWindowDoesNotCopyIt(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "usher.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var rev authz.Revision
	sets, sizes := []authz.ChangeSet{{Caller: "test"}}, []int{100}
	publish := func() {
		rev++
		sets[0].Revision = rev
		s.publish(sets, sizes)
	}
	for range recentSets + 10 {
		publish()
	}
	// The notify channel replaced at every commit is the one allocation.
	if allocs := testing.AllocsPerRun(100, publish); allocs > 1 {
		t.Errorf("publish on a full window allocates %.0f times, want at most 1", allocs)
	}
	// The window still serves the latest recentSets change sets from memory.
	got, err := s.Changes(context.Background(), rev-recentSets, 2*recentSets)
	if err != nil {
		t.Fatal(err)
	}
	if want := revisionRange(rev-recentSets+1, rev); !slices.Equal(revisions(got), want) {
		t.Errorf("Changes after %d holds %d change sets from %v, want %d from %d to %d",
			rev-recentSets, len(got), revisions(got)[:1], len(want), want[0], rev)
	}
}

// BenchmarkPublishFullWindow is a commit's handing of one change set to
// watchers once the window of recent change sets is full, as it is on any
// server that has taken more than recentSets writes.
func BenchmarkPublishFullWindow(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "usher.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var rev authz.Revision
	sets, sizes := []authz.ChangeSet{{Caller: "bench"}}, []int{100}
	for range recentSets {
		rev++
		sets[0].Revision = rev
		s.publish(sets, sizes)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rev++
		sets[0].Revision = rev
		s.publish(sets, sizes)
	}
}
