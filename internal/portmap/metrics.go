package portmap

import "github.com/tether-net/tether/internal/metrics"

// proxyOpen counts one connection (tcp) or flow (udp) the userland proxy
// relays (tether_proxy_connections_in_flight); call the function returned
// when it ends.
func proxyOpen(proto string) (closed func()) {
	if !metrics.On() {
		return func() {}
	}
	g := metrics.ProxyConnections.WithLabelValues(proto)
	g.Inc()
	return g.Dec
}
