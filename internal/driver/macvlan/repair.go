package macvlan

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	tns "github.com/tether-net/tether/internal/netns"
)

var _ driver.Repairer = (*Driver)(nil)

// Repair checks an endpoint on restore (driver.Repairer): it is intact
// when the sandbox has ep.IfName as a macvlan with ep.MAC, ep.Address and
// ep.Address6, the default routes it carries, and, with the host shim, the
// host route to it. An intact endpoint is not touched. Anything else is
// joined again in place (Join keeps an existing interface of the
// endpoint's and replaces addresses and routes), so no traffic of an
// endpoint that only lost a route is interrupted.
func (d *Driver) Repair(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string, inside map[string]driver.SandboxLink) (bool, error) {
	if inside != nil {
		if _, ok := inside[ep.IfName]; !ok {
			return true, d.Join(ctx, n, ep, nsPath)
		}
	}
	ok, err := d.intact(n, ep, nsPath)
	if err != nil || ok {
		return false, err
	}
	return true, d.Join(ctx, n, ep, nsPath)
}

// intact reports whether the endpoint's kernel objects match its record.
func (d *Driver) intact(n *driver.Network, ep *driver.Endpoint, nsPath string) (bool, error) {
	c, err := parseOptions(n)
	if err != nil {
		return false, err
	}
	sb, err := tns.NewHandle(nsPath)
	if err != nil {
		return false, fmt.Errorf("open sandbox namespace: %w", err)
	}
	defer sb.Close()
	l, err := sb.LinkByName(ep.IfName)
	if err != nil {
		return false, nil
	}
	if _, ok := l.(*netlink.Macvlan); !ok || (len(ep.MAC) > 0 && l.Attrs().HardwareAddr.String() != ep.MAC.String()) {
		return false, nil
	}
	for _, want := range []netip.Prefix{ep.Address, ep.Address6} {
		if ok, err := hasAddr(sb, l, want); err != nil || !ok {
			return false, err
		}
	}
	if ep.DefaultRoute && !n.Internal {
		for _, gw := range []netip.Addr{ep.Gateway, ep.Gateway6} {
			if ok, err := hasDefault(sb, l, gw); err != nil || !ok {
				return false, err
			}
		}
	}
	if c.shim && ep.Address.IsValid() {
		return d.hasShimRoute(n, ep)
	}
	return true, nil
}

// hasAddr reports whether link has address p (always, for a zero p).
func hasAddr(h *netlink.Handle, link netlink.Link, p netip.Prefix) (bool, error) {
	if !p.IsValid() {
		return true, nil
	}
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := h.AddrList(link, family)
	if err != nil {
		return false, fmt.Errorf("addresses of %q: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if netip.PrefixFrom(ip.Unmap(), ones) == p {
			return true, nil
		}
	}
	return false, nil
}

// hasDefault reports whether the sandbox has `default via gw dev link`
// (always, for a zero gw).
func hasDefault(h *netlink.Handle, link netlink.Link, gw netip.Addr) (bool, error) {
	if !gw.IsValid() {
		return true, nil
	}
	family := netlink.FAMILY_V4
	if gw.Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := h.RouteListFiltered(family, &netlink.Route{LinkIndex: link.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		return false, fmt.Errorf("routes of %q: %w", link.Attrs().Name, err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if g, ok := netip.AddrFromSlice(r.Gw); ok && g.Unmap() == gw {
			return true, nil
		}
	}
	return false, nil
}

// hasShimRoute reports whether the daemon's namespace routes the
// endpoint's address through the network's shim.
func (d *Driver) hasShimRoute(n *driver.Network, ep *driver.Endpoint) (bool, error) {
	want, err := d.shimRoute(n, ep)
	if err != nil {
		return false, nil // shim gone or not ours: Join says which
	}
	routes, err := d.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: want.LinkIndex}, netlink.RT_FILTER_OIF)
	if err != nil {
		return false, fmt.Errorf("routes of the host shim: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == want.Dst.String() {
			return true, nil
		}
	}
	return false, nil
}
