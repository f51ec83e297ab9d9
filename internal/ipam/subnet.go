package ipam

// The address allocator of one network subnet. One bit per address of the
// subnet (a /16 is 1024 words, 8 KiB), or for IPv6 of a window of at most
// 65536 addresses (see subnetState); network (IPv6: subnet-router anycast),
// IPv4 broadcast, gateway and aux addresses are set at construction and can
// never be released. Allocation is
// next-fit like Docker's: the search starts after the last address handed out
// and wraps once, so a released address is not reused at once (a restarted
// sandbox does not pick up a dead one's address while peers still cache it).

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/tether-net/tether/internal/netaddr"
)

// minSubnetBits bounds the bitmap: a /8 is 2 MiB of bits.
const minSubnetBits = 8

// IPv6 subnets: /48 to /124 (a /124 holds the anycast address, a gateway
// and 14 sandboxes). The bitmap of an IPv6 subnet covers a window of at
// most maxWindow6 addresses (8 KiB), see subnetState.
const (
	minSubnetBits6 = 48
	maxSubnetBits6 = 124
	maxWindow6     = 1 << 16
)

// SubnetConfig describes a network's subnet (IPv4 or IPv6) as the user gave
// it.
type SubnetConfig struct {
	Subnet  netip.Prefix
	IPRange netip.Prefix // where Allocate(zero) picks from; zero = whole subnet
	Gateway netip.Addr   // zero = first usable address of Subnet (subnet address + 1)
	Aux     map[string]netip.Addr
}

// Subnet allocates the addresses of one subnet. It is safe for concurrent use.
type Subnet struct {
	mu sync.Mutex
	st subnetState
}

// subnetState is one bit per address of a window. For IPv4 the window is
// the whole subnet (offset 0 is the network address). An IPv6 subnet has
// 2^16 to 2^80 addresses, too many for a bitmap, so its window is the first
// maxWindow6 addresses of the ip-range (or of the subnet when there is no
// ip-range), clipped to the range; Allocate(zero) picks from the window
// only. An address of the subnet outside the window that is taken (static,
// sticky or restored) is kept in extra, so every address of the subnet can
// be reserved, released and asked about.
type subnetState struct {
	cfg    SubnetConfig // Gateway filled in, Aux copied
	bitLen int          // 32 (IPv4) or 128 (IPv6)
	base   u128         // the window's first address
	size   uint32       // number of addresses in the window
	lo, hi uint32       // the ip-range inside the window, as offsets [lo, hi)
	fixed  []netip.Addr // never allocatable: network (IPv6: subnet-router anycast), broadcast (IPv4), gateway, aux
	used   bitmap       // window addresses allocated or fixed
	extra  []netip.Addr // IPv6: taken addresses outside the window, ascending (fixed ones are not listed)
	free   int          // clear bits in [lo, hi)
	cursor uint32       // next-fit: where the next search starts, in [lo, hi)
}

// NewSubnet validates c and returns an allocator with nothing allocated.
// Errors are *FieldError for "subnet" (not canonical; IPv4 shorter than /8
// or longer than /30; IPv6 shorter than /48 or longer than /124;
// IPv4-mapped IPv6), "ip-range" (not canonical or outside the subnet),
// "gateway" (outside the subnet, its network address (IPv6: the
// subnet-router anycast address) or its IPv4 broadcast address) and
// "aux-address" (outside the subnet). An address of the other family is
// outside the subnet. IPv6 has no broadcast: the last address is a host.
func NewSubnet(c SubnetConfig) (*Subnet, error) {
	st, err := newState(c)
	if err != nil {
		return nil, err
	}
	return &Subnet{st: st}, nil
}

func newState(c SubnetConfig) (subnetState, error) {
	if err := validate(&c); err != nil {
		return subnetState{}, err
	}
	r := c.Subnet
	if c.IPRange.IsValid() {
		r = c.IPRange
	}
	if !c.Gateway.IsValid() {
		c.Gateway = c.Subnet.Addr().Next()
	}
	c.Aux = maps.Clone(c.Aux)
	st := subnetState{cfg: c, bitLen: c.Subnet.Addr().BitLen()}
	if st.bitLen == 32 {
		st.base = addrU128(c.Subnet.Addr())
		st.size = 1 << (32 - c.Subnet.Bits())
		st.lo = v4u32(r.Addr()) - v4u32(c.Subnet.Addr())
		st.hi = st.lo + 1<<(32-r.Bits())
		st.fixed = []netip.Addr{c.Subnet.Addr(), netaddr.Last(c.Subnet), c.Gateway}
	} else {
		st.base = addrU128(r.Addr())
		st.size = maxWindow6
		if hostBits := 128 - r.Bits(); hostBits < 16 {
			st.size = 1 << hostBits
		}
		st.lo, st.hi = 0, st.size
		st.fixed = []netip.Addr{c.Subnet.Addr(), c.Gateway}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Aux)) {
		st.fixed = append(st.fixed, c.Aux[name])
	}
	st.used = newBitmap(st.size)
	for _, a := range st.fixed {
		if off, ok := st.off(a); ok {
			st.used.set(off)
		}
	}
	st.cursor = st.lo
	st.recount()
	return st, nil
}

func validate(c *SubnetConfig) error {
	s := c.Subnet
	if err := checkPrefix("subnet", s); err != nil {
		return err
	}
	lo, hi := minSubnetBits, maxV4Size
	if s.Addr().Is6() {
		lo, hi = minSubnetBits6, maxSubnetBits6
	}
	if s.Bits() < lo || s.Bits() > hi {
		return &FieldError{Field: "subnet", Value: s.String(),
			Reason: fmt.Sprintf("prefix length must be between /%d and /%d", lo, hi)}
	}
	if r := c.IPRange; r.IsValid() {
		if err := checkPrefix("ip-range", r); err != nil {
			return err
		}
		if r.Bits() < s.Bits() || !s.Contains(r.Addr()) {
			return &FieldError{Field: "ip-range", Value: r.String(), Reason: "outside subnet " + s.String()}
		}
	}
	if g := c.Gateway; g.IsValid() {
		if err := checkHost("gateway", g.String(), g, s); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Aux)) {
		a := c.Aux[name]
		if !s.Contains(a) {
			return &FieldError{Field: "aux-address", Value: name + "=" + a.String(), Reason: "outside subnet " + s.String()}
		}
	}
	return nil
}

func checkPrefix(field string, p netip.Prefix) error {
	if !p.IsValid() {
		return &FieldError{Field: field, Value: p.String(), Reason: "not a CIDR prefix"}
	}
	if p.Addr().Is4In6() {
		return &FieldError{Field: field, Value: p.String(), Reason: "an IPv4-mapped IPv6 prefix; give it as IPv4"}
	}
	if p != p.Masked() {
		return &FieldError{Field: field, Value: p.String(),
			Reason: fmt.Sprintf("host bits set (did you mean %s?)", p.Masked())}
	}
	return nil
}

// checkHost refuses a that is not an address of s (an address of the other
// family never is), or is its network address (for IPv6 the subnet-router
// anycast address, RFC 4291 2.6.1) or its IPv4 broadcast address. s is
// canonical.
func checkHost(field, value string, a netip.Addr, s netip.Prefix) error {
	switch {
	case !s.Contains(a):
		return &FieldError{Field: field, Value: value, Reason: "outside subnet " + s.String()}
	case a == s.Addr() && a.Is6():
		return &FieldError{Field: field, Value: value, Reason: "is the subnet-router anycast address of subnet " + s.String()}
	case a == s.Addr():
		return &FieldError{Field: field, Value: value, Reason: "is the network address of subnet " + s.String()}
	case a.Is4() && a == netaddr.Last(s):
		return &FieldError{Field: field, Value: value, Reason: "is the broadcast address of subnet " + s.String()}
	}
	return nil
}

// off returns a's offset in the window; false when a is not in it.
func (st *subnetState) off(a netip.Addr) (uint32, bool) {
	if !st.cfg.Subnet.Contains(a) {
		return 0, false
	}
	u := addrU128(a)
	if u.cmp(st.base) < 0 {
		return 0, false
	}
	d := u.sub(st.base)
	if d.hi != 0 || d.lo >= uint64(st.size) {
		return 0, false
	}
	return uint32(d.lo), true
}

func (st *subnetState) addr(off uint32) netip.Addr {
	u, _ := st.base.add(u128{lo: uint64(off)})
	return u.addr(st.bitLen)
}

func (st *subnetState) inRange(off uint32) bool { return off >= st.lo && off < st.hi }
func (st *subnetState) recount()                { st.free = int(st.hi-st.lo) - st.used.countSet(st.lo, st.hi) }
func (st *subnetState) isFixed(a netip.Addr) bool {
	return slices.Contains(st.fixed, a)
}

// isUsed reports whether a is an address of the subnet that is taken or
// fixed.
func (st *subnetState) isUsed(a netip.Addr) bool {
	if off, ok := st.off(a); ok {
		return st.used.get(off)
	}
	if !st.cfg.Subnet.Contains(a) {
		return false
	}
	_, found := slices.BinarySearchFunc(st.extra, a, netip.Addr.Compare)
	return found || st.isFixed(a)
}

// Config returns the configuration, with Gateway filled in.
func (s *Subnet) Config() SubnetConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.st.cfg
	c.Aux = maps.Clone(c.Aux)
	return c
}

// Gateway returns the gateway address (given or the first usable one).
func (s *Subnet) Gateway() netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.cfg.Gateway
}

// Allocate hands out an address. With preferred zero it takes the next free
// address of the ip-range after the last one handed out, wrapping to the
// range's start; ErrNoAddress when the range is full. With preferred set it
// takes exactly that address, which must be in the subnet but may lie outside
// the ip-range (static addresses, as Docker allows); ErrAddrInUse when it is
// taken, the gateway or an aux address.
func (s *Subnet) Allocate(preferred netip.Addr) (netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if preferred.IsValid() {
		return preferred, s.st.take(preferred)
	}
	return s.st.next()
}

// Reserve marks a as used, e.g. when restoring endpoints from records. It
// fails like Allocate(a).
func (s *Subnet) Reserve(a netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.take(a)
}

// Release frees a. Releasing a free address, an address outside the subnet,
// the gateway or an aux address does nothing.
func (s *Subnet) Release(a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.release(a)
}

// InUse reports whether a is allocated, reserved, or one of the subnet's
// fixed addresses (network or IPv6 subnet-router anycast, IPv4 broadcast,
// gateway, aux). Addresses outside the subnet are not in use.
func (s *Subnet) InUse(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.isUsed(a)
}

// Free returns how many addresses Allocate(zero) can still hand out. For
// IPv6 that is the free addresses of the allocation window (at most 65536
// addresses at the start of the ip-range or subnet), not of the subnet.
func (s *Subnet) Free() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.free
}

// Taken returns the addresses allocated or reserved, ascending: the taken
// addresses of the window (the whole subnet for IPv4) and, for IPv6, those
// outside it. Fixed addresses (network or anycast, broadcast, gateway, aux)
// are not listed. For checking a restored allocator against its records
// without walking an IPv6 subnet.
func (s *Subnet) Taken() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.st
	var out []netip.Addr
	for off := uint32(0); off < st.size; off++ {
		if w := st.used[off>>6]; w == 0 {
			off |= 63 // skip the empty word
			continue
		}
		if a := st.addr(off); st.used.get(off) && !st.isFixed(a) {
			out = append(out, a)
		}
	}
	return slices.SortedFunc(slices.Values(append(out, st.extra...)), netip.Addr.Compare)
}

func (st *subnetState) next() (netip.Addr, error) {
	if st.free == 0 {
		return netip.Addr{}, fmt.Errorf("range %s of subnet %s: %w", st.rangePrefix(), st.cfg.Subnet, ErrNoAddress)
	}
	off, ok := st.used.nextClear(st.cursor, st.hi)
	if !ok {
		off, ok = st.used.nextClear(st.lo, st.cursor)
	}
	if !ok { // free > 0 promised an address: the count is wrong
		st.recount()
		return netip.Addr{}, fmt.Errorf("range %s of subnet %s: %w", st.rangePrefix(), st.cfg.Subnet, ErrNoAddress)
	}
	st.markOff(off)
	st.cursor = off + 1
	if st.cursor >= st.hi {
		st.cursor = st.lo
	}
	return st.addr(off), nil
}

func (st *subnetState) take(a netip.Addr) error {
	if err := checkHost("ip", a.String(), a, st.cfg.Subnet); err != nil {
		return err
	}
	if !st.isUsed(a) {
		st.mark(a)
		return nil
	}
	switch {
	case a == st.cfg.Gateway:
		return fmt.Errorf("%s is the gateway of %s: %w", a, st.cfg.Subnet, ErrAddrInUse)
	case st.isFixed(a):
		return fmt.Errorf("%s is an aux address of %s: %w", a, st.cfg.Subnet, ErrAddrInUse)
	}
	return fmt.Errorf("%s in %s: %w", a, st.cfg.Subnet, ErrAddrInUse)
}

// mark takes a, a free host address of the subnet.
func (st *subnetState) mark(a netip.Addr) {
	if off, ok := st.off(a); ok {
		st.markOff(off)
		return
	}
	i, _ := slices.BinarySearchFunc(st.extra, a, netip.Addr.Compare)
	st.extra = slices.Insert(st.extra, i, a)
}

func (st *subnetState) markOff(off uint32) {
	st.used.set(off)
	if st.inRange(off) {
		st.free--
	}
}

func (st *subnetState) release(a netip.Addr) {
	if !st.cfg.Subnet.Contains(a) || st.isFixed(a) {
		return
	}
	if off, ok := st.off(a); ok {
		if !st.used.get(off) {
			return
		}
		st.used.clear(off)
		if st.inRange(off) {
			st.free++
		}
		return
	}
	if i, found := slices.BinarySearchFunc(st.extra, a, netip.Addr.Compare); found {
		st.extra = slices.Delete(st.extra, i, i+1)
	}
}

func (st *subnetState) rangePrefix() netip.Prefix {
	if st.cfg.IPRange.IsValid() {
		return st.cfg.IPRange
	}
	return st.cfg.Subnet
}
