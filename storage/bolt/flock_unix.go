//go:build unix

package bolt

import (
	"os"
	"syscall"
)

// lockShared takes a shared flock on f, held until f is closed.
func lockShared(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_SH)
}

// tryLockExclusive takes an exclusive flock on f if no one else holds one.
func tryLockExclusive(f *os.File) bool {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}

// unlock releases f's flock.
func unlock(f *os.File) {
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
