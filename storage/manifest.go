package storage

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/usher-authz/usher/authz"
)

// A backup is a backend's data file, its content, followed by a manifest
// that says what the content is. The manifest is the last ManifestSize
// bytes of the file, text a person can read with `tail -c 256`:
//
//	<spaces padding the manifest to 256 bytes>
//	format 2
//	revision 1234
//	size 65536
//	sha256 <64 lowercase hex digits>
//	usher-backup 1
//
// The layout's version is the last line, so that a later layout, however
// long its manifest, is still recognised from the file's last bytes. Every
// field is checked against the content: the format against the backend's,
// the size against the file's length, the digest against the content's,
// the revision against the one the content holds. A manifest is refused
// unless it is exactly the one its fields would print, so no flipped bit in
// it goes unnoticed either.

// ManifestSize is the length of a backup's manifest in bytes.
const ManifestSize = 256

// BackupVersion is the layout of the backup files this version writes and
// reads.
const BackupVersion = 1

const manifestLast = "usher-backup "

// ErrNoManifest is returned by ParseManifest for bytes that do not end with
// a manifest's last line: the file is not a backup, or it is cut off.
var ErrNoManifest = errors.New("no backup manifest at the end")

// Manifest describes a backup's content.
type Manifest struct {
	// Format is the format of the backend's data file the content is.
	Format uint32
	// Revision is the revision the content holds.
	Revision authz.Revision
	// Size is the content's length in bytes.
	Size int64
	// SHA256 is the digest of the content.
	SHA256 [32]byte
}

// Marshal returns the manifest as it ends a backup file: ManifestSize bytes.
func (m Manifest) Marshal() []byte {
	fields := fmt.Sprintf("format %d\nrevision %d\nsize %d\nsha256 %s\n%s%d\n",
		m.Format, m.Revision, m.Size, hex.EncodeToString(m.SHA256[:]), manifestLast, BackupVersion)
	// The fields take at most 160 bytes, so the padding line always fits.
	pad := ManifestSize - len(fields) - 1
	return []byte(strings.Repeat(" ", pad) + "\n" + fields)
}

// ParseManifest reads the manifest that ends a backup: b must be its last
// ManifestSize bytes, or the whole file if it is shorter. It fails with
// ErrNoManifest when b does not end with a manifest's last line, and says
// which field is wrong otherwise.
func ParseManifest(b []byte) (Manifest, error) {
	lastLine := b
	if i := bytes.LastIndexByte(bytes.TrimSuffix(b, []byte("\n")), '\n'); i >= 0 {
		lastLine = b[i+1:]
	}
	version, ok := bytes.CutPrefix(lastLine, []byte(manifestLast))
	if !ok || !bytes.HasSuffix(version, []byte("\n")) {
		return Manifest{}, ErrNoManifest
	}
	if v := string(bytes.TrimSuffix(version, []byte("\n"))); v != strconv.Itoa(BackupVersion) {
		return Manifest{}, fmt.Errorf("the backup is of layout version %q; this version of Usher reads version %d", v, BackupVersion)
	}
	if len(b) != ManifestSize {
		return Manifest{}, fmt.Errorf("the manifest is %d bytes long, want %d", len(b), ManifestSize)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 6 {
		return Manifest{}, fmt.Errorf("the manifest has %d lines, want 6", len(lines))
	}
	field := func(line int, name string, bits int) (uint64, error) {
		v, ok := strings.CutPrefix(lines[line], name+" ")
		if !ok {
			return 0, fmt.Errorf("manifest line %d: %q, want %s and its value", line+1, lines[line], name)
		}
		n, err := strconv.ParseUint(v, 10, bits)
		if err != nil {
			return 0, fmt.Errorf("manifest line %d: %s %q is not a number", line+1, name, v)
		}
		return n, nil
	}
	var m Manifest
	format, err := field(1, "format", 32)
	if err != nil {
		return Manifest{}, err
	}
	rev, err := field(2, "revision", 64)
	if err != nil {
		return Manifest{}, err
	}
	size, err := field(3, "size", 63)
	if err != nil {
		return Manifest{}, err
	}
	m.Format, m.Revision, m.Size = uint32(format), authz.Revision(rev), int64(size)
	digest, ok := strings.CutPrefix(lines[4], "sha256 ")
	if n, err := hex.Decode(m.SHA256[:], []byte(digest)); !ok || err != nil || n != len(m.SHA256) {
		return Manifest{}, fmt.Errorf("manifest line 5: %q, want sha256 and 64 hex digits", lines[4])
	}
	if !bytes.Equal(m.Marshal(), b) {
		return Manifest{}, errors.New("the manifest is not as its fields print: a byte of it is damaged")
	}
	return m, nil
}
