package api

import (
	"log/slog"
	"net"
	"sync"
)

// limitListener returns a listener that holds at most max accepted
// connections open at once: Accept waits for one to close. Waiting
// connections stay in the socket's backlog, costing the daemon no
// descriptor.
func limitListener(ln net.Listener, max int, logger *slog.Logger) net.Listener {
	return &limited{Listener: ln, slots: make(chan struct{}, max), done: make(chan struct{}), logger: logger}
}

type limited struct {
	net.Listener
	slots  chan struct{} // one token per open connection
	done   chan struct{} // closed by Close: a waiting Accept returns
	once   sync.Once
	logger *slog.Logger
	full   bool // the limit was reached; only Accept, called by one goroutine, uses it
}

func (l *limited) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
		l.full = false
	default:
		if !l.full { // once per spell at the limit, not per connection
			l.full = true
			l.logger.Warn("connection limit reached; new connections wait until one closes", "limit", cap(l.slots))
		}
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limited) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
