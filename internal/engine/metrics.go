package engine

// Metrics of the engine (docs/observability.md). Operations are
// counted where the API enters the engine (countOp, one deferred call per
// operation); attaches and detaches are timed around the one pipeline
// (timedConnect, timedDetach). Everything that is a view of state —
// networks and endpoints per driver, address use per network, ports held,
// overlay peers, DNS forwards in flight — is read from the engine's maps
// when Prometheus scrapes (Collector), so it costs nothing on the hot
// paths.

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/metrics"
)

// Operations counted (label op of tether_operations_total).
const (
	opNetworkCreate = "network_create"
	opNetworkRemove = "network_remove"
	opSandboxCreate = "sandbox_create"
	opSandboxRemove = "sandbox_remove"
	opConnect       = "connect"
	opDisconnect    = "disconnect"
)

// String is the kind's label value (tether_operation_errors_total).
func (k Kind) String() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindNotFound:
		return "not_found"
	case KindConflict:
		return "conflict"
	case KindForbidden:
		return "forbidden"
	}
	return "internal"
}

// countOp counts operation op and, when *err is set, its failure by kind:
// defer e.countOp(op, &err).
func (e *Engine) countOp(op string, err *error) {
	if !metrics.On() {
		return
	}
	metrics.Operations.WithLabelValues(op).Inc()
	if *err != nil {
		metrics.OperationErrors.WithLabelValues(op, KindOf(*err).String()).Inc()
	}
}

// timedConnect is connectLocked, a successful attach timed by driver.
func (e *Engine) timedConnect(ctx context.Context, sb *sbState, ns *netState, a AttachSpec) error {
	if !metrics.On() {
		return e.connectLocked(ctx, sb, ns, a)
	}
	t0 := time.Now()
	err := e.connectLocked(ctx, sb, ns, a)
	if err == nil {
		metrics.AttachSeconds.WithLabelValues(ns.rec.Driver).Observe(time.Since(t0).Seconds())
	}
	return err
}

// timedDetach is detach, a successful one timed by driver.
func (e *Engine) timedDetach(ctx context.Context, sb *sbState, ns *netState, ep *Endpoint, force bool) error {
	if !metrics.On() {
		return e.detach(ctx, sb, ns, ep, force)
	}
	t0 := time.Now()
	err := e.detach(ctx, sb, ns, ep, force)
	if err == nil {
		metrics.DetachSeconds.WithLabelValues(ns.rec.Driver).Observe(time.Since(t0).Seconds())
	}
	return err
}

// MetricsCollector returns the collector of the engine's state gauges.
func (e *Engine) MetricsCollector() prometheus.Collector { return collector{e} }

type collector struct{ e *Engine }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{metrics.NetworksDesc, metrics.EndpointsDesc, metrics.AddressesDesc,
		metrics.PublishedPortsDesc, metrics.OverlayPeersDesc, metrics.DNSForwardsDesc} {
		ch <- d
	}
}

// stateCounts is what one scrape reads from the engine.
type stateCounts struct {
	networks, endpoints map[string]int // by driver
	ports               map[string]int // by protocol
	pools               []poolUse
	peers               map[string]int // by network name
}

type poolUse struct {
	network, family string
	used, free      int
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.stateCounts()
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for drv, n := range s.networks {
		gauge(metrics.NetworksDesc, n, drv)
	}
	for drv, n := range s.endpoints {
		gauge(metrics.EndpointsDesc, n, drv)
	}
	for proto, n := range s.ports {
		gauge(metrics.PublishedPortsDesc, n, proto)
	}
	for _, p := range s.pools {
		gauge(metrics.AddressesDesc, p.used, p.network, p.family, "used")
		gauge(metrics.AddressesDesc, p.free, p.network, p.family, "free")
	}
	for name, n := range s.peers {
		gauge(metrics.OverlayPeersDesc, n, name)
	}
	gauge(metrics.DNSForwardsDesc, c.e.resolver.ForwardsInFlight())
}

// stateCounts counts networks, endpoints, ports, pools and peers. The
// watcher's lock is taken before e.mu, never inside it.
func (e *Engine) stateCounts() stateCounts {
	var peerIDs map[string]int
	if g := e.global; g != nil && g.watcher != nil {
		peerIDs = g.watcher.PeerCounts()
	}
	s := stateCounts{networks: map[string]int{}, endpoints: map[string]int{}, ports: map[string]int{}, peers: map[string]int{}}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ns := range e.networks {
		s.networks[ns.rec.Driver]++
		for _, x := range []struct {
			family string
			sub    *ipam.Subnet
		}{{"ipv4", ns.subnet}, {"ipv6", ns.subnet6}} {
			if x.sub != nil {
				s.pools = append(s.pools, poolUse{network: ns.rec.Name, family: x.family, used: len(x.sub.Taken()), free: x.sub.Free()})
			}
		}
	}
	for _, sb := range e.sandboxes {
		for _, ep := range sb.rec.Endpoints {
			if ns := e.networks[ep.NetworkID]; ns != nil {
				s.endpoints[ns.rec.Driver]++
			}
		}
	}
	for _, held := range e.held {
		for _, h := range held {
			s.ports[h.Proto]++
		}
	}
	for id, n := range peerIDs {
		if ns := e.networks[id]; ns != nil {
			s.peers[ns.rec.Name] = n
		}
	}
	return s
}
