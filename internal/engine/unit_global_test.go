package engine

// Global (overlay) networks in-process: the cluster store is a second
// bolt store, other nodes are cluster.Cluster values on it, and the
// engine's watcher runs as in the daemon.

import (
	"context"
	"fmt"
	"github.com/tether-net/tether/internal/store"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/ipam"
)

// A sandbox on a global network that is not internal gets its way out
// through the network's own gateway (the distributed gateway: every host's
// bridge holds it): one endpoint, which carries the default route, and the
// network's bridge in the firewall with masquerade; no gateway network.
// An internal global network gives neither route nor masquerade.
func TestGlobalAttachDistributedGateway(t *testing.T) {
	r := newRig(t, withCluster())
	ov := r.network("ov", "overlay", "10.20.0.0/24")
	ovi := r.network("ovi", "overlay", "10.22.0.0/24", func(s *NetworkSpec) { s.Internal = true })
	sb := r.sandbox("web", "ov")
	if _, err := r.e.Network(GatewayBridgeName); err == nil {
		t.Error("a gateway network was made")
	}
	if len(sb.Endpoints) != 1 || sb.Endpoints[0].NetworkID != ov.ID {
		t.Fatalf("endpoints %+v, want the overlay's only", sb.Endpoints)
	}
	j := joined(t, r, sb.Endpoints[0].ID)
	if !j.Endpoint.DefaultRoute || j.Endpoint.Address != netip.MustParsePrefix("10.20.0.2/24") || j.Endpoint.Gateway != netip.MustParseAddr("10.20.0.1") {
		t.Errorf("overlay endpoint %+v: want 10.20.0.2/24 with the default route via 10.20.0.1", j.Endpoint)
	}
	if dn, ok := r.driverOf("ov").Network(ov.ID); !ok || dn.Gateway != netip.MustParseAddr("10.20.0.1") {
		t.Errorf("the driver was told gateway %v, want 10.20.0.1 (its bridges hold it)", dn.Gateway)
	}
	for _, c := range []struct {
		n    *Network
		masq bool
	}{{ov, true}, {ovi, false}} {
		fn, ok := r.fw.network(c.n.ID)
		if !ok || fn.Bridge != fmt.Sprintf("tov-%d", c.n.VNI) || fn.Masquerade != c.masq || fn.Internal != c.n.Internal || fn.Subnet != c.n.Subnet {
			t.Errorf("firewall entry of %s: %+v (held %v); want its bridge tov-%d, masquerade %v", c.n.Name, fn, ok, c.n.VNI, c.masq)
		}
	}
	in := r.sandbox("in", "ovi")
	if j := joined(t, r, in.Endpoints[0].ID); j.Endpoint.DefaultRoute || j.Endpoint.Gateway.IsValid() {
		t.Errorf("internal overlay endpoint %+v: want no default route and no gateway", j.Endpoint)
	}
	// The record is published after the attach answered (in the background).
	eventually(t, "the endpoint's record in the store", func() bool {
		eps, err := r.cl.Endpoints(r.ctx, ov.ID)
		return err == nil && len(eps) == 1
	})
	eps, err := r.cl.Endpoints(r.ctx, ov.ID)
	if err != nil || len(eps) != 1 || eps[0].ID != sb.Endpoints[0].ID || eps[0].Node != "node-a" || eps[0].VTEP != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("cluster endpoints %+v (%v), want this node's one", eps, err)
	}
	if err := r.e.Disconnect(r.ctx, "ov", "web", false); err != nil {
		t.Fatal(err)
	}
	if got := r.getSandbox("web").Endpoints; len(got) != 0 {
		t.Errorf("endpoints %+v after leaving the overlay, want none", got)
	}
	if eps, _ := r.cl.Endpoints(r.ctx, ov.ID); len(eps) != 0 {
		t.Errorf("cluster endpoints %+v after the detach", eps)
	}
	if err := r.e.RemoveNetwork(r.ctx, "ov"); err != nil {
		t.Fatal(err)
	}
	if r.fw.has(ov.ID) {
		t.Error("the removed overlay network is still in the firewall")
	}
}

// A sandbox of an older version has a second endpoint on tether_gwbridge
// beside its overlay one; once it has no open global network left, that
// way out goes too (it must not stay with internal overlays only).
func TestGlobalLegacyGatewayBridgeLeft(t *testing.T) {
	r := newRig(t, withCluster())
	r.network("ov", "overlay", "10.20.0.0/24")
	r.network("ovi", "overlay", "10.22.0.0/24", func(s *NetworkSpec) { s.Internal = true })
	r.network(GatewayBridgeName, "bridge", "198.18.1.0/24")
	r.sandbox("old", "ovi")
	for _, n := range []string{"ov", GatewayBridgeName} {
		if err := r.e.Connect(r.ctx, n, "old", AttachSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.e.Disconnect(r.ctx, "ov", "old", false); err != nil {
		t.Fatal(err)
	}
	sb := r.getSandbox("old")
	for _, ep := range sb.Endpoints {
		if r.e.NetworkName(ep.NetworkID) != "ovi" {
			t.Errorf("endpoint on %s left after the last open overlay went, want ovi's only", r.e.NetworkName(ep.NetworkID))
		}
	}
}

// Another node's networks and endpoints reach this one through the
// watcher: its network is installed here, its endpoints become peers of
// the overlay driver and names in DNS, its address is let through the
// VXLAN filter; they go when it withdraws them. A network with an endpoint
// on another node cannot be removed.
func TestGlobalOtherNode(t *testing.T) {
	r := newRig(t, withCluster())
	b, err := cluster.New(cluster.Options{Store: r.cst, Logger: r.logger(),
		Self: cluster.Node{ID: "node-b", Name: "host-b", Addr: netip.MustParseAddr("192.0.2.2")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(r.ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	eventually(t, "node b let through the VXLAN filter", func() bool {
		return slices.Contains(r.nodes.get(), netip.MustParseAddr("192.0.2.2"))
	})
	rec, err := b.CreateNetwork(r.ctx, cluster.NetworkRecord{ID: newID(), Name: "fromb", Driver: "overlay", Created: time.Now().UTC(),
		Subnet: netip.MustParsePrefix("10.21.0.0/24"), Gateway: netip.MustParseAddr("10.21.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "network of node b installed", func() bool {
		_, err := r.e.Network("fromb")
		return err == nil && slices.Contains(r.drv["overlay"].Networks(), rec.ID)
	})
	pub := cluster.EndpointRecord{ID: newID(), NetworkID: rec.ID, SandboxID: newID(), SandboxName: "remote", Created: time.Now().UTC()}
	addr, err := b.ClaimAddress(r.ctx, cluster.AddressRequest{NetworkID: rec.ID, EndpointID: pub.ID, SandboxName: "remote",
		Publish: &pub, MACFor: driverMAC})
	if err != nil {
		t.Fatal(err)
	}
	want := driver.Peer{IP: addr.Addr(), MAC: driver.MACFromIP(addr.Addr()), VTEP: netip.MustParseAddr("192.0.2.2")}
	dn := &driver.Network{ID: rec.ID}
	eventually(t, "peer programmed", func() bool {
		ps, _ := r.drv["overlay"].Peers(r.ctx, dn)
		return len(ps) == 1 && ps[0].Equal(want)
	})
	v, err := r.e.Network("fromb")
	if err != nil || len(v.Remote) != 1 || !v.Remote[0].Live || v.Remote[0].SandboxName != "remote" {
		t.Errorf("inspect: remote endpoints %+v (%v), want node b's live one", v.Remote, err)
	}
	err = r.e.RemoveNetwork(r.ctx, "fromb")
	wantKind(t, err, KindForbidden, "remove a network in use on another node")
	pub.Address = addr
	if err := b.RemoveEndpoint(r.ctx, pub); err != nil {
		t.Fatal(err)
	}
	eventually(t, "peer removed", func() bool {
		ps, _ := r.drv["overlay"].Peers(r.ctx, dn)
		return len(ps) == 0
	})
	if err := r.e.RemoveNetwork(r.ctx, "fromb"); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(r.drv["overlay"].Networks(), rec.ID) {
		t.Error("removed network left in the driver")
	}
}

// eventually waits for cond, which the watcher makes true in the
// background; the deadline is for a hang, not a performance threshold.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened", what)
		}
	}
}

// Global network creation is refused with the kind of the cluster's
// answer, and a refusal leaves nothing here.
func TestGlobalCreateRefusals(t *testing.T) {
	r := newRig(t, withCluster())
	r.network("ov", "overlay", "10.20.0.0/24", func(s *NetworkSpec) {
		s.Options = map[string]string{OptVNI: "4242"}
	})
	for _, tc := range []struct {
		name string
		spec NetworkSpec
		kind Kind
	}{
		{"name taken", NetworkSpec{Name: "ov", Driver: "overlay"}, KindConflict},
		{"VNI taken", NetworkSpec{Name: "x", Driver: "overlay", Options: map[string]string{OptVNI: "4242"},
			Subnets: []SubnetSpec{{Subnet: "10.22.0.0/24"}}}, KindConflict},
		{"VNI out of range", NetworkSpec{Name: "x", Driver: "overlay", Options: map[string]string{OptVNI: "0"}}, KindInvalid},
		{"subnet taken", NetworkSpec{Name: "x", Driver: "overlay", Subnets: []SubnetSpec{{Subnet: "10.20.0.0/24"}}}, KindForbidden},
		{"ip-range", NetworkSpec{Name: "x", Driver: "overlay", Subnets: []SubnetSpec{{Subnet: "10.23.0.0/24", IPRange: "10.23.0.0/25"}}}, KindInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(r.e.Networks())
			_, err := r.e.CreateNetwork(r.ctx, tc.spec)
			wantKind(t, err, tc.kind, tc.name)
			if got := len(r.e.Networks()); got != before {
				t.Errorf("%d networks after a refusal, want %d", got, before)
			}
		})
	}
	// Chosen from 10.0.0.0/8 when none is given.
	n := r.network("auto", "overlay", "")
	if n.Subnet != netip.MustParsePrefix("10.0.0.0/24") || n.Scope != ScopeGlobal || n.VNI == 0 {
		t.Errorf("network %+v: want 10.0.0.0/24, global, with a VNI", n)
	}
}

// cutStore is a cluster store whose connection a test cuts (Connected
// fails, and so do transactions) and whose transactions it can hold.
type cutStore struct {
	store.Store
	down atomic.Bool
	mu   sync.Mutex
	hold chan struct{} // non-nil: transactions wait for it to close
}

func (c *cutStore) Connected() error {
	if c.down.Load() {
		return fmt.Errorf("test: connection down: %w", store.ErrUnreachable)
	}
	return nil
}

func (c *cutStore) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op) (int64, error) {
	c.mu.Lock()
	h := c.hold
	c.mu.Unlock()
	if h != nil {
		select {
		case <-h:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if c.down.Load() {
		return 0, fmt.Errorf("test: %w", store.ErrUnreachable)
	}
	return c.Store.Txn(ctx, cmps, ops)
}

func (c *cutStore) holdTxns() (release func()) {
	h := make(chan struct{})
	c.mu.Lock()
	c.hold = h
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.hold = nil
		c.mu.Unlock()
		close(h)
	}
}

// A global attach answers before its endpoint record is in the store while
// the store is connected (the record follows in the background, and is
// what remote peers program from); with the store's connection down it is
// refused at once, naming the store, without a request to wait for, and
// leaves nothing behind once the store is back.
func TestGlobalAttachAnswersBeforeRecord(t *testing.T) {
	cs := &cutStore{}
	r := newRig(t, withClusterVia(func(st store.Store) store.Store { cs.Store = st; return cs }))
	ov := r.network("ov", "overlay", "10.23.0.0/24")
	r.sandbox("first", "ov") // the node holds a block now: no store round trip to take an address
	count := func() int {
		eps, err := r.cl.Endpoints(r.ctx, ov.ID)
		if err != nil {
			t.Fatal(err)
		}
		return len(eps)
	}
	eventually(t, "first's record stored", func() bool { return count() == 1 })

	connect := func(name string) error {
		r.sandbox(name)
		errc := make(chan error, 1)
		go func() { errc <- r.e.Connect(r.ctx, "ov", name, AttachSpec{}) }()
		select {
		case err := <-errc:
			return err
		case <-time.After(20 * time.Second):
			t.Fatalf("attach of %s still waiting for its held record", name)
			return nil
		}
	}

	release := cs.holdTxns()
	if err := connect("late"); err != nil {
		t.Fatal("attach while the store is slow:", err)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d records while the publication is held, want 1 (first's): the attach waited", n)
	}
	release()
	eventually(t, "late's record stored after the attach answered", func() bool { return count() == 2 })

	cs.down.Store(true)
	err := connect("cut")
	if err == nil || !strings.Contains(err.Error(), "cluster store") {
		t.Fatalf("attach with the store's connection down: %v, want a refusal naming the cluster store", err)
	}
	for _, ep := range r.getSandbox("cut").Endpoints {
		if ep.NetworkID == ov.ID {
			t.Errorf("refused attach left endpoint %+v", ep)
		}
	}
	cs.down.Store(false)
	time.Sleep(1500 * time.Millisecond) // the withdrawal is retried each second; nothing of the refused attach may land
	if n := count(); n != 2 {
		t.Errorf("%d records after the refused attach's rollback, want 2", n)
	}
}

// An open global network whose subnet overlaps a route of this host is
// installed with a warning naming the route (its gateway adds a connected
// route here); an internal one, whose bridges hold no address, is not
// warned about, nor is a subnet clear of the host's routes.
func TestGlobalWarnsShadowedRoute(t *testing.T) {
	r := newRig(t, withCluster())
	r.hostRoutes = append(r.hostRoutes, ipam.Blocker{Prefix: netip.MustParsePrefix("10.40.0.0/16"), Source: "route 10.40.0.0/16 via 192.0.2.254 dev eth0"})
	r.restart()
	const warning = "overlaps this host's routes"
	r.network("clear", "overlay", "10.41.0.0/24")
	r.network("walled", "overlay", "10.40.1.0/24", func(s *NetworkSpec) { s.Internal = true })
	if strings.Contains(r.log.String(), warning) {
		t.Fatalf("warned about a network that shadows nothing:\n%s", r.log.String())
	}
	r.network("shadow", "overlay", "10.40.2.0/24")
	if l := r.log.String(); !strings.Contains(l, warning) || !strings.Contains(l, "via 192.0.2.254") {
		t.Errorf("no warning naming the overlapped route:\n%s", l)
	}
}
