package dockerplugin

// The NetworkDriver half: networks and endpoints as dockerd asks for them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tether-net/tether/internal/dockerapi"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/portmap"
)

func (p *Plugin) capabilities(scope string) (any, error) {
	return capabilitiesResponse{Scope: scope, ConnectivityScope: scope}, nil
}

// createNetwork records the binding of a Docker network; the Tether network
// is made once Docker shows the network's name (nameAndMake), or bound at
// once to an existing one (tether.network).
func (p *Plugin) createNetwork(ctx context.Context, scope string, r createNetworkRequest) (any, error) {
	if !driver.IsID(r.NetworkID) { // Docker IDs have the same form as Tether's
		return nil, badField("NetworkID", "%q is not a 64-hex Docker ID", r.NetworkID)
	}
	if len(r.IPv6Data) > 0 {
		return nil, badField("IPv6Data", "IPv6 is not supported by Tether yet (create the network without --ipv6)")
	}
	generic, err := genericOptions(r.Options[optGeneric])
	if err != nil {
		return nil, err
	}
	b := &binding{DockerID: r.NetworkID, Global: scope == "global", Created: time.Now().UTC(), Options: map[string]string{}}
	if v, ok := r.Options[optInternal]; ok {
		b.Internal, _ = v.(bool)
	}
	switch generic[OptScope] {
	case "":
	case "local":
		if b.Global {
			return nil, badField("Options", "%s=local on the %s driver, whose networks are global (use -d %s)", OptScope, NameGlobal, NameLocal)
		}
	case "global":
		b.Global = true
	default:
		return nil, badField("Options", "%s=%q: want local or global", OptScope, generic[OptScope])
	}
	for k, v := range generic {
		if !strings.HasPrefix(k, "tether.") {
			b.Options[k] = v
		} else if k != OptScope && k != OptNetwork {
			return nil, badField("Options", "unknown option %q (Tether's are %s and %s)", k, OptScope, OptNetwork)
		}
	}
	if len(r.IPv4Data) != 1 {
		return nil, badField("IPv4Data", "want one IPv4 pool, got %d", len(r.IPv4Data))
	}
	d := r.IPv4Data[0]
	ours := d.AddressSpace == SpaceLocal || d.AddressSpace == SpaceGlobal
	if b.Global && !ours {
		return nil, fmt.Errorf("a global Tether network needs Tether's IPAM, so that addresses are unique across hosts: add --ipam-driver %s", NameLocal)
	}
	if b.Subnet, err = netip.ParsePrefix(d.Pool); err != nil || !b.Subnet.Addr().Is4() {
		return nil, badField("IPv4Data", "pool %q is not an IPv4 CIDR", d.Pool)
	}
	if d.Gateway != "" {
		gw, err := netip.ParsePrefix(d.Gateway)
		if err != nil || !b.Subnet.Contains(gw.Addr()) {
			return nil, badField("IPv4Data", "gateway %q is not an address in %s", d.Gateway, b.Subnet)
		}
		b.Gateway = gw.Addr()
	}
	for name, v := range d.AuxAddresses {
		a, err := netip.ParsePrefix(v)
		if err != nil || !b.Subnet.Contains(a.Addr()) {
			return nil, badField("IPv4Data", "aux address %s=%q is not an address in %s", name, v, b.Subnet)
		}
		if b.Aux == nil {
			b.Aux = map[string]netip.Addr{}
		}
		b.Aux[name] = a.Addr()
	}
	p.mu.Lock()
	if ours {
		for id, pl := range p.s.pools {
			if pl.Subnet == b.Subnet && p.boundLocked(id) == nil {
				b.PoolID = id
				break
			}
		}
		if b.PoolID == "" {
			p.mu.Unlock()
			return nil, badField("IPv4Data", "pool %s was not handed out by Tether's IPAM", b.Subnet)
		}
	}
	p.mu.Unlock()
	ref := generic[OptNetwork]
	if pl := p.poolOf(b.PoolID); ref == "" && pl != nil {
		ref = pl.Network
	}
	if ref != "" {
		n, err := p.o.Backend.Network(ref)
		if err != nil {
			return nil, badField("Options", "%s=%q: %v", OptNetwork, ref, err)
		}
		if n.Subnet != b.Subnet {
			return nil, badField("IPv4Data", "pool %s is not the subnet %s of Tether network %q", b.Subnet, n.Subnet, n.Name)
		}
		if (n.Scope == engine.ScopeGlobal) != b.Global {
			b.Global = n.Scope == engine.ScopeGlobal
		}
		b.TetherID, b.Name, b.Existing = n.ID, n.Name, true
	}
	p.mu.Lock()
	err = p.s.saveBinding(ctx, b)
	p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if b.TetherID == "" {
		go p.nameAndMake(context.WithoutCancel(ctx), b.DockerID)
	}
	return driverResponse{}, nil
}

func (p *Plugin) poolOf(id string) *pool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.s.pools[id]
}

// genericOptions reads the -o map (values are strings on the wire).
func genericOptions(v any) (map[string]string, error) {
	out := map[string]string{}
	if v == nil {
		return out, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, badField("Options", "%s is not an object", optGeneric)
	}
	for k, x := range m {
		switch x := x.(type) {
		case string:
			out[k] = x
		case bool, float64:
			out[k] = fmt.Sprint(x)
		default:
			return nil, badField("Options", "%s[%q] is not a string", optGeneric, k)
		}
	}
	return out, nil
}

// nameAndMake waits until dockerd shows the network (it stores it right
// after CreateNetwork answers) and makes the Tether network under its name.
func (p *Plugin) nameAndMake(ctx context.Context, dockerID string) {
	if _, err := p.ensureNetwork(ctx, dockerID); err != nil {
		p.log.Warn("make the Tether network of a Docker network; the first container on it will try again",
			"network", shortID(dockerID), "err", err)
	}
}

// ensureNetwork returns the Tether network of a Docker network, making it
// first when it is not made yet.
func (p *Plugin) ensureNetwork(ctx context.Context, dockerID string) (string, error) {
	p.mu.Lock()
	m := p.making[dockerID]
	if m == nil {
		m = new(sync.Mutex)
		p.making[dockerID] = m
	}
	p.mu.Unlock()
	m.Lock()
	defer m.Unlock()
	p.mu.Lock()
	b := p.s.bindings[dockerID]
	var pl *pool
	if b != nil {
		pl = p.s.pools[b.PoolID]
	}
	p.mu.Unlock()
	switch {
	case b == nil:
		return "", fmt.Errorf("network %s is not a Tether network (removed?)", shortID(dockerID))
	case b.TetherID != "":
		return b.TetherID, nil
	}
	name := p.dockerName(ctx, dockerID)
	if name == "" || !validName(name) {
		name = "docker-" + shortID(dockerID)
	}
	spec := engine.NetworkSpec{Name: name, Driver: p.o.LocalDriver, Internal: b.Internal, Options: maps.Clone(b.Options),
		Labels: map[string]string{"com.docker.network.id": dockerID}}
	if b.Global {
		spec.Driver = p.o.GlobalDriver
	}
	sub := engine.SubnetSpec{Subnet: b.Subnet.String()}
	if b.Gateway.IsValid() {
		sub.Gateway = b.Gateway.String()
	}
	if pl != nil {
		if pl.IPRange.IsValid() {
			sub.IPRange = pl.IPRange.String()
		}
	}
	for name, a := range b.Aux { // by the names the user gave (CreateNetwork has them; RequestAddress not)
		if sub.Aux == nil {
			sub.Aux = map[string]string{}
		}
		sub.Aux[name] = a.String()
	}
	spec.Subnets = []engine.SubnetSpec{sub}
	n, err := p.o.Backend.CreateNetwork(ctx, spec)
	if engine.KindOf(err) == engine.KindConflict && strings.Contains(err.Error(), "name") && name != "docker-"+shortID(dockerID) {
		p.log.Warn("a Tether network has the Docker network's name; using another", "name", name, "instead", "docker-"+shortID(dockerID))
		spec.Name = "docker-" + shortID(dockerID)
		n, err = p.o.Backend.CreateNetwork(ctx, spec)
	}
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b.TetherID, b.Name = n.ID, n.Name
	if err := p.s.saveBinding(ctx, b); err != nil {
		return "", err
	}
	p.log.Info("made the Tether network of a Docker network", "name", n.Name, "docker", shortID(dockerID), "global", b.Global)
	return n.ID, nil
}

// dockerName asks the local dockerd for a network's name, waiting up to
// NameWait for it to appear; "" when there is no Docker API or it never
// shows the network.
func (p *Plugin) dockerName(ctx context.Context, id string) string {
	if p.o.Docker == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, p.o.NameWait)
	defer cancel()
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		n, err := p.o.Docker.NetworkInspect(ctx, id)
		if err == nil {
			return n.Name
		}
		if !errors.Is(err, dockerapi.ErrNotFound) {
			p.log.Debug("docker network inspect", "network", shortID(id), "err", err)
		}
		select {
		case <-ctx.Done():
			p.log.Warn("dockerd did not show the new network in time; naming it by its ID", "network", shortID(id), "waited", p.o.NameWait)
			return ""
		case <-time.After(delay):
		}
	}
}

// deleteNetwork removes the Tether network Docker's network made (not one
// it was bound to); unknown networks are success.
func (p *Plugin) deleteNetwork(ctx context.Context, r networkRequest) (any, error) {
	p.mu.Lock()
	b := p.s.bindings[r.NetworkID]
	p.mu.Unlock()
	if b == nil {
		return driverResponse{}, nil
	}
	if _, err := p.ensureMade(b); err == nil && b.TetherID != "" && !b.Existing {
		if err := p.o.Backend.RemoveNetwork(ctx, b.TetherID); err != nil && engine.KindOf(err) != engine.KindNotFound {
			return nil, err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.making, r.NetworkID)
	return driverResponse{}, p.s.dropBinding(ctx, r.NetworkID)
}

// ensureMade waits for a creation in flight to finish.
func (p *Plugin) ensureMade(b *binding) (string, error) {
	p.mu.Lock()
	m := p.making[b.DockerID]
	p.mu.Unlock()
	if m != nil {
		m.Lock()
		m.Unlock() //nolint:staticcheck // only waiting for the holder
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return b.TetherID, nil
}

// createEndpoint finds the attach RequestAddress made for this address
// (or, on a local network using Docker's own IPAM, makes it now with that
// address), applies a MAC the user gave, and answers the MAC it derived
// when Docker has none.
func (p *Plugin) createEndpoint(ctx context.Context, r createEndpointRequest) (any, error) {
	if r.EndpointID == "" {
		return nil, badField("EndpointID", "empty")
	}
	if r.Interface == nil || r.Interface.Address == "" {
		return nil, badField("Interface", "no IPv4 address (Tether networks are IPv4; enable IPv4 on the network)")
	}
	if r.Interface.AddressIPv6 != "" {
		return nil, badField("Interface", "AddressIPv6: IPv6 is not supported by Tether yet")
	}
	addr, err := netip.ParsePrefix(r.Interface.Address)
	if err != nil || !addr.Addr().Is4() {
		return nil, badField("Interface", "Address %q is not an IPv4 CIDR", r.Interface.Address)
	}
	var mac net.HardwareAddr
	if r.Interface.MacAddress != "" {
		if mac, err = net.ParseMAC(r.Interface.MacAddress); err != nil {
			return nil, badField("Interface", "MacAddress %q: %v", r.Interface.MacAddress, err)
		}
	}
	p.mu.Lock()
	b := p.s.bindings[r.NetworkID]
	if b == nil {
		p.mu.Unlock()
		return nil, badField("NetworkID", "%s is not a Tether network this daemon knows", shortID(r.NetworkID))
	}
	if e := p.s.endpoints[r.EndpointID]; e != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("endpoint %s exists already", shortID(r.EndpointID))
	}
	ep := p.s.endpoints[addrKey(b.PoolID, addr.Addr())]
	pl := p.s.pools[b.PoolID]
	p.mu.Unlock()
	if ep == nil {
		if b.PoolID != "" {
			return nil, fmt.Errorf("address %s was not handed out by Tether's IPAM for this network", addr.Addr())
		}
		// Docker's own IPAM chose the address (a local network made without
		// --ipam-driver tether): the attach happens now.
		if pl == nil {
			pl = &pool{ID: "docker:" + r.NetworkID, Subnet: b.Subnet}
		}
		if ep, err = p.attach(ctx, b, pl, addr.Addr(), "", r.EndpointID); err != nil {
			return nil, err
		}
	}
	sb, err := p.sandboxOf(ep)
	if err != nil {
		return nil, err
	}
	have := sb.Endpoints[0].MAC
	if mac != nil && !strings.EqualFold(mac.String(), have) {
		// --mac-address: the pair is made again with it (Docker sets it on
		// the interface too; the overlay's peers must be told the same).
		if err := p.o.Backend.Disconnect(ctx, ep.TetherNet, ep.SandboxID, true); err != nil {
			return nil, err
		}
		if err := p.o.Backend.Connect(ctx, ep.TetherNet, ep.SandboxID, engine.AttachSpec{Network: ep.TetherNet,
			IP: ep.Address.String(), MAC: mac.String(), Aliases: sb.Endpoints[0].Aliases}); err != nil {
			return nil, err
		}
		have = mac.String()
	}
	old := ep.Key
	done := *ep
	done.Key, done.EndpointID, done.DockerNet = r.EndpointID, r.EndpointID, r.NetworkID
	p.mu.Lock()
	err = p.s.saveEndpoint(ctx, &done, old)
	p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	resp := createEndpointResponse{}
	if r.Interface.MacAddress == "" {
		resp.Interface = &endpointInterface{MacAddress: have}
	}
	return resp, nil
}

// sandboxOf is the handed-over sandbox of a Docker endpoint, with its one
// endpoint (an error when it is gone: its pair died and was reaped).
func (p *Plugin) sandboxOf(ep *endpoint) (*engine.Sandbox, error) {
	sb, err := p.o.Backend.Sandbox(ep.SandboxID)
	if err == nil && len(sb.Endpoints) == 0 {
		err = errors.New("it has no endpoint left")
	}
	if err != nil {
		return nil, fmt.Errorf("the Tether sandbox of address %s: %w", ep.Address, err)
	}
	return sb, nil
}

func (p *Plugin) endpointOf(id string) (*endpoint, error) {
	if id == "" {
		return nil, badField("EndpointID", "empty")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.s.endpoints[id], nil
}

func (p *Plugin) deleteEndpoint(ctx context.Context, r endpointRequest) (any, error) {
	ep, err := p.endpointOf(r.EndpointID)
	if err != nil || ep == nil {
		return driverResponse{}, err
	}
	return driverResponse{}, p.detach(ctx, ep)
}

func (p *Plugin) endpointInfo(ctx context.Context, r endpointRequest) (any, error) {
	ep, err := p.endpointOf(r.EndpointID)
	if err != nil {
		return nil, err
	}
	if ep == nil {
		return nil, fmt.Errorf("endpoint %s not found", shortID(r.EndpointID))
	}
	return endpointInfoResponse{Value: map[string]any{}}, nil
}

// join answers the pair's sandbox end for dockerd to move (named eth<N>
// there), and the gateway on a local network that is not internal (its
// endpoint then carries the container's default route and its ports). On
// a global network no gateway is answered: Docker gives the container its
// way out, and publishes its ports, through docker_gwbridge, as for its
// own overlays.
func (p *Plugin) join(ctx context.Context, r joinRequest) (any, error) {
	ep, err := p.endpointOf(r.EndpointID)
	if err != nil {
		return nil, err
	}
	if ep == nil {
		return nil, fmt.Errorf("endpoint %s not found (Join before CreateEndpoint?)", shortID(r.EndpointID))
	}
	sb, err := p.sandboxOf(ep)
	if err != nil {
		return nil, err
	}
	n, err := p.o.Backend.Network(ep.TetherNet)
	if err != nil {
		return nil, err
	}
	e := sb.Endpoints[0]
	resp := joinResponse{InterfaceName: &interfaceName{SrcName: e.IfName, DstPrefix: "eth"}}
	if n.Scope != engine.ScopeGlobal && !n.Internal && e.Gateway.IsValid() {
		resp.Gateway = e.Gateway.String()
	}
	if r.SandboxKey != "" {
		p.mu.Lock()
		if cur := p.s.endpoints[ep.Key]; cur == ep {
			x := *ep
			x.SandboxKey = r.SandboxKey
			if err := p.s.saveEndpoint(ctx, &x, ""); err != nil {
				p.log.Warn("record the sandbox key", "endpoint", shortID(ep.Key), "err", err)
			}
		}
		p.mu.Unlock()
	}
	return resp, nil
}

// leave unpublishes the endpoint's ports (a dockerd restarted with
// live-restore forgets which endpoint was the gateway and sends no
// RevokeExternalConnectivity). The pair goes with DeleteEndpoint, once
// Docker has moved the interface back out.
func (p *Plugin) leave(ctx context.Context, r endpointRequest) (any, error) {
	ep, err := p.endpointOf(r.EndpointID)
	if err != nil || ep == nil {
		return driverResponse{}, err
	}
	if err := p.o.Backend.UnpublishPorts(ctx, ep.TetherNet, ep.SandboxID); err != nil && engine.KindOf(err) != engine.KindNotFound {
		return nil, err
	}
	return driverResponse{}, nil
}

// programExternal publishes the ports of com.docker.network.portmap on the
// gateway endpoint, as Docker's bridge does.
func (p *Plugin) programExternal(ctx context.Context, r connectivityRequest) (any, error) {
	ep, err := p.endpointOf(r.EndpointID)
	if err != nil {
		return nil, err
	}
	if ep == nil {
		return nil, fmt.Errorf("endpoint %s not found", shortID(r.EndpointID))
	}
	specs, err := portSpecs(r.Options[optPortMap])
	if err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return driverResponse{}, nil
	}
	if err := p.o.Backend.PublishPorts(ctx, ep.TetherNet, ep.SandboxID, specs); err != nil {
		return nil, err
	}
	return driverResponse{}, nil
}

func (p *Plugin) revokeExternal(ctx context.Context, r endpointRequest) (any, error) {
	return p.leave(ctx, r)
}

// portSpecs reads com.docker.network.portmap. IPv6 host addresses are
// skipped (Docker adds [::] beside 0.0.0.0 for a -p without an address;
// Tether publishes IPv4 only); a host port range publishes its first port.
func portSpecs(v any) ([]portmap.Spec, error) {
	if v == nil {
		return nil, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, badField("Options", "%s: %v", optPortMap, err)
	}
	var pbs []portBinding
	if err := json.Unmarshal(raw, &pbs); err != nil {
		return nil, badField("Options", "%s: %v", optPortMap, err)
	}
	var out []portmap.Spec
	for _, b := range pbs {
		s := portmap.Spec{}
		switch b.Proto {
		case 6:
			s.Proto = "tcp"
		case 17:
			s.Proto = "udp"
		default:
			return nil, badField("Options", "%s: protocol %d is not supported (tcp and udp are)", optPortMap, b.Proto)
		}
		if b.Port < 1 || b.Port > 65535 || b.HostPort < 0 || b.HostPort > 65535 {
			return nil, badField("Options", "%s: port %d or host port %d out of range", optPortMap, b.Port, b.HostPort)
		}
		s.ContainerPort, s.HostPort = uint16(b.Port), uint16(b.HostPort)
		if b.HostIP != "" {
			a, err := netip.ParseAddr(b.HostIP)
			if err != nil {
				return nil, badField("Options", "%s: host IP %q: %v", optPortMap, b.HostIP, err)
			}
			if a.Is6() && !a.Is4In6() {
				continue
			}
			s.HostIP = a.Unmap()
		}
		out = append(out, s)
	}
	return out, nil
}
