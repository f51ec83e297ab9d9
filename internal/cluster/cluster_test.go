package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/bolt"
)

// The tests share one bolt store among several Cluster values: the store
// is what makes nodes a cluster, so this is the whole protocol in one
// process (the etcd and ZooKeeper backends pass the same store conformance
// suite; e2e runs this over real etcd).

func sharedStore(t *testing.T) store.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "cluster.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func node(t *testing.T, st store.Store, id string, ttl time.Duration) *Cluster {
	t.Helper()
	c, err := New(Options{Store: st, TTL: ttl, Self: Node{ID: id, Name: "host-" + id,
		Addr: netip.MustParseAddr("198.18.0." + fmt.Sprint(10+len(id))), Port: 2376}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func chooser(base string) SubnetChooser {
	return func(taken []netip.Prefix) (netip.Prefix, error) {
		b := netip.MustParsePrefix(base)
		for i := 0; i < 256; i++ {
			a := b.Addr().As4()
			a[2] = byte(i)
			p := netip.PrefixFrom(netip.AddrFrom4(a), 24)
			free := true
			for _, t := range taken {
				free = free && !t.Overlaps(p)
			}
			if free {
				return p, nil
			}
		}
		return netip.Prefix{}, errors.New("pool exhausted")
	}
}

func TestNetworksAreUniqueClusterWide(t *testing.T) {
	st := sharedStore(t)
	a, b := node(t, st, "a", time.Second), node(t, st, "b", time.Second)
	ctx := context.Background()
	n1, err := a.CreateNetwork(ctx, NetworkRecord{ID: "n1", Name: "my-net", Driver: "overlay", Subnet: netip.MustParsePrefix("10.0.0.0/24")}, chooser("10.0.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	if n1.VNI != MinVNI || n1.Gateway.String() != "10.0.0.1" || n1.CreatedBy != "a" {
		t.Errorf("n1 = %+v", n1)
	}
	for _, tt := range []struct {
		name string
		rec  NetworkRecord
		want error
	}{
		{"same name", NetworkRecord{ID: "x", Name: "my-net"}, ErrNameInUse},
		{"overlapping subnet", NetworkRecord{ID: "x", Name: "other", Subnet: netip.MustParsePrefix("10.0.0.128/25")}, ErrSubnetInUse},
		{"VNI taken", NetworkRecord{ID: "x", Name: "other", VNI: MinVNI}, ErrVNIInUse},
		{"gateway outside", NetworkRecord{ID: "x", Name: "other", Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.8.0.1")}, ErrOutOfSubnet},
	} {
		if _, err := b.CreateNetwork(ctx, tt.rec, chooser("10.0.0.0/16")); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	// concurrent creates from two nodes, subnets chosen: all distinct
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]NetworkRecord{}
	for i := range 10 {
		c := []*Cluster{a, b}[i%2]
		wg.Go(func() {
			n, err := c.CreateNetwork(ctx, NetworkRecord{ID: fmt.Sprintf("c%d", i), Name: fmt.Sprintf("c%d", i)}, chooser("10.0.0.0/16"))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got[n.ID] = n
			mu.Unlock()
		})
	}
	wg.Wait()
	vnis, subnets := map[int]bool{n1.VNI: true}, map[netip.Prefix]bool{n1.Subnet: true}
	for _, n := range got {
		if vnis[n.VNI] || subnets[n.Subnet] {
			t.Errorf("duplicate VNI or subnet: %+v", n)
		}
		vnis[n.VNI], subnets[n.Subnet] = true, true
	}
	nets, err := b.Networks(ctx)
	if err != nil || len(nets) != 11 {
		t.Errorf("b sees %d networks (%v)", len(nets), err)
	}
}

func TestAddressClaimsNeverCollide(t *testing.T) {
	st := sharedStore(t)
	nodes := []*Cluster{node(t, st, "a", time.Second), node(t, st, "b", time.Second), node(t, st, "c", time.Second)}
	ctx := context.Background()
	n, err := nodes[0].CreateNetwork(ctx, NetworkRecord{ID: "n", Name: "n", Subnet: netip.MustParsePrefix("10.0.0.0/24")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := nodes[1].ClaimAddress(ctx, AddressRequest{NetworkID: n.ID, EndpointID: "s", SandboxName: "s", Static: netip.MustParseAddr("10.0.0.200")}); err != nil || p.String() != "10.0.0.200/24" {
		t.Errorf("free static: %v %v", p, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	for i, c := range nodes {
		for j := range 40 {
			wg.Go(func() {
				ep := fmt.Sprintf("ep-%d-%d", i, j)
				p, err := c.ClaimAddress(ctx, AddressRequest{NetworkID: n.ID, EndpointID: ep, SandboxName: ep})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if other, dup := seen[p.Addr()]; dup {
					t.Errorf("%s given to %s and %s", p.Addr(), other, ep)
				}
				seen[p.Addr()] = ep
			})
		}
	}
	wg.Wait()
	if len(seen) != 120 || seen[n.Gateway] != "" || seen[netip.MustParseAddr("10.0.0.200")] != "" {
		t.Errorf("%d addresses handed out; gateway taken: %q", len(seen), seen[n.Gateway])
	}
	// static: taken, outside, network address, gateway
	for _, tt := range []struct {
		ip   string
		want error
	}{{"10.0.0.200", ErrAddrInUse}, {"10.1.0.5", ErrOutOfSubnet}, {"10.0.0.0", ErrOutOfSubnet}, {"10.0.0.1", ErrAddrInUse}, {"10.0.0.255", ErrOutOfSubnet}} {
		_, err := nodes[1].ClaimAddress(ctx, AddressRequest{NetworkID: n.ID, EndpointID: "s", SandboxName: "s", Static: netip.MustParseAddr(tt.ip)})
		if !errors.Is(err, tt.want) {
			t.Errorf("static %s: %v, want %v", tt.ip, err, tt.want)
		}
	}
	// fill the rest: then the network is full
	for i := 0; ; i++ {
		_, err := nodes[2].ClaimAddress(ctx, AddressRequest{NetworkID: n.ID, EndpointID: fmt.Sprint("f", i), SandboxName: fmt.Sprint("f", i)})
		if errors.Is(err, ErrNoAddress) {
			break
		}
		if err != nil || i > 300 {
			t.Fatalf("fill %d: %v", i, err)
		}
	}
	if _, err := nodes[0].ClaimAddress(ctx, AddressRequest{NetworkID: "missing", EndpointID: "x", SandboxName: "x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("claim on a missing network: %v", err)
	}
}

// recorder is a Listener that keeps what it was told.
type recorder struct {
	mu    sync.Mutex
	nets  map[string]NetworkRecord
	peers map[string]EndpointRecord
	log   []string
}

func newRecorder() *recorder {
	return &recorder{nets: map[string]NetworkRecord{}, peers: map[string]EndpointRecord{}}
}

func (r *recorder) NetworkAdded(n NetworkRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nets[n.ID] = n
	r.log = append(r.log, "net+ "+n.Name)
}

func (r *recorder) NetworkRemoved(n NetworkRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.nets, n.ID)
	r.log = append(r.log, "net- "+n.Name)
}

func (r *recorder) PeerAdded(ep EndpointRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.nets[ep.NetworkID]; !ok {
		r.log = append(r.log, "peer before its network: "+ep.SandboxName)
	}
	r.peers[ep.ID] = ep
	r.log = append(r.log, "peer+ "+ep.SandboxName)
}

func (r *recorder) PeerRemoved(ep EndpointRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.peers, ep.ID)
	r.log = append(r.log, "peer- "+ep.SandboxName)
}

func (r *recorder) state() (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for _, p := range r.peers {
		names = append(names, p.SandboxName)
	}
	return len(r.nets), names
}

func eventually(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func attach(t *testing.T, c *Cluster, netID, name string) EndpointRecord {
	t.Helper()
	ctx := context.Background()
	ep := EndpointRecord{ID: "ep-" + name, NetworkID: netID, SandboxID: "sb-" + name, SandboxName: name, MAC: "02:42:0a:00:00:02"}
	p, err := c.ClaimAddress(ctx, AddressRequest{NetworkID: netID, EndpointID: ep.ID, SandboxName: name})
	if err != nil {
		t.Fatal(err)
	}
	ep.Address = p
	if err := c.PutEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	return ep
}

// A watcher sees remote endpoints as peers, not its own; a node whose lease
// expires takes its peers away within the TTL; it brings them back when it
// registers again; a removed network goes after its peers.
func TestWatcherPeersFollowNodeLiveness(t *testing.T) {
	st := sharedStore(t)
	const ttl = 600 * time.Millisecond
	a, b := node(t, st, "a", ttl), node(t, st, "b", ttl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rb := newRecorder()
	wb := NewWatcher(b, rb)
	go wb.Run(ctx)
	<-wb.Synced()

	n, err := a.CreateNetwork(ctx, NetworkRecord{ID: "n", Name: "my-net", Subnet: netip.MustParsePrefix("10.0.0.0/24")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	epA := attach(t, a, n.ID, "zookeeper1")
	attach(t, b, n.ID, "zookeeper2") // b's own: never a peer of b
	eventually(t, "b sees a's endpoint", 2*time.Second, func() bool { nets, peers := rb.state(); return nets == 1 && len(peers) == 1 })
	if _, peers := rb.state(); peers[0] != "zookeeper1" {
		t.Errorf("b's peers = %v", peers)
	}
	if err := a.RemoveNetwork(ctx, n.ID); !errors.Is(err, ErrInUse) {
		t.Errorf("remove with endpoints: %v", err)
	}

	// a dies: its lease expires and b drops its endpoint within the TTL
	a.Stop()
	died := time.Now()
	eventually(t, "b drops a's endpoint", 3*ttl, func() bool { _, peers := rb.state(); return len(peers) == 0 })
	t.Logf("peer dropped %v after the keep-alive stopped (TTL %v)", time.Since(died).Round(time.Millisecond), ttl)
	// ...but its address stays claimed: the endpoint is not known dead
	if _, err := b.ClaimAddress(ctx, AddressRequest{NetworkID: n.ID, EndpointID: "x", SandboxName: "x", Static: epA.Address.Addr()}); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("a's address was released: %v", err)
	}
	// a comes back
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b sees a's endpoint again", 2*time.Second, func() bool { _, peers := rb.state(); return len(peers) == 1 })

	// withdraw everything, remove the network
	if err := a.RemoveEndpoint(ctx, epA); err != nil {
		t.Fatal(err)
	}
	eps, _ := b.Endpoints(ctx, n.ID)
	for _, ep := range eps {
		if err := b.RemoveEndpoint(ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.RemoveNetwork(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b forgets the network", 2*time.Second, func() bool { nets, peers := rb.state(); return nets == 0 && len(peers) == 0 })
	rb.mu.Lock()
	defer rb.mu.Unlock()
	for _, l := range rb.log {
		if l == "peer before its network: zookeeper1" {
			t.Errorf("listener order: %v", rb.log)
		}
	}
	if left, _ := st.List(ctx, prefix+"addrs/"); len(left) != 0 {
		t.Errorf("claims left after removal: %v", left)
	}
}

// Reconcile withdraws this node's endpoints the engine no longer has and
// releases claims an interrupted attach left, never touching other nodes'.
func TestReconcile(t *testing.T) {
	st := sharedStore(t)
	a, b := node(t, st, "a", time.Second), node(t, st, "b", time.Second)
	ctx := context.Background()
	n, err := a.CreateNetwork(ctx, NetworkRecord{ID: "n", Name: "n", Subnet: netip.MustParsePrefix("10.0.0.0/24")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	keep := attach(t, a, n.ID, "keep")
	attach(t, a, n.ID, "gone")
	other := attach(t, b, n.ID, "other")
	if _, err := a.ClaimAddress(ctx, AddressRequest{NetworkID: n.ID, EndpointID: "half", SandboxName: "half"}); err != nil {
		t.Fatal(err)
	}
	w, r, err := a.Reconcile(ctx, map[string]bool{keep.ID: true})
	if err != nil || w != 1 || r != 1 {
		t.Fatalf("reconcile: withdrawn %d released %d, %v; want 1 and 1", w, r, err)
	}
	eps, _ := a.Endpoints(ctx, n.ID)
	if len(eps) != 2 {
		t.Errorf("endpoints after reconcile: %+v", eps)
	}
	claims, _ := st.List(ctx, keyAddrs+n.ID+"/")
	if len(claims) != 3 { // gateway, keep, other
		t.Errorf("claims after reconcile: %d", len(claims))
	}
	_ = other
}
