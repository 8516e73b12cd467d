package bolt

import (
	"fmt"
	"os"

	"go.etcd.io/bbolt"

	"github.com/usher-authz/usher/authz"
)

// A commit that fails once bbolt has begun writing the file leaves the file
// in doubt. bbolt writes the meta page with pwrite, which a shared memory
// map sees at once, and only then fdatasyncs it: when that sync fails, the
// next transaction builds on a commit reported failed whose pages the disk
// may never get (Linux marks them clean after a failed writeback), and a
// later commit would be acknowledged on top of them. So the store is
// fail-stop for writes, as PostgreSQL is after a failed fsync: after such a
// failure it refuses every write until the file is reopened, which reads it
// from the disk afresh; reads go on meanwhile. Which step failed does not
// show in bbolt's error, so every failure of Commit counts; an error of the
// transaction's own work, before bbolt writes anything, does not.

// update runs fn in a bbolt write transaction and commits it, unless an
// earlier commit failed. It runs with the writer held.
func (s *Store) update(fn func(*bbolt.Tx) error) error {
	if err := s.stopped.Load(); err != nil {
		return *err
	}
	var txid int
	planned := false // fn's work is done: what fails after it is the commit
	err := s.db.Update(func(tx *bbolt.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		txid, planned = tx.ID(), true
		return nil
	})
	if err == nil || !planned {
		return err
	}
	refusal := fmt.Errorf("writes are refused since a commit failed (%v): %w", err, authz.ErrWritesStopped)
	s.stopped.Store(&refusal)
	if s.reached(txid) {
		return fmt.Errorf("%w, after the commit reached the file (%w); writes are refused from now on: %w",
			err, authz.ErrOutcomeUnknown, authz.ErrWritesStopped)
	}
	return fmt.Errorf("%w; writes are refused from now on: %w", err, authz.ErrWritesStopped)
}

// reached reports whether the file, read afresh, is at transaction txid or
// later: a failed commit wrote its meta page, and opening the file would
// show it, though the disk may not hold it. A file it cannot read may have.
func (s *Store) reached(txid int) bool {
	f, err := os.Open(s.path)
	if err != nil {
		return true
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return true
	}
	m, err := chooseMeta(f, info.Size())
	return err != nil || m.txid >= uint64(txid)
}

// WritesStopped returns why the store refuses every write until it is
// reopened, or nil while it takes writes.
func (s *Store) WritesStopped() error {
	if err := s.stopped.Load(); err != nil {
		return fmt.Errorf("storage: %s: %w", s.path, *err)
	}
	return nil
}
