package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"

	"github.com/tether-net/tether/internal/testutil"
)

var inNS = testutil.InNS

func defaultSubnet(t *testing.T, d *testutil.Daemon) (subnet, gateway string) {
	t.Helper()
	var n network.Inspect
	d.InspectJSON(&n, "network", "inspect", "bridge")
	if len(n.IPAM.Config) != 1 {
		t.Fatalf("bridge IPAM config: %+v", n.IPAM.Config)
	}
	return n.IPAM.Config[0].Subnet.String(), n.IPAM.Config[0].Gateway.String()
}

// cloudHost makes a namespace whose routes cover 172.16.0.0/12 and
// 192.168.0.0/16, as on many cloud VMs (a bridge stands in for eth0: the
// kernel here has no dummy links).
func cloudHost(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-cloud")
	for _, args := range [][]string{
		{"link", "add", "uplink0", "type", "bridge"},
		{"addr", "add", "10.0.0.5/24", "dev", "uplink0"},
		{"link", "set", "uplink0", "up"},
		{"route", "add", "172.16.0.0/12", "via", "10.0.0.1"},
		{"route", "add", "192.168.0.0/16", "via", "10.0.0.1", "table", "100"},
	} {
		testutil.Must(t, "ip", append([]string{"-n", ns}, args...)...)
	}
	return ns
}

// The cloud host starts: every Docker pool is blocked, the fallback pool is free.
func TestCloudHostPicksFreePool(t *testing.T) {
	ns := cloudHost(t)
	d := testutil.StartDaemon(t, ns)
	subnet, gw := defaultSubnet(t, d)
	if subnet != "10.200.0.0/20" || gw != "10.200.0.1" {
		t.Errorf("default network %s gw %s, want 10.200.0.0/20 gw 10.200.0.1", subnet, gw)
	}
	// A new network without --subnet also avoids the routes and the default network.
	d.MustTether("network", "create", "auto")
	var n network.Inspect
	d.InspectJSON(&n, "network", "inspect", "auto")
	if got := n.IPAM.Config[0].Subnet.String(); got != "10.200.16.0/20" {
		t.Errorf("auto network subnet %s, want 10.200.16.0/20", got)
	}
}

// The same host with every pool blocked refuses to start and says why and how to fix it.
func TestAllPoolsBlockedRefusesStart(t *testing.T) {
	ns := cloudHost(t)
	testutil.Must(t, "ip", "-n", ns, "route", "add", "10.200.0.0/13", "via", "10.0.0.1")
	d := testutil.NewDaemon(t, ns)
	out, err := d.Fails()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"no free address pool",
		"route 172.16.0.0/12 via 10.0.0.1 dev uplink0 (table main)",
		"route 192.168.0.0/16 via 10.0.0.1 dev uplink0 (table 100)",
		"route 10.200.0.0/13",
		`"bip"`, `"default-address-pools"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal lacks %q:\n%s", want, out)
		}
	}
	if _, err := inNS(ns, "ip", "link", "show", "tether0"); err == nil {
		t.Error("a refused start left tether0 behind")
	}
	// The fix the message suggests works.
	d.Args = []string{"--default-address-pool", "base=10.99.0.0/16,size=24"}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if s, _ := defaultSubnet(t, d); s != "10.99.0.0/24" {
		t.Errorf("with default-address-pools the default subnet is %s", s)
	}
}

// bip sets the bridge address and the subnet; fixed-cidr limits sandbox addresses.
func TestBIPAndFixedCIDR(t *testing.T) {
	ns, d := host(t, "--bip", "10.171.211.13/21", "--fixed-cidr", "10.171.212.0/24")
	subnet, gw := defaultSubnet(t, d)
	if subnet != "10.171.208.0/21" || gw != "10.171.211.13" {
		t.Errorf("default network %s gw %s", subnet, gw)
	}
	if out, _ := inNS(ns, "ip", "-br", "addr", "show", "tether0"); !strings.Contains(out, "10.171.211.13/21") {
		t.Errorf("tether0: %q", out)
	}
	d.MustTether("sandbox", "create", "--name", "a")
	if got := ip(t, d, "a", "bridge"); !strings.HasPrefix(got, "10.171.212.") {
		t.Errorf("address %s outside fixed-cidr 10.171.212.0/24", got)
	}
	if !ping(d, "a", "10.171.211.13") {
		t.Error("sandbox cannot reach the bridge address")
	}
}

// An existing bridge (bridge: bridge0) is used with its address and left in
// place when the daemon stops.
func TestExistingBridge(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-br")
	testutil.Must(t, "ip", "-n", ns, "link", "add", "bridge0", "type", "bridge")
	testutil.Must(t, "ip", "-n", ns, "addr", "add", "192.168.5.1/24", "dev", "bridge0")
	d := testutil.NewDaemon(t, ns)
	d.Config = `{"bridge": "bridge0"}`
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	subnet, gw := defaultSubnet(t, d)
	if subnet != "192.168.5.0/24" || gw != "192.168.5.1" {
		t.Errorf("default network %s gw %s", subnet, gw)
	}
	d.MustTether("sandbox", "create", "--name", "a")
	d.MustTether("sandbox", "create", "--name", "b")
	if !ping(d, "a", ip(t, d, "b", "bridge")) || !ping(d, "a", "192.168.5.1") {
		t.Error("no traffic on the existing bridge")
	}
	if _, err := inNS(ns, "ip", "link", "show", "tether0"); err == nil {
		t.Error("tether0 was created although bridge0 was given")
	}
	// Giving bridge both in the file and as a flag is refused, naming the key.
	d2 := testutil.NewDaemon(t, ns, "-b", "bridge0")
	d2.Config = `{"bridge": "bridge0"}`
	out, err := d2.Fails()
	if err != nil || !strings.Contains(out, "bridge") || !strings.Contains(out, "both as a flag and in the configuration file") {
		t.Errorf("conflict not refused: %v\n%s", err, out)
	}
}

// State survives a daemon restart under every start mode: networks,
// sandboxes, addresses, DNS names, and the kernel objects of a running
// sandbox are not recreated (same interface index), and traffic keeps
// flowing.
func TestStateSurvivesRestart(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		ns, d := hostMode(t, mode)
		d.MustTether("network", "create", "--subnet", "10.50.0.0/24", "keep")
		httpServer(t, d, "web", "keep")
		runDetached(t, d, "cli", "--network", "keep", "--", "sleep", "600")
		if err := httpGet(d, "cli", "10.50.0.2", 25); err != nil {
			t.Fatal(err)
		}
		resolves(t, d, "cli", "web", "10.50.0.2")
		before := sandbox(t, d, "web").Networks["keep"]
		linkBefore, _ := inNS(ns, "ip", "-o", "link", "show", before.HostIfName)
		netsBefore := d.MustTether("network", "ls", "-q")

		restart(t, d)
		after := sandbox(t, d, "web").Networks["keep"]
		if after == nil {
			t.Fatalf("web lost its endpoint on keep across the restart:\n%s", d.Log())
		}
		if after.IPAddress != before.IPAddress || after.EndpointID != before.EndpointID || after.HostIfName != before.HostIfName {
			t.Errorf("endpoint changed across restart: %+v -> %+v", before, after)
		}
		linkAfter, _ := inNS(ns, "ip", "-o", "link", "show", after.HostIfName)
		if idx := func(s string) string { return strings.SplitN(s, ":", 2)[0] }; idx(linkBefore) != idx(linkAfter) || linkAfter == "" {
			t.Errorf("host link recreated: %q -> %q", linkBefore, linkAfter)
		}
		if got := d.MustTether("network", "ls", "-q"); got != netsBefore {
			t.Errorf("networks changed: %q -> %q", netsBefore, got)
		}
		if err := httpGet(d, "cli", "10.50.0.2", 25); err != nil {
			t.Error(err)
		}
		// The embedded resolver answers in the sandboxes again.
		resolves(t, d, "cli", "web", "10.50.0.2")
		// The allocator state survived too: the next sandbox gets the next address.
		d.MustTether("sandbox", "create", "--name", "third", "--network", "keep")
		if got := ip(t, d, "third", "keep"); got != "10.50.0.4" {
			t.Errorf("third sandbox got %s, want 10.50.0.4", got)
		}
	})
}

// resolves checks that name resolves to addr inside sandbox from (through
// its resolv.conf, i.e. the embedded resolver at 127.0.0.11; a sandbox's
// /etc/hosts names only itself).
func resolves(t *testing.T, d *testutil.Daemon, from, name, addr string) {
	t.Helper()
	out, err := d.Tether("exec", from, "--", "getent", "hosts", name)
	if f := strings.Fields(out); err != nil || len(f) == 0 || f[0] != addr {
		t.Errorf("%s resolving %s: %v %q, want %s", from, name, err, out, addr)
	}
}

// A sandbox name gets its previous address back when it reconnects (sticky IPs).
func TestStickyAddress(t *testing.T) {
	_, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.60.0.0/24", "sticky")
	d.MustTether("sandbox", "create", "--name", "a", "--network", "sticky")
	d.MustTether("sandbox", "create", "--name", "b", "--network", "sticky")
	first := ip(t, d, "b", "sticky")
	d.MustTether("rm", "b")
	d.MustTether("sandbox", "create", "--name", "c", "--network", "sticky")
	if ip(t, d, "c", "sticky") == first {
		t.Fatalf("c took b's old address %s; next-fit should move on", first)
	}
	d.MustTether("sandbox", "create", "--name", "b", "--network", "sticky")
	if got := ip(t, d, "b", "sticky"); got != first {
		t.Errorf("b came back with %s, want its old %s", got, first)
	}
	// Disconnect and reconnect keeps it as well.
	d.MustTether("network", "disconnect", "sticky", "b")
	d.MustTether("network", "connect", "sticky", "b")
	if got := ip(t, d, "b", "sticky"); got != first {
		t.Errorf("after reconnect b has %s, want %s", got, first)
	}
}

// icc=false (per network) isolates sandboxes from each other; the gateway
// stays reachable.
func TestICCDisabled(t *testing.T) {
	_, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.70.0.0/24", "-o", "com.docker.network.bridge.enable_icc=false", "quiet")
	d.MustTether("sandbox", "create", "--name", "a", "--network", "quiet")
	d.MustTether("sandbox", "create", "--name", "b", "--network", "quiet")
	if !ping(d, "a", "10.70.0.1") {
		t.Error("gateway unreachable with icc=false")
	}
	if ping(d, "a", ip(t, d, "b", "quiet")) {
		t.Error("a reached b although icc=false")
	}
}

// exec enters the sandbox's mount and UTS namespaces: it sees the sandbox's
// hosts file and hostname, and they follow connect and disconnect.
func TestExecSeesSandboxFiles(t *testing.T) {
	_, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.80.0.0/24", "files")
	d.MustTether("sandbox", "create", "--name", "box", "--hostname", "boxhost", "--network", "files")
	if got := strings.TrimSpace(d.MustTether("exec", "box", "--", "hostname")); got != "boxhost" {
		t.Errorf("hostname = %q", got)
	}
	hosts := d.MustTether("exec", "box", "--", "cat", "/etc/hosts")
	if !strings.Contains(hosts, "10.80.0.2\tboxhost box") || !strings.Contains(hosts, "127.0.0.1\tlocalhost") {
		t.Errorf("/etc/hosts:\n%s", hosts)
	}
	if hostHosts, _ := os.ReadFile("/etc/hosts"); strings.Contains(string(hostHosts), "boxhost") {
		t.Error("the host's /etc/hosts was changed")
	}
	if got := d.MustTether("exec", "box", "--", "getent", "hosts", "boxhost"); !strings.HasPrefix(got, "10.80.0.2") {
		t.Errorf("getent hosts boxhost = %q", got)
	}
	d.MustTether("network", "create", "--subnet", "10.81.0.0/24", "more")
	d.MustTether("network", "connect", "more", "box")
	if hosts := d.MustTether("exec", "box", "--", "cat", "/etc/hosts"); !strings.Contains(hosts, "10.81.0.2\tboxhost box") {
		t.Errorf("/etc/hosts after connect:\n%s", hosts)
	}
	if out, err := d.Tether("exec", "box", "--", "sh", "-c", "exit 7"); err == nil || exitCode(err) != 7 {
		t.Errorf("exit status not passed on: %v %s", err, out)
	}
	if out, err := d.Tether("exec", "box", "--", "no-such-command-here"); err == nil || exitCode(err) != 127 {
		t.Errorf("missing command: %v %s", err, out)
	}
	if rc := d.MustTether("exec", "box", "--", "cat", "/etc/resolv.conf"); !strings.Contains(rc, "nameserver 127.0.0.11") {
		t.Errorf("resolv.conf:\n%s", rc)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// Adopting a namespace of another runtime by PID or path attaches networks
// and never deletes the namespace.
func TestAdoptNamespace(t *testing.T) {
	ns, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.90.0.0/24", "adopt")
	d.MustTether("sandbox", "create", "--name", "peer", "--network", "adopt")

	// "Another runtime": a named namespace and a process living in another one.
	other := testutil.NetNS(t, "tth-other")
	d.MustTether("sandbox", "create", "--name", "bypath", "--netns", "/run/netns/"+other, "--network", "adopt")
	if out, err := inNS(other, "ping", "-c1", "-W2", ip(t, d, "peer", "adopt")); err != nil {
		t.Errorf("adopted (path) namespace has no traffic: %v %s", err, out)
	}
	sleeper := exec.Command("unshare", "--net", "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	pid := sleeper.Process.Pid
	waitOwnNetNS(t, pid)
	d.MustTether("sandbox", "create", "--name", "bypid", "--pid", itoa(pid), "--network", "adopt")
	if !ping(d, "peer", ip(t, d, "bypid", "adopt")) {
		t.Error("peer cannot reach the sandbox adopted by pid")
	}
	d.MustTether("rm", "bypath")
	d.MustTether("rm", "bypid")
	if _, err := os.Stat("/run/netns/" + other); err != nil {
		t.Errorf("removing the adopted sandbox deleted its namespace: %v", err)
	}
	if out, _ := inNS(other, "ip", "-br", "link"); strings.Contains(out, "eth0") {
		t.Errorf("eth0 left in the adopted namespace:\n%s", out)
	}
	_ = ns
	if out, err := d.Tether("sandbox", "create", "--name", "ghost", "--pid", "999999999"); err == nil || !strings.Contains(out, "pid") {
		t.Errorf("adopting a missing pid: %v %s", err, out)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// waitOwnNetNS waits (bounded) until process pid is in a network namespace
// other than the test's own: a process started with `unshare --net` is in
// ours until unshare has run, and adopting it then would adopt the host's.
func waitOwnNetNS(t *testing.T, pid int) {
	t.Helper()
	self, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/proc/%d/ns/net", pid)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if fi, err := os.Stat(path); err == nil && !os.SameFile(fi, self) {
			return
		}
	}
	t.Fatalf("process %d is still in the test's network namespace", pid)
}

// A restart after the namespace files were lost keeps a sandbox whose
// process still runs: its network namespace is bound again from the process
// and exec works (it enters the process's mount and UTS namespaces). A
// sandbox without a process is gone for good and its address is freed.
// Under nsenter the test clears exec-root/ns; under ipnetns and unshare the
// files vanish by themselves with the stopped daemon's mount namespace.
func TestRecoverLostNamespaceFiles(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		_, d := hostMode(t, mode)
		d.MustTether("network", "create", "--subnet", "10.95.0.0/24", "rec")
		httpServer(t, d, "web", "rec")
		d.MustTether("sandbox", "create", "--name", "idle", "--network", "rec")
		d.MustTether("sandbox", "create", "--name", "cli", "--network", "rec")
		if err := httpGet(d, "cli", "10.95.0.2", 25); err != nil {
			t.Fatal(err)
		}
		idleIP := ip(t, d, "idle", "rec")
		d.Stop()
		if mode == testutil.StartNsenter {
			nsDir := d.Dir + "/exec/ns"
			if err := testutil.UnmountUnder(nsDir); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(nsDir); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		ls := d.MustTether("sandbox", "ls", "--format", "{{.Name}}")
		if !strings.Contains(ls, "web") || strings.Contains(ls, "idle") || strings.Contains(ls, "cli") {
			t.Fatalf("after losing the namespace files: %q, want web only", ls)
		}
		if h := sandboxHealth(t, d, "web"); h.Degraded {
			t.Errorf("web is degraded although its namespace file could be bound again: %v", h.Warnings)
		}
		if got := strings.TrimSpace(d.MustTether("exec", "web", "--", "hostname")); got != sandbox(t, d, "web").Hostname {
			t.Errorf("exec in recovered sandbox: hostname %q", got)
		}
		// idle's address was freed: it can be claimed statically.
		d.MustTether("sandbox", "create", "--name", "cli2", "--network", "rec", "--ip", idleIP)
		if err := httpGet(d, "cli2", "10.95.0.2", 25); err != nil {
			t.Error(err)
		}
	})
}
