package api

import (
	"net"
	"syscall"
)

// peerPID returns the pid of the process that listens on the other end of
// a unix socket connection (SO_PEERCRED), or 0. It works even when that
// process is stopped, when asking it is no use.
func peerPID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}
