//go:build !linux

package etcdtest

import "syscall"

// sysProcAttr is empty where members cannot be tied to the test binary's
// life; the cleanup of each test still kills them.
func sysProcAttr() *syscall.SysProcAttr { return nil }
