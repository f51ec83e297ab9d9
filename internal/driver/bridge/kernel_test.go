package bridge_test

// Kernel tests: the driver runs on a netlink handle bound to a "host"
// namespace the test creates (bridge.NewAt), with sandbox namespaces set up
// as the engine sets them up (IPv6 off by default, no router
// advertisements). Traffic is real (ping from inside the namespaces). As
// root they run; under TETHER_E2E=1 without root they fail.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

var ctx = context.Background()

// host is a test-owned namespace running a bridge driver.
type host struct {
	ns, path string
	h        *netlink.Handle
	d        *bridge.Driver
}

func newHost(t *testing.T) *host {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-bh")
	path := "/run/netns/" + ns
	h, err := tns.NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &host{ns: ns, path: path, h: h, d: bridge.NewAt(h, path)}
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// network creates a bridge network; empty strings leave a family out.
func (hs *host) network(t *testing.T, subnet, gw, subnet6, gw6 string) *driver.Network {
	t.Helper()
	n := &driver.Network{ID: newID(), Name: "n" + testutil.Suffix(), BridgeName: "tb-" + testutil.Suffix(), MTU: 1500, ICC: true}
	if subnet != "" {
		n.Subnet, n.Gateway = netip.MustParsePrefix(subnet), netip.MustParseAddr(gw)
	}
	if subnet6 != "" {
		n.Subnet6, n.Gateway6 = netip.MustParsePrefix(subnet6), netip.MustParseAddr(gw6)
	}
	if err := hs.d.CreateNetwork(ctx, n); err != nil {
		t.Fatalf("create network: %v", err)
	}
	t.Cleanup(func() {
		if err := hs.d.DeleteNetwork(ctx, n); err != nil {
			t.Errorf("delete network: %v", err)
		}
	})
	return n
}

// sandbox is a namespace joined to a network as eth0.
type sandbox struct {
	ns, path string
	ep       *driver.Endpoint
}

// newSandbox creates a namespace the way the engine does (sandbox.Kernel:
// default.disable_ipv6=1, accept_ra=0) and joins it to n with the given
// addresses ("" leaves a family out).
func (hs *host) join(t *testing.T, n *driver.Network, addr, addr6 string, defaultRoute bool) *sandbox {
	t.Helper()
	return hs.joinNS(t, n, addr, addr6, defaultRoute, false)
}

// joinNS is join; adopted leaves the namespace's IPv6 defaults on (a
// namespace another runtime made) and asks the driver to turn IPv6 off on
// the sandbox end, as the engine does for such a namespace.
func (hs *host) joinNS(t *testing.T, n *driver.Network, addr, addr6 string, defaultRoute, adopted bool) *sandbox {
	t.Helper()
	ns := testutil.NetNS(t, "tth-sb")
	if !adopted {
		testutil.Must(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1",
			"net.ipv6.conf.default.accept_ra=0", "net.ipv6.conf.all.accept_ra=0")
	}
	ep := &driver.Endpoint{ID: newID(), IfName: "eth0", DefaultRoute: defaultRoute, DisableIPv6: adopted && addr6 == ""}
	if addr != "" {
		ep.Address, ep.Gateway = netip.MustParsePrefix(addr), n.Gateway
		ep.MAC = driver.MACFromIP(ep.Address.Addr())
	}
	if addr6 != "" {
		ep.Address6, ep.Gateway6 = netip.MustParsePrefix(addr6), n.Gateway6
		if ep.MAC == nil {
			ep.MAC = driver.MACFromIP(ep.Address6.Addr())
		}
	}
	s := &sandbox{ns: ns, path: "/run/netns/" + ns, ep: ep}
	if err := hs.d.Join(ctx, n, ep, s.path); err != nil {
		t.Fatalf("join %s: %v", ns, err)
	}
	t.Cleanup(func() {
		if err := hs.d.Leave(ctx, n, ep, s.path); err != nil {
			t.Errorf("leave %s: %v", ns, err)
		}
		if _, err := netlink.LinkByName(ep.HostIfName); err == nil {
			t.Errorf("host end %q in the default namespace", ep.HostIfName)
		}
	})
	return s
}

func ping(ns, addr string, extra ...string) (string, error) {
	args := append([]string{"-n", "-q", "-c", "1", "-W", "1"}, extra...)
	return testutil.InNS(ns, "ping", append(args, addr)...)
}

// mustPing fails unless a ping from ns to addr gets through (three tries:
// the first may wait for neighbour resolution).
func mustPing(t *testing.T, ns, addr string, extra ...string) {
	t.Helper()
	var out string
	var err error
	for range 3 {
		if out, err = ping(ns, addr, extra...); err == nil {
			return
		}
	}
	t.Errorf("ping %s from %s %v: %v\n%s", addr, ns, extra, err, out)
}

func sysctl(t *testing.T, ns, link, key string) string {
	t.Helper()
	out, err := testutil.InNS(ns, "cat", "/proc/sys/net/ipv6/conf/"+link+"/"+key)
	if err != nil {
		t.Fatalf("%s %s in %s: %v %s", link, key, ns, err, out)
	}
	return strings.TrimSpace(out)
}

func checkSysctls(t *testing.T, ns, link string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := sysctl(t, ns, link, k); got != v {
			t.Errorf("%s: net.ipv6.conf.%s.%s = %s, want %s", ns, link, k, got, v)
		}
	}
}

// addrs lists a link's addresses of a family ("-4", "-6") with their
// flags, one "ADDR/LEN flag flag" per address.
func addrs(t *testing.T, ns, family, link string) []string {
	t.Helper()
	out := testutil.Must(t, "ip", "-n", ns, "-o", family, "addr", "show", "dev", link)
	var got []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		i := slices.Index(f, "inet6")
		if i < 0 {
			i = slices.Index(f, "inet")
		}
		if i < 0 {
			continue
		}
		if f[i] == "inet" { // flags of IPv6 addresses only
			got = append(got, f[i+1])
			continue
		}
		var flags []string
		for _, w := range f[i+2:] {
			if w == "valid_lft" || w == "\\" {
				break
			}
			if w != "scope" && w != "link" && w != "global" && w != "host" {
				flags = append(flags, w)
			}
		}
		got = append(got, strings.Join(append([]string{f[i+1]}, flags...), " "))
	}
	slices.Sort(got)
	return got
}

func linkLocal(t *testing.T, s *sandbox) netip.Prefix {
	t.Helper()
	ll, ok := bridge.LinkLocal(s.ep.MAC)
	if !ok {
		t.Fatalf("no link-local address for MAC %v", s.ep.MAC)
	}
	return ll
}

// checkSandbox6: the sandbox end has IPv6 on with accept_ra=0 and DAD
// off, exactly its link-local address and Address6 (DAD off, nothing
// tentative or SLAAC), and the IPv6 default route via Gateway6.
func checkSandbox6(t *testing.T, s *sandbox) {
	t.Helper()
	checkSysctls(t, s.ns, "eth0", map[string]string{"disable_ipv6": "0", "accept_ra": "0", "accept_dad": "0"})
	want := []string{linkLocal(t, s).String() + " nodad", s.ep.Address6.String() + " nodad"}
	slices.Sort(want)
	if got := addrs(t, s.ns, "-6", "eth0"); !slices.Equal(got, want) {
		t.Errorf("%s: IPv6 addresses of eth0 = %q, want %q", s.ns, got, want)
	}
	if out := testutil.Must(t, "ip", "-n", s.ns, "-6", "addr", "show", "tentative"); out != "" {
		t.Errorf("%s: tentative addresses:\n%s", s.ns, out)
	}
	route := strings.TrimSpace(testutil.Must(t, "ip", "-n", s.ns, "-6", "route", "show", "default"))
	if want := "default via " + s.ep.Gateway6.String() + " dev eth0"; !strings.HasPrefix(route, want) {
		t.Errorf("%s: IPv6 default route %q, want %q", s.ns, route, want)
	}
}

// TestDualStack: two sandboxes on a dual-stack network reach each other and
// the gateway over IPv4 and IPv6; the bridge, host ends and sandbox ends
// are as documented.
func TestDualStack(t *testing.T) {
	hs := newHost(t)
	n := hs.network(t, "10.91.0.0/24", "10.91.0.1", "fd91:1:2:3::/64", "fd91:1:2:3::1")
	a := hs.join(t, n, "10.91.0.2/24", "fd91:1:2:3::2/64", true)
	b := hs.join(t, n, "10.91.0.3/24", "fd91:1:2:3::3/64", true)

	t.Run("traffic", func(t *testing.T) {
		mustPing(t, a.ns, "fd91:1:2:3::3")
		mustPing(t, b.ns, "fd91:1:2:3::2")
		mustPing(t, a.ns, "fd91:1:2:3::1")
		mustPing(t, a.ns, "10.91.0.3")
		mustPing(t, a.ns, linkLocal(t, b).Addr().String(), "-I", "eth0")
		mustPing(t, a.ns, "fe80::1", "-I", "eth0")
	})
	t.Run("sandbox ends", func(t *testing.T) {
		checkSandbox6(t, a)
		checkSandbox6(t, b)
		if got := addrs(t, a.ns, "-4", "eth0"); !slices.Equal(got, []string{"10.91.0.2/24"}) {
			t.Errorf("IPv4 addresses of eth0 = %q", got)
		}
	})
	t.Run("bridge", func(t *testing.T) {
		checkSysctls(t, hs.ns, n.BridgeName, map[string]string{"disable_ipv6": "0", "accept_ra": "0", "accept_dad": "0"})
		want := []string{"fd91:1:2:3::1/64 nodad", "fe80::1/64 nodad"}
		if got := addrs(t, hs.ns, "-6", n.BridgeName); !slices.Equal(got, want) {
			t.Errorf("IPv6 addresses of the bridge = %q, want %q", got, want)
		}
		if got := addrs(t, hs.ns, "-4", n.BridgeName); !slices.Equal(got, []string{"10.91.0.1/24"}) {
			t.Errorf("IPv4 addresses of the bridge = %q", got)
		}
	})
	t.Run("host ends keep IPv6 off", func(t *testing.T) {
		for _, s := range []*sandbox{a, b} {
			checkSysctls(t, hs.ns, s.ep.HostIfName, map[string]string{"disable_ipv6": "1", "accept_ra": "0"})
		}
	})
	// The host resolves a sandbox's address for a packet whose source is
	// not on the bridge (forwarded, or from another interface) with a
	// solicitation from the bridge's link-local address: without it the
	// kernel sends none and the sandbox is unreachable.
	t.Run("from an address off the bridge", func(t *testing.T) {
		testutil.Must(t, "ip", "-n", hs.ns, "addr", "add", "fd99::1/128", "dev", "lo", "nodad")
		testutil.Must(t, "ip", "-n", hs.ns, "neigh", "flush", "dev", n.BridgeName)
		mustPing(t, hs.ns, "fd91:1:2:3::3", "-I", "fd99::1")
		testutil.Must(t, "ip", "-n", hs.ns, "addr", "del", "fe80::1/64", "dev", n.BridgeName)
		testutil.Must(t, "ip", "-n", hs.ns, "neigh", "flush", "dev", n.BridgeName)
		if out, err := ping(hs.ns, "fd91:1:2:3::2", "-I", "fd99::1"); err == nil {
			t.Errorf("ping from fd99::1 got through with no link-local address on the bridge; is fe80::1 needed?\n%s", out)
		}
		if err := hs.d.CreateNetwork(ctx, n); err != nil { // idempotent: puts fe80::1 back
			t.Fatal(err)
		}
		testutil.Must(t, "ip", "-n", hs.ns, "neigh", "flush", "dev", n.BridgeName)
		mustPing(t, hs.ns, "fd91:1:2:3::2", "-I", "fd99::1")
	})
}

// TestIPv6Only: a network without an IPv4 subnet; sandboxes get no IPv4
// address and reach each other over IPv6.
func TestIPv6Only(t *testing.T) {
	hs := newHost(t)
	n := hs.network(t, "", "", "fd92::/64", "fd92::1")
	a := hs.join(t, n, "", "fd92::a/64", true)
	b := hs.join(t, n, "", "fd92::b/64", false)
	mustPing(t, a.ns, "fd92::b")
	mustPing(t, b.ns, "fd92::a")
	mustPing(t, b.ns, "fd92::1")
	checkSandbox6(t, a)
	for _, c := range []struct{ ns, link string }{{a.ns, "eth0"}, {b.ns, "eth0"}, {hs.ns, n.BridgeName}} {
		if got := addrs(t, c.ns, "-4", c.link); len(got) != 0 {
			t.Errorf("%s %s has IPv4 addresses %q", c.ns, c.link, got)
		}
	}
	if out := testutil.Must(t, "ip", "-n", b.ns, "-6", "route", "show", "default"); out != "" {
		t.Errorf("sandbox without DefaultRoute has %q", out)
	}
	if out := testutil.Must(t, "ip", "-n", a.ns, "-4", "route", "show"); out != "" {
		t.Errorf("IPv6-only sandbox has IPv4 routes %q", out)
	}
	// Router: the default route handed to b later.
	if err := hs.d.SetDefaultRoute(ctx, n, b.ep, b.path); err != nil {
		t.Fatal(err)
	}
	if out := testutil.Must(t, "ip", "-n", b.ns, "-6", "route", "show", "default"); !strings.HasPrefix(out, "default via fd92::1 dev eth0") {
		t.Errorf("after SetDefaultRoute: %q", out)
	}
}

// TestIPv4OnlyKeepsIPv6Off: on a network without Subnet6 IPv6 stays off on
// the bridge, the host end and the sandbox end, as before IPv6 support.
func TestIPv4OnlyKeepsIPv6Off(t *testing.T) {
	hs := newHost(t)
	n := hs.network(t, "10.93.0.0/24", "10.93.0.1", "", "")
	a := hs.join(t, n, "10.93.0.2/24", "", true)
	b := hs.join(t, n, "10.93.0.3/24", "", true)
	mustPing(t, a.ns, "10.93.0.3")
	checkSysctls(t, hs.ns, n.BridgeName, map[string]string{"disable_ipv6": "1", "accept_ra": "0"})
	for _, s := range []*sandbox{a, b} {
		checkSysctls(t, hs.ns, s.ep.HostIfName, map[string]string{"disable_ipv6": "1", "accept_ra": "0"})
		checkSysctls(t, s.ns, "eth0", map[string]string{"disable_ipv6": "1"})
		if got := addrs(t, s.ns, "-6", "eth0"); len(got) != 0 {
			t.Errorf("IPv6 addresses on an IPv4-only sandbox: %q", got)
		}
	}
	if got := addrs(t, hs.ns, "-6", n.BridgeName); len(got) != 0 {
		t.Errorf("IPv6 addresses on an IPv4-only bridge: %q", got)
	}
}

// TestAdoptedNamespaceKeepsIPv6Off: in a namespace whose defaults have
// IPv6 on (another runtime's), the driver turns it off on the sandbox end
// itself: no address at all on it, router advertisements refused; the end
// is up and carries IPv4. (A Tether namespace's end is created up; this
// one is brought up only after.)
func TestAdoptedNamespaceKeepsIPv6Off(t *testing.T) {
	hs := newHost(t)
	n := hs.network(t, "10.97.0.0/24", "10.97.0.1", "", "")
	a := hs.joinNS(t, n, "10.97.0.2/24", "", true, true)
	b := hs.join(t, n, "10.97.0.3/24", "", true)
	if got := sysctl(t, a.ns, "default", "disable_ipv6"); got != "0" {
		t.Fatalf("the adopted namespace's default disable_ipv6 = %s, want 0 (IPv6 on)", got)
	}
	mustPing(t, a.ns, "10.97.0.3")
	mustPing(t, b.ns, "10.97.0.2")
	checkSysctls(t, a.ns, "eth0", map[string]string{"disable_ipv6": "1", "accept_ra": "0"})
	if got := addrs(t, a.ns, "-6", "eth0"); len(got) != 0 {
		t.Errorf("IPv6 addresses on the adopted sandbox's eth0: %q", got)
	}
	for _, s := range []*sandbox{a, b} {
		if out := testutil.Must(t, "ip", "-n", s.ns, "-o", "link", "show", "eth0"); !strings.Contains(out, ",UP") {
			t.Errorf("%s: eth0 not up: %s", s.ns, out)
		}
	}
}

// TestRepairUnfinishedJoin: a join cut off before its end (a daemon killed
// while its endpoint was already recorded: engine/early.go) leaves a pair
// without the host end's marker, which is set last; Repair takes it for
// broken and joins again, so the endpoint carries traffic. Here the pair
// is enslaved but down and the sandbox end has no address or route yet.
func TestRepairUnfinishedJoin(t *testing.T) {
	hs := newHost(t)
	n := hs.network(t, "10.98.0.0/24", "10.98.0.1", "", "")
	a := hs.join(t, n, "10.98.0.2/24", "", true)
	b := hs.join(t, n, "10.98.0.3/24", "", true)
	testutil.Must(t, "ip", "-n", hs.ns, "link", "set", a.ep.HostIfName, "down", "alias", "")
	testutil.Must(t, "ip", "-n", a.ns, "addr", "flush", "dev", "eth0")
	if _, err := ping(a.ns, "10.98.0.3"); err == nil {
		t.Fatal("the cut-off join carries traffic: nothing to repair")
	}
	for _, inside := range []map[string]driver.SandboxLink{listInside(t, a), nil} {
		repaired, err := hs.d.Repair(ctx, n, a.ep, a.path, inside)
		if err != nil {
			t.Fatalf("repair: %v", err)
		}
		if want := inside != nil; repaired != want { // the second call finds it repaired
			t.Errorf("repaired = %v (inside listed: %v), want %v", repaired, inside != nil, want)
		}
	}
	mustPing(t, a.ns, "10.98.0.3")
	mustPing(t, b.ns, "10.98.0.2")
}

// TestRepairIPv6: an intact dual-stack endpoint is left alone; one that lost
// its IPv6 address, default route or IPv6 altogether gets them back in
// place (same host end, IPv4 untouched).
func TestRepairIPv6(t *testing.T) {
	hs := newHost(t)
	n := hs.network(t, "10.94.0.0/24", "10.94.0.1", "fd94::/64", "fd94::1")
	a := hs.join(t, n, "10.94.0.2/24", "fd94::2/64", true)
	b := hs.join(t, n, "10.94.0.3/24", "fd94::3/64", true)
	hostIf := a.ep.HostIfName
	hostIndex := func() int {
		l, err := hs.h.LinkByName(hostIf)
		if err != nil {
			t.Fatalf("host end: %v", err)
		}
		return l.Attrs().Index
	}
	index := hostIndex()
	cases := []struct {
		name    string
		breakIt []string // command run in a's namespace; none: intact
	}{
		{"intact", nil},
		{"address gone", []string{"ip", "-6", "addr", "del", "fd94::2/64", "dev", "eth0"}},
		{"default route gone", []string{"ip", "-6", "route", "del", "default"}},
		{"IPv6 turned off", []string{"sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=1"}},
		{"intact again", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.breakIt != nil {
				testutil.Must(t, "ip", append([]string{"netns", "exec", a.ns}, c.breakIt...)...)
			}
			for _, inside := range []map[string]driver.SandboxLink{nil, listInside(t, a)} {
				repaired, err := hs.d.Repair(ctx, n, a.ep, a.path, inside)
				if err != nil {
					t.Fatalf("repair: %v", err)
				}
				want := c.breakIt != nil && inside == nil // the second call finds it repaired
				if repaired != want {
					t.Errorf("repaired = %v (inside listed: %v), want %v", repaired, inside != nil, want)
				}
			}
			if a.ep.HostIfName != hostIf || hostIndex() != index {
				t.Errorf("host end rebuilt: %s (index %d), was %s (%d)", a.ep.HostIfName, hostIndex(), hostIf, index)
			}
			checkSandbox6(t, a)
			mustPing(t, a.ns, "fd94::3")
			mustPing(t, a.ns, "10.94.0.3")
		})
	}
	_ = b
}

// listInside lists the sandbox's links as the engine does for Repair.
func listInside(t *testing.T, s *sandbox) map[string]driver.SandboxLink {
	t.Helper()
	h, err := tns.NewHandle(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]driver.SandboxLink{}
	for _, l := range links {
		_, veth := l.(*netlink.Veth)
		m[l.Attrs().Name] = driver.SandboxLink{Name: l.Attrs().Name, Index: l.Attrs().Index, PeerIndex: l.Attrs().ParentIndex, Veth: veth}
	}
	return m
}

// TestJoinPairIPv6: the pair handed to another runtime carries no address;
// its host end keeps IPv6 off on a dual-stack network too.
func TestJoinPairIPv6(t *testing.T) {
	hs := newHost(t)
	n := hs.network(t, "10.95.0.0/24", "10.95.0.1", "fd95::/64", "fd95::1")
	ep := &driver.Endpoint{ID: newID(), IfName: "tp" + testutil.Suffix(), Address: netip.MustParsePrefix("10.95.0.2/24"),
		Address6: netip.MustParsePrefix("fd95::2/64"), Gateway6: n.Gateway6}
	ep.MAC = driver.MACFromIP(ep.Address.Addr())
	if err := hs.d.JoinPair(ctx, n, ep); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hs.d.Leave(ctx, n, ep, "") })
	checkSysctls(t, hs.ns, ep.HostIfName, map[string]string{"disable_ipv6": "1", "accept_ra": "0"})
	for _, fam := range []string{"-4", "-6"} {
		if got := addrs(t, hs.ns, fam, ep.IfName); len(got) != 0 {
			t.Errorf("handed-over end has addresses %q", got)
		}
	}
}

// TestLinkLocalEUI64 is the modified EUI-64 of RFC 4291 appendix A.
func TestLinkLocalEUI64(t *testing.T) {
	cases := []struct {
		mac  string
		want string
		ok   bool
	}{
		{"02:42:0a:5b:00:02", "fe80::42:aff:fe5b:2/64", true},
		{"00:00:5e:00:53:01", "fe80::200:5eff:fe00:5301/64", true},
		{"", "", false},
		{"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "", false}, // 20-byte InfiniBand
	}
	for _, c := range cases {
		var mac []byte
		if c.mac != "" {
			for _, h := range strings.Split(c.mac, ":") {
				v, _ := strconv.ParseUint(h, 16, 8)
				mac = append(mac, byte(v))
			}
		}
		got, ok := bridge.LinkLocal(mac)
		if ok != c.ok || (ok && got.String() != c.want) {
			t.Errorf("LinkLocal(%s) = %v %v, want %s %v", c.mac, got, ok, c.want, c.ok)
		}
	}
}
