package engine

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/proc"
)

// restore rebuilds the in-memory state from the store and reconciles the
// kernel with it: networks are re-created if their bridge is missing (an
// existing one is left exactly as it is); sandboxes whose namespace is gone
// are dropped and their addresses freed; endpoints of live sandboxes whose
// veth is missing are re-attached. Live sandboxes are not touched.
func (e *Engine) restore(ctx context.Context) error {
	if err := e.restoreNetworks(ctx); err != nil {
		return err
	}
	return e.restoreSandboxes(ctx)
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
		if n.Default {
			continue // ensureDefaultLocked reconciles it with the configuration
		}
		if err := e.drivers[n.Driver].CreateNetwork(ctx, driverNetwork(n)); err != nil {
			e.log.Error("restore network", "network", n.Name, "err", err)
		}
	}
	return nil
}

func (e *Engine) restoreSandboxes(ctx context.Context) error {
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
		if !e.namespaceAlive(rec) && !e.recoverNamespaces(rec) {
			e.log.Info("sandbox namespace is gone; removing its records", "sandbox", rec.Name)
			sb.op.Lock()
			if err := e.removeLocked(ctx, sb); err != nil {
				e.log.Warn("remove dead sandbox", "sandbox", rec.Name, "err", err)
			}
			sb.op.Unlock()
			continue
		}
		e.forgetExited(rec)
		e.reattach(ctx, sb)
	}
	return nil
}

// namespaceAlive tells whether a sandbox's network namespace still exists
// (and, for an adopted one, is still the namespace we were given).
func (e *Engine) namespaceAlive(rec *Sandbox) bool {
	if rec.HostNet {
		return true
	}
	if !rec.Adopted {
		return netns.IsNSFile(rec.NetNS)
	}
	ino, err := inode(rec.NetNS)
	return err == nil && ino == rec.NSInode
}

// recoverNamespaces re-binds the namespace files of a sandbox whose files
// were lost (exec-root on a tmpfs that was cleared, a daemon started in
// another mount namespace) while one of its processes still runs: the
// namespaces live on in that process, and the sandbox is not lost.
func (e *Engine) recoverNamespaces(rec *Sandbox) bool {
	if rec.Adopted || rec.HostNet {
		return false
	}
	for _, pr := range rec.Procs {
		if pr.StartTime == 0 || procStartTime(pr.PID) != pr.StartTime {
			continue
		}
		for kind, path := range map[string]string{"net": rec.NetNS, "mnt": rec.MntNS, "uts": rec.UTSNS} {
			if path == "" {
				continue
			}
			_ = netns.Delete(path)
			if err := netns.BindProcNS(pr.PID, kind, path); err != nil {
				e.log.Warn("recover sandbox namespace", "sandbox", rec.Name, "kind", kind, "pid", pr.PID, "err", err)
				return false
			}
		}
		e.log.Info("recovered sandbox namespaces from a running process", "sandbox", rec.Name, "pid", pr.PID)
		return true
	}
	return false
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

// reattach re-creates endpoints whose host-side link is missing; existing
// ones are not touched, so a restart does not interrupt traffic.
func (e *Engine) reattach(ctx context.Context, sb *sbState) {
	for _, ep := range sb.rec.Endpoints {
		ns := e.networks[ep.NetworkID]
		if ns == nil || ns.rec.Driver != "bridge" {
			continue
		}
		if _, err := e.nl.LinkByName(ep.HostIfName); err == nil {
			continue
		}
		dep := driverEndpoint(ep)
		dep.DefaultRoute = sb.rec.Endpoints[0] == ep
		dep.DisableIPv6 = sb.rec.Adopted
		if ns.rec.SandboxGateway.IsValid() {
			dep.Gateway = ns.rec.SandboxGateway
		}
		if err := e.drivers["bridge"].Join(ctx, driverNetwork(ns.rec), dep, sb.rec.NetNS); err != nil {
			e.log.Error("re-attach endpoint", "sandbox", sb.rec.Name, "network", ns.rec.Name, "err", err)
			continue
		}
		ep.HostIfName = dep.HostIfName
		e.log.Info("re-attached endpoint", "sandbox", sb.rec.Name, "network", ns.rec.Name)
	}
	e.refreshFiles(sb)
}
