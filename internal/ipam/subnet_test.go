package ipam

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func mustSubnet(t testing.TB, c SubnetConfig) *Subnet {
	t.Helper()
	s, err := NewSubnet(c)
	if err != nil {
		t.Fatalf("NewSubnet(%+v): %v", c, err)
	}
	return s
}

func alloc(t *testing.T, s *Subnet, preferred string) string {
	t.Helper()
	var p netip.Addr
	if preferred != "" {
		p = ip(preferred)
	}
	a, err := s.Allocate(p)
	if err != nil {
		t.Fatalf("Allocate(%q): %v", preferred, err)
	}
	return a.String()
}

func TestNewSubnetValidation(t *testing.T) {
	aux := func(name, a string) map[string]netip.Addr { return map[string]netip.Addr{name: ip(a)} }
	tests := []struct {
		name  string
		c     SubnetConfig
		field string
		msg   string
	}{
		{"non-canonical subnet", SubnetConfig{Subnet: pfx("10.1.2.3/24")},
			"subnet", `invalid subnet "10.1.2.3/24": host bits set (did you mean 10.1.2.0/24?)`},
		{"missing subnet", SubnetConfig{}, "subnet", `invalid subnet "invalid Prefix": not a CIDR prefix`},
		{"ipv6 /47", SubnetConfig{Subnet: pfx("fd00::/47")}, "subnet", `invalid subnet "fd00::/47": prefix length must be between /48 and /124`},
		{"ipv6 /125", SubnetConfig{Subnet: pfx("fd00::/125")}, "subnet", "prefix length must be between /48 and /124"},
		{"ipv6 non-canonical", SubnetConfig{Subnet: pfx("fd00::1/64")}, "subnet", "host bits set (did you mean fd00::/64?)"},
		{"ipv4-mapped", SubnetConfig{Subnet: pfx("::ffff:10.0.0.0/120")}, "subnet", "an IPv4-mapped IPv6 prefix"},
		{"ipv6 ip-range outside", SubnetConfig{Subnet: pfx("fd00:1::/64"), IPRange: pfx("fd00:2::/80")},
			"ip-range", `invalid ip-range "fd00:2::/80": outside subnet fd00:1::/64`},
		{"ipv4 ip-range in ipv6 subnet", SubnetConfig{Subnet: pfx("fd00:1::/64"), IPRange: pfx("10.0.0.0/24")},
			"ip-range", "outside subnet fd00:1::/64"},
		{"ipv6 gateway anycast", SubnetConfig{Subnet: pfx("fd00:1::/64"), Gateway: ip("fd00:1::")},
			"gateway", `invalid gateway "fd00:1::": is the subnet-router anycast address of subnet fd00:1::/64`},
		{"ipv4 gateway in ipv6 subnet", SubnetConfig{Subnet: pfx("fd00:1::/64"), Gateway: ip("10.0.0.1")},
			"gateway", "outside subnet fd00:1::/64"},
		{"ipv6 aux outside", SubnetConfig{Subnet: pfx("fd00:1::/64"), Aux: aux("r", "fd00:2::1")},
			"aux-address", `invalid aux-address "r=fd00:2::1": outside subnet fd00:1::/64`},
		{"/31", SubnetConfig{Subnet: pfx("10.0.0.0/31")}, "subnet", "prefix length must be between /8 and /30"},
		{"/32", SubnetConfig{Subnet: pfx("10.0.0.1/32")}, "subnet", "prefix length must be between /8 and /30"},
		{"/7 non-canonical", SubnetConfig{Subnet: pfx("11.0.0.0/7")}, "subnet", "host bits set (did you mean 10.0.0.0/7?)"},
		{"/4", SubnetConfig{Subnet: pfx("0.0.0.0/4")}, "subnet", "prefix length must be between /8 and /30"},
		{"ip-range outside", SubnetConfig{Subnet: pfx("10.20.0.0/24"), IPRange: pfx("10.21.0.0/25")},
			"ip-range", `invalid ip-range "10.21.0.0/25": outside subnet 10.20.0.0/24`},
		{"ip-range larger", SubnetConfig{Subnet: pfx("10.20.0.0/24"), IPRange: pfx("10.20.0.0/23")},
			"ip-range", `invalid ip-range "10.20.0.0/23": outside subnet 10.20.0.0/24`},
		{"ip-range non-canonical", SubnetConfig{Subnet: pfx("10.20.0.0/24"), IPRange: pfx("10.20.0.5/25")},
			"ip-range", `invalid ip-range "10.20.0.5/25": host bits set (did you mean 10.20.0.0/25?)`},
		{"gateway outside", SubnetConfig{Subnet: pfx("10.20.0.0/24"), Gateway: ip("10.9.0.1")},
			"gateway", `invalid gateway "10.9.0.1": outside subnet 10.20.0.0/24`},
		{"gateway network address", SubnetConfig{Subnet: pfx("10.20.0.0/24"), Gateway: ip("10.20.0.0")},
			"gateway", `invalid gateway "10.20.0.0": is the network address of subnet 10.20.0.0/24`},
		{"gateway broadcast", SubnetConfig{Subnet: pfx("10.20.0.0/24"), Gateway: ip("10.20.0.255")},
			"gateway", `invalid gateway "10.20.0.255": is the broadcast address of subnet 10.20.0.0/24`},
		{"gateway ipv6", SubnetConfig{Subnet: pfx("10.20.0.0/24"), Gateway: ip("fd00::1")},
			"gateway", `invalid gateway "fd00::1": outside subnet 10.20.0.0/24`},
		{"aux outside", SubnetConfig{Subnet: pfx("10.20.0.0/24"), Aux: aux("router", "10.20.1.1")},
			"aux-address", `invalid aux-address "router=10.20.1.1": outside subnet 10.20.0.0/24`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSubnet(tt.c)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("NewSubnet error = %v, want *FieldError", err)
			}
			if fe.Field != tt.field || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("NewSubnet error = %q (field %q), want field %q containing %q", err, fe.Field, tt.field, tt.msg)
			}
		})
	}
}

func TestSubnetConfigDefaults(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("10.20.0.0/24"), IPRange: pfx("10.20.0.128/25")})
	if g := s.Gateway(); g != ip("10.20.0.1") {
		t.Errorf("Gateway = %s, want 10.20.0.1 (first usable of the subnet, even outside ip-range)", g)
	}
	c := s.Config()
	if c.Gateway != ip("10.20.0.1") || c.IPRange != pfx("10.20.0.128/25") || c.Subnet != pfx("10.20.0.0/24") {
		t.Errorf("Config = %+v", c)
	}
	if s.Free() != 127 { // 128 in range minus broadcast
		t.Errorf("Free = %d, want 127", s.Free())
	}
}

func TestAllocateNextFitAndWrap(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("10.0.0.0/29"), Aux: map[string]netip.Addr{"r": ip("10.0.0.3")}})
	// .0 network, .1 gateway, .3 aux, .7 broadcast: .2 .4 .5 .6 allocatable
	if s.Free() != 4 {
		t.Fatalf("Free = %d, want 4", s.Free())
	}
	for _, want := range []string{"10.0.0.2", "10.0.0.4", "10.0.0.5"} {
		if got := alloc(t, s, ""); got != want {
			t.Fatalf("Allocate = %s, want %s", got, want)
		}
	}
	s.Release(ip("10.0.0.2"))
	// next-fit continues after the last one, not at the freed .2
	if got := alloc(t, s, ""); got != "10.0.0.6" {
		t.Fatalf("Allocate = %s, want 10.0.0.6", got)
	}
	// now it wraps to .2
	if got := alloc(t, s, ""); got != "10.0.0.2" {
		t.Fatalf("Allocate after wrap = %s, want 10.0.0.2", got)
	}
	_, err := s.Allocate(netip.Addr{})
	if !errors.Is(err, ErrNoAddress) || err.Error() != "range 10.0.0.0/29 of subnet 10.0.0.0/29: no free address" {
		t.Fatalf("Allocate on full subnet error = %v, want ErrNoAddress", err)
	}
	if s.Free() != 0 {
		t.Errorf("Free = %d, want 0", s.Free())
	}
	s.Release(ip("10.0.0.5"))
	if got := alloc(t, s, ""); got != "10.0.0.5" {
		t.Errorf("Allocate after release in full subnet = %s, want 10.0.0.5", got)
	}
}

func TestAllocateIPRange(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("10.1.0.0/16"), IPRange: pfx("10.1.255.252/30")})
	for _, want := range []string{"10.1.255.252", "10.1.255.253", "10.1.255.254"} { // .255 is broadcast
		if got := alloc(t, s, ""); got != want {
			t.Fatalf("Allocate = %s, want %s", got, want)
		}
	}
	if _, err := s.Allocate(netip.Addr{}); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("Allocate on full range: %v, want ErrNoAddress", err)
	}
	// static address outside the range but inside the subnet is fine and does not touch Free
	if got := alloc(t, s, "10.1.7.7"); got != "10.1.7.7" {
		t.Fatalf("Allocate(10.1.7.7) = %s", got)
	}
	if s.Free() != 0 || !s.InUse(ip("10.1.7.7")) {
		t.Errorf("Free = %d, InUse(10.1.7.7) = %v", s.Free(), s.InUse(ip("10.1.7.7")))
	}
	s.Release(ip("10.1.7.7"))
	if s.Free() != 0 || s.InUse(ip("10.1.7.7")) {
		t.Errorf("after release: Free = %d, InUse = %v", s.Free(), s.InUse(ip("10.1.7.7")))
	}
}

func TestAllocatePreferred(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("10.20.0.0/24"), Gateway: ip("10.20.0.254"),
		Aux: map[string]netip.Addr{"host1": ip("10.20.0.9")}})
	if got := alloc(t, s, "10.20.0.50"); got != "10.20.0.50" {
		t.Fatalf("Allocate(preferred) = %s", got)
	}
	tests := []struct {
		ip      string
		inUse   bool
		field   string
		message string
	}{
		{"10.20.0.50", true, "", "10.20.0.50 in 10.20.0.0/24: address already in use"},
		{"10.20.0.254", true, "", "10.20.0.254 is the gateway of 10.20.0.0/24: address already in use"},
		{"10.20.0.9", true, "", "10.20.0.9 is an aux address of 10.20.0.0/24: address already in use"},
		{"10.21.0.5", false, "ip", `invalid ip "10.21.0.5": outside subnet 10.20.0.0/24`},
		{"10.20.0.0", false, "ip", `invalid ip "10.20.0.0": is the network address of subnet 10.20.0.0/24`},
		{"10.20.0.255", false, "ip", `invalid ip "10.20.0.255": is the broadcast address of subnet 10.20.0.0/24`},
		{"fd00::5", false, "ip", `invalid ip "fd00::5": outside subnet 10.20.0.0/24`},
	}
	for _, tt := range tests {
		_, err := s.Allocate(ip(tt.ip))
		if err == nil || err.Error() != tt.message || errors.Is(err, ErrAddrInUse) != tt.inUse {
			t.Errorf("Allocate(%s) error = %v, want %q (in use %v)", tt.ip, err, tt.message, tt.inUse)
		}
		var fe *FieldError
		if tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field) {
			t.Errorf("Allocate(%s) error = %#v, want FieldError %q", tt.ip, err, tt.field)
		}
	}
	// dynamic allocation skips the static address, the gateway and aux
	seen := map[string]bool{}
	for {
		a, err := s.Allocate(netip.Addr{})
		if err != nil {
			break
		}
		seen[a.String()] = true
	}
	for _, bad := range []string{"10.20.0.0", "10.20.0.9", "10.20.0.50", "10.20.0.254", "10.20.0.255"} {
		if seen[bad] {
			t.Errorf("dynamic allocation handed out %s", bad)
		}
	}
	if len(seen) != 256-5 {
		t.Errorf("allocated %d addresses, want %d", len(seen), 256-5)
	}
}

func TestReserveRelease(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("10.5.0.0/24")})
	free := s.Free()
	if err := s.Reserve(ip("10.5.0.2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ip("10.5.0.2")); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("second Reserve: %v, want ErrAddrInUse", err)
	}
	if !s.InUse(ip("10.5.0.2")) || s.Free() != free-1 {
		t.Errorf("InUse = %v, Free = %d", s.InUse(ip("10.5.0.2")), s.Free())
	}
	// the allocator skips reserved addresses
	if got := alloc(t, s, ""); got != "10.5.0.3" {
		t.Errorf("Allocate = %s, want 10.5.0.3", got)
	}
	s.Release(ip("10.5.0.2"))
	s.Release(ip("10.5.0.2")) // idempotent
	if s.InUse(ip("10.5.0.2")) || s.Free() != free-1 {
		t.Errorf("after release: InUse = %v, Free = %d want %d", s.InUse(ip("10.5.0.2")), s.Free(), free-1)
	}
	// fixed addresses and strangers cannot be released
	for _, a := range []string{"10.5.0.0", "10.5.0.1", "10.5.0.255", "10.6.0.1", "fd00::1"} {
		s.Release(ip(a))
	}
	s.Release(netip.Addr{})
	for _, a := range []string{"10.5.0.0", "10.5.0.1", "10.5.0.255"} {
		if !s.InUse(ip(a)) {
			t.Errorf("Release freed fixed address %s", a)
		}
	}
	if s.InUse(ip("10.6.0.1")) || s.Free() != free-1 {
		t.Errorf("InUse(outside) or Free changed: %d", s.Free())
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	cfgs := []SubnetConfig{
		{Subnet: pfx("10.20.0.0/24")},
		{Subnet: pfx("172.18.0.0/16"), IPRange: pfx("172.18.4.0/22"), Gateway: ip("172.18.0.254"),
			Aux: map[string]netip.Addr{"a": ip("172.18.4.1"), "bb": ip("172.18.9.9")}},
		{Subnet: pfx("10.0.0.0/30")},
		{Subnet: pfx("10.0.0.0/8")},
	}
	for _, c := range cfgs {
		s := mustSubnet(t, c)
		for range 70 {
			s.Allocate(netip.Addr{})
		}
		s.Release(s.Gateway().Next().Next())
		if c.Subnet.Bits() <= 24 {
			s.Allocate(u32v4(v4u32(c.Subnet.Addr()) + 200)) // static, maybe outside ip-range
		}
		data, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
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
		// the cursor survives: both hand out the same next addresses
		for range 3 {
			a1, e1 := s.Allocate(netip.Addr{})
			a2, e2 := r.Allocate(netip.Addr{})
			if a1 != a2 || (e1 == nil) != (e2 == nil) {
				t.Errorf("%v: after decode Allocate = %v %v, original %v %v", c.Subnet, a2, e2, a1, e1)
			}
		}
		if c.Subnet.Bits() == 8 && len(data) > 64 {
			t.Errorf("a /8 with 70 addresses encodes in %d bytes, want compact", len(data))
		}
	}
}

func TestUnmarshalCorrupt(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("10.0.0.0/30")})
	good, _ := s.MarshalBinary()
	var r Subnet
	for i := range len(good) {
		if err := r.UnmarshalBinary(good[:i]); err == nil {
			t.Errorf("truncated at %d: no error", i)
		}
	}
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] = 0xf0 // bits past a /30
	if err := r.UnmarshalBinary(bad); err == nil || !strings.Contains(err.Error(), "past the end") {
		t.Errorf("bits past end: %v", err)
	}
	if err := r.UnmarshalBinary(append(good, 0)); err == nil {
		t.Error("trailing byte: no error")
	}
	// a record with an invalid configuration is refused like NewSubnet would
	bad = append([]byte(nil), good...)
	bad[9] = 31 // subnet length byte
	var fe *FieldError
	if err := r.UnmarshalBinary(bad); !errors.As(err, &fe) {
		t.Errorf("invalid config: %v, want FieldError", err)
	}
}

// BenchmarkAllocate fills 10000 addresses of a fresh /16 per round; ns/op is
// per address.
func BenchmarkAllocate(b *testing.B) {
	const n = 10000
	for b.Loop() {
		b.StopTimer()
		s := mustSubnet(b, SubnetConfig{Subnet: pfx("10.1.0.0/16")})
		b.StartTimer()
		for range n {
			if _, err := s.Allocate(netip.Addr{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/addr")
}

// BenchmarkAllocateChurn keeps 10000 of a /16 in use, releasing the oldest
// address for each new one, so next-fit keeps scanning a fragmented map.
func BenchmarkAllocateChurn(b *testing.B) {
	s := mustSubnet(b, SubnetConfig{Subnet: pfx("10.1.0.0/16")})
	ring := make([]netip.Addr, 10000)
	for i := range ring {
		ring[i], _ = s.Allocate(netip.Addr{})
	}
	i := 0
	for b.Loop() {
		s.Release(ring[i])
		a, err := s.Allocate(netip.Addr{})
		if err != nil {
			b.Fatal(err)
		}
		ring[i] = a
		i = (i + 1) % len(ring)
	}
}

// FuzzUnmarshalBinary: any input decodes or fails cleanly; what decodes
// re-encodes to a record that decodes to the same allocator.
func FuzzUnmarshalBinary(f *testing.F) {
	for _, c := range []SubnetConfig{
		{Subnet: pfx("10.0.0.0/30")},
		{Subnet: pfx("172.18.0.0/16"), IPRange: pfx("172.18.4.0/22"), Aux: map[string]netip.Addr{"a": ip("172.18.4.1")}},
		{Subnet: pfx("fd00:1::/124")},
		{Subnet: pfx("fd00:1::/64"), IPRange: pfx("fd00:1::100/120"), Aux: map[string]netip.Addr{"a": ip("fd00:1::9:1")}},
	} {
		s, _ := NewSubnet(c)
		s.Allocate(netip.Addr{})
		if c.Subnet.Addr().Is6() {
			s.Allocate(ip("fd00:1::5:0:1")) // an extra address in the /64
		}
		data, _ := s.MarshalBinary()
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Subnet
		if s.UnmarshalBinary(data) != nil {
			return
		}
		again, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var r Subnet
		if err := r.UnmarshalBinary(again); err != nil || r.Free() != s.Free() {
			t.Fatalf("re-decode: %v, free %d vs %d", err, r.Free(), s.Free())
		}
		if third, _ := r.MarshalBinary(); !bytes.Equal(third, again) {
			t.Fatalf("re-encoding is not stable")
		}
	})
}
