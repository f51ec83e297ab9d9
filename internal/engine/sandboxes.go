package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/portmap"
	"github.com/tether-net/tether/internal/proc"
	"github.com/tether-net/tether/internal/store"
)

// AttachSpec asks for one network attachment.
type AttachSpec struct {
	Network string         // name or ID
	IP      string         // static IPv4 address; empty = allocate (sticky first)
	IP6     string         // static IPv6 address (--ip6); empty = allocate (sticky first) on an IPv6 network
	Aliases []string       // network-scoped names
	Ports   []portmap.Spec // published ports (parsed once, by the front: -p or PortBindings)
	MAC     string         // the interface's MAC; empty = derived from the address (02:42:a.b.c.d)
	// IfName names the interface in the sandbox (CNI_IFNAME); empty = the
	// next free eth<N>.
	IfName string
	// PortsUnheld publishes Ports in the kernel only: the daemon does not
	// bind the host ports (their owner is the runtime, e.g. Podman, which
	// binds them itself) and no proxy serves loopback. Each needs a host
	// port.
	PortsUnheld bool
	// NoDefaultRoute: the interface never carries the namespace's default
	// route (another attachment in the same namespace has it: CNI's second
	// network of a container).
	NoDefaultRoute bool
}

// SandboxSpec asks for a sandbox: a new one, or one adopted from another
// runtime by PID or namespace path.
type SandboxSpec struct {
	Name       string
	Hostname   string
	Networks   []AttachSpec // in order: eth0, eth1, ...; empty means the default network
	PID        int          // adopt the network namespace of this process
	NetNSPath  string       // adopt this network namespace file
	AutoRemove bool         // remove when the main process exits
	// Handover: make each endpoint a veth pair left in the host namespace
	// for another runtime to move into a namespace Tether never opens
	// (Sandbox.Handover). Needs a network whose driver is a
	// driver.PairJoiner; excludes PID and NetNSPath.
	Handover bool
	// ServeDNS serves Tether's resolver (127.0.0.11) in an adopted
	// namespace (CNI), which otherwise keeps its runtime's resolvers.
	ServeDNS bool
	Labels   map[string]string
	// Ports are published on the first network (the default network when
	// Networks is empty), Docker's HostConfig.PortBindings.
	Ports []portmap.Spec
}

// CreateSandbox makes (or adopts) a sandbox and attaches its networks. On any
// failure everything it did is undone.
func (e *Engine) CreateSandbox(ctx context.Context, spec SandboxSpec) (_ *Sandbox, err error) {
	defer e.countOp(opSandboxCreate, &err) // metrics.go
	rec, nets, err := e.planSandbox(spec)
	if err != nil {
		return nil, err
	}
	sb := &sbState{rec: rec, procs: map[int]*proc.Process{}}
	sb.op.Lock()
	defer sb.op.Unlock()
	e.mu.Lock()
	for _, other := range slices.Clone(e.byName[rec.Name]) { // reaping one drops it from the index
		if !e.reapIfDeadLocked(ctx, other) {
			e.mu.Unlock()
			return nil, conflictf("sandbox name %q is already in use by sandbox %.12s", rec.Name, other.rec.ID)
		}
	}
	e.addSandboxLocked(sb)
	e.mu.Unlock()
	e.publishSandboxCreated(sb)
	defer func() {
		if err != nil {
			if rerr := e.removeLocked(context.WithoutCancel(ctx), sb); rerr != nil {
				e.log.Warn("roll back sandbox", "sandbox", rec.Name, "err", rerr)
			}
		}
	}()
	if err := e.buildNamespaces(ctx, rec); err != nil {
		return nil, err
	}
	if err := e.fault("sandbox.create.after-netns"); err != nil {
		return nil, err
	}
	for _, a := range nets {
		if err := e.timedConnect(ctx, sb, a.ns, a.spec); err != nil {
			return nil, err
		}
	}
	if len(nets) == 0 {
		if err := e.saveSandbox(ctx, sb); err != nil {
			return nil, err
		}
	}
	return e.copySandbox(sb), nil
}

type plannedAttach struct {
	ns   *netState
	spec AttachSpec
}

// planSandbox validates a spec into a record and the networks to attach.
func (e *Engine) planSandbox(spec SandboxSpec) (*Sandbox, []plannedAttach, error) {
	id := newID()
	rec := &Sandbox{ID: id, Name: spec.Name, Hostname: spec.Hostname, Created: time.Now().UTC(), AutoRemove: spec.AutoRemove,
		Handover: spec.Handover, ServeDNS: spec.ServeDNS, Labels: maps.Clone(spec.Labels)}
	if rec.Name == "" {
		rec.Name = "sb-" + id[:10]
	}
	if err := validName("sandbox name", rec.Name); err != nil {
		return nil, nil, err
	}
	if rec.Hostname == "" {
		rec.Hostname = id[:12]
	}
	if err := validName("hostname", rec.Hostname); err != nil {
		return nil, nil, err
	}
	if err := e.planAdoption(rec, spec); err != nil {
		return nil, nil, err
	}
	if rec.Handover && (rec.Adopted || spec.AutoRemove) {
		return nil, nil, invalidf("invalid handover: a handed-over sandbox has no namespace of Tether's to adopt or process to wait for")
	}
	if rec.ServeDNS && !rec.Adopted {
		return nil, nil, invalidf("invalid ServeDNS: only an adopted namespace needs it (Tether's own sandboxes get the resolver with their first process)")
	}
	if rec.Handover && len(spec.Networks) == 0 {
		return nil, nil, invalidf("invalid networks: a handed-over sandbox needs a network")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(spec.Networks) == 0 && (!rec.Adopted || len(spec.Ports) > 0) {
		if e.findByName(DefaultNetworkName) != nil || len(spec.Ports) > 0 {
			spec.Networks = []AttachSpec{{Network: DefaultNetworkName}}
		}
	}
	if len(spec.Ports) > 0 {
		spec.Networks = slices.Clone(spec.Networks)
		spec.Networks[0].Ports = append(slices.Clone(spec.Networks[0].Ports), spec.Ports...)
	}
	var out []plannedAttach
	seen := map[string]bool{}
	for _, a := range spec.Networks {
		ns, err := e.lookupNetwork(a.Network)
		if err != nil {
			return nil, nil, err
		}
		if seen[ns.rec.ID] {
			return nil, nil, invalidf("invalid networks: %q is given twice", ns.rec.Name)
		}
		seen[ns.rec.ID] = true
		if mode := e.caps(ns.rec).Namespace; mode != driver.NamespaceOwn {
			if len(spec.Networks) > 1 {
				return nil, nil, invalidf("invalid networks: the %q network cannot be combined with others", ns.rec.Name)
			}
			if rec.Adopted {
				return nil, nil, invalidf("invalid networks: an adopted sandbox has its own namespace and cannot join %q", ns.rec.Name)
			}
			rec.HostNet = mode == driver.NamespaceHost
		}
		out = append(out, plannedAttach{ns: ns, spec: a})
	}
	return rec, out, nil
}

func (e *Engine) planAdoption(rec *Sandbox, spec SandboxSpec) error {
	switch {
	case spec.PID != 0 && spec.NetNSPath != "":
		return invalidf("invalid adoption: give pid or netns, not both")
	case spec.PID < 0:
		return invalidf("invalid pid %d", spec.PID)
	case spec.PID > 0:
		rec.NetNS = e.nsx.ProcPath(spec.PID)
		if _, err := e.nsx.IDOf(rec.NetNS); err != nil {
			return invalidf("invalid pid %d: no such process", spec.PID)
		}
		rec.AdoptedPID = spec.PID
	case spec.NetNSPath != "":
		if !filepath.IsAbs(spec.NetNSPath) {
			return invalidf("invalid netns %q: not an absolute path", spec.NetNSPath)
		}
		if !e.nsx.IsNSFile(spec.NetNSPath) {
			return invalidf("invalid netns %q: not a network namespace file", spec.NetNSPath)
		}
		rec.NetNS = spec.NetNSPath
	default:
		return nil
	}
	id, err := e.nsx.IDOf(rec.NetNS)
	if err != nil {
		return invalidf("invalid netns %q: %v", rec.NetNS, err)
	}
	if err := e.refuseHostNS(id); err != nil {
		if spec.PID > 0 {
			return invalidf("invalid pid %d: %v", spec.PID, err)
		}
		return invalidf("invalid netns %q: %v", spec.NetNSPath, err)
	}
	rec.Adopted, rec.NSDev, rec.NSInode = true, id.Dev, id.Ino
	return nil
}

// refuseHostNS refuses to adopt the daemon's own network namespace or the
// initial one (that of PID 1, or the kernel's fixed initial inode where
// /proc/1 cannot be read): Tether would add interfaces there and replace its
// default route. Identity is compared by device and inode, so any path
// to the namespace (a /proc link, `ip netns` file, a bind mount) is caught.
func (e *Engine) refuseHostNS(id netns.ID) error {
	if own, err := e.nsx.IDOf(e.nsx.ProcPath(os.Getpid())); err == nil && own == id {
		return errors.New("it is the daemon's own network namespace (the host network); use --network host instead")
	}
	if initial, _ := netns.IsInitial("net", id); initial {
		return errors.New("it is the initial network namespace (that of PID 1), which Tether never adopts")
	}
	return nil
}

// buildNamespaces creates a new sandbox's network namespace and records its
// identity (nothing for adopted ones: they keep what their runtime gave
// them). IPv6 is off by default on interfaces created in it (Tether's
// networks are IPv4 only; the chatter of link-local IPv6 is flooded to every
// bridge port), and router advertisements are not accepted by default
// (docs/security.md). Mount and UTS namespaces come with the first process
// (execNamespaces): a sandbox that only gets attached never pays for them.
func (e *Engine) buildNamespaces(ctx context.Context, rec *Sandbox) error {
	if rec.Adopted || rec.Handover {
		return nil
	}
	if rec.HostNet {
		rec.NetNS = e.hostNSPath()
		return nil
	}
	rec.NetNS = filepath.Join(e.nsDir, rec.ID+".net")
	id, err := e.nsx.Create(rec.NetNS)
	if err != nil {
		return fmt.Errorf("create network namespace of %q: %w", rec.Name, err)
	}
	rec.NSDev, rec.NSInode = id.Dev, id.Ino
	return nil
}

// refreshFiles rewrites the sandbox's files after its endpoints changed
// (only sandboxes that have had a process have them).
func (e *Engine) refreshFiles(sb *sbState) {
	if !sb.rec.Files {
		return
	}
	if err := e.writeFiles(sb.rec); err != nil {
		e.log.Warn("update sandbox files", "sandbox", sb.rec.Name, "err", err)
	}
}

// Connect attaches a sandbox to a network.
func (e *Engine) Connect(ctx context.Context, netRef, sbRef string, a AttachSpec) (err error) {
	defer e.countOp(opConnect, &err) // metrics.go
	sb, ns, err := e.lockPair(ctx, netRef, sbRef)
	if err != nil {
		return err
	}
	defer sb.op.Unlock()
	return e.timedConnect(ctx, sb, ns, a)
}

// lockPair resolves a network and a sandbox and returns the sandbox with its
// operation lock held.
func (e *Engine) lockPair(ctx context.Context, netRef, sbRef string) (*sbState, *netState, error) {
	sb, err := e.lockSandbox(ctx, sbRef)
	if err != nil {
		return nil, nil, err
	}
	e.mu.Lock()
	ns, err := e.lookupNetwork(netRef)
	e.mu.Unlock()
	if err != nil {
		sb.op.Unlock()
		return nil, nil, err
	}
	return sb, ns, nil
}

// lockEndpoint is lockPair for a sandbox that must be connected to the
// network: it returns the endpoint too (NotFound, and no lock held, when
// it is not connected).
func (e *Engine) lockEndpoint(ctx context.Context, netRef, sbRef string) (*sbState, *netState, *Endpoint, error) {
	sb, ns, err := e.lockPair(ctx, netRef, sbRef)
	if err != nil {
		return nil, nil, nil, err
	}
	ep := sb.rec.endpointOn(ns.rec.ID)
	if ep == nil {
		sb.op.Unlock()
		return nil, nil, nil, notFoundf("sandbox %q is not connected to network %q", sb.rec.Name, ns.rec.Name)
	}
	return sb, ns, ep, nil
}

// lockSandbox resolves a sandbox and takes its operation lock. A sandbox
// whose namespace was deleted behind Tether's back is removed here (its
// records, addresses and leftovers), and the error wraps errNamespaceGone.
func (e *Engine) lockSandbox(ctx context.Context, ref string) (*sbState, error) {
	e.mu.Lock()
	sb, err := e.lookupSandbox(ref)
	e.mu.Unlock()
	if err != nil {
		return nil, err
	}
	sb.op.Lock()
	if sb.gone {
		sb.op.Unlock()
		return nil, notFoundf("sandbox %s not found", ref)
	}
	if !e.netnsAlive(sb) {
		e.log.Info("sandbox namespace was deleted outside Tether; removing its records", "sandbox", sb.rec.Name)
		if err := e.removeLocked(ctx, sb); err != nil {
			e.log.Warn("remove dead sandbox", "sandbox", sb.rec.Name, "err", err)
		}
		sb.op.Unlock()
		return nil, &Error{Kind: KindNotFound, Err: fmt.Errorf("sandbox %q not found: %w; its records were removed", sb.rec.Name, errNamespaceGone)}
	}
	return sb, nil
}

// errNamespaceGone: a sandbox's network namespace was deleted outside Tether.
var errNamespaceGone = errors.New("its network namespace was deleted outside Tether")

// reapIfDeadLocked removes sb when its namespace is gone and reports whether
// it did. A sandbox busy with another operation is left alone (false).
// Called with e.mu held.
func (e *Engine) reapIfDeadLocked(ctx context.Context, sb *sbState) bool {
	if !sb.op.TryLock() {
		return false
	}
	defer sb.op.Unlock()
	if e.netnsAlive(sb) {
		return false
	}
	e.log.Info("sandbox namespace was deleted outside Tether; removing its records", "sandbox", sb.rec.Name)
	eps := e.endpointsLocked(sb.rec)
	errs := e.teardown(ctx, sb, eps)
	if slices.ContainsFunc(errs, isFault) {
		e.log.Warn("remove dead sandbox", "sandbox", sb.rec.Name, "err", errors.Join(errs...))
		return true
	}
	if err := e.forgetLocked(ctx, sb, eps); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		e.log.Warn("remove dead sandbox", "sandbox", sb.rec.Name, "err", err)
	}
	return true
}

// reapDeadUsersLocked removes the sandboxes attached to a network whose
// namespace is gone, so they do not keep it "in use". Called with e.mu held.
func (e *Engine) reapDeadUsersLocked(ctx context.Context, netID string) {
	for _, sb := range e.sandboxes {
		if sb.rec.endpointOn(netID) != nil {
			e.reapIfDeadLocked(ctx, sb)
		}
	}
}

func (e *Engine) lookupSandbox(ref string) (*sbState, error) {
	if sb, ok := e.sandboxes[ref]; ok { // an ID first, then a name, as resolve orders them
		return sb, nil
	}
	if l := e.byName[ref]; len(l) > 0 {
		return l[0], nil
	}
	return resolve("sandbox", ref, e.sandboxes,
		func(s *sbState) string { return s.rec.ID }, func(s *sbState) string { return s.rec.Name })
}

// connectLocked is the one attach pipeline: for every driver and scope,
// for sandboxes Tether made and for namespaces it adopted. Called with sb.op
// held. Steps, each followed by a fault point:
//  1. check: the attach is allowed, its ports, aliases and static address;
//  2. reserve: an interface name and an address, under e.mu (a local
//     network's bitmap; a global network's address from this node's
//     blocks);
//  3. join: the driver's kernel work, outside e.mu;
//  4. publish: the ports (held, firewall maps, proxy); a global attach is
//     refused here when the cluster store is known to be down
//     (checkStoreUp);
//  5. commit: the sandbox record, the bitmap and the sticky address in one
//     local store transaction; a global endpoint's record then goes to
//     the cluster store in the background (publishGlobal);
//  6. names, files, the event.
//
// A failure in steps 1-5 undoes what was done, in reverse (unreserve).
func (e *Engine) connectLocked(ctx context.Context, sb *sbState, ns *netState, a AttachSpec) (err error) {
	drv, err := e.driverOf(ns.rec)
	if err != nil {
		return err
	}
	caps := drv.Capabilities()
	if caps.Scope == driver.ScopeGlobal && e.global == nil {
		return forbiddenf("network %q is global and this daemon has no cluster store", ns.rec.Name)
	}
	ports, err := e.portSpecs(ns, a.Ports)
	if err != nil {
		return err
	}
	static, err := checkAttachSpec(a)
	if err != nil {
		return err
	}
	if err := checkStatic(ns, static); err != nil {
		return err
	}
	pj, _ := drv.(driver.PairJoiner)
	if sb.rec.Handover && (pj == nil || caps.Namespace != driver.NamespaceOwn) {
		return forbiddenf("network %q cannot be handed over to another runtime: its driver %q makes no veth pairs", ns.rec.Name, ns.rec.Driver)
	}
	if sb.rec.Handover && ns.rec.IPv6 {
		// dockerd configures only the addresses its IPAM driver gave; an
		// IPv6 address Tether took here would be named in DNS and held by
		// nobody.
		return forbiddenf("network %q has IPv6, which Tether does not hand over to another runtime yet (docs/ipv6.md)", ns.rec.Name)
	}
	at, err := e.reserve(ctx, sb, ns, drv, a, static)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && !at.committed { // once recorded, the attach stands (a later failure is reported, not undone)
			e.undoEarly(context.WithoutCancel(ctx), sb, at)
			e.unreserve(context.WithoutCancel(ctx), sb, ns, at)
		}
		e.doneAttaching(at)
	}()
	if err := e.fault("attach.after-reserve"); err != nil {
		return err
	}
	e.startEarly(ctx, sb, ns, at, len(ports) > 0)
	if sb.rec.Handover {
		err = pj.JoinPair(ctx, at.dn, at.dep)
	} else {
		err = drv.Join(ctx, at.dn, at.dep, sb.rec.NetNS)
	}
	if err != nil {
		return fmt.Errorf("attach sandbox %q to network %q: %w", sb.rec.Name, ns.rec.Name, err)
	}
	at.joined = true
	at.ep.HostIfName = at.dep.HostIfName
	at.early.wait() // the record written beside the join is in the store from here on
	if err := e.fault("attach.after-join"); err != nil {
		return err
	}
	if err := e.publish(ctx, sb, at.ep, ports, !a.PortsUnheld); err != nil {
		return err
	}
	if err := e.fault("attach.after-publish"); err != nil {
		return err
	}
	if err := e.checkStoreUp(sb, ns, at); err != nil {
		return err
	}
	if err := e.commitEndpoint(ctx, sb, ns, at.ep, at.early); err != nil {
		return err
	}
	at.committed = true
	e.publishGlobal(sb, ns, at)
	if err := e.fault("attach.after-commit"); err != nil {
		return err
	}
	e.refreshNames(sb)
	e.refreshFiles(sb)
	e.publishConnect(sb, ns, at.ep)
	return nil
}

// statics are an attach's static addresses (--ip, --ip6); zero: allocate.
type statics struct{ v4, v6 netip.Addr }

// checkAttachSpec checks what an attach asks for on its own: aliases and
// the static addresses.
func checkAttachSpec(a AttachSpec) (statics, error) {
	var st statics
	for _, al := range a.Aliases {
		if err := validName("alias", al); err != nil {
			return st, err
		}
	}
	if _, err := parseMAC(a.MAC); err != nil {
		return st, err
	}
	if a.IfName != "" && !ifNameRE.MatchString(a.IfName) {
		return st, invalidf("invalid interface name %q: 1-15 letters, digits, '_', '.' or '-'", a.IfName)
	}
	if a.IP != "" {
		v, err := netip.ParseAddr(a.IP)
		if err != nil || !v.Is4() {
			return st, invalidf("invalid ip %q: not an IPv4 address", a.IP)
		}
		st.v4 = v
	}
	if a.IP6 != "" {
		v, err := netip.ParseAddr(a.IP6)
		if err != nil || !v.Is6() || v.Is4In6() || v.Zone() != "" {
			return st, invalidf("invalid ip6 %q: not an IPv6 address", a.IP6)
		}
		st.v6 = v
	}
	return st, nil
}

// checkStatic refuses a static address of a family the network does not
// have. Overlay networks derive an endpoint's IPv6 address from its
// IPv4 one (docs/ipv6.md), so --ip6 is refused there.
func checkStatic(ns *netState, st statics) error {
	switch {
	case st.v4.IsValid() && ns.rec.NoIPv4:
		return invalidf("invalid ip %s: network %q is IPv6-only", st.v4, ns.rec.Name)
	case st.v6.IsValid() && !ns.rec.IPv6:
		return invalidf("invalid ip6 %s: network %q has no IPv6 (create it with --ipv6)", st.v6, ns.rec.Name)
	case st.v6.IsValid() && ns.rec.Scope == ScopeGlobal:
		return invalidf("invalid ip6 %s: on %s networks an endpoint's IPv6 address follows its IPv4 address", st.v6, ns.rec.Driver)
	}
	return nil
}

// attachment is an attach in progress: what reserve took and what the
// later steps did, for unreserve to undo.
type attachment struct {
	ep        *Endpoint
	dn        *driver.Network
	dep       *driver.Endpoint
	drv       driver.Driver
	global    bool // the address is a claim in the cluster store, the endpoint published with it
	claimed   bool
	joined    bool
	committed bool   // recorded: nothing is undone after this
	early     *early // the record written beside the join (early.go), nil if none
	// sticky and sticky6 are the sticky addresses recorded before the
	// attach (none: zero), which a failed attach's early write is undone to.
	sticky, sticky6 netip.Addr
}

// reserve checks the attach against the sandbox's other endpoints and
// takes an interface name and an address.
func (e *Engine) reserve(ctx context.Context, sb *sbState, ns *netState, drv driver.Driver, a AttachSpec, st statics) (*attachment, error) {
	caps := drv.Capabilities()
	at := &attachment{drv: drv, global: caps.Scope == driver.ScopeGlobal}
	static := st.v4
	var sticky, sticky6 netip.Addr
	if !at.global {
		sticky = e.stickyAddr(ctx, keySticky, ns.rec.ID, sb.rec.Name)
		if ns.subnet6 != nil {
			sticky6 = e.stickyAddr(ctx, keySticky6, ns.rec.ID, sb.rec.Name)
		}
		// The quarantine holds an address by its IPv4 one (IPv6 on an
		// IPv6-only network).
		want, wantSticky := static, sticky
		if ns.rec.NoIPv4 {
			want, wantSticky = st.v6, sticky6
		}
		e.awaitRelease(ctx, ns.rec.ID, want)
		if !want.IsValid() {
			e.awaitRelease(ctx, ns.rec.ID, wantSticky)
		}
	}
	e.mu.Lock()
	if err := e.checkAttach(sb, ns, caps, st); err != nil {
		e.mu.Unlock()
		return nil, err
	}
	if a.IfName != "" && (sb.joining[a.IfName] || slices.ContainsFunc(sb.rec.Endpoints, func(x *Endpoint) bool { return x.IfName == a.IfName })) {
		e.mu.Unlock()
		return nil, conflictf("sandbox %q already has an interface named %q", sb.rec.Name, a.IfName)
	}
	ep := &Endpoint{ID: newID(), NetworkID: ns.rec.ID, Aliases: a.Aliases, Created: time.Now().UTC(),
		StaticIP: static.IsValid(), StaticIP6: st.v6.IsValid()}
	switch {
	case sb.rec.Handover:
		ep.IfName = handoverIfName(ep.ID)
	case caps.Namespace == driver.NamespaceOwn && a.IfName != "":
		ep.IfName = a.IfName
	case caps.Namespace == driver.NamespaceOwn:
		ep.IfName = nextIfName(sb)
	}
	macFor := func(addr netip.Addr) string {
		if mac, _ := parseMAC(a.MAC); mac != nil {
			return mac.String()
		}
		return driverMAC(addr)
	}
	if ns.subnet != nil {
		// A local network's allocator changes memory only: the bitmap is
		// written with the endpoint record (commitEndpoint).
		p, err := ipam.SubnetAllocator{Subnet: ns.subnet}.Reserve(ctx, ipam.Request{Static: static, Sticky: sticky})
		if err != nil {
			e.mu.Unlock()
			return nil, addrErr(ns, static, err)
		}
		ep.Address = p
		ep.Gateway = ns.rec.Gateway
		ep.MAC = macFor(p.Addr())
	}
	if ns.subnet6 != nil {
		p, err := ipam.SubnetAllocator{Subnet: ns.subnet6}.Reserve(ctx, ipam.Request{Static: st.v6, Sticky: sticky6})
		if err != nil {
			if ns.subnet != nil && ep.Address.IsValid() {
				ns.subnet.Release(ep.Address.Addr())
			}
			e.mu.Unlock()
			return nil, addrErr6(ns, st.v6, err)
		}
		ep.Address6 = p
		ep.Gateway6 = ns.rec.Gateway6
		if ep.MAC == "" {
			ep.MAC = macFor(p.Addr())
		}
	}
	ns.pending++
	if ep.IfName != "" {
		if sb.joining == nil {
			sb.joining = map[string]bool{}
		}
		sb.joining[ep.IfName] = true
	}
	defaultRoute := caps.DefaultRoute && !ns.rec.Internal && !a.NoDefaultRoute && !e.hasDefaultRouteLocked(sb.rec)
	e.mu.Unlock()
	at.ep = ep
	at.sticky, at.sticky6 = sticky, sticky6
	if at.global {
		if err := e.claimGlobal(ctx, sb, ns, at, static, macFor); err != nil {
			e.mu.Lock()
			ns.pending--
			delete(sb.joining, ep.IfName)
			e.mu.Unlock()
			return nil, err
		}
	}
	at.dn = driverNetwork(ns.rec)
	at.dep = e.joinEndpoint(sb, ns, ep)
	at.dep.DefaultRoute = defaultRoute
	return at, nil
}

// joinEndpoint is what a driver is told of an endpoint when it joins (or
// repairs) it: a network's sandbox gateway replaces its gateway, and in a
// namespace Tether did not make (where IPv6 defaults on) the driver turns
// IPv6 off on the interface itself.
func (e *Engine) joinEndpoint(sb *sbState, ns *netState, ep *Endpoint) *driver.Endpoint {
	dep := driverEndpoint(ep)
	dep.DisableIPv6 = sb.rec.Adopted && !ep.Address6.IsValid()
	if ns.rec.SandboxGateway.IsValid() {
		dep.Gateway = ns.rec.SandboxGateway
	}
	if ns.rec.SandboxGateway6.IsValid() && ep.Address6.IsValid() {
		dep.Gateway6 = ns.rec.SandboxGateway6
	}
	return dep
}

// unreserve undoes a failed attach, in reverse: ports, the driver's join,
// the address (a global claim with its published record), the pending mark.
func (e *Engine) unreserve(ctx context.Context, sb *sbState, ns *netState, at *attachment) {
	if err := e.unpublish(ctx, at.ep); err != nil {
		e.log.Warn("roll back attach: unpublish ports", "sandbox", sb.rec.Name, "network", ns.rec.Name, "err", err)
	}
	if at.joined {
		if err := at.drv.Leave(ctx, at.dn, at.dep, sb.rec.NetNS); err != nil {
			e.log.Warn("roll back attach: leave", "sandbox", sb.rec.Name, "network", ns.rec.Name, "err", err)
		}
	}
	if at.claimed {
		e.unclaimGlobal(ctx, sb, ns, at)
	}
	e.mu.Lock()
	ns.pending--
	delete(sb.joining, at.ep.IfName)
	if ns.subnet != nil && at.ep.Address.IsValid() {
		ns.subnet.Release(at.ep.Address.Addr())
	}
	if ns.subnet6 != nil && at.ep.Address6.IsValid() {
		ns.subnet6.Release(at.ep.Address6.Addr())
	}
	e.mu.Unlock()
}

// checkAttach: a sandbox joins a network once; a network whose driver
// shares the host's namespace or gives none is a sandbox's only one.
// Called with e.mu held.
func (e *Engine) checkAttach(sb *sbState, ns *netState, caps driver.Capabilities, st statics) error {
	r := sb.rec
	if r.endpointOn(ns.rec.ID) != nil {
		return conflictf("sandbox %q is already connected to network %q", r.Name, ns.rec.Name)
	}
	special := caps.Namespace != driver.NamespaceOwn
	if r.HostNet && caps.Namespace != driver.NamespaceHost {
		return forbiddenf("sandbox %q shares the host's network namespace and cannot join network %q", r.Name, ns.rec.Name)
	}
	if special && len(r.Endpoints) > 0 {
		return forbiddenf("sandbox %q is connected to other networks and cannot join %q", r.Name, ns.rec.Name)
	}
	for _, ep := range r.Endpoints {
		if d := e.networks[ep.NetworkID]; d != nil && e.caps(d.rec).Namespace == driver.NamespaceNone {
			return forbiddenf("sandbox %q is on the %q network and cannot join %q", r.Name, d.rec.Name, ns.rec.Name)
		}
	}
	if caps.Namespace == driver.NamespaceHost && !r.HostNet {
		return forbiddenf("sandbox %q has its own network namespace and cannot join the host network", r.Name)
	}
	if st.v4.IsValid() && !caps.Addresses {
		return invalidf("invalid ip %s: network %q has no addresses", st.v4, ns.rec.Name)
	}
	return nil
}

// addrErr turns an allocator's error into an engine error of the right
// kind, naming the network.
func addrErr(ns *netState, static netip.Addr, err error) error {
	var fe *ipam.FieldError
	switch {
	case errors.Is(err, ipam.ErrAddrInUse):
		return conflictf("address %s is already in use on network %q", static, ns.rec.Name)
	case errors.As(err, &fe):
		return invalidf("network %q: %v", ns.rec.Name, err)
	case errors.Is(err, ipam.ErrNoAddress):
		return forbiddenf("network %q has no free address left in %s", ns.rec.Name, ns.rec.Subnet)
	}
	return err
}

// addrErr6 is addrErr for the IPv6 allocator (the field is ip6).
func addrErr6(ns *netState, static netip.Addr, err error) error {
	var fe *ipam.FieldError
	switch {
	case errors.Is(err, ipam.ErrAddrInUse):
		return conflictf("address %s is already in use on network %q", static, ns.rec.Name)
	case errors.As(err, &fe):
		return invalidf("network %q: invalid ip6: %v", ns.rec.Name, err)
	case errors.Is(err, ipam.ErrNoAddress):
		return forbiddenf("network %q has no free IPv6 address left in %s", ns.rec.Name, ns.rec.Subnet6)
	}
	return err
}

// stickyAddr reads the address a sandbox name last had on a network
// (prefix keySticky or keySticky6).
func (e *Engine) stickyAddr(ctx context.Context, prefix, netID, name string) netip.Addr {
	kv, err := e.rt.Get(ctx, prefix+netID+"/"+name)
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(string(kv.Value))
	return a
}

// nextIfName is the first ethN neither recorded nor being joined. Called
// with e.mu held.
func nextIfName(sb *sbState) string {
	used := maps.Clone(sb.joining)
	if used == nil {
		used = map[string]bool{}
	}
	for _, ep := range sb.rec.Endpoints {
		used[ep.IfName] = true
	}
	for i := 0; ; i++ {
		if n := fmt.Sprintf("eth%d", i); !used[n] {
			return n
		}
	}
}

// commitEndpoint records the endpoint: the sandbox record and the sticky
// address in one transaction of the runtime store, unless the attach's
// early write (early.go) already put exactly that there. The network's
// bitmap changed in memory only: at start it is marked from the endpoint
// records (gcStore), so no attach waits for a durable write.
func (e *Engine) commitEndpoint(ctx context.Context, sb *sbState, ns *netState, ep *Endpoint, x *early) error {
	x.wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	ops, eps := e.endpointOps(sb, ns, ep)
	if !e.earlyHolds(ctx, x, ops) {
		if err := e.commit(ctx, ops...); err != nil {
			return err
		}
	}
	delete(sb.joining, ep.IfName)
	sb.rec.Endpoints = eps
	ns.pending--
	return nil
}

func (e *Engine) saveSandbox(ctx context.Context, sb *sbState) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.commit(ctx, e.putJSON(keySandboxes+sb.rec.ID, sb.rec))
}

// Disconnect detaches a sandbox from a network. With force, a kernel failure
// (a namespace that is already gone, say) does not keep the record.
func (e *Engine) Disconnect(ctx context.Context, netRef, sbRef string, force bool) (err error) {
	defer e.countOp(opDisconnect, &err) // metrics.go
	sb, ns, ep, err := e.lockEndpoint(ctx, netRef, sbRef)
	if err != nil {
		return err
	}
	defer sb.op.Unlock()
	caps := e.caps(ns.rec)
	if caps.Namespace == driver.NamespaceHost && sb.rec.HostNet {
		return forbiddenf("sandbox %q shares the host's network namespace and cannot leave it", sb.rec.Name)
	}
	e.mu.Lock()
	carrier := e.firstRouteEndpoint(sb.rec)
	carried := carrier >= 0 && sb.rec.Endpoints[carrier] == ep
	e.mu.Unlock()
	if err := e.timedDetach(ctx, sb, ns, ep, force); err != nil {
		return err
	}
	if carried && !sb.rec.Handover {
		e.moveDefaultRoute(ctx, sb)
	}
	if e.isGlobal(ns.rec) && !sb.rec.Handover {
		if err := e.leaveGatewayBridge(ctx, sb); err != nil {
			e.log.Warn("leave the gateway bridge", "sandbox", sb.rec.Name, "err", err)
		}
	}
	e.refreshNames(sb)
	e.refreshFiles(sb)
	return nil
}

// detach removes one endpoint (kernel, address, record). Called with sb.op held.
func (e *Engine) detach(ctx context.Context, sb *sbState, ns *netState, ep *Endpoint, force bool) error {
	drv, err := e.driverOf(ns.rec)
	if err == nil {
		err = drv.Leave(ctx, driverNetwork(ns.rec), driverEndpoint(ep), sb.rec.NetNS)
	}
	if err != nil {
		if !force {
			return fmt.Errorf("detach sandbox %q from network %q: %w", sb.rec.Name, ns.rec.Name, err)
		}
		e.log.Warn("forced detach: kernel cleanup failed", "sandbox", sb.rec.Name, "network", ns.rec.Name, "err", err)
	}
	if err := e.unpublish(ctx, ep); err != nil {
		e.log.Warn("unpublish ports", "sandbox", sb.rec.Name, "network", ns.rec.Name, "err", err)
	}
	if err := e.fault("detach.after-leave"); err != nil {
		return err
	}
	e.withdrawGlobal(ctx, sb, ns, ep)
	e.mu.Lock()
	defer e.mu.Unlock()
	sb.rec.Endpoints = slices.DeleteFunc(sb.rec.Endpoints, func(x *Endpoint) bool { return x == ep })
	e.releaseLocked(ns, ep)
	if err := e.commit(ctx, e.putJSON(keySandboxes+sb.rec.ID, sb.rec)); err != nil {
		return err
	}
	if err := e.fault("detach.after-commit"); err != nil {
		return err
	}
	e.publishDisconnect(sb, ns, ep)
	return nil
}

// releaseLocked frees an endpoint's addresses in the network's allocators
// (memory only, like the reservation: commitEndpoint). Called with e.mu held.
func (e *Engine) releaseLocked(ns *netState, ep *Endpoint) {
	if ns.subnet != nil && ep.Address.IsValid() {
		ns.subnet.Release(ep.Address.Addr())
	}
	if ns.subnet6 != nil && ep.Address6.IsValid() {
		ns.subnet6.Release(ep.Address6.Addr())
	}
}

// RemoveSandbox detaches every endpoint and deletes the sandbox's namespaces
// (never those of an adopted sandbox). A sandbox with running processes is
// refused unless force, which kills the processes Tether started in it.
func (e *Engine) RemoveSandbox(ctx context.Context, ref string, force bool) (err error) {
	defer e.countOp(opSandboxRemove, &err) // metrics.go
	sb, err := e.lockSandbox(ctx, ref)
	if errors.Is(err, errNamespaceGone) {
		return nil // lockSandbox removed it
	}
	if err != nil {
		return err
	}
	defer sb.op.Unlock()
	if live := e.liveProcs(sb); len(live) > 0 {
		if !force {
			return conflictf("sandbox %q has running processes (pid %s): stop them or force the removal", sb.rec.Name, joinInts(live))
		}
		e.killProcs(sb)
	}
	return e.removeLocked(ctx, sb)
}

// removeLocked tears a sandbox down, best effort: every step is tried and
// errors are collected; the records go in one store transaction at the end.
// Called with sb.op held.
func (e *Engine) removeLocked(ctx context.Context, sb *sbState) error {
	e.mu.Lock()
	eps := e.endpointsLocked(sb.rec)
	e.mu.Unlock()
	errs := e.dropLinks(ctx, sb) // before the namespace goes: its end is deleted with its peer
	errs = append(errs, e.teardown(ctx, sb, eps)...)
	if slices.ContainsFunc(errs, isFault) {
		return errors.Join(errs...) // stopped at a fault point: the record stays, as after a crash there
	}
	for _, x := range eps {
		e.withdrawGlobal(ctx, sb, x.ns, x.ep)
	}
	e.mu.Lock()
	if err := e.forgetLocked(ctx, sb, eps); err != nil {
		errs = append(errs, err)
	}
	e.mu.Unlock()
	return errors.Join(errs...)
}

// sbEndpoint is an endpoint with its network.
type sbEndpoint struct {
	ep *Endpoint
	ns *netState
	// held: teardown detached its link and its address stays reserved until
	// the link is gone (quarantine.go); forgetLocked must not free it.
	held *held
}

// endpointsLocked pairs a sandbox's endpoints with their networks (those of
// networks that are gone are skipped). Called with e.mu held.
func (e *Engine) endpointsLocked(rec *Sandbox) []sbEndpoint {
	var out []sbEndpoint
	for _, ep := range rec.Endpoints {
		if ns := e.networks[ep.NetworkID]; ns != nil {
			out = append(out, sbEndpoint{ep: ep, ns: ns})
		}
	}
	return out
}

// teardown deletes a sandbox's kernel objects and files: its veth pairs, its
// namespaces (never those of an adopted sandbox) and its file directory.
// Best effort; it returns every error and marks the endpoints whose
// addresses must stay held (eps[i].held). Called with sb.op held.
func (e *Engine) teardown(ctx context.Context, sb *sbState, eps []sbEndpoint) []error {
	var errs []error
	rec := sb.rec
	// A namespace Tether made takes its veth pairs with it when it goes:
	// deleting its file drops the last reference (its processes were killed,
	// the resolver's sockets are closed first) and the kernel tears the
	// namespace down, interfaces included, in the background. Deleting each
	// veth here instead costs 10-20 ms of synchronous kernel work per pair
	// (the daemon would wait for an RCU grace period). Links of an adopted
	// namespace, which outlives us, are deleted one by one.
	// Before the namespace goes, each host end is detached (down, off its
	// bridge) and its address held until the link is gone, so that a stray
	// process keeping the namespace alive is cut off and no address is ever
	// live twice (quarantine.go). A driver with no host end to detach
	// (macvlan: the interface is in the sandbox only) leaves at once, in the
	// namespace, for the same reason: a stray process must not keep an
	// address the allocator hands out again.
	ownsNetNS := !rec.Adopted && !rec.HostNet && !rec.Handover
	if ownsNetNS {
		e.resolver.Stop(rec.ID)
	}
	for i, x := range eps {
		if err := e.unpublish(ctx, x.ep); err != nil {
			errs = append(errs, err)
		}
		if _, detacher := e.drivers[x.ns.rec.Driver].(driver.Detacher); ownsNetNS && detacher {
			h, err := e.detachEndpoint(ctx, x)
			if err != nil {
				errs = append(errs, fmt.Errorf("cut sandbox %q off network %q: %w", rec.Name, x.ns.rec.Name, err))
			}
			eps[i].held = h
			continue
		}
		drv, err := e.driverOf(x.ns.rec)
		if err == nil {
			err = drv.Leave(ctx, driverNetwork(x.ns.rec), driverEndpoint(x.ep), rec.NetNS)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("detach sandbox %q from network %q: %w", rec.Name, x.ns.rec.Name, err))
		}
	}
	if err := e.fault("sandbox.remove.after-detach"); err != nil {
		return append(errs, err)
	}
	if rec.Adopted || rec.Handover {
		return errs
	}
	if !rec.HostNet {
		if err := e.nsx.Delete(rec.NetNS); err != nil {
			errs = append(errs, err)
		}
	}
	if err := e.files().Remove(rec.ID); err != nil {
		errs = append(errs, err)
	}
	if err := e.fault("sandbox.remove.after-netns"); err != nil {
		return append(errs, err)
	}
	return errs
}

// forgetLocked frees a torn-down sandbox's addresses (those held until
// their links go are freed later, quarantine.go) and deletes its record in
// one store transaction. Called with sb.op and e.mu held.
func (e *Engine) forgetLocked(ctx context.Context, sb *sbState, eps []sbEndpoint) error {
	ops := []store.Op{store.Delete(keySandboxes + sb.rec.ID)}
	var hs []*held
	for _, x := range eps {
		if x.held != nil {
			hs = append(hs, x.held)
			continue
		}
		e.releaseLocked(x.ns, x.ep)
	}
	// Links dropLinks could not delete (or a reaped sandbox's, whose
	// namespace took both ends with it) go with the sandbox's records.
	gone := e.linksOfLocked(sb.rec.ID)
	for _, l := range gone {
		ops = append(ops, store.Delete(keyLinks+l.ID))
	}
	err := e.commit(ctx, ops...)
	if err == nil {
		for _, l := range gone {
			delete(e.links, l.ID)
		}
	}
	e.dropSandboxLocked(sb)
	sb.gone = true
	e.hold(hs) // before rm answers: a re-create right after finds its address held, and waits
	e.forgetNames(sb.rec.ID)
	for _, x := range eps {
		e.publishDisconnect(sb, x.ns, x.ep)
	}
	e.publishSandboxDestroyed(sb)
	return err
}

// Sandbox returns a copy of one sandbox's record.
func (e *Engine) Sandbox(ref string) (*Sandbox, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	sb, err := e.lookupSandbox(ref)
	if err != nil {
		return nil, err
	}
	return e.copySandboxLocked(sb), nil
}

// Sandboxes returns copies of every sandbox, sorted by name.
func (e *Engine) Sandboxes() []*Sandbox {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*Sandbox, 0, len(e.sandboxes))
	for _, sb := range e.sandboxes {
		out = append(out, e.copySandboxLocked(sb))
	}
	slices.SortFunc(out, func(a, b *Sandbox) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (e *Engine) copySandbox(sb *sbState) *Sandbox {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.copySandboxLocked(sb)
}

func (e *Engine) copySandboxLocked(sb *sbState) *Sandbox {
	c := *sb.rec
	c.Endpoints = make([]*Endpoint, len(sb.rec.Endpoints))
	for i, ep := range sb.rec.Endpoints {
		x := *ep
		c.Endpoints[i] = &x
	}
	c.Procs = slices.Clone(sb.rec.Procs)
	c.Warnings = sb.warningList()
	return &c
}

// NetworkName returns the name of a network ID ("" if unknown).
func (e *Engine) NetworkName(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ns := e.networks[id]; ns != nil {
		return ns.rec.Name
	}
	return ""
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

func driverEndpoint(ep *Endpoint) *driver.Endpoint {
	mac, _ := net.ParseMAC(ep.MAC)
	return &driver.Endpoint{ID: ep.ID, IfName: ep.IfName, HostIfName: ep.HostIfName,
		Address: ep.Address, Gateway: ep.Gateway, Address6: ep.Address6, Gateway6: ep.Gateway6, MAC: mac}
}

func driverMAC(a netip.Addr) string { return driver.MACFromIP(a).String() }

// hasDefaultRouteLocked reports whether one of the sandbox's endpoints
// already carries its default route: the first on a network that is not
// internal and whose driver has the DefaultRoute capability. Called with
// e.mu held.
func (e *Engine) hasDefaultRouteLocked(rec *Sandbox) bool {
	for _, ep := range rec.Endpoints {
		if ns := e.networks[ep.NetworkID]; ns != nil && e.caps(ns.rec).DefaultRoute && !ns.rec.Internal {
			return true
		}
	}
	return false
}

// moveDefaultRoute gives the sandbox its default route back after the
// endpoint that carried it left: the first remaining endpoint that can
// carry one takes it, if its driver can set it after the join
// (driver.Router). Called with sb.op held.
func (e *Engine) moveDefaultRoute(ctx context.Context, sb *sbState) {
	e.mu.Lock()
	i := e.firstRouteEndpoint(sb.rec)
	if i < 0 {
		e.mu.Unlock()
		return
	}
	ep, ns := sb.rec.Endpoints[i], e.networks[sb.rec.Endpoints[i].NetworkID]
	e.mu.Unlock()
	r, ok := e.drivers[ns.rec.Driver].(driver.Router)
	if !ok {
		return
	}
	dep := e.joinEndpoint(sb, ns, ep)
	dep.DefaultRoute = true
	if err := r.SetDefaultRoute(ctx, driverNetwork(ns.rec), dep, sb.rec.NetNS); err != nil {
		e.log.Warn("move the default route", "sandbox", sb.rec.Name, "network", ns.rec.Name, "err", err)
		return
	}
	e.log.Info("default route moved", "sandbox", sb.rec.Name, "network", ns.rec.Name, "gateway", dep.Gateway)
}
