package bolt

import (
	"os"

	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// release hands back the memory of the first size bytes of the file that
// tx's database maps: the pages a load read through bbolt's map, every page
// of the file, which the index now holds in its own form. Dropped from the
// map, they stop counting in the process's resident memory; dropped from the
// page cache, they stop taking the machine's. Nothing is lost: a later read
// faults a page in again from the file. tx holds bbolt's map in place.
func release(tx *bbolt.Tx, size int64) {
	db := tx.DB()
	// The arguments are plain numbers, so the map's address needs no
	// conversion to a pointer. Either call failing only leaves the pages
	// where they were.
	unix.Syscall(unix.SYS_MADVISE, db.Info().Data, uintptr(size), unix.MADV_DONTNEED)
	if f, err := os.Open(db.Path()); err == nil {
		unix.Fadvise(int(f.Fd()), 0, size, unix.FADV_DONTNEED)
		f.Close()
	}
}
