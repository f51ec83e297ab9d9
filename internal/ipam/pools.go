// Package ipam chooses IPv4 subnets for new networks and hands out addresses
// inside them.
//
// Subnet choice is route aware: a candidate subnet is free only when it
// overlaps no route in any routing table, no interface address and no
// existing network (see HostBlockers and ChooseSubnet). When nothing is free
// the error names what blocks each pool and how to get out of it, instead of
// Docker's bare "could not find a free IP address range".
//
// Addresses inside a subnet come from a Subnet: one bitmap per subnet,
// next-fit like Docker, serialisable so the engine can keep it in its store.
package ipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/tether-net/tether/internal/netaddr"
)

// PoolSpec is one entry of "default-address-pools": carve Base into subnets
// of prefix length Size (base 10.10.0.0/16 size 24 = 10.10.0.0/24 ...
// 10.10.255.0/24).
type PoolSpec struct {
	Base netip.Prefix
	Size int
}

func (p PoolSpec) String() string { return fmt.Sprintf("%s size %d", p.Base, p.Size) }

// maxV4Size is the longest prefix a network can have: a /30 holds the network
// address, a gateway, one sandbox and the broadcast address.
const maxV4Size = 30

// Validate checks that Base is a canonical prefix and Size is at least as long
// as Base and leaves room for a gateway and a sandbox (at most /30 for IPv4).
func (p PoolSpec) Validate() error {
	if !p.Base.IsValid() {
		return &FieldError{Field: "default-address-pools", Value: p.String(), Reason: "base is not a CIDR prefix"}
	}
	if p.Base != p.Base.Masked() {
		return &FieldError{Field: "default-address-pools", Value: p.String(),
			Reason: fmt.Sprintf("base has host bits set (did you mean %s?)", p.Base.Masked())}
	}
	limit := 126
	if p.Base.Addr().Is4() {
		limit = maxV4Size
	}
	if p.Size < p.Base.Bits() || p.Size > limit {
		return &FieldError{Field: "default-address-pools", Value: p.String(),
			Reason: fmt.Sprintf("size must be between %d (the base's length) and %d", p.Base.Bits(), limit)}
	}
	return nil
}

// DockerPools returns Docker's default local pools, in Docker's order:
// 172.17-172.31 as /16s, then 192.168.0.0/16 in /20s.
func DockerPools() []PoolSpec {
	p := func(s string, size int) PoolSpec { return PoolSpec{Base: netip.MustParsePrefix(s), Size: size} }
	return []PoolSpec{
		p("172.17.0.0/16", 16),
		p("172.18.0.0/16", 16),
		p("172.19.0.0/16", 16),
		p("172.20.0.0/14", 16),
		p("172.24.0.0/14", 16),
		p("172.28.0.0/14", 16),
		p("192.168.0.0/16", 20),
	}
}

// FallbackPool is tried after Docker's pools: on a cloud host whose routes
// cover 172.16.0.0/12 and 192.168.0.0/16 every Docker pool is taken, and
// Docker fails with "could not find a free IP address range"; Tether then
// carves 10.200.0.0/13 into /20s (128 subnets of 4094 addresses).
var FallbackPool = PoolSpec{Base: netip.MustParsePrefix("10.200.0.0/13"), Size: 20}

// DefaultPools returns the pools used when default-address-pools is not set:
// Docker's, then FallbackPool.
func DefaultPools() []PoolSpec {
	return append(DockerPools(), FallbackPool)
}

// Blocker is something occupying IPv4 address space: a route, an interface
// address or an existing network. Source says what it is, for humans, e.g.
// `route 172.16.0.0/12 via 10.0.0.1 dev eth0 (table main)`,
// `address 192.168.1.5/24 on wlan0` or `network "app"`.
type Blocker struct {
	Prefix netip.Prefix
	Source string
}

// NetworkBlocker is the Blocker for an existing network's subnet.
func NetworkBlocker(name string, subnet netip.Prefix) Blocker {
	return Blocker{Prefix: subnet.Masked(), Source: fmt.Sprintf("network %q", name)}
}

// Overlaps reports whether a and b share at least one address. Prefixes of
// different families, and invalid prefixes, never overlap.
func Overlaps(a, b netip.Prefix) bool {
	if !a.IsValid() || !b.IsValid() {
		return false
	}
	return a.Masked().Overlaps(b.Masked())
}

// ChooseSubnet returns the first /Size subnet, in pool order and address
// order within a pool, that overlaps no blocker. IPv6 pools are skipped (this
// chooses IPv4 subnets). An invalid pool is a *FieldError; when every
// candidate is blocked the error is a *NoFreePoolError naming the blockers.
func ChooseSubnet(pools []PoolSpec, blockers []Blocker) (netip.Prefix, error) {
	bs := broadestFirst(blockers)
	nf := &NoFreePoolError{}
	for _, p := range pools {
		if err := p.Validate(); err != nil {
			return netip.Prefix{}, err
		}
		if !p.Base.Addr().Is4() {
			continue
		}
		free, causes := firstFree(p, bs)
		if free.IsValid() {
			return free, nil
		}
		nf.Pools = append(nf.Pools, BlockedPool{Pool: p, Candidates: 1 << (p.Size - p.Base.Bits()), Blockers: causes})
	}
	nf.SuggestBIP, nf.SuggestPool = suggest(bs)
	return netip.Prefix{}, nf
}

// broadestFirst returns the valid IPv4 blockers, masked, shortest prefix
// first (stable), so that the blocker named for a candidate is the one that
// explains the most: one /12 route rather than 256 /24 addresses.
func broadestFirst(blockers []Blocker) []Blocker {
	bs := make([]Blocker, 0, len(blockers))
	for _, b := range blockers {
		if b.Prefix.IsValid() && b.Prefix.Addr().Is4() {
			bs = append(bs, Blocker{Prefix: b.Prefix.Masked(), Source: b.Source})
		}
	}
	slices.SortStableFunc(bs, func(x, y Blocker) int { return cmp.Compare(x.Prefix.Bits(), y.Prefix.Bits()) })
	return bs
}

// firstFree walks p's candidates in order. It returns the first free one, or
// the distinct blockers (in the order met) that took every candidate. A
// blocker longer than a candidate rules out all candidates it spans at once,
// so the walk costs at most one step per blocker plus one per candidate.
func firstFree(p PoolSpec, bs []Blocker) (netip.Prefix, []Blocker) {
	var causes []Blocker
	step := uint64(1) << (32 - p.Size)
	start := uint64(v4u32(p.Base.Addr()))
	end := start + uint64(1)<<(32-p.Base.Bits())
	for c := start; c < end; {
		cand := netip.PrefixFrom(u32v4(uint32(c)), p.Size)
		i := slices.IndexFunc(bs, func(b Blocker) bool { return b.Prefix.Overlaps(cand) })
		if i < 0 {
			return cand, nil
		}
		b := bs[i]
		if !slices.Contains(causes, b) {
			causes = append(causes, b)
		}
		next := c + step
		if bEnd := uint64(v4u32(b.Prefix.Addr())) + uint64(1)<<(32-b.Prefix.Bits()); bEnd > next {
			next = (bEnd + step - 1) / step * step
		}
		c = next
	}
	return netip.Prefix{}, causes
}

// suggestionPools are searched, in order, for an example of free space to put
// in the error text. 10.200/13 first because the low end of 10/8 is what
// office and cloud networks use most.
var suggestionPools = []netip.Prefix{
	netip.MustParsePrefix("10.200.0.0/13"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// suggest finds a free private /16 (else /24) for the error's examples: a bip
// (first host of its first /24) and a pool carving it into /24s.
func suggest(bs []Blocker) (netip.Prefix, PoolSpec) {
	for _, size := range []int{16, 24} {
		for _, base := range suggestionPools {
			free, _ := firstFree(PoolSpec{Base: base, Size: size}, bs)
			if free.IsValid() {
				bip := netip.PrefixFrom(free.Addr().Next(), 24)
				return bip, PoolSpec{Base: free, Size: 24}
			}
		}
	}
	return netip.Prefix{}, PoolSpec{}
}

// ParseBIP parses a "bip" value: the default bridge's address with the
// subnet's prefix length. "10.171.211.13/21" gives subnet 10.171.208.0/21 and
// gateway 10.171.211.13. Errors are *FieldError{Field: "bip"}: not IPv4, a
// prefix longer than /30, or a host part that is the network or broadcast
// address.
func ParseBIP(s string) (subnet netip.Prefix, gateway netip.Addr, err error) {
	bad := func(reason string) (netip.Prefix, netip.Addr, error) {
		return netip.Prefix{}, netip.Addr{}, &FieldError{Field: "bip", Value: s, Reason: reason}
	}
	p, perr := netip.ParsePrefix(s)
	if perr != nil {
		return bad("want an address with a prefix length, e.g. 10.200.0.1/24")
	}
	if !p.Addr().Is4() {
		return bad("only IPv4 is supported")
	}
	if p.Bits() > maxV4Size {
		return bad(fmt.Sprintf("a /%d leaves no room for sandboxes (at most /%d)", p.Bits(), maxV4Size))
	}
	subnet = p.Masked()
	if p.Addr() == subnet.Addr() {
		return bad(fmt.Sprintf("%s is the network address of %s; use a host address such as %s/%d",
			p.Addr(), subnet, subnet.Addr().Next(), p.Bits()))
	}
	if p.Addr() == netaddr.Last(subnet) {
		return bad(fmt.Sprintf("%s is the broadcast address of %s; use a host address such as %s/%d",
			p.Addr(), subnet, subnet.Addr().Next(), p.Bits()))
	}
	return subnet, p.Addr(), nil
}

func v4u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32v4(u uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}
