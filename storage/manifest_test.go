package storage_test

import (
	"bytes"
	"crypto/sha256"
	"math"
	"strings"
	"testing"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

func exampleManifest() storage.Manifest {
	return storage.Manifest{Format: 2, Revision: 1234, Size: 65536, SHA256: sha256.Sum256([]byte("content"))}
}

func TestManifestRoundTrips(t *testing.T) {
	for _, m := range []storage.Manifest{
		exampleManifest(),
		{},
		{Format: math.MaxUint32, Revision: authz.Revision(math.MaxUint64), Size: math.MaxInt64, SHA256: [32]byte{0xff}},
	} {
		b := m.Marshal()
		if len(b) != storage.ManifestSize {
			t.Fatalf("Marshal(%+v) is %d bytes, want %d", m, len(b), storage.ManifestSize)
		}
		got, err := storage.ParseManifest(b)
		if err != nil || got != m {
			t.Errorf("ParseManifest(Marshal(%+v)) = %+v, %v", m, got, err)
		}
	}
	if b := exampleManifest().Marshal(); !bytes.HasSuffix(b, []byte("\nformat 2\nrevision 1234\nsize 65536\nsha256 ed7002b439e9ac845f22357d822bac1444730fbdb6016d3ec9432297b9ec9f73\nusher-backup 1\n")) {
		t.Errorf("the manifest reads\n%s", b)
	}
}

func TestManifestRefusals(t *testing.T) {
	good := exampleManifest().Marshal()
	// replace keeps the manifest's length by taking from or adding to its
	// padding.
	replace := func(old, new string) []byte {
		b := strings.Replace(string(good), old, new, 1)
		if d := len(b) - len(good); d > 0 {
			b = b[d:]
		} else {
			b = strings.Repeat(" ", -d) + b
		}
		return []byte(b)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"bytes that do not end with the manifest's last line are no manifest", bytes.Repeat([]byte{0}, 256), storage.ErrNoManifest.Error()},
		{"an empty file has no manifest", nil, storage.ErrNoManifest.Error()},
		{"a later layout is named", replace("usher-backup 1", "usher-backup 2"), `layout version "2"`},
		{"a manifest cut short is refused", good[10:], "is 246 bytes long"},
		{"a field out of place is refused", replace("format 2\nrevision 1234", "revision 1234\nformat 2"), "want format"},
		{"a field that is not a number is refused", replace("size 65536", "size 6553x"), `size "6553x" is not a number`},
		{"a revision past 64 bits is refused", replace("revision 1234", "revision 99999999999999999999"), "is not a number"},
		{"a digest in capitals is refused: it is not as the fields print", replace("sha256 ed", "sha256 ED"), "damaged"},
		{"a number with a leading zero is refused", replace(" \nformat 2", "\nformat 02"), "damaged"},
		{"a short digest is refused", replace("sha256 ed", "sha256  "), "want sha256 and 64 hex digits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := storage.ParseManifest(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseManifest = %+v, %v; want an error saying %q", m, err, tc.want)
			}
		})
	}
}

// A flipped bit either spoils the manifest or changes a field, which the
// checks against the content then catch; it never leaves the same manifest.
func TestEveryFlippedBitOfAManifestIsRefusedOrChangesAField(t *testing.T) {
	m := exampleManifest()
	good := m.Marshal()
	refused := 0
	for bit := range len(good) * 8 {
		b := bytes.Clone(good)
		b[bit/8] ^= 1 << (bit % 8)
		got, err := storage.ParseManifest(b)
		if err != nil {
			refused++
			continue
		}
		if got == m {
			t.Errorf("bit %d flipped: the manifest still parses as the original", bit)
		}
	}
	t.Logf("%d of %d flipped bits refused, the others change a field", refused, len(good)*8)
}

func FuzzParseManifest(f *testing.F) {
	f.Add(exampleManifest().Marshal())
	f.Add([]byte("usher-backup 1\n"))
	f.Add([]byte("format 2\nusher-backup 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := storage.ParseManifest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(m.Marshal(), b) {
			t.Fatalf("%q parses as %+v, which prints otherwise", b, m)
		}
	})
}
