// Package ovs is the Open vSwitch driver: `ovs-docker add-port`'s job,
// done through the database instead of ovs-vsctl.
//
// Layout: the network's sandboxes hang off an OVS bridge (option
// ovs.bridge, default the network's BridgeName, tth-<id>) as access ports
// of the network's VLAN (ovs.vlan; none: VLAN 0, untagged frames only).
// The host end of each sandbox's veth pair is a port of type "" (a system
// device); its sandbox end is configured as on a Linux bridge network.
// The network's gateway address is on an OVS internal port named like the
// network's BridgeName, an access port of the same VLAN: the bridge's own
// internal port when the bridge is the network's own, else one internal
// port per network on the shared bridge. So several networks share one OVS
// bridge on different VLANs, each with its gateway, and the interface
// holding the gateway always has the network's BridgeName: the firewall,
// published ports and DNS treat it as they treat a Linux bridge.
//
// Everything Tether adds to the database carries external_ids
// tether-owner (the network's or endpoint's ID) and tether-network; a
// bridge Tether made carries tether-owner (the network that made it).
// DeleteNetwork removes only rows so marked, and a shared bridge only when
// no port but its own is left on it.
//
// ovs-vswitchd must run in the driver's namespace: it opens the veth ends
// by name there and creates the internal ports there (tap devices with the
// userspace "netdev" datapath). Each change waits until ovs-vswitchd has
// applied it (Client.Applied), so traffic flows when a call returns.
package ovs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	"github.com/tether-net/tether/internal/nlutil"
	"github.com/tether-net/tether/internal/ovsdb"
)

// External ID keys of the rows Tether adds.
const (
	KeyOwner   = "tether-owner"   // ID of the network or endpoint the row belongs to
	KeyNetwork = "tether-network" // ID of the network a port belongs to
	KeyRole    = "tether-role"    // "gateway" or "endpoint"
)

// HostIfPrefix starts the name of every host end of a veth pair.
const HostIfPrefix = "tvo"

// applyWait bounds the wait for ovs-vswitchd to apply a change (a dead
// ovs-vswitchd makes the call fail instead of hang).
const applyWait = 15 * time.Second

// Driver is the OVS driver. It works in the namespace its netlink handle
// is bound to, where ovs-vswitchd runs.
type Driver struct {
	h         *netlink.Handle
	ns        string // path of h's namespace; "": the current one
	defaultDB string
	log       *slog.Logger
}

// New returns an OVS driver for the current namespace; defaultDB is the
// ovsdb-server address of networks without ovs.db ("": DefaultDB).
func New(defaultDB string) *Driver { return NewAt(defaultDB, nil, "") }

// NewAt returns an OVS driver working in the namespace persisted at
// nsPath with h bound to it (nil and "": the current one). Tests use it.
func NewAt(defaultDB string, h *netlink.Handle, nsPath string) *Driver {
	if defaultDB == "" {
		defaultDB = DefaultDB
	}
	if h == nil {
		h = &netlink.Handle{}
	}
	return &Driver{h: h, ns: nsPath, defaultDB: defaultDB, log: slog.Default().With("driver", "ovs")}
}

func (d *Driver) Type() string { return "ovs" }

// Capabilities are a Linux bridge network's: the gateway interface is a
// host interface named BridgeName, so the same firewall, published ports
// and DNS apply.
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Scope: driver.ScopeLocal, Addresses: true, Ports: true, Firewall: true,
		DNS: true, DefaultRoute: true, WayOut: true}
}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.OptionChecker = (*Driver)(nil)
	_ driver.Router        = (*Driver)(nil)
	_ driver.Repairer      = (*Driver)(nil)
	_ driver.Sweeper       = (*Driver)(nil)
)

// dial connects to the network's ovsdb-server.
func (d *Driver) dial(ctx context.Context, o options) (*ovsdb.Client, error) {
	c, err := ovsdb.Dial(ctx, o.db)
	if err != nil {
		return nil, fmt.Errorf("%w (is ovsdb-server running? option %s)", err, OptDB)
	}
	return c, nil
}

// applied waits for ovs-vswitchd to apply the database (applyWait at most).
func applied(ctx context.Context, c *ovsdb.Client) error {
	ctx, cancel := context.WithTimeout(ctx, applyWait)
	defer cancel()
	return c.Applied(ctx)
}

func ownerIDs(owner, network, role string) ovsdb.Map {
	return ovsdb.Map{KeyOwner: owner, KeyNetwork: network, KeyRole: role}
}

func mtuOf(n *driver.Network) int {
	if n.MTU == 0 {
		return 1500
	}
	return n.MTU
}

// CreateNetwork makes the OVS bridge unless it exists, the gateway's
// internal port, and gives that port the gateway address. Equivalent to
//
//	ovs-vsctl --may-exist add-br BR -- set Bridge BR datapath_type=netdev external_ids:tether-owner=ID
//	ovs-vsctl --may-exist add-port BR tth-ID tag=VLAN -- set Interface tth-ID type=internal mtu_request=MTU
//	ip addr replace GW/LEN dev tth-ID; ip link set tth-ID up
//
// (the second line is a `set Port BR tag=VLAN` when the bridge is the
// network's own). IPv6 on the gateway port as on a Linux bridge (fe80::1
// and GW6/LEN6 with Subnet6, else off). A shared bridge's VLAN already
// used by another Tether network is refused: the two would share a
// segment. Idempotent: restore calls it for every network.
func (d *Driver) CreateNetwork(ctx context.Context, n *driver.Network) error {
	o, err := d.options(n)
	if err != nil {
		return err
	}
	c, err := d.dial(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := d.ensureBridge(ctx, c, n, o); err != nil {
		return err
	}
	gw := ovsdb.PortSpec{Name: o.gateway, Type: "internal", Tag: o.vlan, MTU: mtuOf(n),
		ExternalIDs: ownerIDs(n.ID, n.ID, "gateway")}
	if _, err := c.AddPort(ctx, o.bridge, gw); err != nil {
		return fmt.Errorf("OVS bridge %q: gateway port: %w", o.bridge, err)
	}
	if err := applied(ctx, c); err != nil {
		return err
	}
	link, err := d.waitLink(ctx, c, o.gateway)
	if err != nil {
		return err
	}
	return d.configureGateway(link, n)
}

// ensureBridge makes the OVS bridge, or checks the existing one: the
// network's own bridge must be Tether's for this network; a shared one
// must not carry another Tether network's gateway on the same VLAN.
func (d *Driver) ensureBridge(ctx context.Context, c *ovsdb.Client, n *driver.Network, o options) error {
	spec := ovsdb.BridgeSpec{Name: o.bridge, DatapathType: o.datapathType(),
		ExternalIDs: ovsdb.Map{KeyOwner: n.ID}, Port: ovsdb.PortSpec{Tag: -1}}
	b, created, err := c.EnsureBridge(ctx, spec)
	if err != nil {
		return fmt.Errorf("OVS bridge %q: %w", o.bridge, err)
	}
	if created {
		return nil
	}
	if o.own() && b.ExternalIDs[KeyOwner] != n.ID {
		return fmt.Errorf("OVS bridge %q exists and is not network %q's (external_ids %v): name another with %s", o.bridge, n.Name, b.ExternalIDs, OptBridge)
	}
	ports, err := c.ListPorts(ctx, o.bridge)
	if err != nil {
		return fmt.Errorf("OVS bridge %q: %w", o.bridge, err)
	}
	for _, p := range ports {
		if p.ExternalIDs[KeyRole] == "gateway" && p.ExternalIDs[KeyNetwork] != n.ID && p.Tag == o.vlan {
			return fmt.Errorf("invalid option %s=%d: OVS bridge %q already carries network %.12s on that VLAN (port %q); give each network its own %s",
				OptVLAN, o.vlan, o.bridge, p.ExternalIDs[KeyNetwork], p.Name, OptVLAN)
		}
	}
	return nil
}

// waitLink finds the internal port's device, which ovs-vswitchd creates;
// when it does not, ovs-vswitchd's recorded error says why.
func (d *Driver) waitLink(ctx context.Context, c *ovsdb.Client, name string) (netlink.Link, error) {
	deadline := time.Now().Add(applyWait)
	for {
		l, err := d.h.LinkByName(name)
		if err == nil {
			return l, nil
		}
		if !nlutil.IsLinkGone(err) || time.Now().After(deadline) {
			msg, _ := c.InterfaceError(ctx, name)
			return nil, fmt.Errorf("OVS internal port %q: no such device (ovs-vswitchd: %q): %w", name, msg, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// configureGateway gives the gateway port its addresses and brings it up:
// `ip addr replace GW/LEN dev G; ip link set G up`, IPv6 as on a Linux
// bridge (bridge.IPv6On with fe80::1/64 and GW6/LEN6, or bridge.IPv6Off).
func (d *Driver) configureGateway(l netlink.Link, n *driver.Network) error {
	name := l.Attrs().Name
	if n.Subnet6.IsValid() && n.Gateway6.Is6() {
		if err := bridge.IPv6On(d.h, d.ns, l); err != nil {
			return err
		}
		for _, p := range []netip.Prefix{bridge.BridgeLinkLocal, netip.PrefixFrom(n.Gateway6, n.Subnet6.Bits())} {
			if err := d.h.AddrReplace(l, addr6(p)); err != nil {
				return fmt.Errorf("address %s on %q: %w", p, name, err)
			}
		}
	} else if err := bridge.IPv6Off(d.h, d.ns, l); err != nil {
		return err
	}
	if n.Gateway.Is4() && n.Subnet.IsValid() {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: n.Gateway.AsSlice(), Mask: net.CIDRMask(n.Subnet.Bits(), 32)}}
		if err := d.h.AddrReplace(l, a); err != nil {
			return fmt.Errorf("address %s on %q: %w", a.IPNet, name, err)
		}
	}
	if err := d.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up %q: %w", name, err)
	}
	return nil
}

// DeleteNetwork removes what CreateNetwork and Join added: every port
// marked with the network (endpoints left behind, and their veth pairs,
// and the gateway port), then the bridge when Tether made it, which for a
// shared bridge is only once no port but its own is left. Equivalent to
// `ovs-vsctl del-port` for each and `ovs-vsctl del-br BR`; it waits for
// ovs-vswitchd to apply that, as ovs-vsctl does. Gone is success.
func (d *Driver) DeleteNetwork(ctx context.Context, n *driver.Network) error {
	o, err := d.options(n)
	if err != nil {
		return err
	}
	c, err := d.dial(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	ports, err := c.FindPorts(ctx, ovsdb.Map{KeyNetwork: n.ID})
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range ports {
		if err := c.DeletePort(ctx, p.UUID); err != nil {
			errs = append(errs, err)
		}
		if p.ExternalIDs[KeyRole] == "endpoint" {
			errs = append(errs, d.deleteHostEnd(p.Name, p.ExternalIDs[KeyOwner]))
		}
	}
	errs = append(errs, d.deleteBridge(ctx, c, n, o))
	if len(ports) > 0 {
		// ovs-vswitchd removes the gateway's internal device once it
		// applies the change: wait, so that the interface is gone when
		// the call returns. Without ovs-vswitchd the rows are gone and
		// the device goes when it is back: logged, not an error.
		if err := applied(ctx, c); err != nil {
			d.log.Warn("delete network: ovs-vswitchd did not apply the change", "network", n.ID, "err", err)
		}
	}
	return errors.Join(errs...)
}

// deleteBridge deletes the OVS bridge if Tether made it: the network's own
// always, a shared one when only its own internal port is left.
func (d *Driver) deleteBridge(ctx context.Context, c *ovsdb.Client, n *driver.Network, o options) error {
	for range 3 { // a port added or removed meanwhile: look again
		b, err := c.FindBridge(ctx, o.bridge)
		if err != nil || b == nil {
			return err
		}
		owner := b.ExternalIDs[KeyOwner]
		switch {
		case owner == "":
			return nil // not Tether's
		case o.own() && owner != n.ID:
			return fmt.Errorf("OVS bridge %q is not network %q's; left alone", o.bridge, n.Name)
		case !o.own():
			ports, err := c.ListPorts(ctx, o.bridge)
			if err != nil {
				return err
			}
			if len(ports) > 1 || (len(ports) == 1 && ports[0].Name != o.bridge) {
				return nil // still used
			}
		}
		err = c.DeleteBridge(ctx, b)
		if !errors.Is(err, ovsdb.ErrChanged) {
			return err
		}
	}
	return fmt.Errorf("OVS bridge %q: ports keep changing; left", o.bridge)
}

// deleteHostEnd deletes a host link if it carries the owner's marker
// (a veth pair goes with either end). Gone is success.
func (d *Driver) deleteHostEnd(name, owner string) error {
	l, err := d.h.LinkByName(name)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil
		}
		return fmt.Errorf("find %q: %w", name, err)
	}
	if l.Attrs().Alias != driver.LinkMarker(owner) {
		return fmt.Errorf("link %q is not endpoint %.12s's; left alone", name, owner)
	}
	if err := d.h.LinkDel(l); err != nil && !nlutil.IsLinkGone(err) {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	return nil
}
