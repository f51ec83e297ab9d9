// Package drivers measures what issue 18 (point-to-point links, macvlan,
// Open vSwitch) asks for, each figure as a ratio against a reference taken
// in the same run, on one daemon:
//
//   - attach time per driver vs the Linux bridge: one daemon (bench/attach's
//     Tether, whose network "bench" is the bridge one) started with
//     --ovs-db pointing at a private ovsdb-server and ovs-vswitchd
//     (internal/ovsdb/ovstest) in its host namespace, a macvlan network on a
//     veth whose peer sits in a "LAN" namespace, and an OVS network
//     (userspace netdev datapath: the kernel here has no openvswitch
//     module). Each round creates N sandboxes on each network through the
//     same API call (POST /tether/v1/sandboxes, one network), one of each
//     per i, rotating which goes first, together with a point-to-point link
//     (POST /tether/v1/links) between two sandboxes on --network none made
//     beforehand, and the raw netlink floor of such a link (floor.go). The
//     link vs the bridge attach is not like for like (a link joins two
//     existing sandboxes; an attach makes a sandbox); the link vs its floor
//     is.
//   - TCP throughput (iperf3, one stream) between two sandboxes over a
//     Linux bridge network, over a point-to-point link and over the OVS
//     network, interleaved, order reversed every other round; best and
//     median of each, as ratios to the bridge.
//
// sudo bench/run.sh drivers writes bench/results/drivers-<date>.json.
package drivers
