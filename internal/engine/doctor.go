package engine

// What `tether doctor` needs of the engine: its records as a doctor.State,
// and the run (internal/doctor holds every check).

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/doctor"
	"github.com/tether-net/tether/internal/doctor/report"
)

// newDoctor makes the doctor that reads the daemon's own namespace; a
// variable so tests can give fakes.
var newDoctor = func() *doctor.Doctor {
	return &doctor.Doctor{K: doctor.NewHost(), P: doctor.UDPProber{}}
}

// Doctor runs the host checks and, with a and b (sandbox names or IDs; b
// may name a sandbox on another host of a shared overlay network), traces
// the path from a to b. An unknown sandbox is KindNotFound; one of a and b
// without the other is KindInvalid.
func (e *Engine) Doctor(ctx context.Context, a, b string) (*report.Report, error) {
	if (a == "") != (b == "") {
		return nil, invalidf("doctor: a pair needs two sandboxes (a=%q, b=%q)", a, b)
	}
	st := e.DoctorState(ctx)
	d := newDoctor()
	if a == "" {
		return d.Host(ctx, st), nil
	}
	ida, err := e.doctorRef(st, a, false)
	if err != nil {
		return nil, err
	}
	idb, err := e.doctorRef(st, b, true)
	if err != nil {
		return nil, err
	}
	return d.Pair(ctx, st, ida, idb), nil
}

// doctorRef resolves a sandbox reference to its ID; with remote, a name
// or ID of a remote endpoint's sandbox is accepted as it is. A local
// sandbox's exact ID or name comes first, then a remote endpoint's exact
// name or ID, then a local ID prefix (so "b", a remote sandbox, is not
// taken for a local one whose ID starts with "b").
func (e *Engine) doctorRef(st *doctor.State, ref string, remote bool) (string, error) {
	e.mu.Lock()
	sb, err := e.lookupSandbox(ref)
	e.mu.Unlock()
	if err == nil && (sb.rec.ID == ref || sb.rec.Name == ref) {
		return sb.rec.ID, nil
	}
	if remote && st.Cluster != nil && slices.ContainsFunc(st.Cluster.Peers, func(p doctor.Peer) bool { return p.Sandbox == ref }) {
		return ref, nil
	}
	if err == nil {
		return sb.rec.ID, nil // a local ID prefix
	}
	if KindOf(err) == KindNotFound {
		return "", notFoundf("doctor: no such sandbox: %s", ref)
	}
	return "", err
}

// DoctorState is the engine's records as the doctor reads them.
func (e *Engine) DoctorState(ctx context.Context) *doctor.State {
	st := &doctor.State{Firewall: e.cfg.IPTables, IPv6Firewall: e.cfg.IPTables && e.cfg.IP6Tables,
		AcceptOtherTables: e.cfg.ForwardAcceptOtherTables, Upstreams: upstreams(e.cfg)}
	e.mu.Lock()
	for _, ns := range e.networks {
		st.Networks = append(st.Networks, e.doctorNetwork(ns.rec))
	}
	for _, sb := range e.sandboxes {
		st.Sandboxes = append(st.Sandboxes, doctorSandbox(sb.rec))
	}
	e.mu.Unlock()
	slices.SortFunc(st.Networks, func(a, b doctor.Network) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Sandboxes, func(a, b doctor.Sandbox) int { return strings.Compare(a.Name, b.Name) })
	st.Cluster = e.doctorCluster(ctx)
	return st
}

func (e *Engine) doctorNetwork(n *Network) doctor.Network {
	return doctor.Network{ID: n.ID, Name: n.Name, Driver: n.Driver, Bridge: n.BridgeName, Subnet: n.Subnet, Subnet6: n.Subnet6,
		Created: n.Created, Firewalled: e.caps(n).Firewall, Internal: n.Internal, ICC: n.ICC, Masquerade: n.Masquerade,
		Global: e.isGlobal(n), VNI: n.VNI, VTEP: n.VTEP}
}

func doctorSandbox(s *Sandbox) doctor.Sandbox {
	out := doctor.Sandbox{ID: s.ID, Name: s.Name}
	for _, ep := range s.Endpoints {
		out.Endpoints = append(out.Endpoints, doctor.Endpoint{NetworkID: ep.NetworkID, HostIf: ep.HostIfName, Address: ep.Address, MAC: ep.MAC})
	}
	return out
}

// doctorCluster: one round trip to the store (at most 2 s) for its
// reachability and this node's registration, and the remote endpoints the
// watch delivered.
func (e *Engine) doctorCluster(ctx context.Context) *doctor.Cluster {
	g := e.global
	if g == nil {
		return nil
	}
	self := g.cl.Self()
	c := &doctor.Cluster{Self: self.ID, TTL: g.cl.TTL()}
	nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nodes, err := g.cl.Nodes(nctx)
	c.Reach = err
	c.Registered = slices.ContainsFunc(nodes, func(n cluster.Node) bool { return n.ID == self.ID })
	if g.watcher != nil {
		g.watcher.Locked(func(_ []cluster.NetworkRecord, peers []cluster.EndpointRecord) {
			for _, p := range peers {
				if p.Node != self.ID {
					c.Peers = append(c.Peers, doctor.Peer{NetworkID: p.NetworkID, Sandbox: p.SandboxName, Node: p.NodeName,
						IP: p.Address.Addr(), MAC: p.MAC, VTEP: p.VTEP})
				}
			}
		})
	}
	return c
}
