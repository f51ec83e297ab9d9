package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// EtcdBinary is Debian's etcd-server (3.4), which .ci/run installs.
const EtcdBinary = "/usr/bin/etcd"

// Etcd is a one-member etcd server run by a test inside a namespace of its
// own, with its data in a temporary directory. It is killed when the test
// ends (and when the test process dies: Pdeathsig).
type Etcd struct {
	tb      testing.TB
	NS      string // namespace it runs in
	Addr    string // client address, HOST:PORT
	dir     string
	cmd     *exec.Cmd
	log     *SyncBuffer
	stopped bool
}

// StartEtcd runs etcd in member m's namespace, listening for clients on
// m.Addr:2379, and waits until it accepts connections. Under TETHER_E2E=1 a
// missing binary is a failure.
func StartEtcd(tb testing.TB, m Member) *Etcd {
	tb.Helper()
	if _, err := os.Stat(EtcdBinary); err != nil {
		if E2E() {
			tb.Fatalf("TETHER_E2E=1 needs %s (Debian etcd-server): %v", EtcdBinary, err)
		}
		tb.Skipf("%s not installed", EtcdBinary)
	}
	e := &Etcd{tb: tb, NS: m.NS, Addr: m.Addr + ":2379", dir: tb.TempDir()}
	tb.Cleanup(e.Stop)
	e.Start()
	return e
}

// URL is the etcd:// cluster-store URL of this server.
func (e *Etcd) URL() string { return "etcd://" + e.Addr }

// Start (re)starts the server on the same data directory.
func (e *Etcd) Start() {
	e.tb.Helper()
	client := "http://" + e.Addr
	e.log = &SyncBuffer{}
	e.cmd = exec.Command("nsenter", "--net=/run/netns/"+e.NS, "--", EtcdBinary,
		"--name", "m0", "--data-dir", filepath.Join(e.dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "m0=http://127.0.0.1:2380", "--initial-cluster-state", "new",
		"--heartbeat-interval", "50", "--election-timeout", "500")
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		e.tb.Fatalf("start etcd: %v", err)
	}
	e.stopped = false
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := DialInNS(bgCtx(), e.NS, "tcp", e.Addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.tb.Fatalf("etcd did not answer on %s within 15s:\n%s", e.Addr, e.log.String())
}

// Stop kills the server (SIGKILL: an outage, not a shutdown) and waits.
func (e *Etcd) Stop() {
	if e.stopped || e.cmd == nil || e.cmd.Process == nil {
		return
	}
	e.stopped = true
	_ = e.cmd.Process.Kill()
	_ = e.cmd.Wait()
}

// Log is the server's output.
func (e *Etcd) Log() string { return e.log.String() }

// PortOpen reports whether something accepts connections on addr inside ns.
func PortOpen(ns, addr string) bool {
	c, err := DialInNS(bgCtx(), ns, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func bgCtx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = cancel // released by the timeout
	return ctx
}
