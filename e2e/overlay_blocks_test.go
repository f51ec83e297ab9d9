package e2e

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// Two hosts attaching at once to one overlay take their addresses from
// their own address blocks: no address twice, and every sandbox reaches
// the other host's sandboxes by address and by name.
func TestOverlayBlocksConcurrentAttaches(t *testing.T) {
	for _, kind := range []string{"etcd", "zk"} {
		t.Run(kind, func(t *testing.T) { overlayBlocksConcurrent(t, newMultiHost(t, kind, 2)) })
	}
}

func overlayBlocksConcurrent(t *testing.T, m *multiHost) {
	m.d[0].MustTether("network", "create", "-d", "overlay", "--subnet", "10.9.0.0/24", "blocks")
	for _, d := range m.d {
		waitFor(t, "network everywhere", 5*time.Second, func() bool { return netID(d, "blocks") != "" })
	}
	const per = 8
	seen := attachConcurrently(t, m, "blocks", "h", per, func(name string) []string {
		return []string{"run", "-d", "--name", name, "--network", "blocks", "--", "sleep", "600"}
	})
	if t.Failed() {
		return
	}
	// each host's addresses lie in its own /26 blocks: no block is shared
	blockOf := map[netip.Prefix]string{}
	for a, name := range seen {
		blk, _ := netip.MustParseAddr(a).Prefix(26)
		host := name[:2]
		if other, ok := blockOf[blk]; ok && other != host {
			t.Errorf("block %s holds addresses of %s and %s", blk, other, host)
		}
		blockOf[blk] = host
	}
	// traffic both ways, by address and by name
	for i := range per {
		a, b := fmt.Sprintf("h0-%d", i), fmt.Sprintf("h1-%d", (i+1)%per)
		waitFor(t, a+" reaches "+b+" by address", 5*time.Second, func() bool { return ping(m.d[0], a, ip(t, m.d[1], b, "blocks")) })
		waitFor(t, b+" reaches "+a+" by name", 5*time.Second, func() bool { return ping(m.d[1], b, a) })
	}
}

// A restarted daemon keeps its address block and its sandboxes'
// addresses: a sandbox made after the restart gets a new address of the
// same block, and the other host reaches it; under every start mode.
func TestOverlayBlocksSurviveRestart(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		overlayBlocksSurviveRestart(t, newMultiHostIn(t, "etcd", 2, mode))
	})
}

func overlayBlocksSurviveRestart(t *testing.T, m *multiHost) {
	h1, h2 := m.d[0], m.d[1]
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.10.0.0/24", "keep")
	waitFor(t, "network on host 2", 5*time.Second, func() bool { return netID(h2, "keep") != "" })
	h1.MustTether("run", "-d", "--name", "a", "--network", "keep", "--", "sleep", "600")
	h1.MustTether("run", "-d", "--name", "b", "--network", "keep", "--", "sleep", "600")
	h2.MustTether("run", "-d", "--name", "peer", "--network", "keep", "--", "sleep", "600")
	before := map[string]string{"a": ip(t, h1, "a", "keep"), "b": ip(t, h1, "b", "keep")}
	h1.Stop()
	if err := h1.Start(); err != nil {
		t.Fatal(err)
	}
	for name, want := range before {
		if got := ip(t, h1, name, "keep"); got != want {
			t.Errorf("%s has %s after the restart, had %s", name, got, want)
		}
	}
	h1.MustTether("run", "-d", "--name", "c", "--network", "keep", "--", "sleep", "600")
	c := ip(t, h1, "c", "keep")
	if c == before["a"] || c == before["b"] {
		t.Fatalf("c got %s, an address a restored sandbox holds (%v)", c, before)
	}
	blkA, _ := netip.MustParseAddr(before["a"]).Prefix(26)
	if !blkA.Contains(netip.MustParseAddr(c)) {
		t.Errorf("c got %s outside host 1's block %s", c, blkA)
	}
	if p := ip(t, h2, "peer", "keep"); blkA.Contains(netip.MustParseAddr(p)) {
		t.Errorf("host 2's sandbox got %s in host 1's block %s", p, blkA)
	}
	waitFor(t, "peer reaches c", 5*time.Second, func() bool { return ping(h2, "peer", "c") })
	waitFor(t, "peer reaches a", 5*time.Second, func() bool { return ping(h2, "peer", "a") })
}
