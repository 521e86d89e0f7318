//go:build !linux

package hosttest

import "syscall"

// ownGroup starts a host in its own process group, so Kill takes its
// children too. Only Linux can have it killed when the test process dies.
func ownGroup() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
