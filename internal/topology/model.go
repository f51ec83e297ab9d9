// Package topology turns the engine's state into a picture of it: which
// hosts there are, the networks on them, the sandboxes attached to those
// networks with their addresses and published ports, the point-to-point
// links between sandboxes, and the sandboxes other cluster hosts have on
// overlay networks (overlay peers). Build makes the model; DOT and SVG draw
// it. Everything is sorted, so the same state always gives the same bytes.
//
// Names come from users and, for overlay peers, from other hosts through the
// cluster store: the renderers escape every string they write, and the SVG
// layout is computed here (no external tool, no script in the output).
package topology

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/engine"
)

// LocalHostID is the ID of this host when the daemon has no cluster store
// (with one, a host's ID is its cluster node ID).
const LocalHostID = "local"

// Graph is the whole picture, in drawing order.
type Graph struct {
	Hosts     []Host    `json:"hosts"`
	Networks  []Network `json:"networks"`
	Sandboxes []Sandbox `json:"sandboxes"`
	Links     []Link    `json:"links"`
}

// Host is a machine running a daemon: this one, or a cluster member known
// from the store (its live registration, or an endpoint it published).
type Host struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Addr string `json:"addr,omitempty"` // advertise address (its overlays' VTEP)
	Self bool   `json:"self,omitempty"`
	// Live: the host holds a live registration in the cluster store (this
	// host always counts as live).
	Live bool `json:"live"`
}

// Network is one network with its addressing.
type Network struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Driver   string   `json:"driver"`
	Scope    string   `json:"scope"` // local or global
	Subnets  []string `json:"subnets,omitempty"`
	Gateways []string `json:"gateways,omitempty"`
	Internal bool     `json:"internal,omitempty"`
	VNI      int      `json:"vni,omitempty"`
}

// Sandbox is a network namespace with its attachments. Remote ones are
// overlay peers: sandboxes of another host, known from the cluster store,
// with only their overlay endpoints.
type Sandbox struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Host      string     `json:"host"` // Host.ID
	Remote    bool       `json:"remote,omitempty"`
	Endpoints []Endpoint `json:"endpoints,omitempty"`
}

// Endpoint is one attachment of a sandbox to a network.
type Endpoint struct {
	Network   string   `json:"network"` // Network.ID
	IfName    string   `json:"ifName,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	MAC       string   `json:"mac,omitempty"`
	Ports     []Port   `json:"ports,omitempty"`
}

// Port is a published port: HostIP:HostPort/Proto on the host goes to the
// endpoint's ContainerPort.
type Port struct {
	Proto         string `json:"proto"`
	HostIP        string `json:"hostIp"`
	HostPort      uint16 `json:"hostPort"`
	ContainerPort uint16 `json:"containerPort"`
}

// String is Docker's notation, "0.0.0.0:8080->80/tcp".
func (p Port) String() string {
	host := cmp.Or(p.HostIP, "0.0.0.0")
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(int(p.HostPort)) + "->" + strconv.Itoa(int(p.ContainerPort)) + "/" + p.Proto
}

// Link is a point-to-point link between two local sandboxes.
type Link struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	A     string `json:"a"` // Sandbox.ID
	B     string `json:"b"`
	IfA   string `json:"ifA,omitempty"`
	IfB   string `json:"ifB,omitempty"`
	AddrA string `json:"addrA,omitempty"`
	AddrB string `json:"addrB,omitempty"`
}

// Input is the engine's state the picture is made of.
type Input struct {
	// HostName names this host when Self is zero (no cluster store).
	HostName string
	// Self is this host's cluster node; Nodes the live cluster nodes (Self
	// among them or not). Both zero without a cluster store.
	Self  cluster.Node
	Nodes []cluster.Node
	// What the engine's Networks, Sandboxes and Links return. They may have
	// been read at slightly different moments: an endpoint or link that
	// names a network or sandbox not listed is left out.
	Networks  []*engine.NetworkView
	Sandboxes []*engine.Sandbox
	Links     []*engine.Link
}

// Build makes the picture of in.
func Build(in Input) Graph {
	b := newBuilder(in)
	b.networks(in.Networks)
	b.localSandboxes(in.Sandboxes)
	b.peers(in.Networks)
	b.links(in.Links)
	return b.graph()
}

type builder struct {
	self  string
	hosts map[string]*Host
	nets  map[string]bool // network IDs listed
	sbs   map[string]*Sandbox
	g     Graph
}

func newBuilder(in Input) *builder {
	b := &builder{hosts: map[string]*Host{}, nets: map[string]bool{}, sbs: map[string]*Sandbox{}}
	self := Host{ID: LocalHostID, Name: in.HostName, Self: true, Live: true}
	if in.Self.ID != "" {
		self = Host{ID: in.Self.ID, Name: cmp.Or(in.Self.Name, in.HostName), Addr: addrString(in.Self.Addr), Self: true, Live: true}
	}
	b.self = self.ID
	b.hosts[self.ID] = &self
	for _, n := range in.Nodes {
		if n.ID != "" && n.ID != self.ID {
			b.hosts[n.ID] = &Host{ID: n.ID, Name: n.Name, Addr: addrString(n.Addr), Live: true}
		}
	}
	return b
}

func (b *builder) networks(views []*engine.NetworkView) {
	for _, v := range views {
		b.nets[v.ID] = true
		b.g.Networks = append(b.g.Networks, network(v))
	}
}

func network(v *engine.NetworkView) Network {
	n := Network{ID: v.ID, Name: v.Name, Driver: v.Driver, Scope: cmp.Or(v.Scope, "local"), Internal: v.Internal, VNI: v.VNI}
	for _, p := range []netip.Prefix{v.Subnet, v.Subnet6} {
		if p.IsValid() {
			n.Subnets = append(n.Subnets, p.String())
		}
	}
	for _, a := range []netip.Addr{v.Gateway, v.Gateway6} {
		if a.IsValid() {
			n.Gateways = append(n.Gateways, a.String())
		}
	}
	return n
}

func (b *builder) localSandboxes(sbs []*engine.Sandbox) {
	for _, s := range sbs {
		sb := &Sandbox{ID: s.ID, Name: s.Name, Host: b.self}
		for _, ep := range s.Endpoints {
			if b.nets[ep.NetworkID] {
				sb.Endpoints = append(sb.Endpoints, endpoint(ep))
			}
		}
		b.sbs[s.ID] = sb
	}
}

func endpoint(ep *engine.Endpoint) Endpoint {
	out := Endpoint{Network: ep.NetworkID, IfName: ep.IfName, MAC: ep.MAC, Addresses: prefixes(ep.Address, ep.Address6)}
	for _, p := range ep.Ports {
		out.Ports = append(out.Ports, Port{Proto: p.Proto, HostIP: addrString(p.HostIP), HostPort: p.HostPort, ContainerPort: p.ContainerPort})
	}
	slices.SortFunc(out.Ports, func(a, b Port) int {
		return cmp.Or(cmp.Compare(a.HostPort, b.HostPort), strings.Compare(a.Proto, b.Proto), strings.Compare(a.HostIP, b.HostIP))
	})
	return out
}

// peers adds the endpoints other hosts have on global networks, one
// sandbox per host and sandbox ID, and their hosts.
func (b *builder) peers(views []*engine.NetworkView) {
	for _, v := range views {
		for _, r := range v.Remote {
			if r.Node == "" || r.Node == b.self {
				continue
			}
			h := b.hosts[r.Node]
			if h == nil {
				h = &Host{ID: r.Node, Name: r.NodeName, Addr: addrString(r.VTEP)}
				b.hosts[r.Node] = h
			}
			h.Live = h.Live || r.Live
			key := r.Node + "/" + r.SandboxID
			sb := b.sbs[key]
			if sb == nil {
				sb = &Sandbox{ID: r.SandboxID, Name: r.SandboxName, Host: r.Node, Remote: true}
				b.sbs[key] = sb
			}
			sb.Endpoints = append(sb.Endpoints, Endpoint{Network: v.ID, MAC: r.MAC, Addresses: prefixes(r.Address, r.Address6)})
		}
	}
}

func (b *builder) links(links []*engine.Link) {
	for _, l := range links {
		if b.sbs[l.A] == nil || b.sbs[l.B] == nil {
			continue
		}
		b.g.Links = append(b.g.Links, Link{ID: l.ID, Name: l.Name, A: l.A, B: l.B, IfA: l.IfA, IfB: l.IfB,
			AddrA: prefixString(l.AddrA), AddrB: prefixString(l.AddrB)})
	}
}

// graph sorts everything: this host first, then the others by name; local
// sandboxes before remote ones, each host's by name; networks, links and
// endpoints by name.
func (b *builder) graph() Graph {
	g := b.g
	for _, h := range b.hosts {
		g.Hosts = append(g.Hosts, *h)
	}
	slices.SortFunc(g.Hosts, func(x, y Host) int {
		return cmp.Or(-boolCmp(x.Self, y.Self), strings.Compare(x.Name, y.Name), strings.Compare(x.ID, y.ID))
	})
	order := map[string]int{}
	for i, h := range g.Hosts {
		order[h.ID] = i
	}
	netName := map[string]string{}
	slices.SortFunc(g.Networks, func(x, y Network) int {
		return cmp.Or(strings.Compare(x.Name, y.Name), strings.Compare(x.ID, y.ID))
	})
	for _, n := range g.Networks {
		netName[n.ID] = n.Name
	}
	for _, s := range b.sbs {
		slices.SortStableFunc(s.Endpoints, func(x, y Endpoint) int {
			return cmp.Or(strings.Compare(netName[x.Network], netName[y.Network]), strings.Compare(x.Network, y.Network))
		})
		g.Sandboxes = append(g.Sandboxes, *s)
	}
	slices.SortFunc(g.Sandboxes, func(x, y Sandbox) int {
		return cmp.Or(cmp.Compare(order[x.Host], order[y.Host]), strings.Compare(x.Name, y.Name), strings.Compare(x.ID, y.ID))
	})
	slices.SortFunc(g.Links, func(x, y Link) int {
		return cmp.Or(strings.Compare(x.Name, y.Name), strings.Compare(x.ID, y.ID))
	})
	return g
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func prefixes(ps ...netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p.String())
		}
	}
	return out
}
