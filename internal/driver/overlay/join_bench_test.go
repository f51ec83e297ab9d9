package overlay_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	ot "github.com/tether-net/tether/internal/driver/overlay/overlaytest"
	"github.com/tether-net/tether/internal/testutil"
)

// BenchmarkJoin times the drivers' Join alone (no engine, no store): an
// overlay endpoint against a bridge endpoint on the same simulated host,
// interleaved, a fresh sandbox namespace each (made outside the timer).
//
//	go test ./internal/driver/overlay -run '^$' -bench Join -benchtime 200x
func BenchmarkJoin(b *testing.B) {
	testutil.RequireRoot(b)
	u := testutil.NewUnderlay(b, 1500)
	h := ot.NewHost(b, u)
	on := h.Network(ot.NewID(), 4242, "10.231.0.0/16")
	h.CreateNetwork(b, on)
	bd := bridge.NewAt(h.H, h.Path)
	bn := &driver.Network{ID: ot.NewID(), Name: "b", BridgeName: "tbb-" + testutil.Suffix()[:6], Subnet: netip.MustParsePrefix("10.232.0.0/16"),
		Gateway: netip.MustParseAddr("10.232.0.1"), MTU: 1500, ICC: true}
	if err := bd.CreateNetwork(context.Background(), bn); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		join func(ep *driver.Endpoint, ns string) error
		net  netip.Prefix
	}{
		{"overlay", func(ep *driver.Endpoint, ns string) error { return h.Driver.Join(context.Background(), on, ep, ns) }, on.Subnet},
		{"bridge", func(ep *driver.Endpoint, ns string) error { return bd.Join(context.Background(), bn, ep, ns) }, bn.Subnet},
	} {
		b.Run(c.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				b.StopTimer()
				ns := testutil.NetNSIn(b, b.TempDir())
				i++
				a := c.net.Addr().As4()
				a[2], a[3] = byte(i>>8), byte(i)+2
				p := netip.PrefixFrom(netip.AddrFrom4(a), 16)
				ep := &driver.Endpoint{ID: ot.NewID(), IfName: "eth0", Address: p, MAC: driver.MACFromIP(p.Addr()), DisableIPv6: true}
				b.StartTimer()
				if err := c.join(ep, ns); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
