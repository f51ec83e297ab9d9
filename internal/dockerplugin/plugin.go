// Package dockerplugin serves Docker's legacy network and IPAM plugin
// protocol (moby's libnetwork remote driver and remote IPAM), so that
// dockerd's containers join Tether networks: `docker network create -d
// tether --ipam-driver tether NAME`, then `docker run --network NAME`.
//
// Each Docker endpoint is a handed-over Tether sandbox (engine
// SandboxSpec.Handover) with one endpoint: Tether makes the veth pair in
// the host namespace, reserves the address (cluster-wide on a global
// network, in the same transaction as the endpoint's record), publishes
// the ports; dockerd moves the sandbox end into the container and
// configures it. The address is taken at IPAM RequestAddress, which comes
// first, so the whole attach runs once, atomically, in the engine's one
// pipeline; CreateEndpoint and Join then only find it again.
//
// Networks are made when their name is known: dockerd sends no name, and
// stores the network only after CreateNetwork answers, so the binding is
// recorded at CreateNetwork and the Tether network is made under the
// Docker name as soon as the local Docker API shows it (or by the first
// endpoint). docs/docker-plugin.md is the user's guide;
// docs/design-docker-plugin.md the protocol as dockerd really speaks it.
package dockerplugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-net/tether/internal/dockerapi"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/portmap"
	"github.com/tether-net/tether/internal/store"
)

// Backend is what the plugin asks of the engine (*engine.Engine).
type Backend interface {
	CreateNetwork(ctx context.Context, spec engine.NetworkSpec) (*engine.Network, error)
	RemoveNetwork(ctx context.Context, ref string) error
	Network(ref string) (*engine.NetworkView, error)
	Networks() []*engine.NetworkView
	CreateSandbox(ctx context.Context, spec engine.SandboxSpec) (*engine.Sandbox, error)
	Sandbox(ref string) (*engine.Sandbox, error)
	RemoveSandbox(ctx context.Context, ref string, force bool) error
	Connect(ctx context.Context, netRef, sbRef string, a engine.AttachSpec) error
	Disconnect(ctx context.Context, netRef, sbRef string, force bool) error
	PublishPorts(ctx context.Context, netRef, sbRef string, ports []portmap.Spec) error
	UnpublishPorts(ctx context.Context, netRef, sbRef string) error
	ChooseSubnet(avoid []netip.Prefix) (netip.Prefix, error)
	CheckSubnet(subnet netip.Prefix) error
	ReapHandedOver(ctx context.Context) []string
	SetAliases(ctx context.Context, netRef, sbRef string, aliases []string) error
	SubscribeEvents(since time.Time) ([]engine.Event, <-chan engine.Event, func())
}

// Docker is what the plugin asks of the local dockerd's API
// (*dockerapi.Client). Never called from inside a plugin call that dockerd
// makes under a container's lock with something that takes that lock.
type Docker interface {
	NetworkInspect(ctx context.Context, id string) (dockerapi.Network, error)
	NetworkList(ctx context.Context) ([]dockerapi.Network, error)
	NetworkCreate(ctx context.Context, req dockerapi.NetworkCreate) (string, error)
	NetworkRemove(ctx context.Context, id string) error
	ContainerNetworks(ctx context.Context, id string) (string, dockerapi.ContainerNetworks, error)
	Events(ctx context.Context, filters map[string][]string) (<-chan dockerapi.Event, <-chan error)
}

// Address spaces Tether's IPAM answers (GetDefaultAddressSpaces).
const (
	SpaceLocal  = "tether-local"
	SpaceGlobal = "tether-global"
)

// Docker plugin names: the socket tether.sock answers scope local,
// tether-overlay.sock scope global.
const (
	NameLocal  = "tether"
	NameGlobal = "tether-overlay"
)

// Options configure a Plugin.
type Options struct {
	Backend Backend
	Store   store.Store
	// Docker is the local dockerd's API: network names are read there and
	// the Docker side of global networks is made there. nil: networks are
	// named docker-<id12> and global networks are not mirrored.
	Docker Docker
	Log    *slog.Logger
	// LocalDriver and GlobalDriver are the Tether drivers of local and
	// global networks (the daemon's registry names them).
	LocalDriver, GlobalDriver string
	// NameWait bounds how long the plugin waits for dockerd to show a new
	// network (and its name) before naming it docker-<id12>; 0 = 10 s.
	NameWait time.Duration
}

// Plugin is the plugin's state and handlers.
type Plugin struct {
	o   Options
	log *slog.Logger

	mu sync.Mutex
	s  *state
	// making serialises the creation of one Docker network's Tether
	// network (background naming vs the first endpoint).
	making map[string]*sync.Mutex
	// dockerSubnets: the subnets of the local dockerd's networks (Mirror
	// reads them); sources: those and the Tether networks', for AllowSource.
	dockerSubnets []netip.Prefix
	sources       atomic.Pointer[[]netip.Prefix]
}

// New loads the plugin's records.
func New(ctx context.Context, o Options) (*Plugin, error) {
	if o.Backend == nil || o.Store == nil {
		return nil, errors.New("docker plugin: backend and store are required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.NameWait == 0 {
		o.NameWait = 10 * time.Second
	}
	s, err := loadState(ctx, o.Store)
	if err != nil {
		return nil, err
	}
	p := &Plugin{o: o, log: o.Log.With("component", "docker-plugin"), s: s, making: map[string]*sync.Mutex{}}
	p.refreshSources(o.Backend.Networks(), nil)
	// Networks recorded but not made before a restart: make them now.
	for _, b := range s.bindings {
		if b.TetherID == "" {
			go p.nameAndMake(context.WithoutCancel(ctx), b.DockerID)
		}
	}
	return p, nil
}

// errors: a fieldError is bad input (HTTP 400 naming the field); any
// other error is a failure answered in Err/Error.
type fieldError struct {
	field string
	msg   string
}

func (e *fieldError) Error() string { return "invalid " + e.field + ": " + e.msg }

func badField(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// ---- IPAM ----

func (p *Plugin) addressSpaces() (any, error) {
	return addressSpacesResponse{LocalDefaultAddressSpace: SpaceLocal, GlobalDefaultAddressSpace: SpaceGlobal}, nil
}

// requestPool hands out a subnet: the one asked for when it overlaps no
// Tether network and no other pool, else one chosen as `tether network
// create` chooses (no host route, address or network overlaps it). With
// the IPAM option tether.network it is that network's subnet.
func (p *Plugin) requestPool(ctx context.Context, r requestPoolRequest) (any, error) {
	if r.V6 {
		return nil, badField("V6", "IPv6 pools are not supported by Tether yet (create the network without --ipv6)")
	}
	if r.AddressSpace != SpaceLocal && r.AddressSpace != SpaceGlobal {
		return nil, badField("AddressSpace", "%q is not one of Tether's (%s, %s)", r.AddressSpace, SpaceLocal, SpaceGlobal)
	}
	pl := &pool{Space: r.AddressSpace, Created: time.Now().UTC()}
	if r.Pool != "" {
		sub, err := netip.ParsePrefix(r.Pool)
		if err != nil || !sub.Addr().Is4() {
			return nil, badField("Pool", "%q is not an IPv4 CIDR", r.Pool)
		}
		if sub.Masked() != sub {
			return nil, badField("Pool", "%q is not a network address (did you mean %s?)", r.Pool, sub.Masked())
		}
		if sub.Bits() > 30 {
			return nil, badField("Pool", "%s leaves no addresses for containers", sub)
		}
		pl.Subnet = sub
	}
	if r.SubPool != "" {
		rng, err := netip.ParsePrefix(r.SubPool)
		if err != nil || !rng.Addr().Is4() {
			return nil, badField("SubPool", "%q is not an IPv4 CIDR", r.SubPool)
		}
		if !pl.Subnet.IsValid() || !pl.Subnet.Contains(rng.Addr()) || rng.Bits() < pl.Subnet.Bits() {
			return nil, badField("SubPool", "%s is not inside the pool %s", rng, pl.Subnet)
		}
		pl.IPRange = rng.Masked()
	}
	for k := range r.Options {
		if k != OptNetwork {
			return nil, badField("Options", "unknown IPAM option %q (Tether's IPAM knows %s)", k, OptNetwork)
		}
	}
	if ref := r.Options[OptNetwork]; ref != "" {
		n, err := p.o.Backend.Network(ref)
		if err != nil {
			return nil, badField("Options", "%s=%q: %v", OptNetwork, ref, err)
		}
		if pl.Subnet.IsValid() && pl.Subnet != n.Subnet {
			return nil, badField("Pool", "%s is not the subnet %s of Tether network %q", pl.Subnet, n.Subnet, n.Name)
		}
		pl.Subnet, pl.Network, pl.Gateway = n.Subnet, n.ID, n.Gateway
		if !pl.IPRange.IsValid() {
			pl.IPRange = n.IPRange
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if pl.Network == "" {
		var avoid []netip.Prefix
		for _, o := range p.s.pools {
			avoid = append(avoid, o.Subnet)
		}
		if pl.Subnet.IsValid() {
			if err := p.o.Backend.CheckSubnet(pl.Subnet); err != nil {
				return nil, err
			}
			for _, o := range avoid {
				if o.Overlaps(pl.Subnet) {
					return nil, fmt.Errorf("pool %s overlaps pool %s handed to another Docker network", pl.Subnet, o)
				}
			}
		} else {
			sub, err := p.o.Backend.ChooseSubnet(avoid)
			if err != nil {
				return nil, err
			}
			pl.Subnet = sub
		}
	}
	pl.ID = pl.Space + "/" + pl.Subnet.String()
	if pl.Network != "" {
		pl.ID += "/" + shortID(pl.Network)
	}
	if _, taken := p.s.pools[pl.ID]; taken {
		return nil, fmt.Errorf("pool %s is already in use by another Docker network", pl.Subnet)
	}
	if err := p.s.savePool(ctx, pl); err != nil {
		return nil, err
	}
	return requestPoolResponse{PoolID: pl.ID, Pool: pl.Subnet.String()}, nil
}

func (p *Plugin) releasePool(ctx context.Context, r releasePoolRequest) (any, error) {
	if r.PoolID == "" {
		return nil, badField("PoolID", "empty")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.s.pools[r.PoolID]; !ok {
		return ipamResponse{}, nil
	}
	return ipamResponse{}, p.s.dropPool(ctx, r.PoolID)
}

// requestAddress answers the gateway's address, records an aux address,
// or attaches a container: the whole attach runs here (address, pair,
// names), as the address must be cluster-unique before dockerd goes on.
func (p *Plugin) requestAddress(ctx context.Context, r requestAddressRequest) (any, error) {
	var want netip.Addr
	if r.Address != "" {
		a, err := netip.ParseAddr(r.Address)
		if err != nil || !a.Is4() {
			return nil, badField("Address", "%q is not an IPv4 address", r.Address)
		}
		want = a
	}
	p.mu.Lock()
	pl, ok := p.s.pools[r.PoolID]
	if !ok {
		p.mu.Unlock()
		return nil, badField("PoolID", "%q is not a pool Tether handed out", r.PoolID)
	}
	if want.IsValid() && !pl.Subnet.Contains(want) {
		p.mu.Unlock()
		return nil, badField("Address", "%s is not in the pool %s", want, pl.Subnet)
	}
	switch {
	case r.Options[optAddressType] == addressGateway:
		defer p.mu.Unlock()
		return p.gatewayAddress(ctx, pl, want)
	case r.Options[optEndpointName] == "" && want.IsValid() && r.Options[optAddressType] == "" && p.boundLocked(pl.ID) == nil:
		// an --aux-address: before the network exists, with no name
		defer p.mu.Unlock()
		if pl.Aux == nil {
			pl.Aux = map[string]netip.Addr{}
		}
		pl.Aux[want.String()] = want
		if err := p.s.savePool(ctx, pl); err != nil {
			return nil, err
		}
		return requestAddressResponse{Address: netip.PrefixFrom(want, pl.Subnet.Bits()).String()}, nil
	}
	b := p.boundLocked(pl.ID)
	p.mu.Unlock()
	if b == nil {
		return nil, fmt.Errorf("pool %s has no Docker network yet", pl.ID)
	}
	ep, err := p.attach(ctx, b, pl, want, r.Options[optEndpointName], "")
	if err != nil {
		return nil, err
	}
	return requestAddressResponse{Address: netip.PrefixFrom(ep.Address, pl.Subnet.Bits()).String()}, nil
}

// gatewayAddress: the address asked for, else the first of the pool (as
// Docker's IPAM chooses), and nothing for a pool bound to an existing
// network (its gateway is that network's).
func (p *Plugin) gatewayAddress(ctx context.Context, pl *pool, want netip.Addr) (any, error) {
	if pl.Network != "" {
		if want.IsValid() && want != pl.Gateway {
			return nil, badField("Address", "gateway %s is not %s, the gateway of the Tether network", want, pl.Gateway)
		}
		if !pl.Gateway.IsValid() {
			return nil, errors.New("the Tether network has no gateway")
		}
		return requestAddressResponse{Address: netip.PrefixFrom(pl.Gateway, pl.Subnet.Bits()).String()}, nil
	}
	if !want.IsValid() {
		want = pl.Subnet.Addr().Next()
	}
	if want == pl.Subnet.Addr() {
		return nil, badField("Address", "%s is the network address of %s", want, pl.Subnet)
	}
	pl.Gateway = want
	if err := p.s.savePool(ctx, pl); err != nil {
		return nil, err
	}
	return requestAddressResponse{Address: netip.PrefixFrom(want, pl.Subnet.Bits()).String()}, nil
}

// boundLocked is the binding of the network using pool id. Called with
// p.mu held.
func (p *Plugin) boundLocked(poolID string) *binding {
	for _, b := range p.s.bindings {
		if b.PoolID == poolID {
			return b
		}
	}
	return nil
}

// attach makes the handed-over sandbox of one Docker endpoint: named after
// the container (with a suffix when the name is taken, e.g. the same
// container on a second Tether network), aliased by the container's name,
// at the address asked for or the next free one. key is the record's key
// ("" = its address key).
func (p *Plugin) attach(ctx context.Context, b *binding, pl *pool, want netip.Addr, container, endpointID string) (*endpoint, error) {
	netID, err := p.ensureNetwork(ctx, b.DockerID)
	if err != nil {
		return nil, err
	}
	a := engine.AttachSpec{Network: netID}
	if want.IsValid() {
		a.IP = want.String()
	}
	name := container
	if name != "" && validName(name) {
		a.Aliases = []string{name}
	} else {
		name = "docker-" + randomHex(6)
	}
	spec := engine.SandboxSpec{Name: name, Handover: true, Networks: []engine.AttachSpec{a}}
	sb, err := p.o.Backend.CreateSandbox(ctx, spec)
	if engine.KindOf(err) == engine.KindConflict && strings.Contains(err.Error(), "sandbox name") {
		spec.Name = name + "-" + randomHex(3)
		sb, err = p.o.Backend.CreateSandbox(ctx, spec)
	}
	if err == nil && len(sb.Endpoints) != 1 {
		err = fmt.Errorf("sandbox %q has %d endpoints, want 1", sb.Name, len(sb.Endpoints))
	}
	if err != nil {
		return nil, err
	}
	ep := &endpoint{PoolID: pl.ID, Address: sb.Endpoints[0].Address.Addr(), DockerNet: b.DockerID, EndpointID: endpointID,
		SandboxID: sb.ID, TetherNet: netID, Container: container, Created: time.Now().UTC()}
	ep.Key = addrKey(pl.ID, ep.Address)
	if endpointID != "" {
		ep.Key = endpointID
	}
	p.mu.Lock()
	err = p.s.saveEndpoint(ctx, ep, "")
	p.mu.Unlock()
	if err != nil {
		if rerr := p.o.Backend.RemoveSandbox(context.WithoutCancel(ctx), sb.ID, true); rerr != nil {
			p.log.Warn("roll back an attach", "sandbox", sb.Name, "err", rerr)
		}
		return nil, err
	}
	p.log.Info("attached a Docker endpoint", "sandbox", sb.Name, "network", netID[:12], "address", ep.Address)
	return ep, nil
}

// releaseAddress frees an aux address, or detaches the endpoint still
// holding the address (a Docker rollback before CreateEndpoint; after
// DeleteEndpoint nothing is left). Unknown addresses are success.
func (p *Plugin) releaseAddress(ctx context.Context, r releaseAddressRequest) (any, error) {
	a, err := netip.ParseAddr(r.Address)
	if err != nil {
		return nil, badField("Address", "%q is not an IP address", r.Address)
	}
	p.mu.Lock()
	pl := p.s.pools[r.PoolID]
	if pl != nil && pl.Aux[a.String()].IsValid() {
		delete(pl.Aux, a.String())
		err := p.s.savePool(ctx, pl)
		p.mu.Unlock()
		return ipamResponse{}, err
	}
	ep := p.s.endpoints[addrKey(r.PoolID, a)]
	if ep == nil {
		for _, e := range p.s.endpoints {
			if e.PoolID == r.PoolID && e.Address == a {
				ep = e
			}
		}
	}
	p.mu.Unlock()
	if ep == nil {
		return ipamResponse{}, nil
	}
	return ipamResponse{}, p.detach(ctx, ep)
}

// detach removes an endpoint's sandbox and its record (idempotent).
func (p *Plugin) detach(ctx context.Context, ep *endpoint) error {
	if err := p.o.Backend.RemoveSandbox(ctx, ep.SandboxID, true); err != nil && engine.KindOf(err) != engine.KindNotFound {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.s.endpoints[ep.Key] != ep {
		return nil
	}
	return p.s.dropEndpoint(ctx, ep.Key)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validName: whether a Docker name (container or network) is also a
// Tether name, a DNS label (Docker allows '.' too; those get a generated
// name and keep theirs as nothing).
func validName(s string) bool { return nameRE.MatchString(s) }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$`)
