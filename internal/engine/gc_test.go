package engine

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tether-net/tether/internal/ipam"
)

func TestReconcileSubnet(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name     string
		cfg      ipam.SubnetConfig
		taken    []string // allocated before the reconcile (what the store held)
		owned    []string // what endpoint records own
		reserved []string
		freed    []string
		dup      []string
	}{
		{name: "in sync", cfg: ipam.SubnetConfig{Subnet: netip.MustParsePrefix("10.1.0.0/24")},
			taken: []string{"10.1.0.2", "10.1.0.3"}, owned: []string{"10.1.0.2", "10.1.0.3"}},
		{name: "leaked bit", cfg: ipam.SubnetConfig{Subnet: netip.MustParsePrefix("10.1.0.0/24")},
			taken: []string{"10.1.0.2", "10.1.0.3", "10.1.0.9"}, owned: []string{"10.1.0.3"},
			freed: []string{"10.1.0.2", "10.1.0.9"}},
		{name: "missing bit", cfg: ipam.SubnetConfig{Subnet: netip.MustParsePrefix("10.1.0.0/24")},
			taken: []string{"10.1.0.2"}, owned: []string{"10.1.0.2", "10.1.0.7"}, reserved: []string{"10.1.0.7"}},
		{name: "both, gateway and aux kept", cfg: ipam.SubnetConfig{Subnet: netip.MustParsePrefix("10.1.0.0/24"),
			Aux: map[string]netip.Addr{"r": a("10.1.0.200")}},
			taken: []string{"10.1.0.5"}, owned: []string{"10.1.0.6"}, reserved: []string{"10.1.0.6"}, freed: []string{"10.1.0.5"}},
		{name: "leak outside the ip-range", cfg: ipam.SubnetConfig{Subnet: netip.MustParsePrefix("10.1.0.0/24"),
			IPRange: netip.MustParsePrefix("10.1.0.128/25")},
			taken: []string{"10.1.0.20", "10.1.0.130"}, owned: []string{"10.1.0.130"}, freed: []string{"10.1.0.20"}},
		{name: "address held twice", cfg: ipam.SubnetConfig{Subnet: netip.MustParsePrefix("10.1.0.0/24")},
			taken: []string{"10.1.0.2"}, owned: []string{"10.1.0.2", "10.1.0.2"}, dup: []string{"10.1.0.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := ipam.NewSubnet(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.taken {
				if _, err := sub.Allocate(a(s)); err != nil {
					t.Fatal(err)
				}
			}
			var owned []netip.Addr
			for _, s := range tc.owned {
				owned = append(owned, a(s))
			}
			fix := reconcileSubnet(sub, owned)
			for what, pair := range map[string][2][]netip.Addr{
				"reserved": {fix.reserved, addrs(tc.reserved)}, "freed": {fix.freed, addrs(tc.freed)}, "dup": {fix.dup, addrs(tc.dup)},
			} {
				if !slices.Equal(pair[0], pair[1]) {
					t.Errorf("%s = %v, want %v", what, pair[0], pair[1])
				}
			}
			// Afterwards the bitmap holds exactly the owned addresses (plus
			// the fixed ones), checked address by address.
			want, _ := ipam.NewSubnet(tc.cfg)
			for _, o := range owned {
				_ = want.Reserve(o)
			}
			for x := tc.cfg.Subnet.Addr(); tc.cfg.Subnet.Contains(x); x = x.Next() {
				if sub.InUse(x) != want.InUse(x) {
					t.Errorf("%s: in use %v, want %v", x, sub.InUse(x), want.InUse(x))
				}
			}
		})
	}
}

func addrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestIsID(t *testing.T) {
	for s, want := range map[string]bool{
		newID():                  true,
		"abc":                    false,
		"tether:" + newID()[:57]: false,
		"ABCDEF" + newID()[6:]:   false,
		newID()[:63] + "g":       false,
	} {
		if isID(s) != want {
			t.Errorf("isID(%q) = %v, want %v", s, !want, want)
		}
	}
}
