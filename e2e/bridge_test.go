package e2e

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
)

// Two sandboxes on one user-defined network reach each other by ICMP and TCP;
// the addresses come from the subnet in order, with the gateway on the bridge.
func TestTwoSandboxesTalk(t *testing.T) {
	ns, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.20.0.0/24", "app")
	httpServer(t, d, "web", "app")
	d.MustTether("sandbox", "create", "--name", "client", "--network", "app")

	if got := ip(t, d, "web", "app"); got != "10.20.0.2" {
		t.Errorf("web address = %s, want 10.20.0.2 (first after the gateway)", got)
	}
	if !ping(d, "client", "10.20.0.2") {
		t.Error("client cannot ping web")
	}
	if err := httpGet(d, "client", "10.20.0.2", 25); err != nil {
		t.Error(err)
	}
	// One-shot run --rm reaches the server too, and is gone afterwards.
	out := d.MustTether("run", "--rm", "--network", "app", "--", "curl", "-sS", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", "http://10.20.0.2/")
	if strings.TrimSpace(out) != "200" {
		t.Errorf("run --rm curl = %q", out)
	}
	if ls := d.MustTether("sandbox", "ls", "-q"); len(strings.Fields(ls)) != 2 {
		t.Errorf("after run --rm, sandboxes = %q, want web and client only", ls)
	}
	// The host side: a bridge with the gateway address, one port per endpoint.
	var n network.Inspect
	d.InspectJSON(&n, "network", "inspect", "app")
	br := n.Options["com.docker.network.bridge.name"]
	if br == "" {
		br = "tth-" + n.ID[:11]
	}
	out, _ = testNS(ns, "ip", "-br", "addr", "show", br)
	if !strings.Contains(out, "10.20.0.1/24") {
		t.Errorf("bridge %s: %q, want the gateway 10.20.0.1/24", br, out)
	}
	if len(n.Containers) != 2 {
		t.Errorf("inspect Containers = %v, want 2 entries", n.Containers)
	}
	// Inside the sandbox: eth0 with the address, default route via the gateway.
	route := d.MustTether("exec", "client", "--", "ip", "route")
	if !strings.Contains(route, "default via 10.20.0.1 dev eth0") {
		t.Errorf("client routes:\n%s", route)
	}
	// IPv4-only networks: no IPv6 on either end of the veth (its chatter
	// would be flooded to every port), loopback keeps ::1.
	if v6 := d.MustTether("exec", "client", "--", "ip", "-6", "-o", "addr", "show", "dev", "eth0"); strings.TrimSpace(v6) != "" {
		t.Errorf("eth0 has IPv6 addresses: %s", v6)
	}
	host := sandbox(t, d, "client").Networks["app"].HostIfName
	if v6, _ := testNS(ns, "ip", "-6", "-o", "addr", "show", "dev", host); strings.TrimSpace(v6) != "" {
		t.Errorf("host end %s has IPv6 addresses: %s", host, v6)
	}
}

// A sandbox on two networks reaches sandboxes on each; eth0 and eth1 follow
// the order of --network, and the default route goes through the first.
func TestSandboxOnTwoNetworks(t *testing.T) {
	_, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.31.0.0/24", "front")
	d.MustTether("network", "create", "--subnet", "10.32.0.0/24", "back")
	httpServer(t, d, "f", "front")
	httpServer(t, d, "b", "back")
	d.MustTether("sandbox", "create", "--name", "both", "--network", "front", "--network", "back")

	addrs := d.MustTether("exec", "both", "--", "ip", "-br", "-4", "addr")
	if !strings.Contains(addrs, "eth0") || !strings.Contains(addrs, "10.31.0.") ||
		!strings.Contains(addrs, "eth1") || !strings.Contains(addrs, "10.32.0.") {
		t.Errorf("addresses:\n%s", addrs)
	}
	for _, l := range strings.Split(addrs, "\n") {
		if strings.HasPrefix(l, "eth0") && !strings.Contains(l, "10.31.0.") {
			t.Errorf("eth0 should be on front: %s", l)
		}
	}
	if err := httpGet(d, "both", ip(t, d, "f", "front"), 25); err != nil {
		t.Error(err)
	}
	if err := httpGet(d, "both", ip(t, d, "b", "back"), 25); err != nil {
		t.Error(err)
	}
	if r := d.MustTether("exec", "both", "--", "ip", "route", "show", "default"); !strings.Contains(r, "via 10.31.0.1 dev eth0") {
		t.Errorf("default route: %q", r)
	}
	// connect and disconnect at run time.
	d.MustTether("network", "create", "--subnet", "10.33.0.0/24", "extra")
	d.MustTether("network", "connect", "--ip", "10.33.0.50", "extra", "f")
	if got := ip(t, d, "f", "extra"); got != "10.33.0.50" {
		t.Errorf("static ip = %s", got)
	}
	d.MustTether("network", "connect", "extra", "both")
	if err := httpGet(d, "both", "10.33.0.50", 25); err != nil {
		t.Error(err)
	}
	d.MustTether("network", "disconnect", "extra", "f")
	if out := d.MustTether("exec", "f", "--", "ip", "-br", "-4", "addr"); strings.Contains(out, "10.33.0.50") {
		t.Errorf("after disconnect f still has 10.33.0.50:\n%s", out)
	}
	if ping(d, "both", "10.33.0.50") {
		t.Error("10.33.0.50 still answers after disconnect")
	}
}

// Network inspect prints Docker's NetworkResource shape, and templates apply.
func TestInspectShapeAndTemplates(t *testing.T) {
	_, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.40.0.0/24", "--ip-range", "10.40.0.128/25", "--gateway", "10.40.0.254",
		"--aux-address", "router=10.40.0.129", "--label", "team=net", "-o", "com.docker.network.bridge.name=br-shape", "shape")
	d.MustTether("sandbox", "create", "--name", "s1", "--network", "shape")
	out := d.MustTether("network", "inspect", "shape")
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil || len(raw) != 1 {
		t.Fatalf("inspect output: %v\n%s", err, out)
	}
	for _, f := range []string{"Name", "Id", "Created", "Scope", "Driver", "EnableIPv4", "EnableIPv6", "IPAM", "Internal",
		"Attachable", "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels"} {
		if _, ok := raw[0][f]; !ok {
			t.Errorf("inspect lacks field %s", f)
		}
	}
	var n network.Inspect
	d.InspectJSON(&n, "network", "inspect", "shape")
	c := n.IPAM.Config[0]
	if c.Subnet.String() != "10.40.0.0/24" || c.IPRange.String() != "10.40.0.128/25" || c.Gateway.String() != "10.40.0.254" ||
		c.AuxAddress["router"].String() != "10.40.0.129" {
		t.Errorf("IPAM.Config = %+v", c)
	}
	for _, ep := range n.Containers {
		// first free in the range: .128 is the range's network address? No: the
		// range is a pool of host addresses; .129 is the aux address.
		if ep.Name != "s1" || !strings.HasPrefix(ep.IPv4Address.String(), "10.40.0.") || ep.IPv4Address.Bits() != 24 {
			t.Errorf("endpoint %+v", ep)
		}
		if a := ep.IPv4Address.Addr(); a.String() == "10.40.0.129" || a.As4()[3] < 128 {
			t.Errorf("address %s outside the ip-range or on the aux address", a)
		}
	}
	if got := strings.TrimSpace(d.MustTether("network", "inspect", "-f", "{{.Name}} {{.Driver}} {{index .Labels \"team\"}}", "shape")); got != "shape bridge net" {
		t.Errorf("template output %q", got)
	}
	if got := d.MustTether("network", "ls", "--filter", "label=team=net", "--format", "{{.Name}}"); strings.TrimSpace(got) != "shape" {
		t.Errorf("ls --filter label: %q", got)
	}
	if got := d.MustTether("network", "ls", "--filter", "type=builtin", "-q"); len(strings.Fields(got)) != 3 {
		t.Errorf("builtin networks: %q", got)
	}
}

func testNS(ns string, name string, args ...string) (string, error) {
	return inNS(ns, name, args...)
}

// The predefined networks: "host" shares the daemon's network namespace,
// "none" has only loopback; neither can be combined with other networks.
func TestHostAndNoneNetworks(t *testing.T) {
	ns, d := host(t)
	links := d.MustTether("run", "--rm", "--network", "host", "--", "ip", "-br", "link")
	if !strings.Contains(links, "tether0") {
		t.Errorf("host network sandbox does not see the host's links:\n%s", links)
	}
	hostLinks, _ := inNS(ns, "ip", "-br", "link")
	if len(strings.Split(strings.TrimSpace(links), "\n")) != len(strings.Split(strings.TrimSpace(hostLinks), "\n")) {
		t.Errorf("host network sandbox links:\n%s\nhost:\n%s", links, hostLinks)
	}
	none := d.MustTether("run", "--rm", "--network", "none", "--", "ip", "-br", "link")
	if strings.TrimSpace(none) == "" || strings.Contains(none, "eth0") || !strings.Contains(none, "lo") {
		t.Errorf("none network sandbox links:\n%s", none)
	}
	d.MustTether("sandbox", "create", "--name", "isolated", "--network", "none")
	if out, err := d.Tether("network", "connect", "bridge", "isolated"); err == nil {
		t.Errorf("a none sandbox joined bridge: %s", out)
	}
	if out, err := d.Tether("sandbox", "create", "--name", "mixed", "--network", "host", "--network", "bridge"); err == nil {
		t.Errorf("host combined with bridge: %s", out)
	}
	if ls := d.MustTether("sandbox", "ls", "-q"); len(strings.Fields(ls)) != 1 {
		t.Errorf("sandboxes after run --rm and refused creates: %q", ls)
	}
	if _, err := inNS(ns, "ip", "link", "show", "tether0"); err != nil {
		t.Error("removing a host-network sandbox touched the host namespace")
	}
}

// run's lifecycle: --rm removes the sandbox whatever the exit status; -d
// leaves it under the daemon; rm refuses a sandbox with running processes
// unless forced, and -f kills exactly the processes Tether started.
func TestRunLifecycle(t *testing.T) {
	_, d := host(t)
	if _, err := d.Tether("run", "--rm", "--", "no-such-command-here"); exitCode(err) != 127 {
		t.Errorf("run of a missing command: %v, want exit status 127", err)
	}
	if _, err := d.Tether("run", "--rm", "--", "sh", "-c", "exit 3"); exitCode(err) != 3 {
		t.Errorf("run exit status: %v, want 3", err)
	}
	if ls := d.MustTether("sandbox", "ls", "-q"); strings.TrimSpace(ls) != "" {
		t.Errorf("run --rm left sandboxes: %q", ls)
	}
	d.MustTether("run", "-d", "--name", "bg", "--", "sleep", "300")
	sb := sandbox(t, d, "bg")
	if len(sb.Processes) != 1 || sb.Processes[0].Args[0] != "sleep" {
		t.Fatalf("processes = %+v", sb.Processes)
	}
	pid := sb.Processes[0].Pid
	if out, err := d.Tether("rm", "bg"); err == nil || !strings.Contains(out, "running processes") {
		t.Errorf("rm of a running sandbox: %v %s", err, out)
	}
	d.MustTether("rm", "-f", "bg")
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Errorf("process %d survived rm -f", pid)
	}
	// A detached process that exits leaves its sandbox (no --rm) with no processes.
	d.MustTether("run", "-d", "--name", "short", "--", "true")
	deadline := time.Now().Add(5 * time.Second)
	for len(sandbox(t, d, "short").Processes) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if p := sandbox(t, d, "short").Processes; len(p) != 0 {
		t.Errorf("exited process still listed: %+v", p)
	}
}

// Leaving the network that carries the default route moves it to the next
// network that can carry one (Docker moves a container's gateway the same
// way), and an internal network never takes it: the sandbox keeps its way
// out, proved by reaching an address beyond its remaining networks.
func TestDefaultRouteMovesOnDisconnect(t *testing.T) {
	_, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.41.0.0/24", "first")
	d.MustTether("network", "create", "--internal", "--subnet", "10.42.0.0/24", "sealed")
	d.MustTether("network", "create", "--subnet", "10.43.0.0/24", "second")
	d.MustTether("sandbox", "create", "--name", "mover", "--network", "sealed", "--network", "first", "--network", "second")
	if r := d.MustTether("exec", "mover", "--", "ip", "route", "show", "default"); !strings.Contains(r, "via 10.41.0.1 dev eth1") {
		t.Fatalf("default route before (the internal network never carries it): %q", r)
	}
	d.MustTether("network", "disconnect", "first", "mover")
	if r := d.MustTether("exec", "mover", "--", "ip", "route", "show", "default"); !strings.Contains(r, "via 10.43.0.1 dev eth2") {
		t.Fatalf("default route after leaving first: %q, want via 10.43.0.1 dev eth2", r)
	}
	// 10.41.0.1 is the host's address on first's bridge: no longer on
	// a network of the sandbox, reached only through the default route.
	if !ping(d, "mover", "10.41.0.1") {
		t.Error("10.41.0.1 (beyond the sandbox's networks) unreachable after the default route moved")
	}
}
