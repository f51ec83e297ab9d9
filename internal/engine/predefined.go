package engine

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strconv"
	"time"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/ipam"
)

// DefaultBridge is the Linux bridge of the default network, Tether's docker0.
const DefaultBridge = "tether0"

// DefaultNetworkName is the network a sandbox joins when it names none
// (Docker's "bridge"). Only the engine decides this; the fronts pass an
// empty list.
const DefaultNetworkName = "bridge"

// ensurePredefined makes sure "host", "none" and (unless bridge is "none")
// the default "bridge" network exist and match the configuration.
func (e *Engine) ensurePredefined(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, drv := range e.driverNames() {
		name := e.drivers[drv].Capabilities().Predefined
		if name == "" || e.findByName(name) != nil {
			continue
		}
		n := &Network{ID: newID(), Name: name, Driver: drv, Created: time.Now().UTC(), Predefined: true,
			IPAMDriver: "default", Options: map[string]string{}, Labels: map[string]string{}}
		if err := e.installNetwork(ctx, n, subnets{}); err != nil {
			return err
		}
	}
	return e.ensureDefaultLocked(ctx)
}

func (e *Engine) findByName(name string) *netState {
	for _, ns := range e.networks {
		if ns.rec.Name == name {
			return ns
		}
	}
	return nil
}

// ensureDefaultLocked reconciles the default network with bip, bridge,
// fixed-cidr, mtu, icc and friends. An unchanged network is left exactly as
// it is (its sandboxes keep running); a changed one is rebuilt only when no
// sandbox uses it.
func (e *Engine) ensureDefaultLocked(ctx context.Context) error {
	cur := e.findByName(DefaultNetworkName)
	if e.cfg.Bridge == "none" {
		if cur == nil {
			return nil
		}
		return e.replaceDefault(ctx, cur, "bridge is \"none\"")
	}
	want, err := e.desiredDefault(cur)
	if err != nil {
		return err
	}
	if cur != nil {
		if sameDefault(cur.rec, want) {
			if err := e.updateMasquerade(ctx, cur.rec, want); err != nil {
				return err
			}
			d, err := e.driverOf(cur.rec)
			if err != nil {
				return err
			}
			return d.CreateNetwork(ctx, driverNetwork(cur.rec))
		}
		if err := e.replaceDefault(ctx, cur, "its configuration changed"); err != nil {
			return err
		}
	}
	sub, err := ipam.NewSubnet(ipam.SubnetConfig{Subnet: want.Subnet, IPRange: want.IPRange, Gateway: want.Gateway})
	if err != nil {
		return fmt.Errorf("default network: %w", err)
	}
	if want.External {
		// The user's bridge address is the gateway; nothing else on it is ours.
		want.Gateway = sub.Gateway()
	}
	subs := subnets{v4: sub}
	if want.Subnet6.IsValid() {
		if subs.v6, err = ipam.NewSubnet(ipam.SubnetConfig{Subnet: want.Subnet6, IPRange: want.IPRange6, Gateway: want.Gateway6}); err != nil {
			return fmt.Errorf("default network (ipv6, fixed-cidr-v6, bip6): %w", err)
		}
		want.Gateway6 = subs.v6.Gateway()
	}
	return e.installNetwork(ctx, want, subs)
}

func (e *Engine) replaceDefault(ctx context.Context, cur *netState, why string) error {
	if users := e.endpointNames(cur.rec.ID); len(users) > 0 {
		return fmt.Errorf("the default network must be rebuilt because %s, but sandboxes %v use it: remove them or restore the previous setting", why, users)
	}
	cur.rec.Predefined = false
	if err := e.removeNetworkLocked(ctx, cur); err != nil {
		cur.rec.Predefined = true
		return err
	}
	e.log.Info("removed the default network", "reason", why, "bridge", cur.rec.BridgeName)
	return nil
}

// desiredDefault computes the default network the configuration asks for.
// Without bip or bridge the subnet of the current network is kept, so a
// restart does not move sandboxes; only a first start chooses one.
func (e *Engine) desiredDefault(cur *netState) (*Network, error) {
	c := e.cfg
	n := &Network{
		ID: newID(), Name: DefaultNetworkName, Driver: e.defaultNetworkDriver(), Created: time.Now().UTC(),
		IPAMDriver: "default", Predefined: true, Default: true,
		BridgeName: DefaultBridge, MTU: c.MTU, ICC: c.ICC, Masquerade: c.IPMasq,
		SandboxGateway: c.DefaultGateway, Labels: map[string]string{},
		IPv6: c.IPv6, SandboxGateway6: c.DefaultGatewayV6,
	}
	if cur != nil {
		n.ID, n.Created = cur.rec.ID, cur.rec.Created
	}
	var err error
	switch {
	case c.Bridge != "":
		n.BridgeName, n.External = c.Bridge, true
		n.Subnet, n.Gateway, err = e.linkAddress(c.Bridge)
	case c.BIP != "":
		n.Subnet, n.Gateway, err = ipam.ParseBIP(c.BIP)
	case cur != nil:
		n.Subnet, n.Gateway = cur.rec.Subnet, cur.rec.Gateway
	default:
		var sub *ipam.Subnet
		if sub, err = e.chooseSubnet(n); err == nil {
			n.Subnet, n.Gateway = sub.Config().Subnet, sub.Gateway()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("default network: %w", err)
	}
	if c.FixedCIDR != "" {
		if n.IPRange, err = netip.ParsePrefix(c.FixedCIDR); err != nil {
			return nil, fmt.Errorf("fixed-cidr %q: %w", c.FixedCIDR, err)
		}
	}
	if err := e.desiredDefault6(n, cur); err != nil {
		return nil, err
	}
	n.Options = map[string]string{
		OptDefaultBridge: "true",
		OptICC:           strconv.FormatBool(c.ICC),
		OptMasquerade:    strconv.FormatBool(c.IPMasq),
		OptHostBinding:   hostBinding(c.IP),
		OptBridgeName:    n.BridgeName,
		OptMTU:           strconv.Itoa(c.MTU),
	}
	return n, nil
}

// desiredDefault6 fills in the default network's IPv6 side (daemon option
// ipv6): bip6 is the bridge's address and prefix, fixed-cidr-v6 the
// subnet (or, with bip6, the range sandboxes get addresses from); with
// neither, the current network's subnet is kept, else a ULA /64 chosen.
func (e *Engine) desiredDefault6(n *Network, cur *netState) error {
	c := e.cfg
	if !c.IPv6 {
		return nil
	}
	switch {
	case c.BIP6.IsValid():
		n.Subnet6, n.Gateway6 = c.BIP6.Masked(), c.BIP6.Addr()
		n.IPRange6 = c.FixedCIDRv6
	case c.FixedCIDRv6.IsValid():
		n.Subnet6 = c.FixedCIDRv6
		n.Gateway6 = c.FixedCIDRv6.Addr().Next()
	case cur != nil && cur.rec.Subnet6.IsValid():
		n.Subnet6, n.Gateway6 = cur.rec.Subnet6, cur.rec.Gateway6
	default:
		sub, err := e.chooseSubnet6(n)
		if err != nil {
			return fmt.Errorf("default network: %w", err)
		}
		n.Subnet6, n.Gateway6 = sub.Config().Subnet, sub.Gateway()
	}
	return nil
}

func hostBinding(a netip.Addr) string {
	if !a.IsValid() {
		return "0.0.0.0"
	}
	return a.String()
}

// sameDefault tells whether the default network a can stay as it is for the
// configuration b. Masquerade (ip-masq) is not compared: it lives only in
// the firewall, and updateMasquerade changes it in place.
func sameDefault(a, b *Network) bool {
	ao, bo := maps.Clone(a.Options), maps.Clone(b.Options)
	delete(ao, OptMasquerade)
	delete(bo, OptMasquerade)
	return a.Driver == b.Driver && a.BridgeName == b.BridgeName && a.External == b.External && a.Subnet == b.Subnet &&
		a.Gateway == b.Gateway && a.IPRange == b.IPRange && a.MTU == b.MTU && a.ICC == b.ICC &&
		a.SandboxGateway == b.SandboxGateway && maps.Equal(ao, bo) &&
		a.IPv6 == b.IPv6 && a.Subnet6 == b.Subnet6 && a.Gateway6 == b.Gateway6 && a.IPRange6 == b.IPRange6 &&
		a.SandboxGateway6 == b.SandboxGateway6
}

// updateMasquerade records a changed ip-masq on the default network without
// touching its bridge or sandboxes; the firewall follows (Start's Sync, or
// Add once synced). Called with e.mu held.
func (e *Engine) updateMasquerade(ctx context.Context, cur, want *Network) error {
	if cur.Masquerade == want.Masquerade && cur.Options[OptMasquerade] == want.Options[OptMasquerade] {
		return nil
	}
	cur.Masquerade = want.Masquerade
	if cur.Options == nil {
		cur.Options = map[string]string{}
	}
	cur.Options[OptMasquerade] = want.Options[OptMasquerade]
	if err := e.commit(ctx, e.putJSON(keyNetworks+cur.ID, cur)); err != nil {
		return fmt.Errorf("default network: %w", err)
	}
	e.log.Info("default network: masquerade changed", "masquerade", cur.Masquerade)
	return e.fwAdd(ctx, cur)
}

// defaultNetworkDriver is the default network's driver: bridge-driver
// (the daemon's default driver when unset).
func (e *Engine) defaultNetworkDriver() string {
	if d := e.cfg.BridgeDriver; d != "" {
		return d
	}
	return e.defaultDriver
}

// linkAddress reads the address of a host link the default driver's
// network is brought onto (the daemon's "bridge" option).
func (e *Engine) linkAddress(name string) (netip.Prefix, netip.Addr, error) {
	hl, ok := e.drivers[e.defaultDriver].(driver.HostLinker)
	if !ok {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("driver %q cannot use an existing link %q", e.defaultDriver, name)
	}
	return hl.LinkAddress(name)
}
