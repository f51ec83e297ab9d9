package overlay

// Offloads: the datapath choices made for throughput, each measured knob by
// knob against the underlay in bench/overlay/throughput_test.go (scenario
// overlay-tput; docs/overlay.md, "Throughput").
//
// Outer UDP checksum. Over an IPv4 underlay the VXLAN device is made with
// a zero outer UDP checksum (`ip link add ... type vxlan ... noudpcsum`),
// as RFC 7348 (section 5) recommends; the kernel's default is to compute
// it. The inner frame's own IP, TCP and UDP checksums still protect the
// payload end to end, and the outer IPv4 header has its checksum. What the
// zero checksum saves: a NIC that can segment VXLAN (tx-udp_tnl-segmentation)
// but not VXLAN with an outer checksum (no tx-udp_tnl-csum-segmentation) makes
// the kernel segment and checksum every TCP super-packet in software before
// the NIC, which cost most of the overlay's throughput in the bench; and a
// receiver whose NIC does not validate the outer checksum skips computing
// it. IPv6 underlays keep the checksum (a zero one needs udp6zerocsumtx and
// udp6zerocsumrx on every host, RFC 6935).
//
// vishvananda/netlink sends IFLA_VXLAN_UDP_CSUM only when it is true, and
// the kernel refuses to change it on an existing device, so a device with
// the zero checksum is made by a hand-built RTM_NEWLINK (addVxlan). An
// existing device made with the checksum (by an older Tether) is kept as it
// is: recreating it would drop its traffic for a moment, and it works.

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	tns "github.com/tether-net/tether/internal/netns"
)

// zeroUDPCsum reports whether n's VXLAN device sends a zero outer UDP
// checksum: over an IPv4 underlay.
func zeroUDPCsum(n *driver.Network) bool { return !isIPv6(n.VTEP) }

// addVxlan creates the VXLAN device v: with a zero outer UDP checksum when
// zeroCsum (IPv4 VTEPs only), else through the netlink library.
func (d *Driver) addVxlan(h *netlink.Handle, v *netlink.Vxlan, zeroCsum bool) error {
	if !zeroCsum {
		return h.LinkAdd(v)
	}
	req, err := vxlanRequest(v)
	if err != nil {
		return err
	}
	exec := func() error {
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	}
	if d.ns == "" {
		return exec()
	}
	return tns.Do(d.ns, exec)
}

// vxlanRequest is the RTM_NEWLINK request for the VXLAN device v (IPv4
// source) with IFLA_VXLAN_UDP_CSUM 0: equivalent to `ip link add NAME mtu
// M type vxlan id VNI dev LINK local SRC dstport PORT nolearning proxy
// noudpcsum`.
func vxlanRequest(v *netlink.Vxlan) (*nl.NetlinkRequest, error) {
	src := v.SrcAddr.To4()
	if src == nil {
		return nil, fmt.Errorf("vxlan %q: zero UDP checksum needs an IPv4 source, not %v: %w", v.Name, v.SrcAddr, ErrInvalid)
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(v.Name)))
	if v.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(v.MTU))))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("vxlan"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_VXLAN_ID, nl.Uint32Attr(uint32(v.VxlanId)))
	if v.VtepDevIndex != 0 {
		data.AddRtAttr(nl.IFLA_VXLAN_LINK, nl.Uint32Attr(uint32(v.VtepDevIndex)))
	}
	data.AddRtAttr(nl.IFLA_VXLAN_LOCAL, []byte(src))
	data.AddRtAttr(nl.IFLA_VXLAN_LEARNING, boolByte(v.Learning))
	data.AddRtAttr(nl.IFLA_VXLAN_PROXY, boolByte(v.Proxy))
	port := make([]byte, 2)
	port[0], port[1] = byte(v.Port>>8), byte(v.Port) // network byte order
	data.AddRtAttr(nl.IFLA_VXLAN_PORT, port)
	data.AddRtAttr(nl.IFLA_VXLAN_UDP_CSUM, boolByte(false))
	req.AddData(info)
	return req, nil
}

func boolByte(b bool) []byte {
	if b {
		return []byte{1}
	}
	return []byte{0}
}
