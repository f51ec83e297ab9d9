#!/bin/bash
# Issue 21's scale matrix in one session: the cluster simulation
# (TestClusterSimReport) at several sizes on etcd and on ZooKeeper, one run
# at a time, then a summary giving every figure against the smallest run of
# the same store, with its growth exponent between sizes.
#
#   sudo bench/cluster/scale.sh
#
# Environment:
#   SCALE_ETCD   sizes (hosts) on etcd        default "50 200 500"
#   SCALE_ZK     sizes on ZooKeeper           default "50 200" ("" skips a store)
#   BENCH_ENDPOINTS, BENCH_TTL, BENCH_CHURN, BENCH_RESTART_CHURN, BENCH_STORE_DOWN,
#   BENCH_SETTLE, BENCH_CHURN_PCT, BENCH_KILL_PCT: passed to every run (doc.go)
#   BENCH_ATTACH_PARALLEL  agents attaching at once (default here 4; the test's own default is 1)
#   BENCH_BUDGET the attach phase's budget (default here: 2m at 50 hosts, 3m above)
#   SCALE_OUT    where the JSON goes (default bench/results)
#   GO           the go command (default: go on PATH)
#
# Time: about 25 minutes on 2 cores with the defaults; at 300 hosts and
# more the test shortens its churn phases (30 s, store restart 15 s) unless
# BENCH_CHURN / BENCH_RESTART_CHURN are set, and says so in its JSON.
# Output: bench/results/cluster-sim-<store>-<hosts>-<date>.json per run and
# bench/results/cluster-scale-<date>.json (SCALE_OUT changes the directory). A failed run is kept (its JSON
# says ok: false) and the matrix goes on; the script exits 1 if one failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
	echo "needs root: the simulation runs its store in a network namespace" >&2
	exit 1
fi
go=${GO:-go}
date=$(date -u +%Y%m%dT%H%M%SZ)
outdir=$(realpath -m "${SCALE_OUT:-bench/results}")
mkdir -p "$outdir"
etcd_sizes=${SCALE_ETCD-50 200 500}
zk_sizes=${SCALE_ZK-50 200}
parallel=${BENCH_ATTACH_PARALLEL:-4}
runs=()
failed=0
note="BENCH_ATTACH_PARALLEL=$parallel"
start=$(date +%s)
for store in etcd zk; do
	if [ $store = etcd ]; then sizes=$etcd_sizes; else sizes=$zk_sizes; fi
	for hosts in $sizes; do
		budget=${BENCH_BUDGET:-$([ "$hosts" -le 50 ] && echo 2m || echo 3m)}
		out=$outdir/cluster-sim-$store-$hosts-$date.json
		note="$note; $store $hosts: BENCH_BUDGET=$budget"
		echo "== $store, $hosts hosts (attach budget $budget, $parallel at once) -> $out"
		t0=$(date +%s)
		BENCH_REPORT=1 BENCH_STORE=$store BENCH_HOSTS=$hosts BENCH_BUDGET=$budget \
			BENCH_ATTACH_PARALLEL=$parallel BENCH_OUT=$out \
			"$go" test ./bench/cluster -run '^TestClusterSimReport$' -count=1 -v -timeout 30m 2>&1 |
			grep -v '^ \{8\}' # the JSON is in the file; keep the log short
		rc=${PIPESTATUS[0]}
		echo "== $store $hosts: exit $rc after $(($(date +%s) - t0)) s"
		[ "$rc" = 0 ] || failed=1
		[ -s "$out" ] && runs+=("$out")
	done
done
echo "== matrix took $(($(date +%s) - start)) s"
if [ ${#runs[@]} -gt 0 ]; then
	summary=$outdir/cluster-scale-$date.json
	BENCH_SCALE_RUNS="${runs[*]}" BENCH_SCALE_OUT=$summary BENCH_SCALE_NOTE="$note; matrix $(($(date +%s) - start)) s" \
		"$go" test ./bench/cluster -run '^TestClusterScaleSummary$' -count=1 -v || failed=1
fi
exit $failed
