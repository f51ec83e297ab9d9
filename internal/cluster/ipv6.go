package cluster

// IPv6 on global networks (dual stack). A dual-stack overlay endpoint's
// IPv6 address is not claimed on its own: it is the address of the
// network's Subnet6 at the host offset of its IPv4 address,
//
//	IPv4 = Subnet.Addr + k  =>  IPv6 = Subnet6.Addr + k
//
// so the IPv4 claim (one compare-and-swap) makes both unique cluster-wide,
// with no second write and no second race. Subnet6 must therefore hold at
// least as many addresses as Subnet. The IPv6 gateway is, unless given,
// the address at the IPv4 gateway's offset; a given one must not be at the
// offset of another IPv4 address of the subnet (an endpoint would derive
// it).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// ErrInvalidSubnet is wrapped by errors about an IPv6 subnet a network
// cannot have (not IPv6, host bits set, too small for the IPv4 subnet).
var ErrInvalidSubnet = errors.New("invalid subnet")

// Bounds of a global network's IPv6 subnet (the contract's /48 to /124).
const (
	MinSubnet6Bits = 48
	MaxSubnet6Bits = 124
)

// Derive6 is the IPv6 address of subnet6 at the offset a has in the IPv4
// subnet: subnet6's first address + (a - subnet's first address). It fails
// when subnet is not IPv4, a not in it, subnet6 not IPv6, or subnet6 holds
// fewer addresses than subnet.
func Derive6(subnet, subnet6 netip.Prefix, a netip.Addr) (netip.Addr, error) {
	switch {
	case !subnet.IsValid() || !subnet.Addr().Is4():
		return netip.Addr{}, fmt.Errorf("subnet %v is not an IPv4 subnet: %w", subnet, ErrInvalidSubnet)
	case !subnet6.IsValid() || !subnet6.Addr().Is6() || subnet6.Addr().Is4In6():
		return netip.Addr{}, fmt.Errorf("subnet6 %v is not an IPv6 subnet: %w", subnet6, ErrInvalidSubnet)
	case 128-subnet6.Bits() < 32-subnet.Bits():
		return netip.Addr{}, fmt.Errorf("subnet6 %v holds fewer addresses than subnet %v: %w", subnet6, subnet, ErrInvalidSubnet)
	case !a.Is4() || !subnet.Contains(a):
		return netip.Addr{}, fmt.Errorf("address %v outside subnet %v: %w", a, subnet, ErrOutOfSubnet)
	}
	k := offset4(subnet, a)
	b := subnet6.Masked().Addr().As16()
	// k < 2^(32-subnet.Bits()) <= 2^(128-subnet6.Bits()): it only fills host
	// bits of the masked subnet6, which are zero, so OR is addition.
	binary.BigEndian.PutUint32(b[12:], binary.BigEndian.Uint32(b[12:])|k)
	return netip.AddrFrom16(b), nil
}

// offset4 is a's offset from the first address of the IPv4 subnet s.
func offset4(s netip.Prefix, a netip.Addr) uint32 {
	base, x := s.Masked().Addr().As4(), a.As4()
	return binary.BigEndian.Uint32(x[:]) - binary.BigEndian.Uint32(base[:])
}

// Address6 is the IPv6 address (with Subnet6's prefix length) of the
// endpoint whose IPv4 address is a; the zero prefix on a network without
// Subnet6.
func (n NetworkRecord) Address6(a netip.Addr) (netip.Prefix, error) {
	if !n.Subnet6.IsValid() {
		return netip.Prefix{}, nil
	}
	a6, err := Derive6(n.Subnet, n.Subnet6, a)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a6, n.Subnet6.Bits()), nil
}

// checkSubnet6 checks a network's IPv6 side (with Subnet valid): none
// (Subnet6 and Gateway6 zero), or Subnet6 an IPv6 network of /48 to /124
// with its host bits clear holding at least as many addresses as Subnet,
// and Gateway6 a host address of it that no endpoint derives (the IPv4
// gateway's offset, or one past every IPv4 address's). Errors wrap
// ErrInvalidSubnet, or ErrOutOfSubnet for the gateway.
func checkSubnet6(n NetworkRecord) error {
	s6 := n.Subnet6
	switch {
	case !s6.IsValid() && n.Gateway6.IsValid():
		return fmt.Errorf("gateway6 %v without subnet6: %w", n.Gateway6, ErrInvalidSubnet)
	case !s6.IsValid():
		return nil
	case !s6.Addr().Is6() || s6.Addr().Is4In6() || s6.Addr().Zone() != "":
		return fmt.Errorf("subnet6 %v is not an IPv6 subnet: %w", s6, ErrInvalidSubnet)
	case s6 != s6.Masked():
		return fmt.Errorf("subnet6 %v has host bits set (%v): %w", s6, s6.Masked(), ErrInvalidSubnet)
	case s6.Bits() < MinSubnet6Bits || s6.Bits() > MaxSubnet6Bits:
		return fmt.Errorf("subnet6 %v is not a /%d to /%d: %w", s6, MinSubnet6Bits, MaxSubnet6Bits, ErrInvalidSubnet)
	case !n.Subnet.Addr().Is4():
		return fmt.Errorf("subnet6 %v without an IPv4 subnet: %w", s6, ErrInvalidSubnet)
	case 128-s6.Bits() < 32-n.Subnet.Bits():
		return fmt.Errorf("subnet6 %v holds fewer addresses than subnet %v (endpoints' IPv6 addresses are at their IPv4 offset): %w", s6, n.Subnet, ErrInvalidSubnet)
	}
	g := n.Gateway6
	if !g.Is6() || g.Is4In6() || g.Zone() != "" || !s6.Contains(g) || g == s6.Addr() {
		return fmt.Errorf("gateway6 %v is not a host address of subnet6 %v: %w", g, s6, ErrOutOfSubnet)
	}
	if want, err := Derive6(n.Subnet, s6, n.Gateway); err == nil && g != want && inSpan4(n.Subnet, s6, g) {
		return fmt.Errorf("gateway6 %v is the IPv6 address of IPv4 %v's endpoints (offset of an address of %v): use %v or one past the first %d addresses of %v: %w",
			g, n.Subnet, n.Subnet, want, uint64(1)<<(32-n.Subnet.Bits()), s6, ErrOutOfSubnet)
	}
	return nil
}

// inSpan4 reports whether g (in s6) is at an offset an address of the IPv4
// subnet s derives to: below 2^(32-s.Bits()).
func inSpan4(s, s6 netip.Prefix, g netip.Addr) bool {
	base, x := s6.Addr().As16(), g.As16()
	for i := range 12 {
		if base[i] != x[i] {
			return false
		}
	}
	k := uint64(binary.BigEndian.Uint32(x[12:]) - binary.BigEndian.Uint32(base[12:]))
	return k < uint64(1)<<(32-s.Bits())
}
