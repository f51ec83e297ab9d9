#!/usr/bin/env bash
# Installs every reference the benchmarks compare Tether with, so that
# `bench/run.sh` and the smoke runs in `go test ./bench/...` find them:
#   - CNI reference plugins (bridge, host-local, portmap), built from the Go module proxy;
#   - current Docker (dockerd, docker-proxy) built from the Go module proxy, on
#     Debian's containerd and runc, and a static busybox image tarball;
#   - Podman with netavark, from Debian.
# Idempotent: each installer skips what is already there. Nothing is started.
#
#   sudo bench/install.sh
set -euo pipefail
cd "$(dirname "$0")"
# No package may start a service (containerd) in the host's namespace while
# installing: Debian's policy-rc.d convention denies the starts.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
for r in refs/cni.sh refs/docker.sh refs/podman.sh; do
	echo "== $r"
	"./$r"
done
