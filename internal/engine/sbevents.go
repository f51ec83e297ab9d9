package engine

// Sandbox and port events, in the terms of Docker's events API
// (docs/observability.md). A sandbox is Docker's container: its
// events are of type "container" with the actions Docker uses for the same
// moments (create, start, die, exec_start, exec_die, destroy), and an actor
// shaped as dockerd's LogContainerEvent makes it: the sandbox ID, its labels
// as attributes, and "name" (no "image": a sandbox has none). Docker has no
// event for published ports; Tether's are of its own type "port"
// (publish, unpublish), whose actor is the sandbox as well, so a
// `container=NAME` filter finds them with the sandbox's other events.
//
// Publishing stays off the hot path's way: an event is a small map built
// from what the caller holds, handed to Events.publish, which never blocks.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/proc"
)

// Event types and the actions Tether emits beyond Docker's network ones.
const (
	TypeContainer = "container"
	TypeNetwork   = "network"
	TypePort      = "port"

	ActionCreate    = "create"
	ActionStart     = "start"
	ActionDie       = "die"
	ActionExecStart = "exec_start" // Docker's action is "exec_start: <command>"
	ActionExecDie   = "exec_die"
	ActionDestroy   = "destroy"
	ActionPublish   = "publish"
	ActionUnpublish = "unpublish"
)

// sandboxAttrs is a container event's actor attributes: the sandbox's
// labels, then "name" (a label cannot override it), then extra.
func sandboxAttrs(rec *Sandbox, extra map[string]string) map[string]string {
	a := make(map[string]string, len(rec.Labels)+1+len(extra))
	maps.Copy(a, rec.Labels)
	a["name"] = rec.Name
	maps.Copy(a, extra)
	return a
}

func sandboxEvent(rec *Sandbox, action string, extra map[string]string) Event {
	return Event{Type: TypeContainer, Action: action, ID: rec.ID, Attrs: sandboxAttrs(rec, extra)}
}

// publishSandboxCreated announces a sandbox that now exists in the
// engine's state (a failure later in its create is followed by its destroy).
func (e *Engine) publishSandboxCreated(sb *sbState) {
	e.events.publish(sandboxEvent(sb.rec, ActionCreate, nil))
}

// publishSandboxDestroyed announces a sandbox whose records are gone
// (removed, rolled back, or found dead).
func (e *Engine) publishSandboxDestroyed(sb *sbState) {
	e.events.publish(sandboxEvent(sb.rec, ActionDestroy, nil))
}

// publishConnect is the network's connect event (Docker's attributes:
// name, type, container) followed by the endpoint's port event, if it
// publishes ports.
func (e *Engine) publishConnect(sb *sbState, ns *netState, ep *Endpoint) {
	e.events.publish(networkEvent(ns, "connect", sb.rec.ID))
	if len(ep.Ports) > 0 {
		e.events.publish(portEvent(sb.rec, ns.rec.Name, ActionPublish, ep.Ports))
	}
}

// publishDisconnect is the endpoint's unpublish event, if it had ports,
// followed by the network's disconnect event.
func (e *Engine) publishDisconnect(sb *sbState, ns *netState, ep *Endpoint) {
	if ep != nil && len(ep.Ports) > 0 {
		e.events.publish(portEvent(sb.rec, ns.rec.Name, ActionUnpublish, ep.Ports))
	}
	e.events.publish(networkEvent(ns, "disconnect", sb.rec.ID))
}

// publishPortsChanged announces that the ports of a sandbox's endpoint on a
// network changed outside an attach (PublishPorts, UnpublishPorts): the
// ports it stopped publishing, then those it publishes now.
func (e *Engine) publishPortsChanged(sb *sbState, ns *netState, before, after []PortBinding) {
	if len(before) > 0 {
		e.events.publish(portEvent(sb.rec, ns.rec.Name, ActionUnpublish, before))
	}
	if len(after) > 0 {
		e.events.publish(portEvent(sb.rec, ns.rec.Name, ActionPublish, after))
	}
}

func networkEvent(ns *netState, action, container string) Event {
	return Event{Type: TypeNetwork, Action: action, ID: ns.rec.ID,
		Attrs: map[string]string{"name": ns.rec.Name, "type": ns.rec.Driver, "container": container}}
}

// portEvent names the sandbox (ID and "name", as a container event), the
// network and the bindings, in `docker ps` notation.
func portEvent(rec *Sandbox, network, action string, ports []PortBinding) Event {
	return Event{Type: TypePort, Action: action, ID: rec.ID, Attrs: map[string]string{
		"name": rec.Name, "network": network, "ports": formatPorts(ports)}}
}

// formatPorts writes bindings as `docker ps` does:
// "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp".
func formatPorts(ports []PortBinding) string {
	var b strings.Builder
	for i, p := range ports {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(netip.AddrPortFrom(p.HostIP, p.HostPort).String())
		b.WriteString("->")
		b.WriteString(strconv.Itoa(int(p.ContainerPort)))
		b.WriteByte('/')
		b.WriteString(p.Proto)
	}
	return b.String()
}

// running is what the events of a process need between its start and its
// exit: when it started (die's execDuration) and a channel closed once its
// die event is out (killProcs waits for it, so a forced removal shows die
// before disconnect and destroy, as Docker's `rm -f` does).
type running struct {
	start time.Time
	died  chan struct{}
}

// runningProcs maps each *proc.Process Tether started to its running
// entry, from Exec until its exit was announced. Keyed by the process, not
// the PID: a PID can be reused as soon as the exit was reaped.
var runningProcs sync.Map

// publishProcStarted announces a process started in the sandbox: the main
// one (`run`) is Docker's container "start"; another (`exec`) is Docker's
// "exec_start: <command>", with the PID where Docker has its exec ID.
func (e *Engine) publishProcStarted(sb *sbState, p *proc.Process, pr ProcRecord) {
	runningProcs.Store(p, &running{start: time.Now(), died: make(chan struct{})})
	e.events.publish(procStartEvent(sb.rec, pr))
}

func procStartEvent(rec *Sandbox, pr ProcRecord) Event {
	if pr.Main {
		return sandboxEvent(rec, ActionStart, nil)
	}
	return sandboxEvent(rec, ActionExecStart+": "+strings.Join(pr.Args, " "), map[string]string{"pid": strconv.Itoa(pr.PID)})
}

// publishProcDied announces a process's exit with its status (128+N after
// signal N): Docker's "die" (exitCode, execDuration in whole seconds) for
// the main process, "exec_die" (exitCode, pid) for another. It is the first
// thing the exit callback does, before it waits for the sandbox's lock.
func (e *Engine) publishProcDied(sb *sbState, p *proc.Process, main bool, code int) {
	var took time.Duration
	v, ok := runningProcs.LoadAndDelete(p)
	if ok {
		took = time.Since(v.(*running).start)
	}
	// ID, name and labels never change after create: no lock is needed.
	e.events.publish(procDieEvent(sb.rec, p.Pid, main, code, took))
	if ok {
		close(v.(*running).died)
	}
}

func procDieEvent(rec *Sandbox, pid int, main bool, code int, took time.Duration) Event {
	if main {
		return sandboxEvent(rec, ActionDie, map[string]string{"exitCode": strconv.Itoa(code),
			"execDuration": strconv.Itoa(int(took.Seconds()))})
	}
	return sandboxEvent(rec, ActionExecDie, map[string]string{"exitCode": strconv.Itoa(code), "pid": strconv.Itoa(pid)})
}

// awaitDieEvents waits (until deadline at most) for the die events of the
// given processes of the sandbox, which killProcs has just killed, so they
// come before the sandbox's disconnect and destroy. A process this daemon
// did not start (one that ran on across a restart) is not its child: its
// status goes to its new parent. Its watch (watchRestoredProcs) announces
// it, with the status of the SIGKILL (markKilled); without a watch, its
// die is published here. Called with sb.op held.
func (e *Engine) awaitDieEvents(sb *sbState, pids []int, deadline time.Time) {
	var waits []chan struct{}
	var orphans []ProcRecord
	e.mu.Lock()
	for _, pid := range pids {
		if p := sb.procs[pid]; p != nil {
			if v, ok := runningProcs.Load(p); ok {
				waits = append(waits, v.(*running).died)
			}
			continue
		}
		pr, ok := recordOf(sb.rec, pid)
		if !ok {
			continue
		}
		if w, ok := restoredWatches.LoadAndDelete(watchKey{pr.PID, pr.StartTime}); ok {
			waits = append(waits, w.(*procWatch).died) // closed already if it exited on its own
			continue
		}
		orphans = append(orphans, pr)
	}
	e.mu.Unlock()
	for _, pr := range orphans {
		e.events.publish(procDieEvent(sb.rec, pr.PID, pr.Main, killedStatus, time.Since(procStartedAt(pr.StartTime))))
	}
	awaitAll(context.Background(), waits, deadline)
}

// killedStatus is the status of a process killed by SIGKILL, as a shell
// (and Docker) reports it.
const killedStatus = 128 + int(syscall.SIGKILL)

// recordOf finds the record of a process of the sandbox by PID. Called
// with e.mu held.
func recordOf(rec *Sandbox, pid int) (ProcRecord, bool) {
	i := slices.IndexFunc(rec.Procs, func(pr ProcRecord) bool { return pr.PID == pid })
	if i < 0 {
		return ProcRecord{}, false
	}
	return rec.Procs[i], true
}

// A restored sandbox's processes ran on across the restart, or ended while
// the daemon was down. Neither is the new daemon's child, so neither would
// have a die event: watchRestoredProcs gives the ended ones theirs at once
// and watches the running ones through a pidfd (pidfd_open works for any
// process; it becomes readable when the process exits), parked on the
// netpoller: no thread, one small goroutine each. Their exit status goes to
// their new parent, so the die has no exitCode, unless the daemon killed
// the process itself (markKilled: 137).

// watchKey names a process by PID and start time (a PID alone can be
// reused).
type watchKey struct {
	pid   int
	start uint64
}

// procWatch is a watched process of a restored sandbox.
type procWatch struct {
	killed atomic.Bool   // the daemon sent it SIGKILL
	died   chan struct{} // closed once its die event is out
}

// restoredWatches maps watchKey to *procWatch. The watch publishes the
// die, once; the entry stays after the exit, so a kill that raced with it
// (awaitDieEvents, which deletes the entry) finds that the die is out and
// does not announce another. Entries of processes that exited on their own
// stay until the daemon exits: at most one per process that ran across the
// last restart.
var restoredWatches sync.Map

// watchRestoredProcs publishes the die of each recorded process of a
// restored sandbox that has ended, and watches those that run. Called at
// restore, before exited processes are forgotten.
func (e *Engine) watchRestoredProcs(sb *sbState) {
	for _, pr := range sb.rec.Procs {
		if err := e.watchProc(sb, pr); err != nil {
			if !errors.Is(err, errProcEnded) {
				e.log.Warn("watch a process of a restored sandbox: its exit will have no event", "sandbox", sb.rec.Name, "pid", pr.PID, "err", err)
				continue
			}
			e.events.publish(restoredDieEvent(sb.rec, pr, false))
		}
	}
}

var errProcEnded = errors.New("the process has ended")

// watchProc opens a pidfd for a recorded process and publishes its die
// when it exits (errProcEnded: it has ended already).
func (e *Engine) watchProc(sb *sbState, pr ProcRecord) error {
	if pr.StartTime == 0 {
		return errProcEnded
	}
	fd, err := unix.PidfdOpen(pr.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return errProcEnded
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pr.PID, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return fmt.Errorf("pidfd of %d non-blocking: %w", pr.PID, err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")      // non-blocking: on the netpoller
	if procStartTime(pr.PID) != pr.StartTime { // checked with the pidfd held: it names the process or nothing
		f.Close()
		return errProcEnded
	}
	w := &procWatch{died: make(chan struct{})}
	restoredWatches.Store(watchKey{pr.PID, pr.StartTime}, w)
	go func() {
		defer f.Close()
		if err := awaitReadable(f); err != nil {
			e.log.Warn("watch a process of a restored sandbox", "sandbox", sb.rec.Name, "pid", pr.PID, "err", err)
		}
		e.events.publish(restoredDieEvent(sb.rec, pr, w.killed.Load()))
		close(w.died)
	}()
	return nil
}

// awaitReadable parks the goroutine until f (a pidfd) is readable.
func awaitReadable(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return err != nil && !errors.Is(err, unix.EINTR) || n > 0
	})
}

// restoredDieEvent is the die of a process the daemon did not start:
// exitCode only when the daemon killed it.
func restoredDieEvent(rec *Sandbox, pr ProcRecord, killed bool) Event {
	took := time.Since(procStartedAt(pr.StartTime))
	if killed {
		return procDieEvent(rec, pr.PID, pr.Main, killedStatus, took)
	}
	ev := procDieEvent(rec, pr.PID, pr.Main, 0, took)
	delete(ev.Attrs, "exitCode")
	return ev
}

// markKilled notes that killProcs is about to SIGKILL these processes of
// the sandbox, so the watch of one the daemon did not start reports the
// kill's status. Called with sb.op held.
func (e *Engine) markKilled(sb *sbState, pids []int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, pid := range pids {
		if pr, ok := recordOf(sb.rec, pid); ok {
			if w, ok := restoredWatches.Load(watchKey{pr.PID, pr.StartTime}); ok {
				w.(*procWatch).killed.Store(true)
			}
		}
	}
}

// procStartedAt turns a start time in clock ticks since boot (field 22 of
// /proc/PID/stat) into wall-clock time: boot time (btime in /proc/stat)
// plus the ticks at USER_HZ, which is 100 on Linux. Now when unknown.
func procStartedAt(ticks uint64) time.Time {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Now()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			if bt, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(bt, 0).Add(time.Duration(ticks) * (time.Second / 100))
			}
		}
	}
	return time.Now()
}

// awaitAll waits until every channel is closed or the deadline passed.
func awaitAll(ctx context.Context, chans []chan struct{}, deadline time.Time) {
	if len(chans) == 0 {
		return
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for _, c := range chans {
		select {
		case <-c:
		case <-ctx.Done():
			return
		}
	}
}
