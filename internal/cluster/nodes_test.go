package cluster

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// nodesRecorder is a recorder that is also a NodesListener.
type nodesRecorder struct {
	*recorder
	nodes []netip.Addr
}

func (r *nodesRecorder) NodesChanged(addrs []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes = addrs
	s := "nodes"
	for _, a := range addrs {
		s += " " + a.String()
	}
	r.log = append(r.log, s)
}

func (r *nodesRecorder) told() ([]netip.Addr, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.nodes), slices.Clone(r.log)
}

// The watcher tells a NodesListener the addresses of the live nodes (its
// own included): after the first listing, when a node's lease expires
// (after that node's peers are removed) and when it registers again
// (before its peers are added).
func TestWatcherNodesFollowLiveness(t *testing.T) {
	st := sharedStore(t)
	const ttl = 600 * time.Millisecond
	a, b := node(t, st, "a", ttl), node(t, st, "bb", ttl) // 198.18.0.11, 198.18.0.12
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rb := &nodesRecorder{recorder: newRecorder()}
	wb := NewWatcher(b, rb)
	go wb.Run(ctx)
	<-wb.Synced()
	both := []netip.Addr{a.Self().Addr, b.Self().Addr}
	if got, _ := rb.told(); !slices.Equal(got, both) {
		t.Fatalf("after the first listing: nodes %v, want %v", got, both)
	}
	n, err := a.CreateNetwork(ctx, NetworkRecord{ID: "n", Name: "my-net", Subnet: netip.MustParsePrefix("10.0.0.0/24")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	attach(t, a, n.ID, "zookeeper1")
	eventually(t, "b sees a's endpoint", 2*time.Second, func() bool { _, peers := rb.state(); return len(peers) == 1 })

	a.Stop()
	eventually(t, "b drops a", 3*ttl, func() bool { got, _ := rb.told(); return slices.Equal(got, both[1:]) })
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b takes a back", 2*time.Second, func() bool { got, _ := rb.told(); return slices.Equal(got, both) })
	eventually(t, "b sees a's endpoint again", 2*time.Second, func() bool { _, peers := rb.state(); return len(peers) == 1 })

	_, log := rb.told()
	want := []string{"nodes 198.18.0.11 198.18.0.12", "net+ my-net", "peer+ zookeeper1",
		"peer- zookeeper1", "nodes 198.18.0.12", "nodes 198.18.0.11 198.18.0.12", "peer+ zookeeper1"}
	if !slices.Equal(log, want) {
		t.Errorf("listener calls:\n got %q\nwant %q", log, want)
	}
}
