// Package drivertest is a fake network driver: it keeps in memory what a
// real driver would build in the kernel, so the engine's logic (attach,
// detach, restore, garbage collection, rollback) runs in unit tests
// without root. It implements every optional driver interface.
package drivertest

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/tether-net/tether/internal/driver"
)

// Fake is a driver of any name and capabilities. Its zero value is not
// usable; make it with New.
type Fake struct {
	name string
	caps driver.Capabilities

	mu sync.Mutex
	// Networks and Endpoints are the "kernel objects": by network ID, and by
	// endpoint ID (the namespace path it joined).
	networks  map[string]driver.Network
	endpoints map[string]Joined
	peers     map[string][]driver.Peer // by network ID
	// Links are the marked host links (owner ID -> name), for Sweep.
	links map[string]string
	// foreign are host links Tether did not make (AddHostLink), by name:
	// their address, zero for none.
	foreign map[string]netip.Prefix
	// Broken endpoints are rebuilt by Repair.
	broken map[string]bool
	// fail makes the named method fail once per entry ("Join", "Leave",
	// "CreateNetwork", "DeleteNetwork", "Detach", "Repair").
	fail  map[string]error
	calls []string
	gone  map[string]chan struct{} // detached endpoints' link channels
	// hostIf counts host interface names handed out.
	hostIf int
	// renameNext makes the next Join replace the host end name it was
	// given, as a driver does when the name is taken.
	renameNext bool
	// onJoin runs inside Join, before the endpoint is held (SetJoinHook).
	onJoin func(ep driver.Endpoint)
}

// Joined is one endpoint the fake holds.
type Joined struct {
	Network  string
	Endpoint driver.Endpoint
	NSPath   string
	Detached bool
	Pair     bool // JoinPair: the sandbox end was left in the host namespace
}

var (
	_ driver.Driver         = (*Fake)(nil)
	_ driver.Detacher       = (*Fake)(nil)
	_ driver.Repairer       = (*Fake)(nil)
	_ driver.Sweeper        = (*Fake)(nil)
	_ driver.PeerProgrammer = (*Fake)(nil)
	_ driver.HostLinker     = (*Fake)(nil)
	_ driver.Router         = (*Fake)(nil)
	_ driver.HostIfNamer    = (*Fake)(nil)
)

// HostIfName hands out a host end name, as Join would (driver.HostIfNamer).
func (f *Fake) HostIfName() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nextHostIfLocked()
}

func (f *Fake) nextHostIfLocked() string {
	f.hostIf++
	return fmt.Sprintf("fk%d", f.hostIf)
}

// SetJoinHook makes every Join call fn with the endpoint it joins, before
// it holds it (nil: none). fn must not call the fake.
func (f *Fake) SetJoinHook(fn func(ep driver.Endpoint)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onJoin = fn
}

// RenameNextJoin makes the next Join pick another host end name than the
// one it is given (a name that turned out to be taken).
func (f *Fake) RenameNextJoin() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renameNext = true
}

// SetDefaultRoute marks the endpoint as carrying the default route.
func (f *Fake) SetDefaultRoute(_ context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("SetDefaultRoute"); err != nil {
		return err
	}
	j, ok := f.endpoints[ep.ID]
	if !ok {
		return fmt.Errorf("set default route: endpoint %s is not joined", ep.ID)
	}
	j.Endpoint.DefaultRoute = true
	f.endpoints[ep.ID] = j
	return nil
}

// New returns a fake driver.
func New(name string, caps driver.Capabilities) *Fake {
	return &Fake{name: name, caps: caps, networks: map[string]driver.Network{}, endpoints: map[string]Joined{},
		peers: map[string][]driver.Peer{}, links: map[string]string{}, foreign: map[string]netip.Prefix{}, broken: map[string]bool{},
		fail: map[string]error{}, gone: map[string]chan struct{}{}}
}

// Bridge is a fake with the bridge driver's capabilities.
func Bridge(name string) *Fake {
	return New(name, driver.Capabilities{Scope: driver.ScopeLocal, Addresses: true, Ports: true, Firewall: true,
		DNS: true, DefaultRoute: true, WayOut: true})
}

// Overlay is a fake with the overlay driver's capabilities.
func Overlay(name string) *Fake {
	return New(name, driver.Capabilities{Scope: driver.ScopeGlobal, Addresses: true, DNS: true, WayOut: true, DefaultRoute: true, Firewall: true})
}

// BridgeName is driver.Bridged, as the overlay driver names its bridges
// (the engine asks only for global networks').
func (f *Fake) BridgeName(n *driver.Network) string { return fmt.Sprintf("tov-%d", n.VNI) }

// Host and Null are fakes of the predefined host and none drivers.
func Host() *Fake {
	return New("host", driver.Capabilities{Scope: driver.ScopeLocal, Predefined: "host", Namespace: driver.NamespaceHost, WayOut: true})
}

func Null() *Fake {
	return New("null", driver.Capabilities{Scope: driver.ScopeLocal, Predefined: "none", Namespace: driver.NamespaceNone})
}

func (f *Fake) Type() string                      { return f.name }
func (f *Fake) Capabilities() driver.Capabilities { return f.caps }

// FailNext makes the next call of method fail with err.
func (f *Fake) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = err
}

// failing returns the injected error of method, once. Called with f.mu held.
func (f *Fake) failing(method string) error {
	f.calls = append(f.calls, method)
	if err, ok := f.fail[method]; ok {
		delete(f.fail, method)
		return err
	}
	return nil
}

// Calls lists the methods called, in order.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *Fake) CreateNetwork(_ context.Context, n *driver.Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("CreateNetwork"); err != nil {
		return err
	}
	f.networks[n.ID] = *n
	if n.BridgeName != "" && !n.External {
		f.links[n.ID] = n.BridgeName
	}
	return nil
}

func (f *Fake) DeleteNetwork(_ context.Context, n *driver.Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("DeleteNetwork"); err != nil {
		return err
	}
	delete(f.networks, n.ID)
	delete(f.links, n.ID)
	delete(f.peers, n.ID)
	return nil
}

func (f *Fake) Join(_ context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("Join"); err != nil {
		return err
	}
	if _, ok := f.networks[n.ID]; !ok {
		return fmt.Errorf("join %s: network %s does not exist", ep.ID, n.ID)
	}
	if f.onJoin != nil {
		f.onJoin(*ep)
	}
	if f.caps.Namespace == driver.NamespaceOwn {
		if ep.HostIfName == "" || f.renameNext {
			ep.HostIfName = f.nextHostIfLocked()
			f.renameNext = false
		}
		f.links[ep.ID] = ep.HostIfName
	}
	f.endpoints[ep.ID] = Joined{Network: n.ID, Endpoint: *ep, NSPath: nsPath}
	delete(f.broken, ep.ID)
	return nil
}

func (f *Fake) Leave(_ context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("Leave"); err != nil {
		return err
	}
	f.dropLocked(ep.ID)
	return nil
}

// dropLocked deletes an endpoint's objects and tells a detach waiter.
func (f *Fake) dropLocked(id string) {
	delete(f.endpoints, id)
	delete(f.links, id)
	if ch, ok := f.gone[id]; ok {
		close(ch)
		delete(f.gone, id)
	}
}

// Detach marks the endpoint detached and returns a channel closed when
// TeardownNamespace (or Leave) deletes it.
func (f *Fake) Detach(_ context.Context, n *driver.Network, ep *driver.Endpoint) (<-chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("Detach"); err != nil {
		return nil, err
	}
	j, ok := f.endpoints[ep.ID]
	if !ok {
		return nil, nil
	}
	j.Detached = true
	f.endpoints[ep.ID] = j
	ch := make(chan struct{})
	f.gone[ep.ID] = ch
	return ch, nil
}

// TeardownNamespace deletes every endpoint joined in the namespace at
// nsPath, as the kernel does when a namespace goes.
func (f *Fake) TeardownNamespace(nsPath string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, j := range f.endpoints {
		if j.NSPath == nsPath {
			f.dropLocked(id)
		}
	}
}

// Break marks an endpoint broken: Repair rebuilds it.
func (f *Fake) Break(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken[id] = true
}

func (f *Fake) Repair(_ context.Context, n *driver.Network, ep *driver.Endpoint, nsPath string, _ map[string]driver.SandboxLink) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("Repair"); err != nil {
		return false, err
	}
	if _, joined := f.endpoints[ep.ID]; joined && !f.broken[ep.ID] {
		return false, nil
	}
	if _, ok := f.networks[n.ID]; !ok {
		return false, fmt.Errorf("repair %s: network %s does not exist", ep.ID, n.ID)
	}
	f.calls = append(f.calls, "Repair.rebuild")
	f.hostIf++
	ep.HostIfName = fmt.Sprintf("fk%d", f.hostIf)
	f.links[ep.ID] = ep.HostIfName
	f.endpoints[ep.ID] = Joined{Network: n.ID, Endpoint: *ep, NSPath: nsPath}
	delete(f.broken, ep.ID)
	return true, nil
}

// AddLink adds a marked host link (a leftover for Sweep to find).
func (f *Fake) AddLink(owner, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[owner] = name
}

// AddHostLink adds a host link Tether did not make (a bridge the user
// brought, another program's interface), with addr as its first IPv4
// address (zero for none).
func (f *Fake) AddHostLink(name string, addr netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.foreign[name] = addr
}

// LinkExists reports whether a host link of that name exists: one the
// fake made (a network's bridge, an endpoint's host end) or AddHostLink's.
func (f *Fake) LinkExists(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.foreign[name]
	return ok || slices.Contains(slices.Collect(maps.Values(f.links)), name)
}

// LinkAddress returns the address AddHostLink gave a link: its prefix
// (masked) and the address itself.
func (f *Fake) LinkAddress(name string) (netip.Prefix, netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.foreign[name]
	switch {
	case !ok:
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("link %q: not found", name)
	case !a.IsValid():
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("link %q has no IPv4 address", name)
	}
	return a.Masked(), a.Addr(), nil
}

// Links returns the marked host links (owner ID -> name).
func (f *Fake) Links() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.links)
}

func (f *Fake) Sweep(_ context.Context, keep map[string]string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for owner, name := range f.links {
		if keep[owner] != name {
			delete(f.links, owner)
			delete(f.endpoints, owner)
			n++
		}
	}
	return n, nil
}

func (f *Fake) AddPeer(_ context.Context, n *driver.Network, p driver.Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.ContainsFunc(f.peers[n.ID], p.Equal) {
		f.peers[n.ID] = append(f.peers[n.ID], p)
	}
	return nil
}

func (f *Fake) RemovePeer(ctx context.Context, n *driver.Network, p driver.Peer) error {
	return f.RemovePeers(ctx, n, []driver.Peer{p})
}

func (f *Fake) RemovePeers(_ context.Context, n *driver.Network, ps []driver.Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers[n.ID] = slices.DeleteFunc(f.peers[n.ID], func(q driver.Peer) bool { return slices.ContainsFunc(ps, q.Equal) })
	return nil
}

func (f *Fake) Peers(_ context.Context, n *driver.Network) ([]driver.Peer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers[n.ID]), nil
}

// Networks returns the IDs of the networks the fake holds.
func (f *Fake) Networks() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.networks))
}

// Network returns the record CreateNetwork was last given for the network
// id (every field, IPv6 ones included), and whether the fake holds it.
func (f *Fake) Network(id string) (driver.Network, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.networks[id]
	return n, ok
}

// Endpoints returns the endpoints the fake holds, by ID, each as Join (or
// Repair) was last given it: every field, Address6 and Gateway6 included.
func (f *Fake) Endpoints() map[string]Joined {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.endpoints)
}

// JoinPair records a pair left in the host namespace (NSPath "", Pair
// true) for another runtime to move (driver.PairJoiner).
func (f *Fake) JoinPair(ctx context.Context, n *driver.Network, ep *driver.Endpoint) error {
	if err := f.Join(ctx, n, ep, ""); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.endpoints[ep.ID]
	j.Pair = true
	f.endpoints[ep.ID] = j
	return nil
}

// PairAlive reports whether the endpoint is joined (DropPair deletes it,
// as the kernel does when the runtime's namespace goes).
func (f *Fake) PairAlive(_ context.Context, n *driver.Network, ep *driver.Endpoint) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failing("PairAlive"); err != nil {
		return false, err
	}
	_, ok := f.endpoints[ep.ID]
	return ok, nil
}

// DropPair deletes a handed-over endpoint's pair behind the engine's back.
func (f *Fake) DropPair(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropLocked(id)
}

var _ driver.PairJoiner = (*Fake)(nil)
