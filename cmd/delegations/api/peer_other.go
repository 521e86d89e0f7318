//go:build !linux

package api

import "net"

// peerPID returns 0: the peer's pid is read on Linux only.
func peerPID(net.Conn) int { return 0 }
