package firewall

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Unit tests of published ports over the in-memory fakeConn.

var (
	pAny  = PortMapping{Proto: "tcp", HostPort: 8080, SandboxIP: netip.MustParseAddr("10.1.0.2"), SandboxPort: 80}
	pOne  = PortMapping{Proto: "tcp", HostIP: netip.MustParseAddr("198.51.100.1"), HostPort: 8081, SandboxIP: netip.MustParseAddr("10.1.0.2"), SandboxPort: 80}
	pUDP  = PortMapping{Proto: "udp", HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 5353, SandboxIP: netip.MustParseAddr("10.1.0.3"), SandboxPort: 53}
	pLoop = PortMapping{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8082, SandboxIP: netip.MustParseAddr("10.1.0.2"), SandboxPort: 80}
)

// The kernel encoding, written out by hand.
func TestPortElements(t *testing.T) {
	for _, tt := range []struct {
		p        PortMapping
		set      string
		key, val string
		id       string
	}{
		{pAny, MapPortsAny, "06000000" + "1f900000", "0a010002" + "00500000", "tcp . 8080 : 10.1.0.2 . 80"},
		{pOne, MapPorts, "c6336401" + "06000000" + "1f910000", "0a010002" + "00500000", "198.51.100.1 . tcp . 8081 : 10.1.0.2 . 80"},
		{pUDP, MapPortsAny, "11000000" + "14e90000", "0a010003" + "00350000", "udp . 5353 : 10.1.0.3 . 53"},
	} {
		p, err := tt.p.normal(false)
		if err != nil {
			t.Fatal(err)
		}
		e := portEntries(p)
		if got := e.ids(tt.set); !slices.Equal(got, []string{tt.id}) {
			t.Errorf("%s: ids %v, want %s", tt.p, got, tt.id)
			continue
		}
		el := e[tt.set][tt.id][0]
		if k, v := hex.EncodeToString(el.Key), hex.EncodeToString(el.Val); k != tt.key || v != tt.val {
			t.Errorf("%s: key %s val %s, want %s %s", tt.p, k, v, tt.key, tt.val)
		}
		back, ok := parsePort(tt.set, el)
		if !ok || back != p {
			t.Errorf("%s reads back as %v (%v)", p, back, ok)
		}
		if got := portsKey.Bytes; tt.set == MapPorts && int(got) != len(el.Key) {
			t.Errorf("key type has %d bytes, element %d", got, len(el.Key))
		}
	}
}

func TestPortInvalid(t *testing.T) {
	ok := pAny
	for name, p := range map[string]PortMapping{
		"sctp":         {Proto: "sctp", HostPort: 1, SandboxIP: ok.SandboxIP, SandboxPort: 1},
		"host port 0":  {Proto: "tcp", SandboxIP: ok.SandboxIP, SandboxPort: 1},
		"ipv6 host":    {Proto: "tcp", HostIP: netip.MustParseAddr("::1"), HostPort: 1, SandboxIP: ok.SandboxIP, SandboxPort: 1},
		"no sandbox":   {Proto: "tcp", HostPort: 1, SandboxPort: 1},
		"sandbox port": {Proto: "tcp", HostPort: 1, SandboxIP: ok.SandboxIP},
	} {
		f := newNFT(newFakeConn())
		mustSync(t, f)
		if err := f.AddPorts(ctx, []PortMapping{p}); !errors.Is(err, ErrInvalidPort) {
			t.Errorf("%s: AddPorts error %v, want ErrInvalidPort", name, err)
		}
	}
}

// wantPorts checks the two maps hold exactly ps.
func wantPorts(t *testing.T, c *fakeConn, ps ...PortMapping) {
	t.Helper()
	var norm []PortMapping
	for _, p := range ps {
		n, _ := p.normal(true)
		norm = append(norm, n)
	}
	want := portEntries(norm...)
	have := c.ours()
	for _, m := range []string{MapPorts, MapPortsAny} {
		if got, w := have.ids(m), want.ids(m); !slices.Equal(got, w) {
			t.Errorf("map %s = %v, want %v", m, got, w)
		}
	}
}

func TestAddRemovePorts(t *testing.T) {
	c := newFakeConn()
	f := newNFT(c)
	mustSync(t, f, netA)
	step := func(name string, op func() error, batches int, want ...PortMapping) {
		t.Helper()
		b := c.batches
		if err := op(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.batches-b != batches {
			t.Errorf("%s: %d batches, want %d", name, c.batches-b, batches)
		}
		wantPorts(t, c, want...)
		have := c.ours()
		for _, set := range []string{SetBridges, SetSameBridge, SetInternal, SetMasq} { // untouched
			if got, w := have.ids(set), entriesOf(netA).ids(set); !slices.Equal(got, w) {
				t.Errorf("%s: set %s = %v, want %v", name, set, got, w)
			}
		}
	}
	add := func(ps ...PortMapping) func() error { return func() error { return f.AddPorts(ctx, ps) } }
	del := func(ps ...PortMapping) func() error { return func() error { return f.RemovePorts(ctx, ps) } }

	step("add three", add(pAny, pOne, pUDP), 1, pAny, pOne, pUDP)
	step("add again", add(pAny), 1, pAny, pOne, pUDP)
	moved := pAny
	moved.SandboxIP = netip.MustParseAddr("10.1.0.9")
	step("re-point", add(moved), 1, moved, pOne, pUDP)
	step("remove the old target", del(pAny), 0, moved, pOne, pUDP)
	step("remove", del(moved, pUDP), 1, pOne)
	step("remove again", del(moved, pUDP), 0, pOne)
	step("remove a never published one", del(PortMapping{Proto: "udp", HostPort: 9}), 0, pOne)
	if f.fallbacks != 0 {
		t.Errorf("%d fallbacks to a full sync", f.fallbacks)
	}

	// The table deleted behind our back: the next change brings back all.
	c.DelTable(table())
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	step("add after table loss", add(pLoop), 1, pOne, pLoop)
	wantStaticOnce2(t, c)
}

// wantStaticOnce2 checks the static ruleset was created twice (table lost once).
func wantStaticOnce2(t *testing.T, c *fakeConn) {
	t.Helper()
	if c.created["table"] != 2 || c.created["rule"] != 2*len(rules(false)) {
		t.Errorf("created %v", c.created)
	}
}

// A failed batch changes neither the kernel nor what NFT remembers.
func TestAddPortsFailed(t *testing.T) {
	c := newFakeConn()
	f := newNFT(c)
	mustSync(t, f)
	if err := f.AddPorts(ctx, []PortMapping{pAny}); err != nil {
		t.Fatal(err)
	}
	c.failFlushes = 2
	if err := f.AddPorts(ctx, []PortMapping{pOne}); err == nil {
		t.Fatal("AddPorts succeeded although every batch failed")
	}
	c.failFlushes = 2
	if err := f.RemovePorts(ctx, []PortMapping{pAny}); err == nil {
		t.Fatal("RemovePorts succeeded although every batch failed")
	}
	wantPorts(t, c, pAny)
	if err := f.AddPorts(ctx, []PortMapping{pUDP}); err != nil {
		t.Fatal(err)
	}
	mustSync(t, newNFT(c)) // forget everything: a restart with no ports
	wantPorts(t, c)
}

// Sync at start: stale ports go, missing ones come, nothing is duplicated,
// in one batch; the same Sync again sends nothing.
func TestSyncPorts(t *testing.T) {
	c := newFakeConn()
	if err := newNFT(c).Sync(ctx, []Network{netA}, []PortMapping{pAny, pOne}); err != nil {
		t.Fatal(err)
	}
	moved := pOne
	moved.SandboxPort = 81
	ps := []PortMapping{moved, pUDP, pUDP}
	if err := newNFT(c).Sync(ctx, []Network{netA}, ps); err != nil {
		t.Fatal(err)
	}
	if err := newNFT(c).Sync(ctx, []Network{netA}, ps); err != nil {
		t.Fatal(err)
	}
	if c.batches != 2 {
		t.Errorf("%d batches, want 2", c.batches)
	}
	wantPorts(t, c, moved, pUDP)
	for _, m := range []string{MapPorts, MapPortsAny} {
		els, _ := c.GetSetElements(&nftables.Set{Table: table(), Name: m})
		if len(els) != 1 {
			t.Errorf("map %s has %d elements, want 1", m, len(els))
		}
	}
	wantStaticOnce(t, c)
}

// LoopbackDNAT changes the rules: off, the output chain skips 127.0.0.0/8
// and there is no loopback masquerade; on, the reverse, and route_localnet
// is set on each non-internal bridge. Switching replaces the table.
func TestLoopbackDNATShapes(t *testing.T) {
	for _, on := range []bool{false, true} {
		rs := rules(on)
		var out [][]expr.Any
		masq := false
		for _, r := range rs {
			switch {
			case r.chain == ChainOutput:
				out = append(out, r.exprs)
			case r.comment == "tether: loopback to a published port":
				masq = true
			}
		}
		if len(out) != 2 || masq != on {
			t.Fatalf("on=%v: %d output rules, loopback masquerade %v", on, len(out), masq)
		}
		for _, ex := range out {
			skips := false
			if p, ok := ex[0].(*expr.Payload); ok && p.Offset == 16 && p.Len == 1 {
				c := ex[1].(*expr.Cmp)
				skips = c.Op == expr.CmpOpNeq && slices.Equal(c.Data, []byte{127})
			}
			if skips == on {
				t.Errorf("on=%v: output rule skips 127.0.0.0/8: %v", on, skips)
			}
		}
	}

	c := newFakeConn()
	mustSync(t, newNFT(c), netA, netC)
	f := newNFT(c)
	f.opts.LoopbackDNAT = true
	var set []string
	f.localnet = func(br string) error { set = append(set, br); return nil }
	mustSync(t, f, netA, netC)
	if c.deleted["table"] != 1 {
		t.Errorf("switching LoopbackDNAT on did not replace the table (%d deleted)", c.deleted["table"])
	}
	if err := f.Add(ctx, netB); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(set, []string{"tth-a", "tth-b"}) { // not tth-c: internal
		t.Errorf("route_localnet set on %v, want [tth-a tth-b]", set)
	}
	f.localnet = func(string) error { return errors.New("no such bridge") }
	if err := f.Add(ctx, netD); err == nil {
		t.Error("Add ignored a failed route_localnet")
	}
	off := newNFT(c)
	off.localnet = func(br string) error { t.Errorf("route_localnet on %s with LoopbackDNAT off", br); return nil }
	mustSync(t, off, netA)
	if c.deleted["table"] != 2 {
		t.Error("switching LoopbackDNAT off did not replace the table")
	}
}
