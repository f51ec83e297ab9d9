package ipv6

// The dual-stack raw floor: bench/attach's floor (attach.Floor) with the
// least a dual-stack endpoint needs from the kernel added, to price what
// IPv6 costs an attach when nothing but netlink requests is issued.
//
// Layout: a "host" network namespace (created by the caller) holding a
// bridge "fbr6" with 10.124.0.1/16 and fd00:124::1/64 (IPv6 on, no router
// advertisements taken, no DAD); host ends of the veths born with IPv6 off
// (the host namespace's conf/default/disable_ipv6=1 set before anything is
// created), as Tether has them. Per sandbox, the IPv4 floor's steps, plus:
// while the new namespace is entered anyway (its creation), its
// conf/default gets accept_ra=0, accept_dad=0, disable_ipv6=0, so eth0 is
// born with IPv6 on, static only (the kernel's own link-local, no DAD); then
// its IPv6 address (IFA_F_NODAD) and an IPv6 default route. Tether's bridge
// driver reaches the same state another way (namespace default IPv6 off, then
// per link addrgenmode none and the three sysctls in a second visit of the
// namespace, two addresses): the floor takes the cheapest way there.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/bench/attach"
)

// Floor6 is a host namespace with a dual-stack bridge, driven by raw netlink.
type Floor6 struct {
	hostNS vnetns.NsHandle
	h      *netlink.Handle // bound to the host namespace
	bridge netlink.Link
	dir    string // private bind mount holding the sandboxes' namespace files
}

// Floor6Sandbox is one sandbox attached by Floor6.
type Floor6Sandbox struct {
	Path  string
	Addr  netip.Addr
	Addr6 netip.Addr
	h     *netlink.Handle // bound to the sandbox namespace
	eth   netlink.Link
}

// The dual-stack floor's subnets and gateways.
var (
	floorGW  = netip.MustParseAddr("10.124.0.1")
	floorGW6 = netip.MustParseAddr("fd00:124::1")
)

// StepIPv6 is Floor6's last step, after bench/attach's four (the first of
// which also writes the namespace's IPv6 defaults here).
const StepIPv6 = "IPv6 address (nodad), IPv6 default route"

// Floor6Steps lists Floor6's steps in order.
var Floor6Steps = []string{attach.StepNS + " (+ IPv6 defaults)", attach.StepVeth, attach.StepHost, attach.StepInside, StepIPv6}

// NewFloor6 prepares the floor in the network namespace at hostNSPath and
// makes dir (created) a private bind mount for namespace files.
func NewFloor6(hostNSPath, dir string) (_ *Floor6, err error) {
	f := &Floor6{dir: dir}
	if f.hostNS, err = vnetns.GetFromPath(hostNSPath); err != nil {
		return nil, fmt.Errorf("open host namespace %q: %w", hostNSPath, err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	err = attach.InNS(f.hostNS, func() error {
		if err := sysctls("default", "disable_ipv6", "1"); err != nil {
			return err
		}
		var err error
		f.h, err = netlink.NewHandle()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("floor host namespace: %w", err)
	}
	if err := f.newBridge(); err != nil {
		return nil, err
	}
	return f, attach.PrivateDir(dir)
}

// newBridge: `ip link add fbr6 type bridge`, IPv6 on for static addresses
// only, its two gateway addresses, up.
func (f *Floor6) newBridge() error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "fbr6", MTU: 1500}}
	if err := f.h.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge: %w", err)
	}
	f.bridge = br
	err := attach.InNS(f.hostNS, func() error { return sysctls("fbr6", "accept_ra", "0", "accept_dad", "0", "disable_ipv6", "0") })
	if err != nil {
		return fmt.Errorf("bridge IPv6 on: %w", err)
	}
	for _, a := range []*netlink.Addr{addr(netip.PrefixFrom(floorGW, 16)), addr(netip.PrefixFrom(floorGW6, 64))} {
		if err := f.h.AddrAdd(br, a); err != nil {
			return fmt.Errorf("bridge address %s: %w", a.IPNet, err)
		}
	}
	if err := f.h.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge up: %w", err)
	}
	return nil
}

// Close deletes the bridge, unmounts the namespace directory and closes the
// handles.
func (f *Floor6) Close() error {
	var errs []error
	if f.h != nil {
		if f.bridge != nil {
			if err := f.h.LinkDel(f.bridge); err != nil {
				errs = append(errs, fmt.Errorf("delete bridge: %w", err))
			}
		}
		f.h.Close()
	}
	if err := attach.UnmountDir(f.dir); err != nil {
		errs = append(errs, err)
	}
	if f.hostNS.IsOpen() {
		f.hostNS.Close()
	}
	return errors.Join(errs...)
}

// Attach creates sandbox i and attaches it to the bridge with both
// families; it returns the time of each step (Floor6Steps order).
func (f *Floor6) Attach(i int) (*Floor6Sandbox, [5]time.Duration, error) {
	var steps [5]time.Duration
	a4, a6 := floorGW.As4(), floorGW6.As16()
	a4[2], a4[3] = byte((i+2)>>8), byte(i+2)
	a6[14], a6[15] = byte((i+2)>>8), byte(i+2)
	sb := &Floor6Sandbox{Path: filepath.Join(f.dir, fmt.Sprintf("s%d", i)), Addr: netip.AddrFrom4(a4), Addr6: netip.AddrFrom16(a6)}
	peerName := fmt.Sprintf("fw%d", i)

	t := time.Now()
	err := attach.CreateNS(sb.Path, func() error {
		if err := sysctls("default", "accept_ra", "0", "accept_dad", "0", "disable_ipv6", "0"); err != nil {
			return err
		}
		var err error
		sb.h, err = netlink.NewHandle()
		return err
	})
	if err != nil {
		return nil, steps, err
	}
	steps[0], t = lap(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: peerName,
		PeerNamespace: netlink.NsFd(int(f.hostNS))}
	if err := sb.h.LinkAdd(veth); err != nil {
		return sb, steps, fmt.Errorf("veth %d: %w", i, err)
	}
	sb.eth = veth
	steps[1], t = lap(t)
	if err := f.enslave(peerName); err != nil {
		return sb, steps, err
	}
	steps[2], t = lap(t)
	if err := sb.inside(); err != nil {
		return sb, steps, err
	}
	steps[3], t = lap(t)
	if err := sb.h.AddrAdd(veth, addr(netip.PrefixFrom(sb.Addr6, 64))); err != nil {
		return sb, steps, fmt.Errorf("IPv6 address %d: %w", i, err)
	}
	if err := sb.h.RouteAdd(&netlink.Route{LinkIndex: veth.Index, Gw: floorGW6.AsSlice()}); err != nil {
		return sb, steps, fmt.Errorf("IPv6 default route %d: %w", i, err)
	}
	steps[4], _ = lap(t)
	return sb, steps, nil
}

// enslave looks the host end up (its index changed in the move), puts it on
// the bridge and brings it up.
func (f *Floor6) enslave(name string) error {
	peer, err := f.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := f.h.LinkSetMasterByIndex(peer, f.bridge.Attrs().Index); err != nil {
		return fmt.Errorf("enslave %s: %w", name, err)
	}
	if err := f.h.LinkSetUp(peer); err != nil {
		return fmt.Errorf("up %s: %w", name, err)
	}
	return nil
}

// inside is the IPv4 floor's last step: address, eth0 and lo up, default
// route.
func (sb *Floor6Sandbox) inside() error {
	if err := sb.h.AddrAdd(sb.eth, addr(netip.PrefixFrom(sb.Addr, 16))); err != nil {
		return fmt.Errorf("address %s: %w", sb.Addr, err)
	}
	if err := sb.h.LinkSetUp(sb.eth); err != nil {
		return fmt.Errorf("eth0 up in %s: %w", sb.Path, err)
	}
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Index: 1}}
	if err := sb.h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up in %s: %w", sb.Path, err)
	}
	if err := sb.h.RouteAdd(&netlink.Route{LinkIndex: sb.eth.Attrs().Index, Gw: floorGW.AsSlice()}); err != nil {
		return fmt.Errorf("default route in %s: %w", sb.Path, err)
	}
	return nil
}

// Remove deletes the sandbox's veth pair (from the sandbox end, as
// attach.Floor does) and its namespace file.
func (f *Floor6) Remove(sb *Floor6Sandbox) error {
	var errs []error
	if sb.h != nil && sb.eth != nil {
		if err := sb.h.LinkDel(sb.eth); err != nil {
			errs = append(errs, fmt.Errorf("delete eth0 of %s: %w", sb.Path, err))
		}
	}
	if sb.h != nil {
		sb.h.Close()
	}
	if err := attach.RemoveNS(sb.Path); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sysctls writes net.ipv6.conf.LINK.KEY=VALUE for each pair, in order, in
// the namespace of the calling thread.
func sysctls(link string, kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		p := "/proc/sys/net/ipv6/conf/" + link + "/" + kv[i]
		if err := os.WriteFile(p, []byte(kv[i+1]), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", p, err)
		}
	}
	return nil
}

// addr is p as a netlink address; IPv6 ones with DAD off.
func addr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func lap(t time.Time) (time.Duration, time.Time) {
	now := time.Now()
	return now.Sub(t), now
}
