package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/proc"
	"github.com/tether-net/tether/internal/store"
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
	if err := e.moveRuntimeRecords(ctx); err != nil {
		return err
	}
	if err := e.restoreNetworks(ctx); err != nil {
		return err
	}
	if err := e.restoreLinks(ctx); err != nil {
		return err
	}
	if err := e.restoreSandboxes(ctx); err != nil {
		return err
	}
	e.reconcileLinks(ctx)
	return e.collectGarbage(ctx)
}

// moveRuntimeRecords moves runtime records a daemon from before the
// runtime store left in the durable one (isRuntimeKey) into the runtime
// store, unless the runtime store already has them: first written there,
// then deleted here, so a crash in between leaves a copy, not a loss.
func (e *Engine) moveRuntimeRecords(ctx context.Context) error {
	if e.rt == e.st {
		return nil
	}
	var put, del []store.Op
	for _, prefix := range runtimeKeys {
		kvs, err := e.st.List(ctx, prefix)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		for _, kv := range kvs {
			del = append(del, store.Delete(kv.Key))
			if _, err := e.rt.Get(ctx, kv.Key); errors.Is(err, store.ErrNotFound) {
				put = append(put, store.Put(kv.Key, kv.Value))
			} else if err != nil {
				return fmt.Errorf("runtime store: %w", err)
			}
		}
	}
	if len(del) == 0 {
		return nil
	}
	if len(put) > 0 {
		if _, err := e.rt.Txn(ctx, nil, put); err != nil {
			return fmt.Errorf("runtime store: %w", err)
		}
	}
	if _, err := e.st.Txn(ctx, nil, del); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	e.log.Info("moved sandbox and link records to the runtime store", "records", len(del), "copied", len(put))
	return nil
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
		if ikv, err := e.st.Get(ctx, keyIPAM6+n.ID); err == nil {
			ns.subnet6 = &ipam.Subnet{}
			if err := ns.subnet6.UnmarshalBinary(ikv.Value); err != nil {
				return fmt.Errorf("IPv6 address record of network %q: %w", n.Name, err)
			}
		}
		if n.Scope == ScopeGlobal {
			e.localGlobal(n)
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
		if err := e.ensureIPv6Forwarding(n); err != nil {
			e.log.Error("restore network", "network", n.Name, "err", err)
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
	kvs, err := e.rt.List(ctx, keySandboxes)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, kv := range kvs {
		rec := &Sandbox{}
		if err := json.Unmarshal(kv.Value, rec); err != nil {
			return fmt.Errorf("sandbox record %s: %w", kv.Key, err)
		}
		sb := &sbState{rec: rec, procs: map[int]*proc.Process{}}
		e.addSandboxLocked(sb)
		e.watchRestoredProcs(sb) // a die event for each recorded process, now or when it ends
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
		if e.reattach(ctx, sb) || dirty || n != len(rec.Procs) {
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
	id, err := e.nsx.IDOf(rec.NetNS)
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

// reattach makes the kernel match a live sandbox's endpoint records: each
// endpoint whose driver can repair in place (driver.Repairer) is checked and
// rebuilt only when broken, so a restart does not interrupt traffic. In a
// sandbox namespace Tether created, veths no endpoint names (a crash during
// an attach, before the host end was marked) are deleted. It reports
// whether a record changed.
func (e *Engine) reattach(ctx context.Context, sb *sbState) bool {
	rec := sb.rec
	if rec.Handover {
		return false // its pairs are checked once the engine runs (Start: ReapHandedOver)
	}
	if rec.HostNet || (rec.Adopted && !e.hasRepairable(rec)) {
		return false
	}
	if !e.nsx.IsNSFile(rec.NetNS) {
		return false // degraded (file lost, namespace alive): touch nothing
	}
	// One listing of the sandbox's links serves the stray-link removal and
	// every endpoint's repair check (nil for an adopted namespace: its
	// links are not swept, and drivers look for themselves).
	var inside map[string]driver.SandboxLink
	if !rec.Adopted {
		links := e.linkIfNamesLocked(rec.ID) // restore runs before the engine serves: no lock needed yet
		named := func(name string) bool {
			return slices.ContainsFunc(rec.Endpoints, func(ep *Endpoint) bool { return ep.IfName == name }) ||
				slices.Contains(links, name)
		}
		kept, removed, err := e.nsx.RemoveStrayLinks(rec.NetNS, named)
		if err != nil {
			e.log.Warn("remove stray interfaces", "sandbox", rec.Name, "err", err)
		} else {
			inside = kept
		}
		for _, name := range removed {
			e.log.Info("removed stray interface no endpoint names", "sandbox", rec.Name, "interface", name)
		}
	}
	changed := false
	first := e.firstRouteEndpoint(rec)
	for i, ep := range rec.Endpoints {
		ns := e.networks[ep.NetworkID]
		if ns == nil {
			continue
		}
		r, ok := e.drivers[ns.rec.Driver].(driver.Repairer)
		if !ok {
			continue
		}
		dep := e.joinEndpoint(sb, ns, ep)
		dep.DefaultRoute = first == i
		repaired, err := r.Repair(ctx, driverNetwork(ns.rec), dep, rec.NetNS, inside)
		if err != nil {
			e.log.Error("re-attach endpoint", "sandbox", rec.Name, "network", ns.rec.Name, "err", err)
			continue
		}
		if !repaired {
			continue
		}
		changed = changed || ep.HostIfName != dep.HostIfName
		ep.HostIfName = dep.HostIfName
		e.log.Info("re-attached endpoint", "sandbox", rec.Name, "network", ns.rec.Name, "address", ep.Address)
	}
	e.refreshFiles(sb)
	return changed
}

// hasRepairable: one of the sandbox's endpoints is on a network whose
// driver repairs endpoints in place.
func (e *Engine) hasRepairable(rec *Sandbox) bool {
	return slices.ContainsFunc(rec.Endpoints, func(ep *Endpoint) bool {
		ns := e.networks[ep.NetworkID]
		if ns == nil {
			return false
		}
		_, ok := e.drivers[ns.rec.Driver].(driver.Repairer)
		return ok
	})
}

// firstRouteEndpoint is the index of the sandbox's first endpoint on a
// network that is not internal and whose driver carries default routes
// (the one with the default route), or -1.
func (e *Engine) firstRouteEndpoint(rec *Sandbox) int {
	for i, ep := range rec.Endpoints {
		if ns := e.networks[ep.NetworkID]; ns != nil && e.caps(ns.rec).DefaultRoute && !ns.rec.Internal {
			return i
		}
	}
	return -1
}
