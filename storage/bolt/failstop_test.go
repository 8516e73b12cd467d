package bolt

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
)

// writeAt is how bbolt writes a page to its file.
type writeAt = func(b []byte, off int64) (int, error)

// writeAtOf is where db keeps the function it writes pages with. bbolt's
// own tests replace it to fail a commit's writes; v1.4 does not export it,
// so this reaches it by reflection, and fails the test if it moved.
func writeAtOf(t *testing.T, db *bbolt.DB) *writeAt {
	t.Helper()
	f := reflect.ValueOf(db).Elem().FieldByName("ops")
	if f.IsValid() {
		f = f.FieldByName("writeAt")
	}
	if !f.IsValid() || f.Type() != reflect.TypeFor[writeAt]() {
		t.Fatal("bbolt.DB has no ops.writeAt of the type this test knows: fail a commit's write another way")
	}
	return (*writeAt)(unsafe.Pointer(f.UnsafeAddr()))
}

// grantWrite is a write planned at planned that grants subject host on
// root, guarding nothing.
func grantWrite(subject string, planned authz.Revision) []authz.Write {
	g := authz.Grant{Subject: subject, Role: "host", Resource: "root"}
	return []authz.Write{{Planned: planned, Set: authz.ChangeSet{Caller: "test", Changes: []authz.Change{{Op: authz.OpPutGrant, Grant: &g}}}}}
}

// grantees are the subjects s holds grants of, in order, and its revision.
func grantees(t *testing.T, s *Store) ([]string, authz.Revision) {
	t.Helper()
	var c authz.Collector
	rev, err := s.Load(context.Background(), &c)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var out []string
	for _, g := range c.Snapshot.Grants {
		out = append(out, g.Subject)
	}
	slices.Sort(out)
	return out, rev
}

// A commit whose write fails may leave bbolt reading a state ahead of what
// is durable: a meta page written but not synced is what it builds the
// next transaction on. So once a commit fails, every write is refused
// until the file is reopened, whatever failed; reads go on. Reopened, the
// file holds every acknowledged write, and the failed one only when it
// reached the file, when it was reported as of unknown outcome.
func TestAFailedCommitStopsWritesUntilTheFileIsReopened(t *testing.T) {
	eio := syscall.EIO
	for _, tc := range []struct {
		name string
		// fail stands in for bbolt's write of the page at off, meta
		// telling whether it is one of the two meta pages.
		fail    func(write writeAt, b []byte, off int64, meta bool) (int, error)
		reached bool // the failed commit is in the file
	}{
		{
			name: "a data page that is not written",
			fail: func(write writeAt, b []byte, off int64, meta bool) (int, error) {
				if meta {
					return write(b, off)
				}
				return 0, eio
			},
		},
		{
			name: "a meta page that is not written",
			fail: func(write writeAt, b []byte, off int64, meta bool) (int, error) {
				if meta {
					return 0, eio
				}
				return write(b, off)
			},
		},
		{
			name: "a meta page written but not made durable",
			fail: func(write writeAt, b []byte, off int64, meta bool) (int, error) {
				n, err := write(b, off)
				if meta && err == nil {
					err = eio
				}
				return n, err
			},
			reached: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "usher.db")
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { s.Close() }()
			ctx := context.Background()
			if _, err := s.Commit(ctx, grantWrite("user:acknowledged", 0)); err != nil {
				t.Fatal(err)
			}

			slot := writeAtOf(t, s.db)
			write := *slot
			metaEnd := 2 * int64(s.db.Info().PageSize)
			*slot = func(b []byte, off int64) (int, error) { return tc.fail(write, b, off, off < metaEnd) }
			_, err = s.Commit(ctx, grantWrite("user:failed", 1))
			*slot = write
			if err == nil {
				t.Fatal("a commit whose write failed was acknowledged")
			}
			if !errors.Is(err, authz.ErrWritesStopped) || errors.Is(err, authz.ErrOutcomeUnknown) != tc.reached {
				t.Errorf("the failed commit's error %q: wraps ErrWritesStopped %v, ErrOutcomeUnknown %v; want true, %v",
					err, errors.Is(err, authz.ErrWritesStopped), errors.Is(err, authz.ErrOutcomeUnknown), tc.reached)
			}

			// The disk works again; the store does not trust its state.
			res, err := s.Commit(ctx, grantWrite("user:refused", 1))
			if err == nil {
				t.Fatalf("the commit after a failed one was acknowledged at revision %d; want it refused until the file is reopened", res[0].Revision)
			}
			if !errors.Is(err, authz.ErrWritesStopped) || errors.Is(err, authz.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "restart the server") {
				t.Errorf("the refusal %q does not wrap ErrWritesStopped alone, or does not say to restart the server", err)
			}
			if err := s.Compact(ctx, 1); !errors.Is(err, authz.ErrWritesStopped) {
				t.Errorf("Compact after the failure: %v, want ErrWritesStopped", err)
			}
			if err := s.WritesStopped(); err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("WritesStopped after the failure = %v, want an error naming the file", err)
			}
			if got, _ := grantees(t, s); !slices.Contains(got, "user:acknowledged") || slices.Contains(got, "user:refused") {
				t.Errorf("a read after the failure holds grants of %v", got)
			}

			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = Open(path, Options{}); err != nil {
				t.Fatal(err)
			}
			want, wantRev := []string{"user:acknowledged"}, authz.Revision(1)
			if tc.reached {
				want, wantRev = []string{"user:acknowledged", "user:failed"}, 2
			}
			if got, rev := grantees(t, s); !slices.Equal(got, want) || rev != wantRev {
				t.Errorf("reopened, the file holds grants of %v at revision %d, want %v at %d", got, rev, want, wantRev)
			}
			if err := s.WritesStopped(); err != nil {
				t.Errorf("WritesStopped after reopening = %v", err)
			}
			res, err = s.Commit(ctx, grantWrite("user:after", wantRev))
			if err != nil || res[0].Revision != wantRev+1 {
				t.Fatalf("a commit after reopening: %v, %v; want revision %d", res, err, wantRev+1)
			}
		})
	}
}

// A write that fails in its own work, before bbolt writes anything, leaves
// the file as it was: it fails alone, and the next write is taken.
func TestAWriteThatFailsBeforeItsCommitStopsNothing(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "usher.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	bad := []authz.Write{{Set: authz.ChangeSet{Caller: "test", Changes: []authz.Change{{Op: authz.OpPutGrant}}}}}
	if _, err := s.Commit(ctx, bad); err == nil || errors.Is(err, authz.ErrWritesStopped) {
		t.Fatalf("a grant of nothing: %v; want an error that stops nothing", err)
	}
	if res, err := s.Commit(ctx, grantWrite("user:after", 0)); err != nil || res[0].Revision != 1 {
		t.Fatalf("the write after it: %v, %v; want revision 1", res, err)
	}
	if err := s.WritesStopped(); err != nil {
		t.Errorf("WritesStopped = %v", err)
	}
}

// A commit that failed after its meta page reached the file is in what
// bbolt reads from then on, though it was never acknowledged, nor
// published to watchers. The log read from the file (by a reader behind
// the change sets kept in memory) and the revision the store reports stop
// at the last acknowledged commit, as the index does.
func TestAFailedCommitIsNotReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Commit(ctx, grantWrite("user:acknowledged", 0)); err != nil {
		t.Fatal(err)
	}
	// Reopened, the store keeps no change set in memory: readers read the
	// file.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()

	slot := writeAtOf(t, s.db)
	write := *slot
	metaEnd := 2 * int64(s.db.Info().PageSize)
	*slot = func(b []byte, off int64) (int, error) {
		n, err := write(b, off)
		if off < metaEnd && err == nil {
			err = syscall.EIO
		}
		return n, err
	}
	_, err = s.Commit(ctx, grantWrite("user:failed", 1))
	*slot = write
	if !errors.Is(err, authz.ErrOutcomeUnknown) {
		t.Fatalf("the failed commit: %v; want it to have reached the file", err)
	}

	sets, err := s.Changes(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var revs []authz.Revision
	for _, cs := range sets {
		revs = append(revs, cs.Revision)
	}
	if !slices.Equal(revs, []authz.Revision{1}) {
		t.Errorf("Changes after 0 = revisions %v, want [1]: the failed commit is read back", revs)
	}
	if rev, err := s.Revision(ctx); err != nil || rev != 1 {
		t.Errorf("Revision = %d, %v; want 1, the last acknowledged commit", rev, err)
	}
}
