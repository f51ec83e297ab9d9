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

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
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
	case !p.IP.Is4():
		return fmt.Errorf("peer %v: IP is not an IPv4 address: %w", p, ErrInvalid)
	case len(p.MAC) != 6 || p.MAC[0]&1 != 0 || bytes.Equal(p.MAC, make([]byte, 6)):
		return fmt.Errorf("peer %v: MAC is not a unicast Ethernet address: %w", p, ErrInvalid)
	case !p.VTEP.Is4():
		return fmt.Errorf("peer %v: VTEP is not an IPv4 address: %w", p, ErrInvalid)
	case p.VTEP == n.VTEP:
		return fmt.Errorf("peer %v: VTEP is this host's own (local endpoints are on the bridge): %w", p, ErrInvalid)
	}
	return nil
}

// vxlan returns the network's VXLAN device.
func (d *Driver) vxlan(n *driver.Network) (netlink.Link, error) {
	if n.VNI < 1 || n.VNI > MaxVNI {
		return nil, fmt.Errorf("overlay network %q: VNI %d not in 1..%d: %w", n.Name, n.VNI, MaxVNI, ErrInvalid)
	}
	vx, err := d.ownLink(n, VxlanName(n.VNI), "vxlan")
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

func neighEntry(vx netlink.Link, ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: vx.Attrs().Index, Family: unix.AF_INET,
		State: netlink.NUD_PERMANENT, HardwareAddr: mac, IP: ip.AsSlice(),
	}
}

// AddPeer programs a remote endpoint (see the top of this file). Idempotent;
// a peer whose MAC or IP was programmed with another VTEP or MAC is moved.
func (d *Driver) AddPeer(ctx context.Context, n *driver.Network, p Peer) error {
	if err := checkPeer(n, p); err != nil {
		return err
	}
	vx, err := d.vxlan(n)
	if err != nil {
		return err
	}
	if err := d.h.NeighSet(fdbEntry(vx, p.MAC, p.VTEP)); err != nil {
		return fmt.Errorf("peer %v on %q: fdb entry: %w", p, vx.Attrs().Name, err)
	}
	if err := d.h.NeighSet(neighEntry(vx, p.IP, p.MAC)); err != nil {
		return fmt.Errorf("peer %v on %q: neighbour entry: %w", p, vx.Attrs().Name, err)
	}
	return nil
}

// RemovePeer removes a remote endpoint's entries, the neighbour entry
// first. Idempotent: what is gone is success. It removes only what is p's:
// the FDB entry only with p's VTEP, and the neighbour entry only when it
// maps p.IP to p.MAC and p.MAC is not at another VTEP (so removing the old
// location of a peer that moved keeps the new one working). Partial peers,
// as Peers reports them, are accepted: an invalid VTEP skips the FDB entry,
// an invalid IP the neighbour entry. It reads the device's entries back
// once (a dump): use RemovePeers for many.
func (d *Driver) RemovePeer(ctx context.Context, n *driver.Network, p Peer) error {
	return d.RemovePeers(ctx, n, []Peer{p})
}

// RemovePeers is RemovePeer for several peers with one read of the
// device's entries. Every removal is tried; errors are joined.
func (d *Driver) RemovePeers(ctx context.Context, n *driver.Network, ps []Peer) error {
	for _, p := range ps {
		if len(p.MAC) != 6 {
			return fmt.Errorf("peer %v: MAC is not an Ethernet address: %w", p, ErrInvalid)
		}
	}
	vx, err := d.vxlan(n)
	if err != nil {
		if errors.Is(err, ErrInvalid) || errors.Is(err, ErrConflict) {
			return err
		}
		return nil // no device, no entries
	}
	fdb, neigh, err := d.entries(vx)
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
		if p.IP.IsValid() && !moved && macOf[p.IP] == mac {
			if err := d.h.NeighDel(neighEntry(vx, p.IP, p.MAC)); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("peer %v on %q: delete neighbour entry: %w", p, vx.Attrs().Name, err))
			} else {
				delete(macOf, p.IP)
			}
		}
		// The kernel deletes only the remote with this VTEP, and answers 0
		// when the MAC has no such remote.
		if p.VTEP.IsValid() {
			if err := d.h.NeighDel(fdbEntry(vx, p.MAC, p.VTEP)); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("peer %v on %q: delete fdb entry: %w", p, vx.Attrs().Name, err))
			} else {
				vteps[mac] = slices.DeleteFunc(vteps[mac], func(v netip.Addr) bool { return v == p.VTEP })
			}
		}
	}
	return errors.Join(errs...)
}

// Peers reads the network's remote endpoints back from the kernel (`bridge
// fdb show dev tvx-VNI` and `ip neigh show dev tvx-VNI`), sorted by IP then
// MAC, for the engine to diff against the store. A peer with both entries
// is complete; a crash between AddPeer's two writes (or RemovePeer's) leaves
// a partial one: an FDB entry alone is reported with no IP, a neighbour
// entry alone with no VTEP. AddPeer completes them, RemovePeer removes them.
func (d *Driver) Peers(ctx context.Context, n *driver.Network) ([]Peer, error) {
	vx, err := d.vxlan(n)
	if err != nil {
		return nil, err
	}
	fdb, neigh, err := d.entries(vx)
	if err != nil {
		return nil, err
	}
	return mergePeers(fdb, neigh), nil
}

// entries dumps the device's static FDB entries and its permanent
// neighbour entries.
func (d *Driver) entries(vx netlink.Link) (fdb, neigh []netlink.Neigh, err error) {
	idx := vx.Attrs().Index
	all, err := nlutil.Dump("list fdb of "+vx.Attrs().Name, func() ([]netlink.Neigh, error) {
		return d.h.NeighList(idx, unix.AF_BRIDGE)
	})
	if err != nil {
		return nil, nil, err
	}
	for _, e := range all {
		if e.Flags&netlink.NTF_SELF != 0 && e.Flags&netlink.NTF_MASTER == 0 && e.IP != nil &&
			len(e.HardwareAddr) == 6 && e.HardwareAddr[0]&1 == 0 && !bytes.Equal(e.HardwareAddr, make([]byte, 6)) {
			fdb = append(fdb, e)
		}
	}
	all, err = nlutil.Dump("list neighbours of "+vx.Attrs().Name, func() ([]netlink.Neigh, error) {
		return d.h.NeighList(idx, unix.AF_INET)
	})
	if err != nil {
		return nil, nil, err
	}
	for _, e := range all {
		if e.State&netlink.NUD_PERMANENT != 0 && len(e.HardwareAddr) == 6 {
			neigh = append(neigh, e)
		}
	}
	return fdb, neigh, nil
}

// mergePeers joins FDB entries (MAC -> VTEP) and neighbour entries (IP ->
// MAC) on the MAC.
func mergePeers(fdb, neigh []netlink.Neigh) []Peer {
	vteps := map[string][]netip.Addr{}
	for _, e := range fdb {
		if v, ok := netip.AddrFromSlice(e.IP); ok {
			vteps[string(e.HardwareAddr)] = append(vteps[string(e.HardwareAddr)], v.Unmap())
		}
	}
	var out []Peer
	used := map[string]bool{}
	for _, e := range neigh {
		ip, ok := netip.AddrFromSlice(e.IP)
		if !ok {
			continue
		}
		mac := slices.Clone(e.HardwareAddr)
		vs := vteps[string(mac)]
		if len(vs) == 0 {
			out = append(out, Peer{IP: ip.Unmap(), MAC: mac})
		}
		for _, v := range vs {
			out = append(out, Peer{IP: ip.Unmap(), MAC: mac, VTEP: v})
		}
		used[string(mac)] = true
	}
	for _, e := range fdb {
		if used[string(e.HardwareAddr)] {
			continue
		}
		if v, ok := netip.AddrFromSlice(e.IP); ok {
			out = append(out, Peer{MAC: slices.Clone(e.HardwareAddr), VTEP: v.Unmap()})
		}
	}
	slices.SortFunc(out, func(a, b Peer) int {
		return cmp.Or(a.IP.Compare(b.IP), bytes.Compare(a.MAC, b.MAC), a.VTEP.Compare(b.VTEP))
	})
	return out
}
