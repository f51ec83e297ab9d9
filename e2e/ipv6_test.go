package e2e

// IPv6 dual stack (docs/ipv6.md): real traffic over IPv6 between sandboxes,
// to an outside host through NAT66, to published ports from outside, from
// the host's ::1 and by hairpin; the ULA choice of a daemon with ipv6 on;
// IPv6-only networks; router advertisements on a dual-stack network; a
// restart under both start modes; and a dual-stack overlay across hosts.

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"

	"github.com/tether-net/tether/internal/testutil"
)

// The outside's IPv6 (2001:db8::/32 is the documentation prefix; it lives
// only on the test's veth between the host and its outside namespace).
const (
	uplink6  = "2001:db8:ff::1"
	outside6 = "2001:db8:ff::2"
)

// outsideDual is testutil.Outside with IPv6 on the link too: the host's
// uplink up0 has uplink6/64 and its IPv6 default route via outside6. The
// outside has no route back to any sandbox subnet, so an answer from it
// proves NAT66.
func outsideDual(t *testing.T, hostNS string) string {
	t.Helper()
	out := testutil.Outside(t, hostNS)
	for _, c := range [][]string{
		{"-n", hostNS, "addr", "add", uplink6 + "/64", "dev", "up0", "nodad"},
		{"-n", hostNS, "-6", "route", "add", "default", "via", outside6},
		{"-n", out, "addr", "add", outside6 + "/64", "dev", "wan0", "nodad"},
	} {
		testutil.Must(t, "ip", c...)
	}
	return out
}

// ip6 returns a sandbox's IPv6 address on a network.
func ip6(t *testing.T, d *testutil.Daemon, name, network string) string {
	t.Helper()
	ep := sandbox(t, d, name).Networks[network]
	if ep == nil || !ep.GlobalIPv6Address.IsValid() {
		t.Fatalf("sandbox %s has no IPv6 address on %s", name, network)
	}
	return ep.GlobalIPv6Address.String()
}

// ping6 sends one ICMPv6 echo from a sandbox to an address or a name
// (resolved as AAAA).
func ping6(d *testutil.Daemon, from, to string) bool {
	_, err := d.Tether("exec", from, "--", "ping", "-6", "-n", "-c1", "-W2", to)
	return err == nil
}

// families resolves a name inside a sandbox the way a program does
// (getaddrinfo, any family) and returns the addresses.
func families(t *testing.T, d *testutil.Daemon, from, name string) []netip.Addr {
	t.Helper()
	out := d.MustTether("exec", from, "--", "python3", "-c",
		"import socket,sys\nprint(' '.join(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80, proto=socket.IPPROTO_TCP)})))", name)
	var as []netip.Addr
	for _, f := range strings.Fields(out) {
		a, err := netip.ParseAddr(f)
		if err != nil {
			t.Fatalf("resolve %s in %s: %q", name, from, out)
		}
		as = append(as, a)
	}
	return as
}

func TestIPv6DualStackNetwork(t *testing.T) {
	hostNS, d := host(t)
	outsideDual(t, hostNS)
	d.MustTether("network", "create", "--ipv6", "--subnet", "10.196.0.0/24", "--subnet", "fd00:196::/64", "ds1")
	d.MustTether("network", "create", "--ipv6", "--subnet", "10.197.0.0/24", "--subnet", "fd00:197::/64", "ds2")
	for _, s := range [][]string{{"a", "ds1"}, {"b", "ds1"}, {"c", "ds2"}} {
		runDetached(t, d, s[0], "--network", s[1], "--", "sleep", "600")
	}

	// Inspect shows IPv6 as Docker does.
	var net struct {
		EnableIPv4, EnableIPv6 bool
		IPAM                   struct {
			Config []struct{ Subnet, Gateway string }
		}
		Containers map[string]struct{ Name, IPv4Address, IPv6Address string }
	}
	d.InspectJSON(&net, "network", "inspect", "ds1")
	if !net.EnableIPv4 || !net.EnableIPv6 || len(net.IPAM.Config) != 2 ||
		net.IPAM.Config[1].Subnet != "fd00:196::/64" || net.IPAM.Config[1].Gateway != "fd00:196::1" || len(net.Containers) != 2 {
		t.Fatalf("network inspect ds1: %+v", net)
	}
	for _, c := range net.Containers {
		if p, err := netip.ParsePrefix(c.IPv6Address); err != nil || !netip.MustParsePrefix("fd00:196::/64").Contains(p.Addr()) || p.Bits() != 64 {
			t.Errorf("network inspect ds1: %s has IPv6Address %q", c.Name, c.IPv6Address)
		}
	}
	a6, b6, c6 := ip6(t, d, "a", "ds1"), ip6(t, d, "b", "ds1"), ip6(t, d, "c", "ds2")
	if ep := sandbox(t, d, "a").Networks["ds1"]; ep.IPv6Gateway.String() != "fd00:196::1" || ep.GlobalIPv6PrefixLen != 64 {
		t.Errorf("sandbox a on ds1: IPv6 gateway %s /%d", ep.IPv6Gateway, ep.GlobalIPv6PrefixLen)
	}

	// Static addresses, no SLAAC, no router advertisements taken, no
	// tentative (DAD) state: the address works at once.
	enter := nsenterNet(procNetNS(t, d, "a"))
	if v := sysctlIn(t, enter, "net/ipv6/conf/eth0/accept_ra"); v != "0" {
		t.Errorf("sandbox a eth0: accept_ra=%s, want 0", v)
	}
	addrs := d.MustTether("exec", "a", "--", "ip", "-6", "-o", "addr", "show", "dev", "eth0")
	if strings.Contains(addrs, "tentative") || strings.Contains(addrs, "dynamic") || !strings.Contains(addrs, a6+"/64") {
		t.Errorf("sandbox a eth0 IPv6 addresses:\n%s", addrs)
	}
	route := d.MustTether("exec", "a", "--", "ip", "-6", "route", "show", "default")
	if !strings.Contains(route, "via fd00:196::1") {
		t.Errorf("sandbox a: IPv6 default route %q, want via fd00:196::1", route)
	}

	// By address and by name (AAAA), both families from one lookup.
	if !ping6(d, "a", b6) {
		t.Errorf("a cannot reach b over IPv6 (%s)", b6)
	}
	if !ping6(d, "a", "b") {
		t.Errorf("a cannot reach b by name over IPv6")
	}
	got := families(t, d, "a", "b")
	if len(got) != 2 || got[0].String() != ip(t, d, "b", "ds1") || got[1].String() != b6 {
		t.Errorf("a resolves b to %v, want [%s %s]", got, ip(t, d, "b", "ds1"), b6)
	}
	// Reverse (ip6.arpa).
	if out, err := d.Tether("exec", "a", "--", "python3", "-c", "import socket,sys;print(socket.gethostbyaddr(sys.argv[1])[0])", b6); err != nil || !strings.HasPrefix(strings.TrimSpace(out), "b.ds1") {
		t.Errorf("a: reverse lookup of %s = %q, %v; want b.ds1", b6, out, err)
	}

	// Out through NAT66: the outside has no route to fd00:196::/64.
	if !ping6(d, "a", outside6) {
		t.Errorf("a cannot reach the outside over IPv6 (NAT66)")
	}
	// Isolated from another network over IPv6 as over IPv4.
	if ping6(d, "a", c6) {
		t.Errorf("a (ds1) reaches c (ds2) over IPv6: networks are not isolated")
	}
	if ping(d, "a", ip(t, d, "c", "ds2")) {
		t.Errorf("a (ds1) reaches c (ds2) over IPv4: networks are not isolated")
	}

	// Bad input: named fields, no state change.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "--subnet", "fd00:198::/64", "nov6"}, "needs EnableIPv6"},
		{[]string{"network", "create", "--ipv6", "--subnet", "fd00:199::/64", "--subnet", "fd00:19a::/64", "two6"}, "more than one subnet"},
		{[]string{"network", "create", "--ipv4=false", "nofam"}, "EnableIPv4"},
		{[]string{"network", "create", "--ipv6", "--subnet", "fd00:196::/80", "overlap6"}, "overlaps"},
		{[]string{"network", "connect", "--ip6", "10.196.0.50", "ds1", "c"}, "ip6"},
		{[]string{"network", "connect", "--ip6", "fd00:197::50", "ds1", "c"}, "outside subnet"},
		{[]string{"network", "connect", "--ip6", a6, "ds1", "c"}, "already in use"},
	} {
		if out, err := d.Tether(c.args...); err == nil || !strings.Contains(out, c.want) {
			t.Errorf("tether %v: %v %q, want an error containing %q", c.args, err, out, c.want)
		}
	}
	if out := d.MustTether("network", "ls", "--format", "{{.Name}}"); strings.Contains(out, "nov6") || strings.Contains(out, "overlap6") {
		t.Errorf("a refused network was created:\n%s", out)
	}
	if len(sandbox(t, d, "c").Networks) != 1 {
		t.Errorf("a refused connect attached c: %v", sandbox(t, d, "c").Networks)
	}

	// A static IPv6 address, kept by name (sticky) across a re-create.
	d.MustTether("network", "connect", "--ip6", "fd00:196::42", "ds1", "c")
	if got := ip6(t, d, "c", "ds1"); got != "fd00:196::42" {
		t.Errorf("c on ds1 has %s, want fd00:196::42", got)
	}
	if !ping6(d, "c", b6) {
		t.Errorf("c (static fd00:196::42) cannot reach b")
	}
}

func TestIPv6PublishedPorts(t *testing.T) {
	hostNS, d := host(t)
	out := outsideDual(t, hostNS)
	d.MustTether("network", "create", "--ipv6", "--subnet", "10.198.0.0/24", "--subnet", "fd00:198::/64", "pub6")
	d.MustTether("run", "-d", "--name", "web", "--network", "pub6", "-p", "8080:80", "-p", "[::1]:8081:80",
		"--", "python3", "-m", "http.server", "--bind", "::", "80")
	reapProcesses(t, d, "web")
	runDetached(t, d, "cli", "--network", "pub6", "--", "sleep", "600")

	ports := sandbox(t, d, "web").NetworkSettings.Ports["80/tcp"]
	var hosts []string
	for _, p := range ports {
		hosts = append(hosts, p.HostIP+":"+p.HostPort)
	}
	if strings.Join(hosts, " ") != "0.0.0.0:8080 :::8080 ::1:8081" {
		t.Errorf("published ports of web: %v, want 0.0.0.0:8080 :::8080 ::1:8081", hosts)
	}
	if got, want := d.MustTether("port", "web"), "80/tcp -> 0.0.0.0:8080\n80/tcp -> [::1]:8081\n80/tcp -> [::]:8080\n"; got != want {
		t.Errorf("tether port web:\n%s\nwant\n%s", got, want)
	}
	get := func(ns, url string) error {
		var err error
		var o string
		for range 15 {
			o, err = testutil.InNS(ns, "curl", "-sS", "-g", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", url)
			if err == nil && strings.TrimSpace(o) == "200" {
				return nil
			}
			time.Sleep(200 * time.Millisecond)
		}
		return err
	}
	// From outside over IPv6 (kernel DNAT in the ip6 table), and over IPv4.
	if err := get(out, "http://["+uplink6+"]:8080/"); err != nil {
		t.Errorf("outside -> [%s]:8080: %v", uplink6, err)
	}
	if err := get(out, "http://"+testutil.UplinkAddr+":8080/"); err != nil {
		t.Errorf("outside -> %s:8080: %v", testutil.UplinkAddr, err)
	}
	// From the host's IPv6 loopback (the userland proxy), both publishes.
	for _, u := range []string{"http://[::1]:8080/", "http://[::1]:8081/"} {
		if err := get(hostNS, u); err != nil {
			t.Errorf("host -> %s: %v", u, err)
		}
	}
	// [::1]:8081 is the host's only: not from outside.
	if o, err := testutil.InNS(out, "curl", "-sS", "-g", "-m", "2", "http://["+uplink6+"]:8081/"); err == nil {
		t.Errorf("outside reached the loopback-only publish [::1]:8081 through %s: %s", uplink6, o)
	}
	// Hairpin over IPv6: a sandbox on the same network through the host's address.
	if err := httpGet(d, "cli", "["+uplink6+"]:8080", 15); err != nil {
		t.Errorf("hairpin over IPv6: %v", err)
	}
	// Unpublished: the port is gone from both tables and the sockets.
	d.MustTether("rm", "-f", "web")
	if err := get(out, "http://["+uplink6+"]:8080/"); err == nil {
		t.Errorf("outside still reaches [%s]:8080 after the sandbox was removed", uplink6)
	}
}

func TestIPv6DaemonULAAndIPv6Only(t *testing.T) {
	hostNS, d := host(t, "--ipv6")
	// The default network is dual-stack with a ULA /64 from the host's /48.
	var net struct {
		EnableIPv6 bool
		IPAM       struct {
			Config []struct{ Subnet, Gateway string }
		}
	}
	d.InspectJSON(&net, "network", "inspect", "bridge")
	if !net.EnableIPv6 || len(net.IPAM.Config) != 2 {
		t.Fatalf("default network with ipv6 on: %+v", net)
	}
	first := netip.MustParsePrefix(net.IPAM.Config[1].Subnet)
	if first.Bits() != 64 || first.Addr().As16()[0] != 0xfd {
		t.Fatalf("default network IPv6 subnet %s: want a ULA /64 (fd00::/8)", first)
	}
	// Host routes now cover the next /64s of the /48: the next network's
	// subnet skips them.
	b := first.Addr().As16()
	at := func(n byte) netip.Prefix {
		x := b
		x[7] = n
		return netip.PrefixFrom(netip.AddrFrom16(x), 64)
	}
	testutil.Must(t, "ip", "-n", hostNS, "link", "add", "blk0", "type", "bridge")
	testutil.Must(t, "ip", "-n", hostNS, "link", "set", "blk0", "up")
	testutil.Must(t, "ip", "-n", hostNS, "-6", "route", "add", at(1).String(), "dev", "blk0")
	testutil.Must(t, "ip", "-n", hostNS, "-6", "route", "add", netip.PrefixFrom(at(2).Addr(), 63).String(), "dev", "blk0")
	d.MustTether("network", "create", "--ipv6", "auto6")
	d.InspectJSON(&net, "network", "inspect", "auto6")
	if got := net.IPAM.Config[len(net.IPAM.Config)-1].Subnet; got != at(4).String() {
		t.Errorf("auto6 got IPv6 subnet %s; want %s (the first /64 of the /48 no route, address or network covers)", got, at(4))
	}

	// IPv6-only: no IPv4 address, names resolve (AAAA only), peers reachable.
	d.MustTether("network", "create", "--ipv6", "--ipv4=false", "only6")
	runDetached(t, d, "x", "--network", "only6", "--", "sleep", "600")
	runDetached(t, d, "y", "--network", "only6", "--", "sleep", "600")
	if a := sandbox(t, d, "x").Networks["only6"].IPAddress; a.IsValid() {
		t.Errorf("x on an IPv6-only network has IPv4 address %s", a)
	}
	if v4 := d.MustTether("exec", "x", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"); strings.TrimSpace(v4) != "" {
		t.Errorf("x eth0 has IPv4 addresses:\n%s", v4)
	}
	if got := families(t, d, "x", "y"); len(got) != 1 || got[0].String() != ip6(t, d, "y", "only6") {
		t.Errorf("x resolves y to %v, want only its IPv6 %s", got, ip6(t, d, "y", "only6"))
	}
	if !ping6(d, "x", "y") {
		t.Errorf("x cannot reach y by name on the IPv6-only network")
	}
}

func TestIPv6RouterAdvertisementFromDualStackSandbox(t *testing.T) {
	hostNS, d := host(t)
	hostEnter := []string{"ip", "netns", "exec", hostNS}
	d.MustTether("network", "create", "--ipv6", "--subnet", "10.199.0.0/24", "--subnet", "fd00:199::/64", "ra6")
	runDetached(t, d, "atk", "--network", "ra6", "--", "sleep", "600")
	runDetached(t, d, "vic", "--network", "ra6", "--", "sleep", "600")
	vicEnter := nsenterNet(procNetNS(t, d, "vic"))
	hostBefore, vicBefore := raEffects(ipv6State(t, hostEnter)), ipv6State(t, vicEnter)
	sendRA(t, nsenterNet(procNetNS(t, d, "atk")), "eth0", raPrefix+"66::")
	time.Sleep(1500 * time.Millisecond)
	if e := raEffects(ipv6State(t, hostEnter), hostBefore...); len(e) > 0 {
		t.Errorf("an RA from a dual-stack sandbox changed the host:\n  %s", strings.Join(e, "\n  "))
	}
	if after := ipv6State(t, vicEnter); after != vicBefore {
		t.Errorf("an RA from a dual-stack sandbox changed another sandbox:\nbefore:\n%s\nafter:\n%s", vicBefore, after)
	}
	if !ping6(d, "vic", ip6(t, d, "atk", "ra6")) {
		t.Errorf("vic cannot reach atk over IPv6 (so the RA test proves nothing)")
	}
}

func TestIPv6Restart(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		_, d := hostMode(t, mode)
		d.MustTether("network", "create", "--ipv6", "--subnet", "10.200.0.0/24", "--subnet", "fd00:200::/64", "rs6")
		runDetached(t, d, "a", "--network", "rs6", "--", "sleep", "600")
		runDetached(t, d, "b", "--network", "rs6", "--", "sleep", "600")
		b6 := ip6(t, d, "b", "rs6")
		if !ping6(d, "a", "b") {
			t.Fatalf("a cannot reach b over IPv6 before the restart")
		}
		restart(t, d)
		if got := ip6(t, d, "b", "rs6"); got != b6 {
			t.Errorf("b's IPv6 address changed across the restart: %s -> %s", b6, got)
		}
		if !ping6(d, "a", "b") {
			t.Errorf("a cannot reach b by name over IPv6 after the restart")
		}
		// A new sandbox after the restart gets a fresh address (the
		// allocator was restored, not reset).
		runDetached(t, d, "c", "--network", "rs6", "--", "sleep", "600")
		if c6 := ip6(t, d, "c", "rs6"); c6 == b6 || c6 == ip6(t, d, "a", "rs6") {
			t.Errorf("c got an address in use: %s", c6)
		}
	})
}

func TestIPv6Overlay(t *testing.T) {
	c := testutil.StartCluster(t, 2, 3*time.Second)
	d0, d1 := c.D[0], c.D[1]
	d0.MustTether("network", "create", "-d", "overlay", "--ipv6", "--subnet", "10.201.0.0/24", "--subnet", "fd00:201::/64", "ov6")
	runDetached(t, d0, "p", "--network", "ov6", "--", "sleep", "600")
	runDetached(t, d1, "q", "--network", "ov6", "--", "sleep", "600")
	q6 := ip6(t, d1, "q", "ov6")
	var ok bool
	for range 20 { // the peer's record reaches host 0 through the store
		if ok = ping6(d0, "p", q6); ok {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !ok {
		t.Fatalf("p (host 0) cannot reach q (host 1) over IPv6 across the overlay (%s)", q6)
	}
	if !ping6(d1, "q", "p") {
		t.Errorf("q cannot reach p by name over IPv6 across the overlay")
	}
	// The IPv6 address follows the cluster-claimed IPv4 one.
	p4, p6 := netip.MustParseAddr(ip(t, d0, "p", "ov6")), netip.MustParseAddr(ip6(t, d0, "p", "ov6"))
	if p6.As16()[15] != p4.As4()[3] {
		t.Errorf("p: IPv6 %s does not follow IPv4 %s", p6, p4)
	}
}

// The stock docker CLI drives IPv6 as it does against dockerd: create with
// --ipv6 (and --ipv4=false), inspect in Docker's shape, connect --ip6.
func TestIPv6DockerCLI(t *testing.T) {
	_, d := host(t)
	c := newDockerCLI(t, d)
	c.must("network", "create", "--ipv6", "--subnet", "10.202.0.0/24", "--subnet", "fd00:202::/64",
		"--ip-range", "fd00:202::100/120", "--gateway", "fd00:202::fe", "dk6")
	c.must("network", "create", "--ipv6", "--ipv4=false", "dkonly6")
	var ns []network.Inspect
	if err := json.Unmarshal([]byte(c.must("network", "inspect", "dk6", "dkonly6")), &ns); err != nil || len(ns) != 2 {
		t.Fatalf("inspect: %v", err)
	}
	dk, only := ns[0], ns[1]
	if !dk.EnableIPv4 || !dk.EnableIPv6 || len(dk.IPAM.Config) != 2 || dk.IPAM.Config[1].Subnet.String() != "fd00:202::/64" ||
		dk.IPAM.Config[1].IPRange.String() != "fd00:202::100/120" || dk.IPAM.Config[1].Gateway.String() != "fd00:202::fe" {
		t.Errorf("inspect dk6: %+v", dk)
	}
	if only.EnableIPv4 || !only.EnableIPv6 || len(only.IPAM.Config) != 1 || !only.IPAM.Config[0].Subnet.Addr().Is6() {
		t.Errorf("inspect dkonly6: %+v", only)
	}
	runDetached(t, d, "s", "--network", "dk6", "--", "sleep", "600")
	if a := ip6(t, d, "s", "dk6"); !netip.MustParsePrefix("fd00:202::100/120").Contains(netip.MustParseAddr(a)) {
		t.Errorf("s got %s, outside --ip-range", a)
	}
	runDetached(t, d, "s2", "--network", "dkonly6", "--", "sleep", "600")
	c.must("network", "connect", "--ip6", "fd00:202::7", "dk6", "s2")
	if a := ip6(t, d, "s2", "dk6"); a != "fd00:202::7" {
		t.Errorf("docker network connect --ip6 fd00:202::7: s2 got %s", a)
	}
	if !ping6(d, "s2", "s") {
		t.Errorf("s2 cannot reach s by name over IPv6")
	}
	if out, err := c.run("network", "connect", "--ip6", "fd00:203::7", "dkonly6", "s"); err == nil || !strings.Contains(out, "ip6") {
		t.Errorf("connect with an address outside the subnet: %v %s", err, out)
	}
}

// ip6tables=false: no IPv6 rules at all (no ip6 tether table), so no NAT66:
// the outside, with no route back, does not answer; IPv4 still goes out.
func TestIPv6WithoutIP6Tables(t *testing.T) {
	hostNS, d := host(t, "--ip6tables=false")
	outsideDual(t, hostNS)
	d.MustTether("network", "create", "--ipv6", "--subnet", "10.203.0.0/24", "--subnet", "fd00:203::/64", "noip6t")
	runDetached(t, d, "a", "--network", "noip6t", "--", "sleep", "600")
	runDetached(t, d, "b", "--network", "noip6t", "--", "sleep", "600")
	if out, err := testutil.InNS(hostNS, "nft", "list", "table", "ip6", "tether"); err == nil {
		t.Errorf("ip6tables=false, yet table ip6 tether exists:\n%s", out)
	}
	if _, err := testutil.InNS(hostNS, "nft", "list", "table", "ip", "tether"); err != nil {
		t.Errorf("table ip tether is missing: %v", err)
	}
	if !ping6(d, "a", "b") {
		t.Errorf("a cannot reach b over IPv6 without ip6tables")
	}
	if ping6(d, "a", outside6) {
		t.Errorf("a reached the outside over IPv6 with ip6tables=false: something masqueraded it")
	}
	if !ping(d, "a", testutil.OutsideAddr) {
		t.Errorf("a cannot reach the outside over IPv4")
	}
}
