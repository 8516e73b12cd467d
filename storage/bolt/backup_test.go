package bolt_test

import (
	"bytes"
	"context"
	"crypto/sha256"
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
		var announced storage.Manifest
		m, err := s.Backup(&buf, func(m storage.Manifest) error {
			announced = m
			return nil
		})
		if err != nil {
			t.Fatalf("Backup: %v", err)
		}
		rev := m.Revision
		if m != announced || m.Size != int64(buf.Len()) || m.SHA256 != sha256.Sum256(buf.Bytes()) {
			t.Errorf("Backup returned %+v after announcing %+v, and wrote %d bytes", m, announced, buf.Len())
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
	if _, err := s.Backup(&buf, func(storage.Manifest) error { return refused }); !errors.Is(err, refused) || buf.Len() != 0 {
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

// backupFile commits a few change sets and saves a backup of them in a
// file, as usher backup does.
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
	m, err := s.Backup(&buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "backup.usher")
	if err := bolt.SaveBackup(path, m, &buf); err != nil {
		t.Fatal(err)
	}
	if snap, err = snapshot(s); err != nil {
		t.Fatal(err)
	}
	return path, m.Revision, snap
}

func TestVerifyRefusesWhatIsNotAWholeDataFile(t *testing.T) {
	dir := t.TempDir()
	backup, _, _ := backupFile(t, dir)
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	whole := b[:len(b)-storage.ManifestSize]
	good := filepath.Join(dir, "good.db")
	if err := os.WriteFile(good, whole, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bolt.Verify(good); err != nil {
		t.Fatalf("Verify of a backup's content: %v", err)
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
	t.Run("restore over a file at a later revision goes on after it, its log compacted through it", func(t *testing.T) {
		// A client that followed the replaced file holds revisions up to
		// its last: resumed from any of them, after the writes that follow
		// the restore, it must be told to reload, not be sent the restored
		// history's own revisions of those numbers as if they followed.
		path := filepath.Join(dir, "later.db")
		s := openStore(t, path)
		stop := make(chan struct{})
		wait := churn(t, s, stop)
		waitForRevision(t, s, rev+5)
		close(stop)
		wait()
		later, err := s.Revision(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		got, err := bolt.Restore(backup, path, true)
		if err != nil || got != later+1 {
			t.Fatalf("Restore over a file at revision %d = %d, %v; want %d", later, got, err, later+1)
		}
		if v, err := bolt.Verify(path); err != nil || v != later+1 {
			t.Errorf("after Restore the file verifies at revision %d (%v), want %d", v, err, later+1)
		}
		s = openStore(t, path)
		defer s.Close()
		snap, err := snapshot(s)
		if err != nil {
			t.Fatal(err)
		}
		want := want
		want.Revision = later + 1
		if !reflect.DeepEqual(snap, want) {
			t.Errorf("restored snapshot differs:\n got %+v\nwant %+v", snap, want)
		}
		for _, after := range []authz.Revision{rev - 1, rev, rev + 1, later} {
			if _, err := s.Changes(context.Background(), after, 10); !errors.Is(err, authz.ErrCompacted) {
				t.Errorf("Changes after %d, a revision of the replaced file's = %v, want ErrCompacted", after, err)
			}
		}
		if got, err := s.Changes(context.Background(), later+1, 10); err != nil || len(got) != 0 {
			t.Errorf("Changes after %d = %v, %v; want none", later+1, got, err)
		}
	})
	t.Run("restore over a file of another history goes on after it, its log compacted through it", func(t *testing.T) {
		// A file that went on from another backup, or another server's, at
		// a revision the backup reaches: a client that followed it, resumed
		// from any of its revisions, must be told to reload, not be sent
		// the backup's own change sets of the numbers that follow, nor
		// nothing at all.
		for _, n := range []authz.Revision{3, rev} {
			path := filepath.Join(dir, fmt.Sprintf("other-%d.db", n))
			s := openStore(t, path)
			for i := range n {
				if _, err := commit(s, authz.ChangeSet{Caller: "other", Changes: []authz.Change{
					{Op: authz.OpPutResource, Resource: &authz.Resource{Name: fmt.Sprintf("event:other-%d", i), Parent: "root"}}}}); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			got, err := bolt.Restore(backup, path, true)
			if want := max(rev, n+1); err != nil || got != want {
				t.Fatalf("Restore over a file of another history at revision %d = %d, %v; want %d", n, got, err, want)
			}
			s = openStore(t, path)
			for _, after := range []authz.Revision{1, n - 1, n} {
				if sets, err := s.Changes(context.Background(), after, 10); !errors.Is(err, authz.ErrCompacted) {
					t.Errorf("restored over a file at revision %d: Changes after %d, a revision of the replaced file's = %d change sets, %v; want ErrCompacted",
						n, after, len(sets), err)
				}
			}
			s.Close()
		}
		// A file of the backup's own history keeps the log.
		path := filepath.Join(dir, "same.db")
		if _, err := bolt.Restore(backup, path, false); err != nil {
			t.Fatal(err)
		}
		if got, err := bolt.Restore(backup, path, true); err != nil || got != rev {
			t.Fatalf("Restore over a file of the backup's own history = %d, %v; want %d", got, err, rev)
		}
		s := openStore(t, path)
		defer s.Close()
		if sets, err := s.Changes(context.Background(), rev-1, 10); err != nil || len(sets) != 1 {
			t.Errorf("restored over a file of the backup's own history: Changes after %d = %d change sets, %v; want 1", rev-1, len(sets), err)
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
	t.Run("restore replaces a damaged data file", func(t *testing.T) {
		for name, damage := range map[string]func([]byte) []byte{
			"cut off":     func(b []byte) []byte { return b[:len(b)/3] },
			"zeroed":      func(b []byte) []byte { return make([]byte, len(b)) },
			"meta broken": func(b []byte) []byte { b[20] ^= 0xff; b[4096+20] ^= 0xff; return b },
		} {
			path := filepath.Join(dir, "damaged-"+strings.ReplaceAll(name, " ", "-")+".db")
			openStore(t, path).Close()
			b, _ := os.ReadFile(path)
			os.WriteFile(path, damage(b), 0o600)
			if got, err := bolt.Restore(backup, path, true); err != nil || got != rev {
				t.Fatalf("Restore over a data file %s = %d, %v; want %d", name, got, err, rev)
			}
			if got, err := bolt.Verify(path); err != nil || got != rev {
				t.Errorf("after Restore over a data file %s, it holds revision %d (%v), want %d", name, got, err, rev)
			}
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

// stalledWriter takes its first write and then blocks until released: a
// backup client that stopped reading.
type stalledWriter struct {
	first   chan struct{} // closed at the first write
	release chan struct{}
	once    sync.Once
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.first) })
	<-w.release
	return len(p), nil
}

// bbolt remaps its file to grow it, and a remap waits for every read
// transaction: a backup copied from its transaction straight to a client
// that stops reading would hold up every commit that grows the file.
func TestAStalledBackupReaderDoesNotHoldUpCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.db")
	s := openStore(t, path)
	defer s.Close()
	bulk := func(i int) authz.ChangeSet {
		cs := authz.ChangeSet{Caller: "test"}
		for j := range 500 {
			cs.Changes = append(cs.Changes, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:u%d-%d", i, j), Role: "owner", Resource: "root"}})
		}
		return cs
	}
	for i := range 10 {
		if _, err := commit(s, bulk(i)); err != nil {
			t.Fatal(err)
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	start := info.Size()

	w := &stalledWriter{first: make(chan struct{}), release: make(chan struct{})}
	defer close(w.release)
	backup := make(chan error, 1)
	go func() {
		_, err := s.Backup(w, nil)
		backup <- err
	}()
	<-w.first
	// The map is a power of two at least the file's size, so a file grown
	// to more than twice its size has been remapped at least once.
	// A commit of 500 grants takes milliseconds, a second on a loaded
	// machine under the race detector; one held up by the backup would
	// wait as long as its reader stalls.
	const bound = 5 * time.Second
	var slowest time.Duration
	for i := 10; ; i++ {
		done := make(chan error, 1)
		began := time.Now()
		go func() {
			_, err := commit(s, bulk(i))
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(bound):
			t.Fatalf("a commit waited more than %s while a backup's reader stalled", bound)
		}
		slowest = max(slowest, time.Since(began))
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Size() > 2*start {
			t.Logf("the file grew from %d to %d bytes in %d commits while the backup stalled; the slowest took %s", start, info.Size(), i-9, slowest)
			break
		}
		if i > 500 {
			t.Fatalf("the file grew only from %d to %d bytes in 500 commits", start, info.Size())
		}
	}
	select {
	case err := <-backup:
		t.Fatalf("the backup ended (%v) while its reader stalled", err)
	default:
	}
}

func TestSaveBackupRefusesContentItsManifestDoesNotDescribe(t *testing.T) {
	dir := t.TempDir()
	backup, _, _ := backupFile(t, dir)
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	content := b[:len(b)-storage.ManifestSize]
	m, err := storage.ParseManifest(b[len(b)-storage.ManifestSize:])
	if err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Clone(content)
	damaged[len(damaged)/2] ^= 0xFF
	for _, tc := range []struct {
		name    string
		content []byte
		edit    func(*storage.Manifest)
		want    string
	}{
		{"content shorter than the manifest says is refused", content[:len(content)-1], nil, "the content ended after"},
		{"content longer than the manifest says is refused", append(bytes.Clone(content), 0), nil, "goes on past"},
		{"content whose digest is not the manifest's is refused", damaged, nil, "SHA-256"},
		{"a manifest of another revision is refused", content, func(m *storage.Manifest) { m.Revision++ }, "the content holds revision"},
		{"a manifest of another format is refused", content, func(m *storage.Manifest) { m.Format++ }, "format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kept.usher")
			if err := os.WriteFile(path, []byte("the old backup"), 0o600); err != nil {
				t.Fatal(err)
			}
			m := m
			if tc.edit != nil {
				tc.edit(&m)
			}
			err := bolt.SaveBackup(path, m, bytes.NewReader(tc.content))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("SaveBackup = %v, want an error saying %q", err, tc.want)
			}
			if got, _ := os.ReadFile(path); string(got) != "the old backup" {
				t.Errorf("the refused save left %d bytes at its path, want the old file", len(got))
			}
			if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
				t.Errorf("the directory holds %d files after the refused save, want 1", len(entries))
			}
		})
	}
}

func TestVerifyWantsEveryBucketButThoseOfLaterKinds(t *testing.T) {
	dir := t.TempDir()
	backup, rev, _ := backupFile(t, dir)
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	// without is a copy of the backup's content without bucket.
	without := func(bucket string) string {
		path := filepath.Join(dir, "without-"+bucket+".db")
		if err := os.WriteFile(path, b[:len(b)-storage.ManifestSize], 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket([]byte(bucket)) }); err != nil {
			t.Fatal(err)
		}
		return path
	}
	t.Run("a file written before admissions existed is whole", func(t *testing.T) {
		if got, err := bolt.Verify(without("admissions")); err != nil || got != rev {
			t.Errorf("Verify = %d, %v; want %d", got, err, rev)
		}
	})
	for _, bucket := range []string{"meta", "changes", "grants", "default_quotas"} {
		t.Run("a file without the "+bucket+" bucket is refused", func(t *testing.T) {
			want := fmt.Sprintf("bucket %q is missing", bucket)
			if got, err := bolt.Verify(without(bucket)); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Verify = %d, %v; want an error saying %q", got, err, want)
			}
		})
	}
}

func TestOpenRefusesABackupAndLeavesItWhole(t *testing.T) {
	dir := t.TempDir()
	backup, rev, _ := backupFile(t, dir)
	before, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	// usher serve --data, or usher migrate --from, given a backup rather
	// than a data file.
	s, err := bolt.Open(backup, bolt.Options{})
	if err == nil {
		s.Close()
		t.Error("Open of a backup succeeded")
	} else if want := fmt.Sprintf("is an Usher backup (revision %d), not a data file", rev); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "usher restore") {
		t.Errorf("Open of a backup = %v, want an error saying %q and to use usher restore", err, want)
	}
	if after, _ := os.ReadFile(backup); !bytes.Equal(before, after) {
		t.Error("Open wrote into the backup")
	}
	if _, err := bolt.VerifyBackup(backup); err != nil {
		t.Errorf("the backup no longer verifies: %v", err)
	}
}
