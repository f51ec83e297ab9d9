package overlay_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/overlay"
	ot "github.com/tether-net/tether/internal/driver/overlay/overlaytest"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// joinRouted joins a new sandbox namespace to n on h with the default
// route (as the engine asks for the first open network of a sandbox).
func joinRouted(t *testing.T, h *ot.Host, n *driver.Network, addr string) *ot.Sandbox {
	t.Helper()
	ns := testutil.NetNS(t, "tth-gw")
	p := netip.MustParsePrefix(addr)
	s := &ot.Sandbox{NS: ns, Path: "/run/netns/" + ns, Host: h, Net: n, EP: &driver.Endpoint{
		ID: ot.NewID(), IfName: "eth0", Address: p, Gateway: n.Gateway, MAC: driver.MACFromIP(p.Addr()), DisableIPv6: true, DefaultRoute: true}}
	if err := h.Driver.Join(context.Background(), n, s.EP, s.Path); err != nil {
		t.Fatalf("join %s: %v", ns, err)
	}
	return s
}

func bridgeAddrs(t *testing.T, h *ot.Host, vni int) []string {
	t.Helper()
	br := linkByName(t, h.H, overlay.BridgeName(vni))
	addrs, err := h.H.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.IPNet.String())
	}
	return out
}

// TestDistributedGateway: every host's bridge of an open network holds the
// gateway with the same MAC; a sandbox's default route goes there and its
// own host answers; the gateway's ARP never crosses the overlay (a sandbox
// on a host whose bridge has no gateway does not reach another host's);
// an internal network's bridge, or one made internal, holds no address;
// Router moves the default route back.
func TestDistributedGateway(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	const vni = 4321
	id := ot.NewID()
	n1, n2 := h1.Network(id, vni, "10.78.0.0/24"), h2.Network(id, vni, "10.78.0.0/24")
	n1.Gateway, n2.Gateway = netip.MustParseAddr("10.78.0.1"), netip.MustParseAddr("10.78.0.1")
	h1.CreateNetwork(t, n1)
	h2.CreateNetwork(t, n2)
	for _, h := range []*ot.Host{h1, h2} {
		if got := bridgeAddrs(t, h, vni); len(got) != 1 || got[0] != "10.78.0.1/24" {
			t.Errorf("bridge of %s holds %v, want 10.78.0.1/24", h.NS, got)
		}
		if mac := linkByName(t, h.H, overlay.BridgeName(vni)).Attrs().HardwareAddr; !bytes.Equal(mac, overlay.GatewayMAC(n1)) {
			t.Errorf("bridge of %s has MAC %s, want %s on every host", h.NS, mac, overlay.GatewayMAC(n1))
		}
	}
	a, b := joinRouted(t, h1, n1, "10.78.0.2/24"), joinRouted(t, h2, n2, "10.78.0.3/24")
	ot.Mesh(t, a, b)
	for _, s := range []*ot.Sandbox{a, b} {
		out := testutil.Must(t, "ip", "netns", "exec", s.NS, "ip", "route", "show", "default")
		if !strings.Contains(out, "via 10.78.0.1 dev eth0") {
			t.Errorf("%s default route %q, want via 10.78.0.1 dev eth0", s.NS, out)
		}
		ot.MustPing(t, s.NS, "10.78.0.1")
	}
	ot.MustPing(t, a.NS, b.Addr())

	// A second network on h1 whose bridge on h2 holds no gateway: b2 on h2
	// does not reach the gateway of h1 (its ARP stays on h2), while a2 on
	// h1 does.
	id2 := ot.NewID()
	m1, m2 := h1.Network(id2, vni+1, "10.79.0.0/24"), h2.Network(id2, vni+1, "10.79.0.0/24")
	m1.Gateway = netip.MustParseAddr("10.79.0.1")
	h1.CreateNetwork(t, m1)
	h2.CreateNetwork(t, m2)
	if got := bridgeAddrs(t, h2, vni+1); len(got) != 0 {
		t.Errorf("bridge without a gateway holds %v", got)
	}
	a2, b2 := joinRouted(t, h1, m1, "10.79.0.2/24"), h2.Join(t, m2, "10.79.0.3/24")
	ot.Mesh(t, a2, b2)
	ot.MustPing(t, a2.NS, b2.Addr())
	ot.MustPing(t, a2.NS, "10.79.0.1")
	ot.MustNotPing(t, b2.NS, "10.79.0.1")

	// Made internal, the network's bridge loses its address.
	in := *n1
	in.Internal = true
	h1.CreateNetwork(t, &in)
	if got := bridgeAddrs(t, h1, vni); len(got) != 0 {
		t.Errorf("internal network's bridge holds %v", got)
	}
	h1.CreateNetwork(t, n1)
	if got := bridgeAddrs(t, h1, vni); len(got) != 1 {
		t.Errorf("open again, the bridge holds %v", got)
	}

	// Router: the route, deleted, is set again.
	testutil.Must(t, "ip", "netns", "exec", a.NS, "ip", "route", "del", "default")
	if err := h1.Driver.SetDefaultRoute(context.Background(), n1, a.EP, a.Path); err != nil {
		t.Fatal(err)
	}
	sb, err := tns.NewHandle(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	routes, err := sb.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: nil}, 0)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.Equal(net.IPv4zero)) && r.Gw.Equal(net.ParseIP("10.78.0.1")) {
			found = true
		}
	}
	if !found {
		t.Errorf("no default route via 10.78.0.1 after SetDefaultRoute: %v", routes)
	}
}
