// Package driver defines the narrow interface between the engine and the code
// that builds a network's kernel objects. The engine owns records, addresses
// and locking; a driver only turns a record into links, addresses and routes.
package driver

import (
	"context"
	"net"
	"net/netip"
)

// Network is what a driver needs to know about a network.
type Network struct {
	ID         string
	Name       string
	BridgeName string       // Linux bridge name (bridge driver)
	Subnet     netip.Prefix // IPv4 subnet
	Gateway    netip.Addr   // address of the bridge, default route of sandboxes
	MTU        int
	ICC        bool // false: sandboxes on this network cannot reach each other (bridge port isolation)
	Internal   bool // no default route out of the network
	External   bool // the bridge existed before Tether: never delete it or change its addresses

	// Overlay driver only (zero for every other driver). The overlay driver
	// derives its link names from VNI and ignores BridgeName; its sandboxes'
	// MTU is UnderlayMTU-50, lowered further by a smaller non-zero MTU.
	VNI         int        // VXLAN network identifier, 1..16777215, the same on every host
	VTEP        netip.Addr // this host's underlay (advertise) IPv4 address: source of its VXLAN packets
	UnderlayIf  string     // underlay interface; "" = the interface holding VTEP
	UnderlayMTU int        // 0 = the underlay interface's MTU
}

// Endpoint is one sandbox's attachment to one network.
type Endpoint struct {
	ID           string
	IfName       string // interface name inside the sandbox (eth0, eth1, ...)
	HostIfName   string // host-side interface name (bridge driver), chosen by the driver when empty
	Address      netip.Prefix
	Gateway      netip.Addr
	MAC          net.HardwareAddr
	DefaultRoute bool // install the sandbox's default route through Gateway
	// DisableIPv6 asks the driver to turn IPv6 off on the sandbox end itself;
	// false when the sandbox namespace already defaults to IPv6 off.
	DisableIPv6 bool
}

// Driver builds and tears down the kernel side of networks and endpoints.
// Every method is idempotent: creating what exists and deleting what is gone
// succeed, so restore after a crash can call them blindly.
type Driver interface {
	// Type is the driver name as users write it ("bridge", "host", "null").
	Type() string
	// CreateNetwork makes (or adopts, when External) the network's kernel objects.
	CreateNetwork(ctx context.Context, n *Network) error
	// DeleteNetwork removes what CreateNetwork made.
	DeleteNetwork(ctx context.Context, n *Network) error
	// Join attaches the sandbox whose network namespace is at nsPath.
	// It fills ep.HostIfName when the driver chose it.
	Join(ctx context.Context, n *Network, ep *Endpoint, nsPath string) error
	// Leave detaches the endpoint; a sandbox namespace that is gone is success.
	Leave(ctx context.Context, n *Network, ep *Endpoint, nsPath string) error
}

// Detacher is implemented by drivers whose endpoints have a host-side link
// that can be cut off the network at once, leaving its deletion to the
// teardown of the sandbox's namespace (which the kernel does in the
// background, and which a stray process holding the namespace delays).
type Detacher interface {
	// Detach takes the endpoint's host-side link off the network at once
	// (set down and released from its bridge: no frame reaches the sandbox
	// end, the bridge forgets its MACs) and returns the link's interface
	// index, for the caller to see it go; 0 when the link is already gone.
	Detach(ctx context.Context, n *Network, ep *Endpoint) (int, error)
}

// MACFromIP derives a locally administered unicast MAC from an IPv4 address,
// the way Docker does (02:42:a.b.c.d), so an address keeps its MAC across
// reconnects and neighbours' ARP caches stay valid.
func MACFromIP(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}
