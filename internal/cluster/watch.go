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
//
// It is incremental: a record is decoded once, when its event arrives, and
// kept decoded (not as the raw value); apply re-evaluates only the
// endpoints whose records changed since the last apply, a changed node's
// endpoints (indexed by node), and, when a network changed (rare: its
// creation or removal), that network's. The cost of one endpoint change
// on every host is one decode and one comparison, whatever the cluster's
// size.
type Watcher struct {
	c  *Cluster
	l  Listener
	mu sync.Mutex
	// The current records under nodes/, networks/ and endpoints/, decoded,
	// by what follows the prefix in their keys (node ID, network ID, and
	// network and endpoint ID).
	nodes map[string]*nodeEntry
	nets  map[string]*netEntry
	eps   map[epKey]*epEntry
	// byNode: the endpoint records naming each node (by node ID), so a
	// node's change evaluates its endpoints only.
	byNode  map[string]map[epKey]struct{}
	lastRev int64
	// What changed since the last apply: endpoint keys, node IDs (their
	// endpoints are evaluated again), network IDs (theirs too), or
	// everything (a resync).
	dirty        map[epKey]struct{}
	dirtyNodes   map[string]struct{}
	dirtyNets    map[string]struct{}
	dirtyAll     bool
	validNets    map[string]NetworkRecord // the valid networks, as of the last apply
	liveNodeAddr []netip.Addr
	// intern keeps one copy of the strings many records repeat (network
	// and node IDs, node names).
	intern map[string]string
	// applied is what the listener has been told; amu guards it (apply
	// holds it while telling the listener).
	amu    sync.Mutex
	told   map[string]NetworkRecord
	peers  map[string]*EndpointRecord // by endpoint ID
	tnodes []netip.Addr               // told to a NodesListener; nil before the first time
	synced chan struct{}
	// rejected: key -> revision of records refused by the checks of
	// validate.go, so each bad version is logged once (guarded by mu).
	rejected map[string]int64
}

type nodeEntry struct {
	rev  int64
	node Node
	ok   bool // decoded; an undecodable record still makes its node live, with no address
}

type netEntry struct {
	rev int64
	rec NetworkRecord
	ok  bool // decoded
}

// epKey names an endpoint record: its key is endpoints/<net>/<id>. The
// strings are the record's own (interned network ID, endpoint ID) when the
// record names itself by its key, so the key costs no memory of its own.
type epKey struct{ net, id string }

func (k epKey) String() string { return keyEndpoints + k.net + "/" + k.id }

// parseEpKey splits the part of an endpoint key after keyEndpoints (the
// strings share the key's memory).
func parseEpKey(rest string) epKey {
	net, id, _ := strings.Cut(rest, "/")
	return epKey{net, id}
}

type epEntry struct {
	rev int64
	rec EndpointRecord
	ok  bool // decoded
}

// NewWatcher returns a watcher for c reporting to l; Run starts it.
func NewWatcher(c *Cluster, l Listener) *Watcher {
	w := &Watcher{c: c, l: l, told: map[string]NetworkRecord{}, peers: map[string]*EndpointRecord{}, synced: make(chan struct{})}
	w.reset()
	return w
}

// reset forgets every record (a full listing follows) and marks
// everything to be evaluated again. Called with mu held or before the
// watcher runs.
func (w *Watcher) reset() {
	w.nodes, w.nets, w.eps = map[string]*nodeEntry{}, map[string]*netEntry{}, map[epKey]*epEntry{}
	w.byNode = map[string]map[epKey]struct{}{}
	w.dirty, w.dirtyNodes, w.dirtyNets, w.dirtyAll = map[epKey]struct{}{}, map[string]struct{}{}, map[string]struct{}{}, true
	w.intern = map[string]string{}
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
	var fresh []store.KV
	for _, p := range []string{keyNodes, keyNetworks, keyEndpoints} {
		kvs, err := w.c.st.List(ctx, p)
		if err != nil {
			return err
		}
		fresh = append(fresh, kvs...)
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
	w.reset()
	for _, kv := range fresh {
		w.lastRev = max(w.lastRev, kv.Revision)
		w.put(kv)
	}
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

// record folds one event into the decoded records; an event not newer
// than what is known of its key (a replay after a resync) is ignored. It
// reports whether the listener may have something to learn.
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
	rev, known := w.revOf(ev.KV.Key)
	if known && ev.KV.Revision <= rev {
		return false
	}
	switch ev.Type {
	case store.EventPut:
		w.put(ev.KV)
	case store.EventDelete:
		if !known {
			return false
		}
		w.del(ev.KV.Key)
	}
	return true
}

// revOf is the revision of the record under key, if one is known. Called
// with mu held.
func (w *Watcher) revOf(key string) (int64, bool) {
	switch {
	case strings.HasPrefix(key, keyNodes):
		if e := w.nodes[key[len(keyNodes):]]; e != nil {
			return e.rev, true
		}
	case strings.HasPrefix(key, keyNetworks):
		if e := w.nets[key[len(keyNetworks):]]; e != nil {
			return e.rev, true
		}
	case strings.HasPrefix(key, keyEndpoints):
		if e := w.eps[parseEpKey(key[len(keyEndpoints):])]; e != nil {
			return e.rev, true
		}
	}
	return 0, false
}

// put decodes a record and keeps it, marking what it changes. Called with
// mu held.
func (w *Watcher) put(kv store.KV) {
	switch k := kv.Key; {
	case strings.HasPrefix(k, keyNodes):
		e := &nodeEntry{rev: kv.Revision}
		e.ok = json.Unmarshal(kv.Value, &e.node) == nil
		if !e.ok {
			e.node = Node{} // a half-decoded record is not trusted
		}
		e.node.ID, e.node.Name = w.interned(e.node.ID), w.interned(e.node.Name)
		id := strings.Clone(k[len(keyNodes):])
		w.nodes[id] = e
		w.dirtyNodes[id] = struct{}{}
	case strings.HasPrefix(k, keyNetworks):
		e := &netEntry{rev: kv.Revision}
		e.ok = json.Unmarshal(kv.Value, &e.rec) == nil
		e.rec.ID = w.interned(e.rec.ID)
		id := strings.Clone(k[len(keyNetworks):])
		w.nets[id] = e
		w.dirtyNets[id] = struct{}{}
	case strings.HasPrefix(k, keyEndpoints):
		e := &epEntry{rev: kv.Revision}
		e.ok = json.Unmarshal(kv.Value, &e.rec) == nil
		r := &e.rec
		r.NetworkID, r.Node, r.NodeName = w.interned(r.NetworkID), w.interned(r.Node), w.interned(r.NodeName)
		id := parseEpKey(k[len(keyEndpoints):])
		if id.net == r.NetworkID && id.id == r.ID {
			id = epKey{r.NetworkID, r.ID} // the record's strings: the event's key is not kept
		} else {
			id = epKey{w.interned(strings.Clone(id.net)), strings.Clone(id.id)}
		}
		w.unindex(id)
		w.eps[id] = e
		set := w.byNode[r.Node]
		if set == nil {
			set = map[epKey]struct{}{}
			w.byNode[r.Node] = set
		}
		set[id] = struct{}{}
		w.dirty[id] = struct{}{}
	}
}

// del forgets the record under key, marking what it changes. Called with
// mu held.
func (w *Watcher) del(key string) {
	switch {
	case strings.HasPrefix(key, keyNodes):
		id := key[len(keyNodes):]
		delete(w.nodes, id)
		w.dirtyNodes[strings.Clone(id)] = struct{}{}
	case strings.HasPrefix(key, keyNetworks):
		id := key[len(keyNetworks):]
		delete(w.nets, id)
		w.dirtyNets[strings.Clone(id)] = struct{}{}
	case strings.HasPrefix(key, keyEndpoints):
		id := parseEpKey(key[len(keyEndpoints):])
		w.unindex(id)
		delete(w.eps, id)
		w.dirty[epKey{strings.Clone(id.net), strings.Clone(id.id)}] = struct{}{}
	}
}

// unindex takes the record under id (if any) out of byNode. Called with
// mu held.
func (w *Watcher) unindex(id epKey) {
	old := w.eps[id]
	if old == nil {
		return
	}
	if set := w.byNode[old.rec.Node]; set != nil {
		delete(set, id)
		if len(set) == 0 {
			delete(w.byNode, old.rec.Node)
		}
	}
}

// interned returns the kept copy of s (network and node IDs and names
// repeat in every endpoint record). Called with mu held.
func (w *Watcher) interned(s string) string {
	if s == "" {
		return ""
	}
	if c, ok := w.intern[s]; ok {
		return c
	}
	w.intern[s] = s
	return s
}

// refresh recomputes, when a node or a network changed, the valid
// networks and the live nodes' addresses, and drops interned strings no
// record uses any more. Called with mu held.
func (w *Watcher) refresh() {
	if w.dirtyAll || len(w.dirtyNets) > 0 {
		w.validNets = map[string]NetworkRecord{}
		for k, e := range w.nets {
			if !e.ok {
				continue
			}
			n := e.rec
			if w.check(keyNetworks+k, e.rev, checkKey(keyNetworks+k, keyNetworks+n.ID, checkNetworkRecord(n))) {
				w.validNets[n.ID] = n
			}
		}
	}
	if w.dirtyAll || len(w.dirtyNodes) > 0 {
		addrs := make([]netip.Addr, 0, len(w.nodes))
		for _, e := range w.nodes {
			if e.node.Addr.IsValid() {
				addrs = append(addrs, e.node.Addr)
			}
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		w.liveNodeAddr = slices.Compact(addrs)
	}
	if (len(w.dirtyNodes) > 0 || len(w.dirtyNets) > 0) && len(w.intern) > 2*(len(w.nodes)*2+len(w.nets))+64 {
		w.intern = map[string]string{} // rebuilt by later records; old copies stay valid
	}
}

// desiredPeer is what the listener should have for the endpoint under
// key: its record when it is a valid endpoint of another live node on a
// valid network. Called with mu held.
func (w *Watcher) desiredPeer(key epKey) (*EndpointRecord, bool) {
	e := w.eps[key]
	if e == nil || !e.ok {
		return nil, false
	}
	ep := &e.rec
	node, live := w.nodes[ep.Node]
	n, ok := w.validNets[ep.NetworkID]
	if ep.Node == w.c.self.ID || !live || !ok {
		return nil, false
	}
	err := checkEndpointRecord(n, *ep, node.node.Addr)
	if key.net != ep.NetworkID || key.id != ep.ID {
		err = checkKey(key.String(), endpointKey(ep.NetworkID, ep.ID), err)
	}
	if err != nil && !w.check(key.String(), e.rev, err) {
		return nil, false
	}
	return ep, true
}

// check is true when a decoded record passed its checks (err nil); one
// that failed is logged once per revision. Called with mu held.
func (w *Watcher) check(key string, rev int64, err error) bool {
	if err == nil {
		return true
	}
	if w.rejected == nil {
		w.rejected = map[string]int64{}
	}
	if w.rejected[key] != rev || rev == 0 {
		w.rejected[key] = rev
		w.c.log.Warn("cluster store: ignoring a record the kernel must not be programmed with", "key", key, "revision", rev, "err", err)
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
// what the records now say: for the endpoints whose records changed, or
// for all of them when a node or a network changed.
func (w *Watcher) apply() {
	w.amu.Lock()
	defer w.amu.Unlock()
	w.mu.Lock()
	nodesChanged := w.dirtyAll || len(w.dirtyNodes) > 0
	netsChanged := w.dirtyAll || len(w.dirtyNets) > 0
	w.refresh()
	keys := slices.Collect(maps.Keys(w.dirty))
	switch {
	case w.dirtyAll:
		// a resync: every record, and told peers whose records are gone
		for k := range w.eps {
			keys = append(keys, k)
		}
		for _, p := range w.peers {
			keys = append(keys, epKey{p.NetworkID, p.ID})
		}
	default:
		// The endpoints of a changed node (its index) or network (rare: a
		// scan). A told peer's record is the one its key holds, or its key
		// changed since the last apply and is among the dirty ones.
		for node := range w.dirtyNodes {
			for k := range w.byNode[node] {
				keys = append(keys, k)
			}
		}
		if len(w.dirtyNets) > 0 {
			for k, e := range w.eps {
				if _, ok := w.dirtyNets[e.rec.NetworkID]; ok {
					keys = append(keys, k)
				}
			}
		}
	}
	want := make(map[string]*EndpointRecord, len(keys))
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		if ep, ok := w.desiredPeer(k); ok {
			want[ep.ID] = ep
		}
		ids = append(ids, k.id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	nets, nodes := w.validNets, w.liveNodeAddr
	clear(w.dirty)
	clear(w.dirtyNodes)
	clear(w.dirtyNets)
	w.dirtyAll = false
	w.mu.Unlock()

	for _, id := range ids {
		old, told := w.peers[id]
		if !told {
			continue
		}
		if cur, ok := want[id]; !ok || !samePeer(*old, *cur) {
			w.l.PeerRemoved(*old)
			delete(w.peers, id)
		}
	}
	if netsChanged {
		for _, id := range slices.Sorted(maps.Keys(w.told)) {
			if _, ok := nets[id]; !ok {
				w.l.NetworkRemoved(w.told[id])
				delete(w.told, id)
			}
		}
		for _, id := range slices.Sorted(maps.Keys(nets)) {
			if old, ok := w.told[id]; !ok || !sameNetwork(old, nets[id]) {
				w.l.NetworkAdded(nets[id])
				w.told[id] = nets[id]
			}
		}
	}
	if nl, ok := w.l.(NodesListener); ok && nodesChanged && (w.tnodes == nil || !slices.Equal(w.tnodes, nodes)) {
		nl.NodesChanged(slices.Clone(nodes))
		w.tnodes = nodes
	}
	for _, id := range ids {
		if ep, ok := want[id]; ok {
			if _, told := w.peers[id]; !told {
				w.l.PeerAdded(*ep)
				w.peers[id] = ep
			}
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
	for k, e := range w.eps {
		if e.ok && k.net == netID {
			eps = append(eps, e.rec)
		}
	}
	nodes := map[string]Node{}
	for _, e := range w.nodes {
		if e.ok {
			nodes[e.node.ID] = e.node
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
	peers := make([]EndpointRecord, 0, len(w.peers))
	for _, p := range w.peers {
		peers = append(peers, *p)
	}
	fn(slices.Collect(maps.Values(w.told)), peers)
}
