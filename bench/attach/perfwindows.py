#!/usr/bin/env python3
"""Compare two time windows of a system-wide perf profile, per process.

Used for issue 19's row 4 (does Tether's own share of an attach grow with
the number of sandboxes?): record the scale scenario with

    perf record -a -g -k boottime -F 1999 -o perf.data -- bench/run.sh scale
    perf script -i perf.data -F comm,tid,time,ip,sym > perf.txt

(-k boottime puts perf's clock on /proc/uptime's, which a throwaway mark in
the benchmark can print at attach 0, 100, N-100 and N), then

    bench/attach/perfwindows.py perf.txt FIRST_START FIRST_END LAST_START LAST_END \
        [--comm tether --comm lifecycle.test] [--under rtnl_newlink:3] [--who br_stp_enable_port]

For each process name it prints the samples in each window by the system
call they were taken in, the subtrees under --under (function:depth), and
which process ran the --who functions and through which path. Both windows
hold the same number of attaches of each system, so sample counts compare
directly.
"""

import argparse
import collections


def samples(path):
    """Yields (comm, time, frames) from `perf script -F comm,tid,time,ip,sym`
    output; frames are leaf first, offsets stripped."""
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if cur:
                    yield cur
                cur = None
                continue
            if cur is None:
                parts = line.split()
                stamps = [i for i, p in enumerate(parts) if p.endswith(":")]
                if not stamps:
                    continue
                i = stamps[-1]
                # comm (may hold spaces), tid, time:
                cur = (" ".join(parts[: i - 1]), float(parts[i][:-1]), [])
            else:
                p = line.split(None, 1)
                sym = p[1].strip() if len(p) > 1 else "?"
                cur[2].append(sym.split("+")[0])
    if cur:
        yield cur


SYSCALL_PREFIXES = ("__x64_sys_", "__do_sys_")
KEEP_ON_PATH = {
    "br_device_event", "br_add_if", "br_port_carrier_check", "__dev_notify_flags",
    "do_setlink.isra.0", "rtnl_newlink", "rtnl_setlink", "__linkwatch_run_queue",
    "netif_change_flags", "dev_change_flags", "linkwatch_event",
}


def category(frames):
    for f in frames:
        if f.startswith(SYSCALL_PREFIXES):
            return f
    return "(no system call)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("script")
    ap.add_argument("first_start", type=float)
    ap.add_argument("first_end", type=float)
    ap.add_argument("last_start", type=float)
    ap.add_argument("last_end", type=float)
    ap.add_argument("--comm", action="append", default=[])
    ap.add_argument("--under", action="append", default=[])
    ap.add_argument("--who", action="append", default=[])
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    windows = {"first": (a.first_start, a.first_end), "last": (a.last_start, a.last_end)}
    unders = [(u.split(":")[0], int(u.split(":")[1]) if ":" in u else 2) for u in a.under]

    total = collections.Counter()
    cats = collections.defaultdict(collections.Counter)
    subtree = collections.defaultdict(collections.Counter)
    who = collections.defaultdict(collections.Counter)
    for comm, t, frames in samples(a.script):
        w = next((k for k, (s, e) in windows.items() if s <= t < e), None)
        if w is None:
            continue
        total[(comm, w)] += 1
        cats[(comm, w)][category(frames)] += 1
        for root, depth in unders:
            if root in frames:
                i = frames.index(root)
                path = " > ".join(reversed(frames[max(0, i - depth):i]))
                subtree[(root, comm, w)][path] += 1
        for fn in a.who:
            if fn in frames:
                path = " < ".join(f for f in frames if f in KEEP_ON_PATH)
                who[(fn, w)][(comm, path)] += 1

    comms = a.comm or sorted({c for c, _ in total})
    for c in comms:
        f, l = cats[(c, "first")], cats[(c, "last")]
        print(f"== {c}: samples first {total[(c, 'first')]}, last {total[(c, 'last')]}")
        for k in sorted(set(f) | set(l), key=lambda k: -l[k])[: a.top]:
            print(f"   {f[k]:6d} {l[k]:6d} {l[k] - f[k]:+6d}  {k}")
        for root, _ in unders:
            sf, sl = subtree[(root, c, "first")], subtree[(root, c, "last")]
            print(f"   -- under {root}: first {sum(sf.values())}, last {sum(sl.values())}")
            for k in sorted(set(sf) | set(sl), key=lambda k: -sl[k])[: a.top]:
                print(f"      {sf[k]:6d} {sl[k]:6d} {sl[k] - sf[k]:+6d}  {k}")
    for fn in a.who:
        for w in windows:
            print(f"== who ran {fn}, {w} window")
            for (c, path), n in who[(fn, w)].most_common(a.top):
                print(f"   {n:6d}  {c}: {path}")


if __name__ == "__main__":
    main()
