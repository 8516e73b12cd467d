//go:build unix

package server

import "syscall"

// fdLimit is the process's limit on open file descriptors (the soft one,
// which Go raises to the hard one at start-up).
func fdLimit() (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || int64(l.Cur) < 0 { // RLIM_INFINITY
		return 0, false
	}
	return uint64(l.Cur), true
}
