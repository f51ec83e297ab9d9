package bridge

// IPv6 on a dual-stack or IPv6-only network (driver.Network.Subnet6).
//
// Addresses are static: accept_ra=0 and DAD off everywhere, no SLAAC, no
// kernel-generated link-local (addrgenmode none) but an explicit one added
// with IFA_F_NODAD, so no address is ever tentative and nothing on the link
// depends on the host's "all"/"default" sysctls.
//
//   - The bridge gets fe80::1/64 and GW6/LEN6. The link-local address is
//     not decoration: the kernel sends a neighbour solicitation from the
//     packet's source address only when that address is on the link; for
//     a forwarded packet (from another network, or from outside the host
//     through DNAT) it takes the link's link-local address, and without one
//     sends nothing, so sandboxes would be unreachable from anywhere but
//     the bridge itself until they spoke first.
//   - The sandbox end gets fe80::EUI-64(MAC)/64 and ADDR6/LEN6, for the
//     same reason (unicast reachability probes of a neighbour in the PROBE
//     state carry no packet to take the source from), and MLD reports
//     with a proper source for the bridge's multicast snooping.
//   - The host ends keep IPv6 off (IPv6Off): bridged frames do not go
//     through the port's IPv6 stack.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
)

// BridgeLinkLocal is the bridge's link-local address on an IPv6 network:
// sandboxes may use it as a next hop like the gateway address.
var BridgeLinkLocal = netip.MustParsePrefix("fe80::1/64")

// errNoIPv6 is returned when a network asks for IPv6 on a kernel without it.
var errNoIPv6 = errors.New("the kernel has no IPv6 (no /proc/sys/net/ipv6)")

// bridgeIPv6 turns IPv6 on on the bridge of a network with Subnet6 and
// Gateway6, with fe80::1/64 and GW6/LEN6 (DAD off), or keeps it off
// (IPv6Off) on any other. Equivalent to
//
//	ip link set BR addrgenmode none
//	sysctl -w net.ipv6.conf.BR.accept_ra=0 .accept_dad=0 .disable_ipv6=0
//	ip addr replace fe80::1/64 dev BR nodad; ip addr replace GW6/LEN6 dev BR nodad
//
// Subnet6 without Gateway6 means the host is not on the network (gateway
// mode isolated): the bridge forwards IPv6 frames between its ports at
// layer 2 and needs no IPv6 of its own.
func (d *Driver) bridgeIPv6(br netlink.Link, n *driver.Network) error {
	if !n.Subnet6.IsValid() || !n.Gateway6.Is6() {
		return IPv6Off(d.h, d.ns, br)
	}
	if err := IPv6On(d.h, d.ns, br); err != nil {
		return err
	}
	for _, p := range []netip.Prefix{BridgeLinkLocal, netip.PrefixFrom(n.Gateway6, n.Subnet6.Bits())} {
		if err := d.h.AddrReplace(br, addr6(p)); err != nil {
			return fmt.Errorf("address %s: %w", p, err)
		}
	}
	return nil
}

// IPv6On turns IPv6 on on a link of the namespace of h, whose path is
// nsPath ("": the current one), for static addresses only:
//
//	ip link set L addrgenmode none
//	sysctl -w net.ipv6.conf.L.accept_ra=0 net.ipv6.conf.L.accept_dad=0 net.ipv6.conf.L.disable_ipv6=0
//
// accept_ra=0 before disable_ipv6=0, so the link never takes a router
// advertisement (a sandbox's: CVE-2020-13401); addrgenmode none, so it
// gets no address the caller did not add. A kernel without IPv6 is an
// error.
func IPv6On(h *netlink.Handle, nsPath string, l netlink.Link) error {
	name := l.Attrs().Name
	if !ipv6Present() {
		return fmt.Errorf("turn IPv6 on on %q: %w", name, errNoIPv6)
	}
	if err := h.LinkSetIP6AddrGenMode(l, addrGenModeNone); err != nil {
		return fmt.Errorf("addrgenmode none on %q: %w", name, err)
	}
	write := func() error { return ipv6Sysctls(name, "accept_ra", "0", "accept_dad", "0", "disable_ipv6", "0") }
	if err := inNamespace(nsPath, write); err != nil {
		return fmt.Errorf("turn IPv6 on on %q: %w", name, err)
	}
	return nil
}

// sandboxIPv6 turns IPv6 on on the sandbox end and gives it its link-local
// address and ep.Address6, both with DAD off. Equivalent to, inside the
// sandbox,
//
//	ip link set IFNAME addrgenmode none
//	sysctl -w net.ipv6.conf.IFNAME.accept_ra=0 .accept_dad=0 .disable_ipv6=0
//	ip addr replace fe80::EUI64(MAC)/64 dev IFNAME nodad
//	ip addr replace ADDR6 dev IFNAME nodad
//
// The sandbox namespace defaults to IPv6 off (default.disable_ipv6=1), so
// the interface starts with it off. Idempotent: Repair runs it again on an
// endpoint whose IPv6 was lost.
func sandboxIPv6(h *netlink.Handle, nsPath string, link netlink.Link, ep *driver.Endpoint) error {
	if err := IPv6On(h, nsPath, link); err != nil {
		return err
	}
	mac := ep.MAC
	if len(mac) == 0 {
		mac = link.Attrs().HardwareAddr
	}
	prefixes := []netip.Prefix{ep.Address6}
	if ll, ok := LinkLocal(mac); ok {
		prefixes = []netip.Prefix{ll, ep.Address6}
	}
	for _, p := range prefixes {
		if err := h.AddrReplace(link, addr6(p)); err != nil {
			return fmt.Errorf("address %s on %q: %w", p, ep.IfName, err)
		}
	}
	return nil
}

// LinkLocal is the link-local address an Ethernet MAC gives by modified
// EUI-64 (RFC 4291 appendix A): fe80::/64 with the MAC's universal/local
// bit flipped and ff:fe in its middle. ok is false for a MAC that is not
// 6 bytes long.
func LinkLocal(mac net.HardwareAddr) (netip.Prefix, bool) {
	if len(mac) != 6 {
		return netip.Prefix{}, false
	}
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.PrefixFrom(netip.AddrFrom16(a), 64), true
}

// addr6 is p as a netlink address with DAD off: usable at once, never
// tentative.
func addr6(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 128)}, Flags: unix.IFA_F_NODAD}
}

// ipv6Intact reports whether the sandbox end has ep.Address6 (not
// tentative, not failed) and, when it carries the default route, the IPv6
// default route via ep.Gateway6 through it.
func ipv6Intact(sb *nsHandle, link netlink.Link, n *driver.Network, ep *driver.Endpoint) (bool, error) {
	addrs, err := sb.h.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return false, fmt.Errorf("IPv6 addresses of %q: %w", ep.IfName, err)
	}
	found := false
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if netip.PrefixFrom(ip, ones) == ep.Address6 && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
			found = true
		}
	}
	if !found {
		return false, nil
	}
	if !wantsRoute6(n, ep) {
		return true, nil
	}
	return hasDefault6(sb, link, ep.Gateway6)
}

// wantsRoute6: the endpoint carries the sandbox's IPv6 default route.
func wantsRoute6(n *driver.Network, ep *driver.Endpoint) bool {
	return ep.DefaultRoute && !n.Internal && ep.Address6.IsValid() && ep.Gateway6.Is6()
}

// hasDefault6 reports whether the sandbox has `default via gw dev link`
// in its main IPv6 table.
func hasDefault6(sb *nsHandle, link netlink.Link, gw netip.Addr) (bool, error) {
	routes, err := sb.h.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{LinkIndex: link.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		return false, fmt.Errorf("IPv6 routes of %q: %w", link.Attrs().Name, err)
	}
	for _, r := range routes {
		if ones, _ := dstBits(r); ones != 0 {
			continue
		}
		if g, ok := netip.AddrFromSlice(r.Gw); ok && g == gw {
			return true, nil
		}
	}
	return false, nil
}

// dstBits is the prefix length of a route's destination; 0 for a default
// route (netlink reports it as no destination or ::/0).
func dstBits(r netlink.Route) (int, int) {
	if r.Dst == nil {
		return 0, 128
	}
	return r.Dst.Mask.Size()
}

// repairIPv6 checks an intact pair's IPv6 side and restores it in place
// when it is lost (an `ip -6 addr flush` or `sysctl disable_ipv6=1` in the
// sandbox takes the addresses and routes with it): IPv6 turned on again,
// addresses replaced, the default route set. Nothing else is touched, so
// IPv4 traffic is not interrupted and the host end keeps its name. sb nil:
// the sandbox's namespace is opened here.
func (d *Driver) repairIPv6(n *driver.Network, ep *driver.Endpoint, nsPath string, sb *nsHandle) (bool, error) {
	if !ep.Address6.IsValid() {
		return false, nil
	}
	if sb == nil {
		var err error
		if sb, err = openNS(nsPath); err != nil {
			return false, err
		}
		defer sb.close()
	}
	link, err := sb.h.LinkByName(ep.IfName)
	if err != nil {
		return false, fmt.Errorf("find %q in the sandbox: %w", ep.IfName, err)
	}
	ok, err := ipv6Intact(sb, link, n, ep)
	if err != nil || ok {
		return false, err
	}
	if err := sandboxIPv6(sb.h, sb.path, link, ep); err != nil {
		return false, err
	}
	if wantsRoute6(n, ep) {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: ep.Gateway6.AsSlice()}
		if err := sb.h.RouteReplace(r); err != nil {
			return false, fmt.Errorf("default route via %s: %w", ep.Gateway6, err)
		}
	}
	return true, nil
}
