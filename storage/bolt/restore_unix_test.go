//go:build unix

package bolt_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/usher-authz/usher/storage/bolt"
)

// The server runs as a user of its own: a restore over its data file, run
// as another (root), must leave it a file it can open, as it was.
func TestRestoreOverAFileKeepsItsModeAndOwner(t *testing.T) {
	dir := t.TempDir()
	backup, _, _ := backupFile(t, dir)
	path := filepath.Join(dir, "data", "usher.db")
	openStore(t, path).Close()
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 65532, 65532
		if err := os.Chown(path, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bolt.Restore(backup, path, true); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o640 {
		t.Errorf("the restored file's mode is %v, want the replaced file's %v", info.Mode().Perm(), os.FileMode(0o640))
	}
	if st := info.Sys().(*syscall.Stat_t); int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("the restored file is owned by %d:%d, want the replaced file's %d:%d", st.Uid, st.Gid, uid, gid)
	}
}
