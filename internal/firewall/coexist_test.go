package firewall

import (
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// ruleFake adds InsertRule and DelRule to the in-memory nf_tables.
type ruleFake struct{ *fakeConn }

func (c ruleFake) InsertRule(r *nftables.Rule) *nftables.Rule {
	rr := *r
	c.queue = append(c.queue, func(s *fakeConn) error {
		ft := s.table(rr.Table.Family, rr.Table.Name)
		if ft == nil || ft.chain(rr.Chain.Name) == nil {
			return enoent("chain " + rr.Chain.Name)
		}
		s.handle++
		x := rr
		x.Handle = s.handle
		ft.rules[rr.Chain.Name] = append([]*nftables.Rule{&x}, ft.rules[rr.Chain.Name]...)
		return nil
	})
	return r
}

func (c ruleFake) DelRule(r *nftables.Rule) error {
	rr := *r
	c.queue = append(c.queue, func(s *fakeConn) error {
		ft := s.table(rr.Table.Family, rr.Table.Name)
		if ft == nil {
			return enoent("table " + rr.Table.Name)
		}
		rs := ft.rules[rr.Chain.Name]
		i := slices.IndexFunc(rs, func(x *nftables.Rule) bool { return x.Handle == rr.Handle })
		if i < 0 {
			return enoent("rule")
		}
		ft.rules[rr.Chain.Name] = slices.Delete(rs, i, i+1)
		return nil
	})
	return nil
}

// otherTable adds table inet filter with a forward chain of policy pol and
// rules rs, as another firewall would.
func otherTable(t *testing.T, c *fakeConn, pol nftables.ChainPolicy, rs ...[]expr.Any) *nftables.Chain {
	t.Helper()
	tb := c.AddTable(&nftables.Table{Name: "filter", Family: nftables.TableFamilyINet})
	ch := c.AddChain(&nftables.Chain{Name: "forward", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &pol})
	for _, r := range rs {
		c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: r})
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

// chainComments lists the comments of the rules of inet filter forward.
func chainComments(c *fakeConn) []string {
	var out []string
	for _, r := range c.table(nftables.TableFamilyINet, "filter").rules["forward"] {
		out = append(out, commentOf(r))
	}
	slices.Sort(out)
	return out
}

func TestBlocks(t *testing.T) {
	drop, accept := nftables.ChainPolicyDrop, nftables.ChainPolicyAccept
	rejectAll := []expr.Any{&expr.Counter{}, &expr.Reject{Type: 2}}
	dropSome := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Register: 1, Data: ifname("eth1")}, &expr.Verdict{Kind: expr.VerdictDrop}}
	ours := &nftables.Rule{Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}, UserData: comment(coexistMark + "from x")}
	tests := []struct {
		name   string
		policy *nftables.ChainPolicy
		rules  []*nftables.Rule
		want   bool
	}{
		{"policy drop", &drop, nil, true},
		{"policy accept", &accept, nil, false},
		{"no policy given", nil, nil, false},
		{"firewalld style: final reject", &accept, []*nftables.Rule{{Exprs: dropSome}, {Exprs: rejectAll}}, true},
		{"final reject before our rule", &accept, []*nftables.Rule{{Exprs: rejectAll}, ours}, true},
		{"conditional drop only", &accept, []*nftables.Rule{{Exprs: dropSome}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := &nftables.Chain{Policy: tc.policy}
			if got := blocks(ch, tc.rules) != ""; got != tc.want {
				t.Errorf("blocks = %v, want %v", got, tc.want)
			}
		})
	}
}

// The accept rules follow the open bridges, are written only when they
// differ, and go when the option is off or the chain stops blocking.
func TestCoexistRules(t *testing.T) {
	c := ruleFake{newFakeConn()}
	mustSync(t, newNFT(c.fakeConn), netA, netC)
	otherTable(t, c.fakeConn, nftables.ChainPolicyDrop, []expr.Any{&expr.Counter{}})
	var logged strings.Builder
	co := newCoexist(slog.New(slog.NewTextHandler(&logged, nil)), true)

	co.check(c, []Network{netA, netC}) // netC is internal: no rules
	want := []string{"tether: from tth-a", "tether: published ports on tth-a", "tether: replies to tth-a"}
	if got := chainComments(c.fakeConn); !slices.Equal(got, append([]string{""}, want...)) {
		t.Fatalf("chain rules %q, want the other firewall's rule and %q", got, want)
	}
	batches := c.batches
	co.check(c, []Network{netA, netC})
	if c.batches != batches {
		t.Errorf("a second check with nothing changed wrote %d batches", c.batches-batches)
	}
	co.check(c, []Network{netA, netB})
	if got := len(chainComments(c.fakeConn)); got != 7 {
		t.Errorf("after adding tth-b: %d rules, want 7", got)
	}
	co.check(c, []Network{netB})
	if got := chainComments(c.fakeConn); slices.Contains(got, "tether: from tth-a") || len(got) != 4 {
		t.Errorf("after removing tth-a: %q", got)
	}
	if !strings.Contains(logged.String(), "table inet filter chain forward") {
		t.Errorf("log does not name the chain:\n%s", logged.String())
	}

	off := newCoexist(slog.New(slog.NewTextHandler(io.Discard, nil)), false)
	off.check(c, []Network{netB})
	if got := chainComments(c.fakeConn); !slices.Equal(got, []string{""}) {
		t.Errorf("with the option off, rules left: %q", got)
	}
}

// Without the option only a warning, naming the chain, the bridges and the
// option, logged once per change.
func TestCoexistReport(t *testing.T) {
	c := ruleFake{newFakeConn()}
	otherTable(t, c.fakeConn, nftables.ChainPolicyDrop)
	var logged strings.Builder
	co := newCoexist(slog.New(slog.NewTextHandler(&logged, nil)), false)
	co.check(c, []Network{netA, netE})
	co.check(c, []Network{netA, netE})
	out := logged.String()
	for _, w := range []string{"table inet filter chain forward", "policy drop", "tth-a", "tether0", OptionAcceptOtherTables} {
		if !strings.Contains(out, w) {
			t.Errorf("warning lacks %q:\n%s", w, out)
		}
	}
	if n := strings.Count(out, "level=WARN"); n != 1 {
		t.Errorf("%d warnings for one unchanged situation, want 1:\n%s", n, out)
	}
	if got := chainComments(c.fakeConn); len(got) != 0 {
		t.Errorf("without the option rules were inserted: %q", got)
	}
}

// A chain that stopped blocking loses the rules Tether put there.
func TestCoexistStale(t *testing.T) {
	c := ruleFake{newFakeConn()}
	ch := otherTable(t, c.fakeConn, nftables.ChainPolicyAccept)
	c.InsertRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: acceptRules("tth-a")[coexistMark+"from tth-a"], UserData: comment(coexistMark + "from tth-a")})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	newCoexist(slog.New(slog.NewTextHandler(io.Discard, nil)), true).check(c, []Network{netA})
	if got := chainComments(c.fakeConn); len(got) != 0 {
		t.Errorf("rules left in a chain that accepts by policy: %q", got)
	}
}

// With IPv6 on, the check also covers family ip6 (ip6tables-nft's FORWARD
// with policy drop) and leaves Tether's own ip6 table alone; with IPv6 off
// family ip6 is not looked at.
func TestCoexistIPv6(t *testing.T) {
	drop := nftables.ChainPolicyDrop
	for _, ipv6 := range []bool{false, true} {
		c := ruleFake{newFakeConn()}
		tb := c.AddTable(&nftables.Table{Name: "filter", Family: nftables.TableFamilyIPv6})
		c.AddChain(&nftables.Chain{Name: "FORWARD", Table: tb, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		f := newNFT(c.fakeConn)
		f.opts.IPv6 = true
		mustSync(t, f, net6A) // Tether's ip6 forward chain must not count as another table's
		block, _, err := findChains(c, ipv6)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, b := range block {
			names = append(names, b.name())
		}
		want := []string{"table ip6 filter chain FORWARD"}
		if !ipv6 {
			want = nil
		}
		if !slices.Equal(names, want) {
			t.Errorf("ipv6=%v: blocking chains %q, want %q", ipv6, names, want)
		}
		co := newCoexist(slog.New(slog.NewTextHandler(io.Discard, nil)), true)
		co.ipv6 = ipv6
		co.check(c, []Network{net6A})
		ft := c.table(nftables.TableFamilyIPv6, "filter")
		if n := len(ft.rules["FORWARD"]); (n == 3) != ipv6 {
			t.Errorf("ipv6=%v: %d accept rules in ip6 filter FORWARD", ipv6, n)
		}
	}
}
