package bridge

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/nlutil"
)

var (
	_ driver.Repairer   = (*Driver)(nil)
	_ driver.Sweeper    = (*Driver)(nil)
	_ driver.Detacher   = (*Driver)(nil)
	_ driver.HostLinker = (*Driver)(nil)
	_ driver.Router     = (*Driver)(nil)
)

// SetDefaultRoute gives the sandbox its default routes through the
// endpoint: `ip route replace default via GW dev IFNAME` and, with an IPv6
// address, `ip -6 route replace default via GW6 dev IFNAME` inside it.
func (d *Driver) SetDefaultRoute(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	return SetDefaultRouteIn(n, ep, nsPath)
}

// SetDefaultRouteIn is driver.Router's SetDefaultRoute for every driver
// whose sandbox end is an ordinary interface (bridge, macvlan, ovs): it
// finds ep.IfName in the namespace at nsPath and sets its default routes
// (SetDefaultRoutes).
func SetDefaultRouteIn(n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	if n.Internal || (!ep.Gateway.IsValid() && !ep.Gateway6.IsValid()) {
		return nil
	}
	sb, err := openNS(nsPath)
	if err != nil {
		return err
	}
	defer sb.close()
	link, err := sb.h.LinkByName(ep.IfName)
	if err != nil {
		return fmt.Errorf("find %q in sandbox: %w", ep.IfName, err)
	}
	return SetDefaultRoutes(sb.h, link, n, ep)
}

// LinkExists reports whether a host link of that name exists.
func (d *Driver) LinkExists(name string) bool {
	_, err := d.h.LinkByName(name)
	return err == nil
}

// LinkAddress reads the first IPv4 address of an existing bridge: its
// subnet is the network's, the address is the gateway.
func (d *Driver) LinkAddress(name string) (netip.Prefix, netip.Addr, error) {
	l, err := d.h.LinkByName(name)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("bridge %q: %w", name, err)
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("bridge %q: link is a %s, not a bridge", name, l.Type())
	}
	addrs, err := d.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("addresses of bridge %q: %w", name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		return netip.PrefixFrom(ip, ones).Masked(), ip, nil
	}
	return netip.Prefix{}, netip.Addr{}, fmt.Errorf("bridge %q has no IPv4 address: add one (ip addr add 192.168.5.1/24 dev %s) or use bip instead", name, name)
}

// Repair checks an endpoint on restore: it is intact when its host link
// carries its marker, is a port of the network's bridge, and its peer is the
// recorded interface inside the sandbox. An intact endpoint is not touched,
// so a restart does not interrupt traffic. Anything else (a host link gone,
// a bridge re-created without its ports, a pair half torn down) is deleted
// and the endpoint joined again.
//
// An endpoint with an IPv6 address is intact only with that address and,
// when it carries the default route, the IPv6 default route via Gateway6
// (this opens the sandbox's namespace). A pair that is intact but lost
// them gets them back in place (repairIPv6), without a rebuild: the least
// disruptive fix, IPv4 traffic goes on and the host end keeps its name.
// Both count as repaired.
func (d *Driver) Repair(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string, inside map[string]driver.SandboxLink) (bool, error) {
	if inside != nil {
		// The sandbox's links were listed by the caller: an intact IPv4
		// endpoint is checked without opening its namespace.
		if in, ok := inside[ep.IfName]; ok && d.intact(n, ep, &in) {
			return d.repairIPv6(n, ep, nsPath, nil)
		}
	}
	sb, err := openNS(nsPath)
	if err != nil {
		return false, err
	}
	defer sb.close()
	l, err := sb.h.LinkByName(ep.IfName)
	if err != nil && !nlutil.IsLinkGone(err) {
		return false, fmt.Errorf("find %q in the sandbox: %w", ep.IfName, err)
	}
	var in *driver.SandboxLink
	if l != nil {
		_, veth := l.(*netlink.Veth)
		in = &driver.SandboxLink{Name: l.Attrs().Name, Index: l.Attrs().Index, PeerIndex: l.Attrs().ParentIndex, Veth: veth}
	}
	if inside == nil && d.intact(n, ep, in) {
		return d.repairIPv6(n, ep, nsPath, sb)
	}
	if l != nil {
		_ = sb.h.LinkDel(l) // half of a broken pair; the host end is checked below
	}
	if l, err := d.h.LinkByName(ep.HostIfName); err == nil && l.Attrs().Alias == AliasPrefix+ep.ID {
		_ = d.h.LinkDel(l)
	}
	if err := d.Join(ctx, n, ep, nsPath); err != nil {
		return false, err
	}
	return true, nil
}

// intact: the host end marked with the endpoint's ID and enslaved to the
// network's bridge, the sandbox end (in) its peer.
func (d *Driver) intact(n *driver.Network, ep *driver.Endpoint, in *driver.SandboxLink) bool {
	if in == nil || ep.HostIfName == "" {
		return false
	}
	host, err := d.h.LinkByName(ep.HostIfName)
	if err != nil || host.Attrs().Alias != AliasPrefix+ep.ID || host.Attrs().MasterIndex == 0 {
		return false
	}
	br, err := d.h.LinkByName(n.BridgeName)
	if err != nil || host.Attrs().MasterIndex != br.Attrs().Index {
		return false
	}
	return in.Veth && in.PeerIndex == host.Attrs().Index && host.Attrs().ParentIndex == in.Index
}

// Sweep deletes host links marked as Tether's (driver.LinkMarker) whose
// owner ID is not in keep or that carry another name than keep gives them.
// Equivalent to `ip link del NAME` for each. Deleting a veth mostly waits in
// the kernel (tens of milliseconds) and parallelises, so up to sweepWorkers
// deletions run at once: after a crash during many attaches there are
// hundreds. A link without the marker is never touched.
func (d *Driver) Sweep(ctx context.Context, keep map[string]string) (int, error) {
	links, err := nlutil.Dump("links", d.h.LinkList)
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		n    int
		errs []error
	)
	sem := make(chan struct{}, sweepWorkers)
	for _, l := range links {
		a := l.Attrs()
		id, ok := strings.CutPrefix(a.Alias, AliasPrefix)
		if !ok || !driver.IsID(id) || keep[id] == a.Name {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := d.h.LinkDel(l)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && !nlutil.IsLinkGone(err) {
				errs = append(errs, fmt.Errorf("delete %q: %w", a.Name, err))
				return
			}
			n++
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return n, fmt.Errorf("%d link(s) left: %w", len(errs), errs[0])
	}
	return n, nil
}

// sweepWorkers bounds the link deletions Sweep runs at once.
const sweepWorkers = 16
