package etcd

// The test harness: etcd servers started by the tests, never anything
// already on the machine.
//
//   - startEmbedded runs etcd 3.7 in this process (go.etcd.io/etcd/server/v3/embed).
//     As root its listeners are opened inside a test-owned network namespace
//     (netns.Do around embed.StartEtcd; the sockets stay there) and the
//     client dials into it; otherwise it listens on 127.0.0.1 with free ports.
//   - startCluster runs members as processes, so a test can SIGKILL one:
//     etcd 3.7 is this test binary re-executed as a member (TestMain sees
//     memberEnv), etcd 3.4 is Debian's /usr/bin/etcd. Both read the same YAML
//     config file. As root they run inside a test-owned namespace (nsenter
//     --net), otherwise on 127.0.0.1 with free ports. They are killed when the
//     test ends, and when this process dies (Pdeathsig; the 3.7 member also
//     exits when its stdin closes).

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/gate"
)

// memberEnv names the YAML config a re-executed test binary runs etcd with.
const memberEnv = "TETHER_TEST_ETCD_MEMBER"

// debianEtcd is where Debian's etcd-server package puts the server.
const debianEtcd = "/usr/bin/etcd"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(memberEnv); cfg != "" {
		os.Exit(runMember(cfg))
	}
	os.Exit(m.Run())
}

// runMember is the 3.7 member process: etcd from the config file until
// SIGKILL, SIGTERM or the end of stdin (the test process is gone).
func runMember(cfgFile string) int {
	cfg, err := embed.ConfigFromFile(cfgFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "member config:", err)
		return 2
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start member:", err)
		return 1
	}
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); os.Exit(3) }()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	select {
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "member:", err)
		return 1
	case <-term:
		e.Close()
		return 0
	}
}

// dialer returns a DialContext for Config: inside ns, or plain when ns is "".
func dialer(ns string) func(ctx context.Context, addr string) (net.Conn, error) {
	if ns == "" {
		return nil
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		return testutil.DialInNS(ctx, ns, "tcp", addr)
	}
}

// freePort returns a loopback port nothing listens on right now (only used
// without root, where no namespace of our own is available).
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ports returns client and peer ports for member i: fixed ones in a fresh
// namespace of our own, free loopback ports otherwise.
func ports(tb testing.TB, ns string, i int) (client, peer int) {
	if ns != "" {
		return 2379 + 10*i, 2380 + 10*i
	}
	return freePort(tb), freePort(tb)
}

var prefixes atomic.Int64

// uniquePrefix gives each store opened on a shared server its own key space,
// so it starts empty.
func uniquePrefix() string { return fmt.Sprintf("test-%d/", prefixes.Add(1)) }

// embedded is an in-process etcd 3.7 server.
type embedded struct {
	e         *embed.Etcd
	ns        string
	endpoint  string
	tls       *testTLS
	log       *testutil.SyncBuffer
	closeOnce sync.Once
}

// embedOptions tune startEmbedded.
type embedOptions struct {
	tls *testTLS // serve TLS with client certificates
}

// startEmbedded starts a one-member etcd 3.7 in this process; it is closed
// when tb ends. Heartbeat 100ms, election 500ms: leases of 1s are kept as 1s.
func startEmbedded(tb testing.TB, o embedOptions) *embedded {
	tb.Helper()
	var ns string
	if gate.Root(tb) {
		ns = testutil.NetNS(tb, "tth-etcd")
	}
	cport, pport := ports(tb, ns, 0)
	scheme := "http"
	if o.tls != nil {
		scheme = "https"
	}
	cu := url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", cport)}
	pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", pport)}
	cfg := embed.NewConfig()
	cfg.Name = "solo"
	cfg.Dir = filepath.Join(tb.TempDir(), "data") // etcd creates it 0700
	cfg.TickMs, cfg.ElectionMs = 100, 500
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.EnableGRPCGateway = false // it would dial the client URL from outside the namespace
	if o.tls != nil {
		cfg.ClientTLSInfo.CertFile = o.tls.server.Cert
		cfg.ClientTLSInfo.KeyFile = o.tls.server.Key
		cfg.ClientTLSInfo.TrustedCAFile = o.tls.server.CA
		cfg.ClientTLSInfo.ClientCertAuth = true
	}
	srv := &embedded{ns: ns, endpoint: cu.Host, tls: o.tls, log: &testutil.SyncBuffer{}}
	lg := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), srv.log, zapcore.WarnLevel))
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)

	start := func() (err error) { srv.e, err = embed.StartEtcd(cfg); return err }
	var err error
	if ns != "" {
		err = netns.Do("/run/netns/"+ns, start) // listeners are created in ns
	} else {
		err = start()
	}
	if err != nil {
		tb.Fatalf("start embedded etcd: %v", err)
	}
	tb.Cleanup(func() {
		srv.close()
		if tb.Failed() {
			tb.Logf("embedded etcd log:\n%s", srv.log.String())
		}
	})
	select {
	case <-srv.e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		tb.Fatalf("embedded etcd not ready within 20s:\n%s", srv.log.String())
	}
	return srv
}

func (srv *embedded) close() { srv.closeOnce.Do(srv.e.Close) }

// config is a client Config for this server.
func (srv *embedded) config(prefix string) Config {
	cfg := Config{Endpoints: []string{srv.endpoint}, Prefix: prefix, DialContext: dialer(srv.ns)}
	if srv.tls != nil {
		cfg.CACertFile, cfg.CertFile, cfg.KeyFile = srv.tls.client.CA, srv.tls.client.Cert, srv.tls.client.Key
	}
	return cfg
}

// open opens a store with its own empty key space; closed when tb ends.
func (srv *embedded) open(tb testing.TB) *Store {
	tb.Helper()
	return mustOpen(tb, srv.config(uniquePrefix()))
}

func mustOpen(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	s, err := Open(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// testTLS is a CA with a server and a client certificate.
type testTLS struct {
	ca             *testutil.CA
	server, client testutil.CertFiles
}

func newTestTLS(tb testing.TB) *testTLS {
	ca := testutil.NewCA(tb, "tether-etcd-test-ca")
	return &testTLS{
		ca:     ca,
		server: ca.Issue(tb, "etcd-server", testutil.CertOptions{Server: true}),
		client: ca.Issue(tb, "tether", testutil.CertOptions{}),
	}
}

// flavour is an etcd server program the process harness can run.
type flavour struct {
	name string
	argv func(cfgFile string) []string // command line
	env  func(cfgFile string) []string // extra environment
}

// etcd37 is this test binary re-executed as an embedded etcd 3.7 member.
func etcd37(tb testing.TB) flavour {
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	return flavour{
		name: "etcd3.7",
		argv: func(string) []string { return []string{self} },
		env:  func(cfg string) []string { return []string{memberEnv + "=" + cfg} },
	}
}

// etcd34 is Debian's etcd-server (3.4). Without it the test skips, or fails
// under TETHER_E2E=1. It needs root (a namespace of its own).
func etcd34(tb testing.TB) flavour {
	tb.Helper()
	testutil.RequireRoot(tb)
	if _, err := os.Stat(debianEtcd); err != nil {
		if testutil.E2E() {
			tb.Fatalf("TETHER_E2E=1 needs Debian's etcd server (apt-get install etcd-server): %v", err)
		}
		tb.Skipf("no %s (apt-get install etcd-server)", debianEtcd)
	}
	out, err := exec.Command(debianEtcd, "--version").Output()
	if err != nil {
		tb.Fatalf("%s --version: %v", debianEtcd, err)
	}
	tb.Logf("%s", strings.SplitN(string(out), "\n", 2)[0])
	return flavour{
		name: "etcd3.4",
		argv: func(cfg string) []string { return []string{debianEtcd, "--config-file", cfg} },
		env:  func(string) []string { return nil },
	}
}

// member is one etcd process of a cluster.
type member struct {
	c          *cluster
	name       string
	dir        string // data dir
	cfgFile    string
	clientAddr string
	log        *testutil.SyncBuffer
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	exited     chan struct{}
}

// cluster is a set of member processes started by one test.
type cluster struct {
	t       testing.TB
	f       flavour
	ns      string
	tls     *testTLS
	members []*member
}

// clusterOptions tune startCluster.
type clusterOptions struct {
	size       int
	tls        *testTLS
	electionMs int // default 1000 (500 for one member)
}

// startCluster starts size members of flavour f and waits until the
// cluster answers a linearizable read.
func startCluster(tb testing.TB, f flavour, o clusterOptions) *cluster {
	tb.Helper()
	c := &cluster{t: tb, f: f, tls: o.tls}
	if gate.Root(tb) {
		c.ns = testutil.NetNS(tb, "tth-etcd")
	}
	if o.electionMs == 0 {
		o.electionMs = 1000
		if o.size == 1 {
			o.electionMs = 500
		}
	}
	dir := tb.TempDir()
	var initial []string
	peers := make([]string, o.size)
	for i := range o.size {
		cport, pport := ports(tb, c.ns, i)
		m := &member{c: c, name: fmt.Sprintf("m%d", i), clientAddr: fmt.Sprintf("127.0.0.1:%d", cport), log: &testutil.SyncBuffer{}}
		m.dir = filepath.Join(dir, m.name)
		m.cfgFile = filepath.Join(dir, m.name+".yaml")
		peers[i] = fmt.Sprintf("http://127.0.0.1:%d", pport)
		initial = append(initial, m.name+"="+peers[i])
		c.members = append(c.members, m)
	}
	for i, m := range c.members {
		scheme := "http"
		if o.tls != nil {
			scheme = "https"
		}
		y := fmt.Sprintf(`name: %s
data-dir: %s
heartbeat-interval: 100
election-timeout: %d
listen-client-urls: %s://%s
advertise-client-urls: %s://%s
listen-peer-urls: %s
initial-advertise-peer-urls: %s
initial-cluster: %s
initial-cluster-token: tether-test
initial-cluster-state: new
enable-grpc-gateway: false
logger: zap
log-level: warn
log-outputs: [stderr]
`, m.name, m.dir, o.electionMs, scheme, m.clientAddr, scheme, m.clientAddr, peers[i], peers[i], strings.Join(initial, ","))
		if o.tls != nil {
			y += fmt.Sprintf("client-transport-security:\n  cert-file: %s\n  key-file: %s\n  trusted-ca-file: %s\n  client-cert-auth: true\n",
				o.tls.server.Cert, o.tls.server.Key, o.tls.server.CA)
		}
		if err := os.WriteFile(m.cfgFile, []byte(y), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(func() {
		for _, m := range c.members {
			m.kill()
			if tb.Failed() {
				tb.Logf("%s %s log:\n%s", f.name, m.name, m.log.String())
			}
		}
	})
	for _, m := range c.members {
		m.start()
	}
	c.waitReady(c.members...)
	return c
}

// start runs the member process (again, on the same data dir).
func (m *member) start() {
	t := m.c.t
	t.Helper()
	argv := m.c.f.argv(m.cfgFile)
	if m.c.ns != "" {
		argv = append([]string{"nsenter", "--net=/run/netns/" + m.c.ns, "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(cleanEnv(), m.c.f.env(m.cfgFile)...)
	cmd.Stdout, cmd.Stderr = m.log, m.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s %s: %v", m.c.f.name, m.name, err)
	}
	m.cmd, m.stdin, m.exited = cmd, stdin, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(m.exited)
}

// cleanEnv is this process's environment without ETCD_* variables, which
// etcd would read as flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") && !strings.HasPrefix(kv, memberEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// running reports whether the process is alive.
func (m *member) running() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL to the member (by PID) and waits for it to exit.
func (m *member) kill() {
	if !m.running() {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	m.stdin.Close()
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		m.c.t.Errorf("%s %s (pid %d) still runs 10s after SIGKILL", m.c.f.name, m.name, m.cmd.Process.Pid)
	}
}

// config is a client Config reaching the given members (all if none).
func (c *cluster) config(prefix string, ms ...*member) Config {
	if len(ms) == 0 {
		ms = c.members
	}
	cfg := Config{Prefix: prefix, DialContext: dialer(c.ns)}
	for _, m := range ms {
		cfg.Endpoints = append(cfg.Endpoints, m.clientAddr)
	}
	if c.tls != nil {
		cfg.CACertFile, cfg.CertFile, cfg.KeyFile = c.tls.client.CA, c.tls.client.Cert, c.tls.client.Key
	}
	return cfg
}

// waitReady waits until each member answers a linearizable read.
func (c *cluster) waitReady(ms ...*member) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, m := range ms {
		for {
			cfg := c.config("", m)
			cfg.DialTimeout = time.Second
			s, err := Open(c.t.Context(), cfg)
			if err == nil {
				s.Close()
				break
			}
			if !m.running() {
				c.t.Fatalf("%s %s exited: %v\n%s", c.f.name, m.name, err, m.log.String())
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("%s %s not ready within 30s: %v\n%s", c.f.name, m.name, err, m.log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// openStore opens a store on the whole cluster with its own key space.
func (c *cluster) openStore(tb testing.TB, timeout time.Duration) *Store {
	tb.Helper()
	cfg := c.config(uniquePrefix())
	cfg.DialTimeout, cfg.RequestTimeout = timeout, timeout
	return mustOpen(tb, cfg)
}
