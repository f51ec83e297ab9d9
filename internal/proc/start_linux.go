package proc

// Start: a command inside a sandbox.
//
// The command is started as this binary re-executed with _TETHER_NSENTER
// naming the sandbox's namespaces, so it is in them before any Go code
// runs; mount and UTS namespaces to join are passed as open files (fds 4
// and 5, named /proc/self/fd/N to the constructor), so a PID reused between
// the caller's check and the child's start cannot slip another process's
// namespaces in. With Spec.New the helper is cloned into new mount and UTS
// namespaces and sets them up first (newns_linux.go). The helper then
// changes to the working directory, looks the command up in $PATH as seen
// inside the sandbox, and execve()s it. A status pipe (close-on-exec) tells
// Start whether entering worked: the nsenter constructor or the set-up
// writes its error there, and a successful execve closes it.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Process is a command started in a sandbox. While it runs it costs no
// goroutine and no OS thread: the reaper (reaper_linux.go) notices its exit.
type Process struct {
	Pid   int
	proc  *os.Process // Go's handle; nil when pidfd alone serves (no stdio copies)
	cmd   *exec.Cmd   // kept only when its Wait must also wait for stdio copies
	pidfd int         // from clone, watched by the reaper; closed (-1) once reaped

	mu     sync.Mutex
	done   chan struct{} // closed once the process is reaped
	code   int
	err    error
	onExit func(exitCode int, err error)
}

// Start starts spec.Args in the sandbox: in spec.NetNS and, when set,
// spec.UTSNS and spec.MntNS, in a new session (setsid) so that signals for
// the caller's process group do not reach it, with spec's stdio, environment
// and working directory. A command that cannot be found or run is not an
// error here: the Process exits with ExitNotFound or ExitCannotInvoke after
// writing the reason to spec.Stderr. Failing to enter the namespaces is.
func Start(spec Spec) (*Process, error) {
	if err := checkStart(spec); err != nil {
		return nil, fmt.Errorf("start in sandbox: %w", err)
	}
	var conf []byte
	if spec.New != nil && spec.MntNS == nil {
		n, err := checkNew(*spec.New)
		if err != nil {
			return nil, fmt.Errorf("start in sandbox: new namespaces: %w", err)
		}
		if conf, err = json.Marshal(n); err != nil {
			return nil, fmt.Errorf("start in sandbox: %w", err)
		}
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start in sandbox: %w", err)
	}
	defer statusR.Close()
	pidfd := -1 // CLONE_PIDFD: the reaper watches it
	cmd := &exec.Cmd{
		Path:        selfExe,
		Args:        append([]string{"tether-exec", spec.Dir}, spec.Args...),
		Env:         execEnv(spec, conf),
		Stdin:       spec.Stdin,
		Stdout:      spec.Stdout,
		Stderr:      spec.Stderr,
		ExtraFiles:  []*os.File{statusW}, // fd 3
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, PidFD: &pidfd},
	}
	switch {
	case spec.MntNS != nil:
		cmd.ExtraFiles = append(cmd.ExtraFiles, spec.MntNS, spec.UTSNS) // fds 4 and 5
	case conf != nil:
		cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS
	}
	err = cmd.Start()
	statusW.Close()
	if err != nil {
		return nil, fmt.Errorf("start %q in sandbox: %w", spec.Args[0], err)
	}
	msg, _ := io.ReadAll(statusR) // EOF at execve or exit
	if len(msg) > 0 {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		_ = cmd.Wait()
		return nil, fmt.Errorf("start %q in sandbox: %s", spec.Args[0], strings.TrimSpace(string(msg)))
	}
	return supervise(cmd, pidfd), nil
}

// supervise hands a started command to the reaper, or, when that cannot
// watch it, to a goroutine that waits for it. When no stdio is copied the
// Cmd is dropped and Go's own handle of the process released: the pidfd
// from clone signals and watches it, and the reaping is a wait4 on the PID
// (safe: an unreaped child's PID is never reused), so a running process
// holds one descriptor, not two.
func supervise(cmd *exec.Cmd, pidfd int) *Process {
	p := &Process{Pid: cmd.Process.Pid, proc: cmd.Process, pidfd: pidfd, done: make(chan struct{})}
	switch {
	case copiesStdio(cmd):
		p.cmd = cmd
	case pidfd >= 0:
		_ = cmd.Process.Release()
		p.proc = nil
	}
	if pidfd < 0 || reap.add(p) != nil {
		go p.finish()
	}
	return p
}

// copiesStdio reports whether exec.Cmd runs goroutines copying the
// command's stdio (a reader or writer that is not a file), which its Wait
// waits for. Without them the Cmd is not kept: os.Process waits alone.
func copiesStdio(cmd *exec.Cmd) bool {
	for _, s := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		if _, file := s.(*os.File); s != nil && !file {
			return true
		}
	}
	return false
}

func checkStart(spec Spec) error {
	switch {
	case len(spec.Args) == 0 || spec.Args[0] == "":
		return errors.New("no command")
	case spec.NetNS == "":
		return errors.New("NetNS is required")
	case (spec.MntNS == nil) != (spec.UTSNS == nil):
		return errors.New("MntNS and UTSNS go together")
	case spec.Dir != "" && !filepath.IsAbs(spec.Dir):
		return fmt.Errorf("working directory %q is not absolute", spec.Dir)
	}
	return nil
}

// execEnv is the helper's environment: the command's, with a default PATH,
// plus the helper and nsenter variables (which the helper removes).
func execEnv(spec Spec, newNS []byte) []string {
	env := make([]string, 0, len(spec.Env)+4)
	hasPath := false
	for _, kv := range spec.Env {
		if strings.HasPrefix(kv, "_TETHER_") {
			continue
		}
		hasPath = hasPath || strings.HasPrefix(kv, "PATH=")
		env = append(env, kv)
	}
	if !hasPath {
		env = append(env, defaultPath)
	}
	ns := "net=" + spec.NetNS
	if spec.MntNS != nil {
		ns += ",mnt=/proc/self/fd/4,uts=/proc/self/fd/5"
	} else if newNS != nil {
		env = append(env, configEnv+"="+string(newNS))
	}
	return append(env, modeEnv+"=exec", nsenterEnv+"="+ns, nsenterErrFD+"=3")
}

// Wait waits for the process to exit and returns its exit status, or
// 128+N when it was killed by signal N. err is set only when waiting (or
// copying non-file stdio) failed. It parks the calling goroutine only (no
// OS thread), and may be called any number of times.
func (p *Process) Wait() (exitCode int, err error) {
	<-p.done
	return p.code, p.err
}

// OnExit has fn called once, on a goroutine of its own, with what Wait
// returns when the process has exited (at once if it has). It replaces any
// fn set before. Unlike a goroutine blocked in Wait, a process waited for
// this way costs no goroutine while it runs.
func (p *Process) OnExit(fn func(exitCode int, err error)) {
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		go fn(p.code, p.err)
		return
	default:
	}
	p.onExit = fn
	p.mu.Unlock()
}

// Signal sends sig to the process (through a pidfd of it where the kernel
// has them, so never to another process that reused its PID). After the
// process was reaped it returns os.ErrProcessDone.
func (p *Process) Signal(sig os.Signal) error {
	if p.proc != nil {
		return p.proc.Signal(sig)
	}
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("signal %v: not a syscall.Signal", sig)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 {
		return os.ErrProcessDone
	}
	if err := unix.PidfdSendSignal(p.pidfd, s, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return os.ErrProcessDone
		}
		return fmt.Errorf("signal %v to pid %d: %w", sig, p.Pid, err)
	}
	return nil
}

// finish reaps the exited process (or waits for it, without the reaper),
// records its status, and runs the exit callback.
func (p *Process) finish() {
	code, err := p.reap()
	p.mu.Lock()
	p.code, p.err = code, err
	p.cmd = nil
	p.closePidfd()
	fn := p.onExit
	p.onExit = nil
	close(p.done)
	p.mu.Unlock()
	if fn != nil {
		fn(code, err)
	}
}

func (p *Process) reap() (int, error) {
	var st *os.ProcessState
	var err error
	switch {
	case p.cmd != nil:
		err = p.cmd.Wait()
		st = p.cmd.ProcessState
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = nil
		}
	case p.proc != nil:
		st, err = p.proc.Wait()
	default:
		var ws unix.WaitStatus
		for {
			_, err = unix.Wait4(p.Pid, &ws, 0, nil)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		if err != nil {
			return -1, fmt.Errorf("wait for pid %d: %w", p.Pid, err)
		}
		return exitStatus(syscall.WaitStatus(ws)), nil
	}
	if st == nil {
		return -1, err
	}
	ws, _ := st.Sys().(syscall.WaitStatus)
	return exitStatus(ws), err
}

// exitStatus is the status a shell reports: the exit status, or 128+N
// after signal N.
func exitStatus(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func (p *Process) closePidfd() {
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// runExecHelper is the helper's side: already inside the namespaces, it
// execs the command or returns an exit status.
func runExecHelper() int {
	status := os.NewFile(3, "status")
	if nsenterMissing() {
		fmt.Fprintf(status, "%s\n", nsenterMissingMsg)
		return ExitEnterFailed
	}
	if conf, ok := os.LookupEnv(configEnv); ok {
		os.Unsetenv(configEnv)
		if err := setupNamespaces(conf); err != nil {
			fmt.Fprintf(status, "set up new namespaces: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
			return ExitEnterFailed
		}
	}
	// The status pipe closes at execve; the namespace files joined (fds 4
	// and 5, when given) must not reach the command either.
	for fd := 3; fd <= 5; fd++ {
		unix.CloseOnExec(fd)
	}
	os.Unsetenv(modeEnv)
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "tether: exec helper: no command")
		return ExitCannotInvoke
	}
	dir, args := os.Args[1], os.Args[2:]
	if dir == "" {
		dir = "/"
	}
	if err := os.Chdir(dir); err != nil {
		fmt.Fprintf(os.Stderr, "tether: chdir to %q: %v\n", dir, err)
		return ExitCannotInvoke
	}
	path, err := exec.LookPath(args[0])
	if errors.Is(err, exec.ErrDot) {
		err = nil
	}
	if err == nil {
		err = syscall.Exec(path, args, os.Environ())
		err = fmt.Errorf("exec %q: %w", path, err)
	}
	fmt.Fprintf(os.Stderr, "tether: %v\n", err)
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return ExitNotFound
	}
	return ExitCannotInvoke
}
