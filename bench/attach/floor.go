package attach

// The raw floor: what attaching a fresh namespace to a bridge costs the
// kernel when nothing but the needed netlink requests is issued.
//
// Layout: a "host" network namespace (created by the caller) holding a bridge
// with 10.124.0.1/16 and an address of its own; per sandbox a namespace file under a private
// bind-mounted directory, a veth created from inside the sandbox with its
// peer placed directly in the host namespace, the peer enslaved and up, and
// the sandbox end addressed, up, with lo up and a default route. IPv6 is off
// on both veth ends, as Tether has it: the host namespace's
// conf/default/disable_ipv6 is set once before the bridge exists, and each
// sandbox's while the new namespace is entered anyway, so the ends are born
// without it and no per-attach sysctl is needed. No store, no records, no
// lookups beyond the one a moved peer needs (its index changed).

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Floor is a host namespace with a bridge, driven by raw netlink.
type Floor struct {
	hostNS vnetns.NsHandle
	h      *netlink.Handle // bound to the host namespace
	bridge netlink.Link
	dir    string // private bind mount holding the sandboxes' namespace files
	subnet netip.Prefix
	gw     netip.Addr
}

// FloorSandbox is one sandbox attached by the floor.
type FloorSandbox struct {
	Path string
	Addr netip.Prefix
	h    *netlink.Handle // bound to the sandbox namespace
	eth  netlink.Link
	peer netlink.Link
}

// Floor step names, in order.
const (
	StepNS     = "netns create+bind, handle"
	StepVeth   = "veth in sandbox, peer in host"
	StepHost   = "host end: lookup, master, up"
	StepInside = "addr, up, lo up, default route"
)

// FloorSteps lists the floor's steps in order.
var FloorSteps = []string{StepNS, StepVeth, StepHost, StepInside}

// NewFloor prepares the floor in the network namespace at hostNSPath: a
// bridge "fbr0" with 10.124.0.1/16, and dir (created) as a private bind mount
// for namespace files.
func NewFloor(hostNSPath, dir string) (_ *Floor, err error) {
	f := &Floor{dir: dir, subnet: netip.MustParsePrefix("10.124.0.0/16"), gw: netip.MustParseAddr("10.124.0.1")}
	if f.hostNS, err = vnetns.GetFromPath(hostNSPath); err != nil {
		return nil, fmt.Errorf("open host namespace %q: %w", hostNSPath, err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	err = InNS(f.hostNS, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0o644); err != nil {
			return err
		}
		var err error
		f.h, err = netlink.NewHandle()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("floor host namespace: %w", err)
	}
	// An address of its own, as Tether's bridges (bridge.BridgeMAC) and
	// Docker's have: without one the kernel rescans every port for the
	// lowest address on each join, work that grows with the bridge.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "fbr0", MTU: 1500, HardwareAddr: net.HardwareAddr{0x02, 0x74, 0x66, 0x6c, 0x6f, 0x72}}}
	if err := f.h.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("create bridge: %w", err)
	}
	f.bridge = br
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: f.gw.AsSlice(), Mask: net.CIDRMask(16, 32)}}
	if err := f.h.AddrAdd(br, gw); err != nil {
		return nil, fmt.Errorf("bridge address: %w", err)
	}
	if err := f.h.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bridge up: %w", err)
	}
	if err := PrivateDir(dir); err != nil {
		return nil, err
	}
	return f, nil
}

// Close deletes the bridge, unmounts the namespace directory (lazily, which
// also detaches any namespace file left in it) and closes the handles.
func (f *Floor) Close() error {
	var errs []error
	if f.h != nil {
		if f.bridge != nil {
			if err := f.h.LinkDel(f.bridge); err != nil {
				errs = append(errs, fmt.Errorf("delete bridge: %w", err))
			}
		}
		f.h.Close()
	}
	if err := UnmountDir(f.dir); err != nil {
		errs = append(errs, err)
	}
	if f.hostNS.IsOpen() {
		f.hostNS.Close()
	}
	return errors.Join(errs...)
}

// Attach creates sandbox i and attaches it to the bridge; it returns the time
// each step took (in FloorSteps order).
func (f *Floor) Attach(i int) (*FloorSandbox, [4]time.Duration, error) {
	var steps [4]time.Duration
	sb := f.sandboxFor(i)
	peerName := fmt.Sprintf("fv%d", i)

	t := time.Now()
	if err := f.newNS(sb); err != nil {
		return nil, steps, err
	}
	steps[0], t = lap(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: peerName,
		PeerNamespace: netlink.NsFd(int(f.hostNS))}
	if err := sb.h.LinkAdd(veth); err != nil { // fills veth's index (one lookup)
		return sb, steps, fmt.Errorf("veth %d: %w", i, err)
	}
	sb.eth = veth
	steps[1], t = lap(t)
	peer, err := f.h.LinkByName(peerName)
	if err != nil {
		return sb, steps, fmt.Errorf("find %s: %w", peerName, err)
	}
	sb.peer = peer
	if err := f.h.LinkSetMasterByIndex(peer, f.bridge.Attrs().Index); err != nil {
		return sb, steps, fmt.Errorf("enslave %s: %w", peerName, err)
	}
	if err := f.h.LinkSetUp(peer); err != nil {
		return sb, steps, fmt.Errorf("up %s: %w", peerName, err)
	}
	steps[2], t = lap(t)
	if err := f.configureInside(sb, veth, i); err != nil {
		return sb, steps, err
	}
	steps[3], _ = lap(t)
	return sb, steps, nil
}

// configureInside addresses the sandbox end, brings it and lo up and adds
// the default route, through the sandbox's handle.
func (f *Floor) configureInside(sb *FloorSandbox, veth netlink.Link, i int) error {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: sb.Addr.Addr().AsSlice(), Mask: net.CIDRMask(16, 32)}}
	if err := sb.h.AddrAdd(veth, a); err != nil {
		return fmt.Errorf("address %d: %w", i, err)
	}
	if err := sb.h.LinkSetUp(veth); err != nil {
		return fmt.Errorf("eth0 up %d: %w", i, err)
	}
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}
	if err := sb.h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up %d: %w", i, err)
	}
	if err := sb.h.RouteAdd(&netlink.Route{LinkIndex: veth.Attrs().Index, Gw: f.gw.AsSlice()}); err != nil {
		return fmt.Errorf("default route %d: %w", i, err)
	}
	return nil
}

// sandboxFor is sandbox i before it is made: its namespace file and address.
func (f *Floor) sandboxFor(i int) *FloorSandbox {
	base := f.subnet.Addr().As4()
	addr := netip.AddrFrom4([4]byte{base[0], base[1], byte((i + 2) >> 8), byte(i + 2)})
	return &FloorSandbox{Path: filepath.Join(f.dir, fmt.Sprintf("s%d", i)), Addr: netip.PrefixFrom(addr, 16)}
}

// newNS creates the sandbox namespace at sb.Path and opens a netlink handle
// inside it while there.
func (f *Floor) newNS(sb *FloorSandbox) error {
	return CreateNS(sb.Path, func() error {
		var err error
		sb.h, err = netlink.NewHandle()
		return err
	})
}

// CreateNS creates a network namespace and persists it at path (a new file,
// bind-mounted from the creating thread's namespace), turns IPv6 off for its
// future links, and runs inside (if not nil) while still in it, all in one
// visit on a fresh locked thread. Equivalent to `ip netns add` plus
// `sysctl net.ipv6.conf.default.disable_ipv6=1` in it. On failure nothing is
// left at path.
func CreateNS(path string, inside func() error) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return fmt.Errorf("create %q: %w", path, err)
	}
	unix.Close(fd)
	err = onFreshThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %q: %w", path, err)
		}
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0o644); err != nil {
			return err
		}
		if inside != nil {
			return inside()
		}
		return nil
	})
	if err != nil {
		_ = RemoveNS(path)
	}
	return err
}

// RemoveNS unmounts and deletes the namespace file at path; the kernel frees
// the namespace once nothing else holds it. Equivalent to `ip netns del`.
// A file already gone is not an error.
func RemoveNS(path string) error {
	var errs []error
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %q: %w", path, err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// PrivateDir creates dir and makes it a private bind mount of itself, so
// namespace files bound inside it neither propagate to nor from other mount
// points. Undo with UnmountDir.
func PrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %q: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		return fmt.Errorf("make %q private: %w", dir, err)
	}
	return nil
}

// UnmountDir lazily unmounts dir (which also detaches any namespace file
// still bound inside it). Not mounted is not an error.
func UnmountDir(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %q: %w", dir, err)
	}
	return nil
}

// Remove deletes the sandbox's veth pair and its namespace file. Equivalent
// to `ip -n sN link del eth0; ip netns del sN`. The pair is deleted from the
// sandbox end, through the sandbox's own handle: removals from several
// goroutines then go over separate netlink sockets and the kernel overlaps
// their waits (a device's unregister waits for RCU grace periods after the
// rtnl lock is released), where the host handle's one socket would queue
// them behind each other (~30 ms each). Deleting either end deletes both.
func (f *Floor) Remove(sb *FloorSandbox) error {
	var errs []error
	switch {
	case sb.h != nil && sb.eth != nil:
		if err := sb.h.LinkDel(sb.eth); err != nil {
			errs = append(errs, fmt.Errorf("delete eth0 of %s: %w", sb.Path, err))
		}
	case sb.peer != nil:
		if err := f.h.LinkDel(sb.peer); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", sb.peer.Attrs().Name, err))
		}
	}
	if sb.h != nil {
		sb.h.Close()
	}
	if err := RemoveNS(sb.Path); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Addrs lists the IPv4 addresses of the sandbox's eth0 (for checks).
func (sb *FloorSandbox) Addrs() ([]netip.Prefix, error) {
	l, err := sb.h.LinkByName("eth0")
	if err != nil {
		return nil, err
	}
	as, err := sb.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range as {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out, nil
}

// HostLinks lists the names of the links in the floor's host namespace.
func (f *Floor) HostLinks() ([]string, error) {
	ls, err := f.h.LinkList()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range ls {
		out = append(out, l.Attrs().Name)
	}
	return out, nil
}

func lap(t time.Time) (time.Duration, time.Time) {
	now := time.Now()
	return now.Sub(t), now
}

// InNS runs fn on a fresh locked thread inside the network namespace
// target; the thread goes back to its own namespace afterwards (or dies).
// Sockets opened and processes started by fn belong to target.
func InNS(target vnetns.NsHandle, fn func() error) error {
	return onFreshThread(func() error {
		if err := unix.Setns(int(target), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns: %w", err)
		}
		return fn()
	})
}

// onFreshThread runs fn on a new goroutine locked to a thread other than the
// main one, switches the thread back to its network namespace afterwards,
// and unlocks it only if that worked (otherwise the thread dies with the
// goroutine).
func onFreshThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			defer runtime.UnlockOSThread()
			errc <- onFreshThread(fn)
			return
		}
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("switch back (thread discarded): %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
