package firewall

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

func newFakeGuard() (*VXLANGuard, *fakeConn) {
	c := newFakeConn()
	return &VXLANGuard{c: c}, c
}

func newFakeGuard6() (*VXLANGuard, *fakeConn) {
	c := newFakeConn()
	return &VXLANGuard{c: c, ipv6: true}, c
}

// guardNodes reads the ip table's set addresses back from the fake, sorted.
func guardNodes(t *testing.T, c *fakeConn) []string {
	t.Helper()
	return guardNodesIn(t, c, fam4)
}

// guardNodesIn reads fm's table's set addresses back from the fake, sorted.
func guardNodesIn(t *testing.T, c *fakeConn, fm *family) []string {
	t.Helper()
	ft := c.table(fm.nf, VXLANTable)
	if ft == nil || ft.set(VXLANSet) == nil {
		t.Fatalf("no table %s %s with set %s", fm.name, VXLANTable, VXLANSet)
	}
	var out []string
	for _, e := range ft.set(VXLANSet).els {
		a, _ := netip.AddrFromSlice(e.Key)
		out = append(out, a.String())
	}
	slices.Sort(out)
	return out
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestVXLANGuardSetNodes(t *testing.T) {
	ctx := context.Background()
	steps := []struct {
		name        string
		nodes       []netip.Addr
		want        []string
		wantBatches int // batches after the step
	}{
		{"first call creates the table", addrs("198.18.0.11", "198.18.0.10"), []string{"198.18.0.10", "198.18.0.11"}, 1},
		{"same nodes: no batch", addrs("198.18.0.10", "198.18.0.11"), []string{"198.18.0.10", "198.18.0.11"}, 1},
		{"one joins, one leaves: one batch", addrs("198.18.0.10", "198.18.0.12"), []string{"198.18.0.10", "198.18.0.12"}, 2},
		{"IPv6, mapped and duplicate addresses", addrs("198.18.0.10", "::ffff:198.18.0.12", "2001:db8::1", "198.18.0.10"), []string{"198.18.0.10", "198.18.0.12"}, 2},
		{"no nodes: empty set", nil, nil, 3},
	}
	g, c := newFakeGuard()
	for _, s := range steps {
		if err := g.SetNodes(ctx, s.nodes); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := guardNodes(t, c); !slices.Equal(got, s.want) {
			t.Errorf("%s: set = %v, want %v", s.name, got, s.want)
		}
		if c.batches != s.wantBatches {
			t.Errorf("%s: %d batches, want %d", s.name, c.batches, s.wantBatches)
		}
	}
	if c.created["table"] != 1 || c.created["chain"] != 1 || c.created["rule"] != 1 {
		t.Errorf("created %v, want the table, one chain and one rule once", c.created)
	}
	if c.table(nftables.TableFamilyIPv6, VXLANTable) != nil {
		t.Error("a guard without IPv6 made table ip6 " + VXLANTable)
	}
}

// With IPv6 (ip6tables), members' IPv6 addresses go to table ip6
// tether_vxlan, IPv4 ones to table ip tether_vxlan, in one batch per call.
func TestVXLANGuardSetNodesIPv6(t *testing.T) {
	ctx := context.Background()
	steps := []struct {
		name        string
		nodes       []netip.Addr
		want4       []string
		want6       []string
		wantBatches int
	}{
		{"IPv4 underlay: the ip6 set is empty", addrs("198.18.0.10", "198.18.0.11"), []string{"198.18.0.10", "198.18.0.11"}, nil, 1},
		{"IPv6 underlay: both change in one batch", addrs("2001:db8:18::11", "2001:db8:18::10"), nil, []string{"2001:db8:18::10", "2001:db8:18::11"}, 2},
		{"same nodes: no batch", addrs("2001:db8:18::10", "2001:db8:18::11"), nil, []string{"2001:db8:18::10", "2001:db8:18::11"}, 2},
		{"one joins, one leaves", addrs("2001:db8:18::10", "2001:db8:18::12"), nil, []string{"2001:db8:18::10", "2001:db8:18::12"}, 3},
		{"link-local, zoned, mapped and duplicate addresses",
			addrs("2001:db8:18::10", "fe80::1", "fe80::2%eth0", "::ffff:198.18.0.12", "2001:db8:18::10", "fd00:18::1"),
			[]string{"198.18.0.12"}, []string{"2001:db8:18::10", "fd00:18::1"}, 4},
		{"no nodes: both sets empty", nil, nil, nil, 5},
	}
	g, c := newFakeGuard6()
	for _, s := range steps {
		if err := g.SetNodes(ctx, s.nodes); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := guardNodesIn(t, c, fam4); !slices.Equal(got, s.want4) {
			t.Errorf("%s: ip set = %v, want %v", s.name, got, s.want4)
		}
		if got := guardNodesIn(t, c, fam6); !slices.Equal(got, s.want6) {
			t.Errorf("%s: ip6 set = %v, want %v", s.name, got, s.want6)
		}
		if c.batches != s.wantBatches {
			t.Errorf("%s: %d batches, want %d", s.name, c.batches, s.wantBatches)
		}
	}
	if c.created["table"] != 2 || c.created["chain"] != 2 || c.created["rule"] != 2 {
		t.Errorf("created %v, want two tables, each with one chain and one rule, once", c.created)
	}
}

// The ip table is the same with or without IPv6; the ip6 one differs only
// in its set type and the source address it matches.
func TestVXLANGuardRuleIPv6(t *testing.T) {
	g4, c4 := newFakeGuard()
	g6, c6 := newFakeGuard6()
	for _, g := range []*VXLANGuard{g4, g6} {
		if err := g.SetNodes(context.Background(), addrs("198.18.0.10", "2001:db8:18::10")); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := c4.dumpFamily(nftables.TableFamilyIPv4), c6.dumpFamily(nftables.TableFamilyIPv4); a != b {
		t.Errorf("table ip %s differs with IPv6:\n%s\nwithout:\n%s", VXLANTable, b, a)
	}
	if rs := c6.table(nftables.TableFamilyIPv4, VXLANTable).rules[VXLANChain]; len(rs) != 1 || !sameExprs(rs[0].Exprs, vxlanRule(fam4)) ||
		!slices.ContainsFunc(rs[0].Exprs, func(e expr.Any) bool {
			p, ok := e.(*expr.Payload)
			return ok && p.Base == expr.PayloadBaseNetworkHeader && p.Offset == 12 && p.Len == 4
		}) {
		t.Errorf("ip rule with IPv6 is not `ip saddr != @nodes`")
	}
	ft := c6.table(nftables.TableFamilyIPv6, VXLANTable)
	if s := ft.set(VXLANSet); s == nil || s.s.KeyType.Name != nftables.TypeIP6Addr.Name {
		t.Fatalf("ip6 set %s: %+v, want type ipv6_addr", VXLANSet, s)
	}
	ch := ft.chain(VXLANChain)
	if ch == nil || *ch.Hooknum != *nftables.ChainHookInput || *ch.Priority != *nftables.ChainPriorityRaw || *ch.Policy != nftables.ChainPolicyAccept {
		t.Fatalf("ip6 chain %s: %+v, want filter hook input priority raw policy accept", VXLANChain, ch)
	}
	rs := ft.rules[VXLANChain]
	if len(rs) != 1 || ruleComment(rs[0]) != vxlanComment {
		t.Fatalf("ip6 chain: %d rules, want ours", len(rs))
	}
	var saddr *expr.Payload
	for _, e := range rs[0].Exprs {
		if p, ok := e.(*expr.Payload); ok && p.Base == expr.PayloadBaseNetworkHeader {
			saddr = p
		}
	}
	if saddr == nil || saddr.Offset != 8 || saddr.Len != 16 {
		t.Errorf("ip6 rule matches %+v, want the IPv6 source address (offset 8, 16 bytes)", saddr)
	}
}

// Without IPv6 a table ip6 tether_vxlan (an earlier run's) is neither read
// nor changed.
func TestVXLANGuardLeavesIP6Alone(t *testing.T) {
	g6, c := newFakeGuard6()
	if err := g6.SetNodes(context.Background(), addrs("2001:db8:18::10")); err != nil {
		t.Fatal(err)
	}
	before := c.dumpFamily(nftables.TableFamilyIPv6)
	g := &VXLANGuard{c: c}
	if err := g.SetNodes(context.Background(), addrs("2001:db8:18::11", "198.18.0.10")); err != nil {
		t.Fatal(err)
	}
	if after := c.dumpFamily(nftables.TableFamilyIPv6); after != before {
		t.Errorf("ip6 table changed by a guard without IPv6:\n%s\nwas:\n%s", after, before)
	}
	if got := guardNodes(t, c); !slices.Equal(got, []string{"198.18.0.10"}) {
		t.Errorf("ip set = %v", got)
	}
}

// Repair puts table ip6 tether_vxlan back alone when only it was broken,
// in one batch, and leaves the ip table as it was.
func TestVXLANGuardRepairIPv6(t *testing.T) {
	ctx := context.Background()
	g, c := newFakeGuard6()
	if err := g.SetNodes(ctx, addrs("2001:db8:18::10", "2001:db8:18::11")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		breakIt func()
	}{
		{"ip6 table deleted", func() {
			c.tables = slices.DeleteFunc(c.tables, func(ft *fakeTable) bool { return ft.t.Family == nftables.TableFamilyIPv6 })
		}},
		{"ip6 element deleted", func() { clear(c.table(nftables.TableFamilyIPv6, VXLANTable).set(VXLANSet).els) }},
		{"ip6 rule replaced", func() {
			ft := c.table(nftables.TableFamilyIPv6, VXLANTable)
			ft.rules[VXLANChain] = []*nftables.Rule{{Exprs: vxlanRule(fam4), UserData: comment(vxlanComment)}} // matches the wrong bytes
		}},
	} {
		ip4 := c.dumpFamily(nftables.TableFamilyIPv4)
		before := c.batches
		tc.breakIt()
		if err := g.Repair(ctx); err != nil {
			t.Fatalf("%s: Repair: %v", tc.name, err)
		}
		if got := guardNodesIn(t, c, fam6); !slices.Equal(got, []string{"2001:db8:18::10", "2001:db8:18::11"}) {
			t.Errorf("%s: ip6 set after Repair = %v", tc.name, got)
		}
		if rs := c.table(nftables.TableFamilyIPv6, VXLANTable).rules[VXLANChain]; len(rs) != 1 || !sameExprs(withoutCounters(rs[0].Exprs), withoutCounters(vxlanRule(fam6))) {
			t.Errorf("%s: ip6 rule not restored", tc.name)
		}
		if c.batches != before+1 || c.dumpFamily(nftables.TableFamilyIPv4) != ip4 {
			t.Errorf("%s: %d batches, ip table changed %v; want one batch and the ip table untouched", tc.name, c.batches-before, c.dumpFamily(nftables.TableFamilyIPv4) != ip4)
		}
	}
}

func TestVXLANGuardRule(t *testing.T) {
	g, c := newFakeGuard()
	if err := g.SetNodes(context.Background(), addrs("198.18.0.10")); err != nil {
		t.Fatal(err)
	}
	ft := c.table(nftables.TableFamilyIPv4, VXLANTable)
	ch := ft.chain(VXLANChain)
	if ch == nil || *ch.Hooknum != *nftables.ChainHookInput || *ch.Priority != *nftables.ChainPriorityRaw || *ch.Policy != nftables.ChainPolicyAccept {
		t.Fatalf("chain %s: %+v, want filter hook input priority raw policy accept", VXLANChain, ch)
	}
	rs := ft.rules[VXLANChain]
	if len(rs) != 1 {
		t.Fatalf("%d rules, want 1", len(rs))
	}
	var lookup *expr.Lookup
	var drop bool
	for _, e := range rs[0].Exprs {
		switch e := e.(type) {
		case *expr.Lookup:
			lookup = e
		case *expr.Verdict:
			drop = e.Kind == expr.VerdictDrop
		}
	}
	if lookup == nil || lookup.SetName != VXLANSet || !lookup.Invert || !drop {
		t.Errorf("rule %v: want a drop of what is not in @%s", rs[0].Exprs, VXLANSet)
	}
}

func TestVXLANGuardRepair(t *testing.T) {
	ctx := context.Background()
	g, c := newFakeGuard()
	if err := g.Repair(ctx); err != nil || len(c.tables) != 0 {
		t.Fatalf("Repair before SetNodes: %v, tables %d; want nothing written", err, len(c.tables))
	}
	if err := g.SetNodes(ctx, addrs("198.18.0.10")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		breakIt func()
	}{
		{"table deleted (nft flush ruleset)", func() { c.tables = nil }},
		{"element deleted", func() {
			ft := c.table(nftables.TableFamilyIPv4, VXLANTable)
			clear(ft.set(VXLANSet).els)
		}},
		{"rule replaced", func() {
			ft := c.table(nftables.TableFamilyIPv4, VXLANTable)
			ft.rules[VXLANChain] = []*nftables.Rule{{Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}}}
		}},
		{"chain policy changed", func() {
			ft := c.table(nftables.TableFamilyIPv4, VXLANTable)
			drop := nftables.ChainPolicyDrop
			ft.chain(VXLANChain).Policy = &drop
		}},
	}
	for _, tc := range cases {
		tc.breakIt()
		if err := g.Repair(ctx); err != nil {
			t.Fatalf("%s: Repair: %v", tc.name, err)
		}
		if got := guardNodes(t, c); !slices.Equal(got, []string{"198.18.0.10"}) {
			t.Errorf("%s: set after Repair = %v", tc.name, got)
		}
		ft := c.table(nftables.TableFamilyIPv4, VXLANTable)
		if rs := ft.rules[VXLANChain]; len(rs) != 1 || ruleComment(rs[0]) != vxlanComment || *ft.chain(VXLANChain).Policy != nftables.ChainPolicyAccept {
			t.Errorf("%s: chain not restored: %d rules", tc.name, len(rs))
		}
	}
	before := c.batches
	if err := g.Repair(ctx); err != nil || c.batches != before {
		t.Errorf("Repair of an intact table: %v, %d batches (want none)", err, c.batches-before)
	}
}

func TestVXLANGuardFailedBatch(t *testing.T) {
	ctx := context.Background()
	g, c := newFakeGuard()
	c.failFlushes = 1
	if err := g.SetNodes(ctx, addrs("198.18.0.10")); err == nil {
		t.Fatal("SetNodes with a failing batch: no error")
	}
	if len(c.tables) != 0 {
		t.Fatal("a failed batch left a table")
	}
	g6, c6 := newFakeGuard6()
	c6.failFlushes = 1
	if err := g6.SetNodes(ctx, addrs("2001:db8:18::10")); err == nil || len(c6.tables) != 0 {
		t.Fatalf("SetNodes with IPv6 and a failing batch: %v, %d tables; want an error and neither table", err, len(c6.tables))
	}
	if err := g.Repair(ctx); err != nil {
		t.Fatal(err)
	}
	if got := guardNodes(t, c); !slices.Equal(got, []string{"198.18.0.10"}) {
		t.Errorf("set after Repair = %v", got)
	}
}

// TestKernelVXLANGuard: real traffic in namespaces the test creates. A
// "node" with a UDP socket on port 4789 (what a VXLAN device opens) and a
// "peer" on a veth with a member and a stranger address of each family:
//
//	node  eth0: 198.18.0.1/24 2001:db8:18::1/64
//	peer  eth0: 198.18.0.2 (member), .3; 2001:db8:18::2 (member), ::3
//
// A stranger's datagram is sent first and a member's after it on the same
// link, so the first one the node receives says whether the stranger's got
// through (no waiting for something not to arrive).
func TestKernelVXLANGuard(t *testing.T) {
	testutil.RequireRoot(t)
	node, peer := testutil.NetNS(t, "tth-vxn"), testutil.NetNS(t, "tth-vxp")
	ip := func(args ...string) { t.Helper(); testutil.Must(t, "ip", args...) }
	ip("-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer)
	for i, ns := range []string{node, peer} {
		for _, a := range []string{"198.18.0.%d/24", "2001:db8:18::%d/64"} {
			ip("-n", ns, "addr", "add", fmt.Sprintf(a, i+1), "dev", "eth0", "nodad")
		}
		ip("-n", ns, "link", "set", "eth0", "up")
	}
	ip("-n", peer, "addr", "add", "198.18.0.3/24", "dev", "eth0")
	ip("-n", peer, "addr", "add", "2001:db8:18::3/64", "dev", "eth0", "nodad")
	var conn *net.UDPConn
	if err := netns.Do("/run/netns/"+node, func() (err error) {
		conn, err = net.ListenUDP("udp", &net.UDPAddr{Port: VXLANPort}) // both families
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	g, err := NewVXLANGuardWith(VXLANGuardOptions{NetNS: "/run/netns/" + node, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if err := g.SetNodes(context.Background(), addrs("198.18.0.2", "2001:db8:18::2", "198.18.0.1", "2001:db8:18::1")); err != nil {
		t.Fatal(err)
	}
	// first sends from each source to dst in order and returns the
	// payload the node received first.
	first := func(dst string, from ...string) string {
		t.Helper()
		for _, src := range from {
			err := netns.Do("/run/netns/"+peer, func() error {
				c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0)),
					net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(dst), VXLANPort)))
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.Write([]byte("from " + src))
				return err
			})
			if err != nil {
				t.Fatalf("send from %s: %v", src, err)
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second)) // a member's datagram must come
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("nothing received on port %d: %v", VXLANPort, err)
		}
		return string(buf[:n])
	}
	for _, tc := range []struct{ family, dst, stranger, member string }{
		{"ip", "198.18.0.1", "198.18.0.3", "198.18.0.2"},
		{"ip6", "2001:db8:18::1", "2001:db8:18::3", "2001:db8:18::2"},
	} {
		if got := first(tc.dst, tc.stranger, tc.member); got != "from "+tc.member {
			t.Errorf("%s: the node received %q first; want the member's datagram (the stranger's dropped)", tc.family, got)
		}
		out, err := testutil.InNS(node, "nft", "list", "chain", tc.family, VXLANTable, VXLANChain)
		if err != nil {
			t.Fatalf("nft list chain %s %s: %v: %s", tc.family, VXLANTable, err, out)
		}
		rule := regexp.MustCompile(`udp dport 4789 ` + tc.family + ` saddr != @nodes counter packets 1 bytes \d+ drop`)
		if !rule.MatchString(out) {
			t.Errorf("%s: want one packet counted by the drop rule:\n%s", tc.family, out)
		}
	}
	// The stranger becomes a member, the member leaves: the roles swap.
	if err := g.SetNodes(context.Background(), addrs("198.18.0.3", "2001:db8:18::3")); err != nil {
		t.Fatal(err)
	}
	if got := first("2001:db8:18::1", "2001:db8:18::2", "2001:db8:18::3"); got != "from 2001:db8:18::3" {
		t.Errorf("after SetNodes: the node received %q first; want the new member's (the old member's dropped)", got)
	}
}
