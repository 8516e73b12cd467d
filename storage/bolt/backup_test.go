package bolt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
	"github.com/usher-authz/usher/storage/memory"
)

// churn commits change sets of every common kind until stop is closed: each
// writes a grant and a resource, and every third deletes an earlier grant.
func churn(t *testing.T, s *bolt.Store, stop <-chan struct{}) (done func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			changes := []authz.Change{
				{Op: authz.OpPutResource, Resource: &authz.Resource{Name: fmt.Sprintf("event:e%d", i), Parent: "root"}},
				{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%d", i), Role: "owner", Resource: fmt.Sprintf("event:e%d", i)}},
			}
			if i%3 == 2 {
				changes = append(changes, authz.Change{Op: authz.OpDeleteGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%d", i-2), Role: "owner", Resource: fmt.Sprintf("event:e%d", i-2)}})
			}
			if _, err := commit(s, authz.ChangeSet{Caller: "churn", Changes: changes}); err != nil {
				t.Errorf("Commit: %v", err)
				return
			}
		}
	})
	return wg.Wait
}

// waitForRevision waits until the store has committed rev.
func waitForRevision(t *testing.T, s *bolt.Store, rev authz.Revision) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := s.Revision(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if r >= rev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store reached only revision %d in 10s, want %d", r, rev)
		}
		time.Sleep(time.Millisecond)
	}
}

// stateAt replays the store's change log up to rev into a fresh backend: what
// the store held at rev.
func stateAt(t *testing.T, s storage.Backend, rev authz.Revision) (authz.Snapshot, []authz.ChangeSet) {
	t.Helper()
	log, err := s.Changes(context.Background(), 0, int(rev))
	if err != nil {
		t.Fatal(err)
	}
	m := memory.New()
	for _, cs := range log {
		if _, err := commit(m, cs); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := snapshot(m)
	if err != nil {
		t.Fatal(err)
	}
	return snap, log
}

func TestBackupWhileCommitting(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, filepath.Join(dir, "usher.db"))
	defer s.Close()
	stop := make(chan struct{})
	wait := churn(t, s, stop)

	var revs []authz.Revision
	for i := range 5 {
		waitForRevision(t, s, authz.Revision(10*(i+1)))
		var buf bytes.Buffer
		var announced authz.Revision
		var size int64
		rev, err := s.Backup(&buf, func(rev authz.Revision, n int64) error {
			announced, size = rev, n
			return nil
		})
		if err != nil {
			t.Fatalf("Backup: %v", err)
		}
		if rev != announced || size != int64(buf.Len()) {
			t.Errorf("Backup returned revision %d after announcing %d, wrote %d bytes after announcing %d", rev, announced, buf.Len(), size)
		}
		path := filepath.Join(dir, fmt.Sprintf("backup-%d.db", i))
		if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := bolt.Verify(path); err != nil || got != rev {
			t.Fatalf("Verify(backup) = %d, %v; want %d", got, err, rev)
		}
		revs = append(revs, rev)
	}
	close(stop)
	wait()
	if revs[0] == revs[len(revs)-1] {
		t.Fatalf("every backup holds revision %d: the commits did not run during the backups", revs[0])
	}

	for i, rev := range revs {
		copy := openStore(t, filepath.Join(dir, fmt.Sprintf("backup-%d.db", i)))
		got, err := snapshot(copy)
		if err != nil {
			t.Fatal(err)
		}
		gotLog, err := copy.Changes(context.Background(), 0, int(rev)+10)
		if err != nil {
			t.Fatal(err)
		}
		copy.Close()
		want, wantLog := stateAt(t, s, rev)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("backup %d at revision %d holds a snapshot other than the store's at that revision:\n got %+v\nwant %+v", i, rev, got, want)
		}
		if !reflect.DeepEqual(gotLog, wantLog) {
			t.Errorf("backup %d at revision %d: its change log (%d sets) is not the store's up to that revision (%d sets)", i, rev, len(gotLog), len(wantLog))
		}
	}
}

func TestBackupStopsAtTheFirstError(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "usher.db"))
	refused := errors.New("client went away")
	var buf bytes.Buffer
	if _, err := s.Backup(&buf, func(authz.Revision, int64) error { return refused }); !errors.Is(err, refused) || buf.Len() != 0 {
		t.Errorf("Backup with a failing begin = %v after %d bytes; want the error and nothing written", err, buf.Len())
	}
	// bbolt does not wrap the writer's error, so only its text is kept.
	if _, err := s.Backup(failingWriter{refused}, nil); err == nil || !strings.Contains(err.Error(), refused.Error()) {
		t.Errorf("Backup to a failing writer = %v, want its error", err)
	}
	s.Close()
	if _, err := s.Backup(&buf, nil); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Backup after Close = %v, want ErrClosed", err)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

// backupFile commits a few change sets and writes a backup of them to a file.
func backupFile(t *testing.T, dir string) (path string, rev authz.Revision, snap authz.Snapshot) {
	t.Helper()
	s := openStore(t, filepath.Join(dir, "source.db"))
	defer s.Close()
	stop := make(chan struct{})
	wait := churn(t, s, stop)
	waitForRevision(t, s, 10)
	close(stop)
	wait()
	var buf bytes.Buffer
	rev, err := s.Backup(&buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "backup.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if snap, err = snapshot(s); err != nil {
		t.Fatal(err)
	}
	return path, rev, snap
}

func TestVerifyRefusesWhatIsNotAWholeDataFile(t *testing.T) {
	dir := t.TempDir()
	good, _, _ := backupFile(t, dir)
	whole, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bbolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("keys")); return err })
	db.Close()
	for _, tc := range []struct {
		name, path, want string
	}{
		{"a missing file is refused", filepath.Join(dir, "nothing.db"), "no such file"},
		{"a file that is not bbolt is refused", write("text.db", bytes.Repeat([]byte("not a database\n"), 1000)), "not a bbolt data file"},
		{"an empty file is refused", write("empty.db", nil), "not a bbolt data file"},
		{"a cut-off copy is refused", write("cut.db", whole[:len(whole)/2]), "the file is cut off"},
		{"a bbolt file without Usher's buckets is refused", foreign, `bucket "meta" is missing`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if rev, err := bolt.Verify(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Verify(%s) = %d, %v; want an error saying %q", tc.path, rev, err, tc.want)
			}
		})
	}
}

func TestRestore(t *testing.T) {
	dir := t.TempDir()
	backup, rev, want := backupFile(t, dir)

	t.Run("restore into a new path gives the backed-up data", func(t *testing.T) {
		path := filepath.Join(dir, "new", "data", "usher.db")
		got, err := bolt.Restore(backup, path, false)
		if err != nil || got != rev {
			t.Fatalf("Restore = %d, %v; want %d", got, err, rev)
		}
		s := openStore(t, path)
		defer s.Close()
		snap, err := snapshot(s)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(snap, want) {
			t.Errorf("restored snapshot differs:\n got %+v\nwant %+v", snap, want)
		}
		if leftovers, _ := filepath.Glob(filepath.Join(dir, "new", "data", ".*")); len(leftovers) != 0 {
			t.Errorf("temporary files left beside the restored file: %v", leftovers)
		}
	})
	t.Run("restore refuses to replace an existing file without force", func(t *testing.T) {
		path := filepath.Join(dir, "existing.db")
		openStore(t, path).Close()
		before, _ := os.ReadFile(path)
		if _, err := bolt.Restore(backup, path, false); err == nil || !strings.Contains(err.Error(), "exists") {
			t.Fatalf("Restore over an existing file = %v, want a refusal saying it exists", err)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
			t.Error("the refused restore changed the existing file")
		}
		if got, err := bolt.Restore(backup, path, true); err != nil || got != rev {
			t.Fatalf("Restore with replace = %d, %v; want %d", got, err, rev)
		}
		if got, err := bolt.Verify(path); err != nil || got != rev {
			t.Errorf("after Restore with replace the file holds revision %d (%v), want %d", got, err, rev)
		}
	})
	t.Run("restore refuses a file a server holds, even with force", func(t *testing.T) {
		path := filepath.Join(dir, "held.db")
		s := openStore(t, path)
		defer s.Close()
		if _, err := bolt.Restore(backup, path, true); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("Restore over a held file = %v, want a refusal saying it is in use", err)
		}
		if r, err := s.Revision(context.Background()); err != nil || r != 0 {
			t.Errorf("the held store reads revision %d, %v after the refused restore; want 0", r, err)
		}
	})
	t.Run("restore refuses a bad backup and leaves the data file alone", func(t *testing.T) {
		path := filepath.Join(dir, "kept.db")
		openStore(t, path).Close()
		before, _ := os.ReadFile(path)
		bad := filepath.Join(dir, "bad.db")
		os.WriteFile(bad, []byte("garbage"), 0o600)
		if _, err := bolt.Restore(bad, path, true); err == nil {
			t.Fatal("Restore of a garbage backup succeeded")
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
			t.Error("the refused restore changed the data file")
		}
	})
}
