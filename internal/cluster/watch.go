package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tether-net/tether/internal/store"
)

// Listener is told what changed, from one goroutine, in a safe order:
// peers go before their network, networks come before their peers.
type Listener interface {
	// NetworkAdded is called for a new or changed global network.
	NetworkAdded(n NetworkRecord)
	// NetworkRemoved is called when a global network is gone.
	NetworkRemoved(n NetworkRecord)
	// PeerAdded is called for an endpoint on another live node (new, or
	// changed: same ID, new address/IPv6 address/MAC/VTEP/names). Its
	// Address6 is valid only on a dual-stack network, and then is the
	// network's Subnet6 at Address's offset (checked).
	PeerAdded(ep EndpointRecord)
	// PeerRemoved is called when such an endpoint is withdrawn or its node's
	// lease expired.
	PeerRemoved(ep EndpointRecord)
}

// NodesListener is an optional interface of a Listener: NodesChanged is
// called with the underlay (advertise) addresses of every live node, this
// one included, sorted, whenever that set changes, and once after the
// first listing. In apply it comes after the removal of peers and before
// the addition of new ones, so a new node's traffic is let in before its
// endpoints are programmed, and a gone node's after they were removed.
type NodesListener interface {
	NodesChanged(addrs []netip.Addr)
}

// Watcher follows the cluster's records and keeps a Listener in step. It
// survives store outages: the watch is resumed from the last revision seen
// (replaying what happened meanwhile), or rebuilt from a full listing when
// the store has compacted that history.
type Watcher struct {
	c  *Cluster
	l  Listener
	mu sync.Mutex
	// kvs are the current records under nodes/, networks/ and endpoints/.
	kvs     map[string]store.KV
	lastRev int64
	// applied is what the listener has been told; amu guards it (apply
	// holds it while telling the listener).
	amu    sync.Mutex
	nets   map[string]NetworkRecord
	peers  map[string]EndpointRecord
	nodes  []netip.Addr // told to a NodesListener; nil before the first time
	synced chan struct{}
	// rejected: key -> revision of records refused by the checks of
	// validate.go, so each bad version is logged once (guarded by mu).
	rejected map[string]int64
}

// NewWatcher returns a watcher for c reporting to l; Run starts it.
func NewWatcher(c *Cluster, l Listener) *Watcher {
	return &Watcher{c: c, l: l, kvs: map[string]store.KV{}, nets: map[string]NetworkRecord{},
		peers: map[string]EndpointRecord{}, synced: make(chan struct{})}
}

// Synced is closed after the first complete listing was applied.
func (w *Watcher) Synced() <-chan struct{} { return w.synced }

// Run follows the store until ctx is done.
func (w *Watcher) Run(ctx context.Context) {
	resync := true
	for ctx.Err() == nil {
		var err error
		if resync {
			err = w.resync(ctx)
		} else {
			err = w.follow(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, store.ErrCompacted):
			w.c.log.Info("cluster watch: history compacted, listing again")
			resync = true
			continue
		case err != nil:
			w.c.log.Warn("cluster watch interrupted; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryAfterError):
			}
		}
		// A watch that ended without an error (channel closed: overflow or
		// a store restart) resumes from the last revision.
		w.mu.Lock()
		resync = w.lastRev == 0
		w.mu.Unlock()
	}
}

// resync starts a watch from now, lists everything, and applies the listing
// as the new truth; then it follows the watch.
func (w *Watcher) resync(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := w.c.st.Watch(wctx, prefix, 0)
	if err != nil {
		return err
	}
	fresh := map[string]store.KV{}
	var maxRev int64
	for _, p := range []string{keyNodes, keyNetworks, keyEndpoints} {
		kvs, err := w.c.st.List(ctx, p)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			fresh[kv.Key] = kv
			maxRev = max(maxRev, kv.Revision)
		}
	}
	if al := w.c.allocator(); al != nil {
		// sticky addresses, for attaches (advisory: an error is ignored)
		if kvs, err := w.c.st.List(ctx, keySticky); err == nil {
			for _, kv := range kvs {
				al.observe(store.Event{Type: store.EventPut, KV: kv})
			}
		}
	}
	w.mu.Lock()
	w.kvs = fresh
	w.lastRev = max(w.lastRev, maxRev)
	w.mu.Unlock()
	w.apply()
	select {
	case <-w.synced:
	default:
		close(w.synced)
	}
	return w.drain(ctx, ch)
}

// follow resumes the watch after the last revision seen.
func (w *Watcher) follow(ctx context.Context) error {
	w.mu.Lock()
	rev := w.lastRev
	w.mu.Unlock()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := w.c.st.Watch(wctx, prefix, rev)
	if err != nil {
		return err
	}
	return w.drain(ctx, ch)
}

// drain applies events until the channel closes. Events of one revision
// are applied together.
func (w *Watcher) drain(ctx context.Context, ch <-chan store.Event) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-ch:
			if !ok {
				return nil
			}
			changed := w.record(ev)
			// take whatever else is already queued before telling the listener
			for more := true; more; {
				select {
				case ev, ok := <-ch:
					if !ok {
						if changed {
							w.apply()
						}
						return nil
					}
					changed = w.record(ev) || changed
				default:
					more = false
				}
			}
			if changed {
				w.apply()
			}
		}
	}
}

func relevant(key string) bool {
	return strings.HasPrefix(key, keyNodes) || strings.HasPrefix(key, keyNetworks) || strings.HasPrefix(key, keyEndpoints)
}

// record folds one event into kvs; an event not newer than what is known of
// its key (a replay after a resync) is ignored.
func (w *Watcher) record(ev store.Event) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastRev = max(w.lastRev, ev.KV.Revision)
	if !relevant(ev.KV.Key) {
		if al := w.c.allocator(); al != nil {
			al.observe(ev) // address claims and sticky addresses (blocks.go)
		}
		return false
	}
	cur, known := w.kvs[ev.KV.Key]
	if known && ev.KV.Revision <= cur.Revision {
		return false
	}
	switch ev.Type {
	case store.EventPut:
		w.kvs[ev.KV.Key] = ev.KV
	case store.EventDelete:
		if !known {
			return false
		}
		delete(w.kvs, ev.KV.Key)
	}
	return true
}

// desired computes, from kvs, the networks, the live remote endpoints and
// the live nodes' addresses (nodeAddrs).
func (w *Watcher) desired() (map[string]NetworkRecord, map[string]EndpointRecord, []netip.Addr) {
	w.mu.Lock()
	defer w.mu.Unlock()
	nodes := map[string]netip.Addr{} // live node ID -> advertised address (invalid if unreadable)
	nets := map[string]NetworkRecord{}
	var eps []store.KV
	for k, kv := range w.kvs {
		switch {
		case strings.HasPrefix(k, keyNodes):
			var n Node
			if json.Unmarshal(kv.Value, &n) != nil {
				n.Addr = netip.Addr{} // a half-decoded record is not trusted
			}
			nodes[strings.TrimPrefix(k, keyNodes)] = n.Addr
		case strings.HasPrefix(k, keyNetworks):
			var n NetworkRecord
			if w.check(kv, json.Unmarshal(kv.Value, &n), func() error { return checkKey(k, keyNetworks+n.ID, checkNetworkRecord(n)) }) {
				nets[n.ID] = n
			}
		case strings.HasPrefix(k, keyEndpoints):
			eps = append(eps, kv)
		}
	}
	peers := map[string]EndpointRecord{}
	for _, kv := range eps {
		var ep EndpointRecord
		if json.Unmarshal(kv.Value, &ep) != nil {
			continue
		}
		addr, live := nodes[ep.Node]
		n, ok := nets[ep.NetworkID]
		if ep.Node == w.c.self.ID || !live || !ok {
			continue
		}
		if w.check(kv, nil, func() error {
			return checkKey(kv.Key, endpointKey(ep.NetworkID, ep.ID), checkEndpointRecord(n, ep, addr))
		}) {
			peers[ep.ID] = ep
		}
	}
	return nets, peers, nodeAddrs(nodes)
}

// nodeAddrs are the valid addresses of nodes (node ID -> address), sorted,
// each once.
func nodeAddrs(nodes map[string]netip.Addr) []netip.Addr {
	out := []netip.Addr{}
	for _, a := range nodes {
		if a.IsValid() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// check is true when a record decoded (decodeErr nil) and passes valid; a
// record that decodes but fails is logged once per revision. Called with
// w.mu held.
func (w *Watcher) check(kv store.KV, decodeErr error, valid func() error) bool {
	if decodeErr != nil {
		return false
	}
	err := valid()
	if err == nil {
		return true
	}
	if w.rejected == nil {
		w.rejected = map[string]int64{}
	}
	if w.rejected[kv.Key] != kv.Revision || kv.Revision == 0 {
		w.rejected[kv.Key] = kv.Revision
		w.c.log.Warn("cluster store: ignoring a record the kernel must not be programmed with", "key", kv.Key, "revision", kv.Revision, "err", err)
	}
	return false
}

// checkKey refuses a record stored under another key than its own IDs give
// (it could stand in for another network or endpoint), else returns err.
func checkKey(key, want string, err error) error {
	if key != want {
		return fmt.Errorf("record under %q names itself %q", key, want)
	}
	return err
}

// apply tells the listener the difference between what it was told and
// what the records now say.
func (w *Watcher) apply() {
	nets, peers, nodes := w.desired()
	w.amu.Lock()
	defer w.amu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(w.peers)) {
		old := w.peers[id]
		if cur, ok := peers[id]; !ok || !samePeer(old, cur) {
			w.l.PeerRemoved(old)
			delete(w.peers, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(w.nets)) {
		if _, ok := nets[id]; !ok {
			w.l.NetworkRemoved(w.nets[id])
			delete(w.nets, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(nets)) {
		if old, ok := w.nets[id]; !ok || !sameNetwork(old, nets[id]) {
			w.l.NetworkAdded(nets[id])
			w.nets[id] = nets[id]
		}
	}
	if nl, ok := w.l.(NodesListener); ok && (w.nodes == nil || !slices.Equal(w.nodes, nodes)) {
		nl.NodesChanged(slices.Clone(nodes))
		w.nodes = nodes
	}
	for _, id := range slices.Sorted(maps.Keys(peers)) {
		if _, ok := w.peers[id]; !ok {
			w.l.PeerAdded(peers[id])
			w.peers[id] = peers[id]
		}
	}
}

func samePeer(a, b EndpointRecord) bool {
	return a.Address == b.Address && a.Address6 == b.Address6 && a.MAC == b.MAC && a.VTEP == b.VTEP && a.SandboxName == b.SandboxName &&
		slices.Equal(a.Aliases, b.Aliases) && a.NetworkID == b.NetworkID
}

func sameNetwork(a, b NetworkRecord) bool {
	return a.Name == b.Name && a.VNI == b.VNI && a.Subnet == b.Subnet && a.Gateway == b.Gateway &&
		a.Subnet6 == b.Subnet6 && a.Gateway6 == b.Gateway6 && a.Internal == b.Internal
}

// Endpoints returns every endpoint of a network known to the watcher (all
// nodes, live or not) and the live nodes, for inspect.
func (w *Watcher) Endpoints(netID string) ([]EndpointRecord, map[string]Node) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var eps []EndpointRecord
	nodes := map[string]Node{}
	for k, kv := range w.kvs {
		switch {
		case strings.HasPrefix(k, keyEndpoints+netID+"/"):
			var ep EndpointRecord
			if json.Unmarshal(kv.Value, &ep) == nil {
				eps = append(eps, ep)
			}
		case strings.HasPrefix(k, keyNodes):
			var n Node
			if json.Unmarshal(kv.Value, &n) == nil {
				nodes[n.ID] = n
			}
		}
	}
	slices.SortFunc(eps, func(a, b EndpointRecord) int { return strings.Compare(a.ID, b.ID) })
	return eps, nodes
}

// Locked runs fn with the networks and the live remote endpoints the
// listener has been told of, while no listener call can run: a caller that
// reconciles the datapath against them cannot race an addition.
func (w *Watcher) Locked(fn func(nets []NetworkRecord, peers []EndpointRecord)) {
	w.amu.Lock()
	defer w.amu.Unlock()
	fn(slices.Collect(maps.Values(w.nets)), slices.Collect(maps.Values(w.peers)))
}
