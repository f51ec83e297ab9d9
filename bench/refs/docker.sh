#!/usr/bin/env bash
# Installs the Docker reference of the benchmarks (bench/docker): current
# dockerd and docker-proxy built from the Go module proxy, running on
# Debian's containerd and runc, plus the busybox image tarball.
#
#   sudo bench/refs/docker.sh           binaries in $TETHER_BENCH_REFS/docker/bin
#
# TETHER_BENCH_REFS defaults to /opt/tether-bench. Idempotent: a stamp file
# holding the version skips the (several-minute) build when it is done.
# Nothing is started and no service is enabled: the benchmark runs its own
# containerd and dockerd inside a namespace it creates.
set -euo pipefail
# github.com/moby/moby/v2@latest on 2026-11-23 (Docker Engine 29.x; its
# releases/versions.yaml says last release 29.8.0).
MOBY_VERSION=${MOBY_VERSION:-v2.0.0-beta.24}
refs=${TETHER_BENCH_REFS:-/opt/tether-bench}
bin=$refs/docker/bin
stamp=$refs/docker/stamp
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go

if [ "$(id -u)" != 0 ]; then
	echo "docker.sh: needs root (apt-get)" >&2
	exit 1
fi
need=()
for p in containerd runc busybox-static nftables; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
# On a host with systemd, Debian's package also starts containerd.service; the
# benchmark does not use it (it starts its own containerd in its namespace).

if [ -x "$bin/dockerd" ] && [ -x "$bin/docker-proxy" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$MOBY_VERSION" ]; then
	echo "docker.sh: dockerd $MOBY_VERSION already in $bin"
else
	mkdir -p "$bin"
	rm -f "$stamp"
	# The version the daemon reports (docker version, /version) is the module's.
	ldflags="-X github.com/moby/moby/v2/dockerversion.Version=$MOBY_VERSION"
	GOBIN=$bin "$GO" install -ldflags "$ldflags" \
		"github.com/moby/moby/v2/cmd/dockerd@$MOBY_VERSION" \
		"github.com/moby/moby/v2/cmd/docker-proxy@$MOBY_VERSION"
	echo "$MOBY_VERSION" >"$stamp"
	echo "docker.sh: built dockerd $MOBY_VERSION into $bin"
fi
"$(dirname "$0")/busybox.sh"
