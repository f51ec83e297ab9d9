package engine

// Global (overlay) networks in-process: the cluster store is a second
// bolt store, other nodes are cluster.Cluster values on it, and the
// engine's watcher runs as in the daemon.

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/driver"
)

// A sandbox on a global network that is not internal gets its way out
// through the gateway network (made on first use), which carries its
// default route; leaving the global network leaves the gateway network.
func TestGlobalAttachGatewayNetwork(t *testing.T) {
	r := newRig(t, withCluster())
	ov := r.network("ov", "overlay", "10.20.0.0/24")
	sb := r.sandbox("web", "ov")
	gw, err := r.e.Network(GatewayBridgeName)
	if err != nil {
		t.Fatal("no gateway network:", err)
	}
	if gw.Driver != "bridge" || gw.BridgeName != GatewayBridgeName || gw.ICC || gw.Subnet != netip.MustParsePrefix("198.18.1.0/24") {
		t.Errorf("gateway network %+v; want a bridge network, no icc, on the first free pool subnet", gw.Network)
	}
	if len(sb.Endpoints) != 2 || sb.Endpoints[0].NetworkID != ov.ID || sb.Endpoints[1].NetworkID != gw.ID {
		t.Fatalf("endpoints %+v, want the overlay's then the gateway network's", sb.Endpoints)
	}
	if j := joined(t, r, sb.Endpoints[0].ID); j.Endpoint.DefaultRoute || j.Endpoint.Address != netip.MustParsePrefix("10.20.0.2/24") {
		t.Errorf("overlay endpoint %+v: want 10.20.0.2/24 without the default route", j.Endpoint)
	}
	if j := joined(t, r, sb.Endpoints[1].ID); !j.Endpoint.DefaultRoute || j.Endpoint.IfName != "eth1" {
		t.Errorf("gateway endpoint %+v: want eth1 with the default route", j.Endpoint)
	}
	eps, err := r.cl.Endpoints(r.ctx, ov.ID)
	if err != nil || len(eps) != 1 || eps[0].ID != sb.Endpoints[0].ID || eps[0].Node != "node-a" || eps[0].VTEP != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("cluster endpoints %+v (%v), want this node's one", eps, err)
	}
	if err := r.e.Disconnect(r.ctx, "ov", "web", false); err != nil {
		t.Fatal(err)
	}
	if got := r.getSandbox("web").Endpoints; len(got) != 0 {
		t.Errorf("endpoints %+v after leaving the overlay, want none (the gateway network goes with it)", got)
	}
	if eps, _ := r.cl.Endpoints(r.ctx, ov.ID); len(eps) != 0 {
		t.Errorf("cluster endpoints %+v after the detach", eps)
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
