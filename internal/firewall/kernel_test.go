package firewall

// Integration tests against the real nf_tables, each in a network namespace
// the test creates (and deletes). They check kernel state through the
// nftables Go API; traffic is checked end to end in e2e/firewall_test.go.

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/tether-net/tether/internal/netaddr"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

// kernelNS creates a namespace and returns an open fd to it.
func kernelNS(t testing.TB) (string, int) {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-fw")
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return ns, int(f.Fd())
}

func kernelNFT(t testing.TB, fd int) *NFT {
	t.Helper()
	f, err := NewNFT(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// reader is an independent nftables connection for checks.
func reader(t testing.TB, fd int) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func raw(els []nftables.SetElement) []string {
	var out []string
	for _, e := range els {
		s := hex.EncodeToString(e.Key)
		if e.IntervalEnd {
			s += "/end"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// wantRaw is the kernel's element list of a set for nets, built by hand
// (not with entriesOf) so the encoding itself is under test.
func wantRaw(set string, nets ...Network) []string {
	var out []string
	pad := func(s string) string { return hex.EncodeToString(append([]byte(s), make([]byte, 16-len(s))...)) }
	for _, n := range nets {
		switch set {
		case SetBridges:
			out = append(out, pad(n.Bridge))
		case SetSameBridge:
			out = append(out, pad(n.Bridge)+pad(n.Bridge))
		case SetInternal:
			if n.Internal {
				out = append(out, pad(n.Bridge))
			}
		case SetMasq:
			if n.Masquerade && !n.Internal && n.Subnet.IsValid() && n.Mode != ModeRouted {
				a := n.Subnet.Addr().As4()
				out = append(out, hex.EncodeToString(a[:]))
				last := netip.PrefixFrom(n.Subnet.Addr(), n.Subnet.Bits())
				end := netaddr.Last(last).Next().As4()
				out = append(out, hex.EncodeToString(end[:])+"/end")
			}
		}
	}
	sort.Strings(out)
	return out
}

// checkElements compares every set of the table with nets.
func checkElements(t *testing.T, c *nftables.Conn, nets ...Network) {
	t.Helper()
	for _, name := range []string{SetBridges, SetSameBridge, SetInternal, SetMasq} {
		s, err := c.GetSetByName(table(), name)
		if err != nil {
			t.Fatalf("set %s: %v", name, err)
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatalf("elements of %s: %v", name, err)
		}
		if got, want := raw(els), wantRaw(name, nets...); !slices.Equal(got, want) {
			t.Errorf("set %s:\n got %v\nwant %v", name, got, want)
		}
	}
}

// ruleHandles lists the handles of our rules: a recreated table gets new ones.
func ruleHandles(t *testing.T, c *nftables.Conn) []uint64 {
	t.Helper()
	var hs []uint64
	for _, ch := range chains(table()) {
		rs, err := c.GetRules(table(), ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			hs = append(hs, r.Handle)
		}
	}
	return hs
}

// foreign builds tables that are not Tether's in the namespace: one in
// family ip with a set of the same name as ours, one named "tether" in
// family inet. It returns a function describing them (compare before and
// after).
func foreign(t *testing.T, c *nftables.Conn) func() string {
	t.Helper()
	accept := nftables.ChainPolicyAccept
	for _, tb := range []*nftables.Table{
		{Name: "theirs", Family: nftables.TableFamilyIPv4},
		{Name: TableName, Family: nftables.TableFamilyINet},
	} {
		c.AddTable(tb)
		s := &nftables.Set{Table: tb, Name: SetBridges, KeyType: nftables.TypeIFName}
		if err := c.AddSet(s, []nftables.SetElement{{Key: ifname("eth9")}}); err != nil {
			t.Fatal(err)
		}
		ch := c.AddChain(&nftables.Chain{Name: ChainForward, Table: tb, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: SetBridges},
			&expr.Counter{},
		}})
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("create foreign tables: %v", err)
	}
	return func() string {
		var out string
		for _, tb := range []*nftables.Table{
			{Name: "theirs", Family: nftables.TableFamilyIPv4},
			{Name: TableName, Family: nftables.TableFamilyINet},
		} {
			s, err := c.GetSetByName(tb, SetBridges)
			if err != nil {
				return fmt.Sprintf("%s: %v", tb.Name, err)
			}
			els, _ := c.GetSetElements(s)
			rs, err := c.GetRules(tb, &nftables.Chain{Name: ChainForward, Table: tb})
			if err != nil {
				return fmt.Sprintf("%s rules: %v", tb.Name, err)
			}
			out += fmt.Sprintf("%d %s %v rules=%d:", tb.Family, tb.Name, raw(els), len(rs))
			for _, r := range rs {
				out += fmt.Sprintf(" %d/%d", r.Handle, len(r.Exprs))
			}
			out += "\n"
		}
		return out
	}
}

var (
	netA = Network{ID: "a", Bridge: "tth-a", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Masquerade: true}
	netB = Network{ID: "b", Bridge: "tth-b", Subnet: netip.MustParsePrefix("10.1.1.0/24"), Masquerade: true} // adjacent to a
	netC = Network{ID: "c", Bridge: "tth-c", Subnet: netip.MustParsePrefix("10.1.2.0/24"), Masquerade: true, Internal: true}
	netD = Network{ID: "d", Bridge: "tth-d", Subnet: netip.MustParsePrefix("10.1.3.0/24")}
	netE = Network{ID: "e", Bridge: "tether0", Subnet: netip.MustParsePrefix("172.30.0.0/16"), Masquerade: true}
)

func TestKernelSyncAddRemove(t *testing.T) {
	_, fd := kernelNS(t)
	ctx := context.Background()
	c := reader(t, fd)
	theirs := foreign(t, c)
	before := theirs()
	f := kernelNFT(t, fd)

	if err := f.Sync(ctx, []Network{netA, netB, netC, netD, netE}, nil); err != nil {
		t.Fatal(err)
	}
	checkElements(t, c, netA, netB, netC, netD, netE)
	handles := ruleHandles(t, c)
	if len(handles) != len(rules(false)) {
		t.Fatalf("%d rules in the table, want %d", len(handles), len(rules(false)))
	}

	// A second Sync (a restart) changes nothing, not even rule handles.
	f2 := kernelNFT(t, fd)
	if err := f2.Sync(ctx, []Network{netA, netB, netC, netD, netE}, nil); err != nil {
		t.Fatal(err)
	}
	if h := ruleHandles(t, c); !slices.Equal(h, handles) {
		t.Errorf("second Sync rebuilt the rules: handles %v, before %v", h, handles)
	}
	checkElements(t, c, netA, netB, netC, netD, netE)

	// Sync with stale and missing networks: exactly the new list remains.
	netF := Network{ID: "f", Bridge: "tth-f", Subnet: netip.MustParsePrefix("192.168.7.0/24"), Masquerade: true}
	if err := f2.Sync(ctx, []Network{netA, netC, netF}, nil); err != nil {
		t.Fatal(err)
	}
	checkElements(t, c, netA, netC, netF)

	// Add and Remove, each alone; removing twice is fine; re-adding
	// with masquerade off drops the subnet only.
	if err := f2.Add(ctx, netB); err != nil {
		t.Fatal(err)
	}
	if err := f2.Add(ctx, netB); err != nil {
		t.Fatalf("adding again: %v", err)
	}
	checkElements(t, c, netA, netB, netC, netF)
	if err := f2.Remove(ctx, netA); err != nil {
		t.Fatal(err)
	}
	if f2.fallbacks != 0 {
		t.Errorf("%d element batches failed and fell back to a full sync", f2.fallbacks)
	}
	if err := f2.Remove(ctx, netA); err != nil {
		t.Fatalf("removing again: %v", err)
	}
	checkElements(t, c, netB, netC, netF)
	noMasq := netB
	noMasq.Masquerade = false
	if err := f2.Add(ctx, noMasq); err != nil {
		t.Fatal(err)
	}
	checkElements(t, c, noMasq, netC, netF)
	if f2.fallbacks != 1 {
		t.Errorf("fallbacks = %d, want 1 (the second Remove of a)", f2.fallbacks)
	}
	if h := ruleHandles(t, c); !slices.Equal(h, handles) {
		t.Errorf("element changes touched the rules: handles %v, before %v", h, handles)
	}
	if after := theirs(); after != before {
		t.Errorf("foreign tables changed:\nbefore %s\nafter  %s", before, after)
	}
}

// A table that differs from ours (hand edit, older layout) is replaced in
// one batch; a table deleted behind the daemon's back comes back on the
// next change. Foreign tables stay as they are.
func TestKernelRepair(t *testing.T) {
	_, fd := kernelNS(t)
	ctx := context.Background()
	c := reader(t, fd)
	theirs := foreign(t, c)
	before := theirs()
	f := kernelNFT(t, fd)
	if err := f.Sync(ctx, []Network{netA, netC}, nil); err != nil {
		t.Fatal(err)
	}
	// Hand edit: an extra rule in our forward chain.
	tb := table()
	c.AddRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: ChainForward, Table: tb},
		Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := kernelNFT(t, fd).Sync(ctx, []Network{netA, netC}, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(ruleHandles(t, c)); n != len(rules(false)) {
		t.Errorf("after repair: %d rules, want %d", n, len(rules(false)))
	}
	checkElements(t, c, netA, netC)

	// Deleted behind our back: the next Add rebuilds everything it knows.
	c.DelTable(tb)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Add(ctx, netD); err != nil {
		t.Fatal(err)
	}
	checkElements(t, c, netA, netC, netD)
	if after := theirs(); after != before {
		t.Errorf("foreign tables changed:\nbefore %s\nafter  %s", before, after)
	}
}

// Adding a network costs the same with 99 networks present as with none
// (the 100th vs the 1st). Reported as a ratio of medians.
func TestKernelAddCostFlat(t *testing.T) {
	_, fd := kernelNS(t)
	ctx := context.Background()
	f := kernelNFT(t, fd)
	if err := f.Sync(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	first := medianAdd(t, f, 200)
	for i := range 99 {
		if err := f.Add(ctx, benchNet(i)); err != nil {
			t.Fatal(err)
		}
	}
	hundredth := medianAdd(t, f, 200)
	ratio := float64(hundredth) / float64(first)
	t.Logf("Add: 1st network %v, 100th network %v (median of 200), ratio %.2f", first, hundredth, ratio)
	if ratio > 3 {
		t.Errorf("adding the 100th network costs %.1fx the 1st", ratio)
	}
}

func benchNet(i int) Network {
	return Network{ID: fmt.Sprint("n", i), Bridge: fmt.Sprintf("tth-b%d", i),
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i/256), byte(i % 256), 0}), 24), Masquerade: true}
}

// medianAdd adds and removes one more network n times and returns the
// median time of an Add.
func medianAdd(t testing.TB, f *NFT, n int) time.Duration {
	t.Helper()
	ctx := context.Background()
	x := Network{ID: "x", Bridge: "tth-x", Subnet: netip.MustParsePrefix("10.250.0.0/24"), Masquerade: true}
	ds := make([]time.Duration, n)
	for i := range ds {
		start := time.Now()
		if err := f.Add(ctx, x); err != nil {
			t.Fatal(err)
		}
		ds[i] = time.Since(start)
		if err := f.Remove(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	return stats.Median(ds)
}

// BenchmarkKernelAdd: one Add (one batch) with 0 and with 99 networks present.
func BenchmarkKernelAdd(b *testing.B) {
	for _, present := range []int{0, 99} {
		b.Run(fmt.Sprint("present=", present), func(b *testing.B) {
			_, fd := kernelNS(b)
			f := kernelNFT(b, fd)
			ctx := context.Background()
			if err := f.Sync(ctx, nil, nil); err != nil {
				b.Fatal(err)
			}
			for i := range present {
				if err := f.Add(ctx, benchNet(i)); err != nil {
					b.Fatal(err)
				}
			}
			x := benchNet(present)
			for b.Loop() {
				if err := f.Add(ctx, x); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := f.Remove(ctx, x); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
