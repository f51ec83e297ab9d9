package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver/bridge"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/proc"
)

// restore rebuilds the in-memory state from the store and reconciles the
// kernel with it (docs/lifecycle.md):
//  1. networks: a missing bridge is re-created; an existing one is left
//     exactly as it is;
//  2. sandboxes: one whose namespace is gone is dropped and its addresses
//     freed; endpoints of live sandboxes that are not intact in the kernel
//     are rebuilt, intact ones are not touched (no traffic is lost);
//  3. garbage collection: whatever Tether owns and no record names is
//     removed, and the address bitmaps are made to match the endpoints.
func (e *Engine) restore(ctx context.Context) error {
	if err := e.checkFault(); err != nil {
		return err
	}
	if err := e.restoreNetworks(ctx); err != nil {
		return err
	}
	if err := e.restoreSandboxes(ctx); err != nil {
		return err
	}
	return e.collectGarbage(ctx)
}

func (e *Engine) restoreNetworks(ctx context.Context) error {
	kvs, err := e.st.List(ctx, keyNetworks)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, kv := range kvs {
		n := &Network{}
		if err := json.Unmarshal(kv.Value, n); err != nil {
			return fmt.Errorf("network record %s: %w", kv.Key, err)
		}
		ns := &netState{rec: n}
		if ikv, err := e.st.Get(ctx, keyIPAM+n.ID); err == nil {
			ns.subnet = &ipam.Subnet{}
			if err := ns.subnet.UnmarshalBinary(ikv.Value); err != nil {
				return fmt.Errorf("address record of network %q: %w", n.Name, err)
			}
		}
		e.networks[n.ID] = ns
		if n.Default && !e.defaultUnchanged(ns) {
			continue // ensureDefaultLocked rebuilds it or refuses to start
		}
		d := e.drivers[n.Driver]
		if d == nil {
			e.log.Error("restore network: its driver is not available (a global network without cluster-store?); leaving its kernel objects alone", "network", n.Name, "driver", n.Driver)
			continue
		}
		if err := d.CreateNetwork(ctx, driverNetwork(n)); err != nil {
			e.log.Error("restore network", "network", n.Name, "err", err)
		}
	}
	return nil
}

// defaultUnchanged tells whether the recorded default network still matches
// the configuration, so its bridge can be made sure of before the sandboxes
// on it are re-attached (a changed one is ensureDefaultLocked's business).
func (e *Engine) defaultUnchanged(ns *netState) bool {
	if e.cfg.Bridge == "none" {
		return false
	}
	want, err := e.desiredDefault(ns)
	return err == nil && sameDefault(ns.rec, want)
}

func (e *Engine) restoreSandboxes(ctx context.Context) error {
	bridges := bridgeIndexes{}
	kvs, err := e.st.List(ctx, keySandboxes)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, kv := range kvs {
		rec := &Sandbox{}
		if err := json.Unmarshal(kv.Value, rec); err != nil {
			return fmt.Errorf("sandbox record %s: %w", kv.Key, err)
		}
		sb := &sbState{rec: rec, procs: map[int]*proc.Process{}}
		e.sandboxes[rec.ID] = sb
		dirty := e.dropOrphanEndpoints(rec)
		dirty = e.dropNamespaceFiles(rec) || dirty
		dirty = e.recordNetNSID(rec) || dirty
		if !e.netnsAlive(sb) {
			e.log.Info("sandbox network namespace is gone (no file, no process in it); removing its records", "sandbox", rec.Name)
			sb.op.Lock()
			if err := e.removeLocked(ctx, sb); err != nil {
				e.log.Warn("remove dead sandbox", "sandbox", rec.Name, "err", err)
			}
			sb.op.Unlock()
			continue
		}
		n := len(rec.Procs)
		e.forgetExited(rec)
		if e.reattach(ctx, sb, bridges) || dirty || n != len(rec.Procs) {
			if err := e.saveSandbox(ctx, sb); err != nil {
				e.log.Warn("record restored sandbox", "sandbox", rec.Name, "err", err)
			}
		}
	}
	return nil
}

// dropOrphanEndpoints forgets endpoints on networks that no longer exist
// (their links are collected by gcLinks). It reports whether it dropped any.
func (e *Engine) dropOrphanEndpoints(rec *Sandbox) bool {
	n := len(rec.Endpoints)
	rec.Endpoints = slices.DeleteFunc(rec.Endpoints, func(ep *Endpoint) bool {
		if e.networks[ep.NetworkID] != nil {
			return false
		}
		e.log.Info("dropping endpoint of a network that no longer exists", "sandbox", rec.Name, "network", ep.NetworkID, "address", ep.Address)
		return true
	})
	return len(rec.Endpoints) != n
}

// dropNamespaceFiles forgets the mount and UTS namespace files of a record
// from an earlier version (garbage collection unmounts them): those
// namespaces live on in the sandbox's processes, and a new pair is made when
// none runs. It reports whether the record changed.
func (e *Engine) dropNamespaceFiles(rec *Sandbox) bool {
	if rec.MntNS == "" && rec.UTSNS == "" {
		return false
	}
	rec.Files = true
	rec.MntNS, rec.UTSNS = "", ""
	return true
}

// recordNetNSID fills in the network namespace identity of a record from an
// earlier version that did not keep it. It reports whether it did.
func (e *Engine) recordNetNSID(rec *Sandbox) bool {
	if rec.NSInode != 0 || rec.Adopted || rec.HostNet {
		return false
	}
	id, err := netns.IDOf(rec.NetNS)
	if err != nil {
		return false // lost: found again through a recorded process, if any
	}
	rec.NSDev, rec.NSInode = id.Dev, id.Ino
	return true
}

// forgetExited drops records of processes that ended while the daemon was down.
func (e *Engine) forgetExited(rec *Sandbox) {
	kept := rec.Procs[:0]
	for _, pr := range rec.Procs {
		if procStartTime(pr.PID) == pr.StartTime {
			kept = append(kept, pr)
		}
	}
	rec.Procs = kept
}

// reattach makes the kernel match a live sandbox's endpoint records. An
// endpoint is intact when its host link carries its marker, is a port of its
// network's bridge, and its peer is the recorded interface inside the
// sandbox; intact endpoints are not touched, so a restart does not interrupt
// traffic. Anything else (a host link gone, a bridge re-created without its
// ports, a pair half torn down) is deleted and the endpoint joined again.
// In a sandbox namespace Tether created, veths no endpoint names (a crash
// during an attach, before the host end was marked) are deleted. It reports
// whether a record changed.
func (e *Engine) reattach(ctx context.Context, sb *sbState, bridges bridgeIndexes) bool {
	rec := sb.rec
	if rec.HostNet || (rec.Adopted && !e.hasBridgeEndpoint(rec)) {
		return false
	}
	if !netns.IsNSFile(rec.NetNS) {
		return false // degraded (file lost, namespace alive): touch nothing
	}
	h, err := netns.NewHandle(rec.NetNS)
	if err != nil {
		e.log.Error("open sandbox namespace", "sandbox", rec.Name, "err", err)
		return false
	}
	defer h.Close()
	inner := map[string]netlink.Link{}
	links, err := listLinks(h)
	if err != nil {
		e.log.Error("list sandbox interfaces", "sandbox", rec.Name, "err", err)
		return false
	}
	for _, l := range links {
		inner[l.Attrs().Name] = l
	}
	if !rec.Adopted {
		e.removeStrayVeths(rec, h, inner)
	}
	changed := false
	for i, ep := range rec.Endpoints {
		ns := e.networks[ep.NetworkID]
		if ns == nil || ns.rec.Driver != "bridge" || e.endpointIntact(ns, ep, inner[ep.IfName], bridges) {
			continue
		}
		if l := inner[ep.IfName]; l != nil {
			_ = h.LinkDel(l) // half of a broken pair; the host end is checked below
		}
		if l, err := e.nl.LinkByName(ep.HostIfName); err == nil && l.Attrs().Alias == bridge.AliasPrefix+ep.ID {
			_ = e.nl.LinkDel(l)
		}
		dep := driverEndpoint(ep)
		dep.DefaultRoute = e.firstBridgeEndpoint(rec) == i
		dep.DisableIPv6 = rec.Adopted
		if ns.rec.SandboxGateway.IsValid() {
			dep.Gateway = ns.rec.SandboxGateway
		}
		if err := e.drivers["bridge"].Join(ctx, driverNetwork(ns.rec), dep, rec.NetNS); err != nil {
			e.log.Error("re-attach endpoint", "sandbox", rec.Name, "network", ns.rec.Name, "err", err)
			continue
		}
		changed = changed || ep.HostIfName != dep.HostIfName
		ep.HostIfName = dep.HostIfName
		e.log.Info("re-attached endpoint", "sandbox", rec.Name, "network", ns.rec.Name, "address", ep.Address)
	}
	e.refreshFiles(sb)
	return changed
}

func (e *Engine) hasBridgeEndpoint(rec *Sandbox) bool {
	return slices.ContainsFunc(rec.Endpoints, func(ep *Endpoint) bool {
		ns := e.networks[ep.NetworkID]
		return ns != nil && ns.rec.Driver == "bridge"
	})
}

// endpointIntact checks an endpoint's veth pair: the host end marked with the
// endpoint's ID and enslaved to the network's bridge, the sandbox end (in)
// its peer.
func (e *Engine) endpointIntact(ns *netState, ep *Endpoint, in netlink.Link, bridges bridgeIndexes) bool {
	host, err := e.nl.LinkByName(ep.HostIfName)
	if err != nil || in == nil || host.Attrs().Alias != bridge.AliasPrefix+ep.ID {
		return false
	}
	if host.Attrs().MasterIndex == 0 || host.Attrs().MasterIndex != bridges.index(e.nl, ns.rec.BridgeName) {
		return false
	}
	_, isVeth := in.(*netlink.Veth)
	return isVeth && in.Attrs().ParentIndex == host.Attrs().Index && host.Attrs().ParentIndex == in.Attrs().Index
}

// removeStrayVeths deletes veths in a Tether-created sandbox namespace that
// no endpoint record names (deleting one end deletes the pair, so an
// unmarked host end goes with it).
func (e *Engine) removeStrayVeths(rec *Sandbox, h *netlink.Handle, inner map[string]netlink.Link) {
	for name, l := range inner {
		if _, ok := l.(*netlink.Veth); !ok || slices.ContainsFunc(rec.Endpoints, func(ep *Endpoint) bool { return ep.IfName == name }) {
			continue
		}
		if err := h.LinkDel(l); err != nil {
			e.log.Warn("remove stray interface", "sandbox", rec.Name, "interface", name, "err", err)
			continue
		}
		delete(inner, name)
		e.log.Info("removed stray interface no endpoint names", "sandbox", rec.Name, "interface", name)
	}
}

// bridgeIndexes caches the interface index of each bridge during a restore
// (0: no such link).
type bridgeIndexes map[string]int

func (b bridgeIndexes) index(h *netlink.Handle, name string) int {
	if i, ok := b[name]; ok {
		return i
	}
	if l, err := h.LinkByName(name); err == nil {
		b[name] = l.Attrs().Index
	} else {
		b[name] = 0
	}
	return b[name]
}

// firstBridgeEndpoint is the index of the sandbox's first endpoint on a
// bridge network (the one with the default route), or -1.
func (e *Engine) firstBridgeEndpoint(rec *Sandbox) int {
	for i, ep := range rec.Endpoints {
		if ns := e.networks[ep.NetworkID]; ns != nil && ns.rec.Driver == "bridge" {
			return i
		}
	}
	return -1
}
