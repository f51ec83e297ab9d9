package overlay_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/overlay"
	ot "github.com/tether-net/tether/internal/driver/overlay/overlaytest"
	"github.com/tether-net/tether/internal/testutil"
)

// dropBridged makes the overlay's bridges forward no IPv4 or IPv6 frame in
// h's namespace (ARP still passes): what still arrives went by the bypass.
func dropBridged(t *testing.T, h *ot.Host) {
	t.Helper()
	testutil.Must(t, "ip", "netns", "exec", h.NS, "nft",
		"add table bridge tfp_drop; add chain bridge tfp_drop through { type filter hook forward priority 0; policy accept; }; "+
			"add rule bridge tfp_drop through ether type ip drop; add rule bridge tfp_drop through ether type ip6 drop")
}

// TestBridgeBypass: with the bridges forwarding no IP frame, sandboxes on
// two hosts and two sandboxes on one host still reach each other (the
// bypass), and the gateway (delivered to the bridge itself, not
// forwarded). Without the bypass (the driver closed, as a daemon that
// stopped) they do not; a new driver puts the endpoints back on it from
// the kernel's state, as a restarted daemon does (CreateNetwork, Repair).
func TestBridgeBypass(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	if !h1.Driver.Bypassing() {
		t.Fatal("the bridge bypass is not running (a kernel without TCX or bpf_redirect_peer?)")
	}
	const vni = 4400
	id := ot.NewID()
	n1, n2 := h1.Network(id, vni, "10.80.0.0/24"), h2.Network(id, vni, "10.80.0.0/24")
	n1.Gateway, n2.Gateway = netip.MustParseAddr("10.80.0.1"), netip.MustParseAddr("10.80.0.1")
	h1.CreateNetwork(t, n1)
	h2.CreateNetwork(t, n2)
	a, c := joinRouted(t, h1, n1, "10.80.0.2/24"), h1.Join(t, n1, "10.80.0.4/24")
	b := joinRouted(t, h2, n2, "10.80.0.3/24")
	ot.Mesh(t, a, b, c)
	ot.MustPing(t, a.NS, b.Addr())
	dropBridged(t, h1)
	dropBridged(t, h2)
	ot.MustPing(t, a.NS, b.Addr())
	ot.MustPing(t, b.NS, c.Addr())
	ot.MustPing(t, a.NS, c.Addr())
	ot.MustPing(t, a.NS, "10.80.0.1")

	// The daemon stops: its links go, the bridge (here: dropping) carries all.
	if err := h1.Driver.Close(); err != nil {
		t.Fatal(err)
	}
	ot.MustNotPing(t, a.NS, b.Addr())
	ot.MustNotPing(t, a.NS, c.Addr())

	// A new driver, as after a restart: the network's device and FDB, then
	// each live endpoint.
	d := overlay.NewAt(h1.H, h1.Path)
	t.Cleanup(func() { _ = d.Close() })
	if err := d.CreateNetwork(context.Background(), n1); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*ot.Sandbox{a, c} {
		if repaired, err := d.Repair(context.Background(), n1, s.EP, s.Path, nil); err != nil || repaired {
			t.Fatalf("Repair %s = %v, %v; want false, nil", s.NS, repaired, err)
		}
	}
	ot.MustPing(t, a.NS, b.Addr())
	ot.MustPing(t, a.NS, c.Addr())

	// A peer removed: its frames go to the bridge (and are dropped here).
	if err := d.RemovePeer(context.Background(), n1, b.Peer()); err != nil {
		t.Fatal(err)
	}
	ot.MustNotPing(t, a.NS, b.Addr(), "-W", "1")
	// Leave: the sandbox's entry goes with its veth.
	if err := d.Leave(context.Background(), n1, c.EP, c.Path); err != nil {
		t.Fatal(err)
	}
	ot.MustNotPing(t, a.NS, c.Addr(), "-W", "1")
}

// TestTunnelFollowsFDB: with both VXLAN devices down, sandboxes on two
// hosts reach each other only through the tunnel in BPF; an FDB entry
// deleted by hand (not through the driver) takes the remote endpoint out
// of it too, and the `bridge fdb replace` that tether doctor prints puts
// it back. With TETHER_OVERLAY_BYPASS=bridge (a new driver) the devices
// carry the tunnel again, so with them down nothing gets through.
func TestTunnelFollowsFDB(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	if !h1.Driver.TunnelInBPF() {
		t.Fatal("the tunnel in BPF is not running (a kernel without TCX or bpf_redirect_neigh?)")
	}
	const vni = 4401
	id := ot.NewID()
	n1, n2 := h1.Network(id, vni, "10.81.0.0/24"), h2.Network(id, vni, "10.81.0.0/24")
	h1.CreateNetwork(t, n1)
	h2.CreateNetwork(t, n2)
	a, b := h1.Join(t, n1, "10.81.0.2/24"), h2.Join(t, n2, "10.81.0.3/24")
	ot.Mesh(t, a, b)
	ot.MustPing(t, a.NS, b.Addr())
	for _, h := range []*ot.Host{h1, h2} {
		testutil.Must(t, "ip", "-n", h.NS, "link", "set", overlay.VxlanName(vni), "down")
	}
	ot.MustPing(t, a.NS, b.Addr()) // (ARP: the sandboxes' entries are static, from the mesh)
	ot.MustPing(t, b.NS, a.Addr())

	vx, mac, vtep := overlay.VxlanName(vni), b.EP.MAC.String(), h2.VTEP.String()
	testutil.Must(t, "bridge", "-n", h1.NS, "fdb", "del", mac, "dev", vx, "dst", vtep, "self")
	eventually(t, "a no longer reaches b without b's FDB entry", func() bool {
		_, err := ot.Ping(a.NS, b.Addr(), 1, "-W", "1")
		return err != nil
	})
	testutil.Must(t, "bridge", "-n", h1.NS, "fdb", "replace", mac, "dev", vx, "dst", vtep, "self", "permanent")
	eventually(t, "a reaches b with the entry back", func() bool {
		_, err := ot.Ping(a.NS, b.Addr(), 1, "-W", "1")
		return err == nil
	})

	// Restarted with TETHER_OVERLAY_BYPASS=bridge: the devices carry the
	// tunnel (CreateNetwork brings them up; down again, nothing passes).
	t.Setenv(overlay.BypassEnv, "bridge")
	for _, x := range []struct {
		h  *ot.Host
		n  *driver.Network
		sb *ot.Sandbox
	}{{h1, n1, a}, {h2, n2, b}} {
		if err := x.h.Driver.Close(); err != nil {
			t.Fatal(err)
		}
		d := overlay.NewAt(x.h.H, x.h.Path)
		t.Cleanup(func() { _ = d.Close() })
		if d.TunnelInBPF() || !d.Bypassing() {
			t.Fatalf("with %s=bridge: tunnel in BPF %v, bypass %v; want false, true", overlay.BypassEnv, d.TunnelInBPF(), d.Bypassing())
		}
		if err := d.CreateNetwork(context.Background(), x.n); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Repair(context.Background(), x.n, x.sb.EP, x.sb.Path, nil); err != nil {
			t.Fatal(err)
		}
	}
	ot.MustPing(t, a.NS, b.Addr())
	for _, h := range []*ot.Host{h1, h2} {
		testutil.Must(t, "ip", "-n", h.NS, "link", "set", overlay.VxlanName(vni), "down")
	}
	ot.MustNotPing(t, a.NS, b.Addr(), "-W", "1")
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
