//go:build !unix

package server

// fdLimit reports no limit where the process's file-descriptor limit is
// not read.
func fdLimit() (uint64, bool) { return 0, false }
