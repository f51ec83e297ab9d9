package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// dropBridgedIP makes every bridge in the host namespace ns forward no IPv4
// or IPv6 frame (ARP still passes): what still arrives between overlay
// sandboxes went by the bridge bypass. The namespace goes with the test.
func dropBridgedIP(t *testing.T, ns string) {
	t.Helper()
	testutil.Must(t, "ip", "netns", "exec", ns, "nft",
		"add table bridge te_drop; add chain bridge te_drop through { type filter hook forward priority 0; policy accept; }; "+
			"add rule bridge te_drop through ether type ip drop; add rule bridge te_drop through ether type ip6 drop")
}

// TestOverlayBridgeBypass: through the real daemons, frames between overlay
// sandboxes skip the bridges (docs/overlay.md, "Bridge bypass"). With both
// hosts' bridges forwarding no IP frame, sandboxes on two hosts and two on
// one host still reach each other, by name. With host 1's daemon stopped
// (its program's links gone) host 2's sandbox no longer reaches host 1's:
// the bypass carried it. Restarted (under each start mode), the daemons put
// the live sandboxes back on it, and a sandbox made after the restart gets it.
// With the VXLAN devices down too, the tunnel in BPF carries the same pings.
func TestOverlayBridgeBypass(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		m := newMultiHostIn(t, "etcd", 2, mode)
		h1, h2 := m.d[0], m.d[1]
		h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.6.0.0/24", "fast")
		waitFor(t, "network on host 2", 5*time.Second, func() bool { return netID(h2, "fast") != "" })
		h1.MustTether("run", "-d", "--name", "a", "--network", "fast", "--", "sleep", "600")
		h1.MustTether("run", "-d", "--name", "c", "--network", "fast", "--", "sleep", "600")
		h2.MustTether("run", "-d", "--name", "b", "--network", "fast", "--", "sleep", "600")
		waitFor(t, "a reaches b", 5*time.Second, func() bool { return ping(h1, "a", "b") })
		for _, d := range m.d {
			dropBridgedIP(t, d.NS)
		}
		reach := func(when string) {
			t.Helper()
			for _, p := range []struct {
				d        *testutil.Daemon
				from, to string
			}{{h1, "a", "b"}, {h2, "b", "a"}, {h2, "b", "c"}, {h1, "a", "c"}} {
				if !ping(p.d, p.from, p.to) {
					t.Errorf("%s: %s does not reach %s with the bridges forwarding no IP", when, p.from, p.to)
				}
			}
		}
		reach("bypass")
		// The tunnel in BPF (docs/overlay.md, "VXLAN in BPF"): with both
		// hosts' VXLAN devices down as well, the programs encapsulate and
		// decapsulate by themselves (the sandboxes' ARP entries are fresh).
		vxDevs := func(ns string) []string {
			var names []string
			for _, line := range strings.Split(strings.TrimSpace(testutil.Must(t, "ip", "-n", ns, "-o", "link", "show", "type", "vxlan")), "\n") {
				if f := strings.Fields(line); len(f) > 1 {
					names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
				}
			}
			return names
		}
		for _, d := range m.d {
			for _, vx := range vxDevs(d.NS) {
				testutil.Must(t, "ip", "-n", d.NS, "link", "set", vx, "down")
			}
		}
		reach("tunnel in BPF, VXLAN devices down")
		for _, d := range m.d {
			for _, vx := range vxDevs(d.NS) {
				testutil.Must(t, "ip", "-n", d.NS, "link", "set", vx, "up")
			}
		}
		aAddr := ip(t, h1, "a", "fast")

		h1.Stop()
		if ping(h2, "b", aAddr) {
			t.Error("b reached a with host 1's daemon stopped: the bridges' drop is not in the way, the test proves nothing")
		}
		if err := h1.Start(); err != nil {
			t.Fatal(err)
		}
		restart(t, h2)
		waitFor(t, "a reaches b after the restarts", 10*time.Second, func() bool { return ping(h1, "a", "b") })
		reach("after the restarts")
		h2.MustTether("run", "-d", "--name", "d", "--network", "fast", "--", "sleep", "600")
		waitFor(t, "a reaches the new d", 5*time.Second, func() bool { return ping(h1, "a", "d") })
	})
}
