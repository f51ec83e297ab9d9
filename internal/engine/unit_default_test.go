package engine

// The default network follows the daemon's configuration across restarts
// (predefined.go): unchanged, it is left exactly as it is; changed, it is
// rebuilt only while no sandbox uses it; ip-masq changes in place.

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/ipam"
)

func TestDefaultNetworkUnchanged(t *testing.T) {
	r := newRig(t)
	def := r.ns(DefaultNetworkName).rec
	sb := r.sandbox("web")
	from := len(r.drv["bridge"].Calls())
	r.restart()
	if got := r.ns(DefaultNetworkName).rec; !sameJSON(t, got, def) {
		t.Errorf("default network %+v after a restart, want %+v", got, def)
	}
	if calls := r.drv["bridge"].Calls()[from:]; slices.Contains(calls, "DeleteNetwork") {
		t.Errorf("default network rebuilt: %v", calls)
	}
	if got := r.getSandbox("web"); !sameJSON(t, got.Endpoints, sb.Endpoints) {
		t.Errorf("sandbox changed: %+v", got.Endpoints)
	}
}

// A changed bip moves the default network only while no sandbox uses it.
func TestDefaultNetworkChanged(t *testing.T) {
	r := newRig(t)
	id := r.ns(DefaultNetworkName).rec.ID
	r.sandbox("web")
	r.stop()
	r.cfg.BIP = "10.198.0.1/24"
	err := r.tryStart()
	if err == nil || !strings.Contains(err.Error(), "web") || !strings.Contains(err.Error(), "default network") {
		t.Fatalf("start with a changed bip under a sandbox: %v; want it refused naming the sandbox", err)
	}
	r.cfg.BIP = defaultBIP
	r.start()
	if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	r.stop()
	r.cfg.BIP = "10.198.0.1/24"
	r.start()
	def := r.ns(DefaultNetworkName).rec
	if def.Subnet != netip.MustParsePrefix("10.198.0.0/24") || def.Gateway != netip.MustParseAddr("10.198.0.1") {
		t.Errorf("default network on %s via %s, want bip's", def.Subnet, def.Gateway)
	}
	if def.ID != id {
		t.Errorf("default network ID changed")
	}
	if got := attachIP(t, r, "next", AttachSpec{Network: DefaultNetworkName}); got != "10.198.0.2" {
		t.Errorf("sandbox got %s, want 10.198.0.2", got)
	}
}

// ip-masq is changed in place: the record and the firewall follow, the
// network and its sandboxes are not touched.
func TestDefaultNetworkMasquerade(t *testing.T) {
	r := newRig(t)
	def := r.ns(DefaultNetworkName).rec
	r.sandbox("web")
	r.stop()
	r.cfg.IPMasq = false
	from := len(r.drv["bridge"].Calls())
	r.start()
	if got := r.ns(DefaultNetworkName).rec; got.Masquerade || got.Subnet != def.Subnet {
		t.Errorf("default network %+v, want masquerade off, the rest kept", got)
	}
	r.fw.mu.Lock()
	fwNet := r.fw.nets[def.ID]
	r.fw.mu.Unlock()
	if fwNet.Masquerade {
		t.Error("firewall still masquerades the default network")
	}
	if calls := r.drv["bridge"].Calls()[from:]; slices.Contains(calls, "DeleteNetwork") {
		t.Errorf("default network rebuilt for ip-masq: %v", calls)
	}
	if _, err := r.e.Sandbox("web"); err != nil {
		t.Error(err)
	}
}

// bridge "none": no default network, and sandboxes that name no network
// get none.
func TestDefaultNetworkNone(t *testing.T) {
	r := newRig(t)
	id := r.ns(DefaultNetworkName).rec.ID
	r.stop()
	r.cfg.Bridge = "none"
	r.start()
	if _, err := r.e.Network(DefaultNetworkName); KindOf(err) != KindNotFound {
		t.Fatalf("default network: %v, want it removed", err)
	}
	if slices.Contains(r.drv["bridge"].Networks(), id) {
		t.Error("default network left in the driver")
	}
	if sb := r.sandbox("loner"); len(sb.Endpoints) != 0 {
		t.Errorf("sandbox joined %+v", sb.Endpoints)
	}
}

// bridge names a link the user made: the default network adopts it with
// its address (the gateway), never marks or deletes it.
func TestDefaultNetworkUserBridge(t *testing.T) {
	r := newRig(t)
	r.stop()
	r.drv["bridge"].AddHostLink("br-user", netip.MustParsePrefix("192.168.77.1/24"))
	r.drv["bridge"].AddHostLink("br-bare", netip.Prefix{})
	r.cfg.Bridge, r.cfg.BIP = "br-bare", ""
	if err := r.tryStart(); err == nil || !strings.Contains(err.Error(), "br-bare") {
		t.Fatalf("start on a bridge without an address: %v", err)
	}
	r.cfg.Bridge = "br-user"
	r.start()
	def := r.ns(DefaultNetworkName).rec
	if !def.External || def.BridgeName != "br-user" || def.Subnet != netip.MustParsePrefix("192.168.77.0/24") || def.Gateway != netip.MustParseAddr("192.168.77.1") {
		t.Fatalf("default network %+v, want the user's bridge and its address", def)
	}
	if got := attachIP(t, r, "web", AttachSpec{Network: DefaultNetworkName}); got != "192.168.77.2" {
		t.Errorf("sandbox got %s", got)
	}
	for _, name := range r.drv["bridge"].Links() {
		if name == "br-user" {
			t.Error("the user's bridge was marked as Tether's")
		}
	}
}

// Without bip the first start chooses a subnet no host route covers; later
// starts keep it, though a route came to cover it.
func TestDefaultNetworkChosen(t *testing.T) {
	r := newRig(t)
	id := r.ns(DefaultNetworkName).rec.ID
	r.stop()
	if err := r.st.Delete(r.ctx, keyNetworks+id); err != nil { // as a first start
		t.Fatal(err)
	}
	r.cfg.BIP = ""
	r.start()
	want := netip.MustParsePrefix("198.18.1.0/24")
	if got := r.ns(DefaultNetworkName).rec.Subnet; got != want {
		t.Fatalf("chose %s, want %s (198.18.0.0/24 is a host route)", got, want)
	}
	r.hostRoutes = append(r.hostRoutes, ipam.Blocker{Prefix: want, Source: "a VPN came up"})
	r.restart()
	if got := r.ns(DefaultNetworkName).rec.Subnet; got != want {
		t.Errorf("restart moved the default network to %s", got)
	}
}

// fixed-cidr limits the sandboxes' addresses to a range of the subnet.
func TestDefaultNetworkFixedCIDR(t *testing.T) {
	r := newRig(t)
	r.stop()
	r.cfg.FixedCIDR = "10.199.0.128/25"
	r.start()
	if got := attachIP(t, r, "web", AttachSpec{Network: DefaultNetworkName}); got != "10.199.0.128" {
		t.Errorf("sandbox got %s, want the range's first", got)
	}
}
