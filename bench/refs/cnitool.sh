#!/usr/bin/env bash
# Installs cnitool, the CNI project's reference client (it loads a network
# configuration by name and runs ADD / CHECK / DEL / STATUS / GC through
# libcni), built from the Go module proxy at a pinned version into
# ${TETHER_BENCH_REFS:-/opt/tether-bench}/cnitool/bin. The CNI plugin's
# end-to-end tests (e2e/cni_test.go) drive Tether's plugin with it.
#
#   bench/refs/cnitool.sh        build (or keep) cnitool, print where it is
#
# Idempotent: when the binary is there, its build info names the pinned
# version and the stamp file next to it names the same version and Go
# toolchain, nothing is built.
# Environment: TETHER_BENCH_REFS (install root), GO (the go command).
set -euo pipefail

version=v1.3.1
module=github.com/containernetworking/cni

root=${TETHER_BENCH_REFS:-/opt/tether-bench}
bin=$root/cnitool/bin
stamp=$root/cnitool/VERSION
go=${GO:-go}
want="$module $version $("$go" env GOVERSION)"

if [ -x "$bin/cnitool" ] &&
	"$go" version -m "$bin/cnitool" | grep -Eq "^\s+mod\s+$module\s+$version\s" &&
	[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	echo "cnitool $version already in $bin"
	exit 0
fi

mkdir -p "$bin"
# CGO off: a static binary; GOFLAGS from the caller could add -mod=vendor
# and the like, which go install @version refuses.
GOBIN=$bin CGO_ENABLED=0 GOFLAGS= "$go" install "$module/cnitool@$version"
echo "$want" >"$stamp"
echo "cnitool $version installed in $bin/cnitool"
