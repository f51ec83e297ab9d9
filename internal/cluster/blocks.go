package cluster

// Address blocks with host affinity. A node claims a block of a global
// network's subnet (a /26 by default) with one compare-and-swap in the
// store, made under its live registration, and then hands out the block's
// addresses from memory: an attach costs no store round trip while its
// node's blocks have room. The endpoint record (and with it the address
// key and the sticky address) is published by a background writer
// (publish.go); peers program an endpoint only from its record, so none is
// programmed before it is published, and none after it was withdrawn.
//
//	tether/v1/global/blocks/<network id>/<a.b.c.d_len>   {"node","prefix"}
//
// Rules that keep every address on one endpoint cluster-wide:
//   - a block key is created only where none exists, compared against the
//     network record and the claimer's node key (its lease is live);
//   - a node allocates from its blocks only while its lease is current
//     (renewed less than 3/4 TTL ago), so a node whose lease expired hands
//     out nothing more;
//   - another node takes over a dead node's block (its node key gone) only
//     when no endpoint record and no address key lies in it, and only when
//     no unowned block is left;
//   - a block is given back (its key deleted, compared at its revision) when
//     its last endpoint is withdrawn, in the withdrawal's transaction;
//   - an address in another live node's block (a static --ip, or a dynamic
//     one once every block is taken) is asked of its owner: the claimer
//     creates the address key marked pending, the owner's watcher marks the
//     address used and confirms the claim if it is free in its memory, and
//     the claimer waits for that (or gives up and deletes its claim, compare
//     at revision: one of the two wins). An owner that has the address in
//     use overwrites the pending claim with its own when it publishes.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/netaddr"
	"github.com/tether-net/tether/internal/store"
)

// DefaultBlockBits is the prefix length of an address block: a /26, 64
// addresses. A subnet smaller than four blocks is cut into four.
const DefaultBlockBits = 26

// foreignWait bounds how long a claim in another node's block waits for the
// owner's confirmation.
var foreignWait = 3 * time.Second

// Block is the value of a block key: which node hands out its addresses.
type Block struct {
	Node   string       `json:"node"`
	Prefix netip.Prefix `json:"prefix"`
}

func blockKey(netID string, p netip.Prefix) string {
	return keyBlocks + netID + "/" + strings.ReplaceAll(p.String(), "/", "_")
}

// blockBits is the block length on a subnet.
func blockBits(subnet netip.Prefix, bits int) int {
	return min(max(bits, subnet.Bits()+2), 30)
}

// blockOf is the block of a.
func blockOf(subnet netip.Prefix, bits int, a netip.Addr) netip.Prefix {
	p, _ := a.Prefix(blockBits(subnet, bits))
	return p
}

// Allocator hands out the addresses of global networks on this node from
// its blocks, and publishes and withdraws its endpoints. Safe for
// concurrent use. Get it with Cluster.Allocator.
type Allocator struct {
	c    *Cluster
	bits int

	mu   sync.Mutex
	nets map[string]*netBlocks
	// local lists the addresses this node's endpoints hold on a network (the
	// engine's records), read when the network is first used after a start.
	local func(netID string) []netip.Addr
	// sticky holds the sticky addresses seen by the watcher and published
	// here, by network ID.
	sticky map[string]*stickyNet

	pub publisher
}

// netBlocks is one network's state on this node.
type netBlocks struct {
	// claiming serialises this node's block claims on the network, so
	// attaches that find the held blocks full at once claim one block,
	// not one each.
	claiming sync.Mutex
	subnet   netip.Prefix
	gateway  netip.Addr
	// blocks are the blocks this node holds, with their keys' revisions.
	blocks map[netip.Prefix]int64
	// used are the addresses taken in those blocks: by an endpoint of this
	// node (its ID) or confirmed to another node (foreign).
	used    map[netip.Addr]string
	foreign map[netip.Addr]bool
	// stale: the node registered anew since blocks was read (its old
	// lease may have expired and its empty blocks been taken over).
	stale bool
}

// Allocator returns the node's block allocator; local (may be nil) lists
// the addresses the node's endpoints hold on a network.
func (c *Cluster) Allocator(local func(netID string) []netip.Addr) *Allocator {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.alloc == nil {
		c.alloc = &Allocator{c: c, bits: DefaultBlockBits, nets: map[string]*netBlocks{}, sticky: map[string]*stickyNet{}}
		c.alloc.pub.a = c.alloc
	}
	if local != nil {
		c.alloc.local = local
	}
	return c.alloc
}

func (c *Cluster) allocator() *Allocator {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.alloc
}

// TakeRequest asks for an address on a global network.
type TakeRequest struct {
	NetworkID   string
	Subnet      netip.Prefix
	Gateway     netip.Addr
	EndpointID  string
	SandboxName string
	Static      netip.Addr
}

// Take gives an address: the static one, else the sandbox name's sticky
// address when this node can give it, else the next free one of this
// node's blocks, claiming a block when they are full. Errors are ipam's
// classes matched also by the cluster's sentinels (*ipam.FieldError and
// ErrOutOfSubnet, ErrAddrInUse, ErrNoAddress), ErrNotFound (the network is
// gone) or the store's.
func (a *Allocator) Take(ctx context.Context, r TakeRequest) (netip.Prefix, error) {
	r.Subnet = r.Subnet.Masked()
	if !r.Subnet.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("network %s: subnet %s: only IPv4 is supported", r.NetworkID, r.Subnet)
	}
	if _, err := a.c.current(ctx); err != nil {
		return netip.Prefix{}, err
	}
	if r.Static.IsValid() {
		if err := checkStatic(r); err != nil {
			return netip.Prefix{}, clusterClass(err)
		}
	}
	nb, err := a.load(ctx, r)
	if err != nil {
		return netip.Prefix{}, err
	}
	var got netip.Addr
	if r.Static.IsValid() {
		got, err = a.takeExact(ctx, nb, r, r.Static, true)
	} else {
		got, err = a.takeAny(ctx, nb, r)
	}
	if err != nil {
		return netip.Prefix{}, clusterClass(err)
	}
	return netip.PrefixFrom(got, r.Subnet.Bits()), nil
}

func checkStatic(r TakeRequest) error {
	s, x := r.Subnet, r.Static
	switch {
	case !s.Contains(x):
		return &ipam.FieldError{Field: "ip", Value: x.String(), Reason: "outside subnet " + s.String()}
	case x == s.Addr():
		return &ipam.FieldError{Field: "ip", Value: x.String(), Reason: "is the network address of subnet " + s.String()}
	case x == netaddr.Last(s):
		return &ipam.FieldError{Field: "ip", Value: x.String(), Reason: "is the broadcast address of subnet " + s.String()}
	case x == r.Gateway:
		return fmt.Errorf("%s is the gateway of subnet %s: %w", x, s, ipam.ErrAddrInUse)
	}
	return nil
}

// load returns the network's state, reading on first use the blocks this
// node holds (one listing) and the addresses its endpoints hold.
func (a *Allocator) load(ctx context.Context, r TakeRequest) (*netBlocks, error) {
	a.mu.Lock()
	nb := a.nets[r.NetworkID]
	stale := nb != nil && nb.stale
	a.mu.Unlock()
	if nb != nil && !stale {
		return nb, nil
	}
	kvs, err := a.c.st.List(ctx, keyBlocks+r.NetworkID+"/")
	if err != nil {
		return nil, fmt.Errorf("cluster store: blocks of network %s: %w", r.NetworkID, err)
	}
	if stale {
		a.setHeld(nb, kvs)
		return nb, nil
	}
	fresh := &netBlocks{subnet: r.Subnet, gateway: r.Gateway, blocks: map[netip.Prefix]int64{},
		used: map[netip.Addr]string{}, foreign: map[netip.Addr]bool{}}
	for _, kv := range kvs {
		var b Block
		if json.Unmarshal(kv.Value, &b) == nil && b.Node == a.c.self.ID && b.Prefix.IsValid() {
			fresh.blocks[b.Prefix] = kv.Revision
		}
	}
	if a.local != nil {
		for _, x := range a.local(r.NetworkID) {
			fresh.used[x] = "restored"
		}
	}
	// other nodes' confirmed claims in the held blocks (and this node's
	// claims of endpoints it no longer has, until Reconcile deletes them)
	claims, err := a.c.st.List(ctx, keyAddrs+r.NetworkID+"/")
	if err != nil {
		return nil, fmt.Errorf("cluster store: address claims of network %s: %w", r.NetworkID, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if nb := a.nets[r.NetworkID]; nb != nil {
		return nb, nil
	}
	for blk := range fresh.blocks {
		markClaims(fresh, blk, r.NetworkID, claims)
	}
	a.nets[r.NetworkID] = fresh
	return fresh, nil
}

// markClaims marks the addresses of blk that have an address key as used
// by another node (foreign: freed when the key goes). Called with a.mu
// held.
func markClaims(nb *netBlocks, blk netip.Prefix, netID string, claims []store.KV) {
	for _, kv := range claims {
		x, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, keyAddrs+netID+"/"))
		if _, used := nb.used[x]; err == nil && blk.Contains(x) && !used && x != nb.gateway {
			nb.used[x], nb.foreign[x] = "foreign", true
		}
	}
}

// setHeld makes the blocks of kvs (a listing of the network's blocks)
// that are this node's the held ones.
func (a *Allocator) setHeld(nb *netBlocks, kvs []store.KV) {
	a.mu.Lock()
	defer a.mu.Unlock()
	nb.blocks = map[netip.Prefix]int64{}
	for _, kv := range kvs {
		var b Block
		if json.Unmarshal(kv.Value, &b) == nil && b.Node == a.c.self.ID && b.Prefix.IsValid() {
			nb.blocks[b.Prefix] = kv.Revision
		}
	}
	nb.stale = false
}

// reloadStale reads the held blocks of a network again when the node
// registered anew since they were read.
func (a *Allocator) reloadStale(ctx context.Context, netID string) error {
	a.mu.Lock()
	nb := a.nets[netID]
	stale := nb != nil && nb.stale
	a.mu.Unlock()
	if !stale {
		return nil
	}
	kvs, err := a.c.st.List(ctx, keyBlocks+netID+"/")
	if err != nil {
		return fmt.Errorf("cluster store: blocks of network %s: %w", netID, err)
	}
	a.setHeld(nb, kvs)
	return nil
}

// forgetBlocks marks every network's held blocks to be read again.
func (a *Allocator) forgetBlocks() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, nb := range a.nets {
		nb.stale, nb.blocks = true, map[netip.Prefix]int64{}
	}
}

// takeAny: the sticky address when possible, else next-fit in the held
// blocks, else a new block, else an address of another node's block.
func (a *Allocator) takeAny(ctx context.Context, nb *netBlocks, r TakeRequest) (netip.Addr, error) {
	a.mu.Lock()
	sticky := a.stickyOf(r.NetworkID, r.SandboxName)
	a.mu.Unlock()
	if sticky.IsValid() && checkStatic(TakeRequest{Subnet: r.Subnet, Gateway: r.Gateway, Static: sticky}) == nil {
		if x, err := a.takeExact(ctx, nb, r, sticky, false); err == nil {
			return x, nil
		}
	}
	if x, ok := a.fromHeld(nb, r.NetworkID, r.EndpointID, netip.Addr{}); ok {
		return x, nil
	}
	nb.claiming.Lock()
	defer nb.claiming.Unlock()
	for range 8 {
		if x, ok := a.fromHeld(nb, r.NetworkID, r.EndpointID, netip.Addr{}); ok {
			return x, nil
		}
		err := a.claimBlock(ctx, nb, r, netip.Prefix{})
		if errors.Is(err, ErrNoAddress) {
			return a.borrow(ctx, nb, r)
		}
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return netip.Addr{}, err
		}
	}
	return netip.Addr{}, fmt.Errorf("claim an address block on network %s: %w", r.NetworkID, ipam.ErrContention)
}

// takeExact takes x: from a held block, or by claiming its block when no
// node holds it, or (ask) from its owner.
func (a *Allocator) takeExact(ctx context.Context, nb *netBlocks, r TakeRequest, x netip.Addr, ask bool) (netip.Addr, error) {
	blk := blockOf(nb.subnet, a.bits, x)
	for range 4 {
		a.mu.Lock()
		_, held := nb.blocks[blk]
		a.mu.Unlock()
		if held {
			if _, ok := a.fromHeld(nb, r.NetworkID, r.EndpointID, x); ok {
				return x, nil
			}
			return netip.Addr{}, fmt.Errorf("address %s on network %s: %w", x, r.NetworkID, ipam.ErrAddrInUse)
		}
		kv, err := a.c.st.Get(ctx, blockKey(r.NetworkID, blk))
		switch {
		case errors.Is(err, store.ErrNotFound):
			if err := a.claimBlock(ctx, nb, r, blk); err != nil && !errors.Is(err, store.ErrConflict) {
				return netip.Addr{}, err
			}
			continue // held now, or taken by another node meanwhile
		case err != nil:
			return netip.Addr{}, fmt.Errorf("cluster store: block %s: %w", blk, err)
		}
		var b Block
		_ = json.Unmarshal(kv.Value, &b)
		if b.Node == a.c.self.ID { // ours, given back or not yet known here
			a.adopt(nb, blk, kv.Revision)
			continue
		}
		if !ask {
			return netip.Addr{}, fmt.Errorf("address %s is in node %s's block: %w", x, b.Node, ipam.ErrAddrInUse)
		}
		return x, a.askOwner(ctx, r, x, b.Node, kv)
	}
	return netip.Addr{}, fmt.Errorf("claim %s on network %s: %w", x, r.NetworkID, ipam.ErrContention)
}

func (a *Allocator) adopt(nb *netBlocks, blk netip.Prefix, rev int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	nb.blocks[blk] = rev
}

// fromHeld takes want (or, when zero, the lowest free address) from the
// held blocks; false when it is not free / none is.
func (a *Allocator) fromHeld(nb *netBlocks, netID, epID string, want netip.Addr) (netip.Addr, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	free := func(x netip.Addr) bool {
		_, used := nb.used[x]
		return !used && x != nb.gateway && x != nb.subnet.Addr() && x != netaddr.Last(nb.subnet)
	}
	if want.IsValid() {
		if !free(want) {
			return netip.Addr{}, false
		}
		nb.used[want] = epID
		return want, true
	}
	blocks := make([]netip.Prefix, 0, len(nb.blocks))
	for blk := range nb.blocks {
		blocks = append(blocks, blk)
	}
	sortPrefixes(blocks)
	// lowest free first, other names' sticky addresses last
	sn := a.sticky[netID]
	avoid := func(x netip.Addr) bool { return sn != nil && sn.at[x] > 0 }
	for pass := range 2 {
		for _, blk := range blocks {
			for x := blk.Addr(); blk.Contains(x); x = x.Next() {
				if free(x) && (pass == 1 || !avoid(x)) {
					nb.used[x] = epID
					return x, true
				}
			}
		}
	}
	return netip.Addr{}, false
}

func sortPrefixes(ps []netip.Prefix) {
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
}

// claimBlock claims want (or the lowest unowned block; a dead node's empty
// block when none is left) for this node: one transaction, compared
// against the network record and this node's key. ErrNoAddress: nothing
// left to claim; store.ErrConflict: lost a race, try again.
func (a *Allocator) claimBlock(ctx context.Context, nb *netBlocks, r TakeRequest, want netip.Prefix) error {
	nodeRev, err := a.c.current(ctx)
	if err != nil {
		return err
	}
	n, netRev, err := a.c.getNetwork(ctx, r.NetworkID)
	if err != nil {
		return err
	}
	cmps := []store.Cmp{store.AtRevision(keyNetworks+n.ID, netRev), store.AtRevision(keyNodes+a.c.self.ID, nodeRev)}
	blk := want
	if !blk.IsValid() {
		var prev int64
		if blk, prev, err = a.pickBlock(ctx, nb, r); err != nil {
			return err
		}
		cmps = append(cmps, store.AtRevision(blockKey(r.NetworkID, blk), prev))
	} else {
		cmps = append(cmps, store.Absent(blockKey(r.NetworkID, blk)))
	}
	b, _ := json.Marshal(Block{Node: a.c.self.ID, Prefix: blk})
	rev, err := a.c.st.Txn(ctx, cmps, []store.Op{store.Put(blockKey(r.NetworkID, blk), b)})
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return err
		}
		return fmt.Errorf("cluster store: claim block %s of network %q: %w", blk, n.Name, err)
	}
	a.c.log.Debug("cluster: address block claimed", "network", n.Name, "block", blk)
	a.adopt(nb, blk, rev)
	// Address keys already in the block (another node's static claim
	// confirmed by a previous owner, or records of a version without
	// blocks) stay theirs.
	claims, err := a.c.st.List(ctx, keyAddrs+r.NetworkID+"/")
	if err != nil {
		a.mu.Lock()
		delete(nb.blocks, blk)
		a.mu.Unlock()
		_ = a.c.st.CompareAndDelete(context.WithoutCancel(ctx), blockKey(r.NetworkID, blk), rev)
		return fmt.Errorf("cluster store: address claims of network %q: %w", n.Name, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	markClaims(nb, blk, r.NetworkID, claims)
	return nil
}

// pickBlock chooses the block to claim and its key's revision (0: none):
// a block of ours the store has and this node forgot, else the lowest
// block no node holds, else a dead node's block without records.
func (a *Allocator) pickBlock(ctx context.Context, nb *netBlocks, r TakeRequest) (netip.Prefix, int64, error) {
	kvs, err := a.c.st.List(ctx, keyBlocks+r.NetworkID+"/")
	if err != nil {
		return netip.Prefix{}, 0, fmt.Errorf("cluster store: blocks of network %s: %w", r.NetworkID, err)
	}
	held := map[netip.Prefix]store.KV{}
	owner := map[netip.Prefix]string{}
	for _, kv := range kvs {
		var b Block
		if json.Unmarshal(kv.Value, &b) == nil && b.Prefix.IsValid() {
			held[b.Prefix], owner[b.Prefix] = kv, b.Node
			a.mu.Lock()
			_, known := nb.blocks[b.Prefix]
			a.mu.Unlock()
			if b.Node == a.c.self.ID && !known {
				return b.Prefix, kv.Revision, nil
			}
		}
	}
	bits := blockBits(nb.subnet, a.bits)
	size := uint64(1) << (32 - bits)
	first := nb.subnet.Addr()
	for off := uint64(0); off < uint64(1)<<(32-nb.subnet.Bits()); off += size {
		blk := netip.PrefixFrom(addOffset(first, off), bits)
		if _, ok := held[blk]; !ok {
			return blk, 0, nil
		}
	}
	return a.pickDead(ctx, r, held, owner)
}

// pickDead finds a block whose node's lease expired and in which no
// endpoint record and no address key (other than the gateway's) lies.
func (a *Allocator) pickDead(ctx context.Context, r TakeRequest, held map[netip.Prefix]store.KV, owner map[netip.Prefix]string) (netip.Prefix, int64, error) {
	nodes, err := a.c.Nodes(ctx)
	if err != nil {
		return netip.Prefix{}, 0, err
	}
	live := map[string]bool{}
	for _, n := range nodes {
		live[n.ID] = true
	}
	claims, err := a.c.st.List(ctx, keyAddrs+r.NetworkID+"/")
	if err != nil {
		return netip.Prefix{}, 0, fmt.Errorf("cluster store: address claims of network %s: %w", r.NetworkID, err)
	}
	eps, err := a.c.Endpoints(ctx, r.NetworkID)
	if err != nil {
		return netip.Prefix{}, 0, err
	}
	busy := func(blk netip.Prefix) bool {
		for _, kv := range claims {
			x, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, keyAddrs+r.NetworkID+"/"))
			if err == nil && blk.Contains(x) && x != r.Gateway {
				return true
			}
		}
		for _, ep := range eps {
			if blk.Contains(ep.Address.Addr()) {
				return true
			}
		}
		return false
	}
	for blk, kv := range held {
		if !live[owner[blk]] && !busy(blk) {
			return blk, kv.Revision, nil
		}
	}
	return netip.Prefix{}, 0, fmt.Errorf("network %s (%s): every address block is held: %w", r.NetworkID, r.Subnet, ipam.ErrNoAddress)
}

func addOffset(a netip.Addr, off uint64) netip.Addr {
	b := a.As4()
	v := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	v += off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// borrow takes a free address of another live node's block when every
// block is held: the owner is asked (askOwner) for a few candidates that
// have no address key.
func (a *Allocator) borrow(ctx context.Context, nb *netBlocks, r TakeRequest) (netip.Addr, error) {
	kvs, err := a.c.st.List(ctx, keyBlocks+r.NetworkID+"/")
	if err != nil {
		return netip.Addr{}, fmt.Errorf("cluster store: blocks of network %s: %w", r.NetworkID, err)
	}
	claims, err := a.c.st.List(ctx, keyAddrs+r.NetworkID+"/")
	if err != nil {
		return netip.Addr{}, fmt.Errorf("cluster store: address claims of network %s: %w", r.NetworkID, err)
	}
	taken := map[netip.Addr]bool{}
	for _, kv := range claims {
		if x, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, keyAddrs+r.NetworkID+"/")); err == nil {
			taken[x] = true
		}
	}
	type cand struct {
		x   netip.Addr
		blk store.KV
		own string
	}
	var cands []cand
	for _, kv := range kvs {
		var b Block
		if json.Unmarshal(kv.Value, &b) != nil || b.Node == a.c.self.ID {
			continue
		}
		for x := b.Prefix.Addr(); b.Prefix.Contains(x); x = x.Next() {
			if !taken[x] && checkStatic(TakeRequest{Subnet: nb.subnet, Gateway: nb.gateway, Static: x}) == nil {
				cands = append(cands, cand{x, kv, b.Node})
			}
		}
	}
	for range min(4, len(cands)) {
		i := rand.IntN(len(cands))
		c := cands[i]
		err := a.askOwner(ctx, r, c.x, c.own, c.blk)
		if err == nil {
			return c.x, nil
		}
		if !errors.Is(err, ipam.ErrAddrInUse) {
			return netip.Addr{}, err
		}
		cands[i] = cands[len(cands)-1]
		cands = cands[:len(cands)-1]
	}
	return netip.Addr{}, fmt.Errorf("network %s (%s): %w", r.NetworkID, r.Subnet, ipam.ErrNoAddress)
}

// askOwner claims x in node owner's block: the address key created
// pending (compared against the block key and x's absence), then confirmed
// by the owner's watcher, or withdrawn after foreignWait.
func (a *Allocator) askOwner(ctx context.Context, r TakeRequest, x netip.Addr, owner string, blk store.KV) error {
	if _, err := a.c.st.Get(ctx, keyNodes+owner); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("address %s is in the block of node %s, whose lease expired (its sandboxes may be alive): %w", x, owner, ipam.ErrAddrInUse)
		}
		return fmt.Errorf("cluster store: node %s: %w", owner, err)
	}
	key := addrKey(r.NetworkID, x)
	val, _ := json.Marshal(Claim{Node: a.c.self.ID, Endpoint: r.EndpointID, Sandbox: r.SandboxName, Pending: true})
	rev, err := a.c.st.Txn(ctx, []store.Cmp{store.AtRevision(blk.Key, blk.Revision), store.Absent(key)}, []store.Op{store.Put(key, val)})
	switch {
	case errors.Is(err, store.ErrConflict):
		return fmt.Errorf("address %s on network %s: %w", x, r.NetworkID, ipam.ErrAddrInUse)
	case err != nil:
		return fmt.Errorf("cluster store: claim %s: %w", x, err)
	}
	deadline := time.Now().Add(foreignWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if done, err := a.confirmed(ctx, key, r.EndpointID); done {
			return err
		}
		sleepCtx(ctx, 10*time.Millisecond)
	}
	err = a.c.st.CompareAndDelete(context.WithoutCancel(ctx), key, rev)
	if errors.Is(err, store.ErrConflict) { // the owner answered meanwhile
		if done, err := a.confirmed(context.WithoutCancel(ctx), key, r.EndpointID); done {
			return err
		}
	}
	return fmt.Errorf("address %s is in the block of node %s, which did not confirm it in %v: %w", x, owner, foreignWait, ipam.ErrAddrInUse)
}

// confirmed reads a pending claim: done once the owner confirmed it (nil)
// or took the address (ErrAddrInUse).
func (a *Allocator) confirmed(ctx context.Context, key, epID string) (bool, error) {
	kv, err := a.c.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return true, fmt.Errorf("%s: %w", key, ipam.ErrAddrInUse)
	}
	if err != nil {
		return false, nil
	}
	var cl Claim
	if json.Unmarshal(kv.Value, &cl) != nil || cl.Node != a.c.self.ID || cl.Endpoint != epID {
		return true, fmt.Errorf("%s: %w", key, ipam.ErrAddrInUse)
	}
	return !cl.Pending, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// observe follows address and sticky keys (from the watcher): it answers
// other nodes' pending claims in this node's blocks, forgets confirmed
// foreign addresses when their key goes, and remembers sticky addresses.
func (a *Allocator) observe(ev store.Event) {
	switch {
	case strings.HasPrefix(ev.KV.Key, keySticky):
		a.observeSticky(ev)
	case strings.HasPrefix(ev.KV.Key, keyAddrs):
		a.observeClaim(ev)
	}
}

func (a *Allocator) observeSticky(ev store.Event) {
	netID, name, ok := strings.Cut(strings.TrimPrefix(ev.KV.Key, keySticky), "/")
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ev.Type == store.EventDelete {
		a.dropSticky(netID, name)
		return
	}
	if x, err := netip.ParseAddr(string(ev.KV.Value)); err == nil {
		a.setSticky(netID, name, x)
	}
}

// stickyNet is one network's sticky addresses: by sandbox name, and how
// many names hold each address (so an attach with no sticky address of
// its own passes over the others' without looking at every name).
type stickyNet struct {
	byName map[string]netip.Addr
	at     map[netip.Addr]int
}

// stickyOf is name's sticky address on the network (zero: none). Called
// with a.mu held.
func (a *Allocator) stickyOf(netID, name string) netip.Addr {
	if sn := a.sticky[netID]; sn != nil {
		return sn.byName[name]
	}
	return netip.Addr{}
}

// setSticky makes x name's sticky address on the network. Called with
// a.mu held; the strings are copied (they may share an event key's
// memory).
func (a *Allocator) setSticky(netID, name string, x netip.Addr) {
	sn := a.sticky[netID]
	if sn == nil {
		sn = &stickyNet{byName: map[string]netip.Addr{}, at: map[netip.Addr]int{}}
		a.sticky[strings.Clone(netID)] = sn
	}
	if old, ok := sn.byName[name]; ok {
		if old == x {
			return
		}
		sn.release(old)
	} else {
		name = strings.Clone(name)
	}
	sn.byName[name] = x
	sn.at[x]++
}

// dropSticky forgets name's sticky address. Called with a.mu held.
func (a *Allocator) dropSticky(netID, name string) {
	sn := a.sticky[netID]
	if sn == nil {
		return
	}
	if old, ok := sn.byName[name]; ok {
		delete(sn.byName, name)
		sn.release(old)
	}
	if len(sn.byName) == 0 {
		delete(a.sticky, netID)
	}
}

func (sn *stickyNet) release(x netip.Addr) {
	if sn.at[x]--; sn.at[x] <= 0 {
		delete(sn.at, x)
	}
}

func (a *Allocator) observeClaim(ev store.Event) {
	netID, addr, ok := strings.Cut(strings.TrimPrefix(ev.KV.Key, keyAddrs), "/")
	x, err := netip.ParseAddr(addr)
	if !ok || err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	nb := a.nets[netID]
	if nb == nil {
		return
	}
	if _, held := nb.blocks[blockOf(nb.subnet, a.bits, x)]; !held {
		return
	}
	if ev.Type == store.EventDelete {
		if nb.foreign[x] {
			delete(nb.foreign, x)
			delete(nb.used, x)
		}
		return
	}
	var cl Claim
	if json.Unmarshal(ev.KV.Value, &cl) != nil || cl.Node == a.c.self.ID || cl.Gateway {
		return
	}
	if _, used := nb.used[x]; used && !nb.foreign[x] {
		return // ours: our publication overwrites the pending claim
	}
	nb.used[x], nb.foreign[x] = "foreign", true
	if cl.Pending {
		go a.confirm(netID, x, ev.KV, cl)
	}
}

// confirm answers a pending claim in one of this node's blocks; if the
// claimer gave up first, the address is free again.
func (a *Allocator) confirm(netID string, x netip.Addr, kv store.KV, cl Claim) {
	cl.Pending = false
	b, _ := json.Marshal(cl)
	ctx, cancel := context.WithTimeout(context.Background(), foreignWait)
	defer cancel()
	if _, err := a.c.st.CompareAndSwap(ctx, kv.Key, b, kv.Revision, store.NoLease); err != nil {
		a.c.log.Debug("cluster: pending claim not confirmed", "key", kv.Key, "err", err)
		a.mu.Lock()
		if nb := a.nets[netID]; nb != nil && nb.foreign[x] && errors.Is(err, store.ErrNotFound) {
			delete(nb.foreign, x)
			delete(nb.used, x)
		}
		a.mu.Unlock()
	}
}

// release frees x locally; when its block is left empty the block is
// dropped from the held ones and returned with its revision, for the
// caller to delete in its transaction.
func (a *Allocator) release(netID string, x netip.Addr) (netip.Prefix, int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	nb := a.nets[netID]
	if nb == nil {
		return netip.Prefix{}, 0, false
	}
	delete(nb.used, x)
	delete(nb.foreign, x)
	blk := blockOf(nb.subnet, a.bits, x)
	rev, held := nb.blocks[blk]
	if !held {
		return netip.Prefix{}, 0, false
	}
	for y := range nb.used {
		if blk.Contains(y) {
			return netip.Prefix{}, 0, false
		}
	}
	if a.pub.pendingIn(netID, blk) {
		return netip.Prefix{}, 0, false
	}
	delete(nb.blocks, blk)
	return blk, rev, true
}

// held reports the revision of a held block containing x.
func (a *Allocator) blockRev(netID string, x netip.Addr) (netip.Prefix, int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	nb := a.nets[netID]
	if nb == nil {
		return netip.Prefix{}, 0, false
	}
	blk := blockOf(nb.subnet, a.bits, x)
	rev, ok := nb.blocks[blk]
	return blk, rev, ok
}
