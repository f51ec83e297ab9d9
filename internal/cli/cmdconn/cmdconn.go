// Package cmdconn is a net.Conn over a child process: bytes written to the
// connection go to the process's stdin, bytes the process prints on stdout
// are read from it. The CLI reaches a remote daemon through
// `ssh HOST tether system dial-stdio` this way, one process per connection.
//
// The process's stderr is kept (its last few KiB) and named in the error a
// Read or Write returns once the process has failed, so "ssh: Could not
// resolve hostname" reaches the user instead of a bare EOF. Close kills the
// process and reaps it; CloseWrite closes its stdin, the half-close that
// tells `dial-stdio` on the far side that no more requests come.
package cmdconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// exitGrace is how long a Read or Write that hit the end of the pipe waits
// for the process to exit, to report its status and stderr.
const exitGrace = 2 * time.Second

// Conn is a connection to a child process's stdin and stdout.
type Conn struct {
	cmd    *exec.Cmd
	desc   string   // the command line, for errors and addresses
	stdin  *os.File // our end of the process's stdin
	stdout *os.File // our end of the process's stdout
	stderr *tail

	exited  chan struct{} // closed once Wait returned
	waitErr error         // Wait's result, valid after exited is closed

	closeOnce, closeWriteOnce sync.Once
	closeErr                  error
}

var _ net.Conn = (*Conn)(nil)

// New starts name with args and returns a connection to it. ctx only bounds
// the start: the process lives until Close (or until it exits by itself).
func New(ctx context.Context, name string, args ...string) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &Conn{desc: describe(name, args), stderr: newTail(4096), exited: make(chan struct{})}
	c.cmd = exec.Command(name, args...)
	c.cmd.Stderr = c.stderr
	c.cmd.SysProcAttr = sysProcAttr()
	// ssh with ControlPersist leaves a master holding stderr open: do not
	// let Wait block on it once the process itself has gone.
	c.cmd.WaitDelay = time.Second
	if err := c.start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.desc, err)
	}
	go c.wait()
	return c, nil
}

// start wires two pipes to the process and starts it; the process's ends of
// the pipes are closed here once it holds them.
func (c *Conn) start() error {
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	c.cmd.Stdin, c.cmd.Stdout = inR, outW
	err = c.cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return err
	}
	c.stdin, c.stdout = inW, outR
	return nil
}

func (c *Conn) wait() {
	c.waitErr = c.cmd.Wait()
	close(c.exited)
}

// Read reads what the process wrote to its stdout. At the end of the
// stream it reports the process's failure (exit status and stderr), if any.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.stdout.Read(p)
	return n, c.explain(err)
}

// Write writes to the process's stdin.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.stdin.Write(p)
	return n, c.explain(err)
}

// explain turns an I/O error into the process's failure when the process
// has exited unsuccessfully; deadlines and a clean exit pass unchanged.
func (c *Conn) explain(err error) error {
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) {
		return err
	}
	select {
	case <-c.exited:
	case <-time.After(exitGrace):
		return err
	}
	if c.waitErr == nil {
		return err
	}
	return &ExitError{Command: c.desc, Err: c.waitErr, Stderr: c.stderr.String()}
}

// CloseWrite closes the process's stdin: it reads EOF, the far side of a
// dial-stdio closes its write half towards the daemon.
func (c *Conn) CloseWrite() error {
	var err error
	c.closeWriteOnce.Do(func() { err = c.stdin.Close() })
	return err
}

// CloseRead closes our end of the process's stdout.
func (c *Conn) CloseRead() error { return c.stdout.Close() }

// Close closes both pipes, kills the process unless it already exited and
// waits for it, so no child is left behind. It is safe to call repeatedly.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.CloseWrite()
		_ = c.stdout.Close()
		select {
		case <-c.exited:
		default:
			if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				c.closeErr = fmt.Errorf("kill %s: %w", c.desc, err)
			}
		}
		<-c.exited
	})
	return c.closeErr
}

// Exited is closed once the process has exited and been reaped.
func (c *Conn) Exited() <-chan struct{} { return c.exited }

// SetDeadline sets the read and write deadlines of the pipes.
func (c *Conn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

// SetReadDeadline sets the deadline of reads from the process's stdout.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.stdout.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline of writes to the process's stdin.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.stdin.SetWriteDeadline(t) }

// LocalAddr and RemoteAddr name the command; pipes have no addresses.
func (c *Conn) LocalAddr() net.Addr  { return addr(c.desc) }
func (c *Conn) RemoteAddr() net.Addr { return addr(c.desc) }

type addr string

func (addr) Network() string  { return "cmd" }
func (a addr) String() string { return string(a) }

// ExitError is a process that failed while it carried a connection.
type ExitError struct {
	Command string
	Err     error  // from exec.Cmd.Wait, usually an *exec.ExitError
	Stderr  string // the end of what it printed on stderr
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Command, e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

func (e *ExitError) Unwrap() error { return e.Err }

func describe(name string, args []string) string {
	return strings.Join(append([]string{name}, args...), " ")
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

var _ io.Writer = (*tail)(nil)
