package ipam

// The store-backed allocator: the addresses of a network shared by several
// hosts (an overlay network) are claimed in a store.Store, one key per
// address, each created by a transaction that requires the key to be
// absent. Two hosts never get the same address; the store decides, not a
// lock. The transaction also carries the caller's guard compares (the
// cluster: the network record's revision, so no attach slips in while the
// network is being removed) and the caller's writes for the address won
// (the cluster: the endpoint record and the sticky address), so an attach
// costs one write.
//
// Order of the rest (after static and sticky, see policy.go): the lowest
// free address first, other names' sticky addresses only when nothing else
// is free (a sandbox that comes back finds its address). After a lost race
// a random free address of the same listing, so hosts attaching at once
// spread out instead of all chasing the lowest one; the listing is
// refreshed every few losses, for a bounded number of rounds.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/tether-net/tether/internal/netaddr"
	"github.com/tether-net/tether/internal/store"
)

// Bounds of the contention loop: rounds of listings, tries per listing,
// and how many free candidates one listing keeps.
const (
	claimRounds     = 32
	claimTries      = 8
	claimCandidates = 256
)

// StoreKeys is where a StoreAllocator finds its keys; the caller owns the
// layout.
type StoreKeys struct {
	// Addrs is the prefix of the claim keys: address a is claimed by the
	// key Addrs + a.String(). Keys under it that do not end in an address
	// are ignored.
	Addrs string
	// Stickies, when set, is a prefix whose every value is an address
	// remembered for some name; those are handed out only when nothing
	// else is free.
	Stickies string
	// Sticky, when set, is the key holding this request's sticky address;
	// it is read, in parallel with the listings, when Request.Sticky is
	// zero.
	Sticky string
}

// Space is what a StoreAllocator needs to know of the network.
type Space struct {
	Name    string       // how errors name the network
	Subnet  netip.Prefix // IPv4
	Gateway netip.Addr   // never handed out: a static request for it is a *FieldError
	// Guards are compares every claim transaction carries besides the
	// address key's absence (e.g. the network record's revision).
	Guards []store.Cmp
}

// StoreAllocator reserves the addresses of one network in a shared store
// (see Allocator for who persists what). A value describes one requester:
// Claim and Ops are what it writes. It is safe for concurrent use when its
// functions are.
type StoreAllocator struct {
	Store store.Store
	Keys  StoreKeys
	// Claim is the value of the address key (who holds the address).
	Claim []byte
	// Network reads the network's Space. Reserve calls it in parallel with
	// its listings and again after each lost race: an error ends the
	// reservation (the network is gone, say) and fresh Guards replace the
	// old ones.
	Network func(ctx context.Context) (Space, error)
	// Ops, when set, returns writes committed in the same transaction as
	// the claim of a.
	Ops func(a netip.Addr) []store.Op
}

// Reserve claims an address by the policy of Request (see Allocator for
// the errors; a static address must be a host address of the subnet other
// than the gateway). It returns the address with the subnet's prefix
// length.
func (s *StoreAllocator) Reserve(ctx context.Context, r Request) (netip.Prefix, error) {
	t, err := s.view(ctx, r)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !r.Static.IsValid() && !r.Sticky.IsValid() {
		r.Sticky = t.sticky
	}
	a, err := reserve(r, t)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, t.sp.Subnet.Bits()), nil
}

// Release deletes the claim of a; releasing a free address is not an
// error.
func (s *StoreAllocator) Release(ctx context.Context, a netip.Addr) error {
	if err := s.Store.Delete(ctx, s.Keys.Addrs+a.String()); err != nil {
		return fmt.Errorf("store: release %s: %w", a, err)
	}
	return nil
}

// storeTaker is one reservation's view of the store.
type storeTaker struct {
	s        *StoreAllocator
	ctx      context.Context
	sp       Space
	sticky   netip.Addr
	used     map[netip.Addr]bool
	stickies map[netip.Addr]bool
}

// view reads the network, the request's sticky address, the claimed and
// the sticky addresses at once: independent reads, one round trip. A static
// request reads the network only.
func (s *StoreAllocator) view(ctx context.Context, r Request) (*storeTaker, error) {
	t := &storeTaker{s: s, ctx: ctx, used: map[netip.Addr]bool{}, stickies: map[netip.Addr]bool{}}
	var errNet, errList error
	var wg sync.WaitGroup
	wg.Go(func() { t.sp, errNet = s.network(ctx) })
	if !r.Static.IsValid() {
		if !r.Sticky.IsValid() && s.Keys.Sticky != "" {
			wg.Go(func() { t.sticky = s.readSticky(ctx) })
		}
		wg.Go(func() { t.used, t.stickies, errList = s.listings(ctx) })
	}
	wg.Wait()
	if errNet != nil {
		return nil, errNet
	}
	return t, errList
}

func (s *StoreAllocator) network(ctx context.Context) (Space, error) {
	sp, err := s.Network(ctx)
	if err != nil {
		return sp, err
	}
	if !sp.Subnet.Addr().Is4() {
		return sp, fmt.Errorf("network %q: subnet %s: only IPv4 is supported", sp.Name, sp.Subnet)
	}
	sp.Subnet = sp.Subnet.Masked()
	return sp, nil
}

func (s *StoreAllocator) readSticky(ctx context.Context) netip.Addr {
	kv, err := s.Store.Get(ctx, s.Keys.Sticky)
	if err != nil {
		return netip.Addr{} // none, or unreadable: no preference
	}
	a, _ := netip.ParseAddr(string(kv.Value))
	return a
}

// listings reads the claimed addresses and, in parallel, the sticky ones.
// The sticky listing is advisory: an error there is ignored.
func (s *StoreAllocator) listings(ctx context.Context) (used, stickies map[netip.Addr]bool, err error) {
	var wg sync.WaitGroup
	stickies = map[netip.Addr]bool{}
	if s.Keys.Stickies != "" {
		wg.Go(func() { stickies = s.listStickies(ctx) })
	}
	used, err = s.listUsed(ctx)
	wg.Wait()
	return used, stickies, err
}

func (s *StoreAllocator) listUsed(ctx context.Context) (map[netip.Addr]bool, error) {
	kvs, err := s.Store.List(ctx, s.Keys.Addrs)
	if err != nil {
		return nil, fmt.Errorf("store: list address claims under %q: %w", s.Keys.Addrs, err)
	}
	used := make(map[netip.Addr]bool, len(kvs))
	for _, kv := range kvs {
		if a, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, s.Keys.Addrs)); err == nil {
			used[a] = true
		}
	}
	return used, nil
}

func (s *StoreAllocator) listStickies(ctx context.Context) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	kvs, err := s.Store.List(ctx, s.Keys.Stickies)
	if err != nil {
		return out
	}
	for _, kv := range kvs {
		if a, err := netip.ParseAddr(string(kv.Value)); err == nil {
			out[a] = true
		}
	}
	return out
}

// check: a host address of the subnet (not its network or broadcast
// address: a bare *FieldError, as the local allocator's, so callers name
// the network once) other than the gateway, which is taken (ErrAddrInUse,
// as the local allocator answers for its fixed addresses).
func (t *storeTaker) check(a netip.Addr) error {
	err := checkHost("ip", a.String(), a, t.sp.Subnet)
	if err == nil && a == t.sp.Gateway {
		err = fmt.Errorf("%s is the gateway of subnet %s: %w", a, t.sp.Subnet, ErrAddrInUse)
	}
	return err
}

func (t *storeTaker) isFree(a netip.Addr) bool { return !t.used[a] }

// take creates a's claim key in one transaction with the guards and the
// caller's ops. A conflict (the key exists, or a guard moved) re-reads the
// network: its error ends the reservation, else the fresh guards are kept
// and a is reported taken.
func (t *storeTaker) take(a netip.Addr) error {
	s := t.s
	key := s.Keys.Addrs + a.String()
	ops := []store.Op{store.Put(key, s.Claim)}
	if s.Ops != nil {
		ops = append(ops, s.Ops(a)...)
	}
	cmps := append(slices.Clip(t.sp.Guards), store.Absent(key))
	_, err := s.Store.Txn(t.ctx, cmps, ops)
	switch {
	case err == nil:
		t.used[a] = true
		return nil
	case !errors.Is(err, store.ErrConflict):
		return fmt.Errorf("store: claim %s on network %q: %w", a, t.sp.Name, err)
	}
	sp, err := s.network(t.ctx)
	if err != nil {
		return err
	}
	t.sp, t.used[a] = sp, true
	return fmt.Errorf("address %s on network %q: %w", a, t.sp.Name, ErrAddrInUse)
}

// next tries the lowest free address first, then random free ones of the
// same listing, refreshing it every few losses.
func (t *storeTaker) next() (netip.Addr, error) {
	for round := range claimRounds {
		if round > 0 {
			var err error
			if t.used, t.stickies, err = t.s.listings(t.ctx); err != nil {
				return netip.Addr{}, err
			}
		}
		free := claimOrder(t.sp, t.used, t.stickies)
		if len(free) == 0 {
			return netip.Addr{}, fmt.Errorf("network %q (%s): %w", t.sp.Name, t.sp.Subnet, ErrNoAddress)
		}
		for try := 0; try < claimTries && len(free) > 0; try++ {
			i := 0
			if round > 0 || try > 0 {
				i = rand.IntN(len(free))
			}
			err := t.take(free[i])
			if err == nil {
				return free[i], nil
			}
			if !errors.Is(err, ErrAddrInUse) {
				return netip.Addr{}, err
			}
			free = slices.Delete(free, i, i+1)
		}
	}
	return netip.Addr{}, fmt.Errorf("claim an address on network %q: %w", t.sp.Name, ErrContention)
}

// claimOrder lists the unclaimed host addresses of the space (at most
// claimCandidates), lowest first; other names' sticky addresses only when
// nothing else is free.
func claimOrder(sp Space, used, stickies map[netip.Addr]bool) []netip.Addr {
	var free, later []netip.Addr
	p := sp.Subnet.Masked()
	last := netaddr.Last(p)
	for a := p.Addr().Next(); a.Less(last) && len(free) < claimCandidates; a = a.Next() {
		switch {
		case a == sp.Gateway || used[a]:
		case stickies[a]:
			later = append(later, a)
		default:
			free = append(free, a)
		}
	}
	if len(free) == 0 {
		return later
	}
	return free
}
