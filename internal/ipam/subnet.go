package ipam

// The address allocator of one network subnet. One bit per address of the
// subnet (a /16 is 1024 words, 8 KiB); network, broadcast, gateway and aux
// addresses are set at construction and can never be released. Allocation is
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

// SubnetConfig describes a network's IPv4 subnet as the user gave it.
type SubnetConfig struct {
	Subnet  netip.Prefix
	IPRange netip.Prefix // where Allocate(zero) picks from; zero = whole subnet
	Gateway netip.Addr   // zero = first usable address of Subnet
	Aux     map[string]netip.Addr
}

// Subnet allocates the addresses of one subnet. It is safe for concurrent use.
type Subnet struct {
	mu sync.Mutex
	st subnetState
}

type subnetState struct {
	cfg    SubnetConfig // Gateway filled in, Aux copied
	base   uint32       // network address
	size   uint32       // number of addresses in the subnet
	lo, hi uint32       // IPRange as offsets [lo, hi)
	fixed  []uint32     // offsets never allocatable: network, broadcast, gateway, aux
	used   bitmap       // allocated or fixed
	free   int          // clear bits in [lo, hi)
	cursor uint32       // next-fit: where the next search starts, in [lo, hi)
}

// NewSubnet validates c and returns an allocator with nothing allocated.
// Errors are *FieldError for "subnet" (not canonical, not IPv4, shorter than
// /8 or longer than /30), "ip-range" (not canonical or outside the subnet),
// "gateway" (outside the subnet, or its network or broadcast address) and
// "aux-address" (outside the subnet).
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
	st := subnetState{
		base: v4u32(c.Subnet.Addr()),
		size: 1 << (32 - c.Subnet.Bits()),
	}
	r := c.Subnet
	if c.IPRange.IsValid() {
		r = c.IPRange
	}
	if !c.Gateway.IsValid() {
		c.Gateway = c.Subnet.Addr().Next()
	}
	c.Aux = maps.Clone(c.Aux)
	st.cfg = c
	st.lo = v4u32(r.Addr()) - st.base
	st.hi = st.lo + 1<<(32-r.Bits())
	st.used = newBitmap(st.size)
	st.fixed = []uint32{0, st.size - 1, st.off(c.Gateway)}
	for _, a := range c.Aux {
		st.fixed = append(st.fixed, st.off(a))
	}
	for _, f := range st.fixed {
		st.used.set(f)
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
	if s.Bits() < minSubnetBits || s.Bits() > maxV4Size {
		return &FieldError{Field: "subnet", Value: s.String(),
			Reason: fmt.Sprintf("prefix length must be between /%d and /%d", minSubnetBits, maxV4Size)}
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
		if !a.Is4() || !s.Contains(a) {
			return &FieldError{Field: "aux-address", Value: name + "=" + a.String(), Reason: "outside subnet " + s.String()}
		}
	}
	return nil
}

func checkPrefix(field string, p netip.Prefix) error {
	if !p.IsValid() {
		return &FieldError{Field: field, Value: p.String(), Reason: "not a CIDR prefix"}
	}
	if !p.Addr().Is4() {
		return &FieldError{Field: field, Value: p.String(), Reason: "only IPv4 is supported"}
	}
	if p != p.Masked() {
		return &FieldError{Field: field, Value: p.String(),
			Reason: fmt.Sprintf("host bits set (did you mean %s?)", p.Masked())}
	}
	return nil
}

// checkHost refuses a that is not an address of s other than its network and
// broadcast addresses.
func checkHost(field, value string, a netip.Addr, s netip.Prefix) error {
	switch {
	case !a.Is4() || !s.Contains(a):
		return &FieldError{Field: field, Value: value, Reason: "outside subnet " + s.String()}
	case a == s.Addr():
		return &FieldError{Field: field, Value: value, Reason: "is the network address of subnet " + s.String()}
	case a == netaddr.Last(s):
		return &FieldError{Field: field, Value: value, Reason: "is the broadcast address of subnet " + s.String()}
	}
	return nil
}

func (st *subnetState) off(a netip.Addr) uint32 { return v4u32(a) - st.base }
func (st *subnetState) addr(off uint32) netip.Addr {
	return u32v4(st.base + off)
}
func (st *subnetState) inRange(off uint32) bool { return off >= st.lo && off < st.hi }
func (st *subnetState) recount()                { st.free = int(st.hi-st.lo) - st.used.countSet(st.lo, st.hi) }

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
	st := &s.st
	if !a.Is4() || !st.cfg.Subnet.Contains(a) {
		return
	}
	off := st.off(a)
	if !st.used.get(off) || slices.Contains(st.fixed, off) {
		return
	}
	st.used.clear(off)
	if st.inRange(off) {
		st.free++
	}
}

// InUse reports whether a is allocated, reserved, or one of the subnet's
// fixed addresses (network, broadcast, gateway, aux). Addresses outside the
// subnet are not in use.
func (s *Subnet) InUse(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return a.Is4() && s.st.cfg.Subnet.Contains(a) && s.st.used.get(s.st.off(a))
}

// Free returns how many addresses Allocate(zero) can still hand out.
func (s *Subnet) Free() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.free
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
	st.mark(off)
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
	off := st.off(a)
	if !st.used.get(off) {
		st.mark(off)
		return nil
	}
	switch {
	case a == st.cfg.Gateway:
		return fmt.Errorf("%s is the gateway of %s: %w", a, st.cfg.Subnet, ErrAddrInUse)
	case slices.Contains(st.fixed, off):
		return fmt.Errorf("%s is an aux address of %s: %w", a, st.cfg.Subnet, ErrAddrInUse)
	}
	return fmt.Errorf("%s in %s: %w", a, st.cfg.Subnet, ErrAddrInUse)
}

func (st *subnetState) mark(off uint32) {
	st.used.set(off)
	if st.inRange(off) {
		st.free--
	}
}

func (st *subnetState) rangePrefix() netip.Prefix {
	if st.cfg.IPRange.IsValid() {
		return st.cfg.IPRange
	}
	return st.cfg.Subnet
}
