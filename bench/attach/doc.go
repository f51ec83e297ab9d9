// Package attach measures the core engine's attach path: how long Tether
// takes to create a sandbox and attach it to a bridge network, 200 in a row,
// and the daemon's memory with all of them attached.
//
// Every figure comes with a reference measured in the same run, the raw
// floor: the same kernel operations (a new network namespace bind-mounted to
// a file, a veth created inside it with its peer placed directly in the host
// namespace, the host end enslaved to a bridge and brought up, address,
// default route and links up through a namespace-bound netlink handle) issued
// directly through vishvananda/netlink with no daemon, no store and no
// checks. Results are reported as Tether / floor ratios. A second Tether figure,
// create + attach + first exec, shows the cost deferred to the first process
// (mount and UTS namespaces, sandbox files), which the floor has no equivalent of.
//
// Everything runs inside network namespaces the benchmark creates and deletes
// itself. Entry point: `sudo bench/run.sh attach` (see bench/README.md).
package attach
