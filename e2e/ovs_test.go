package e2e

// Open vSwitch networks (docs/ovs.md) through the real binary, against a
// private ovsdb-server and ovs-vswitchd the test runs in the daemon's
// namespace: the default network on an OVS bridge (bridge-driver ovs),
// sandboxes talking by address and name, VLAN-tagged networks on one OVS
// bridge kept apart, NAT and published ports as on a Linux bridge, and a
// crash of ovs-vswitchd survived.

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/ovsdb/ovstest"
	"github.com/tether-net/tether/internal/testutil"
)

func TestOVSNetworks(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-e2e")
	db, restartVSwitchd := ovstest.Start(t, ns)
	out := testutil.Outside(t, ns)
	d := testutil.NewDaemon(t, ns, "--ovs-db", db, "--bridge-driver", "ovs", "--bip", "10.86.0.1/24")
	d.Mode = testutil.StartIPNetns // restarted below, each start in a mount namespace of its own
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	vsctl := func(args ...string) string {
		t.Helper()
		o, err := exec.Command("ovs-vsctl", append([]string{"--db=" + db}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ovs-vsctl %v: %v\n%s", args, err, o)
		}
		return string(o)
	}
	// The default network is an OVS bridge.
	if brs := vsctl("list-br"); !strings.Contains(brs, "tether0") {
		t.Fatalf("no OVS bridge tether0 for the default network: %q", brs)
	}
	runDetached(t, d, "d0", "--", "sleep", "600")
	if !ping(d, "d0", "10.86.0.1") || !ping(d, "d0", testutil.OutsideAddr) {
		t.Errorf("a sandbox on the OVS default network cannot reach its gateway or the outside (NAT)")
	}

	d.MustTether("network", "create", "-d", "ovs", "-o", "ovs.bridge=tovs0", "-o", "ovs.vlan=10", "--subnet", "10.87.0.0/24", "o10")
	d.MustTether("network", "create", "-d", "ovs", "-o", "ovs.bridge=tovs0", "-o", "ovs.vlan=20", "--subnet", "10.88.0.0/24", "o20")
	d.MustTether("run", "-d", "--name", "a", "--network", "o10", "-p", "8080:80", "--", "python3", "-m", "http.server", "80")
	reapProcesses(t, d, "a")
	runDetached(t, d, "b", "--network", "o10", "--", "sleep", "600")
	runDetached(t, d, "c", "--network", "o20", "--", "sleep", "600")
	ports := vsctl("--", "--columns=name,tag", "list", "Port")
	if strings.Count(ports, "tag                 : 10") < 3 || strings.Count(ports, "tag                 : 20") < 2 {
		t.Errorf("OVS ports and tags:\n%s", ports)
	}
	a := ip(t, d, "a", "o10")
	if !ping(d, "b", a) || !ping(d, "b", "a") {
		t.Errorf("b cannot reach a on the OVS network (by address or name)")
	}
	if ping(d, "c", a) {
		t.Errorf("c (o20, VLAN 20) reaches a on o10: networks are not isolated")
	}
	// On the wire too: c's frames to a's address in o10's subnet (an address
	// c claims in it) reach nothing, since VLAN 20 is another segment.
	d.MustTether("exec", "c", "--", "ip", "addr", "add", "10.87.0.250/24", "dev", "eth0")
	if ping(d, "c", a) {
		t.Errorf("c on VLAN 20 reaches a on VLAN 10 at layer 2")
	}
	// Published ports as on a Linux bridge: from outside, the host's
	// loopback, and hairpin.
	for _, u := range []struct{ ns, url string }{{out, "http://" + testutil.UplinkAddr + ":8080/"}, {ns, "http://127.0.0.1:8080/"}} {
		if err := curlFrom(u.ns, u.url); err != nil {
			t.Errorf("%s: %v", u.url, err)
		}
	}
	if err := httpGet(d, "b", testutil.UplinkAddr+":8080", 15); err != nil {
		t.Errorf("hairpin on the OVS network: %v", err)
	}

	// ovs-vswitchd crashes and comes back: the ports come back from the
	// database and traffic resumes.
	restartVSwitchd()
	var ok bool
	for range 20 {
		if ok = ping(d, "b", a); ok {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !ok {
		t.Errorf("b cannot reach a after ovs-vswitchd restarted")
	}
	if err := curlFrom(out, "http://"+testutil.UplinkAddr+":8080/"); err != nil {
		t.Errorf("the published port after ovs-vswitchd restarted: %v", err)
	}

	// A daemon restart leaves the OVS networks and their sandboxes alone.
	restart(t, d)
	if !ping(d, "b", "a") || ping(d, "c", a) {
		t.Errorf("after a daemon restart: b cannot reach a by name, or c (VLAN 20) reaches it")
	}
	if err := curlFrom(out, "http://"+testutil.UplinkAddr+":8080/"); err != nil {
		t.Errorf("the published port after a daemon restart: %v", err)
	}

	// Bad options are refused naming them; nothing is made.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "-d", "ovs", "-o", "ovs.vlan=5000", "bad1"}, "ovs.vlan"},
		{[]string{"network", "create", "-d", "ovs", "-o", "ovs.db=tcp:1.2.3.4:6640", "bad2"}, "ovs.db"},
		{[]string{"network", "create", "-d", "ovs", "-o", "ovs.colour=blue", "bad3"}, "ovs.colour"},
		{[]string{"network", "create", "-d", "ovs", "-o", "ovs.bridge=tovs0", "-o", "ovs.vlan=10", "bad4"}, "ovs.vlan"},
	} {
		if o, err := d.Tether(c.args...); err == nil || !strings.Contains(o, c.want) {
			t.Errorf("tether %v: %v %q, want an error containing %q", c.args, err, o, c.want)
		}
	}

	// Removing sandboxes and networks removes their ports and the bridges
	// Tether made.
	for _, n := range []string{"a", "b", "c"} {
		reapProcesses(t, d, n)
		d.MustTether("rm", "-f", n)
	}
	d.MustTether("network", "rm", "o10", "o20")
	if brs := vsctl("list-br"); strings.Contains(brs, "tovs0") {
		t.Errorf("the OVS bridge tovs0 outlived its networks: %q", brs)
	}
}

// curlFrom fetches url from a namespace, retrying briefly for start-up.
func curlFrom(ns, url string) error {
	var err error
	var o string
	for range 15 {
		o, err = testutil.InNS(ns, "curl", "-sS", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", url)
		if err == nil && strings.TrimSpace(o) == "200" {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}
