package ipam

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/testutil"
)

func ipnet(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	if ip4 := ip.To4(); ip4 != nil {
		n.IP = ip4
	} else {
		n.IP = ip
	}
	return n
}

func TestHostBlockersConversion(t *testing.T) {
	names := map[int]string{1: "lo", 2: "eth0", 3: "wg0"}
	addrs := []netlink.Addr{
		{LinkIndex: 1, IPNet: ipnet("127.0.0.1/8")},
		{LinkIndex: 2, IPNet: ipnet("10.0.0.5/24")},
		{LinkIndex: 2, IPNet: ipnet("169.254.3.4/16")},
		{LinkIndex: 3, IPNet: ipnet("10.9.0.1/32"), Peer: ipnet("10.9.0.2/32")},
		{LinkIndex: 1, IPNet: ipnet("::1/128")},
		{LinkIndex: 2, IPNet: ipnet("fe80::a00:27ff:fe4e:66a1/64")},
		{LinkIndex: 2, IPNet: ipnet("fd12:3456:789a:1::5/64")},
		{LinkIndex: 2, IPNet: ipnet("2001:db8:1:2::77/128")},
		{LinkIndex: 3, IPNet: ipnet("fd7a:115c:a1e0::1/128")},
	}
	routes := []netlink.Route{
		{Dst: ipnet("0.0.0.0/0"), Gw: net.ParseIP("10.0.0.1"), LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST},
		{Dst: ipnet("0.0.0.0/1"), LinkIndex: 3, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST},
		{Dst: ipnet("10.0.0.0/24"), LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_UNICAST},
		{Dst: ipnet("10.0.0.5/32"), LinkIndex: 2, Table: unix.RT_TABLE_LOCAL, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_LOCAL},
		{Dst: ipnet("10.0.0.255/32"), LinkIndex: 2, Table: unix.RT_TABLE_LOCAL, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_BROADCAST},
		{Dst: ipnet("127.0.0.0/8"), LinkIndex: 1, Table: unix.RT_TABLE_LOCAL, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_LOCAL},
		{Dst: ipnet("224.0.0.0/4"), LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST},
		{Dst: ipnet("172.16.0.0/12"), Gw: net.ParseIP("10.0.0.1"), LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT, Type: unix.RTN_UNICAST},
		{Dst: ipnet("192.168.0.0/16"), LinkIndex: 3, Table: 51820, Type: unix.RTN_UNICAST},
		{Dst: ipnet("10.80.0.0/16"), Table: 101, Type: unix.RTN_BLACKHOLE},
		{Dst: ipnet("10.81.0.0/16"), Table: 101, Type: unix.RTN_THROW},
		{Dst: ipnet("10.90.0.0/16"), Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST, MultiPath: []*netlink.NexthopInfo{
			{Gw: net.ParseIP("10.0.0.2"), LinkIndex: 2}, {Gw: net.ParseIP("10.0.0.3"), LinkIndex: 9}}},
		// connected route of an address on a link without the address: kept
		{Dst: ipnet("10.70.0.0/24"), LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_UNICAST},
		// IPv6
		{Dst: nil, Gw: net.ParseIP("fe80::1"), LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_RA, Type: unix.RTN_UNICAST}, // default: Dst nil
		{Dst: ipnet("::/0"), Gw: net.ParseIP("fe80::1"), LinkIndex: 2, Table: 100, Type: unix.RTN_UNICAST},
		{Dst: ipnet("::/1"), LinkIndex: 3, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST},
		{Dst: ipnet("2000::/3"), LinkIndex: 3, // all global unicast: a default route in effect
			Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST},
		{Dst: ipnet("fe80::/64"), LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_UNICAST},
		{Dst: ipnet("ff00::/8"), LinkIndex: 2, Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_MULTICAST},
		{Dst: ipnet("ff02::/16"), LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST},
		{Dst: ipnet("::1/128"), LinkIndex: 1, Table: unix.RT_TABLE_LOCAL, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_LOCAL},
		{Dst: ipnet("fd12:3456:789a:1::/64"), LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_UNICAST},
		{Dst: ipnet("fd12:3456:789a:1::5/128"), LinkIndex: 2, Table: unix.RT_TABLE_LOCAL, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_LOCAL},
		{Dst: ipnet("fd12:3456:789a:1::/128"), LinkIndex: 2, Table: unix.RT_TABLE_LOCAL, Protocol: unix.RTPROT_KERNEL, Type: unix.RTN_ANYCAST},
		{Dst: ipnet("fd7a:115c:a1e0::/48"), LinkIndex: 3, Table: 52, Type: unix.RTN_UNICAST},
		{Dst: ipnet("fd00:80::/48"), Table: 101, Type: unix.RTN_BLACKHOLE},
		{Dst: ipnet("2001:db8:5::/48"), Gw: net.ParseIP("fe80::2"), LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_RA, Type: unix.RTN_UNICAST},
	}
	var got []string
	for _, b := range hostBlockers(names, addrs, routes) {
		got = append(got, b.Prefix.String()+" = "+b.Source)
	}
	want := []string{
		"10.0.0.0/24 = address 10.0.0.5/24 on eth0",
		"10.9.0.1/32 = address 10.9.0.1/32 on wg0",
		"10.9.0.2/32 = peer 10.9.0.2/32 of address 10.9.0.1/32 on wg0",
		"172.16.0.0/12 = route 172.16.0.0/12 via 10.0.0.1 dev eth0 (table main)",
		"192.168.0.0/16 = route 192.168.0.0/16 dev wg0 (table 51820)",
		"10.80.0.0/16 = route 10.80.0.0/16 type blackhole (table 101)",
		"10.90.0.0/16 = route 10.90.0.0/16 via 10.0.0.2 dev eth0, via 10.0.0.3 dev if9 (table main)",
		"10.70.0.0/24 = route 10.70.0.0/24 dev eth0 (table main)",
	}
	want = slices.Insert(want, 3,
		"fd12:3456:789a:1::/64 = address fd12:3456:789a:1::5/64 on eth0",
		"2001:db8:1:2::77/128 = address 2001:db8:1:2::77/128 on eth0",
		"fd7a:115c:a1e0::1/128 = address fd7a:115c:a1e0::1/128 on wg0")
	want = append(want,
		"fd7a:115c:a1e0::/48 = route fd7a:115c:a1e0::/48 dev wg0 (table 52)",
		"fd00:80::/48 = route fd00:80::/48 type blackhole (table 101)",
		"2001:db8:5::/48 = route 2001:db8:5::/48 via fe80::2 dev eth0 (table main)")
	if !slices.Equal(got, want) {
		t.Errorf("hostBlockers:\n got %q\nwant %q", got, want)
	}
}

func TestDumpRetriesInterrupted(t *testing.T) {
	tests := []struct {
		name      string
		failures  int
		err       error
		wantCalls int
		wantErr   bool
	}{
		{"clean", 0, nil, 1, false},
		{"interrupted twice", 2, netlink.ErrDumpInterrupted, 3, false},
		{"always interrupted", 100, netlink.ErrDumpInterrupted, dumpTries, true},
		{"other error is not retried", 100, unix.EPERM, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			res, err := dump("list things", func() ([]int, error) {
				calls++
				if calls <= tt.failures {
					return []int{1}, tt.err // partial result with the error
				}
				return []int{1, 2}, nil
			})
			if calls != tt.wantCalls || (err != nil) != tt.wantErr {
				t.Fatalf("calls = %d, err = %v; want %d calls, error %v", calls, err, tt.wantCalls, tt.wantErr)
			}
			if err != nil && (res != nil || !errors.Is(err, tt.err)) {
				t.Errorf("failed dump returned %v, %v", res, err)
			}
			if err == nil && len(res) != 2 {
				t.Errorf("result = %v", res)
			}
		})
	}
}

// TestHostBlockersCurrentNamespace only reads the test process's namespace.
func TestHostBlockersCurrentNamespace(t *testing.T) {
	bs, err := HostBlockers(nil)
	if err != nil {
		t.Fatalf("HostBlockers(nil): %v", err)
	}
	for _, b := range bs {
		if ignorable(b.Prefix) || b.Source == "" {
			t.Errorf("unexpected blocker %v", b)
		}
	}
}

// newTestNS creates a named network namespace for the test (testutil.NetNS,
// deleted when the test ends) and returns its name and a netlink handle
// bound to it.
func newTestNS(t *testing.T) (string, *netlink.Handle) {
	t.Helper()
	name := testutil.NetNS(t, "tether-ipam")
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open namespace %q: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %q: %v", name, err)
	}
	t.Cleanup(h.Close)
	return name, h
}

func TestHostBlockersNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	name, h := newTestNS(t)

	lo, err := h.LinkByName("lo")
	must(t, err)
	must(t, h.LinkSetUp(lo))
	must(t, h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "tbr0"}}))
	br, err := h.LinkByName("tbr0")
	must(t, err)
	must(t, h.LinkSetUp(br))
	must(t, h.AddrAdd(br, &netlink.Addr{IPNet: ipnet("10.55.0.1/24")}))
	must(t, h.AddrAdd(br, &netlink.Addr{IPNet: ipnet("172.17.9.1/24")}))
	must(t, h.AddrAdd(br, &netlink.Addr{IPNet: ipnet("fd00:55::1/64"), Flags: unix.IFA_F_NODAD}))
	idx := br.Attrs().Index
	gw := net.ParseIP("10.55.0.254")
	for _, r := range []netlink.Route{
		{Dst: ipnet("0.0.0.0/0"), Gw: gw, LinkIndex: idx},
		{Dst: ipnet("10.60.0.0/16"), Gw: gw, LinkIndex: idx},
		{Dst: ipnet("10.70.0.0/16"), LinkIndex: idx, Table: 100},
		{Dst: ipnet("10.80.0.0/16"), Table: 101, Type: unix.RTN_BLACKHOLE},
		{Dst: ipnet("fd00:55:0:1::/64"), LinkIndex: idx, Table: 100},
		{Dst: ipnet("fd00:55:0:2::/64"), Table: 101, Type: unix.RTN_BLACKHOLE},
	} {
		must(t, h.RouteAdd(&r))
	}

	bs, err := HostBlockers(h)
	if err != nil {
		t.Fatalf("HostBlockers in %s: %v", name, err)
	}
	var got []string
	for _, b := range bs {
		got = append(got, b.Prefix.String()+" = "+b.Source)
	}
	want := []string{
		"10.55.0.0/24 = address 10.55.0.1/24 on tbr0",
		"172.17.9.0/24 = address 172.17.9.1/24 on tbr0",
		"10.60.0.0/16 = route 10.60.0.0/16 via 10.55.0.254 dev tbr0 (table main)",
		"10.70.0.0/16 = route 10.70.0.0/16 dev tbr0 (table 100)",
		"10.80.0.0/16 = route 10.80.0.0/16 type blackhole (table 101)",
		"fd00:55::/64 = address fd00:55::1/64 on tbr0",
		"fd00:55:0:1::/64 = route fd00:55:0:1::/64 dev tbr0 (table 100)",
		"fd00:55:0:2::/64 = route fd00:55:0:2::/64 type blackhole dev lo (table 101)", // as ip -6 route shows it
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("HostBlockers:\n got %q\nwant %q", got, want)
	}

	sub, err := ChooseSubnet(DefaultPools(), bs)
	if err != nil || sub.String() != "172.18.0.0/16" {
		t.Errorf("ChooseSubnet(defaults) = %v, %v; want 172.18.0.0/16", sub, err)
	}
	sub, err = ChooseSubnet([]PoolSpec{{pfx("10.55.0.0/16"), 24}}, bs)
	if err != nil || sub.String() != "10.55.1.0/24" {
		t.Errorf("ChooseSubnet(10.55/16 by 24) = %v, %v; want 10.55.1.0/24", sub, err)
	}
	sub, err = ChooseSubnet([]PoolSpec{{pfx("fd00:55::/48"), 64}}, bs)
	if err != nil || sub.String() != "fd00:55:0:3::/64" {
		t.Errorf("ChooseSubnet(fd00:55::/48 by 64) = %v, %v; want fd00:55:0:3::/64", sub, err)
	}
	_, err = ChooseSubnet([]PoolSpec{{pfx("10.70.0.0/16"), 24}, {pfx("10.80.0.0/16"), 24}}, bs)
	if err == nil || !contains(err.Error(), "route 10.70.0.0/16 dev tbr0 (table 100)", "route 10.80.0.0/16 type blackhole (table 101)") {
		t.Errorf("ChooseSubnet over policy-table routes: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func contains(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
