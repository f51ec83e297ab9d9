// Package docker runs the benchmarks' reference engines, current Docker
// (dockerd built from the module proxy, on Debian's containerd and runc,
// firewall-backend nftables) and Podman (Debian's, rootful, netavark), each
// on a test-owned "host": a fresh network namespace plus a private mount
// namespace (Host). Every daemon, shim, proxy and container they start lives
// there, under a cgroup parent named for the run, so the default namespace's
// links, routes, firewall, sysctls and mount table are never touched and a
// test's cleanup can find, stop and unmount exactly what the run started.
//
// The binaries and the busybox image tarball come from bench/refs/docker.sh
// and bench/refs/podman.sh (under TETHER_BENCH_REFS, default
// /opt/tether-bench). A missing reference fails the test under TETHER_E2E=1
// and skips it otherwise.
//
// Timing: Docker is driven through the moby Go client over its unix socket
// (create + start, remove with force), so no CLI start-up is measured;
// Podman has no daemon, so its figures are whole `podman` processes.
package docker
