package dns

// TCP connections to a sandbox's 127.0.0.11:53, accepted by the event loop
// (loop_linux.go) and served each on a goroutine while open: a 2-byte
// length, the query, the answer; the deadline of a query is set once for
// its length and body (TCPReadTimeout for the first, TCPIdleTimeout for the
// next ones), so a query sent a byte at a time does not extend it; at most
// maxTCPQueries per connection (the miekg/dns default), and an answer the
// client does not read in TCPReadTimeout closes the connection.

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

const maxTCPQueries = 128

// acceptConns accepts up to acceptBatch pending connections of client c
// with accept, resets (reset) those beyond c's or all clients' connection
// limit and hands the others to serve with the function that gives their
// slots back. It returns how long to pause the listener: after a shortage
// (EMFILE, ENFILE, ENOBUFS, ENOMEM) or an unexpected error, 5 ms doubling
// to 250 ms (*backoff carries it between calls); 0 otherwise.
func (r *Resolver) acceptConns(c *client, backoff *time.Duration, accept func() (int, error), reset func(int),
	serve func(fd int, release func())) time.Duration {
	for range acceptBatch {
		fd, err := accept()
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN):
			return 0
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
			continue
		default:
			*backoff = min(max(2**backoff, acceptBackoffMin), acceptBackoffMax)
			r.log.Debug("dns: accept failed, backing off", "sandbox", c.id, "err", err, "wait", *backoff)
			return *backoff
		}
		*backoff = 0
		release, ok := r.admitConn(c)
		if !ok {
			reset(fd)
			continue
		}
		serve(fd, release)
	}
	return 0
}

// admitConn takes a TCP connection slot of c and one of all clients';
// false (nothing taken) when either limit is reached.
func (r *Resolver) admitConn(c *client) (release func(), ok bool) {
	if !admit(&c.tcpConns, &r.tcpConns, r.cfg.MaxTCPConnsPerSandbox, r.cfg.MaxTCPConns, r.log, c.id) {
		return nil, false
	}
	return func() { c.tcpConns.Add(-1); r.tcpConns.Add(-1) }, true
}

// serveTCPFD serves an accepted connection of sv until it closes; release
// gives its slots back once.
func (r *Resolver) serveTCPFD(sv *served, fd int, release func()) {
	f := os.NewFile(uintptr(fd), "dns-tcp")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		release()
		r.log.Debug("dns: tcp connection", "sandbox", sv.client.id, "err", err)
		return
	}
	lc := &limitedConn{Conn: conn, release: release}
	defer lc.Close()
	if !sv.track(lc) {
		return
	}
	defer sv.untrack(lc)
	r.serveTCPConn(sv.client, lc)
}

// serveTCPConn answers the queries of one connection of c in turn.
func (r *Resolver) serveTCPConn(c *client, conn net.Conn) {
	timeout := r.cfg.TCPReadTimeout
	for range maxTCPQueries {
		b, err := readTCP(conn, timeout)
		if err != nil {
			return
		}
		if out := r.answerTCP(c, b); out != nil {
			_ = conn.SetWriteDeadline(time.Now().Add(r.cfg.TCPReadTimeout))
			if _, err := conn.Write(out); err != nil {
				return
			}
		}
		timeout = r.cfg.TCPIdleTimeout
	}
}

// readTCP reads one length-prefixed message within timeout.
func readTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(conn, b); err != nil {
		return nil, err
	}
	return b, nil
}

// answerTCP is the length-prefixed answer to query b over TCP, nil for
// none.
func (r *Resolver) answerTCP(c *client, b []byte) []byte {
	req, resp := decode(b)
	if req != nil {
		resp = r.answer(c, req, true)
		resp.Id = req.Id
	}
	if resp == nil {
		return nil
	}
	out, err := resp.Pack()
	if err != nil || len(out) > mdns.MaxMsgSize {
		r.log.Debug("dns: pack answer", "sandbox", c.id, "err", err)
		return nil
	}
	return append(binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(out)), uint16(len(out))), out...)
}
