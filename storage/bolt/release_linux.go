package bolt

import (
	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// release drops from this process's map the first size bytes of the file
// that tx's database maps: the pages a load read through bbolt's map, every
// page of the file, which the index now holds in its own form. They stop
// counting in the process's resident memory and stay in the page cache,
// which the kernel reclaims as it needs; a later read faults a page in
// again. tx holds bbolt's map in place.
func release(tx *bbolt.Tx, size int64) {
	// The arguments are plain numbers, so the map's address needs no
	// conversion to a pointer. A failure only leaves the pages where they
	// were.
	unix.Syscall(unix.SYS_MADVISE, tx.DB().Info().Data, uintptr(size), unix.MADV_DONTNEED)
}
