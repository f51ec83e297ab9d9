package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestDerive6(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	tests := []struct {
		name            string
		subnet, subnet6 string
		addr            string
		want            string // "" = an error
		wantErr         error
	}{
		{"first host", "10.0.0.0/24", "fd00:1::/64", "10.0.0.1", "fd00:1::1", nil},
		{"last host", "10.0.0.0/24", "fd00:1::/64", "10.0.0.254", "fd00:1::fe", nil},
		{"offset above 2^16", "10.0.0.0/8", "fd00:1::/64", "10.1.2.3", "fd00:1::1:203", nil},
		{"offset above 2^24", "10.0.0.0/8", "fd00:1::/64", "10.255.255.254", "fd00:1::ff:fffe", nil},
		{"offset 2^23+1 in a /8 into a /104", "10.0.0.0/8", "fd00:1::/104", "10.128.0.1", "fd00:1::80:1", nil},
		{"subnet6 exactly as large", "10.1.2.0/24", "fd00:1:2:3::ff00/120", "10.1.2.200", "fd00:1:2:3::ffc8", nil},
		{"subnet not at a /24 boundary", "192.168.5.64/26", "fd00::/64", "192.168.5.70", "fd00::6", nil},
		{"subnet6 given unmasked is masked", "10.0.0.0/24", "fd00:1::99/64", "10.0.0.5", "fd00:1::5", nil},
		{"subnet6 too small", "10.0.0.0/16", "fd00:1::/120", "10.0.0.5", "", ErrInvalidSubnet},
		{"subnet6 one bit too small", "10.0.0.0/24", "fd00:1::/121", "10.0.0.5", "", ErrInvalidSubnet},
		{"subnet6 is IPv4", "10.0.0.0/24", "10.1.0.0/24", "10.0.0.5", "", ErrInvalidSubnet},
		{"subnet6 is IPv4-mapped", "10.0.0.0/24", "::ffff:10.1.0.0/120", "10.0.0.5", "", ErrInvalidSubnet},
		{"subnet is IPv6", "fd00::/120", "fd00:1::/64", "fd00::5", "", ErrInvalidSubnet},
		{"address outside the subnet", "10.0.0.0/24", "fd00:1::/64", "10.0.1.5", "", ErrOutOfSubnet},
		{"address IPv6", "10.0.0.0/24", "fd00:1::/64", "fd00:1::5", "", ErrOutOfSubnet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Derive6(p(tt.subnet), p(tt.subnet6), a(tt.addr))
			if tt.want == "" {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Derive6 = %v, %v; want an error matching %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != a(tt.want) {
				t.Errorf("Derive6 = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestCheckSubnet6(t *testing.T) {
	tests := []struct {
		name              string
		subnet6, gateway6 string // "" = zero
		wantErr           error  // nil = accepted
	}{
		{"IPv4 only", "", "", nil},
		{"derived gateway", "fd00:1::/64", "fd00:1::1", nil},
		{"gateway past the IPv4 span", "fd00:1::/64", "fd00:1::1:0", nil},
		{"gateway far off", "fd00:1::/64", "fd00:1::ffff:ffff:ffff", nil},
		{"smallest subnet6", "fd00:1::/120", "fd00:1::1", nil},
		{"gateway at another endpoint's offset", "fd00:1::/64", "fd00:1::5", ErrOutOfSubnet},
		{"gateway at the broadcast's offset", "fd00:1::/64", "fd00:1::ff", ErrOutOfSubnet},
		{"gateway outside", "fd00:1::/64", "fd00:2::1", ErrOutOfSubnet},
		{"gateway the subnet-router anycast", "fd00:1::/64", "fd00:1::", ErrOutOfSubnet},
		{"gateway missing", "fd00:1::/64", "", ErrOutOfSubnet},
		{"gateway without subnet", "", "fd00:1::1", ErrInvalidSubnet},
		{"subnet6 too small", "fd00:1::/121", "fd00:1::1", ErrInvalidSubnet},
		{"subnet6 too large", "fd00::/47", "fd00::1", ErrInvalidSubnet},
		{"subnet6 not canonical", "fd00:1::1/64", "fd00:1::1", ErrInvalidSubnet},
		{"subnet6 IPv4", "10.1.0.0/16", "10.1.0.1", ErrInvalidSubnet},
		{"subnet6 IPv4-mapped", "::ffff:10.1.0.0/120", "::ffff:10.1.0.1", ErrInvalidSubnet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := NetworkRecord{Name: "n", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1")}
			if tt.subnet6 != "" {
				n.Subnet6 = netip.MustParsePrefix(tt.subnet6)
			}
			if tt.gateway6 != "" {
				n.Gateway6 = netip.MustParseAddr(tt.gateway6)
			}
			err := checkSubnet6(n)
			if (err == nil) != (tt.wantErr == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("checkSubnet6 = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// A dual-stack network claims its IPv6 subnet as it claims its IPv4 one
// (no other network gets it or an overlapping one; removal frees it); its
// endpoints are published with the IPv6 address at their IPv4 offset, and
// peers carry it to the listener.
func TestDualStackNetwork(t *testing.T) {
	st := sharedStore(t)
	a, b := node(t, st, "a", time.Second), node(t, st, "b", time.Second)
	ctx := context.Background()
	pfx := netip.MustParsePrefix
	n, err := a.CreateNetwork(ctx, NetworkRecord{ID: "n1", Name: "ds", Subnet: pfx("10.0.0.0/16"), Subnet6: pfx("fd00:1::/64")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.Gateway6 != netip.MustParseAddr("fd00:1::1") {
		t.Errorf("gateway6 = %v, want fd00:1::1 (at the gateway's offset)", n.Gateway6)
	}
	if kv, err := st.Get(ctx, keySubnets+"fd00:1::_64"); err != nil || string(kv.Value) != "n1" {
		t.Errorf("subnet6 key: %q, %v", kv.Value, err)
	}
	for _, tt := range []struct {
		name string
		rec  NetworkRecord
		want error
	}{
		{"same subnet6", NetworkRecord{ID: "x", Name: "x", Subnet: pfx("10.1.0.0/24"), Subnet6: pfx("fd00:1::/64")}, ErrSubnetInUse},
		{"overlapping subnet6", NetworkRecord{ID: "x", Name: "x", Subnet: pfx("10.1.0.0/24"), Subnet6: pfx("fd00:1::/96")}, ErrSubnetInUse},
		{"containing subnet6", NetworkRecord{ID: "x", Name: "x", Subnet: pfx("10.1.0.0/24"), Subnet6: pfx("fd00:1::/48")}, ErrSubnetInUse},
		{"subnet6 exactly as large as subnet", NetworkRecord{ID: "x", Name: "x", Subnet: pfx("10.1.0.0/16"), Subnet6: pfx("fd00:2::/112")}, nil},
		{"subnet6 too small", NetworkRecord{ID: "x", Name: "x", Subnet: pfx("10.1.0.0/16"), Subnet6: pfx("fd00:2::/120")}, ErrInvalidSubnet},
		{"subnet6 not canonical", NetworkRecord{ID: "x", Name: "x", Subnet: pfx("10.1.0.0/24"), Subnet6: pfx("fd00:2::1/64")}, ErrInvalidSubnet},
		{"gateway6 outside", NetworkRecord{ID: "x", Name: "x", Subnet: pfx("10.1.0.0/24"), Subnet6: pfx("fd00:2::/64"), Gateway6: netip.MustParseAddr("fd00:3::1")}, ErrOutOfSubnet},
	} {
		_, err := b.CreateNetwork(ctx, tt.rec, nil)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			} else if err := b.RemoveNetwork(ctx, tt.rec.ID); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
		if _, err := st.Get(ctx, keyNetworks+"x"); err == nil {
			t.Fatalf("%s: refused network recorded", tt.name)
		}
	}

	// published in the claim's transaction, and by PutEndpoint
	pub := EndpointRecord{ID: "ep-web", NetworkID: n.ID, SandboxName: "web"}
	web, err := a.ClaimAddress(ctx, AddressRequest{NetworkID: n.ID, EndpointID: pub.ID, SandboxName: "web",
		Publish: &pub, MACFor: func(netip.Addr) string { return "02:42:0a:00:00:02" }})
	if err != nil {
		t.Fatal(err)
	}
	var rec EndpointRecord
	kv, _ := st.Get(ctx, keyEndpoints+"n1/ep-web")
	if json.Unmarshal(kv.Value, &rec) != nil || rec.Address != web || rec.Address6 != pfx("fd00:1::2/64") {
		t.Errorf("web's record: %s; want address %v and address6 fd00:1::2/64", kv.Value, web)
	}
	if got, err := n.Address6(web.Addr()); err != nil || got != rec.Address6 {
		t.Errorf("Address6(%v) = %v, %v; want %v", web.Addr(), got, err, rec.Address6)
	}
	db := attach(t, b, n.ID, "db") // PutEndpoint, Address6 left zero by the caller
	kv, _ = st.Get(ctx, keyEndpoints+"n1/ep-db")
	if json.Unmarshal(kv.Value, &rec) != nil || rec.Address6 != pfx("fd00:1::3/64") {
		t.Errorf("db (%v) published as %s; want address6 fd00:1::3/64", db.Address, kv.Value)
	}

	r := newRecorder()
	w := NewWatcher(a, r)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.Run(wctx)
	eventually(t, "a sees db", 5*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.peers["ep-db"].Address6 == pfx("fd00:1::3/64") && r.nets["n1"].Subnet6 == pfx("fd00:1::/64")
	})
	cancel()

	if err := a.RemoveEndpoint(ctx, pub); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveEndpoint(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveNetwork(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, keySubnets+"fd00:1::_64"); err == nil {
		t.Error("subnet6 key left after the removal")
	}
	if _, err := b.CreateNetwork(ctx, NetworkRecord{ID: "n2", Name: "ds2", Subnet: pfx("10.0.0.0/16"), Subnet6: pfx("fd00:1::/64")}, nil); err != nil {
		t.Errorf("subnet6 not free after the removal: %v", err)
	}
}

// Records written before IPv6 decode as IPv4-only, and IPv4-only records
// are written as before (no IPv6 fields).
func TestIPv4OnlyRecordsUnchanged(t *testing.T) {
	var n NetworkRecord
	if err := json.Unmarshal([]byte(goodNet), &n); err != nil || n.Subnet6.IsValid() || n.Gateway6.IsValid() {
		t.Errorf("old network record: %+v, %v", n, err)
	}
	var ep EndpointRecord
	if err := json.Unmarshal([]byte(goodEp), &ep); err != nil || ep.Address6.IsValid() {
		t.Errorf("old endpoint record: %+v, %v", ep, err)
	}
	for _, v := range []any{n, ep} {
		b, _ := json.Marshal(v)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		for _, k := range []string{"subnet6", "gateway6", "address6"} {
			if _, ok := m[k]; ok {
				t.Errorf("IPv4-only record written with %q: %s", k, b)
			}
		}
	}
}
