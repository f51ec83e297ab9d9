package docker

// Several Nodes on one underlay (testutil.Underlay): each host is an
// underlay member's namespace with its own holder, containerd, dockerd and
// Tether daemon, the Tether daemons sharing a cluster store (etcd or
// ZooKeeper, in a member namespace of its own) as the existing overlay tests
// run them (testutil.Cluster's flags: --cluster-store, --cluster-advertise
// eth0:2376, the node lease TTL).

import (
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// Cluster is n Nodes sharing a cluster store.
type Cluster struct {
	U       *testutil.Underlay
	Etcd    *testutil.Etcd      // when the store is etcd
	ZK      *testutil.ZooKeeper // when the store is ZooKeeper
	Members []testutil.Member   // the hosts' underlay namespaces, Nodes[i] in Members[i]
	Nodes   []*Node
	store   *testutil.Cluster // for its daemon flags
}

// ClusterTTL is the Tether daemons' node lease (discovery.ttl).
const ClusterTTL = 3 * time.Second

// StartCluster builds an underlay (MTU 1500), starts the store ("etcd" or
// "zk") and n Nodes, one after the other, with o (o.Args gets the cluster
// flags appended).
func StartCluster(tb testing.TB, refs Refs, kind string, n int, o TetherOptions) *Cluster {
	tb.Helper()
	c := &Cluster{U: testutil.NewUnderlay(tb, 1500)}
	c.store = &testutil.Cluster{U: c.U, TTL: ClusterTTL}
	switch kind {
	case "etcd":
		c.Etcd = testutil.StartEtcd(tb, c.U.Join("etcd"))
		c.store.Etcd = c.Etcd
	case "zk":
		c.ZK = testutil.StartZooKeeper(tb, c.U.Join("zk"))
		c.store.ZK = c.ZK
	default:
		tb.Fatalf("unknown cluster store %q", kind)
	}
	o.Args = append(append([]string(nil), o.Args...), c.store.Args()...)
	for range n {
		m := c.U.Join("h")
		c.Members = append(c.Members, m)
		c.Nodes = append(c.Nodes, StartNode(tb, NewHostIn(tb, m.NS), refs, o))
	}
	return c
}

// StoreURL is the cluster-store URL the Tether daemons use.
func (c *Cluster) StoreURL() string { return c.store.StoreURL() }
