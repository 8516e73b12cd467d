package bolt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
)

func TestOpenCreatesDirectoryAndFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "data", "usher.db")
	s := openStore(t, path)
	defer s.Close()

	dir, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	// The umask may only take bits away, never add them.
	if perm := dir.Mode().Perm(); perm&^0o750 != 0 {
		t.Errorf("directory mode %v, want at most 0750", perm)
	}
	file, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := file.Mode().Perm(); perm&^0o600 != 0 {
		t.Errorf("file mode %v, want at most 0600", perm)
	}
}

func TestOpenFailsWhileAnotherHoldsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.db")
	first := openStore(t, path)
	defer first.Close()

	const timeout = 200 * time.Millisecond
	start := time.Now()
	second, err := bolt.Open(path, bolt.Options{LockTimeout: timeout})
	elapsed := time.Since(start)
	if err == nil {
		second.Close()
		t.Fatal("second Open of a held file succeeded")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another process is using it") {
		t.Errorf("error %q does not name the path and say another process is using it", err)
	}
	// bbolt polls the lock every 50ms and gives up a poll early.
	if elapsed < timeout/2 || elapsed > timeout+2*time.Second {
		t.Errorf("second Open failed after %s, want about %s", elapsed, timeout)
	}
}

func TestCallsAfterCloseFail(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "usher.db"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := commit(s, authz.ChangeSet{}); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Commit after Close: %v, want ErrClosed", err)
	}
	if _, err := snapshot(s); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Snapshot after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Changes(context.Background(), 0, 1); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Changes after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Revision(context.Background()); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Revision after Close: %v, want ErrClosed", err)
	}
}

func TestCommitRefusesWhatCannotBeStored(t *testing.T) {
	tests := []struct {
		name   string
		change authz.Change
	}{
		{"a name with a NUL byte would read back as another key",
			authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:a\x00b", Role: "r", Resource: "doc:1"}}},
		{"an expiry at the Unix epoch would read back as never",
			authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:a", Role: "r", Resource: "doc:1", Expires: time.Unix(0, 0)}}},
		{"an expiry past 2262 does not fit in 8 bytes of nanoseconds",
			authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: "user:a", Role: "r", Resource: "doc:1", Expires: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{"an unknown op", authz.Change{Op: 99}},
	}
	s := openStore(t, filepath.Join(t.TempDir(), "usher.db"))
	defer s.Close()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := commit(s, authz.ChangeSet{Changes: []authz.Change{tc.change}})
			if err == nil {
				t.Fatal("Commit succeeded")
			}
			if rev, _ := s.Revision(context.Background()); rev != 0 {
				t.Errorf("Revision() = %d after a refused commit, want 0", rev)
			}
		})
	}
}

func BenchmarkCommitGrant(b *testing.B) {
	s := openStore(b, filepath.Join(b.TempDir(), "usher.db"))
	defer s.Close()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		g := authz.Grant{Subject: fmt.Sprintf("user:u%d", i), Role: "viewer", Resource: "doc:1"}
		cs := authz.ChangeSet{Caller: "service:bench", Changes: []authz.Change{{Op: authz.OpPutGrant, Grant: &g}}}
		if _, err := commit(s, cs); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkSnapshot measures start-up loading, dominated by grants.
func BenchmarkSnapshot(b *testing.B) {
	const batches, perBatch = 10, 10_000
	s := openStore(b, filepath.Join(b.TempDir(), "usher.db"))
	defer s.Close()
	for i := range batches {
		cs := authz.ChangeSet{Caller: "service:bench"}
		for j := range perBatch {
			g := authz.Grant{Subject: fmt.Sprintf("user:u%d-%d", i, j), Role: "viewer", Resource: "doc:1"}
			cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutGrant, Grant: &g})
		}
		if _, err := commit(s, cs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		snap, err := snapshot(s)
		if err != nil {
			b.Fatal(err)
		}
		if len(snap.Grants) != batches*perBatch {
			b.Fatalf("loaded %d grants", len(snap.Grants))
		}
	}
}

func TestOpenRefusesABboltFileOfAnotherProgram(t *testing.T) {
	// An etcd snapshot, or etcd's member/snap/db, is a bbolt file too, with
	// a "meta" bucket of its own.
	path := filepath.Join(t.TempDir(), "snapshot.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range []string{"alarm", "auth", "cluster", "key", "lease", "members", "meta"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("meta")).Put([]byte("consistent_index"), []byte{0, 0, 0, 0, 0, 0, 0, 42})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wantOpenRefused(t, path, "an etcd snapshot", `not an Usher data file: it holds a bucket "alarm"`)
}

func TestOpenRefusesAFileOfALaterFormatWithoutWritingIt(t *testing.T) {
	// What a later version of Usher may write: its format, and buckets of
	// its own rather than this version's.
	path := filepath.Join(t.TempDir(), "usher.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		meta, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket([]byte("entities")); err != nil {
			return err
		}
		if err := meta.Put([]byte("revision"), storage.EncodeRevision(7)); err != nil {
			return err
		}
		return meta.Put([]byte("format"), []byte{3})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wantOpenRefused(t, path, "a file of format 3", "format [3], which this version of Usher does not read")
}

// wantOpenRefused fails the test unless Open refuses the file at path,
// which holds what, with an error naming the path and saying want, and
// leaves the file as it was.
func wantOpenRefused(t *testing.T, path, what, want string) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := bolt.Open(path, bolt.Options{})
	if err == nil {
		s.Close()
		t.Fatalf("Open of %s succeeded", what)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the path and say %q", err, want)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("Open wrote into the file it refused")
	}
}
