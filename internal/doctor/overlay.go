package doctor

// Overlay checks: the MTU of VXLAN devices against their underlay, the
// cluster store and this node's lease, and the FDB and neighbour entries
// of remote endpoints (docs/overlay.md: one static FDB entry and one
// permanent neighbour entry per remote endpoint, no miss handling, so a
// missing entry is a peer this host cannot reach).

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tether-net/tether/internal/doctor/report"
	"github.com/tether-net/tether/internal/fastpath"
)

// vxlanOverhead is what VXLAN adds to an inner IP packet (outer IP, UDP,
// VXLAN and inner Ethernet headers).
func vxlanOverhead(vtep netip.Addr) int {
	if vtep.Is6() && !vtep.Is4In6() {
		return 70
	}
	return 50
}

func (st *State) globals() []Network {
	var out []Network
	for _, n := range st.Networks {
		if n.Global && n.VXLAN != "" {
			out = append(out, n)
		}
	}
	return out
}

// checkMTU: a VXLAN device's MTU plus the encapsulation must fit the
// underlay's MTU, and the sandboxes' host ends must not exceed the VXLAN
// device's (large packets are dropped silently: small pings work, bulk
// transfers stall).
func (r *run) checkMTU() string {
	gs := r.st.globals()
	if len(gs) == 0 {
		return "no overlay network on this host"
	}
	for _, n := range gs {
		vx, err := r.k.Link(n.VXLAN)
		if err != nil || vx == nil {
			r.add(report.Finding{Check: CheckMTU, Severity: report.Error, Subject: "network " + n.Name,
				What: fmt.Sprintf("VXLAN device %s of overlay network %s is missing", n.VXLAN, n.Name),
				Why:  "the network has no way to other hosts", Fix: "restart the daemon (it recreates the network's devices at start)"})
			continue
		}
		r.underlayMTU(n, vx)
		r.endpointMTU(n, vx)
	}
	return ""
}

func (r *run) underlayMTU(n Network, vx *Link) {
	var under *Link
	if vx.ParentIndex > 0 {
		under, _ = r.k.LinkByIndex(vx.ParentIndex)
	}
	if under == nil && n.VTEP.IsValid() {
		under, _ = r.k.LinkWithAddr(n.VTEP)
	}
	if under == nil {
		return
	}
	oh := vxlanOverhead(n.VTEP)
	if vx.MTU+oh <= under.MTU {
		return
	}
	r.add(report.Finding{Check: CheckMTU, Severity: report.Error, Subject: fmt.Sprintf("%s mtu %d, underlay %s mtu %d", vx.Name, vx.MTU, under.Name, under.MTU),
		What: fmt.Sprintf("VXLAN device %s (network %s) has MTU %d, but its underlay %s has MTU %d: %d + %d bytes of VXLAN headers do not fit", vx.Name, n.Name, vx.MTU, under.Name, under.MTU, vx.MTU, oh),
		Why:  "packets larger than the underlay allows are dropped after encapsulation, silently: pings and small requests work, bulk transfers between hosts stall",
		Fix:  fmt.Sprintf("ip link set dev %s mtu %d, or raise the underlay's MTU; recreate the network with -o com.docker.network.driver.mtu=%d to make it last", vx.Name, under.MTU-oh, under.MTU-oh)})
}

func (r *run) endpointMTU(n Network, vx *Link) {
	for _, sb := range r.st.Sandboxes {
		for _, ep := range sb.Endpoints {
			if ep.NetworkID != n.ID || ep.HostIf == "" {
				continue
			}
			l, err := r.k.Link(ep.HostIf)
			if err != nil || l == nil || l.MTU <= vx.MTU {
				continue
			}
			r.add(report.Finding{Check: CheckMTU, Severity: report.Error, Subject: fmt.Sprintf("%s mtu %d", l.Name, l.MTU),
				What: fmt.Sprintf("sandbox %s's interface on overlay network %s (host end %s) has MTU %d, above VXLAN device %s's %d", sb.Name, n.Name, l.Name, l.MTU, vx.Name, vx.MTU),
				Why:  "the sandbox sends frames the VXLAN device cannot carry: large packets to other hosts are dropped",
				Fix:  fmt.Sprintf("ip link set dev %s mtu %d (and the sandbox end: tether exec %s -- ip link set dev eth0 mtu %d), or reconnect the sandbox to the network", l.Name, vx.MTU, sb.Name, vx.MTU)})
		}
	}
}

// checkCluster: the store answers, and this node is registered under a
// live lease (otherwise the other hosts drop its endpoints and its VXLAN
// traffic after the lease's TTL).
func (r *run) checkCluster() string {
	c := r.st.Cluster
	if c == nil {
		return "no cluster store configured"
	}
	if c.Reach != nil {
		r.add(report.Finding{Check: CheckCluster, Severity: report.Error, Subject: "cluster store",
			What: "the cluster store does not answer: " + c.Reach.Error(),
			Why:  fmt.Sprintf("overlay attaches and network changes fail, endpoints of other hosts are not learnt, and once this node's lease expires (TTL %s) the other hosts remove its endpoints and drop its VXLAN traffic. The datapath already programmed keeps working", c.TTL),
			Fix:  "check that the store runs and is reachable from this host (etcdctl --endpoints=URL endpoint health; zkCli.sh -server HOST:PORT ruok), that the daemon's cluster-store URL names it, and that no firewall blocks its port"})
		return ""
	}
	if !c.Registered {
		r.add(report.Finding{Check: CheckCluster, Severity: report.Error, Subject: "node " + c.Self,
			What: fmt.Sprintf("this node (%s) is not registered in the cluster store: its lease expired or was revoked", c.Self),
			Why:  "the other hosts treat this node as gone: they removed its endpoints and drop VXLAN from it; this node hands out no overlay addresses",
			Fix:  fmt.Sprintf("the daemon re-registers within %s of the store answering again; if it does not, look for \"cluster\" in the daemon log and restart the daemon", c.TTL/3)})
	}
	return ""
}

// checkPeers compares, per overlay network, the remote endpoints the
// cluster delivered with the VXLAN device's FDB and neighbour entries.
func (r *run) checkPeers() string {
	gs := r.st.globals()
	if r.st.Cluster == nil || len(gs) == 0 {
		return "no overlay network on this host"
	}
	for _, n := range gs {
		fdb, err1 := r.k.FDB(n.VXLAN)
		neigh, err2 := r.k.Neighbours(n.VXLAN)
		if err1 != nil || err2 != nil {
			continue // the device is missing: overlay_mtu says so
		}
		for _, p := range r.st.Cluster.Peers {
			if p.NetworkID == n.ID {
				r.peerFinding(n, p, fdb, neigh)
			}
		}
	}
	r.checkGuard()
	return ""
}

// guardTable is the VXLAN guard (firewall.VXLANTable): VXLAN is accepted
// only from the underlay addresses in its set nodes.
const guardTable = "tether_vxlan"

// guardBlocks says whether the VXLAN guard of vtep's family exists and
// lacks vtep (VXLAN from it is dropped), naming the table.
func (r *run) guardBlocks(vtep netip.Addr) (string, bool) {
	if !r.st.Firewall || !vtep.IsValid() {
		return "", false
	}
	fam := "ip"
	if vtep.Is6() && !vtep.Is4In6() {
		fam = "ip6"
	}
	t, err := r.k.Table(fam, guardTable)
	if err != nil || t == nil {
		return "", false
	}
	return "table " + fam + " " + guardTable, !slices.Contains(t.Sets["nodes"], vtep.String())
}

// checkGuard: every peer's VTEP is in the VXLAN guard's set.
func (r *run) checkGuard() {
	seen := map[netip.Addr]bool{}
	for _, p := range r.st.Cluster.Peers {
		if seen[p.VTEP] {
			continue
		}
		seen[p.VTEP] = true
		table, blocked := r.guardBlocks(p.VTEP)
		if !blocked {
			continue
		}
		r.add(report.Finding{Check: CheckPeers, Severity: report.Error, Subject: fmt.Sprintf("%s set nodes", table),
			What: fmt.Sprintf("%s set nodes lacks %s, the VTEP of node %s: VXLAN from it is dropped (hook input, priority raw)", table, p.VTEP, p.Node),
			Why:  fmt.Sprintf("sandboxes on node %s cannot reach this host's sandboxes (their frames arrive and are dropped); the guard admits only nodes with a live registration in the cluster store", p.Node),
			Fix:  fmt.Sprintf("check cluster_store here and on node %s (its lease may have expired); restart this daemon to rebuild the set; by hand: nft add element %s nodes { %s }", p.Node, strings.TrimPrefix(table, "table "), p.VTEP)})
	}
}

// missingEntries says which of p's entries the device lacks ("" when none).
func missingEntries(p Peer, fdb []FDB, neigh []Neigh) []string {
	var miss []string
	if !slices.ContainsFunc(fdb, func(e FDB) bool { return sameMAC(e.MAC, p.MAC) && e.Dst == p.VTEP }) {
		miss = append(miss, fmt.Sprintf("FDB entry %s dst %s", p.MAC, p.VTEP))
	}
	if p.IP.IsValid() && !slices.ContainsFunc(neigh, func(e Neigh) bool { return e.IP == p.IP && sameMAC(e.MAC, p.MAC) }) {
		miss = append(miss, fmt.Sprintf("neighbour entry %s lladdr %s", p.IP, p.MAC))
	}
	return miss
}

func (r *run) peerFinding(n Network, p Peer, fdb []FDB, neigh []Neigh) {
	miss := missingEntries(p, fdb, neigh)
	if len(miss) == 0 {
		return
	}
	var fix []string
	for _, m := range miss {
		if strings.HasPrefix(m, "FDB") {
			fix = append(fix, fmt.Sprintf("bridge fdb replace %s dev %s dst %s self permanent", p.MAC, n.VXLAN, p.VTEP))
		} else {
			fix = append(fix, fmt.Sprintf("ip neigh replace %s lladdr %s dev %s nud permanent", p.IP, p.MAC, n.VXLAN))
		}
	}
	r.add(report.Finding{Check: CheckPeers, Severity: report.Error, Subject: fmt.Sprintf("peer %s (%s) on node %s", p.Sandbox, p.IP, p.Node),
		What: fmt.Sprintf("VXLAN device %s (network %s) lacks the %s of remote sandbox %s", n.VXLAN, n.Name, strings.Join(miss, " and "), p.Sandbox),
		Why:  "the overlay has no learning and no miss handling: without these entries the local sandboxes cannot reach that sandbox (ARP goes unanswered or frames are not sent to its host)",
		Fix:  "restart the daemon (it programs every peer from the cluster store at start), or by hand: " + strings.Join(fix, "; ")})
}

// checkBypass: each overlay network's VXLAN device carries the bridge
// bypass's program (docs/overlay.md, "Bridge bypass"). Without it every
// frame between sandboxes goes through the bridge and br_netfilter: that
// works, with less throughput, so it is worth knowing, not an error.
func (r *run) checkBypass() string {
	gs := r.st.globals()
	if len(gs) == 0 {
		return "no overlay network on this host"
	}
	for _, n := range gs {
		vx, err := r.k.Link(n.VXLAN)
		if err != nil || vx == nil {
			continue // a missing device is overlay_mtu's finding
		}
		if slices.Contains(vx.Ingress, fastpath.ProgramName) {
			r.checkTunnel(n, vx)
			continue
		}
		r.add(report.Finding{Check: CheckBypass, Severity: report.Info, Subject: "network " + n.Name,
			What: fmt.Sprintf("the bridge bypass (BPF program %s) is not on %s: frames of overlay network %s go through its bridge", fastpath.ProgramName, vx.Name, n.Name),
			Why:  "each frame then also runs br_netfilter's pass through the IPv4/IPv6 hooks and conntrack: traffic flows, with less throughput between hosts",
			Fix:  "look for \"overlay: bridge bypass\" in the daemon's log: the bypass needs Linux 6.6 (TCX) and the privilege to load BPF programs; TETHER_OVERLAY_BYPASS=0 turns it off"})
	}
	return ""
}

// checkTunnel: with the bypass on, an overlay over an IPv4 underlay also
// has the decapsulation program on its underlay interface (docs/overlay.md,
// "VXLAN in BPF"). Without it the devices carry the tunnel: that works,
// with less throughput (or it was turned off: TETHER_OVERLAY_BYPASS=bridge).
func (r *run) checkTunnel(n Network, vx *Link) {
	if !n.VTEP.Is4() || vx.ParentIndex == 0 {
		return // an IPv6 underlay, or no underlay interface: the devices do it
	}
	under, err := r.k.LinkByIndex(vx.ParentIndex)
	if err != nil || under == nil || slices.Contains(under.Ingress, fastpath.DecapName) {
		return
	}
	r.add(report.Finding{Check: CheckBypass, Severity: report.Info, Subject: "network " + n.Name,
		What: fmt.Sprintf("the VXLAN tunnel in BPF (program %s) is not on %s, the underlay of %s: VXLAN device %s encapsulates and decapsulates overlay network %s's packets", fastpath.DecapName, under.Name, vx.Name, vx.Name, n.Name),
		Why:  "each packet then also passes the host's IP and UDP layers, netfilter hooks, conntrack and the device's queue: traffic flows, with less throughput between hosts",
		Fix:  "TETHER_OVERLAY_BYPASS=bridge in the daemon's environment turns it off on purpose; otherwise look for \"VXLAN decapsulation in BPF\" in the daemon's log"})
}
