// Package driver defines the narrow interface between the engine and the code
// that builds a network's kernel objects. The engine owns records, addresses
// and locking; a driver only turns a record into links, addresses and routes.
//
// A driver says what its networks take part in (Capabilities) and
// implements the optional interfaces for what only some drivers do
// (Detacher, Repairer, Router, HostLinker, Sweeper, PeerProgrammer,
// PairJoiner). The
// engine decides by these, never by a driver's name; the daemon's registry
// (internal/daemon/drivers.go) is the one place drivers are named.
// drivertest is a fake that implements all of them, for unit tests.
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
	Subnet     netip.Prefix // IPv4 subnet; zero on an IPv6-only network (Docker 28's --ipv4=false)
	Gateway    netip.Addr   // address of the bridge, default route of sandboxes
	// Subnet6 is the IPv6 subnet of a dual-stack or IPv6-only network; zero
	// on an IPv4-only network, whose links all keep IPv6 off (IPv6Off).
	// Gateway6 is the bridge's IPv6 address and the sandboxes' IPv6
	// default route. On such a network IPv6 is on on the bridge and the
	// sandbox ends (host ends, mere bridge ports, keep it off), with
	// accept_ra=0 and no SLAAC: addresses are static.
	Subnet6  netip.Prefix
	Gateway6 netip.Addr
	MTU      int
	ICC      bool // false: sandboxes on this network cannot reach each other (bridge port isolation)
	Internal bool // no default route out of the network
	External bool // the bridge existed before Tether: never delete it or change its addresses

	// Overlay driver only (zero for every other driver). The overlay driver
	// derives its link names from VNI and ignores BridgeName; its sandboxes'
	// MTU is UnderlayMTU-50, lowered further by a smaller non-zero MTU.
	// Options are the network's driver options as the user gave them (-o),
	// for drivers that read their own (macvlan: parent, macvlan_mode; ovs:
	// ovs.bridge, ovs.vlan, ovs.db). Validated by OptionChecker at creation.
	Options map[string]string
	// Aux are the IPAM aux addresses of the IPv4 subnet (--aux-address
	// name=ip): reserved, never handed to endpoints (macvlan's host shim).
	Aux map[string]netip.Addr

	VNI         int        // VXLAN network identifier, 1..16777215, the same on every host
	VTEP        netip.Addr // this host's underlay (advertise) address, IPv4 or IPv6: source of its VXLAN packets
	UnderlayIf  string     // underlay interface; "" = the interface holding VTEP
	UnderlayMTU int        // 0 = the underlay interface's MTU
}

// Endpoint is one sandbox's attachment to one network.
type Endpoint struct {
	ID         string
	IfName     string       // interface name inside the sandbox (eth0, eth1, ...)
	HostIfName string       // host-side interface name (bridge driver), chosen by the driver when empty
	Address    netip.Prefix // IPv4; zero on an IPv6-only network
	Gateway    netip.Addr
	// Address6 is the endpoint's IPv6 address (zero: none, IPv6 stays off
	// on the sandbox end). The driver turns IPv6 on on the sandbox end
	// (disable_ipv6=0, accept_ra=0, so no SLAAC) and adds it with DAD off
	// (IFA_F_NODAD): static and usable at once.
	Address6     netip.Prefix
	Gateway6     netip.Addr
	MAC          net.HardwareAddr
	DefaultRoute bool // install the sandbox's default routes through Gateway (and Gateway6 when set)
	// DisableIPv6 asks the driver to turn IPv6 off on the sandbox end itself;
	// false when the sandbox namespace already defaults to IPv6 off.
	DisableIPv6 bool
}

// Scope says where a network's records live: on this host (local) or in the
// cluster store, shared by every host (global).
type Scope string

const (
	ScopeLocal  Scope = "local"
	ScopeGlobal Scope = "global"
)

// NamespaceMode says how a driver's endpoints relate to the sandbox's
// network namespace.
type NamespaceMode int

const (
	// NamespaceOwn: the sandbox has its own namespace; the driver adds an
	// interface to it (bridge, overlay).
	NamespaceOwn NamespaceMode = iota
	// NamespaceHost: the sandbox shares the daemon's namespace (Docker's
	// "host"); the network is its only one.
	NamespaceHost
	// NamespaceNone: the sandbox has a namespace with loopback only
	// (Docker's "none"); the network is its only one.
	NamespaceNone
)

// Capabilities tell the engine what a driver's networks and endpoints take
// part in. The engine decides by these, never by a driver's name.
type Capabilities struct {
	Scope     Scope
	Namespace NamespaceMode
	// Predefined names the one network of this driver, which always exists
	// and which users cannot create another of ("host", "none"); "" for
	// drivers whose networks users create.
	Predefined string
	// Addresses: endpoints get an IPv4 address from the network's subnet
	// (IPAM), with the gateway and a MAC derived from the address.
	Addresses bool
	// Ports: endpoints may publish ports (held host ports, DNAT, proxy).
	Ports bool
	// Firewall: the network has entries in the firewall (NAT, isolation,
	// internal, icc, direct-routing protection).
	Firewall bool
	// DNS: the embedded resolver serves the endpoints' names.
	DNS bool
	// DefaultRoute: an endpoint may carry the sandbox's default route (the
	// first such endpoint does).
	DefaultRoute bool
	// WayOut: a sandbox on a non-internal network of this driver can reach
	// beyond the host (the resolver forwards its outside names).
	WayOut bool
}

// Driver builds and tears down the kernel side of networks and endpoints.
// Every method is idempotent: creating what exists and deleting what is gone
// succeed, so restore after a crash can call them blindly.
type Driver interface {
	// Type is the driver name as users write it ("bridge", "host", "null").
	Type() string
	// Capabilities are constant for a driver.
	Capabilities() Capabilities
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
	// end, the bridge forgets its MACs) and returns a channel closed once
	// the link is gone, nil when it is gone already. The channel may never
	// close (no link events to be had): callers bound their wait, then
	// delete the link with Leave.
	Detach(ctx context.Context, n *Network, ep *Endpoint) (<-chan struct{}, error)
}

// Repairer is implemented by drivers that can check an endpoint on
// restore and rebuild it in place when broken, without interrupting an
// intact one (bridge). The overlay implements it to put an intact
// endpoint back on its bridge bypass, and rebuilds nothing.
type Repairer interface {
	// Repair checks the endpoint's kernel objects against the records and
	// rebuilds them when they are not intact; it reports whether it did.
	// It fills ep.HostIfName when it chose a new one. inside lists the
	// links in the sandbox's namespace by name, read once for all its
	// endpoints (nil: not listed, the driver looks itself).
	Repair(ctx context.Context, n *Network, ep *Endpoint, nsPath string, inside map[string]SandboxLink) (repaired bool, err error)
}

// PairJoiner is implemented by drivers that can hand an endpoint's
// sandbox end to another runtime, which moves it into a namespace Tether
// never opens (Docker's remote driver protocol: Join answers the name of
// an interface in the host namespace, and dockerd moves, renames, addresses
// and routes it). JoinPair creates the veth pair in the host namespace,
// wires the host end as Join does, and leaves the sandbox end there, down,
// named ep.IfName, with ep.MAC and the network's MTU and no address. Leave
// deletes the pair wherever its sandbox end is by then.
type PairJoiner interface {
	JoinPair(ctx context.Context, n *Network, ep *Endpoint) error
	// PairAlive reports whether the endpoint's host end still exists (its
	// sandbox end, in a namespace Tether does not see, cannot be checked;
	// when that namespace is deleted the kernel deletes both ends).
	PairAlive(ctx context.Context, n *Network, ep *Endpoint) (bool, error)
}

// HostIfNamer is implemented by drivers that give an endpoint a host-side
// interface named by Endpoint.HostIfName: the engine asks for a fresh name
// before Join and sets it, so the endpoint's record can be written while
// the driver works. Join keeps a name it is given unless that name is taken
// (then it picks another, and the engine records that one).
type HostIfNamer interface {
	HostIfName() string
}

// OptionChecker is implemented by drivers that read their own options
// (Network.Options): CheckOptions validates a network before anything is
// built, and returns an error naming the option (a client error: the
// engine answers 400). It must not touch the kernel beyond reading (e.g.
// that a parent interface exists).
type OptionChecker interface {
	CheckOptions(n *Network) error
}

// P2PLink is a point-to-point link between two sandboxes: a veth pair with
// one end in each namespace, no bridge (Tether's "link" command). Each end
// has its address as a /32 (IPv4) and a host route to the other end's.
type P2PLink struct {
	ID           string
	NSA, NSB     string       // network namespace paths of the two sandboxes
	IfA, IfB     string       // interface names in A and in B
	AddrA, AddrB netip.Prefix // /32 each
	MTU          int
}

// Linker builds point-to-point links (the daemon registers one; the
// engine keeps the records). Every method is idempotent.
type Linker interface {
	// CreateLink makes the pair, addresses, routes and brings both ends up;
	// an intact link is left as it is.
	CreateLink(ctx context.Context, l *P2PLink) error
	// DeleteLink removes the pair; a namespace or end that is gone is success.
	DeleteLink(ctx context.Context, l *P2PLink) error
	// LinkIntact reports whether both ends exist with their addresses and
	// routes (restore: an intact link is not rebuilt).
	LinkIntact(ctx context.Context, l *P2PLink) (bool, error)
}

// SandboxLink is a link inside a sandbox's namespace.
type SandboxLink struct {
	Name      string
	Index     int
	PeerIndex int // a veth's peer's interface index (in the peer's namespace)
	Veth      bool
}

// Router is implemented by drivers whose endpoints can take the sandbox's
// default route after they joined: when the endpoint that carried it
// leaves (its interface, and with it the route, goes), the next endpoint
// able to carry one takes it over, as Docker moves a sandbox's gateway.
type Router interface {
	SetDefaultRoute(ctx context.Context, n *Network, ep *Endpoint, nsPath string) error
}

// Bridged is implemented by drivers whose networks are a Linux bridge
// the driver names itself (overlay: tov-<VNI>), for the firewall's entries
// and the doctor; a bridge network's name is the engine's.
type Bridged interface {
	BridgeName(n *Network) string
}

// HostLinker is implemented by drivers whose networks are host links the
// user may name or bring (bridge: com.docker.network.bridge.name, the
// daemon's "bridge" option).
type HostLinker interface {
	// LinkExists reports whether a host link of that name exists.
	LinkExists(name string) bool
	// LinkAddress reads an existing link's first IPv4 address: its prefix
	// is the network's subnet, the address its gateway.
	LinkAddress(name string) (netip.Prefix, netip.Addr, error)
}

// Sweeper is implemented by drivers that mark the host links they create
// (LinkMarker) and can find the ones no record names.
type Sweeper interface {
	// Sweep deletes the driver's host links whose owner is not in keep
	// (owner ID -> the link name the records give it) or that carry
	// another name, and returns how many it deleted.
	Sweep(ctx context.Context, keep map[string]string) (int, error)
}

// Peer is an endpoint on another host of a global network: its address
// and MAC, and the underlay address of its host (VXLAN tunnel endpoint).
type Peer struct {
	IP   netip.Addr // IPv4; invalid for an endpoint of an IPv6-only network
	IP6  netip.Addr // IPv6 of a dual-stack or IPv6-only network's endpoint; invalid otherwise
	MAC  net.HardwareAddr
	VTEP netip.Addr
}

func (p Peer) String() string {
	s := p.IP.String()
	if p.IP6.IsValid() {
		s += "," + p.IP6.String()
	}
	return s + "/" + p.MAC.String() + "@" + p.VTEP.String()
}

// Equal compares every field.
func (p Peer) Equal(q Peer) bool {
	return p.IP == q.IP && p.IP6 == q.IP6 && p.VTEP == q.VTEP && string(p.MAC) == string(q.MAC)
}

// PeerProgrammer is implemented by drivers of global networks: the engine
// tells them the endpoints other hosts have (from the cluster store).
type PeerProgrammer interface {
	AddPeer(ctx context.Context, n *Network, p Peer) error
	RemovePeer(ctx context.Context, n *Network, p Peer) error
	RemovePeers(ctx context.Context, n *Network, ps []Peer) error
	// Peers lists the peers programmed now (after a restart: to find the
	// ones that left while the daemon was down).
	Peers(ctx context.Context, n *Network) ([]Peer, error)
}

// LinkMarker is the alias Tether gives every host link it creates
// (bridges, host ends of veths): "tether:" and the owner's ID. A link
// without it is never touched.
func LinkMarker(ownerID string) string { return MarkerPrefix + ownerID }

// MarkerPrefix starts every LinkMarker.
const MarkerPrefix = "tether:"

// IsID reports whether s has the form of every Tether ID: 64 lowercase
// hex digits.
func IsID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// MACFromIP derives a locally administered unicast MAC from an IPv4 address,
// the way Docker does (02:42:a.b.c.d), so an address keeps its MAC across
// reconnects and neighbours' ARP caches stay valid. An IPv6 address (an
// IPv6-only network's endpoint) gives its last four bytes.
func MACFromIP(a netip.Addr) net.HardwareAddr {
	var b [4]byte
	if a.Is4() || a.Is4In6() {
		b = a.Unmap().As4()
	} else {
		s := a.As16()
		copy(b[:], s[12:])
	}
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}
