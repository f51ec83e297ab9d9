package testutil

import (
	"fmt"
	"testing"
	"time"
)

// Cluster is a multi-host test cluster: host namespaces on one underlay
// switch, a cluster store (etcd, or ZooKeeper) in a namespace of its own,
// and one daemon per host with --cluster-store, --cluster-advertise
// eth0:2376 and the node lease TTL given.
type Cluster struct {
	U     *Underlay
	Etcd  *Etcd      // when the store is etcd
	ZK    *ZooKeeper // when the store is ZooKeeper
	Hosts []Member
	D     []*Daemon
	TTL   time.Duration
}

// StartCluster builds the underlay, starts etcd and n daemons.
func StartCluster(tb testing.TB, n int, ttl time.Duration) *Cluster {
	tb.Helper()
	return StartClusterWith(tb, "etcd", n, ttl)
}

// StartClusterWith is StartCluster with the store named: "etcd" or "zk".
func StartClusterWith(tb testing.TB, kind string, n int, ttl time.Duration) *Cluster {
	tb.Helper()
	return StartClusterIn(tb, kind, n, ttl, StartNsenter)
}

// StartClusterIn is StartClusterWith with the daemons started in mode.
func StartClusterIn(tb testing.TB, kind string, n int, ttl time.Duration, mode StartMode) *Cluster {
	tb.Helper()
	RequireRoot(tb)
	c := &Cluster{U: NewUnderlay(tb, 1500), TTL: ttl}
	switch kind {
	case "etcd":
		c.Etcd = StartEtcd(tb, c.U.Join("etcd"))
	case "zk":
		c.ZK = StartZooKeeper(tb, c.U.Join("zk"))
	default:
		tb.Fatalf("unknown cluster store %q", kind)
	}
	for range n {
		h := c.U.Join("h")
		c.Hosts = append(c.Hosts, h)
		d := NewDaemon(tb, h.NS, c.Args()...)
		d.Mode = mode
		if err := d.Start(); err != nil {
			tb.Fatal(err)
		}
		c.D = append(c.D, d)
	}
	return c
}

// Args are the cluster flags of the daemons.
func (c *Cluster) Args() []string {
	return []string{"--cluster-store", c.StoreURL(), "--cluster-advertise", "eth0:2376",
		"--cluster-store-opt", fmt.Sprintf("discovery.ttl=%d", int(c.TTL.Seconds()))}
}

// StoreURL is the cluster-store URL of the cluster's store.
func (c *Cluster) StoreURL() string {
	if c.ZK != nil {
		return c.ZK.URL()
	}
	return c.Etcd.URL()
}
