// Package engine is Tether's controller: it owns the records of networks,
// sandboxes and endpoints and their lifecycle, reserves addresses, and
// drives the drivers. Data flows one way: the API calls the engine (as an
// api.Backend); the engine calls drivers, IPAM, the sandbox runtime and the
// store.
//
// Drivers are given (Options.Drivers) and known only through the driver
// package: their Capabilities and optional interfaces decide what the
// engine does with a network, never their names. Every attach, local or
// global, of a sandbox made or adopted, goes through one pipeline
// (connectLocked: check, reserve, join, publish, commit, with one rollback
// and a fault point after each step). With fake drivers and namespaces
// (drivertest, sandboxtest) the engine runs in unit tests without root.
//
// Locking: e.mu guards the in-memory maps and every store write (one store
// transaction per change). Kernel work (veths, bridges, namespaces) runs
// outside e.mu under the affected sandbox's own lock, so attaches of
// different sandboxes proceed in parallel.
package engine

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/dns"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/firewall"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/portmap"
	"github.com/tether-net/tether/internal/proc"
	"github.com/tether-net/tether/internal/sandbox"
	"github.com/tether-net/tether/internal/store"
)

// Options configures an Engine.
type Options struct {
	Config *config.Config
	Store  store.Store
	// Runtime holds the records of what dies with the machine: sandboxes,
	// their sticky addresses, point-to-point links (isRuntimeKey). The
	// daemon keeps it under the exec-root without fsync (docs/store.md);
	// nil keeps them in Store.
	Runtime store.Store
	Logger  *slog.Logger
	// HostBlockers lists what occupies address space on the host (routes,
	// addresses), for the choice of subnets; nil reads the current
	// namespace (ipam.HostBlockers).
	HostBlockers func() ([]ipam.Blocker, error)
	// Firewall keeps the NAT and isolation rules of bridge networks; nil
	// installs none (firewall.Noop, daemon option iptables=false).
	Firewall firewall.Firewall
	// Cluster enables global (overlay) networks; nil without cluster-store.
	Cluster *cluster.Cluster
	// NodeFilter, with Cluster, is told the underlay addresses of the live
	// cluster nodes (firewall.VXLANGuard: VXLAN from any other source is
	// dropped); nil filters nothing (iptables=false).
	NodeFilter NodeFilter
	// Drivers are the network drivers, by their Type (the daemon's
	// registry). The engine knows them only through the driver package's
	// interfaces and Capabilities. A driver of global scope needs Cluster.
	Drivers []driver.Driver
	// Namespaces makes and finds sandboxes' network namespaces; nil is the
	// running kernel (sandbox.Kernel). Unit tests pass a fake.
	Namespaces sandbox.Namespaces
	// DefaultDriver is the driver of networks created without one, of the
	// default network and of the gateway network of global ones ("bridge").
	DefaultDriver string
	// IPv6Forwarding, when set, is called before the first network with
	// IPv6 is built (created or restored): the daemon turns IPv6
	// forwarding on (ip-forward). nil does nothing (unit tests).
	IPv6Forwarding func() error
	// Linker builds point-to-point links between sandboxes (tether link);
	// nil: links are refused.
	Linker driver.Linker
}

// Engine is the controller. Create it with New, then call Start.
type Engine struct {
	cfg          *config.Config
	st           store.Store
	rt           store.Store // runtime records (Options.Runtime); st when there is none
	log          *slog.Logger
	hostBlockers func() ([]ipam.Blocker, error)
	ipv6Forward  func() error
	linker       driver.Linker
	links        map[string]*Link // point-to-point links by ID (links.go), guarded by mu
	ipv6Fwd      sync.Once
	ipv6FwdErr   error
	nsDir        string // private mount holding namespace files
	sbDir        string // per-sandbox files (hosts, resolv.conf, hostname)

	nsx           sandbox.Namespaces
	drivers       map[string]driver.Driver
	needCluster   []string // drivers of global scope, left out for want of a cluster store
	defaultDriver string
	fw            firewall.Firewall

	mu        sync.Mutex
	networks  map[string]*netState
	sandboxes map[string]*sbState
	// byName indexes sandboxes by name (names.go: addSandboxLocked,
	// dropSandboxLocked), so neither a create's name check nor a lookup by
	// name walks every sandbox.
	byName map[string][]*sbState
	events *Events
	// fwSynced: Start's firewall Sync ran; from then on every network
	// change is passed on to the firewall (before it, Sync covers them).
	fwSynced bool
	// held: the host ports each endpoint publishes, held open by the daemon.
	held map[string][]*portmap.Held

	names    *dns.Table    // every name served, updated on connect/disconnect/remove
	resolver *dns.Resolver // 127.0.0.11 inside each sandbox on a user-defined network
	// upstreams: ServeUpstream's listeners (Docker's resolver asks them).
	upstreams []io.Closer

	global *globalState // nil without a cluster store

	quarantine *quarantine // addresses of removed endpoints whose veth may live on
	warnings   []string    // standing warnings found at Start (guarded by mu)
}

type netState struct {
	rec    *Network
	subnet *ipam.Subnet // nil for drivers without addresses and IPv6-only networks
	// subnet6 allocates the IPv6 addresses of a dual-stack or IPv6-only
	// local network; nil otherwise.
	subnet6 *ipam.Subnet
	rev     int64 // store revision of the IPAM record
	// pending counts endpoints being attached right now, so a delete racing
	// an attach sees the network as busy.
	pending int
}

type sbState struct {
	op    sync.Mutex // serialises kernel work on this sandbox
	rec   *Sandbox
	procs map[int]*proc.Process
	gone  bool // removed while someone waited for op
	// joining: interface names of attaches reserved and not yet recorded
	// (an overlay's and its gateway leg's run at once). Under e.mu.
	joining map[string]bool
	// warnings: why the sandbox is degraded, by topic.
	wmu      sync.Mutex
	warnings map[string]string
}

// New builds an engine; nothing touches the kernel until Start.
func New(o Options) (*Engine, error) {
	if o.Config == nil || o.Store == nil {
		return nil, fmt.Errorf("engine: config and store are required")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	hostBlockers := o.HostBlockers
	if hostBlockers == nil {
		hostBlockers = func() ([]ipam.Blocker, error) { return ipam.HostBlockers(nil) }
	}
	fw := o.Firewall
	if fw == nil {
		fw = firewall.Noop{}
	}
	e := &Engine{
		cfg:          o.Config,
		st:           o.Store,
		rt:           cmp.Or[store.Store](o.Runtime, o.Store),
		log:          log,
		hostBlockers: hostBlockers,
		ipv6Forward:  o.IPv6Forwarding,
		linker:       o.Linker,
		links:        map[string]*Link{},
		fw:           fw,
		nsDir:        filepath.Join(o.Config.ExecRoot, "ns"),
		sbDir:        filepath.Join(o.Config.ExecRoot, "sandboxes"),
		networks:     map[string]*netState{},
		held:         map[string][]*portmap.Held{},
		sandboxes:    map[string]*sbState{},
		byName:       map[string][]*sbState{},
		events:       newEvents(),
		quarantine:   newQuarantine(),
	}
	e.names = dns.NewTable()
	e.resolver = dns.NewResolver(e.names, dns.Config{Upstreams: upstreams(o.Config), Logger: log})
	e.drivers = map[string]driver.Driver{}
	for _, d := range o.Drivers {
		if _, dup := e.drivers[d.Type()]; dup {
			return nil, fmt.Errorf("engine: driver %q registered twice", d.Type())
		}
		if d.Capabilities().Scope == driver.ScopeGlobal && o.Cluster == nil {
			e.needCluster = append(e.needCluster, d.Type()) // global networks need a cluster store
			continue
		}
		e.drivers[d.Type()] = d
	}
	e.defaultDriver = o.DefaultDriver
	e.nsx = o.Namespaces
	if e.nsx == nil {
		e.nsx = sandbox.Kernel{}
	}
	if e.drivers[e.defaultDriver] == nil {
		return nil, fmt.Errorf("engine: default driver %q is not registered", e.defaultDriver)
	}
	if o.Cluster != nil {
		e.global = &globalState{cl: o.Cluster, nodes: o.NodeFilter, attaching: map[string]bool{}, withdraw: map[string]cluster.EndpointRecord{}}
	}
	return e, nil
}

// caps are the capabilities of a network's driver (none for a driver
// not registered: a network recorded by an older daemon or a cluster peer
// with more drivers takes part in nothing).
func (e *Engine) caps(n *Network) driver.Capabilities {
	if d := e.drivers[n.Driver]; d != nil {
		return d.Capabilities()
	}
	return driver.Capabilities{}
}

// knownGlobal: drv is a driver of global networks this daemon has but
// cannot use without a cluster store.
func (e *Engine) knownGlobal(drv string) bool { return slices.Contains(e.needCluster, drv) }

// driverOf returns a network's driver, or an error naming it when this
// daemon does not have it.
func (e *Engine) driverOf(n *Network) (driver.Driver, error) {
	if d := e.drivers[n.Driver]; d != nil {
		return d, nil
	}
	return nil, forbiddenf("network %q: driver %q is not available on this daemon", n.Name, n.Driver)
}

// Config returns the daemon configuration the engine runs with (read only).
func (e *Engine) Config() *config.Config { return e.cfg }

// Events returns the engine's event hub.
func (e *Engine) Events() *Events { return e.events }

// Start prepares the runtime directories, restores state from the store,
// makes sure the predefined networks exist and brings the firewall in line
// with the networks.
func (e *Engine) Start(ctx context.Context) error {
	if err := os.MkdirAll(e.sbDir, 0o700); err != nil {
		return fmt.Errorf("create %q: %w", e.sbDir, err)
	}
	if err := e.nsx.PrepareDir(e.nsDir); err != nil {
		return fmt.Errorf("prepare namespace directory %q: %w", e.nsDir, err)
	}
	if err := e.bindHostNS(); err != nil {
		return err
	}
	e.checkMountNS()
	if err := e.restore(ctx); err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	if err := e.ensurePredefined(ctx); err != nil {
		return err
	}
	if err := e.syncFirewall(ctx); err != nil {
		return err
	}
	e.rehold()
	e.startNames()
	e.startGlobal()
	if gone := e.ReapHandedOver(ctx); len(gone) > 0 {
		e.log.Info("removed handed-over sandboxes whose runtime's namespaces are gone", "sandboxes", len(gone))
	}
	return nil
}

// Close stops following the cluster store and the embedded resolver.
// Networks and sandboxes stay (live restore).
func (e *Engine) Close() {
	e.stopQuarantine()
	e.stopGlobal()
	e.mu.Lock()
	ups := e.upstreams
	e.upstreams = nil
	e.mu.Unlock()
	for _, c := range ups {
		_ = c.Close()
	}
	e.resolver.Close()
}

// ensureIPv6Forwarding turns IPv6 forwarding on once, before the first
// network with IPv6 is built (Options.IPv6Forwarding).
func (e *Engine) ensureIPv6Forwarding(n *Network) error {
	if !n.Subnet6.IsValid() || e.ipv6Forward == nil {
		return nil
	}
	e.ipv6Fwd.Do(func() { e.ipv6FwdErr = e.ipv6Forward() })
	return e.ipv6FwdErr
}

// ulaSeed is the stable host identity the ULA /48 of IPv6 networks is
// derived from (ipam.ULAPool): the machine ID and the data root, so two
// daemons on one machine (two data roots) choose different /48s and a
// restart chooses the same one.
func (e *Engine) ulaSeed() []byte {
	id, _ := os.ReadFile("/etc/machine-id")
	return append(append(bytes.TrimSpace(id), 0), e.cfg.DataRoot...)
}

// upstreams are the servers the embedded resolver forwards to: "dns" from
// the configuration, else the host's (at most 3).
func upstreams(c *config.Config) []netip.AddrPort {
	if len(c.DNS) == 0 {
		return dns.HostUpstreams("/etc/resolv.conf")
	}
	var out []netip.AddrPort
	for _, a := range c.DNS {
		out = append(out, netip.AddrPortFrom(a, 53))
	}
	return out
}

// syncFirewall makes the firewall hold exactly the bridge networks on
// record (stale entries of networks removed while the daemon was down go).
func (e *Engine) syncFirewall(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var nets []firewall.Network
	for _, ns := range e.networks {
		if e.caps(ns.rec).Firewall {
			nets = append(nets, e.fwNetwork(ns.rec))
		}
	}
	if err := e.fw.Sync(ctx, nets, e.allMappingsLocked()); err != nil {
		return fmt.Errorf("firewall: %w (iptables=false runs without firewall rules)", err)
	}
	e.fwSynced = true
	return nil
}

// fwNetwork is what the firewall knows of a network: masquerade needs the
// network's option and the daemon's ip-masq, and never applies to an
// internal network or one in gateway mode routed. The gateway mode and
// trusted interfaces come from the network's options (networks.go).
func (e *Engine) fwNetwork(n *Network) firewall.Network {
	mode := gatewayMode(n)
	sub6 := n.Subnet6
	if e.isGlobal(n) {
		sub6 = netip.Prefix{} // an overlay's bridges hold no IPv6 gateway: nothing to masquerade
	}
	return firewall.Network{ID: n.ID, Bridge: n.BridgeName, Subnet: n.Subnet, Subnet6: sub6, Internal: n.Internal,
		Mode: mode, Trusted: trustedInterfaces(n),
		Masquerade: n.Masquerade && e.cfg.IPMasq && !n.Internal && mode != firewall.ModeRouted}
}

// fwAdd installs a network's firewall entries (drivers with the Firewall
// capability). Called with e.mu held.
func (e *Engine) fwAdd(ctx context.Context, n *Network) error {
	if !e.caps(n).Firewall || !e.fwSynced {
		return nil
	}
	return e.fw.Add(ctx, e.fwNetwork(n))
}

// fwRemove deletes a network's firewall entries. Called with e.mu held.
func (e *Engine) fwRemove(ctx context.Context, n *Network) error {
	if !e.caps(n).Firewall || !e.fwSynced {
		return nil
	}
	return e.fw.Remove(ctx, e.fwNetwork(n))
}

// checkMountNS warns when the daemon runs in a mount namespace of its own
// (ip netns exec, systemd PrivateMounts=/PrivateTmp=/ProtectSystem=, a
// container): the namespace files under exec-root are mounts in it and die
// with it, so a sandbox survives a restart only through a process in it.
func (e *Engine) checkMountNS() {
	own, err := netns.IDOf("/proc/self/ns/mnt")
	if err != nil {
		return
	}
	if initial, known := netns.IsInitial("mnt", own); initial || !known {
		return
	}
	msg := "the daemon runs in a mount namespace of its own (ip netns exec, systemd PrivateMounts=, PrivateTmp= or ProtectSystem=, a container): " +
		"its namespace files go with it, so across a restart a sandbox is kept only while a process runs in it; run the daemon in the host's mount namespace to keep sandboxes without processes"
	e.log.Warn(msg, "exec-root", e.cfg.ExecRoot)
	e.mu.Lock()
	e.warnings = append(e.warnings, msg)
	e.mu.Unlock()
}

// Warnings are the daemon's standing warnings (Docker's info Warnings),
// with a line for degraded sandboxes.
func (e *Engine) Warnings() []string {
	e.mu.Lock()
	out := append([]string{}, e.warnings...)
	sbs := make([]*sbState, 0, len(e.sandboxes))
	for _, sb := range e.sandboxes {
		sbs = append(sbs, sb)
	}
	e.mu.Unlock()
	degraded := 0
	for _, sb := range sbs {
		if len(sb.warningList()) > 0 {
			degraded++
		}
	}
	if degraded > 0 {
		out = append(out, fmt.Sprintf("%d sandbox(es) degraded: see tether sandbox ls and sandbox inspect", degraded))
	}
	return out
}

// hostNSPath is the namespace file of the host network: the daemon's own
// network namespace, bound under nsDir so sandboxes on "host" can enter it.
func (e *Engine) hostNSPath() string { return filepath.Join(e.nsDir, "host.net") }

func (e *Engine) bindHostNS() error {
	p := e.hostNSPath()
	_ = e.nsx.Delete(p) // a stale bind from an earlier run
	if err := e.nsx.BindProc(os.Getpid(), p); err != nil {
		return fmt.Errorf("bind host namespace to %q: %w", p, err)
	}
	return nil
}

func (e *Engine) putJSON(key string, v any) store.Op {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal %s: %v", key, err)) // records are plain data
	}
	return store.Put(key, b)
}

// commit writes ops: those on runtime keys to the runtime store, the others
// to the durable store, each set in one transaction (the durable one first).
func (e *Engine) commit(ctx context.Context, ops ...store.Op) error {
	durable, runtime := ops, []store.Op(nil)
	if e.rt != e.st {
		durable = nil
		for _, op := range ops {
			if isRuntimeKey(op.Key) {
				runtime = append(runtime, op)
			} else {
				durable = append(durable, op)
			}
		}
	}
	for _, x := range []struct {
		st  store.Store
		ops []store.Op
	}{{e.st, durable}, {e.rt, runtime}} {
		if len(x.ops) == 0 {
			continue
		}
		if _, err := x.st.Txn(ctx, nil, x.ops); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	return nil
}
