package drivers

// The raw floor of a point-to-point link: what joining two existing network
// namespaces with a veth pair costs the kernel when nothing but the needed
// netlink requests is issued, to price `POST /tether/v1/links` like for like
// (bench/attach's floor does the same for a bridge attach).
//
// Layout, per pair: two namespace files under a private bind-mounted
// directory, both born with IPv6 off for new links (attach.CreateNS), made
// before the timing starts (the link joins sandboxes that exist). Timed: one
// request from A's namespace makes the veth p2p0 with its peer p2p0 placed
// directly in B's (as internal/driver/link does), B's end looked up (it has a
// new index there), then on each end a /32 address, up, and a host route to
// the other end (scope link). No store, no records, no alias marks, no
// checks of what is there already.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/tether-net/tether/bench/attach"
)

// Link floor step names, in order.
const (
	StepPair   = "veth from A, peer in B"
	StepLookup = "B's end: lookup"
	StepConfig = "both ends: /32 address, up, host route"
)

// LinkFloorSteps lists the link floor's timed steps in order.
var LinkFloorSteps = []string{StepPair, StepLookup, StepConfig}

// linkFloorBase is the first address of the floor's links: pair i gets
// base+2i (A) and base+2i+1 (B), a /31 as the daemon's link-pool hands out.
var linkFloorBase = netip.MustParseAddr("10.252.0.0")

// LinkFloor makes point-to-point links between namespaces it creates.
type LinkFloor struct {
	dir string // private bind mount holding the namespace files
}

// LinkPair is two namespaces, linked once Link has run.
type LinkPair struct {
	A, B         string // namespace files
	AddrA, AddrB netip.Addr
	nsB          vnetns.NsHandle
	ha, hb       *netlink.Handle // bound to A's and B's namespaces
	endA         netlink.Link
}

// NewLinkFloor makes dir (created) a private bind mount for namespace files.
func NewLinkFloor(dir string) (*LinkFloor, error) {
	if err := attach.PrivateDir(dir); err != nil {
		return nil, err
	}
	return &LinkFloor{dir: dir}, nil
}

// Close unmounts the namespace directory (lazily: any namespace file left
// in it goes too).
func (f *LinkFloor) Close() error { return attach.UnmountDir(f.dir) }

// Prepare creates pair i's two namespaces, each with a netlink handle bound
// to it (not timed: a link joins sandboxes that exist).
func (f *LinkFloor) Prepare(i int) (_ *LinkPair, err error) {
	if i < 0 || i >= 1<<15 {
		return nil, fmt.Errorf("pair %d: out of the floor's address range", i)
	}
	a4 := linkFloorBase.As4()
	a4[2], a4[3] = byte(2*i>>8), byte(2*i)
	p := &LinkPair{A: filepath.Join(f.dir, fmt.Sprintf("a%d", i)), B: filepath.Join(f.dir, fmt.Sprintf("b%d", i)),
		AddrA: netip.AddrFrom4(a4), nsB: vnetns.None()}
	p.AddrB = p.AddrA.Next()
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Remove(p))
		}
	}()
	if err := attach.CreateNS(p.A, func() error { return newHandle(&p.ha) }); err != nil {
		return p, fmt.Errorf("namespace %s: %w", p.A, err)
	}
	if err := attach.CreateNS(p.B, func() error { return newHandle(&p.hb) }); err != nil {
		return p, fmt.Errorf("namespace %s: %w", p.B, err)
	}
	if p.nsB, err = vnetns.GetFromPath(p.B); err != nil {
		return p, fmt.Errorf("open %s: %w", p.B, err)
	}
	return p, nil
}

func newHandle(h **netlink.Handle) error {
	var err error
	*h, err = netlink.NewHandle()
	return err
}

// Link joins the pair's namespaces: equivalent to
//
//	ip -n A link add p2p0 type veth peer name p2p0 netns B
//	ip -n A addr add ADDR_A/32 dev p2p0; ip -n A link set p2p0 up
//	ip -n B addr add ADDR_B/32 dev p2p0; ip -n B link set p2p0 up
//	ip -n A route add ADDR_B/32 dev p2p0 scope link
//	ip -n B route add ADDR_A/32 dev p2p0 scope link
//
// It returns the time of each step (LinkFloorSteps order).
func (f *LinkFloor) Link(p *LinkPair) ([3]time.Duration, error) {
	var steps [3]time.Duration
	t := time.Now()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "p2p0", MTU: 1500}, PeerName: "p2p0",
		PeerNamespace: netlink.NsFd(int(p.nsB))}
	if err := p.ha.LinkAdd(veth); err != nil {
		return steps, fmt.Errorf("veth in %s: %w", p.A, err)
	}
	p.endA = veth
	steps[0], t = lap(t)
	endB, err := p.hb.LinkByName("p2p0")
	if err != nil {
		return steps, fmt.Errorf("find p2p0 in %s: %w", p.B, err)
	}
	steps[1], t = lap(t)
	if err := configure(p.ha, veth, p.AddrA, p.AddrB); err != nil {
		return steps, fmt.Errorf("%s: %w", p.A, err)
	}
	if err := configure(p.hb, endB, p.AddrB, p.AddrA); err != nil {
		return steps, fmt.Errorf("%s: %w", p.B, err)
	}
	steps[2], _ = lap(t)
	return steps, nil
}

// configure gives one end its /32 address, brings it up and routes the
// peer's address over it.
func configure(h *netlink.Handle, end netlink.Link, self, peer netip.Addr) error {
	if err := h.AddrAdd(end, &netlink.Addr{IPNet: host(self)}); err != nil {
		return fmt.Errorf("address %s: %w", self, err)
	}
	if err := h.LinkSetUp(end); err != nil {
		return fmt.Errorf("p2p0 up: %w", err)
	}
	r := &netlink.Route{LinkIndex: end.Attrs().Index, Dst: host(peer), Scope: netlink.SCOPE_LINK}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("route to %s: %w", peer, err)
	}
	return nil
}

func host(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}
}

// Remove deletes the pair's veth (from A's end; either end deletes both),
// closes the handles and removes both namespace files. Parts already gone
// are not errors.
func (f *LinkFloor) Remove(p *LinkPair) error {
	var errs []error
	if p.endA != nil {
		if err := p.ha.LinkDel(p.endA); err != nil {
			errs = append(errs, fmt.Errorf("delete p2p0 in %s: %w", p.A, err))
		}
		p.endA = nil
	}
	for _, h := range []*netlink.Handle{p.ha, p.hb} {
		if h != nil {
			h.Close()
		}
	}
	p.ha, p.hb = nil, nil
	if p.nsB.IsOpen() {
		p.nsB.Close()
		p.nsB = vnetns.None()
	}
	for _, path := range []string{p.A, p.B} {
		if err := attach.RemoveNS(path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func lap(t time.Time) (time.Duration, time.Time) {
	now := time.Now()
	return now.Sub(t), now
}
