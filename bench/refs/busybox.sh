#!/usr/bin/env bash
# Builds the benchmarks' container image once: a rootfs tarball holding
# Debian's static busybox (busybox-static) as /bin/busybox with a symlink per
# applet (sh, sleep, nc, httpd, ...), for `docker import` / `podman import`.
#
#   sudo bench/refs/busybox.sh          writes $TETHER_BENCH_REFS/busybox.tar
#
# TETHER_BENCH_REFS defaults to /opt/tether-bench. Idempotent: an existing
# tarball built from the same busybox binary is kept.
set -euo pipefail
refs=${TETHER_BENCH_REFS:-/opt/tether-bench}
tarball=$refs/busybox.tar
stamp=$refs/busybox.stamp

if [ "$(id -u)" != 0 ]; then
	echo "busybox.sh: needs root (apt-get)" >&2
	exit 1
fi
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox-static
fi
want=$(sha256sum /bin/busybox | cut -d' ' -f1)
if [ -f "$tarball" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
	exit 0
fi
mkdir -p "$refs"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp,var/www}
chmod 1777 "$root/tmp"
install -m 0755 /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do
	[ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo bench >"$root/var/www/index.html"
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$root" -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
echo "$want" >"$stamp"
echo "busybox.sh: $tarball ($(/bin/busybox | head -1))"
