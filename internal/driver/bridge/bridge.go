// Package bridge is the Linux bridge driver, Tether's docker0.
//
// Layout: one Linux bridge per network (tether0 for the default network,
// tth-<id12> for others) holding the gateway address; per endpoint one veth
// pair created from inside the sandbox's namespace with its peer placed
// directly in the host namespace (one netlink request instead of create+move),
// the host end enslaved to the bridge. On an IPv4-only network IPv6 is turned
// off on the bridge and on both veth ends: on IPv4-only bridges its link-local
// and multicast chatter is flooded to every port and makes each attach slower
// than the one before, and a host-side link that takes router advertisements
// lets a sandbox give the host routes and addresses (IPv6Off). A dual-stack or
// IPv6-only network turns IPv6 on on the bridge and the sandbox ends only,
// with static addresses (ipv6.go); the host ends keep it off either way.
// Ownership is marked by name prefix and by the link alias "tether:<id>", so
// restore and garbage collection can tell Tether's links from anyone else's.
package bridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
)

const (
	// AliasPrefix marks links Tether created (driver.LinkMarker).
	AliasPrefix = driver.MarkerPrefix
	// HostIfPrefix starts the name of every host-side veth.
	HostIfPrefix = "vth"
)

// Driver is the bridge driver. It works in the namespace its handle is bound
// to (the daemon's "host" namespace).
type Driver struct {
	h    *netlink.Handle
	ns   string           // path of h's namespace (sysctls, host ends of new veths); "": the current one
	gone nlutil.GoneWatch // detached host ends, until their namespace's teardown deletes them
	// pool: handles of their own for attach and detach (handles.go); nil
	// when the caller gave a handle bound to a namespace not at ns.
	pool *nlutil.HandlePool
	// conns: sockets in the driver's namespace for the requests that make
	// several changes at once (nlutil.Conn: Join, JoinPair).
	conns *nlutil.ConnPool
	// bridges: each network bridge's ifindex as last looked up (name ->
	// int), so an attach does not dump the bridge again. An index is not
	// reused until the namespace's counter wraps, so a stale one names no
	// link: the enslaving fails, and the bridge is looked up afresh.
	bridges sync.Map
}

// New returns a bridge driver issuing netlink requests through h (nil: the
// current namespace).
func New(h *netlink.Handle) *Driver { return NewAt(h, "") }

// NewAt returns a bridge driver working in the namespace persisted at
// nsPath, h being a handle bound to it ("" and nil: the current namespace).
// Tests use it to run the driver in a namespace they created.
func NewAt(h *netlink.Handle, nsPath string) *Driver {
	d := &Driver{h: h, ns: nsPath, conns: nlutil.NewConnPool(nsPath)}
	if h == nil || nsPath != "" {
		d.pool = nlutil.NewHandlePool(nsPath)
	}
	if h == nil {
		d.h = &netlink.Handle{}
	}
	return d
}

func (d *Driver) Type() string { return "bridge" }

// Capabilities: a local network with addresses, ports, firewall entries and
// names; its first endpoint carries the sandbox's default route.
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Scope: driver.ScopeLocal, Addresses: true, Ports: true, Firewall: true,
		DNS: true, DefaultRoute: true, WayOut: true}
}

// CreateNetwork makes the bridge, gives it the gateway address (none when
// n.Gateway is not set) and brings it up. Equivalent to `ip link add NAME address BridgeMAC(ID) type bridge; ip addr add GW/LEN dev NAME;
// ip link set NAME up`. With n.Subnet6 and n.Gateway6 it also turns IPv6 on
// on the bridge and adds fe80::1/64 and GW6/LEN6 (bridgeIPv6); otherwise
// IPv6 stays off (IPv6Off). For an External bridge it only checks that the
// bridge exists and is up: its addresses and sysctls are the owner's.
func (d *Driver) CreateNetwork(ctx context.Context, n *driver.Network) error {
	if n.External {
		l, err := d.h.LinkByName(n.BridgeName)
		if err != nil {
			return fmt.Errorf("existing bridge %q: %w", n.BridgeName, err)
		}
		if _, ok := l.(*netlink.Bridge); !ok {
			return fmt.Errorf("existing link %q is a %s, not a bridge", n.BridgeName, l.Type())
		}
		return d.h.LinkSetUp(l)
	}
	br, err := d.ensureBridge(n)
	if err != nil {
		return err
	}
	if err := d.bridgeIPv6(br, n); err != nil {
		return fmt.Errorf("bridge %q: %w", n.BridgeName, err)
	}
	// No gateway: the host is not on the network (gateway mode isolated), or
	// the network is IPv6-only (no Subnet).
	if n.Gateway.Is4() && n.Subnet.IsValid() {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.Gateway.AsSlice(), Mask: net.CIDRMask(n.Subnet.Bits(), 32)}}
		if err := d.h.AddrReplace(br, addr); err != nil {
			return fmt.Errorf("address %s on bridge %q: %w", addr.IPNet, n.BridgeName, err)
		}
	}
	if err := d.h.LinkSetUp(br); err != nil {
		return fmt.Errorf("bring up bridge %q: %w", n.BridgeName, err)
	}
	return nil
}

func (d *Driver) ensureBridge(n *driver.Network) (netlink.Link, error) {
	if l, err := d.h.LinkByName(n.BridgeName); err == nil {
		if l.Attrs().Alias != AliasPrefix+n.ID {
			return nil, fmt.Errorf("bridge %q exists and is not Tether's network %q (alias %q)", n.BridgeName, n.Name, l.Attrs().Alias)
		}
		if mac := l.Attrs().HardwareAddr; !bytes.Equal(mac, BridgeMAC(n.ID)) && len(mac) == 6 {
			// Made by an older version, with the address the kernel
			// derives: pin the one it has (set to itself, it does not
			// change, but the kernel stops deriving it).
			if err := d.h.LinkSetHardwareAddr(l, mac); err != nil {
				return nil, fmt.Errorf("pin the address of bridge %q: %w", n.BridgeName, err)
			}
		}
		d.bridges.Store(n.BridgeName, l.Attrs().Index)
		return l, nil
	}
	mtu := n.MTU
	if mtu == 0 {
		mtu = 1500
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.BridgeName, MTU: mtu, Alias: AliasPrefix + n.ID, HardwareAddr: BridgeMAC(n.ID)}}
	if err := d.h.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("create bridge %q: %w", n.BridgeName, err)
	}
	l, err := d.h.LinkByName(n.BridgeName)
	if err != nil {
		return nil, fmt.Errorf("find new bridge %q: %w", n.BridgeName, err)
	}
	d.bridges.Store(n.BridgeName, l.Attrs().Index)
	// LinkAdd does not send IFLA_IFALIAS for bridges on every kernel; make sure.
	if l.Attrs().Alias != AliasPrefix+n.ID {
		if err := d.h.LinkSetAlias(l, AliasPrefix+n.ID); err != nil {
			return nil, fmt.Errorf("mark bridge %q: %w", n.BridgeName, err)
		}
	}
	return l, nil
}

// BridgeMAC is the address a network's bridge is given: unicast, locally
// administered, from the network's ID, so a bridge made again (after it
// was deleted while the daemon was stopped) has the same one and the
// sandboxes' cached gateway address stays right. Given explicitly, the
// kernel keeps it: a bridge without an address of its own takes the lowest
// of its ports' addresses, so it changes, and every neighbour's cache of
// it goes stale, whenever a port with a lower one joins, and every join
// and leave scans all ports to find out (br_stp_recalculate_bridge_id).
// Docker gives its bridges an address too.
func BridgeMAC(networkID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("tether bridge " + networkID))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}

// DeleteNetwork removes the bridge (never an External one). Equivalent to
// `ip link del NAME`; a bridge that is gone is success.
func (d *Driver) DeleteNetwork(ctx context.Context, n *driver.Network) error {
	d.bridges.Delete(n.BridgeName)
	if n.External {
		return nil
	}
	l, err := d.h.LinkByName(n.BridgeName)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil
		}
		return fmt.Errorf("find bridge %q: %w", n.BridgeName, err)
	}
	if l.Attrs().Alias != AliasPrefix+n.ID {
		return fmt.Errorf("bridge %q is not Tether's network %q; left alone", n.BridgeName, n.Name)
	}
	if err := d.h.LinkDel(l); err != nil && !nlutil.IsLinkGone(err) {
		return fmt.Errorf("delete bridge %q: %w", n.BridgeName, err)
	}
	return nil
}

// Join creates the endpoint's veth pair and wires it, in six netlink
// requests and two sysctl writes (the floor's attach makes nine:
// bench/attach/floor.go):
//
//	(host)       ip link add vthXXXX mtu M master BRIDGE type veth peer name IFNAME mtu M address MAC netns SANDBOX
//	             (echoed back: the new link's IFLA_LINK is IFNAME's index, so it needs no lookup)
//	(host)       sysctl net.ipv6.conf.vthXXXX.accept_ra=0 net.ipv6.conf.vthXXXX.disable_ipv6=1
//	(in sandbox) ip addr add ADDR dev IFNAME; ip link set IFNAME up; ip link set lo up
//	             ip route add default via GW   (when ep.DefaultRoute)
//	(host)       ip link set vthXXXX up alias tether:EP addrgenmode none type bridge_slave hairpin on isolated on|off
//
// The last request finishes the join (finishHostEnd): until it the host
// end is down, so no frame passes before the sandbox end is configured.
// The host end is ep.HostIfName when set (the engine asks HostIfName), else
// a fresh name, and another one if that is taken.
//
// With ep.Address6 the sandbox end also gets IPv6 on, a link-local address
// and ADDR6 (sandboxIPv6), and the IPv6 default route via GW6. An endpoint
// without ep.Address (IPv6-only network) gets no IPv4 address or route.
// On failure everything done so far is undone.
func (d *Driver) Join(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) (err error) {
	c, err := d.conns.Get()
	if err != nil {
		return err
	}
	defer d.conns.Put(c)
	sb, err := openNS(nsPath)
	if err != nil {
		return err
	}
	defer sb.close()
	sbNS, err := tns.Open(nsPath)
	if err != nil {
		return fmt.Errorf("open sandbox namespace: %w", err)
	}
	defer sbNS.Close()

	inSandbox := func() bool { _, err := sb.h.LinkByName(ep.IfName); return err == nil }
	index, err := d.addPair(c, n, ep, int(sbNS), inSandbox, "the sandbox")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = c.DeleteLink(ep.HostIfName) // deleting one end deletes the pair
		}
	}()
	end, err := sandboxEnd(sb, ep, index)
	if err != nil {
		return err
	}
	if err := hostIPv6Sysctls(d.ns, ep.HostIfName); err != nil {
		return err
	}
	if err := ConfigureEnd(sb.h, sb.path, end, n, ep); err != nil {
		return err
	}
	return finishHostEnd(c, n, ep)
}

// sandboxEnd is the sandbox end just created, as ConfigureEnd needs it:
// built from its index (the kernel's echo of the creation) and the MAC it
// was given, or looked up when either is unknown (an old kernel; an IPv6
// link-local address derived from a MAC the kernel chose).
func sandboxEnd(sb *nsHandle, ep *driver.Endpoint, index int) (netlink.Link, error) {
	if index > 0 && (len(ep.MAC) > 0 || !ep.Address6.IsValid()) {
		return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ep.IfName, Index: index, HardwareAddr: ep.MAC}}, nil
	}
	l, err := sb.h.LinkByName(ep.IfName)
	if err != nil {
		return nil, fmt.Errorf("find %q in sandbox: %w", ep.IfName, err)
	}
	return l, nil
}

// addPair creates the endpoint's veth pair in one request through c (a
// socket in the driver's namespace) and returns the sandbox end's ifindex
// (0: unknown, nlutil.Conn.AddVethPair):
//
//	ip link add vthXXXX mtu M master BRIDGE type veth peer name IFNAME mtu M [address MAC] [netns SANDBOX]
//
// The host end (ep.HostIfName, or a fresh name when that is "") is born
// enslaved, down and dormant (nlutil.VethPair.Dormant: the kernel's link
// watcher, not the request that brings it up, enables the port once its
// carrier is on, so no join pays the scan of every port that enabling
// runs); the sandbox end IFNAME is born down in the namespace
// of peerNS (< 0: the driver's own). A host name already taken
// is retried with another, unless taken reports that IFNAME is what
// exists (in where); a bridge index gone stale (the bridge made again) is
// looked up afresh once. On failure nothing is left.
func (d *Driver) addPair(c *nlutil.Conn, n *driver.Network, ep *driver.Endpoint, peerNS int, taken func() bool, where string) (int, error) {
	br, err := d.bridgeIndex(d.h, n.BridgeName, false)
	if err != nil {
		return 0, err
	}
	mtu := n.MTU
	if mtu == 0 {
		mtu = 1500
	}
	refreshed := false
	for try := 0; ; try++ {
		if ep.HostIfName == "" || try > 0 {
			ep.HostIfName = d.HostIfName()
		}
		index, err := c.AddVethPair(nlutil.VethPair{Name: ep.HostIfName, MTU: mtu, Master: br,
			Peer: ep.IfName, PeerMAC: ep.MAC, PeerNS: peerNS, Dormant: true})
		switch {
		case err == nil:
			return index, nil
		case errors.Is(err, unix.EEXIST) && try < 5:
			if taken() {
				return 0, fmt.Errorf("interface %q already exists in %s", ep.IfName, where)
			}
			continue
		case !refreshed && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EOPNOTSUPP)):
			// The bridge may have been made again since its index was kept.
			refreshed = true
			if fresh, ferr := d.bridgeIndex(d.h, n.BridgeName, true); ferr == nil && fresh != br {
				br = fresh
				continue
			}
		}
		return 0, fmt.Errorf("attach %q to bridge %q: %w", ep.HostIfName, n.BridgeName, err)
	}
}

// finishHostEnd makes the host end a working port, in one request, last
// of a join (its IPv6 sysctls written before, hostIPv6Sysctls):
//
//	ip link set dev vthXXXX up alias tether:EP addrgenmode none type bridge_slave hairpin on isolated on|off
//
// Hairpin: a sandbox reaching its own published port through the host
// address is DNATed back onto the port it came from; with br_netfilter
// loaded that frame is bridged, and must be allowed out the same port.
// Isolated unless the network allows inter-container traffic. IPv6 stays
// off on the host end on every network, dual-stack too: a bridge port
// needs no address (bridging is layer 2, the port's IPv6 setting does not
// touch the frames it forwards), and with IPv6 off it sends no MLD or
// router solicitations and can take no router advertisement (IPv6Off).
// The alias marks a finished join (Repair takes a marked, enslaved pair for
// intact; the sweep finds Tether's links by it): the kernel applies the
// request's changes under one hold of the rtnl lock, so no reader sees the
// mark on a port not yet up. The port starts forwarding a moment later,
// when the link watcher enables it (addPair), never before its flags are
// set.
func finishHostEnd(c *nlutil.Conn, n *driver.Network, ep *driver.Endpoint) error {
	ch := nlutil.LinkChange{Port: &nlutil.PortFlags{Hairpin: true, Isolated: !n.ICC},
		Alias: AliasPrefix + ep.ID, Up: true, AddrGenModeNone: ipv6Present()}
	if err := c.ChangeLink(ep.HostIfName, ch); err != nil {
		return fmt.Errorf("bring up bridge port %q: %w", ep.HostIfName, err)
	}
	return nil
}

// bridgeIndex is the ifindex of the bridge named name: as kept, or looked
// up (always when fresh) and kept.
func (d *Driver) bridgeIndex(h *netlink.Handle, name string, fresh bool) (int, error) {
	if !fresh {
		if idx, ok := d.bridges.Load(name); ok {
			return idx.(int), nil
		}
	}
	br, err := h.LinkByName(name)
	if err != nil {
		d.bridges.Delete(name)
		return 0, fmt.Errorf("find bridge %q: %w", name, err)
	}
	d.bridges.Store(name, br.Attrs().Index)
	return br.Attrs().Index, nil
}

// HostIfName is a fresh name for an endpoint's host end (driver.HostIfNamer).
func (d *Driver) HostIfName() string { return HostIfPrefix + randomHex(4) }

// ConfigureEnd configures an endpoint's interface in a sandbox, through h
// (a handle in the sandbox's namespace at nsPath), for every driver whose
// sandbox end is an ordinary interface (bridge, macvlan, ovs):
//
//	IPv6 on with static addresses (sandboxIPv6), or off when ep.DisableIPv6
//	ip addr replace ADDR dev IFNAME; ip link set IFNAME up; ip link set lo up
//	the default routes when ep.DefaultRoute (SetDefaultRoutes)
//
// Idempotent: Join and Repair may run it on an end that is partly or
// wholly configured.
func ConfigureEnd(h *netlink.Handle, nsPath string, link netlink.Link, n *driver.Network, ep *driver.Endpoint) error {
	if ep.Address6.IsValid() {
		if err := sandboxIPv6(h, nsPath, link, ep); err != nil {
			return err
		}
	} else if ep.DisableIPv6 {
		if err := IPv6Off(h, nsPath, link); err != nil {
			return err
		}
	}
	if ep.Address.IsValid() {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ep.Address.Addr().AsSlice(), Mask: net.CIDRMask(ep.Address.Bits(), 32)}}
		if err := h.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("address %s on %q: %w", ep.Address, ep.IfName, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 { // else found up
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("bring up %q: %w", ep.IfName, err)
		}
	}
	// lo is always index 1 of a network namespace (LOOPBACK_IFINDEX);
	// bringing up a link that is up changes nothing.
	if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	if ep.DefaultRoute {
		return SetDefaultRoutes(h, link, n, ep)
	}
	return nil
}

// SetDefaultRoutes sets the sandbox's default routes through the endpoint:
// `ip route replace default via GW dev IFNAME` for IPv4 (with ep.Address
// and ep.Gateway) and `ip -6 route replace default via GW6 dev IFNAME` (with
// ep.Address6 and ep.Gateway6). An internal network gives none.
func SetDefaultRoutes(h *netlink.Handle, link netlink.Link, n *driver.Network, ep *driver.Endpoint) error {
	if n.Internal {
		return nil
	}
	for _, gw := range []struct {
		on bool
		gw netip.Addr
	}{{ep.Address.IsValid() && ep.Gateway.Is4(), ep.Gateway}, {ep.Address6.IsValid() && ep.Gateway6.Is6(), ep.Gateway6}} {
		if !gw.on {
			continue
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.gw.AsSlice()}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s: %w", gw.gw, err)
		}
	}
	return nil
}

// Leave deletes the endpoint's veth pair (from the host end; deleting either
// end removes both). A pair that is gone is success.
func (d *Driver) Leave(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	l, err := d.h.LinkByName(ep.HostIfName)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil
		}
		return fmt.Errorf("find %q: %w", ep.HostIfName, err)
	}
	if l.Attrs().Alias != AliasPrefix+ep.ID {
		return fmt.Errorf("link %q is not endpoint %.12s's; left alone", ep.HostIfName, ep.ID)
	}
	if err := d.h.LinkDel(l); err != nil && !nlutil.IsLinkGone(err) {
		return fmt.Errorf("delete %q: %w", ep.HostIfName, err)
	}
	return nil
}

// Detach cuts the endpoint off its bridge at once (nlutil.DetachLink) and
// returns a channel closed once its host end is deleted.
func (d *Driver) Detach(ctx context.Context, n *driver.Network, ep *driver.Endpoint) (<-chan struct{}, error) {
	h, err := d.handle()
	if err != nil {
		return nil, err
	}
	idx, err := nlutil.DetachLink(h, ep.HostIfName, AliasPrefix+ep.ID)
	d.release(h)
	if err != nil || idx == 0 {
		return nil, err
	}
	return d.gone.Wait(d.h, idx, AliasPrefix+ep.ID), nil
}

// nsHandle is a netlink handle bound to a sandbox namespace.
type nsHandle struct {
	path string
	h    *netlink.Handle
}

func openNS(path string) (*nsHandle, error) {
	h, err := tns.NewHandle(path)
	if err != nil {
		return nil, fmt.Errorf("open sandbox namespace: %w", err)
	}
	return &nsHandle{path: path, h: h}, nil
}

func (s *nsHandle) close() { s.h.Close() }

// IPv6Off keeps IPv6 off a host-side link of an IPv4-only network (a
// bridge, a VXLAN device, the host end of a veth) in the namespace of h,
// whose path is nsPath ("" when h is the current namespace). Equivalent to
//
//	ip link set L addrgenmode none
//	sysctl -w net.ipv6.conf.L.accept_ra=0 net.ipv6.conf.L.disable_ipv6=1
//
// disable_ipv6 alone is not enough: `sysctl -w
// net.ipv6.conf.all.disable_ipv6=0` (a `sysctl --system` re-run) makes the
// kernel write 0 into every interface, and a link that inherited
// accept_ra=1 or 2 from the host's defaults would then take a router
// advertisement a sandbox sends (a default route and a SLAAC address on the
// host: CVE-2020-13401, CVE-2020-10749). accept_ra is never copied from
// "all", and addrgenmode none leaves such a link without even a link-local
// address. A kernel without IPv6 (no /proc/sys/net/ipv6) is success.
func IPv6Off(h *netlink.Handle, nsPath string, l netlink.Link) error {
	_ = h.LinkSetIP6AddrGenMode(l, addrGenModeNone) // fails only without IPv6
	return hostIPv6Sysctls(nsPath, l.Attrs().Name)
}

// hostIPv6Sysctls is IPv6Off's sysctls: accept_ra=0 and disable_ipv6=1 on
// the link named name in the namespace at nsPath ("": the calling
// thread's). A kernel without IPv6 is success.
func hostIPv6Sysctls(nsPath, name string) error {
	if !ipv6Present() {
		return nil
	}
	err := inNamespace(nsPath, func() error { return ipv6Sysctls(name, "accept_ra", "0", "disable_ipv6", "1") })
	if err != nil {
		return fmt.Errorf("turn IPv6 off on %q: %w", name, err)
	}
	return nil
}

// inNamespace runs f in the network namespace at nsPath, or in the calling
// thread's when nsPath is "".
func inNamespace(nsPath string, f func() error) error {
	if nsPath == "" {
		return f()
	}
	return tns.Do(nsPath, f)
}

// ipv6Present reports whether the kernel has IPv6 (asked once: IPv6Off runs
// on every attach).
var ipv6Present = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/sys/net/ipv6/conf/all")
	return !errors.Is(err, os.ErrNotExist)
})

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE: no link-local address, hence
// no router solicitations, DAD or MLD reports from the link.
const addrGenModeNone = 1

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// JoinPair creates the endpoint's veth pair in the host namespace for
// another runtime to move (driver.PairJoiner):
//
//	ip link add vthXXXX mtu M master BRIDGE type veth peer name IFNAME mtu M address MAC
//	sysctl net.ipv6.conf.vthXXXX.accept_ra=0 net.ipv6.conf.vthXXXX.disable_ipv6=1
//	ip link set vthXXXX up alias tether:EP addrgenmode none type bridge_slave hairpin on isolated on|off
//
// The sandbox end IFNAME stays down in the host namespace. On failure the
// pair is deleted.
func (d *Driver) JoinPair(ctx context.Context, n *driver.Network, ep *driver.Endpoint) (err error) {
	if ep.IfName == "" {
		return errors.New("create veth pair: the sandbox end has no name")
	}
	inHost := func() bool { _, err := d.h.LinkByName(ep.IfName); return err == nil }
	if inHost() {
		return fmt.Errorf("create veth pair: a link named %q already exists in the host namespace", ep.IfName)
	}
	c, err := d.conns.Get()
	if err != nil {
		return err
	}
	defer d.conns.Put(c)
	ep.HostIfName = ""
	if _, err := d.addPair(c, n, ep, -1, inHost, "the host namespace"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = c.DeleteLink(ep.HostIfName)
		}
	}()
	if err := hostIPv6Sysctls(d.ns, ep.HostIfName); err != nil {
		return err
	}
	return finishHostEnd(c, n, ep)
}

// PairAlive reports whether the endpoint's host end exists and is marked
// as the endpoint's.
func (d *Driver) PairAlive(ctx context.Context, n *driver.Network, ep *driver.Endpoint) (bool, error) {
	return HostEndAlive(d.h, ep)
}

// HostEndAlive reports whether ep's host end (ep.HostIfName, marked
// tether:EP) exists in the namespace of h.
func HostEndAlive(h *netlink.Handle, ep *driver.Endpoint) (bool, error) {
	if ep.HostIfName == "" {
		return false, nil
	}
	l, err := h.LinkByName(ep.HostIfName)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return false, nil
		}
		return false, fmt.Errorf("find %q: %w", ep.HostIfName, err)
	}
	return l.Attrs().Alias == AliasPrefix+ep.ID, nil
}

// CreateHostPair creates a veth pair with both ends in the namespace of h:
// the sandbox end ep.IfName (MAC ep.MAC, down) and a host end named prefix
// plus random hex, retried on a name collision. It fills ep.HostIfName and
// returns the host end. Shared by the drivers' JoinPair.
func CreateHostPair(h *netlink.Handle, ep *driver.Endpoint, mtu int, prefix string) (netlink.Link, error) {
	if ep.IfName == "" {
		return nil, errors.New("create veth pair: the sandbox end has no name")
	}
	if _, err := h.LinkByName(ep.IfName); err == nil {
		return nil, fmt.Errorf("create veth pair: a link named %q already exists in the host namespace", ep.IfName)
	}
	for try := 0; ; try++ {
		name := prefix + randomHex(4)
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: name, MTU: mtu},
			PeerName:         ep.IfName,
			PeerMTU:          uint32(mtu),
			PeerHardwareAddr: ep.MAC,
		}
		err := h.LinkAdd(veth)
		if err == nil {
			ep.HostIfName = name
			break
		}
		if !errors.Is(err, unix.EEXIST) || try >= 5 {
			return nil, fmt.Errorf("create veth %s/%s: %w", name, ep.IfName, err)
		}
	}
	l, err := h.LinkByName(ep.HostIfName)
	if err != nil {
		return nil, fmt.Errorf("find new host end %q: %w", ep.HostIfName, err)
	}
	return l, nil
}

var _ driver.PairJoiner = (*Driver)(nil)
var _ driver.HostIfNamer = (*Driver)(nil)
