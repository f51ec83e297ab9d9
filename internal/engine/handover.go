package engine

// Handed-over sandboxes (Sandbox.Handover): another runtime owns the
// namespace. Docker's remote driver protocol is the one user: for each of a
// container's endpoints Tether makes a veth pair in the host namespace
// (driver.PairJoiner), Docker moves the sandbox end into the container and
// configures it, and Tether never opens the container's namespace. The
// sandbox lives while its pairs do: when the runtime's namespace goes (a
// container killed with its dockerd), the kernel deletes the pairs, and the
// next restore or ReapHandedOver forgets the endpoints.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/portmap"
)

// handoverIfPrefix starts the temporary name of a handed-over endpoint's
// sandbox end while it is in the host namespace (the runtime renames it
// when it moves it).
const handoverIfPrefix = "tthc"

// handoverIfName is the sandbox end's name for endpoint id: the prefix and
// 11 hex digits of the ID (15 characters, the kernel's limit).
func handoverIfName(id string) string { return handoverIfPrefix + id[:11] }

// parseMAC checks an attach's MAC: six bytes, unicast, not all zero; nil
// for "".
func parseMAC(s string) (net.HardwareAddr, error) {
	if s == "" {
		return nil, nil
	}
	mac, err := net.ParseMAC(s)
	switch {
	case err != nil || len(mac) != 6:
		return nil, invalidf("invalid mac-address %q: not a 48-bit MAC address", s)
	case mac[0]&1 != 0:
		return nil, invalidf("invalid mac-address %q: a multicast address", s)
	case slices.Equal(mac, make(net.HardwareAddr, 6)):
		return nil, invalidf("invalid mac-address %q: all zero", s)
	}
	return mac, nil
}

// dropDeadPairs detaches the endpoints of a handed-over sandbox whose host
// end is gone (its runtime's namespace was deleted, taking the pair) and
// reports whether any was. Called with sb.op held (or during restore).
func (e *Engine) dropDeadPairs(ctx context.Context, sb *sbState) bool {
	e.mu.Lock()
	eps := e.endpointsLocked(sb.rec)
	e.mu.Unlock()
	dropped := false
	for _, x := range eps {
		pj, ok := e.drivers[x.ns.rec.Driver].(driver.PairJoiner)
		if !ok {
			continue
		}
		alive, err := pj.PairAlive(ctx, driverNetwork(x.ns.rec), driverEndpoint(x.ep))
		if err != nil {
			e.log.Warn("check a handed-over endpoint", "sandbox", sb.rec.Name, "network", x.ns.rec.Name, "err", err)
			continue
		}
		if alive {
			continue
		}
		e.log.Info("handed-over endpoint is gone (its runtime's namespace was deleted); forgetting it",
			"sandbox", sb.rec.Name, "network", x.ns.rec.Name, "address", x.ep.Address)
		if err := e.detach(ctx, sb, x.ns, x.ep, true); err != nil {
			e.log.Warn("forget a handed-over endpoint", "sandbox", sb.rec.Name, "network", x.ns.rec.Name, "err", err)
			continue
		}
		dropped = true
	}
	return dropped
}

// ReapHandedOver forgets the endpoints of handed-over sandboxes whose pairs
// are gone, and the sandboxes left without any; it returns the IDs of the
// sandboxes it removed. The Docker plugin calls it periodically: a
// container killed together with its dockerd never gets a Leave.
func (e *Engine) ReapHandedOver(ctx context.Context) []string {
	e.mu.Lock()
	var sbs []*sbState
	for _, sb := range e.sandboxes {
		if sb.rec.Handover {
			sbs = append(sbs, sb)
		}
	}
	e.mu.Unlock()
	var removed []string
	for _, sb := range sbs {
		if !sb.op.TryLock() {
			continue // busy: the next round
		}
		if !sb.gone {
			e.dropDeadPairs(ctx, sb)
			if len(sb.rec.Endpoints) == 0 {
				if err := e.removeLocked(ctx, sb); err != nil {
					e.log.Warn("remove a handed-over sandbox without endpoints", "sandbox", sb.rec.Name, "err", err)
				} else {
					removed = append(removed, sb.rec.ID)
				}
			}
		}
		sb.op.Unlock()
	}
	return removed
}

// PublishPorts publishes ports of a sandbox's endpoint on a network after
// the attach (Docker's ProgramExternalConnectivity), replacing what the
// endpoint published before; the same set again changes nothing.
func (e *Engine) PublishPorts(ctx context.Context, netRef, sbRef string, ports []portmap.Spec) error {
	sb, ns, ep, err := e.lockEndpoint(ctx, netRef, sbRef)
	if err != nil {
		return err
	}
	defer sb.op.Unlock()
	specs, err := e.portSpecs(ns, ports)
	if err != nil {
		return err
	}
	if samePorts(ep.Ports, specs) {
		return nil
	}
	before := slices.Clone(ep.Ports)
	if err := e.unpublishEndpoint(ctx, sb, ep); err != nil {
		return err
	}
	x := *ep
	x.Ports = nil
	if err := e.publish(ctx, sb, &x, specs, true); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ep.Ports = x.Ports
	if err := e.commit(ctx, e.putJSON(keySandboxes+sb.rec.ID, sb.rec)); err != nil {
		return err
	}
	e.publishPortsChanged(sb, ns, before, ep.Ports)
	return nil
}

// UnpublishPorts removes every port a sandbox's endpoint on a network
// publishes (Docker's RevokeExternalConnectivity, and its Leave).
func (e *Engine) UnpublishPorts(ctx context.Context, netRef, sbRef string) error {
	sb, ns, ep, err := e.lockEndpoint(ctx, netRef, sbRef)
	if err != nil {
		return err
	}
	defer sb.op.Unlock()
	before := slices.Clone(ep.Ports)
	if err := e.unpublishEndpoint(ctx, sb, ep); err != nil {
		return err
	}
	e.publishPortsChanged(sb, ns, before, nil)
	return nil
}

// unpublishEndpoint removes a recorded endpoint's ports and records that.
// Called with sb.op held.
func (e *Engine) unpublishEndpoint(ctx context.Context, sb *sbState, ep *Endpoint) error {
	if len(ep.Ports) == 0 {
		return nil
	}
	err := e.unpublish(ctx, ep)
	e.mu.Lock()
	defer e.mu.Unlock()
	ep.Ports = nil
	if cerr := e.commit(ctx, e.putJSON(keySandboxes+sb.rec.ID, sb.rec)); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return fmt.Errorf("unpublish the ports of %q: %w", sb.rec.Name, err)
	}
	return nil
}

// samePorts reports whether bindings are exactly what specs ask for
// (ephemeral host ports match any).
func samePorts(have []PortBinding, specs []portmap.Spec) bool {
	if len(have) != len(specs) {
		return false
	}
	for i, s := range specs {
		h := have[i]
		if h.Proto != s.Proto || h.HostIP != s.HostIP || h.ContainerPort != s.ContainerPort ||
			(s.HostPort != 0 && h.HostPort != s.HostPort) {
			return false
		}
	}
	return true
}

// ChooseSubnet picks a subnet for a network not created yet, as network
// create does without --subnet: the first subnet of the default address
// pools that overlaps no host route or address, no network and none of
// avoid (subnets promised elsewhere, e.g. pools a plugin handed out).
func (e *Engine) ChooseSubnet(avoid []netip.Prefix) (netip.Prefix, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	bs, err := e.blockers()
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, p := range avoid {
		bs = append(bs, ipam.Blocker{Prefix: p, Source: "a pool already handed out"})
	}
	p, err := ipam.ChooseSubnet(e.pools(), bs)
	if err != nil {
		return netip.Prefix{}, forbiddenf("choose a subnet: %w", err)
	}
	return p, nil
}

// CheckSubnet reports why subnet cannot be a new network's (an existing
// network or a host route overlaps it), nil when it can.
func (e *Engine) CheckSubnet(subnet netip.Prefix) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ns := range e.networks {
		if o := ns.rec.Subnet; o.IsValid() && ipam.Overlaps(o, subnet) {
			return forbiddenf("invalid subnet %s: overlaps subnet %s of network %q", subnet, o, ns.rec.Name)
		}
	}
	return nil
}

// ServeUpstream answers the names of every network's endpoints (this
// host's and, on global networks, the other hosts') on addr, port 53, UDP
// and TCP, in the daemon's namespace: the upstream of Docker's embedded
// resolver, which knows only its own containers (dockerd's daemon.json
// "dns": [addr]). Names Tether does not have are forwarded to the daemon's
// upstreams. Sources allow refuses are answered REFUSED (nil: addr must be
// loopback). It returns the address served; Close stops it.
func (e *Engine) ServeUpstream(addr string, allow func(src netip.Addr) bool) (string, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return "", invalidf("invalid address %q: %v", addr, err)
	}
	ap := netip.AddrPortFrom(a, 53)
	c, err := e.resolver.ServeUpstream(ap, allow)
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	e.upstreams = append(e.upstreams, c)
	e.mu.Unlock()
	return ap.String(), nil
}

// SetAliases replaces the network-scoped names of a sandbox's endpoint
// (Docker's --alias and DNS names, learned after the attach), for this
// host's resolver and, on a global network, every host's (the endpoint's
// record is published again).
func (e *Engine) SetAliases(ctx context.Context, netRef, sbRef string, aliases []string) error {
	for _, a := range aliases {
		if err := validName("alias", a); err != nil {
			return err
		}
	}
	sb, ns, ep, err := e.lockEndpoint(ctx, netRef, sbRef)
	if err != nil {
		return err
	}
	defer sb.op.Unlock()
	aliases = slices.Compact(slices.Sorted(slices.Values(aliases)))
	if slices.Equal(slices.Sorted(slices.Values(ep.Aliases)), aliases) {
		return nil
	}
	e.mu.Lock()
	old := ep.Aliases
	ep.Aliases = aliases
	if err := e.commit(ctx, e.putJSON(keySandboxes+sb.rec.ID, sb.rec)); err != nil {
		ep.Aliases = old
		e.mu.Unlock()
		return err
	}
	e.mu.Unlock()
	if e.caps(ns.rec).Scope == driver.ScopeGlobal && e.global != nil {
		// through the publisher: it replaces a publication still in
		// flight (the attach's) and retries while the store is away
		e.blocks().Publish(e.endpointRecord(sb, ns, ep))
	}
	e.refreshNames(sb)
	return nil
}
