//go:build !unix

package bolt

import "os"

// lockShared does nothing where there is no flock.
func lockShared(*os.File) error { return nil }

// tryLockExclusive says no where there is no flock: without a way to tell a
// live writer's file from a dead one's, none is removed.
func tryLockExclusive(*os.File) bool { return false }

// unlock does nothing where there is no flock.
func unlock(*os.File) {}
