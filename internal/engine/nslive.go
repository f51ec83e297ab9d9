package engine

// Is a sandbox's network namespace alive? (docs/sandboxes.md, "Restart")
//
// A sandbox is removed only when its network namespace is provably gone: its
// file is no longer a mount of it, and no process runs in it. A live
// namespace whose file was lost (the daemon's previous mount namespace died
// with it, under `ip netns exec` or systemd PrivateMounts=; exec-root
// cleared) is bound to its file again from a process in it; when even that
// fails the sandbox is kept untouched and reported degraded. Mount and UTS
// namespaces are never a reason to drop a sandbox: they live in its
// processes and a new pair is made when none runs (procs.go).

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"

	"github.com/tether-net/tether/internal/netns"
)

// warnNetNS is the key of the warning about the network namespace file.
const warnNetNS = "netns"

// netnsAlive reports whether the sandbox's network namespace lives,
// re-binding a lost file from a process in it. It keeps sb's warnings
// current. Called with sb.op held (or during restore); e.mu may be held
// too, so it never takes it (the records it reads change only under sb.op).
func (e *Engine) netnsAlive(sb *sbState) bool {
	rec := sb.rec
	if rec.HostNet || rec.Handover { // a handed-over sandbox lives while its pairs do (handover.go)
		return true
	}
	id, err := e.nsx.IDOf(rec.NetNS)
	if err == nil && (rec.isNetNS(id) || (!rec.Adopted && rec.NSInode == 0)) {
		e.clearWarning(sb, warnNetNS)
		return true
	}
	if rec.Adopted {
		return false // another runtime's namespace: its file is the only way in
	}
	pid := e.processIn(rec)
	if pid == 0 {
		return false
	}
	_ = e.nsx.Delete(rec.NetNS)
	if err := e.nsx.BindProc(pid, rec.NetNS); err != nil {
		if e.setWarning(sb, warnNetNS, fmt.Sprintf("network namespace file %s is lost and could not be bound again from process %d (%v); the sandbox keeps running on its processes' namespace, and changes to its networks fail until the file can be bound", rec.NetNS, pid, err)) {
			e.log.Warn("sandbox degraded: its network namespace lives but its file could not be re-bound", "sandbox", rec.Name, "pid", pid, "err", err)
		}
		return true
	}
	e.clearWarning(sb, warnNetNS)
	e.log.Info("recovered a sandbox's network namespace file from a process in it", "sandbox", rec.Name, "pid", pid)
	return true
}

// processIn returns a live process in the sandbox's network namespace, 0
// when none is found: a recorded one first (its start time proves it is
// ours), then, when the namespace's identity is known, any process on the
// machine in it (a daemonised child, or something entered with nsenter).
func (e *Engine) processIn(rec *Sandbox) int {
	for _, pr := range rec.Procs {
		if !pr.running() {
			continue
		}
		id, err := e.nsx.IDOf(e.nsx.ProcPath(pr.PID))
		if err == nil && (rec.NSInode == 0 || rec.isNetNS(id)) {
			return pr.PID
		}
	}
	if rec.NSInode == 0 {
		return 0
	}
	return e.nsx.FindProcessIn(rec.netnsID())
}

// anchor is a running process of the sandbox whose mount and UTS namespaces
// a new command joins: open files on them, taken while the process's start
// time still matched its record (so a reused PID cannot slip in).
type anchor struct {
	pid      int
	start    uint64 // its start time (clock ticks since boot)
	mnt, uts *os.File
}

func (a *anchor) close() {
	if a != nil {
		a.mnt.Close()
		a.uts.Close()
	}
}

// findAnchor returns a recorded process of the sandbox that still runs in its
// network namespace, with its mount and UTS namespaces open; nil when none
// does. Called with sb.op held.
func (e *Engine) findAnchor(sb *sbState) *anchor {
	e.mu.Lock()
	procs := slices.Clone(sb.rec.Procs)
	e.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		if a := openAnchor(sb.rec, procs[i]); a != nil {
			return a
		}
	}
	return nil
}

func openAnchor(rec *Sandbox, pr ProcRecord) *anchor {
	if !pr.running() {
		return nil
	}
	if id, err := netns.IDOf(netns.ProcNSPath(pr.PID, "net")); err != nil || (rec.NSInode != 0 && !rec.isNetNS(id)) {
		return nil
	}
	mnt, err := os.Open(netns.ProcNSPath(pr.PID, "mnt"))
	if err != nil {
		return nil
	}
	uts, err := os.Open(netns.ProcNSPath(pr.PID, "uts"))
	if err != nil {
		mnt.Close()
		return nil
	}
	a := &anchor{pid: pr.PID, start: pr.StartTime, mnt: mnt, uts: uts}
	if !pr.running() { // exited and reused while we opened
		a.close()
		return nil
	}
	return a
}

// setWarning records why the sandbox is degraded; it reports whether the
// warning is new.
func (e *Engine) setWarning(sb *sbState, key, msg string) bool {
	sb.wmu.Lock()
	defer sb.wmu.Unlock()
	if sb.warnings == nil {
		sb.warnings = map[string]string{}
	}
	old, had := sb.warnings[key]
	sb.warnings[key] = msg
	return !had || old != msg
}

func (e *Engine) clearWarning(sb *sbState, key string) {
	sb.wmu.Lock()
	delete(sb.warnings, key)
	sb.wmu.Unlock()
}

// warningList is sb's warnings in a stable order.
func (sb *sbState) warningList() []string {
	sb.wmu.Lock()
	defer sb.wmu.Unlock()
	keys := make([]string, 0, len(sb.warnings))
	for k := range sb.warnings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = sb.warnings[k]
	}
	return out
}

// errDegraded: an operation needs a namespace file the sandbox has lost.
var errDegraded = errors.New("sandbox is degraded")
