package ipam

// Address arithmetic for both families: an address as an unsigned 128-bit
// number (IPv4 as a 32-bit value, so 10.0.0.1 is 0x0a000001), enough for
// walking pool candidates and measuring offsets inside an IPv6 subnet.

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// u128 is an unsigned 128-bit integer.
type u128 struct{ hi, lo uint64 }

// addrU128 returns a as a number: IPv4 in the low 32 bits, IPv6 all 128.
func addrU128(a netip.Addr) u128 {
	if a.Is4() {
		return u128{lo: uint64(v4u32(a))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

// addr turns u back into an address of the family of bitLen (32 or 128).
func (u u128) addr(bitLen int) netip.Addr {
	if bitLen == 32 {
		return u32v4(uint32(u.lo))
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	return netip.AddrFrom16(b)
}

// pow2 returns 1<<n for n in [0, 127].
func pow2(n int) u128 {
	if n >= 64 {
		return u128{hi: 1 << (n - 64)}
	}
	return u128{lo: 1 << n}
}

// add returns u+v and whether it overflowed 128 bits.
func (u u128) add(v u128) (u128, bool) {
	lo, c := bits.Add64(u.lo, v.lo, 0)
	hi, c := bits.Add64(u.hi, v.hi, c)
	return u128{hi, lo}, c != 0
}

// sub returns u-v; the caller ensures u >= v.
func (u u128) sub(v u128) u128 {
	lo, b := bits.Sub64(u.lo, v.lo, 0)
	hi, _ := bits.Sub64(u.hi, v.hi, b)
	return u128{hi, lo}
}

func (u u128) cmp(v u128) int {
	switch {
	case u.hi != v.hi:
		return cmpU64(u.hi, v.hi)
	default:
		return cmpU64(u.lo, v.lo)
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
