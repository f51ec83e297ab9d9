#!/usr/bin/env bash
# Where the real daemon's attach time goes, from kernel timestamps: runs
# BenchmarkAttachTether (BENCH_N sandboxes, default 200) under `perf record`
# with a few syscall tracepoints, then cuts each create cycle of the daemon
# (unshare of the sandbox netns to the next one) into segments: netns,
# IPv6 default + IPAM + bridge.Join + record, the runtime store's commit
# (its page writes: no fdatasync since the runtime store), and the rest
# (HTTP, events, client). Needs root and perf.
#
#   sudo bench/attach/trace.sh
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${GO:-go}" test -c -o "$tmp/attach.test" .
events=(syscalls:sys_enter_unshare syscalls:sys_exit_mount
	syscalls:sys_enter_pwrite64 syscalls:sys_exit_pwrite64)
BENCH_N=${BENCH_N:-200} perf record -q -a "${events[@]/#/-e}" -o "$tmp/perf.data" -- \
	"$tmp/attach.test" -test.run '^$' -test.bench 'AttachTether$' -test.benchtime 1x | grep -E '^Benchmark|ms/'
perf script -i "$tmp/perf.data" -F comm,pid,tid,time,event,trace 2>/dev/null >"$tmp/perf.txt"
python3 - "$tmp/perf.txt" <<'PY'
import re, statistics as st, sys
ev = []
for l in open(sys.argv[1]):
    m = re.match(r'\s*(\S+)\s+(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s?(.*)', l)
    if m:
        ev.append((float(m[4]) * 1000, m[1], int(m[2]), m[5].split(':')[1], m[6]))
daemon = [p for t, c, p, e, r in ev if e == 'sys_enter_unshare' and c == 'tether']
dpid = max(set(daemon), key=daemon.count)
cycles, cur = [], None
for t, c, p, e, r in ev:
    if p != dpid:
        continue
    if e == 'sys_enter_unshare':
        if cur:
            cur['L'] = t
            cycles.append(cur)
        cur = {'A': t}
    elif cur is None:
        continue
    elif e == 'sys_exit_mount' and 'B' not in cur: cur['B'] = t
    elif e == 'sys_enter_pwrite64' and 'B' in cur and 'J' not in cur: cur['J'] = t
    elif e == 'sys_exit_pwrite64' and 'J' in cur: cur['K'] = t
segs = [('netns: unshare + bind', 'A', 'B'),
        ('IPv6 default, sticky read, IPAM, bridge.Join, record', 'B', 'J'),
        ('runtime store commit: page writes', 'J', 'K'),
        ('rest: events, HTTP reply, client, next request', 'K', 'L'),
        ('whole cycle', 'A', 'L')]
cycles = [c for c in cycles if all(k in c for k in 'ABJKL')]
if not cycles:
    sys.exit('no complete create cycle in the trace')
q = max(len(cycles) // 4, 1)
print(f'\n{len(cycles)} create cycles of daemon pid {dpid}\n')
print('| segment | p50 | 1st quarter p50 | 4th quarter p50 |\n|---|---:|---:|---:|')
for name, a, b in segs:
    v = [c[b] - c[a] for c in cycles]
    print(f'| {name} | {st.median(v):.2f} ms | {st.median(v[:q]):.2f} ms | {st.median(v[-q:]):.2f} ms |')
PY
