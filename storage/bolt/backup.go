package bolt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// Backup writes a consistent copy of the data file to w while commits
// continue, and returns the revision the copy holds. The copy is one bbolt
// read transaction written out whole (tx.WriteTo), so it is a data file that
// Open accepts as it is. begin, when not nil, is called before the first
// byte with the revision and the copy's size, so that a stream can announce
// them; an error from begin or from w stops the copy and is returned.
//
// bbolt cannot remap its file while a read transaction is open, so a commit
// that needs the file to grow waits until the copy is written: a slow reader
// of a backup holds up such writes.
func (s *Store) Backup(w io.Writer, begin func(rev authz.Revision, size int64) error) (authz.Revision, error) {
	var rev authz.Revision
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		if rev, err = storage.DecodeRevision(tx.Bucket(bucketMeta).Get(keyRevision)); err != nil {
			return err
		}
		if begin != nil {
			if err := begin(rev, tx.Size()); err != nil {
				return err
			}
		}
		_, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("storage: backup %s: %w", s.path, closedAsErrClosed(err))
	}
	return rev, nil
}

// Verify checks that path holds a whole Usher data file and returns its
// revision: the file is as long as its meta page says, every bucket Open
// creates is there, every entity decodes, the change log ends at the
// revision, and bbolt's own consistency check passes. It opens the file
// read-only and changes nothing; it fails after DefaultLockTimeout if a
// server holds the file.
//
// bbolt trusts its pages and panics, or faults, on some corruptions; Verify
// reads every page itself first and turns those into errors, so that bbolt's
// checker, which runs on a goroutine of its own, meets only a file that
// reads. A file crafted to pass the one and crash the other is not guarded
// against.
func Verify(path string) (authz.Revision, error) {
	info, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("storage: verify: %w", err)
	}
	var rev authz.Revision
	err = unpanicked(func() error {
		// Open reads only the meta pages; the freelist, which a cut-off
		// file lacks, is loaded by the second Open, once the length is
		// known to be right.
		opts := &bbolt.Options{ReadOnly: true, Timeout: DefaultLockTimeout}
		db, err := bbolt.Open(path, 0o600, opts)
		if errors.Is(err, berrors.ErrTimeout) {
			return fmt.Errorf("another process is using it: %w", err)
		}
		if err != nil {
			return fmt.Errorf("not a bbolt data file: %w", err)
		}
		var size int64
		db.View(func(tx *bbolt.Tx) error { size = tx.Size(); return nil })
		db.Close()
		if size > info.Size() {
			return fmt.Errorf("the file is cut off: %d bytes of %d", info.Size(), size)
		}
		opts.PreLoadFreelist = true
		if db, err = bbolt.Open(path, 0o600, opts); err != nil {
			return err
		}
		defer db.Close()
		return db.View(func(tx *bbolt.Tx) error {
			var err error
			if rev, err = verifyContents(tx); err != nil {
				return err
			}
			// The checker runs until its channel is drained; the first
			// problem is enough to refuse the file.
			var problem error
			for err := range tx.Check() {
				if problem == nil {
					problem = err
				}
			}
			if problem != nil {
				return fmt.Errorf("bbolt check: %w", problem)
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("storage: verify %s: %w", path, err)
	}
	return rev, nil
}

// verifyContents reads every page of every bucket, decoding every record,
// and returns the revision.
func verifyContents(tx *bbolt.Tx) (authz.Revision, error) {
	for _, name := range allBuckets() {
		if tx.Bucket(name) == nil {
			return 0, fmt.Errorf("bucket %q is missing: not an Usher data file", name)
		}
	}
	meta := tx.Bucket(bucketMeta)
	if f := meta.Get(keyFormat); len(f) != 1 || f[0] != fileFormat {
		return 0, fmt.Errorf("the file is in format %v, not %d", f, fileFormat)
	}
	rev, err := storage.DecodeRevision(meta.Get(keyRevision))
	if err != nil {
		return 0, err
	}
	compacted, err := storage.DecodeRevision(meta.Get(keyCompacted))
	if err != nil {
		return 0, err
	}
	b := authz.NewBuilder(authz.SystemClock{})
	if err := loadEntities(context.Background(), tx, b); err != nil {
		return 0, err
	}
	if _, err := b.Build(rev); err != nil {
		return 0, err
	}
	last := compacted
	err = tx.Bucket(bucketChanges).ForEach(func(k, v []byte) error {
		r, err := storage.DecodeRevision(k)
		if err != nil {
			return err
		}
		if r != last+1 {
			return fmt.Errorf("revision %d follows %d", r, last)
		}
		if _, err := storage.DecodeChangeSet(v); err != nil {
			return fmt.Errorf("revision %d: %w", r, err)
		}
		last = r
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("change log: %w", err)
	}
	if last != rev {
		return 0, fmt.Errorf("the change log ends at revision %d, the file is at %d", last, rev)
	}
	return rev, nil
}

// unpanicked runs fn, turning a panic or a memory fault (a page beyond the
// end of a mapped file) into an error.
func unpanicked(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("corrupt: %v", p)
		}
	}()
	return fn()
}

// Restore puts a copy of the backup file at path, for a server to open there,
// and returns the revision it holds. The backup is verified first. Restore
// refuses while a process (a server) holds path and, unless replace is set,
// whenever path exists. The copy is written to a temporary file beside path,
// fsync'd and renamed over it, so a crash leaves either the old file or the
// whole new one.
func Restore(backup, path string, replace bool) (authz.Revision, error) {
	rev, err := Verify(backup)
	if err != nil {
		return 0, err
	}
	if _, err := os.Stat(path); err == nil {
		if !replace {
			return 0, fmt.Errorf("storage: restore: %s exists, and replacing it was not asked for", path)
		}
		// A shared bbolt lock conflicts with a server's exclusive one and is
		// held until the new file is in place.
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: DefaultLockTimeout})
		if errors.Is(err, berrors.ErrTimeout) {
			return 0, fmt.Errorf("storage: restore: %s is in use, by a running server perhaps: stop it first", path)
		}
		if err == nil {
			defer db.Close()
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("storage: restore: %w", err)
	}
	err = ReplaceFile(path, func(f *os.File) error {
		src, err := os.Open(backup)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(f, src)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("storage: restore %s to %s: %w", backup, path, err)
	}
	return rev, nil
}

// ReplaceFile creates or replaces the file at path with what write writes to
// f, atomically and durably: f is a temporary file in path's directory,
// fsync'd and renamed over path once write succeeds, and the directory is
// fsync'd after the rename. A crash leaves the old file or the whole new one;
// a failed write leaves the old file and no temporary one. write may read
// f.Name() to inspect what it wrote before the rename.
func ReplaceFile(path string, write func(f *os.File) error) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory, which makes a rename into it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
