package ipam

// The address policy, written once for every allocator: the static address
// when one is asked for (and nothing else); else the sandbox's previous
// address on the network (sticky) when it is usable and free, so a sandbox
// that comes back keeps its address; else the allocator's own order. The
// order of the rest is the allocator's: the local bitmap is next-fit (a
// released address is not reused at once, see subnet.go); the store-backed
// allocator takes the lowest free address, other names' sticky addresses
// last, and a random free one after a lost race (see store.go).

import (
	"context"
	"errors"
	"net/netip"
)

// Request asks an allocator for one address of a network.
type Request struct {
	// Static is the address the user asked for (--ip): exactly this one, or
	// fail (*FieldError when it is not a usable host address of the
	// network, ErrAddrInUse when it is taken).
	Static netip.Addr
	// Sticky is the sandbox name's previous address on this network. It is
	// taken when it is usable and free; otherwise it is ignored, without
	// error. Ignored when Static is set.
	Sticky netip.Addr
}

// Allocator reserves the addresses of one network for the attach pipeline.
// Reserve applies the policy (Request) and returns the address with the
// network's prefix length; Release gives an address back (rollback of a
// failed attach, or a detach). Errors a caller branches on: *FieldError
// (a static address that is not a usable host address: 400), ErrAddrInUse
// (static address taken: 409), ErrNoAddress (network full: 403),
// ErrContention (the store-backed allocator lost too many races: retry);
// anything else is the backend failing.
//
// Who persists what:
//   - SubnetAllocator (local networks) changes only the bitmap in memory.
//     The caller persists the bitmap (Subnet.MarshalBinary) in the same
//     transaction as the endpoint record and the sticky address, and
//     Releases the address when the attach fails before that commit.
//   - StoreAllocator (global networks) makes the claim durable and visible
//     to every node when Reserve returns, together with the caller's Ops
//     (endpoint record, sticky address) in one transaction. Release deletes
//     the claim key only; records the Ops wrote are the caller's to remove.
type Allocator interface {
	Reserve(ctx context.Context, r Request) (netip.Prefix, error)
	Release(ctx context.Context, a netip.Addr) error
}

// taker is what the policy needs of an allocator.
type taker interface {
	// check returns nil when a may be handed out at all (a host address of
	// the network), else a *FieldError, possibly wrapped.
	check(a netip.Addr) error
	// isFree reports whether a is free as far as the taker knows now.
	isFree(a netip.Addr) bool
	// take takes a; an error wrapping ErrAddrInUse when it is taken
	// (already, or by a racer).
	take(a netip.Addr) error
	// next takes an address in the taker's own order; ErrNoAddress when
	// none is left.
	next() (netip.Addr, error)
}

// reserve applies the policy of Request to t.
func reserve(r Request, t taker) (netip.Addr, error) {
	if a := r.Static; a.IsValid() {
		if err := t.check(a); err != nil {
			return netip.Addr{}, err
		}
		if err := t.take(a); err != nil {
			return netip.Addr{}, err
		}
		return a, nil
	}
	if a := r.Sticky; a.IsValid() && t.check(a) == nil && t.isFree(a) {
		err := t.take(a)
		if err == nil {
			return a, nil
		}
		if !errors.Is(err, ErrAddrInUse) {
			return netip.Addr{}, err
		}
	}
	return t.next()
}
