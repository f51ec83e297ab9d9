package firewall

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Unit tests of table ip6 tether (Options.IPv6) over the in-memory fakeConn.

var (
	// dual-stack, masqueraded
	net6A = Network{ID: "a", Bridge: "tth-a", Subnet: netip.MustParsePrefix("10.1.0.0/24"),
		Subnet6: netip.MustParsePrefix("fd00:a::/64"), Masquerade: true}
	// IPv6 only, routed
	net6R = Network{ID: "r", Bridge: "tth-r", Subnet6: netip.MustParsePrefix("2001:db8:5::/64"), Masquerade: true, Mode: ModeRouted}
	// IPv4 only (netB)

	p6Any = PortMapping{Proto: "tcp", HostPort: 8080, SandboxIP: netip.MustParseAddr("fd00:a::2"), SandboxPort: 80}
	p6One = PortMapping{Proto: "udp", HostIP: netip.MustParseAddr("2001:db8::1"), HostPort: 5353,
		SandboxIP: netip.MustParseAddr("fd00:a::3"), SandboxPort: 53}
)

func newNFT6(c *fakeConn) *NFT {
	f := newNFT(c)
	f.opts.IPv6 = true
	return f
}

// What a network turns into in the ip6 table, by kind.
func TestEntriesOf6(t *testing.T) {
	sub6 := netip.MustParsePrefix("fd00:9::/64")
	sub := netip.MustParsePrefix("10.9.0.0/24")
	for _, tt := range []struct {
		name string
		n    Network
		want map[string][]string // set -> ids; sets not named must be empty
	}{
		{"dual stack, masquerade", Network{Bridge: "br", Subnet: sub, Subnet6: sub6, Masquerade: true},
			map[string][]string{SetMasq: {"fd00:9::/64"}}},
		{"IPv6 only, host bits masked", Network{Bridge: "br", Subnet6: netip.MustParsePrefix("fd00:9::5/64"), Masquerade: true},
			map[string][]string{SetMasq: {"fd00:9::/64"}}},
		{"masquerade off", Network{Bridge: "br", Subnet6: sub6}, nil},
		{"IPv4 only: closed, nothing opened", Network{Bridge: "br", Subnet: sub, Masquerade: true, Mode: ModeNATUnprotected,
			Trusted: []string{"eth0"}}, nil},
		{"internal", Network{Bridge: "br", Subnet6: sub6, Masquerade: true, Internal: true}, map[string][]string{SetInternal: {"br"}}},
		{"IPv4-only internal", Network{Bridge: "br", Subnet: sub, Internal: true}, map[string][]string{SetInternal: {"br"}}},
		{"routed: no NAT66", Network{Bridge: "br", Subnet6: sub6, Masquerade: true, Mode: ModeRouted},
			map[string][]string{SetRouted: {"br"}}},
		{"nat-unprotected and trusted", Network{Bridge: "br", Subnet6: sub6, Mode: ModeNATUnprotected, Trusted: []string{"eth0"}},
			map[string][]string{SetUnprotected: {"br"}, SetTrusted: {"eth0 . br"}}},
		{"an IPv4 prefix in Subnet6 is no IPv6 subnet", Network{Bridge: "br", Subnet6: sub, Masquerade: true}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := familyEntries(fam6, tt.n)
			if got := e.ids(fam6.key(SetBridges)); !slices.Equal(got, []string{"br"}) {
				t.Errorf("bridges = %v, want [br]", got)
			}
			if got := e.ids(fam6.key(SetSameBridge)); !slices.Equal(got, []string{"br . br"}) {
				t.Errorf("same_bridge = %v, want [br . br]", got)
			}
			for _, set := range []string{SetInternal, SetMasq, SetUnprotected, SetRouted, SetTrusted} {
				if got := e.ids(fam6.key(set)); !slices.Equal(got, tt.want[set]) {
					t.Errorf("set %s = %v, want %v", set, got, tt.want[set])
				}
			}
			for k := range e {
				if !strings.HasPrefix(k, "ip6 ") {
					t.Errorf("entry key %q is not the ip6 table's", k)
				}
			}
		})
	}
}

// Sync with IPv6 builds both tables in one batch; the ip table is exactly
// what it is without IPv6; a restart sends nothing.
func TestSyncIPv6(t *testing.T) {
	ports := []PortMapping{pAny, p6Any, p6One}
	c4 := newFakeConn()
	if err := newNFT(c4).Sync(ctx, []Network{net6A, net6R, netB}, []PortMapping{pAny}); err != nil {
		t.Fatal(err)
	}
	c := newFakeConn()
	if err := newNFT6(c).Sync(ctx, []Network{net6A, net6R, netB}, ports); err != nil {
		t.Fatal(err)
	}
	if c.batches != 1 {
		t.Errorf("%d batches, want 1", c.batches)
	}
	want4 := entriesOf(net6A, net6R, netB).merge(portEntries(pAny))
	if got := c.ours().String(); got != want4.String() {
		t.Errorf("ip table holds\n %s\nwant\n %s", got, want4)
	}
	six := c.oursIn(fam6)
	for set, want := range map[string][]string{
		SetBridges:    {"tth-a", "tth-b", "tth-r"},
		SetSameBridge: {"tth-a . tth-a", "tth-b . tth-b", "tth-r . tth-r"},
		SetMasq:       {"fd00:a::/64"},
		SetRouted:     {"tth-r"},
		MapPortsAny:   {"ip6 tcp . 8080 : fd00:a::2 . 80"},
		MapPorts:      {"ip6 2001:db8::1 . udp . 5353 : fd00:a::3 . 53"},
		SetPublished:  {"fd00:a::2 . tcp . 80", "fd00:a::3 . udp . 53"},
	} {
		if got := six.ids(fam6.key(set)); !slices.Equal(got, want) {
			t.Errorf("ip6 set %s = %v, want %v", set, got, want)
		}
	}
	ft := c.table(nftables.TableFamilyIPv6, TableName)
	for ch, want := range map[string]int{ChainRaw: 1, ChainForward: 11, ChainPostroute: 2, ChainPrerouting: 2, ChainOutput: 2, ChainInput: 1} {
		if n := len(ft.rules[ch]); n != want {
			t.Errorf("ip6 %s chain has %d rules, want %d", ch, n, want)
		}
	}
	before := c.dump()
	if err := newNFT6(c).Sync(ctx, []Network{netB, net6R, net6A}, ports); err != nil {
		t.Fatal(err)
	}
	if c.batches != 1 || c.dump() != before {
		t.Errorf("a second Sync with IPv6 changed the tables (%d batches):\n%s\nwas\n%s", c.batches, c.dump(), before)
	}
	// The ip table is what an IPv4-only daemon with the same networks and
	// IPv4 ports builds: no churn on upgrade, whichever ip6tables says.
	if got, want := c.dumpFamily(nftables.TableFamilyIPv4), c4.dumpFamily(nftables.TableFamilyIPv4); got != want {
		t.Errorf("ip table with IPv6:\n%s\nwithout:\n%s", got, want)
	}
}

// Add and Remove of a dual-stack network are one batch over both tables;
// AddPorts of IPv4 and IPv6 mappings together is one batch too.
func TestAddRemoveIPv6(t *testing.T) {
	c := newFakeConn()
	f := newNFT6(c)
	mustSync(t, f, netB)
	step := func(name string, op func() error, want4, want6 entries) {
		t.Helper()
		b := c.batches
		if err := op(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.batches != b+1 {
			t.Errorf("%s: %d batches, want 1", name, c.batches-b)
		}
		if got := c.ours().String(); got != want4.String() {
			t.Errorf("%s: ip table\n %s\nwant\n %s", name, got, want4)
		}
		if got := c.oursIn(fam6).String(); got != want6.String() {
			t.Errorf("%s: ip6 table\n %s\nwant\n %s", name, got, want6)
		}
	}
	e4 := func(nets ...Network) entries { return entriesOf(nets...) }
	e6 := func(nets ...Network) entries { return familyEntries(fam6, nets...) }
	step("add dual stack", func() error { return f.Add(ctx, net6A) }, e4(netB, net6A), e6(netB, net6A))
	step("add IPv6 only", func() error { return f.Add(ctx, net6R) }, e4(netB, net6A, net6R), e6(netB, net6A, net6R))
	step("ports of both families", func() error { return f.AddPorts(ctx, []PortMapping{pAny, p6Any}) },
		e4(netB, net6A, net6R).merge(portEntries(pAny)), e6(netB, net6A, net6R).merge(portEntries(p6Any)))
	step("remove the IPv6 port", func() error { return f.RemovePorts(ctx, []PortMapping{p6Any}) },
		e4(netB, net6A, net6R).merge(portEntries(pAny)), e6(netB, net6A, net6R))
	step("remove dual stack", func() error { return f.Remove(ctx, net6A) },
		e4(netB, net6R).merge(portEntries(pAny)), e6(netB, net6R))
	if f.fallbacks != 0 {
		t.Errorf("%d fallbacks to a full sync", f.fallbacks)
	}
	// The ip6 table deleted behind our back comes back whole with the
	// next change, the ip table untouched.
	c.DelTable(fam6.table())
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	step("add after ip6 table loss", func() error { return f.AddPorts(ctx, []PortMapping{p6One}) },
		e4(netB, net6R).merge(portEntries(pAny)), e6(netB, net6R).merge(portEntries(p6One)))
	if c.created["table"] != 3 {
		t.Errorf("%d tables created, want 3 (ip, ip6, ip6 again)", c.created["table"])
	}
}

// Repair notices either table missing or emptied.
func TestRepairIPv6(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(c *fakeConn)
	}{
		{"ip6 table deleted", func(c *fakeConn) { c.DelTable(fam6.table()) }},
		{"ip6 element deleted", func(c *fakeConn) {
			s := &nftables.Set{Table: fam6.table(), Name: SetMasq}
			els, _ := c.GetSetElements(s)
			_ = c.SetDeleteElements(s, els[:1])
		}},
		{"ip table deleted", func(c *fakeConn) { c.DelTable(table()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeConn()
			f := newNFT6(c)
			if err := f.Sync(ctx, []Network{net6A, netB}, []PortMapping{p6Any, pAny}); err != nil {
				t.Fatal(err)
			}
			want := c.dump()
			want4, want6 := c.ours().String(), c.oursIn(fam6).String()
			tc.tamper(c)
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			if changed, err := f.Repair(); !changed || err != nil {
				t.Fatalf("Repair = %v, %v; want true, nil", changed, err)
			}
			if c.ours().String() != want4 || c.oursIn(fam6).String() != want6 {
				t.Errorf("after Repair:\n%s\nwant\n%s", c.dump(), want)
			}
			if changed, err := f.Repair(); changed || err != nil {
				t.Errorf("second Repair = %v, %v; want false, nil", changed, err)
			}
		})
	}
}

// Without Options.IPv6 no ip6 table is created, read or deleted (one left
// by an earlier run stays as it was), and an IPv6 mapping is refused.
func TestIPv6Off(t *testing.T) {
	c := newFakeConn()
	mustSync(t, newNFT6(c), net6A) // an earlier run with ip6tables=true
	ft := c.table(nftables.TableFamilyIPv6, TableName)
	ft.rules[ChainForward][0].UserData = comment("changed by hand") // would be rebuilt if read
	before := c.dumpFamily(nftables.TableFamilyIPv6)
	f := newNFT(c)
	mustSync(t, f, net6A, netB)
	if err := f.Add(ctx, net6R); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(ctx, net6A); err != nil {
		t.Fatal(err)
	}
	c.DelTable(table())
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if changed, err := f.Repair(); !changed || err != nil {
		t.Fatalf("Repair = %v, %v", changed, err)
	}
	if got := c.dumpFamily(nftables.TableFamilyIPv6); got != before {
		t.Errorf("ip6 table changed with IPv6 off:\n%s\nwas\n%s", got, before)
	}
	if c.deleted["table"] != 1 { // the ip table, by this test
		t.Errorf("%d tables deleted", c.deleted["table"])
	}
	err := f.AddPorts(ctx, []PortMapping{p6Any})
	if !errors.Is(err, ErrInvalidPort) || !strings.Contains(err.Error(), "ip6tables") {
		t.Errorf("IPv6 mapping with IPv6 off: %v, want ErrInvalidPort naming ip6tables", err)
	}
	if err := f.Sync(ctx, nil, []PortMapping{p6Any}); !errors.Is(err, ErrInvalidPort) {
		t.Errorf("Sync with an IPv6 mapping and IPv6 off: %v, want ErrInvalidPort", err)
	}
}

// A fresh fake with IPv6 off never gets an ip6 table.
func TestIPv6OffCreatesNothing(t *testing.T) {
	c := newFakeConn()
	f := newNFT(c)
	mustSync(t, f, net6A, net6R)
	if err := f.AddPorts(ctx, []PortMapping{pAny}); err != nil {
		t.Fatal(err)
	}
	if ts, _ := c.ListTablesOfFamily(nftables.TableFamilyIPv6); len(ts) != 0 {
		t.Errorf("ip6 tables %v with IPv6 off", ts)
	}
	if got := c.ours().ids(SetMasq); !slices.Equal(got, []string{"10.1.0.0/24"}) {
		t.Errorf("masq = %v, want the IPv4 subnet only", got)
	}
}

// The kernel encoding of IPv6 port elements, written out by hand.
func TestPortElements6(t *testing.T) {
	sb2 := "fd00000a000000000000000000000002"
	for _, tt := range []struct {
		p        PortMapping
		set      string
		key, val string
		id       string
	}{
		{p6Any, MapPortsAny, "06000000" + "1f900000", sb2 + "00500000", "ip6 tcp . 8080 : fd00:a::2 . 80"},
		{PortMapping{Proto: "tcp", HostIP: netip.IPv6Unspecified(), HostPort: 8080, SandboxIP: p6Any.SandboxIP, SandboxPort: 80},
			MapPortsAny, "06000000" + "1f900000", sb2 + "00500000", "ip6 tcp . 8080 : fd00:a::2 . 80"},
		{p6One, MapPorts, "20010db8000000000000000000000001" + "11000000" + "14e90000", "fd00000a000000000000000000000003" + "00350000",
			"ip6 2001:db8::1 . udp . 5353 : fd00:a::3 . 53"},
	} {
		p, err := tt.p.normal(true)
		if err != nil {
			t.Fatal(err)
		}
		e := portEntries(p)
		k := fam6.key(tt.set)
		if got := e.ids(k); !slices.Equal(got, []string{tt.id}) {
			t.Errorf("%s: ids %v, want %s", tt.p, got, tt.id)
			continue
		}
		el := e[k][tt.id][0]
		if k, v := hex.EncodeToString(el.Key), hex.EncodeToString(el.Val); k != tt.key || v != tt.val {
			t.Errorf("%s: key %s val %s, want %s %s", tt.p, k, v, tt.key, tt.val)
		}
		back, ok := parsePort(tt.set, el)
		if !ok || back != p {
			t.Errorf("%s reads back as %v (%v)", p, back, ok)
		}
		if tt.set == MapPorts && int(portsKey6.Bytes) != len(el.Key) || int(portsVal6.Bytes) != len(el.Val) {
			t.Errorf("%s: types %d/%d bytes, element %d/%d", tt.p, portsKey6.Bytes, portsVal6.Bytes, len(el.Key), len(el.Val))
		}
		pub := e[fam6.key(SetPublished)]
		if len(pub) != 1 {
			t.Fatalf("published %v", pub)
		}
		for id, els := range pub {
			if back, ok := parsePublished(els[0]); !ok || publishedID(back) != id || len(els[0].Key) != 24 {
				t.Errorf("published %s reads back as %v", id, back)
			}
		}
	}
}

// Which mappings are refused, and where the rest go.
func TestPortFamilies(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("fd00:a::2")
	for _, tt := range []struct {
		name    string
		host    netip.Addr
		sandbox netip.Addr
		ipv6    bool
		want    string // entries key of the map, "" = ErrInvalidPort
	}{
		{"v4 any", netip.Addr{}, v4, true, MapPortsAny},
		{"v6 any", netip.Addr{}, v6, true, "ip6 " + MapPortsAny},
		{"v6 ::", netip.IPv6Unspecified(), v6, true, "ip6 " + MapPortsAny},
		{"v6 specific", netip.MustParseAddr("2001:db8::1"), v6, true, "ip6 " + MapPorts},
		{"v6 ::1 (never matches: the proxy serves it)", netip.IPv6Loopback(), v6, true, "ip6 " + MapPorts},
		{"mapped addresses are IPv4", netip.MustParseAddr("::ffff:198.51.100.1"), netip.MustParseAddr("::ffff:10.1.0.2"), false, MapPorts},
		{"v6 host, v4 sandbox", netip.MustParseAddr("2001:db8::1"), v4, true, ""},
		{":: host, v4 sandbox", netip.IPv6Unspecified(), v4, true, ""},
		{"v4 host, v6 sandbox", netip.MustParseAddr("198.51.100.1"), v6, true, ""},
		{"0.0.0.0 host, v6 sandbox", netip.IPv4Unspecified(), v6, true, ""},
		{"v6 with ip6tables off", netip.Addr{}, v6, false, ""},
		{"v6 multicast sandbox", netip.Addr{}, netip.MustParseAddr("ff02::1"), true, ""},
		{"v6 unspecified sandbox", netip.Addr{}, netip.IPv6Unspecified(), true, ""},
		{"v6 host with a zone", netip.MustParseAddr("fe80::1%eth0"), v6, true, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := PortMapping{Proto: "tcp", HostIP: tt.host, HostPort: 8080, SandboxIP: tt.sandbox, SandboxPort: 80}
			f := newNFT(newFakeConn())
			f.opts.IPv6 = tt.ipv6
			mustSync(t, f)
			err := f.AddPorts(ctx, []PortMapping{p})
			if tt.want == "" {
				if !errors.Is(err, ErrInvalidPort) {
					t.Errorf("AddPorts(%s) = %v, want ErrInvalidPort", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			n, _ := p.normal(tt.ipv6)
			if e := portEntries(n); len(e[tt.want]) != 1 {
				t.Errorf("%s lands in %v, want %s", p, e, tt.want)
			}
		})
	}
}

// The ip6 table's rules that differ from the ip table's.
func TestRules6(t *testing.T) {
	for _, o := range []Options{{}, {LoopbackDNAT: true}, {AllowDirectRouting: true}} {
		rs6, rs4 := rulesOf(fam6, o), rulesOf(fam4, o)
		by := func(rs []ruleSpec, chain string) []ruleSpec {
			return slices.DeleteFunc(slices.Clone(rs), func(r ruleSpec) bool { return r.chain != chain })
		}
		if n4, n6 := len(by(rs4, ChainForward)), len(by(rs6, ChainForward)); n4 != n6 {
			t.Errorf("%+v: forward rules ip %d, ip6 %d", o, n4, n6)
		}
		raw := by(rs6, ChainRaw)
		if len(raw) != 1 || !hasData(raw[0].exprs, netip.IPv6Loopback().AsSlice()) {
			t.Errorf("%+v: raw_prerouting %v, want the ::1 drop", o, raw)
		}
		for _, r := range by(rs6, ChainOutput) { // no LoopbackDNAT for IPv6
			if c, ok := r.exprs[1].(*expr.Cmp); !ok || c.Op != expr.CmpOpNeq || !slices.Equal(c.Data, netip.IPv6Loopback().AsSlice()) {
				t.Errorf("%+v: output rule %q does not skip ::1", o, r.comment)
			}
		}
		if post := by(rs6, ChainPostroute); len(post) != 2 {
			t.Errorf("%+v: ip6 postrouting has %d rules, want 2 (no loopback masquerade)", o, len(post))
		}
		in := by(rs6, ChainInput)
		if len(in) != 1 || !hasData(in[0].exprs, []byte{134}) || len(by(rs4, ChainInput)) != 0 {
			t.Errorf("%+v: input chain %v, want the router advertisement drop in ip6 only", o, in)
		}
		icmp := false
		for _, r := range by(rs6, ChainForward) {
			icmp = icmp || hasData(r.exprs, []byte{unix.IPPROTO_ICMPV6})
			for _, e := range r.exprs {
				if n, ok := e.(*expr.NAT); ok && n.Family != unix.NFPROTO_IPV6 {
					t.Errorf("%q: NAT family %d", r.comment, n.Family)
				}
			}
		}
		if !icmp {
			t.Errorf("%+v: no ICMPv6 accept into routed networks", o)
		}
	}
	if n := len(chains(fam6.table())); n != len(chains(table()))+1 {
		t.Errorf("ip6 table has %d chains, want one more than ip", n)
	}
}

func hasData(es []expr.Any, d []byte) bool {
	return slices.ContainsFunc(es, func(e expr.Any) bool {
		c, ok := e.(*expr.Cmp)
		return ok && slices.Equal(c.Data, d)
	})
}

// IPv6 intervals: a /64 is two elements, a prefix reaching the top one;
// both read back as the prefix.
func TestPrefixElements6(t *testing.T) {
	for _, tt := range []struct {
		p    string
		want int
	}{{"fd00:a::/64", 2}, {"2001:db8::/48", 2}, {"fd00::1/128", 2}, {"ffff::/16", 1}, {"::/0", 1}} {
		p := netip.MustParsePrefix(tt.p)
		els := prefixElements(p)
		if len(els) != tt.want || len(els[0].Key) != 16 {
			t.Errorf("%s: %d elements (key %d bytes), want %d", tt.p, len(els), len(els[0].Key), tt.want)
		}
		ids := parseElements(SetMasq, els)
		if _, ok := ids[tt.p]; !ok || len(ids) != 1 {
			t.Errorf("%s reads back as %v", tt.p, ids)
		}
	}
	// A range that is no prefix.
	els := []nftables.SetElement{{Key: netip.MustParseAddr("fd00::").AsSlice()},
		{Key: netip.MustParseAddr("fd00::3").AsSlice(), IntervalEnd: true}}
	if _, ok := parseElements(SetMasq, els)["fd00::-fd00::3"]; !ok {
		t.Errorf("range reads back as %v", parseElements(SetMasq, els))
	}
}
