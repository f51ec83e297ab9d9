package dns

// Tether as an upstream of Docker's embedded resolver. Docker's resolver
// (127.0.0.11 in each container) answers the containers of its own dockerd
// and forwards other names to its upstreams. An upstream given in
// daemon.json "dns" is dialled from the container's namespace (dockerd 29;
// only a loopback nameserver of the host's resolv.conf is dialled from the
// host), so ServeUpstream listens on an address of the host the containers
// route to, and answers only the sources allow admits (the subnets of the
// networks on this host). Names are answered host-wide (Table.LookupHost,
// Table.ReverseHost), and the rest is forwarded to the resolver's upstreams
// exactly as for a sandbox, under the same limits: the whole of Docker's
// traffic counts as one client.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
)

// ServeUpstream answers DNS on UDP and TCP at addr, a loopback address of
// the daemon's current network namespace (no namespace is entered):
// Tether's names host-wide (A for IPv4 addresses, AAAA for IPv6 ones, an
// empty NOERROR for other types of a known name and for a family it has no
// address of, PTR in in-addr.arpa and ip6.arpa), and every other name
// forwarded to the configured upstreams (IPv4 or IPv6 ones). Port 0 picks a free port, the same for UDP and TCP.
// Closing the returned Closer stops both sockets; Resolver.Close does not.
//
// The answers cross network boundaries and the forwarding is open to any
// asker: without allow the address must be loopback; with it, queries from
// sources allow refuses are answered REFUSED, and nothing is forwarded for
// them.
func (r *Resolver) ServeUpstream(addr netip.AddrPort, allow func(src netip.Addr) bool) (io.Closer, error) {
	if !addr.Addr().IsValid() || (allow == nil && !addr.Addr().IsLoopback()) {
		return nil, fmt.Errorf("dns: upstream address %q: want a loopback address, or a filter of the sources", addr)
	}
	pc, ln, err := listenUDPTCP(addr)
	if err != nil {
		return nil, fmt.Errorf("dns: listen on %s: %w", addr, err)
	}
	c := newClient("upstream "+addr.String(), Policy{Forward: true})
	c.host, c.allow = true, allow
	l, err := r.serveSockets(pc, ln, c)
	if err != nil {
		return nil, fmt.Errorf("dns: serve on %s: %w", addr, err)
	}
	return l, nil
}

// Close stops the listener's servers, which closes their sockets.
// Idempotent.
func (l *listener) Close() error {
	l.close()
	return nil
}

// lookup is the A and AAAA lookup of client c: host-wide, or scoped to its
// sandbox.
func (r *Resolver) lookup(c *client, name string) ([]netip.Addr, bool) {
	if c.host {
		return r.table.LookupHost(name)
	}
	return r.table.Lookup(c.id, name)
}

// reverse is the PTR lookup of client c.
func (r *Resolver) reverse(c *client, addr netip.Addr) (string, bool) {
	if c.host {
		return r.table.ReverseHost(addr)
	}
	return r.table.Reverse(c.id, addr)
}

// listenUDPTCP opens a TCP and a UDP socket on the same address; with port
// 0, on the same free port (retried a few times when the kernel's pick for
// TCP is taken for UDP).
func listenUDPTCP(addr netip.AddrPort) (net.PacketConn, net.Listener, error) {
	err := errors.New("no free port for both UDP and TCP")
	for range 20 {
		ln, lerr := net.Listen("tcp", addr.String())
		if lerr != nil {
			return nil, nil, lerr
		}
		pc, perr := net.ListenPacket("udp", ln.Addr().String())
		if perr == nil {
			return pc, ln, nil
		}
		ln.Close()
		if addr.Port() != 0 {
			return nil, nil, perr
		}
		err = perr
	}
	return nil, nil, err
}
