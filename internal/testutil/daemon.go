package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// StartMode is how the harness puts a daemon into its host namespace: the
// ways users start it. Only StartNsenter keeps the caller's mount namespace;
// the others give each start a new one, as `ip netns exec` and systemd units
// with PrivateMounts=/PrivateTmp=/ProtectSystem= do.
type StartMode string

const (
	// StartNsenter: nsenter --net=/run/netns/NS (the test's mount namespace).
	StartNsenter StartMode = "nsenter"
	// StartIPNetns: ip netns exec NS (a new mount namespace per start, / made
	// rslave, /sys remounted).
	StartIPNetns StartMode = "ipnetns"
	// StartUnshare: unshare -m --propagation slave, then nsenter --net (a new
	// mount namespace per start, as systemd's PrivateMounts= makes one).
	StartUnshare StartMode = "unshare"
)

// StartModes are the modes restart tests run under.
func StartModes() []StartMode { return []StartMode{StartNsenter, StartIPNetns, StartUnshare} }

// Daemon is a tether daemon started by a test inside a test-owned network
// namespace (the daemon's "host"). With Mode StartNsenter (the default) it
// stays in the test's mount namespace; the other modes give every start a
// mount namespace of its own.
type Daemon struct {
	t       testing.TB
	Bin     string
	NS      string // network namespace standing for the host
	Dir     string // data-root, exec-root, socket, pidfile, log live here
	Socket  string
	Args    []string  // extra daemon flags
	Config  string    // daemon.json content ("" = none)
	Env     []string  // extra environment of the daemon (KEY=VALUE), read at Start
	Mode    StartMode // how Start enters NS ("" = StartNsenter), read at Start
	cmd     *exec.Cmd
	log     *SyncBuffer
	stopped atomic.Bool

	// Activated are listening sockets handed to the daemon as systemd does
	// (socket activation): fds 3, 4, ... with LISTEN_FDS and LISTEN_PID set
	// to the daemon's own pid. The harness socket is served too.
	Activated []*os.File
}

// SyncBuffer is a bytes.Buffer safe for a writer on another goroutine (a
// daemon's or server's log) and the test's reads. Sync makes it a zap
// WriteSyncer (the embedded etcd's log).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Sync does nothing: the buffer holds everything written.
func (s *SyncBuffer) Sync() error { return nil }

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// NewDaemon prepares (but does not start) a daemon in namespace ns.
func NewDaemon(t testing.TB, ns string, args ...string) *Daemon {
	t.Helper()
	bin := Binary(t)
	dir, err := os.MkdirTemp("", "tether-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{t: t, Bin: bin, NS: ns, Dir: dir, Socket: filepath.Join(dir, "tether.sock"), Args: args}
	t.Cleanup(d.cleanup)
	return d
}

// StartDaemon prepares and starts a daemon and waits until it answers.
func StartDaemon(t testing.TB, ns string, args ...string) *Daemon {
	t.Helper()
	d := NewDaemon(t, ns, args...)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return d
}

// daemonArgs is the daemon's command line (binary first).
func (d *Daemon) daemonArgs() []string {
	args := []string{d.Bin, "daemon",
		"--data-root", filepath.Join(d.Dir, "data"), "--exec-root", filepath.Join(d.Dir, "exec"),
		"-H", "unix://" + d.Socket, "--pidfile", filepath.Join(d.Dir, "tether.pid")}
	if d.Config != "" {
		cf := filepath.Join(d.Dir, "daemon.json")
		if err := os.WriteFile(cf, []byte(d.Config), 0o644); err != nil {
			d.t.Fatal(err)
		}
		args = append(args, "--config-file", cf)
	} else {
		// an explicit --config-file must exist: an empty object keeps the
		// host's /etc/tether/daemon.json out of the test
		cf := filepath.Join(d.Dir, "empty.json")
		if err := os.WriteFile(cf, []byte("{}"), 0o644); err != nil {
			d.t.Fatal(err)
		}
		args = append(args, "--config-file", cf)
	}
	return append(args, d.Args...)
}

// launcher is the command that enters d.NS the way d.Mode says and execs
// the daemon in place (nsenter with only --net, ip netns exec and unshare
// all exec their command), so the pid stays the daemon's.
func (d *Daemon) launcher() []string {
	switch d.Mode {
	case StartIPNetns:
		return []string{"ip", "netns", "exec", d.NS}
	case StartUnshare:
		return []string{"unshare", "-m", "--propagation", "slave", "nsenter", "--net=/run/netns/" + d.NS, "--"}
	case "", StartNsenter:
		return []string{"nsenter", "--net=/run/netns/" + d.NS, "--"}
	default:
		d.t.Fatalf("unknown start mode %q", d.Mode)
		return nil
	}
}

// command runs the daemon in d.NS through the launcher. With Activated
// sockets a shell first sets LISTEN_PID to its own pid and execs the
// launcher.
func (d *Daemon) command() *exec.Cmd {
	args := append(d.launcher(), d.daemonArgs()...)
	cmd := exec.Command(args[0], args[1:]...)
	if len(d.Activated) > 0 {
		script := fmt.Sprintf(`export LISTEN_PID=$$ LISTEN_FDS=%d; exec "$@"`, len(d.Activated))
		cmd = exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...)
		cmd.ExtraFiles = d.Activated
	}
	cmd.Env = append(os.Environ(), d.Env...)
	return cmd
}

// Start launches the daemon and waits until its API answers; it returns the
// daemon's error output when it exits early.
func (d *Daemon) Start() error {
	d.log = &SyncBuffer{}
	d.stopped.Store(false)
	d.cmd = d.command()
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			d.stopped.Store(true)
			return fmt.Errorf("daemon exited: %v\n%s", err, d.log.String())
		default:
		}
		if d.answers() {
			go func() { <-exited; d.stopped.Store(true) }()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("daemon did not answer within 15s:\n%s", d.log.String())
}

// answers reports whether the API answers GET /_ping on the harness socket.
// The daemon opens every listener before it serves any, so the others (TCP,
// fd://) accept connections by then too.
func (d *Daemon) answers() bool {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}
	resp, err := c.Get("http://tether/_ping")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Fails runs the daemon expecting it to refuse to start; it returns its output.
func (d *Daemon) Fails() (string, error) {
	cmd := d.command()
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return string(out), fmt.Errorf("daemon kept running; expected it to refuse to start")
	}
	if err == nil {
		return string(out), fmt.Errorf("daemon exited 0; expected a failure")
	}
	return string(out), nil
}

// Stop sends SIGTERM to the daemon (by PID) and waits for it to exit.
func (d *Daemon) Stop() {
	if d.cmd == nil || d.cmd.Process == nil || d.stopped.Load() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for !d.stopped.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !d.stopped.Load() {
		_ = d.cmd.Process.Kill()
		time.Sleep(100 * time.Millisecond)
	}
	d.stopped.Store(true)
}

// PID is the daemon's process ID (every launcher execs the daemon in place).
func (d *Daemon) PID() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Kill sends SIGKILL to the daemon (by PID, as `kill -9` does: no cleanup
// runs) and waits until it has exited. Safe to call from any goroutine.
func (d *Daemon) Kill() error {
	if d.cmd == nil || d.cmd.Process == nil || d.stopped.Load() {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	if !d.WaitExit(10 * time.Second) {
		return fmt.Errorf("daemon %d still runs 10s after SIGKILL", d.PID())
	}
	return nil
}

// WaitExit waits until the daemon process has exited (killed, or it killed
// itself) and reports whether it did within limit.
func (d *Daemon) WaitExit(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for !d.stopped.Load() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// Log returns what the daemon printed so far.
func (d *Daemon) Log() string {
	if d.log == nil {
		return ""
	}
	return d.log.String()
}

// Tether runs the CLI against this daemon.
func (d *Daemon) Tether(args ...string) (string, error) {
	cmd := exec.Command(d.Bin, append([]string{"-H", "unix://" + d.Socket}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		return out.String(), fmt.Errorf("tether %s: timed out", strings.Join(args, " "))
	}
}

// MustTether runs the CLI and fails the test on error.
func (d *Daemon) MustTether(args ...string) string {
	d.t.Helper()
	out, err := d.Tether(args...)
	if err != nil {
		d.t.Fatalf("tether %s: %v\n%s\ndaemon log:\n%s", strings.Join(args, " "), err, out, d.Log())
	}
	return out
}

// InspectJSON runs an inspect command and decodes its single element.
func (d *Daemon) InspectJSON(v any, args ...string) {
	d.t.Helper()
	out := d.MustTether(args...)
	var arr []json.RawMessage
	if err := json.Unmarshal([]byte(out), &arr); err != nil || len(arr) != 1 {
		d.t.Fatalf("decode %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := json.Unmarshal(arr[0], v); err != nil {
		d.t.Fatal(err)
	}
}

// cleanup removes every sandbox (killing the processes the daemon started),
// stops the daemon, unmounts its namespace files and deletes its directory.
func (d *Daemon) cleanup() {
	if d.cmd != nil && !d.stopped.Load() {
		if out, err := d.Tether("sandbox", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				if o, err := d.Tether("rm", "-f", id); err != nil {
					d.t.Errorf("cleanup: rm -f %s: %v %s", id, err, o)
				}
			}
		}
	}
	d.Stop()
	if err := UnmountUnder(d.Dir); err != nil {
		d.t.Errorf("cleanup: %v", err)
	}
	if m := Mounted(d.Dir); len(m) > 0 {
		d.t.Errorf("cleanup: mounts left under %s: %v", d.Dir, m)
	}
	if d.t.Failed() {
		d.t.Logf("daemon log:\n%s", d.Log())
	}
	os.RemoveAll(d.Dir)
}
