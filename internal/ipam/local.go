package ipam

import (
	"context"
	"net/netip"
)

// Assign takes an address by the policy of Request: the static address
// (which may lie outside the ip-range, as Docker allows), else the sticky
// one when it is a free host address of the subnet, else the next free
// address of the ip-range (next-fit). Errors: *FieldError (field "ip") for
// a static address outside the subnet or its network (IPv6: subnet-router
// anycast) or IPv4 broadcast address;
// ErrAddrInUse for a static address that is taken, the gateway or an aux
// address; ErrNoAddress when the ip-range is full.
func (s *Subnet) Assign(r Request) (netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return reserve(r, (*subnetTaker)(&s.st))
}

func (s *Subnet) bits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.cfg.Subnet.Bits()
}

// subnetTaker is the policy's view of a subnet's state; the caller holds
// the Subnet's lock.
type subnetTaker subnetState

func (t *subnetTaker) check(a netip.Addr) error {
	return checkHost("ip", a.String(), a, t.cfg.Subnet)
}

func (t *subnetTaker) isFree(a netip.Addr) bool {
	return !(*subnetState)(t).isUsed(a)
}

func (t *subnetTaker) take(a netip.Addr) error   { return (*subnetState)(t).take(a) }
func (t *subnetTaker) next() (netip.Addr, error) { return (*subnetState)(t).next() }

// SubnetAllocator is the Allocator of a local network over its bitmap. It
// changes memory only: the caller persists the bitmap (see Allocator).
type SubnetAllocator struct {
	Subnet *Subnet
}

// Reserve is Subnet.Assign with the subnet's prefix length; ctx is unused.
func (l SubnetAllocator) Reserve(_ context.Context, r Request) (netip.Prefix, error) {
	a, err := l.Subnet.Assign(r)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, l.Subnet.bits()), nil
}

// Release is Subnet.Release; it never fails.
func (l SubnetAllocator) Release(_ context.Context, a netip.Addr) error {
	l.Subnet.Release(a)
	return nil
}
