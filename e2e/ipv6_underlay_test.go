package e2e

// The overlay over an IPv6 underlay (docs/overlay.md, "IPv6"): two hosts
// whose cluster-advertise is an IPv6 address carry a dual-stack overlay
// network in VXLAN over IPv6 (VTEPs, FDB entries and MTU underlay-70 of
// that family), and a VXLAN packet from an underlay host that is no
// cluster member is dropped by table ip6 tether_vxlan, as the IPv4 attack
// of security_vxlan_test.go is by table ip tether_vxlan.

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// vxlanScript6 is vxlanScript sending over IPv6 (VTEP an IPv6 address).
var vxlanScript6 = strings.Replace(vxlanScript, "socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
	"socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)", 1)

// underlay6 is a member's IPv6 underlay address: 2001:db8:18:: with the
// last byte of its IPv4 one (198.18.0.11 -> 2001:db8:18::11), added to its
// eth0 without DAD (usable at once).
func underlay6(t *testing.T, m testutil.Member) string {
	t.Helper()
	a := "2001:db8:18::" + m.Addr[strings.LastIndex(m.Addr, ".")+1:]
	testutil.Must(t, "ip", "-n", m.NS, "addr", "add", a+"/64", "dev", m.Link, "nodad")
	return a
}

// injectVXLAN6 sends vxlanScript6's packet from namespace ns.
func injectVXLAN6(t *testing.T, ns string, args ...string) {
	t.Helper()
	out, err := testutil.InNS(ns, "python3", append([]string{"-c", vxlanScript6}, args...)...)
	if err != nil {
		t.Fatalf("send VXLAN over IPv6 from %s: %v\n%s", ns, err, out)
	}
}

// vxlanDrops6 is the packet count of the drop rule of table ip6
// tether_vxlan in namespace ns.
func vxlanDrops6(t *testing.T, ns string) int {
	t.Helper()
	out, err := testutil.InNS(ns, "nft", "list", "chain", "ip6", "tether_vxlan", "input")
	if err != nil {
		t.Fatalf("nft list chain ip6 tether_vxlan input in %s: %v\n%s", ns, err, out)
	}
	m := regexp.MustCompile(`ip6 saddr != @nodes counter packets (\d+) `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no drop rule in table ip6 tether_vxlan:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestIPv6Underlay(t *testing.T) {
	testutil.RequireRoot(t)
	if vxlanScript6 == vxlanScript {
		t.Fatal("vxlanScript changed: vxlanScript6 no longer sends over IPv6")
	}
	u := testutil.NewUnderlay(t, 1500)
	etcd := testutil.StartEtcd(t, u.Join("etcd")) // the store stays on IPv4
	var hosts []testutil.Member
	var addrs []string
	var d []*testutil.Daemon
	for range 2 {
		h := u.Join("h")
		a := underlay6(t, h)
		dm := testutil.NewDaemon(t, h.NS, "--cluster-store", etcd.URL(), "--cluster-advertise", "["+a+"]:2376",
			"--cluster-store-opt", fmt.Sprintf("discovery.ttl=%d", int(clusterTTL.Seconds())))
		if err := dm.Start(); err != nil {
			t.Fatal(err)
		}
		hosts, addrs, d = append(hosts, h), append(addrs, a), append(d, dm)
	}
	const vni = "4194"
	d[0].MustTether("network", "create", "-d", "overlay", "--ipv6", "--subnet", "10.210.0.0/24", "--subnet", "fd00:210::/64",
		"-o", "com.docker.network.driver.overlay.vxlanid_list="+vni, "ovu6")
	waitFor(t, "network on host 1", 5*time.Second, func() bool { return netID(d[1], "ovu6") != "" })
	runDetached(t, d[0], "a", "--network", "ovu6", "--", "sleep", "600")
	runDetached(t, d[1], "b", "--network", "ovu6", "--", "sleep", "600")
	b4, b6 := ip(t, d[1], "b", "ovu6"), ip6(t, d[1], "b", "ovu6")

	// Both inner families cross hosts, by address and (IPv6) by name.
	waitFor(t, "a reaches b over IPv4", 10*time.Second, func() bool { return ping(d[0], "a", b4) })
	if !ping6(d[0], "a", b6) {
		t.Errorf("a (host 0) cannot reach b (host 1) at %s over IPv6 across an IPv6 underlay", b6)
	}
	if !ping6(d[1], "b", "a") {
		t.Errorf("b cannot reach a by name over IPv6 across an IPv6 underlay")
	}

	// The tunnel is IPv6: host 0's VXLAN device has its IPv6 address as
	// local address, b's MAC is behind host 1's IPv6 address, and the MTU
	// leaves room for VXLAN's 70 bytes of headers over IPv6.
	vx := "tvx-" + vni
	if out := testutil.Must(t, "ip", "-n", hosts[0].NS, "-d", "link", "show", vx); !strings.Contains(out, "local "+addrs[0]+" ") {
		t.Errorf("%s on host 0 is not local %s:\n%s", vx, addrs[0], out)
	}
	bMAC := sandbox(t, d[1], "b").Networks["ovu6"].MacAddress
	if out := testutil.Must(t, "bridge", "-n", hosts[0].NS, "fdb", "show", "dev", vx); !strings.Contains(out, bMAC+" dst "+addrs[1]+" ") {
		t.Errorf("host 0 has no FDB entry %s dst %s on %s:\n%s", bMAC, addrs[1], vx, out)
	}
	// (ip, not /sys/class/net: a sandbox sees the sysfs of the host's namespace)
	if link := d[0].MustTether("exec", "a", "--", "ip", "-o", "link", "show", "eth0"); !strings.Contains(link, " mtu 1430 ") {
		t.Errorf("a's eth0 is not MTU 1430 (underlay 1500 - 70): %s", link)
	}

	// The guard: both members' IPv6 addresses in host 1's ip6 set.
	waitFor(t, "host 0 in host 1's ip6 node set", 5*time.Second, func() bool {
		out, err := testutil.InNS(hosts[1].NS, "nft", "list", "set", "ip6", "tether_vxlan", "nodes")
		return err == nil && strings.Contains(out, addrs[0]) && strings.Contains(out, addrs[1])
	})
	l := listenUDP(t, procNetNS(t, d[1], "b"))
	frame := func(payload string) []string {
		return []string{addrs[1], vni, bMAC, "02:42:0a:d2:00:42", "10.210.0.66", b4, payload}
	}
	if !arrives(l, func(p string) { injectVXLAN6(t, hosts[0].NS, frame(p)...) }) {
		t.Fatal("control: the hand-built VXLAN packet over IPv6 from a member host did not arrive (the attack proves nothing)")
	}
	rogue := u.Join("rogue")
	rogue6 := underlay6(t, rogue)
	before := vxlanDrops6(t, hosts[1].NS)
	if arrives(l, func(p string) { injectVXLAN6(t, rogue.NS, frame(p)...) }) {
		t.Errorf("a VXLAN packet over IPv6 from %s, not a cluster member, reached sandbox b", rogue6)
	}
	if after := vxlanDrops6(t, hosts[1].NS); after <= before {
		t.Errorf("table ip6 tether_vxlan counted %d drops before the rogue's packet and %d after; want more", before, after)
	}
	if out, err := testutil.InNS(hosts[1].NS, "nft", "list", "table", "ip6", "tether_vxlan"); err == nil {
		t.Logf("host 1:\n%s", out)
	}
}
