// Package clustersim simulates a Tether cluster on one machine (issue 21):
// many lightweight agents in one process, each the real internal/cluster
// control plane (node registration under a lease, the address-block
// allocator and its background publication, the watcher) with its own
// client of one real etcd, and a fake datapath that records what the real
// overlay driver would program (an FDB + neighbour entry per remote
// endpoint: MAC, VTEP, address; the networks) instead of touching the
// kernel.
//
// The store each agent uses is wrapped (countingStore) to count writes,
// reads and watch events, and to note when an endpoint record was written
// (the Txn that puts it returned): convergence is from that moment to the
// moment the last other agent's fake datapath recorded the endpoint.
//
// etcd runs in a network namespace the harness creates (prefix t21s, client
// port 51379); every agent's connections are dialled inside it, so nothing
// touches the default namespace. The scenario and its report are
// TestClusterSimReport (BENCH_REPORT=1; see report_test.go).
package clustersim
