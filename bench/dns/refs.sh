#!/usr/bin/env bash
# Installs the DNS servers and load generator `bench/run.sh dns` compares
# Tether's resolver with: Debian's dnsperf and dnsmasq (dnsmasq-base: the
# binary only, no service is started), and CoreDNS (its `hosts` plugin is the
# peer) built from the Go module proxy at a pinned version into
# ${TETHER_BENCH_REFS:-/opt/tether-bench}/coredns/coredns.
#
#   bench/dns/refs.sh            install (or keep) them, print where they are
#
# Idempotent. Environment: TETHER_BENCH_REFS (install root), GO (the go
# command).
set -euo pipefail

version=v1.15.0
module=github.com/coredns/coredns
root=${TETHER_BENCH_REFS:-/opt/tether-bench}
dir=$root/coredns
go=${GO:-go}
want="$module $version $("$go" env GOVERSION)"

if ! command -v dnsperf >/dev/null || ! command -v dnsmasq >/dev/null; then
	apt-get install -y -qq dnsperf dnsmasq-base
fi
echo "dnsperf: $(command -v dnsperf); dnsmasq: $(command -v dnsmasq)"

if [ -x "$dir/coredns" ] && [ -f "$dir/VERSION" ] && [ "$(cat "$dir/VERSION")" = "$want" ]; then
	echo "CoreDNS $version already in $dir"
	exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# its own module cache: CoreDNS's dependency tree is large and unrelated to
# Tether's; -mod=mod as go install @version wants
GOPATH=$tmp GOBIN=$dir CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" install "$module@$version"
chmod -R u+w "$tmp"
echo "$want" >"$dir/VERSION"
echo "CoreDNS $version installed in $dir/coredns"
