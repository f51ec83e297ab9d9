// Package overlay is the multi-host overlay driver: networks that span hosts
// over VXLAN, like Docker's classic overlay, with a static datapath.
//
// Layout, per network and host (docs/overlay.md, "Datapath"): a Linux bridge
// tov-<vni> without an address, and a VXLAN device tvx-<vni> (UDP port 4789,
// source address the host's VTEP, bound to the underlay interface, learning
// off, proxy on) enslaved to it. A local sandbox gets a veth pair: eth<N> in
// the sandbox with its overlay address and no default route, vto<hex> on the
// bridge; both ends have MTU underlay-50 (VXLAN's 50 bytes of headers).
// Every remote endpoint is one static FDB entry on the VXLAN device (its MAC
// -> its host's VTEP) and one permanent neighbour entry (its IP -> its MAC),
// from which the device answers the sandboxes' ARP requests itself (proxy).
// The underlay may be IPv6 (an IPv6 VTEP, the same family on every host):
// the device then sends over IPv6, and the MTU is underlay-70.
// There is no learning and no miss handling: the kernel never asks the
// daemon anything, so a daemon that is down or restarting drops no traffic.
// Unicast frames between the network's endpoints skip the bridge by a
// small BPF program on the host ends and the VXLAN device (bypass.go,
// internal/fastpath) while the daemon runs, and over an IPv4 underlay
// IPv4 frames skip the VXLAN device too: the program encapsulates them,
// and one on the underlay interface decapsulates (follow.go keeps its
// entries equal to the FDB); the bridge and the device carry them
// otherwise.
//
// Ownership: the bridge and the VXLAN device carry the alias
// "tether:overlay:<network id>", host-side veths "tether:<endpoint id>" (the
// bridge driver's marker, so the engine's endpoint bookkeeping is the same).
// Link names come from the VNI, so they are the same after a restart and
// unique per host. On an IPv4-only network IPv6 is off on every host-side
// link (bridge.IPv6Off: addrgenmode none, accept_ra=0, disable_ipv6=1): no
// link-local chatter flooded over the bridge, and no router advertisement
// from a sandbox reaches the host's IPv6 stack. On a dual-stack network
// (Subnet6) IPv6 is on on them, still without addresses or
// autoconfiguration, and peers get IPv6 neighbour entries too (ipv6.go).
package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	"github.com/tether-net/tether/internal/fastpath"
	"github.com/tether-net/tether/internal/nlutil"
)

const (
	// NetAliasPrefix marks the bridge and the VXLAN device of an overlay
	// network; the network ID follows. It starts with bridge.AliasPrefix
	// ("tether:") but is no "tether:<id>" marker, so code that only knows
	// bridge networks leaves these links alone.
	NetAliasPrefix = bridge.AliasPrefix + "overlay:"
	// BridgePrefix and VxlanPrefix start the link names; the VNI in decimal
	// follows (at most 8 digits: 12 characters, under IFNAMSIZ's 15).
	BridgePrefix = "tov-"
	VxlanPrefix  = "tvx-"
	// HostIfPrefix starts the name of every host-side veth (8 hex digits follow).
	HostIfPrefix = "vto"
	// Port is VXLAN's IANA UDP port.
	Port = 4789
	// Overhead is what VXLAN over IPv4 adds to an inner frame's IP packet:
	// outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
	Overhead = 50
	// Overhead6 is Overhead over an IPv6 underlay (outer IPv6 header 40).
	Overhead6 = 70
	// MaxVNI is the largest VNI (24 bits).
	MaxVNI = 1<<24 - 1
)

// ErrInvalid is wrapped by errors about invalid arguments (a VNI out of
// range, a peer without a MAC, ...); the engine maps it to 400.
var ErrInvalid = errors.New("invalid argument")

// ErrConflict is wrapped when a link the driver needs exists and is not the
// network's (another network's VNI, or a link Tether does not own).
var ErrConflict = errors.New("conflict")

// BridgeName is the name of the bridge of the overlay network with this VNI.
func BridgeName(vni int) string { return BridgePrefix + strconv.Itoa(vni) }

// VxlanName is the name of the VXLAN device of the overlay network with this VNI.
func VxlanName(vni int) string { return VxlanPrefix + strconv.Itoa(vni) }

// NetworkAlias is the alias the bridge and VXLAN device of network id carry.
func NetworkAlias(id string) string { return NetAliasPrefix + id }

// NetworkOf returns the network ID in an overlay link's alias, and whether
// the alias is an overlay network's marker at all (for garbage collection).
func NetworkOf(alias string) (id string, ok bool) {
	id, ok = strings.CutPrefix(alias, NetAliasPrefix)
	if !ok || id == "" {
		return "", false
	}
	return id, true
}

// Driver is the overlay driver. It works in the namespace its handle is
// bound to (the daemon's "host" namespace), which need not be the process's.
type Driver struct {
	h    *netlink.Handle
	ns   string             // path of h's namespace for sysctls; "": the current one
	pool *nlutil.HandlePool // handles for every call; nil: h, as given, is used
	// bridges: each network's bridge as last looked up (VNI -> bridgeRef),
	// so an attach does not look it up again. CreateNetwork refreshes it
	// (a repair may change the MTU), DeleteNetwork forgets it.
	bridges  sync.Map
	gone     nlutil.GoneWatch // detached host ends, until their namespace's teardown deletes them
	garp     garpSocket       // where announcements go out (announce.go)
	fp       *fastpath.Path   // the bridge bypass (bypass.go); nil: off or unavailable
	fpDevice bool             // the bypass leaves encapsulation to the VXLAN devices (BypassEnv=bridge)
	fol      *follower        // keeps the bypass's remote entries equal to the FDB (follow.go)
	fpOnce   sync.Once
}

// New returns an overlay driver issuing netlink requests through h (nil:
// the current namespace), which must be bound to the current namespace.
func New(h *netlink.Handle) *Driver { return NewAt(h, "") }

// NewAt is New for a handle bound to the namespace at nsPath (where the
// driver also writes the sysctls of its links); "" is the current one.
func NewAt(h *netlink.Handle, nsPath string) *Driver {
	d := &Driver{h: h, ns: nsPath}
	if h == nil || nsPath != "" {
		d.pool = nlutil.NewHandlePool(nsPath)
	}
	if h == nil {
		d.h = &netlink.Handle{}
	}
	return d
}

func (d *Driver) Type() string { return "overlay" }

// Capabilities: a global network (records in the cluster store) with
// addresses and names; its sandboxes get their way out through the
// network's own gateway on their host's bridge (gateway.go), which has
// firewall entries like a bridge network's; it publishes no ports yet.
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Scope: driver.ScopeGlobal, Addresses: true, DNS: true, WayOut: true, DefaultRoute: true, Firewall: true}
}

var _ driver.PeerProgrammer = (*Driver)(nil)

var _ driver.Driver = (*Driver)(nil)

// checkNetwork validates the overlay fields of n.
func checkNetwork(n *driver.Network) error {
	if n.VNI < 1 || n.VNI > MaxVNI {
		return fmt.Errorf("overlay network %q: VNI %d not in 1..%d: %w", n.Name, n.VNI, MaxVNI, ErrInvalid)
	}
	if v := n.VTEP; !v.Is4() && (!isIPv6(v) || v.Zone() != "" || v.IsLinkLocalUnicast()) {
		return fmt.Errorf("overlay network %q: VTEP %v is not an IPv4 or global IPv6 address: %w", n.Name, n.VTEP, ErrInvalid)
	}
	return checkNetwork6(n)
}

// OverlayMTU is the MTU of the network's sandboxes and links given the
// underlay's: underlayMTU-50 (-70 over an IPv6 underlay: an IPv6 VTEP) so
// an encapsulated full-size frame fits the underlay unfragmented, or the
// network's own MTU when that is smaller.
func OverlayMTU(n *driver.Network, underlayMTU int) int {
	mtu := underlayMTU - overhead(n)
	if n.MTU > 0 && n.MTU < mtu {
		mtu = n.MTU
	}
	return mtu
}

// CreateNetwork makes the network's bridge and VXLAN device, or checks and
// repairs existing ones. Equivalent to
//
//	ip link add tov-VNI mtu M type bridge; ip link set tov-VNI alias A addrgenmode none up
//	ip link add tvx-VNI mtu M type vxlan id VNI dstport 4789 local VTEP dev UNDERLAY nolearning proxy noudpcsum
//	ip link set tvx-VNI alias A addrgenmode none master tov-VNI up
//	ip link set tov-VNI address GWMAC; ip addr replace GW/BITS dev tov-VNI   (not internal: gateway.go)
//
// (noudpcsum over an IPv4 underlay only: offload.go.)
//
// with IPv6 off on both (on, without addresses, on a dual-stack network;
// its MTU must then be at least IPv6's 1280).
//
// Existing links are kept (same index, no traffic lost) when they are right;
// a VXLAN device with another VNI, port, source, underlay device or flags is
// deleted and made again, which drops its FDB and neighbour entries: callers
// re-add every peer after CreateNetwork (AddPeer is idempotent). A link of
// that name that is not this network's is a conflict, left alone.
func (d *Driver) CreateNetwork(ctx context.Context, n *driver.Network) (err error) {
	h, err := d.handle()
	if err != nil {
		return err
	}
	defer d.release(h)
	if err := checkNetwork(n); err != nil {
		return err
	}
	under, err := d.underlay(h, n)
	if err != nil {
		return err
	}
	umtu := n.UnderlayMTU
	if umtu == 0 {
		umtu = under.Attrs().MTU
	}
	mtu := OverlayMTU(n, umtu)
	if mtu < 68 {
		return fmt.Errorf("overlay network %q: MTU %d (underlay %d - %d) is below IPv4's 68: %w", n.Name, mtu, umtu, overhead(n), ErrInvalid)
	}
	if dualStack(n) && mtu < MinIPv6MTU {
		return fmt.Errorf("overlay network %q: MTU %d (underlay %d - %d) is below IPv6's %d: %w", n.Name, mtu, umtu, overhead(n), MinIPv6MTU, ErrInvalid)
	}
	br, brNew, err := d.ensureBridge(h, n, mtu)
	if err != nil {
		return err
	}
	if brNew {
		defer func() {
			if err != nil {
				_ = h.LinkDel(br) // undo a bridge made by this call
			}
		}()
	}
	vx, vxNew, err := d.ensureVxlan(h, n, mtu, under)
	if err != nil {
		return err
	}
	if vxNew {
		defer func() {
			if err != nil {
				_ = h.LinkDel(vx)
			}
		}()
	}
	if vx.Attrs().MasterIndex != br.Attrs().Index {
		if err := h.LinkSetMasterByIndex(vx, br.Attrs().Index); err != nil {
			return fmt.Errorf("attach %q to bridge %q: %w", vx.Attrs().Name, br.Attrs().Name, err)
		}
	}
	for _, l := range []netlink.Link{br, vx} {
		if err := d.hostIPv6(h, n, l); err != nil { // before it is ever up
			return fmt.Errorf("overlay network %q: %w", n.Name, err)
		}
		if err := d.setUp(h, l); err != nil {
			return err
		}
	}
	if err := d.ensureGateway(h, n, br); err != nil {
		return fmt.Errorf("overlay network %q: %w", n.Name, err)
	}
	d.bypassNetwork(h, n, vx)
	d.bridges.Store(n.VNI, bridgeRef{index: br.Attrs().Index, mtu: mtu})
	return nil
}

// underlay returns the underlay interface: n.UnderlayIf, or the one that
// holds n.VTEP (IPv4 or IPv6).
func (d *Driver) underlay(h *netlink.Handle, n *driver.Network) (netlink.Link, error) {
	if n.UnderlayIf != "" {
		l, err := h.LinkByName(n.UnderlayIf)
		if err != nil {
			return nil, fmt.Errorf("underlay interface %q: %w", n.UnderlayIf, err)
		}
		return l, nil
	}
	addrs, err := nlutil.Dump("list addresses", func() ([]netlink.Addr, error) {
		return h.AddrList(nil, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == n.VTEP {
			l, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("underlay interface of %s: %w", n.VTEP, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("overlay network %q: no interface holds the VTEP address %s: %w", n.Name, n.VTEP, ErrInvalid)
}

// ensureBridge returns the network's bridge, creating it when missing
// (created true) and setting its MTU when it differs.
func (d *Driver) ensureBridge(h *netlink.Handle, n *driver.Network, mtu int) (l netlink.Link, created bool, err error) {
	name := BridgeName(n.VNI)
	if l, err = d.ownLink(h, n, name, "bridge"); err != nil {
		return nil, false, err
	}
	if l == nil {
		l, err = d.createLink(h, n, &netlink.Bridge{LinkAttrs: linkAttrs(name, mtu)})
		return l, err == nil, err
	}
	// Every port has the same MTU, so the bridge's (which follows its
	// smallest port unless set explicitly) stays mtu; Join reads it there.
	if l.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return nil, false, fmt.Errorf("MTU %d on bridge %q: %w", mtu, name, err)
		}
	}
	return l, false, nil
}

// ensureVxlan returns the network's VXLAN device, (re)creating it when it
// is missing or its configuration is not the wanted one (created true).
func (d *Driver) ensureVxlan(h *netlink.Handle, n *driver.Network, mtu int, under netlink.Link) (l netlink.Link, created bool, err error) {
	name := VxlanName(n.VNI)
	want := &netlink.Vxlan{
		LinkAttrs:    linkAttrs(name, mtu),
		VxlanId:      n.VNI,
		VtepDevIndex: under.Attrs().Index,
		SrcAddr:      n.VTEP.AsSlice(),
		Port:         Port,
		Learning:     false,
		Proxy:        true,
	}
	if l, err = d.ownLink(h, n, name, "vxlan"); err != nil {
		return nil, false, err
	}
	if l != nil {
		if vxlanMatches(l.(*netlink.Vxlan), want) {
			if l.Attrs().MTU != mtu {
				if err := h.LinkSetMTU(l, mtu); err != nil {
					return nil, false, fmt.Errorf("MTU %d on %q: %w", mtu, name, err)
				}
			}
			return l, false, nil
		}
		if err := h.LinkDel(l); err != nil && !nlutil.IsLinkGone(err) {
			return nil, false, fmt.Errorf("delete misconfigured %q: %w", name, err)
		}
	}
	l, err = d.createLink(h, n, want)
	return l, err == nil, err
}

// vxlanMatches reports whether an existing VXLAN device is configured as want.
func vxlanMatches(have, want *netlink.Vxlan) bool {
	return have.VxlanId == want.VxlanId && have.Port == want.Port &&
		have.SrcAddr.Equal(want.SrcAddr) && have.VtepDevIndex == want.VtepDevIndex &&
		have.Learning == want.Learning && have.Proxy == want.Proxy &&
		!have.L2miss && !have.L3miss && !have.FlowBased && len(have.Group) == 0
}

// overhead is what VXLAN adds over n's underlay: Overhead, or Overhead6
// with an IPv6 VTEP.
func overhead(n *driver.Network) int {
	if isIPv6(n.VTEP) {
		return Overhead6
	}
	return Overhead
}

// ownLink finds link name and checks that it is network n's and of type
// typ. It returns nil, nil when there is no such link.
func (d *Driver) ownLink(h *netlink.Handle, n *driver.Network, name, typ string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("find %q: %w", name, err)
	}
	if a := l.Attrs().Alias; a != NetworkAlias(n.ID) {
		if other, ok := NetworkOf(a); ok {
			return nil, fmt.Errorf("overlay network %q: %q belongs to network %.12s (VNI %d in use): %w", n.Name, name, other, n.VNI, ErrConflict)
		}
		return nil, fmt.Errorf("overlay network %q: link %q exists and is not Tether's (alias %q): %w", n.Name, name, a, ErrConflict)
	}
	if l.Type() != typ {
		return nil, fmt.Errorf("overlay network %q: link %q is a %s, not a %s: %w", n.Name, name, l.Type(), typ, ErrConflict)
	}
	return l, nil
}

// createLink adds l, marks it as n's and returns it as the kernel reports it.
func (d *Driver) createLink(h *netlink.Handle, n *driver.Network, l netlink.Link) (netlink.Link, error) {
	name := l.Attrs().Name
	add := h.LinkAdd
	if v, ok := l.(*netlink.Vxlan); ok {
		add = func(netlink.Link) error { return d.addVxlan(h, v, zeroUDPCsum(n)) } // offload.go
	}
	if err := add(l); err != nil {
		return nil, fmt.Errorf("create %s %q: %w", l.Type(), name, err)
	}
	got, err := h.LinkByName(name)
	if err == nil && got.Attrs().Alias != NetworkAlias(n.ID) {
		err = h.LinkSetAlias(got, NetworkAlias(n.ID))
	}
	if err != nil {
		_ = h.LinkDel(l)
		return nil, fmt.Errorf("mark new %s %q: %w", l.Type(), name, err)
	}
	return got, nil
}

func (d *Driver) setUp(h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up %q: %w", l.Attrs().Name, err)
	}
	return nil
}

// linkAttrs are the attributes of a new link: TxQLen -1 leaves the
// kernel's default instead of asking for a queue length of 0.
func linkAttrs(name string, mtu int) netlink.LinkAttrs {
	a := netlink.NewLinkAttrs()
	a.Name, a.MTU = name, mtu
	return a
}

// DeleteNetwork removes the network's VXLAN device (and with it every FDB
// and neighbour entry), its bridge, and host-side veths of Tether's still
// on the bridge (endpoints normally Leave first). Equivalent to `ip link del`
// of each. Links that are gone are success; links that are not the
// network's are left alone and reported.
func (d *Driver) DeleteNetwork(ctx context.Context, n *driver.Network) error {
	d.bridges.Delete(n.VNI)
	h, err := d.handle()
	if err != nil {
		return err
	}
	defer d.release(h)
	if n.VNI < 1 || n.VNI > MaxVNI {
		return fmt.Errorf("overlay network %q: VNI %d not in 1..%d: %w", n.Name, n.VNI, MaxVNI, ErrInvalid)
	}
	var errs []error
	if vx, err := d.ownLink(h, n, VxlanName(n.VNI), "vxlan"); err != nil {
		errs = append(errs, err)
	} else if vx != nil {
		d.unbypassNetwork(n, vx)
		errs = append(errs, d.del(h, vx))
	}
	br, err := d.ownLink(h, n, BridgeName(n.VNI), "bridge")
	switch {
	case err != nil:
		errs = append(errs, err)
	case br != nil:
		errs = append(errs, d.deletePorts(h, br)...)
		errs = append(errs, d.del(h, br))
	}
	return errors.Join(errs...)
}

// deletePorts deletes the host-side veths Tether marked that are ports of br.
func (d *Driver) deletePorts(h *netlink.Handle, br netlink.Link) []error {
	links, err := nlutil.Dump("list links", h.LinkList)
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex == br.Attrs().Index && l.Type() == "veth" && strings.HasPrefix(a.Alias, bridge.AliasPrefix) {
			if fp := d.fast(); fp != nil {
				_ = fp.Detach(a.Index) // its link goes with the veth; the fd too
			}
			errs = append(errs, d.del(h, l))
		}
	}
	return errs
}

func (d *Driver) del(h *netlink.Handle, l netlink.Link) error {
	if err := h.LinkDel(l); err != nil && !nlutil.IsLinkGone(err) {
		return fmt.Errorf("delete %q: %w", l.Attrs().Name, err)
	}
	return nil
}

// handle returns a netlink handle bound to the driver's namespace, for
// one call (nlutil.GetHandle); release gives it back.
func (d *Driver) handle() (*netlink.Handle, error) { return nlutil.GetHandle(d.pool, d.h) }

func (d *Driver) release(h *netlink.Handle) { nlutil.PutHandle(d.pool, d.h, h) }

// bridgeRef is what an attach needs of a network's bridge: its ifindex
// and MTU, as last looked up.
type bridgeRef struct {
	index, mtu int
}

// bridgeOf returns n's bridge: as kept (by VNI), or looked up and checked
// to be n's (always when fresh) and kept. An index is not reused until the
// namespace's counter wraps, so a stale one names no link: enslaving to it
// fails, and the caller looks again with fresh.
func (d *Driver) bridgeOf(h *netlink.Handle, n *driver.Network, fresh bool) (bridgeRef, error) {
	if !fresh {
		if r, ok := d.bridges.Load(n.VNI); ok {
			return r.(bridgeRef), nil
		}
	}
	br, err := d.ownLink(h, n, BridgeName(n.VNI), "bridge")
	if err == nil && br == nil {
		err = fmt.Errorf("overlay network %q: bridge %q does not exist (CreateNetwork first)", n.Name, BridgeName(n.VNI))
	}
	if err != nil {
		d.bridges.Delete(n.VNI)
		return bridgeRef{}, err
	}
	r := bridgeRef{index: br.Attrs().Index, mtu: br.Attrs().MTU}
	d.bridges.Store(n.VNI, r)
	return r, nil
}
