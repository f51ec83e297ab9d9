package api

import "github.com/tether-net/tether/internal/cluster"

// clusterFake is a fakeBackend in a cluster: it has the engine's
// ClusterNodes, which the topology picture asks for.
type clusterFake struct {
	*fakeBackend
	self  cluster.Node
	nodes []cluster.Node
}

func (c *clusterFake) ClusterNodes() (cluster.Node, []cluster.Node) {
	defer c.enter("ClusterNodes")()
	return c.self, c.nodes
}
