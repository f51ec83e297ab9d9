package firewall

import (
	"context"
	"encoding/binary"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Unit tests: the NFT backend over the in-memory fakeConn. No root needed.

var ctx = context.Background()

func mustSync(t *testing.T, f *NFT, nets ...Network) {
	t.Helper()
	if err := f.Sync(ctx, nets, nil); err != nil {
		t.Fatal(err)
	}
}

// wantEntries checks Tether's table holds exactly the entries of nets.
func wantEntries(t *testing.T, c *fakeConn, nets ...Network) {
	t.Helper()
	if got, want := c.ours().String(), entriesOf(nets...).String(); got != want {
		t.Errorf("table holds\n %s\nwant\n %s", got, want)
	}
}

// wantStaticOnce checks the table, its sets, chains and rules were built
// exactly once.
func wantStaticOnce(t *testing.T, c *fakeConn) {
	t.Helper()
	want := map[string]int{"table": 1, "set": len(sets(table())), "chain": len(chains(table())), "rule": len(rules(false))}
	if !reflect.DeepEqual(c.created, want) {
		t.Errorf("created %v, want %v (the static ruleset once)", c.created, want)
	}
}

func TestSyncFromScratch(t *testing.T) {
	c := newFakeConn()
	mustSync(t, newNFT(c), netA, netB, netC, netD, netE)
	if c.batches != 1 {
		t.Errorf("%d batches, want 1", c.batches)
	}
	wantStaticOnce(t, c)
	e := c.ours()
	for set, want := range map[string][]string{
		SetBridges:    {"tether0", "tth-a", "tth-b", "tth-c", "tth-d"},
		SetSameBridge: {"tether0 . tether0", "tth-a . tth-a", "tth-b . tth-b", "tth-c . tth-c", "tth-d . tth-d"},
		SetInternal:   {"tth-c"},                                       // c only
		SetMasq:       {"10.1.0.0/24", "10.1.1.0/24", "172.30.0.0/16"}, // not c (internal), not d (masquerade off)
	} {
		if got := e.ids(set); !slices.Equal(got, want) {
			t.Errorf("set %s = %v, want %v", set, got, want)
		}
	}
	// The rules sit in the right chains, in order.
	ft := c.table(nftables.TableFamilyIPv4, TableName)
	for ch, want := range map[string]int{ChainRaw: 1, ChainForward: 11, ChainPostroute: 2, ChainPrerouting: 2, ChainOutput: 2} {
		if n := len(ft.rules[ch]); n != want {
			t.Errorf("%s chain has %d rules, want %d", ch, n, want)
		}
	}
}

// A restart: a new NFT on the same kernel, same networks: no batch at all.
func TestSyncIdempotent(t *testing.T) {
	c := newFakeConn()
	mustSync(t, newNFT(c), netA, netB, netC)
	before := c.dump()
	mustSync(t, newNFT(c), netC, netB, netA)
	if c.batches != 1 {
		t.Errorf("second Sync sent a batch (%d in all)", c.batches)
	}
	if c.dump() != before {
		t.Errorf("second Sync changed the table:\n%s\nwas\n%s", c.dump(), before)
	}
}

// A restart after networks were removed and added while the daemon was
// down: stale entries go, missing ones come, in one batch of elements.
func TestSyncStale(t *testing.T) {
	c := newFakeConn()
	mustSync(t, newNFT(c), netA, netB, netC, netE)
	mustSync(t, newNFT(c), netA, netD)
	if c.batches != 2 {
		t.Errorf("%d batches, want 2", c.batches)
	}
	wantStaticOnce(t, c)
	wantEntries(t, c, netA, netD)
}

func TestAddRemove(t *testing.T) {
	c := newFakeConn()
	f := newNFT(c)
	mustSync(t, f)
	for i, step := range []struct {
		op   string
		n    Network
		want []Network
	}{
		{"add", netA, []Network{netA}},
		{"add", netB, []Network{netA, netB}},
		{"add", netC, []Network{netA, netB, netC}},
		{"remove", netA, []Network{netB, netC}},
		{"add", Network{ID: "b", Bridge: "tth-b", Subnet: netB.Subnet}, []Network{{ID: "b", Bridge: "tth-b", Subnet: netB.Subnet}, netC}},
		{"remove", netC, []Network{{ID: "b", Bridge: "tth-b", Subnet: netB.Subnet}}},
	} {
		batches := c.batches
		var err error
		if step.op == "add" {
			err = f.Add(ctx, step.n)
		} else {
			err = f.Remove(ctx, step.n)
		}
		if err != nil {
			t.Fatalf("step %d %s %s: %v", i, step.op, step.n.ID, err)
		}
		if c.batches != batches+1 {
			t.Errorf("step %d: %d batches, want one", i, c.batches-batches)
		}
		wantEntries(t, c, step.want...)
	}
	wantStaticOnce(t, c)
	if f.fallbacks != 0 {
		t.Errorf("%d fallbacks to a full sync", f.fallbacks)
	}
	// Removing what is gone: no error, nothing else touched.
	if err := f.Remove(ctx, netA); err != nil {
		t.Errorf("remove again: %v", err)
	}
	wantEntries(t, c, Network{ID: "b", Bridge: "tth-b", Subnet: netB.Subnet})
}

// What a network turns into, flag by flag.
func TestEntriesOf(t *testing.T) {
	sub := netip.MustParsePrefix("10.9.0.0/16")
	for _, tt := range []struct {
		name     string
		n        Network
		internal []string
		masq     []string
	}{
		{"masquerade", Network{Bridge: "br", Subnet: sub, Masquerade: true}, nil, []string{"10.9.0.0/16"}},
		{"ip-masq false or option off", Network{Bridge: "br", Subnet: sub}, nil, nil},
		{"internal is never masqueraded", Network{Bridge: "br", Subnet: sub, Masquerade: true, Internal: true}, []string{"br"}, nil},
		{"no subnet", Network{Bridge: "br", Masquerade: true}, nil, nil},
		{"host bits are masked", Network{Bridge: "br", Subnet: netip.MustParsePrefix("10.9.1.5/16"), Masquerade: true}, nil, []string{"10.9.0.0/16"}},
		{"not a bridge network", Network{Subnet: sub, Masquerade: true}, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := entriesOf(tt.n)
			if got := e.ids(SetInternal); !slices.Equal(got, tt.internal) {
				t.Errorf("internal = %v, want %v", got, tt.internal)
			}
			if got := e.ids(SetMasq); !slices.Equal(got, tt.masq) {
				t.Errorf("masq = %v, want %v", got, tt.masq)
			}
			wantBr := []string{"br"}
			if tt.n.Bridge == "" {
				wantBr = nil
			}
			if got := e.ids(SetBridges); !slices.Equal(got, wantBr) {
				t.Errorf("bridges = %v, want %v", got, wantBr)
			}
		})
	}
}

// A table whose rules differ (older Tether, hand edit) is replaced in one
// batch: deleted and recreated together.
func TestSyncReplacesOtherLayout(t *testing.T) {
	c := newFakeConn()
	mustSync(t, newNFT(c), netA)
	ft := c.table(nftables.TableFamilyIPv4, TableName)
	ft.rules[ChainForward][1].UserData = comment("tether: an older rule")
	mustSync(t, newNFT(c), netA, netB)
	if c.batches != 2 || c.deleted["table"] != 1 || c.created["table"] != 2 {
		t.Errorf("batches %d, tables deleted %d created %d; want 2, 1, 2", c.batches, c.deleted["table"], c.created["table"])
	}
	wantEntries(t, c, netA, netB)
	mustSync(t, newNFT(c), netA, netB)
	if c.batches != 2 {
		t.Error("the rebuilt table was not recognised as ours")
	}

	// The same for a wrong expression under the right comment.
	ft = c.table(nftables.TableFamilyIPv4, TableName)
	ft.rules[ChainPostroute][0].Exprs = []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	mustSync(t, newNFT(c), netA, netB)
	if c.deleted["table"] != 2 {
		t.Error("a changed expression was not noticed")
	}
}

// Tables that are not Tether's (same name in another family, same set
// name in another table) are never touched.
func TestForeignTablesUntouched(t *testing.T) {
	c := newFakeConn()
	for _, tb := range []*nftables.Table{
		{Name: "theirs", Family: nftables.TableFamilyIPv4},
		{Name: TableName, Family: nftables.TableFamilyINet},
	} {
		c.AddTable(tb)
		s := &nftables.Set{Table: tb, Name: SetBridges, KeyType: nftables.TypeIFName}
		_ = c.AddSet(s, []nftables.SetElement{{Key: ifname("tth-a")}})
		c.AddChain(&nftables.Chain{Name: ChainForward, Table: tb})
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	before := c.dump()
	f := newNFT(c)
	mustSync(t, f, netA, netB)
	_ = f.Add(ctx, netC)
	_ = f.Remove(ctx, netA)
	mustSync(t, newNFT(c), netD)
	ft := c.table(nftables.TableFamilyIPv4, TableName)
	c.tables = slices.DeleteFunc(c.tables, func(x *fakeTable) bool { return x == ft })
	if got := c.dump(); got != before {
		t.Errorf("foreign tables changed:\n%s\nwas\n%s", got, before)
	}
}

// A failed batch changes nothing, in the kernel or in what NFT remembers.
func TestFailedBatch(t *testing.T) {
	c := newFakeConn()
	f := newNFT(c)
	mustSync(t, f, netA)
	before := c.dump()
	c.failFlushes = 2 // the element batch and the full sync after it
	if err := f.Add(ctx, netB); err == nil {
		t.Fatal("Add succeeded although every batch failed")
	}
	if c.dump() != before {
		t.Error("a failed Add changed the table")
	}
	if err := f.Add(ctx, netC); err != nil {
		t.Fatal(err)
	}
	wantEntries(t, c, netA, netC) // b was not remembered
	c.failFlushes = 2
	if err := f.Remove(ctx, netA); err == nil {
		t.Fatal("Remove succeeded although every batch failed")
	}
	mustSync(t, f, netA, netC)
	wantEntries(t, c, netA, netC)
}

// The table deleted behind the daemon's back comes back, whole, with the
// next change.
func TestTableDeletedBehindOurBack(t *testing.T) {
	c := newFakeConn()
	f := newNFT(c)
	mustSync(t, f, netA, netB)
	c.DelTable(table())
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Add(ctx, netC); err != nil {
		t.Fatal(err)
	}
	wantEntries(t, c, netA, netB, netC)
	if f.fallbacks != 1 {
		t.Errorf("fallbacks = %d, want 1", f.fallbacks)
	}
}

// Two networks that share an entry (the same subnet twice, which the engine
// refuses, or an old record) keep it until the last one goes.
func TestSharedEntry(t *testing.T) {
	c := newFakeConn()
	f := newNFT(c)
	twin := Network{ID: "a2", Bridge: "tth-a2", Subnet: netA.Subnet, Masquerade: true}
	mustSync(t, f, netA, twin)
	if err := f.Remove(ctx, netA); err != nil {
		t.Fatal(err)
	}
	wantEntries(t, c, twin)
	// Removing a network NFT never heard of deletes only unowned entries.
	if err := f.Remove(ctx, Network{ID: "zz", Bridge: "tth-a2", Subnet: netA.Subnet}); err != nil {
		t.Fatal(err)
	}
	wantEntries(t, c, twin)
}

func key4(s string) []byte {
	a := netip.MustParseAddr(s).As4()
	return a[:]
}

func TestIntervals(t *testing.T) {
	els := []nftables.SetElement{
		{Key: key4("10.1.2.0"), IntervalEnd: true},
		{Key: key4("0.0.0.0"), IntervalEnd: true}, // the nft tool's filler
		{Key: key4("10.1.1.0")},
		{Key: key4("10.1.1.0"), IntervalEnd: true},
		{Key: key4("10.1.0.0")},
		{Key: key4("192.168.0.0")},
		{Key: key4("192.168.0.7"), IntervalEnd: true},
		{Key: key4("240.0.0.0")}, // open end: to 255.255.255.255
	}
	var got []string
	for id := range parseElements(SetMasq, els) {
		got = append(got, id)
	}
	slices.Sort(got)
	want := []string{"10.1.0.0/24", "10.1.1.0/24", "192.168.0.0-192.168.0.7", "240.0.0.0/4"}
	if !slices.Equal(got, want) {
		t.Errorf("intervals = %v, want %v", got, want)
	}
}

func TestPrefixElements(t *testing.T) {
	for _, tt := range []struct {
		p    string
		want int
	}{{"10.0.0.0/8", 2}, {"10.1.2.3/32", 2}, {"240.0.0.0/4", 1}, {"0.0.0.0/0", 1}} {
		p := netip.MustParsePrefix(tt.p)
		els := prefixElements(p)
		if len(els) != tt.want {
			t.Errorf("%s: %d elements, want %d", tt.p, len(els), tt.want)
		}
		if len(els) == 2 {
			end := binary.BigEndian.Uint32(els[1].Key) - binary.BigEndian.Uint32(els[0].Key)
			if end != 1<<(32-p.Bits()) || !els[1].IntervalEnd {
				t.Errorf("%s: end %v", tt.p, els[1])
			}
		}
		for id := range parseElements(SetMasq, els) {
			if id != tt.p {
				t.Errorf("%s reads back as %s", tt.p, id)
			}
		}
	}
}
