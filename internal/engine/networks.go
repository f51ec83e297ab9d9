package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/firewall"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/store"
)

// Docker's bridge driver options, by their Docker names.
const (
	OptBridgeName    = "com.docker.network.bridge.name"
	OptICC           = "com.docker.network.bridge.enable_icc"
	OptMasquerade    = "com.docker.network.bridge.enable_ip_masquerade"
	OptHostBinding   = "com.docker.network.bridge.host_binding_ipv4"
	OptMTU           = "com.docker.network.driver.mtu"
	OptDefaultBridge = "com.docker.network.bridge.default_bridge"
	OptGatewayMode   = "com.docker.network.bridge.gateway_mode_ipv4"
	OptTrusted       = "com.docker.network.bridge.trusted_host_interfaces"
	OptGatewayMode6  = "com.docker.network.bridge.gateway_mode_ipv6"
	OptEnableIPv4    = "com.docker.network.enable_ipv4"
	OptEnableIPv6    = "com.docker.network.enable_ipv6"
)

// SubnetSpec is one IPAM config entry as the user wrote it; the engine parses
// it so every error names its field.
type SubnetSpec struct {
	Subnet  string
	IPRange string
	Gateway string
	Aux     map[string]string
}

// NetworkSpec is a request to create a network.
type NetworkSpec struct {
	Name       string
	Driver     string
	Scope      string // "" or the scope of the driver's networks: "local", "global"
	Internal   bool
	Attachable bool
	EnableIPv6 bool
	// EnableIPv4 false makes an IPv6-only network (Docker 28's --ipv4=false,
	// which needs EnableIPv6); nil is true.
	EnableIPv4  *bool
	IPAMDriver  string
	IPAMOptions map[string]string
	Subnets     []SubnetSpec
	Options     map[string]string
	Labels      map[string]string
}

// CreateNetwork validates spec, picks a subnet when none is given, builds the
// kernel objects and records the network. Nothing is left behind on failure.
func (e *Engine) CreateNetwork(ctx context.Context, spec NetworkSpec) (_ *Network, err error) {
	defer e.countOp(opNetworkCreate, &err) // metrics.go
	n, subs, err := e.buildNetwork(spec)
	if err != nil {
		return nil, err
	}
	if e.isGlobal(n) {
		return e.createGlobalNetwork(ctx, n, subs)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.checkNewNetwork(n, subs); err != nil {
		return nil, err
	}
	if err := e.chooseMissing(n, &subs); err != nil {
		return nil, err
	}
	if err := e.installNetwork(ctx, n, subs); err != nil {
		return nil, err
	}
	e.events.publish(Event{Type: "network", Action: "create", ID: n.ID, Attrs: map[string]string{"name": n.Name, "type": n.Driver}})
	return n, nil
}

// subnets are a network's allocators: IPv4 (nil on an IPv6-only network
// and for drivers without addresses) and IPv6 (nil on an IPv4-only one).
type subnets struct{ v4, v6 *ipam.Subnet }

// chooseMissing picks the subnets the user did not give: IPv4 from the
// default address pools, IPv6 a ULA /64 (see chooseSubnet6). Called with
// e.mu held.
func (e *Engine) chooseMissing(n *Network, subs *subnets) error {
	if !e.caps(n).Addresses {
		return nil
	}
	var err error
	if subs.v4 == nil && !n.NoIPv4 {
		if subs.v4, err = e.chooseSubnet(n); err != nil {
			return err
		}
		n.Subnet, n.Gateway = subs.v4.Config().Subnet, subs.v4.Gateway()
	}
	if subs.v6 == nil && n.IPv6 {
		if subs.v6, err = e.chooseSubnet6(n); err != nil {
			return err
		}
		n.Subnet6, n.Gateway6 = subs.v6.Config().Subnet, subs.v6.Gateway()
	}
	return nil
}

// installNetwork builds the network's kernel objects and commits its records.
// Called with e.mu held.
func (e *Engine) installNetwork(ctx context.Context, n *Network, subs subnets) error {
	d, err := e.driverOf(n)
	if err != nil {
		return err
	}
	if err := e.ensureIPv6Forwarding(n); err != nil {
		return fmt.Errorf("create network %q: %w", n.Name, err)
	}
	if err := d.CreateNetwork(ctx, driverNetwork(n)); err != nil {
		return fmt.Errorf("create network %q: %w", n.Name, err)
	}
	if err := e.fwAdd(ctx, n); err != nil {
		_ = d.DeleteNetwork(ctx, driverNetwork(n))
		return fmt.Errorf("create network %q: %w", n.Name, err)
	}
	if err := e.fault("network.create.after-bridge"); err != nil {
		_ = e.fwRemove(ctx, n)
		_ = d.DeleteNetwork(ctx, driverNetwork(n))
		return err
	}
	ops := []store.Op{e.putJSON(keyNetworks+n.ID, n)}
	for _, x := range []struct {
		key string
		sub *ipam.Subnet
	}{{keyIPAM, subs.v4}, {keyIPAM6, subs.v6}} {
		if x.sub == nil {
			continue
		}
		b, err := x.sub.MarshalBinary()
		if err != nil {
			return err
		}
		ops = append(ops, store.Put(x.key+n.ID, b))
	}
	if err := e.commit(ctx, ops...); err != nil {
		_ = e.fwRemove(ctx, n)
		_ = d.DeleteNetwork(ctx, driverNetwork(n))
		return fmt.Errorf("record network %q: %w", n.Name, err)
	}
	e.networks[n.ID] = &netState{rec: n, subnet: subs.v4, subnet6: subs.v6}
	return e.fault("network.create.after-commit")
}

// buildNetwork turns a spec into a record and (when subnets were given)
// their allocators. Pure validation: no locks, no kernel.
func (e *Engine) buildNetwork(spec NetworkSpec) (*Network, subnets, error) {
	n, subs, err := e.buildNetworkErr(spec)
	if err != nil {
		return nil, subnets{}, err
	}
	return n, subs, nil
}

func (e *Engine) buildNetworkErr(spec NetworkSpec) (*Network, subnets, error) {
	var none subnets
	if err := validName("network name", spec.Name); err != nil {
		return nil, none, err
	}
	drv := spec.Driver
	if drv == "" {
		drv = e.defaultDriver
	}
	d := e.drivers[drv]
	if d == nil {
		if e.global == nil && e.knownGlobal(drv) {
			return nil, none, invalidf("invalid driver %q: %s networks need a cluster store (daemon options cluster-store and cluster-advertise)", drv, drv)
		}
		return nil, none, invalidf("invalid driver %q: known drivers are %s", drv, strings.Join(e.driverNames(), ", "))
	}
	caps := d.Capabilities()
	if spec.Scope != "" && spec.Scope != string(caps.Scope) {
		return nil, none, invalidf("invalid Scope %q: driver %q makes %s networks", spec.Scope, drv, caps.Scope)
	}
	if caps.Predefined != "" {
		return nil, none, forbiddenf("invalid driver %q: only one instance of the %q network is allowed", drv, caps.Predefined)
	}
	ipv4, ipv6, err := ipFamilies(spec)
	if err != nil {
		return nil, none, err
	}
	if ipv6 && !caps.Addresses {
		return nil, none, invalidf("invalid EnableIPv6: driver %q gives its endpoints no addresses", drv)
	}
	if spec.IPAMDriver != "" && spec.IPAMDriver != "default" {
		return nil, none, invalidf("invalid IPAM driver %q: only \"default\" is supported", spec.IPAMDriver)
	}
	n := &Network{
		ID: newID(), Name: spec.Name, Driver: drv, Created: time.Now().UTC(),
		Internal: spec.Internal, Attachable: spec.Attachable,
		IPAMDriver: "default", IPAMOpts: spec.IPAMOptions,
		Options: maps.Clone(spec.Options), Labels: maps.Clone(spec.Labels),
		ICC: true, Masquerade: true, MTU: 1500, // daemon "mtu" is the default network's only, as in Docker
		IPv6: ipv6, NoIPv4: !ipv4,
	}
	if n.Options == nil {
		n.Options = map[string]string{}
	}
	if caps.Scope == driver.ScopeGlobal {
		n.Scope = ScopeGlobal
	} else if err := e.applyBridgeOptions(n); err != nil {
		return nil, none, err
	}
	if n.NoIPv4 && caps.Scope == driver.ScopeGlobal {
		return nil, none, invalidf("invalid EnableIPv4: %s networks need IPv4 (IPv6-only overlays are not supported yet)", drv)
	}
	if err := checkGatewayMode6(n); err != nil {
		return nil, none, err
	}
	var subs subnets
	for _, ss := range spec.Subnets {
		sub, err := parseSubnet(ss)
		if err != nil {
			return nil, none, err
		}
		if sub == nil { // an empty IPAM config entry ({}): the subnet is chosen, as with none
			continue
		}
		c := sub.Config()
		switch {
		case c.Subnet.Addr().Is4() && !ipv4:
			return nil, none, invalidf("invalid subnet %s: the network is IPv6-only (EnableIPv4 false)", c.Subnet)
		case c.Subnet.Addr().Is6() && !ipv6:
			return nil, none, invalidf("invalid subnet %s: an IPv6 subnet needs EnableIPv6 (--ipv6)", c.Subnet)
		case c.Subnet.Addr().Is4() && subs.v4 != nil, c.Subnet.Addr().Is6() && subs.v6 != nil:
			return nil, none, invalidf("invalid IPAM config: more than one subnet per address family is not supported yet")
		case c.Subnet.Addr().Is4():
			subs.v4 = sub
			n.Subnet, n.IPRange, n.Gateway, n.Aux = c.Subnet, c.IPRange, c.Gateway, c.Aux
		default:
			subs.v6 = sub
			n.Subnet6, n.IPRange6, n.Gateway6, n.Aux6 = c.Subnet, c.IPRange, c.Gateway, c.Aux
		}
	}
	if oc, ok := d.(driver.OptionChecker); ok {
		if err := oc.CheckOptions(driverNetwork(n)); err != nil {
			return nil, none, invalidf("%v", err)
		}
	}
	return n, subs, nil
}

// ipFamilies reads which address families a network has: EnableIPv4 (nil:
// true) and EnableIPv6, or their option forms com.docker.network.enable_ipv4
// and enable_ipv6, which must not contradict the fields.
func ipFamilies(spec NetworkSpec) (ipv4, ipv6 bool, err error) {
	ipv4, ipv6 = spec.EnableIPv4 == nil || *spec.EnableIPv4, spec.EnableIPv6
	for _, o := range []struct {
		key, field string
		dst        *bool
		given      bool
	}{{OptEnableIPv4, "EnableIPv4", &ipv4, spec.EnableIPv4 != nil}, {OptEnableIPv6, "EnableIPv6", &ipv6, spec.EnableIPv6}} {
		v, ok := spec.Options[o.key]
		if !ok {
			continue
		}
		b, perr := strconv.ParseBool(v)
		if perr != nil {
			return false, false, invalidf("invalid option %s=%q: not a boolean", o.key, v)
		}
		if o.given && b != *o.dst {
			return false, false, invalidf("invalid option %s=%q: contradicts %s", o.key, v, o.field)
		}
		*o.dst = b
	}
	if !ipv4 && !ipv6 {
		return false, false, invalidf("invalid EnableIPv4: an IPv6-only network needs EnableIPv6 (--ipv6)")
	}
	return ipv4, ipv6, nil
}

// checkGatewayMode6 accepts gateway_mode_ipv6 when it is the network's
// IPv4 gateway mode: the firewall applies one gateway mode to both
// families of a network (docs/ipv6.md).
func checkGatewayMode6(n *Network) error {
	v, ok := n.Options[OptGatewayMode6]
	if !ok {
		return nil
	}
	if !n.IPv6 {
		return invalidf("invalid option %s=%q: the network has no IPv6 (--ipv6)", OptGatewayMode6, v)
	}
	if firewall.GatewayMode(v) != gatewayMode(n) {
		return invalidf("invalid option %s=%q: must equal the IPv4 gateway mode %q (one gateway mode per network)", OptGatewayMode6, v, gatewayMode(n))
	}
	return nil
}

func parseSubnet(s SubnetSpec) (*ipam.Subnet, error) {
	var c ipam.SubnetConfig
	var err error
	if s.Subnet == "" {
		if s.IPRange != "" || s.Gateway != "" || len(s.Aux) > 0 {
			return nil, invalidf("invalid IPAM config: subnet is required when ip-range, gateway or aux-address is given")
		}
		return nil, nil
	}
	if c.Subnet, err = netip.ParsePrefix(s.Subnet); err != nil {
		return nil, invalidf("invalid subnet %q: not a CIDR", s.Subnet)
	}
	if s.IPRange != "" {
		if c.IPRange, err = netip.ParsePrefix(s.IPRange); err != nil {
			return nil, invalidf("invalid ip-range %q: not a CIDR", s.IPRange)
		}
	}
	if s.Gateway != "" {
		if c.Gateway, err = netip.ParseAddr(s.Gateway); err != nil {
			return nil, invalidf("invalid gateway %q: not an IP address", s.Gateway)
		}
	}
	for name, a := range s.Aux {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return nil, invalidf("invalid aux-address %s=%q: not an IP address", name, a)
		}
		if c.Aux == nil {
			c.Aux = map[string]netip.Addr{}
		}
		c.Aux[name] = addr
	}
	sub, err := ipam.NewSubnet(c)
	if err != nil {
		return nil, kindf(KindInvalid, "%w", err)
	}
	return sub, nil
}

// unsupportedOptions are Docker network options Tether does not implement
// yet; refusing them beats silently ignoring them.
var unsupportedOptions = []string{
	"com.docker.network.bridge.inhibit_ipv4",
	"com.docker.network.container_iface_prefix",
}

func (e *Engine) applyBridgeOptions(n *Network) error {
	o := n.Options
	for _, k := range unsupportedOptions {
		if _, ok := o[k]; ok {
			return invalidf("invalid option %s: not supported yet", k)
		}
	}
	if v, ok := o[OptBridgeName]; ok {
		if len(v) > 15 {
			return invalidf("invalid option %s=%q: a bridge name is at most 15 characters", OptBridgeName, v)
		}
		if !ifNameRE.MatchString(v) {
			return invalidf("invalid option %s=%q: not a valid interface name", OptBridgeName, v)
		}
		n.BridgeName = v
	} else {
		n.BridgeName = "tth-" + n.ID[:11] // IFNAMSIZ: 15 characters at most
	}
	for _, b := range []struct {
		key string
		dst *bool
	}{{OptICC, &n.ICC}, {OptMasquerade, &n.Masquerade}} {
		if v, ok := o[b.key]; ok {
			x, err := strconv.ParseBool(v)
			if err != nil {
				return invalidf("invalid option %s=%q: not a boolean", b.key, v)
			}
			*b.dst = x
		}
	}
	if v, ok := o[OptHostBinding]; ok {
		if a, err := netip.ParseAddr(v); err != nil || !a.Is4() {
			return invalidf("invalid option %s=%q: not an IPv4 address", OptHostBinding, v)
		}
	}
	if v, ok := o[OptMTU]; ok {
		m, err := strconv.Atoi(v)
		if err != nil || m < 68 || m > 65535 {
			return invalidf("invalid option %s=%q: an MTU is an integer from 68 to 65535", OptMTU, v)
		}
		n.MTU = m
	}
	return checkRoutingOptions(n)
}

// checkRoutingOptions validates the gateway mode and the trusted host
// interfaces (Docker 28's direct-routing options).
func checkRoutingOptions(n *Network) error {
	if v, ok := n.Options[OptGatewayMode]; ok {
		switch firewall.GatewayMode(v) {
		case firewall.ModeNAT, firewall.ModeNATUnprotected, firewall.ModeRouted:
		case firewall.ModeIsolated:
			if !n.Internal {
				return invalidf("invalid option %s=%q: gateway mode isolated needs an internal network (--internal)", OptGatewayMode, v)
			}
		default:
			return invalidf("invalid option %s=%q: want nat, nat-unprotected, routed or isolated", OptGatewayMode, v)
		}
	}
	if v := n.Options[OptTrusted]; v != "" {
		for _, name := range strings.Split(v, ":") {
			if !ifNameRE.MatchString(name) {
				return invalidf("invalid option %s=%q: %q is not an interface name (names are separated by colons, at most 15 characters each)", OptTrusted, v, name)
			}
		}
	}
	return nil
}

// gatewayMode is the network's gateway mode (option gateway_mode_ipv4,
// validated at creation); nat when not given.
func gatewayMode(n *Network) firewall.GatewayMode {
	if v := n.Options[OptGatewayMode]; v != "" {
		return firewall.GatewayMode(v)
	}
	return firewall.ModeNAT
}

// trustedInterfaces lists the host interfaces of option
// trusted_host_interfaces (colon-separated, validated at creation).
func trustedInterfaces(n *Network) []string {
	if v := n.Options[OptTrusted]; v != "" {
		return strings.Split(v, ":")
	}
	return nil
}

// checkNewNetwork refuses duplicates: name, bridge name, overlapping subnet.
// Called with e.mu held.
func (e *Engine) checkNewNetwork(n *Network, subs subnets) error {
	explicitSubnet := subs.v4 != nil || subs.v6 != nil
	if e.findByName(n.Name) != nil {
		return conflictf("network with name %s already exists", n.Name)
	}
	for _, other := range e.networks {
		o := other.rec
		if o.BridgeName != "" && o.BridgeName == n.BridgeName {
			return conflictf("invalid option %s=%q: bridge already used by network %q", OptBridgeName, n.BridgeName, o.Name)
		}
		if subs.v4 != nil && o.Subnet.IsValid() && ipam.Overlaps(o.Subnet, n.Subnet) {
			return forbiddenf("invalid subnet %s: overlaps subnet %s of network %q", n.Subnet, o.Subnet, o.Name)
		}
		if subs.v6 != nil && o.Subnet6.IsValid() && ipam.Overlaps(o.Subnet6, n.Subnet6) {
			return forbiddenf("invalid subnet %s: overlaps subnet %s of network %q", n.Subnet6, o.Subnet6, o.Name)
		}
	}
	if explicitSubnet || n.External {
		return nil
	}
	if hl, ok := e.drivers[n.Driver].(driver.HostLinker); ok && hl.LinkExists(n.BridgeName) {
		return conflictf("invalid option %s=%q: a link with that name already exists", OptBridgeName, n.BridgeName)
	}
	return nil
}

// chooseSubnet picks the first pool subnet that overlaps no host route, no
// host address and no existing network. Called with e.mu held.
func (e *Engine) chooseSubnet(n *Network) (*ipam.Subnet, error) {
	blockers, err := e.blockers()
	if err != nil {
		return nil, err
	}
	p, err := ipam.ChooseSubnet(e.pools(), blockers)
	if err != nil {
		return nil, forbiddenf("choose a subnet for network %q: %w", n.Name, err)
	}
	return ipam.NewSubnet(ipam.SubnetConfig{Subnet: p})
}

// pools are the IPv4 default address pools: the daemon's
// default-address-pools entries with IPv4 bases, else Docker's.
func (e *Engine) pools() []ipam.PoolSpec {
	var ps []ipam.PoolSpec
	for _, p := range e.cfg.DefaultAddressPools {
		if p.Base.Addr().Is4() {
			ps = append(ps, ipam.PoolSpec{Base: p.Base, Size: p.Size})
		}
	}
	if len(ps) == 0 {
		return ipam.DefaultPools()
	}
	return ps
}

// blockers lists what occupies address space: host routes and addresses, and
// the subnets of existing networks. Called with e.mu held.
func (e *Engine) blockers() ([]ipam.Blocker, error) {
	bs, err := e.hostAndNetworkBlockers(true)
	if err != nil {
		return nil, err
	}
	return append(bs, e.linkBlockersLocked()...), nil
}

// hostAndNetworkBlockers lists host routes and addresses and the networks'
// subnets (with6: IPv6 ones too). Called with e.mu held.
func (e *Engine) hostAndNetworkBlockers(with6 bool) ([]ipam.Blocker, error) {
	bs, err := e.hostBlockers()
	if err != nil {
		return nil, fmt.Errorf("read host routes and addresses: %w", err)
	}
	for _, ns := range e.networks {
		for _, p := range []netip.Prefix{ns.rec.Subnet, ns.rec.Subnet6} {
			if p.IsValid() && (with6 || p.Addr().Is4()) {
				bs = append(bs, ipam.Blocker{Prefix: p, Source: fmt.Sprintf("network %q", ns.rec.Name)})
			}
		}
	}
	return bs, nil
}

// chooseSubnet6 picks a network's IPv6 subnet when none was given: the
// first /64 of the IPv6 default address pools (the daemon's
// default-address-pools entries with IPv6 bases, else the host's ULA /48,
// ipam.ULAPool) that overlaps no host route or address and no other
// network. Called with e.mu held.
func (e *Engine) chooseSubnet6(n *Network) (*ipam.Subnet, error) {
	blockers, err := e.blockers()
	if err != nil {
		return nil, err
	}
	p, err := ipam.ChooseSubnet(e.pools6(), blockers)
	if err != nil {
		return nil, forbiddenf("choose an IPv6 subnet for network %q: %w", n.Name, err)
	}
	return ipam.NewSubnet(ipam.SubnetConfig{Subnet: p})
}

// pools6 are the IPv6 default address pools.
func (e *Engine) pools6() []ipam.PoolSpec {
	var ps []ipam.PoolSpec
	for _, p := range e.cfg.DefaultAddressPools {
		if p.Base.Addr().Is6() {
			ps = append(ps, ipam.PoolSpec{Base: p.Base, Size: p.Size})
		}
	}
	if len(ps) == 0 {
		ps = ipam.DefaultPools6(e.ulaSeed())
	}
	return ps
}

// RemoveNetwork deletes a network without endpoints.
func (e *Engine) RemoveNetwork(ctx context.Context, ref string) (err error) {
	defer e.countOp(opNetworkRemove, &err) // metrics.go
	e.mu.Lock()
	ns, err := e.lookupNetwork(ref)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	if e.isGlobal(ns.rec) {
		e.mu.Unlock()
		if e.global == nil {
			return forbiddenf("network %s is global and this daemon has no cluster store", ns.rec.Name)
		}
		return e.removeGlobalNetwork(ctx, ns)
	}
	defer e.mu.Unlock()
	return e.removeNetworkLocked(ctx, ns)
}

func (e *Engine) removeNetworkLocked(ctx context.Context, ns *netState) error {
	n := ns.rec
	if n.Predefined {
		return forbiddenf("%s is a pre-defined network and cannot be removed", n.Name)
	}
	e.reapDeadUsersLocked(ctx, n.ID)
	if users := e.endpointNames(n.ID); len(users) > 0 || ns.pending > 0 {
		return forbiddenf("error while removing network: network %s has active endpoints (%s)", n.Name, strings.Join(users, ", "))
	}
	d, err := e.driverOf(n)
	if err != nil {
		return err
	}
	if err := d.DeleteNetwork(ctx, driverNetwork(n)); err != nil {
		return fmt.Errorf("remove network %q: %w", n.Name, err)
	}
	// After the bridge: entries of a bridge that is gone match no packet,
	// while a bridge without its entries would be a network without walls.
	if err := e.fwRemove(ctx, n); err != nil {
		return fmt.Errorf("remove network %q: %w", n.Name, err)
	}
	if err := e.fault("network.remove.after-bridge"); err != nil {
		return err
	}
	sticky, err := e.rt.List(ctx, keySticky+n.ID+"/")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	sticky6, err := e.rt.List(ctx, keySticky6+n.ID+"/")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	ops := []store.Op{store.Delete(keyNetworks + n.ID), store.Delete(keyIPAM + n.ID), store.Delete(keyIPAM6 + n.ID)}
	for _, kv := range append(sticky, sticky6...) {
		ops = append(ops, store.Delete(kv.Key))
	}
	if err := e.commit(ctx, ops...); err != nil {
		return err
	}
	delete(e.networks, n.ID)
	e.events.publish(Event{Type: "network", Action: "destroy", ID: n.ID, Attrs: map[string]string{"name": n.Name, "type": n.Driver}})
	return nil
}

// endpointNames lists the sandboxes attached to a network. Called with e.mu held.
func (e *Engine) endpointNames(netID string) []string {
	var names []string
	for _, sb := range e.sandboxes {
		if sb.rec.endpointOn(netID) != nil {
			names = append(names, sb.rec.Name)
		}
	}
	slices.Sort(names)
	return names
}

// lookupNetwork resolves a name or ID. Called with e.mu held.
func (e *Engine) lookupNetwork(ref string) (*netState, error) {
	return resolve("network", ref, e.networks,
		func(n *netState) string { return n.rec.ID }, func(n *netState) string { return n.rec.Name })
}

// NetworkView is a network with its attached endpoints, for inspect and list.
type NetworkView struct {
	Network
	// IPv4: the network's driver gives endpoints IPv4 addresses (Docker's
	// EnableIPv4; false for host and none).
	IPv4      bool
	Endpoints []EndpointView
	// Global networks: endpoints on other nodes, and this node.
	Remote []RemoteEndpoint
	Node   cluster.Node
}

// EndpointView is one endpoint as inspect shows it.
type EndpointView struct {
	Endpoint
	SandboxID   string
	SandboxName string
}

// Network returns one network with its endpoints.
func (e *Engine) Network(ref string) (*NetworkView, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ns, err := e.lookupNetwork(ref)
	if err != nil {
		return nil, err
	}
	return e.viewLocked(ns), nil
}

// Networks returns every network, sorted by name.
func (e *Engine) Networks() []*NetworkView {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*NetworkView, 0, len(e.networks))
	for _, ns := range e.networks {
		out = append(out, e.viewLocked(ns))
	}
	slices.SortFunc(out, func(a, b *NetworkView) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (e *Engine) viewLocked(ns *netState) *NetworkView {
	v := &NetworkView{Network: *ns.rec, IPv4: e.caps(ns.rec).Addresses && !ns.rec.NoIPv4}
	if e.isGlobal(ns.rec) && e.global != nil {
		v.Remote = e.remoteEndpoints(ns.rec.ID)
		v.Node = e.global.cl.Self()
	}
	for _, sb := range e.sandboxes {
		if ep := sb.rec.endpointOn(ns.rec.ID); ep != nil {
			v.Endpoints = append(v.Endpoints, EndpointView{Endpoint: *ep, SandboxID: sb.rec.ID, SandboxName: sb.rec.Name})
		}
	}
	slices.SortFunc(v.Endpoints, func(a, b EndpointView) int { return strings.Compare(a.SandboxName, b.SandboxName) })
	return v
}

// PruneNetworks removes every user-defined network without endpoints for
// which keep returns false, and returns their names.
func (e *Engine) PruneNetworks(ctx context.Context, keep func(*Network) bool) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var removed []string
	var errs []error
	for _, ns := range e.networks {
		n := ns.rec
		if !n.Predefined {
			e.reapDeadUsersLocked(ctx, n.ID) // a sandbox whose namespace is gone uses nothing
		}
		// Global networks are removed with network rm (a cluster-wide check).
		if n.Predefined || e.isGlobal(n) || len(e.endpointNames(n.ID)) > 0 || ns.pending > 0 || keep(n) {
			continue
		}
		if err := e.removeNetworkLocked(ctx, ns); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, n.Name)
	}
	slices.Sort(removed)
	return removed, errors.Join(errs...)
}

func driverNetwork(n *Network) *driver.Network {
	gw, gw6 := n.Gateway, n.Gateway6
	if gatewayMode(n) == firewall.ModeIsolated {
		gw, gw6 = netip.Addr{}, netip.Addr{} // as Docker: no address on the bridge, the host is not on the network
	}
	return &driver.Network{
		ID: n.ID, Name: n.Name, BridgeName: n.BridgeName, Subnet: n.Subnet, Gateway: gw, Subnet6: n.Subnet6, Gateway6: gw6,
		MTU: n.MTU, ICC: n.ICC, Internal: n.Internal, External: n.External, VNI: n.VNI, VTEP: n.VTEP,
		Options: n.Options, Aux: n.Aux,
	}
}

// driverNames lists the registered drivers, sorted.
func (e *Engine) driverNames() []string {
	return slices.Sorted(maps.Keys(e.drivers))
}

// Drivers lists the network drivers this daemon can use, sorted (Docker's
// info Plugins.Network).
func (e *Engine) Drivers() []string { return e.driverNames() }
