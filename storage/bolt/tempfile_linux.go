package bolt

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// createUnnamed makes a file in dir that has no name (O_TMPFILE). Its
// Name is a /proc path that opens it, for readers that take a path; a
// system where that does not work gets a named file instead.
func createUnnamed(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("/proc/self/fd/%d", fd))
	if _, err := os.Stat(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// linkUnnamed gives the unnamed file f the name path.
func linkUnnamed(f *os.File, path string) error {
	return unix.Linkat(unix.AT_FDCWD, f.Name(), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
}
