package clustersim

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/testutil"
)

// Server is the cluster store's server the agents share (etcd or
// ZooKeeper), run by the harness in a namespace of its own.
type Server interface {
	// Name is the server and its version, for reports.
	Name() string
	// Open opens one agent's client, its keys under prefix.
	Open(ctx context.Context, prefix string, logger *slog.Logger) (store.Store, error)
	// CPU is the server process's user + system time, every incarnation
	// (Restart) summed.
	CPU() time.Duration
	// DBSize is the size of what the server keeps on disk, in bytes (etcd:
	// its bbolt file; ZooKeeper: the blocks its data directory uses).
	DBSize() int64
	// RSSKiB is the running server's resident memory (-1 while down).
	RSSKiB() int64
	// Restart kills the server, leaves it down for down, and starts it
	// again on the same data directory and port; it returns when it was
	// killed and when it answered again.
	Restart(down time.Duration) (killed, up time.Time, err error)
}

// process is a store server's process across its incarnations (Restart
// kills one and starts the next): the running command, the CPU time of
// the ones that ended, and the output of all of them.
type process struct {
	name string // for errors: "etcd", "zookeeper"
	log  *testutil.SyncBuffer

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	pastCPU time.Duration
}

func newProcess(name string) process { return process{name: name, log: &testutil.SyncBuffer{}} }

// run starts cmd as the next incarnation (its output to the log, killed
// with the test process) and waits up to limit until ready answers.
func (p *process) run(cmd *exec.Cmd, limit time.Duration, ready func() bool) error {
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start:\n%s", p.name, p.logTail())
		default:
		}
		if ready() {
			return nil
		}
	}
	return fmt.Errorf("%s did not answer within %v:\n%s", p.name, limit, p.logTail())
}

func (p *process) logTail() string { return tail(p.log.String(), 4000) }

// PID is the running incarnation's process ID (-1 while down).
func (p *process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return -1
	}
	return p.cmd.Process.Pid
}

// CPU is the server's user + system time, every incarnation summed.
func (p *process) CPU() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return p.pastCPU
	}
	return p.pastCPU + procCPU(p.cmd.Process.Pid)
}

// RSSKiB is the running server's resident memory.
func (p *process) RSSKiB() int64 { return rssKiB(p.PID()) }

// restart kills the running incarnation (SIGKILL: an outage, not a
// shutdown), leaves the server down for down, and starts the next with
// start; it returns when the server was killed and when it answered again.
func (p *process) restart(down time.Duration, start func() error) (killed, up time.Time, err error) {
	p.kill()
	killed = time.Now()
	time.Sleep(down)
	if err := start(); err != nil {
		return killed, time.Time{}, err
	}
	return killed, time.Now(), nil
}

// kill ends the running incarnation and adds its CPU time to pastCPU.
func (p *process) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
	p.mu.Lock()
	if ps := cmd.ProcessState; ps != nil {
		p.pastCPU += ps.UserTime() + ps.SystemTime()
	}
	p.cmd = nil
	p.mu.Unlock()
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
