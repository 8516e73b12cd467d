package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// Verify checks that path holds a whole Usher data file and returns its
// revision: the file is as long as its meta page says, its pages are sound
// (checkPages), every bucket Open creates is there, every entity decodes,
// the change log ends at the revision, and bbolt's own consistency check
// passes. It opens the file read-only and changes nothing; it fails after
// DefaultLockTimeout if a server holds the file.
func Verify(path string) (authz.Revision, error) {
	info, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("storage: verify: %w", err)
	}
	rev, _, err := verifyFile(path, info.Size())
	if err != nil {
		return 0, fmt.Errorf("storage: verify %s: %w", path, err)
	}
	return rev, nil
}

// verifyFile is Verify of the data file in the first limit bytes of path,
// which may go on (a backup's manifest follows its content). It returns the
// revision and the size the data file's pages take.
//
// bbolt's checker runs on a goroutine of its own, where a panic could not
// be recovered; checkPages has made sure it meets only sound pages.
func verifyFile(path string, limit int64) (rev authz.Revision, size int64, err error) {
	err = unpanicked(func() error {
		opts := &bbolt.Options{ReadOnly: true, Timeout: DefaultLockTimeout}
		db, err := bbolt.Open(path, 0o600, opts)
		if errors.Is(err, berrors.ErrTimeout) {
			return fmt.Errorf("another process is using it: %w", err)
		}
		if err != nil {
			return fmt.Errorf("not a bbolt data file: %w", err)
		}
		f, err := os.Open(path)
		if err == nil {
			err = checkMapped(f, limit)
			f.Close()
		}
		db.Close()
		if err != nil {
			return err
		}
		// The free list is loaded only now that it is known to be sound.
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
			size = tx.Size()
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
	return rev, size, err
}

// verifyContents reads every page of every bucket, decoding every record,
// and returns the revision.
func verifyContents(tx *bbolt.Tx) (authz.Revision, error) {
	// loadEntities checks the buckets of the kinds.
	for _, name := range [][]byte{bucketMeta, bucketChanges} {
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
	if err := logEndsAt(last, rev); err != nil {
		return 0, err
	}
	return rev, nil
}

// logEndsAt refuses a file whose change log ends at last (its compaction
// point when it is empty) while the file says it is at rev: damage that
// still decodes, after which the next commit would reuse a revision the
// log holds, overwriting its change set, or leave a gap no watcher gets
// past.
func logEndsAt(last, rev authz.Revision) error {
	if last != rev {
		return fmt.Errorf("the change log ends at revision %d, the file says it is at %d", last, rev)
	}
	return nil
}

// openShared opens path read-only, which takes bbolt's shared lock: it
// fails with berrors.ErrTimeout after timeout while a writer holds the file.
// bbolt reads only the meta pages here.
func openShared(path string, timeout time.Duration) (db *bbolt.DB, err error) {
	err = unpanicked(func() error {
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: timeout})
		return err
	})
	return db, err
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
