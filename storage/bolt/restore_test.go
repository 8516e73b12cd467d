package bolt_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
)

// restoreRefuses restores the backup in b over an existing data file and
// fails the test unless Restore refuses with an error saying want and leaves
// the data file and its directory as they were.
func restoreRefuses(t *testing.T, b []byte, want string) {
	t.Helper()
	dir := t.TempDir()
	backup := filepath.Join(dir, "backup.usher")
	if err := os.WriteFile(backup, b, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data", "usher.db")
	openStore(t, data).Close()
	before, _ := os.ReadFile(data)
	rev, err := bolt.Restore(backup, data, true)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Restore = %d, %v; want an error saying %q", rev, err, want)
	} else {
		t.Logf("refused: %v", err)
	}
	if after, _ := os.ReadFile(data); !bytes.Equal(before, after) {
		t.Error("the refused restore changed the data file")
	}
	if entries, _ := os.ReadDir(filepath.Dir(data)); len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("the data directory holds %v after the refused restore, want only usher.db", names)
	}
}

// withManifest returns content followed by its manifest, changed by edit.
func withManifest(content []byte, m storage.Manifest, edit func(*storage.Manifest)) []byte {
	if edit != nil {
		edit(&m)
	}
	return append(bytes.Clone(content), m.Marshal()...)
}

func TestRestoreRefusesWhatIsNotAWholeBackup(t *testing.T) {
	dir := t.TempDir()
	path, _, _ := backupFile(t, dir)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	content := good[:len(good)-storage.ManifestSize]
	m, err := storage.ParseManifest(good[len(content):])
	if err != nil {
		t.Fatal(err)
	}
	flipped := func(b []byte, at int) []byte {
		b = bytes.Clone(b)
		b[at] ^= 0x10
		return b
	}
	// A content whose own bytes are damaged, under a manifest made for it:
	// what a backup of a damaged data file would be. Its root bucket's page
	// (the meta page's root, after a 16-byte page header and 16 bytes of
	// magic, version, page size and flags) is zeroed.
	damaged := bytes.Clone(content)
	pageSize, root := binary.LittleEndian.Uint32(content[24:]), binary.LittleEndian.Uint64(content[32:])
	clear(damaged[root*uint64(pageSize) : (root+1)*uint64(pageSize)])
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bbolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("keys")); return err })
	db.Close()
	foreignContent, _ := os.ReadFile(foreign)

	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"a flipped bit in the content is refused", flipped(good, len(content)/2), "SHA-256"},
		{"a flipped bit in the manifest's digest is refused", withManifest(content, m, func(m *storage.Manifest) { m.SHA256[7] ^= 4 }), "SHA-256"},
		{"a manifest naming another revision is refused", withManifest(content, m, func(m *storage.Manifest) { m.Revision++ }),
			fmt.Sprintf("the content holds revision %d, the manifest says %d", m.Revision, m.Revision+1)},
		{"a backup cut off in its content is refused", good[:len(content)/2], "the backup is cut off"},
		{"a backup cut off in its manifest is refused", good[:len(good)-100], "the backup is cut off"},
		{"a backup with bytes added is refused", append(append(bytes.Clone(content), 0), m.Marshal()...), "the backup is " + fmt.Sprint(len(good)+1) + " bytes long"},
		{"a bare data file is refused", content, "a bare data file, not a backup"},
		{"a file that is neither is refused", bytes.Repeat([]byte("not a backup\n"), 1000), "not an Usher backup"},
		{"an empty file is refused", nil, "not an Usher backup"},
		{"a backup of a later layout is refused", bytes.Replace(good, []byte("usher-backup 1\n"), []byte("usher-backup 2\n"), 1), `layout version "2"`},
		{"a backup of another data format is refused", withManifest(content, m, func(m *storage.Manifest) { m.Format = 3 }), "format 3"},
		{"a damaged content under a manifest made for it is refused", withManifest(damaged, m, func(m *storage.Manifest) { m.SHA256 = sha256.Sum256(damaged) }),
			"the content is not a sound data file"},
		{"a bbolt file of something else is refused", withManifest(foreignContent, m, func(m *storage.Manifest) {
			m.Size, m.SHA256 = int64(len(foreignContent)), sha256.Sum256(foreignContent)
		}), `bucket "meta" is missing`},
	} {
		t.Run(tc.name, func(t *testing.T) { restoreRefuses(t, tc.b, tc.want) })
	}
}

// One flipped bit anywhere, or a cut anywhere, and the backup is refused.
func TestRestoreRefusesEveryDamagedBackup(t *testing.T) {
	dir := t.TempDir()
	path, _, _ := backupFile(t, dir)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data", "usher.db")
	openStore(t, data).Close()
	before, _ := os.ReadFile(data)
	r := rand.New(rand.NewPCG(2026, 11))
	reasons := map[string]int{}
	const flips, cuts = 300, 50
	for i := range flips + cuts {
		b := bytes.Clone(good)
		what := ""
		if i < flips {
			bit := r.IntN(len(b) * 8)
			b[bit/8] ^= 1 << (bit % 8)
			what = fmt.Sprintf("bit %d flipped", bit)
		} else {
			b = b[:r.IntN(len(b))]
			what = fmt.Sprintf("cut off after %d bytes", len(b))
		}
		backup := filepath.Join(dir, "damaged.usher")
		if err := os.WriteFile(backup, b, 0o600); err != nil {
			t.Fatal(err)
		}
		rev, err := bolt.Restore(backup, data, true)
		if err == nil {
			t.Fatalf("%s: Restore accepted the backup, at revision %d", what, rev)
		}
		reason := err.Error()[strings.LastIndex(err.Error(), ": ")+2:]
		switch {
		case strings.Contains(err.Error(), "SHA-256"):
			reason = "the digest differs"
		case strings.Contains(err.Error(), "cut off"):
			reason = "cut off"
		}
		reasons[reason]++
	}
	if after, _ := os.ReadFile(data); !bytes.Equal(before, after) {
		t.Error("a refused restore changed the data file")
	}
	t.Logf("%d damaged backups refused: %v", flips+cuts, reasons)
}
