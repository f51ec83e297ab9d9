package overlay

// Tests of the pure logic; they run as any user.

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
)

func TestNames(t *testing.T) {
	for _, c := range []struct {
		vni        int
		br, vx     string
		wantLength int
	}{
		{1, "tov-1", "tvx-1", 5},
		{4096, "tov-4096", "tvx-4096", 8},
		{MaxVNI, "tov-16777215", "tvx-16777215", 12},
	} {
		if got := BridgeName(c.vni); got != c.br || len(got) != c.wantLength {
			t.Errorf("BridgeName(%d) = %q, want %q", c.vni, got, c.br)
		}
		if got := VxlanName(c.vni); got != c.vx || len(got) > 15 {
			t.Errorf("VxlanName(%d) = %q, want %q", c.vni, got, c.vx)
		}
	}
	if n := len(HostIfPrefix) + 8; n > 15 {
		t.Errorf("host veth names are %d characters", n)
	}
}

func TestNetworkOf(t *testing.T) {
	for _, c := range []struct {
		alias string
		id    string
		ok    bool
	}{
		{NetworkAlias("abc"), "abc", true},
		{"tether:overlay:", "", false},
		{"tether:abc", "", false},
		{"", "", false},
	} {
		if id, ok := NetworkOf(c.alias); id != c.id || ok != c.ok {
			t.Errorf("NetworkOf(%q) = %q, %v; want %q, %v", c.alias, id, ok, c.id, c.ok)
		}
	}
}

func TestOverlayMTU(t *testing.T) {
	for _, c := range []struct{ netMTU, underlay, want int }{
		{0, 1500, 1450},
		{1500, 1500, 1450}, // the engine's default MTU is capped
		{1400, 1500, 1400},
		{0, 9000, 8950},
		{9000, 9000, 8950},
	} {
		if got := OverlayMTU(&driver.Network{MTU: c.netMTU, VTEP: vtep}, c.underlay); got != c.want {
			t.Errorf("OverlayMTU(MTU %d, underlay %d) = %d, want %d", c.netMTU, c.underlay, got, c.want)
		}
	}
	// over an IPv6 underlay the outer header is 20 bytes longer
	if got := OverlayMTU(&driver.Network{VTEP: netip.MustParseAddr("2001:db8::1")}, 1500); got != 1430 {
		t.Errorf("OverlayMTU over an IPv6 underlay of 1500 = %d, want 1430", got)
	}
}

var (
	sub6  = netip.MustParsePrefix("fd00:1::/64")
	ip63  = netip.MustParseAddr("fd00:1::3")
	vtep  = netip.MustParseAddr("198.18.0.10")
	other = netip.MustParseAddr("198.18.0.11")
	ip3   = netip.MustParseAddr("10.0.0.3")
	mac3  = driver.MACFromIP(ip3)
)

func TestCheckNetwork(t *testing.T) {
	for _, c := range []struct {
		name string
		n    driver.Network
		ok   bool
	}{
		{"ok", driver.Network{VNI: 4096, VTEP: vtep}, true},
		{"largest VNI", driver.Network{VNI: MaxVNI, VTEP: vtep}, true},
		{"VNI 0", driver.Network{VNI: 0, VTEP: vtep}, false},
		{"VNI too large", driver.Network{VNI: MaxVNI + 1, VTEP: vtep}, false},
		{"no VTEP", driver.Network{VNI: 1}, false},
		{"IPv6 VTEP", driver.Network{VNI: 1, VTEP: netip.MustParseAddr("2001:db8::1")}, true},
		{"link-local IPv6 VTEP", driver.Network{VNI: 1, VTEP: netip.MustParseAddr("fe80::1")}, false},
		{"IPv4-mapped VTEP", driver.Network{VNI: 1, VTEP: netip.MustParseAddr("::ffff:198.18.0.10")}, false},
		{"dual stack", driver.Network{VNI: 1, VTEP: vtep, Subnet6: sub6, Gateway6: netip.MustParseAddr("fd00:1::1")}, true},
		{"dual stack without gateway6", driver.Network{VNI: 1, VTEP: vtep, Subnet6: sub6}, true},
		{"subnet6 IPv4", driver.Network{VNI: 1, VTEP: vtep, Subnet6: netip.MustParsePrefix("10.1.0.0/16")}, false},
		{"subnet6 IPv4-mapped", driver.Network{VNI: 1, VTEP: vtep, Subnet6: netip.MustParsePrefix("::ffff:10.1.0.0/112")}, false},
		{"gateway6 outside", driver.Network{VNI: 1, VTEP: vtep, Subnet6: sub6, Gateway6: netip.MustParseAddr("fd00:2::1")}, false},
	} {
		err := checkNetwork(&c.n)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: checkNetwork = %v", c.name, err)
		}
	}
}

func TestCheckPeer(t *testing.T) {
	n := &driver.Network{VNI: 1, VTEP: vtep}
	for _, c := range []struct {
		name string
		p    Peer
		ok   bool
	}{
		{"ok", Peer{IP: ip3, MAC: mac3, VTEP: other}, true},
		{"no IP", Peer{IP: netip.Addr{}, MAC: mac3, VTEP: other}, false},
		{"no MAC", Peer{IP: ip3, MAC: nil, VTEP: other}, false},
		{"multicast MAC", Peer{IP: ip3, MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, VTEP: other}, false},
		{"zero MAC", Peer{IP: ip3, MAC: make(net.HardwareAddr, 6), VTEP: other}, false},
		{"no VTEP", Peer{IP: ip3, MAC: mac3, VTEP: netip.Addr{}}, false},
		{"own VTEP", Peer{IP: ip3, MAC: mac3, VTEP: vtep}, false},
		{"IPv6 on an IPv4-only network", Peer{IP: ip3, IP6: ip63, MAC: mac3, VTEP: other}, false},
		{"IPv6 VTEP on an IPv4 underlay", Peer{IP: ip3, MAC: mac3, VTEP: netip.MustParseAddr("2001:db8::2")}, false},
	} {
		err := checkPeer(n, c.p)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: checkPeer = %v", c.name, err)
		}
	}
	v6u := &driver.Network{VNI: 1, VTEP: netip.MustParseAddr("2001:db8::1")}
	for _, c := range []struct {
		name string
		p    Peer
		ok   bool
	}{
		{"IPv6 VTEP", Peer{IP: ip3, MAC: mac3, VTEP: netip.MustParseAddr("2001:db8::2")}, true},
		{"IPv4 VTEP on an IPv6 underlay", Peer{IP: ip3, MAC: mac3, VTEP: other}, false},
		{"IPv4-mapped VTEP", Peer{IP: ip3, MAC: mac3, VTEP: netip.MustParseAddr("::ffff:198.18.0.11")}, false},
		{"own IPv6 VTEP", Peer{IP: ip3, MAC: mac3, VTEP: v6u.VTEP}, false},
	} {
		err := checkPeer(v6u, c.p)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: checkPeer = %v", c.name, err)
		}
	}
	n6 := &driver.Network{VNI: 1, VTEP: vtep, Subnet6: sub6}
	for _, c := range []struct {
		name string
		p    Peer
		ok   bool
	}{
		{"dual stack", Peer{IP: ip3, IP6: ip63, MAC: mac3, VTEP: other}, true},
		{"IPv4 only on a dual-stack network", Peer{IP: ip3, MAC: mac3, VTEP: other}, true},
		{"IPv6 only", Peer{IP6: ip63, MAC: mac3, VTEP: other}, true},
		{"no address", Peer{MAC: mac3, VTEP: other}, false},
		{"IP6 outside subnet6", Peer{IP: ip3, IP6: netip.MustParseAddr("fd00:2::3"), MAC: mac3, VTEP: other}, false},
		{"IP6 IPv4-mapped", Peer{IP: ip3, IP6: netip.MustParseAddr("::ffff:10.0.0.3"), MAC: mac3, VTEP: other}, false},
		{"IP6 IPv4", Peer{IP: ip3, IP6: ip3, MAC: mac3, VTEP: other}, false},
		{"IP IPv6", Peer{IP: ip63, IP6: ip63, MAC: mac3, VTEP: other}, false},
		{"IP6 with a zone", Peer{IP: ip3, IP6: ip63.WithZone("eth0"), MAC: mac3, VTEP: other}, false},
	} {
		err := checkPeer(n6, c.p)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: checkPeer = %v", c.name, err)
		}
	}
}

func TestMergePeers(t *testing.T) {
	ip2, ip62 := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00:1::2")
	mac2 := driver.MACFromIP(ip2)
	fdb := func(mac net.HardwareAddr, v netip.Addr) netlink.Neigh {
		return netlink.Neigh{Family: unix.AF_BRIDGE, HardwareAddr: mac, IP: v.AsSlice()}
	}
	neigh := func(ip netip.Addr, mac net.HardwareAddr) netlink.Neigh {
		return netlink.Neigh{Family: unix.AF_INET, HardwareAddr: mac, IP: ip.AsSlice()}
	}
	for _, c := range []struct {
		name  string
		fdb   []netlink.Neigh
		neigh []netlink.Neigh
		want  []Peer
	}{
		{"none", nil, nil, nil},
		{"complete, sorted", []netlink.Neigh{fdb(mac3, other), fdb(mac2, other)}, []netlink.Neigh{neigh(ip3, mac3), neigh(ip2, mac2)},
			[]Peer{{IP: ip2, MAC: mac2, VTEP: other}, {IP: ip3, MAC: mac3, VTEP: other}}},
		{"fdb only", []netlink.Neigh{fdb(mac3, other)}, nil, []Peer{{MAC: mac3, VTEP: other}}},
		{"neighbour only", nil, []netlink.Neigh{neigh(ip3, mac3)}, []Peer{{IP: ip3, MAC: mac3}}},
		{"IPv4 in 16 bytes", []netlink.Neigh{{HardwareAddr: mac3, IP: net.ParseIP("198.18.0.11")}},
			[]netlink.Neigh{{HardwareAddr: mac3, IP: net.ParseIP("10.0.0.3")}}, []Peer{{IP: ip3, MAC: mac3, VTEP: other}}},
		{"dual stack merged on the MAC", []netlink.Neigh{fdb(mac3, other), fdb(mac2, other)},
			[]netlink.Neigh{neigh(ip63, mac3), neigh(ip3, mac3), neigh(ip2, mac2), neigh(ip62, mac2)},
			[]Peer{{IP: ip2, IP6: ip62, MAC: mac2, VTEP: other}, {IP: ip3, IP6: ip63, MAC: mac3, VTEP: other}}},
		{"IPv6 neighbour only", nil, []netlink.Neigh{neigh(ip63, mac3)}, []Peer{{IP6: ip63, MAC: mac3}}},
		{"IPv6 neighbour and fdb, no IPv4", []netlink.Neigh{fdb(mac3, other)}, []netlink.Neigh{neigh(ip63, mac3)}, []Peer{{IP6: ip63, MAC: mac3, VTEP: other}}},
		{"dual stack at two VTEPs", []netlink.Neigh{fdb(mac3, other), fdb(mac3, vtep)}, []netlink.Neigh{neigh(ip3, mac3), neigh(ip63, mac3)},
			[]Peer{{IP: ip3, IP6: ip63, MAC: mac3, VTEP: vtep}, {IP: ip3, IP6: ip63, MAC: mac3, VTEP: other}}},
	} {
		if got := mergePeers(c.fdb, c.neigh); !slices.EqualFunc(got, c.want, Peer.Equal) {
			t.Errorf("%s: mergePeers = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestVxlanMatches(t *testing.T) {
	want := &netlink.Vxlan{VxlanId: 7, VtepDevIndex: 2, SrcAddr: vtep.AsSlice(), Port: Port, Proxy: true}
	for _, c := range []struct {
		name   string
		mutate func(*netlink.Vxlan)
		match  bool
	}{
		{"same", func(*netlink.Vxlan) {}, true},
		{"VNI", func(v *netlink.Vxlan) { v.VxlanId = 8 }, false},
		{"port", func(v *netlink.Vxlan) { v.Port = 8472 }, false},
		{"local", func(v *netlink.Vxlan) { v.SrcAddr = other.AsSlice() }, false},
		{"device", func(v *netlink.Vxlan) { v.VtepDevIndex = 3 }, false},
		{"learning", func(v *netlink.Vxlan) { v.Learning = true }, false},
		{"proxy", func(v *netlink.Vxlan) { v.Proxy = false }, false},
		{"l2miss", func(v *netlink.Vxlan) { v.L2miss = true }, false},
		{"l3miss", func(v *netlink.Vxlan) { v.L3miss = true }, false},
		{"group", func(v *netlink.Vxlan) { v.Group = net.ParseIP("239.1.1.1") }, false},
		{"external", func(v *netlink.Vxlan) { v.FlowBased = true }, false},
	} {
		have := *want
		c.mutate(&have)
		if got := vxlanMatches(&have, want); got != c.match {
			t.Errorf("%s: vxlanMatches = %v, want %v", c.name, got, c.match)
		}
	}
}
