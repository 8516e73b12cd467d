package bolt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/usher-authz/usher/storage"
)

// A backup's copy on a disk it would fill leaves commits nowhere to grow
// the data file, and the first that fails stops every write until a
// restart: such a backup is refused before it copies anything.
func TestABackupWithoutRoomOnItsDiskIsRefusedBeforeItCopies(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "usher.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Commit(context.Background(), grantWrite("user:a", 0)); err != nil {
		t.Fatal(err)
	}
	m, err := s.Backup(&bytes.Buffer{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	room := uint64(m.Size) + backupHeadroom(m.Size)
	old := freeSpace
	t.Cleanup(func() { freeSpace = old })
	freeSpace = func(string) (uint64, bool) { return room - 1, true }

	var buf bytes.Buffer
	began := false
	if _, err := s.Backup(&buf, func(storage.Manifest) error { began = true; return nil }); !errors.Is(err, storage.ErrNoRoom) {
		t.Fatalf("Backup with %d bytes free for a copy of %d = %v, want ErrNoRoom", room-1, m.Size, err)
	} else {
		t.Logf("refused: %v", err)
	}
	if began || buf.Len() > 0 {
		t.Errorf("the refused backup began (%v) and wrote %d bytes", began, buf.Len())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the data directory holds %d files after the refused backup, want only usher.db", len(entries))
	}
	if _, err := s.Commit(context.Background(), grantWrite("user:b", 0)); err != nil {
		t.Errorf("a commit after the refused backup: %v", err)
	}

	freeSpace = func(string) (uint64, bool) { return 2 * room, true }
	if _, err := s.Backup(&buf, nil); err != nil {
		t.Errorf("Backup with room for the copy and its headroom: %v", err)
	}
}
