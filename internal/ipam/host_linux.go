package ipam

// Reading what occupies address space on the host: netlink dumps (links
// for names; IPv4 and IPv6 addresses; IPv4 and IPv6 routes of every table)
// turned into Blockers. Every table matters, not only main: policy routing (VPN clients,
// Tailscale's table 52, cloud agents) puts real networks in other tables,
// and a bridge subnet that shadows them breaks the host's connectivity.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/nlutil"
)

// dumpTries and dump are nlutil's, named for this package's tests.
const dumpTries = nlutil.DumpTries

func dump[T any](what string, f func() ([]T, error)) ([]T, error) { return nlutil.Dump(what, f) }

// HostBlockers returns what occupies IPv4 and IPv6 space in h's namespace:
// every interface address as its prefix (`ip addr`) and the routes of all
// routing tables (`ip -4 route show table all`, `ip -6 route show table
// all`). h nil means the calling thread's namespace (normally the host's).
// A kernel without IPv6 gives IPv4 blockers only.
//
// Left out: default routes and anything shorter than /8 (a VPN's 0/1 +
// 128/1 pair is a default route in disguise; likewise ::/1 + 8000::/1),
// IPv4 loopback 127/8, link-local 169.254/16, 0/8, multicast 224/4 and
// reserved 240/4; IPv6 ::/128, loopback ::1/128, IPv4-mapped ::ffff:0:0/96,
// link-local fe80::/10 and multicast ff00::/8; broadcast, multicast, anycast
// and throw routes (they claim no space); and routes the kernel derives from
// an address (protocol kernel: connected subnets, table local's host and
// broadcast entries) when the address itself is reported, so each thing is
// named once, by its address.
func HostBlockers(h *netlink.Handle) ([]Blocker, error) {
	if h == nil {
		h = &netlink.Handle{} // a socket per request, in the calling thread's namespace
	}
	var addrs []netlink.Addr
	var routes []netlink.Route
	for _, f := range []struct {
		family int
		name   string
	}{{netlink.FAMILY_V4, "IPv4"}, {netlink.FAMILY_V6, "IPv6"}} {
		as, err := dump("list "+f.name+" addresses", func() ([]netlink.Addr, error) {
			return h.AddrList(nil, f.family)
		})
		if err != nil && !noFamily(f.family, err) {
			return nil, err
		}
		rs, err := dump("list "+f.name+" routes", func() ([]netlink.Route, error) {
			return h.RouteListFiltered(f.family, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		})
		if err != nil && !noFamily(f.family, err) {
			return nil, err
		}
		addrs, routes = append(addrs, as...), append(routes, rs...)
	}
	return hostBlockers(linkNames(h, addrs, routes), addrs, routes), nil
}

// linkNames names the interfaces the addresses and routes refer to, one
// lookup each: far fewer than the host's interfaces (a dump of every link
// costs time in proportion to the veths of every sandbox, and subnet
// choice must not grow with them). An interface gone meanwhile is left
// out (linkName prints its index).
func linkNames(h *netlink.Handle, addrs []netlink.Addr, routes []netlink.Route) map[int]string {
	names := map[int]string{}
	want := func(i int) {
		if _, ok := names[i]; ok || i <= 0 {
			return
		}
		names[i] = ""
		if l, err := h.LinkByIndex(i); err == nil {
			names[i] = l.Attrs().Name
		} else {
			delete(names, i)
		}
	}
	for _, a := range addrs {
		want(a.LinkIndex)
	}
	for _, r := range routes {
		want(r.LinkIndex)
		for _, nh := range r.MultiPath {
			want(nh.LinkIndex)
		}
	}
	return names
}

// noFamily reports whether err says the kernel has no IPv6 (booted with
// ipv6.disable=1): then there is no IPv6 space to avoid.
func noFamily(family int, err error) bool {
	return family == netlink.FAMILY_V6 && errors.Is(err, unix.EAFNOSUPPORT)
}

// hostBlockers converts dumped addresses and routes (both families):
// addresses first, then routes in dump order.
func hostBlockers(names map[int]string, addrs []netlink.Addr, routes []netlink.Route) []Blocker {
	var out []Blocker
	for _, a := range addrs {
		dev := linkName(names, a.LinkIndex)
		if p, ok := ipNetPrefix(a.IPNet); ok && !ignorable(p) {
			out = append(out, Blocker{Prefix: p.Masked(), Source: fmt.Sprintf("address %s on %s", p, dev)})
		}
		if p, ok := ipNetPrefix(a.Peer); ok && !ignorable(p) && a.Peer.String() != a.IPNet.String() {
			out = append(out, Blocker{Prefix: p.Masked(), Source: fmt.Sprintf("peer %s of address %s on %s", p, a.IPNet, dev)})
		}
	}
	nAddr := len(out)
	for _, r := range routes {
		b, ok := routeBlocker(names, r)
		if !ok || (r.Protocol == unix.RTPROT_KERNEL && covered(b.Prefix, out[:nAddr])) {
			continue
		}
		out = append(out, b)
	}
	return out
}

func covered(p netip.Prefix, by []Blocker) bool {
	for _, b := range by {
		if b.Prefix.Bits() <= p.Bits() && b.Prefix.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// ignoredRanges hold no network a bridge could collide with.
var ignoredRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// minBlockerBits: shorter prefixes are default routes in effect (both
// families: 0.0.0.0/0, ::/0 and their halves).
const minBlockerBits = 8

func ignorable(p netip.Prefix) bool {
	if p.Bits() < minBlockerBits {
		return true
	}
	for _, r := range ignoredRanges {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// routeBlocker describes r like `ip route` would:
// `route 172.16.0.0/12 via 10.0.0.1 dev eth0 (table main)`.
func routeBlocker(names map[int]string, r netlink.Route) (Blocker, bool) {
	switch r.Type {
	case unix.RTN_BROADCAST, unix.RTN_MULTICAST, unix.RTN_ANYCAST, unix.RTN_THROW:
		return Blocker{}, false
	}
	p, ok := ipNetPrefix(r.Dst)
	if !ok || ignorable(p) {
		return Blocker{}, false
	}
	p = p.Masked()
	parts := []string{"route", p.String()}
	if r.Type != unix.RTN_UNICAST && r.Type != unix.RTN_UNSPEC {
		parts = append(parts, "type", nlutil.RouteTypeName(r.Type))
	}
	if len(r.MultiPath) > 0 {
		var hops []string
		for _, nh := range r.MultiPath {
			hops = append(hops, nextHop(names, nh.Gw, nh.LinkIndex))
		}
		parts = append(parts, strings.Join(hops, ", "))
	} else if hop := nextHop(names, r.Gw, r.LinkIndex); hop != "" {
		parts = append(parts, hop)
	}
	parts = append(parts, "(table "+tableName(r.Table)+")")
	return Blocker{Prefix: p, Source: strings.Join(parts, " ")}, true
}

func nextHop(names map[int]string, gw net.IP, link int) string {
	var s []string
	if gw != nil {
		s = append(s, "via", gw.String())
	}
	if link > 0 {
		s = append(s, "dev", linkName(names, link))
	}
	return strings.Join(s, " ")
}

func tableName(t int) string {
	switch t {
	case unix.RT_TABLE_MAIN:
		return "main"
	case unix.RT_TABLE_LOCAL:
		return "local"
	case unix.RT_TABLE_DEFAULT:
		return "default"
	}
	return fmt.Sprintf("%d", t)
}

func linkName(names map[int]string, index int) string {
	if n, ok := names[index]; ok {
		return n
	}
	return fmt.Sprintf("if%d", index)
}

// ipNetPrefix converts a net.IPNet of either family; nil and non-CIDR
// masks fail. An IPv4 address given in 16 bytes with a 128-bit mask (as
// some netlink attributes carry it) is IPv4.
func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if ip4 := n.IP.To4(); ip4 != nil {
		if bits != 32 && !(bits == 128 && ones >= 96) {
			return netip.Prefix{}, false
		}
		if bits == 128 {
			ones -= 96
		}
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(ip4)), ones), true
	}
	if len(n.IP) != net.IPv6len || bits != 128 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(netip.AddrFrom16([16]byte(n.IP)), ones), true
}
