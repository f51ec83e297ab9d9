package overlay_test

import (
	"os/exec"
	"testing"

	ot "github.com/tether-net/tether/internal/driver/overlay/overlaytest"
	"github.com/tether-net/tether/internal/testutil"
)

// BenchmarkOverlayThroughput compares one TCP stream (iperf3 -t 5, receiver
// Gbit/s, three alternating rounds, medians) sandbox-to-sandbox over the overlay with host-to-host over the
// underlay, on two simulated hosts of the same machine, and reports both and
// their ratio (target >= 0.85). Run it once:
//
//	go test ./internal/driver/overlay -run '^$' -bench OverlayThroughput -benchtime 1x
func BenchmarkOverlayThroughput(b *testing.B) {
	testutil.RequireRoot(b)
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("iperf3 is not installed")
	}
	var sum ot.ThroughputResult
	for range b.N {
		r := ot.Throughput(b, 5, 3)
		b.Log(r)
		sum.Underlay += r.Underlay
		sum.Overlay += r.Overlay
		sum.Ratio += r.Ratio
	}
	n := float64(b.N)
	b.ReportMetric(sum.Underlay/n, "underlay-Gbit/s")
	b.ReportMetric(sum.Overlay/n, "overlay-Gbit/s")
	b.ReportMetric(sum.Ratio/n, "ratio")
}
