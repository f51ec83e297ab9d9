#!/usr/bin/env bash
# Runs a benchmark scenario as root and writes its JSON report to
# bench/results/<scenario>-<date>.json (committed: bench/README.md cites only
# runs whose file is there; add a new one with git add bench/results/<file>).
#
#   sudo bench/run.sh [scenario]      scenario: attach (default), lifecycle, ports, proxy, scale, dns, dns-abuse, cni, docker, dockerplugin, overlay, overlay-tput, ipv6, drivers, memory, metrics, doctor, cluster-sim
#
# Environment: BENCH_N (sandboxes in a row, default 200; ports: 1000),
# BENCH_REPS (rounds, default 3), GO (the go command, default: go on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-attach}
case $scenario in
attach) pkg=./bench/attach test='^TestAttachReport$' ;;
lifecycle) pkg=./bench/lifecycle test='^TestLifecycleReport$' ;;
ports) pkg=./bench/ports test='^TestPortsReport$' n=1000 ;;
proxy) pkg=./bench/ports test='^TestProxyReport$' reps=13 ;;
scale) pkg=./bench/lifecycle test='^TestScaleReport$' n=1000 ;;
dns) pkg=./bench/dns test='^TestDNSReport$' n=50 reps=5 refs=bench/dns/refs.sh ;;
dns-abuse) pkg=./bench/dns test='^TestDNSAbuseReport$' reps=3 ;;
cni) pkg=./bench/cni test='^TestCNIReport$' refs=bench/refs/cni.sh ;;
overlay) pkg=./bench/overlay test='^TestOverlayReport$' n=100 ;;
ipv6) pkg=./bench/ipv6 test='^TestIPv6Report$' ;;
memory) pkg=./bench/memory test='^TestMemoryReport$' n=400 ;;
overlay-tput) pkg=./bench/overlay test='^TestOverlayThroughputReport$' reps=3 ;;
drivers) pkg=./bench/drivers test='^TestDriversReport$' n=100 ;;
firewall) pkg=./bench/firewall test='^TestRestoreReport$' n=50 reps=20 ;;
docker) pkg=./bench/compare test='^TestPublishVsDockerReport$' refs='bench/refs/docker.sh bench/refs/podman.sh' ;;
dockerplugin) pkg=./bench/dockerplugin test='^TestDockerPluginReport$' refs=bench/refs/docker.sh ;;
metrics) pkg=./bench/metrics test='^TestMetricsReport$' reps=12 ;;
doctor) pkg=./bench/doctor test='^TestDoctorReport$' n=200 reps=20 ;;
cluster-sim) pkg=./bench/cluster test='^TestClusterSimReport$' ;; # knobs in bench/cluster/doc.go (BENCH_HOSTS, BENCH_STORE=zk, BENCH_CHURN_PCT, ...); the 50/200/500 matrix: bench/cluster/scale.sh
*) echo "unknown scenario $scenario (known: attach, lifecycle, ports, scale, dns, dns-abuse, cni, docker, dockerplugin, overlay, ipv6, drivers, proxy, memory, overlay-tput, metrics, doctor, cluster-sim)" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
	echo "needs root: the benchmark creates network namespaces" >&2
	exit 1
fi
mkdir -p bench/results
for r in ${refs:-}; do "$r"; done # references the scenario compares with (idempotent)
out=$PWD/bench/results/$scenario-$(date -u +%Y%m%dT%H%M%SZ).json
BENCH_REPORT=1 BENCH_OUT=$out BENCH_N=${BENCH_N:-${n:-200}} BENCH_REPS=${BENCH_REPS:-${reps:-3}} \
	"${GO:-go}" test "$pkg" -run "$test" -count=1 -v -timeout 60m
