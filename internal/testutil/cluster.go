package testutil

import (
	"fmt"
	"testing"
	"time"
)

// Cluster is a multi-host test cluster: host namespaces on one underlay
// switch, a cluster store (etcd) in a namespace of its own, and one daemon
// per host with --cluster-store, --cluster-advertise eth0:2376 and the
// node lease TTL given.
type Cluster struct {
	U     *Underlay
	Etcd  *Etcd
	Hosts []Member
	D     []*Daemon
	TTL   time.Duration
}

// StartCluster builds the underlay, starts etcd and n daemons.
func StartCluster(tb testing.TB, n int, ttl time.Duration) *Cluster {
	tb.Helper()
	RequireRoot(tb)
	c := &Cluster{U: NewUnderlay(tb, 1500), TTL: ttl}
	c.Etcd = StartEtcd(tb, c.U.Join("etcd"))
	for range n {
		h := c.U.Join("h")
		c.Hosts = append(c.Hosts, h)
		c.D = append(c.D, StartDaemon(tb, h.NS, c.Args()...))
	}
	return c
}

// Args are the cluster flags of the daemons.
func (c *Cluster) Args() []string {
	return []string{"--cluster-store", c.Etcd.URL(), "--cluster-advertise", "eth0:2376",
		"--cluster-store-opt", fmt.Sprintf("discovery.ttl=%d", int(c.TTL.Seconds()))}
}
