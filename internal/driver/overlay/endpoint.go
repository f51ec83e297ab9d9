package overlay

// Endpoints: one veth pair per sandbox and network, created from the host
// namespace with its peer placed directly in the sandbox (one netlink
// request, and the driver needs no file for its own namespace, only the
// handle). Join on an endpoint that is already wired checks and repairs it
// in place: the same links, no traffic lost.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
)

// Join wires the sandbox whose network namespace is at nsPath to the network:
//
//	ip link add vtoXXXX mtu M type veth peer name IFNAME mtu M address MAC netns SANDBOX
//	ip link set vtoXXXX alias tether:EP addrgenmode none master tov-VNI up
//	(in sandbox) ip addr add ADDR dev IFNAME; ip link set IFNAME up; ip link set lo up
//	(dual stack, in sandbox) sysctl accept_ra=0 disable_ipv6=0 on IFNAME; ip addr add ADDR6 dev IFNAME nodad
//	(ep.DefaultRoute, in sandbox) ip route replace default via GW dev IFNAME
//
// M is the bridge's MTU (underlay-50, see CreateNetwork). The default
// route goes to the network's gateway, which the sandbox's own host holds
// on its bridge (gateway.go); an internal network gives none. Join fills
// ep.HostIfName, and ep.MAC when empty (the MAC to publish to the other
// hosts). When the endpoint is already
// wired (ep.HostIfName names the host end of the sandbox's IFNAME, or a lost
// name is found again by its alias) it is checked and repaired in place. On
// failure a veth this call created is deleted.
func (d *Driver) Join(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) (err error) {
	h, err := d.handle()
	if err != nil {
		return err
	}
	defer d.release(h)
	if err := checkNetwork(n); err != nil {
		return err
	}
	if err := checkEndpoint6(n, ep); err != nil {
		return err
	}
	br, err := d.bridgeOf(h, n, false)
	if err != nil {
		return err
	}
	sb, err := tns.NewHandle(nsPath)
	if err != nil {
		return fmt.Errorf("open sandbox namespace: %w", err)
	}
	defer sb.Close()
	mtu := br.mtu

	host, created, err := d.hostEnd(h, sb, nsPath, ep, mtu)
	if err != nil {
		return err
	}
	if created {
		defer func() {
			if err != nil {
				_ = h.LinkDel(host) // deleting one end deletes the pair
			}
		}()
	}
	if err := d.wireHostEnd(h, n, host, br, ep, mtu); err != nil {
		return err
	}
	if err := configureSandboxEnd(sb, nsPath, n, ep, mtu, created); err != nil {
		return err
	}
	d.bypassEndpoint(n, host, ep.MAC)
	return nil
}

// hostEnd returns the endpoint's host-side veth: the existing one when the
// endpoint is already wired, else a new pair (created true).
func (d *Driver) hostEnd(h *netlink.Handle, sb *netlink.Handle, nsPath string, ep *driver.Endpoint, mtu int) (netlink.Link, bool, error) {
	if ep.HostIfName != "" {
		l, err := h.LinkByName(ep.HostIfName)
		switch {
		case err == nil:
			if l.Attrs().Alias != driver.LinkMarker(ep.ID) {
				return nil, false, fmt.Errorf("link %q is not endpoint %.12s's (alias %q): %w", ep.HostIfName, ep.ID, l.Attrs().Alias, ErrConflict)
			}
			if pairedWith(sb, ep.IfName, l) {
				return l, false, nil
			}
			// A leftover whose peer is elsewhere: replace it.
			if err := d.del(h, l); err != nil {
				return nil, false, err
			}
		case !nlutil.IsLinkGone(err):
			return nil, false, fmt.Errorf("find %q: %w", ep.HostIfName, err)
		}
	}
	l, err := d.createVeth(h, sb, nsPath, ep, mtu)
	if errors.Is(err, errSandboxIfExists) {
		// The endpoint may be wired under a host name the caller lost.
		if l, ferr := d.findHostEnd(h, ep); ferr == nil && l != nil && pairedWith(sb, ep.IfName, l) {
			ep.HostIfName = l.Attrs().Name
			return l, false, nil
		}
		return nil, false, fmt.Errorf("interface %q already exists in the sandbox: %w", ep.IfName, ErrConflict)
	}
	return l, err == nil, err
}

var errSandboxIfExists = errors.New("sandbox interface exists")

// createVeth creates the pair from the host namespace with its peer placed
// in the sandbox. Host-side names are random; a collision is retried.
func (d *Driver) createVeth(h *netlink.Handle, sb *netlink.Handle, nsPath string, ep *driver.Endpoint, mtu int) (netlink.Link, error) {
	fd, err := tns.Open(nsPath)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	var veth *netlink.Veth
	for try := 0; ; try++ {
		name := ep.HostIfName // a recorded name is kept when it is free
		if name == "" || try > 0 {
			name = HostIfPrefix + randomHex(4)
		}
		veth = &netlink.Veth{
			LinkAttrs:        linkAttrs(name, mtu),
			PeerName:         ep.IfName,
			PeerMTU:          uint32(mtu),
			PeerHardwareAddr: ep.MAC,
			PeerNamespace:    netlink.NsFd(int(fd)),
			PeerTxQLen:       -1,
		}
		err := h.LinkAdd(veth)
		if err == nil {
			ep.HostIfName = name
			break
		}
		if !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create veth %s/%s: %w", name, ep.IfName, err)
		}
		if _, lerr := sb.LinkByName(ep.IfName); lerr == nil {
			return nil, errSandboxIfExists
		}
		if try >= 5 {
			return nil, fmt.Errorf("create veth %s/%s: %w", name, ep.IfName, err)
		}
	}
	if veth.Index == 0 { // LinkAdd looks the new link up; that lookup failed
		l, err := h.LinkByName(ep.HostIfName)
		if err != nil {
			return nil, fmt.Errorf("find new host end %q: %w", ep.HostIfName, err)
		}
		return l, nil
	}
	return veth, nil
}

// pairedWith reports whether the sandbox's interface ifName is the veth
// peer of the host link l (its IFLA_LINK names l's index).
func pairedWith(sb *netlink.Handle, ifName string, l netlink.Link) bool {
	in, err := sb.LinkByName(ifName)
	if err != nil || in.Type() != "veth" || l.Type() != "veth" {
		return false
	}
	return in.Attrs().ParentIndex == l.Attrs().Index
}

// findHostEnd looks for the host-side veth marked as ep's (a link dump);
// nil when there is none.
func (d *Driver) findHostEnd(h *netlink.Handle, ep *driver.Endpoint) (netlink.Link, error) {
	links, err := nlutil.Dump("list links", h.LinkList)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Attrs().Alias == driver.LinkMarker(ep.ID) && strings.HasPrefix(l.Attrs().Name, HostIfPrefix) {
			return l, nil
		}
	}
	return nil, nil
}

// wireHostEnd sets IPv6 on the host end as n wants it (hostIPv6: off, or
// on without an address; every time: it repairs a link an older version
// left otherwise), marks it, puts it on the bridge and brings it up,
// changing only what is not so already. A bridge made again since its
// index was kept is looked up afresh.
func (d *Driver) wireHostEnd(h *netlink.Handle, n *driver.Network, l netlink.Link, br bridgeRef, ep *driver.Endpoint, mtu int) error {
	a := l.Attrs()
	if err := d.hostIPv6(h, n, l); err != nil { // before it is ever up
		return err
	}
	if a.Alias != driver.LinkMarker(ep.ID) {
		if err := h.LinkSetAlias(l, driver.LinkMarker(ep.ID)); err != nil {
			return fmt.Errorf("mark %q: %w", a.Name, err)
		}
	}
	if a.MTU != mtu {
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("MTU %d on %q: %w", mtu, a.Name, err)
		}
	}
	if a.MasterIndex != br.index {
		err := h.LinkSetMasterByIndex(l, br.index)
		if err != nil {
			if fresh, ferr := d.bridgeOf(h, n, true); ferr == nil && fresh.index != br.index {
				err = h.LinkSetMasterByIndex(l, fresh.index)
			}
		}
		if err != nil {
			return fmt.Errorf("attach %q to bridge %q: %w", a.Name, BridgeName(n.VNI), err)
		}
	}
	return d.setUp(h, l)
}

// configureSandboxEnd gives the sandbox end its address and brings it and
// loopback up; on an existing endpoint it only repairs what differs.
func configureSandboxEnd(sb *netlink.Handle, nsPath string, n *driver.Network, ep *driver.Endpoint, mtu int, created bool) error {
	link, err := sb.LinkByName(ep.IfName)
	if err != nil {
		return fmt.Errorf("find %q in sandbox: %w", ep.IfName, err)
	}
	if len(ep.MAC) == 0 {
		ep.MAC = link.Attrs().HardwareAddr
	}
	if created && ep.DisableIPv6 && !ep.Address6.IsValid() {
		_ = tns.Do(nsPath, func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/"+ep.IfName+"/disable_ipv6", []byte("1"), 0o644)
		})
	}
	if link.Attrs().MTU != mtu {
		if err := sb.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("MTU %d on %q: %w", mtu, ep.IfName, err)
		}
	}
	if ep.Address.IsValid() {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ep.Address.Addr().AsSlice(), Mask: net.CIDRMask(ep.Address.Bits(), ep.Address.Addr().BitLen())}}
		if err := sb.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("address %s on %q: %w", ep.Address, ep.IfName, err)
		}
	}
	if ep.Address6.IsValid() {
		if err := sandboxIPv6(sb, nsPath, link, ep); err != nil {
			return err
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := sb.LinkSetUp(link); err != nil {
			return fmt.Errorf("bring up %q: %w", ep.IfName, err)
		}
	}
	// lo is always index 1 of a network namespace (LOOPBACK_IFINDEX);
	// bringing up a link that is up changes nothing.
	if err := sb.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	if ep.DefaultRoute {
		return defaultRoute(sb, link, n, ep)
	}
	return nil
}

// Leave deletes the endpoint's veth pair from the host end (`ip link del
// vtoXXXX`; the sandbox end goes with it). A pair that is gone is success;
// a link of that name that is not the endpoint's is left alone. With
// ep.HostIfName empty the host end is looked for by its alias.
func (d *Driver) Leave(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	h, err := d.handle()
	if err != nil {
		return err
	}
	defer d.release(h)
	var l netlink.Link
	if ep.HostIfName == "" {
		if l, err = d.findHostEnd(h, ep); err != nil || l == nil {
			return err
		}
	} else if l, err = h.LinkByName(ep.HostIfName); err != nil {
		if nlutil.IsLinkGone(err) {
			return nil
		}
		return fmt.Errorf("find %q: %w", ep.HostIfName, err)
	}
	if l.Attrs().Alias != driver.LinkMarker(ep.ID) {
		return fmt.Errorf("link %q is not endpoint %.12s's; left alone: %w", l.Attrs().Name, ep.ID, ErrConflict)
	}
	d.unbypassEndpoint(n, l.Attrs().Index, ep.MAC)
	return d.del(h, l)
}

// Detach cuts the endpoint off the overlay bridge at once (down, no
// master; nlutil.DetachLink) and returns a channel closed once its host end
// is deleted.
func (d *Driver) Detach(ctx context.Context, n *driver.Network, ep *driver.Endpoint) (<-chan struct{}, error) {
	h, err := d.handle()
	if err != nil {
		return nil, err
	}
	defer d.release(h)
	if ep.HostIfName == "" {
		l, err := d.findHostEnd(h, ep)
		if err != nil || l == nil {
			return nil, err
		}
		ep.HostIfName = l.Attrs().Name
	}
	idx, err := nlutil.DetachLink(h, ep.HostIfName, driver.LinkMarker(ep.ID))
	if err != nil || idx == 0 {
		return nil, err
	}
	d.unbypassEndpoint(n, idx, ep.MAC) // cut off the bypass as well as the bridge
	return d.gone.Wait(h, idx, driver.LinkMarker(ep.ID)), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// JoinPair creates the endpoint's veth pair in the host namespace for
// another runtime to move (driver.PairJoiner):
//
//	ip link add vtoXXXX mtu M type veth peer name IFNAME mtu M address MAC
//	ip link set vtoXXXX alias tether:EP addrgenmode none master tov-VNI up
//
// M is the bridge's MTU (underlay-50), which survives the move. The
// sandbox end stays down in the host namespace; on failure the pair is
// deleted. ep.MAC must be set: it is what the other hosts are told.
func (d *Driver) JoinPair(ctx context.Context, n *driver.Network, ep *driver.Endpoint) (err error) {
	h, err := d.handle()
	if err != nil {
		return err
	}
	defer d.release(h)
	if err := checkNetwork(n); err != nil {
		return err
	}
	if len(ep.MAC) == 0 {
		return fmt.Errorf("overlay network %q: endpoint %.12s has no MAC", n.Name, ep.ID)
	}
	br, err := d.bridgeOf(h, n, false)
	if err != nil {
		return err
	}
	mtu := br.mtu
	host, err := bridge.CreateHostPair(h, ep, mtu, HostIfPrefix)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = h.LinkDel(host)
		}
	}()
	if err := d.wireHostEnd(h, n, host, br, ep, mtu); err != nil {
		return err
	}
	d.bypassEndpoint(n, host, ep.MAC)
	return nil
}

// PairAlive reports whether the endpoint's host end exists and is marked
// as the endpoint's.
func (d *Driver) PairAlive(ctx context.Context, n *driver.Network, ep *driver.Endpoint) (bool, error) {
	h, err := d.handle()
	if err != nil {
		return false, err
	}
	defer d.release(h)
	return bridge.HostEndAlive(h, ep)
}

var _ driver.PairJoiner = (*Driver)(nil)
