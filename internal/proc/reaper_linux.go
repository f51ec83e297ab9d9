package proc

// The reaper: one goroutine and one epoll set notice the exit of every
// process Start started, so a running process costs no goroutine and no OS
// thread while it runs.
//
// Waiting the usual way (exec.Cmd.Wait, os.Process.Wait) blocks an OS
// thread in waitid(2) for the whole life of the process: the Go runtime
// hands the thread's P to another thread and starts a new one when it needs
// it, so a daemon with N running processes holds N parked threads, each
// with its pthread stack pages, a 32 KiB signal stack and the runtime's M
// (about 50 KiB of RSS each, bench/memory). Instead, Start asks clone for a
// pidfd (CLONE_PIDFD, SysProcAttr.PidFD), which becomes readable when the
// process exits (Linux 5.3), and adds it to the reaper's epoll set. The
// epoll fd itself is registered with Go's netpoller, so the reaper's
// goroutine parks without a thread until some process exits; it then
// removes those pidfds from the set and hands each Process to a
// short-lived goroutine that reaps it (the wait returns at once: the
// process is a zombie), waits for its stdio copies, closes the pidfd and
// runs its exit callback.
//
// Only the processes Start made are watched: the reaper never calls
// wait(-1), so the daemon's other children (ip, modprobe, ...) are still
// reaped by whoever started them. Where pidfds or epoll are missing, Start
// falls back to a goroutine blocked in the wait per process.

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reaper watches the pidfds of running processes.
type reaper struct {
	mu    sync.Mutex
	ep    *os.File           // epoll set, registered with the netpoller; nil until first use
	err   error              // why the reaper cannot work (then every add fails)
	procs map[int32]*Process // by pidfd
}

var reap reaper

// add watches p.pidfd; when add fails the caller must wait for p another way.
func (r *reaper) add(p *Process) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ep == nil && r.err == nil {
		r.err = r.start()
	}
	if r.err != nil {
		return r.err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p.pidfd)}
	if err := unix.EpollCtl(int(r.ep.Fd()), unix.EPOLL_CTL_ADD, p.pidfd, &ev); err != nil {
		return fmt.Errorf("watch pidfd: %w", err)
	}
	r.procs[int32(p.pidfd)] = p
	return nil
}

// start makes the epoll set and the goroutine that waits on it.
func (r *reaper) start() error {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return fmt.Errorf("epoll set non-blocking: %w", err)
	}
	ep := os.NewFile(uintptr(fd), "proc-reaper") // non-blocking: on the netpoller
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return fmt.Errorf("epoll raw conn: %w", err)
	}
	r.ep, r.procs = ep, map[int32]*Process{}
	go r.loop(rc)
	return nil
}

// loop waits until the epoll set has events and finishes the processes
// that exited. If waiting fails (it should not), every watched process gets
// a goroutine that waits for it the blocking way, and later adds fail.
func (r *reaper) loop(rc syscall.RawConn) {
	events := make([]unix.EpollEvent, 32)
	for {
		var exited []*Process
		var werr error
		err := rc.Read(func(fd uintptr) bool {
			n, err := unix.EpollWait(int(fd), events, 0)
			switch {
			case errors.Is(err, unix.EINTR):
				return false
			case err != nil:
				werr = err
				return true
			case n == 0:
				return false // nothing yet: park until the set is readable
			}
			exited = r.take(events[:n])
			return true
		})
		for _, p := range exited {
			go p.finish()
		}
		if err == nil {
			err = werr
		}
		if err != nil {
			r.fail(fmt.Errorf("epoll_wait: %w", err))
			return
		}
	}
}

// take removes the exited processes' pidfds from the set (finish closes
// them once the process is reaped).
func (r *reaper) take(events []unix.EpollEvent) []*Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	exited := make([]*Process, 0, len(events))
	for _, ev := range events {
		p := r.procs[ev.Fd]
		if p == nil {
			continue
		}
		delete(r.procs, ev.Fd)
		_ = unix.EpollCtl(int(r.ep.Fd()), unix.EPOLL_CTL_DEL, p.pidfd, nil)
		exited = append(exited, p)
	}
	return exited
}

// fail stops the reaper: the processes it watched are waited for one
// goroutine each.
func (r *reaper) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
	for fd, p := range r.procs {
		delete(r.procs, fd)
		go p.finish()
	}
}

// watched is how many processes the reaper watches (for tests).
func (r *reaper) watched() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.procs)
}
