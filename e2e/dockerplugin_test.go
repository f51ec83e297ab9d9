package e2e

// Tether as Docker's network and IPAM plugin (issue 15), end to end with a
// real dockerd (the one bench/refs/docker.sh builds, on Debian's containerd
// and runc), the stock docker CLI and the busybox image: each test host is a
// bench/docker Node (its own network namespace and private mount namespace
// with containerd, dockerd and a Tether daemon started --docker-plugin
// beside it, the plugin sockets linked into that dockerd's
// /run/docker/plugins, daemon.json "dns": ["169.254.77.77"]). A missing
// reference fails these tests under TETHER_E2E=1 (bench/docker.RequireRefs).
//
//	TETHER_E2E=1 go test ./e2e -run TestDockerPlugin -count=1 -v

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bdocker "github.com/tether-net/tether/bench/docker"
	"github.com/tether-net/tether/internal/dockerplugin"
	"github.com/tether-net/tether/internal/testutil"
)

// dpPage is what busybox httpd serves from /var/www (bench/refs/busybox.sh).
const dpPage = "bench\n"

// dpHTTPD is the containers' command: busybox httpd in the foreground on 80.
var dpHTTPD = []string{"httpd", "-f", "-p", "80", "-h", "/var/www"}

// dpNode is a bench/docker Node with the tests' shorthands.
type dpNode struct {
	t *testing.T
	*bdocker.Node
}

// docker runs the docker CLI against the node's dockerd and fails the test
// (with both daemons' logs) on error.
func (n dpNode) docker(args ...string) string {
	n.t.Helper()
	out, _, err := n.Docker.CLI(args...)
	if err != nil {
		n.t.Fatalf("%v\n%s", err, n.Diagnose())
	}
	return out
}

// dockerTry runs the docker CLI and returns its output and error.
func (n dpNode) dockerTry(args ...string) (string, error) {
	out, _, err := n.Docker.CLI(args...)
	return out, err
}

// run is `docker run -d --name name --network netName IMAGE httpd`, with
// a 1 s stop timeout (httpd as PID 1 ignores SIGTERM: each stop would wait
// Docker's 10 s).
func (n dpNode) run(name, netName string, flags ...string) {
	n.t.Helper()
	args := append([]string{"run", "-d", "--stop-timeout", "1", "--name", name, "--network", netName}, flags...)
	n.docker(append(append(args, bdocker.Image), dpHTTPD...)...)
}

// addr is a container's IPv4 address on netName, from docker inspect.
func (n dpNode) addr(name, netName string) netip.Addr {
	n.t.Helper()
	out := strings.TrimSpace(n.docker("inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, netName), name))
	a, err := netip.ParseAddr(out)
	if err != nil {
		n.t.Fatalf("%s on %s: address %q: %v", name, netName, out, err)
	}
	return a
}

// reach checks from container from, by ICMP echo and HTTP, that target (a
// name or an address) answers; it returns the first failure.
func (n dpNode) reach(from, target string) error {
	if out, err := n.dockerTry("exec", from, "ping", "-c", "2", "-W", "2", target); err != nil {
		return fmt.Errorf("ping %s from %s: %v %s", target, from, err, out)
	}
	// busybox timeout, not wget -T: Debian's static busybox 1.35 wget
	// segfaults on -T
	out, err := n.dockerTry("exec", from, "timeout", "5", "wget", "-q", "-O", "-", "http://"+target+"/")
	if err != nil || out != dpPage {
		return fmt.Errorf("wget http://%s/ from %s: %q %v", target, from, out, err)
	}
	return nil
}

// reachWithin is reach retried for up to limit (names of other hosts'
// containers and restarted ones arrive asynchronously).
func (n dpNode) reachWithin(from, target string, limit time.Duration) error {
	var err error
	for deadline := time.Now().Add(limit); ; time.Sleep(200 * time.Millisecond) {
		if err = n.reach(from, target); err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// mustReach is reachWithin failing the test at once.
func (n dpNode) mustReach(from, target string, limit time.Duration) {
	n.t.Helper()
	if err := n.reachWithin(from, target, limit); err != nil {
		n.t.Fatalf("not within %v: %v\n%s", limit, err, n.Diagnose())
	}
}

// shouldReach is reachWithin marking the test failed and going on.
func (n dpNode) shouldReach(from, target string, limit time.Duration) {
	n.t.Helper()
	if err := n.reachWithin(from, target, limit); err != nil {
		n.t.Errorf("not within %v: %v\n%s", limit, err, n.Diagnose())
	}
}

// sandboxes lists the names of the Tether daemon's sandboxes.
func (n dpNode) sandboxes() []string {
	n.t.Helper()
	return lines(n.Tether.MustTether("sandbox", "ls", "--format", "{{.Name}}"))
}

// tetherNetworks lists the Tether daemon's network names.
func (n dpNode) tetherNetworks() []string {
	n.t.Helper()
	return lines(n.Tether.MustTether("network", "ls", "--format", "{{.Name}}"))
}

// veths lists the veth links of the node's namespace but the given ones.
func (n dpNode) veths(except ...string) []string {
	n.t.Helper()
	out := testutil.Must(n.t, "ip", "-n", n.Host.NS, "-o", "link", "show", "type", "veth")
	var got []string
	for _, l := range lines(out) {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if !slices.Contains(except, name) {
			got = append(got, name)
		}
	}
	return got
}

// ifaceOf is the container's interface holding addr (ip -o -4 addr).
func (n dpNode) ifaceOf(name string, addr netip.Addr) string {
	n.t.Helper()
	for _, l := range lines(n.docker("exec", name, "ip", "-o", "-4", "addr")) {
		f := strings.Fields(l)
		if len(f) >= 4 && strings.HasPrefix(f[3], addr.String()+"/") {
			return f[1]
		}
	}
	n.t.Fatalf("%s has no interface with %s", name, addr)
	return ""
}

// dpEventually polls ok every 100 ms until it holds or limit passes.
func dpEventually(t *testing.T, what string, limit time.Duration, ok func() (bool, string)) {
	t.Helper()
	var detail string
	for deadline := time.Now().Add(limit); ; time.Sleep(100 * time.Millisecond) {
		var done bool
		if done, detail = ok(); done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s: %s", limit, what, detail)
		}
	}
}

var dpPingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)

// pingThrough has container from ping target every 10 ms (500 echoes, 5
// s) while during runs, starting 1 s in, and fails the test on any loss or
// when during did not end inside the ping's window.
func (n dpNode) pingThrough(from, target string, during func()) {
	n.t.Helper()
	const count = 500
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		out, err := n.dockerTry("exec", from, "ping", "-i", "0.01", "-c", strconv.Itoa(count), "-W", "1", target)
		done <- result{out, err}
	}()
	time.Sleep(time.Second)
	during()
	ended := time.Since(start)
	r := <-done
	total := time.Since(start)
	m := dpPingSummary.FindStringSubmatch(r.out)
	if m == nil {
		n.t.Fatalf("ping %s from %s: no summary: %v %s", target, from, r.err, r.out)
	}
	sent, got := m[1], m[2]
	n.t.Logf("ping every 10 ms from %s to %s across the restart: %s sent, %s received (restart done %v into a %v ping)", from, target, sent, got, ended.Round(time.Millisecond), total.Round(time.Millisecond))
	if sent != strconv.Itoa(count) || got != sent {
		n.t.Errorf("ping from %s to %s across the restart: %s sent, %s received, want %d of %d\n%s", from, target, sent, got, count, count, r.out)
	}
	if ended >= total {
		n.t.Errorf("the restart (%v) outlasted the ping (%v): nothing was measured", ended, total)
	}
}

// restartTether stops the node's Tether daemon and starts it again.
func (n dpNode) restartTether() {
	n.t.Helper()
	n.Tether.Stop()
	if err := n.Tether.Start(); err != nil {
		n.t.Fatalf("restart tether: %v", err)
	}
}

// One host, Tether started both ways (nsenter keeps the test's mount
// namespace; ip netns exec gives it a new one, and is started before
// dockerd): a Tether local network made with the docker CLI, two busybox
// containers reaching each other by name and address (ping, wget), a
// published port from the outside and from the host namespace by the host's
// address, --ip, --network-alias and --mac-address, the outside, network
// connect and disconnect, a Tether restart under a ping every 10 ms, a
// dockerd restart leaking no endpoint, and docker rm -f leaving no sandbox
// and no veth in Tether.
func TestDockerPluginLocal(t *testing.T) {
	for _, mode := range []testutil.StartMode{testutil.StartNsenter, testutil.StartIPNetns} {
		t.Run(string(mode), func(t *testing.T) { dockerPluginLocal(t, mode) })
	}
}

func dockerPluginLocal(t *testing.T, mode testutil.StartMode) {
	refs := bdocker.RequireRefs(t)
	sfx := testutil.Suffix()
	h := bdocker.NewHost(t, "tth-dp")
	outside := testutil.Outside(t, h.NS)
	n := dpNode{t, bdocker.StartNode(t, h, refs, bdocker.TetherOptions{Mode: mode, TetherFirst: mode == testutil.StartIPNetns})}
	if impl, err := n.Activate(); err != nil || !slices.Contains(impl, "NetworkDriver") || !slices.Contains(impl, "IpamDriver") {
		t.Fatalf("/Plugin.Activate: %v %v", impl, err)
	}

	net1, net2 := "tnet-"+sfx, "tnet2-"+sfx
	n.docker("network", "create", "-d", "tether", "--ipam-driver", "tether", "--subnet", "10.140.0.0/24", net1)
	if got := strings.TrimSpace(n.docker("network", "ls", "--filter", "name="+net1, "--format", "{{.Name}} {{.Driver}} {{.Scope}}")); got != net1+" tether local" {
		t.Errorf("docker network ls: %q, want %q", got, net1+" tether local")
	}
	dpEventually(t, "tether network ls shows "+net1, 10*time.Second, func() (bool, string) {
		l := n.tetherNetworks()
		return slices.Contains(l, net1), fmt.Sprint(l)
	})

	web, cli := "web-"+sfx, "cli-"+sfx
	n.run(web, net1)
	n.run(cli, net1)
	subnet := netip.MustParsePrefix("10.140.0.0/24")
	webAddr, cliAddr := n.addr(web, net1), n.addr(cli, net1)
	if !subnet.Contains(webAddr) || !subnet.Contains(cliAddr) || webAddr == cliAddr {
		t.Fatalf("addresses %s, %s: want two distinct in %s", webAddr, cliAddr, subnet)
	}
	for _, c := range []struct{ from, to string }{
		{cli, web}, {cli, webAddr.String()}, {web, cli}, {web, cliAddr.String()}, {cli, web + "." + net1},
	} {
		if err := n.reach(c.from, c.to); err != nil {
			t.Errorf("%v", err)
		}
	}
	if got := n.sandboxes(); !sameSet(got, []string{web, cli}) {
		t.Errorf("tether sandbox ls: %v, want %v", got, []string{web, cli})
	}
	// the outside, through the network's gateway
	if out, err := n.dockerTry("exec", cli, "ping", "-c", "2", "-W", "2", testutil.OutsideAddr); err != nil {
		t.Errorf("%s cannot reach the outside %s: %v %s", cli, testutil.OutsideAddr, err, out)
	}

	// --ip, --network-alias, --mac-address
	opts, optsIP, optsMAC, alias := "opts-"+sfx, "10.140.0.200", "02:42:0a:8c:00:c8", "alias-"+sfx
	n.run(opts, net1, "--ip", optsIP, "--network-alias", alias, "--mac-address", optsMAC)
	if a := n.addr(opts, net1); a.String() != optsIP {
		t.Errorf("%s --ip %s: got %s", opts, optsIP, a)
	}
	if mac := strings.TrimSpace(n.docker("exec", opts, "cat", "/sys/class/net/"+n.ifaceOf(opts, netip.MustParseAddr(optsIP))+"/address")); mac != optsMAC {
		t.Errorf("%s --mac-address %s: interface has %s", opts, optsMAC, mac)
	}
	if err := n.reach(cli, alias); err != nil {
		t.Errorf("by --network-alias: %v", err)
	}
	n.docker("rm", "-f", opts)

	// -p: from the outside and from the host namespace, by the host's address
	pub := "pub-" + sfx
	n.run(pub, net1, "-p", "0.0.0.0:18080:80")
	testutil.ExpectPage(t, outside, testutil.UplinkAddr+":18080", dpPage, true)
	testutil.ExpectPage(t, h.NS, testutil.UplinkAddr+":18080", dpPage, true)
	n.docker("rm", "-f", pub)
	testutil.ExpectPage(t, outside, testutil.UplinkAddr+":18080", dpPage, false)

	// connect and disconnect
	n.docker("network", "create", "-d", "tether", "--ipam-driver", "tether", "--subnet", "10.141.0.0/24", net2)
	other := "other-" + sfx
	n.run(other, net2)
	n.docker("network", "connect", net2, cli)
	if a := n.addr(cli, net2); !netip.MustParsePrefix("10.141.0.0/24").Contains(a) {
		t.Errorf("%s on %s after connect: %s", cli, net2, a)
	}
	n.mustReach(cli, other, 10*time.Second)
	if got := len(n.sandboxes()); got != 4 {
		t.Errorf("tether sandboxes after connect: %v, want 4 (one per endpoint)", n.sandboxes())
	}
	n.docker("network", "disconnect", net2, cli)
	if out := n.docker("exec", cli, "ip", "-o", "-4", "addr"); strings.Contains(out, "10.141.0.") {
		t.Errorf("%s keeps an address on %s after disconnect:\n%s", cli, net2, out)
	}
	if err := n.reach(cli, n.addr(other, net2).String()); err == nil {
		t.Errorf("%s still reaches %s after disconnect", cli, other)
	}
	if got := n.sandboxes(); len(got) != 3 {
		t.Errorf("tether sandboxes after disconnect: %v, want 3", got)
	}

	// Tether restarted while cli pings web every 10 ms: no echo lost; the
	// restarted daemon still serves new containers
	n.pingThrough(cli, webAddr.String(), n.restartTether)
	late := "late-" + sfx
	n.run(late, net1)
	n.mustReach(cli, late, 10*time.Second)

	// dockerd restarted (SIGTERM, no live-restore): it stops its containers,
	// whose endpoints leave Tether; started again, they are connected again
	if err := n.Docker.RestartDockerd(); err != nil {
		t.Fatalf("%v\n%s", err, n.Diagnose())
	}
	dpEventually(t, "no tether sandbox once dockerd stopped its containers", 10*time.Second, func() (bool, string) {
		l := n.sandboxes()
		return len(l) == 0, fmt.Sprint(l)
	})
	if v := n.veths("up0"); len(v) > 0 {
		t.Errorf("veths left in %s after dockerd stopped its containers: %v", h.NS, v)
	}
	n.docker("start", web, cli, other, late)
	n.mustReach(cli, web, 10*time.Second)
	n.mustReach(web, late, 10*time.Second)
	if got := n.sandboxes(); !sameSet(got, []string{web, cli, other, late}) {
		t.Errorf("tether sandboxes after dockerd's restart and docker start: %v", got)
	}

	// docker rm -f leaves nothing in Tether
	n.docker("rm", "-f", web, cli, other, late)
	dpEventually(t, "no tether sandbox after docker rm -f", 5*time.Second, func() (bool, string) {
		l := n.sandboxes()
		return len(l) == 0, fmt.Sprint(l)
	})
	if v := n.veths("up0"); len(v) > 0 {
		t.Errorf("veths left in %s after docker rm -f: %v", h.NS, v)
	}
	n.docker("network", "rm", net1, net2)
	dpEventually(t, "tether forgets the networks", 10*time.Second, func() (bool, string) {
		l := n.tetherNetworks()
		return !slices.Contains(l, net1) && !slices.Contains(l, net2), fmt.Sprint(l)
	})
}

// dpStoreServer is a cluster store's server (etcd or ZooKeeper).
type dpStoreServer interface {
	Start()
	Stop()
}

// dpStore is a cluster's store server and its client address.
func dpStore(c *bdocker.Cluster) (dpStoreServer, string) {
	if c.ZK != nil {
		return c.ZK, c.ZK.Addr
	}
	return c.Etcd, c.Etcd.Addr
}

// sameSet reports whether a and b hold the same strings (any order).
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// Two hosts (Nodes on one underlay) sharing a cluster store, etcd and
// ZooKeeper: a global Tether network created with the docker CLI on host 1
// (etcd: -d tether -o tether.scope=global; ZooKeeper: -d tether-overlay)
// is listed by host 2's dockerd by itself; containers on both hosts get
// distinct addresses, overlay MTU underlay - 50, reach each other by name
// and name.network (Tether answering Docker's resolver) and the outside
// (Docker's gateway bridge); docker restart keeps a container reachable; a
// Tether restart on host 1 loses no ping at 10 ms; with the cluster store
// down a container on the global network is refused naming the store while
// local networks work; docker rm -f leaves no sandbox on either host; host
// 2's Docker stack killed with a container running, host 2's reconcile
// forgets its endpoint, host 1 drops it and its address is free again.
func TestDockerPluginOverlay(t *testing.T) {
	for _, kind := range []string{"etcd", "zk"} {
		t.Run(kind, func(t *testing.T) { dockerPluginOverlay(t, kind) })
	}
}

func dockerPluginOverlay(t *testing.T, kind string) {
	refs := bdocker.RequireRefs(t)
	sfx := testutil.Suffix()
	c := bdocker.StartCluster(t, refs, kind, 2, bdocker.TetherOptions{})
	n1, n2 := dpNode{t, c.Nodes[0]}, dpNode{t, c.Nodes[1]}
	testutil.Outside(t, c.Members[0].NS)

	ov := "ov-" + sfx
	create := []string{"network", "create", "-d", "tether", "-o", "tether.scope=global"}
	if kind == "zk" {
		create = []string{"network", "create", "-d", "tether-overlay"}
	}
	// a global network with Docker's default IPAM is refused, naming the fix
	if out, err := n1.dockerTry(append(create, "--subnet", "10.151.0.0/24", "bad-"+sfx)...); err == nil || !strings.Contains(out, "--ipam-driver tether") {
		t.Errorf("global network with Docker's IPAM: %v %q, want a refusal saying --ipam-driver tether", err, out)
	}
	n1.docker(append(create, "--ipam-driver", "tether", "--subnet", "10.150.0.0/24", ov)...)
	for i, n := range []dpNode{n1, n2} {
		dpEventually(t, fmt.Sprintf("docker network ls on host %d lists %s", i+1, ov), 15*time.Second, func() (bool, string) {
			out, err := n.dockerTry("network", "ls", "--filter", "name="+ov, "--format", "{{.Name}} {{.Driver}} {{.Scope}}")
			return err == nil && strings.HasPrefix(out, ov+" "), fmt.Sprintf("%q %v", out, err)
		})
		dpEventually(t, fmt.Sprintf("tether network ls on host %d shows %s", i+1, ov), 15*time.Second, func() (bool, string) {
			l := n.tetherNetworks()
			return slices.Contains(l, ov), fmt.Sprint(l)
		})
	}
	t.Logf("host 2 lists: %s", strings.TrimSpace(n2.docker("network", "ls", "--filter", "name="+ov, "--format", "{{.Name}} {{.Driver}} {{.Scope}}")))

	c1, c2 := "c1-"+sfx, "c2-"+sfx
	n1.run(c1, ov)
	n2.run(c2, ov)
	subnet := netip.MustParsePrefix("10.150.0.0/24")
	a1, a2 := n1.addr(c1, ov), n2.addr(c2, ov)
	if !subnet.Contains(a1) || !subnet.Contains(a2) || a1 == a2 {
		t.Fatalf("addresses %s (host 1), %s (host 2): want two distinct in %s", a1, a2, subnet)
	}
	for _, x := range []struct {
		n    dpNode
		name string
		addr netip.Addr
	}{{n1, c1, a1}, {n2, c2, a2}} {
		dev := x.n.ifaceOf(x.name, x.addr)
		if mtu := strings.TrimSpace(x.n.docker("exec", x.name, "cat", "/sys/class/net/"+dev+"/mtu")); mtu != strconv.Itoa(c.U.MTU-50) {
			t.Errorf("%s %s mtu %s, want %d (underlay %d - 50)", x.name, dev, mtu, c.U.MTU-50, c.U.MTU)
		}
	}
	// across hosts by address, name and name.network (names: reported, and
	// the test goes on by address)
	n1.mustReach(c1, a2.String(), 15*time.Second)
	n2.mustReach(c2, a1.String(), 15*time.Second)
	n1.shouldReach(c1, c2, 15*time.Second)
	n1.shouldReach(c1, c2+"."+ov, 5*time.Second)
	n2.shouldReach(c2, c1, 5*time.Second)
	n2.shouldReach(c2, c1+"."+ov, 5*time.Second)
	// the outside, through host 1's gateway
	if out, err := n1.dockerTry("exec", c1, "ping", "-c", "2", "-W", "2", testutil.OutsideAddr); err != nil {
		t.Errorf("%s cannot reach the outside %s: %v %s", c1, testutil.OutsideAddr, err, out)
	}
	if got := n1.sandboxes(); !sameSet(got, []string{c1}) {
		t.Errorf("tether sandbox ls on host 1: %v, want [%s]", got, c1)
	}

	// docker restart keeps c2 reachable, by address and name (its address
	// may change)
	n2.docker("restart", "-t", "0", c2)
	n1.mustReach(c1, n2.addr(c2, ov).String(), 15*time.Second)
	n2.mustReach(c2, a1.String(), 15*time.Second)
	n1.shouldReach(c1, c2, 15*time.Second)

	// Tether restarted on host 1 while c1 pings c2 every 10 ms
	n1.pingThrough(c1, n2.addr(c2, ov).String(), n1.restartTether)

	// the cluster store down: a container on the global network is refused
	// with an error naming the store (the plugin answers: Docker would
	// wait for ever otherwise), local networks work; the store back, the
	// global network works again
	store, addr := dpStore(c)
	store.Stop()
	down, loc, lc := "down-"+sfx, "loc-"+sfx, "lc-"+sfx
	if out, err := n1.dockerTry("run", "-d", "--name", down, "--network", ov, bdocker.Image, "sleep", "600"); err == nil || !strings.Contains(out, addr) {
		t.Errorf("docker run on %s with the store down: %v %q; want a refusal naming the store %s", ov, err, out, addr)
	}
	n1.docker("rm", "-f", down)
	n1.docker("network", "create", "-d", "tether", "--ipam-driver", "tether", "--subnet", "10.152.0.0/24", loc)
	n1.run(lc, loc)
	n1.docker("rm", "-f", lc)
	n1.docker("network", "rm", loc)
	store.Start()
	dpEventually(t, "docker run on the global network once the store is back", 30*time.Second, func() (bool, string) {
		out, err := n1.dockerTry("run", "-d", "--stop-timeout", "1", "--name", down, "--network", ov, bdocker.Image, "sleep", "600")
		if err != nil {
			n1.dockerTry("rm", "-f", down)
		}
		return err == nil, out
	})
	n1.mustReach(c1, n2.addr(c2, ov).String(), 15*time.Second)

	n1.docker("rm", "-f", c1, down)
	n2.docker("rm", "-f", c2)
	for i, n := range []dpNode{n1, n2} {
		dpEventually(t, fmt.Sprintf("no tether sandbox on host %d after docker rm -f", i+1), 5*time.Second, func() (bool, string) {
			l := n.sandboxes()
			return len(l) == 0, fmt.Sprint(l)
		})
		if v := n.veths("eth0", "up0"); len(v) > 0 {
			t.Errorf("veths left on host %d after docker rm -f: %v", i+1, v)
		}
	}

	// host 2's whole Docker stack killed while a container of it runs on
	// the global network (bdocker.Docker.KillAll; Tether runs on): host 2's
	// periodic reconcile forgets the endpoint, host 1 stops listing it and
	// its address is free cluster-wide (host 1 gives it to a container)
	k := "k-" + sfx
	n2.run(k, ov)
	kAddr := n2.addr(k, ov)
	dpEventually(t, "host 1 lists host 2's "+k, 15*time.Second, func() (bool, string) {
		eps := n1.endpointsOn(ov)
		return eps[k] != "", fmt.Sprint(eps)
	})
	killed, unmounted, err := n2.Docker.KillAll()
	t.Logf("host 2: killed %d processes %v; unmounted %v", len(killed), killed, unmounted)
	if err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	dpEventually(t, "host 2's reconcile forgets "+k, 2*dockerplugin.ReconcileEvery+10*time.Second, func() (bool, string) {
		l := n2.sandboxes()
		return len(l) == 0, fmt.Sprint(l)
	})
	t.Logf("host 2 forgot %s %v after the kill", k, time.Since(killedAt).Round(100*time.Millisecond))
	if !dpLogged(n2.Tether.Log(), "handed-over endpoint is gone", k) {
		t.Errorf("host 2's tether log does not say the reconcile found %s's pair gone:\n%s", k, n2.Diagnose())
	}
	dpEventually(t, "host 1 forgets host 2's "+k, 10*time.Second, func() (bool, string) {
		eps := n1.endpointsOn(ov)
		return eps[k] == "", fmt.Sprint(eps)
	})
	if v := n2.veths("eth0", "up0"); len(v) > 0 {
		t.Errorf("veths left on host 2 after its Docker was killed: %v", v)
	}
	reuse := "reuse-" + sfx
	n1.run(reuse, ov, "--ip", kAddr.String())
	n1.docker("rm", "-f", reuse)
	n1.docker("network", "rm", ov)
}

// endpointsOn maps the names of a Tether network's endpoints to their
// hosts (tether network inspect; on a global network every host's).
func (n dpNode) endpointsOn(netName string) map[string]string {
	n.t.Helper()
	var v struct {
		Containers map[string]struct{ Name, Host string }
	}
	n.Tether.InspectJSON(&v, "network", "inspect", netName)
	out := map[string]string{}
	for _, c := range v.Containers {
		out[c.Name] = c.Host
	}
	return out
}

// dpPingLog is where pingAcross's ping writes, inside the container.
const dpPingLog = "/tmp/tether-ping.log"

// pingAcross starts a ping every 10 ms (count echoes) from container from
// to target as a process of its own in the container (docker exec -d: it
// outlives a dockerd restarted with live-restore, which an attached exec
// would not), runs during 1 s in, checks the ping had not ended when
// during returned, waits for its summary and fails the test on any loss.
func (n dpNode) pingAcross(from, target string, count int, during func()) {
	n.t.Helper()
	n.docker("exec", "-d", from, "sh", "-c", fmt.Sprintf("ping -i 0.01 -c %d -W 1 %s >%s 2>&1", count, target, dpPingLog))
	time.Sleep(time.Second)
	during()
	if out, _ := n.dockerTry("exec", from, "cat", dpPingLog); dpPingSummary.MatchString(out) {
		n.t.Fatalf("the ping from %s to %s had ended when the restart was done: nothing was measured\n%s", from, target, out)
	}
	var out string
	dpEventually(n.t, "the ping's summary", time.Duration(count)*20*time.Millisecond+10*time.Second, func() (bool, string) {
		out, _ = n.dockerTry("exec", from, "cat", dpPingLog)
		return dpPingSummary.MatchString(out), out
	})
	m := dpPingSummary.FindStringSubmatch(out)
	n.t.Logf("ping every 10 ms from %s to %s across the restart: %s sent, %s received", from, target, m[1], m[2])
	if m[1] != strconv.Itoa(count) || m[2] != m[1] {
		n.t.Errorf("ping from %s to %s across the restart: %s sent, %s received, want %d of %d\n%s", from, target, m[1], m[2], count, count, out)
	}
}

// One host, dockerd with "live-restore": true:
//
//   - what `docker port` and `docker ps` print for a container on a Tether
//     local network published with -p 8080:80 (the port itself works);
//   - dockerd restarted (SIGTERM, start): the containers keep running and
//     keep reaching each other (a ping every 10 ms by address across the
//     restart loses nothing; by name after it), no Tether sandbox or veth
//     is lost or leaked, a new container joins, and docker rm -f of the
//     published container closes its port and leaves nothing (dockerd's
//     remote driver lost its table of endpoints with the restart: its
//     RevokeExternalConnectivity fails inside dockerd, "remote network
//     driver: endpoint ... not found", and never reaches the plugin; Leave
//     unpublishes);
//   - the whole Docker stack killed (dockerd, containerd, shims, containers
//     with SIGKILL, then the containers' namespace files unmounted, see
//     bdocker.Docker.KillAll) while Tether runs on: Tether's periodic
//     reconcile (no Tether restart) forgets the endpoints, their veths are
//     gone, their published port is closed and their addresses are free
//     (a Tether sandbox takes one with --ip); Docker started again accepts
//     its stale endpoints' teardown and a container takes the address again.
func TestDockerPluginDockerdFailure(t *testing.T) {
	refs := bdocker.RequireRefs(t)
	sfx := testutil.Suffix()
	h := bdocker.NewHost(t, "tth-dpf")
	outside := testutil.Outside(t, h.NS)
	n := dpNode{t, bdocker.StartNode(t, h, refs, bdocker.TetherOptions{DockerExtra: map[string]any{"live-restore": true}})}

	netName := "lr-" + sfx
	n.docker("network", "create", "-d", "tether", "--ipam-driver", "tether", "--subnet", "10.160.0.0/24", netName)
	a, b, pub := "a-"+sfx, "b-"+sfx, "pub-"+sfx
	n.run(a, netName)
	n.run(b, netName)
	n.run(pub, netName, "-p", "8080:80")
	testutil.ExpectPage(t, outside, testutil.UplinkAddr+":8080", dpPage, true)

	// what Docker prints for the published port of a remote driver's
	// endpoint
	n.checkPorts(pub, "before the restart")

	// dockerd restarted with live-restore while a pings b every 10 ms
	bAddr := n.addr(b, netName)
	sbBefore, vethBefore := n.sandboxes(), n.veths("up0")
	if !sameSet(sbBefore, []string{a, b, pub}) || len(vethBefore) != 3 {
		t.Fatalf("before the restart: sandboxes %v, veths %v; want %v and 3 veths", sbBefore, vethBefore, []string{a, b, pub})
	}
	n.pingAcross(a, bAddr.String(), 1500, func() {
		if err := n.Docker.RestartDockerd(); err != nil {
			t.Fatalf("%v\n%s", err, n.Diagnose())
		}
	})
	if running := strings.Fields(n.docker("ps", "--format", "{{.Names}}")); !sameSet(running, []string{a, b, pub}) {
		t.Errorf("running after the live-restore restart: %v, want %v", running, []string{a, b, pub})
	}
	n.mustReach(a, b, 10*time.Second)
	n.mustReach(b, a, 10*time.Second)
	testutil.ExpectPage(t, outside, testutil.UplinkAddr+":8080", dpPage, true)
	if got := n.sandboxes(); !sameSet(got, sbBefore) {
		t.Errorf("tether sandboxes after the live-restore restart: %v, want %v", got, sbBefore)
	}
	if got := n.veths("up0"); !sameSet(got, vethBefore) {
		t.Errorf("veths after the live-restore restart: %v, want %v", got, vethBefore)
	}
	n.checkPorts(pub, "after the restart")
	late := "late-" + sfx
	n.run(late, netName)
	if la := n.addr(late, netName); la == bAddr || la == n.addr(a, netName) || la == n.addr(pub, netName) {
		t.Errorf("%s got %s, an address a restored container has", late, la)
	}
	n.mustReach(late, a, 10*time.Second)
	n.docker("rm", "-f", pub)
	testutil.ExpectPage(t, outside, testutil.UplinkAddr+":8080", dpPage, false)
	testutil.ExpectPage(t, h.NS, testutil.UplinkAddr+":8080", dpPage, false)
	n.docker("rm", "-f", a, b, late)
	dpEventually(t, "no tether sandbox after docker rm -f", 5*time.Second, func() (bool, string) {
		l := n.sandboxes()
		return len(l) == 0, fmt.Sprint(l)
	})
	if v := n.veths("up0"); len(v) > 0 {
		t.Errorf("veths left after docker rm -f: %v", v)
	}

	// the whole Docker stack killed; Tether runs on
	k1, k2, k1IP := "k1-"+sfx, "k2-"+sfx, "10.160.0.77"
	n.run(k1, netName, "--ip", k1IP, "-p", "0.0.0.0:8081:80")
	n.run(k2, netName)
	n.mustReach(k2, k1, 10*time.Second)
	testutil.ExpectPage(t, outside, testutil.UplinkAddr+":8081", dpPage, true)
	k2IP := n.addr(k2, netName)
	killed, unmounted, err := n.Docker.KillAll()
	t.Logf("killed %d processes %v; unmounted %v", len(killed), killed, unmounted)
	if err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	dpEventually(t, "tether's reconcile forgets the killed containers' endpoints", 2*dockerplugin.ReconcileEvery+10*time.Second, func() (bool, string) {
		l := n.sandboxes()
		return len(l) == 0, fmt.Sprint(l)
	})
	t.Logf("the endpoints were forgotten %v after the kill", time.Since(killedAt).Round(100*time.Millisecond))
	for _, sb := range []string{k1, k2} {
		if !dpLogged(n.Tether.Log(), "handed-over endpoint is gone", sb) {
			t.Errorf("tether's log does not say the reconcile found %s's pair gone:\n%s", sb, n.Diagnose())
		}
	}
	if v := n.veths("up0"); len(v) > 0 {
		t.Errorf("veths left after the kill: %v", v)
	}
	testutil.ExpectPage(t, outside, testutil.UplinkAddr+":8081", dpPage, false)
	// the addresses are free: a Tether sandbox takes each
	for i, ip := range []string{k1IP, k2IP.String()} {
		name := fmt.Sprintf("reuse%d-%s", i, sfx)
		n.Tether.MustTether("sandbox", "create", "--name", name, "--network", netName, "--ip", ip)
		n.Tether.MustTether("sandbox", "rm", "-f", name)
	}

	// Docker back: it tears its dead containers' endpoints down (Tether
	// forgot them: success), and the address is a container's again
	if err := n.Docker.StartAgain(); err != nil {
		t.Fatalf("%v\n%s", err, n.Diagnose())
	}
	again := "again-" + sfx
	n.run(again, netName, "--ip", k1IP)
	if out, err := n.dockerTry("exec", again, "ping", "-c", "2", "-W", "2", testutil.OutsideAddr); err != nil {
		t.Errorf("%s cannot reach the outside %s: %v %s", again, testutil.OutsideAddr, err, out)
	}
	n.docker("rm", "-f", again, k1, k2)
	dpEventually(t, "no tether sandbox after docker rm -f", 5*time.Second, func() (bool, string) {
		l := n.sandboxes()
		return len(l) == 0, fmt.Sprint(l)
	})
	n.docker("network", "rm", netName)
}

// checkPorts records what Docker prints for the ports of container name,
// published with -p 8080:80 on a Tether local network: nothing. Docker
// fills a container's port table (NetworkSettings.Ports, which docker port
// and docker ps print) only from a driver's EndpointOperInfo values of its
// own Go types ([]types.PortBinding under com.docker.network.portmap);
// a remote driver's answer is decoded JSON, which never matches, so no
// remote driver can fill it (moby daemon/network.go getEndpointPortMapInfo).
// The port is published all the same (dpGet).
func (n dpNode) checkPorts(name, when string) {
	n.t.Helper()
	port := n.docker("port", name)
	ps := n.docker("ps", "--filter", "name="+name, "--format", "{{.Ports}}")
	ports := n.docker("inspect", "-f", "{{json .NetworkSettings.Ports}}", name)
	one, err := n.dockerTry("port", name, "80/tcp")
	n.t.Logf("%s: docker port %s: %q; docker port %s 80/tcp: %q (%v); docker ps --format {{.Ports}}: %q; inspect .NetworkSettings.Ports: %q",
		when, name, port, name, one, err, ps, ports)
	if port != "" || strings.TrimSpace(ps) != "" || strings.TrimSpace(ports) != "{}" {
		n.t.Errorf("%s: docker port %q, docker ps {{.Ports}} %q, .NetworkSettings.Ports %q; want \"\", \"\", {} (a remote driver cannot fill Docker's port table)",
			when, port, ps, ports)
	}
	if err == nil || !strings.Contains(one, "No public port '80/tcp' published for "+name) {
		n.t.Errorf("%s: docker port %s 80/tcp: %q %v; want a failure: No public port '80/tcp' published for %s", when, name, one, err, name)
	}
}

// dpLogged reports whether a line of log holds every one of words.
func dpLogged(log string, words ...string) bool {
	for _, l := range lines(log) {
		if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(l, w) }) {
			return true
		}
	}
	return false
}
