package ipam

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func route(p, via string) Blocker {
	return Blocker{Prefix: pfx(p), Source: "route " + p + " via " + via + " dev eth0 (table main)"}
}

// candidates expands pools into their subnets, in ChooseSubnet's order.
func candidates(pools []PoolSpec) []string {
	var out []string
	for _, p := range pools {
		start := uint64(v4u32(p.Base.Addr()))
		end := start + 1<<(32-p.Base.Bits())
		for c := start; c < end; c += 1 << (32 - p.Size) {
			out = append(out, netip.PrefixFrom(u32v4(uint32(c)), p.Size).String())
		}
	}
	return out
}

func TestDefaultPools(t *testing.T) {
	var want []string
	for i := 17; i <= 31; i++ {
		want = append(want, "172."+strconv.Itoa(i)+".0.0/16")
	}
	for i := 0; i < 256; i += 16 {
		want = append(want, "192.168."+strconv.Itoa(i)+".0/20")
	}
	got := candidates(DockerPools())
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("DockerPools candidates:\n got %v\nwant %v", got, want)
	}
	for _, p := range DefaultPools() {
		if err := p.Validate(); err != nil {
			t.Errorf("default pool %v: %v", p, err)
		}
	}
}

func TestChooseSubnet(t *testing.T) {
	defaults := DefaultPools()
	tests := []struct {
		name     string
		pools    []PoolSpec
		blockers []Blocker
		want     string
	}{
		{"empty host", defaults, nil, "172.17.0.0/16"},
		{"docker0 style address takes the first pool", defaults,
			[]Blocker{{pfx("172.17.0.1/16"), "address 172.17.0.1/16 on docker0"}}, "172.18.0.0/16"},
		{"host address inside a pool", defaults,
			[]Blocker{{pfx("172.17.42.7/24"), "address 172.17.42.7/24 on eth1"}}, "172.18.0.0/16"},
		{"/24 route blocks the whole /16 candidate", defaults,
			[]Blocker{route("172.17.5.0/24", "10.0.0.1"), route("172.18.200.0/24", "10.0.0.1")}, "172.19.0.0/16"},
		{"/24 route blocks only one /20 candidate",
			[]PoolSpec{{pfx("192.168.0.0/16"), 20}},
			[]Blocker{route("192.168.1.0/24", "10.0.0.1")}, "192.168.16.0/20"},
		{"route in a non-main table counts",
			[]PoolSpec{{pfx("10.10.0.0/16"), 24}},
			[]Blocker{{pfx("10.10.0.0/23"), "route 10.10.0.0/23 dev wg0 (table 51820)"}}, "10.10.2.0/24"},
		{"existing networks", []PoolSpec{{pfx("10.10.0.0/16"), 24}},
			[]Blocker{NetworkBlocker("app", pfx("10.10.0.0/24")), NetworkBlocker("db", pfx("10.10.1.0/24"))}, "10.10.2.0/24"},
		{"broad blocker skips many candidates", []PoolSpec{{pfx("10.0.0.0/8"), 24}},
			[]Blocker{route("10.0.0.0/9", "10.0.0.1")}, "10.128.0.0/24"},
		{"blocker wider than the pool, next pool", []PoolSpec{{pfx("172.17.0.0/16"), 24}, {pfx("10.1.0.0/16"), 24}},
			[]Blocker{route("172.16.0.0/12", "10.0.0.1")}, "10.1.0.0/24"},
		{"ipv6 pools and blockers are ignored", []PoolSpec{{pfx("fd00::/48"), 64}, {pfx("10.1.0.0/16"), 24}},
			[]Blocker{{pfx("fd00::/8"), "address fd00::1/8 on eth0"}}, "10.1.0.0/24"},
		{"cloud host with custom default-address-pools",
			[]PoolSpec{{pfx("10.10.0.0/16"), 24}},
			[]Blocker{route("172.16.0.0/12", "10.0.0.1"), route("192.168.0.0/16", "10.0.0.1")}, "10.10.0.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseSubnet(tt.pools, tt.blockers)
			if err != nil {
				t.Fatalf("ChooseSubnet: %v", err)
			}
			if got.String() != tt.want {
				t.Errorf("ChooseSubnet = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestChooseSubnetInvalidPool(t *testing.T) {
	for _, p := range []PoolSpec{
		{pfx("10.10.1.0/16"), 24}, // host bits
		{pfx("10.10.0.0/16"), 8},  // size shorter than base
		{pfx("10.10.0.0/16"), 31}, // no room
		{netip.Prefix{}, 24},
	} {
		_, err := ChooseSubnet([]PoolSpec{p}, nil)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "default-address-pools" {
			t.Errorf("ChooseSubnet(%v) error = %v, want FieldError default-address-pools", p, err)
		}
	}
}

// The cloud host: its routes cover all of 172.16/12 and 192.168/16, which hold
// every default pool.
func TestChooseSubnetCloudHostError(t *testing.T) {
	blockers := []Blocker{
		{pfx("10.0.0.5/24"), "address 10.0.0.5/24 on eth0"},
		route("172.16.0.0/12", "10.0.0.1"),
		route("192.168.0.0/16", "10.0.0.1"),
	}
	// Tether's defaults fall back past Docker's pools.
	if got, err := ChooseSubnet(DefaultPools(), blockers); err != nil || got != pfx("10.200.0.0/20") {
		t.Errorf("ChooseSubnet(DefaultPools) = %v, %v; want 10.200.0.0/20", got, err)
	}
	_, err := ChooseSubnet(DockerPools(), blockers)
	var nf *NoFreePoolError
	if !errors.As(err, &nf) {
		t.Fatalf("ChooseSubnet error = %v, want *NoFreePoolError", err)
	}
	want := `no free address pool: every candidate subnet overlaps a route, an address or a network
  pools 172.17.0.0/16, 172.18.0.0/16, 172.19.0.0/16, 172.20.0.0/14, 172.24.0.0/14, 172.28.0.0/14 (15 subnets of /16) are blocked by:
      route 172.16.0.0/12 via 10.0.0.1 dev eth0 (table main)
  pool 192.168.0.0/16 (16 subnets of /20) is blocked by:
      route 192.168.0.0/16 via 10.0.0.1 dev eth0 (table main)
to fix it, do one of:
  - set "bip" (daemon.json or --bip) to a free address for the default bridge, e.g. "bip": "10.200.0.1/24"
  - set "default-address-pools" in daemon.json to a free base, e.g. "default-address-pools": [{"base": "10.200.0.0/16", "size": 24}]
    (these examples overlap nothing on this host; check that your wider network does not use them)
  - or give the network an explicit --subnet
a subnet is taken when it overlaps a route in any routing table ("ip -4 route show table all"), an address on any interface ("ip -4 addr") or an existing network`
	if got := err.Error(); got != want {
		t.Errorf("error text:\n%s\nwant:\n%s", got, want)
	}
	// The suggestions are really free.
	if _, err := ChooseSubnet([]PoolSpec{nf.SuggestPool}, blockers); err != nil {
		t.Errorf("suggested pool %v is not free: %v", nf.SuggestPool, err)
	}
	for _, b := range blockers {
		if Overlaps(b.Prefix, nf.SuggestBIP) {
			t.Errorf("suggested bip %v overlaps %s", nf.SuggestBIP, b.Source)
		}
	}
}

func TestNoFreePoolErrorText(t *testing.T) {
	t.Run("many small blockers are cut short", func(t *testing.T) {
		var bs []Blocker
		for i := 0; i < 16; i++ {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i), 0}), 24)
			bs = append(bs, NetworkBlocker("net"+strconv.Itoa(i), p))
		}
		_, err := ChooseSubnet([]PoolSpec{{pfx("10.1.0.0/20"), 24}}, bs)
		text := err.Error()
		for _, want := range []string{
			"  pool 10.1.0.0/20 (16 subnets of /24) is blocked by:\n",
			"      network \"net0\"\n",
			"      network \"net4\"\n      ... and 11 more\n",
			`"bip": "10.200.0.1/24"`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("error text lacks %q:\n%s", want, text)
			}
		}
		if strings.Contains(text, `"net5"`) {
			t.Errorf("error text lists more than %d blockers:\n%s", maxBlockersShown, text)
		}
	})
	t.Run("suggestion avoids blocked private space", func(t *testing.T) {
		bs := []Blocker{route("10.200.0.0/13", "10.0.0.1"), route("172.16.0.0/12", "10.0.0.1")}
		_, err := ChooseSubnet([]PoolSpec{{pfx("172.17.0.0/16"), 24}}, bs)
		if text := err.Error(); !strings.Contains(text, `"bip": "10.0.0.1/24"`) ||
			!strings.Contains(text, `"base": "10.0.0.0/16", "size": 24`) ||
			!strings.Contains(text, "(256 subnets of /24) is blocked by:\n      route 172.16.0.0/12") {
			t.Errorf("unexpected error text:\n%s", text)
		}
	})
	t.Run("no private space free", func(t *testing.T) {
		bs := []Blocker{route("10.0.0.0/8", "x"), route("100.64.0.0/10", "x"), route("172.16.0.0/12", "x"), route("192.168.0.0/16", "x")}
		_, err := ChooseSubnet(DefaultPools(), bs)
		var nf *NoFreePoolError
		if !errors.As(err, &nf) || nf.SuggestBIP.IsValid() {
			t.Fatalf("error = %#v, want NoFreePoolError without suggestion", err)
		}
		if !strings.Contains(err.Error(), "no free private range was found on this host") {
			t.Errorf("error text:\n%s", err)
		}
	})
	t.Run("no pool", func(t *testing.T) {
		_, err := ChooseSubnet(nil, nil)
		if err == nil || !strings.Contains(err.Error(), "no IPv4 pool is configured") {
			t.Errorf("error = %v", err)
		}
	})
}

func TestOverlaps(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"10.0.0.0/8", "10.1.0.0/16", true},
		{"10.1.0.0/16", "10.0.0.0/8", true},
		{"10.1.0.0/16", "10.2.0.0/16", false},
		{"10.1.2.3/16", "10.1.200.0/24", true}, // unmasked input
		{"192.168.1.0/24", "192.168.1.255/32", true},
		{"192.168.1.0/24", "192.168.2.0/32", false},
		{"10.0.0.0/8", "::/0", false},
	}
	for _, tt := range tests {
		if got := Overlaps(pfx(tt.a), pfx(tt.b)); got != tt.want {
			t.Errorf("Overlaps(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	if Overlaps(netip.Prefix{}, pfx("0.0.0.0/0")) {
		t.Error("invalid prefix overlaps")
	}
}

func TestParseBIP(t *testing.T) {
	tests := []struct {
		in, subnet, gw string
		errPart        string
	}{
		{in: "10.171.211.13/21", subnet: "10.171.208.0/21", gw: "10.171.211.13"},
		{in: "172.17.0.1/16", subnet: "172.17.0.0/16", gw: "172.17.0.1"},
		{in: "192.168.5.254/24", subnet: "192.168.5.0/24", gw: "192.168.5.254"},
		{in: "10.0.0.1/30", subnet: "10.0.0.0/30", gw: "10.0.0.1"},
		{in: "10.171.208.0/21", errPart: `invalid bip "10.171.208.0/21": 10.171.208.0 is the network address of 10.171.208.0/21; use a host address such as 10.171.208.1/21`},
		{in: "10.171.215.255/21", errPart: "is the broadcast address of 10.171.208.0/21"},
		{in: "10.0.0.1/31", errPart: "a /31 leaves no room"},
		{in: "10.0.0.1", errPart: "want an address with a prefix length"},
		{in: "fd00::1/64", errPart: "only IPv4"},
		{in: "::ffff:10.0.0.1/120", errPart: "only IPv4"},
		{in: "", errPart: "want an address"},
	}
	for _, tt := range tests {
		subnet, gw, err := ParseBIP(tt.in)
		if tt.errPart != "" {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "bip" || !strings.Contains(err.Error(), tt.errPart) {
				t.Errorf("ParseBIP(%q) error = %v, want FieldError bip containing %q", tt.in, err, tt.errPart)
			}
			continue
		}
		if err != nil || subnet.String() != tt.subnet || gw.String() != tt.gw {
			t.Errorf("ParseBIP(%q) = %v, %v, %v; want %s, %s", tt.in, subnet, gw, err, tt.subnet, tt.gw)
		}
	}
}
