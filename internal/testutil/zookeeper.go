package testutil

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ZooKeeper's Debian package (zookeeper, 3.8), which .ci/run installs: the
// server classes and the slf4j binding that sends its log to stderr.
const (
	ZooKeeperJar   = "/usr/share/java/zookeeper.jar"
	zkSlf4jBinding = "/usr/share/java/slf4j-simple.jar"
	javaBinary     = "/usr/bin/java"
)

// ZooKeeperTick is the test server's tickTime. ZooKeeper grants session
// timeouts between 2 and 20 ticks unless told otherwise: 100ms lets leases
// of 200ms be sessions of 200ms; maxSessionTimeout is raised to 2 minutes
// so long leases keep their TTL too.
const ZooKeeperTick = 100 * time.Millisecond

// ZooKeeper is a standalone ZooKeeper server run by a test inside a network
// namespace of its own (Java's ZooKeeperServerMain under nsenter), with its
// data directory in a temporary directory. It is killed when the test ends
// (and when the test process dies: Pdeathsig). Nothing is installed as a
// service and nothing listens outside the namespace.
type ZooKeeper struct {
	tb      testing.TB
	NS      string // namespace it runs in
	Addr    string // client address, HOST:PORT
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *SyncBuffer
	stopped bool
}

// StartZooKeeper runs ZooKeeper in member m's namespace, listening for
// clients on m.Addr:2181 only, and waits until it answers. Under
// TETHER_E2E=1 a missing package or Java is a failure.
func StartZooKeeper(tb testing.TB, m Member) *ZooKeeper {
	tb.Helper()
	for _, f := range []string{ZooKeeperJar, zkSlf4jBinding, javaBinary} {
		if _, err := os.Stat(f); err != nil {
			if E2E() {
				tb.Fatalf("TETHER_E2E=1 needs %s (apt-get install zookeeper): %v", f, err)
			}
			tb.Skipf("%s not installed (apt-get install zookeeper)", f)
		}
	}
	z := &ZooKeeper{tb: tb, NS: m.NS, Addr: m.Addr + ":2181", dir: tb.TempDir()}
	cfg := fmt.Sprintf(`tickTime=%d
dataDir=%s
clientPort=2181
clientPortAddress=%s
maxClientCnxns=0
minSessionTimeout=%d
maxSessionTimeout=120000
admin.enableServer=false
4lw.commands.whitelist=srvr
autopurge.purgeInterval=0
`, ZooKeeperTick.Milliseconds(), filepath.Join(z.dir, "data"), m.Addr, 2*ZooKeeperTick.Milliseconds())
	if err := os.WriteFile(z.cfgFile(), []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		z.Stop()
		if tb.Failed() {
			tb.Logf("zookeeper log:\n%s", z.Log())
		}
	})
	z.Start()
	return z
}

func (z *ZooKeeper) cfgFile() string { return filepath.Join(z.dir, "zoo.cfg") }

// URL is the zk:// cluster-store URL of this server (default prefix).
func (z *ZooKeeper) URL() string { return "zk://" + z.Addr }

// Start (re)starts the server on the same data directory and waits until
// it accepts connections (the JVM takes a second or two).
func (z *ZooKeeper) Start() {
	z.tb.Helper()
	if z.log == nil {
		z.log = &SyncBuffer{}
	}
	z.cmd = exec.Command("nsenter", "--net=/run/netns/"+z.NS, "--", javaBinary,
		"-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
		"-Dzookeeper.admin.enableServer=false",
		"-cp", ZooKeeperJar+":"+zkSlf4jBinding,
		"org.apache.zookeeper.server.ZooKeeperServerMain", z.cfgFile())
	z.cmd.Dir = z.dir
	z.cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + z.dir}
	z.cmd.Stdout, z.cmd.Stderr = z.log, z.log
	z.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := z.cmd.Start(); err != nil {
		z.tb.Fatalf("start zookeeper: %v", err)
	}
	z.stopped = false
	z.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(z.cmd, z.exited)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-z.exited:
			z.tb.Fatalf("zookeeper exited at start:\n%s", z.log.String())
		default:
		}
		if z.serving() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	z.tb.Fatalf("zookeeper did not answer on %s within 30s:\n%s", z.Addr, z.log.String())
}

// serving asks the server "srvr" (the one four-letter command it allows):
// the port opens before the server serves, and a client connecting in
// between is dropped.
func (z *ZooKeeper) serving() bool {
	c, err := DialInNS(bgCtx(), z.NS, "tcp", z.Addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("srvr")); err != nil {
		return false
	}
	out, _ := io.ReadAll(c)
	return strings.Contains(string(out), "Mode: standalone")
}

// Stop kills the server (SIGKILL on the PID it started: an outage, not a
// shutdown) and waits until it is gone.
func (z *ZooKeeper) Stop() {
	if z.stopped || z.cmd == nil || z.cmd.Process == nil {
		return
	}
	z.stopped = true
	_ = z.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-z.exited:
	case <-time.After(10 * time.Second):
		z.tb.Errorf("zookeeper (pid %d) still runs 10s after SIGKILL", z.cmd.Process.Pid)
	}
}

// Log is the server's output.
func (z *ZooKeeper) Log() string {
	if z.log == nil {
		return ""
	}
	return z.log.String()
}
