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

// joinRig is a bridge network in a namespace of its own and a directory
// for sandbox namespaces made as the engine makes them
// (sandbox.Kernel.Create: IPv6 off by default, the netlink handle kept for
// the first join). Everything goes at the end of the benchmark.
type joinRig struct {
	b    *testing.B
	path string // the host namespace
	d    *bridge.Driver
	n    *driver.Network
	k    sbx.Kernel
	dir  string
	i    int
}

func newJoinRig(b *testing.B, prefix string) *joinRig {
	testutil.RequireRoot(b)
	r := &joinRig{b: b, path: "/run/netns/" + testutil.NetNS(b, "tth-"+prefix)}
	h, err := tns.NewHandle(r.path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	r.d = bridge.NewAt(h, r.path)
	r.n = &driver.Network{ID: newID(), Name: prefix, BridgeName: "t" + prefix + "-" + testutil.Suffix()[:6],
		Subnet: netip.MustParsePrefix("10.233.0.0/16"), Gateway: netip.MustParseAddr("10.233.0.1"), MTU: 1500, ICC: true}
	if err := r.d.CreateNetwork(ctx, r.n); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.d.DeleteNetwork(ctx, r.n) })
	r.dir = b.TempDir()
	if err := r.k.PrepareDir(r.dir); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tns.ReleaseDir(r.dir) })
	return r
}

// next makes the next sandbox namespace and its endpoint, not joined.
func (r *joinRig) next() (string, *driver.Endpoint) {
	r.i++
	sb := filepath.Join(r.dir, fmt.Sprintf("s%d", r.i))
	if _, err := r.k.Create(sb); err != nil {
		r.b.Fatal(err)
	}
	r.b.Cleanup(func() { _ = r.k.Delete(sb) })
	p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 233, byte((r.i + 1) >> 8), byte(r.i + 1)}), 16)
	return sb, &driver.Endpoint{ID: newID(), IfName: "eth0", Address: p, MAC: driver.MACFromIP(p.Addr()),
		Gateway: r.n.Gateway, DefaultRoute: true}
}

// BenchmarkJoin times bridge.Join alone (no engine, no store, no API) on
// sandbox namespaces made outside the timer, one per join; they all stay
// until the end, so the bridge grows to b.N ports. It reports the median
// join as p50-µs. For A/B runs of two trees:
//
//	go test ./internal/driver/bridge -run '^$' -bench '^BenchmarkJoin$' -benchtime 300x -count 5
func BenchmarkJoin(b *testing.B) {
	r := newJoinRig(b, "bj")
	var took []time.Duration
	for b.Loop() {
		b.StopTimer()
		sb, ep := r.next()
		b.StartTimer()
		t0 := time.Now()
		if err := r.d.Join(ctx, r.n, ep, sb); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(t0))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
}

// BenchmarkJoinForwarding measures when a joined port starts forwarding:
// the kernel's link watcher enables it once its carrier is on, after the
// join's last request (VethPair.Dormant). After each Join it reads the
// bridge's port states (an AF_BRIDGE dump: a plain RTM_GETLINK of the port
// would run the watcher's work itself) until the port forwards, and
// reports the share of joins whose port already forwarded at the first
// read (first-look-%, a read taking ~0.1-0.5 ms), and the p50 and max of
// join-return-to-forwarding (ns/op is not meaningful).
//
//	go test ./internal/driver/bridge -run '^$' -bench '^BenchmarkJoinForwarding$' -benchtime 300x
func BenchmarkJoinForwarding(b *testing.B) {
	r := newJoinRig(b, "bf")
	w, err := testutil.NewPortWatcher(r.path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Close)
	var waits []time.Duration
	first := 0
	for b.Loop() {
		sb, ep := r.next()
		if err := r.d.Join(ctx, r.n, ep, sb); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		for reads := 0; ; reads++ {
			st, err := w.State(ep.HostIfName)
			if err != nil {
				b.Fatal(err)
			}
			if st == testutil.BridgePortForwarding {
				if reads == 0 {
					first++
				}
				break
			}
			if time.Since(t0) > 10*time.Second {
				b.Fatalf("port %s of join %d: state %d after 10 s", ep.HostIfName, r.i, st)
			}
		}
		waits = append(waits, time.Since(t0))
	}
	slices.Sort(waits)
	b.ReportMetric(100*float64(first)/float64(len(waits)), "first-look-%")
	b.ReportMetric(float64(waits[len(waits)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(waits[len(waits)-1].Microseconds()), "max-µs")
}
