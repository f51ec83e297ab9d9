package firewall

// Kernel tests of table ip6 tether (Options.IPv6), each in network
// namespaces the test creates (and deletes).

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

func kernelNFT6(t testing.TB, ns string, ipv6 bool) *NFT {
	t.Helper()
	f, err := NewNFTWith(Options{NetNS: "/run/netns/" + ns, IPv6: ipv6})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// rawSet lists a set's kernel elements (hex keys, ":"+hex values).
func rawSet(t *testing.T, c *nftables.Conn, tb *nftables.Table, name string) []string {
	t.Helper()
	s, err := c.GetSetByName(tb, name)
	if err != nil {
		t.Fatalf("set %s: %v", name, err)
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		t.Fatalf("elements of %s: %v", name, err)
	}
	var out []string
	for _, e := range els {
		x := hex.EncodeToString(e.Key)
		if e.IntervalEnd {
			x += "/end"
		}
		if len(e.Val) > 0 {
			x += ":" + hex.EncodeToString(e.Val)
		}
		out = append(out, x)
	}
	slices.Sort(out)
	return out
}

// ruleHandlesOf lists the handles of the rules of family fm's table.
func ruleHandlesOf(t *testing.T, c *nftables.Conn, fm *family) []uint64 {
	t.Helper()
	var hs []uint64
	for _, ch := range chains(fm.table()) {
		rs, err := c.GetRules(fm.table(), ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			hs = append(hs, r.Handle)
		}
	}
	return hs
}

// (a) Sync with a dual-stack network builds both tables with the right
// elements; the kernel prints the rules as ruleset.go documents them; a
// restart recognises both tables and rebuilds nothing.
func TestKernelIPv6Sync(t *testing.T) {
	ns, fd := kernelNS(t)
	ctx := context.Background()
	c := reader(t, fd)
	ports := []PortMapping{pAny, p6Any, p6One}
	if err := kernelNFT6(t, ns, true).Sync(ctx, []Network{net6A, net6R, netB}, ports); err != nil {
		t.Fatal(err)
	}
	pad := func(s string) string { return hex.EncodeToString(append([]byte(s), make([]byte, 16-len(s))...)) }
	t6 := fam6.table()
	for set, want := range map[string][]string{
		SetBridges:  {pad("tth-a"), pad("tth-b"), pad("tth-r")},
		SetMasq:     {"fd00000a000000000000000000000000", "fd00000a000000010000000000000000/end"},
		SetRouted:   {pad("tth-r")},
		MapPortsAny: {"060000001f900000:" + "fd00000a000000000000000000000002" + "00500000"},
		MapPorts: {"20010db8000000000000000000000001" + "11000000" + "14e90000:" +
			"fd00000a000000000000000000000003" + "00350000"},
		SetPublished: {"fd00000a000000000000000000000002" + "06000000" + "00500000",
			"fd00000a000000000000000000000003" + "11000000" + "00350000"},
	} {
		if got := rawSet(t, c, t6, set); !slices.Equal(got, want) {
			t.Errorf("ip6 set %s:\n got %v\nwant %v", set, got, want)
		}
	}
	checkElements(t, c, net6A, net6R, netB) // the ip table as without IPv6
	if got, want := rawSet(t, c, table(), MapPortsAny), []string{"060000001f900000:0a01000200500000"}; !slices.Equal(got, want) {
		t.Errorf("ip ports_any %v, want %v", got, want)
	}

	dump, err := testutil.InNS(ns, "nft", "list", "table", "ip6", TableName)
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, dump)
	}
	t.Logf("nft list table ip6 tether:\n%s", dump)
	for _, want := range []string{
		`iifname != "lo" ip6 daddr ::1 drop`,
		"ip6 saddr @masq oifname != @bridges masquerade",
		"ct status dnat ip6 saddr @masq oifname @bridges masquerade",
		"oifname @routed ip6 daddr . meta l4proto . th dport @published accept",
		"oifname @routed meta l4proto ipv6-icmp accept",
		"fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @ports",
		"fib daddr type local dnat ip6 to meta l4proto . th dport map @ports_any",
		"ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @ports_any",
		"iifname @bridges icmpv6 type nd-router-advert counter packets 0 bytes 0 drop",
		"elements = { fd00:a::/64 }",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("nft list table ip6 tether lacks %q", want)
		}
	}

	h4, h6 := ruleHandlesOf(t, c, fam4), ruleHandlesOf(t, c, fam6)
	if len(h6) != len(rulesOf(fam6, Options{})) || len(h4) != len(rules(false)) {
		t.Fatalf("%d ip6 rules, %d ip rules", len(h6), len(h4))
	}
	if err := kernelNFT6(t, ns, true).Sync(ctx, []Network{netB, net6R, net6A}, ports); err != nil {
		t.Fatal(err)
	}
	if g4, g6 := ruleHandlesOf(t, c, fam4), ruleHandlesOf(t, c, fam6); !slices.Equal(g4, h4) || !slices.Equal(g6, h6) {
		t.Errorf("a second Sync rebuilt the rules: ip %v was %v, ip6 %v was %v", g4, h4, g6, h6)
	}
}

// (b) The monitor restores table ip6 tether after `nft flush table` and
// after `nft delete table`.
func TestKernelIPv6Monitor(t *testing.T) {
	ns, fd := kernelNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	c := reader(t, fd)
	f := kernelNFT6(t, ns, true)
	if err := f.Sync(ctx, []Network{net6A, netB}, []PortMapping{p6Any}); err != nil {
		t.Fatal(err)
	}
	restored := make(chan time.Duration, 16)
	wait, err := f.Watch(ctx, WatchOptions{Restored: func(d time.Duration) { restored <- d }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); wait() }()
	want6 := rawSet(t, c, fam6.table(), SetMasq)
	wantPorts := rawSet(t, c, fam6.table(), MapPortsAny)
	h4 := ruleHandlesOf(t, c, fam4)
	for _, tamper := range [][]string{
		{"flush", "table", "ip6", TableName},
		{"delete", "table", "ip6", TableName},
		{"delete", "element", "ip6", TableName, SetMasq, "{ fd00:a::/64 }"},
	} {
		if out, err := testutil.InNS(ns, "nft", tamper...); err != nil {
			t.Fatalf("nft %v: %v\n%s", tamper, err, out)
		}
		select {
		case d := <-restored:
			t.Logf("nft %s: restored after %v", strings.Join(tamper, " "), d)
		case <-time.After(10 * time.Second): // a deadline for a hang, not a speed check
			t.Fatalf("nft %v: the table was not restored", tamper)
		}
		if got := rawSet(t, c, fam6.table(), SetMasq); !slices.Equal(got, want6) {
			t.Errorf("after nft %v: masq %v, want %v", tamper, got, want6)
		}
		if got := rawSet(t, c, fam6.table(), MapPortsAny); !slices.Equal(got, wantPorts) {
			t.Errorf("after nft %v: ports_any %v, want %v", tamper, got, wantPorts)
		}
		if n := len(ruleHandlesOf(t, c, fam6)); n != len(rulesOf(fam6, Options{})) {
			t.Errorf("after nft %v: %d ip6 rules", tamper, n)
		}
	}
	if got := ruleHandlesOf(t, c, fam4); !slices.Equal(got, h4) {
		t.Errorf("repairing the ip6 table rebuilt the ip table: handles %v, were %v", got, h4)
	}
}

// (d) With IPv6 off no ip6 table is created, and one that exists (left by
// an earlier run, here made by hand) is neither read nor changed.
func TestKernelIPv6Off(t *testing.T) {
	ns, fd := kernelNS(t)
	ctx := context.Background()
	c := reader(t, fd)
	f := kernelNFT6(t, ns, false)
	if err := f.Sync(ctx, []Network{net6A, net6R, netB}, []PortMapping{pAny}); err != nil {
		t.Fatal(err)
	}
	if err := f.Add(ctx, netD); err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv6)
	if err != nil || len(ts) != 0 {
		t.Fatalf("ip6 tables with IPv6 off: %v, %v", ts, err)
	}
	checkElements(t, c, net6A, net6R, netB, netD)

	testutil.Must(t, "ip", "netns", "exec", ns, "nft", "add table ip6 tether; add set ip6 tether bridges { type ifname; }")
	before, _ := testutil.InNS(ns, "nft", "list", "table", "ip6", TableName)
	if err := kernelNFT6(t, ns, false).Sync(ctx, []Network{net6A}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Repair(); err != nil {
		t.Fatal(err)
	}
	after, _ := testutil.InNS(ns, "nft", "list", "table", "ip6", TableName)
	if after != before || !strings.Contains(after, "set bridges") {
		t.Errorf("ip6 table changed with IPv6 off:\n%s\nwas\n%s", after, before)
	}
}

// (c) A published IPv6 port with real traffic. Topology, all in
// namespaces the test creates:
//
//	outside (2001:db8:100::2) --veth-- host (2001:db8:100::1, ::3; bridge tth-br fd00:88::1/64)
//	                                      |
//	                                    sandbox (fd00:88::2, default via fd00:88::1)
//
// Addresses are nodad (usable at once); the host forwards IPv6.
func newPortTopo6(t *testing.T) *portTopo {
	t.Helper()
	testutil.RequireRoot(t)
	h, s, o := testutil.NetNS(t, "tth-fwh"), testutil.NetNS(t, "tth-fws"), testutil.NetNS(t, "tth-fwo")
	ip := func(args ...string) { t.Helper(); testutil.Must(t, "ip", args...) }
	for _, ns := range []string{h, s, o} { // no tentative link-local addresses either
		if out, err := testutil.InNS(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"); err != nil {
			t.Fatalf("accept_dad: %v: %s", err, out)
		}
	}
	ip("-n", h, "link", "add", "tth-br", "type", "bridge")
	ip("-n", h, "-6", "addr", "add", "fd00:88::1/64", "dev", "tth-br", "nodad")
	ip("-n", h, "link", "set", "tth-br", "up")
	ip("-n", h, "link", "add", "tth-v0", "type", "veth", "peer", "name", "eth0", "netns", s)
	ip("-n", h, "link", "set", "tth-v0", "master", "tth-br", "up")
	ip("-n", h, "link", "set", "tth-v0", "type", "bridge_slave", "hairpin", "on")
	ip("-n", s, "-6", "addr", "add", "fd00:88::2/64", "dev", "eth0", "nodad")
	ip("-n", s, "link", "set", "eth0", "up")
	ip("-n", s, "-6", "route", "add", "default", "via", "fd00:88::1")
	ip("-n", h, "link", "add", "tth-up", "type", "veth", "peer", "name", "eth0", "netns", o)
	ip("-n", h, "-6", "addr", "add", "2001:db8:100::1/64", "dev", "tth-up", "nodad")
	ip("-n", h, "-6", "addr", "add", "2001:db8:100::3/64", "dev", "tth-up", "nodad")
	ip("-n", h, "link", "set", "tth-up", "up")
	ip("-n", o, "-6", "addr", "add", "2001:db8:100::2/64", "dev", "eth0", "nodad")
	ip("-n", o, "link", "set", "eth0", "up")
	ip("-n", o, "-6", "route", "add", "fd00:88::/64", "via", "2001:db8:100::1") // for the direct-routing check
	if out, err := testutil.InNS(h, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"); err != nil {
		t.Fatalf("forwarding: %v: %s", err, out)
	}
	p := &portTopo{host: "/run/netns/" + h, sandbox: "/run/netns/" + s, outside: "/run/netns/" + o, hostName: h,
		net: Network{ID: "n", Bridge: "tth-br", Subnet6: netip.MustParsePrefix("fd00:88::/64"), Masquerade: true}}
	p.serve6(t)
	return p
}

// serve6 is serve over IPv6: TCP :80 answers "sandbox <client>", UDP :53
// "pong <client>".
func (p *portTopo) serve6(t *testing.T) {
	var l net.Listener
	var u net.PacketConn
	err := netns.Do(p.sandbox, func() (err error) {
		if l, err = net.Listen("tcp6", "[::]:80"); err != nil {
			return err
		}
		u, err = net.ListenPacket("udp6", "[::]:53")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); u.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "sandbox %s", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := u.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = u.WriteTo([]byte("pong "+from.(*net.UDPAddr).IP.String()), from)
		}
	}()
}

// dial6 connects from namespace ns to addr over network ("tcp6", "udp6")
// and returns what the server said (UDP: after sending "ping").
func dial6(ns, network, addr string) (string, error) {
	var out []byte
	err := netns.Do(ns, func() error {
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if network == "udp6" {
			if _, err := c.Write([]byte("ping")); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			out = buf[:n]
			return err
		}
		out, err = io.ReadAll(c)
		return err
	})
	return string(out), err
}

func TestKernelPortsTraffic6(t *testing.T) {
	p := newPortTopo6(t)
	sb := netip.MustParseAddr("fd00:88::2")
	anyTCP := PortMapping{Proto: "tcp", HostPort: 8080, SandboxIP: sb, SandboxPort: 80}
	oneTCP := PortMapping{Proto: "tcp", HostIP: netip.MustParseAddr("2001:db8:100::1"), HostPort: 8081, SandboxIP: sb, SandboxPort: 80}
	anyUDP := PortMapping{Proto: "udp", HostIP: netip.IPv6Unspecified(), HostPort: 5353, SandboxIP: sb, SandboxPort: 53}
	f, err := NewNFTWith(Options{NetNS: p.host, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ctx := context.Background()
	if err := f.Sync(ctx, []Network{p.net}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.AddPorts(ctx, []PortMapping{anyTCP, oneTCP, anyUDP}); err != nil {
		t.Fatal(err)
	}
	dump, _ := testutil.InNS(p.hostName, "nft", "list", "table", "ip6", TableName)
	t.Logf("ip6 table:\n%s", dump)

	out, err := dial6(p.outside, "tcp6", "[2001:db8:100::1]:8080")
	wantReply(t, "outside -> any", out, err, "sandbox 2001:db8:100::2")
	out, err = dial6(p.outside, "tcp6", "[2001:db8:100::3]:8080")
	wantReply(t, "outside -> any, second address", out, err, "sandbox 2001:db8:100::2")
	out, err = dial6(p.outside, "tcp6", "[2001:db8:100::1]:8081")
	wantReply(t, "outside -> specific", out, err, "sandbox 2001:db8:100::2")
	out, err = dial6(p.outside, "tcp6", "[2001:db8:100::3]:8081")
	wantRefused(t, "outside -> specific port through another address", out, err)
	out, err = dial6(p.host, "tcp6", "[2001:db8:100::1]:8080")
	wantReply(t, "host -> any", out, err, "sandbox 2001:db8:100::1")
	out, err = dial6(p.sandbox, "tcp6", "[2001:db8:100::1]:8080")
	wantReply(t, "hairpin", out, err, "sandbox fd00:88::1") // NAT66 masquerade: the reply comes back through the host
	out, err = dial6(p.outside, "udp6", "[2001:db8:100::1]:5353")
	wantReply(t, "udp", out, err, "pong 2001:db8:100::2")
	out, err = dial6(p.host, "tcp6", "[::1]:8080")
	wantRefused(t, "::1 (the proxy's)", out, err)
	out, err = dial6(p.outside, "tcp6", "[fd00:88::2]:80")
	wantRefused(t, "direct routing to the sandbox (gateway mode nat)", out, err)

	if err := f.RemovePorts(ctx, []PortMapping{anyTCP, anyUDP}); err != nil {
		t.Fatal(err)
	}
	out, err = dial6(p.outside, "tcp6", "[2001:db8:100::1]:8080")
	wantRefused(t, "outside -> removed port", out, err)
	out, err = dial6(p.outside, "tcp6", "[2001:db8:100::1]:8081")
	wantReply(t, "outside -> specific, still published", out, err, "sandbox 2001:db8:100::2")
}

// A router advertisement from a sandbox configures nothing on the host,
// even on a bridge that accepts them (accept_ra=2, which a forwarding host
// needs to honour one): before Sync the host takes the sandbox as its
// default router (the check can fail), after it the advertisement is
// counted and dropped by the ip6 table's input chain.
func TestKernelRouterAdvertDropped(t *testing.T) {
	p := newPortTopo6(t)
	if out, err := testutil.InNS(p.hostName, "sysctl", "-qw", "net.ipv6.conf.tth-br.accept_ra=2"); err != nil {
		t.Fatalf("accept_ra: %v: %s", err, out)
	}
	defaultRoute := func() string {
		out, err := testutil.InNS(p.hostName, "ip", "-6", "route", "show", "default")
		if err != nil {
			t.Fatalf("ip route: %v: %s", err, out)
		}
		return strings.TrimSpace(out)
	}
	// Before Tether's rules: the advertisement installs a default route
	// (the kernel handles it on receipt; wait for it with a deadline).
	sendRA(t, p.sandbox)
	deadline := time.Now().Add(5 * time.Second)
	for defaultRoute() == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if defaultRoute() == "" {
		t.Fatal("without the rule the host ignored the advertisement: the check cannot tell")
	}
	testutil.Must(t, "ip", "-n", p.hostName, "-6", "route", "flush", "default")

	f, err := NewNFTWith(Options{NetNS: p.host, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Sync(context.Background(), []Network{p.net}, nil); err != nil {
		t.Fatal(err)
	}
	sendRA(t, p.sandbox)
	// The counter is written before the drop: once it shows the packet,
	// the kernel is done with it.
	counted := func() bool {
		out, _ := testutil.InNS(p.hostName, "nft", "list", "chain", "ip6", TableName, ChainInput)
		return strings.Contains(out, "counter packets 1 ")
	}
	deadline = time.Now().Add(5 * time.Second)
	for !counted() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !counted() {
		out, _ := testutil.InNS(p.hostName, "nft", "list", "chain", "ip6", TableName, ChainInput)
		t.Fatalf("the advertisement was not counted by the input chain:\n%s", out)
	}
	if r := defaultRoute(); r != "" {
		t.Errorf("the host took a default route from a sandbox's advertisement: %s", r)
	}
	// The counter does not make the rule look foreign: a restart keeps it.
	c, err := nftables.New(nftables.WithNetNSFd(nsFd(t, p.host)))
	if err != nil {
		t.Fatal(err)
	}
	h := ruleHandlesOf(t, c, fam6)
	if err := f.Sync(context.Background(), []Network{p.net}, nil); err != nil {
		t.Fatal(err)
	}
	if got := ruleHandlesOf(t, c, fam6); !slices.Equal(got, h) {
		t.Errorf("Sync rebuilt the ip6 table after the counter moved: %v, was %v", got, h)
	}
}

func nsFd(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// sendRA sends, from namespace ns, a router advertisement (router lifetime
// 1800 s, no options) to ff02::1 on eth0, hop limit 255 as RFC 4861 wants.
func sendRA(t *testing.T, ns string) {
	t.Helper()
	err := netns.Do(ns, func() error {
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		defer c.Close()
		eth0, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		pc := c.IPv6PacketConn()
		if err := pc.SetMulticastHopLimit(255); err != nil {
			return err
		}
		if err := pc.SetMulticastInterface(eth0); err != nil {
			return err
		}
		m := icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{
			Data: []byte{64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}}} // hop limit, flags, lifetime, reachable, retrans
		b, err := m.Marshal(nil) // the kernel fills in the ICMPv6 checksum
		if err != nil {
			return err
		}
		_, err = c.WriteTo(b, &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: "eth0"})
		return err
	})
	if err != nil {
		t.Fatalf("send router advertisement: %v", err)
	}
}
