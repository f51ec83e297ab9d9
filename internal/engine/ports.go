package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/tether-net/tether/internal/firewall"
	"github.com/tether-net/tether/internal/portmap"
)

// PortBinding is one published port of an endpoint: HostIP:HostPort/Proto
// on the host goes to the endpoint's address, ContainerPort.
type PortBinding struct {
	Proto         string     `json:"proto"`
	HostIP        netip.Addr `json:"hostIp"`
	HostPort      uint16     `json:"hostPort"`
	ContainerPort uint16     `json:"containerPort"`
	// Unheld: the daemon does not bind the host port (its runtime does;
	// AttachSpec.PortsUnheld): only the kernel path is Tether's.
	Unheld bool `json:"unheld,omitempty"`
}

// Publishing a port takes three things, undone in reverse on failure:
//  1. the host port is held: the daemon binds it (as Docker does), so a
//     second binding, or a port another program uses, is refused at once;
//  2. the kernel path: one element in the firewall's port maps;
//  3. with userland-proxy on, a proxy on the held socket serves what the
//     kernel path does not (connections to 127.0.0.1 from the host).

// portSpecs checks the published ports of an attach to ns and fills in
// the default host address (network option host_binding_ipv4, else the
// daemon's "ip", else 0.0.0.0). The fronts parse -p and PortBindings
// (portmap.Parse, portmap.FromBinding); nothing is parsed twice.
func (e *Engine) portSpecs(ns *netState, in []portmap.Spec) ([]portmap.Spec, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if !e.caps(ns.rec).Ports {
		return nil, invalidf("invalid ports: network %q (driver %s) cannot publish ports", ns.rec.Name, ns.rec.Driver)
	}
	if ns.rec.Internal {
		return nil, invalidf("invalid ports: network %q is internal and cannot publish ports", ns.rec.Name)
	}
	def := e.cfg.IP
	if v, ok := ns.rec.Options[OptHostBinding]; ok {
		def, _ = netip.ParseAddr(v)
	}
	if !def.IsValid() {
		def = netip.IPv4Unspecified()
	}
	specs := make([]portmap.Spec, 0, len(in))
	for _, s := range in {
		if err := s.Validate(); err != nil {
			return nil, invalidf("invalid port %s: %v", portmap.String(s), err)
		}
		if s.HostIP.IsValid() {
			specs = append(specs, s)
			continue
		}
		// No host address: the default one; on a network with IPv6 and
		// the default 0.0.0.0, every address of both families, as
		// Docker publishes 0.0.0.0 and [::] (an IPv6-only network: [::]).
		if ns.rec.IPv6 && def == netip.IPv4Unspecified() {
			if !ns.rec.NoIPv4 {
				v4 := s
				v4.HostIP = def
				specs = append(specs, v4)
			}
			s.HostIP = netip.IPv6Unspecified()
			specs = append(specs, s)
			continue
		}
		s.HostIP = def
		specs = append(specs, s)
	}
	return specs, nil
}

// backend is the sandbox address a published port goes to: the endpoint's
// address of the host address's family, else its other one (served by the
// userland proxy alone: the kernel does not translate between families).
func backend(ep *Endpoint, p PortBinding) netip.Addr {
	if p.HostIP.Is6() && ep.Address6.IsValid() || !ep.Address.IsValid() {
		return ep.Address6.Addr()
	}
	return ep.Address.Addr()
}

// publish holds the host ports, installs the kernel path and starts the
// proxies, and records the bindings in ep.Ports. Called with sb.op held,
// after the endpoint's address is known.
func (e *Engine) publish(ctx context.Context, sb *sbState, ep *Endpoint, specs []portmap.Spec, hold bool) (err error) {
	if len(specs) == 0 {
		return nil
	}
	if err := e.checkPortsFree(sb, specs); err != nil {
		return err
	}
	var held []*portmap.Held
	defer func() {
		if err != nil {
			for _, h := range held {
				_ = h.Close()
			}
			ep.Ports = nil
		}
	}()
	twin := map[string]uint16{} // proto/container port -> the ephemeral host port its 0.0.0.0 twin got
	for _, s := range specs {
		key := s.Proto + "/" + strconv.Itoa(int(s.ContainerPort))
		if s.HostPort == 0 && s.HostIP == netip.IPv6Unspecified() && twin[key] != 0 {
			s.HostPort = twin[key] // [::] and 0.0.0.0 publish one port, as Docker does
		}
		if !hold {
			if s.HostPort == 0 {
				return invalidf("invalid port %s: a port the runtime holds needs a host port", portmap.String(s))
			}
			ep.Ports = append(ep.Ports, PortBinding{Proto: s.Proto, HostIP: s.HostIP, HostPort: s.HostPort, ContainerPort: s.ContainerPort, Unheld: true})
			continue
		}
		h, err := portmap.Hold(s.Proto, s.HostIP, s.HostPort)
		if err != nil {
			return conflictf("publish %s: %v", portmap.String(s), err)
		}
		held = append(held, h)
		if s.HostPort == 0 && s.HostIP == netip.IPv4Unspecified() {
			twin[key] = h.Addr.Port()
		}
		ep.Ports = append(ep.Ports, PortBinding{Proto: s.Proto, HostIP: s.HostIP, HostPort: h.Addr.Port(), ContainerPort: s.ContainerPort})
	}
	if err := e.fw.AddPorts(ctx, e.mappings(ep)); err != nil {
		return fmt.Errorf("publish ports of %q: %w", sb.rec.Name, err)
	}
	if err := e.startProxies(ep, held); err != nil {
		_ = e.fw.RemovePorts(context.WithoutCancel(ctx), e.mappings(ep))
		return err
	}
	e.mu.Lock()
	e.held[ep.ID] = held
	e.mu.Unlock()
	return nil
}

func (e *Engine) startProxies(ep *Endpoint, held []*portmap.Held) error {
	if !e.cfg.UserlandProxy {
		return nil
	}
	for i, h := range held {
		backend := netip.AddrPortFrom(backend(ep, ep.Ports[i]), ep.Ports[i].ContainerPort)
		if err := h.Proxy(backend); err != nil {
			return fmt.Errorf("userland proxy %s -> %s: %w", h.Addr, backend, err)
		}
	}
	return nil
}

// checkPortsFree refuses a binding another endpoint already has (same
// protocol and port, same address or either one "any"), naming the sandbox
// that holds it: a clearer answer than the kernel's "address in use".
func (e *Engine) checkPortsFree(self *sbState, specs []portmap.Spec) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range specs {
		if s.HostPort == 0 {
			continue
		}
		for _, other := range e.sandboxes {
			for _, oep := range other.rec.Endpoints {
				for _, p := range oep.Ports {
					if p.Proto == s.Proto && p.HostPort == s.HostPort && p.HostIP.Is4() == s.HostIP.Is4() &&
						(p.HostIP == s.HostIP || p.HostIP.IsUnspecified() || s.HostIP.IsUnspecified()) {
						return conflictf("port %d/%s on %s is already published by sandbox %q (%s:%d)",
							s.HostPort, s.Proto, s.HostIP, other.rec.Name, p.HostIP, p.HostPort)
					}
				}
			}
		}
	}
	return nil
}

// unpublish removes an endpoint's published ports: kernel path, proxies and
// held sockets. Best effort; errors are returned joined.
func (e *Engine) unpublish(ctx context.Context, ep *Endpoint) error {
	if len(ep.Ports) == 0 {
		return nil
	}
	var errs []error
	if err := e.fw.RemovePorts(ctx, e.mappings(ep)); err != nil {
		errs = append(errs, err)
	}
	e.mu.Lock()
	held := e.held[ep.ID]
	delete(e.held, ep.ID)
	e.mu.Unlock()
	for _, h := range held {
		if err := h.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// mappings is the firewall's view of an endpoint's ports: the kernel path
// of each binding whose host address and sandbox address are of one family
// (IPv6 ones only with ip6tables); the rest the userland proxy serves.
func (e *Engine) mappings(ep *Endpoint) []firewall.PortMapping {
	out := make([]firewall.PortMapping, 0, len(ep.Ports))
	for _, p := range ep.Ports {
		b := backend(ep, p)
		if b.Is4() != p.HostIP.Unmap().Is4() || (b.Is6() && !e.cfg.IP6Tables) {
			continue
		}
		out = append(out, firewall.PortMapping{Proto: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort,
			SandboxIP: b, SandboxPort: p.ContainerPort})
	}
	return out
}

// allMappingsLocked lists the ports of every endpoint, for the firewall's
// Sync at start. Called with e.mu held.
func (e *Engine) allMappingsLocked() []firewall.PortMapping {
	var out []firewall.PortMapping
	for _, sb := range e.sandboxes {
		for _, ep := range sb.rec.Endpoints {
			out = append(out, e.mappings(ep)...)
		}
	}
	return out
}

// rehold takes the host ports of every endpoint again after a restart (the
// old daemon's sockets died with it) and restarts their proxies. A port
// another program took in between is logged; the kernel path still serves it.
func (e *Engine) rehold() {
	e.mu.Lock()
	var eps []*Endpoint
	for _, sb := range e.sandboxes {
		for _, ep := range sb.rec.Endpoints {
			if len(ep.Ports) > 0 {
				eps = append(eps, ep)
			}
		}
	}
	e.mu.Unlock()
	for _, ep := range eps {
		var held []*portmap.Held
		for _, p := range ep.Ports {
			if p.Unheld {
				continue
			}
			h, err := portmap.Hold(p.Proto, p.HostIP, p.HostPort)
			if err != nil {
				e.log.Error("hold published port again", "port", strconv.Itoa(int(p.HostPort))+"/"+p.Proto, "err", err)
				continue
			}
			if e.cfg.UserlandProxy {
				if err := h.Proxy(netip.AddrPortFrom(backend(ep, p), p.ContainerPort)); err != nil {
					e.log.Error("restart userland proxy", "port", h.Addr.String(), "err", err)
				}
			}
			held = append(held, h)
		}
		e.mu.Lock()
		e.held[ep.ID] = held
		e.mu.Unlock()
	}
}
