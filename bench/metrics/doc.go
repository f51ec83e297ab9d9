// Package metrics measures what the Prometheus metrics cost on the attach
// path (issue 20): the same sandbox creations (a create with one attach to
// a bridge network, over the daemon's API) against a daemon collecting
// metrics and one started with TETHER_METRICS=0, which turns every hook
// off (no clock reading, no counter touched). Each round starts one daemon
// of each kind, alternating which goes first, in fresh namespaces, and
// attaches BENCH_N sandboxes in a row on each; the figure is the ratio of
// the medians (with / without), per round and pooled, target ≤ 1.03.
//
// The daemon with metrics is checked to have counted every attach (its
// GET /metrics histogram), the one without to answer GET /metrics with 404,
// so the comparison is between what it claims to compare.
//
// Everything runs in namespaces the benchmark creates (prefix t20m) and
// deletes. Entry point: `sudo bench/run.sh metrics`; TestMetricsSmoke is
// the small run of the suite.
package metrics
