//go:build !linux

package bolt

// roomIn cannot tell the room left on a file system but on Linux.
func roomIn(string) (uint64, bool) { return 0, false }
