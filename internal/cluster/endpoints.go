package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/store"
)

// Claim is the value of an address key: who holds the address.
type Claim struct {
	Node     string `json:"node"`
	Endpoint string `json:"endpoint,omitempty"`
	Sandbox  string `json:"sandbox,omitempty"`
	Gateway  bool   `json:"gateway,omitempty"`
	// Pending: a claim in another node's address block, not yet
	// confirmed by that node (blocks.go).
	Pending bool `json:"pending,omitempty"`
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
	// Address6 is the endpoint's IPv6 address on a dual-stack network: the
	// network's Subnet6 at Address's offset (NetworkRecord.Address6), set
	// by the cluster when it publishes the record; zero otherwise.
	Address6 netip.Prefix `json:"address6,omitzero"`
	MAC      string       `json:"mac"`
	Created  time.Time    `json:"created"`
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
// (sticky, on any node), else the lowest free one. It is the store-backed
// ipam allocator over the cluster's keys (see addressAllocator): each try
// is one compare-and-swap creating the address key, so two nodes never get
// the same address; a lost race moves on to another candidate. Errors
// match both ipam's classes and the cluster's: ErrOutOfSubnet (and
// *ipam.FieldError), ErrAddrInUse, ErrNoAddress, ErrNotFound.
func (c *Cluster) ClaimAddress(ctx context.Context, r AddressRequest) (netip.Prefix, error) {
	p, err := c.AddressAllocator(r).Reserve(ctx, ipam.Request{Static: r.Static})
	return p, clusterClass(err)
}

// AddressAllocator is the ipam.Allocator of one requester (r without
// Static: that goes in the ipam.Request) on r's network: claims under
// keyAddrs, the sandbox name's sticky address read from keySticky and
// other names' sticky addresses handed out last, every claim guarded by
// the network record's revision; with r.Publish, the endpoint record and
// the sticky address go in the claim's transaction. Its errors are ipam's
// classes and ErrNotFound (the network is gone or being removed); Release
// deletes the address key only.
func (c *Cluster) AddressAllocator(r AddressRequest) *ipam.StoreAllocator {
	claim, _ := json.Marshal(Claim{Node: c.self.ID, Endpoint: r.EndpointID, Sandbox: r.SandboxName})
	var n NetworkRecord // the last read; Ops runs after Network returned
	a := &ipam.StoreAllocator{
		Store: c.st,
		Keys: ipam.StoreKeys{Addrs: keyAddrs + r.NetworkID + "/", Stickies: keySticky + r.NetworkID + "/",
			Sticky: keySticky + r.NetworkID + "/" + r.SandboxName},
		Claim: claim,
		Network: func(ctx context.Context) (ipam.Space, error) {
			rec, rev, err := c.getNetwork(ctx, r.NetworkID)
			if err != nil {
				return ipam.Space{}, err
			}
			n = rec
			return ipam.Space{Name: rec.Name, Subnet: rec.Subnet, Gateway: rec.Gateway,
				Guards: []store.Cmp{store.AtRevision(keyNetworks+rec.ID, rev)}}, nil
		},
	}
	if r.Publish != nil {
		a.Ops = func(addr netip.Addr) []store.Op {
			ep := *r.Publish
			ep.Address, ep.MAC = netip.PrefixFrom(addr, n.Subnet.Bits()), r.MACFor(addr)
			ep.Address6, _ = n.Address6(addr) // addr is in n.Subnet, Subnet6 was checked at creation
			ep.Node, ep.NodeName, ep.VTEP = c.self.ID, c.self.Name, c.self.Addr
			b, _ := json.Marshal(ep)
			return []store.Op{store.Put(endpointKey(n.ID, ep.ID), b),
				store.Put(keySticky+n.ID+"/"+ep.SandboxName, []byte(addr.String()))}
		}
	}
	return a
}

// classed is an allocator's error that also matches the cluster's sentinel
// for its class.
type classed struct{ err, class error }

func (e classed) Error() string   { return e.err.Error() }
func (e classed) Unwrap() []error { return []error{e.err, e.class} }

// clusterClass adds the cluster's sentinel to an ipam error's class.
func clusterClass(err error) error {
	var fe *ipam.FieldError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return classed{err, ErrOutOfSubnet}
	case errors.Is(err, ipam.ErrAddrInUse):
		return classed{err, ErrAddrInUse}
	case errors.Is(err, ipam.ErrNoAddress):
		return classed{err, ErrNoAddress}
	}
	return err
}

// ReleaseAddress gives an address back (a failed attach).
func (c *Cluster) ReleaseAddress(ctx context.Context, netID string, a netip.Addr) error {
	al := ipam.StoreAllocator{Store: c.st, Keys: ipam.StoreKeys{Addrs: keyAddrs + netID + "/"}}
	if err := al.Release(ctx, a); err != nil {
		return fmt.Errorf("cluster %w", err)
	}
	return nil
}

// PutEndpoint publishes an endpoint whose address this node claimed. It
// fails if the network is being removed or the claim is not this
// endpoint's. Its Address6 is set from the network (derived from Address).
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
	if ep.Address6, err = n.Address6(ep.Address.Addr()); err != nil {
		return fmt.Errorf("publish endpoint of %q on network %q: %w", ep.SandboxName, n.Name, err)
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

// RollbackEndpoint withdraws the endpoint of a failed attach: its record,
// its address claim, and the sandbox name's sticky key when the claim's
// transaction set it to this address (a failed attach leaves no address
// preferred for that name; a sticky key another attach has moved since is
// left alone).
func (c *Cluster) RollbackEndpoint(ctx context.Context, ep EndpointRecord) error {
	stickyKey := keySticky + ep.NetworkID + "/" + ep.SandboxName
	ops := []store.Op{store.Delete(endpointKey(ep.NetworkID, ep.ID)), store.Delete(addrKey(ep.NetworkID, ep.Address.Addr()))}
	var cmps []store.Cmp
	if kv, err := c.st.Get(ctx, stickyKey); err == nil && string(kv.Value) == ep.Address.Addr().String() {
		cmps = []store.Cmp{store.AtRevision(stickyKey, kv.Revision)}
		ops = append(ops, store.Delete(stickyKey))
	}
	_, err := c.st.Txn(ctx, cmps, ops)
	if errors.Is(err, store.ErrConflict) { // the sticky key moved meanwhile: keep it
		return c.RemoveEndpoint(ctx, ep)
	}
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
