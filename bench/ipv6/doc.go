// Package ipv6 measures what the IPv6 dual-stack issue (17) asks for, each
// figure against a reference taken in the same run:
//
//   - attach on a dual-stack network vs attach on an IPv4-only one: one
//     daemon (bench/attach's Tether, its network "bench" is the IPv4-only
//     one) with a second network "bench6" (10.125.0.0/16 and
//     fd00:125::/64); each round creates N sandboxes on each, one for one,
//     alternating which goes first, through the same API call
//     (POST /tether/v1/sandboxes, one network), then removes them; p50 and
//     p90 of each and the ratio (target ≤ 1.2). Beside it the raw netlink
//     floor of bench/attach with the IPv6 steps Tether's bridge driver
//     takes for a dual-stack endpoint added (floor6.go), attached in the
//     same rounds.
//   - TCP throughput (iperf3) from an outside namespace over IPv6 to a
//     published port on the host's uplink address (kernel DNAT in the
//     ip6 tether table, then forwarded over the bridge) vs the same client
//     to the sandbox's IPv6 address directly (routed: the outside has a
//     route to the sandbox subnet via the host and the network is in gateway
//     mode nat-unprotected), so both paths cross the same bridge and forward
//     hook and differ only by the DNAT (target ≥ 0.95). The IPv4 pair of the
//     same paths is measured beside it, interleaved.
//
// sudo bench/run.sh ipv6 writes bench/results/ipv6-<date>.json.
package ipv6
