package overlay

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
)

// attrs parses netlink attributes into a map by type.
func attrs(t *testing.T, b []byte) map[uint16][]byte {
	t.Helper()
	as, err := nl.ParseRouteAttr(b)
	if err != nil {
		t.Fatal(err)
	}
	m := map[uint16][]byte{}
	for _, a := range as {
		m[a.Attr.Type&^unix.NLA_F_NESTED] = a.Value
	}
	return m
}

// TestVxlanRequest: the hand-built RTM_NEWLINK carries the driver's VXLAN
// configuration and IFLA_VXLAN_UDP_CSUM 0.
func TestVxlanRequest(t *testing.T) {
	v := &netlink.Vxlan{LinkAttrs: linkAttrs("tvx-4096", 1450), VxlanId: 4096, VtepDevIndex: 7,
		SrcAddr: net.ParseIP("198.18.0.10"), Port: Port, Learning: false, Proxy: true}
	req, err := vxlanRequest(v)
	if err != nil {
		t.Fatal(err)
	}
	msg := req.Serialize()
	const hdr = unix.SizeofNlMsghdr + unix.SizeofIfInfomsg
	top := attrs(t, msg[hdr:])
	if got := string(bytes.TrimRight(top[unix.IFLA_IFNAME], "\x00")); got != "tvx-4096" {
		t.Errorf("IFLA_IFNAME = %q", got)
	}
	if got := nl.NativeEndian().Uint32(top[unix.IFLA_MTU]); got != 1450 {
		t.Errorf("IFLA_MTU = %d", got)
	}
	info := attrs(t, top[unix.IFLA_LINKINFO])
	if got := string(info[nl.IFLA_INFO_KIND]); got != "vxlan" {
		t.Errorf("IFLA_INFO_KIND = %q", got)
	}
	data := attrs(t, info[nl.IFLA_INFO_DATA])
	for _, c := range []struct {
		name string
		typ  uint16
		want []byte
	}{
		{"ID", nl.IFLA_VXLAN_ID, nl.Uint32Attr(4096)},
		{"LINK", nl.IFLA_VXLAN_LINK, nl.Uint32Attr(7)},
		{"LOCAL", nl.IFLA_VXLAN_LOCAL, []byte{198, 18, 0, 10}},
		{"LEARNING", nl.IFLA_VXLAN_LEARNING, []byte{0}},
		{"PROXY", nl.IFLA_VXLAN_PROXY, []byte{1}},
		{"PORT", nl.IFLA_VXLAN_PORT, []byte{0x12, 0xb5}}, // 4789, network order
		{"UDP_CSUM", nl.IFLA_VXLAN_UDP_CSUM, []byte{0}},
	} {
		if got, ok := data[c.typ]; !ok || !bytes.Equal(got, c.want) {
			t.Errorf("IFLA_VXLAN_%s = %v (present %v), want %v", c.name, got, ok, c.want)
		}
	}
	if f := nl.NativeEndian().Uint16(msg[6:8]); f&(unix.NLM_F_CREATE|unix.NLM_F_EXCL) != unix.NLM_F_CREATE|unix.NLM_F_EXCL {
		t.Errorf("flags %#x: not create-exclusive", f)
	}
}

func TestVxlanRequestIPv6(t *testing.T) {
	v := &netlink.Vxlan{LinkAttrs: linkAttrs("tvx-1", 1430), VxlanId: 1, SrcAddr: net.ParseIP("2001:db8::10"), Port: Port}
	if _, err := vxlanRequest(v); !errors.Is(err, ErrInvalid) {
		t.Errorf("IPv6 source: %v, want ErrInvalid", err)
	}
}

func TestZeroUDPCsum(t *testing.T) {
	for _, c := range []struct {
		vtep string
		want bool
	}{{"198.18.0.10", true}, {"2001:db8::10", false}} {
		n := &driver.Network{VTEP: netip.MustParseAddr(c.vtep)}
		if got := zeroUDPCsum(n); got != c.want {
			t.Errorf("zeroUDPCsum(VTEP %s) = %v, want %v", c.vtep, got, c.want)
		}
	}
}
