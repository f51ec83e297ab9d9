package macvlan

// The host shim (-o tether.host_shim=true).
//
// A host cannot reach its own macvlan sandboxes through the parent: a
// frame the host sends out the parent goes to the wire and never comes
// back in to the parent's macvlan children (the macvlan device delivers to
// a child only what arrives on the parent from outside, or what a sibling
// macvlan in bridge mode sends), and what a child sends to the host's
// address goes out to the wire too. The shim is a sibling: a macvlan
// interface in bridge mode on the same parent, in the daemon's namespace,
// named tms-<network ID, 11 hex digits>, with the aux address host_shim as
// a /32, and per endpoint a host route to the endpoint's address through
// it. Equivalent to
//
//	ip link add link PARENT name tms-ID type macvlan mode bridge
//	ip link set tms-ID alias tether:macvlan:NETID
//	ip addr add AUX/32 dev tms-ID; ip link set tms-ID up
//	ip route replace ADDR/32 dev tms-ID src AUX      (per endpoint, at Join)
//
// Per-endpoint host routes rather than one route to the subnet: the host
// usually has an address in the same subnet on the parent itself (the
// common macvlan setup: sandboxes on the host's LAN), whose connected
// route to the subnet a subnet route through the shim would collide with
// or shadow, sending all the host's LAN traffic through the shim. A /32
// is more specific than any of the host's routes and takes exactly the
// sandbox's traffic. IPv6 stays off on the shim (it is IPv4 only, and must
// not take the LAN's router advertisements).
//
// The shim is marked tether:macvlan:NETID rather than tether:NETID: the
// bridge driver's Sweep deletes links marked tether:ID that do not carry
// the name the records give ID (a macvlan network's record names its
// unused bridge name), as the overlay driver marks its links
// tether:overlay:ID.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	"github.com/tether-net/tether/internal/nlutil"
)

// ShimPrefix starts the name of every host shim.
const ShimPrefix = "tms-"

// shimOwner prefixes the network ID in a shim's marker.
const shimOwner = "macvlan:"

// ShimName is the host shim's name for a network: tms- and the first 11
// hex digits of its ID (15 characters, IFNAMSIZ).
func ShimName(netID string) string {
	if len(netID) > 11 {
		netID = netID[:11]
	}
	return ShimPrefix + netID
}

// ShimMarker is the alias of a network's host shim.
func ShimMarker(netID string) string { return driver.LinkMarker(shimOwner + netID) }

// ensureShim makes the network's host shim, or checks the one that exists
// is this network's, and gives it its address.
func (d *Driver) ensureShim(n *driver.Network, c config, parent netlink.Link) error {
	name := ShimName(n.ID)
	shim, err := d.h.LinkByName(name)
	if err == nil {
		if shim.Attrs().Alias != ShimMarker(n.ID) {
			return fmt.Errorf("host shim %q exists and is not Tether's network %q's (alias %q)", name, n.Name, shim.Attrs().Alias)
		}
	} else if shim, err = d.createShim(n, parent); err != nil {
		return err
	}
	if err := bridge.IPv6Off(d.h, d.ns, shim); err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.shimAddr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := d.h.AddrReplace(shim, addr); err != nil {
		return fmt.Errorf("address %s on host shim %q: %w", addr.IPNet, name, err)
	}
	if err := d.h.LinkSetUp(shim); err != nil {
		return fmt.Errorf("bring up host shim %q: %w", name, err)
	}
	return nil
}

// createShim creates the shim (bridge mode, the parent's MTU) and marks it.
func (d *Driver) createShim(n *driver.Network, parent netlink.Link) (netlink.Link, error) {
	name := ShimName(n.ID)
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: parent.Attrs().Index, MTU: parent.Attrs().MTU, Alias: ShimMarker(n.ID)},
		Mode:      netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := d.h.LinkAdd(mv); err != nil {
		return nil, fmt.Errorf("create host shim %q on %q: %w", name, parent.Attrs().Name, err)
	}
	shim, err := d.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find new host shim %q: %w", name, err)
	}
	if shim.Attrs().Alias != ShimMarker(n.ID) {
		if err := d.h.LinkSetAlias(shim, ShimMarker(n.ID)); err != nil {
			_ = d.h.LinkDel(shim)
			return nil, fmt.Errorf("mark host shim %q: %w", name, err)
		}
	}
	return shim, nil
}

// deleteShim deletes the network's host shim (`ip link del tms-ID`), and
// only a link with its marker; one that is gone is success.
func (d *Driver) deleteShim(n *driver.Network) error {
	name := ShimName(n.ID)
	l, err := d.h.LinkByName(name)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil
		}
		return fmt.Errorf("find host shim %q: %w", name, err)
	}
	if l.Attrs().Alias != ShimMarker(n.ID) {
		return nil // not ours (or a network without a shim whose name is taken): never touched
	}
	if err := d.h.LinkDel(l); err != nil && !nlutil.IsLinkGone(err) {
		return fmt.Errorf("delete host shim %q: %w", name, err)
	}
	return nil
}

// shimRoute is the host route to an endpoint through the shim.
func (d *Driver) shimRoute(n *driver.Network, ep *driver.Endpoint) (*netlink.Route, error) {
	name := ShimName(n.ID)
	shim, err := d.h.LinkByName(name)
	if err != nil {
		return nil, err
	}
	if shim.Attrs().Alias != ShimMarker(n.ID) {
		return nil, fmt.Errorf("host shim %q is not network %q's", name, n.Name)
	}
	dst := netip.PrefixFrom(ep.Address.Addr(), 32)
	r := &netlink.Route{LinkIndex: shim.Attrs().Index, Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)},
		Scope: netlink.SCOPE_LINK}
	if a, ok := n.Aux[AuxHostShim]; ok {
		r.Src = a.AsSlice()
	}
	return r, nil
}

// routeToSandbox adds `ip route replace ADDR/32 dev tms-ID src AUX` in the
// daemon's namespace.
func (d *Driver) routeToSandbox(n *driver.Network, ep *driver.Endpoint) error {
	if !ep.Address.IsValid() {
		return nil
	}
	r, err := d.shimRoute(n, ep)
	if err != nil {
		return fmt.Errorf("host route to %s: %w", ep.Address.Addr(), err)
	}
	if err := d.h.RouteReplace(r); err != nil {
		return fmt.Errorf("host route to %s via host shim %q: %w", ep.Address.Addr(), ShimName(n.ID), err)
	}
	return nil
}

// unrouteSandbox deletes that route; a route or shim that is gone is
// success.
func (d *Driver) unrouteSandbox(n *driver.Network, ep *driver.Endpoint) error {
	if !ep.Address.IsValid() {
		return nil
	}
	r, err := d.shimRoute(n, ep)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil
		}
		return fmt.Errorf("host route to %s: %w", ep.Address.Addr(), err)
	}
	if err := d.h.RouteDel(r); err != nil && !isRouteGone(err) {
		return fmt.Errorf("delete host route to %s: %w", ep.Address.Addr(), err)
	}
	return nil
}

func isRouteGone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT)
}

// Sweep deletes host shims (marked tether:macvlan:ID) whose network is not
// in keep or that carry another name than ShimName(ID) (driver.Sweeper).
// Links without the marker are never touched.
func (d *Driver) Sweep(ctx context.Context, keep map[string]string) (int, error) {
	links, err := nlutil.Dump("links", d.h.LinkList)
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	n := 0
	for _, l := range links {
		a := l.Attrs()
		id, ok := strings.CutPrefix(a.Alias, driver.MarkerPrefix+shimOwner)
		if !ok || !driver.IsID(id) {
			continue
		}
		if _, known := keep[id]; known && a.Name == ShimName(id) {
			continue
		}
		if err := d.h.LinkDel(l); err != nil && !nlutil.IsLinkGone(err) {
			return n, fmt.Errorf("delete host shim %q: %w", a.Name, err)
		}
		n++
	}
	return n, nil
}
