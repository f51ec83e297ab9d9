package firewall

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
)

// Unit tests of direct-routing protection (gateway modes, trusted
// interfaces, allow-direct-routing, the loopback drop) over the in-memory
// fakeConn.

// Each gateway mode and trusted interface list lands in exactly its sets.
func TestEntriesOfGatewayModes(t *testing.T) {
	sub := netip.MustParsePrefix("10.160.0.0/24")
	for _, tt := range []struct {
		name string
		n    Network
		want map[string][]string // set -> ids; sets not named must be empty
	}{
		{"nat (default)", Network{ID: "1", Bridge: "br", Subnet: sub, Masquerade: true},
			map[string][]string{SetMasq: {"10.160.0.0/24"}}},
		{"nat explicit", Network{ID: "1", Bridge: "br", Subnet: sub, Masquerade: true, Mode: ModeNAT},
			map[string][]string{SetMasq: {"10.160.0.0/24"}}},
		{"nat-unprotected", Network{ID: "1", Bridge: "br", Subnet: sub, Masquerade: true, Mode: ModeNATUnprotected},
			map[string][]string{SetMasq: {"10.160.0.0/24"}, SetUnprotected: {"br"}}},
		{"routed is never masqueraded", Network{ID: "1", Bridge: "br", Subnet: sub, Masquerade: true, Mode: ModeRouted},
			map[string][]string{SetRouted: {"br"}}},
		{"trusted", Network{ID: "1", Bridge: "br", Subnet: sub, Trusted: []string{"eth0", "vxlan.1"}},
			map[string][]string{SetTrusted: {"eth0 . br", "vxlan.1 . br"}}},
		{"internal wins over mode and trust", Network{ID: "1", Bridge: "br", Subnet: sub, Internal: true,
			Mode: ModeRouted, Trusted: []string{"eth0"}}, map[string][]string{SetInternal: {"br"}}},
		{"isolated", Network{ID: "1", Bridge: "br", Subnet: sub, Internal: true, Mode: ModeIsolated},
			map[string][]string{SetInternal: {"br"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := entriesOf(tt.n)
			for _, set := range []string{SetInternal, SetMasq, SetUnprotected, SetRouted, SetTrusted} {
				if got := e.ids(set); !slices.Equal(got, tt.want[set]) {
					t.Errorf("set %s = %v, want %v", set, got, tt.want[set])
				}
			}
		})
	}
}

// Every published port puts its sandbox end in set published; two host
// ports leading to one sandbox port share the element until both go.
func TestPublishedSandboxEnds(t *testing.T) {
	c := newFakeConn()
	f := newNFT(c)
	mustSync(t, f)
	published := func(want ...string) {
		t.Helper()
		if got := c.ours().ids(SetPublished); !slices.Equal(got, want) {
			t.Errorf("set published = %v, want %v", got, want)
		}
	}
	if err := f.AddPorts(ctx, []PortMapping{pAny, pLoop, pUDP}); err != nil {
		t.Fatal(err)
	}
	published("10.1.0.2 . tcp . 80", "10.1.0.3 . udp . 53")
	if err := f.RemovePorts(ctx, []PortMapping{pAny}); err != nil {
		t.Fatal(err)
	}
	published("10.1.0.2 . tcp . 80", "10.1.0.3 . udp . 53") // pLoop still leads there
	if err := f.RemovePorts(ctx, []PortMapping{pLoop, pUDP}); err != nil {
		t.Fatal(err)
	}
	published()
	if f.fallbacks != 0 {
		t.Errorf("%d fallbacks to a full sync, want 0", f.fallbacks)
	}
}

// The kernel's elements of published and trusted read back as the same
// identities (what Sync reconciles with).
func TestParseRoutingElements(t *testing.T) {
	want := entriesOf(Network{ID: "1", Bridge: "br", Trusted: []string{"eth0"}})
	for s, ids := range portEntries(pUDP) {
		want[s] = ids
	}
	for _, set := range []string{SetTrusted, SetPublished} {
		var els []nftables.SetElement
		for _, id := range want.ids(set) {
			els = append(els, want[set][id]...)
		}
		got := entries{set: parseElements(set, els)}
		if !slices.Equal(got.ids(set), want.ids(set)) {
			t.Errorf("set %s read back as %v, want %v", set, got.ids(set), want.ids(set))
		}
	}
}

// allow-direct-routing is one more forward rule; a table built without it
// is rebuilt when the option is turned on (its rules differ), and a
// restart with the same option sends nothing.
func TestAllowDirectRoutingLayout(t *testing.T) {
	off, on := rulesFor(Options{}), rulesFor(Options{AllowDirectRouting: true})
	if len(on) != len(off)+1 {
		t.Fatalf("%d rules with allow-direct-routing, %d without; want one more", len(on), len(off))
	}
	c := newFakeConn()
	mustSync(t, newNFT(c), netA)
	f := newNFT(c)
	f.opts.AllowDirectRouting = true
	mustSync(t, f, netA)
	if c.deleted["table"] != 1 || c.created["table"] != 2 {
		t.Errorf("tables deleted %d created %d, want 1 and 2", c.deleted["table"], c.created["table"])
	}
	f = newNFT(c)
	f.opts.AllowDirectRouting = true
	mustSync(t, f, netA)
	if c.batches != 2 {
		t.Errorf("%d batches, want 2 (the second start with the option changes nothing)", c.batches)
	}
}

// The loopback drop sits alone in raw_prerouting, whatever the options.
func TestLoopbackDropAlways(t *testing.T) {
	for _, o := range []Options{{}, {LoopbackDNAT: true}, {AllowDirectRouting: true}} {
		var raw []string
		for _, r := range rulesFor(o) {
			if r.chain == ChainRaw {
				raw = append(raw, r.comment)
			}
		}
		if len(raw) != 1 || raw[0] != loopbackRule(fam4).comment {
			t.Errorf("options %+v: raw_prerouting rules %q, want the loopback drop only", o, raw)
		}
	}
}
