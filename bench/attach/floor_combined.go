package attach

// The floor in combined messages: the same kernel operations as Floor, in
// the fewest requests Tether's bridge driver knows (internal/nlutil.Conn):
// the pair created from the host side with its host end born enslaved (and
// dormant, VethPair.Dormant) and its sandbox end born in the sandbox (the
// kernel's echo gives the sandbox end's index), then the sandbox end's
// address, up, lo up and default
// route, then the host end up: six requests where Floor makes nine. It is
// the reference for what Tether's join saves by its message shapes alone
// (BenchmarkFloorMessages), not a replacement for Floor, against which
// the attach report's ratios have been measured from the start.

import (
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/nlutil"
)

// CombinedFloor is a Floor that attaches in combined messages.
type CombinedFloor struct {
	*Floor
	conn *nlutil.Conn // in the host namespace
}

// NewCombinedFloor is NewFloor plus a route socket in the host namespace.
func NewCombinedFloor(hostNSPath, dir string) (*CombinedFloor, error) {
	f, err := NewFloor(hostNSPath, dir)
	if err != nil {
		return nil, err
	}
	c, err := nlutil.OpenConn(hostNSPath)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &CombinedFloor{Floor: f, conn: c}, nil
}

// Close closes the socket and the Floor.
func (f *CombinedFloor) Close() error {
	f.conn.Close()
	return f.Floor.Close()
}

// Attach creates sandbox i and attaches it (FloorSteps order; the host
// step is the final up).
func (f *CombinedFloor) Attach(i int) (*FloorSandbox, [4]time.Duration, error) {
	var steps [4]time.Duration
	sb := f.sandboxFor(i)
	peerName := fmt.Sprintf("fv%d", i)

	t := time.Now()
	if err := f.newNS(sb); err != nil {
		return nil, steps, err
	}
	steps[0], t = lap(t)
	nsfd, err := unix.Open(sb.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return sb, steps, err
	}
	idx, err := f.conn.AddVethPair(nlutil.VethPair{Name: peerName, MTU: 1500, Master: f.bridge.Attrs().Index, Peer: "eth0", PeerNS: nsfd, Dormant: true})
	unix.Close(nsfd)
	if err != nil {
		return sb, steps, fmt.Errorf("veth %d: %w", i, err)
	}
	if idx == 0 {
		return sb, steps, fmt.Errorf("veth %d: the kernel did not echo the new link", i)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", Index: idx}}
	sb.eth = veth
	steps[1], t = lap(t)
	if err := f.configureInside(sb, veth, i); err != nil {
		return sb, steps, err
	}
	steps[3], t = lap(t)
	if err := f.conn.ChangeLink(peerName, nlutil.LinkChange{Up: true}); err != nil {
		return sb, steps, fmt.Errorf("up %s: %w", peerName, err)
	}
	steps[2], _ = lap(t)
	return sb, steps, nil
}
