package doctor

// The path between two sandboxes, hop by hop, and the first hop that
// breaks it.

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/tether-net/tether/internal/doctor/report"
)

func (st *State) sandbox(ref string) *Sandbox {
	for i := range st.Sandboxes {
		if st.Sandboxes[i].ID == ref {
			return &st.Sandboxes[i]
		}
	}
	for i := range st.Sandboxes {
		if st.Sandboxes[i].Name == ref {
			return &st.Sandboxes[i]
		}
	}
	return nil
}

// remote finds a remote endpoint by sandbox name or ID.
func (st *State) remote(ref string) []Peer {
	if st.Cluster == nil {
		return nil
	}
	var out []Peer
	for _, p := range st.Cluster.Peers {
		if p.Sandbox == ref {
			out = append(out, p)
		}
	}
	return out
}

// tracePair builds the path from a to b and marks where it breaks; the
// break becomes a finding too (check "path").
func (r *run) tracePair(a, b string) *report.Pair {
	var p *report.Pair
	r.do(CheckPath, func() string {
		p = r.pathOf(a, b)
		for _, h := range p.Hops {
			if !h.OK {
				p.BreaksAt = h.Step
				r.add(report.Finding{Check: CheckPath, Severity: report.Error, Subject: p.A + " -> " + p.B,
					What: fmt.Sprintf("%s cannot reach %s (%s): %s: %s", p.A, p.B, p.Path, h.Step, h.Detail),
					Why:  "the first hop on the way that drops the traffic; later hops were not looked at",
					Fix:  cmp.Or(h.Fix, r.pathFix(p.A, p.B, h))})
				break
			}
		}
		return ""
	})
	return p
}

func (r *run) pathOf(a, b string) *report.Pair {
	p := &report.Pair{A: a, B: b, Path: report.PathNone}
	sa := r.st.sandbox(a)
	if sa == nil {
		p.Hops = []report.Hop{{Step: "sandbox " + a, Detail: "not a sandbox of this host"}}
		return p
	}
	p.A = sa.Name
	if sb := r.st.sandbox(b); sb != nil {
		p.B = sb.Name
		if n := r.commonNetwork(sa, sb); n != nil {
			r.sameNetwork(p, sa, sb, n)
		} else {
			r.routed(p, sa, sb)
		}
		return p
	}
	if peers := r.st.remote(b); len(peers) > 0 {
		r.acrossHosts(p, sa, peers)
		return p
	}
	p.Hops = []report.Hop{{Step: "sandbox " + b, Detail: "neither a sandbox of this host nor a remote endpoint of an overlay network this host knows"}}
	return p
}

// commonNetwork is a network both sandboxes are on (a bridge one first).
func (r *run) commonNetwork(a, b *Sandbox) *Network {
	var found *Network
	for _, ea := range a.Endpoints {
		if !slices.ContainsFunc(b.Endpoints, func(eb Endpoint) bool { return eb.NetworkID == ea.NetworkID }) {
			continue
		}
		n := r.st.network(ea.NetworkID)
		if n != nil && (found == nil || (found.Global && !n.Global)) {
			found = n
		}
	}
	return found
}

func endpointOn(sb *Sandbox, netID string) *Endpoint {
	for i := range sb.Endpoints {
		if sb.Endpoints[i].NetworkID == netID {
			return &sb.Endpoints[i]
		}
	}
	return nil
}

// ifaceHop checks a sandbox's host-side interface: present, up, on the
// network's bridge.
func (r *run) ifaceHop(sb *Sandbox, n *Network) report.Hop {
	ep := endpointOn(sb, n.ID)
	h := report.Hop{Step: fmt.Sprintf("%s's interface on %s", sb.Name, n.Name), OK: true}
	if ep == nil || ep.HostIf == "" || n.Bridge == "" {
		h.Detail = "no host-side interface to check"
		return h
	}
	h.Step = fmt.Sprintf("%s's interface %s on bridge %s", sb.Name, ep.HostIf, n.Bridge)
	l, err := r.k.Link(ep.HostIf)
	br, err2 := r.k.Link(n.Bridge)
	switch {
	case err != nil || err2 != nil:
		h.Detail = fmt.Sprintf("read links: %v %v", err, err2)
	case l == nil:
		h.OK, h.Detail = false, "host end "+ep.HostIf+" is missing"
	case br == nil:
		h.OK, h.Detail = false, "bridge "+n.Bridge+" is missing"
	case !l.Up:
		h.OK, h.Detail = false, ep.HostIf+" is down"
	case l.MasterIndex != br.Index:
		h.OK, h.Detail = false, ep.HostIf+" is not a port of bridge "+n.Bridge
	default:
		h.Detail = fmt.Sprintf("%s up, port of %s", ep.HostIf, n.Bridge)
	}
	return h
}

func (r *run) sameNetwork(p *report.Pair, a, b *Sandbox, n *Network) {
	p.Path, p.Network = report.PathSameBridge, n.Name
	if n.Global {
		p.Path = report.PathOverlay
	}
	p.Hops = append(p.Hops, r.ifaceHop(a, n))
	if n.Bridge != "" && !n.Global && !n.ICC {
		p.Hops = append(p.Hops, report.Hop{Step: "bridge " + n.Bridge + " (icc=false)",
			Detail: "network " + n.Name + " has inter-container communication off: its bridge ports are isolated, sandboxes reach the gateway and the outside but not each other"})
	}
	for _, c := range r.forward {
		if c.Family == "bridge" && !n.Global {
			if drop, how := bridgedDrop(c); drop {
				p.Hops = append(p.Hops, report.Hop{Step: chainName(c), Detail: "this bridge-family chain drops frames between bridge ports: " + how})
			}
			continue
		}
		if !r.bridgeNF || c.Family == "ip6" || c.Family == "bridge" || !n.Firewalled {
			continue
		}
		if drop, how := verdict(c, packet{iif: n.Bridge, oif: n.Bridge, src: n.Subnet.Addr()}); drop {
			p.Hops = append(p.Hops, report.Hop{Step: chainName(c), Detail: "with br_netfilter, bridged traffic crosses this chain, which drops it: " + how})
		}
	}
	p.Hops = append(p.Hops, r.ifaceHop(b, n))
}

// firstNet is the network a sandbox's traffic to another subnet leaves
// by: its first non-internal network with a bridge (where its default route
// is), else its first network with a bridge.
func (r *run) firstNet(sb *Sandbox) *Network {
	var first *Network
	for _, ep := range sb.Endpoints {
		n := r.st.network(ep.NetworkID)
		if n == nil || n.Bridge == "" {
			continue
		}
		if !n.Internal {
			return n
		}
		if first == nil {
			first = n
		}
	}
	return first
}

func (r *run) routed(p *report.Pair, a, b *Sandbox) {
	na, nb := r.firstNet(a), r.firstNet(b)
	if na == nil || nb == nil {
		p.Hops = []report.Hop{{Step: "networks", Detail: "one of the sandboxes is on no network with an interface"}}
		return
	}
	p.Path = report.PathRouted
	p.Hops = append(p.Hops, r.ifaceHop(a, na))
	fw := func(rule, detail string) report.Hop {
		return report.Hop{Step: "table ip tether chain forward: " + rule, Detail: detail}
	}
	connect := fmt.Sprintf("tether network connect %s %s (a sandbox on both networks reaches %s directly)", nb.Name, a.Name, b.Name)
	var h report.Hop
	switch {
	case na.Global || nb.Global:
		h = report.Hop{Step: "routing", Detail: fmt.Sprintf("%s and %s share no network, and an overlay network (%s) is reachable only from its own members", a.Name, b.Name, globalName(na, nb)),
			Fix: connect}
	case !r.ipForward:
		h = report.Hop{Step: "net.ipv4.ip_forward", Detail: "IPv4 forwarding is off: the host routes nothing between bridges"}
	case na.Internal:
		h = report.Hop{Step: a.Name + "'s routes", Detail: fmt.Sprintf("no route to %s: %s is only on internal networks (%s), which give their sandboxes no default route; Tether's table would drop it too (\"nothing leaves an internal network\")", nb.Subnet, a.Name, na.Name),
			Fix: connect}
	case nb.Internal:
		h = fw("\"nothing enters an internal network\"", "network "+nb.Name+" is internal: only its members reach its sandboxes")
		h.Fix = connect
	case r.st.Firewall && na.Firewalled && nb.Firewalled:
		h = fw("\"no traffic between networks\"", fmt.Sprintf("networks %s and %s are isolated from each other (as Docker's)", na.Name, nb.Name))
		h.Fix = connect + ", or publish the port of " + b.Name + " (tether run -p HOSTPORT:PORT ...) and reach it through a host address"
	default:
		h = report.Hop{Step: "host routing " + na.Bridge + " -> " + nb.Bridge, OK: true, Detail: "Tether's table lets it through"}
		for _, c := range r.forward {
			if c.Family != "ip" && c.Family != "inet" {
				continue
			}
			if drop, how := verdict(c, packet{iif: na.Bridge, oif: nb.Bridge, src: na.Subnet.Addr()}); drop {
				h = report.Hop{Step: chainName(c), Detail: "drops traffic routed from " + na.Bridge + " to " + nb.Bridge + ": " + how,
					Fix: "see forward_chains: accept Tether's bridges in that chain"}
				break
			}
		}
	}
	p.Hops = append(p.Hops, h, r.ifaceHop(b, nb))
}

func globalName(ns ...*Network) string {
	for _, n := range ns {
		if n.Global {
			return n.Name
		}
	}
	return ""
}

// acrossHosts: b is a remote endpoint; a must be on its overlay network,
// and the VXLAN device must hold b's entries.
func (r *run) acrossHosts(p *report.Pair, a *Sandbox, peers []Peer) {
	var peer *Peer
	for i := range peers {
		if endpointOn(a, peers[i].NetworkID) != nil {
			peer = &peers[i]
			break
		}
	}
	if peer == nil {
		p.Hops = []report.Hop{{Step: "networks", Detail: fmt.Sprintf("%s is on none of the overlay networks of remote sandbox %s", a.Name, p.B)}}
		return
	}
	n := r.st.network(peer.NetworkID)
	if n == nil {
		p.Hops = []report.Hop{{Step: "networks", Detail: "the remote endpoint's network is not installed on this host"}}
		return
	}
	p.Path, p.Network = report.PathOverlayX, n.Name
	p.Hops = append(p.Hops, r.ifaceHop(a, n))
	h := report.Hop{Step: fmt.Sprintf("VXLAN device %s: entries for %s (%s at %s)", n.VXLAN, p.B, peer.IP, peer.VTEP), OK: true}
	fdb, err1 := r.k.FDB(n.VXLAN)
	neigh, err2 := r.k.Neighbours(n.VXLAN)
	switch {
	case err1 != nil || err2 != nil:
		h.OK, h.Detail = false, fmt.Sprintf("cannot read the device: %v %v", err1, err2)
	default:
		if miss := missingEntries(*peer, fdb, neigh); len(miss) > 0 {
			h.OK, h.Detail = false, "missing "+strings.Join(miss, " and ")
		} else {
			h.Detail = "FDB and neighbour entries present"
		}
	}
	p.Hops = append(p.Hops, h)
	if table, blocked := r.guardBlocks(peer.VTEP); blocked {
		p.Hops = append(p.Hops, report.Hop{Step: table + " (VXLAN guard)", Detail: fmt.Sprintf("%s is not in set nodes: the replies of %s are dropped on arrival", peer.VTEP, p.B),
			Fix: "see overlay_peers: the VXLAN guard lacks the node"})
	}
	p.Hops = append(p.Hops, report.Hop{Step: "node " + peer.Node + " (VTEP " + peer.VTEP.String() + ")", OK: true, Detail: "the remote host's side is not visible from here: run tether doctor there too"})
}

// pathFix is the fix for the hop that breaks.
func (r *run) pathFix(a, b string, h report.Hop) string {
	switch {
	case strings.Contains(h.Step, "icc=false"):
		return "put the two sandboxes on a network with icc on (tether network create NAME; tether network connect NAME " + a + "; tether network connect NAME " + b + "), or recreate the network without com.docker.network.bridge.enable_icc=false"
	case h.Step == "networks":
		return fmt.Sprintf("connect %s to a network of %s (tether network connect NETWORK %s)", a, b, a)
	case strings.HasPrefix(h.Step, "net.ipv4.ip_forward"):
		return "sysctl -w net.ipv4.ip_forward=1, or \"ip-forward\": true in daemon.json"
	case strings.HasPrefix(h.Step, "VXLAN device"):
		return "restart the daemon (it programs every peer from the cluster store), or add the entries: see overlay_peers"
	case strings.HasPrefix(h.Step, "table "):
		return "see forward_chains: accept Tether's bridges in that chain"
	case strings.Contains(h.Step, "interface"):
		return "disconnect and reconnect the sandbox (tether network disconnect NETWORK SANDBOX; tether network connect NETWORK SANDBOX), or restart the daemon (it repairs its endpoints at start)"
	}
	return "see the findings above"
}
