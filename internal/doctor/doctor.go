// Package doctor answers "why can't A reach B": it compares what Tether's
// records say the host should look like (State, from the engine) with what
// the kernel holds (Kernel: sysctls, links, routes, FDB and neighbour
// entries, nftables chains) and reports each difference that drops or
// misroutes traffic, with why it matters and the command or configuration
// that fixes it (docs/observability.md).
//
// The checks are pure functions of State and Kernel; the kernel readers
// live in kernel_linux.go (vishvananda/netlink, google/nftables, /proc/sys:
// no `ip` or `nft` processes). Unit tests give fakes for both.
package doctor

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/tether-net/tether/internal/doctor/report"
	"github.com/tether-net/tether/internal/driver/overlay"
)

// Check names, as reported.
const (
	CheckIPForward   = "ip_forward"
	CheckBrNetfilter = "br_netfilter"
	CheckForward     = "forward_chains"
	CheckTable       = "tether_table"
	CheckRoutes      = "route_overlap"
	CheckMTU         = "overlay_mtu"
	CheckCluster     = "cluster_store"
	CheckPeers       = "overlay_peers"
	CheckBypass      = "overlay_bypass"
	CheckDNS         = "dns_upstreams"
	CheckPath        = "path"
)

// State is what Tether's records say: the networks and sandboxes of this
// host, the cluster's view, the resolver's upstreams.
type State struct {
	// Firewall: iptables=true (table ip tether is expected); IPv6Firewall:
	// ip6tables=true (table ip6 tether too).
	Firewall     bool
	IPv6Firewall bool
	// AcceptOtherTables: forward-accept-other-tables is on.
	AcceptOtherTables bool
	Networks          []Network
	Sandboxes         []Sandbox
	// Cluster is nil without a cluster store.
	Cluster   *Cluster
	Upstreams []netip.AddrPort
}

// Network is one network as the doctor needs it.
type Network struct {
	ID, Name, Driver string
	// Bridge is the Linux bridge of a bridge or overlay network ("" for
	// drivers without one).
	Bridge  string
	Subnet  netip.Prefix
	Subnet6 netip.Prefix
	Created time.Time
	// Firewalled: the network has entries in table ip tether (bridge
	// networks).
	Firewalled bool
	Internal   bool
	ICC        bool
	Masquerade bool
	// Global networks: the VNI, the VXLAN device (named after the VNI when
	// empty) and this host's VTEP.
	Global bool
	VNI    int
	VXLAN  string
	VTEP   netip.Addr
}

// fill names the links of overlay networks after their VNI (the overlay
// driver's names) where the records leave them empty.
func (st *State) fill() {
	for i := range st.Networks {
		n := &st.Networks[i]
		if !n.Global || n.VNI == 0 {
			continue
		}
		if n.VXLAN == "" {
			n.VXLAN = overlay.VxlanName(n.VNI)
		}
		if n.Bridge == "" {
			n.Bridge = overlay.BridgeName(n.VNI)
		}
	}
}

// Sandbox is one local sandbox.
type Sandbox struct {
	ID, Name  string
	Endpoints []Endpoint
}

// Endpoint is one attachment of a local sandbox.
type Endpoint struct {
	NetworkID string
	HostIf    string // host end of its veth ("" when the driver has none)
	Address   netip.Prefix
	MAC       string
}

// Cluster is the cluster store's side.
type Cluster struct {
	Self string
	// Reach is the answer of a round trip to the store (nil: it answered).
	Reach error
	// Registered: this node's key (under its lease) is in the store's
	// node list; only meaningful when Reach is nil.
	Registered bool
	TTL        time.Duration
	// Peers are the remote endpoints the cluster watch delivered (the
	// last known view, also while the store is away).
	Peers []Peer
}

// Peer is a remote endpoint of a global network.
type Peer struct {
	NetworkID, Sandbox, Node string
	IP                       netip.Addr
	MAC                      string
	VTEP                     netip.Addr
}

// Kernel is what the doctor reads of the host's kernel.
type Kernel interface {
	// Sysctl reads /proc/sys/<key> ("net/ipv4/ip_forward"), trimmed; an
	// error satisfying errors.Is(err, fs.ErrNotExist) when it does not exist.
	Sysctl(key string) (string, error)
	// Routes lists the IPv4 and IPv6 routes of every table.
	Routes() ([]Route, error)
	// Link finds a link by name; nil, nil when there is none.
	Link(name string) (*Link, error)
	LinkByIndex(index int) (*Link, error)
	// LinkWithAddr is the link holding address a; nil, nil when none does.
	LinkWithAddr(a netip.Addr) (*Link, error)
	// FDB lists the static unicast FDB entries of a VXLAN device (`bridge
	// fdb show dev DEV`); Neighbours its permanent neighbour entries.
	FDB(dev string) ([]FDB, error)
	Neighbours(dev string) ([]Neigh, error)
	// ForwardChains lists the base chains of type filter on the forward
	// hook, of every family and table, with their rules.
	ForwardChains() ([]Chain, error)
	// Table reads one table; nil, nil when it does not exist.
	Table(family, name string) (*Table, error)
}

// Prober asks a DNS server one question and reports whether it answered.
type Prober interface {
	Probe(ctx context.Context, server netip.AddrPort) error
}

// Link is a network interface.
type Link struct {
	Name        string
	Index       int
	MTU         int
	Up          bool
	Kind        string // "bridge", "veth", "vxlan", ...
	MasterIndex int
	// ParentIndex is a VXLAN device's underlay link (0: not bound to one).
	ParentIndex int
	// Ingress names the BPF programs on the link's TCX ingress hook (the
	// bypass's on VXLAN devices, its decapsulation on underlays).
	Ingress []string
}

// Route is one route.
type Route struct {
	Dst   netip.Prefix
	Dev   string // "" for routes without an output interface (blackhole, ...)
	Table int
	Type  string // "unicast", "blackhole", "unreachable", "prohibit", ...
	Via   netip.Addr
}

// FDB is a static FDB entry: MAC -> remote VTEP.
type FDB struct {
	MAC string
	Dst netip.Addr
}

// Neigh is a permanent neighbour entry: IP -> MAC.
type Neigh struct {
	IP  netip.Addr
	MAC string
}

// Chain is a base chain with its rules.
type Chain struct {
	Family, Table, Name string
	Hook                string // "forward", "prerouting", ...
	Type                string // "filter", "nat", "route"
	Priority            int
	Policy              string // "accept" or "drop"
	Rules               []Rule
}

// Rule is a rule reduced to what the doctor understands: interface and
// address matches and its verdict.
type Rule struct {
	Handle  uint64
	Comment string
	// Verdict is "accept", "drop", "reject", "jump", "goto", "return" or "".
	Verdict string
	IIF     string
	OIF     string
	Src     netip.Prefix
	Dst     netip.Prefix
	// CtState: the rule matches conntrack state or status bits.
	CtState bool
	// NFProto: an inet rule limited to one family ("ipv4", "ipv6"; ""
	// both).
	NFProto string
	// Other: the rule matches something else as well, so the doctor cannot
	// tell which packets it takes.
	Other bool
}

// matchesAll: no match at all, the rule takes every packet.
func (r Rule) matchesAll() bool {
	return r.IIF == "" && r.OIF == "" && !r.Src.IsValid() && !r.Dst.IsValid() && !r.CtState && !r.Other
}

// Table is an nftables table: its chains and the elements of its sets
// (interface names as strings; other sets by element count only).
type Table struct {
	Family, Name string
	Chains       []Chain
	Sets         map[string][]string
}

// Doctor runs the checks.
type Doctor struct {
	K Kernel
	P Prober
	// ProbeTimeout bounds each DNS probe (default 2 s).
	ProbeTimeout time.Duration
}

// Host runs every host check and returns the report.
func (d *Doctor) Host(ctx context.Context, st *State) *report.Report {
	st.fill()
	r := &run{d: d, st: st, k: d.K}
	r.host(ctx)
	return r.report()
}

// Pair runs the host checks and traces the path from sandbox a to sandbox
// b (IDs or names of local sandboxes; b may also name a remote endpoint of
// a global network). The caller resolves unknown names to a not-found
// error before calling: Pair takes what it cannot find for no path.
func (d *Doctor) Pair(ctx context.Context, st *State, a, b string) *report.Report {
	st.fill()
	r := &run{d: d, st: st, k: d.K}
	r.host(ctx)
	r.pair = r.tracePair(a, b)
	return r.report()
}

// run is one doctor run: the findings so far and what earlier checks
// learnt for later ones.
type run struct {
	d        *Doctor
	st       *State
	k        Kernel
	checks   []report.Check
	findings []report.Finding
	pair     *report.Pair
	// learnt by the host checks, used by the pair trace
	forward   []Chain // other tables' forward chains
	bridgeNF  bool    // bridged IPv4 traffic passes the IP hooks
	ipForward bool
}

func (r *run) host(ctx context.Context) {
	r.do(CheckIPForward, r.checkIPForward)
	r.do(CheckBrNetfilter, r.checkBrNetfilter)
	r.do(CheckForward, r.checkForward)
	r.do(CheckTable, r.checkTable)
	r.do(CheckRoutes, r.checkRoutes)
	r.do(CheckMTU, r.checkMTU)
	r.do(CheckCluster, r.checkCluster)
	r.do(CheckPeers, r.checkPeers)
	r.do(CheckBypass, r.checkBypass)
	r.do(CheckDNS, func() string { return r.checkDNS(ctx) })
}

// do runs one check: fn adds findings and returns why it was skipped ("" when it ran).
func (r *run) do(name string, fn func() string) {
	before := len(r.findings)
	skipped := fn()
	c := report.Check{Name: name, Severity: report.OK}
	if skipped != "" {
		c.Severity, c.Detail = report.Skipped, skipped
	}
	for _, f := range r.findings[before:] {
		if f.Severity.Rank() > c.Severity.Rank() {
			c.Severity = f.Severity
		}
	}
	r.checks = append(r.checks, c)
}

func (r *run) add(f report.Finding) { r.findings = append(r.findings, f) }

func (r *run) report() *report.Report {
	rep := &report.Report{Checks: r.checks, Findings: r.findings, Pair: r.pair}
	if rep.Findings == nil {
		rep.Findings = []report.Finding{}
	}
	rep.Broken = slices.ContainsFunc(r.findings, func(f report.Finding) bool { return f.Severity == report.Error })
	return rep
}

func (st *State) network(id string) *Network {
	for i := range st.Networks {
		if st.Networks[i].ID == id {
			return &st.Networks[i]
		}
	}
	return nil
}

// openBridges are the bridges of firewalled, non-internal networks: their
// traffic crosses the forward hook on its way out and in.
func (st *State) openBridges() []string {
	var out []string
	for _, n := range st.Networks {
		if n.Firewalled && !n.Internal && n.Bridge != "" {
			out = append(out, n.Bridge)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func sameMAC(a, b string) bool {
	x, err1 := net.ParseMAC(a)
	y, err2 := net.ParseMAC(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return x.String() == y.String()
}
