package overlay

// The bypass's remote entries follow the VXLAN devices' FDB, whoever
// changes it. Since the bypass encapsulates by itself (docs/overlay.md,
// "VXLAN in BPF"), its map is a second forwarding table for remote
// endpoints: an FDB entry deleted or replaced by hand (or by a crash
// between two writes) must change where the program sends frames too, or
// it would reach a MAC the device no longer does, and `tether doctor`'s
// findings (which read the FDB) would not describe the datapath. The
// driver's own AddPeer and RemovePeers also update the map directly, so
// an attach does not wait for the event.
//
// Events are applied in the kernel's order, so after the last one the map
// matches the FDB; an overflowed subscription resubscribes and rereads
// every device's FDB.

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/fastpath"
)

// vxTunnel is what the follower needs to know of a network's VXLAN device.
type vxTunnel struct {
	net *driver.Network
	vx  netlink.Link
}

// follower applies FDB events of the known VXLAN devices to the bypass.
type follower struct {
	d    *Driver
	fp   *fastpath.Path
	mu   sync.Mutex
	devs map[int]vxTunnel // VXLAN device index -> its network
	stop chan struct{}    // closed by the driver's Close

	closeOnce sync.Once
}

// track makes the follower apply the FDB events of n's device vx.
func (f *follower) track(n *driver.Network, vx netlink.Link) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for idx, t := range f.devs { // a replaced device
		if t.net.VNI == n.VNI && idx != vx.Attrs().Index {
			delete(f.devs, idx)
		}
	}
	f.devs[vx.Attrs().Index] = vxTunnel{net: n, vx: vx}
}

// untrack forgets n's device.
func (f *follower) untrack(n *driver.Network) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for idx, t := range f.devs {
		if t.net.VNI == n.VNI {
			delete(f.devs, idx)
		}
	}
}

// start subscribes to the namespace's neighbour events (which carry the
// bridge family's FDB changes) until Close.
func (f *follower) start() error {
	ch := make(chan netlink.NeighUpdate, 1024)
	opts := netlink.NeighSubscribeOptions{ErrorCallback: func(err error) {
		slog.Debug("overlay: FDB events", "err", err)
	}}
	if f.d.ns != "" {
		h, err := netns.GetFromPath(f.d.ns)
		if err != nil {
			return err
		}
		defer h.Close() // the subscription's socket keeps the namespace
		opts.Namespace = &h
	}
	if err := netlink.NeighSubscribeWithOptions(ch, f.stop, opts); err != nil {
		return err
	}
	go func() {
		for u := range ch {
			f.apply(u)
		}
		select {
		case <-f.stop:
			return
		default:
		}
		// The subscription failed (e.g. its socket overflowed): events
		// were lost, so subscribe again and read every FDB.
		for {
			if err := f.start(); err == nil {
				break
			}
			select {
			case <-f.stop:
				return
			case <-time.After(time.Second):
			}
		}
		f.resync()
	}()
	return nil
}

func (f *follower) apply(u netlink.NeighUpdate) {
	e := &u.Neigh
	if e.Family != unix.AF_BRIDGE || !unicastRemote(e) {
		return
	}
	f.mu.Lock()
	t, ok := f.devs[e.LinkIndex]
	f.mu.Unlock()
	if !ok {
		return
	}
	vtep, _ := netip.AddrFromSlice(e.IP)
	vtep = vtep.Unmap()
	cur, has, err := f.fp.Lookup(t.net.VNI, e.HardwareAddr)
	if err != nil || (has && cur.Peer) {
		return // a local sandbox has this MAC now: its entry stays
	}
	switch u.Type {
	case unix.RTM_NEWNEIGH:
		f.setRemote(t, e.HardwareAddr, vtep)
	case unix.RTM_DELNEIGH:
		if has && (!cur.Remote.IsValid() || cur.Remote == vtep) {
			if err := f.fp.DelDest(t.net.VNI, e.HardwareAddr); err != nil {
				slog.Warn("overlay: bridge bypass", "network", t.net.Name, "err", err)
			}
		}
	}
}

func (f *follower) setRemote(t vxTunnel, mac net.HardwareAddr, vtep netip.Addr) {
	if err := f.fp.SetRemote(t.net.VNI, mac, t.vx.Attrs().Index, f.d.tunnel(t.net, t.vx, vtep)); err != nil {
		slog.Warn("overlay: bridge bypass", "network", t.net.Name, "err", err)
	}
}

// resync makes every tracked network's remote entries its device's FDB.
func (f *follower) resync() {
	f.mu.Lock()
	devs := make([]vxTunnel, 0, len(f.devs))
	for _, t := range f.devs {
		devs = append(devs, t)
	}
	f.mu.Unlock()
	h, err := f.d.handle()
	if err != nil {
		slog.Warn("overlay: bridge bypass: reread the FDB", "err", err)
		return
	}
	defer f.d.release(h)
	for _, t := range devs {
		fdb, err := f.d.fdbEntries(h, t.vx)
		if err != nil {
			slog.Warn("overlay: bridge bypass: reread the FDB", "network", t.net.Name, "err", err)
			continue
		}
		have := map[string]bool{}
		for _, e := range fdb {
			have[string(e.HardwareAddr)] = true
			if cur, ok, err := f.fp.Lookup(t.net.VNI, e.HardwareAddr); err == nil && !(ok && cur.Peer) {
				vtep, _ := netip.AddrFromSlice(e.IP)
				f.setRemote(t, e.HardwareAddr, vtep.Unmap())
			}
		}
		for _, mac := range f.fp.MACs(t.net.VNI) {
			if cur, ok, err := f.fp.Lookup(t.net.VNI, mac); err == nil && ok && !cur.Peer && !have[string(mac)] {
				_ = f.fp.DelDest(t.net.VNI, mac)
			}
		}
	}
}
