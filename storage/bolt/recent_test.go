package bolt

import (
	"context"
	"path/filepath"
	"slices"
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
	r := newChangeRing(4)
	if got := r.copyRange(0, r.len()); got != nil {
		t.Fatalf("an empty ring copies %v, want nil", got)
	}
	for rev := authz.Revision(1); rev <= 10; rev++ {
		r.push(authz.ChangeSet{Revision: rev})
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
	r := newChangeRing(4)
	for rev := authz.Revision(1); rev <= 6; rev++ {
		r.push(authz.ChangeSet{Revision: rev})
	}
	r.dropThrough(4)
	if got := revisions(r.copyRange(0, r.len())); !slices.Equal(got, []authz.Revision{5, 6}) {
		t.Fatalf("after dropping through 4: holds %v, want [5 6]", got)
	}
	// The slots dropped are refilled before the oldest is replaced.
	for rev := authz.Revision(7); rev <= 9; rev++ {
		r.push(authz.ChangeSet{Revision: rev})
	}
	if got := revisions(r.copyRange(0, r.len())); !slices.Equal(got, []authz.Revision{6, 7, 8, 9}) {
		t.Fatalf("after pushing 7 to 9: holds %v, want [6 7 8 9]", got)
	}
	r.dropThrough(100)
	if r.len() != 0 {
		t.Fatalf("after dropping everything: holds %v", revisions(r.copyRange(0, r.len())))
	}
	r.push(authz.ChangeSet{Revision: 101})
	if got := revisions(r.copyRange(0, r.len())); !slices.Equal(got, []authz.Revision{101}) {
		t.Fatalf("after pushing 101 to an emptied ring: holds %v", got)
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
	sets := []authz.ChangeSet{{Caller: "test"}}
	publish := func() {
		rev++
		sets[0].Revision = rev
		s.publish(sets)
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
	sets := []authz.ChangeSet{{Caller: "bench"}}
	for range recentSets {
		rev++
		sets[0].Revision = rev
		s.publish(sets)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rev++
		sets[0].Revision = rev
		s.publish(sets)
	}
}
