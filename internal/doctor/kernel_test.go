package doctor

// The real readers against the kernel, in a namespace the test creates
// (prefix t20d, deleted afterwards): what `ip`, `nft`, `iptables` (nft
// backend) and `bridge` write is read back as the checks expect it.

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

func TestKernelReaders(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "t20d")
	in := func(args ...string) { testutil.Must(t, "ip", append([]string{"netns", "exec", ns}, args...)...) }
	in("ip", "link", "add", "t20dva", "type", "veth", "peer", "name", "t20dvb")
	in("ip", "link", "set", "t20dva", "up")
	in("ip", "link", "set", "t20dvb", "up")
	in("ip", "addr", "add", "192.0.2.1/24", "dev", "t20dva")
	in("ip", "route", "add", "10.5.0.0/24", "via", "192.0.2.9", "table", "100")
	in("ip", "link", "add", "t20dvx", "mtu", "1400", "type", "vxlan", "id", "42", "dstport", "4789", "local", "192.0.2.1", "dev", "t20dva", "nolearning")
	in("bridge", "fdb", "append", "02:00:00:00:00:01", "dev", "t20dvx", "dst", "192.0.2.2", "self", "permanent")
	in("ip", "neigh", "add", "10.1.0.5", "lladdr", "02:00:00:00:00:01", "dev", "t20dvx", "nud", "permanent")
	in("iptables", "-P", "FORWARD", "DROP")
	in("iptables", "-A", "FORWARD", "-i", "br+", "-j", "ACCEPT")
	in("iptables", "-A", "FORWARD", "-s", "10.9.0.0/16", "-j", "DROP")
	in("iptables", "-A", "FORWARD", "-j", "REJECT")
	in("nft", `add table ip tether; add set ip tether bridges { type ifname; elements = { "tth-a", "tth-b" } }; add chain ip tether forward { type filter hook forward priority 0; policy accept; }; add rule ip tether forward iifname "tth-a" drop comment "tether: x"; add set ip tether nodes { type ipv4_addr; elements = { 192.0.2.7 } }`)

	// every read on the thread netns.Do switched (subtests run on
	// goroutines of their own: they only look at what was read)
	var got struct {
		forward                string
		vx, va, nope, withAddr *Link
		routes                 []Route
		fdb                    []FDB
		neigh                  []Neigh
		chains                 []Chain
		table, missing         *Table
		errs                   []error
	}
	err := netns.Do("/run/netns/"+ns, func() error {
		k := NewHost()
		keep := func(err error) { got.errs = append(got.errs, err) }
		var err error
		got.forward, err = k.Sysctl("net/ipv4/ip_forward")
		keep(err)
		got.vx, err = k.Link("t20dvx")
		keep(err)
		got.va, err = k.Link("t20dva")
		keep(err)
		got.nope, err = k.Link("t20dnope")
		keep(err)
		got.withAddr, err = k.LinkWithAddr(netip.MustParseAddr("192.0.2.1"))
		keep(err)
		got.routes, err = k.Routes()
		keep(err)
		got.fdb, err = k.FDB("t20dvx")
		keep(err)
		got.neigh, err = k.Neighbours("t20dvx")
		keep(err)
		got.chains, err = k.ForwardChains()
		keep(err)
		got.table, err = k.Table("ip", "tether")
		keep(err)
		got.missing, err = k.Table("ip6", "tether")
		keep(err)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range got.errs {
		if err != nil {
			t.Errorf("read %d: %v", i, err)
		}
	}
	t.Run("sysctl", func(t *testing.T) {
		if got.forward != "0" {
			t.Errorf("ip_forward %q, want 0 (a new namespace)", got.forward)
		}
	})
	t.Run("links", func(t *testing.T) {
		vx, va := got.vx, got.va
		if vx == nil || va == nil || vx.Kind != "vxlan" || vx.MTU != 1400 || vx.ParentIndex != va.Index {
			t.Fatalf("vxlan %+v (t20dva %+v)", vx, va)
		}
		if got.nope != nil {
			t.Errorf("missing link: %+v, want nil", got.nope)
		}
		if l := got.withAddr; l == nil || l.Name != "t20dva" {
			t.Errorf("link with 192.0.2.1: %+v", l)
		}
	})
	t.Run("routes", func(t *testing.T) {
		want := Route{Dst: netip.MustParsePrefix("10.5.0.0/24"), Dev: "t20dva", Table: 100, Type: "unicast", Via: netip.MustParseAddr("192.0.2.9")}
		if !slices.Contains(got.routes, want) {
			t.Errorf("routes %+v, want %+v among them", got.routes, want)
		}
	})
	t.Run("fdb and neighbours", func(t *testing.T) {
		if !slices.Contains(got.fdb, FDB{MAC: "02:00:00:00:00:01", Dst: netip.MustParseAddr("192.0.2.2")}) {
			t.Errorf("fdb %+v", got.fdb)
		}
		if !reflect.DeepEqual(got.neigh, []Neigh{{IP: netip.MustParseAddr("10.1.0.5"), MAC: "02:00:00:00:00:01"}}) {
			t.Errorf("neighbours %+v", got.neigh)
		}
	})
	t.Run("iptables-nft FORWARD", func(t *testing.T) {
		cs := got.chains
		i := slices.IndexFunc(cs, func(c Chain) bool { return c.Family == "ip" && c.Table == "filter" && c.Name == "FORWARD" })
		if i < 0 {
			t.Fatalf("no FORWARD chain in %+v", cs)
		}
		c := cs[i]
		want := []Rule{{IIF: "br*", Verdict: "accept"}, {Src: netip.MustParsePrefix("10.9.0.0/16"), Verdict: "drop"}, {Verdict: "reject"}}
		for j := range c.Rules {
			c.Rules[j].Handle = 0
		}
		if c.Policy != "drop" || c.Hook != "forward" || c.Type != "filter" || !reflect.DeepEqual(c.Rules, want) {
			t.Errorf("chain %+v, want policy drop and rules %+v", c, want)
		}
		if drop, how := verdict(c, packet{iif: "tth-x", src: netip.MustParseAddr("10.20.0.2")}); !drop || !strings.HasSuffix(how, "(reject)") {
			t.Errorf("a sandbox packet: dropped %v by %q, want the final -j REJECT", drop, how)
		}
		if drop, _ := verdict(c, packet{iif: "br-1", src: netip.MustParseAddr("10.9.0.2")}); drop {
			t.Error("a packet from br-1 is accepted by -i br+ first")
		}
	})
	t.Run("table", func(t *testing.T) {
		tb := got.table
		if tb == nil {
			t.Fatal("table ip tether not found")
		}
		if b := tb.Sets["bridges"]; !reflect.DeepEqual(slices.Sorted(slices.Values(b)), []string{"tth-a", "tth-b"}) {
			t.Errorf("set bridges %q", b)
		}
		if n := tb.Sets["nodes"]; !reflect.DeepEqual(n, []string{"192.0.2.7"}) {
			t.Errorf("set nodes %q", n)
		}
		if len(tb.Chains) != 1 || len(tb.Chains[0].Rules) != 1 || tb.Chains[0].Rules[0].Comment != "tether: x" || tb.Chains[0].Rules[0].IIF != "tth-a" {
			t.Errorf("chains %+v", tb.Chains)
		}
		if got.missing != nil {
			t.Errorf("a missing table: %+v, want nil", got.missing)
		}
	})
}
