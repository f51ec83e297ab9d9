package engine

import "github.com/tether-net/tether/internal/cluster"

// ClusterNodes returns this host's cluster node and the live nodes the
// cluster watcher knows (this one among them once registered), for the
// topology picture; both zero without a cluster store. It reads the
// watcher's copy of the store: no round trip, and an answer while the
// store is down (the nodes last seen).
func (e *Engine) ClusterNodes() (self cluster.Node, nodes []cluster.Node) {
	g := e.global
	if g == nil {
		return cluster.Node{}, nil
	}
	self = g.cl.Self()
	if g.watcher == nil {
		return self, nil
	}
	// No network has the empty ID: this lists no endpoint, only the nodes.
	_, live := g.watcher.Endpoints("")
	for _, n := range live {
		nodes = append(nodes, n)
	}
	return self, nodes
}
