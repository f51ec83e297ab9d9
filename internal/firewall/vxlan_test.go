package firewall

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func newFakeGuard() (*VXLANGuard, *fakeConn) {
	c := newFakeConn()
	return &VXLANGuard{c: c}, c
}

// guardNodes reads the set's addresses back from the fake, sorted.
func guardNodes(t *testing.T, c *fakeConn) []string {
	t.Helper()
	ft := c.table(nftables.TableFamilyIPv4, VXLANTable)
	if ft == nil || ft.set(VXLANSet) == nil {
		t.Fatalf("no table ip %s with set %s", VXLANTable, VXLANSet)
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
	if err := g.Repair(ctx); err != nil {
		t.Fatal(err)
	}
	if got := guardNodes(t, c); !slices.Equal(got, []string{"198.18.0.10"}) {
		t.Errorf("set after Repair = %v", got)
	}
}
