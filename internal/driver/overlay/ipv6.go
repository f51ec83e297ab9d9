package overlay

// IPv6 on dual-stack overlay networks (n.Subnet6 set). The bridge, the
// VXLAN device and the host ends of the veths carry IPv6 frames without
// an IPv6 address of their own: IPv6 is on (the VXLAN device needs it to
// hold the peers' IPv6 neighbour entries, from which its proxy answers
// the sandboxes' neighbour solicitations as it answers ARP), addrgenmode
// none (no link-local address, so no DAD, router solicitation or MLD
// chatter flooded over the overlay) and accept_ra=0 (no router
// advertisement from a sandbox configures the host). A sandbox end gets
// its static address with DAD off (IFA_F_NODAD): addresses are unique by
// construction (derived from the cluster-claimed IPv4 address), and usable
// at once. On an IPv4-only network every link keeps IPv6 off
// (bridge.IPv6Off), as before.

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	tns "github.com/tether-net/tether/internal/netns"
)

// MinIPv6MTU is IPv6's minimum link MTU; the kernel turns IPv6 off on a
// link with a smaller one.
const MinIPv6MTU = 1280

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE: no link-local address.
const addrGenModeNone = 1

// dualStack reports whether n carries IPv6.
func dualStack(n *driver.Network) bool { return n.Subnet6.IsValid() }

// hostIPv6 sets IPv6 on a host-side link of n (bridge, VXLAN device, host
// end of a veth): on without an address for a dual-stack network (ipv6On),
// off otherwise (bridge.IPv6Off). Called before the link is first up.
func (d *Driver) hostIPv6(h *netlink.Handle, n *driver.Network, l netlink.Link) error {
	if !dualStack(n) {
		return bridge.IPv6Off(h, d.ns, l)
	}
	return ipv6On(h, d.ns, l)
}

// ipv6On turns IPv6 on on a host-side link, with no address and no
// autoconfiguration, in the namespace of h (at nsPath, "" for the current
// one). Equivalent to
//
//	ip link set L addrgenmode none
//	sysctl -w net.ipv6.conf.L.accept_ra=0 net.ipv6.conf.L.disable_ipv6=0
//
// accept_ra goes first, so the link never takes a router advertisement.
func ipv6On(h *netlink.Handle, nsPath string, l netlink.Link) error {
	name := l.Attrs().Name
	if err := h.LinkSetIP6AddrGenMode(l, addrGenModeNone); err != nil {
		return fmt.Errorf("turn IPv6 on on %q: addrgenmode none: %w", name, err)
	}
	if err := sysctlsAt(nsPath, name, [][2]string{{"accept_ra", "0"}, {"disable_ipv6", "0"}}); err != nil {
		return fmt.Errorf("turn IPv6 on on %q: %w", name, err)
	}
	return nil
}

// sysctlsAt writes net.ipv6.conf.IFNAME.KEY=VALUE in order, in the
// namespace at nsPath ("" = the current one): /proc/sys/net shows the
// namespace of the thread that opens it, hence the switch.
func sysctlsAt(nsPath, ifName string, kvs [][2]string) error {
	write := func() error {
		for _, kv := range kvs {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+ifName+"/"+kv[0], []byte(kv[1]), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	if nsPath == "" {
		return write()
	}
	return tns.Do(nsPath, write)
}

// sandboxIPv6 gives the sandbox end its IPv6 address: IPv6 on (the
// sandbox namespace defaults to off for new interfaces), no router
// advertisements taken, and the address without DAD. Equivalent to
//
//	sysctl -w net.ipv6.conf.IFNAME.accept_ra=0 net.ipv6.conf.IFNAME.disable_ipv6=0
//	ip addr replace ADDRESS6 dev IFNAME nodad
//
// No IPv6 route is added: like the IPv4 gateway, the network's Gateway6
// is held by nothing on an overlay (its bridges have no address), and an
// overlay sandbox's way out is another network's.
func sandboxIPv6(sb *netlink.Handle, nsPath string, link netlink.Link, ep *driver.Endpoint) error {
	if err := sysctlsAt(nsPath, ep.IfName, [][2]string{{"accept_ra", "0"}, {"disable_ipv6", "0"}}); err != nil {
		return fmt.Errorf("turn IPv6 on on %q in sandbox: %w", ep.IfName, err)
	}
	a := ep.Address6
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), 128)}, Flags: unix.IFA_F_NODAD}
	if err := sb.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %q: %w", a, ep.IfName, err)
	}
	return nil
}

// checkNetwork6 validates the IPv6 side of n: none, or an IPv6 Subnet6
// with Gateway6 (when set) in it.
func checkNetwork6(n *driver.Network) error {
	s6 := n.Subnet6
	switch {
	case !s6.IsValid():
		return nil
	case !s6.Addr().Is6() || s6.Addr().Is4In6():
		return fmt.Errorf("overlay network %q: subnet6 %v is not an IPv6 subnet: %w", n.Name, s6, ErrInvalid)
	case n.Gateway6.IsValid() && !s6.Contains(n.Gateway6):
		return fmt.Errorf("overlay network %q: gateway6 %v outside subnet6 %v: %w", n.Name, n.Gateway6, s6, ErrInvalid)
	}
	return nil
}

// checkEndpoint6 refuses an IPv6 address the network has no IPv6 for, or
// outside its Subnet6.
func checkEndpoint6(n *driver.Network, ep *driver.Endpoint) error {
	a := ep.Address6
	switch {
	case !a.IsValid():
		return nil
	case !dualStack(n):
		return fmt.Errorf("overlay network %q has no IPv6 subnet: endpoint address6 %v: %w", n.Name, a, ErrInvalid)
	case !a.Addr().Is6() || a.Addr().Is4In6() || !n.Subnet6.Contains(a.Addr()):
		return fmt.Errorf("overlay network %q: endpoint address6 %v outside subnet6 %v: %w", n.Name, a, n.Subnet6, ErrInvalid)
	}
	return nil
}

// isIPv6 reports whether a is an IPv6 address proper (not IPv4-mapped).
func isIPv6(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }
