package portmap

// The TCP relay moves one direction of a proxied connection, socket to
// socket, without the bytes entering user space: splice(2) from the source
// socket into a pipe, and from the pipe into the destination socket, which
// is what `socat` or HAProxy's splicing does. Each direction has its own
// pipe, enlarged with F_SETPIPE_SZ, created for the connection and closed
// with it (Go's own splice path, net.TCPConn.ReadFrom, keeps pipes in a
// pool that the garbage collector empties: fds outlive the connection).
// Like Go's path, it fills the pipe with what the source has, then empties
// it completely before reading again (reading again as soon as part of the
// pipe went out was tried: no gain, and two more splice calls per wait on
// a full destination). The sockets stay in Go's poller (syscall.RawConn): waiting is
// the netpoller's, not a blocked thread. Measured against Go's path
// (internal/portmap TestRelayIperf, bench/ports TestProxyReport) it costs
// the same CPU per byte; what it changes is that no fd outlives its
// connection. Most of the relay's cost is the second TCP connection in the
// kernel, not the copy: see bench/README.md's proxy section.
//
// TETHER_PROXY_RELAY picks the relay for benchmarks: "splice" (this file,
// the default) or "gosplice" (net.TCPConn.ReadFrom, the relay before
// issue 19), read once at start.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	relaySplice   = "splice"
	relayGoSplice = "gosplice"
	// relayPipeSize is the pipe's capacity (F_SETPIPE_SZ). 1 MiB is the
	// default /proc/sys/fs/pipe-max-size; a smaller grant is used as is.
	relayPipeSize = 1 << 20
)

// relayMode is the TCP relay in use; see TETHER_PROXY_RELAY above.
var relayMode = relayModeFromEnv(os.Getenv("TETHER_PROXY_RELAY"))

func relayModeFromEnv(v string) string {
	if v == relayGoSplice {
		return v
	}
	return relaySplice
}

// relay copies src to dst with the relay mode names until src's EOF, then
// half-closes: dst gets a FIN, src is not read any more. It returns the
// bytes moved and the first error other than EOF.
func relay(mode string, dst, src *net.TCPConn) (int64, error) {
	var n int64
	var err error
	switch mode {
	case relayGoSplice:
		n, err = dst.ReadFrom(src)
	default:
		n, err = spliceRelay(dst, src)
	}
	_ = dst.CloseWrite()
	_ = src.CloseRead()
	return n, err
}

// relayPipe is a pipe with its capacity and the bytes it holds.
type relayPipe struct {
	r, w   int
	size   int
	filled int
}

func newRelayPipe() (*relayPipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("relay pipe: %w", err)
	}
	p := &relayPipe{r: fds[0], w: fds[1], size: unix.Getpagesize() * 16} // Linux's default 64 KiB
	if sz, err := unix.FcntlInt(uintptr(p.r), unix.F_SETPIPE_SZ, relayPipeSize); err == nil {
		p.size = sz
	}
	return p, nil
}

func (p *relayPipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// spliceRelay moves src's bytes to dst through a pipe until src's EOF.
func spliceRelay(dst, src *net.TCPConn) (int64, error) {
	rs, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	rd, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	p, err := newRelayPipe()
	if err != nil {
		return 0, err
	}
	defer p.close()
	var written int64
	for {
		if eof, err := p.fill(rs); err != nil || eof {
			return written, err
		}
		n, err := p.drain(rd)
		written += int64(n)
		if err != nil {
			return written, err
		}
	}
}

// fill waits for the socket to have bytes (or EOF) and splices what it has
// into the empty pipe; it reports EOF.
func (p *relayPipe) fill(rc syscall.RawConn) (eof bool, err error) {
	var serr error
	cerr := rc.Read(func(fd uintptr) bool {
		var n int64
		for {
			n, serr = unix.Splice(int(fd), nil, p.w, nil, p.size-p.filled, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if serr != unix.EINTR {
				break
			}
		}
		switch {
		case serr == unix.EAGAIN:
			serr = nil
			return false
		case serr != nil:
			return true
		}
		eof = n == 0
		p.filled += int(n)
		return true
	})
	if err := errors.Join(cerr, serr); err != nil {
		return false, fmt.Errorf("splice from socket: %w", err)
	}
	return eof, nil
}

// drain splices the pipe's bytes into the socket, waiting while the
// socket's send buffer is full, until the pipe is empty.
func (p *relayPipe) drain(rc syscall.RawConn) (int, error) {
	written := 0
	var serr error
	cerr := rc.Write(func(fd uintptr) bool {
		for p.filled > 0 {
			n, err := unix.Splice(p.r, nil, int(fd), nil, p.filled, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				return false
			}
			if err != nil {
				serr = err
				return true
			}
			p.filled -= int(n)
			written += int(n)
		}
		return true
	})
	if err := errors.Join(cerr, serr); err != nil {
		return written, fmt.Errorf("splice to socket: %w", err)
	}
	return written, nil
}
