package bolt

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestATemporaryFileHasNoNameUntilItIsPublished(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("files without a name need Linux's O_TMPFILE")
	}
	dir := t.TempDir()
	tmp, err := createTemp(dir, ".x.tmp-")
	if err != nil {
		t.Fatal(err)
	}
	if tmp.name != "" {
		t.Fatalf("the temporary file is named %s: O_TMPFILE is not used here", tmp.name)
	}
	if _, err := tmp.f.WriteString("whole"); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Fatalf("the directory holds %v while the file is written, want nothing", got)
	}
	// Readers that take a path, as bbolt does, can open it.
	if b, err := os.ReadFile(tmp.f.Name()); err != nil || string(b) != "whole" {
		t.Fatalf("reading %s: %q, %v", tmp.f.Name(), b, err)
	}
	path := filepath.Join(dir, "x")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tmp.publish(path, ".x.tmp-"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "whole" || !slices.Equal(names(t, dir), []string{"x"}) {
		t.Errorf("after publish, %s holds %q and the directory %v", path, b, names(t, dir))
	}
}

// Where a temporary file has a name from the start, the next ReplaceFile
// removes those a killed process left, and only those.
func TestOrphanedTemporaryFilesAreRemovedAndLiveOnesKept(t *testing.T) {
	dir := t.TempDir()
	orphan := filepath.Join(dir, ".x.tmp-orphan")
	if err := os.WriteFile(orphan, []byte("left by a killed process"), 0o600); err != nil {
		t.Fatal(err)
	}
	live, err := os.CreateTemp(dir, ".x.tmp-")
	if err != nil {
		t.Fatal(err)
	}
	if err := lockShared(live); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, ".y.tmp-orphan")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceFile(filepath.Join(dir, "x"), func(f *os.File) error { return nil }); err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Base(live.Name()), ".y.tmp-orphan", "x"}
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Errorf("after ReplaceFile the directory holds %v, want %v: the orphan removed, the live file and another file's kept", got, want)
	}
	live.Close()
	removeOrphans(dir, ".x.tmp-")
	if got := names(t, dir); !slices.Equal(got, []string{".y.tmp-orphan", "x"}) {
		t.Errorf("once its process let go, the directory holds %v", got)
	}
}

// syncedDirs records, for the rest of t, the directories syncDir syncs.
func syncedDirs(t *testing.T) *[]string {
	var synced []string
	old := syncDir
	syncDir = func(dir string) error {
		synced = append(synced, dir)
		return old(dir)
	}
	t.Cleanup(func() { syncDir = old })
	return &synced
}

// A new data file's name, and the directories made for it, survive a power
// cut only once the directories that hold them are synced: a write
// committed to the file is acknowledged as durable.
func TestANewDataFileIsSyncedWhereItIsNamed(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "a", "b", "usher.db")
	synced := syncedDirs(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, dir := range []string{filepath.Join(root, "a", "b"), filepath.Join(root, "a"), root} {
		if !slices.Contains(*synced, dir) {
			t.Errorf("opening a new data file synced %q; want %q among them", *synced, dir)
		}
	}

	*synced = nil
	if s, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if len(*synced) != 0 {
		t.Errorf("opening an existing data file synced %q; want none", *synced)
	}
}

// A file ReplaceFile puts in directories it made is named durably in each.
func TestReplaceFileSyncsTheDirectoriesItMakes(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "x", "y", "backup.db")
	synced := syncedDirs(t)
	if err := ReplaceFile(path, func(f *os.File) error { _, err := f.WriteString("data"); return err }); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(root, "x", "y"), filepath.Join(root, "x"), root} {
		if !slices.Contains(*synced, dir) {
			t.Errorf("ReplaceFile into new directories synced %q; want %q among them", *synced, dir)
		}
	}
}
