#!/usr/bin/env bash
# Where the CNI reference plugins' time goes, from kernel timestamps: runs the
# CNI smoke row with portmap (5 sandboxes, ADD then DEL, BENCH_TRACE_COUNT
# times, default 4) under `perf record` with the scheduler's fork, exec and
# exit tracepoints (no per-syscall overhead), then prints, per plugin
# command, its mean lifetime and the processes it started (host-local, nft,
# iptables) with their count and mean lifetime. Needs root, perf and the
# plugins (bench/refs/cni.sh).
#
#   sudo bench/cni/trace.sh
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${GO:-go}" test -c -o "$tmp/cni.test" .
perf record -q -a -e sched:sched_process_fork -e sched:sched_process_exec -e sched:sched_process_exit \
	-o "$tmp/perf.data" -- "$tmp/cni.test" -test.run '^TestCNISmoke$/^attach-port$/^cni$' \
	-test.count "${BENCH_TRACE_COUNT:-4}" | grep -E '^(ok|PASS|FAIL|---)' || true
perf script -i "$tmp/perf.data" -F comm,pid,tid,time,event,trace 2>/dev/null >"$tmp/perf.txt"
python3 - "$tmp/perf.txt" <<'PY'
import collections, re, sys
parent, start, name, end, cmd = {}, {}, {}, {}, {}
for l in open(sys.argv[1]):
    m = re.match(r'\s*(\S+)\s+(\d+)/(\d+)\s+([\d.]+):\s+sched:(\S+):\s+(.*)', l)
    if not m:
        continue
    comm, tgid, tid, ts, ev, rest = m.groups()
    ts = float(ts) * 1000
    if ev == 'sched_process_fork':
        parent[re.search(r'child_pid=(\d+)', rest)[1]] = tgid
    elif ev == 'sched_process_exec':
        start[tgid], name[tgid] = ts, re.search(r'filename=(\S+)', rest)[1].rsplit('/', 1)[-1]
    elif ev == 'sched_process_exit' and 'group_dead=true' in rest and tgid in start:
        end[tgid] = ts

def plugin_of(p):
    while p in parent:
        p = parent[p]
        if name.get(p) in ('bridge', 'portmap'):
            return p
    return None

# The smoke row adds all its sandboxes, then deletes them all: within each
# test run, a plugin's first half of executions are ADDs, the second DELs.
runs = collections.defaultdict(list)
for p in sorted(start, key=start.get):
    if name[p] in ('bridge', 'portmap'):
        runs[name[p]].append(p)
per_run = 5
for plug, ps in runs.items():
    for i, p in enumerate(ps):
        cmd[p] = 'ADD' if (i // per_run) % 2 == 0 else 'DEL'
print('| plugin command | runs | mean lifetime | started processes (per run × mean lifetime) |')
print('|---|---:|---:|---|')
for plug in ('bridge', 'portmap'):
    for c in ('ADD', 'DEL'):
        group = [p for p in runs[plug] if cmd[p] == c and p in end]
        if not group:
            continue
        kids = collections.defaultdict(list)
        for p in start:
            if plugin_of(p) in group and p in end:
                kids[name[p]].append(end[p] - start[p])
        life = sum(end[p] - start[p] for p in group) / len(group)
        parts = ', '.join(f'{len(v) / len(group):.0f} × {k} {sum(v) / len(v):.2f} ms'
                          for k, v in sorted(kids.items(), key=lambda kv: -sum(kv[1])))
        print(f'| {plug} {c} | {len(group)} | {life:.1f} ms | {parts} |')
PY
