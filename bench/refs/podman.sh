#!/usr/bin/env bash
# Installs the Podman reference of the benchmarks (bench/docker): Debian's
# podman with the netavark network backend (netavark, aardvark-dns, conmon,
# crun/runc, containers-common; netavark 1.4 programs iptables), plus the
# busybox image tarball.
#
#   sudo bench/refs/podman.sh
#
# Idempotent. Nothing is started: podman has no daemon, and the benchmark
# runs it rootful with its own --root/--runroot inside a namespace it creates.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
	echo "podman.sh: needs root (apt-get)" >&2
	exit 1
fi
need=()
for p in podman netavark aardvark-dns conmon crun runc golang-github-containers-common \
	iptables catatonit busybox-static; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
# The benchmark mounts a private tmpfs here (rootful podman keeps a blob
# cache at this fixed path), so the host's directory is only a mount point.
mkdir -p /var/lib/containers
"$(dirname "$0")/busybox.sh"
podman --version
