package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// multiHost is a cluster of test hosts (testutil.Cluster) with the node
// lease TTL the tests use.
type multiHost struct {
	store interface {
		Start()
		Stop()
	} // the cluster store's server
	hosts []testutil.Member
	d     []*testutil.Daemon
}

// clusterTTL is the node lease of the test daemons (discovery.ttl): short,
// so host failures show within a test.
const clusterTTL = 3 * time.Second

// newMultiHost starts n hosts on a cluster store of the given kind ("etcd"
// or "zk").
func newMultiHost(t *testing.T, kind string, n int) *multiHost {
	t.Helper()
	return newMultiHostIn(t, kind, n, testutil.StartNsenter)
}

// newMultiHostIn is newMultiHost with the daemons started in mode.
func newMultiHostIn(t *testing.T, kind string, n int, mode testutil.StartMode) *multiHost {
	t.Helper()
	c := testutil.StartClusterIn(t, kind, n, clusterTTL, mode)
	m := &multiHost{hosts: c.Hosts, d: c.D}
	if c.ZK != nil {
		m.store = c.ZK
	} else {
		m.store = c.Etcd
	}
	return m
}

// waitFor polls ok every 20 ms until it holds or limit passes.
func waitFor(t *testing.T, what string, limit time.Duration, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > limit {
			t.Fatalf("not within %v: %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// netID returns a network's ID as a daemon sees it ("" when unknown).
func netID(d *testutil.Daemon, name string) string {
	out, err := d.Tether("network", "inspect", "-f", "{{.Id}}", name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

type globalInspect struct {
	ID         string
	Scope      string
	Driver     string
	Containers map[string]struct {
		Name        string
		IPv4Address netip.Prefix
		Host        string
	}
	Peers []struct{ Name, IP string }
}

func inspectGlobal(t *testing.T, d *testutil.Daemon, name string) globalInspect {
	t.Helper()
	var out []globalInspect
	if err := json.Unmarshal([]byte(d.MustTether("network", "inspect", name)), &out); err != nil || len(out) != 1 {
		t.Fatalf("inspect %s: %v", name, err)
	}
	return out[0]
}

// The user scenario of the overlay issue, end to end: one network created
// on host 1 appears with the same ID on hosts 2 and 3; sandboxes on two
// hosts get unique addresses, reach each other over TCP by name and
// name.network, leave through a local NAT bridge, and inspect lists them
// with their hosts.
func TestOverlayUserScenario(t *testing.T) { overlayUserScenario(t, newMultiHost(t, "etcd", 3)) }

func overlayUserScenario(t *testing.T, m *multiHost) {
	h1, h2, h3 := m.d[0], m.d[1], m.d[2]
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.0.0.0/24", "my-net")
	id := netID(h1, "my-net")
	for i, d := range []*testutil.Daemon{h2, h3} {
		waitFor(t, fmt.Sprintf("host %d sees my-net", i+2), 5*time.Second, func() bool { return netID(d, "my-net") == id })
	}
	if got := strings.TrimSpace(h3.MustTether("network", "ls", "--filter", "driver=overlay", "--format", "{{.ID}} {{.Name}} {{.Driver}} {{.Scope}}")); got != id+" my-net overlay global" {
		t.Errorf("network ls on host 3: %q", got)
	}
	httpServer(t, h1, "zookeeper1", "my-net")
	httpServer(t, h2, "zookeeper2", "my-net")
	h1.MustTether("run", "-d", "--name", "zookeeper3", "--network", "my-net", "--", "sleep", "600")
	h2.MustTether("run", "-d", "--name", "zookeeper4", "--network", "my-net", "--", "sleep", "600")

	addrs := map[string]bool{}
	for _, x := range []struct {
		d    *testutil.Daemon
		name string
	}{{h1, "zookeeper1"}, {h2, "zookeeper2"}, {h1, "zookeeper3"}, {h2, "zookeeper4"}} {
		a := ip(t, x.d, x.name, "my-net")
		if addrs[a] || !netip.MustParsePrefix("10.0.0.0/24").Contains(netip.MustParseAddr(a)) {
			t.Errorf("%s got %s (duplicate or outside 10.0.0.0/24)", x.name, a)
		}
		addrs[a] = true
		// overlay interface: MTU underlay - 50, the only one, with the
		// default route through the network's gateway on the sandbox's
		// own host (the distributed gateway)
		links := x.d.MustTether("exec", x.name, "--", "ip", "-o", "link", "show", "eth0")
		if !strings.Contains(links, "mtu 1450") {
			t.Errorf("%s eth0: %s", x.name, links)
		}
		if out, err := x.d.Tether("exec", x.name, "--", "ip", "link", "show", "eth1"); err == nil {
			t.Errorf("%s has a second interface: %s", x.name, out)
		}
		routes := x.d.MustTether("exec", x.name, "--", "ip", "route", "show", "default")
		if !strings.Contains(routes, "via 10.0.0.1 dev eth0") {
			t.Errorf("%s default route: %q, want via 10.0.0.1 dev eth0", x.name, routes)
		}
	}
	// TCP across hosts by name and name.network, and on the same host
	for _, c := range []struct {
		d        *testutil.Daemon
		from, to string
	}{{h1, "zookeeper1", "zookeeper2"}, {h2, "zookeeper4", "zookeeper1.my-net"}, {h1, "zookeeper3", "zookeeper2.my-net"}, {h2, "zookeeper2", "zookeeper1"}} {
		if err := httpGet(c.d, c.from, c.to, 25); err != nil {
			t.Errorf("%s -> %s: %v", c.from, c.to, err)
		}
	}
	// inspect on host 3 (no endpoint of its own) lists all four with hosts,
	// once its watch has delivered them
	waitFor(t, "host 3 lists all four endpoints", 10*time.Second, func() bool {
		return len(inspectGlobal(t, h3, "my-net").Containers) == 4
	})
	insp := inspectGlobal(t, h3, "my-net")
	if insp.Scope != "global" || insp.Driver != "overlay" || len(insp.Containers) != 4 {
		t.Fatalf("inspect on host 3: %+v", insp)
	}
	for _, ep := range insp.Containers {
		want := m.hosts[0].Addr
		if ep.Name == "zookeeper2" || ep.Name == "zookeeper4" {
			want = m.hosts[1].Addr
		}
		if !strings.Contains(ep.Host, want) {
			t.Errorf("endpoint %s on host %q, want %s", ep.Name, ep.Host, want)
		}
	}
	// the outside, through host 1's bridge of my-net (NAT)
	testutil.Outside(t, m.hosts[0].NS)
	if !ping(h1, "zookeeper3", testutil.OutsideAddr) {
		t.Error("overlay sandbox cannot reach the outside through its host's gateway")
	}
	// removal: refused while endpoints exist anywhere, then gone everywhere
	if out, err := h3.Tether("network", "rm", "my-net"); err == nil || !strings.Contains(out, "active endpoints") {
		t.Errorf("rm with endpoints on other hosts: %v %s", err, out)
	}
	for _, x := range []struct {
		d    *testutil.Daemon
		name string
	}{{h1, "zookeeper1"}, {h2, "zookeeper2"}, {h1, "zookeeper3"}, {h2, "zookeeper4"}} {
		x.d.MustTether("rm", "-f", x.name)
	}
	h3.MustTether("network", "rm", "my-net")
	for i, d := range m.d {
		waitFor(t, fmt.Sprintf("host %d forgets my-net", i+1), 5*time.Second, func() bool { return netID(d, "my-net") == "" })
		if out, _ := testutil.InNS(m.hosts[i].NS, "ip", "-br", "link"); strings.Contains(out, "tvx-") || strings.Contains(out, "tov-") {
			t.Errorf("host %d keeps overlay links:\n%s", i+1, out)
		}
	}
}

// Concurrent attaches from three hosts never hand out an address twice.
func TestOverlayConcurrentAttaches(t *testing.T) {
	overlayConcurrentAttaches(t, newMultiHost(t, "etcd", 3))
}

func overlayConcurrentAttaches(t *testing.T, m *multiHost) {
	m.d[0].MustTether("network", "create", "-d", "overlay", "--subnet", "10.1.0.0/24", "busy")
	for _, d := range m.d {
		waitFor(t, "network everywhere", 5*time.Second, func() bool { return netID(d, "busy") != "" })
	}
	const per = 15
	seen := attachConcurrently(t, m, "busy", "s", per, func(name string) []string {
		return []string{"sandbox", "create", "--name", name, "--network", "busy"}
	})
	if len(seen) != 3*per {
		t.Errorf("%d distinct addresses for %d sandboxes", len(seen), 3*per)
	}
	// every host comes to see every endpoint: an attach answers once its
	// record is in the store; the other hosts' watches deliver it a moment
	// later (docs/overlay.md, "When the other hosts know")
	waitFor(t, "host 3 lists every endpoint", 10*time.Second, func() bool {
		return len(inspectGlobal(t, m.d[2], "busy").Containers) == 3*per
	})
}

// attachConcurrently runs cmd(name) for per sandboxes named
// <prefix><host>-<i> on every host at once and returns the sandboxes'
// addresses on network (address -> name); an address given twice is an
// error of the test.
func attachConcurrently(t *testing.T, m *multiHost, network, prefix string, per int, cmd func(name string) []string) map[string]string {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]string{}
	for h, d := range m.d {
		for i := range per {
			wg.Go(func() {
				name := fmt.Sprintf("%s%d-%d", prefix, h, i)
				if out, err := d.Tether(cmd(name)...); err != nil {
					t.Errorf("%s: %v %s", name, err, strings.TrimSpace(out))
					return
				}
				a := ip(t, d, name, network)
				mu.Lock()
				defer mu.Unlock()
				if other, dup := seen[a]; dup {
					t.Errorf("%s given to %s and %s", a, other, name)
				}
				seen[a] = name
			})
		}
	}
	wg.Wait()
	return seen
}

// Two overlays with different VNIs and overlapping nothing cannot reach
// each other, even between hosts; names are scoped to their network.
func TestOverlayIsolation(t *testing.T) { overlayIsolation(t, newMultiHost(t, "etcd", 2)) }

func overlayIsolation(t *testing.T, m *multiHost) {
	m.d[0].MustTether("network", "create", "-d", "overlay", "--subnet", "10.2.0.0/24", "red")
	m.d[0].MustTether("network", "create", "-d", "overlay", "--subnet", "10.3.0.0/24", "blue")
	waitFor(t, "both networks on host 2", 5*time.Second, func() bool { return netID(m.d[1], "red") != "" && netID(m.d[1], "blue") != "" })
	m.d[0].MustTether("run", "-d", "--name", "r1", "--network", "red", "--", "sleep", "600")
	m.d[1].MustTether("run", "-d", "--name", "r2", "--network", "red", "--", "sleep", "600")
	m.d[1].MustTether("run", "-d", "--name", "b2", "--network", "blue", "--", "sleep", "600")
	waitFor(t, "r1 reaches r2 by name", 5*time.Second, func() bool { return ping(m.d[0], "r1", "r2") })
	if ping(m.d[0], "r1", ip(t, m.d[1], "b2", "blue")) {
		t.Error("red sandbox reaches a blue one")
	}
	if ping(m.d[0], "r1", "b2") {
		t.Error("red sandbox resolves a blue one's name")
	}
	// no --subnet: a free /24 of 10.0.0.0/8, the same on both hosts
	m.d[1].MustTether("network", "create", "-d", "overlay", "green")
	sub := strings.TrimSpace(m.d[1].MustTether("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "green"))
	p, err := netip.ParsePrefix(sub)
	if err != nil || p.Bits() != 24 || !netip.MustParsePrefix("10.0.0.0/8").Contains(p.Addr()) ||
		p.Overlaps(netip.MustParsePrefix("10.2.0.0/24")) || p.Overlaps(netip.MustParsePrefix("10.3.0.0/24")) {
		t.Errorf("chosen overlay subnet %q", sub)
	}
	waitFor(t, "green on host 1 with the same subnet", 5*time.Second, func() bool {
		out, _ := m.d[0].Tether("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "green")
		return strings.TrimSpace(out) == sub
	})
}

// A host that dies takes its endpoints out of the others' datapath and DNS
// within the lease TTL; its addresses stay claimed (its sandboxes may still
// be alive); when its daemon returns, they come back.
func TestOverlayHostFailure(t *testing.T) { overlayHostFailure(t, newMultiHost(t, "etcd", 2)) }

func overlayHostFailure(t *testing.T, m *multiHost) {
	h1, h2 := m.d[0], m.d[1]
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.4.0.0/24", "fail")
	waitFor(t, "network on host 2", 5*time.Second, func() bool { return netID(h2, "fail") != "" })
	h1.MustTether("run", "-d", "--name", "a", "--network", "fail", "--", "sleep", "600")
	h2.MustTether("run", "-d", "--name", "b", "--ip", "10.4.0.50", "--network", "fail", "--", "sleep", "600")
	waitFor(t, "a reaches b by name", 5*time.Second, func() bool { return ping(h1, "a", "b") })
	if err := h2.Kill(); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, "host 1 drops b", 3*clusterTTL, func() bool {
		out, _ := h1.Tether("exec", "a", "--", "getent", "hosts", "b")
		return strings.TrimSpace(out) == ""
	})
	t.Logf("dead host's endpoint dropped %v after the kill (TTL %v)", took.Round(time.Millisecond), clusterTTL)
	if took > clusterTTL+time.Second {
		t.Errorf("endpoint dropped after %v, TTL %v", took, clusterTTL)
	}
	if ping(h1, "a", "10.4.0.50") {
		t.Error("the dead host's endpoint is still in host 1's datapath")
	}
	if out, err := h1.Tether("sandbox", "create", "--name", "c", "--ip", "10.4.0.50", "--network", "fail"); err == nil || !strings.Contains(out, "in use") {
		t.Errorf("the dead host's address was handed out again: %v %s", err, out)
	}
	if err := h2.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a reaches b again", 10*time.Second, func() bool { return ping(h1, "a", "b") })
}

// pingLoss pings to from a sandbox every 10 ms for count packets while
// during() runs, and returns sent and lost.
func pingLoss(t *testing.T, d *testutil.Daemon, from, to string, count int, during func()) (int, int) {
	t.Helper()
	// Through a process of the sandbox: under ip netns exec and unshare its
	// namespace file is in the daemon's mount namespace, not ours.
	cmd := exec.Command("nsenter", "--net="+procNetNS(t, d, from), "ping", "-n", "-i", "0.01", "-c", strconv.Itoa(count), "-W", "1", to)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Duration(count/5) * 10 * time.Millisecond)
	during()
	_ = cmd.Wait()
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("ping output: %s", out.String())
	}
	sent, _ := strconv.Atoi(m[1])
	got, _ := strconv.Atoi(m[2])
	return sent, sent - got
}

// A daemon restart drops no overlay traffic: the datapath is static kernel
// state the daemon only programs.
func TestOverlayDaemonRestartKeepsTraffic(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		overlayDaemonRestartKeepsTraffic(t, newMultiHostIn(t, "etcd", 2, mode))
	})
}

func overlayDaemonRestartKeepsTraffic(t *testing.T, m *multiHost) {
	h1, h2 := m.d[0], m.d[1]
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.5.0.0/24", "steady")
	waitFor(t, "network on host 2", 5*time.Second, func() bool { return netID(h2, "steady") != "" })
	h1.MustTether("run", "-d", "--name", "a", "--network", "steady", "--", "sleep", "600")
	h2.MustTether("run", "-d", "--name", "b", "--network", "steady", "--", "sleep", "600")
	waitFor(t, "a reaches b", 5*time.Second, func() bool { return ping(h1, "a", "b") })
	to := ip(t, h2, "b", "steady")
	sent, lost := pingLoss(t, h1, "a", to, 500, func() {
		h1.Stop()
		if err := h1.Start(); err != nil {
			t.Fatal(err)
		}
		h2.Stop()
		if err := h2.Start(); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("ping every 10 ms across both daemons' restarts: %d sent, %d lost", sent, lost)
	if lost != 0 {
		t.Errorf("%d of %d lost across daemon restarts", lost, sent)
	}
	// and the restarted daemons still program new endpoints
	h2.MustTether("run", "-d", "--name", "c", "--network", "steady", "--", "sleep", "600")
	waitFor(t, "a reaches the new c", 5*time.Second, func() bool { return ping(h1, "a", "c") })
}

// With the cluster store down, existing sandboxes keep talking, global
// attaches fail with a clear error and local networks work; when it
// returns, the nodes converge without duplicates.
func TestOverlayStoreOutage(t *testing.T) { overlayStoreOutage(t, newMultiHost(t, "etcd", 2)) }

func overlayStoreOutage(t *testing.T, m *multiHost) {
	h1, h2 := m.d[0], m.d[1]
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.6.0.0/24", "outage")
	waitFor(t, "network on host 2", 5*time.Second, func() bool { return netID(h2, "outage") != "" })
	h1.MustTether("run", "-d", "--name", "a", "--network", "outage", "--", "sleep", "600")
	h2.MustTether("run", "-d", "--name", "b", "--network", "outage", "--", "sleep", "600")
	waitFor(t, "a reaches b", 5*time.Second, func() bool { return ping(h1, "a", "b") })

	m.store.Stop()
	sent, lost := pingLoss(t, h1, "a", ip(t, h2, "b", "outage"), 300, func() { time.Sleep(clusterTTL + time.Second) })
	if lost != 0 {
		t.Errorf("store down: %d of %d pings lost between existing sandboxes", lost, sent)
	}
	if !ping(h1, "a", "b") {
		t.Error("store down: names of remote sandboxes no longer resolve")
	}
	start := time.Now()
	out, err := h1.Tether("run", "-d", "--name", "late", "--network", "outage", "--", "sleep", "600")
	if err == nil || !strings.Contains(out, "cluster store") {
		t.Errorf("attach with the store down: %v %q, want a clear cluster store error", err, out)
	}
	t.Logf("attach with the store down failed after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	h1.MustTether("network", "create", "--subnet", "10.7.0.0/24", "local")
	h1.MustTether("run", "-d", "--name", "loc", "--network", "local", "--", "sleep", "600")
	// a daemon restarted while the store is down starts, and its overlay
	// sandboxes keep their datapath (by address: remote names come back
	// with the store)
	h1.Stop()
	if err := h1.Start(); err != nil {
		t.Fatalf("daemon start with the cluster store down: %v", err)
	}
	if !ping(h1, "a", ip(t, h2, "b", "outage")) {
		t.Error("store down, daemon restarted: a no longer reaches b")
	}

	m.store.Start()
	// the failed attach left nothing: the name is free, its sandbox is gone
	waitFor(t, "attach works again", 20*time.Second, func() bool {
		_, err := h1.Tether("run", "-d", "--name", "late2", "--network", "outage", "--", "sleep", "600")
		return err == nil
	})
	h2.MustTether("run", "-d", "--name", "c", "--network", "outage", "--", "sleep", "600")
	waitFor(t, "late2 reaches c across hosts", 10*time.Second, func() bool { return ping(h1, "late2", "c") })
	insp := inspectGlobal(t, h2, "outage")
	seen := map[netip.Prefix]string{}
	for _, ep := range insp.Containers {
		if other, dup := seen[ep.IPv4Address]; dup {
			t.Errorf("%s and %s share %s", other, ep.Name, ep.IPv4Address)
		}
		seen[ep.IPv4Address] = ep.Name
	}
	if len(insp.Containers) != 4 {
		t.Errorf("after the outage: %d endpoints (%v), want a, b, late2, c", len(insp.Containers), seen)
	}
}

// ZooKeeper works as well as etcd (Docker 20.10's classic overlay crashed
// on ZooKeeper at the first container start): the user scenario, a host
// failure and a store outage, on Debian's ZooKeeper.
func TestOverlayZooKeeper(t *testing.T) {
	t.Run("user scenario", func(t *testing.T) { overlayUserScenario(t, newMultiHost(t, "zk", 3)) })
	t.Run("host failure", func(t *testing.T) { overlayHostFailure(t, newMultiHost(t, "zk", 2)) })
	t.Run("store outage", func(t *testing.T) { overlayStoreOutage(t, newMultiHost(t, "zk", 2)) })
}

// What changes while a daemon is down is undone when it comes back: a peer
// that left is taken out of its datapath, a network removed cluster-wide
// loses its local bridge and VXLAN device.
func TestOverlayChangesWhileDown(t *testing.T) {
	m := newMultiHost(t, "etcd", 2)
	h1, h2 := m.d[0], m.d[1]
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.8.0.0/24", "stay")
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.9.0.0/24", "go")
	waitFor(t, "networks on host 2", 5*time.Second, func() bool { return netID(h2, "stay") != "" && netID(h2, "go") != "" })
	h1.MustTether("run", "-d", "--name", "leaver", "--ip", "10.8.0.77", "--network", "stay", "--", "sleep", "600")
	h2.MustTether("run", "-d", "--name", "b", "--network", "stay", "--", "sleep", "600")
	waitFor(t, "b reaches leaver", 5*time.Second, func() bool { return ping(h2, "b", "leaver") })
	fdb := func() string {
		out, _ := testutil.InNS(m.hosts[1].NS, "ip", "neigh", "show", "nud", "permanent")
		return out
	}
	if !strings.Contains(fdb(), "10.8.0.77") {
		t.Fatalf("host 2 has no neighbour entry for leaver:\n%s", fdb())
	}
	h2.Stop()
	h1.MustTether("rm", "-f", "leaver")
	h1.MustTether("network", "rm", "go")
	if err := h2.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "host 2 drops the network removed while it was down", 10*time.Second, func() bool { return netID(h2, "go") == "" })
	waitFor(t, "host 2 drops the peer that left while it was down", 10*time.Second, func() bool { return !strings.Contains(fdb(), "10.8.0.77") })
	links, _ := testutil.InNS(m.hosts[1].NS, "ip", "-br", "link")
	goVNI := ""
	for _, l := range strings.Split(links, "\n") {
		if strings.HasPrefix(l, "tov-") {
			goVNI += l + "\n"
		}
	}
	if strings.Count(goVNI, "tov-") != 1 {
		t.Errorf("host 2 overlay bridges after the restart (want only stay's):\n%s", goVNI)
	}
}

// A sandbox on an internal overlay network gets no way out: one endpoint,
// no default route, and a host on the underlay does not answer it; a
// sandbox on a normal overlay reaches that host. Found in review of the
// DNS exfiltration fix: the resolver refused to forward, but packets left.
// Connected to an open overlay too it gets the default route there;
// disconnected, it loses it again.
func TestOverlayInternalHasNoWayOut(t *testing.T) {
	m := newMultiHost(t, "etcd", 1)
	h := m.d[0]
	h.MustTether("network", "create", "-d", "overlay", "--internal", "--subnet", "10.198.0.0/24", "walled")
	h.MustTether("network", "create", "-d", "overlay", "--subnet", "10.198.1.0/24", "open")
	h.MustTether("run", "-d", "--name", "in", "--network", "walled", "--", "sleep", "600")
	h.MustTether("run", "-d", "--name", "out", "--network", "open", "--", "sleep", "600")
	outsider := m.hosts[0].Addr // the host's own underlay address: outside the overlay
	if nets := sandbox(t, h, "in").Networks; len(nets) != 1 {
		t.Errorf("sandbox on an internal overlay has networks %v, want only walled", slices.Sorted(maps.Keys(nets)))
	}
	if out, _ := h.Tether("exec", "in", "--", "ip", "route"); strings.Contains(out, "default") {
		t.Errorf("sandbox on an internal overlay has a default route:\n%s", out)
	}
	if ping(h, "in", outsider) {
		t.Errorf("sandbox on an internal overlay reached %s outside the network", outsider)
	}
	if !ping(h, "out", outsider) {
		t.Errorf("sandbox on a normal overlay cannot reach %s (the test could not fail)", outsider)
	}
	// Joining an open overlay gives it the way out; leaving it takes it away.
	h.MustTether("network", "connect", "open", "in")
	if out, _ := h.Tether("exec", "in", "--", "ip", "route", "show", "default"); !strings.Contains(out, "via 10.198.1.1 dev eth1") {
		t.Errorf("connected to an open overlay, the sandbox's default route is %q, want via 10.198.1.1 dev eth1", out)
	}
	if !ping(h, "in", outsider) {
		t.Errorf("connected to an open overlay, the sandbox cannot reach %s", outsider)
	}
	h.MustTether("network", "disconnect", "open", "in")
	if out, _ := h.Tether("exec", "in", "--", "ip", "route"); strings.Contains(out, "default") {
		t.Errorf("back on the internal overlay only, the sandbox has a default route:\n%s", out)
	}
	if ping(h, "in", outsider) {
		t.Errorf("back on the internal overlay only, the sandbox reached %s", outsider)
	}
}
