package e2e

// Port publishing, checked with traffic: from the outside namespace, from
// the host itself, from sandboxes (hairpin), over loopback, and UDP.

import (
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// udpEcho runs a UDP server in a new detached sandbox that answers each
// datagram with its bytes reversed.
func udpEcho(t *testing.T, d *testutil.Daemon, name string, port int, publish string) {
	t.Helper()
	prog := "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0'," + strconv.Itoa(port) +
		"))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(d[::-1],a)\n"
	d.MustTether("run", "-d", "--name", name, "-p", publish, "--", "python3", "-c", prog)
}

// udpAsk sends one datagram from namespace ns and returns the answer.
func udpAsk(ns, addr, msg string) (string, error) {
	prog := "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(1)\n" +
		"for i in range(5):\n try:\n  s.sendto(sys.argv[2].encode(),(sys.argv[1].split(':')[0],int(sys.argv[1].split(':')[1])))\n" +
		"  print(s.recvfrom(2048)[0].decode());break\n except socket.timeout:\n  pass\nelse:\n sys.exit(1)\n"
	out, err := testutil.InNS(ns, "python3", "-c", prog, addr, msg)
	return strings.TrimSpace(out), err
}

// Every path to a port published on all addresses: from outside, from the
// host through its own address, over loopback (userland proxy, the default),
// hairpin from a neighbour and from the sandbox itself.
func TestPublishPaths(t *testing.T) {
	ns, d := host(t)
	out := outside(t, ns)
	d.MustTether("run", "-d", "--name", "web", "-p", "8080:80", "--", "python3", "-m", "http.server", "80")
	d.MustTether("sandbox", "create", "--name", "nbr")

	mustGet(t, nil, out, urlOf(uplinkAddr, 8080))
	mustGet(t, nil, ns, urlOf(uplinkAddr, 8080))
	mustGet(t, nil, ns, urlOf("127.0.0.1", 8080))
	mustGet(t, d, "nbr", urlOf(uplinkAddr, 8080))
	mustGet(t, d, "web", urlOf(uplinkAddr, 8080))

	if got := strings.TrimSpace(d.MustTether("port", "web")); got != "80/tcp -> 0.0.0.0:8080" {
		t.Errorf("tether port web = %q", got)
	}
	sb := sandbox(t, d, "web")
	if b := sb.NetworkSettings.Ports["80/tcp"]; len(b) != 1 || b[0] != (api.PortBinding{HostIP: "0.0.0.0", HostPort: "8080"}) {
		t.Errorf("inspect NetworkSettings.Ports = %+v", sb.NetworkSettings.Ports)
	}
}

// A port published on one address answers there only; one on 127.0.0.1 is
// not reachable through the host's other addresses.
func TestPublishBindingAddress(t *testing.T) {
	ns, d := host(t)
	out := outside(t, ns)
	testutil.Must(t, "ip", "-n", ns, "addr", "add", "198.51.100.3/24", "dev", "up0")
	d.MustTether("run", "-d", "--name", "one", "-p", uplinkAddr+":8081:80", "--", "python3", "-m", "http.server", "80")
	d.MustTether("run", "-d", "--name", "lo", "-p", "127.0.0.1:8082:80", "--", "python3", "-m", "http.server", "80")
	mustGet(t, nil, out, urlOf(uplinkAddr, 8081))
	if body, code := get(nil, out, urlOf("198.51.100.3", 8081)); code == 0 {
		t.Errorf("port published on %s answered on 198.51.100.3: %s", uplinkAddr, short(body))
	}
	mustGet(t, nil, ns, urlOf("127.0.0.1", 8082))
	if body, code := get(nil, out, urlOf(uplinkAddr, 8082)); code == 0 {
		t.Errorf("port published on 127.0.0.1 answered from outside: %s", short(body))
	}
}

// UDP works both ways through a published port, and an ephemeral host port
// (-p 53/udp) comes from the kernel's local port range.
func TestPublishUDPAndEphemeral(t *testing.T) {
	ns, d := host(t)
	out := outside(t, ns)
	udpEcho(t, d, "dns", 53, "5353:53/udp")
	var got string
	var err error
	for range 20 { // the server may still be starting
		if got, err = udpAsk(out, uplinkAddr+":5353", "hello"); err == nil {
			break
		}
	}
	if err != nil || got != "olleh" {
		t.Errorf("UDP through the published port: %q %v", got, err)
	}
	d.MustTether("run", "-d", "--name", "eph", "-p", "80", "--", "python3", "-m", "http.server", "80")
	m := regexp.MustCompile(`80/tcp -> 0\.0\.0\.0:(\d+)`).FindStringSubmatch(d.MustTether("port", "eph"))
	if m == nil {
		t.Fatalf("no ephemeral binding: %s", d.MustTether("port", "eph"))
	}
	port, _ := strconv.Atoi(m[1])
	lohi, _ := testutil.InNS(ns, "cat", "/proc/sys/net/ipv4/ip_local_port_range")
	f := strings.Fields(lohi)
	lo, _ := strconv.Atoi(f[0])
	hi, _ := strconv.Atoi(f[1])
	if port < lo || port > hi {
		t.Errorf("ephemeral port %d outside %d-%d", port, lo, hi)
	}
	mustGet(t, nil, out, urlOf(uplinkAddr, port))
}

// A second binding of a held port is refused naming the port and its
// holder, whether Tether or another program holds it; nothing is left half
// made; the port is released when the sandbox goes.
func TestPublishConflictsAndRelease(t *testing.T) {
	ns, d := host(t)
	d.MustTether("run", "-d", "--name", "first", "-p", "8090:80", "--", "sleep", "300")
	out, err := d.Tether("run", "-d", "--name", "second", "-p", "8090:80", "--", "sleep", "300")
	if err == nil || !strings.Contains(out, "8090") || !strings.Contains(out, "first") {
		t.Errorf("duplicate binding: %v %s", err, out)
	}
	var l net.Listener
	if err := netns.Do("/run/netns/"+ns, func() (err error) {
		l, err = net.Listen("tcp4", "0.0.0.0:8091")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	out, err = d.Tether("run", "-d", "--name", "third", "-p", "8091:80", "--", "sleep", "300")
	l.Close()
	if err == nil || !strings.Contains(out, "8091") || !strings.Contains(out, "in use by") {
		t.Errorf("port held by another program: %v %s", err, out)
	}
	if ls := d.MustTether("sandbox", "ls", "--format", "{{.Name}}"); strings.TrimSpace(ls) != "first" {
		t.Errorf("refused runs left sandboxes: %q", ls)
	}
	if out, err := d.Tether("run", "-d", "--name", "bad", "-p", "99999:80", "--", "true"); err == nil || !strings.Contains(out, "99999") {
		t.Errorf("invalid port accepted: %v %s", err, out)
	}
	d.MustTether("rm", "-f", "first")
	if err := netns.Do("/run/netns/"+ns, func() error {
		l, err := net.Listen("tcp4", "0.0.0.0:8090")
		if err == nil {
			l.Close()
		}
		return err
	}); err != nil {
		t.Errorf("port 8090 not released after rm: %v", err)
	}
}

// After a restart, under every start mode, the bindings still work (from
// outside and over loopback, whose proxy is the daemon's), are held again (a
// duplicate is still refused) and the kernel maps hold no duplicate element.
func TestPublishSurvivesRestart(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		ns, d := hostMode(t, mode)
		out := outside(t, ns)
		runDetached(t, d, "web", "-p", "8095:80", "--", "python3", "-m", "http.server", "80")
		mustGet(t, nil, out, urlOf(uplinkAddr, 8095))
		restart(t, d)
		mustGet(t, nil, out, urlOf(uplinkAddr, 8095))
		mustGet(t, nil, ns, urlOf("127.0.0.1", 8095))
		if out, err := d.Tether("run", "-d", "--name", "dup", "-p", "8095:80", "--", "true"); err == nil {
			t.Errorf("duplicate accepted after restart: %s", out)
		}
		if got := strings.TrimSpace(d.MustTether("port", "web")); got != "80/tcp -> 0.0.0.0:8095" {
			t.Errorf("tether port after restart = %q", got)
		}
		if n := mapElements(t, ns, "ports_any"); n != 1 {
			t.Errorf("ports_any holds %d elements after the restart, want 1", n)
		}
		d.MustTether("rm", "-f", "web")
		if n := mapElements(t, ns, "ports_any"); n != 0 {
			t.Errorf("ports_any holds %d elements after rm, want 0", n)
		}
	})
}

// With userland-proxy off, loopback is served by the kernel path
// (route_localnet and a masquerade scoped to those flows).
func TestPublishLoopbackKernelPath(t *testing.T) {
	ns, d := host(t, "--userland-proxy=false")
	out := outside(t, ns)
	d.MustTether("run", "-d", "--name", "web", "-p", "8096:80", "--", "python3", "-m", "http.server", "80")
	mustGet(t, nil, out, urlOf(uplinkAddr, 8096))
	mustGet(t, nil, ns, urlOf("127.0.0.1", 8096))
}

// mapElements counts the elements of a map in Tether's table in namespace ns.
func mapElements(t *testing.T, ns, set string) int {
	t.Helper()
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.GetSetByName(&nftables.Table{Name: "tether", Family: nftables.TableFamilyIPv4}, set)
	if err != nil {
		t.Fatalf("set %s: %v", set, err)
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		t.Fatal(err)
	}
	return len(els)
}
