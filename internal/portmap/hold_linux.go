package portmap

// Holding a host port is what dockerd does for every published port: a
// listening TCP socket or a bound UDP socket on HostIP:HostPort. The kernel
// then refuses anyone else the same address/port/protocol (including a
// second binding by the daemon itself), and the userland proxy serves
// traffic on that very socket. A socket belongs to the network namespace
// of the thread that created it, so Hold binds in the caller's namespace
// and the proxy later dials the backend from that same namespace.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrPortInUse is wrapped by Hold when the address/port/protocol is taken
// (the API maps it to 409).
var ErrPortInUse = errors.New("port already in use")

const (
	defaultEphemeralLo = 49153
	defaultEphemeralHi = 65535
	ephemeralTries     = 64
)

// EphemeralRange returns the kernel's ip_local_port_range of the current
// network namespace (/proc/sys/net/ipv4/ip_local_port_range), falling back
// to 49153-65535 when it cannot be read.
func EphemeralRange() (lo, hi uint16) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeralLo, defaultEphemeralHi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return defaultEphemeralLo, defaultEphemeralHi
	}
	l, err1 := strconv.ParseUint(f[0], 10, 16)
	h, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || l == 0 || l > h {
		return defaultEphemeralLo, defaultEphemeralHi
	}
	return uint16(l), uint16(h)
}

// Held is a host port the daemon holds: a listening TCP socket or a bound
// UDP socket on Addr, so no other program can take it.
type Held struct {
	Proto string
	Addr  netip.AddrPort // resolved: the real port when HostPort was 0

	ln *net.TCPListener // tcp
	pc *net.UDPConn     // udp
	ns *nsDialer        // non-nil when held outside the process's netns

	mu      sync.Mutex
	closed  bool
	proxied bool
	stop    chan struct{}
	conns   map[net.Conn]struct{} // proxy connections, closed by Close
	wg      sync.WaitGroup

	redirect   []byte      // the connect redirect's map key (redirect_linux.go)
	redirector *redirector // non-nil while the redirect is in place
}

// Hold binds proto ("tcp" or "udp") on hostIP:hostPort in the calling
// thread's network namespace; an invalid hostIP means 0.0.0.0, an
// IPv4-mapped one its IPv4 address. An IPv6 hostIP (:: included) is bound
// on an AF_INET6 socket with IPV6_V6ONLY=1, as dockerd binds it: 0.0.0.0:P
// and [::]:P are two holds that do not block each other, and a [::] hold
// takes no IPv4 traffic. TCP listens with SO_REUSEADDR (Go's default, so
// TIME_WAIT does not block a restart); UDP binds without it. HostPort 0
// picks a free port from EphemeralRange (the kernel's one range serves
// both families), trying random ports a bounded number of times. A taken
// port gives an error wrapping ErrPortInUse that names the port and, when
// /proc shows it, the holding process. A zoned address is refused.
func Hold(proto string, hostIP netip.Addr, hostPort uint16) (*Held, error) {
	if proto != "tcp" && proto != "udp" {
		return nil, fmt.Errorf("hold port: unknown protocol %q", proto)
	}
	if !hostIP.IsValid() {
		hostIP = netip.IPv4Unspecified()
	}
	hostIP = hostIP.Unmap()
	if hostIP.Zone() != "" {
		return nil, fmt.Errorf("hold port %d/%s on %s: an IPv6 zone is not supported", hostPort, proto, hostIP)
	}
	if hostPort != 0 {
		return holdExact(proto, hostIP, hostPort, true)
	}
	return holdEphemeral(proto, hostIP)
}

func holdEphemeral(proto string, ip netip.Addr) (*Held, error) {
	lo, hi := EphemeralRange()
	for range ephemeralTries {
		p := lo + uint16(rand.IntN(int(hi-lo)+1))
		h, err := holdExact(proto, ip, p, false)
		if !errors.Is(err, ErrPortInUse) {
			return h, err
		}
	}
	return nil, fmt.Errorf("hold ephemeral %s port on %s: no free port in %d-%d after %d tries: %w",
		proto, ip, lo, hi, ephemeralTries, ErrPortInUse)
}

// holdExact binds ip:port; whoHolds names the holder of a taken port
// (a /proc scan, skipped while probing ephemeral ports).
func holdExact(proto string, ip netip.Addr, port uint16, whoHolds bool) (*Held, error) {
	ap := netip.AddrPortFrom(ip, port)
	h := &Held{Proto: proto, Addr: ap, stop: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	network, lc := proto+"4", &net.ListenConfig{}
	if ip.Is6() {
		network, lc.Control = proto+"6", v6only
	}
	var err error
	if proto == "tcp" {
		var l net.Listener
		l, err = lc.Listen(context.Background(), network, ap.String())
		if err == nil {
			h.ln = l.(*net.TCPListener)
		}
	} else {
		var pc net.PacketConn
		pc, err = lc.ListenPacket(context.Background(), network, ap.String())
		if err == nil {
			h.pc = pc.(*net.UDPConn)
		}
	}
	if err != nil {
		return nil, holdError(proto, ap, err, whoHolds)
	}
	if h.ns, err = newNSDialerIfForeign(); err != nil {
		h.closeSocket()
		return nil, fmt.Errorf("hold port %d/%s on %s: %w", port, proto, ip, err)
	}
	return h, nil
}

// v6only sets IPV6_V6ONLY=1 before bind. Go already asks for it on a
// "tcp6"/"udp6" socket; setting it here keeps the guarantee explicit
// rather than tied to that default.
func v6only(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set IPV6_V6ONLY on %s: %w", address, serr)
	}
	return nil
}

// holdError names the port, and for EADDRINUSE the holder when found.
func holdError(proto string, ap netip.AddrPort, err error, whoHolds bool) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("hold port %d/%s on %s: %w", ap.Port(), proto, ap.Addr(), err)
	}
	who := ""
	if whoHolds {
		if o, ok := findOwner(proto, ap); ok {
			who = fmt.Sprintf(" by %s (pid %d)", o.comm, o.pid)
		}
	}
	return fmt.Errorf("port %d/%s on %s is already in use%s: %w", ap.Port(), proto, ap.Addr(), who, ErrPortInUse)
}

func (h *Held) closeSocket() error {
	if h.ln != nil {
		return h.ln.Close()
	}
	return h.pc.Close()
}

// Close releases the port, stops the proxy on it (closing its
// connections and flows) and waits for the proxy's goroutines. Closing
// twice is not an error.
func (h *Held) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	close(h.stop)
	h.stopRedirect() // new connects find the port closed, as before
	err := h.closeSocket()
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
	if h.ns != nil {
		h.ns.close()
	}
	if err != nil {
		return fmt.Errorf("release port %d/%s on %s: %w", h.Addr.Port(), h.Proto, h.Addr.Addr(), err)
	}
	return nil
}
