package drivertest

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/tether-net/tether/internal/driver"
)

// The fake behaves as the engine expects of a driver: idempotent, a host
// link per endpoint, leftovers found by Sweep, rebuilds only what is
// broken, and injected failures once each.
func TestFakeLifecycle(t *testing.T) {
	ctx := context.Background()
	f := Bridge("bridge")
	n := &driver.Network{ID: "n1", BridgeName: "br1"}
	ep := &driver.Endpoint{ID: "e1", IfName: "eth0"}
	if err := f.Join(ctx, n, ep, "/ns/a"); err == nil {
		t.Fatal("join to a network that does not exist")
	}
	for range 2 {
		if err := f.CreateNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Join(ctx, n, ep, "/ns/a"); err != nil {
		t.Fatal(err)
	}
	if ep.HostIfName == "" || f.Endpoints()["e1"].NSPath != "/ns/a" || !f.LinkExists(ep.HostIfName) {
		t.Fatalf("joined %+v; endpoints %v", ep, f.Endpoints())
	}
	if want := map[string]string{"n1": "br1", "e1": ep.HostIfName}; !maps.Equal(f.Links(), want) {
		t.Fatalf("links %v, want %v", f.Links(), want)
	}
	// Repair leaves an intact endpoint alone and rebuilds a broken one.
	if did, err := f.Repair(ctx, n, ep, "/ns/a", nil); err != nil || did {
		t.Fatalf("repair of an intact endpoint: %v, %v", did, err)
	}
	old := ep.HostIfName
	f.Break("e1")
	if did, err := f.Repair(ctx, n, ep, "/ns/a", nil); err != nil || !did || ep.HostIfName == old {
		t.Fatalf("repair of a broken endpoint: %v, %v, host interface %q", did, err, ep.HostIfName)
	}
	// Sweep deletes what keep does not name as it is.
	f.AddLink("stray", "fk99")
	if n, err := f.Sweep(ctx, map[string]string{"n1": "br1", "e1": ep.HostIfName}); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if _, ok := f.Links()["stray"]; ok {
		t.Fatal("stray link kept")
	}
	// Detach's channel closes when the namespace goes.
	gone, err := f.Detach(ctx, n, ep)
	if err != nil || gone == nil {
		t.Fatalf("detach: %v, %v", gone, err)
	}
	f.TeardownNamespace("/ns/a")
	select {
	case <-gone:
	default:
		t.Fatal("detach channel open after the namespace went")
	}
	if gone, err := f.Detach(ctx, n, ep); gone != nil || err != nil {
		t.Fatalf("detach of a gone endpoint: %v, %v", gone, err)
	}
	boom := errors.New("boom")
	f.FailNext("Leave", boom)
	if err := f.Leave(ctx, n, ep, ""); !errors.Is(err, boom) {
		t.Fatalf("leave: %v, want the injected error", err)
	}
	if err := f.Leave(ctx, n, ep, ""); err != nil {
		t.Fatalf("second leave: %v", err)
	}
	want := []string{"Join", "CreateNetwork", "CreateNetwork", "Join", "Repair", "Repair", "Repair.rebuild", "Detach", "Detach", "Leave", "Leave"}
	if got := f.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls %v, want %v", got, want)
	}
}

func TestFakeHostLinks(t *testing.T) {
	f := Bridge("bridge")
	f.AddHostLink("docker0", netip.MustParsePrefix("172.17.0.1/16"))
	f.AddHostLink("bare", netip.Prefix{})
	if !f.LinkExists("docker0") || f.LinkExists("eth9") {
		t.Fatal("LinkExists")
	}
	p, a, err := f.LinkAddress("docker0")
	if err != nil || p != netip.MustParsePrefix("172.17.0.0/16") || a != netip.MustParseAddr("172.17.0.1") {
		t.Fatalf("LinkAddress: %v %v %v", p, a, err)
	}
	for _, name := range []string{"bare", "eth9"} {
		if _, _, err := f.LinkAddress(name); err == nil {
			t.Errorf("LinkAddress(%q) succeeded", name)
		}
	}
}

func TestFakePeers(t *testing.T) {
	ctx := context.Background()
	f := Overlay("overlay")
	n := &driver.Network{ID: "o1"}
	p := driver.Peer{IP: netip.MustParseAddr("10.0.0.2"), VTEP: netip.MustParseAddr("192.0.2.2")}
	q := driver.Peer{IP: netip.MustParseAddr("10.0.0.3"), VTEP: netip.MustParseAddr("192.0.2.3")}
	for _, x := range []driver.Peer{p, q, p} {
		if err := f.AddPeer(ctx, n, x); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.RemovePeer(ctx, n, p); err != nil {
		t.Fatal(err)
	}
	got, _ := f.Peers(ctx, n)
	if len(got) != 1 || !got[0].Equal(q) {
		t.Fatalf("peers %v, want [%v]", got, q)
	}
}

// The fake records what the engine hands a driver, IPv6 fields included,
// so engine tests can check them: per family, set or zero.
func TestFakeRecordsIPv6(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name              string
		subnet, subnet6   string
		address, address6 string
	}{
		{"IPv4 only", "10.1.0.0/24", "", "10.1.0.2/24", ""},
		{"dual stack", "10.1.0.0/24", "fd00:1::/64", "10.1.0.2/24", "fd00:1::2/64"},
		{"IPv6 only", "", "fd00:1::/64", "", "fd00:1::2/64"},
	}
	prefix := func(s string) netip.Prefix {
		if s == "" {
			return netip.Prefix{}
		}
		return netip.MustParsePrefix(s)
	}
	gw := func(p netip.Prefix) netip.Addr {
		if !p.IsValid() {
			return netip.Addr{}
		}
		return p.Addr().Next()
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := Bridge("bridge")
			n := &driver.Network{ID: "n1", BridgeName: "br1", Subnet: prefix(c.subnet), Subnet6: prefix(c.subnet6)}
			n.Gateway, n.Gateway6 = gw(n.Subnet), gw(n.Subnet6)
			ep := &driver.Endpoint{ID: "e1", IfName: "eth0", Address: prefix(c.address), Gateway: n.Gateway,
				Address6: prefix(c.address6), Gateway6: n.Gateway6, DefaultRoute: true}
			if err := f.CreateNetwork(ctx, n); err != nil {
				t.Fatal(err)
			}
			if err := f.Join(ctx, n, ep, "/ns/a"); err != nil {
				t.Fatal(err)
			}
			got, ok := f.Network("n1")
			if !ok || got.Subnet != n.Subnet || got.Gateway != n.Gateway || got.Subnet6 != n.Subnet6 || got.Gateway6 != n.Gateway6 {
				t.Errorf("network %+v (%v), want %+v", got, ok, *n)
			}
			j := f.Endpoints()["e1"].Endpoint
			if j.Address != ep.Address || j.Gateway != ep.Gateway || j.Address6 != ep.Address6 || j.Gateway6 != ep.Gateway6 {
				t.Errorf("endpoint %+v, want %+v", j, *ep)
			}
			if _, ok := f.Network("n2"); ok {
				t.Error("Network of an unknown ID found")
			}
		})
	}
}
