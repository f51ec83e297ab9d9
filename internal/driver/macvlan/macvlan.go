// Package macvlan is the macvlan driver: sandboxes appear on the parent
// interface's segment as hosts of their own, each with its own MAC, with no
// bridge, NAT or firewall of Tether's in between (Docker's macvlan driver,
// same option names).
//
// Layout: nothing per network but, with tether.host_shim, one macvlan
// interface in the daemon's namespace (shim.go). Per endpoint one macvlan
// interface on the parent, created directly in the sandbox's namespace
// (IFLA_NET_NS_FD on the creating request: the parent is looked up in the
// daemon's namespace, the new link is registered in the sandbox's under its
// final name, so no half-made link with a temporary name is ever left in
// the daemon's namespace), with the endpoint's MAC, addresses and routes.
// There is no host end. The network's gateway is a router on the parent's
// segment, not Tether's. On an IPv4-only network IPv6 stays off on the
// sandbox end: the segment is a real LAN whose router advertisements the
// sandbox must not take.
package macvlan

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
)

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.OptionChecker = (*Driver)(nil)
	_ driver.Router        = (*Driver)(nil)
	_ driver.Sweeper       = (*Driver)(nil)
)

// Driver is the macvlan driver. It works in the namespace its handle is
// bound to (the daemon's "host" namespace), where the parents are.
type Driver struct {
	h  *netlink.Handle
	ns string // path of h's namespace (sysctls); "": the current one

	// lookup finds a parent by name (h.LinkByName; a fake in tests).
	lookup func(name string) (netlink.Link, error)
	// has8021q reports whether the kernel can make VLAN links.
	has8021q func() (bool, error)
}

// New returns a macvlan driver issuing netlink requests through h (nil: the
// current namespace). The daemon calls New(nil).
func New(h *netlink.Handle) *Driver { return NewAt(h, "") }

// NewAt returns a macvlan driver working in the namespace persisted at
// nsPath, h being a handle bound to it ("" and nil: the current namespace).
// Tests use it to run the driver in a namespace they created.
func NewAt(h *netlink.Handle, nsPath string) *Driver {
	if h == nil {
		h = &netlink.Handle{}
	}
	return &Driver{h: h, ns: nsPath, lookup: h.LinkByName, has8021q: kernel8021q}
}

func (d *Driver) Type() string { return "macvlan" }

// Capabilities: a local network whose endpoints get addresses from IPAM and
// names from the resolver, and may carry the sandbox's default route (via
// the network's gateway, a router on the parent's segment, which is the
// way out: no gateway network needed). No ports and no firewall entries:
// a macvlan sandbox is reached at its own address on the segment, and its
// traffic never passes the host's IP stack where NAT or filtering would
// apply.
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Scope: driver.ScopeLocal, Namespace: driver.NamespaceOwn, Addresses: true,
		DNS: true, DefaultRoute: true, WayOut: true}
}

// CreateNetwork checks the parent exists and, with tether.host_shim,
// makes the host shim (shim.go). Nothing else exists per network.
func (d *Driver) CreateNetwork(ctx context.Context, n *driver.Network) error {
	c, err := parseOptions(n)
	if err != nil {
		return err
	}
	parent, err := d.h.LinkByName(c.parent)
	if err != nil {
		return fmt.Errorf("parent %q of macvlan network %q: %w", c.parent, n.Name, err)
	}
	if !c.shim {
		return nil
	}
	return d.ensureShim(n, c, parent)
}

// DeleteNetwork removes the host shim, if the network has one (only a
// link named and marked as this network's shim).
func (d *Driver) DeleteNetwork(ctx context.Context, n *driver.Network) error {
	return d.deleteShim(n)
}

// Join creates the endpoint's macvlan interface in the sandbox and
// configures it:
//
//	ip link add link PARENT name IFNAME netns SANDBOX mtu M address MAC type macvlan mode MODE
//	(in sandbox) ip addr add ADDR dev IFNAME; ip link set IFNAME up; ip link set lo up
//	             ip route replace default via GW dev IFNAME   (when ep.DefaultRoute)
//
// With ep.Address6 the interface also gets IPv6 on, its EUI-64 link-local
// address and ADDR6 (DAD off) and the IPv6 default route via GW6; without
// it IPv6 stays off (bridge.IPv6Off). M is the parent's MTU, or the
// network's when smaller. With the host shim, the daemon's namespace gets
// a host route to ADDR through it (shim.go). An interface IFNAME that is
// already this endpoint's macvlan (same MAC) is configured again, not
// re-created. On failure a link Join created is deleted.
func (d *Driver) Join(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) (err error) {
	c, err := parseOptions(n)
	if err != nil {
		return err
	}
	parent, err := d.h.LinkByName(c.parent)
	if err != nil {
		return fmt.Errorf("find parent %q: %w", c.parent, err)
	}
	sb, err := tns.NewHandle(nsPath)
	if err != nil {
		return fmt.Errorf("open sandbox namespace: %w", err)
	}
	defer sb.Close()
	link, created, err := d.ensureLink(sb, nsPath, parent, n, ep, c)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && created {
			_ = sb.LinkDel(link)
		}
	}()
	if err := configure(sb, nsPath, link, n, ep); err != nil {
		return err
	}
	if c.shim {
		return d.routeToSandbox(n, ep)
	}
	return nil
}

// ensureLink returns the sandbox's interface ep.IfName, creating it as a
// macvlan on parent when it does not exist. created says whether it did.
func (d *Driver) ensureLink(sb *netlink.Handle, nsPath string, parent netlink.Link, n *driver.Network, ep *driver.Endpoint, c config) (netlink.Link, bool, error) {
	if l, err := sb.LinkByName(ep.IfName); err == nil {
		if _, ok := l.(*netlink.Macvlan); ok && (len(ep.MAC) == 0 || l.Attrs().HardwareAddr.String() == ep.MAC.String()) {
			return l, false, nil
		}
		return nil, false, fmt.Errorf("interface %q already exists in the sandbox", ep.IfName)
	}
	fd, err := tns.Open(nsPath)
	if err != nil {
		return nil, false, err
	}
	defer fd.Close()
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: ep.IfName, ParentIndex: parent.Attrs().Index, MTU: linkMTU(parent, n),
			HardwareAddr: ep.MAC, Namespace: netlink.NsFd(int(fd))},
		Mode: c.mode,
	}
	if err := d.h.LinkAdd(mv); err != nil {
		return nil, false, fmt.Errorf("create macvlan %q on %q (mode %s): %w", ep.IfName, c.parent, c.modeName, explain(err, c))
	}
	l, err := sb.LinkByName(ep.IfName)
	if err != nil {
		return nil, false, fmt.Errorf("find new macvlan %q in the sandbox: %w", ep.IfName, err)
	}
	return l, true, nil
}

// explain adds what a kernel error means for a macvlan: passthru takes the
// whole parent, so a second one fails.
func explain(err error, c config) error {
	if c.modeName == "passthru" && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBUSY)) {
		return fmt.Errorf("%w (passthru mode allows one macvlan interface per parent)", err)
	}
	return err
}

// linkMTU is the parent's MTU, or the network's when smaller (a macvlan
// cannot exceed its parent's).
func linkMTU(parent netlink.Link, n *driver.Network) int {
	mtu := parent.Attrs().MTU
	if n.MTU > 0 && (mtu == 0 || n.MTU < mtu) {
		mtu = n.MTU
	}
	return mtu
}

// configure gives the sandbox end its addresses, brings it and lo up, and
// sets the default routes when it carries them (bridge.ConfigureEnd). A
// macvlan end of a network without IPv6 always has IPv6 turned off: it
// sits on a LAN whose router advertisements must configure nothing.
func configure(sb *netlink.Handle, nsPath string, link netlink.Link, n *driver.Network, ep *driver.Endpoint) error {
	e := *ep
	e.DisableIPv6 = true
	return bridge.ConfigureEnd(sb, nsPath, link, n, &e)
}

// SetDefaultRoute gives the sandbox its default routes through the
// endpoint after it joined (driver.Router).
func (d *Driver) SetDefaultRoute(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	return bridge.SetDefaultRouteIn(n, ep, nsPath)
}

// Leave deletes the endpoint's macvlan interface inside the sandbox
// (`ip link del IFNAME` there) and, with the host shim, the host route to
// its address. A namespace or interface that is gone is success; an
// interface of that name that is not a macvlan is left alone.
func (d *Driver) Leave(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	var errs []error
	if c, err := parseOptions(n); err == nil && c.shim {
		errs = append(errs, d.unrouteSandbox(n, ep))
	}
	errs = append(errs, deleteInside(ep, nsPath))
	return errors.Join(errs...)
}

// deleteInside deletes ep.IfName in the namespace at nsPath, when it is a
// macvlan; a namespace that is gone is success.
func deleteInside(ep *driver.Endpoint, nsPath string) error {
	if nsPath == "" {
		return nil // no namespace to look in: the link goes with it
	}
	sb, err := tns.NewHandle(nsPath)
	if err != nil {
		if nsGone(nsPath) {
			return nil
		}
		return fmt.Errorf("open sandbox namespace: %w", err)
	}
	defer sb.Close()
	l, err := sb.LinkByName(ep.IfName)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil
		}
		return fmt.Errorf("find %q in sandbox: %w", ep.IfName, err)
	}
	if _, ok := l.(*netlink.Macvlan); !ok {
		return fmt.Errorf("interface %q in the sandbox is a %s, not endpoint %.12s's macvlan; left alone", ep.IfName, l.Type(), ep.ID)
	}
	if err := sb.LinkDel(l); err != nil && !nlutil.IsLinkGone(err) {
		return fmt.Errorf("delete %q in sandbox: %w", ep.IfName, err)
	}
	return nil
}

// nsGone reports whether the namespace file at path no longer names a
// namespace (deleted, or its mount gone).
func nsGone(path string) bool {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return true
	}
	_ = h.Close()
	return !tns.IsNSFile(path)
}
