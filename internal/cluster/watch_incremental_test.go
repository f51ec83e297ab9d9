package cluster

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/store"
)

// The watcher applies changes incrementally (only the endpoints whose
// records changed are evaluated again, all of them when a node or a
// network changed). These tests hold it to what a watcher that evaluates
// everything from the raw records would tell the listener, over random
// sequences of puts, deletes, replays, hostile values and resyncs.

// stateListener keeps what it was told and fails on calls out of order.
type stateListener struct {
	t     testing.TB
	nets  map[string]NetworkRecord
	peers map[string]EndpointRecord
	nodes []netip.Addr
	calls int
}

func newStateListener(t testing.TB) *stateListener {
	return &stateListener{t: t, nets: map[string]NetworkRecord{}, peers: map[string]EndpointRecord{}}
}

func (l *stateListener) NetworkAdded(n NetworkRecord) { l.calls++; l.nets[n.ID] = n }
func (l *stateListener) NetworkRemoved(n NetworkRecord) {
	l.calls++
	for _, p := range l.peers {
		if p.NetworkID == n.ID {
			l.t.Errorf("network %s removed while its peer %s is still programmed", n.ID, p.ID)
		}
	}
	if _, ok := l.nets[n.ID]; !ok {
		l.t.Errorf("network %s removed but never added", n.ID)
	}
	delete(l.nets, n.ID)
}

func (l *stateListener) PeerAdded(ep EndpointRecord) {
	l.calls++
	if _, ok := l.peers[ep.ID]; ok {
		l.t.Errorf("peer %s added twice", ep.ID)
	}
	if _, ok := l.nets[ep.NetworkID]; !ok {
		l.t.Errorf("peer %s added before its network %s", ep.ID, ep.NetworkID)
	}
	l.peers[ep.ID] = ep
}

func (l *stateListener) PeerRemoved(ep EndpointRecord) {
	l.calls++
	if _, ok := l.peers[ep.ID]; !ok {
		l.t.Errorf("peer %s removed but never added", ep.ID)
	}
	delete(l.peers, ep.ID)
}

func (l *stateListener) NodesChanged(a []netip.Addr) { l.calls++; l.nodes = a }

// reference is what a watcher evaluating every raw record from scratch
// tells the listener: the valid networks, the valid endpoints of other
// live nodes on them, and the live nodes' addresses.
func reference(self string, kvs map[string]store.KV) (map[string]NetworkRecord, map[string]EndpointRecord, []netip.Addr) {
	nodes := map[string]netip.Addr{}
	nets := map[string]NetworkRecord{}
	for k, kv := range kvs {
		switch {
		case strings.HasPrefix(k, keyNodes):
			var n Node
			if json.Unmarshal(kv.Value, &n) != nil {
				n.Addr = netip.Addr{}
			}
			nodes[strings.TrimPrefix(k, keyNodes)] = n.Addr
		case strings.HasPrefix(k, keyNetworks):
			var n NetworkRecord
			if json.Unmarshal(kv.Value, &n) == nil && k == keyNetworks+n.ID && checkNetworkRecord(n) == nil {
				nets[n.ID] = n
			}
		}
	}
	peers := map[string]EndpointRecord{}
	for k, kv := range kvs {
		if !strings.HasPrefix(k, keyEndpoints) {
			continue
		}
		var ep EndpointRecord
		if json.Unmarshal(kv.Value, &ep) != nil {
			continue
		}
		addr, live := nodes[ep.Node]
		n, ok := nets[ep.NetworkID]
		if ep.Node == self || !live || !ok || k != endpointKey(ep.NetworkID, ep.ID) || checkEndpointRecord(n, ep, addr) != nil {
			continue
		}
		peers[ep.ID] = ep
	}
	return nets, peers, nodeAddrs(nodes)
}

// world makes random records from a small universe: 4 nodes (one of them
// self), 3 networks, 30 endpoints, with hostile variants.
type world struct {
	r   *rand.Rand
	rev int64
	kvs map[string]store.KV
}

func (w *world) node(i int) (string, []byte) {
	id := fmt.Sprintf("n%d", i)
	if i == 0 {
		id = "self"
	}
	switch w.r.IntN(8) {
	case 0:
		return id, []byte("{not json")
	case 1: // moved address
		return id, fmt.Appendf(nil, `{"id":%q,"name":"h%d","addr":"198.18.1.%d","port":2376}`, id, i, i+1)
	default:
		return id, fmt.Appendf(nil, `{"id":%q,"name":"h%d","addr":"198.18.0.%d","port":2376}`, id, i, i+1)
	}
}

func (w *world) network(i int) (string, []byte) {
	id := fmt.Sprintf("net%d", i)
	switch w.r.IntN(8) {
	case 0:
		return id, fmt.Appendf(nil, `{"id":%q,"name":"ov%d","vni":0,"subnet":"10.%d.0.0/24","gateway":"10.%d.0.1"}`, id, i, i, i) // bad VNI
	case 1:
		return id, fmt.Appendf(nil, `{"id":"other","name":"ov%d","vni":%d,"subnet":"10.%d.0.0/24","gateway":"10.%d.0.1"}`, i, 4096+i, i, i) // another key's
	case 2: // renamed: a changed network
		return id, fmt.Appendf(nil, `{"id":%q,"name":"renamed%d","vni":%d,"subnet":"10.%d.0.0/24","gateway":"10.%d.0.1"}`, id, i, 4096+i, i, i)
	default:
		return id, fmt.Appendf(nil, `{"id":%q,"name":"ov%d","vni":%d,"subnet":"10.%d.0.0/24","gateway":"10.%d.0.1"}`, id, i, 4096+i, i, i)
	}
}

func (w *world) endpoint(i int) (string, []byte) {
	net, node := i%3, i%4
	nodeID := fmt.Sprintf("n%d", node)
	if node == 0 {
		nodeID = "self"
	}
	id := fmt.Sprintf("ep%02d", i)
	key := fmt.Sprintf("net%d/%s", net, id)
	host := 2 + i
	mac := fmt.Sprintf("02:42:0a:%02x:00:%02x", net, host)
	vtep := fmt.Sprintf("198.18.0.%d", node+1)
	switch w.r.IntN(10) {
	case 0:
		return key, []byte(`[]`)
	case 1: // names another key
		return key, fmt.Appendf(nil, `{"id":"ep99","networkId":"net%d","node":%q,"vtep":%q,"sandboxName":"s%d","address":"10.%d.0.%d/24","mac":%q}`, net, nodeID, vtep, i, net, host, mac)
	case 2: // the gateway's address: refused
		return key, fmt.Appendf(nil, `{"id":%q,"networkId":"net%d","node":%q,"vtep":%q,"sandboxName":"s%d","address":"10.%d.0.1/24","mac":%q}`, id, net, nodeID, vtep, i, net, mac)
	case 3: // renamed: a changed peer
		return key, fmt.Appendf(nil, `{"id":%q,"networkId":"net%d","node":%q,"vtep":%q,"sandboxName":"renamed%d","address":"10.%d.0.%d/24","mac":%q}`, id, net, nodeID, vtep, i, net, host, mac)
	default:
		return key, fmt.Appendf(nil, `{"id":%q,"networkId":"net%d","node":%q,"vtep":%q,"sandboxName":"s%d","address":"10.%d.0.%d/24","mac":%q}`, id, net, nodeID, vtep, i, net, host, mac)
	}
}

// step returns one random event and folds it into the world.
func (w *world) step() store.Event {
	w.rev++
	var key string
	var val []byte
	switch k := w.r.IntN(10); {
	case k == 0:
		id, v := w.node(w.r.IntN(4))
		key, val = keyNodes+id, v
	case k == 1:
		id, v := w.network(w.r.IntN(3))
		key, val = keyNetworks+id, v
	default:
		id, v := w.endpoint(w.r.IntN(30))
		key, val = keyEndpoints+id, v
	}
	if w.r.IntN(4) == 0 {
		delete(w.kvs, key)
		return store.Event{Type: store.EventDelete, KV: store.KV{Key: key, Revision: w.rev}}
	}
	kv := store.KV{Key: key, Value: val, Revision: w.rev}
	w.kvs[key] = kv
	return store.Event{Type: store.EventPut, KV: kv}
}

func checkAgainstReference(t *testing.T, l *stateListener, kvs map[string]store.KV, when string) {
	t.Helper()
	nets, peers, nodes := reference("self", kvs)
	if !maps.EqualFunc(l.nets, nets, sameNetwork) {
		t.Fatalf("%s: networks told %v, want %v", when, slices.Sorted(maps.Keys(l.nets)), slices.Sorted(maps.Keys(nets)))
	}
	if !maps.EqualFunc(l.peers, peers, samePeer) {
		t.Fatalf("%s: peers told %v, want %v", when, slices.Sorted(maps.Keys(l.peers)), slices.Sorted(maps.Keys(peers)))
	}
	if !slices.Equal(l.nodes, nodes) {
		t.Fatalf("%s: nodes told %v, want %v", when, l.nodes, nodes)
	}
}

func TestWatcherIncrementalMatchesReference(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			wd := &world{r: rand.New(rand.NewPCG(seed, 21)), kvs: map[string]store.KV{}}
			c := &Cluster{self: Node{ID: "self", Addr: netip.MustParseAddr("198.18.0.1")}, log: slog.New(slog.DiscardHandler)}
			l := newStateListener(t)
			w := NewWatcher(c, l)
			var seen []store.Event
			for round := range 300 {
				for range 1 + wd.r.IntN(6) {
					ev := wd.step()
					seen = append(seen, ev)
					w.record(ev)
				}
				if wd.r.IntN(5) == 0 && len(seen) > 0 {
					// an older event of a key that exists (as a resync's
					// watch, started before its listing, delivers): ignored
					ev := seen[wd.r.IntN(len(seen))]
					if cur, ok := wd.kvs[ev.KV.Key]; ok && cur.Revision >= ev.KV.Revision {
						w.record(ev)
					}
				}
				if wd.r.IntN(40) == 0 { // a resync from a full listing
					w.mu.Lock()
					w.reset()
					for _, kv := range wd.kvs {
						w.lastRev = max(w.lastRev, kv.Revision)
						w.put(kv)
					}
					w.mu.Unlock()
				}
				w.apply()
				checkAgainstReference(t, l, wd.kvs, fmt.Sprintf("round %d", round))
			}
		})
	}
}

// An endpoint change among many records tells the listener exactly that
// change, and evaluates only it.
func TestWatcherEndpointChangeIsLocal(t *testing.T) {
	c := &Cluster{self: Node{ID: "self", Addr: netip.MustParseAddr("198.18.0.1")}, log: slog.New(slog.DiscardHandler)}
	l := newStateListener(t)
	w := NewWatcher(c, l)
	rev := int64(0)
	put := func(key, val string) {
		rev++
		w.record(store.Event{Type: store.EventPut, KV: store.KV{Key: key, Value: []byte(val), Revision: rev}})
	}
	put(keyNodes+"n1", `{"id":"n1","addr":"198.18.0.2"}`)
	put(keyNetworks+"net", `{"id":"net","name":"ov","vni":4096,"subnet":"10.9.0.0/16","gateway":"10.9.0.1"}`)
	ep := func(i int) (string, string) {
		id := fmt.Sprintf("ep%04d", i)
		return keyEndpoints + "net/" + id, fmt.Sprintf(`{"id":%q,"networkId":"net","node":"n1","vtep":"198.18.0.2","sandboxName":"s%d","address":"10.9.%d.%d/16","mac":"02:42:0a:09:%02x:%02x"}`,
			id, i, i/250, 2+i%250, i/250, 2+i%250)
	}
	for i := range 1000 {
		put(ep(i))
	}
	w.apply()
	if len(l.peers) != 1000 {
		t.Fatalf("%d peers told, want 1000", len(l.peers))
	}
	l.calls = 0
	put(ep(1000))
	w.mu.Lock()
	dirty := len(w.dirty)
	w.mu.Unlock()
	w.apply()
	if dirty != 1 || l.calls != 1 || len(l.peers) != 1001 {
		t.Fatalf("one new endpoint: %d keys to evaluate, %d listener calls, %d peers; want 1, 1, 1001", dirty, l.calls, len(l.peers))
	}
	l.calls = 0
	rev++
	k, _ := ep(7)
	w.record(store.Event{Type: store.EventDelete, KV: store.KV{Key: k, Revision: rev}})
	w.apply()
	if _, ok := l.peers["ep0007"]; ok || l.calls != 1 {
		t.Fatalf("a withdrawn endpoint: %d listener calls, still told: %v; want 1 call, gone", l.calls, ok)
	}
}

// BenchmarkWatcherEndpointChange: the cost of one remote endpoint's record
// arriving (decode, evaluation, the listener told) with n records held;
// flat in n since the watcher is incremental.
//
//	go test ./internal/cluster -run '^$' -bench WatcherEndpointChange
func BenchmarkWatcherEndpointChange(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c := &Cluster{self: Node{ID: "self", Addr: netip.MustParseAddr("198.18.0.1")}, log: slog.New(slog.DiscardHandler)}
			w := NewWatcher(c, nopListener{})
			rev := int64(0)
			put := func(key string, val []byte) {
				rev++
				w.record(store.Event{Type: store.EventPut, KV: store.KV{Key: key, Value: val, Revision: rev}})
			}
			put(keyNodes+"n1", []byte(`{"id":"n1","addr":"198.18.0.2"}`))
			put(keyNetworks+"net", []byte(`{"id":"net","name":"ov","vni":4096,"subnet":"10.0.0.0/8","gateway":"10.0.0.1"}`))
			rec := func(i int) (string, []byte) {
				id := fmt.Sprintf("%064x", i)
				return keyEndpoints + "net/" + id, fmt.Appendf(nil, `{"id":%q,"networkId":"net","node":"n1","nodeName":"h1","vtep":"198.18.0.2","sandboxId":%q,"sandboxName":"s%d","address":"10.%d.%d.%d/8","mac":"02:42:0a:%02x:%02x:%02x","created":"2026-12-06T00:00:00Z"}`,
					id, id, i, i>>16&255, i>>8&255, 2+i&127, i>>16&255, i>>8&255, 2+i&127)
			}
			for i := range n {
				put(rec(i))
			}
			w.apply()
			vals := make([][]byte, b.N)
			keys := make([]string, b.N)
			for i := range b.N {
				keys[i], vals[i] = rec(n + i)
			}
			b.ResetTimer()
			for i := range b.N {
				put(keys[i], vals[i])
				w.apply()
			}
		})
	}
}

// BenchmarkWatcherHeldBytes reports the live heap the watcher holds per
// remote endpoint (its decoded record, the keys, the listener's view),
// 10 000 endpoints of realistic size (64-hex IDs, as the engine makes).
//
//	go test ./internal/cluster -run '^$' -bench WatcherHeldBytes -benchtime 1x
func BenchmarkWatcherHeldBytes(b *testing.B) {
	const n = 10000
	for range b.N {
		before := liveHeap()
		c := &Cluster{self: Node{ID: "self", Addr: netip.MustParseAddr("198.18.0.1")}, log: slog.New(slog.DiscardHandler)}
		netID, nodeID := fmt.Sprintf("%064x", 1<<60), fmt.Sprintf("%064x", 1<<61)
		kvs := make([]store.KV, 0, n+2)
		kvs = append(kvs, store.KV{Key: keyNodes + nodeID, Value: fmt.Appendf(nil, `{"id":%q,"name":"host-b","addr":"198.18.0.2"}`, nodeID), Revision: 1},
			store.KV{Key: keyNetworks + netID, Value: fmt.Appendf(nil, `{"id":%q,"name":"ov","vni":4096,"subnet":"10.0.0.0/8","gateway":"10.0.0.1"}`, netID), Revision: 2})
		for i := range n {
			id := fmt.Sprintf("%064x", i)
			kvs = append(kvs, store.KV{Key: keyEndpoints + netID + "/" + id, Revision: int64(3 + i), Value: fmt.Appendf(nil,
				`{"id":%q,"networkId":%q,"node":%q,"nodeName":"host-b","vtep":"198.18.0.2","sandboxId":"%064x","sandboxName":"web-%d","address":"10.%d.%d.%d/8","mac":"02:42:0a:%02x:%02x:%02x","created":"2026-12-06T00:00:00Z"}`,
				id, netID, nodeID, i+n, i, i>>16&255, i>>8&255, 2+i&127, i>>16&255, i>>8&255, 2+i&127)})
		}
		w := NewWatcher(c, nopListener{})
		for _, kv := range kvs {
			w.record(store.Event{Type: store.EventPut, KV: kv})
		}
		w.apply()
		kvs = nil // the values read from the store are not the watcher's
		after := liveHeap()
		if got := len(w.peers); got != n {
			b.Fatalf("%d peers, want %d", got, n)
		}
		b.ReportMetric(float64(after-before)/n, "B/endpoint")
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// nodeAddrs are the valid addresses of nodes (node ID -> address), sorted,
// each once: the reference's, apart from the watcher's own.
func nodeAddrs(nodes map[string]netip.Addr) []netip.Addr {
	out := []netip.Addr{}
	for _, a := range nodes {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
