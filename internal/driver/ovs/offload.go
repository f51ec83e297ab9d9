package ovs

// Checksum offload on the userspace datapath. A veth has transmit checksum
// offload on by default: a TCP or UDP packet the sandbox sends leaves its
// veth end with only the pseudo-header sum in the checksum field
// (CHECKSUM_PARTIAL), the device being trusted to finish it. Across a Linux
// bridge or the kernel datapath the packet keeps that mark and the
// receiver's stack accepts it. The userspace datapath reads the frame from
// the host end through a packet socket and writes it out (to another veth,
// or to the gateway's tap device) as plain bytes, the checksum still
// partial: the receiver counts a checksum error (TcpInCsumErrors) and drops
// it. ICMP, whose checksum is always computed in software, gets through;
// TCP does not, in any direction. With offload off on the pair the kernel
// computes every checksum before the frame leaves. (The gateway's tap
// device has no offload unless ovs-vswitchd turns it on, with
// other_config:userspace-tso-enable, and then it hands checksums over in
// virtio-net headers: nothing to do there.)

import (
	"context"
	"fmt"

	"github.com/tether-net/tether/internal/driver"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
	"github.com/tether-net/tether/internal/ovsdb"
)

// userspaceDatapath reports whether the OVS bridge runs on the userspace
// datapath (datapath_type=netdev). A missing bridge is not.
func userspaceDatapath(ctx context.Context, c *ovsdb.Client, bridge string) (bool, error) {
	b, err := c.FindBridge(ctx, bridge)
	if err != nil {
		return false, fmt.Errorf("OVS bridge %q: %w", bridge, err)
	}
	return b != nil && b.DatapathType == "netdev", nil
}

// checksumOffloadOff turns transmit checksum offload off on both ends of
// the endpoint's veth pair when the network's bridge is on the userspace
// datapath; equivalent to
//
//	ip netns exec SANDBOX ethtool -K IFNAME tx off; ethtool -K tvoXXXX tx off
//
// It reports whether it changed anything (an end had it on).
func (d *Driver) checksumOffloadOff(ctx context.Context, c *ovsdb.Client, o options, ep *driver.Endpoint, nsPath string) (bool, error) {
	userspace, err := userspaceDatapath(ctx, c, o.bridge)
	if err != nil || !userspace {
		return false, err
	}
	sb, err := txChecksumOff(nsPath, ep.IfName)
	if err != nil {
		return false, fmt.Errorf("sandbox end: %w", err)
	}
	host, err := txChecksumOff(d.ns, ep.HostIfName)
	if err != nil {
		return false, fmt.Errorf("host end: %w", err)
	}
	return sb || host, nil
}

// txChecksumOff turns the link's transmit checksum offload off, in the
// namespace at nsPath ("": the current one), unless it is off; it reports
// whether it was on.
func txChecksumOff(nsPath, name string) (bool, error) {
	var was bool
	fn := func() error {
		on, err := nlutil.TxChecksum(name)
		if err != nil || !on {
			return err
		}
		was = true
		return nlutil.SetTxChecksum(name, false)
	}
	var err error
	if nsPath == "" {
		err = fn()
	} else {
		err = tns.Do(nsPath, fn)
	}
	return was, err
}
