package etcdtest

import "syscall"

// sysProcAttr has the kernel kill a member when the test binary dies, so a
// test killed by its timeout or by ^C leaves no etcd behind holding ports.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
