package authz

import (
	"runtime"

	"golang.org/x/sys/unix"
)

const hugePage = 2 << 20

// collapse asks the kernel to back a's memory with huge pages: the huge
// pages it overlaps, whose other parts hold other memory of the heap, which
// stays what it was too. The kernel may refuse (EAGAIN or ENOMEM when no
// huge page is free, EINVAL where huge pages are turned off): the memory
// then stays as it was, and the error only tells a test why.
func collapse(a hugeArray) error {
	start := uintptr(a.p) &^ (hugePage - 1)
	end := (uintptr(a.p) + a.n + hugePage - 1) &^ (hugePage - 1)
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_COLLAPSE)
	runtime.KeepAlive(a.p)
	if errno != 0 {
		return errno
	}
	return nil
}
