// Package dockerplugin measures Tether as Docker's network and IPAM plugin
// (issue 15's figures) with a real dockerd, each figure against a reference
// measured in the same run. Two test hosts (bench/docker.StartCluster: an
// underlay switch, etcd, and per host a network namespace with its own
// containerd, dockerd and Tether daemon serving the plugin):
//
//   - run to ping: `docker run -d --network X --ip A busybox sleep` through
//     dockerd's API (create + start, as the CLI sends them) until the
//     container answers an ICMP echo sent every 1 ms from the host's
//     namespace (pings start when the run returns), on a Tether local
//     network (-d tether --ipam-driver tether) and on Docker's own
//     user-defined bridge network, interleaved (alternating which goes
//     first), N each after one warm-up each; p50/p90 and the Tether ÷ Docker
//     ratio. The address is given (--ip) so that pinging needs no inspect.
//
//   - cross-host name resolution: after `docker run -d --network OV` on host
//     A returns, the time until a container's resolver on host B (Docker's
//     embedded DNS at 127.0.0.11 in that container's namespace, forwarding
//     to Tether's answer at 169.254.77.77) answers the new name with its
//     address; a query every 2 ms from a socket opened in that namespace;
//     p50/p99. Docker has no reference for this (a standalone dockerd does
//     not resolve other hosts' containers at all).
//
//   - throughput: busybox to busybox across the hosts over the Tether
//     overlay vs the same busybox binary doing the same between the two
//     hosts' namespaces over the underlay, interleaved, with two tools:
//     `dd if=/dev/zero | nc` into `nc -l` (busybox nc
//     reads and writes 1 KiB per system call, so this figure is bound by
//     the tool, not the network) and busybox httpd serving a sparse file
//     to `wget -O /dev/null` (httpd sends with sendfile; the datapath's
//     figure). MB/s from busybox `time` (10 ms resolution). busybox has no
//     iperf3; bench/overlay has the iperf3 figures of Tether's own
//     sandboxes.
//
//     BENCH_REPORT=1 BENCH_OUT=bench/results/dockerplugin-$(date -u +%Y%m%dT%H%M%SZ).json \
//     sudo -E go test ./bench/dockerplugin -run '^TestDockerPluginReport$' -count=1 -v -timeout 30m
//     sudo TETHER_E2E=1 go test ./bench/dockerplugin      # the smoke run (n=3, 32 and 256 MiB)
//
// Settings: BENCH_N (runs per network, default 20), BENCH_REPS (throughput
// rounds each way, default 3), BENCH_MIB (MiB per nc transfer, default
// 1024), BENCH_HTTP_MIB (MiB per wget, default 4096), BENCH_STORE (etcd,
// default, or zk).
package dockerplugin
