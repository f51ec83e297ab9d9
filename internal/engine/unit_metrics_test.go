package engine

import (
	"github.com/tether-net/tether/internal/metrics/metricstest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-net/tether/internal/metrics"
)

// gaugeValues collects c and returns the values of the metrics named
// name, keyed by their label values joined with "/".
func gaugeValues(t *testing.T, c prometheus.Collector, name string) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += "/"
				}
				key += l.GetValue()
			}
			out[key] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestMetricsCountOperationsAndAttaches(t *testing.T) {
	r := newRig(t)
	attaches := metrics.AttachSeconds.WithLabelValues("bridge")
	detaches := metrics.DetachSeconds.WithLabelValues("bridge")
	a0, d0 := metricstest.HistCount(t, attaches), metricstest.HistCount(t, detaches)
	ops := func(op string) float64 { return metricstest.Counter(t, metrics.Operations.WithLabelValues(op)) }
	errs := func(op, kind string) float64 {
		return metricstest.Counter(t, metrics.OperationErrors.WithLabelValues(op, kind))
	}
	c0, nf0 := ops(opConnect), errs(opConnect, "not_found")
	dc0, sbc0 := ops(opDisconnect), ops(opSandboxCreate)

	r.network("m1", "bridge", "10.10.7.0/24")
	r.network("m2", "bridge", "10.10.8.0/24")
	r.sandbox("web", "m1") // one attach
	if err := r.e.Connect(r.ctx, "m2", "web", AttachSpec{}); err != nil {
		t.Fatal(err)
	}
	if err := r.e.Connect(r.ctx, "nope", "web", AttachSpec{}); KindOf(err) != KindNotFound {
		t.Fatalf("connect to a missing network: %v", err)
	}
	if err := r.e.Disconnect(r.ctx, "m2", "web", false); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		what      string
		got, want float64
	}{
		{"attaches timed", float64(metricstest.HistCount(t, attaches) - a0), 2},
		{"detaches timed", float64(metricstest.HistCount(t, detaches) - d0), 1},
		{"connects", ops(opConnect) - c0, 2},
		{"connects not found", errs(opConnect, "not_found") - nf0, 1},
		{"disconnects", ops(opDisconnect) - dc0, 1},
		{"sandbox creates", ops(opSandboxCreate) - sbc0, 1},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}

	col := r.e.MetricsCollector()
	if got := gaugeValues(t, col, "tether_endpoints"); got["bridge"] != 1 {
		t.Errorf("tether_endpoints = %v, want bridge 1", got)
	}
	if got := gaugeValues(t, col, "tether_networks"); got["bridge"] != 3 { // bridge (default), m1, m2
		t.Errorf("tether_networks = %v, want bridge 3", got)
	}
	addrs := gaugeValues(t, col, "tether_network_addresses")
	// m1 is a /24: 254 hosts, the gateway among them is fixed; web holds one.
	if addrs["ipv4/m1/used"] != 1 || addrs["ipv4/m1/free"] != 252 { // labels sorted: family, network, state
		t.Errorf("m1 addresses: %v, want used 1 free 252", addrs)
	}
	if addrs["ipv4/m2/used"] != 0 || addrs["ipv4/m2/free"] != 253 {
		t.Errorf("m2 addresses after the disconnect: %v, want used 0 free 253", addrs)
	}
}

func TestMetricsOffCountsNothing(t *testing.T) {
	r := newRig(t)
	metrics.SetOn(false)
	t.Cleanup(func() { metrics.SetOn(true) })
	attaches := metrics.AttachSeconds.WithLabelValues("bridge")
	a0 := metricstest.HistCount(t, attaches)
	c0 := metricstest.Counter(t, metrics.Operations.WithLabelValues(opSandboxCreate))
	r.network("m1", "bridge", "10.10.7.0/24")
	r.sandbox("web", "m1")
	if got := metricstest.HistCount(t, attaches) - a0; got != 0 {
		t.Errorf("attaches timed with metrics off: %d", got)
	}
	if got := metricstest.Counter(t, metrics.Operations.WithLabelValues(opSandboxCreate)) - c0; got != 0 {
		t.Errorf("sandbox creates counted with metrics off: %v", got)
	}
}

func TestKindLabels(t *testing.T) {
	for k, want := range map[Kind]string{KindInternal: "internal", KindInvalid: "invalid", KindNotFound: "not_found",
		KindConflict: "conflict", KindForbidden: "forbidden", Kind(99): "internal"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d) = %q, want %q", k, got, want)
		}
	}
}
