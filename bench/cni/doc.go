// Package cni drives the CNI reference plugins (bridge, host-local, portmap
// with its nftables backend, v1.9.1, built by bench/refs/cni.sh) through
// libcni, as a container runtime would, so that Tether's attach can be
// measured against them in the same run as the raw netlink floor of
// bench/attach.
//
// Per sandbox the driver creates a namespace file exactly as the floor does
// (attach.CreateNS) and calls AddNetworkList with a conflist of bridge
// (isGateway, ipMasq through nftables, hairpinMode) and host-local on
// 10.125.0.0/16, plus portmap with "backend": "nftables" when ports are
// published; removal is DelNetworkList and the namespace file's deletion.
//
// The plugins program links, addresses, routes, sysctls and nftables tables
// in the namespace they run in, so they are started from a thread inside a
// host namespace the benchmark created (attach.InNS): the default namespace
// is never touched. host-local's data directory and libcni's cache live in
// the test's temporary directory.
//
// The tether-cni rows (tether.go) make the same libcni calls with a
// conflist whose one plugin is `tether` (issue 16): the binary the harness
// builds, linked as `tether` in a temporary CNI bin dir, a thin client of a
// daemon running in the row's host namespace.
//
// Entry point: `sudo bench/run.sh cni` (see bench/README.md).
package cni
