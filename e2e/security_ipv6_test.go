package e2e

// Rogue router advertisements (CVE-2020-13401 in Docker, CVE-2020-10749 in
// the CNI plugins) and IPv6 left on in IPv4-only networks (CVE-2024-32473):
// a sandbox whose root sends an ICMPv6 router advertisement must not give
// the host, nor another sandbox, a route or an address. The host here is
// one that accepts RAs (IPv6 on, accept_ra=2 on its uplink and as the
// default for new interfaces), and the attack is repeated after the host's
// administrator re-enables IPv6 on every interface (`sysctl -w
// net.ipv6.conf.all.disable_ipv6=0`, as a `sysctl --system` re-run does),
// which the kernel propagates to every existing interface.

import (
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// raScript sends a hand-built router advertisement out of an interface
// through a packet socket (AF_PACKET: the sender needs no IPv6 of its
// own): Ethernet to 33:33:00:00:00:01, IPv6 from the link-local address
// derived from the interface's MAC to ff02::1 with hop limit 255, ICMPv6
// type 134 with router lifetime 1800 s, a source link-layer address option
// and a prefix information option (on-link, autonomous) for PREFIX::/64.
// argv: IFNAME PREFIX (e.g. fd00:13:1::), sent 3 times 100 ms apart.
const raScript = `
import socket, struct, sys, time
ifname, prefix = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
mac = s.getsockname()[4][:6]
eui = bytes([mac[0] ^ 2]) + mac[1:3] + b'\xff\xfe' + mac[3:6]
src = b'\xfe\x80' + b'\x00' * 6 + eui
dst = socket.inet_pton(socket.AF_INET6, 'ff02::1')
slla = struct.pack('!BB', 1, 1) + mac
pio = struct.pack('!BBBBIII', 3, 4, 64, 0xc0, 86400, 14400, 0) + socket.inet_pton(socket.AF_INET6, prefix)
ra = struct.pack('!BBHBBHII', 134, 0, 0, 64, 0, 1800, 0, 0) + slla + pio
pseudo = src + dst + struct.pack('!I3xB', len(ra), 58)
data = pseudo + ra
total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
while total >> 16:
    total = (total & 0xffff) + (total >> 16)
ra = ra[:2] + struct.pack('!H', ~total & 0xffff) + ra[4:]
ip6 = struct.pack('!IHBB', 6 << 28, len(ra), 58, 255) + src + dst
frame = b'\x33\x33\x00\x00\x00\x01' + mac + b'\x86\xdd' + ip6 + ra
for _ in range(3):
    s.send(frame)
    time.sleep(0.1)
`

// sendRA runs raScript through prefix (a command that enters the sender's
// namespace, e.g. nsenter --net=...).
func sendRA(t *testing.T, enter []string, ifname, prefix string) {
	t.Helper()
	args := append(append([]string{}, enter...), "python3", "-c", raScript, ifname, prefix)
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("send RA out of %s (%v): %v\n%s", ifname, enter, err, out)
	}
}

func nsenterNet(path string) []string { return []string{"nsenter", "--net=" + path} }

// ipv6State is what a router advertisement changes: routes in every table
// and addresses, as `ip -6` prints them, from a namespace entered by enter.
func ipv6State(t *testing.T, enter []string) string {
	t.Helper()
	var b strings.Builder
	for _, c := range [][]string{{"ip", "-6", "route", "show", "table", "all"}, {"ip", "-6", "addr", "show"}} {
		args := append(append([]string{}, enter...), c...)
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

// raEffects lists the lines of an ipv6State that an RA of raPrefix leaves
// (the prefix as a route or SLAAC address, a default route) and that are
// not in before; lifetimes are left out.
func raEffects(state string, before ...string) []string {
	var out []string
	for l := range strings.SplitSeq(state, "\n") {
		l = lifetime.ReplaceAllString(strings.TrimSpace(l), "")
		if (strings.Contains(l, raPrefix) || strings.HasPrefix(l, "default")) && !slices.Contains(before, l) {
			out = append(out, l)
		}
	}
	return out
}

var lifetime = regexp.MustCompile(` expires \d+sec`)

// raPrefix starts every prefix the attack advertises (fd00:13::/32).
const raPrefix = "fd00:13:"

// sysctlIn reads a sysctl (path under /proc/sys) in a namespace entered by enter.
func sysctlIn(t *testing.T, enter []string, key string) string {
	t.Helper()
	args := append(append([]string{}, enter...), "cat", "/proc/sys/"+key)
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// tetherLinks are the host namespace's links Tether made (alias "tether:...").
func tetherLinks(t *testing.T, ns string) []string {
	t.Helper()
	var names []string
	for l := range strings.SplitSeq(testutil.Must(t, "ip", "-n", ns, "-o", "link", "show"), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || !strings.Contains(l, "alias tether:") {
			continue
		}
		names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
	}
	return names
}

func TestSecurityRogueRouterAdvertisement(t *testing.T) {
	c := testutil.StartCluster(t, 1, 3*time.Second)
	hostNS, d := c.Hosts[0].NS, c.D[0]
	hostEnter := []string{"ip", "netns", "exec", hostNS}
	// A host that takes RAs: IPv6 on, accept_ra=2 (even when forwarding) on
	// its uplink and as the default of every new interface. (all.* is
	// written in the second phase: the kernel copies all.disable_ipv6 into
	// every interface.)
	testutil.Must(t, "ip", "netns", "exec", hostNS, "sysctl", "-q", "-w",
		"net.ipv6.conf.default.disable_ipv6=0", "net.ipv6.conf.all.accept_ra=2", "net.ipv6.conf.default.accept_ra=2",
		"net.ipv6.conf.eth0.disable_ipv6=0", "net.ipv6.conf.eth0.accept_ra=2")

	d.MustTether("network", "create", "--subnet", "10.190.0.0/24", "ra-br")
	d.MustTether("network", "create", "-d", "overlay", "--subnet", "10.191.0.0/24", "ra-ov")
	for _, s := range [][]string{{"atk0"}, {"atk", "--network", "ra-br"}, {"ovatk", "--network", "ra-ov"}} {
		runDetached(t, d, s[0], append(s[1:], "--", "sleep", "600")...)
	}
	// The victim: a namespace adopted from another runtime, IPv6 on.
	vicNS := testutil.NetNS(t, "tth-vic")
	testutil.Must(t, "ip", "netns", "exec", vicNS, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0",
		"net.ipv6.conf.default.disable_ipv6=0", "net.ipv6.conf.all.accept_ra=1", "net.ipv6.conf.default.accept_ra=1")
	d.MustTether("sandbox", "create", "--name", "vic", "--netns", "/run/netns/"+vicNS, "--network", "ra-br")
	vicEnter := []string{"ip", "netns", "exec", vicNS}

	// IPv6 is off on every interface of these IPv4-only networks: Tether's
	// host-side links (bridges, VXLAN devices, veths) and the sandbox ends.
	links := tetherLinks(t, hostNS)
	for _, want := range []string{"tether0", "tov-", "tvx-", "vth", "vto"} {
		if !strings.Contains(strings.Join(links, " "), want) {
			t.Fatalf("no Tether link %s* in the host namespace: %v", want, links)
		}
	}
	for _, l := range links {
		if v := sysctlIn(t, hostEnter, "net/ipv6/conf/"+l+"/disable_ipv6"); v != "1" {
			t.Errorf("host link %s: disable_ipv6=%s, want 1", l, v)
		}
	}
	ends := map[string][]string{"atk0": {"eth0"}, "atk": {"eth0"}, "ovatk": {"eth0"}}
	for sb, ifs := range ends {
		for _, i := range ifs {
			if v := sysctlIn(t, nsenterNet(procNetNS(t, d, sb)), "net/ipv6/conf/"+i+"/disable_ipv6"); v != "1" {
				t.Errorf("sandbox %s %s: disable_ipv6=%s, want 1", sb, i, v)
			}
		}
		// Should a process turn IPv6 back on, RAs are still not taken.
		for _, k := range []string{"default", "all"} {
			if v := sysctlIn(t, nsenterNet(procNetNS(t, d, sb)), "net/ipv6/conf/"+k+"/accept_ra"); v != "0" {
				t.Errorf("sandbox %s: %s.accept_ra=%s, want 0", sb, k, v)
			}
		}
	}
	if v := sysctlIn(t, vicEnter, "net/ipv6/conf/eth0/disable_ipv6"); v != "1" {
		t.Errorf("adopted sandbox eth0: disable_ipv6=%s, want 1", v)
	}

	attack := func(phase string, n int) {
		t.Helper()
		hostBefore, vicBefore := raEffects(ipv6State(t, hostEnter)), ipv6State(t, vicEnter)
		i := 0
		for sb, ifs := range ends {
			for _, ifname := range ifs {
				i++
				sendRA(t, nsenterNet(procNetNS(t, d, sb)), ifname, fmt.Sprintf("fd00:13:%d%d::", n, i))
			}
		}
		time.Sleep(1500 * time.Millisecond)
		if e := raEffects(ipv6State(t, hostEnter), hostBefore...); len(e) > 0 {
			t.Errorf("%s: RAs from sandboxes changed the host's IPv6 routes/addresses:\n  %s", phase, strings.Join(e, "\n  "))
		}
		if after := ipv6State(t, vicEnter); after != vicBefore {
			t.Errorf("%s: RAs from sandboxes changed the adopted sandbox's IPv6 state:\nbefore:\n%s\nafter:\n%s", phase, vicBefore, after)
		}
	}
	attack("as created", 1)
	for _, l := range links {
		if v := sysctlIn(t, hostEnter, "net/ipv6/conf/"+l+"/accept_ra"); v != "0" {
			t.Errorf("host link %s: accept_ra=%s, want 0", l, v)
		}
	}
	// The administrator turns IPv6 on everywhere: the kernel writes
	// disable_ipv6=0 into every interface, Tether's included.
	testutil.Must(t, "ip", "netns", "exec", hostNS, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0")
	attack("after all.disable_ipv6=0", 2)

	// Control: the same RA from a router on the host's uplink is taken, so
	// the packets above were ones the host would have accepted.
	rogue := c.U.Join("rtr")
	sendRA(t, []string{"ip", "netns", "exec", rogue.NS}, "eth0", "fd00:13:ee::")
	time.Sleep(1500 * time.Millisecond)
	if e := raEffects(ipv6State(t, hostEnter)); !strings.Contains(strings.Join(e, " "), "fd00:13:ee::") {
		t.Fatalf("control: the host ignored an RA on its uplink too (the attack proves nothing): %v", e)
	}
}
