package engine

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/proc"
)

// ExecSpec asks for a process in a sandbox.
type ExecSpec struct {
	Args   []string
	Env    []string
	Dir    string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Detach sends output to the sandbox's output.log instead of Stdout/Stderr.
	Detach bool
	// Main marks the sandbox's main process: with AutoRemove, the sandbox is
	// removed when it exits.
	Main bool
}

// Running is a process Tether started; Done is closed when it has exited
// and ExitCode is then valid.
type Running struct {
	PID      int
	Done     chan struct{}
	ExitCode int
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Exec starts a command inside a sandbox's network, mount and UTS namespaces.
func (e *Engine) Exec(ctx context.Context, ref string, x ExecSpec) (*Running, error) {
	if len(x.Args) == 0 || x.Args[0] == "" {
		return nil, invalidf("invalid command: empty")
	}
	sb, err := e.lockSandbox(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer sb.op.Unlock()
	if sb.rec.Handover {
		return nil, forbiddenf("sandbox %q is run by another runtime (its namespace was handed over): Tether has no way into it", sb.rec.Name)
	}
	spec, anc, err := e.execNamespaces(sb)
	if err != nil {
		return nil, err
	}
	defer anc.close()
	spec.Args, spec.Dir = x.Args, x.Dir
	spec.Env = append([]string{defaultPath, "HOSTNAME=" + sb.rec.Hostname}, x.Env...)
	spec.Stdin, spec.Stdout, spec.Stderr = x.Stdin, x.Stdout, x.Stderr
	var logf *os.File
	if x.Detach {
		logf, err = os.OpenFile(filepath.Join(e.sbDir, sb.rec.ID, "output.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("open output log of %q: %w", sb.rec.Name, err)
		}
		spec.Stdin, spec.Stdout, spec.Stderr = nil, logf, logf
	}
	firstFiles := spec.New != nil && !sb.rec.Files
	if firstFiles {
		e.serveBeforeFirst(sb)
	}
	p, err := proc.Start(spec)
	if logf != nil {
		logf.Close() // the child holds its own copy
	}
	if err == nil && spec.NetNS != sb.rec.NetNS && procStartTime(anc.pid) != anc.start {
		// Degraded: the netns was entered through the anchor's /proc link,
		// and the anchor is gone; the PID may have named another process.
		_ = p.Signal(syscall.SIGKILL)
		_, _ = p.Wait()
		err = fmt.Errorf("its last process exited while the command started: %w", errDegraded)
	}
	if err != nil {
		if firstFiles {
			e.refreshNames(sb) // no process, no files: the resolver stops again
		}
		err = fmt.Errorf("start %q in sandbox %q: %w", x.Args[0], sb.rec.Name, err)
		if x.Main && sb.rec.AutoRemove {
			if rerr := e.removeLocked(ctx, sb); rerr != nil {
				e.log.Warn("auto-remove sandbox", "sandbox", sb.rec.Name, "err", rerr)
			}
		}
		return nil, err
	}
	if err := e.fault("exec.after-start"); err != nil {
		return nil, err
	}
	r := &Running{PID: p.Pid, Done: make(chan struct{})}
	rec := ProcRecord{PID: p.Pid, StartTime: procStartTime(p.Pid), Args: x.Args, Main: x.Main}
	e.mu.Lock()
	first := !sb.rec.Files && spec.New != nil
	sb.rec.Files = sb.rec.Files || spec.New != nil
	sb.procs[p.Pid] = p
	sb.rec.Procs = append(sb.rec.Procs, rec)
	err = e.commit(ctx, e.putJSON(keySandboxes+sb.rec.ID, sb.rec))
	e.mu.Unlock()
	if err != nil {
		e.log.Warn("record process", "sandbox", sb.rec.Name, "pid", p.Pid, "err", err)
	}
	if first {
		e.refreshNames(sb) // the embedded resolver, started before the process, now with the files recorded
	}
	e.publishProcStarted(sb, p, rec)
	p.OnExit(func(code int, err error) { e.reaped(sb, p, r, x.Main, code, err) })
	return r, nil
}

// execNamespaces chooses the namespaces of a new command in the sandbox:
//   - an adopted sandbox: its network namespace only (its runtime owns the rest);
//   - a recorded process still runs: its mount and UTS namespaces (the
//     returned anchor holds them open; the caller closes it);
//   - none runs: new mount and UTS namespaces with the sandbox's files
//     bind-mounted and its hostname set (written first).
//
// The network namespace is the sandbox's file; when that is lost and could
// not be bound again (a degraded sandbox), the anchor's. Called with sb.op
// held.
func (e *Engine) execNamespaces(sb *sbState) (proc.Spec, *anchor, error) {
	rec := sb.rec
	spec := proc.Spec{NetNS: rec.NetNS}
	if rec.Adopted {
		return spec, nil, nil
	}
	anc := e.findAnchor(sb)
	if !rec.HostNet && !e.nsx.IsNSFile(rec.NetNS) {
		if anc == nil {
			return spec, nil, fmt.Errorf("run in sandbox %q: its network namespace file %s is lost and none of its processes runs: %w", rec.Name, rec.NetNS, errDegraded)
		}
		spec.NetNS = netns.ProcNSPath(anc.pid, "net")
	}
	if anc != nil {
		spec.MntNS, spec.UTSNS = anc.mnt, anc.uts
		return spec, anc, nil
	}
	if err := e.writeFiles(rec); err != nil {
		return spec, nil, err
	}
	spec.New = &proc.NewNS{Hostname: rec.Hostname, Files: e.sandboxFiles(rec.ID), NSDir: e.nsDir}
	return spec, nil, nil
}

// reaped forgets an exited process (proc's reaper calls it: no goroutine
// waits while the process runs), and removes an auto-remove sandbox when its
// main process has exited.
func (e *Engine) reaped(sb *sbState, p *proc.Process, r *Running, main bool, code int, err error) {
	e.publishProcDied(sb, p, main, code)
	if err != nil {
		e.log.Debug("wait", "pid", p.Pid, "err", err)
	}
	r.ExitCode = code
	ctx := context.Background()
	sb.op.Lock()
	if !sb.gone {
		e.mu.Lock()
		delete(sb.procs, p.Pid)
		kept := sb.rec.Procs[:0]
		for _, pr := range sb.rec.Procs {
			if pr.PID != p.Pid {
				kept = append(kept, pr)
			}
		}
		sb.rec.Procs = kept
		if err := e.commit(ctx, e.putJSON(keySandboxes+sb.rec.ID, sb.rec)); err != nil {
			e.log.Warn("record process exit", "sandbox", sb.rec.Name, "err", err)
		}
		e.mu.Unlock()
		if main && sb.rec.AutoRemove {
			e.killProcs(sb)
			if err := e.removeLocked(ctx, sb); err != nil {
				e.log.Warn("auto-remove sandbox", "sandbox", sb.rec.Name, "err", err)
			}
		}
	}
	sb.op.Unlock()
	close(r.Done)
}

// liveProcs lists the recorded processes that still run (PID and start time
// both match, so a reused PID is never mistaken for ours).
func (e *Engine) liveProcs(sb *sbState) []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var live []int
	for _, pr := range sb.rec.Procs {
		if pr.running() {
			live = append(live, pr.PID)
		}
	}
	return live
}

// killProcs sends SIGKILL to the live processes Tether started in the
// sandbox and waits (at most 5 s) until they have exited.
func (e *Engine) killProcs(sb *sbState) {
	pids := e.liveProcs(sb)
	e.markKilled(sb, pids)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for procExists(pid) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	e.awaitDieEvents(sb, pids, deadline)
}

func procExists(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; it only waits for its parent to reap it.
	i := strings.LastIndexByte(string(st), ')')
	return i < 0 || i+2 >= len(st) || st[i+2] != 'Z'
}

// running reports whether the recorded process still runs: its PID is live
// with the recorded start time, so a reused PID is never taken for it.
func (pr ProcRecord) running() bool {
	return pr.StartTime != 0 && procStartTime(pr.PID) == pr.StartTime
}

// procStartTime reads field 22 of /proc/PID/stat (start time in clock ticks
// since boot); 0 when the process is gone.
func procStartTime(pid int) uint64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(st)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(fields[19], 10, 64)
	return v
}
