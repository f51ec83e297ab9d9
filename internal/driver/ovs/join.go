package ovs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/ovsdb"
)

// Join creates the endpoint's veth pair and makes its host end a port of
// the OVS bridge:
//
//	(in sandbox) ip link add IFNAME mtu M address MAC type veth peer name tvoXXXX netns HOST
//	             ethtool -K IFNAME tx off   (userspace datapath only, and:)
//	(host)       ethtool -K tvoXXXX tx off
//	             ip link set tvoXXXX alias tether:EP up   (IPv6 off)
//	             ovs-vsctl add-port BR tvoXXXX tag=VLAN [protected=true] external_ids:tether-owner=EP ...
//	(in sandbox) ip addr add ADDR dev IFNAME; ip link set IFNAME up; ip link set lo up
//	             ip route add default via GW   (when ep.DefaultRoute)
//
// With ep.Address6 the sandbox end gets IPv6 as on a Linux bridge network.
// A network with ICC off makes the ports protected (they reach the gateway,
// not each other). On the userspace datapath transmit checksum offload is
// off on both ends (see offload.go: TCP fails otherwise). It returns once
// ovs-vswitchd has attached the port. On
// failure everything done so far is undone.
func (d *Driver) Join(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) (err error) {
	o, err := d.options(n)
	if err != nil {
		return err
	}
	c, err := d.dial(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	sb, err := tns.NewHandle(nsPath)
	if err != nil {
		return fmt.Errorf("open sandbox namespace: %w", err)
	}
	defer sb.Close()

	host, err := d.createVeth(sb, n, ep)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			d.unplug(ctx, c, ep)
			_ = d.h.LinkDel(host)
		}
	}()
	if _, err := d.checksumOffloadOff(ctx, c, o, ep, nsPath); err != nil {
		return err
	}
	if err := d.wireHostEnd(ctx, c, host, n, ep, o); err != nil {
		return err
	}
	return configureSandboxEnd(sb, nsPath, n, ep)
}

// wireHostEnd turns IPv6 off on the host end (a switch port needs no
// address and must take no router advertisement), marks it, brings it up
// and adds it to the bridge, waiting for ovs-vswitchd to attach it.
func (d *Driver) wireHostEnd(ctx context.Context, c *ovsdb.Client, host netlink.Link, n *driver.Network, ep *driver.Endpoint, o options) error {
	if err := bridge.IPv6Off(d.h, d.ns, host); err != nil {
		return err
	}
	if err := d.keepOffStack(host); err != nil {
		return err
	}
	if err := d.h.LinkSetAlias(host, driver.LinkMarker(ep.ID)); err != nil {
		return fmt.Errorf("mark %q: %w", ep.HostIfName, err)
	}
	if err := d.h.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring up %q: %w", ep.HostIfName, err)
	}
	if _, err := c.AddPort(ctx, o.bridge, portSpec(n, ep, o)); err != nil {
		return fmt.Errorf("OVS bridge %q: %w", o.bridge, err)
	}
	return applied(ctx, c)
}

// keepOffStack keeps the host's IP stack from taking frames that arrive on
// a host end. Unlike a Linux bridge port, whose frames the bridge takes
// away from the stack, a port of the userspace datapath is read through a
// packet socket, and the stack sees every frame as well: with defaults the
// host end would answer a sandbox's ARP request for the gateway with its
// own MAC (arp_ignore=0 answers for any local address), and the sandbox's
// traffic would then enter the host through the host end instead of the
// gateway interface the firewall matches. Equivalent to
//
//	ip link set tvoXXXX arp off
//	sysctl -w net.ipv4.conf.tvoXXXX.rp_filter=1 net.ipv4.conf.tvoXXXX.arp_ignore=8
//
// NOARP: no ARP replies or requests from it. rp_filter=1 (strict): a
// packet is taken only when the reply would leave through the same link,
// and nothing routes through a host end, so the stack drops whatever it
// gets there (a sandbox that learned the MAC, broadcasts).
func (d *Driver) keepOffStack(l netlink.Link) error {
	name := l.Attrs().Name
	if err := d.h.LinkSetARPOff(l); err != nil {
		return fmt.Errorf("arp off on %q: %w", name, err)
	}
	write := func() error {
		for _, kv := range [][2]string{{"rp_filter", "1"}, {"arp_ignore", "8"}} {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+name+"/"+kv[0], []byte(kv[1]), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if d.ns == "" {
		err = write()
	} else {
		err = tns.Do(d.ns, write)
	}
	if err != nil {
		return fmt.Errorf("keep %q off the IP stack: %w", name, err)
	}
	return nil
}

func portSpec(n *driver.Network, ep *driver.Endpoint, o options) ovsdb.PortSpec {
	return ovsdb.PortSpec{Name: ep.HostIfName, Tag: o.vlan, Protected: !n.ICC,
		ExternalIDs: ownerIDs(ep.ID, n.ID, "endpoint")}
}

// unplug removes the endpoint's port from the database when it is the
// endpoint's (best effort: a failure is logged, the port is swept later).
func (d *Driver) unplug(ctx context.Context, c *ovsdb.Client, ep *driver.Endpoint) {
	p, err := c.FindPort(ctx, ep.HostIfName)
	if err == nil && p != nil && p.ExternalIDs[KeyOwner] == ep.ID {
		err = c.DeletePort(ctx, p.UUID)
	}
	if err != nil {
		d.log.Warn("remove OVS port", "port", ep.HostIfName, "endpoint", ep.ID, "err", err)
	}
}

// createVeth creates the pair from inside the sandbox with its peer placed
// in the driver's namespace, and returns the host end, looked up again by
// name (its index changed on the move). Host names are random; a
// collision is retried with another.
func (d *Driver) createVeth(sb *netlink.Handle, n *driver.Network, ep *driver.Endpoint) (netlink.Link, error) {
	hostNS, closeNS, err := d.hostNS()
	if err != nil {
		return nil, err
	}
	defer closeNS()
	mtu := mtuOf(n)
	for try := 0; ; try++ {
		if ep.HostIfName == "" || try > 0 {
			ep.HostIfName = HostIfPrefix + randomHex(4)
		}
		veth := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: ep.IfName, MTU: mtu, HardwareAddr: ep.MAC},
			PeerName:  ep.HostIfName, PeerMTU: uint32(mtu), PeerNamespace: netlink.NsFd(hostNS),
		}
		err := sb.LinkAdd(veth)
		if err == nil {
			break
		}
		if errors.Is(err, unix.EEXIST) && try < 5 {
			if _, lerr := sb.LinkByName(ep.IfName); lerr == nil {
				return nil, fmt.Errorf("interface %q already exists in the sandbox", ep.IfName)
			}
			continue
		}
		return nil, fmt.Errorf("create veth %s/%s: %w", ep.IfName, ep.HostIfName, err)
	}
	host, err := d.h.LinkByName(ep.HostIfName)
	if err != nil {
		return nil, fmt.Errorf("find host end %q: %w", ep.HostIfName, err)
	}
	return host, nil
}

// hostNS opens the driver's namespace for placing a veth's peer there.
func (d *Driver) hostNS() (fd int, closeFn func(), err error) {
	path := d.ns
	if path == "" {
		path = "/proc/self/ns/net"
	}
	h, err := tns.Open(path)
	if err != nil {
		return 0, nil, fmt.Errorf("open host namespace: %w", err)
	}
	return int(h), func() { _ = h.Close() }, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// configureSandboxEnd addresses the sandbox end and brings it up, as the
// bridge driver does (bridge.ConfigureEnd).
func configureSandboxEnd(sb *netlink.Handle, nsPath string, n *driver.Network, ep *driver.Endpoint) error {
	link, err := sb.LinkByName(ep.IfName)
	if err != nil {
		return fmt.Errorf("find %q in sandbox: %w", ep.IfName, err)
	}
	return bridge.ConfigureEnd(sb, nsPath, link, n, ep)
}

func addr6(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 128)}, Flags: unix.IFA_F_NODAD}
}

// SetDefaultRoute gives the sandbox its default routes through the
// endpoint (driver.Router).
func (d *Driver) SetDefaultRoute(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	return bridge.SetDefaultRouteIn(n, ep, nsPath)
}

// Leave removes the endpoint's port from the bridge (`ovs-vsctl
// --if-exists del-port tvoXXXX`) and deletes its veth pair. Both gone is
// success. When ovsdb-server cannot be reached the pair is still deleted
// and the port row, marked with the endpoint, is left for DeleteNetwork or
// Sweep (logged): a sandbox is never kept for want of the database.
func (d *Driver) Leave(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	if ep.HostIfName == "" {
		return nil
	}
	o, err := d.options(n)
	if err != nil {
		return err
	}
	if c, err := d.dial(ctx, o); err != nil {
		d.log.Warn("leave: port left in the database", "port", ep.HostIfName, "endpoint", ep.ID, "err", err)
	} else {
		d.unplug(ctx, c, ep)
		c.Close()
	}
	return d.deleteHostEnd(ep.HostIfName, ep.ID)
}

// hostEndIntact: the host end exists with the endpoint's marker and is the
// peer of the sandbox end in (nil: not there).
func (d *Driver) hostEndIntact(ep *driver.Endpoint, in *driver.SandboxLink) bool {
	if in == nil || !in.Veth || ep.HostIfName == "" {
		return false
	}
	host, err := d.h.LinkByName(ep.HostIfName)
	if err != nil || host.Attrs().Alias != driver.LinkMarker(ep.ID) {
		return false
	}
	return in.PeerIndex == host.Attrs().Index && host.Attrs().ParentIndex == in.Index
}
