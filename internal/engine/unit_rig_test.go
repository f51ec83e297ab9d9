package engine

// The unit-test rig: a real Engine (New, Start, Close, restart) over fake
// drivers (drivertest), fake namespaces (sandboxtest), a recording
// firewall and a bolt store in a temporary directory. Nothing touches the
// kernel's network: the only kernel objects are the sockets of published
// ports, held on 127.0.0.1 with ephemeral ports. The host's routes the
// engine avoids when it chooses a subnet are the rig's (hostRoutes).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/drivertest"
	"github.com/tether-net/tether/internal/firewall"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/portmap"
	"github.com/tether-net/tether/internal/sandbox/sandboxtest"
	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/bolt"
	"github.com/tether-net/tether/internal/testutil"
)

// errInjected is what an armed fault point returns in unit tests.
var errInjected = errors.New("injected fault")

// defaultBIP is the default network's address in the rig: set, so Start
// chooses nothing from the host's routes.
const defaultBIP = "10.199.0.1/24"

// rig is an engine over fakes, restartable over the same store and "kernel".
type rig struct {
	t   *testing.T
	ctx context.Context
	cfg *config.Config
	st  store.Store
	// rt is the runtime store (withRuntimeStore); nil: the records live in st.
	rt  store.Store
	nsx *sandboxtest.Namespaces
	fw  *memFirewall
	drv map[string]*drivertest.Fake // by driver name
	// global: the cluster over its own bolt store (withCluster).
	cl    *cluster.Cluster
	cst   store.Store
	nodes *memNodeFilter
	e     *Engine
	log   *testutil.SyncBuffer
	// hostRoutes are the host's routes and addresses the engine sees
	// when it chooses a subnet (none is read from the kernel).
	hostRoutes []ipam.Blocker
	linker     driver.Linker // withLinker
}

type rigOption func(*rig)

// withCluster gives the rig a cluster (a second bolt store, as a
// distributed store would be) and the overlay fake.
func withCluster() rigOption { return withClusterVia(nil) }

// withClusterVia is withCluster with the cluster store seen through wrap
// (nil: as it is), e.g. a store whose connection a test cuts.
func withClusterVia(wrap func(store.Store) store.Store) rigOption {
	return func(r *rig) {
		r.cst = openBolt(r.t, "cluster.db")
		var cst store.Store = r.cst
		if wrap != nil {
			cst = wrap(cst)
		}
		cl, err := cluster.New(cluster.Options{Store: cst, Logger: r.logger(),
			Self: cluster.Node{ID: "node-a", Name: "host-a", Addr: netip.MustParseAddr("192.0.2.1")}})
		if err != nil {
			r.t.Fatal(err)
		}
		r.cl, r.nodes = cl, &memNodeFilter{}
		r.drv["overlay"] = drivertest.Overlay("overlay")
	}
}

// withRuntimeStore gives the rig a runtime store, as the daemon's under its
// exec-root (a bolt file without fsync).
func withRuntimeStore() rigOption {
	return func(r *rig) { r.rt = openBolt(r.t, "state.db", bolt.WithNoSync()) }
}

// runtime is the store that holds the runtime records.
func (r *rig) runtime() store.Store {
	if r.rt != nil {
		return r.rt
	}
	return r.st
}

// withDriver adds a fake driver.
func withDriver(f *drivertest.Fake) rigOption {
	return func(r *rig) { r.drv[f.Type()] = f }
}

// newRig builds and starts an engine with the fakes of bridge, host and
// null, and a local "ptp" driver with addresses but no default route,
// ports, firewall or DNS (a point-to-point link).
func newRig(t *testing.T, opts ...rigOption) *rig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r := &rig{t: t, ctx: ctx, nsx: &sandboxtest.Namespaces{}, fw: newMemFirewall(), log: &testutil.SyncBuffer{},
		drv:        map[string]*drivertest.Fake{},
		hostRoutes: []ipam.Blocker{{Prefix: netip.MustParsePrefix("198.18.0.0/24"), Source: "route on eth0"}}}
	for _, f := range []*drivertest.Fake{drivertest.Bridge("bridge"), drivertest.Host(), drivertest.Null(),
		drivertest.New("ptp", driver.Capabilities{Scope: driver.ScopeLocal, Addresses: true})} {
		r.drv[f.Type()] = f
	}
	r.cfg = &config.Config{ExecRoot: t.TempDir(), DataRoot: t.TempDir(), BIP: defaultBIP, MTU: 1500,
		ICC: true, IPMasq: true, DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		DefaultAddressPools: []config.AddressPool{{Base: netip.MustParsePrefix("198.18.0.0/15"), Size: 24}}}
	r.st = openBolt(t, "tether.db")
	// Deleting a namespace deletes the endpoints in it, as the kernel does.
	r.nsx.OnDelete = func(path string) {
		for _, f := range r.drv {
			f.TeardownNamespace(path)
		}
	}
	for _, o := range opts {
		o(r)
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("engine log:\n%s", r.log.String())
		}
	})
	r.start()
	return r
}

func openBolt(t *testing.T, name string, opts ...bolt.Option) store.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), name), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func (r *rig) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// start builds an engine over the rig's store and fakes and starts it.
func (r *rig) start() {
	r.t.Helper()
	if err := r.tryStart(); err != nil {
		r.t.Fatal(err)
	}
}

// tryStart is start that returns New's or Start's error (the engine is
// closed then).
func (r *rig) tryStart() error {
	r.t.Helper()
	var ds []driver.Driver
	for _, name := range slices.Sorted(maps.Keys(r.drv)) {
		ds = append(ds, r.drv[name])
	}
	routes := slices.Clone(r.hostRoutes)
	o := Options{Config: r.cfg, Store: r.st, Runtime: r.rt, Logger: r.logger(), Firewall: r.fw, Drivers: ds,
		Namespaces: r.nsx, DefaultDriver: "bridge",
		HostBlockers: func() ([]ipam.Blocker, error) { return routes, nil }, Linker: r.linker}
	if r.cl != nil {
		// As the daemon: the node registers, then the engine starts.
		o.Cluster, o.NodeFilter = r.cl, r.nodes
		if err := r.cl.Start(r.ctx); err != nil {
			r.t.Fatal("cluster:", err)
		}
	}
	e, err := New(o)
	if err != nil {
		if r.cl != nil {
			r.cl.Stop()
		}
		return fmt.Errorf("new: %w", err)
	}
	if err := e.Start(r.ctx); err != nil {
		e.Close()
		return fmt.Errorf("start: %w", err)
	}
	r.e = e
	if r.cl != nil {
		ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
		defer cancel()
		if err := e.WaitGlobalSynced(ctx); err != nil {
			return fmt.Errorf("cluster store never synced: %w", err)
		}
	}
	return nil
}

// stop closes the engine as a daemon that exits does (networks and
// sandboxes stay), and closes the ports it held (the process would have
// died with them).
func (r *rig) stop() {
	if r.e == nil {
		return
	}
	r.e.Close()
	r.e.mu.Lock()
	for _, hs := range r.e.held {
		for _, h := range hs {
			_ = h.Close()
		}
	}
	r.e.mu.Unlock()
	r.e = nil
}

// restart is a daemon restart over the same store, drivers and namespaces.
func (r *rig) restart() {
	r.t.Helper()
	r.stop()
	r.start()
}

// network creates a network (a subnet given, so no host route is read).
func (r *rig) network(name, drv, subnet string, mod ...func(*NetworkSpec)) *Network {
	r.t.Helper()
	spec := NetworkSpec{Name: name, Driver: drv}
	if subnet != "" {
		spec.Subnets = []SubnetSpec{{Subnet: subnet}}
	}
	for _, m := range mod {
		m(&spec)
	}
	n, err := r.e.CreateNetwork(r.ctx, spec)
	if err != nil {
		r.t.Fatalf("create network %q: %v", name, err)
	}
	return n
}

// sandbox creates a sandbox on the given networks.
func (r *rig) sandbox(name string, nets ...string) *Sandbox {
	r.t.Helper()
	spec := SandboxSpec{Name: name}
	for _, n := range nets {
		spec.Networks = append(spec.Networks, AttachSpec{Network: n})
	}
	sb, err := r.e.CreateSandbox(r.ctx, spec)
	if err != nil {
		r.t.Fatalf("create sandbox %q: %v", name, err)
	}
	return sb
}

func (r *rig) getSandbox(ref string) *Sandbox {
	r.t.Helper()
	sb, err := r.e.Sandbox(ref)
	if err != nil {
		r.t.Fatal(err)
	}
	return sb
}

// ns is a network's state (the engine's, not a copy).
func (r *rig) ns(name string) *netState {
	r.t.Helper()
	r.e.mu.Lock()
	defer r.e.mu.Unlock()
	ns := r.e.findByName(name)
	if ns == nil {
		r.t.Fatalf("no network %q", name)
	}
	return ns
}

func (r *rig) pending(name string) int {
	ns := r.ns(name)
	r.e.mu.Lock()
	defer r.e.mu.Unlock()
	return ns.pending
}

// inUse reports whether addr is taken in network name's bitmap, in memory
// and in what a restart would rebuild from the stores: the durable bitmap
// marked from the sandbox records (gcStore), plus the addresses the
// quarantine holds; a test fails when the two disagree.
func (r *rig) inUse(name string, addr string) bool {
	r.t.Helper()
	ns := r.ns(name)
	a := netip.MustParseAddr(addr)
	key := keyIPAM
	if a.Is6() {
		key = keyIPAM6
	}
	kv, err := r.st.Get(r.ctx, key+ns.rec.ID)
	if err != nil {
		r.t.Fatalf("bitmap of %q: %v", name, err)
	}
	var stored ipam.Subnet
	if err := stored.UnmarshalBinary(kv.Value); err != nil {
		r.t.Fatal(err)
	}
	recs, err := r.runtime().List(r.ctx, keySandboxes)
	if err != nil {
		r.t.Fatal(err)
	}
	var owned []netip.Addr
	for _, kv := range recs {
		var sb Sandbox
		if err := json.Unmarshal(kv.Value, &sb); err != nil {
			r.t.Fatal(err)
		}
		for _, ep := range sb.Endpoints {
			if ep.NetworkID == ns.rec.ID {
				owned = append(owned, ep.Address.Addr(), ep.Address6.Addr())
			}
		}
	}
	r.e.quarantine.mu.Lock()
	for _, h := range r.e.quarantine.byAddr {
		if h.netID == ns.rec.ID {
			owned = append(owned, h.addr, h.addr6)
		}
	}
	r.e.quarantine.mu.Unlock()
	owned = slices.DeleteFunc(owned, func(x netip.Addr) bool { return !x.IsValid() || x.Is6() != a.Is6() })
	reconcileSubnet(&stored, owned)
	sub := ns.subnet
	if a.Is6() {
		sub = ns.subnet6
	}
	mem := sub.InUse(a)
	if mem != stored.InUse(a) {
		r.t.Errorf("network %q, %s: in use %v in memory, %v in the stores", name, a, mem, stored.InUse(a))
	}
	return mem
}

// awaitFree waits until addr is free on network name (an address held
// until its link is gone is freed in the background), failing after a
// minute: a deadline for a hang, not a performance threshold.
func (r *rig) awaitFree(name, addr string) {
	r.t.Helper()
	ns := r.ns(name)
	a := netip.MustParseAddr(addr)
	for deadline := time.Now().Add(time.Minute); ns.subnet.InUse(a); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("%s on %q never freed", addr, name)
		}
	}
	if r.inUse(name, addr) {
		r.t.Fatalf("%s on %q free in memory, taken in the store", addr, name)
	}
}

// stored reads a sandbox's record from the store.
func (r *rig) stored(id string) (*Sandbox, bool) {
	r.t.Helper()
	kv, err := r.st.Get(r.ctx, keySandboxes+id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		r.t.Fatal(err)
	}
	var sb Sandbox
	if err := json.Unmarshal(kv.Value, &sb); err != nil {
		r.t.Fatal(err)
	}
	return &sb, true
}

// sticky is a sandbox name's sticky address on a local network ("" when none).
func (r *rig) sticky(netName, sbName string) string {
	r.t.Helper()
	kv, err := r.st.Get(r.ctx, keySticky+r.ns(netName).rec.ID+"/"+sbName)
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return string(kv.Value)
}

// arm makes the fault point fail the operation there (its rollback runs)
// until the test ends.
func arm(t *testing.T, point string) {
	t.Helper()
	if !slices.Contains(FaultPoints, point) {
		t.Fatalf("unknown fault point %q", point)
	}
	oldPoint, oldAction := faultPoint, faultAction
	t.Cleanup(func() { faultPoint, faultAction = oldPoint, oldAction })
	faultPoint, faultAction = point, func(string) error { return errInjected }
}

func disarm() { faultPoint = "" }

func endpointOn(sb *Sandbox, netID string) *Endpoint {
	for _, ep := range sb.Endpoints {
		if ep.NetworkID == netID {
			return ep
		}
	}
	return nil
}

func wantKind(t *testing.T, err error, k Kind, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want kind %d", what, k)
	}
	if KindOf(err) != k {
		t.Fatalf("%s: %v (kind %d), want kind %d", what, err, KindOf(err), k)
	}
}

func localPort(proto string) portmap.Spec {
	return portmap.Spec{Proto: proto, HostIP: netip.MustParseAddr("127.0.0.1"), ContainerPort: 80}
}

// memNodeFilter records the live nodes the engine lets VXLAN in from.
type memNodeFilter struct {
	mu    sync.Mutex
	addrs []netip.Addr
}

func (f *memNodeFilter) SetNodes(_ context.Context, addrs []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = slices.Clone(addrs)
	return nil
}

func (f *memNodeFilter) get() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.addrs)
}

// memFirewall is a firewall in memory: the networks it holds and the
// published ports, with a way to make the next AddPorts fail.
type memFirewall struct {
	mu       sync.Mutex
	nets     map[string]firewall.Network
	ports    map[firewall.PortMapping]bool
	added    []firewall.PortMapping // every mapping ever added
	failNext error
}

var _ firewall.Firewall = (*memFirewall)(nil)

func newMemFirewall() *memFirewall {
	return &memFirewall{nets: map[string]firewall.Network{}, ports: map[firewall.PortMapping]bool{}}
}

func (f *memFirewall) Sync(_ context.Context, nets []firewall.Network, ports []firewall.PortMapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nets, f.ports = map[string]firewall.Network{}, map[firewall.PortMapping]bool{}
	for _, n := range nets {
		f.nets[n.ID] = n
	}
	for _, p := range ports {
		f.ports[p] = true
	}
	return nil
}

func (f *memFirewall) Add(_ context.Context, n firewall.Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nets[n.ID] = n
	return nil
}

func (f *memFirewall) Remove(_ context.Context, n firewall.Network) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nets, n.ID)
	return nil
}

func (f *memFirewall) AddPorts(_ context.Context, ps []firewall.PortMapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return err
	}
	for _, p := range ps {
		f.ports[p] = true
	}
	f.added = append(f.added, ps...)
	return nil
}

func (f *memFirewall) RemovePorts(_ context.Context, ps []firewall.PortMapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range ps {
		delete(f.ports, p)
	}
	return nil
}

func (f *memFirewall) portList() []firewall.PortMapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Collect(maps.Keys(f.ports))
}

func (f *memFirewall) everAdded() []firewall.PortMapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.added)
}

func (f *memFirewall) failPorts(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

func (f *memFirewall) network(netID string) (firewall.Network, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nets[netID]
	return n, ok
}

func (f *memFirewall) has(netID string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.nets[netID]
	return ok
}
