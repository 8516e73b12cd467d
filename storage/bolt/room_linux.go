package bolt

import "golang.org/x/sys/unix"

// roomIn is how many bytes the file system holding dir lets this process
// write; ok is false when it cannot tell.
func roomIn(dir string) (n uint64, ok bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}
