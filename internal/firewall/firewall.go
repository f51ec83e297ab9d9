// Package firewall builds the packet filter of Tether's bridge networks:
// outbound NAT, isolation between networks, the walls around internal
// networks, and published ports (DNAT to sandboxes). The model is small: a network is a bridge, a subnet and two
// flags; a backend turns the list of networks into kernel state.
//
// Backends: NFT (nftables through google/nftables, the default) and Noop
// (daemon option iptables=false: Tether installs no rules and removes none).
// NFT keeps IPv6 rules too (table ip6 tether) with Options.IPv6, the
// daemon's ip6tables.
// The ruleset itself is in ruleset.go and docs/firewall.md.
package firewall

import (
	"context"
	"net/netip"
)

// Network is what the firewall needs to know about one bridge network.
type Network struct {
	ID     string
	Bridge string       // Linux bridge name
	Subnet netip.Prefix // IPv4 subnet; zero: nothing to masquerade
	// Subnet6 is the IPv6 subnet; zero: the network has no IPv6 (its
	// bridge has IPv6 off), and gets only its bridge's isolation entries in
	// table ip6 tether. Only used with Options.IPv6. An IPv6-only network
	// has Subnet zero and Subnet6 set.
	Subnet6 netip.Prefix
	// Masquerade: traffic from Subnet (and Subnet6: NAT66) leaving through
	// any interface but a Tether bridge gets the outgoing interface's
	// address. The caller folds in the daemon's ip-masq; an Internal
	// network is never masqueraded.
	Masquerade bool
	// Internal: nothing is routed into or out of the network.
	Internal bool
	// Mode is the gateway mode (Docker's gateway_mode_ipv4): what traffic
	// from outside the host may be routed directly to sandbox addresses.
	// "" is ModeNAT.
	Mode GatewayMode
	// Trusted are host interfaces (by name) from which published ports are
	// open to direct routing to sandbox addresses (Docker's
	// trusted_host_interfaces).
	Trusted []string
}

// GatewayMode says what may reach a network's sandbox addresses directly
// from outside its bridge, i.e. forwarded by the host without DNAT of a
// published host port (Docker 28's gateway modes).
type GatewayMode string

const (
	// ModeNAT: outbound masquerade; only published ports, through host
	// addresses, are reachable from outside (direct routing is dropped).
	ModeNAT GatewayMode = "nat"
	// ModeNATUnprotected: outbound masquerade; anything may be routed
	// directly to the sandboxes (Docker before 28).
	ModeNATUnprotected GatewayMode = "nat-unprotected"
	// ModeRouted: no masquerade; published ports (sandbox address and
	// port) and ICMP may be routed directly to the sandboxes, nothing else.
	ModeRouted GatewayMode = "routed"
	// ModeIsolated: an internal network whose bridge has no address.
	ModeIsolated GatewayMode = "isolated"
)

// Firewall installs and maintains the rules of Tether's networks.
type Firewall interface {
	// Sync makes the kernel match nets exactly: it creates Tether's table
	// if it is missing, adds the networks' entries that are missing and
	// deletes the ones no network names, in one atomic batch. Called once
	// at start, after the bridges exist; a second call with the same
	// networks changes nothing. ports are all published ports (see
	// AddPorts), reconciled the same way.
	Sync(ctx context.Context, nets []Network, ports []PortMapping) error
	// Add installs one network's entries in one atomic batch. Adding a
	// network again replaces its entries (e.g. masquerade turned off).
	Add(ctx context.Context, n Network) error
	// Remove deletes one network's entries in one atomic batch; entries
	// that are already gone are not an error.
	Remove(ctx context.Context, n Network) error
	// AddPorts publishes ports: DNAT of traffic to each HostIP:HostPort
	// (from outside, from the host, and hairpin from sandboxes) to its
	// sandbox, as map elements added in one atomic batch. A host address,
	// protocol and port already published is re-pointed to the new target.
	AddPorts(ctx context.Context, ps []PortMapping) error
	// RemovePorts unpublishes ports in one atomic batch; removing what is
	// not published is not an error.
	RemovePorts(ctx context.Context, ps []PortMapping) error
}

// Noop is the firewall of iptables=false: it installs nothing and removes
// nothing (rules an earlier run left stay until a run with iptables=true).
type Noop struct{}

func (Noop) Sync(context.Context, []Network, []PortMapping) error { return nil }
func (Noop) Add(context.Context, Network) error                   { return nil }
func (Noop) Remove(context.Context, Network) error                { return nil }
func (Noop) AddPorts(context.Context, []PortMapping) error        { return nil }
func (Noop) RemovePorts(context.Context, []PortMapping) error     { return nil }
