package link

// Reading one end of a link from its namespace, and judging a pair of ends
// against the record: the judging is pure (Problem, paired, Validate), so
// it is tested without root.

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/nlutil"
)

// End is one end of a link as found in its namespace.
type End struct {
	Name   string
	Exists bool
	Veth   bool
	Alias  string
	Index  int
	Up     bool
	MTU    int
	// PeerIndex is the veth peer's interface index (IFLA_LINK), PeerNSID
	// the ID this namespace gives the peer's namespace (IFLA_LINK_NETNSID;
	// -1: the peer is in this namespace).
	PeerIndex, PeerNSID int
	// OtherNSID is the ID this namespace gives the link's other namespace
	// (RTM_GETNSID; -1: none assigned, so no link of this one reaches it).
	OtherNSID int
	Addrs     []netip.Prefix // IPv4 addresses
	Routes    []netip.Prefix // destinations of the main table's scope-link IPv4 routes through it, without gateway
}

// readEnd reads the link named name in h's namespace; other is the link's
// other namespace. A missing link is an End with Exists false.
func readEnd(h *netlink.Handle, name string, other netns.NsHandle) (End, error) {
	e := End{Name: name}
	dev, err := h.LinkByName(name)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return e, nil
		}
		return e, fmt.Errorf("find %q: %w", name, err)
	}
	a := dev.Attrs()
	_, veth := dev.(*netlink.Veth)
	e.Exists, e.Veth, e.Alias, e.Index, e.MTU = true, veth, a.Alias, a.Index, a.MTU
	e.Up = a.Flags&net.FlagUp != 0
	e.PeerIndex, e.PeerNSID = a.ParentIndex, a.NetNsID
	// Asked after reading the link: reporting its peer's namespace made
	// the kernel assign that namespace an ID if it had none.
	if e.OtherNSID, err = h.GetNetNsIdByFd(int(other)); err != nil {
		return e, fmt.Errorf("ID of the other namespace: %w", err)
	}
	addrs, err := nlutil.Dump("addresses of "+name, func() ([]netlink.Addr, error) { return h.AddrList(dev, netlink.FAMILY_V4) })
	if err != nil {
		return e, err
	}
	for _, ad := range addrs {
		if p, ok := prefixOf(ad.IPNet); ok {
			e.Addrs = append(e.Addrs, p)
		}
	}
	filter := &netlink.Route{LinkIndex: a.Index}
	routes, err := nlutil.Dump("routes of "+name, func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return e, err
	}
	for _, r := range routes {
		if r.Scope != netlink.SCOPE_LINK || r.Gw != nil || (r.Table != 0 && r.Table != unix.RT_TABLE_MAIN) {
			continue
		}
		if p, ok := prefixOf(r.Dst); ok {
			e.Routes = append(e.Routes, p)
		}
	}
	return e, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits != 32 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ones), true
}

// paired reports whether a and b are both this link's and each other's
// veth peer: a's peer is b's index in the namespace a calls B's, and the
// other way round.
func paired(l *driver.P2PLink, a, b End) bool {
	marker := driver.LinkMarker(l.ID)
	for _, e := range []End{a, b} {
		if !e.Exists || !e.Veth || e.Alias != marker || e.OtherNSID < 0 || e.PeerNSID != e.OtherNSID {
			return false
		}
	}
	return a.PeerIndex == b.Index && b.PeerIndex == a.Index
}

// Problem says what keeps the link from being intact, "" when it is:
// both ends paired (paired), up, with the link's MTU, each with its
// address and a host route to the other's.
func Problem(l *driver.P2PLink, a, b End) string {
	for _, e := range []End{a, b} {
		if !e.Exists {
			return fmt.Sprintf("%q is missing", e.Name)
		}
	}
	if !paired(l, a, b) {
		return fmt.Sprintf("%q and %q are not this link's pair", a.Name, b.Name)
	}
	for _, c := range []struct {
		e          End
		addr, peer netip.Prefix
	}{{a, l.AddrA, l.AddrB}, {b, l.AddrB, l.AddrA}} {
		e := c.e
		switch {
		case !e.Up:
			return fmt.Sprintf("%q is down", e.Name)
		case e.MTU != mtuOf(l):
			return fmt.Sprintf("%q has MTU %d, not %d", e.Name, e.MTU, mtuOf(l))
		case !slices.Contains(e.Addrs, c.addr):
			return fmt.Sprintf("%q lacks address %s", e.Name, c.addr)
		case !slices.Contains(e.Routes, netip.PrefixFrom(c.peer.Addr(), 32)):
			return fmt.Sprintf("%q lacks the route to %s", e.Name, c.peer.Addr())
		}
	}
	return ""
}

// Validate checks a link record before anything is touched: an ID, two
// namespace paths, two interface names, two distinct IPv4 addresses, an
// MTU the kernel takes.
func Validate(l *driver.P2PLink) error {
	if l == nil {
		return fmt.Errorf("%w: no link", ErrInvalid)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("link %.12s: %w: %s", l.ID, ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case l.ID == "":
		return bad("no ID")
	case l.NSA == "" || l.NSB == "":
		return bad("a namespace path is empty")
	case l.NSA == l.NSB:
		return bad("both ends in namespace %q", l.NSA)
	}
	for _, n := range []string{l.IfA, l.IfB} {
		if err := checkName(n); err != nil {
			return bad("%v", err)
		}
	}
	for _, p := range []netip.Prefix{l.AddrA, l.AddrB} {
		if !p.IsValid() || !p.Addr().Is4() {
			return bad("address %s is not an IPv4 address with a prefix length", p)
		}
	}
	if l.AddrA.Addr() == l.AddrB.Addr() {
		return bad("both ends have address %s", l.AddrA.Addr())
	}
	if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
		return bad("MTU %d out of range 68..65535", l.MTU)
	}
	return nil
}

// checkName: what the kernel accepts as an interface name (dev_valid_name).
func checkName(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("empty interface name")
	case len(n) > 15:
		return fmt.Errorf("interface name %q longer than 15 bytes", n)
	case n == "." || n == "..":
		return fmt.Errorf("interface name %q", n)
	case strings.ContainsAny(n, "/: \t\n\r\v\f"):
		return fmt.Errorf("interface name %q has a slash, colon or space", n)
	}
	return nil
}
