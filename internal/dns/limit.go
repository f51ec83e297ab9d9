package dns

// Bounds on the TCP side of 127.0.0.11:53. Each accepted connection costs
// the daemon a descriptor and a goroutine until it closes, so a sandbox
// could otherwise hold thousands open (idle, or sending a query a byte at a
// time) and run the daemon out of descriptors for every other sandbox. The
// listener below counts connections per sandbox and across all sandboxes;
// one beyond either limit is accepted and reset at once (SO_LINGER 0, so no
// TIME_WAIT is left), which costs the daemon a few microseconds and nothing
// afterwards. Accept errors that are a shortage (EMFILE, ENFILE, ENOBUFS,
// ENOMEM) back off instead of retrying at once: the pending connection stays
// in the backlog, so an immediate retry would spin a core (the failure mode
// of miekg/dns#631 and aardvark-dns CVE-2026-35406).

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = 250 * time.Millisecond
)

// limitListener hands out a sandbox's TCP connections while both counters
// are under their limits.
type limitListener struct {
	net.Listener
	sandbox, all       *atomic.Int64
	maxSandbox, maxAll int
	log                *slog.Logger
	id                 string
	sleep              func(time.Duration) // time.Sleep; replaced in tests
}

// Accept returns the next connection within the limits; over-limit
// connections are reset and skipped.
func (l *limitListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !isShortage(err) {
				return nil, err
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			l.log.Debug("dns: accept failed, backing off", "sandbox", l.id, "err", err, "wait", backoff)
			l.sleep(backoff)
			continue
		}
		backoff = 0
		if !admit(l.sandbox, l.all, l.maxSandbox, l.maxAll, l.log, l.id) {
			reset(c)
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.sandbox.Add(-1); l.all.Add(-1) }}, nil
	}
}

// admit takes a connection slot counted by sandbox (up to maxSandbox) and
// one counted by all (up to maxAll); false, with nothing taken, when either
// is full.
func admit(sandbox, all *atomic.Int64, maxSandbox, maxAll int, log *slog.Logger, id string) bool {
	if !acquire(sandbox, maxSandbox) {
		log.Debug("dns: per-sandbox TCP connection limit reached", "sandbox", id, "limit", maxSandbox)
		return false
	}
	if !acquire(all, maxAll) {
		sandbox.Add(-1)
		log.Debug("dns: TCP connection limit reached", "sandbox", id, "limit", maxAll)
		return false
	}
	return true
}

// isShortage reports whether an accept error is a lack of descriptors or
// memory, which passes once something is closed.
func isShortage(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// reset closes c with an RST (SO_LINGER 0): no FIN handshake, no
// TIME_WAIT.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// limitedConn gives its slots back when closed (once).
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
