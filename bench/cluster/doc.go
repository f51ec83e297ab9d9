// Package clustersim simulates a Tether cluster on one machine (issue 21):
// many lightweight agents in one process, each the real internal/cluster
// control plane (node registration under a lease, the address-block
// allocator and its background publication, the watcher) with its own
// client of one real store (etcd, or ZooKeeper), and a fake datapath that
// records what the real overlay driver would program (an FDB + neighbour
// entry per remote endpoint: MAC, VTEP, address; the networks) instead of
// touching the kernel.
//
// The store each agent uses is wrapped (countingStore) to count writes,
// reads and watch events, and to note when an endpoint record was written
// or deleted, and a network record written (the Txn returned). The Tracker
// turns those and the fake datapaths' calls into convergence: of an
// addition, from its record's write to the moment the last other agent
// programmed it; of a removal, from its record's deletion to the last
// agent that had it removing it; of a network, from its record's write to
// each agent's NetworkAdded. The write is noted when the writer's Txn
// returned, so an agent's watch can be told before it: small negative
// times are that, not an error.
//
// The store runs in a network namespace the harness creates, and every
// agent's connections are dialled inside it, so nothing touches the
// default namespace: etcd (Debian's etcd-server) in t21s-etcd-*, client
// port 51379; ZooKeeper (Debian's zookeeper, tickTime 100 ms) in
// t21s-zk-*, client port 51381. Restart kills the server (SIGKILL) and
// starts it again on the same data directory and port; its CPU time is
// summed over incarnations.
//
// # Scenarios
//
// TestClusterSimReport (BENCH_REPORT=1, root) runs them as phases, in this
// order, after starting BENCH_HOSTS agents and an overlay network:
//
//   - attach: each agent attaches BENCH_ENDPOINTS endpoints, one after
//     another (BENCH_ATTACH_PARALLEL agents at a time), each answered when
//     its record is in the store, until all are or BENCH_BUDGET is spent;
//     then heap per host and per remote endpoint (live heap after two
//     forced collections, as before).
//   - network: a second network created while every agent watches: each
//     agent's delay to NetworkAdded, p50/p99/max over agents.
//   - churn: BENCH_CHURN_PCT % of all endpoints replaced per second for
//     BENCH_CHURN (a settled endpoint withdrawn as the engine's detach
//     does, a successor attached on the same agent or, half the time,
//     another one); convergence of every addition and removal.
//   - store_restart: the same churn for BENCH_RESTART_CHURN, with the store
//     killed a third of the way in and started again after
//     BENCH_STORE_DOWN; the agents' clients reconnect by themselves.
//     recovered_after_up_ms: from the store answering again to the moment
//     every change begun before then was seen everywhere.
//   - dead_host: the agent with the most endpoints killed (nothing
//     withdrawn, its lease left to expire): time until its endpoints are
//     gone from every other agent, over agents, against the TTL.
//   - kill10: BENCH_KILL_PCT % of the live agents killed at once; as
//     dead_host.
//
// After attach, churn, store_restart, dead_host and kill10 every live
// agent's datapath must hold exactly the other live agents' endpoints as
// published. Every phase reports its store calls, watch events, the
// agents' and the store's CPU (the server's utime+stime from
// /proc/PID/stat), each also per endpoint change, the store's database
// size (etcd: member/snap/db; ZooKeeper: the blocks its data directory
// uses) and RSS, and removals of endpoints nobody withdrew (a lease
// expired, or a spurious removal). A phase that does not converge within
// BENCH_SETTLE, or leaves a datapath wrong, is reported as failed (ok:
// false, its reason) and fails the test; the phases after it are not run.
//
//	sudo BENCH_REPORT=1 BENCH_HOSTS=50 go test ./bench/cluster -run TestClusterSimReport -v -timeout 30m
//
// Knobs (defaults): BENCH_STORE etcd|zk (etcd), BENCH_HOSTS (50),
// BENCH_ENDPOINTS per host (10), BENCH_TTL of the node leases (3s),
// BENCH_BUDGET of the attach phase (4m), BENCH_ATTACH_PARALLEL (1),
// BENCH_CHURN (60s; 30s at 300 hosts or more), BENCH_CHURN_PCT (1),
// BENCH_RESTART_CHURN (20s; 15s at 300 hosts or more), BENCH_STORE_DOWN
// (2s), BENCH_SETTLE, each phase's deadline to converge (2m),
// BENCH_KILL_PCT (10), BENCH_CPUPROFILE=FILE (the attach phase),
// BENCH_OUT=FILE (default
// bench/results/cluster-sim-<store>-<hosts>-<UTC time>.json). The JSON's
// knobs say what a run used, and when its defaults were shortened.
//
// scale.sh runs the matrix (50, 200, 500 hosts on etcd; 50, 200 on
// ZooKeeper) and TestClusterScaleSummary writes
// bench/results/cluster-scale-<date>.json: every figure against the
// smallest run of the same store, and its growth exponent between sizes
// (log of the value ratio over log of the host ratio).
//
// What a simulation cannot say: every agent's watcher runs on the same two
// cores, so convergence here is bounded by the sum of all hosts' work, not
// by one host's; the per-host figure is the agents' CPU per endpoint
// change divided by the hosts.
package clustersim
