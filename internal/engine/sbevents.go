package engine

// Sandbox and port events, in the terms of Docker's events API
// (docs/observability-events.md). A sandbox is Docker's container: its
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
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

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
// status goes to its new parent, and nothing would announce its exit. Its
// die is published here, with the status of the SIGKILL it got (137).
// Called with sb.op held.
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
		if i := slices.IndexFunc(sb.rec.Procs, func(pr ProcRecord) bool { return pr.PID == pid }); i >= 0 {
			orphans = append(orphans, sb.rec.Procs[i])
		}
	}
	e.mu.Unlock()
	for _, pr := range orphans {
		e.events.publish(procDieEvent(sb.rec, pr.PID, pr.Main, 128+int(syscall.SIGKILL), time.Since(procStartedAt(pr.StartTime))))
	}
	awaitAll(context.Background(), waits, deadline)
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
