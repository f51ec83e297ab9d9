package ipam

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// The v1 encoding of IPv4 subnets is what records on disk hold: these bytes
// were produced before IPv6 support and must decode and re-encode the same.
func TestMarshalV4Golden(t *testing.T) {
	tests := []struct {
		name string
		make func() *Subnet
		hex  string
	}{
		{"/24 with range, gateway, aux, static, release", func() *Subnet {
			s := mustSubnet(t, SubnetConfig{Subnet: pfx("172.18.0.0/24"), IPRange: pfx("172.18.0.128/25"),
				Gateway: ip("172.18.0.254"), Aux: map[string]netip.Addr{"r": ip("172.18.0.9")}})
			for range 3 {
				s.Allocate(netip.Addr{})
			}
			s.Allocate(ip("172.18.0.20"))
			s.Release(ip("172.18.0.129"))
			return s
		}, "5449504d01ac12000018ac12008019ac1200fe010172ac120009830102000101021000000000000102050000000000000000000000000000c0"},
		{"/8 one address", func() *Subnet {
			s := mustSubnet(t, SubnetConfig{Subnet: pfx("10.0.0.0/8")})
			s.Allocate(netip.Addr{})
			return s
		}, "5449504d010a00000008000a00000100030200010700000000000000feff0f010000000000000080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, _ := hex.DecodeString(tt.hex)
			got, err := tt.make().MarshalBinary()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("MarshalBinary = %x, %v\nwant            %s", got, err, tt.hex)
			}
			var r Subnet
			if err := r.UnmarshalBinary(want); err != nil {
				t.Fatal(err)
			}
			again, _ := r.MarshalBinary()
			if !bytes.Equal(again, want) {
				t.Errorf("re-encoding = %x, want %s", again, tt.hex)
			}
		})
	}
}

func TestSubnet6Window(t *testing.T) {
	tests := []struct {
		name         string
		c            SubnetConfig
		free         int
		first, last  string // first and last addresses Allocate(zero) hands out
		gateway      string
		outsideFirst string // first address of the subnet past the window ("" = none)
	}{
		{"/64: window at the subnet start", SubnetConfig{Subnet: pfx("fd00:1::/64")},
			65536 - 2, "fd00:1::2", "fd00:1::ffff", "fd00:1::1", "fd00:1::1:0"},
		{"/124: whole subnet, last address is a host", SubnetConfig{Subnet: pfx("fd00:1::/124")},
			14, "fd00:1::2", "fd00:1::f", "fd00:1::1", ""},
		{"/112: window is the subnet", SubnetConfig{Subnet: pfx("fd00:1::/112")},
			65534, "fd00:1::2", "fd00:1::ffff", "fd00:1::1", ""},
		{"ip-range /120 far from the start", SubnetConfig{Subnet: pfx("fd00:1::/64"), IPRange: pfx("fd00:1::ab00/120")},
			256, "fd00:1::ab00", "fd00:1::abff", "fd00:1::1", "fd00:1::ac00"},
		{"ip-range /80: window is its first 65536", SubnetConfig{Subnet: pfx("fd00:1::/64"), IPRange: pfx("fd00:1:0:0:5::/80")},
			65536, "fd00:1:0:0:5::", "fd00:1::5:0:0:ffff", "fd00:1::1", "fd00:1::5:0:1:0"},
		{"gateway inside the window", SubnetConfig{Subnet: pfx("fd00:1::/64"), IPRange: pfx("fd00:1::100/120"), Gateway: ip("fd00:1::1ff")},
			255, "fd00:1::100", "fd00:1::1fe", "fd00:1::1ff", "fd00:1::200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSubnet(t, tt.c)
			if s.Free() != tt.free || s.Gateway() != ip(tt.gateway) {
				t.Fatalf("Free = %d, Gateway = %s; want %d, %s", s.Free(), s.Gateway(), tt.free, tt.gateway)
			}
			if got := alloc(t, s, ""); ip(got) != ip(tt.first) {
				t.Errorf("first Allocate = %s, want %s", got, tt.first)
			}
			var last netip.Addr
			for {
				a, err := s.Allocate(netip.Addr{})
				if errors.Is(err, ErrNoAddress) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				last = a
			}
			if last != ip(tt.last) || s.Free() != 0 {
				t.Errorf("last Allocate = %s (Free %d), want %s", last, s.Free(), tt.last)
			}
			if tt.outsideFirst != "" {
				if s.InUse(ip(tt.outsideFirst)) {
					t.Errorf("%s past the window is in use", tt.outsideFirst)
				}
				if got := alloc(t, s, tt.outsideFirst); ip(got) != ip(tt.outsideFirst) || !s.InUse(ip(tt.outsideFirst)) {
					t.Errorf("static %s past the full window: %s, in use %v", tt.outsideFirst, got, s.InUse(ip(tt.outsideFirst)))
				}
			}
		})
	}
}

// Static, sticky and restored addresses anywhere in an IPv6 subnet.
func TestSubnet6Static(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("fd00:1::/64"), IPRange: pfx("fd00:1::100/120"),
		Aux: map[string]netip.Addr{"far": ip("fd00:1::dead:beef"), "near": ip("fd00:1::105")}})
	free := s.Free() // 256 - the aux .105
	if free != 255 {
		t.Fatalf("Free = %d, want 255", free)
	}
	tests := []struct {
		ip      string
		inUse   bool
		field   string
		message string
	}{
		{"fd00:1::ffff:ffff:ffff:ffff", false, "", ""}, // last address: a host
		{"fd00:1::7:0:0", false, "", ""},               // outside window and range
		{"fd00:1::7:0:0", true, "", "fd00:1::7:0:0 in fd00:1::/64: address already in use"},
		{"fd00:1::1", true, "", "fd00:1::1 is the gateway of fd00:1::/64: address already in use"},
		{"fd00:1::dead:beef", true, "", "fd00:1::dead:beef is an aux address of fd00:1::/64: address already in use"},
		{"fd00:1::105", true, "", "fd00:1::105 is an aux address of fd00:1::/64: address already in use"},
		{"fd00:1::", false, "ip", `invalid ip "fd00:1::": is the subnet-router anycast address of subnet fd00:1::/64`},
		{"fd00:2::5", false, "ip", `invalid ip "fd00:2::5": outside subnet fd00:1::/64`},
		{"10.0.0.5", false, "ip", `invalid ip "10.0.0.5": outside subnet fd00:1::/64`},
		{"::ffff:10.0.0.5", false, "ip", "outside subnet"},
		{"fe80::1%eth0", false, "ip", "outside subnet"},
	}
	for _, tt := range tests {
		a, err := s.Allocate(ip(tt.ip))
		if tt.message == "" {
			if err != nil || a != ip(tt.ip) || !s.InUse(a) {
				t.Errorf("Allocate(%s) = %s, %v; in use %v", tt.ip, a, err, s.InUse(a))
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.message) || errors.Is(err, ErrAddrInUse) != tt.inUse {
			t.Errorf("Allocate(%s) error = %v, want %q (in use %v)", tt.ip, err, tt.message, tt.inUse)
		}
		var fe *FieldError
		if tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field) {
			t.Errorf("Allocate(%s) error = %#v, want FieldError %q", tt.ip, err, tt.field)
		}
	}
	if s.Free() != free {
		t.Errorf("static addresses outside the window changed Free: %d, want %d", s.Free(), free)
	}
	// fixed addresses cannot be released, wherever they are
	for _, a := range []string{"fd00:1::", "fd00:1::1", "fd00:1::dead:beef", "fd00:1::105"} {
		s.Release(ip(a))
		if !s.InUse(ip(a)) {
			t.Errorf("Release freed fixed address %s", a)
		}
	}
	s.Release(ip("fd00:1::7:0:0"))
	s.Release(ip("fd00:1::7:0:0")) // idempotent
	if s.InUse(ip("fd00:1::7:0:0")) || !s.InUse(ip("fd00:1::ffff:ffff:ffff:ffff")) {
		t.Errorf("after release: InUse(7:0:0) = %v, InUse(last) = %v", s.InUse(ip("fd00:1::7:0:0")), s.InUse(ip("fd00:1::ffff:ffff:ffff:ffff")))
	}
	if err := s.Reserve(ip("fd00:1::7:0:0")); err != nil {
		t.Errorf("Reserve after release: %v", err)
	}
	// the policy: a sticky address outside the window is taken when free
	got, err := s.Assign(Request{Sticky: ip("fd00:1::9:9")})
	if err != nil || got != ip("fd00:1::9:9") {
		t.Errorf("Assign(sticky outside window) = %s, %v", got, err)
	}
	got, err = s.Assign(Request{Sticky: ip("fd00:1::9:9")})
	if err != nil || got != ip("fd00:1::100") {
		t.Errorf("Assign(taken sticky) = %s, %v; want the window's first free fd00:1::100", got, err)
	}
}

func TestSubnet6NextFit(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("fd00:1::/124"), Aux: map[string]netip.Addr{"r": ip("fd00:1::3")}})
	for _, want := range []string{"fd00:1::2", "fd00:1::4", "fd00:1::5"} {
		if got := alloc(t, s, ""); got != want {
			t.Fatalf("Allocate = %s, want %s", got, want)
		}
	}
	s.Release(ip("fd00:1::2"))
	if got := alloc(t, s, ""); got != "fd00:1::6" {
		t.Errorf("Allocate after release = %s, want fd00:1::6 (next-fit)", got)
	}
}

func TestMarshal6RoundTrip(t *testing.T) {
	cfgs := []SubnetConfig{
		{Subnet: pfx("fd00:1::/64")},
		{Subnet: pfx("fd12:3456:789a::/48"), IPRange: pfx("fd12:3456:789a:1::/64"), Gateway: ip("fd12:3456:789a::ffff"),
			Aux: map[string]netip.Addr{"a": ip("fd12:3456:789a:1::5"), "far": ip("fd12:3456:789a:ff::1")}},
		{Subnet: pfx("2001:db8::/124")},
	}
	for _, c := range cfgs {
		s := mustSubnet(t, c)
		for range 70 {
			s.Allocate(netip.Addr{})
		}
		s.Release(s.Gateway().Next().Next())
		last := lastAddr(c.Subnet)
		for _, a := range []netip.Addr{last, last.Prev().Prev()} { // extras when outside the window
			if err := s.Reserve(a); err != nil && !errors.Is(err, ErrAddrInUse) {
				t.Fatalf("%v: Reserve(%s): %v", c.Subnet, a, err)
			}
		}
		data, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("TIPM\x02")) {
			t.Fatalf("%v: encoding starts %q, want version 2", c.Subnet, data[:5])
		}
		var r Subnet
		if err := r.UnmarshalBinary(data); err != nil {
			t.Fatalf("%v: UnmarshalBinary: %v", c.Subnet, err)
		}
		again, _ := r.MarshalBinary()
		if !bytes.Equal(data, again) {
			t.Errorf("%v: re-encoding differs", c.Subnet)
		}
		if r.Free() != s.Free() || r.Gateway() != s.Gateway() || r.Config().IPRange != c.IPRange || len(r.Config().Aux) != len(c.Aux) {
			t.Errorf("%v: decoded Free %d Gateway %s Config %+v; want Free %d", c.Subnet, r.Free(), r.Gateway(), r.Config(), s.Free())
		}
		if c.Subnet.Bits() < 112 && (!r.InUse(last) || !r.InUse(last.Prev().Prev()) || r.InUse(last.Prev())) {
			t.Errorf("%v: extras lost: InUse(last) %v, InUse(last-2) %v, InUse(last-1) %v", c.Subnet, r.InUse(last), r.InUse(last.Prev().Prev()), r.InUse(last.Prev()))
		}
		for range 3 {
			a1, e1 := s.Allocate(netip.Addr{})
			a2, e2 := r.Allocate(netip.Addr{})
			if a1 != a2 || (e1 == nil) != (e2 == nil) {
				t.Errorf("%v: after decode Allocate = %v %v, original %v %v", c.Subnet, a2, e2, a1, e1)
			}
		}
		if len(data) > 200 {
			t.Errorf("%v: %d bytes, want compact", c.Subnet, len(data))
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	u, _ := addrU128(p.Addr()).add(pow2(128 - p.Bits()).sub(u128{lo: 1}))
	return u.addr(128)
}

func TestUnmarshal6Corrupt(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("fd00:1::/64")})
	if err := s.Reserve(ip("fd00:1::5:0:0")); err != nil {
		t.Fatal(err)
	}
	good, _ := s.MarshalBinary()
	var r Subnet
	for i := range len(good) {
		if err := r.UnmarshalBinary(good[:i]); err == nil {
			t.Errorf("truncated at %d: no error", i)
		}
	}
	if err := r.UnmarshalBinary(append(slicesClone(good), 0)); err == nil {
		t.Error("trailing byte: no error")
	}
	extraAt := len(good) - 16
	tests := []struct {
		name  string
		at    int
		patch []byte
		want  string
	}{
		{"extra inside the window", extraAt + 10, []byte{0, 0, 0, 0, 0, 7}, "not a host address outside the window"},
		{"extra is the anycast address", extraAt + 10, []byte{0, 0, 0, 0, 0, 0}, "not a host address outside the window"},
		{"extra outside the subnet", extraAt + 5, []byte{2}, "not a host address outside the window"},
		{"window base", 5 + 17 + 1 + 16 + 1 + 15, []byte{1}, "does not match"},
		{"window size", 5 + 17 + 1 + 16 + 1 + 16, []byte{0x7f}, "does not match"},
		{"subnet length", 5 + 16, []byte{40}, "prefix length must be between /48 and /124"},
	}
	for _, tt := range tests {
		bad := slicesClone(good)
		copy(bad[tt.at:], tt.patch)
		if err := r.UnmarshalBinary(bad); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	// two extras out of order
	s2 := mustSubnet(t, SubnetConfig{Subnet: pfx("fd00:1::/64")})
	s2.Reserve(ip("fd00:1::5:0:0"))
	s2.Reserve(ip("fd00:1::6:0:0"))
	data, _ := s2.MarshalBinary()
	n := len(data)
	swapped := slicesClone(data)
	copy(swapped[n-32:n-16], data[n-16:])
	copy(swapped[n-16:], data[n-32:n-16])
	if err := r.UnmarshalBinary(swapped); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Errorf("extras out of order: %v", err)
	}
}

func slicesClone(b []byte) []byte { return append([]byte(nil), b...) }

func TestTaken(t *testing.T) {
	tests := []struct {
		c     SubnetConfig
		take  []string
		taken []string
	}{
		{SubnetConfig{Subnet: pfx("10.0.0.0/24"), Aux: map[string]netip.Addr{"r": ip("10.0.0.9")}},
			[]string{"10.0.0.200", "10.0.0.2", "10.0.0.70"}, []string{"10.0.0.2", "10.0.0.70", "10.0.0.200"}},
		{SubnetConfig{Subnet: pfx("fd00:1::/64"), Aux: map[string]netip.Addr{"r": ip("fd00:1::9:9")}},
			[]string{"fd00:1::ffff:ffff:ffff:ffff", "fd00:1::2", "fd00:1::8:0", "fd00:1::ffff"},
			[]string{"fd00:1::2", "fd00:1::ffff", "fd00:1::8:0", "fd00:1::ffff:ffff:ffff:ffff"}},
		{SubnetConfig{Subnet: pfx("fd00:1::/120")}, nil, nil},
	}
	for _, tt := range tests {
		s := mustSubnet(t, tt.c)
		for _, a := range tt.take {
			if err := s.Reserve(ip(a)); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		for _, a := range s.Taken() {
			got = append(got, a.String())
		}
		if strings.Join(got, " ") != strings.Join(tt.taken, " ") {
			t.Errorf("%v: Taken = %v, want %v", tt.c.Subnet, got, tt.taken)
		}
	}
}
