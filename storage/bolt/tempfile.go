package bolt

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// A file that Usher writes whole and then puts in place (a backup, a
// restored data file) is written as a temporary file in the directory it
// will be in, since a rename is atomic only within one. A process killed
// while writing it must leave nothing behind. On Linux the temporary file
// is made with O_TMPFILE: it has no name until it is whole, so a kill
// leaves nothing, and it gets one only for the instant between its link and
// its rename over the destination. Elsewhere, and on file systems without
// O_TMPFILE, it is named ".NAME.tmp-RANDOM" from the start.
//
// A named temporary file holds a shared flock for as long as its process
// has it open, and the next ReplaceFile into the same directory removes
// those whose lock it can take, which only a dead process's can be. The lock
// is shared so that bbolt, which takes its own shared lock to read a file,
// can verify the file while it is being written.

// tempFile is a file being written in dir.
type tempFile struct {
	f    *os.File
	dir  string
	name string // its path while it has a name, else ""
}

// createTemp makes a temporary file in dir; a named one's name starts with
// prefix.
func createTemp(dir, prefix string) (*tempFile, error) {
	if f, err := createUnnamed(dir); err == nil {
		return &tempFile{f: f, dir: dir}, nil
	}
	f, err := os.CreateTemp(dir, prefix+"*")
	if err != nil {
		return nil, err
	}
	if err := lockShared(f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &tempFile{f: f, dir: dir, name: f.Name()}, nil
}

// unlink takes a named file's name away at once, for a file that is only
// ever read through f; an unnamed one has none to take.
func (t *tempFile) unlink() error {
	if t.name == "" {
		return nil
	}
	name := t.name
	t.name = ""
	return os.Remove(name)
}

// publish makes the file durable and puts it at path, replacing what is
// there, atomically and durably; prefix is that of the temporary names.
func (t *tempFile) publish(path, prefix string) error {
	if err := t.f.Sync(); err != nil {
		return err
	}
	if t.name == "" {
		var suffix [8]byte
		rand.Read(suffix[:])
		name := filepath.Join(t.dir, prefix+hex.EncodeToString(suffix[:]))
		// Taken before the file has a name, so that a ReplaceFile that
		// sees the name also sees it is in use.
		if err := lockShared(t.f); err != nil {
			return err
		}
		if err := linkUnnamed(t.f, name); err != nil {
			return fmt.Errorf("naming the temporary file: %w", err)
		}
		t.name = name
	}
	if err := os.Rename(t.name, path); err != nil {
		return err
	}
	t.name = ""
	if err := t.f.Close(); err != nil {
		return err
	}
	return syncDir(t.dir)
}

// discard closes the file and removes it if it has a name.
func (t *tempFile) discard() {
	t.f.Close()
	if t.name != "" {
		os.Remove(t.name)
	}
}

// removeOrphans removes the temporary files named with prefix in dir that
// no live process holds: those a killed process left.
func removeOrphans(dir, prefix string) {
	names, _ := filepath.Glob(filepath.Join(dir, globEscape(prefix)+"*"))
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		if tryLockExclusive(f) {
			os.Remove(name)
		}
		f.Close()
	}
}

// globEscape escapes the characters filepath.Match treats specially.
func globEscape(s string) string {
	var out []byte
	for i := range len(s) {
		switch s[i] {
		case '*', '?', '[', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// missingDirs are the directories that os.MkdirAll(dir) would make, deepest
// first.
func missingDirs(dir string) []string {
	var made []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == filepath.Dir(d) {
			return made
		}
		made = append(made, d)
	}
}

// syncEntries makes a new file at path durable where it is named: the
// directory that holds it, and the parent of each directory in made (made
// for it, deepest first), are fsync'd.
func syncEntries(path string, made []string) error {
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	for _, d := range made {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a directory, which makes a new name in it durable. A
// variable, so that tests may see which directories are synced.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
