package hosttest

import "syscall"

// ownGroup starts a host in its own process group, so Kill takes its
// children too, and has the kernel SIGKILL it when the test process dies (a
// -timeout panic runs no cleanup).
func ownGroup() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
