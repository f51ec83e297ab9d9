package e2e

// macvlan networks (docs/macvlan.md) through the real binary: sandboxes on
// a parent talk to each other and to a host on the parent's segment; the
// daemon's host reaches them only through the host shim; bad options are
// refused naming the option.

import (
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/testutil"
)

// lanSegment links the daemon's host namespace to a "LAN host" namespace
// by a veth: host end PARENT (address hostAddr/24), LAN end eth0 (lanAddr/24).
func lanSegment(t *testing.T, hostNS, parent, hostAddr, lanAddr string) string {
	t.Helper()
	lan := testutil.NetNS(t, "tth-lan")
	testutil.Must(t, "ip", "-n", hostNS, "link", "add", parent, "type", "veth", "peer", "name", "eth0", "netns", lan)
	for _, c := range [][]string{
		{"-n", hostNS, "addr", "add", hostAddr + "/24", "dev", parent},
		{"-n", hostNS, "link", "set", parent, "up"},
		{"-n", lan, "addr", "add", lanAddr + "/24", "dev", "eth0"},
		{"-n", lan, "link", "set", "eth0", "up"},
	} {
		testutil.Must(t, "ip", c...)
	}
	return lan
}

func TestMacvlanNetwork(t *testing.T) {
	// Started as `ip netns exec` does (a mount namespace per start), and
	// restarted below: the sandboxes must keep their macvlans.
	hostNS, d := hostMode(t, testutil.StartIPNetns)
	lan := lanSegment(t, hostNS, "lan0", "10.97.0.2", "10.97.0.1")
	lanB := lanSegment(t, hostNS, "lan1", "10.98.0.2", "10.98.0.1")
	d.MustTether("network", "create", "-d", "macvlan", "-o", "parent=lan0", "--subnet", "10.97.0.0/24",
		"--gateway", "10.97.0.1", "--ip-range", "10.97.0.128/25", "--aux-address", "host_shim=10.97.0.100",
		"-o", "tether.host_shim=true", "mv")
	d.MustTether("network", "create", "-d", "macvlan", "-o", "parent=lan1", "-o", "macvlan_mode=bridge",
		"--subnet", "10.98.0.0/24", "--gateway", "10.98.0.1", "--ip-range", "10.98.0.128/25", "mvnoshim")
	runDetached(t, d, "x", "--network", "mv", "--ip", "10.97.0.130", "--", "sleep", "600")
	runDetached(t, d, "y", "--network", "mv", "--", "sleep", "600")
	runDetached(t, d, "z", "--network", "mvnoshim", "--", "sleep", "600")
	y := ip(t, d, "y", "mv")
	if !strings.HasPrefix(y, "10.97.0.1") || y == "10.97.0.130" {
		t.Errorf("y got %s, want one of the ip-range 10.97.0.128/25", y)
	}
	// The sandbox's interface is a macvlan of the parent, with no host end.
	if out := d.MustTether("exec", "x", "--", "ip", "-d", "link", "show", "eth0"); !strings.Contains(out, "macvlan mode bridge") {
		t.Errorf("x's eth0 is not a bridge-mode macvlan:\n%s", out)
	}
	// Sandboxes talk to each other, to the LAN host, by name, and out
	// through the LAN's gateway (the LAN host): its default route.
	if !ping(d, "x", y) || !ping(d, "x", "y") {
		t.Errorf("x cannot reach y on the macvlan network")
	}
	if !ping(d, "x", "10.97.0.1") {
		t.Errorf("x cannot reach the LAN host")
	}
	if _, err := testutil.InNS(lan, "ping", "-c1", "-W2", "10.97.0.130"); err != nil {
		t.Errorf("the LAN host cannot reach x: %v", err)
	}
	if route := d.MustTether("exec", "x", "--", "ip", "route", "show", "default"); !strings.Contains(route, "via 10.97.0.1") {
		t.Errorf("x's default route %q", route)
	}
	// The daemon's host reaches its own macvlan sandboxes only through the
	// shim: mv has one, mvnoshim not.
	if _, err := testutil.InNS(hostNS, "ping", "-c1", "-W2", "10.97.0.130"); err != nil {
		t.Errorf("the host cannot reach x through the host shim: %v", err)
	}
	if _, err := testutil.InNS(hostNS, "ping", "-c1", "-W2", ip(t, d, "z", "mvnoshim")); err == nil {
		t.Errorf("the host reaches z on a macvlan network without a shim (the kernel should not deliver it)")
	}
	if _, err := testutil.InNS(lanB, "ping", "-c1", "-W2", ip(t, d, "z", "mvnoshim")); err != nil {
		t.Errorf("the second LAN's host cannot reach z: %v", err)
	}

	// A daemon restart leaves the macvlans, the shim and its routes alone.
	restart(t, d)
	if !ping(d, "x", "y") || !ping(d, "x", "10.97.0.1") {
		t.Errorf("after a restart x cannot reach y or the LAN host")
	}
	if _, err := testutil.InNS(hostNS, "ping", "-c1", "-W2", "10.97.0.130"); err != nil {
		t.Errorf("after a restart the host cannot reach x through the shim: %v", err)
	}

	// Bad input, named.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "-d", "macvlan", "--subnet", "10.99.0.0/24", "bad1"}, "parent"},
		{[]string{"network", "create", "-d", "macvlan", "-o", "parent=nosuch0", "--subnet", "10.99.0.0/24", "bad2"}, "nosuch0"},
		{[]string{"network", "create", "-d", "macvlan", "-o", "parent=lan0.20", "--subnet", "10.99.0.0/24", "bad3"}, "8021q"},
		{[]string{"network", "create", "-d", "macvlan", "-o", "parent=lan0", "-o", "macvlan_mode=loud", "--subnet", "10.99.0.0/24", "bad4"}, "macvlan_mode"},
		{[]string{"network", "create", "-d", "macvlan", "-o", "parent=lan0", "-o", "tether.host_shim=true", "--subnet", "10.99.0.0/24", "bad5"}, "host_shim"},
		{[]string{"network", "create", "-d", "macvlan", "-o", "parent=lan0", "-o", "com.docker.network.bridge.name=br9", "--subnet", "10.99.0.0/24", "bad6"}, "com.docker.network.bridge.name"},
		{[]string{"run", "-d", "--name", "p", "--network", "mv", "-p", "8080:80", "--", "sleep", "1"}, "cannot publish ports"},
	} {
		if out, err := d.Tether(c.args...); err == nil || !strings.Contains(out, c.want) {
			t.Errorf("tether %v: %v %q, want an error containing %q", c.args, err, out, c.want)
		}
	}
	if out := d.MustTether("network", "ls", "--format", "{{.Name}}"); strings.Contains(out, "bad") {
		t.Errorf("a refused network exists:\n%s", out)
	}

	// Removing a sandbox removes its macvlan; removing the network its shim.
	reapProcesses(t, d, "x")
	d.MustTether("rm", "-f", "x")
	if _, err := testutil.InNS(lan, "ping", "-c1", "-W1", "10.97.0.130"); err == nil {
		t.Errorf("x's address still answers on the LAN after rm")
	}
	reapProcesses(t, d, "y")
	d.MustTether("rm", "-f", "y")
	d.MustTether("network", "rm", "mv")
	if out := testutil.Must(t, "ip", "-n", hostNS, "-o", "link", "show"); strings.Contains(out, "tms-") {
		t.Errorf("the host shim outlived its network:\n%s", out)
	}
}
