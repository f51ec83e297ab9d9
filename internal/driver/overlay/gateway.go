package overlay

// The distributed gateway (docs/overlay.md, "Way out"). On a network that
// is not internal, every host's overlay bridge holds the network's IPv4
// gateway address, with the same MAC on every host (derived from the
// address), and a sandbox's default route goes through it: the host the
// sandbox runs on routes and masquerades its traffic to the outside, with
// the firewall entries of the bridge (NAT, isolation from other networks,
// no direct routing in), as for a bridge network. A sandbox has one
// interface per overlay, and no second one on a gateway bridge (Docker's
// docker_gwbridge, which Tether used until this).
//
// The gateway's ARP never crosses the overlay: the VXLAN device runs with
// proxy on, which answers (or drops) every ARP request itself, from the
// peers' neighbour entries, and it has no flood entries. So each sandbox
// reaches the bridge of its own host. A frame from the host itself to a
// remote sandbox (source: the gateway's address and MAC) is dropped by the
// remote bridge, which owns that MAC: a host reaches its own sandboxes at
// their overlay addresses, not other hosts'. An internal network's bridge
// has no address (nothing is routed into or out of it, as before).

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
)

// gatewayOf is the address n's bridges hold (gateway/subnet bits), and
// whether they hold one: not on an internal network, nor without an IPv4
// gateway.
func gatewayOf(n *driver.Network) (netip.Prefix, bool) {
	if n.Internal || !n.Gateway.Is4() || !n.Subnet.IsValid() || !n.Subnet.Contains(n.Gateway) {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(n.Gateway, n.Subnet.Bits()), true
}

// GatewayMAC is the MAC of n's bridges on every host: the one a sandbox
// with the gateway's address would get (driver.MACFromIP), which no
// sandbox has (the gateway is never handed out).
func GatewayMAC(n *driver.Network) net.HardwareAddr { return driver.MACFromIP(n.Gateway) }

// ensureGateway gives bridge br the network's gateway address and MAC, or
// takes every IPv4 address off it when the network has no way out
// (internal, or no gateway). Equivalent to
//
//	ip link set tov-VNI address GWMAC; ip addr replace GW/BITS dev tov-VNI
//
// Addresses it should not hold are deleted (a network made internal, or a
// bridge of an older version's).
func (d *Driver) ensureGateway(h *netlink.Handle, n *driver.Network, br netlink.Link) error {
	want, ok := gatewayOf(n)
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %q: %w", br.Attrs().Name, err)
	}
	have := false
	for _, a := range addrs {
		p, pok := netip.AddrFromSlice(a.IP)
		bits, _ := a.Mask.Size()
		if ok && pok && netip.PrefixFrom(p.Unmap(), bits) == want {
			have = true
			continue
		}
		if err := h.AddrDel(br, &a); err != nil {
			return fmt.Errorf("remove address %s from %q: %w", a.IPNet, br.Attrs().Name, err)
		}
	}
	if !ok {
		return nil
	}
	if mac := GatewayMAC(n); !bytes.Equal(br.Attrs().HardwareAddr, mac) {
		if err := h.LinkSetHardwareAddr(br, mac); err != nil {
			return fmt.Errorf("gateway MAC %s on %q: %w", mac, br.Attrs().Name, err)
		}
	}
	if have {
		return nil
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(want.Bits(), 32)}}
	if err := h.AddrReplace(br, a); err != nil {
		return fmt.Errorf("gateway %s on %q: %w", want, br.Attrs().Name, err)
	}
	return nil
}

// routeVia is ep as the bridge driver's default-route helpers read it:
// its IPv4 address and the network's gateway, which its host's bridge
// holds; no IPv6 gateway (the bridges hold no IPv6 address). ok is false
// when the network gives no default route (internal, or no gateway).
func routeVia(n *driver.Network, ep *driver.Endpoint) (r *driver.Endpoint, ok bool) {
	gw, ok := gatewayOf(n)
	if !ok {
		return nil, false
	}
	return &driver.Endpoint{IfName: ep.IfName, Address: ep.Address, Gateway: gw.Addr()}, true
}

// defaultRoute sets the sandbox's IPv4 default route through its overlay
// interface to the network's gateway (`ip route replace default via GW
// dev IFNAME`).
func defaultRoute(sb *netlink.Handle, link netlink.Link, n *driver.Network, ep *driver.Endpoint) error {
	r, ok := routeVia(n, ep)
	if !ok {
		return nil
	}
	return bridge.SetDefaultRoutes(sb, link, n, r)
}

// BridgeName is driver.Bridged: n's bridge, which the firewall's entries
// name.
func (d *Driver) BridgeName(n *driver.Network) string { return BridgeName(n.VNI) }

var (
	_ driver.Bridged = (*Driver)(nil)
	_ driver.Router  = (*Driver)(nil)
)

// SetDefaultRoute is driver.Router: the sandbox's default route through
// its endpoint on n (the one that carried it left).
func (d *Driver) SetDefaultRoute(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	r, ok := routeVia(n, ep)
	if !ok {
		return nil
	}
	return bridge.SetDefaultRouteIn(n, r, nsPath)
}
