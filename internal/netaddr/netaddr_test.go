package netaddr

import (
	"net/netip"
	"testing"
)

func TestLast(t *testing.T) {
	for _, tc := range []struct{ prefix, want string }{
		{"10.1.2.0/24", "10.1.2.255"},
		{"10.1.2.7/24", "10.1.2.255"}, // host bits of the prefix do not matter
		{"10.171.208.0/21", "10.171.215.255"},
		{"172.16.0.0/12", "172.31.255.255"},
		{"10.0.0.0/8", "10.255.255.255"},
		{"0.0.0.0/0", "255.255.255.255"},
		{"192.0.2.4/30", "192.0.2.7"},
		{"192.0.2.4/31", "192.0.2.5"},
		{"192.0.2.4/32", "192.0.2.4"},
		{"10.0.0.0/25", "10.0.0.127"},
		{"2001:db8::/64", "2001:db8::ffff:ffff:ffff:ffff"},
		{"2001:db8::1/127", "2001:db8::1"},
		{"2001:db8::1/128", "2001:db8::1"},
		{"::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	} {
		if got := Last(netip.MustParsePrefix(tc.prefix)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("Last(%s) = %s, want %s", tc.prefix, got, tc.want)
		}
	}
	if got := Last(netip.Prefix{}); got.IsValid() {
		t.Errorf("Last(invalid) = %s, want the zero Addr", got)
	}
}

// FuzzLast: Last is in the prefix and is the address before the next
// prefix of the same size (or the top of the address space).
func FuzzLast(f *testing.F) {
	f.Add([]byte{10, 1, 2, 3}, 24)
	f.Add([]byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 64)
	f.Fuzz(func(t *testing.T, b []byte, bits int) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		p, err := a.Prefix(bits)
		if err != nil {
			return
		}
		last := Last(p)
		if !p.Contains(last) {
			t.Fatalf("Last(%s) = %s, outside", p, last)
		}
		if next := last.Next(); next.IsValid() && p.Contains(next) {
			t.Fatalf("Last(%s) = %s, but %s is in the prefix too", p, last, next)
		}
	})
}
