package clustersim

import (
	"net/netip"
	"sync"
	"time"

	"github.com/tether-net/tether/internal/cluster"
)

// Entry is what the real overlay driver programs for one remote endpoint:
// an FDB entry (MAC -> VTEP) and a neighbour entry (address -> MAC) on the
// network's VXLAN device, and the endpoint's DNS name.
type Entry struct {
	Network string
	Node    string
	MAC     string
	VTEP    netip.Addr
	Address netip.Prefix
	Name    string
}

func entryOf(ep cluster.EndpointRecord) Entry {
	return Entry{Network: ep.NetworkID, Node: ep.Node, MAC: ep.MAC, VTEP: ep.VTEP, Address: ep.Address, Name: ep.SandboxName}
}

// Datapath is a fake overlay datapath: a cluster.Listener (and
// NodesListener) that records what the real one would program. Every
// addition, removal and network installed is reported to the agents'
// shared Tracker.
type Datapath struct {
	agent int
	tr    *Tracker

	mu       sync.Mutex
	networks map[string]cluster.NetworkRecord
	peers    map[string]Entry     // endpoint ID -> entry
	removed  map[string]time.Time // endpoint ID -> when its entry was removed
	nodes    []netip.Addr         // the VXLAN guard's live node addresses
	// Removals counts PeerRemoved calls; NodeChanges NodesChanged calls.
	Removals, NodeChanges int
}

var (
	_ cluster.Listener      = (*Datapath)(nil)
	_ cluster.NodesListener = (*Datapath)(nil)
)

// NewDatapath returns the fake datapath of agent i.
func NewDatapath(i int, tr *Tracker) *Datapath {
	return &Datapath{agent: i, tr: tr, networks: map[string]cluster.NetworkRecord{}, peers: map[string]Entry{}, removed: map[string]time.Time{}}
}

// NetworkAdded installs a network (a bridge and a VXLAN device).
func (d *Datapath) NetworkAdded(n cluster.NetworkRecord) {
	d.mu.Lock()
	d.networks[n.ID] = n
	d.mu.Unlock()
	d.tr.network(d.agent, n.ID, time.Now())
}

// NetworkRemoved removes a network's devices.
func (d *Datapath) NetworkRemoved(n cluster.NetworkRecord) {
	d.mu.Lock()
	delete(d.networks, n.ID)
	d.mu.Unlock()
}

// PeerAdded programs a remote endpoint.
func (d *Datapath) PeerAdded(ep cluster.EndpointRecord) {
	now := time.Now()
	d.mu.Lock()
	d.peers[ep.ID] = entryOf(ep)
	delete(d.removed, ep.ID)
	d.mu.Unlock()
	d.tr.seen(d.agent, ep.ID, now)
}

// PeerRemoved removes a remote endpoint's entries.
func (d *Datapath) PeerRemoved(ep cluster.EndpointRecord) {
	now := time.Now()
	d.mu.Lock()
	delete(d.peers, ep.ID)
	d.removed[ep.ID] = now
	d.Removals++
	d.mu.Unlock()
	d.tr.removed(d.agent, ep.ID, now)
}

// NodesChanged sets the live nodes' addresses (the VXLAN guard).
func (d *Datapath) NodesChanged(addrs []netip.Addr) {
	d.mu.Lock()
	d.nodes = addrs
	d.NodeChanges++
	d.mu.Unlock()
}

// Peers is a copy of the programmed entries.
func (d *Datapath) Peers() map[string]Entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]Entry, len(d.peers))
	for k, v := range d.peers {
		out[k] = v
	}
	return out
}

// HasNetwork reports whether network id is installed.
func (d *Datapath) HasNetwork(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.networks[id]
	return ok
}

// GoneOf reports whether none of node's endpoints is programmed, and the
// last time one of them was removed.
func (d *Datapath) GoneOf(node string, eps []string) (bool, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var last time.Time
	for _, id := range eps {
		if e, ok := d.peers[id]; ok && e.Node == node {
			return false, time.Time{}
		}
		if t := d.removed[id]; t.After(last) {
			last = t
		}
	}
	return true, last
}

// Counters returns Removals and NodeChanges.
func (d *Datapath) Counters() (removals, nodeChanges int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.Removals, d.NodeChanges
}
