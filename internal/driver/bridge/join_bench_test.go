package bridge_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	tns "github.com/tether-net/tether/internal/netns"
	sbx "github.com/tether-net/tether/internal/sandbox"
	"github.com/tether-net/tether/internal/testutil"
)

// BenchmarkJoin times bridge.Join alone (no engine, no store, no API) on
// sandbox namespaces made as the engine makes them (sandbox.Kernel.Create:
// IPv6 off by default, the netlink handle kept for the first join), one
// per join, outside the timer; they all stay until the end, so the bridge
// grows to b.N ports. It reports the median join as p50-µs. For A/B runs
// of two trees:
//
//	go test ./internal/driver/bridge -run '^$' -bench '^BenchmarkJoin$' -benchtime 300x -count 5
func BenchmarkJoin(b *testing.B) {
	testutil.RequireRoot(b)
	ns := testutil.NetNS(b, "tth-bj")
	path := "/run/netns/" + ns
	h, err := tns.NewHandle(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	d := bridge.NewAt(h, path)
	n := &driver.Network{ID: newID(), Name: "bj", BridgeName: "tbj-" + testutil.Suffix()[:6],
		Subnet: netip.MustParsePrefix("10.233.0.0/16"), Gateway: netip.MustParseAddr("10.233.0.1"), MTU: 1500, ICC: true}
	if err := d.CreateNetwork(ctx, n); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.DeleteNetwork(ctx, n) })
	var k sbx.Kernel
	dir := b.TempDir()
	if err := k.PrepareDir(dir); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tns.ReleaseDir(dir) })
	var took []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		sb := filepath.Join(dir, fmt.Sprintf("s%d", i))
		if _, err := k.Create(sb); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = k.Delete(sb) })
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 233, byte((i + 1) >> 8), byte(i + 1)}), 16)
		ep := &driver.Endpoint{ID: newID(), IfName: "eth0", Address: p, MAC: driver.MACFromIP(p.Addr()),
			Gateway: n.Gateway, DefaultRoute: true}
		b.StartTimer()
		t0 := time.Now()
		if err := d.Join(ctx, n, ep, sb); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(t0))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
}
