package dns

// Sockets of one sandbox. Each sandbox gets its own UDP and TCP socket on
// 127.0.0.11:53, created on a thread that has entered the sandbox's network
// namespace (netns.Do). A socket stays in the namespace it was created in, so
// once opened it is served by the resolver's event loops (loop_linux.go) on
// any thread of the daemon: no per-sandbox process, thread or goroutine. lo
// is brought up first because 127.0.0.11 is routed on it only when it is up.
// The listener below (two miekg/dns servers) serves ServeUpstream's one
// address.

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/netns"
)

// ListenAddr is where every sandbox finds its resolver.
const ListenAddr = "127.0.0.11:53"

// listener is a pair of library servers (ServeUpstream).
type listener struct {
	nsPath   string
	client   *client
	udp, tcp *mdns.Server
	once     sync.Once
}

// listen opens sandbox c's sockets inside the namespace at nsPath and serves
// them on an event loop. On failure nothing is left open. Called with r.mu
// held.
func (r *Resolver) listen(nsPath string, c *client) (*served, error) {
	var udpFD, tcpFD int
	err := netns.Do(nsPath, func() error {
		if err := loUp(); err != nil {
			return err
		}
		var err error
		udpFD, tcpFD, err = openSockets([4]byte{127, 0, 0, 11}, 53)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dns: listen on %s in %q: %w", ListenAddr, nsPath, err)
	}
	sv, err := r.serveFDs(c, udpFD, tcpFD)
	if err != nil {
		return nil, fmt.Errorf("dns: serve in %q: %w", nsPath, err)
	}
	sv.nsPath = nsPath
	return sv, nil
}

// serveSockets serves client c's open UDP and TCP sockets, the TCP one
// through a limitListener (per-client and global connection limits) with
// the configured read and idle timeouts. On failure both are closed.
func (r *Resolver) serveSockets(pc net.PacketConn, ln net.Listener, c *client) (*listener, error) {
	h := r.handler(c)
	idle := r.cfg.TCPIdleTimeout
	l := &listener{
		client: c,
		udp:    &mdns.Server{PacketConn: pc, Handler: h, UDPSize: udpBufSize},
		tcp: &mdns.Server{Listener: r.limit(ln, c), Handler: h, ReadTimeout: r.cfg.TCPReadTimeout,
			IdleTimeout: func() time.Duration { return idle }},
	}
	if err := errors.Join(serve(l.udp), serve(l.tcp)); err != nil {
		l.close()
		pc.Close()
		ln.Close()
		return nil, err
	}
	return l, nil
}

// serve starts s on its own goroutine and returns once it is serving (so a
// Shutdown right after cannot miss it), or with its early error.
func serve(s *mdns.Server) error {
	started := make(chan struct{})
	s.NotifyStartedFunc = func() { close(started) }
	errc := make(chan error, 1)
	go func() { errc <- s.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-errc:
		return err
	}
}

// close shuts both servers down, which closes their sockets.
func (l *listener) close() {
	l.once.Do(func() {
		_ = l.udp.Shutdown()
		_ = l.tcp.Shutdown()
	})
}

// loUp sets lo up in the calling thread's namespace unless it already is.
// Equivalent to `ip link set lo up`.
func loUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}
