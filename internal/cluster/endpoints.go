package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// Claim is the value of an address key: who holds the address.
type Claim struct {
	Node     string `json:"node"`
	Endpoint string `json:"endpoint,omitempty"`
	Sandbox  string `json:"sandbox,omitempty"`
	Gateway  bool   `json:"gateway,omitempty"`
}

// EndpointRecord is one sandbox's attachment to a global network, as other
// nodes need it: where to send its frames and what its names are.
type EndpointRecord struct {
	ID          string       `json:"id"`
	NetworkID   string       `json:"networkId"`
	Node        string       `json:"node"`
	NodeName    string       `json:"nodeName"`
	VTEP        netip.Addr   `json:"vtep"`
	SandboxID   string       `json:"sandboxId"`
	SandboxName string       `json:"sandboxName"`
	Aliases     []string     `json:"aliases,omitempty"`
	Address     netip.Prefix `json:"address"`
	MAC         string       `json:"mac"`
	Created     time.Time    `json:"created"`
}

// HardwareAddr parses MAC.
func (e EndpointRecord) HardwareAddr() net.HardwareAddr {
	m, _ := net.ParseMAC(e.MAC)
	return m
}

func addrKey(netID string, a netip.Addr) string { return keyAddrs + netID + "/" + a.String() }
func endpointKey(netID, id string) string       { return keyEndpoints + netID + "/" + id }

// AddressRequest asks for an address on a global network.
type AddressRequest struct {
	NetworkID   string
	EndpointID  string
	SandboxName string
	Static      netip.Addr // must be this one (--ip), or fail
	// Publish, when set, is published in the same transaction as the
	// claim (one write instead of two): its Address is the address won and
	// its MAC is MACFor(address). Without it, PutEndpoint publishes later.
	Publish *EndpointRecord
	MACFor  func(netip.Addr) string
}

// ClaimAddress takes an address on a network cluster-wide: the static one,
// else the sandbox name's previous address on this network when free
// (sticky, on any node), else the lowest free one. Each try is one
// compare-and-swap creating the address key, so two nodes never get the
// same address; a lost race moves on to the next candidate.
func (c *Cluster) ClaimAddress(ctx context.Context, r AddressRequest) (netip.Prefix, error) {
	v, err := c.claimView(ctx, r)
	if err != nil {
		return netip.Prefix{}, err
	}
	n, rev := v.n, v.rev
	claim, _ := json.Marshal(Claim{Node: c.self.ID, Endpoint: r.EndpointID, Sandbox: r.SandboxName})
	try := func(a netip.Addr) (bool, error) {
		ops := []store.Op{store.Put(addrKey(n.ID, a), claim)}
		if r.Publish != nil {
			ep := *r.Publish
			ep.Address, ep.MAC = netip.PrefixFrom(a, n.Subnet.Bits()), r.MACFor(a)
			ep.Node, ep.NodeName, ep.VTEP = c.self.ID, c.self.Name, c.self.Addr
			b, _ := json.Marshal(ep)
			ops = append(ops, store.Put(endpointKey(n.ID, ep.ID), b),
				store.Put(keySticky+n.ID+"/"+ep.SandboxName, []byte(a.String())))
		}
		_, err := c.st.Txn(ctx, []store.Cmp{store.AtRevision(keyNetworks+n.ID, rev), store.Absent(addrKey(n.ID, a))}, ops)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return false, fmt.Errorf("cluster store: claim %s on network %q: %w", a, n.Name, err)
		}
		if _, _, err := c.getNetwork(ctx, n.ID); err != nil {
			return false, err
		}
		return false, nil
	}
	if r.Static.IsValid() {
		if !usable(n, r.Static) {
			return netip.Prefix{}, fmt.Errorf("invalid ip %s: not a host address of network %q (%s): %w", r.Static, n.Name, n.Subnet, ErrOutOfSubnet)
		}
		ok, err := try(r.Static)
		if err != nil {
			return netip.Prefix{}, err
		}
		if !ok {
			return netip.Prefix{}, fmt.Errorf("address %s on network %q: %w", r.Static, n.Name, ErrAddrInUse)
		}
		return netip.PrefixFrom(r.Static, n.Subnet.Bits()), nil
	}
	if a := v.sticky; a.IsValid() && usable(n, a) && !v.used[a] {
		if ok, err := try(a); err != nil {
			return netip.Prefix{}, err
		} else if ok {
			return netip.PrefixFrom(a, n.Subnet.Bits()), nil
		}
	}
	// Candidates are the free addresses, lowest first, from one listing. The
	// first try is the lowest; after a lost race a random free one, so
	// nodes attaching at once spread out instead of all chasing the same
	// address; the listing is refreshed every few losses.
	for round := 0; round < 32; round++ {
		if round > 0 {
			if v.used, err = c.usedAddrs(ctx, n); err != nil {
				return netip.Prefix{}, err
			}
			v.stickies = c.stickies(ctx, n.ID)
		}
		free := freeAddrs(n, v.used, v.stickies)
		if len(free) == 0 {
			return netip.Prefix{}, fmt.Errorf("network %q (%s): %w", n.Name, n.Subnet, ErrNoAddress)
		}
		for try_ := 0; try_ < 8 && len(free) > 0; try_++ {
			i := 0
			if round > 0 || try_ > 0 {
				i = rand.IntN(len(free))
			}
			won, err := try(free[i])
			if err != nil {
				return netip.Prefix{}, err
			}
			if won {
				return netip.PrefixFrom(free[i], n.Subnet.Bits()), nil
			}
			free = slices.Delete(free, i, i+1)
		}
	}
	return netip.Prefix{}, fmt.Errorf("cluster store: claim an address on network %q: too much contention, try again", n.Name)
}

// claimInputs is what a claim reads before its first try.
type claimInputs struct {
	n        NetworkRecord
	rev      int64
	sticky   netip.Addr
	used     map[netip.Addr]bool
	stickies map[netip.Addr]bool
}

// claimView reads the network record, the sandbox name's sticky address,
// the claimed addresses and the sticky ones at once: four independent
// reads, so one round trip instead of four.
func (c *Cluster) claimView(ctx context.Context, r AddressRequest) (claimInputs, error) {
	var v claimInputs
	var errNet, errUsed error
	var wg sync.WaitGroup
	wg.Go(func() { v.n, v.rev, errNet = c.getNetwork(ctx, r.NetworkID) })
	if !r.Static.IsValid() {
		wg.Go(func() {
			if kv, err := c.st.Get(ctx, keySticky+r.NetworkID+"/"+r.SandboxName); err == nil {
				v.sticky, _ = netip.ParseAddr(string(kv.Value))
			}
		})
		wg.Go(func() { v.used, errUsed = c.usedAddrs(ctx, NetworkRecord{ID: r.NetworkID, Name: r.NetworkID}) })
		wg.Go(func() { v.stickies = c.stickies(ctx, r.NetworkID) })
	}
	wg.Wait()
	if errNet != nil {
		return v, errNet
	}
	return v, errUsed
}

// usedAddrs lists the network's claimed addresses.
func (c *Cluster) usedAddrs(ctx context.Context, n NetworkRecord) (map[netip.Addr]bool, error) {
	kvs, err := c.st.List(ctx, keyAddrs+n.ID+"/")
	if err != nil {
		return nil, fmt.Errorf("cluster store: addresses of network %q: %w", n.Name, err)
	}
	used := map[netip.Addr]bool{}
	for _, kv := range kvs {
		if a, err := netip.ParseAddr(strings.TrimPrefix(kv.Key, keyAddrs+n.ID+"/")); err == nil {
			used[a] = true
		}
	}
	return used, nil
}

// freeAddrs lists the network's unclaimed host addresses (at most 256),
// lowest first; other names' sticky addresses are used only when nothing
// else is free, so a sandbox that comes back finds its address.
func freeAddrs(n NetworkRecord, used, stickies map[netip.Addr]bool) []netip.Addr {
	var free, later []netip.Addr
	p := n.Subnet.Masked()
	for a := p.Addr().Next(); p.Contains(a) && len(free) < 256; a = a.Next() {
		switch {
		case !usable(n, a) || used[a]:
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

func (c *Cluster) stickies(ctx context.Context, netID string) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	kvs, err := c.st.List(ctx, keySticky+netID+"/")
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

// usable: a host address of the subnet (not the network or broadcast
// address, not the gateway).
func usable(n NetworkRecord, a netip.Addr) bool {
	p := n.Subnet.Masked()
	return p.Contains(a) && a != p.Addr() && a != broadcast(p) && a != n.Gateway
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ReleaseAddress gives an address back (a failed attach).
func (c *Cluster) ReleaseAddress(ctx context.Context, netID string, a netip.Addr) error {
	if err := c.st.Delete(ctx, addrKey(netID, a)); err != nil {
		return fmt.Errorf("cluster store: release %s: %w", a, err)
	}
	return nil
}

// PutEndpoint publishes an endpoint whose address this node claimed. It
// fails if the network is being removed or the claim is not this
// endpoint's.
func (c *Cluster) PutEndpoint(ctx context.Context, ep EndpointRecord) error {
	n, rev, err := c.getNetwork(ctx, ep.NetworkID)
	if err != nil {
		return err
	}
	ak := addrKey(n.ID, ep.Address.Addr())
	kv, err := c.st.Get(ctx, ak)
	if err != nil {
		return fmt.Errorf("cluster store: claim of %s: %w", ep.Address.Addr(), err)
	}
	var cl Claim
	if json.Unmarshal(kv.Value, &cl) != nil || cl.Node != c.self.ID || cl.Endpoint != ep.ID {
		return fmt.Errorf("address %s on network %q is claimed by another endpoint: %w", ep.Address.Addr(), n.Name, ErrAddrInUse)
	}
	ep.Node, ep.NodeName, ep.VTEP = c.self.ID, c.self.Name, c.self.Addr
	b, _ := json.Marshal(ep)
	_, err = c.st.Txn(ctx, []store.Cmp{store.AtRevision(keyNetworks+n.ID, rev), store.AtRevision(ak, kv.Revision)},
		[]store.Op{store.Put(endpointKey(n.ID, ep.ID), b),
			store.Put(keySticky+n.ID+"/"+ep.SandboxName, []byte(ep.Address.Addr().String()))})
	if err != nil {
		return fmt.Errorf("cluster store: publish endpoint of %q on network %q: %w", ep.SandboxName, n.Name, err)
	}
	return nil
}

// RemoveEndpoint withdraws an endpoint and releases its address; missing
// records are not an error.
func (c *Cluster) RemoveEndpoint(ctx context.Context, ep EndpointRecord) error {
	_, err := c.st.Txn(ctx, nil, []store.Op{store.Delete(endpointKey(ep.NetworkID, ep.ID)), store.Delete(addrKey(ep.NetworkID, ep.Address.Addr()))})
	if err != nil {
		return fmt.Errorf("cluster store: withdraw endpoint of %q: %w", ep.SandboxName, err)
	}
	return nil
}

// Endpoints lists every endpoint of a network, on every node.
func (c *Cluster) Endpoints(ctx context.Context, netID string) ([]EndpointRecord, error) {
	kvs, err := c.st.List(ctx, keyEndpoints+netID+"/")
	if err != nil {
		return nil, fmt.Errorf("cluster store: endpoints of %s: %w", netID, err)
	}
	out := make([]EndpointRecord, 0, len(kvs))
	for _, kv := range kvs {
		var ep EndpointRecord
		if json.Unmarshal(kv.Value, &ep) == nil {
			out = append(out, ep)
		}
	}
	return out, nil
}

// Reconcile makes the store agree with this node's local records after a
// start: endpoints of this node that the engine no longer has are withdrawn,
// and address claims of this node without an endpoint (an attach that died
// half way) are released. live holds the IDs of the node's global
// endpoints. Other nodes' records are never touched.
func (c *Cluster) Reconcile(ctx context.Context, live map[string]bool) (withdrawn, released int, err error) {
	eps, err := c.st.List(ctx, keyEndpoints)
	if err != nil {
		return 0, 0, fmt.Errorf("cluster store: reconcile: %w", err)
	}
	have := map[string]bool{}
	for _, kv := range eps {
		var ep EndpointRecord
		if json.Unmarshal(kv.Value, &ep) != nil || ep.Node != c.self.ID {
			continue
		}
		if live[ep.ID] {
			have[ep.ID] = true
			continue
		}
		if err := c.RemoveEndpoint(ctx, ep); err != nil {
			return withdrawn, released, err
		}
		withdrawn++
	}
	claims, err := c.st.List(ctx, keyAddrs)
	if err != nil {
		return withdrawn, released, fmt.Errorf("cluster store: reconcile: %w", err)
	}
	for _, kv := range claims {
		var cl Claim
		if json.Unmarshal(kv.Value, &cl) != nil || cl.Node != c.self.ID || cl.Gateway || have[cl.Endpoint] {
			continue
		}
		if err := c.st.CompareAndDelete(ctx, kv.Key, kv.Revision); err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			return withdrawn, released, fmt.Errorf("cluster store: reconcile: %w", err)
		}
		released++
	}
	return withdrawn, released, nil
}
