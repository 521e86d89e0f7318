package api

import (
	"net"
	"syscall"
)

// peer returns the pid and uid of the process that listens on the other
// end of a unix socket connection (SO_PEERCRED); ok is false when they
// cannot be read. It works even when that process is stopped, when asking
// it is no use.
func peer(c net.Conn) (pid, uid int, ok bool) {
	uc, isUnix := c.(*net.UnixConn)
	if !isUnix {
		return 0, 0, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid, uid, ok = int(cred.Pid), int(cred.Uid), true
		}
	})
	return pid, uid, ok
}
