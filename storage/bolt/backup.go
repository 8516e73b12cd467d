package bolt

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// A backup file is a data file, its content, followed by the manifest that
// storage.Manifest describes: the content's format, revision, size and
// SHA-256. The content is a consistent copy that Open accepts as it is;
// Restore checks the manifest, the length, the digest and then the content
// (Verify) before it puts the content in place.

// Backup writes a backup's content, a consistent copy of the data file, to
// w while commits continue, and returns its manifest. begin, when not nil,
// is called with the manifest before the first byte, so that a stream can
// announce it; an error from begin or from w stops the copy and is
// returned.
//
// bbolt cannot remap its file while a read transaction is open, so a commit
// that needs the file to grow waits for every reader. The copy is therefore
// first written whole to an unnamed file beside the data file, at the disk's
// speed, and the transaction ends before w reads a byte: however slowly w
// reads, it holds up no commit. Until Backup returns, the copy takes as much
// disk space as the data file; a copy that would leave the disk less room
// than backupHeadroom is refused (storage.ErrNoRoom) before it is written,
// and copies are written one at a time.
func (s *Store) Backup(w io.Writer, begin func(storage.Manifest) error) (storage.Manifest, error) {
	snap, m, err := s.snapshot()
	if err != nil {
		return storage.Manifest{}, fmt.Errorf("storage: backup %s: %w", s.path, err)
	}
	defer snap.discard()
	if begin != nil {
		if err := begin(m); err != nil {
			return storage.Manifest{}, fmt.Errorf("storage: backup %s: %w", s.path, err)
		}
	}
	if _, err := io.Copy(w, io.NewSectionReader(snap.f, 0, m.Size)); err != nil {
		return storage.Manifest{}, fmt.Errorf("storage: backup %s: %w", s.path, err)
	}
	return m, nil
}

// backupHeadroom is the room on its disk, beyond its own, that a backup's
// copy leaves for the data file to grow into while the copy is held: at
// least minBackupHeadroom, and a quarter of the data file's size. A commit
// that finds the disk full stops every write until a restart (see update),
// so a copy that would leave less is refused.
func backupHeadroom(size int64) uint64 { return uint64(max(minBackupHeadroom, size/4)) }

const minBackupHeadroom = 64 << 20

// freeSpace is roomIn, a variable so that tests may play a full disk.
var freeSpace = roomIn

// snapshotPrefix names the copies Backup makes where a file cannot be made
// without a name; they are unlinked at once, and Open removes any that a
// crash left in between.
func snapshotPrefix(path string) string { return "." + filepath.Base(path) + ".backup-" }

// snapshot writes one read transaction to a temporary file and returns it
// with its manifest.
func (s *Store) snapshot() (*tempFile, storage.Manifest, error) {
	// One copy is taken at a time, so that each finds the room the copies
	// before it took already taken.
	s.copying.Lock()
	defer s.copying.Unlock()
	snap, err := createTemp(filepath.Dir(s.path), snapshotPrefix(s.path))
	if err != nil {
		return nil, storage.Manifest{}, err
	}
	if err := snap.unlink(); err != nil {
		snap.discard()
		return nil, storage.Manifest{}, err
	}
	m := storage.Manifest{Format: fileFormat}
	err = unpanicked(func() error {
		return s.db.View(func(tx *bbolt.Tx) error {
			var err error
			if m.Revision, err = storage.DecodeRevision(tx.Bucket(bucketMeta).Get(keyRevision)); err != nil {
				return err
			}
			m.Size = tx.Size()
			if free, ok := freeSpace(filepath.Dir(s.path)); ok && free < uint64(m.Size)+backupHeadroom(m.Size) {
				return fmt.Errorf("%w: a copy of the data file takes %d bytes, and %d more are kept for it to grow into meanwhile; its disk has %d",
					storage.ErrNoRoom, m.Size, backupHeadroom(m.Size), free)
			}
			_, err = tx.WriteTo(snap.f)
			return err
		})
	})
	if err != nil {
		snap.discard()
		return nil, storage.Manifest{}, closedAsErrClosed(err)
	}
	// Hashed from the copy, after the transaction, which is then as short
	// as the disk allows.
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(snap.f, 0, m.Size)); err != nil {
		snap.discard()
		return nil, storage.Manifest{}, err
	}
	h.Sum(m.SHA256[:0])
	return snap, m, nil
}

// SaveBackup writes a backup file at path: m.Size bytes of content read
// from r, then the manifest m. The file is checked as Restore would check
// it (the length, the digest, then the content) before it is put in place, atomically; until then it has
// no name (see ReplaceFile), so a failed or killed save leaves nothing
// behind, and a file already at path is kept.
func SaveBackup(path string, m storage.Manifest, r io.Reader) error {
	if m.Format != fileFormat {
		return fmt.Errorf("storage: save backup %s: the content is a data file of format %d; this version of Usher reads format %d", path, m.Format, fileFormat)
	}
	// A server's own data file, given as FILE, would be renamed away from
	// under it: every write it acknowledged after the backup would be lost
	// at its next start.
	release, err := holdAgainstServers(path)
	if err != nil {
		return fmt.Errorf("storage: save backup %s: %w: a backup there would replace its data file; name another file", path, err)
	}
	defer release()
	err = ReplaceFile(path, func(f *os.File) error {
		// Hashed as it is written, as Restore does, rather than read back.
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, m.Size+1))
		switch {
		case err != nil:
			return fmt.Errorf("after %d of %d bytes: %w", n, m.Size, err)
		case n < m.Size:
			return fmt.Errorf("the content ended after %d bytes, the manifest says %d", n, m.Size)
		case n > m.Size:
			return fmt.Errorf("the content goes on past the %d bytes the manifest says", m.Size)
		}
		if err := sameDigest(h.Sum(nil), m); err != nil {
			return err
		}
		if _, err := f.Write(m.Marshal()); err != nil {
			return err
		}
		return checkContent(f.Name(), m)
	})
	if err != nil {
		return fmt.Errorf("storage: save backup %s: %w", path, err)
	}
	return nil
}

// VerifyBackup checks the backup file at path as Restore does, and returns
// its manifest: the manifest, the file's length, the content's SHA-256,
// then the content as a data file (Verify), at the manifest's revision.
func VerifyBackup(path string) (storage.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return storage.Manifest{}, fmt.Errorf("storage: verify backup: %w", err)
	}
	defer f.Close()
	m, err := readManifest(f)
	if err == nil {
		err = checkDigest(io.NewSectionReader(f, 0, m.Size), m)
	}
	if err == nil {
		err = checkContent(path, m)
	}
	if err != nil {
		return storage.Manifest{}, fmt.Errorf("storage: verify backup %s: %w", path, err)
	}
	return m, nil
}

// readManifest reads and checks the manifest at the end of the backup file
// f, and the file's length against it. For a file without one, it says what
// the file seems to be instead.
func readManifest(f *os.File) (storage.Manifest, error) {
	info, err := f.Stat()
	if err != nil {
		return storage.Manifest{}, err
	}
	size := info.Size()
	tail := make([]byte, min(size, storage.ManifestSize))
	if _, err := f.ReadAt(tail, size-int64(len(tail))); err != nil {
		return storage.Manifest{}, err
	}
	m, err := storage.ParseManifest(tail)
	if errors.Is(err, storage.ErrNoManifest) {
		return storage.Manifest{}, withoutManifest(f, size)
	}
	if err != nil {
		return storage.Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	if m.Format != fileFormat {
		return storage.Manifest{}, fmt.Errorf("the backup holds a data file of format %d; this version of Usher reads format %d", m.Format, fileFormat)
	}
	if want := m.Size + storage.ManifestSize; size != want {
		return storage.Manifest{}, fmt.Errorf("the backup is %d bytes long; its manifest says %d of content and %d of manifest, %d in all",
			size, m.Size, storage.ManifestSize, want)
	}
	return m, nil
}

// withoutManifest explains a file that does not end with a manifest.
func withoutManifest(f *os.File, size int64) error {
	m, err := chooseMeta(f, size)
	if err != nil {
		return fmt.Errorf("not an Usher backup: %v, and it does not start as a data file (%v)", storage.ErrNoManifest, err)
	}
	content := int64(m.pages) * int64(m.pageSize)
	if size < content {
		return fmt.Errorf("the backup is cut off: %d bytes, its content alone takes %d", size, content)
	}
	if size < content+storage.ManifestSize {
		if next := make([]byte, 1); size > content {
			if _, err := f.ReadAt(next, content); err == nil && next[0] == ' ' {
				return fmt.Errorf("the backup is cut off: %d bytes, its content and manifest take %d", size, content+storage.ManifestSize)
			}
		}
	}
	return fmt.Errorf("it is a bare data file, not a backup: %v (make backups with usher backup)", storage.ErrNoManifest)
}

// checkDigest reads the content from r and compares its SHA-256 with the
// manifest's.
func checkDigest(r io.Reader, m storage.Manifest) error {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return err
	}
	return sameDigest(h.Sum(nil), m)
}

// sameDigest compares the content's SHA-256, got, with the manifest's.
func sameDigest(got []byte, m storage.Manifest) error {
	if !bytes.Equal(got, m.SHA256[:]) {
		return fmt.Errorf("the content's SHA-256 is %x, the manifest says %x: the backup is damaged", got, m.SHA256)
	}
	return nil
}

// checkContent verifies the data file in the first m.Size bytes of path and
// compares it with the manifest.
func checkContent(path string, m storage.Manifest) error {
	rev, size, err := verifyFile(path, m.Size)
	switch {
	case err != nil:
		return fmt.Errorf("the content is not a sound data file: %w", err)
	case size != m.Size:
		return fmt.Errorf("the content's pages take %d bytes, the manifest says %d", size, m.Size)
	case rev != m.Revision:
		return fmt.Errorf("the content holds revision %d, the manifest says %d", rev, m.Revision)
	}
	return nil
}

// Restore puts the content of the backup file at path, for a server to open
// there, and returns the revision it holds. The manifest and the file's
// length are checked first; the content is then copied beside path, its
// SHA-256 compared with the manifest's as it is copied, the copy verified
// (Verify), and only then renamed over path. Any failure leaves path as it
// was. Restore refuses while a process (a server) holds path and, unless
// replace is set, whenever path exists. A copy that replaces a readable
// data file at a later revision, or of a history other than the backup's
// (their change sets at its revision differ, or one log no longer holds
// it), goes on past that file's revision (see goOnAfter).
func Restore(backup, path string, replace bool) (authz.Revision, error) {
	f, err := os.Open(backup)
	if err != nil {
		return 0, fmt.Errorf("storage: restore: %w", err)
	}
	defer f.Close()
	m, err := readManifest(f)
	if err != nil {
		return 0, fmt.Errorf("storage: restore %s: %w", backup, err)
	}
	var replaced authz.Revision // the revision of the file replaced
	var last []byte             // its change set at replaced, if its log holds it
	kept, err := os.Stat(path)  // its mode and owner, which the copy takes
	if err == nil {
		if !replace {
			return 0, fmt.Errorf("storage: restore: %s exists, and replacing it was not asked for", path)
		}
		release, err := holdAgainstServers(path)
		if err != nil {
			return 0, fmt.Errorf("storage: restore: %s %w: stop it first", path, err)
		}
		defer release()
		// A damaged file's revision is 0, and its log is not read.
		replaced, last = headOf(path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("storage: restore: %w", err)
	}
	rev := m.Revision
	err = ReplaceFile(path, func(tmp *os.File) error {
		// What is verified is the copy, not the backup, which could
		// change meanwhile.
		if err := checkDigest(io.TeeReader(io.NewSectionReader(f, 0, m.Size), tmp), m); err != nil {
			return err
		}
		if err := checkContent(tmp.Name(), m); err != nil {
			return err
		}
		goOn := true
		switch {
		case replaced > m.Revision:
			rev = replaced + 1
		case replaced > 0 && (last == nil || !bytes.Equal(last, changeSetAt(tmp.Name(), replaced))):
			// The backup's history is not the replaced file's up to
			// its revision (a backup of another server's, or of this
			// one's before it was restored and went on otherwise): its
			// change sets of the numbers the file's clients hold do not
			// follow what they saw.
			rev = max(replaced+1, m.Revision)
		default:
			goOn = false
		}
		if goOn {
			if err := goOnAfter(tmp, rev); err != nil {
				return err
			}
		}
		if kept == nil {
			return nil
		}
		// The server runs as a user of its own: a restore run as
		// another (root) leaves it a file it can open, as it was.
		if err := tmp.Chmod(kept.Mode().Perm()); err != nil {
			return err
		}
		if err := takeOwner(tmp, kept); err != nil {
			return fmt.Errorf("giving the restored file the owner of %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("storage: restore %s to %s: %w", backup, path, err)
	}
	return rev, nil
}

// headOf is the revision of the data file at path, when its structure is
// sound and its change log ends there, else 0: a damaged file's revision
// is not trusted; and the stored change set at that revision, or nil when
// its log no longer holds it.
func headOf(path string) (rev authz.Revision, set []byte) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || checkMapped(f, info.Size()) != nil {
		return 0, nil
	}
	_ = viewShared(path, func(tx *bbolt.Tx) error {
		meta, log := tx.Bucket(bucketMeta), tx.Bucket(bucketChanges)
		if meta == nil || log == nil {
			return nil
		}
		r, err := storage.DecodeRevision(meta.Get(keyRevision))
		if err != nil {
			return err
		}
		last, err := storage.DecodeRevision(meta.Get(keyCompacted))
		k, v := log.Cursor().Last()
		if k != nil && err == nil {
			last, err = storage.DecodeRevision(k)
		}
		if err == nil && last == r {
			rev, set = r, bytes.Clone(v)
		}
		return err
	})
	return rev, set
}

// changeSetAt is the stored change set at rev of the data file at path,
// or nil when its log does not hold it or it cannot be read.
func changeSetAt(path string, rev authz.Revision) []byte {
	var out []byte
	_ = viewShared(path, func(tx *bbolt.Tx) error {
		if log := tx.Bucket(bucketChanges); log != nil {
			out = bytes.Clone(log.Get(storage.EncodeRevision(rev)))
		}
		return nil
	})
	return out
}

// viewShared reads the data file at path in one read transaction, the file
// opened shared and a panic of bbolt's on a damaged file made an error.
func viewShared(path string, read func(*bbolt.Tx) error) error {
	return unpanicked(func() error {
		db, err := openShared(path, DefaultLockTimeout)
		if err != nil {
			return err
		}
		defer db.Close()
		return db.View(read)
	})
}

// goOnAfter makes the restored data file tmp go on at rev, past the
// revisions of the file it replaces, which clients hold (Watch's
// after_revision, WatchCall's): its change log is compacted through rev,
// so that a client resuming from any of them is told to reload (ErrCompacted)
// rather than sent this history's own change sets of those numbers as if
// they followed what it saw. The backup keeps the log it had.
func goOnAfter(tmp *os.File, rev authz.Revision) error {
	// A named temporary file holds a shared lock, which bbolt's exclusive
	// one would wait for.
	unlock(tmp)
	defer lockShared(tmp)
	db, err := bbolt.Open(tmp.Name(), 0o600, &bbolt.Options{Timeout: DefaultLockTimeout})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(bucketChanges); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketChanges); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyCompacted, storage.EncodeRevision(rev)); err != nil {
			return err
		}
		return meta.Put(keyRevision, storage.EncodeRevision(rev))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("moving the restored file on to revision %d: %w", rev, err)
	}
	info, err := tmp.Stat()
	if err != nil {
		return err
	}
	if got, _, err := verifyFile(tmp.Name(), info.Size()); err != nil || got != rev {
		return fmt.Errorf("the restored file moved on to revision %d is not sound (revision %d): %v", rev, got, err)
	}
	return nil
}

// errInUse is holdAgainstServers' refusal.
var errInUse = errors.New("is in use, by a running server perhaps")

// holdAgainstServers keeps a server from opening the file at path, which is
// about to be replaced, until release is called, and refuses (errInUse)
// while one holds it. A shared bbolt lock conflicts with a server's
// exclusive one. The file may be a damaged data file, or no data file at
// all: bbolt only reads its meta pages here, and a file it cannot open,
// or a missing one, is replaced all the same.
func holdAgainstServers(path string) (release func(), err error) {
	db, err := openShared(path, DefaultLockTimeout)
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, errInUse
	}
	if err != nil {
		return func() {}, nil
	}
	return func() { db.Close() }, nil
}

// ReplaceFile creates or replaces the file at path with what write writes to
// f, atomically and durably: f is a temporary file in path's directory (see
// tempfile.go), fsync'd and renamed over path once write succeeds, and the
// directory is fsync'd after the rename, as is the parent of each directory
// made for it. A crash leaves the old file or the whole new one; a failed
// write, or a process killed at any point, leaves the old file and no
// temporary one, and a failed write no directory it made either. write may
// open f.Name() to inspect what it wrote before the rename.
func ReplaceFile(path string, write func(f *os.File) error) (err error) {
	dir := filepath.Dir(path)
	made := missingDirs(dir) // deepest first
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			for _, d := range made {
				os.Remove(d) // only if empty: nothing of anyone else's goes
			}
		}
	}()
	prefix := "." + filepath.Base(path) + ".tmp-"
	removeOrphans(dir, prefix)
	t, err := createTemp(dir, prefix)
	if err != nil {
		return err
	}
	if err := write(t.f); err != nil {
		t.discard()
		return err
	}
	if err := t.publish(path, prefix); err != nil {
		t.discard()
		return err
	}
	for _, d := range made {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}
