#!/usr/bin/env bash
# Installs the CNI reference plugins the benchmarks compare Tether with:
# bridge, host-local and portmap, built from the Go module proxy at a pinned
# version into ${TETHER_BENCH_REFS:-/opt/tether-bench}/cni/bin.
#
#   bench/refs/cni.sh            build (or keep) the plugins, print where they are
#
# Idempotent: when the three binaries are there, their build info names the
# pinned version and the stamp file next to them names the same version and Go
# toolchain, nothing is built.
# Environment: TETHER_BENCH_REFS (install root), GO (the go command).
set -euo pipefail

version=v1.9.1
module=github.com/containernetworking/plugins
plugins=(plugins/main/bridge plugins/ipam/host-local plugins/meta/portmap)

root=${TETHER_BENCH_REFS:-/opt/tether-bench}
bin=$root/cni/bin
stamp=$root/cni/VERSION
go=${GO:-go}
want="$module $version $("$go" env GOVERSION)"

have_all() {
	local p
	for p in "${plugins[@]}"; do
		[ -x "$bin/$(basename "$p")" ] || return 1
		# the binary's own build info must name the pinned module version
		"$go" version -m "$bin/$(basename "$p")" | grep -Eq "^\s+mod\s+$module\s+$version\s" || return 1
	done
	[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]
}

if have_all; then
	echo "CNI plugins $version already in $bin"
	exit 0
fi

mkdir -p "$bin"
pkgs=()
for p in "${plugins[@]}"; do
	pkgs+=("$module/$p@$version")
done
# CGO off: static binaries, independent of the host's libc; GOFLAGS from the
# caller could add -mod=vendor and the like, which go install @version refuses.
GOBIN=$bin CGO_ENABLED=0 GOFLAGS= "$go" install "${pkgs[@]}"
echo "$want" >"$stamp"
echo "CNI plugins $version installed in $bin:"
for p in "${plugins[@]}"; do
	echo "  $bin/$(basename "$p")"
done
