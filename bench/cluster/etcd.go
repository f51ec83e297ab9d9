package clustersim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/etcd"
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
// process: Pdeathsig); the namespace goes with the test's cleanup. Restart
// kills it and starts it again on the same data directory and port.
type Etcd struct {
	NS   string // namespace name (ip netns)
	Addr string // client address inside NS
	Dir  string // data directory
	process
}

var _ Server = (*Etcd)(nil)

// StartEtcd starts the server and waits until it answers.
func StartEtcd(tb testing.TB) *Etcd {
	tb.Helper()
	if _, err := os.Stat(testutil.EtcdBinary); err != nil {
		if testutil.E2E() {
			tb.Fatalf("TETHER_E2E=1 needs %s (Debian etcd-server): %v", testutil.EtcdBinary, err)
		}
		tb.Skipf("%s not installed", testutil.EtcdBinary)
	}
	e := &Etcd{NS: testutil.NetNS(tb, "t21s-etcd"), Addr: "127.0.0.1:" + etcdClientPort, Dir: tb.TempDir(), process: newProcess("etcd")}
	tb.Cleanup(e.kill)
	if err := e.start(); err != nil {
		tb.Fatal(err)
	}
	return e
}

func (e *Etcd) start() error {
	client, peer := "http://"+e.Addr, "http://127.0.0.1:"+etcdPeerPort
	cmd := exec.Command("nsenter", "--net=/run/netns/"+e.NS, "--", testutil.EtcdBinary,
		"--name", "m0", "--data-dir", filepath.Join(e.Dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "m0="+peer, "--initial-cluster-state", "new",
		"--heartbeat-interval", "50", "--election-timeout", "500")
	if err := e.run(cmd, 15*time.Second, e.healthy); err != nil {
		return fmt.Errorf("%w (listening on %s in %s)", err, e.Addr, e.NS)
	}
	return nil
}

// healthy asks the server's /health (served once it has a leader).
func (e *Etcd) healthy() bool {
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return e.Dial(ctx, addr) }}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + e.Addr + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.Contains(string(b), `"true"`)
}

// Dial opens a TCP connection from inside the server's namespace (the
// etcd client's DialContext).
func (e *Etcd) Dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return testutil.DialInNS(ctx, e.NS, "tcp", addr)
}

// Name says which server this is.
func (e *Etcd) Name() string { return "etcd " + etcdVersion() }

// Open opens a client of the server under prefix (one per agent).
func (e *Etcd) Open(ctx context.Context, prefix string, logger *slog.Logger) (store.Store, error) {
	return etcd.Open(ctx, etcd.Config{Endpoints: []string{e.Addr}, Prefix: prefix, Logger: logger, DialContext: e.Dial})
}

// DBSize is the size of the server's bbolt database file, in bytes.
func (e *Etcd) DBSize() int64 {
	st, err := os.Stat(filepath.Join(e.Dir, "data", "member", "snap", "db"))
	if err != nil {
		return -1
	}
	return st.Size()
}

// Restart kills the server (SIGKILL: an outage, not a shutdown), leaves it
// down for down, and starts it again on the same data directory and port.
// It returns when the server was killed and when it answered again.
func (e *Etcd) Restart(down time.Duration) (killed, up time.Time, err error) {
	return e.restart(down, e.start)
}
