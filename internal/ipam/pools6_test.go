package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestChooseSubnet6(t *testing.T) {
	ula := []PoolSpec{{pfx("fd12:3456:789a::/48"), 64}}
	tests := []struct {
		name     string
		pools    []PoolSpec
		blockers []Blocker
		want     string
	}{
		{"empty host", ula, nil, "fd12:3456:789a::/64"},
		{"first /64s taken by routes and an address", ula, []Blocker{
			{pfx("fd12:3456:789a::/63"), "route fd12:3456:789a::/63 dev wg0 (table main)"},
			{pfx("fd12:3456:789a:2::1/64"), "address fd12:3456:789a:2::1/64 on eth0"},
			{pfx("fd12:3456:789a:4::/64"), "route fd12:3456:789a:4::/64 dev eth1 (table 52)"},
		}, "fd12:3456:789a:3::/64"},
		{"a /128 inside a candidate blocks it", ula, []Blocker{
			{pfx("fd12:3456:789a::5/128"), "address fd12:3456:789a::5/128 on lo"},
		}, "fd12:3456:789a:1::/64"},
		{"broad route skips many candidates", ula, []Blocker{
			{pfx("fd12:3456:789a::/49"), "route fd12:3456:789a::/49 dev tun0 (table main)"},
		}, "fd12:3456:789a:8000::/64"},
		{"existing network", ula, []Blocker{NetworkBlocker("app", pfx("fd12:3456:789a::/64"))}, "fd12:3456:789a:1::/64"},
		{"ipv4 blockers are ignored", ula, []Blocker{route("0.0.0.0/0", "x"), route("10.0.0.0/8", "x")}, "fd12:3456:789a::/64"},
		{"blocker wider than the pool, next pool",
			[]PoolSpec{{pfx("fd12:3456:789a::/48"), 64}, {pfx("fd00:aaaa::/48"), 120}},
			[]Blocker{{pfx("fd12::/16"), "route fd12::/16 dev vpn0 (table main)"}}, "fd00:aaaa::/120"},
		{"top of the address space", []PoolSpec{{pfx("ffff:ffff:ffff::/48"), 64}},
			[]Blocker{{pfx("ffff:ffff:ffff::/49"), "r"}}, "ffff:ffff:ffff:8000::/64"},
		{"mixed pools choose IPv4", []PoolSpec{ula[0], {pfx("10.1.0.0/16"), 24}}, nil, "10.1.0.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseSubnet(tt.pools, tt.blockers)
			if err != nil || got.String() != tt.want {
				t.Errorf("ChooseSubnet = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestChooseSubnet6Full(t *testing.T) {
	pools := []PoolSpec{{pfx("ffff:ffff:ffff::/48"), 64}}
	_, err := ChooseSubnet(pools, []Blocker{{pfx("ffff:ffff:ffff::/48"), "route ffff:ffff:ffff::/48 dev x (table main)"}})
	var nf *NoFreePoolError
	if !errors.As(err, &nf) || !nf.IPv6 || nf.SuggestBIP.IsValid() || len(nf.Pools) != 1 || nf.Pools[0].Candidates != 65536 {
		t.Fatalf("error = %#v, want an IPv6 NoFreePoolError", err)
	}
	for _, want := range []string{
		"pool ffff:ffff:ffff::/48 (65536 subnets of /64) is blocked by:\n      route ffff:ffff:ffff::/48 dev x (table main)\n",
		`"fixed-cidr-v6"`, `{"base": "fd00:1:2::/48", "size": 64}`, `"ip -6 route show table all"`, `("ip -6 addr")`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error text lacks %q:\n%s", want, err)
		}
	}
}

func TestPoolSpecValidate6(t *testing.T) {
	tests := []struct {
		p       PoolSpec
		errPart string // "" = valid
	}{
		{PoolSpec{pfx("fd12:3456:789a::/48"), 64}, ""},
		{PoolSpec{pfx("fd00::/8"), 64}, ""},
		{PoolSpec{pfx("2001:db8::/32"), 124}, ""},
		{PoolSpec{pfx("fd00::/8"), 47}, "size must be between 48 and 124 and at least the base's length 8"},
		{PoolSpec{pfx("fd00::/64"), 48}, "size must be between 48 and 124"},
		{PoolSpec{pfx("fd00::/48"), 125}, "size must be between 48 and 124"},
		{PoolSpec{pfx("fd00::1/48"), 64}, "base has host bits set (did you mean fd00::/48?)"},
		{PoolSpec{pfx("::ffff:10.0.0.0/104"), 120}, "IPv4-mapped"},
	}
	for _, tt := range tests {
		err := tt.p.Validate()
		if tt.errPart == "" {
			if err != nil {
				t.Errorf("Validate(%v) = %v", tt.p, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "default-address-pools" || !strings.Contains(err.Error(), tt.errPart) {
			t.Errorf("Validate(%v) = %v, want %q", tt.p, err, tt.errPart)
		}
	}
}

func TestULAPool(t *testing.T) {
	a, b := ULAPool([]byte("machine-1")), ULAPool([]byte("machine-2"))
	if again := ULAPool([]byte("machine-1")); again != a {
		t.Errorf("ULAPool not deterministic: %v then %v", a, again)
	}
	if a == b {
		t.Errorf("two seeds gave the same pool %v", a)
	}
	for _, p := range []PoolSpec{a, b, ULAPool(nil)} {
		if p.Size != 64 || p.Base.Bits() != 48 || p.Base.Addr().As16()[0] != 0xfd || p.Validate() != nil {
			t.Errorf("ULAPool = %v, want fdXX:XXXX:XXXX::/48 size 64", p)
		}
	}
	// the global ID is the first 5 bytes of SHA-256(seed): SHA-256("") starts e3b0c44298
	if got := ULAPool(nil).Base; got != pfx("fde3:b0c4:4298::/48") {
		t.Errorf("ULAPool(nil) = %v, want fde3:b0c4:4298::/48", got)
	}
	if got := DefaultPools6([]byte("machine-1")); len(got) != 1 || got[0] != a {
		t.Errorf("DefaultPools6 = %v, want [%v]", got, a)
	}
	if got, err := ChooseSubnet(DefaultPools6([]byte("x")), nil); err != nil || got.Bits() != 64 || !ULAPool([]byte("x")).Base.Contains(got.Addr()) {
		t.Errorf("ChooseSubnet(DefaultPools6) = %v, %v", got, err)
	}
}

func TestPoolsOf(t *testing.T) {
	pools := []PoolSpec{{pfx("10.0.0.0/8"), 24}, {pfx("fd00::/48"), 64}, {netip.Prefix{}, 24}, {pfx("172.16.0.0/12"), 24}}
	if got := PoolsOf(pools, true); len(got) != 1 || got[0] != pools[1] {
		t.Errorf("PoolsOf(v6) = %v", got)
	}
	if got := PoolsOf(pools, false); len(got) != 2 || got[0] != pools[0] || got[1] != pools[3] {
		t.Errorf("PoolsOf(v4) = %v", got)
	}
}
