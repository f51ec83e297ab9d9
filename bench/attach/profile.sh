#!/usr/bin/env bash
# Where the daemon's CPU goes at the first and at the last attaches of a row
# of BENCH_N (default 1000): runs TestAttachProfileRow under
# `perf record -a -g -k CLOCK_MONOTONIC` and prints, for the first and the
# last BENCH_N/10 attaches, the daemon's samples (user and kernel) by symbol,
# self and with children. Needs root and perf. OUT=DIR keeps perf.data and
# the reports there (default: a temp dir, removed).
#
#   sudo bench/attach/profile.sh
set -euo pipefail
cd "$(dirname "$0")"
tmp=${OUT:-$(mktemp -d)}
mkdir -p "$tmp"
[ -n "${OUT:-}" ] || trap 'rm -rf "$tmp"' EXIT
"${GO:-go}" test -c -o "$tmp/attach.test" .
BENCH_N=${BENCH_N:-1000} BENCH_PROFILE_MARKS=$tmp/marks perf record -q -a -g -F ${FREQ:-2000} -k CLOCK_MONOTONIC \
	-o "$tmp/perf.data" -- "$tmp/attach.test" -test.run '^TestAttachProfileRow$' -test.v 2>&1 | grep -E 'attach p50|FAIL|ok' || true
pid=$(awk '$1 == "pid" {print $2}' "$tmp/marks")
read -r bin copy < <(awk '$1 == "bin" {print $2, $3}' "$tmp/marks")
if [ -n "${bin:-}" ] && [ ! -e "$bin" ]; then # the daemon's binary, for its symbols
	mkdir -p "$(dirname "$bin")" && cp "$copy" "$bin"
	trap 'rm -rf "$(dirname "$bin")"; [ -n "${OUT:-}" ] || rm -rf "$tmp"' EXIT
fi
while read -r name a b; do
	case $name in first | last) ;; *) continue ;; esac
	for mode in self children; do
		flag=--no-children
		[ $mode = children ] && flag=--children
		perf report -i "$tmp/perf.data" --pid "$pid" --time "$a,$b" $flag --stdio --percentage relative \
			--sort symbol -g none --percent-limit 0.5 2>/dev/null >"$tmp/$name-$mode.txt"
	done
	echo "== $name window ($a..$b), daemon: $(grep -m1 '^# Samples' "$tmp/$name-self.txt")"
	grep -v '^#' "$tmp/$name-children.txt" | grep -v '^$' | head -60
done <"$tmp/marks"
