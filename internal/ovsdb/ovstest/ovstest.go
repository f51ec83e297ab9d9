// Package ovstest runs a private Open vSwitch for tests: ovsdb-server with
// its own database file made by `ovsdb-tool create` and its own unix
// socket, and ovs-vswitchd inside a network namespace the test made, both
// child processes of the test, killed by PID at cleanup. Nothing uses the
// system's /run/openvswitch: OVS_RUNDIR, OVS_DBDIR, OVS_LOGDIR and
// OVS_SYSCONFDIR point into a private directory, and the pid files and
// control sockets are named there.
//
// The binaries come from Debian's openvswitch-switch (installed, never
// started as a service). Without them a test is skipped, or fails under
// TETHER_E2E=1.
package ovstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/ovsdb"
	"github.com/tether-net/tether/internal/testutil"
)

// Schema is the Open_vSwitch database schema openvswitch-common installs.
const Schema = "/usr/share/openvswitch/vswitch.ovsschema"

// startWait bounds how long a daemon may take to start (a liveness bound,
// not a measurement).
const startWait = 20 * time.Second

// Server is a running private OVS.
type Server struct {
	Dir  string // private directory: database, sockets, logs
	Addr string // "unix:" + the database socket
	ns   string // namespace of ovs-vswitchd ("": none started)
	db   *exec.Cmd
	vs   *exec.Cmd
}

// StartDB starts ovsdb-server alone (no root needed: no namespace, no
// datapath) with a fresh database holding its root row, and returns its
// address "unix:PATH". The server is killed at the test's end.
func StartDB(t testing.TB) string {
	t.Helper()
	return start(t).Addr
}

// Start starts ovsdb-server and ovs-vswitchd, the latter in the network
// namespace nsName (made by the test, e.g. testutil.NetNS, before Start so
// that it outlives the daemons), and returns the database address
// "unix:PATH" and a function that kills ovs-vswitchd (SIGKILL, as a crash)
// and starts it again, returning once it has applied the database.
func Start(t testing.TB, nsName string) (dbSocket string, restartVSwitchd func()) {
	t.Helper()
	testutil.RequireRoot(t)
	s := start(t)
	s.ns = nsName
	s.startVSwitchd(t)
	return s.Addr, func() {
		t.Helper()
		s.killVSwitchd(t)
		s.startVSwitchd(t)
	}
}

func requireBinaries(t testing.TB) {
	t.Helper()
	for _, b := range []string{"ovsdb-tool", "ovsdb-server", "ovs-vswitchd"} {
		if _, err := exec.LookPath(b); err != nil {
			if testutil.E2E() {
				t.Fatalf("%s not found (apt-get install openvswitch-switch): %v", b, err)
			}
			t.Skipf("%s not found (apt-get install openvswitch-switch)", b)
		}
	}
	if _, err := os.Stat(Schema); err != nil {
		t.Fatalf("OVS schema: %v", err)
	}
}

func start(t testing.TB) *Server {
	t.Helper()
	requireBinaries(t)
	// Not t.TempDir(): a unix socket path is at most 107 bytes, and test
	// names make long directory names.
	dir, err := os.MkdirTemp("", "tovs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s := &Server{Dir: dir, Addr: "unix:" + filepath.Join(dir, "db.sock")}
	db := filepath.Join(dir, "conf.db")
	if out, err := exec.Command("ovsdb-tool", "create", db, Schema).CombinedOutput(); err != nil {
		t.Fatalf("ovsdb-tool create: %v\n%s", err, out)
	}
	s.db = s.command(t, "ovsdb-server.log", "", "ovsdb-server", db, "--remote=punix:"+filepath.Join(dir, "db.sock"),
		"--pidfile="+filepath.Join(dir, "ovsdb-server.pid"), "--unixctl="+filepath.Join(dir, "ovsdb-server.ctl"), "--no-chdir")
	t.Cleanup(func() { s.stop(t, s.db, "ovsdb-server") })
	ctx, cancel := context.WithTimeout(context.Background(), startWait)
	defer cancel()
	c := s.dial(ctx, t)
	defer c.Close()
	if err := c.Init(ctx); err != nil {
		t.Fatalf("ovsdb-server: %v", err)
	}
	return s
}

// command starts a daemon in the foreground as a child process, its
// output in dir/log, in namespace ns ("" the test's own).
func (s *Server) command(t testing.TB, log, ns, name string, args ...string) *exec.Cmd {
	t.Helper()
	if ns != "" {
		args = append([]string{"netns", "exec", ns, name}, args...)
		name = "ip" // ip netns exec execs the daemon: the child's PID is the daemon's
	}
	out, err := os.OpenFile(filepath.Join(s.Dir, log), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "OVS_RUNDIR="+s.Dir, "OVS_DBDIR="+s.Dir, "OVS_LOGDIR="+s.Dir, "OVS_SYSCONFDIR="+s.Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive a crashed test
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return cmd
}

// dial connects to the server, retrying until it listens or ctx ends.
func (s *Server) dial(ctx context.Context, t testing.TB) *ovsdb.Client {
	t.Helper()
	for {
		c, err := ovsdb.Dial(ctx, s.Addr)
		if err == nil {
			return c
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ovsdb-server did not listen on %s: %v\n%s", s.Addr, err, s.logTail("ovsdb-server.log"))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) startVSwitchd(t testing.TB) {
	t.Helper()
	s.vs = s.command(t, "ovs-vswitchd.log", s.ns, "ovs-vswitchd", s.Addr,
		"--pidfile="+filepath.Join(s.Dir, "ovs-vswitchd.pid"), "--unixctl="+filepath.Join(s.Dir, "ovs-vswitchd.ctl"), "--no-chdir")
	vs := s.vs
	t.Cleanup(func() { s.stop(t, vs, "ovs-vswitchd") })
	ctx, cancel := context.WithTimeout(context.Background(), startWait)
	defer cancel()
	c := s.dial(ctx, t)
	defer c.Close()
	if err := c.Applied(ctx); err != nil {
		t.Fatalf("ovs-vswitchd: %v\n%s", err, s.logTail("ovs-vswitchd.log"))
	}
}

// killVSwitchd kills ovs-vswitchd as a crash would (SIGKILL: no cleanup
// of its devices) and waits for it.
func (s *Server) killVSwitchd(t testing.TB) {
	t.Helper()
	if err := s.vs.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill ovs-vswitchd: %v", err)
	}
	_ = s.vs.Wait()
	// A killed daemon leaves its pid file and control socket behind.
	_ = os.Remove(filepath.Join(s.Dir, "ovs-vswitchd.pid"))
	_ = os.Remove(filepath.Join(s.Dir, "ovs-vswitchd.ctl"))
}

// stop ends a daemon by its PID (SIGTERM, then SIGKILL) unless it has
// ended already.
func (s *Server) stop(t testing.TB, cmd *exec.Cmd, name string) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Logf("%s (pid %d) ignored SIGTERM; killed", name, cmd.Process.Pid)
	}
}

func (s *Server) logTail(name string) string {
	b, err := os.ReadFile(filepath.Join(s.Dir, name))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Installed reports whether the OVS binaries are there.
func Installed() bool {
	for _, b := range []string{"ovsdb-tool", "ovsdb-server", "ovs-vswitchd"} {
		if _, err := exec.LookPath(b); err != nil {
			return false
		}
	}
	return true
}
