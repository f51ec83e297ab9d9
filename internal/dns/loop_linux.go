package dns

// Event loops serving every sandbox's sockets. A sandbox's UDP and TCP
// sockets on 127.0.0.11:53 are non-blocking descriptors registered in the
// epoll set of one of a few loops (min(GOMAXPROCS, 4), sandboxes spread
// round robin); an idle sandbox costs its two descriptors and a few hundred
// bytes of bookkeeping, no goroutine and no buffer. A loop's goroutine parks
// in the Go runtime's poller on the epoll descriptor itself (nested epoll),
// so it holds no thread while idle. On a readable UDP socket it reads up to
// udpBatch datagrams and answers local names from the wire (wire.go) into
// its own buffers; anything else is decoded by the library, answered in
// the loop when that sends nothing upstream, and on a goroutine of its own
// when it is forwarded (after taking a forwarding slot in the loop, so a
// flood past the limits is REFUSED without a goroutine). On a readable TCP
// listener it accepts up to acceptBatch connections within the connection
// limits (limit.go) and serves each on a goroutine (tcp.go) until it closes
// or times out.
//
// A socket's descriptor is used under its read lock and closed under its
// write lock after it left the epoll set, so a late event or a forwarded
// answer never reaches a descriptor number reused by another sandbox.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

const (
	udpBatch      = 64 // datagrams read from one socket before the next ready one
	acceptBatch   = 16 // connections accepted from one listener likewise
	maxLoops      = 4
	listenBacklog = 4096 // capped by net.core.somaxconn
)

// loop is one epoll set and the goroutine serving it.
type loop struct {
	r      *Resolver
	epfd   int
	file   *os.File // epfd, as the runtime poller sees it
	closed atomic.Bool

	mu    sync.RWMutex
	socks map[uint32]*sock

	// used only by the loop's goroutine
	events  [64]unix.EpollEvent
	n       int // events ready
	scratch wireScratch
	mmsg    // datagrams in and answers out, mmsgBatch at a time
}

// mmsgBatch is how many datagrams one recvmmsg reads and one sendmmsg
// answers.
const mmsgBatch = 16

// mmsg holds the buffers and headers of recvmmsg and sendmmsg: in[i] is
// read from from[i], out[k] is an answer sent to its query's source.
type mmsg struct {
	in   [mmsgBatch][udpBufSize]byte
	out  [mmsgBatch][udpBufSize]byte
	from [mmsgBatch]unix.RawSockaddrAny
	rhdr [mmsgBatch]unix.Mmsghdr
	riov [mmsgBatch]unix.Iovec
	shdr [mmsgBatch]unix.Mmsghdr
	siov [mmsgBatch]unix.Iovec
}

// init points the receive headers at their buffers and sources.
func (m *mmsg) init() {
	for i := range m.rhdr {
		m.riov[i].Base = &m.in[i][0]
		m.riov[i].SetLen(udpBufSize)
		m.rhdr[i].Hdr.Iov = &m.riov[i]
		m.rhdr[i].Hdr.SetIovlen(1)
		m.rhdr[i].Hdr.Name = (*byte)(unsafe.Pointer(&m.from[i]))
		m.shdr[i].Hdr.Iov = &m.siov[i]
		m.shdr[i].Hdr.SetIovlen(1)
	}
}

// sock is one served descriptor.
type sock struct {
	key     uint32 // in the epoll event; never reused
	fd      int
	tcp     bool
	owner   *served
	mu      sync.RWMutex
	closed  bool
	backoff time.Duration // of accept after a shortage; the loop's
}

// served is one client's pair of sockets and its open TCP connections.
type served struct {
	nsPath   string
	client   *client
	udp, tcp *sock
	loop     *loop

	mu      sync.Mutex
	stopped bool
	conns   map[net.Conn]struct{}
}

func newLoop(r *Resolver) (*loop, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("dns: epoll_create: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dns: epoll nonblock: %w", err)
	}
	l := &loop{r: r, epfd: fd, file: os.NewFile(uintptr(fd), "dns-epoll"), socks: map[uint32]*sock{}}
	l.mmsg.init()
	rc, err := l.file.SyscallConn()
	if err != nil {
		l.file.Close()
		return nil, fmt.Errorf("dns: epoll descriptor: %w", err)
	}
	go l.run(rc)
	return l, nil
}

// run waits for ready sockets and serves them until the loop is closed.
func (l *loop) run(rc syscall.RawConn) {
	ready := l.ready // one closure for the loop's life, not one per wait
	for {
		if err := rc.Read(ready); err != nil {
			if !errors.Is(err, os.ErrClosed) && !l.closed.Load() {
				l.r.log.Error("dns: event loop stopped", "err", err)
			}
			return
		}
		for _, ev := range l.events[:l.n] {
			l.handle(uint32(ev.Fd))
		}
	}
}

// ready collects the ready sockets without waiting; false (nothing ready)
// parks the loop in the runtime's poller until the epoll set is readable.
func (l *loop) ready(uintptr) bool {
	n, err := unix.EpollWait(l.epfd, l.events[:], 0)
	l.n = max(n, 0)
	return n > 0 || (err != nil && err != unix.EINTR)
}

// close stops the loop's goroutine (its sockets are closed by their
// owners).
func (l *loop) close() {
	l.closed.Store(true) // RawConn.Read reports the close as "use of closed file", not os.ErrClosed
	l.file.Close()
}

// add registers s, readable events only.
func (l *loop) add(s *sock) error {
	s.key = l.r.nextKey.Add(1)
	l.mu.Lock()
	l.socks[s.key] = s
	l.mu.Unlock()
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, s.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.key)}); err != nil {
		l.mu.Lock()
		delete(l.socks, s.key)
		l.mu.Unlock()
		return fmt.Errorf("dns: epoll add: %w", err)
	}
	return nil
}

func (l *loop) handle(key uint32) {
	l.mu.RLock()
	s := l.socks[key]
	l.mu.RUnlock()
	if s == nil {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	if s.tcp {
		l.acceptReady(s)
	} else {
		l.readUDP(s)
	}
}

// readUDP serves up to udpBatch datagrams of s, mmsgBatch per recvmmsg;
// the answers from the wire go out in one sendmmsg per batch. Called with
// s.mu read-held.
func (l *loop) readUDP(s *sock) {
	m := &l.mmsg
	for read := 0; read < udpBatch; {
		for i := range m.rhdr {
			m.rhdr[i].Hdr.Namelen = unix.SizeofSockaddrAny
		}
		n, err := mmsgCall(unix.SYS_RECVMMSG, s.fd, m.rhdr[:], unix.MSG_DONTWAIT)
		if err != nil {
			if err != unix.EAGAIN && err != unix.EINTR {
				l.r.log.Debug("dns: read", "sandbox", s.owner.client.id, "err", err)
			}
			return
		}
		t0 := queryStart()
		k := 0
		for i := range n {
			b, fromLen := m.in[i][:m.rhdr[i].Len], m.rhdr[i].Hdr.Namelen
			out, ok := l.r.localWire(s.owner.client, b, &l.scratch, m.out[k][:0])
			if !ok {
				l.r.serveUDPMsg(s, b, m.from[i], fromLen)
				continue
			}
			m.siov[k].Base = &m.out[k][0]
			m.siov[k].SetLen(len(out))
			m.shdr[k].Hdr.Name, m.shdr[k].Hdr.Namelen = m.rhdr[i].Hdr.Name, fromLen
			k++
		}
		observeLocal(t0, k)
		l.sendAll(s, m.shdr[:k])
		read += n
		if n < mmsgBatch { // drained; epoll says when more comes
			return
		}
	}
}

// sendAll sends every answer in hdrs; one that fails is dropped (logged)
// and the rest still sent.
func (l *loop) sendAll(s *sock, hdrs []unix.Mmsghdr) {
	for len(hdrs) > 0 {
		n, err := mmsgCall(unix.SYS_SENDMMSG, s.fd, hdrs, 0)
		if err != nil || n <= 0 { // the first one failed: drop it
			l.r.log.Debug("dns: write answer", "sandbox", s.owner.client.id, "err", err)
			n = 1
		}
		hdrs = hdrs[n:]
	}
}

// serveUDPMsg answers a datagram the wire path did not: with the library,
// at once unless it is forwarded. Called from the loop with s.mu read-held.
func (r *Resolver) serveUDPMsg(s *sock, b []byte, from unix.RawSockaddrAny, fromLen uint32) {
	req, reject := decode(b)
	if req == nil {
		if reject != nil {
			s.sendMsgLocked(r, reject, &from, fromLen)
		}
		return
	}
	c := s.owner.client
	t0 := queryStart()
	resp, fwd := r.decide(c, req)
	if fwd {
		var release func()
		if release, resp = r.admitForward(c, req); resp == nil {
			go func() {
				defer release()
				resp := r.exchange(c, req, false)
				observeQuery(t0, resp, true)
				resp.Id = req.Id
				truncate(resp, req)
				s.mu.RLock()
				defer s.mu.RUnlock()
				if !s.closed {
					s.sendMsgLocked(r, resp, &from, fromLen)
				}
			}()
			return
		}
	}
	observeQuery(t0, resp, false)
	resp.Id = req.Id
	truncate(resp, req)
	s.sendMsgLocked(r, resp, &from, fromLen)
}

// sendMsgLocked packs m and sends it to from. s.mu read-held, s open.
func (s *sock) sendMsgLocked(r *Resolver, m *mdns.Msg, from *unix.RawSockaddrAny, fromLen uint32) {
	b, err := m.Pack()
	if err != nil {
		r.log.Debug("dns: pack answer", "sandbox", s.owner.client.id, "err", err)
		return
	}
	if err := sendto(s.fd, b, from, fromLen); err != nil {
		r.log.Debug("dns: write answer", "sandbox", s.owner.client.id, "err", err)
	}
}

// acceptReady accepts s's pending connections (acceptConns), pausing the
// listener after a shortage. Called with s.mu read-held.
func (l *loop) acceptReady(s *sock) {
	pause := l.r.acceptConns(s.owner.client, &s.backoff,
		func() (int, error) {
			fd, _, err := unix.Accept4(s.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			return fd, err
		},
		resetFD,
		func(fd int, release func()) { go l.r.serveTCPFD(s.owner, fd, release) })
	if pause == 0 {
		return
	}
	// out of the set until the pause is over: the pending connection
	// keeps the listener readable, and the loop must not spin on it
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, s.fd, &unix.EpollEvent{Fd: int32(s.key)})
	time.AfterFunc(pause, func() {
		s.mu.RLock()
		defer s.mu.RUnlock()
		if !s.closed {
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, s.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.key)})
		}
	})
}

// resetFD closes an accepted connection with an RST (SO_LINGER 0).
func resetFD(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	_ = unix.Close(fd)
}

// close takes s out of its loop and closes it. Idempotent.
func (s *sock) close(l *loop) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	l.mu.Lock()
	delete(l.socks, s.key)
	l.mu.Unlock()
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	_ = unix.Close(s.fd)
}

// close closes both sockets and every open TCP connection. Idempotent.
func (sv *served) close() {
	sv.udp.close(sv.loop)
	sv.tcp.close(sv.loop)
	sv.mu.Lock()
	sv.stopped = true
	conns := sv.conns
	sv.conns = nil
	sv.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// track records an open connection; false once the client is stopped.
func (sv *served) track(c net.Conn) bool {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.stopped {
		return false
	}
	if sv.conns == nil {
		sv.conns = map[net.Conn]struct{}{}
	}
	sv.conns[c] = struct{}{}
	return true
}

func (sv *served) untrack(c net.Conn) {
	sv.mu.Lock()
	delete(sv.conns, c)
	sv.mu.Unlock()
}

// serveFDs serves client c's bound UDP socket and listening TCP socket
// (non-blocking descriptors) on one of the loops. On failure both are
// closed. Called with r.mu held.
func (r *Resolver) serveFDs(c *client, udpFD, tcpFD int) (*served, error) {
	l, err := r.loopLocked()
	if err != nil {
		unix.Close(udpFD)
		unix.Close(tcpFD)
		return nil, err
	}
	sv := &served{client: c, loop: l}
	sv.udp = &sock{fd: udpFD, owner: sv}
	sv.tcp = &sock{fd: tcpFD, tcp: true, owner: sv}
	if err := l.add(sv.udp); err != nil {
		unix.Close(udpFD)
		unix.Close(tcpFD)
		return nil, err
	}
	if err := l.add(sv.tcp); err != nil {
		sv.udp.close(l)
		unix.Close(tcpFD)
		return nil, err
	}
	return sv, nil
}

// loopLocked picks the next loop, starting the loops on first use.
func (r *Resolver) loopLocked() (*loop, error) {
	if r.loops == nil {
		n := min(runtime.GOMAXPROCS(0), maxLoops)
		if r.numLoops > 0 {
			n = r.numLoops
		}
		for range n {
			l, err := newLoop(r)
			if err != nil {
				r.closeLoopsLocked()
				return nil, err
			}
			r.loops = append(r.loops, l)
		}
	}
	r.nextLoop = (r.nextLoop + 1) % len(r.loops)
	return r.loops[r.nextLoop], nil
}

func (r *Resolver) closeLoopsLocked() {
	for _, l := range r.loops {
		l.close()
	}
	r.loops = nil
}

// openSockets opens a non-blocking UDP socket bound to addr and a TCP
// socket listening on it (SO_REUSEADDR, as net.Listen), in the calling
// thread's network namespace.
func openSockets(addr [4]byte, port int) (udpFD, tcpFD int, err error) {
	sa := &unix.SockaddrInet4{Port: port, Addr: addr}
	udpFD, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("udp socket: %w", err)
	}
	if err := unix.Bind(udpFD, sa); err != nil {
		unix.Close(udpFD)
		return -1, -1, fmt.Errorf("bind udp: %w", err)
	}
	if port == 0 { // the same port for TCP (tests)
		if got, err := unix.Getsockname(udpFD); err == nil {
			sa.Port = got.(*unix.SockaddrInet4).Port
		}
	}
	tcpFD, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		unix.Close(udpFD)
		return -1, -1, fmt.Errorf("tcp socket: %w", err)
	}
	err = unix.SetsockoptInt(tcpFD, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err == nil {
		err = unix.Bind(tcpFD, sa)
	}
	if err == nil {
		err = unix.Listen(tcpFD, listenBacklog)
	}
	if err != nil {
		unix.Close(udpFD)
		unix.Close(tcpFD)
		return -1, -1, fmt.Errorf("listen tcp: %w", err)
	}
	return udpFD, tcpFD, nil
}

// mmsgCall is recvmmsg or sendmmsg (trap) on hdrs, without a timeout.
func mmsgCall(trap uintptr, fd int, hdrs []unix.Mmsghdr, flags int) (int, error) {
	n, _, e := unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// sendto sends p to the source recvmmsg returned.
func sendto(fd int, p []byte, to *unix.RawSockaddrAny, toLen uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0,
		uintptr(unsafe.Pointer(to)), uintptr(toLen))
	if e != 0 {
		return e
	}
	return nil
}
