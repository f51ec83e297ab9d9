package clustersim

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/zk"
	"github.com/tether-net/tether/internal/testutil"
)

// zkClientPort is the harness's ZooKeeper client port, inside its own
// namespace.
const zkClientPort = "51381"

// zkTick is the server's tickTime: session timeouts (a lease is a session)
// are granted between 2 and 1200 ticks, so leases of 200 ms to 2 min keep
// their TTL.
const zkTick = 100 * time.Millisecond

// ZooKeeper is a standalone ZooKeeper (Debian's zookeeper package, Java's
// ZooKeeperServerMain under nsenter) in a namespace of its own (prefix
// t21s-zk), listening on 127.0.0.1:51381 there, with its data in a
// temporary directory. Killed when the test ends (and with the test
// process: Pdeathsig); the namespace goes with the test's cleanup. Restart
// kills it and starts it again on the same data directory and port.
type ZooKeeper struct {
	NS   string
	Addr string
	Dir  string
	process
}

var _ Server = (*ZooKeeper)(nil)

// The server's jars and Java (as internal/testutil's ZooKeeper uses them).
var zkFiles = []string{testutil.ZooKeeperJar, "/usr/share/java/slf4j-simple.jar", "/usr/bin/java"}

// StartZooKeeper starts the server and waits until it serves.
func StartZooKeeper(tb testing.TB) *ZooKeeper {
	tb.Helper()
	for _, f := range zkFiles {
		if _, err := os.Stat(f); err != nil {
			if testutil.E2E() {
				tb.Fatalf("TETHER_E2E=1 needs %s (apt-get install zookeeper): %v", f, err)
			}
			tb.Skipf("%s not installed (apt-get install zookeeper)", f)
		}
	}
	z := &ZooKeeper{NS: testutil.NetNS(tb, "t21s-zk"), Addr: "127.0.0.1:" + zkClientPort, Dir: tb.TempDir(), process: newProcess("zookeeper")}
	cfg := fmt.Sprintf(`tickTime=%d
dataDir=%s
clientPort=%s
clientPortAddress=127.0.0.1
maxClientCnxns=0
minSessionTimeout=%d
maxSessionTimeout=120000
admin.enableServer=false
4lw.commands.whitelist=srvr
autopurge.purgeInterval=0
`, zkTick.Milliseconds(), filepath.Join(z.Dir, "data"), zkClientPort, 2*zkTick.Milliseconds())
	if err := os.WriteFile(filepath.Join(z.Dir, "zoo.cfg"), []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		z.kill()
		if tb.Failed() {
			tb.Logf("zookeeper log (tail):\n%s", z.logTail())
		}
	})
	if err := z.start(); err != nil {
		tb.Fatal(err)
	}
	return z
}

func (z *ZooKeeper) start() error {
	cmd := exec.Command("nsenter", "--net=/run/netns/"+z.NS, "--", "/usr/bin/java",
		"-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		"-Dzookeeper.admin.enableServer=false",
		"-cp", strings.Join(zkFiles[:2], ":"),
		"org.apache.zookeeper.server.ZooKeeperServerMain", filepath.Join(z.Dir, "zoo.cfg"))
	cmd.Dir = z.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + z.Dir}
	if err := z.run(cmd, 30*time.Second, z.serving); err != nil {
		return fmt.Errorf("%w (listening on %s in %s)", err, z.Addr, z.NS)
	}
	return nil
}

// serving asks the server "srvr": the port opens before it serves.
func (z *ZooKeeper) serving() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := z.Dial(ctx, z.Addr)
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

// Dial opens a TCP connection from inside the server's namespace.
func (z *ZooKeeper) Dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return testutil.DialInNS(ctx, z.NS, "tcp", addr)
}

// Name says which server this is: its Debian package's version.
func (z *ZooKeeper) Name() string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "zookeeper").Output()
	if err != nil {
		return "zookeeper"
	}
	return "zookeeper " + strings.TrimSpace(string(out))
}

// Open opens a client of the server under prefix (one per agent; each
// lease is a session of its own).
func (z *ZooKeeper) Open(ctx context.Context, prefix string, logger *slog.Logger) (store.Store, error) {
	return zk.Open(ctx, zk.Config{Servers: []string{z.Addr}, Prefix: strings.Trim(prefix, "/"), Logger: logger, DialContext: z.Dial})
}

// DBSize is what the data directory (transaction logs and snapshots)
// takes on disk: allocated blocks, since ZooKeeper pads its logs sparsely
// to 64 MiB.
func (z *ZooKeeper) DBSize() int64 { return diskUsage(filepath.Join(z.Dir, "data")) }

// Restart kills the server (SIGKILL), leaves it down for down, and starts
// it again on the same data directory and port.
func (z *ZooKeeper) Restart(down time.Duration) (killed, up time.Time, err error) {
	return z.restart(down, z.start)
}

// diskUsage sums the blocks allocated to the files under dir, in bytes
// (as du does); -1 if dir cannot be read.
func diskUsage(dir string) int64 {
	var sum int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed meanwhile (a purged log)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			sum += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		return -1
	}
	return sum
}
