package overlay_test

// Kernel tests: simulated hosts on a test underlay (testutil.NewUnderlay),
// each running the driver on a netlink handle bound to its own namespace.
// As root they run; under TETHER_E2E=1 without root they fail.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/overlay"
	ot "github.com/tether-net/tether/internal/driver/overlay/overlaytest"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

var ctx = context.Background()

// setup makes two hosts on one underlay and, after the test, checks that
// nothing of the driver's appeared in the test process's own namespace.
func setup(t *testing.T, mtu int) (*testutil.Underlay, *ot.Host, *ot.Host) {
	t.Helper()
	testutil.RequireRoot(t)
	t.Cleanup(func() { checkDefaultNS(t) })
	u := testutil.NewUnderlay(t, mtu)
	return u, ot.NewHost(t, u), ot.NewHost(t, u)
}

// checkDefaultNS fails if the default namespace holds a link named like the
// driver's.
func checkDefaultNS(t *testing.T) {
	links, err := netlink.LinkList()
	if err != nil {
		t.Errorf("list links of the default namespace: %v", err)
		return
	}
	for _, l := range links {
		name := l.Attrs().Name
		for _, p := range []string{overlay.BridgePrefix, overlay.VxlanPrefix, overlay.HostIfPrefix} {
			if strings.HasPrefix(name, p) {
				t.Errorf("link %q in the default namespace", name)
			}
		}
	}
}

// twoSandboxes creates one overlay network on both hosts with a sandbox on
// each, meshed.
func twoSandboxes(t *testing.T, h1, h2 *ot.Host, vni int, subnet, a1, a2 string) (*ot.Sandbox, *ot.Sandbox) {
	t.Helper()
	id := ot.NewID()
	n1, n2 := h1.Network(id, vni, subnet), h2.Network(id, vni, subnet)
	h1.CreateNetwork(t, n1)
	h2.CreateNetwork(t, n2)
	a, b := h1.Join(t, n1, a1), h2.Join(t, n2, a2)
	ot.Mesh(t, a, b)
	return a, b
}

func linkByName(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %q: %v", name, err)
	}
	return l
}

func sandboxLink(t *testing.T, s *ot.Sandbox) netlink.Link {
	t.Helper()
	h, err := tns.NewHandle(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	return linkByName(t, h, s.EP.IfName)
}

// TestPingAcrossHosts: two sandboxes on two hosts, one VNI, reach each
// other through VXLAN; the kernel state is the documented datapath.
func TestPingAcrossHosts(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	a, b := twoSandboxes(t, h1, h2, 4096, "10.77.0.0/24", "10.77.0.2/24", "10.77.0.3/24")
	ot.MustPing(t, a.NS, b.Addr())
	ot.MustPing(t, b.NS, a.Addr())

	vx := linkByName(t, h1.H, overlay.VxlanName(4096)).(*netlink.Vxlan)
	br := linkByName(t, h1.H, overlay.BridgeName(4096))
	eth0 := linkByName(t, h1.H, "eth0")
	t.Run("vxlan device", func(t *testing.T) {
		checks := []struct {
			what      string
			got, want any
		}{
			{"VNI", vx.VxlanId, 4096},
			{"port", vx.Port, 4789},
			{"local", vx.SrcAddr.String(), h1.Addr},
			{"underlay device", vx.VtepDevIndex, eth0.Attrs().Index},
			{"learning", vx.Learning, false},
			{"proxy", vx.Proxy, true},
			{"l2miss", vx.L2miss, false},
			{"l3miss", vx.L3miss, false},
			{"master", vx.MasterIndex, br.Attrs().Index},
			{"MTU", vx.MTU, 1450},
			{"alias", vx.Alias, overlay.NetworkAlias(a.Net.ID)},
			{"up", vx.Flags&net.FlagUp != 0, true},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
			}
		}
		// The ping's frames skip the device when the bypass does the
		// tunnel itself (TestTunnelIsVXLAN in internal/fastpath: the
		// same packets on the wire); they cross the underlay either way.
		var through netlink.Link = vx
		if h1.Driver.TunnelInBPF() {
			through = linkByName(t, h1.H, "eth0")
		}
		if st := through.Attrs().Statistics; st == nil || st.TxPackets == 0 || st.RxPackets == 0 {
			t.Errorf("no packets through %s: %+v", through.Attrs().Name, st)
		}
	})
	t.Run("IPv6 off on host-side links", func(t *testing.T) {
		for _, l := range []string{vx.Name, br.Attrs().Name, a.EP.HostIfName} {
			for key, want := range map[string]string{"disable_ipv6": "1", "accept_ra": "0"} {
				out, err := testutil.InNS(h1.NS, "cat", "/proc/sys/net/ipv6/conf/"+l+"/"+key)
				if err != nil || strings.TrimSpace(out) != want {
					t.Errorf("%s %s = %q (%v), want %s", l, key, strings.TrimSpace(out), err, want)
				}
			}
		}
	})
	t.Run("bridge has no address", func(t *testing.T) {
		addrs, err := h1.H.AddrList(br, netlink.FAMILY_ALL)
		if err != nil || len(addrs) != 0 {
			t.Errorf("addresses on %s: %v %v", br.Attrs().Name, addrs, err)
		}
	})
	t.Run("fdb and neighbour entries", func(t *testing.T) {
		out := testutil.Must(t, "ip", "-n", h1.NS, "-d", "neigh", "show", "dev", vx.Name)
		if want := fmt.Sprintf("%s lladdr %s", b.Addr(), b.EP.MAC); !strings.Contains(out, want) || !strings.Contains(out, "PERMANENT") {
			t.Errorf("ip neigh show dev %s:\n%s\nwant %q PERMANENT", vx.Name, out, want)
		}
		out = testutil.Must(t, "bridge", "-n", h1.NS, "fdb", "show", "dev", vx.Name)
		if want := fmt.Sprintf("%s dst %s self permanent", b.EP.MAC, h2.Addr); !strings.Contains(out, want) {
			t.Errorf("bridge fdb show dev %s:\n%s\nwant %q", vx.Name, out, want)
		}
		peers, err := h1.Driver.Peers(ctx, a.Net)
		if err != nil || len(peers) != 1 || !peers[0].Equal(b.Peer()) {
			t.Errorf("Peers = %v, %v; want [%v]", peers, err, b.Peer())
		}
	})
	t.Run("sandbox has no default route", func(t *testing.T) {
		out := testutil.Must(t, "ip", "-n", a.NS, "route", "show", "default")
		if strings.TrimSpace(out) != "" {
			t.Errorf("default route in the sandbox: %s", out)
		}
	})
}

// TestMTU: the sandbox MTU is underlay-50 (or the network's smaller MTU);
// the largest unfragmented ping passes with DF set, one byte more fails, and
// the underlay never fragments.
func TestMTU(t *testing.T) {
	for _, c := range []struct {
		name              string
		underlay, netMTU  int
		wantMTU, maxBytes int
	}{
		{"underlay 1500", 1500, 0, 1450, 1422},
		{"underlay 9000", 9000, 0, 8950, 8922},
		{"network MTU 1400 below the limit", 1500, 1400, 1400, 1372},
		{"network MTU 1500 capped", 1500, 1500, 1450, 1422},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, h1, h2 := setup(t, c.underlay)
			id := ot.NewID()
			n1, n2 := h1.Network(id, 77, "10.78.0.0/24"), h2.Network(id, 77, "10.78.0.0/24")
			n1.MTU, n2.MTU = c.netMTU, c.netMTU
			h1.CreateNetwork(t, n1)
			h2.CreateNetwork(t, n2)
			a, b := h1.Join(t, n1, "10.78.0.2/24"), h2.Join(t, n2, "10.78.0.3/24")
			ot.Mesh(t, a, b)
			for _, s := range []*ot.Sandbox{a, b} {
				if got := sandboxLink(t, s).Attrs().MTU; got != c.wantMTU {
					t.Errorf("MTU of %s in %s = %d, want %d", s.EP.IfName, s.NS, got, c.wantMTU)
				}
				host := linkByName(t, s.Host.H, s.EP.HostIfName)
				if got := host.Attrs().MTU; got != c.wantMTU {
					t.Errorf("MTU of host end %s = %d, want %d", s.EP.HostIfName, got, c.wantMTU)
				}
			}
			ot.MustPing(t, a.NS, b.Addr())
			frag := fragCreates(t, h1.NS)
			ot.MustPing(t, a.NS, b.Addr(), "-M", "do", "-s", strconv.Itoa(c.maxBytes))
			ot.MustNotPing(t, a.NS, b.Addr(), "-M", "do", "-s", strconv.Itoa(c.maxBytes+1))
			if got := fragCreates(t, h1.NS); got != frag {
				t.Errorf("host %s fragmented %d packets on the underlay", h1.NS, got-frag)
			}
		})
	}
}

// fragCreates reads Ip FragCreates of a namespace (/proc/net/snmp).
func fragCreates(t *testing.T, ns string) int {
	t.Helper()
	out, err := testutil.InNS(ns, "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "FragCreates"); i > 0 && i < len(f) {
			n, _ := strconv.Atoi(f[i])
			return n
		}
	}
	t.Fatalf("no Ip FragCreates in /proc/net/snmp of %s", ns)
	return 0
}

// TestIsolation: two networks with different VNIs and overlapping subnets
// (the same address, hence the same MAC, on both) carry their own traffic
// only; even an FDB/neighbour entry pointing at the other network's sandbox
// does not cross the VNI boundary.
func TestIsolation(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	const subnet = "10.79.0.0/24"
	a1, a2 := twoSandboxes(t, h1, h2, 100, subnet, "10.79.0.2/24", "10.79.0.3/24")
	b1, b2 := twoSandboxes(t, h1, h2, 200, subnet, "10.79.0.2/24", "10.79.0.4/24")
	ot.MustPing(t, a1.NS, a2.Addr())
	ot.MustPing(t, b1.NS, b2.Addr())
	ot.MustPing(t, b2.NS, b1.Addr())
	ot.MustNotPing(t, a1.NS, b2.Addr()) // 10.79.0.4 exists only in VNI 200
	ot.MustNotPing(t, b1.NS, a2.Addr()) // 10.79.0.3 exists only in VNI 100

	// Misprogram VNI 100 on both hosts with VNI 200's sandboxes: frames go
	// out as VNI 100 and must still never reach a VNI 200 sandbox.
	for _, c := range []struct {
		h   *ot.Host
		n   *driver.Network
		bad *ot.Sandbox
	}{{h1, a1.Net, b2}, {h2, a2.Net, b1}} {
		if err := c.h.Driver.AddPeer(ctx, c.n, c.bad.Peer()); err != nil {
			t.Fatal(err)
		}
	}
	rx := func(vni int) uint64 { return linkByName(t, h2.H, overlay.VxlanName(vni)).Attrs().Statistics.RxPackets }
	rx100, rx200 := rx(100), rx(200)
	ot.MustNotPing(t, a1.NS, b2.Addr())
	if got := rx(100); got == rx100 {
		t.Errorf("the misdirected frames did not arrive on host 2 as VNI 100")
	}
	if got := rx(200); got != rx200 {
		t.Errorf("VNI 200's device on host 2 received %d packets sent on VNI 100", got-rx200)
	}
	ot.MustPing(t, a1.NS, a2.Addr())
	ot.MustPing(t, b1.NS, b2.Addr())
}

// TestRemovePeer: removing a peer makes it unreachable, removing again (or
// a peer never added) succeeds, re-adding restores it, and removing a
// moved peer's old location keeps the new one.
func TestRemovePeer(t *testing.T) {
	u, h1, h2 := setup(t, 1500)
	h3 := ot.NewHost(t, u)
	a, b := twoSandboxes(t, h1, h2, 300, "10.80.0.0/24", "10.80.0.2/24", "10.80.0.3/24")
	ot.MustPing(t, a.NS, b.Addr())
	elsewhere := b.Peer()
	elsewhere.VTEP = h3.VTEP
	never := overlay.Peer{IP: netip.MustParseAddr("10.80.0.99"), MAC: driver.MACFromIP(netip.MustParseAddr("10.80.0.99")), VTEP: h2.VTEP}

	steps := []struct {
		name      string
		do        func() error
		reachable bool
		peers     []overlay.Peer // on h1 afterwards
	}{
		{"remove", func() error { return h1.Driver.RemovePeer(ctx, a.Net, b.Peer()) }, false, nil},
		{"remove again", func() error { return h1.Driver.RemovePeer(ctx, a.Net, b.Peer()) }, false, nil},
		{"remove one never added", func() error { return h1.Driver.RemovePeer(ctx, a.Net, never) }, false, nil},
		{"re-add", func() error { return h1.Driver.AddPeer(ctx, a.Net, b.Peer()) }, true, []overlay.Peer{b.Peer()}},
		{"add again", func() error { return h1.Driver.AddPeer(ctx, a.Net, b.Peer()) }, true, []overlay.Peer{b.Peer()}},
		{"move to another host", func() error { return h1.Driver.AddPeer(ctx, a.Net, elsewhere) }, false, []overlay.Peer{elsewhere}},
		{"move back", func() error { return h1.Driver.AddPeer(ctx, a.Net, b.Peer()) }, true, []overlay.Peer{b.Peer()}},
		{"remove the old location", func() error { return h1.Driver.RemovePeer(ctx, a.Net, elsewhere) }, true, []overlay.Peer{b.Peer()}},
		{"remove a partial peer (neighbour only)", func() error {
			if err := h1.H.NeighDel(&netlink.Neigh{LinkIndex: vxIndex(t, h1, 300), Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
				HardwareAddr: b.EP.MAC, IP: h2.VTEP.AsSlice()}); err != nil {
				return err
			}
			ps, err := h1.Driver.Peers(ctx, a.Net)
			if err != nil || len(ps) != 1 || ps[0].VTEP.IsValid() {
				return fmt.Errorf("Peers after deleting the fdb entry = %v, %v; want one without VTEP", ps, err)
			}
			return h1.Driver.RemovePeer(ctx, a.Net, ps[0])
		}, false, nil},
		{"re-add", func() error { return h1.Driver.AddPeer(ctx, a.Net, b.Peer()) }, true, []overlay.Peer{b.Peer()}},
		{"remove both locations at once", func() error {
			return h1.Driver.RemovePeers(ctx, a.Net, []overlay.Peer{elsewhere, b.Peer(), never})
		}, false, nil},
		{"re-add after all", func() error { return h1.Driver.AddPeer(ctx, a.Net, b.Peer()) }, true, []overlay.Peer{b.Peer()}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		peers, err := h1.Driver.Peers(ctx, a.Net)
		if err != nil {
			t.Fatalf("%s: Peers: %v", s.name, err)
		}
		if !slices.EqualFunc(peers, s.peers, overlay.Peer.Equal) {
			t.Errorf("%s: Peers = %v, want %v", s.name, peers, s.peers)
		}
		if s.reachable {
			ot.MustPing(t, a.NS, b.Addr())
		} else {
			ot.MustNotPing(t, a.NS, b.Addr())
		}
	}
}

func vxIndex(t *testing.T, h *ot.Host, vni int) int {
	return linkByName(t, h.H, overlay.VxlanName(vni)).Attrs().Index
}

// TestReprogramLossless: re-running CreateNetwork, AddPeer and Join over
// existing state keeps every link (same indexes) and drops no packet of a
// ping running every 10 ms meanwhile.
func TestReprogramLossless(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	a, b := twoSandboxes(t, h1, h2, 400, "10.81.0.0/24", "10.81.0.2/24", "10.81.0.3/24")
	c := h1.Join(t, a.Net, "10.81.0.4/24") // a second local sandbox on h1
	ot.Mesh(t, a, b, c)
	ot.MustPing(t, a.NS, b.Addr())
	ot.MustPing(t, b.NS, c.Addr())
	sbs := []*ot.Sandbox{a, b, c}
	before := indexes(t, sbs)
	peersBefore, err := h1.Driver.Peers(ctx, a.Net)
	if err != nil {
		t.Fatal(err)
	}

	wait := ot.BackgroundPing(t, a.NS, b.Addr(), 10*time.Millisecond, 300)
	wait2 := ot.BackgroundPing(t, b.NS, c.Addr(), 10*time.Millisecond, 300)
	passes := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); passes++ {
		for _, h := range []*ot.Host{h1, h2} {
			n := a.Net
			if h == h2 {
				n = b.Net
			}
			if err := h.Driver.CreateNetwork(ctx, n); err != nil {
				t.Fatalf("pass %d: CreateNetwork on %s: %v", passes, h.NS, err)
			}
		}
		ot.Mesh(t, sbs...)
		for _, s := range sbs {
			ep := *s.EP
			if err := s.Host.Driver.Join(ctx, s.Net, &ep, s.Path); err != nil {
				t.Fatalf("pass %d: Join %s again: %v", passes, s.NS, err)
			}
			if ep.HostIfName != s.EP.HostIfName {
				t.Fatalf("pass %d: Join %s again chose host end %q, was %q", passes, s.NS, ep.HostIfName, s.EP.HostIfName)
			}
		}
	}
	for i, w := range []func() (int, int){wait, wait2} {
		sent, received := w()
		t.Logf("ping %d: %d sent, %d received during %d reprogram passes", i, sent, received, passes)
		if sent == 0 || received != sent {
			t.Errorf("ping %d lost %d of %d packets while reprogramming", i, sent-received, sent)
		}
	}
	if after := indexes(t, sbs); !slices.Equal(before, after) {
		t.Errorf("link indexes changed: %v -> %v", before, after)
	}
	if peers, err := h1.Driver.Peers(ctx, a.Net); err != nil || !slices.EqualFunc(peers, peersBefore, overlay.Peer.Equal) {
		t.Errorf("Peers = %v, %v; want %v", peers, err, peersBefore)
	}
}

// indexes lists the index of every link involved: bridges, VXLAN devices,
// both veth ends.
func indexes(t *testing.T, sbs []*ot.Sandbox) []string {
	var out []string
	seen := map[*ot.Host]bool{}
	for _, s := range sbs {
		if !seen[s.Host] {
			seen[s.Host] = true
			for _, name := range []string{overlay.BridgeName(s.Net.VNI), overlay.VxlanName(s.Net.VNI)} {
				out = append(out, fmt.Sprintf("%s/%s=%d", s.Host.NS, name, linkByName(t, s.Host.H, name).Attrs().Index))
			}
		}
		out = append(out, fmt.Sprintf("%s=%d", s.EP.HostIfName, linkByName(t, s.Host.H, s.EP.HostIfName).Attrs().Index))
		out = append(out, fmt.Sprintf("%s/%s=%d", s.NS, s.EP.IfName, sandboxLink(t, s).Attrs().Index))
	}
	return out
}

// TestCreateNetworkRepairs: an existing VXLAN device with the wrong
// configuration is replaced; a right one is kept; links that are not the
// network's are a conflict and left alone.
func TestCreateNetworkRepairs(t *testing.T) {
	_, h1, _ := setup(t, 1500)
	eth0 := linkByName(t, h1.H, "eth0").Attrs().Index
	right := func(n *driver.Network) *netlink.Vxlan {
		return &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: overlay.VxlanName(n.VNI), TxQLen: -1}, VxlanId: n.VNI,
			VtepDevIndex: eth0, SrcAddr: n.VTEP.AsSlice(), Port: 4789, Proxy: true}
	}
	for i, c := range []struct {
		name    string
		mutate  func(*netlink.Vxlan)
		alias   func(n *driver.Network) string
		kept    bool
		wantErr error
	}{
		{name: "right", mutate: func(*netlink.Vxlan) {}, kept: true},
		{name: "wrong VNI", mutate: func(v *netlink.Vxlan) { v.VxlanId++ }},
		{name: "wrong port", mutate: func(v *netlink.Vxlan) { v.Port = 8472 }},
		{name: "wrong local", mutate: func(v *netlink.Vxlan) { v.SrcAddr = net.ParseIP("198.18.0.99") }},
		{name: "no underlay device", mutate: func(v *netlink.Vxlan) { v.VtepDevIndex = 0 }},
		{name: "learning on", mutate: func(v *netlink.Vxlan) { v.Learning = true }},
		{name: "proxy off", mutate: func(v *netlink.Vxlan) { v.Proxy = false }},
		{name: "l3miss on", mutate: func(v *netlink.Vxlan) { v.L3miss = true }},
		{name: "not Tether's", mutate: func(*netlink.Vxlan) {}, alias: func(*driver.Network) string { return "someone else's" }, kept: true, wantErr: overlay.ErrConflict},
		{name: "another network's", mutate: func(*netlink.Vxlan) {}, alias: func(*driver.Network) string { return overlay.NetworkAlias(ot.NewID()) }, kept: true, wantErr: overlay.ErrConflict},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := h1.Network(ot.NewID(), 500+i, "10.82.0.0/24")
			v := right(n)
			c.mutate(v)
			if err := h1.H.LinkAdd(v); err != nil {
				t.Fatal(err)
			}
			alias := overlay.NetworkAlias(n.ID)
			if c.alias != nil {
				alias = c.alias(n)
			}
			old := linkByName(t, h1.H, v.Name)
			if err := h1.H.LinkSetAlias(old, alias); err != nil {
				t.Fatal(err)
			}
			err := h1.Driver.CreateNetwork(ctx, n)
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil) != (err == nil) {
				t.Fatalf("CreateNetwork = %v, want %v", err, c.wantErr)
			}
			got := linkByName(t, h1.H, v.Name).(*netlink.Vxlan)
			if kept := got.Index == old.Attrs().Index; kept != c.kept {
				t.Errorf("device kept = %v, want %v", kept, c.kept)
			}
			if c.wantErr != nil {
				if got.Alias != alias {
					t.Errorf("alias of a foreign link changed to %q", got.Alias)
				}
				_ = h1.H.LinkDel(got)
				return
			}
			want := right(n)
			if got.VxlanId != want.VxlanId || got.Port != want.Port || !got.SrcAddr.Equal(want.SrcAddr) ||
				got.VtepDevIndex != eth0 || got.Learning || !got.Proxy || got.L3miss || got.MTU != 1450 {
				t.Errorf("device after CreateNetwork: %+v", got)
			}
			if br := linkByName(t, h1.H, overlay.BridgeName(n.VNI)); got.MasterIndex != br.Attrs().Index {
				t.Errorf("device not on the bridge")
			}
		})
	}
}

// TestDeleteNetwork: Leave and DeleteNetwork remove every link the driver
// made (and a veth left behind), and both are idempotent.
func TestDeleteNetwork(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	a, b := twoSandboxes(t, h1, h2, 600, "10.83.0.0/24", "10.83.0.2/24", "10.83.0.3/24")
	c := h1.Join(t, a.Net, "10.83.0.4/24") // never Left: DeleteNetwork takes its veth too
	for range 2 {
		if err := h1.Driver.Leave(ctx, a.Net, a.EP, a.Path); err != nil {
			t.Fatalf("Leave: %v", err)
		}
	}
	if _, err := h1.H.LinkByName(a.EP.HostIfName); err == nil {
		t.Errorf("host end %s still there after Leave", a.EP.HostIfName)
	}
	if out := testutil.Must(t, "ip", "-n", a.NS, "-br", "link"); strings.Contains(out, "eth0") {
		t.Errorf("sandbox end still there after Leave:\n%s", out)
	}
	for _, h := range []*ot.Host{h1, h2} {
		n := a.Net
		if h == h2 {
			n = b.Net
		}
		for range 2 {
			if err := h.Driver.DeleteNetwork(ctx, n); err != nil {
				t.Fatalf("DeleteNetwork on %s: %v", h.NS, err)
			}
		}
		out := testutil.Must(t, "ip", "-n", h.NS, "-br", "link")
		for _, p := range []string{overlay.BridgePrefix, overlay.VxlanPrefix, overlay.HostIfPrefix} {
			if strings.Contains(out, p) {
				t.Errorf("links left on %s after DeleteNetwork:\n%s", h.NS, out)
			}
		}
	}
	if out := testutil.Must(t, "ip", "-n", c.NS, "-br", "link"); strings.Contains(out, "eth0") {
		t.Errorf("sandbox end of a veth left on the network still there:\n%s", out)
	}
	if err := h1.Driver.Leave(ctx, c.Net, c.EP, c.Path); err != nil {
		t.Errorf("Leave after DeleteNetwork: %v", err)
	}
	if _, err := h1.Driver.Peers(ctx, a.Net); err == nil {
		t.Errorf("Peers of a deleted network succeeded")
	}
	if err := h1.Driver.RemovePeer(ctx, a.Net, b.Peer()); err != nil {
		t.Errorf("RemovePeer on a deleted network: %v", err)
	}
}

// TestJoinRepairs: Join on an endpoint that is wired but damaged (host end
// down, off the bridge; sandbox end down, address gone) repairs it in place,
// and Join with a lost host name finds the pair again by its alias.
func TestJoinRepairs(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	a, b := twoSandboxes(t, h1, h2, 700, "10.84.0.0/24", "10.84.0.2/24", "10.84.0.3/24")
	ot.MustPing(t, a.NS, b.Addr())
	before := indexes(t, []*ot.Sandbox{a})
	testutil.Must(t, "ip", "-n", h1.NS, "link", "set", a.EP.HostIfName, "nomaster", "down")
	testutil.Must(t, "ip", "-n", a.NS, "addr", "flush", "dev", "eth0")
	testutil.Must(t, "ip", "-n", a.NS, "link", "set", "eth0", "down")
	ot.MustNotPing(t, a.NS, b.Addr())
	if err := h1.Driver.Join(ctx, a.Net, a.EP, a.Path); err != nil {
		t.Fatalf("Join to repair: %v", err)
	}
	ot.MustPing(t, a.NS, b.Addr())
	lost := *a.EP
	lost.HostIfName = ""
	if err := h1.Driver.Join(ctx, a.Net, &lost, a.Path); err != nil {
		t.Fatalf("Join with a lost host name: %v", err)
	}
	if lost.HostIfName != a.EP.HostIfName {
		t.Errorf("Join found host end %q, want %q", lost.HostIfName, a.EP.HostIfName)
	}
	if after := indexes(t, []*ot.Sandbox{a}); !slices.Equal(before, after) {
		t.Errorf("link indexes changed: %v -> %v", before, after)
	}
	other := &driver.Endpoint{ID: ot.NewID(), IfName: "eth0", Address: netip.MustParsePrefix("10.84.0.9/24")}
	if err := h1.Driver.Join(ctx, a.Net, other, a.Path); !errors.Is(err, overlay.ErrConflict) {
		t.Errorf("Join of another endpoint as an existing eth0 = %v, want a conflict", err)
	}
	ot.MustPing(t, a.NS, b.Addr())
}

// TestThroughputQuick: a short iperf3 run over the overlay and the
// underlay; logs the ratio (BenchmarkOverlayThroughput measures it).
func TestThroughputQuick(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("iperf3"); err != nil {
		if testutil.E2E() {
			t.Fatal("iperf3 is not installed (TETHER_E2E=1)")
		}
		t.Skip("iperf3 is not installed")
	}
	t.Cleanup(func() { checkDefaultNS(t) })
	r := ot.Throughput(t, 1, 1)
	t.Log(r)
	if r.Overlay <= 0.1 {
		t.Errorf("overlay throughput %.3f Gbit/s", r.Overlay)
	}
}

// TestJoinRollsBack: a Join that fails after creating the veth pair (here
// the kernel refuses an IPv6 address on an interface with IPv6 disabled)
// leaves no link behind on either side.
func TestJoinRollsBack(t *testing.T) {
	_, h1, _ := setup(t, 1500)
	n := h1.Network(ot.NewID(), 800, "10.85.0.0/24")
	h1.CreateNetwork(t, n)
	sb := testutil.NetNS(t, "tth-sb")
	ep := &driver.Endpoint{ID: ot.NewID(), IfName: "eth0", Address: netip.MustParsePrefix("2001:db8::2/64"), DisableIPv6: true}
	err := h1.Driver.Join(ctx, n, ep, "/run/netns/"+sb)
	if err == nil || !strings.Contains(err.Error(), "address 2001:db8::2/64") {
		t.Fatalf("Join with an IPv6 address on an IPv6-disabled interface = %v, want the address refused", err)
	}
	if out := testutil.Must(t, "ip", "-n", h1.NS, "-br", "link"); strings.Contains(out, overlay.HostIfPrefix) {
		t.Errorf("host end left after a failed Join:\n%s", out)
	}
	if out := testutil.Must(t, "ip", "-n", sb, "-br", "link"); strings.Contains(out, "eth0") {
		t.Errorf("sandbox end left after a failed Join:\n%s", out)
	}
}

// TestCreateNetworkRollsBack: when the VXLAN device cannot be made (a
// foreign device already uses the VNI on port 4789), the bridge this call
// made is removed again and the foreign device is untouched.
func TestCreateNetworkRollsBack(t *testing.T) {
	_, h1, _ := setup(t, 1500)
	n := h1.Network(ot.NewID(), 900, "10.86.0.0/24")
	testutil.Must(t, "ip", "-n", h1.NS, "link", "add", "foreign0", "type", "vxlan", "id", "900", "dstport", "4789", "local", h1.Addr, "dev", "eth0")
	if err := h1.Driver.CreateNetwork(ctx, n); err == nil {
		t.Fatal("CreateNetwork succeeded beside a device with the same VNI")
	}
	out := testutil.Must(t, "ip", "-n", h1.NS, "-br", "link")
	if strings.Contains(out, overlay.BridgePrefix) || strings.Contains(out, overlay.VxlanPrefix) {
		t.Errorf("links left after a failed CreateNetwork:\n%s", out)
	}
	if !strings.Contains(out, "foreign0") {
		t.Errorf("foreign device gone:\n%s", out)
	}
}

// TestDualStack: a dual-stack network on two hosts (and a second sandbox
// on the first): IPv6 pings between sandboxes across hosts through VXLAN,
// with the neighbour solicitations answered by the VXLAN device's proxy
// from the IPv6 neighbour entries AddPeer programs (there is no other way
// over: no FDB entry takes multicast), and on one host over the bridge;
// the full-size IPv6 packet passes; IPv6 is on without addresses on the
// host-side links; Peers reads IP6 back; removing a peer removes its IPv6
// entry and a Join repairs a lost IPv6 address.
func TestDualStack(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	id := ot.NewID()
	n1, n2 := h1.DualStackNetwork(id, 900, "10.86.0.0/24", "fd00:86::/64"), h2.DualStackNetwork(id, 900, "10.86.0.0/24", "fd00:86::/64")
	h1.CreateNetwork(t, n1)
	h2.CreateNetwork(t, n2)
	a, b := h1.Join6(t, n1, "10.86.0.2/24", "fd00:86::2/64"), h2.Join6(t, n2, "10.86.0.3/24", "fd00:86::3/64")
	c := h1.Join6(t, n1, "10.86.0.4/24", "fd00:86::4/64")
	ot.Mesh(t, a, b, c)
	ot.MustPing(t, a.NS, b.Addr6())
	ot.MustPing(t, b.NS, a.Addr6())
	ot.MustPing(t, b.NS, c.Addr6())
	ot.MustPing(t, a.NS, c.Addr6()) // same host: over the bridge
	ot.MustPing(t, a.NS, b.Addr())
	// 1450 - 40 (IPv6) - 8 (ICMPv6) fits, one byte more does not
	ot.MustPing(t, a.NS, b.Addr6(), "-M", "do", "-s", "1402")
	ot.MustNotPing(t, a.NS, b.Addr6(), "-M", "do", "-s", "1403")

	vx := linkByName(t, h1.H, overlay.VxlanName(900))
	br := linkByName(t, h1.H, overlay.BridgeName(900))
	t.Run("IPv6 on without addresses on host-side links", func(t *testing.T) {
		for _, l := range []string{vx.Attrs().Name, br.Attrs().Name, a.EP.HostIfName} {
			for key, want := range map[string]string{"disable_ipv6": "0", "accept_ra": "0"} {
				out, err := testutil.InNS(h1.NS, "cat", "/proc/sys/net/ipv6/conf/"+l+"/"+key)
				if err != nil || strings.TrimSpace(out) != want {
					t.Errorf("%s %s = %q (%v), want %s", l, key, strings.TrimSpace(out), err, want)
				}
			}
			addrs, err := h1.H.AddrList(linkByName(t, h1.H, l), netlink.FAMILY_ALL)
			if err != nil || len(addrs) != 0 {
				t.Errorf("addresses on %s: %v %v", l, addrs, err)
			}
		}
	})
	t.Run("sandbox end", func(t *testing.T) {
		for key, want := range map[string]string{"disable_ipv6": "0", "accept_ra": "0"} {
			out, err := testutil.InNS(a.NS, "cat", "/proc/sys/net/ipv6/conf/eth0/"+key)
			if err != nil || strings.TrimSpace(out) != want {
				t.Errorf("eth0 %s = %q (%v), want %s", key, strings.TrimSpace(out), err, want)
			}
		}
		out := testutil.Must(t, "ip", "-n", a.NS, "-6", "addr", "show", "dev", "eth0", "scope", "global")
		if !strings.Contains(out, "inet6 fd00:86::2/64") || !strings.Contains(out, "nodad") {
			t.Errorf("eth0's global IPv6 addresses:\n%s\nwant fd00:86::2/64 nodad", out)
		}
		if out := testutil.Must(t, "ip", "-n", a.NS, "-6", "route", "show", "default"); strings.TrimSpace(out) != "" {
			t.Errorf("IPv6 default route in the sandbox: %s", out)
		}
		// b's address was resolved to b's MAC, by the VXLAN device's proxy
		out = testutil.Must(t, "ip", "-n", a.NS, "-6", "neigh", "show", b.Addr6())
		if !strings.Contains(out, "lladdr "+b.EP.MAC.String()) {
			t.Errorf("neighbour %s in %s: %q, want lladdr %s", b.Addr6(), a.NS, out, b.EP.MAC)
		}
	})
	t.Run("IPv6 neighbour entry and Peers", func(t *testing.T) {
		out := testutil.Must(t, "ip", "-n", h1.NS, "-6", "neigh", "show", "dev", vx.Attrs().Name)
		if want := fmt.Sprintf("%s lladdr %s PERMANENT", b.Addr6(), b.EP.MAC); !strings.Contains(out, want) {
			t.Errorf("ip -6 neigh show dev %s:\n%s\nwant %q", vx.Attrs().Name, out, want)
		}
		peers, err := h1.Driver.Peers(ctx, a.Net)
		if err != nil || len(peers) != 1 || !peers[0].Equal(b.Peer()) || !peers[0].IP6.IsValid() {
			t.Errorf("Peers = %v, %v; want [%v]", peers, err, b.Peer())
		}
	})
	t.Run("remove and re-add", func(t *testing.T) {
		if err := h1.Driver.RemovePeer(ctx, a.Net, b.Peer()); err != nil {
			t.Fatal(err)
		}
		if out := testutil.Must(t, "ip", "-n", h1.NS, "-6", "neigh", "show", "dev", vx.Attrs().Name, "nud", "permanent"); strings.TrimSpace(out) != "" {
			t.Errorf("IPv6 neighbour entries left after RemovePeer:\n%s", out)
		}
		if peers, err := h1.Driver.Peers(ctx, a.Net); err != nil || len(peers) != 0 {
			t.Errorf("Peers after RemovePeer = %v, %v", peers, err)
		}
		ot.MustNotPing(t, a.NS, b.Addr6())
		// a partial peer: the IPv6 entry alone (as a crash could leave it)
		if err := h1.Driver.AddPeer(ctx, a.Net, overlay.Peer{IP6: b.EP.Address6.Addr(), MAC: b.EP.MAC, VTEP: h2.VTEP}); err != nil {
			t.Fatal(err)
		}
		if err := h1.H.NeighDel(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			HardwareAddr: b.EP.MAC, IP: h2.VTEP.AsSlice()}); err != nil {
			t.Fatal(err)
		}
		want := overlay.Peer{IP6: b.EP.Address6.Addr(), MAC: b.EP.MAC}
		if peers, err := h1.Driver.Peers(ctx, a.Net); err != nil || len(peers) != 1 || !peers[0].Equal(want) {
			t.Errorf("Peers with the IPv6 entry alone = %v, %v; want [%v]", peers, err, want)
		}
		if err := h1.Driver.AddPeer(ctx, a.Net, b.Peer()); err != nil {
			t.Fatal(err)
		}
		ot.MustPing(t, a.NS, b.Addr6())
		ot.MustPing(t, a.NS, b.Addr())
	})
	t.Run("Join repairs a lost IPv6 address", func(t *testing.T) {
		testutil.Must(t, "ip", "-n", a.NS, "-6", "addr", "flush", "dev", "eth0", "scope", "global")
		ot.MustNotPing(t, a.NS, b.Addr6())
		if err := h1.Driver.Join(ctx, a.Net, a.EP, a.Path); err != nil {
			t.Fatal(err)
		}
		ot.MustPing(t, a.NS, b.Addr6())
	})
	t.Run("refused", func(t *testing.T) {
		v4 := h1.Network(ot.NewID(), 901, "10.87.0.0/24")
		h1.CreateNetwork(t, v4)
		ep := &driver.Endpoint{ID: ot.NewID(), IfName: "eth1", Address: netip.MustParsePrefix("10.87.0.2/24"), Address6: netip.MustParsePrefix("fd00:87::2/64")}
		if err := h1.Driver.Join(ctx, v4, ep, a.Path); !errors.Is(err, overlay.ErrInvalid) {
			t.Errorf("Join with an IPv6 address to an IPv4-only network = %v, want invalid", err)
		}
		if err := h1.Driver.AddPeer(ctx, v4, b.Peer()); !errors.Is(err, overlay.ErrInvalid) {
			t.Errorf("AddPeer with IP6 on an IPv4-only network = %v, want invalid", err)
		}
		small := h1.DualStackNetwork(ot.NewID(), 902, "10.88.0.0/24", "fd00:88::/64")
		small.MTU = 1200
		if err := h1.Driver.CreateNetwork(ctx, small); !errors.Is(err, overlay.ErrInvalid) {
			t.Errorf("CreateNetwork of a dual-stack network with MTU 1200 = %v, want invalid", err)
		}
	})
}

// TestIPv6Underlay: the hosts' VTEPs are IPv6 addresses of the underlay:
// the VXLAN device sends over IPv6 (FDB entries with IPv6 destinations),
// the overlay MTU is underlay-70, and a dual-stack network works over it.
func TestIPv6Underlay(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	v1, v2 := netip.MustParseAddr("fd99::10"), netip.MustParseAddr("fd99::11")
	for _, hv := range []struct {
		h *ot.Host
		v netip.Addr
	}{{h1, v1}, {h2, v2}} {
		testutil.Must(t, "ip", "-n", hv.h.NS, "addr", "add", hv.v.String()+"/64", "dev", "eth0", "nodad")
	}
	id := ot.NewID()
	n1, n2 := h1.DualStackNetwork(id, 950, "10.89.0.0/24", "fd00:89::/64"), h2.DualStackNetwork(id, 950, "10.89.0.0/24", "fd00:89::/64")
	n1.VTEP, n2.VTEP = v1, v2
	h1.CreateNetwork(t, n1)
	h2.CreateNetwork(t, n2)
	a, b := h1.Join6(t, n1, "10.89.0.2/24", "fd00:89::2/64"), h2.Join6(t, n2, "10.89.0.3/24", "fd00:89::3/64")
	pa, pb := a.Peer(), b.Peer()
	pa.VTEP, pb.VTEP = v1, v2
	if err := h1.Driver.AddPeer(ctx, n1, pb); err != nil {
		t.Fatal(err)
	}
	if err := h2.Driver.AddPeer(ctx, n2, pa); err != nil {
		t.Fatal(err)
	}
	vx := linkByName(t, h1.H, overlay.VxlanName(950)).(*netlink.Vxlan)
	if vx.SrcAddr.String() != v1.String() || vx.MTU != 1430 {
		t.Errorf("VXLAN device: local %v, MTU %d; want %v, 1430", vx.SrcAddr, vx.MTU, v1)
	}
	ot.MustPing(t, a.NS, b.Addr())
	ot.MustPing(t, a.NS, b.Addr6())
	ot.MustPing(t, b.NS, a.Addr6())
	// 1430 - 28 fits unfragmented, one byte more does not
	ot.MustPing(t, a.NS, b.Addr(), "-M", "do", "-s", "1402")
	ot.MustNotPing(t, a.NS, b.Addr(), "-M", "do", "-s", "1403")
	if peers, err := h1.Driver.Peers(ctx, n1); err != nil || len(peers) != 1 || !peers[0].Equal(pb) {
		t.Errorf("Peers = %v, %v; want [%v]", peers, err, pb)
	}
	// without the hosts' IPv4 underlay addresses it still works: the
	// packets go over IPv6
	for _, h := range []*ot.Host{h1, h2} {
		testutil.Must(t, "ip", "-n", h.NS, "addr", "del", h.Addr+"/24", "dev", "eth0")
	}
	ot.MustPing(t, a.NS, b.Addr())
	ot.MustPing(t, b.NS, a.Addr6())
	if err := h1.Driver.RemovePeer(ctx, n1, pb); err != nil {
		t.Fatal(err)
	}
	if peers, err := h1.Driver.Peers(ctx, n1); err != nil || len(peers) != 0 {
		t.Errorf("Peers after RemovePeer = %v, %v", peers, err)
	}
	ot.MustNotPing(t, a.NS, b.Addr6())
}
