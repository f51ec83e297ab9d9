// Package netaddr holds small facts about addresses and prefixes that
// several packages need (the configuration check, IPAM, the cluster's
// address records) and that must be computed one way only. It imports
// nothing but the standard library, so any package may use it.
package netaddr

import "net/netip"

// Last is the highest address of p's subnet: every host bit set (for IPv4
// its broadcast address: 10.1.2.0/24 → 10.1.2.255). p's own host bits do
// not matter (10.1.2.7/24 gives the same). A /32 (or /128) is its own
// address. An invalid prefix gives the zero Addr.
func Last(p netip.Prefix) netip.Addr {
	if !p.IsValid() {
		return netip.Addr{}
	}
	a := p.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b)
}

// setHostBits sets every bit of b after the first bits.
func setHostBits(b []byte, bits int) {
	for i := bits; i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
}
