package overlay

// The bridge bypass (internal/fastpath; docs/overlay.md, "Bridge bypass"):
// unicast frames between a network's local sandboxes and its remote
// endpoints skip the tov-N bridge, and with it br_netfilter's pass through
// the IPv4/IPv6 hooks. The bridge stays for everything else (ARP and
// neighbour discovery, the way out through the gateway) and for all
// traffic while the daemon is down. Each network's segment in the maps is
// its VNI, so a replaced VXLAN device (a new index) keeps its sandboxes.
//
//	VXLAN device tvx-N  ingress: frames to a local sandbox's MAC -> into it
//	host end vtoXXXX    ingress: frames to a remote endpoint's MAC -> out of tvx-N,
//	                             frames to another local sandbox's MAC -> into it
//
// Entries follow the kernel objects: CreateNetwork attaches the device and
// loads the remote MACs from its FDB (so a restarted daemon has them;
// AddPeer attaches a device it finds unattached, e.g. one replaced),
// Join and Repair add a sandbox, Leave and Detach remove it, AddPeer and
// RemovePeers follow the FDB. A failure here is logged and leaves that
// traffic on the bridge, which carries it as before.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/fastpath"
	"github.com/tether-net/tether/internal/nlutil"
)

// BypassEnv turns the bypass off when set to "0" (every frame goes through
// the bridge, as before it existed), and keeps only the bridge bypass when
// set to "bridge" (the VXLAN device encapsulates and decapsulates every
// packet, as before the tunnel was done in BPF).
const BypassEnv = "TETHER_OVERLAY_BYPASS"

// fast returns the bypass, made on first use; nil when it is off or the
// kernel cannot run it (logged once).
func (d *Driver) fast() *fastpath.Path {
	d.fpOnce.Do(func() {
		switch os.Getenv(BypassEnv) {
		case "0":
			slog.Info("overlay: bridge bypass off (" + BypassEnv + "=0)")
			return
		case "bridge":
			slog.Info("overlay: VXLAN in BPF off, bridge bypass on (" + BypassEnv + "=bridge)")
			d.fpDevice = true
		}
		p, err := fastpath.New(d.ns, Port)
		if err != nil {
			slog.Warn("overlay: bridge bypass unavailable; overlay frames go through the bridge", "err", err)
			return
		}
		d.fp = p
		d.fol = &follower{d: d, fp: p, devs: map[int]vxTunnel{}, stop: make(chan struct{})}
		if err := d.fol.start(); err != nil && !d.fpDevice {
			// Without the FDB's events the map could outlive an entry
			// changed by hand: leave the tunnel to the devices.
			slog.Warn("overlay: VXLAN in BPF off: cannot follow the FDB", "err", err)
			d.fpDevice = true
		}
	})
	return d.fp
}

// Bypassing reports whether the bypass runs (for tests and inspection).
func (d *Driver) Bypassing() bool { return d.fast() != nil }

// TunnelInBPF reports whether the bypass also encapsulates and
// decapsulates IPv4 frames itself (over an IPv4 underlay), so that they
// skip the VXLAN devices.
func (d *Driver) TunnelInBPF() bool { return d.fast() != nil && !d.fpDevice }

// tunnel is how the bypass reaches a remote endpoint behind vtep without
// the network's VXLAN device vx (zero: through the device). Only over an
// IPv4 underlay, and not with BypassEnv=bridge.
func (d *Driver) tunnel(n *driver.Network, vx netlink.Link, vtep netip.Addr) fastpath.Tunnel {
	v, ok := vx.(*netlink.Vxlan)
	if d.fpDevice || !ok || v.VtepDevIndex == 0 || !n.VTEP.Is4() || !vtep.Unmap().Is4() {
		return fastpath.Tunnel{}
	}
	return fastpath.Tunnel{VNI: n.VNI, Local: n.VTEP, Remote: vtep.Unmap(), Under: v.VtepDevIndex}
}

// Close releases the bypass (its links end, so traffic goes through the
// bridges). The driver's networks and endpoints stay.
func (d *Driver) Close() error {
	d.fpOnce.Do(func() {}) // no bypass made after Close
	if d.fol != nil {
		d.fol.closeOnce.Do(func() { close(d.fol.stop) })
	}
	if d.fp != nil {
		return d.fp.Close()
	}
	return nil
}

// bypassNetwork attaches the program to the network's VXLAN device and
// loads the remote endpoints' MACs from its FDB.
func (d *Driver) bypassNetwork(h *netlink.Handle, n *driver.Network, vx netlink.Link) {
	fp := d.fast()
	if fp == nil {
		return
	}
	idx := vx.Attrs().Index
	if err := fp.Attach(idx, n.VNI); err != nil {
		slog.Warn("overlay: bridge bypass", "network", n.Name, "err", err)
		return
	}
	d.fol.track(n, vx)
	d.decapOn(fp, n, d.tunnel(n, vx, n.VTEP))
	fdb, err := d.fdbEntries(h, vx) // the neighbour entries are not needed here
	if err != nil {
		slog.Warn("overlay: bridge bypass: read the FDB", "network", n.Name, "err", err)
		return
	}
	for _, e := range fdb {
		vtep, _ := netip.AddrFromSlice(e.IP)
		if err := fp.SetRemote(n.VNI, e.HardwareAddr, idx, d.tunnel(n, vx, vtep)); err != nil {
			slog.Warn("overlay: bridge bypass", "network", n.Name, "err", err)
		}
	}
}

// decapOn puts the decapsulation program on t's underlay for n (none for
// a zero Tunnel: the device decapsulates).
func (d *Driver) decapOn(fp *fastpath.Path, n *driver.Network, t fastpath.Tunnel) {
	if t.Under == 0 {
		return
	}
	if err := fp.AttachUnderlay(t.Under, n.VNI); err != nil {
		slog.Warn("overlay: VXLAN decapsulation in BPF", "network", n.Name, "err", err)
	}
}

// unbypassNetwork forgets the network's segment (its device is going).
func (d *Driver) unbypassNetwork(n *driver.Network, vx netlink.Link) {
	fp := d.fast()
	if fp == nil || vx == nil {
		return
	}
	d.fol.untrack(n)
	if err := fp.Detach(vx.Attrs().Index); err != nil {
		slog.Warn("overlay: bridge bypass", "network", n.Name, "err", err)
	}
	if err := fp.DropSegment(n.VNI); err != nil {
		slog.Warn("overlay: bridge bypass", "network", n.Name, "err", err)
	}
}

// bypassEndpoint puts a local sandbox's host end in its network's segment:
// its frames to remote endpoints leave by the VXLAN device, and frames to
// its MAC go into it.
func (d *Driver) bypassEndpoint(n *driver.Network, host netlink.Link, mac net.HardwareAddr) {
	fp := d.fast()
	if fp == nil || len(mac) != 6 {
		return
	}
	idx := host.Attrs().Index
	if err := fp.SetDest(n.VNI, mac, idx, true); err != nil {
		slog.Warn("overlay: bridge bypass", "network", n.Name, "interface", host.Attrs().Name, "err", err)
		return
	}
	if err := fp.Attach(idx, n.VNI); err != nil {
		slog.Warn("overlay: bridge bypass", "network", n.Name, "interface", host.Attrs().Name, "err", err)
	}
}

// unbypassEndpoint takes a leaving sandbox out: its host end's link goes,
// and its MAC's entry if it still names that host end.
func (d *Driver) unbypassEndpoint(n *driver.Network, hostIndex int, mac net.HardwareAddr) {
	fp := d.fast()
	if fp == nil || hostIndex == 0 {
		return
	}
	if err := fp.Detach(hostIndex); err != nil {
		slog.Warn("overlay: bridge bypass", "network", n.Name, "err", err)
	}
	if len(mac) != 6 {
		return
	}
	if idx, peer, ok, err := fp.Dest(n.VNI, mac); err == nil && ok && peer && idx == hostIndex {
		if err := fp.DelDest(n.VNI, mac); err != nil {
			slog.Warn("overlay: bridge bypass", "network", n.Name, "err", err)
		}
	}
}

// bypassPeer sends frames for a remote endpoint's MAC out of the device,
// attaching the device first if it is not (a device replaced since).
func (d *Driver) bypassPeer(n *driver.Network, vx netlink.Link, p Peer) {
	fp := d.fast()
	if fp == nil {
		return
	}
	idx := vx.Attrs().Index
	t := d.tunnel(n, vx, p.VTEP)
	if !fp.Attached(idx) {
		if err := fp.Attach(idx, n.VNI); err != nil {
			slog.Warn("overlay: bridge bypass", "network", n.Name, "err", err)
			_ = fp.DelDest(n.VNI, p.MAC) // no entry naming an older device: the bridge carries it
			return
		}
		d.decapOn(fp, n, t)
		d.fol.track(n, vx)
	}
	if err := fp.SetRemote(n.VNI, p.MAC, idx, t); err != nil {
		slog.Warn("overlay: bridge bypass", "network", n.Name, "peer", p.String(), "err", err)
	}
}

// unbypassPeer forgets a remote endpoint's MAC unless a local sandbox has it now.
func (d *Driver) unbypassPeer(n *driver.Network, p Peer) {
	fp := d.fast()
	if fp == nil {
		return
	}
	if _, peer, ok, err := fp.Dest(n.VNI, p.MAC); err == nil && ok && !peer {
		if err := fp.DelDest(n.VNI, p.MAC); err != nil {
			slog.Warn("overlay: bridge bypass", "network", n.Name, "peer", p.String(), "err", err)
		}
	}
}

// Repair (driver.Repairer) runs for each endpoint of a live sandbox when
// the daemon starts. The overlay rebuilds nothing in place: an endpoint
// whose host end is on its bridge is put back on the bypass (whose links
// ended with the previous daemon); any other is left as it is. It never
// reports a repair.
func (d *Driver) Repair(ctx context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string, inside map[string]driver.SandboxLink) (bool, error) {
	if d.fast() == nil || ep.HostIfName == "" || len(ep.MAC) != 6 {
		return false, nil
	}
	h, err := d.handle()
	if err != nil {
		return false, err
	}
	defer d.release(h)
	l, err := h.LinkByName(ep.HostIfName)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return false, nil
		}
		return false, fmt.Errorf("find %q: %w", ep.HostIfName, err)
	}
	if l.Attrs().Alias != driver.LinkMarker(ep.ID) {
		return false, nil
	}
	br, err := d.bridgeOf(h, n, false)
	if err != nil {
		return false, err
	}
	if l.Attrs().MasterIndex == br.index {
		d.bypassEndpoint(n, l, ep.MAC)
	}
	return false, nil
}

var _ driver.Repairer = (*Driver)(nil)
