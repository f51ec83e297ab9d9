package engine

// Global (overlay) networks: records in the cluster store, shared by every
// daemon (internal/cluster); kernel objects per host (internal/driver/overlay).
//
//   - A network is created in the cluster store first (name, VNI and subnet
//     claimed cluster-wide in one transaction), then installed locally. Every
//     other node installs it when its watcher sees it. The local store keeps
//     a copy of the record, so a daemon that restarts while the cluster store
//     is down restores its overlay endpoints like any other.
//   - An attach takes the address from this node's blocks, joins the
//     sandbox to the overlay bridge (its default route through the
//     network's gateway, which every host's bridge holds: the distributed
//     gateway, with the bridge's firewall entries for NAT and isolation)
//     and publishes the endpoint record.
//   - Remote endpoints on live nodes become FDB and neighbour entries on the
//     VXLAN device and names in the embedded DNS (the watcher's PeerAdded);
//     they go when withdrawn or when their node's lease expires.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/dns"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/store"
)

const (
	// ScopeGlobal marks networks that live in the cluster store.
	ScopeGlobal = "global"
	// GatewayBridgeName is the local NAT network (and Linux bridge) that
	// gave overlay sandboxes their way out before the distributed gateway
	// (Docker's docker_gwbridge); sandboxes of older versions may still
	// have an endpoint on it (leaveGatewayBridge).
	GatewayBridgeName = "tether_gwbridge"
	// OptVNI names the VXLAN ID of an overlay network, Docker's option.
	OptVNI = "com.docker.network.driver.overlay.vxlanid_list"
)

// globalPool is where overlay subnets are chosen when none is given:
// 10.0.0.0/8 in /24s, avoiding host routes as bridge subnets do.
var globalPool = []ipam.PoolSpec{{Base: netip.MustParsePrefix("10.0.0.0/8"), Size: 24}}

// NodeFilter lets VXLAN in only from the underlay addresses of the live
// cluster nodes (firewall.VXLANGuard).
type NodeFilter interface {
	SetNodes(ctx context.Context, addrs []netip.Addr) error
}

// globalState is the engine's cluster side; nil without a cluster store.
type globalState struct {
	cl      *cluster.Cluster
	nodes   NodeFilter // nil: no VXLAN filter
	watcher *cluster.Watcher
	cancel  context.CancelFunc
	done    chan struct{}

	mu sync.Mutex
	// attaching holds the endpoint IDs of attaches in progress: their
	// records may be in the store before the engine's, and Reconcile must
	// not take them for dead.
	attaching map[string]bool
	// withdraw holds endpoints whose withdrawal failed (store down); retried.
	withdraw map[string]cluster.EndpointRecord
}

func (e *Engine) isGlobal(n *Network) bool { return n.Scope == ScopeGlobal }

// startGlobal begins following the cluster store. The node's registration
// and the first listing happen in the background: a daemon starts (and its
// local sandboxes keep working) while the store is down.
func (e *Engine) startGlobal() {
	g := e.global
	if g == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.done = cancel, make(chan struct{})
	g.watcher = cluster.NewWatcher(g.cl, globalListener{e})
	go func() {
		defer close(g.done)
		var wg sync.WaitGroup
		wg.Go(func() { g.watcher.Run(ctx) })
		wg.Go(func() { e.reconcileGlobal(ctx) })
		wg.Wait()
	}()
}

func (e *Engine) stopGlobal() {
	if g := e.global; g != nil && g.cancel != nil {
		// publications in flight get a moment to land (a start publishes
		// again whatever the store lacks)
		_ = e.FlushGlobal(context.Background())
		g.cancel()
		<-g.done
		g.cl.Stop()
	}
}

// FlushGlobal waits (at most 2 s, or until ctx ends) for the endpoint
// records being published in the background to reach the cluster store.
func (e *Engine) FlushGlobal(ctx context.Context) error {
	if e.global == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return e.blocks().Flush(ctx)
}

// WaitGlobalSynced blocks until the first listing of the cluster store was
// applied (tests, and attaches right after a start), or ctx ends.
func (e *Engine) WaitGlobalSynced(ctx context.Context) error {
	if e.global == nil || e.global.watcher == nil {
		return nil
	}
	select {
	case <-e.global.watcher.Synced():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reconcileGlobal, once the store answers, withdraws this node's endpoints
// the engine no longer has and releases half-made claims; then it retries
// failed withdrawals until ctx ends.
func (e *Engine) reconcileGlobal(ctx context.Context) {
	g := e.global
	select {
	case <-g.watcher.Synced():
	case <-ctx.Done():
		return
	}
	e.syncGlobalDatapath(ctx)
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		w, r, err := g.cl.Reconcile(rctx, e.liveGlobalEndpoints())
		cancel()
		if err == nil {
			if w+r > 0 {
				e.log.Info("cluster: reconciled this node's records", "withdrawn", w, "released", r)
			}
			err = e.reconcileBlocks(ctx)
		}
		if err == nil {
			break
		}
		e.log.Warn("cluster: reconcile failed; retrying", "err", err)
		sleepCtx(ctx, time.Second)
	}
	for ctx.Err() == nil {
		sleepCtx(ctx, time.Second)
		g.mu.Lock()
		pending := slices.Collect(maps.Values(g.withdraw))
		g.mu.Unlock()
		for _, ep := range pending {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := e.withdrawNow(rctx, ep, false)
			cancel()
			if err == nil {
				g.mu.Lock()
				delete(g.withdraw, ep.ID)
				g.mu.Unlock()
			}
		}
	}
}

// syncGlobalDatapath runs once the watcher applied its first listing: what
// changed while this daemon was down is undone here. Global networks that
// no longer exist in the store lose their local objects (unless local
// endpoints still use them), and FDB/neighbour entries of peers that are
// gone are removed (the watcher re-added every live one).
func (e *Engine) syncGlobalDatapath(ctx context.Context) {
	e.global.watcher.Locked(func(nets []cluster.NetworkRecord, peers []cluster.EndpointRecord) {
		e.syncGlobalLocked(ctx, nets, peers)
	})
}

// syncGlobalLocked is syncGlobalDatapath with the watcher's view held still.
func (e *Engine) syncGlobalLocked(ctx context.Context, nets []cluster.NetworkRecord, peers []cluster.EndpointRecord) {
	want := map[string]bool{}
	for _, n := range nets {
		want[n.ID] = true
	}
	live := map[string][]driver.Peer{}
	for _, ep := range peers {
		live[ep.NetworkID] = append(live[ep.NetworkID], peerOf(ep))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ns := range e.networks {
		if !e.isGlobal(ns.rec) {
			continue
		}
		if !want[ns.rec.ID] {
			e.log.Info("cluster: a global network was removed while this daemon was down", "network", ns.rec.Name)
			if err := e.uninstallGlobalLocked(ctx, ns); err != nil {
				e.log.Warn("cluster: remove network", "network", ns.rec.Name, "err", err)
			}
			continue
		}
		pp := e.peerProgrammer(ns.rec)
		if pp == nil {
			continue
		}
		dn := driverNetwork(ns.rec)
		have, err := pp.Peers(ctx, dn)
		if err != nil {
			e.log.Warn("cluster: read the datapath's peers", "network", ns.rec.Name, "err", err)
			continue
		}
		var stale []driver.Peer
		for _, p := range have {
			if !slices.ContainsFunc(live[ns.rec.ID], p.Equal) {
				stale = append(stale, p)
			}
		}
		if len(stale) > 0 {
			e.log.Info("cluster: removing peers that left while this daemon was down", "network", ns.rec.Name, "peers", len(stale))
			if err := pp.RemovePeers(ctx, dn, stale); err != nil {
				e.log.Warn("cluster: remove stale peers", "network", ns.rec.Name, "err", err)
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// reconcileBlocks, after a start, gives back the address blocks in which
// this node holds nothing any more and publishes again the endpoints whose
// records the store lacks (an attach whose publication a crash cut short).
func (e *Engine) reconcileBlocks(ctx context.Context) error {
	g := e.global
	var nets []cluster.NetworkInfo
	var eps []cluster.EndpointRecord
	e.mu.Lock()
	for _, ns := range e.networks {
		if e.isGlobal(ns.rec) && ns.rec.Subnet.IsValid() {
			nets = append(nets, cluster.NetworkInfo{ID: ns.rec.ID, Subnet: ns.rec.Subnet, Gateway: ns.rec.Gateway})
		}
	}
	for _, sb := range e.sandboxes {
		for _, ep := range sb.rec.Endpoints {
			if ns := e.networks[ep.NetworkID]; ns != nil && e.isGlobal(ns.rec) && ep.Address.IsValid() {
				eps = append(eps, e.endpointRecord(sb, ns, ep))
			}
		}
	}
	e.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := e.blocks().ReleaseIdle(rctx, nets)
	if err != nil {
		return err
	}
	if n > 0 {
		e.log.Info("cluster: gave back idle address blocks", "blocks", n)
	}
	published := map[string]bool{}
	for _, nw := range nets {
		got, _ := g.watcher.Endpoints(nw.ID)
		for _, ep := range got {
			published[ep.ID] = true
		}
	}
	for _, ep := range eps {
		if !published[ep.ID] {
			e.log.Info("cluster: publishing an endpoint the store lacks", "sandbox", ep.SandboxName, "network", ep.NetworkID)
			e.blocks().Publish(ep)
		}
	}
	return nil
}

// localGlobalAddrs lists the IPv4 addresses this node's endpoints hold on a
// global network (the block allocator's memory after a start).
func (e *Engine) localGlobalAddrs(netID string) []netip.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []netip.Addr
	for _, sb := range e.sandboxes {
		for _, ep := range sb.rec.Endpoints {
			if ep.NetworkID == netID && ep.Address.IsValid() {
				out = append(out, ep.Address.Addr())
			}
		}
	}
	return out
}

// blocks is this node's address-block allocator (one per cluster handle).
func (e *Engine) blocks() *cluster.Allocator { return e.global.cl.Allocator(e.localGlobalAddrs) }

// withdrawNow takes an endpoint out of the store through the allocator
// (its publication stopped first; its block given back when left empty).
func (e *Engine) withdrawNow(ctx context.Context, ep cluster.EndpointRecord, rollback bool) error {
	return e.blocks().Withdraw(ctx, ep, rollback)
}

func (e *Engine) liveGlobalEndpoints() map[string]bool {
	live := map[string]bool{}
	e.global.mu.Lock()
	for id := range e.global.attaching {
		live[id] = true
	}
	e.global.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, sb := range e.sandboxes {
		for _, ep := range sb.rec.Endpoints {
			if ns := e.networks[ep.NetworkID]; ns != nil && e.isGlobal(ns.rec) {
				live[ep.ID] = true
			}
		}
	}
	return live
}

// storeErr turns a cluster error into an engine error of the right kind.
func storeErr(err error) error {
	switch {
	case errors.Is(err, cluster.ErrNameInUse), errors.Is(err, cluster.ErrAddrInUse), errors.Is(err, cluster.ErrVNIInUse):
		return kindf(KindConflict, "%w", err)
	case errors.Is(err, cluster.ErrSubnetInUse), errors.Is(err, cluster.ErrInUse), errors.Is(err, cluster.ErrNoAddress):
		return kindf(KindForbidden, "%w", err)
	case errors.Is(err, cluster.ErrOutOfSubnet), errors.Is(err, cluster.ErrInvalidSubnet):
		return kindf(KindInvalid, "%w", err)
	case errors.Is(err, cluster.ErrNotFound):
		return kindf(KindNotFound, "%w", err)
	}
	return fmt.Errorf("%w (is the cluster store reachable?)", err)
}

// createGlobalNetwork records an overlay network in the cluster store and
// installs it here.
func (e *Engine) createGlobalNetwork(ctx context.Context, n *Network, subs subnets) (*Network, error) {
	sub := subs.v4
	g := e.global
	if g == nil {
		return nil, invalidf("invalid driver %q: global networks need a cluster store (daemon options cluster-store and cluster-advertise)", n.Driver)
	}
	e.mu.Lock()
	if e.findByName(n.Name) != nil {
		e.mu.Unlock()
		return nil, conflictf("network with name %s already exists", n.Name)
	}
	e.mu.Unlock()
	rec := cluster.NetworkRecord{ID: n.ID, Name: n.Name, Driver: n.Driver, Created: n.Created, Internal: n.Internal,
		Attachable: n.Attachable, Options: n.Options, Labels: n.Labels, IPAMOpts: n.IPAMOpts}
	if sub != nil {
		if len(n.Aux) > 0 || n.IPRange.IsValid() {
			return nil, invalidf("invalid IPAM config: ip-range and aux-address are not supported on overlay networks yet")
		}
		rec.Subnet, rec.Gateway = n.Subnet, n.Gateway
	}
	if n.IPv6 {
		// Endpoints' IPv6 addresses are at their IPv4 addresses' offset
		// in Subnet6 (cluster.Derive6): one claim per attach.
		if subs.v6 == nil {
			return nil, invalidf("invalid IPAM config: a %s network with IPv6 needs its IPv6 subnet given (--subnet, e.g. a ULA /64)", n.Driver)
		}
		if len(n.Aux6) > 0 || n.IPRange6.IsValid() {
			return nil, invalidf("invalid IPAM config: ip-range and aux-address are not supported on overlay networks yet")
		}
		rec.Subnet6, rec.Gateway6 = n.Subnet6, n.Gateway6
	}
	if v, ok := n.Options[OptVNI]; ok {
		var vni int
		if _, err := fmt.Sscan(v, &vni); err != nil || vni < 1 || vni > cluster.MaxVNI {
			return nil, invalidf("invalid option %s=%q: a VXLAN ID is a number from 1 to %d", OptVNI, v, cluster.MaxVNI)
		}
		rec.VNI = vni
	}
	choose := func(taken []netip.Prefix) (netip.Prefix, error) {
		e.mu.Lock()
		bs, err := e.blockers()
		e.mu.Unlock()
		if err != nil {
			return netip.Prefix{}, err
		}
		for _, p := range taken {
			bs = append(bs, ipam.Blocker{Prefix: p, Source: "a global network"})
		}
		p, err := ipam.ChooseSubnet(globalPool, bs)
		if err != nil {
			return netip.Prefix{}, forbiddenf("choose a subnet for network %q: %w", n.Name, err)
		}
		return p, nil
	}
	rec, err := g.cl.CreateNetwork(ctx, rec, choose)
	if err != nil {
		return nil, storeErr(err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ns, err := e.installGlobalLocked(ctx, rec)
	if err != nil {
		return nil, err
	}
	return ns.rec, nil
}

// installGlobalLocked makes a global network exist here: record, kernel
// objects (bridge and VXLAN device) and a local copy of the record. A
// network already installed with the same datapath parameters is left as
// it is. Called with e.mu held.
func (e *Engine) installGlobalLocked(ctx context.Context, rec cluster.NetworkRecord) (*netState, error) {
	if ns := e.networks[rec.ID]; ns != nil && ns.rec.VNI == rec.VNI && ns.rec.Subnet == rec.Subnet && ns.rec.Subnet6 == rec.Subnet6 {
		return ns, nil
	}
	if other := e.findByName(rec.Name); other != nil && other.rec.ID != rec.ID {
		// a local network took the name first: the global one is still
		// installed (by ID), the name resolves to the local one
		e.log.Warn("a global network has the name of a local one", "name", rec.Name, "local", other.rec.ID, "global", rec.ID)
	}
	drv := e.globalDriver(rec.Driver)
	if drv == nil {
		return nil, fmt.Errorf("install global network %q: driver %q is not available on this daemon", rec.Name, rec.Driver)
	}
	n := &Network{ID: rec.ID, Name: rec.Name, Driver: drv.Type(), Scope: ScopeGlobal, Created: rec.Created,
		Internal: rec.Internal, Attachable: rec.Attachable, IPAMDriver: "default", IPAMOpts: rec.IPAMOpts,
		Subnet: rec.Subnet, Gateway: rec.Gateway, Options: rec.Options, Labels: rec.Labels, VNI: rec.VNI,
		VTEP: e.global.cl.Self().Addr, ICC: true,
		IPv6: rec.Subnet6.IsValid(), Subnet6: rec.Subnet6, Gateway6: rec.Gateway6}
	if n.Options == nil {
		n.Options = map[string]string{}
	}
	e.localGlobal(n)
	e.warnShadowed(n)
	if err := drv.CreateNetwork(ctx, driverNetwork(n)); err != nil {
		return nil, fmt.Errorf("install global network %q: %w", n.Name, err)
	}
	if err := e.fwAdd(ctx, n); err != nil {
		_ = drv.DeleteNetwork(ctx, driverNetwork(n))
		return nil, fmt.Errorf("install global network %q: firewall: %w", n.Name, err)
	}
	if err := e.commit(ctx, e.putJSON(keyNetworks+n.ID, n)); err != nil {
		_ = e.fwRemove(ctx, n)
		_ = drv.DeleteNetwork(ctx, driverNetwork(n))
		return nil, fmt.Errorf("record network %q: %w", n.Name, err)
	}
	ns := &netState{rec: n}
	e.networks[n.ID] = ns
	e.events.publish(Event{Type: "network", Action: "create", ID: n.ID, Attrs: map[string]string{"name": n.Name, "type": n.Driver}})
	return ns, nil
}

// localGlobal fills in what a global network's local copy holds beyond
// the cluster record: its bridge, as its driver names it (the firewall's
// entries and the doctor name it), and masquerade, on for every network
// that is not internal (its sandboxes go out through their host's bridge,
// the distributed gateway). Copies recorded by older versions lack both.
func (e *Engine) localGlobal(n *Network) {
	if b, ok := e.drivers[n.Driver].(driver.Bridged); ok && n.BridgeName == "" {
		n.BridgeName = b.BridgeName(driverNetwork(n))
	}
	n.Masquerade = !n.Internal
}

// warnShadowed logs when an open global network's subnet overlaps a route
// or address of this host that is not its own bridge's: the gateway its
// bridge takes here adds a connected route that would shadow (or be
// shadowed by) that one. The network is installed all the same (its
// subnet was free where it was created; docs/overlay.md, "Way out").
func (e *Engine) warnShadowed(n *Network) {
	if n.Internal || !n.Subnet.IsValid() {
		return
	}
	bs, err := e.hostBlockers()
	if err != nil {
		return
	}
	for _, b := range bs {
		if b.Prefix.Overlaps(n.Subnet) && (n.BridgeName == "" || !strings.HasSuffix(b.Source, " on "+n.BridgeName)) {
			e.log.Warn("global network's subnet overlaps this host's routes: its gateway here adds a connected route beside them; give the network another --subnet",
				"network", n.Name, "subnet", n.Subnet, "overlaps", b.Source)
			return
		}
	}
}

// uninstallGlobalLocked removes a global network's local objects. Called
// with e.mu held.
func (e *Engine) uninstallGlobalLocked(ctx context.Context, ns *netState) error {
	n := ns.rec
	if users := e.endpointNames(n.ID); len(users) > 0 || ns.pending > 0 {
		return forbiddenf("network %s has active endpoints here (%v)", n.Name, users)
	}
	drv, err := e.driverOf(n)
	if err != nil {
		return err
	}
	if err := e.fwRemove(ctx, n); err != nil {
		return fmt.Errorf("remove global network %q: firewall: %w", n.Name, err)
	}
	if err := drv.DeleteNetwork(ctx, driverNetwork(n)); err != nil {
		return fmt.Errorf("remove global network %q: %w", n.Name, err)
	}
	if err := e.commit(ctx, store.Delete(keyNetworks+n.ID)); err != nil {
		return err
	}
	delete(e.networks, n.ID)
	e.events.publish(Event{Type: "network", Action: "destroy", ID: n.ID, Attrs: map[string]string{"name": n.Name, "type": n.Driver}})
	return nil
}

// removeGlobalNetwork deletes a global network cluster-wide (refused while
// any node has an endpoint on it), then here; other nodes follow through
// their watchers.
func (e *Engine) removeGlobalNetwork(ctx context.Context, ns *netState) error {
	e.mu.Lock()
	e.reapDeadUsersLocked(ctx, ns.rec.ID)
	if users := e.endpointNames(ns.rec.ID); len(users) > 0 || ns.pending > 0 {
		e.mu.Unlock()
		return forbiddenf("error while removing network: network %s has active endpoints (%v)", ns.rec.Name, users)
	}
	e.mu.Unlock()
	if err := e.global.cl.RemoveNetwork(ctx, ns.rec.ID); err != nil && !errors.Is(err, cluster.ErrNotFound) {
		return storeErr(fmt.Errorf("error while removing network: %w", err))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.networks[ns.rec.ID] == nil {
		return nil // the watcher was first
	}
	return e.uninstallGlobalLocked(ctx, ns)
}

// claimGlobal takes a global network's address for an attach from this
// node's address blocks (cluster.Allocator: no store round trip while a
// held block has room); its record is published once the attach is
// recorded (publishGlobal). Until the attach ends the endpoint is marked
// attaching, so Reconcile does not take its record for dead.
func (e *Engine) claimGlobal(ctx context.Context, sb *sbState, ns *netState, at *attachment, static netip.Addr, macFor func(netip.Addr) string) error {
	g := e.global
	ep := at.ep
	g.mu.Lock()
	g.attaching[ep.ID] = true
	g.mu.Unlock()
	p, err := e.blocks().Take(ctx, cluster.TakeRequest{NetworkID: ns.rec.ID, Subnet: ns.rec.Subnet, Gateway: ns.rec.Gateway,
		EndpointID: ep.ID, SandboxName: sb.rec.Name, Static: static})
	if err != nil {
		e.doneAttaching(at)
		if k := addrErr(ns, static, err); KindOf(k) != KindInternal {
			return k
		}
		return storeErr(fmt.Errorf("attach sandbox %q to network %q: %w", sb.rec.Name, ns.rec.Name, err))
	}
	at.claimed = true
	ep.Address, ep.MAC = p, macFor(p.Addr())
	if !ns.rec.Internal {
		ep.Gateway = ns.rec.Gateway // every host's bridge holds it
	}
	if ns.rec.Subnet6.IsValid() {
		a6, err := cluster.Derive6(ns.rec.Subnet, ns.rec.Subnet6, p.Addr())
		if err != nil { // the network record was checked at creation
			return fmt.Errorf("attach sandbox %q to network %q: %w", sb.rec.Name, ns.rec.Name, err)
		}
		ep.Address6, ep.Gateway6 = netip.PrefixFrom(a6, ns.rec.Subnet6.Bits()), ns.rec.Gateway6
	}
	return nil
}

// unclaimGlobal withdraws the endpoint of a failed attach, which was never
// published: its address (its block given back when left empty); the
// deletes of its record and address key find nothing and are harmless.
func (e *Engine) unclaimGlobal(ctx context.Context, sb *sbState, ns *netState, at *attachment) {
	rec := e.endpointRecord(sb, ns, at.ep)
	if err := e.global.cl.Connected(); err != nil {
		// The store is away: the withdrawal would wait for its request
		// timeout. It is retried in the background instead (the record
		// was never published: that happens once an attach is recorded).
		e.log.Warn("roll back attach: the cluster store is not connected; will withdraw the endpoint", "sandbox", sb.rec.Name, "network", ns.rec.Name, "err", err)
		e.global.mu.Lock()
		e.global.withdraw[at.ep.ID] = rec
		e.global.mu.Unlock()
		return
	}
	if err := e.withdrawNow(ctx, rec, true); err != nil {
		e.log.Warn("roll back attach: withdraw the endpoint; will retry", "sandbox", sb.rec.Name, "network", ns.rec.Name, "err", err)
		e.global.mu.Lock()
		e.global.withdraw[at.ep.ID] = rec
		e.global.mu.Unlock()
	}
}

// checkStoreUp, before a global attach is recorded, refuses it when the
// cluster store is known to be down: its client's connection dropped
// (store.Connectivity, seen within milliseconds of a store killed or cut
// off). An endpoint no other host can learn of is refused, naming the
// store, as before address blocks; the rollback withdraws it. Otherwise
// the attach stands and its record is published after it is recorded
// (publishGlobal), without the attach waiting for the store.
func (e *Engine) checkStoreUp(sb *sbState, ns *netState, at *attachment) error {
	if !at.global || !at.claimed || e.global == nil {
		return nil
	}
	if err := e.global.cl.Connected(); err != nil {
		return storeErr(fmt.Errorf("attach sandbox %q to network %q: publish the endpoint: %w", sb.rec.Name, ns.rec.Name, err))
	}
	return nil
}

// publishGlobal hands a recorded global attach's endpoint record to the
// background publisher: one transaction with its address key and sticky
// address, retried while the store is away. Remote peers program the
// endpoint from that record, so only once it is wired and recorded here,
// a store round trip after the attach answered; an attach that failed is
// never published.
func (e *Engine) publishGlobal(sb *sbState, ns *netState, at *attachment) {
	if at.global && at.claimed && e.global != nil {
		e.blocks().Publish(e.endpointRecord(sb, ns, at.ep))
	}
}

// doneAttaching ends the attaching mark of a global attach: its endpoint
// is the engine's record's now (or withdrawn), which Reconcile counts.
func (e *Engine) doneAttaching(at *attachment) {
	if !at.global || e.global == nil {
		return
	}
	e.global.mu.Lock()
	delete(e.global.attaching, at.ep.ID)
	e.global.mu.Unlock()
}

func (e *Engine) endpointRecord(sb *sbState, ns *netState, ep *Endpoint) cluster.EndpointRecord {
	return cluster.EndpointRecord{ID: ep.ID, NetworkID: ns.rec.ID, SandboxID: sb.rec.ID, SandboxName: sb.rec.Name,
		Aliases: ep.Aliases, Address: ep.Address, Address6: ep.Address6, MAC: ep.MAC, Created: ep.Created}
}

// leaveGatewayBridge detaches a tether_gwbridge endpoint (given to overlay
// sandboxes by versions before the distributed gateway, docs/overlay.md)
// once the sandbox has no endpoint left on a non-internal global network:
// an old sandbox left on internal overlays only must not keep that way
// out. Called with sb.op held.
func (e *Engine) leaveGatewayBridge(ctx context.Context, sb *sbState) error {
	e.mu.Lock()
	var gw *netState
	for _, ep := range sb.rec.Endpoints {
		ns := e.networks[ep.NetworkID]
		switch {
		case ns == nil:
		case e.isGlobal(ns.rec) && !ns.rec.Internal:
			e.mu.Unlock()
			return nil
		case ns.rec.Name == GatewayBridgeName:
			gw = ns
		}
	}
	e.mu.Unlock()
	if gw == nil {
		return nil
	}
	ep := sb.rec.endpointOn(gw.rec.ID)
	return e.detach(ctx, sb, gw, ep, true)
}

// withdrawGlobal takes an endpoint out of the cluster store; when the store
// is down it is queued and retried.
func (e *Engine) withdrawGlobal(ctx context.Context, sb *sbState, ns *netState, ep *Endpoint) {
	g := e.global
	if g == nil || !e.isGlobal(ns.rec) {
		return
	}
	rec := e.endpointRecord(sb, ns, ep)
	if err := e.withdrawNow(ctx, rec, false); err != nil {
		e.log.Warn("cluster: withdraw endpoint failed; will retry", "sandbox", sb.rec.Name, "network", ns.rec.Name, "err", err)
		g.mu.Lock()
		g.withdraw[rec.ID] = rec
		g.mu.Unlock()
	}
}

// globalListener applies the watcher's differences to the kernel and DNS.
type globalListener struct{ e *Engine }

func (l globalListener) NetworkAdded(n cluster.NetworkRecord) {
	e := l.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := e.installGlobalLocked(context.Background(), n); err != nil {
		e.log.Error("cluster: install network", "network", n.Name, "err", err)
	}
}

func (l globalListener) NetworkRemoved(n cluster.NetworkRecord) {
	e := l.e
	e.mu.Lock()
	defer e.mu.Unlock()
	ns := e.networks[n.ID]
	if ns == nil {
		return
	}
	if err := e.uninstallGlobalLocked(context.Background(), ns); err != nil {
		e.log.Error("cluster: remove network", "network", n.Name, "err", err)
	}
}

// NodesChanged puts the live nodes' underlay addresses into the VXLAN
// filter. The watcher calls it after its first listing and on every change,
// never before: while the store is unreachable the filter keeps the last
// set it had (a restarted daemon finds the previous run's in the kernel).
func (l globalListener) NodesChanged(addrs []netip.Addr) {
	e, g := l.e, l.e.global
	if g.nodes == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.nodes.SetNodes(ctx, addrs); err != nil {
		e.log.Error("cluster: VXLAN filter: set the live nodes", "nodes", addrs, "err", err)
		return
	}
	e.log.Info("cluster: VXLAN accepted only from the live nodes", "nodes", addrs)
}

// peerTarget is a global network's driver network and its peer
// programmer (nil when the network is not installed here).
func (l globalListener) peerTarget(ep cluster.EndpointRecord) (*driver.Network, driver.PeerProgrammer) {
	e := l.e
	e.mu.Lock()
	defer e.mu.Unlock()
	ns := e.networks[ep.NetworkID]
	if ns == nil {
		return nil, nil
	}
	return driverNetwork(ns.rec), e.peerProgrammer(ns.rec)
}

func (l globalListener) PeerAdded(ep cluster.EndpointRecord) {
	e := l.e
	dn, pp := l.peerTarget(ep)
	if dn == nil {
		return
	}
	// The name first: programming the peer announces its address to the
	// local sandboxes (a gratuitous ARP, docs/overlay.md), and one that was
	// waiting for it may look the name up next.
	e.names.Set("peer:"+ep.ID, []dns.Entry{{SandboxID: ep.SandboxID, Name: ep.SandboxName, NetworkID: ep.NetworkID,
		NetworkName: dn.Name, Aliases: ep.Aliases, Addr: ep.Address.Addr(), Addr6: ep.Address6.Addr()}})
	if pp != nil {
		p := peerOf(ep)
		if err := pp.AddPeer(context.Background(), dn, p); err != nil {
			e.log.Error("cluster: program peer", "network", dn.Name, "peer", p.String(), "err", err)
		}
	}
}

func (l globalListener) PeerRemoved(ep cluster.EndpointRecord) {
	e := l.e
	e.names.Remove("peer:" + ep.ID)
	dn, pp := l.peerTarget(ep)
	if dn == nil || pp == nil {
		return
	}
	p := peerOf(ep)
	if err := pp.RemovePeer(context.Background(), dn, p); err != nil {
		e.log.Error("cluster: remove peer", "network", dn.Name, "peer", p.String(), "err", err)
	}
}

func peerOf(ep cluster.EndpointRecord) driver.Peer {
	return driver.Peer{IP: ep.Address.Addr(), IP6: ep.Address6.Addr(), MAC: ep.HardwareAddr(), VTEP: ep.VTEP}
}

// peerProgrammer is the network's driver as a peer programmer, nil when it
// is not one. Called with e.mu held or from the watcher.
func (e *Engine) peerProgrammer(n *Network) driver.PeerProgrammer {
	pp, _ := e.drivers[n.Driver].(driver.PeerProgrammer)
	return pp
}

// globalDriver is the driver of a global network record: the one it names
// when this daemon has it as a global driver. Records of older versions
// name none: the only global driver there is then.
func (e *Engine) globalDriver(name string) driver.Driver {
	if d := e.drivers[name]; d != nil && d.Capabilities().Scope == driver.ScopeGlobal {
		return d
	}
	if name != "" {
		return nil
	}
	var only driver.Driver
	for _, d := range e.drivers {
		if d.Capabilities().Scope == driver.ScopeGlobal {
			if only != nil {
				return nil
			}
			only = d
		}
	}
	return only
}

// RemoteEndpoint is an endpoint of a global network on another node.
type RemoteEndpoint struct {
	cluster.EndpointRecord
	Live bool // its node holds a live registration
}

// remoteEndpoints lists the endpoints other nodes have on a network, live
// or not, for inspect. Called with e.mu held (it takes only the watcher's
// lock).
func (e *Engine) remoteEndpoints(netID string) []RemoteEndpoint {
	g := e.global
	if g == nil || g.watcher == nil {
		return nil
	}
	eps, nodes := g.watcher.Endpoints(netID)
	var out []RemoteEndpoint
	for _, ep := range eps {
		if ep.Node == g.cl.Self().ID {
			continue
		}
		_, live := nodes[ep.Node]
		out = append(out, RemoteEndpoint{EndpointRecord: ep, Live: live})
	}
	return out
}
