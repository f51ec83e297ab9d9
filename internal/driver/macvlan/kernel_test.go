package macvlan_test

// Kernel tests: the driver runs on a netlink handle bound to a "host"
// namespace the test creates (macvlan.NewAt). Its parent lan0 is a veth
// whose peer is in a "LAN" namespace holding the segment's router address
// (the network's gateway), so the LAN is real and nothing touches the
// default namespace. The host also has an address of the subnet on lan0,
// as a host on its LAN does. Traffic is real (ping from inside the
// namespaces). As root they run; under TETHER_E2E=1 without root they fail.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/macvlan"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

var ctx = context.Background()

// lab is a host namespace running the driver and a LAN namespace behind
// its parent lan0.
type lab struct {
	host, lan, path string
	h               *netlink.Handle
	d               *macvlan.Driver
}

// newLab builds host and LAN: lan0 (host, 10.97.0.2/24) <-> lanp (LAN,
// 10.97.0.1/24 and, with v6, fd97::1/64).
func newLab(t *testing.T) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	l := &lab{host: testutil.NetNS(t, "tmv-h"), lan: testutil.NetNS(t, "tmv-lan")}
	l.path = "/run/netns/" + l.host
	testutil.Must(t, "ip", "-n", l.host, "link", "add", "lan0", "type", "veth", "peer", "name", "lanp", "netns", l.lan)
	testutil.Must(t, "ip", "netns", "exec", l.lan, "sysctl", "-q", "-w", "net.ipv6.conf.lanp.accept_dad=0")
	testutil.Must(t, "ip", "-n", l.host, "addr", "add", "10.97.0.2/24", "dev", "lan0")
	testutil.Must(t, "ip", "-n", l.lan, "addr", "add", "10.97.0.1/24", "dev", "lanp")
	testutil.Must(t, "ip", "-n", l.lan, "addr", "add", "fd97::1/64", "dev", "lanp", "nodad")
	testutil.Must(t, "ip", "-n", l.host, "link", "set", "lan0", "up")
	testutil.Must(t, "ip", "-n", l.lan, "link", "set", "lanp", "up")
	h, err := tns.NewHandle(l.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	l.h, l.d = h, macvlan.NewAt(h, l.path)
	return l
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// network creates a macvlan network on lan0 with the given options (parent
// added); v6 makes it dual-stack.
func (l *lab) network(t *testing.T, opts map[string]string, aux map[string]netip.Addr, v6 bool) *driver.Network {
	t.Helper()
	o := map[string]string{"parent": "lan0"}
	for k, v := range opts {
		o[k] = v
	}
	n := &driver.Network{ID: newID(), Name: "mv" + testutil.Suffix(), Subnet: netip.MustParsePrefix("10.97.0.0/24"),
		Gateway: netip.MustParseAddr("10.97.0.1"), MTU: 1500, ICC: true, Options: o, Aux: aux}
	if v6 {
		n.Subnet6, n.Gateway6 = netip.MustParsePrefix("fd97::/64"), netip.MustParseAddr("fd97::1")
	}
	if err := l.d.CheckOptions(n); err != nil {
		t.Fatalf("check options: %v", err)
	}
	if err := l.d.CreateNetwork(ctx, n); err != nil {
		t.Fatalf("create network: %v", err)
	}
	t.Cleanup(func() {
		if err := l.d.DeleteNetwork(ctx, n); err != nil {
			t.Errorf("delete network: %v", err)
		}
	})
	return n
}

type sandbox struct {
	ns, path string
	ep       *driver.Endpoint
}

// join creates a sandbox namespace as the engine does (IPv6 off by
// default, no router advertisements) and joins it to n as eth0.
func (l *lab) join(t *testing.T, n *driver.Network, addr, addr6 string) *sandbox {
	t.Helper()
	ns := testutil.NetNS(t, "tmv-sb")
	testutil.Must(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1",
		"net.ipv6.conf.default.accept_ra=0", "net.ipv6.conf.all.accept_ra=0")
	ep := &driver.Endpoint{ID: newID(), IfName: "eth0", DefaultRoute: true, Gateway: n.Gateway,
		Address: netip.MustParsePrefix(addr)}
	ep.MAC = driver.MACFromIP(ep.Address.Addr())
	if addr6 != "" {
		ep.Address6, ep.Gateway6 = netip.MustParsePrefix(addr6), n.Gateway6
	}
	s := &sandbox{ns: ns, path: "/run/netns/" + ns, ep: ep}
	if err := l.d.Join(ctx, n, ep, s.path); err != nil {
		t.Fatalf("join %s: %v", ns, err)
	}
	t.Cleanup(func() {
		if err := l.d.Leave(ctx, n, ep, s.path); err != nil {
			t.Errorf("leave %s: %v", ns, err)
		}
	})
	return s
}

func ping(ns, addr string) (string, error) {
	return testutil.InNS(ns, "ping", "-n", "-q", "-c", "1", "-W", "1", addr)
}

// mustPing fails unless a ping gets through (three tries: the first may
// wait for neighbour resolution).
func mustPing(t *testing.T, ns, addr string) {
	t.Helper()
	var out string
	var err error
	for range 3 {
		if out, err = ping(ns, addr); err == nil {
			return
		}
	}
	t.Errorf("ping %s from %s: %v\n%s", addr, ns, err, out)
}

// mustNotPing fails if any of three pings gets through.
func mustNotPing(t *testing.T, ns, addr, why string) {
	t.Helper()
	for range 3 {
		if out, err := ping(ns, addr); err == nil {
			t.Errorf("ping %s from %s got through; %s\n%s", addr, ns, why, out)
			return
		}
	}
}

func sysctl(t *testing.T, ns, key string) string {
	t.Helper()
	out, err := testutil.InNS(ns, "cat", "/proc/sys/"+strings.ReplaceAll(key, ".", "/"))
	if err != nil {
		t.Fatalf("%s in %s: %v %s", key, ns, err, out)
	}
	return strings.TrimSpace(out)
}

// TestBridgeMode: two sandboxes reach each other and the LAN host; each
// has a macvlan eth0 with its MAC, the parent's MTU, its address, the
// default route via the LAN's router and IPv6 off; the host cannot reach
// them through its own parent; Leave deletes the interface and is
// idempotent.
func TestBridgeMode(t *testing.T) {
	l := newLab(t)
	testutil.Must(t, "ip", "-n", l.host, "link", "set", "lan0", "mtu", "1400")
	n := l.network(t, nil, nil, false)
	a := l.join(t, n, "10.97.0.10/24", "")
	b := l.join(t, n, "10.97.0.11/24", "")

	mustPing(t, a.ns, "10.97.0.11")
	mustPing(t, b.ns, "10.97.0.10")
	mustPing(t, a.ns, "10.97.0.1")
	mustPing(t, l.lan, "10.97.0.11")
	mustNotPing(t, l.host, "10.97.0.10", "a host reaches its macvlan children only through a shim")

	link := testutil.Must(t, "ip", "-n", a.ns, "-d", "link", "show", "eth0")
	for _, want := range []string{"mtu 1400", "link/ether " + a.ep.MAC.String(), "macvlan mode bridge"} {
		if !strings.Contains(link, want) {
			t.Errorf("eth0 lacks %q:\n%s", want, link)
		}
	}
	if got := strings.TrimSpace(testutil.Must(t, "ip", "-n", a.ns, "route", "show", "default")); !strings.HasPrefix(got, "default via 10.97.0.1 dev eth0") {
		t.Errorf("default route %q", got)
	}
	if got := sysctl(t, a.ns, "net.ipv6.conf.eth0.disable_ipv6"); got != "1" {
		t.Errorf("IPv6 on an IPv4-only macvlan: disable_ipv6=%s", got)
	}
	if out := testutil.Must(t, "ip", "-n", l.host, "-o", "link", "show", "type", "macvlan"); out != "" {
		t.Errorf("macvlan links left in the host namespace:\n%s", out)
	}

	// Join again (restore calls it blindly): the interface is kept.
	before := testutil.Must(t, "ip", "-n", a.ns, "-o", "link", "show", "eth0")
	if err := l.d.Join(ctx, n, a.ep, a.path); err != nil {
		t.Fatalf("join again: %v", err)
	}
	if after := testutil.Must(t, "ip", "-n", a.ns, "-o", "link", "show", "eth0"); strings.Fields(after)[0] != strings.Fields(before)[0] {
		t.Errorf("join again re-created eth0: %s, was %s", after, before)
	}

	for range 2 {
		if err := l.d.Leave(ctx, n, b.ep, b.path); err != nil {
			t.Fatalf("leave: %v", err)
		}
	}
	if out, err := testutil.InNS(b.ns, "ip", "link", "show", "eth0"); err == nil {
		t.Errorf("eth0 still in the sandbox after Leave:\n%s", out)
	}
	mustNotPing(t, a.ns, "10.97.0.11", "b left")
}

// TestLeaveGoneNamespace: Leave of a sandbox whose namespace is gone is
// success.
func TestLeaveGoneNamespace(t *testing.T) {
	l := newLab(t)
	n := l.network(t, nil, nil, false)
	ns := "tmv-gone-" + testutil.Suffix()
	testutil.Must(t, "ip", "netns", "add", ns)
	ep := &driver.Endpoint{ID: newID(), IfName: "eth0", Address: netip.MustParsePrefix("10.97.0.20/24"), Gateway: n.Gateway}
	ep.MAC = driver.MACFromIP(ep.Address.Addr())
	if err := l.d.Join(ctx, n, ep, "/run/netns/"+ns); err != nil {
		t.Fatal(err)
	}
	testutil.Must(t, "ip", "netns", "del", ns)
	if err := l.d.Leave(ctx, n, ep, "/run/netns/"+ns); err != nil {
		t.Fatalf("leave after the namespace went: %v", err)
	}
}

// TestJoinFailureLeavesNothing: a join that fails after creating the
// interface (its default route via a gateway off the link) deletes it.
func TestJoinFailureLeavesNothing(t *testing.T) {
	l := newLab(t)
	n := l.network(t, nil, nil, false)
	ns := testutil.NetNS(t, "tmv-sb")
	ep := &driver.Endpoint{ID: newID(), IfName: "eth0", Address: netip.MustParsePrefix("10.97.0.30/24"),
		Gateway: netip.MustParseAddr("10.99.0.1"), DefaultRoute: true} // not on the link: the route fails
	ep.MAC = driver.MACFromIP(ep.Address.Addr())
	err := l.d.Join(ctx, n, ep, "/run/netns/"+ns)
	if err == nil || !strings.Contains(err.Error(), "default route via 10.99.0.1") {
		t.Fatalf("join with an off-link gateway: %v", err)
	}
	if out, err := testutil.InNS(ns, "ip", "link", "show", "eth0"); err == nil {
		t.Errorf("failed join left eth0:\n%s", out)
	}
}

// TestHostShim: with the shim the host reaches a sandbox (and without it
// it cannot, TestBridgeMode); the shim is marked, has the aux address as
// a /32, a host route per endpoint that Leave removes; the host's own
// route to the subnet on lan0 is untouched; DeleteNetwork removes the shim
// and Sweep removes a shim no record names.
func TestHostShim(t *testing.T) {
	l := newLab(t)
	aux := map[string]netip.Addr{"host_shim": netip.MustParseAddr("10.97.0.254")}
	n := l.network(t, map[string]string{"tether.host_shim": "true"}, aux, false)
	shim := macvlan.ShimName(n.ID)
	a := l.join(t, n, "10.97.0.10/24", "")
	b := l.join(t, n, "10.97.0.11/24", "")

	mustPing(t, l.host, "10.97.0.10")
	mustPing(t, l.host, "10.97.0.11")
	mustPing(t, l.host, "10.97.0.1") // the LAN still through lan0
	mustPing(t, a.ns, "10.97.0.254")

	sl, err := l.h.LinkByName(shim)
	if err != nil {
		t.Fatalf("shim: %v", err)
	}
	if sl.Attrs().Alias != macvlan.ShimMarker(n.ID) {
		t.Errorf("shim alias %q", sl.Attrs().Alias)
	}
	if got := testutil.Must(t, "ip", "-n", l.host, "-o", "-4", "addr", "show", "dev", shim); !strings.Contains(got, "10.97.0.254/32") {
		t.Errorf("shim addresses:\n%s", got)
	}
	if got := sysctl(t, l.host, "net.ipv6.conf."+shim+".disable_ipv6"); got != "1" {
		t.Errorf("IPv6 on the shim: disable_ipv6=%s", got)
	}
	routes := testutil.Must(t, "ip", "-n", l.host, "-4", "route", "show")
	for _, want := range []string{"10.97.0.10 dev " + shim, "10.97.0.11 dev " + shim, "10.97.0.0/24 dev lan0"} {
		if !strings.Contains(routes, want) {
			t.Errorf("host routes lack %q:\n%s", want, routes)
		}
	}
	if err := l.d.CreateNetwork(ctx, n); err != nil { // idempotent (restore)
		t.Fatalf("create again: %v", err)
	}
	if err := l.d.Leave(ctx, n, b.ep, b.path); err != nil {
		t.Fatal(err)
	}
	if routes := testutil.Must(t, "ip", "-n", l.host, "-4", "route", "show"); strings.Contains(routes, "10.97.0.11 ") {
		t.Errorf("route to a left sandbox stays:\n%s", routes)
	}

	t.Run("sweep", func(t *testing.T) {
		if k, err := l.d.Sweep(ctx, map[string]string{n.ID: "tth-whatever"}); err != nil || k != 0 {
			t.Fatalf("sweep with the network on record: %d, %v", k, err)
		}
		if k, err := l.d.Sweep(ctx, map[string]string{}); err != nil || k != 1 {
			t.Fatalf("sweep without it: %d, %v", k, err)
		}
		if _, err := l.h.LinkByName(shim); err == nil {
			t.Fatal("swept shim still there")
		}
		if _, err := l.h.LinkByName("lan0"); err != nil {
			t.Fatalf("sweep touched lan0: %v", err)
		}
		mustNotPing(t, l.host, "10.97.0.10", "the shim is gone")
		if err := l.d.CreateNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
		if err := l.d.Join(ctx, n, a.ep, a.path); err != nil { // puts the host route back
			t.Fatal(err)
		}
		mustPing(t, l.host, "10.97.0.10")
	})
	t.Run("delete", func(t *testing.T) {
		if err := l.d.DeleteNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
		if _, err := l.h.LinkByName(shim); err == nil {
			t.Fatal("shim left after DeleteNetwork")
		}
		if err := l.d.DeleteNetwork(ctx, n); err != nil {
			t.Fatalf("delete again: %v", err)
		}
		if err := l.d.CreateNetwork(ctx, n); err != nil { // for the cleanup's leave and delete
			t.Fatal(err)
		}
	})
}

// TestShimNotOurs: a link with the shim's name but without its marker is
// neither adopted nor deleted.
func TestShimNotOurs(t *testing.T) {
	l := newLab(t)
	aux := map[string]netip.Addr{"host_shim": netip.MustParseAddr("10.97.0.254")}
	n := &driver.Network{ID: newID(), Name: "mv", Subnet: netip.MustParsePrefix("10.97.0.0/24"), MTU: 1500,
		Options: map[string]string{"parent": "lan0", "tether.host_shim": "true"}, Aux: aux}
	testutil.Must(t, "ip", "-n", l.host, "link", "add", "link", "lan0", "name", macvlan.ShimName(n.ID), "type", "macvlan")
	if err := l.d.CreateNetwork(ctx, n); err == nil || !strings.Contains(err.Error(), "is not Tether's") {
		t.Fatalf("create over a foreign link: %v", err)
	}
	if err := l.d.DeleteNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	if _, err := l.h.LinkByName(macvlan.ShimName(n.ID)); err != nil {
		t.Fatalf("foreign link deleted: %v", err)
	}
}

// TestPrivateMode: sandboxes in private mode cannot reach each other, but
// reach the LAN.
func TestPrivateMode(t *testing.T) {
	l := newLab(t)
	n := l.network(t, map[string]string{"macvlan_mode": "private"}, nil, false)
	a := l.join(t, n, "10.97.0.10/24", "")
	b := l.join(t, n, "10.97.0.11/24", "")
	mustPing(t, a.ns, "10.97.0.1")
	mustPing(t, b.ns, "10.97.0.1")
	mustNotPing(t, a.ns, "10.97.0.11", "private mode isolates siblings")
	if link := testutil.Must(t, "ip", "-n", a.ns, "-d", "link", "show", "eth0"); !strings.Contains(link, "macvlan mode private") {
		t.Errorf("mode:\n%s", link)
	}
}

// TestDualStack: on a dual-stack network sandboxes reach each other and
// the LAN's router over IPv6, with static addresses and the IPv6 default
// route via the router.
func TestDualStack(t *testing.T) {
	l := newLab(t)
	n := l.network(t, nil, nil, true)
	a := l.join(t, n, "10.97.0.10/24", "fd97::10/64")
	b := l.join(t, n, "10.97.0.11/24", "fd97::11/64")
	mustPing(t, a.ns, "fd97::11")
	mustPing(t, b.ns, "fd97::1")
	mustPing(t, a.ns, "10.97.0.11")
	for _, kv := range [][2]string{{"disable_ipv6", "0"}, {"accept_ra", "0"}} {
		if got := sysctl(t, a.ns, "net.ipv6.conf.eth0."+kv[0]); got != kv[1] {
			t.Errorf("%s=%s, want %s", kv[0], got, kv[1])
		}
	}
	addrs := testutil.Must(t, "ip", "-n", a.ns, "-6", "addr", "show", "dev", "eth0")
	for _, want := range []string{"fd97::10/64", "fe80::42:aff:fe61:a/64"} {
		if !strings.Contains(addrs, want) {
			t.Errorf("IPv6 addresses lack %s:\n%s", want, addrs)
		}
	}
	if got := strings.TrimSpace(testutil.Must(t, "ip", "-n", a.ns, "-6", "route", "show", "default")); !strings.HasPrefix(got, "default via fd97::1 dev eth0") {
		t.Errorf("IPv6 default route %q", got)
	}
}

// TestSetDefaultRoute: the route handed to an endpoint that joined without it.
func TestSetDefaultRoute(t *testing.T) {
	l := newLab(t)
	n := l.network(t, nil, nil, false)
	a := l.join(t, n, "10.97.0.10/24", "")
	testutil.Must(t, "ip", "-n", a.ns, "route", "del", "default")
	if err := l.d.SetDefaultRoute(ctx, n, a.ep, a.path); err != nil {
		t.Fatal(err)
	}
	if got := testutil.Must(t, "ip", "-n", a.ns, "route", "show", "default"); !strings.HasPrefix(got, "default via 10.97.0.1 dev eth0") {
		t.Errorf("after SetDefaultRoute: %q", got)
	}
}

// TestCheckOptionsKernel: the parent is looked up in the driver's
// namespace, and a missing PARENT.VLAN parent is refused with the reason
// this kernel gives: the probe must agree with `ip link add ... type vlan`.
func TestCheckOptionsKernel(t *testing.T) {
	l := newLab(t)
	check := func(parent string) error {
		return l.d.CheckOptions(&driver.Network{ID: newID(), Name: "mv", Options: map[string]string{"parent": parent}})
	}
	if err := check("lan0"); err != nil {
		t.Errorf("parent lan0: %v", err)
	}
	if err := check("eth9"); err == nil || err.Error() != `invalid option parent="eth9": no such interface` {
		t.Errorf("parent eth9: %v", err)
	}
	out, vlanErr := testutil.InNS(l.host, "ip", "link", "add", "link", "lan0", "name", "lan0.20", "type", "vlan", "id", "20")
	want := "the kernel has no 802.1q (8021q) support"
	if vlanErr == nil {
		testutil.Must(t, "ip", "-n", l.host, "link", "del", "lan0.20")
		want = "Tether does not create 802.1q sub-interfaces"
	}
	t.Logf("ip link add type vlan: %v %s", vlanErr, out)
	if err := check("lan0.20"); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("parent lan0.20: %v, want %q", err, want)
	}
}

// TestRepair: an intact endpoint is left alone; one that lost its
// address, default route, interface or host route (or whose shim was
// re-created) is joined again and works.
func TestRepair(t *testing.T) {
	l := newLab(t)
	aux := map[string]netip.Addr{"host_shim": netip.MustParseAddr("10.97.0.254")}
	n := l.network(t, map[string]string{"tether.host_shim": "true"}, aux, true)
	a := l.join(t, n, "10.97.0.10/24", "fd97::10/64")
	shim := macvlan.ShimName(n.ID)
	cases := []struct {
		name    string
		breakIt []string // ip command; the namespace is "sb" or "host"
		in      string
	}{
		{"intact", nil, ""},
		{"address gone", []string{"addr", "del", "10.97.0.10/24", "dev", "eth0"}, "sb"},
		{"IPv6 address gone", []string{"-6", "addr", "del", "fd97::10/64", "dev", "eth0"}, "sb"},
		{"default route gone", []string{"route", "del", "default"}, "sb"},
		{"interface gone", []string{"link", "del", "eth0"}, "sb"},
		{"host route gone", []string{"route", "del", "10.97.0.10/32", "dev", shim}, "host"},
		{"intact again", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.breakIt != nil {
				ns := map[string]string{"sb": a.ns, "host": l.host}[c.in]
				testutil.Must(t, "ip", append([]string{"-n", ns}, c.breakIt...)...)
			}
			repaired, err := l.d.Repair(ctx, n, a.ep, a.path, nil)
			if err != nil {
				t.Fatalf("repair: %v", err)
			}
			if repaired != (c.breakIt != nil) {
				t.Errorf("repaired = %v", repaired)
			}
			if again, err := l.d.Repair(ctx, n, a.ep, a.path, nil); err != nil || again {
				t.Errorf("second repair: %v, %v", again, err)
			}
			mustPing(t, a.ns, "10.97.0.1")
			mustPing(t, a.ns, "fd97::1")
			mustPing(t, l.host, "10.97.0.10")
		})
	}
}
