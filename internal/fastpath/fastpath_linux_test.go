package fastpath_test

import (
	"net"
	"testing"

	"github.com/tether-net/tether/internal/fastpath"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// pair is a sandbox namespace with eth0 (addr/24, mac) whose veth peer
// host is a port of the bridge br0 in the host namespace.
type pair struct {
	ns, host, addr string
	mac            net.HardwareAddr
	index          int // of host, in the host namespace
}

// rig is a host namespace with a bridge and two sandboxes on it; their
// neighbour entries are static, so a ping needs no ARP.
func rig(t *testing.T) (string, [2]pair) {
	t.Helper()
	testutil.RequireRoot(t)
	h := testutil.NetNS(t, "tfp-h")
	testutil.Must(t, "ip", "-n", h, "link", "add", "br0", "type", "bridge")
	testutil.Must(t, "ip", "-n", h, "link", "set", "br0", "up")
	var ps [2]pair
	for i := range ps {
		p := pair{ns: testutil.NetNS(t, "tfp-s"), host: []string{"tfpa", "tfpb"}[i], addr: []string{"10.77.0.2", "10.77.0.3"}[i]}
		p.mac, _ = net.ParseMAC([]string{"02:77:00:00:00:02", "02:77:00:00:00:03"}[i])
		testutil.Must(t, "ip", "-n", h, "link", "add", p.host, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		testutil.Must(t, "ip", "-n", h, "link", "set", p.host, "master", "br0", "up")
		testutil.Must(t, "ip", "-n", p.ns, "link", "set", "eth0", "address", p.mac.String(), "up")
		testutil.Must(t, "ip", "-n", p.ns, "addr", "add", p.addr+"/24", "dev", "eth0")
		hd, err := tns.NewHandle("/run/netns/" + h)
		if err != nil {
			t.Fatal(err)
		}
		l, err := hd.LinkByName(p.host)
		hd.Close()
		if err != nil {
			t.Fatal(err)
		}
		p.index = l.Attrs().Index
		ps[i] = p
	}
	for i, p := range ps {
		o := ps[1-i]
		testutil.Must(t, "ip", "-n", p.ns, "neigh", "add", o.addr, "lladdr", o.mac.String(), "dev", "eth0", "nud", "permanent")
	}
	return h, ps
}

func ping(ns, to string) error {
	_, err := testutil.InNS(ns, "ping", "-c", "1", "-W", "1", to)
	return err
}

// TestRedirectBypassesBridge: with the bridge down, a sandbox reaches the
// other only while the program redirects between their host ends; frames
// for a MAC without a destination entry go on to the (dead) bridge.
func TestRedirectBypassesBridge(t *testing.T) {
	h, ps := rig(t)
	if err := ping(ps[0].ns, ps[1].addr); err != nil {
		t.Fatalf("through the bridge: %v", err)
	}
	testutil.Must(t, "ip", "-n", h, "link", "set", "br0", "down")
	if err := ping(ps[0].ns, ps[1].addr); err == nil {
		t.Fatal("the rig is wrong: ping with the bridge down")
	}
	p, err := fastpath.New("/run/netns/"+h, 4789)
	if err != nil {
		t.Fatalf("fast path: %v", err) // a kernel without TCX fails here, under TETHER_E2E too
	}
	defer p.Close()
	const seg = 7
	for _, s := range ps {
		if err := p.Attach(s.index, seg); err != nil {
			t.Fatal(err)
		}
	}
	// One direction only: the reply has no way yet.
	if err := p.SetDest(seg, ps[1].mac, ps[1].index, true); err != nil {
		t.Fatal(err)
	}
	if err := ping(ps[0].ns, ps[1].addr); err == nil {
		t.Fatal("ping answered with only one direction redirected")
	}
	if err := p.SetDest(seg, ps[0].mac, ps[0].index, true); err != nil {
		t.Fatal(err)
	}
	if err := ping(ps[0].ns, ps[1].addr); err != nil {
		t.Fatalf("ping with both directions redirected: %v", err)
	}
	// A sandbox that sends with another source MAC is not redirected (the
	// bridge would see it, here: nothing does).
	testutil.Must(t, "ip", "-n", ps[0].ns, "link", "set", "eth0", "address", "02:77:00:00:00:09")
	testutil.Must(t, "ip", "-n", ps[0].ns, "neigh", "replace", ps[1].addr, "lladdr", ps[1].mac.String(), "dev", "eth0", "nud", "permanent")
	if err := ping(ps[0].ns, ps[1].addr); err == nil {
		t.Fatal("a frame with a source MAC that does not live there was redirected")
	}
	testutil.Must(t, "ip", "-n", ps[0].ns, "link", "set", "eth0", "address", ps[0].mac.String())
	// (a new MAC flushed the neighbour entries, permanent ones too)
	testutil.Must(t, "ip", "-n", ps[0].ns, "neigh", "replace", ps[1].addr, "lladdr", ps[1].mac.String(), "dev", "eth0", "nud", "permanent")
	if err := ping(ps[0].ns, ps[1].addr); err != nil {
		t.Fatalf("ping with the MAC back: %v", err)
	}
	if idx, peer, ok, err := p.Dest(seg, ps[1].mac); err != nil || !ok || !peer || idx != ps[1].index {
		t.Errorf("Dest = %d %v %v %v, want %d true true", idx, peer, ok, err, ps[1].index)
	}
	// Another segment's entries do not apply.
	if err := p.Attach(ps[0].index, seg+1); err != nil {
		t.Fatal(err)
	}
	if err := ping(ps[0].ns, ps[1].addr); err == nil {
		t.Fatal("ping answered from another segment")
	}
	if err := p.Attach(ps[0].index, seg); err != nil {
		t.Fatal(err)
	}
	if err := ping(ps[0].ns, ps[1].addr); err != nil {
		t.Fatalf("ping after re-attach: %v", err)
	}
	// Detach: the bridge (down) again.
	if err := p.Detach(ps[0].index); err != nil {
		t.Fatal(err)
	}
	if p.Attached(ps[0].index) {
		t.Error("still attached after Detach")
	}
	if err := ping(ps[0].ns, ps[1].addr); err == nil {
		t.Fatal("ping answered after Detach")
	}
	if err := p.Attach(ps[0].index, seg); err != nil {
		t.Fatal(err)
	}
	if err := p.DropSegment(seg); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := p.Dest(seg, ps[0].mac); ok {
		t.Error("destination left after DropSegment")
	}
	if err := ping(ps[0].ns, ps[1].addr); err == nil {
		t.Fatal("ping answered after DropSegment")
	}
	// Close takes the links: nothing is left attached.
	p.Close()
	testutil.Must(t, "ip", "-n", h, "link", "set", "br0", "up")
	if err := ping(ps[0].ns, ps[1].addr); err != nil {
		t.Fatalf("through the bridge after Close: %v", err)
	}
}

func TestBadMAC(t *testing.T) {
	testutil.RequireRoot(t)
	p, err := fastpath.New("", 4789)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.SetDest(1, net.HardwareAddr{1, 2, 3}, 1, false); err == nil {
		t.Error("a 3-byte MAC was accepted")
	}
	if err := p.DelDest(1, nil); err == nil {
		t.Error("an empty MAC was accepted")
	}
}
