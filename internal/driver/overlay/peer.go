package overlay

// Peers: the remote endpoints of a network, as static kernel state on its
// VXLAN device. One remote endpoint is two entries:
//
//	bridge fdb replace MAC dev tvx-VNI dst VTEP self permanent   (where to send its frames)
//	ip neigh replace IP lladdr MAC dev tvx-VNI nud permanent     (what the device answers for ARP)
//
// The FDB entry goes in first and out last, so a half-programmed peer never
// gets ARP answered while its frames have nowhere to go. Both writes are
// replaces: a peer that moved to another host (same IP and MAC, new VTEP)
// is one AddPeer, and re-adding what is there changes nothing.
//
// A peer of a dual-stack network also has an IPv6 address (Peer.IP6): a
// second neighbour entry, `ip -6 neigh replace IP6 lladdr MAC dev tvx-VNI
// nud permanent`, from which the device's proxy answers neighbour
// solicitations as it answers ARP (IPv6 is on on the device, ipv6.go).

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/nlutil"
)

// Peer is a remote endpoint of an overlay network.
type Peer = driver.Peer

func checkPeer(n *driver.Network, p Peer) error {
	switch {
	case p.IP.IsValid() && !p.IP.Is4(), !p.IP.IsValid() && !p.IP6.IsValid():
		return fmt.Errorf("peer %v: IP is not an IPv4 address: %w", p, ErrInvalid)
	case p.IP6.IsValid() && (!isIPv6(p.IP6) || p.IP6.Zone() != ""):
		return fmt.Errorf("peer %v: IP6 is not an IPv6 address: %w", p, ErrInvalid)
	case p.IP6.IsValid() && !n.Subnet6.Contains(p.IP6):
		return fmt.Errorf("peer %v: IP6 outside the network's IPv6 subnet %v: %w", p, n.Subnet6, ErrInvalid)
	case len(p.MAC) != 6 || p.MAC[0]&1 != 0 || bytes.Equal(p.MAC, make([]byte, 6)):
		return fmt.Errorf("peer %v: MAC is not a unicast Ethernet address: %w", p, ErrInvalid)
	case !p.VTEP.IsValid() || p.VTEP.Zone() != "" || p.VTEP.Is4() != n.VTEP.Is4() || p.VTEP.Is4In6():
		return fmt.Errorf("peer %v: VTEP is not an address of the underlay's family (this host's VTEP %v): %w", p, n.VTEP, ErrInvalid)
	case p.VTEP == n.VTEP:
		return fmt.Errorf("peer %v: VTEP is this host's own (local endpoints are on the bridge): %w", p, ErrInvalid)
	}
	return nil
}

// vxlan returns the network's VXLAN device.
func (d *Driver) vxlan(h *netlink.Handle, n *driver.Network) (netlink.Link, error) {
	if n.VNI < 1 || n.VNI > MaxVNI {
		return nil, fmt.Errorf("overlay network %q: VNI %d not in 1..%d: %w", n.Name, n.VNI, MaxVNI, ErrInvalid)
	}
	vx, err := d.ownLink(h, n, VxlanName(n.VNI), "vxlan")
	if err == nil && vx == nil {
		err = fmt.Errorf("overlay network %q: VXLAN device %q does not exist (CreateNetwork first)", n.Name, VxlanName(n.VNI))
	}
	return vx, err
}

func fdbEntry(vx netlink.Link, mac net.HardwareAddr, vtep netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, HardwareAddr: mac, IP: vtep.AsSlice(),
	}
}

// neighEntry is IP's neighbour entry, IPv4 or IPv6 by IP's family.
func neighEntry(vx netlink.Link, ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
	family := unix.AF_INET
	if isIPv6(ip) {
		family = unix.AF_INET6
	}
	return &netlink.Neigh{
		LinkIndex: vx.Attrs().Index, Family: family,
		State: netlink.NUD_PERMANENT, HardwareAddr: mac, IP: ip.AsSlice(),
	}
}

// AddPeer programs a remote endpoint (see the top of this file). Idempotent;
// a peer whose MAC or IP was programmed with another VTEP or MAC is moved.
func (d *Driver) AddPeer(ctx context.Context, n *driver.Network, p Peer) error {
	h, err := d.handle()
	if err != nil {
		return err
	}
	defer d.release(h)
	if err := checkPeer(n, p); err != nil {
		return err
	}
	vx, err := d.vxlan(h, n)
	if err != nil {
		return err
	}
	if err := h.NeighSet(fdbEntry(vx, p.MAC, p.VTEP)); err != nil {
		return fmt.Errorf("peer %v on %q: fdb entry: %w", p, vx.Attrs().Name, err)
	}
	for _, ip := range []netip.Addr{p.IP, p.IP6} {
		if !ip.IsValid() {
			continue
		}
		if err := h.NeighSet(neighEntry(vx, ip, p.MAC)); err != nil {
			return fmt.Errorf("peer %v on %q: neighbour entry of %v: %w", p, vx.Attrs().Name, ip, err)
		}
	}
	d.bypassPeer(n, vx, p)
	if err := d.announce(h, n, p); err != nil {
		// the peer is programmed; only a sandbox that asked early waits
		// for its kernel's next ARP try
		slog.Debug("overlay: gratuitous ARP for a new peer", "peer", p.String(), "err", err)
	}
	return nil
}

// RemovePeer removes a remote endpoint's entries, the neighbour entries
// first. Idempotent: what is gone is success. It removes only what is p's:
// the FDB entry only with p's VTEP, and a neighbour entry only when it
// maps p.IP (p.IP6) to p.MAC and p.MAC is not at another VTEP (so removing
// the old location of a peer that moved keeps the new one working).
// Partial peers, as Peers reports them, are accepted: an invalid VTEP skips
// the FDB entry, an invalid IP or IP6 its neighbour entry. It reads the device's entries back
// once (a dump): use RemovePeers for many.
func (d *Driver) RemovePeer(ctx context.Context, n *driver.Network, p Peer) error {
	return d.RemovePeers(ctx, n, []Peer{p})
}

// RemovePeers is RemovePeer for several peers with one read of the
// device's entries. Every removal is tried; errors are joined.
func (d *Driver) RemovePeers(ctx context.Context, n *driver.Network, ps []Peer) error {
	h, err := d.handle()
	if err != nil {
		return err
	}
	defer d.release(h)
	for _, p := range ps {
		if len(p.MAC) != 6 {
			return fmt.Errorf("peer %v: MAC is not an Ethernet address: %w", p, ErrInvalid)
		}
	}
	vx, err := d.vxlan(h, n)
	if err != nil {
		if errors.Is(err, ErrInvalid) || errors.Is(err, ErrConflict) {
			return err
		}
		return nil // no device, no entries
	}
	fdb, neigh, err := d.entries(h, vx)
	if err != nil {
		return err
	}
	vteps := map[string][]netip.Addr{} // MAC -> VTEPs it is at
	for _, e := range fdb {
		v, _ := netip.AddrFromSlice(e.IP)
		vteps[string(e.HardwareAddr)] = append(vteps[string(e.HardwareAddr)], v.Unmap())
	}
	macOf := map[netip.Addr]string{} // IP -> MAC
	for _, e := range neigh {
		ip, _ := netip.AddrFromSlice(e.IP)
		macOf[ip.Unmap()] = string(e.HardwareAddr)
	}
	var errs []error
	for _, p := range ps {
		mac := string(p.MAC)
		moved := slices.ContainsFunc(vteps[mac], func(v netip.Addr) bool { return v != p.VTEP })
		for _, ip := range []netip.Addr{p.IP, p.IP6} {
			if !ip.IsValid() || moved || macOf[ip] != mac {
				continue
			}
			if err := h.NeighDel(neighEntry(vx, ip, p.MAC)); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("peer %v on %q: delete neighbour entry of %v: %w", p, vx.Attrs().Name, ip, err))
			} else {
				delete(macOf, ip)
			}
		}
		// The kernel deletes only the remote with this VTEP, and answers 0
		// when the MAC has no such remote.
		if p.VTEP.IsValid() {
			if err := h.NeighDel(fdbEntry(vx, p.MAC, p.VTEP)); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("peer %v on %q: delete fdb entry: %w", p, vx.Attrs().Name, err))
			} else {
				vteps[mac] = slices.DeleteFunc(vteps[mac], func(v netip.Addr) bool { return v == p.VTEP })
			}
		}
		// The bypass encapsulates by itself: it must not reach a MAC the
		// FDB no longer has (e.g. a partial peer, its FDB entry gone).
		if len(vteps[mac]) == 0 {
			d.unbypassPeer(n, p)
		}
	}
	return errors.Join(errs...)
}

// Peers reads the network's remote endpoints back from the kernel (`bridge
// fdb show dev tvx-VNI` and `ip neigh show dev tvx-VNI`, IPv4 and IPv6),
// sorted by IP, MAC, VTEP then IP6, for the engine to diff against the
// store. An IPv6 neighbour entry is merged into the peer with its MAC. A
// peer with all its entries is complete; a crash between AddPeer's writes
// (or RemovePeer's) leaves a partial one: an FDB entry alone is reported
// with no IP, neighbour entries alone with no VTEP, an IPv6 entry without
// an IPv4 one with no IP. AddPeer completes them, RemovePeer removes them.
func (d *Driver) Peers(ctx context.Context, n *driver.Network) ([]Peer, error) {
	h, err := d.handle()
	if err != nil {
		return nil, err
	}
	defer d.release(h)
	vx, err := d.vxlan(h, n)
	if err != nil {
		return nil, err
	}
	fdb, neigh, err := d.entries(h, vx)
	if err != nil {
		return nil, err
	}
	return mergePeers(fdb, neigh), nil
}

// entries dumps the device's static FDB entries and its permanent
// neighbour entries.
func (d *Driver) entries(h *netlink.Handle, vx netlink.Link) (fdb, neigh []netlink.Neigh, err error) {
	if fdb, err = d.fdbEntries(h, vx); err != nil {
		return nil, nil, err
	}
	idx := vx.Attrs().Index
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		all, err := nlutil.Dump("list neighbours of "+vx.Attrs().Name, func() ([]netlink.Neigh, error) {
			return h.NeighList(idx, family)
		})
		if err != nil {
			return nil, nil, err
		}
		for _, e := range all {
			if e.State&netlink.NUD_PERMANENT != 0 && len(e.HardwareAddr) == 6 {
				neigh = append(neigh, e)
			}
		}
	}
	return fdb, neigh, nil
}

// fdbEntries dumps the device's static unicast FDB entries (remote MAC ->
// VTEP) alone.
func (d *Driver) fdbEntries(h *netlink.Handle, vx netlink.Link) ([]netlink.Neigh, error) {
	idx := vx.Attrs().Index
	all, err := nlutil.Dump("list fdb of "+vx.Attrs().Name, func() ([]netlink.Neigh, error) {
		return h.NeighList(idx, unix.AF_BRIDGE)
	})
	if err != nil {
		return nil, err
	}
	var fdb []netlink.Neigh
	for _, e := range all {
		if unicastRemote(&e) {
			fdb = append(fdb, e)
		}
	}
	return fdb, nil
}

// unicastRemote is an FDB entry of a VXLAN device naming a remote VTEP for
// a unicast MAC (not the all-zeros flood entry, not the bridge's own).
func unicastRemote(e *netlink.Neigh) bool {
	return e.Flags&netlink.NTF_SELF != 0 && e.Flags&netlink.NTF_MASTER == 0 && e.IP != nil &&
		len(e.HardwareAddr) == 6 && e.HardwareAddr[0]&1 == 0 && !bytes.Equal(e.HardwareAddr, make([]byte, 6))
}

// mergePeers joins FDB entries (MAC -> VTEP) and neighbour entries (IP ->
// MAC, IPv4 or IPv6) on the MAC: the i-th IPv4 and i-th IPv6 address of a
// MAC (sorted; one each for a complete peer) make one peer, at each of the
// MAC's VTEPs (none: no VTEP).
func mergePeers(fdb, neigh []netlink.Neigh) []Peer {
	vteps := map[string][]netip.Addr{}
	for _, e := range fdb {
		if v, ok := netip.AddrFromSlice(e.IP); ok {
			vteps[string(e.HardwareAddr)] = append(vteps[string(e.HardwareAddr)], v.Unmap())
		}
	}
	ips4, ips6 := map[string][]netip.Addr{}, map[string][]netip.Addr{}
	for _, e := range neigh {
		ip, ok := netip.AddrFromSlice(e.IP)
		switch {
		case !ok:
		case isIPv6(ip):
			ips6[string(e.HardwareAddr)] = append(ips6[string(e.HardwareAddr)], ip)
		default:
			ips4[string(e.HardwareAddr)] = append(ips4[string(e.HardwareAddr)], ip.Unmap())
		}
	}
	macs := map[string]bool{}
	for _, m := range []map[string][]netip.Addr{vteps, ips4, ips6} {
		for mac := range m {
			macs[mac] = true
		}
	}
	var out []Peer
	for mac := range macs {
		v4, v6 := ips4[mac], ips6[mac]
		slices.SortFunc(v4, netip.Addr.Compare)
		slices.SortFunc(v6, netip.Addr.Compare)
		vs := vteps[mac]
		if len(vs) == 0 {
			vs = []netip.Addr{{}}
		}
		for i := range max(len(v4), len(v6), 1) {
			p := Peer{MAC: net.HardwareAddr(mac)}
			if i < len(v4) {
				p.IP = v4[i]
			}
			if i < len(v6) {
				p.IP6 = v6[i]
			}
			for _, v := range vs {
				p.VTEP = v
				p.MAC = slices.Clone(p.MAC)
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(a, b Peer) int {
		return cmp.Or(a.IP.Compare(b.IP), bytes.Compare(a.MAC, b.MAC), a.VTEP.Compare(b.VTEP), a.IP6.Compare(b.IP6))
	})
	return out
}
