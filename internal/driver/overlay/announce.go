package overlay

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	tns "github.com/tether-net/tether/internal/netns"
)

// announce tells the local sandboxes of the network that a remote peer's
// address is now reachable: a gratuitous ARP for p.IP from p.MAC, sent out
// of the overlay's bridge (so to every local port; the VXLAN device drops
// it, having no flooding entries).
//
// Why: a remote endpoint becomes programmable only when its record comes
// through this host's watch, a little after the attach on its own host has
// answered. A local sandbox that sends to the new address inside that
// window gets its ARP swallowed (the VXLAN device answers only for
// programmed neighbours) and its kernel would try again only after
// retrans_time (1 s). A gratuitous ARP updates an existing neighbour entry,
// an INCOMPLETE one included (arp_accept=0 creates none), so the waiting
// packets leave at once; sandboxes that never asked ignore it.
//
// IPv6 peers are not announced (an unsolicited neighbour advertisement
// would do the same; not done yet).
func (d *Driver) announce(h *netlink.Handle, n *driver.Network, p Peer) error {
	if !p.IP.Is4() || len(p.MAC) != 6 {
		return nil
	}
	br, err := h.LinkByName(BridgeName(n.VNI))
	if err != nil {
		return fmt.Errorf("announce %v: bridge: %w", p.IP, err)
	}
	fd, err := d.garp.get(d.ns)
	if err != nil {
		return fmt.Errorf("announce %v: %w", p.IP, err)
	}
	to := &unix.SockaddrLinklayer{Ifindex: br.Attrs().Index, Halen: 6, Protocol: htons(unix.ETH_P_ARP)}
	copy(to.Addr[:], broadcastMAC)
	if err := unix.Sendto(fd, garp(p.MAC, p.IP), 0, to); err != nil {
		return fmt.Errorf("announce %v on %s: %w", p.IP, br.Attrs().Name, err)
	}
	return nil
}

// garpSocket is the packet socket announcements go out on: opened by the
// first one, in the driver's namespace, and kept for the driver's life.
// One socket per announcement cost ~10 ms each on the watcher's path:
// closing a packet socket waits for an RCU grace period (synchronize_net in
// packet_release), and peers were programmed one after another behind it,
// so a host fell further behind the store with every new remote endpoint
// (docs/overlay.md, "When the other hosts know"). With protocol 0 the
// socket is never hooked into receive: it only sends.
type garpSocket struct {
	mu   sync.Mutex
	fd   int
	open bool
}

// get returns the socket, opening it in the namespace at nsPath ("" the
// current one) the first time.
func (g *garpSocket) get(nsPath string) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open {
		return g.fd, nil
	}
	var fd int
	mk := func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}
	var err error
	if nsPath == "" {
		err = mk()
	} else {
		err = tns.Do(nsPath, mk)
	}
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	g.fd, g.open = fd, true
	return fd, nil
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// garp is an Ethernet frame carrying a gratuitous ARP reply for ip from mac
// (sender and target both ip and mac, as `arping -A` sends). A reply, not
// a request: the VXLAN device's proxy would answer a request for an
// address it now knows, adding a frame for nothing.
func garp(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 0, 42)
	b = append(b, broadcastMAC...)
	b = append(b, mac...)
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_ARP)
	b = binary.BigEndian.AppendUint16(b, 1)      // hardware: Ethernet
	b = binary.BigEndian.AppendUint16(b, 0x0800) // protocol: IPv4
	b = append(b, 6, 4)                          // address lengths
	b = binary.BigEndian.AppendUint16(b, 2)      // reply
	a := ip.As4()
	b = append(b, mac...)
	b = append(b, a[:]...)
	b = append(b, mac...)
	b = append(b, a[:]...)
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
