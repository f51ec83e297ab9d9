// Package metrics holds every Prometheus metric the daemon exports
// (docs/observability.md lists them) and the registry they are
// gathered from. It is a leaf: the packages that count (engine, dns,
// portmap, cluster, firewall) import it and call its vectors from a hook
// in their own metrics.go; nothing here imports them. Gauges that are a
// view of state (networks, endpoints, address use, ports held, peers) are
// not kept up to date on the hot paths: the engine's Collector reads them
// from its state at scrape time.
//
// Collection can be turned off for a process (TETHER_METRICS=0, read by the
// daemon: the bench knob that prices the metrics on attach): every hook
// then returns before taking a clock reading or touching a vector.
package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric name.
const Namespace = "tether"

// EnvSwitch names the environment variable that turns collection off when
// "0" (or "false", "off").
const EnvSwitch = "TETHER_METRICS"

var off atomic.Bool

// On reports whether metrics are collected (default true).
func On() bool { return !off.Load() }

// SetOn turns collection on or off for the whole process.
func SetOn(on bool) { off.Store(!on) }

// OffByEnv reports whether value (of EnvSwitch) turns metrics off.
func OffByEnv(value string) bool {
	switch value {
	case "0", "false", "off", "no":
		return true
	}
	return false
}

// Bucket sets, in seconds.
var (
	// opBuckets: control-plane operations (attach, detach, store round
	// trips): 0.5 ms to 10 s.
	opBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// dnsBuckets: DNS answers: 10 µs (local, from the wire) to 5 s (an
	// upstream timing out twice).
	dnsBuckets = []float64{.00001, .00005, .0001, .0005, .001, .005, .01, .05, .1, .5, 1, 2.5, 5}
)

// Engine: operations.
var (
	AttachSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "attach_duration_seconds",
		Help:    "Time to attach a sandbox to a network (the engine's attach pipeline: reserve, driver join, ports, commit), successful attaches, by network driver.",
		Buckets: opBuckets}, []string{"driver"})
	DetachSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "detach_duration_seconds",
		Help:    "Time to detach a sandbox from a network (network disconnect), successful detaches, by network driver.",
		Buckets: opBuckets}, []string{"driver"})
	Operations = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "operations_total",
		Help: "Engine operations requested, by operation (network_create, network_remove, sandbox_create, sandbox_remove, connect, disconnect)."},
		[]string{"op"})
	OperationErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "operation_errors_total",
		Help: "Engine operations that failed, by operation and error kind (invalid, not_found, conflict, forbidden, internal)."},
		[]string{"op", "kind"})
)

// DNS: the embedded resolver.
var (
	DNSSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "dns_query_duration_seconds",
		Help:    "DNS queries answered by the embedded resolver, by outcome (local, forwarded, nxdomain, refused, error), and the time from reading the query to the answer; _count is the number of queries.",
		Buckets: dnsBuckets}, []string{"outcome"})
)

// Ports: the userland proxy.
var (
	ProxyConnections = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "proxy_connections_in_flight",
		Help: "Connections (tcp) and flows (udp) the userland proxy of published ports is relaying now."},
		[]string{"proto"})
)

// Cluster store.
var (
	StoreSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "cluster_store_request_duration_seconds",
		Help:    "Round trips to the cluster store, by operation (get, list, put, create, cas, delete, cad, txn, watch, grant, keepalive, revoke); _count is the number of round trips.",
		Buckets: opBuckets}, []string{"op"})
	StoreErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "cluster_store_request_errors_total",
		Help: "Cluster store round trips that failed for want of the store (not a compare that did not hold, a key missing or present), by operation."},
		[]string{"op"})
	// WatchDelaySeconds has no labels; a vector so that a daemon without a
	// cluster store shows none.
	WatchDelaySeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "cluster_watch_delay_seconds",
		Help: "Time from a write of this node acknowledged by the cluster store to its event arriving on this node's watch.", Buckets: opBuckets}, nil)
)

// Firewall.
var (
	FirewallBatches = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "firewall_batches_total",
		Help: "nftables batches sent (one netlink transaction each: a change of networks or ports, a sync, a restore)."})
	FirewallBatchErrors = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "firewall_batch_errors_total",
		Help: "nftables batches the kernel refused."})
	FirewallRestores = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "firewall_restores_total",
		Help: "Times Tether's nftables table was found changed or removed by another program (nft flush ruleset, a firewall reload) and rebuilt."})
	FirewallRestoreErrors = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "firewall_restore_errors_total",
		Help: "Attempts to rebuild Tether's nftables table that failed."})
)

// Descriptions of the gauges computed at scrape time: by the engine's
// Collector, and by Store (the cluster store's reachability and watch lag).
var (
	NetworksDesc  = prometheus.NewDesc(Namespace+"_networks", "Networks, by driver.", []string{"driver"}, nil)
	EndpointsDesc = prometheus.NewDesc(Namespace+"_endpoints",
		"Endpoints (a sandbox's attachment to a network) on this host, by network driver.", []string{"driver"}, nil)
	AddressesDesc = prometheus.NewDesc(Namespace+"_network_addresses",
		"Addresses of a network's pool, by network, family (ipv4, ipv6) and state (used, free); used counts the gateway and reserved addresses. Local networks only (a global network's addresses are claimed in the cluster store).",
		[]string{"network", "family", "state"}, nil)
	PublishedPortsDesc = prometheus.NewDesc(Namespace+"_published_ports",
		"Published host ports held by the daemon (bound so nothing else takes them), by protocol.", []string{"proto"}, nil)
	OverlayPeersDesc = prometheus.NewDesc(Namespace+"_overlay_peers",
		"Endpoints of other nodes programmed on this node (FDB and neighbour entries), by global network.", []string{"network"}, nil)
	DNSForwardsDesc = prometheus.NewDesc(Namespace+"_dns_forwards_in_flight",
		"DNS queries forwarded upstream by the embedded resolver and not answered yet.", nil, nil)
	StoreUpDesc = prometheus.NewDesc(Namespace+"_cluster_store_up",
		"1 when the last round trip to the cluster store got an answer (or none was made yet), 0 when the last one could not reach it.", nil, nil)
	WatchLagDesc = prometheus.NewDesc(Namespace+"_cluster_watch_lag_seconds",
		"Age of the oldest write of this node that the cluster store acknowledged and this node's watch has not delivered yet; 0 when the watch is caught up.", nil, nil)
)

// all are the vectors above, registered once.
func all() []prometheus.Collector {
	return []prometheus.Collector{AttachSeconds, DetachSeconds, Operations, OperationErrors, DNSSeconds, ProxyConnections,
		StoreSeconds, StoreErrors, WatchDelaySeconds, FirewallBatches, FirewallBatchErrors, FirewallRestores, FirewallRestoreErrors}
}
