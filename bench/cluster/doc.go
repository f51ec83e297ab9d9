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
// TestClusterSimReport, run only with BENCH_REPORT=1 (as root):
//
//	sudo BENCH_REPORT=1 BENCH_HOSTS=50 go test ./bench/cluster -run TestClusterSimReport -v -timeout 30m
//
// Knobs: BENCH_HOSTS (50), BENCH_ENDPOINTS per host (10), BENCH_TTL of the
// node leases (3s), BENCH_BUDGET for the attach phase (4m: the agents share
// this machine's CPUs, and the watchers' cost grows with hosts × records,
// so big runs attach only part), BENCH_CPUPROFILE=FILE, BENCH_OUT=FILE
// (default bench/results/cluster-sim-<UTC time>.json).
//
// What a simulation cannot say: every agent's watcher runs on the same two
// cores, so convergence here is bounded by the sum of all hosts' work, not
// by one host's; the per-host figure is the agents' CPU per endpoint
// change divided by the hosts.
package clustersim
