package clustersim

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// Ports of the harness's etcd, inside its own namespace.
const (
	etcdClientPort = "51379"
	etcdPeerPort   = "51380"
)

// Etcd is a one-member etcd (Debian's etcd-server) in a namespace of its
// own (prefix t21s-etcd), listening on 127.0.0.1:51379 there, with its data
// in a temporary directory. Killed when the test ends (and with the test
// process: Pdeathsig); the namespace goes with the test's cleanup.
type Etcd struct {
	NS   string // namespace name (ip netns)
	Addr string // client address inside NS
	Dir  string // data directory
	cmd  *exec.Cmd
	log  *testutil.SyncBuffer
}

// StartEtcd starts the server and waits until it accepts connections.
func StartEtcd(tb testing.TB) *Etcd {
	tb.Helper()
	if _, err := os.Stat(testutil.EtcdBinary); err != nil {
		if testutil.E2E() {
			tb.Fatalf("TETHER_E2E=1 needs %s (Debian etcd-server): %v", testutil.EtcdBinary, err)
		}
		tb.Skipf("%s not installed", testutil.EtcdBinary)
	}
	e := &Etcd{NS: testutil.NetNS(tb, "t21s-etcd"), Addr: "127.0.0.1:" + etcdClientPort, Dir: tb.TempDir(), log: &testutil.SyncBuffer{}}
	client, peer := "http://"+e.Addr, "http://127.0.0.1:"+etcdPeerPort
	e.cmd = exec.Command("nsenter", "--net=/run/netns/"+e.NS, "--", testutil.EtcdBinary,
		"--name", "m0", "--data-dir", filepath.Join(e.Dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "m0="+peer, "--initial-cluster-state", "new",
		"--heartbeat-interval", "50", "--election-timeout", "500")
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		tb.Fatalf("start etcd: %v", err)
	}
	tb.Cleanup(e.stop)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := e.Dial(context.Background(), e.Addr); err == nil {
			c.Close()
			return e
		}
	}
	tb.Fatalf("etcd did not answer on %s in %s within 15s:\n%s", e.Addr, e.NS, e.log.String())
	return nil
}

// Dial opens a TCP connection from inside the server's namespace (the
// etcd client's DialContext).
func (e *Etcd) Dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return testutil.DialInNS(ctx, e.NS, "tcp", addr)
}

// PID is the server's process ID (nsenter execs etcd in its place).
func (e *Etcd) PID() int { return e.cmd.Process.Pid }

// DBSize is the size of the server's bbolt database file, in bytes.
func (e *Etcd) DBSize() int64 {
	st, err := os.Stat(filepath.Join(e.Dir, "data", "member", "snap", "db"))
	if err != nil {
		return -1
	}
	return st.Size()
}

func (e *Etcd) stop() {
	_ = e.cmd.Process.Kill()
	_ = e.cmd.Wait()
}
