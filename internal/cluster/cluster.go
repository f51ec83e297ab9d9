// Package cluster is the control plane of global (overlay) networks: the
// records every daemon of a cluster shares through the distributed store
// (etcd or ZooKeeper, behind store.Store). It knows nothing of the kernel:
//
//   - nodes: each daemon registers itself under a lease it keeps alive; a
//     node whose lease expires disappears from every other node's view;
//   - networks: global records with a cluster-wide unique name, VNI and
//     subnet, all claimed in one transaction;
//   - addresses: one key per address, claimed by compare-and-swap, so no two
//     hosts ever hand out the same one;
//   - endpoints: where each sandbox's address lives (node, VTEP, MAC).
//
// A Watcher follows the store and tells a Listener which networks exist and
// which remote endpoints are alive, as differences, so the engine programs
// the datapath and DNS from it. The key layout is in docs/overlay.md.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// Key layout, all under one prefix.
const (
	prefix          = "tether/v1/global/"
	keyNodes        = prefix + "nodes/"     // <node id> → Node (leased)
	keyNetworks     = prefix + "networks/"  // <network id> → NetworkRecord
	keyNetNames     = prefix + "netnames/"  // <name> → network id
	keyVNIs         = prefix + "vnis/"      // <vni> → network id
	keySubnets      = prefix + "subnets/"   // <prefix with / as _> → network id
	keyAddrs        = prefix + "addrs/"     // <network id>/<ip> → Claim
	keyEndpoints    = prefix + "endpoints/" // <network id>/<endpoint id> → EndpointRecord
	keySticky       = prefix + "sticky/"    // <network id>/<sandbox name> → ip
	keyBlocks       = prefix + "blocks/"    // <network id>/<a.b.c.d_len> → Block
	defaultTTL      = 10 * time.Second
	retryAfterError = time.Second
)

// Node is one daemon of the cluster.
type Node struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"` // host name, shown in inspect
	Addr      netip.Addr `json:"addr"` // advertise address: the VTEP of its overlays
	Port      int        `json:"port"` // advertise port (the API), as Docker's cluster-advertise
	StartedAt time.Time  `json:"startedAt"`
}

// Options configure a Cluster.
type Options struct {
	Store store.Store
	Self  Node
	// TTL of the node's lease (default 10 s); it is renewed every TTL/3.
	TTL    time.Duration
	Logger *slog.Logger
}

// Cluster is this daemon's handle on the shared records.
type Cluster struct {
	st   store.Store
	self Node
	ttl  time.Duration
	log  *slog.Logger

	mu    sync.Mutex
	lease store.LeaseID
	// nodeRev is the revision of the node key this registration wrote
	// (block claims compare it: they are made under the live lease);
	// renewed is when the last successful grant or renewal was sent.
	nodeRev int64
	renewed time.Time
	// alloc is the node's address blocks, made on first use.
	alloc *Allocator

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Cluster; Start registers the node.
func New(o Options) (*Cluster, error) {
	if o.Store == nil {
		return nil, errors.New("cluster: no store")
	}
	if o.Self.ID == "" || !o.Self.Addr.IsValid() {
		return nil, errors.New("cluster: the node needs an ID and an advertise address")
	}
	if o.TTL <= 0 {
		o.TTL = defaultTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Cluster{st: o.Store, self: o.Self, ttl: o.TTL, log: o.Logger}, nil
}

// Self is this node.
func (c *Cluster) Self() Node { return c.self }

// TTL is the node lease's time to live.
func (c *Cluster) TTL() time.Duration { return c.ttl }

// Store is the shared store.
func (c *Cluster) Store() store.Store { return c.st }

// Start registers the node and keeps it registered in the background: the
// lease is renewed every TTL/3, and granted anew when it was lost (after an
// outage longer than the TTL, say). A first registration that fails (the
// store is down) is returned, and retried in the background all the same,
// so a daemon can start while the store is away.
func (c *Cluster) Start(ctx context.Context) error {
	err := c.register(ctx)
	kctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go c.keepAlive(kctx)
	return err
}

// Stop ends the keep-alive. The lease is left to expire rather than revoked:
// a daemon that restarts within the TTL is never seen gone, so remote peers
// keep its endpoints and no packet is lost.
func (c *Cluster) Stop() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
}

func (c *Cluster) register(ctx context.Context) error {
	sent := time.Now()
	lease, err := c.st.Grant(ctx, c.ttl)
	if err != nil {
		return fmt.Errorf("cluster store: register node %s: grant lease: %w", c.self.ID, err)
	}
	b, _ := json.Marshal(c.self)
	rev, err := c.st.Put(ctx, keyNodes+c.self.ID, b, lease)
	if err != nil {
		return fmt.Errorf("cluster store: register node %s: %w", c.self.ID, err)
	}
	c.mu.Lock()
	renewedLease := c.lease != store.NoLease
	c.lease, c.nodeRev, c.renewed = lease, rev, sent
	al := c.alloc
	c.mu.Unlock()
	if renewedLease && al != nil {
		// the old lease may have expired: blocks held under it may have
		// been taken over meanwhile
		al.forgetBlocks()
	}
	return nil
}

// renew makes the node's registration current now (an attach found it
// stale: the store was away, or the keep-alive has not run since it came
// back): one renewal, or a new registration when the lease expired.
func (c *Cluster) renew(ctx context.Context) error {
	c.mu.Lock()
	lease := c.lease
	c.mu.Unlock()
	sent := time.Now()
	err := store.ErrLeaseNotFound
	if lease != store.NoLease {
		err = c.st.KeepAlive(ctx, lease)
	}
	switch {
	case err == nil:
		c.mu.Lock()
		if c.lease == lease {
			c.renewed = sent
		}
		c.mu.Unlock()
		return nil
	case errors.Is(err, store.ErrLeaseNotFound):
		return c.register(ctx)
	}
	return fmt.Errorf("cluster store: renew node %s: %w", c.self.ID, err)
}

// current returns the registration's node-key revision, renewing it first
// when it is stale.
func (c *Cluster) current(ctx context.Context) (int64, error) {
	if rev, ok := c.registration(); ok {
		return rev, nil
	}
	if err := c.renew(ctx); err != nil {
		return 0, fmt.Errorf("%w (this node's registration is not current)", err)
	}
	if rev, ok := c.registration(); ok {
		return rev, nil
	}
	return 0, fmt.Errorf("cluster store: this node's registration is not current (is the store reachable?)")
}

// registration is the node key's revision when the node's lease is
// current: granted or renewed less than 3/4 of the TTL ago (counted from
// when the request was sent, so the store's own expiry is later). A node
// hands out addresses from its blocks only then: once its lease may have
// expired, another node may reclaim its empty blocks.
func (c *Cluster) registration() (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodeRev, c.lease != store.NoLease && time.Since(c.renewed) < c.ttl*3/4
}

func (c *Cluster) keepAlive(ctx context.Context) {
	defer close(c.done)
	period := c.ttl / 3
	t := time.NewTicker(period)
	defer t.Stop()
	lost := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		lease := c.lease
		c.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, period)
		err := store.ErrLeaseNotFound
		if lease != store.NoLease {
			sent := time.Now()
			if err = c.st.KeepAlive(rctx, lease); err == nil {
				c.mu.Lock()
				c.renewed = sent
				c.mu.Unlock()
			}
		}
		if errors.Is(err, store.ErrLeaseNotFound) {
			err = c.register(rctx)
			if err == nil {
				c.log.Info("cluster: node registered", "node", c.self.ID, "after", map[bool]string{true: "its lease expired", false: "a failed start"}[lease != store.NoLease])
			}
		}
		cancel()
		if ctx.Err() != nil {
			return // stopped (Stop cancels a renewal in flight): nothing to report
		}
		switch {
		case err != nil && !lost:
			c.log.Warn("cluster store unreachable: keeping the node registered failed; the datapath stays as it is", "err", err)
			lost = true
		case err == nil && lost:
			c.log.Info("cluster store reachable again", "node", c.self.ID)
			lost = false
		}
	}
}

// Connected reports, without a round trip, whether the store's client is
// connected (store.Connectivity): nil when it is or when the store cannot
// tell, else why not.
func (c *Cluster) Connected() error { return store.Connected(c.st) }

// Nodes lists the registered (live) nodes.
func (c *Cluster) Nodes(ctx context.Context) ([]Node, error) {
	kvs, err := c.st.List(ctx, keyNodes)
	if err != nil {
		return nil, fmt.Errorf("cluster store: list nodes: %w", err)
	}
	out := make([]Node, 0, len(kvs))
	for _, kv := range kvs {
		var n Node
		if json.Unmarshal(kv.Value, &n) == nil {
			out = append(out, n)
		}
	}
	return out, nil
}
