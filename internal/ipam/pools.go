// Package ipam chooses IPv4 and IPv6 subnets for new networks and hands out
// addresses inside them.
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
	"crypto/sha256"
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
// as Base and leaves room for a gateway and a sandbox (at most /30 for IPv4);
// an IPv6 Size must also be a subnet length NewSubnet takes (/48 to /124).
func (p PoolSpec) Validate() error {
	if !p.Base.IsValid() {
		return &FieldError{Field: "default-address-pools", Value: p.String(), Reason: "base is not a CIDR prefix"}
	}
	if p.Base.Addr().Is4In6() {
		return &FieldError{Field: "default-address-pools", Value: p.String(), Reason: "base is an IPv4-mapped IPv6 prefix; give it as IPv4"}
	}
	if p.Base != p.Base.Masked() {
		return &FieldError{Field: "default-address-pools", Value: p.String(),
			Reason: fmt.Sprintf("base has host bits set (did you mean %s?)", p.Base.Masked())}
	}
	if p.Base.Addr().Is4() {
		if p.Size < p.Base.Bits() || p.Size > maxV4Size {
			return &FieldError{Field: "default-address-pools", Value: p.String(),
				Reason: fmt.Sprintf("size must be between %d (the base's length) and %d", p.Base.Bits(), maxV4Size)}
		}
		return nil
	}
	if p.Size < p.Base.Bits() || p.Size < minSubnetBits6 || p.Size > maxSubnetBits6 {
		return &FieldError{Field: "default-address-pools", Value: p.String(),
			Reason: fmt.Sprintf("size must be between %d and %d and at least the base's length %d",
				minSubnetBits6, maxSubnetBits6, p.Base.Bits())}
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

// ULAPool returns the IPv6 pool of this host: the unique local /48
// fdXX:XXXX:XXXX::/48 (RFC 4193) carved into /64s, where the 40-bit global
// ID XX:XXXX:XXXX is the first 5 bytes of SHA-256(seed). RFC 4193 section
// 3.2.2 derives the global ID from a hash of the time and an EUI-64; a hash
// of a stable host identity instead keeps the same /48 across restarts
// while still making two hosts' /48s differ (with the RFC's odds). seed
// should be that identity (e.g. the machine ID).
func ULAPool(seed []byte) PoolSpec {
	sum := sha256.Sum256(seed)
	var b [16]byte
	b[0] = 0xfd
	copy(b[1:6], sum[:5])
	return PoolSpec{Base: netip.PrefixFrom(netip.AddrFrom16(b), 48), Size: 64}
}

// DefaultPools6 returns the IPv6 pools used when default-address-pools has
// no IPv6 entry: ULAPool(seed).
func DefaultPools6(seed []byte) []PoolSpec {
	return []PoolSpec{ULAPool(seed)}
}

// PoolsOf returns the pools of one family, in order: the IPv6 ones when v6,
// else the IPv4 ones. default-address-pools may mix families; ChooseSubnet
// wants one.
func PoolsOf(pools []PoolSpec, v6 bool) []PoolSpec {
	var out []PoolSpec
	for _, p := range pools {
		if p.Base.IsValid() && p.Base.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
}

// Blocker is something occupying IPv4 or IPv6 address space: a route, an interface
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
// order within a pool, that overlaps no blocker. It chooses an IPv4 subnet
// when any pool is IPv4 (IPv6 pools are then skipped, as before IPv6
// support) and an IPv6 subnet when every pool is IPv6: pass pools of one
// family (see PoolsOf), and a subnet of the other family never comes back.
// Blockers of the other family are ignored. An invalid pool is a
// *FieldError; when every candidate is blocked the error is a
// *NoFreePoolError naming the blockers.
func ChooseSubnet(pools []PoolSpec, blockers []Blocker) (netip.Prefix, error) {
	v6 := len(pools) > 0 && !slices.ContainsFunc(pools, func(p PoolSpec) bool { return p.Base.Addr().Is4() })
	bs := broadestFirst(blockers, v6)
	nf := &NoFreePoolError{IPv6: v6}
	for _, p := range pools {
		if err := p.Validate(); err != nil {
			return netip.Prefix{}, err
		}
		if p.Base.Addr().Is6() != v6 {
			continue
		}
		free, causes := firstFree(p, bs)
		if free.IsValid() {
			return free, nil
		}
		nf.Pools = append(nf.Pools, BlockedPool{Pool: p, Candidates: candidateCount(p), Blockers: causes})
	}
	if !v6 {
		nf.SuggestBIP, nf.SuggestPool = suggest(bs)
	}
	return netip.Prefix{}, nf
}

// candidateCount counts p's subnets, saturating at the largest int.
func candidateCount(p PoolSpec) int {
	if n := p.Size - p.Base.Bits(); n < 62 {
		return 1 << n
	}
	return int(^uint(0) >> 1)
}

// broadestFirst returns the valid blockers of one family, masked, shortest
// prefix first (stable), so that the blocker named for a candidate is the
// one that explains the most: one /12 route rather than 256 /24 addresses.
func broadestFirst(blockers []Blocker, v6 bool) []Blocker {
	bs := make([]Blocker, 0, len(blockers))
	for _, b := range blockers {
		if b.Prefix.IsValid() && b.Prefix.Addr().Is6() == v6 && !b.Prefix.Addr().Is4In6() {
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
// Addresses are numbers (u128) so the same walk serves both families.
func firstFree(p PoolSpec, bs []Blocker) (netip.Prefix, []Blocker) {
	var causes []Blocker
	width := p.Base.Addr().BitLen()
	step := pow2(width - p.Size)
	last := addrU128(netaddr.Last(p.Base))
	for c := addrU128(p.Base.Addr()); c.cmp(last) <= 0; {
		cand := netip.PrefixFrom(c.addr(width), p.Size)
		i := slices.IndexFunc(bs, func(b Blocker) bool { return b.Prefix.Overlaps(cand) })
		if i < 0 {
			return cand, nil
		}
		b := bs[i]
		if !slices.Contains(causes, b) {
			causes = append(causes, b)
		}
		// continue with the candidate after the one holding b's last address
		// (b may end before or after the current candidate)
		from := c
		if bLast := addrU128(netaddr.Last(b.Prefix)); bLast.cmp(c) > 0 {
			from = addrU128(netip.PrefixFrom(bLast.addr(width), p.Size).Masked().Addr())
		}
		next, overflow := from.add(step)
		if overflow {
			break
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
