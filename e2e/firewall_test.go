package e2e

// The firewall, checked with traffic only: what must pass connects, what
// must be dropped times out. Beyond the host namespace sits an "outside"
// namespace, linked by a veth pair (host uplink 198.51.100.1/24, outside
// 198.51.100.2/24) and carrying the host's default route; an HTTP server
// there answers with the client address it sees, which tells masqueraded
// traffic (the uplink address) from routed traffic (the sandbox address).

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

const (
	uplinkAddr  = testutil.UplinkAddr
	outsideAddr = testutil.OutsideAddr
	outsideURL  = "http://" + outsideAddr + ":8080/"
)

// outside builds the outside namespace of host namespace hostNS (see
// testutil.Outside) with an HTTP server on it that answers with the client
// address it sees, and returns its name.
func outside(t *testing.T, hostNS string) string {
	t.Helper()
	out := testutil.Outside(t, hostNS)
	serveWho(t, out, outsideAddr+":8080")
	return out
}

// serveWho runs an HTTP server inside namespace ns, on addr, that answers
// with the client's IP address as it sees it. The listening socket is
// created inside the namespace; the server stops when the test ends.
func serveWho(t *testing.T, ns, addr string) {
	t.Helper()
	var l net.Listener
	err := netns.Do("/run/netns/"+ns, func() (err error) {
		l, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintln(w, host)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// get fetches url with curl, from a sandbox (d.Tether exec) or, with d nil,
// from namespace from. It returns the body, or curl's exit status (28: the
// connection timed out, which is what a dropped SYN looks like).
func get(d *testutil.Daemon, from, url string) (string, int) {
	args := []string{"curl", "-sS", "--connect-timeout", "2", "-m", "4", url}
	var out string
	var err error
	if d != nil {
		out, err = d.Tether(append([]string{"exec", from, "--"}, args...)...)
	} else {
		out, err = testutil.InNS(from, args[0], args[1:]...)
	}
	if err != nil {
		return out, exitCode(err)
	}
	return strings.TrimSpace(out), 0
}

// mustGet fetches url and fails the test when that does not work; a few
// tries cover a server that is still starting.
func mustGet(t *testing.T, d *testutil.Daemon, from, url string) string {
	t.Helper()
	var out string
	var code int
	for deadline := time.Now().Add(8 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if out, code = get(d, from, url); code == 0 {
			return out
		}
	}
	t.Errorf("%s cannot fetch %s: curl exit %d: %s", from, url, code, out)
	return ""
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// mustTimeOut checks that fetching url from a sandbox times out (the
// firewall dropped it) rather than succeeding or failing otherwise.
func mustTimeOut(t *testing.T, d *testutil.Daemon, from, url string) {
	t.Helper()
	out, code := get(d, from, url)
	if code != 28 {
		t.Errorf("%s fetching %s: curl exit %d (%q), want 28 (timed out: dropped)", from, url, code, short(out))
	}
}

func urlOf(addr string, port int) string { return fmt.Sprintf("http://%s:%d/", addr, port) }

// Outbound NAT: traffic from a sandbox to the outside leaves with the
// host's uplink address; a network with enable_ip_masquerade=false is
// routed with the sandbox's own address.
func TestFirewallMasquerade(t *testing.T) {
	hostNS, d := host(t)
	out := outside(t, hostNS)
	d.MustTether("network", "create", "--subnet", "10.120.0.0/24", "pub")
	d.MustTether("network", "create", "--subnet", "10.121.0.0/24", "-o", "com.docker.network.bridge.enable_ip_masquerade=false", "direct")
	d.MustTether("sandbox", "create", "--name", "p", "--network", "pub")
	d.MustTether("sandbox", "create", "--name", "q", "--network", "direct")
	d.MustTether("sandbox", "create", "--name", "r") // the default network

	for _, sb := range []string{"p", "r"} {
		if got := mustGet(t, d, sb, outsideURL); got != uplinkAddr {
			t.Errorf("the outside saw %s as %q, want the uplink address %s", sb, got, uplinkAddr)
		}
	}
	// Not masqueraded: the outside needs a route back to reply at all.
	mustTimeOut(t, d, "q", outsideURL)
	testutil.Must(t, "ip", "-n", out, "route", "add", "10.121.0.0/24", "via", uplinkAddr)
	if got, want := mustGet(t, d, "q", outsideURL), ip(t, d, "q", "direct"); got != want {
		t.Errorf("the outside saw q as %q, want its own address %s", got, want)
	}
}

// ip-masq=false: no network is masqueraded; turning it on again needs only
// a restart.
func TestFirewallIPMasqFalse(t *testing.T) {
	hostNS, d := host(t, "--ip-masq=false")
	out := outside(t, hostNS)
	subnet, _ := defaultSubnet(t, d)
	d.MustTether("network", "create", "--subnet", "10.126.0.0/24", "pub")
	d.MustTether("sandbox", "create", "--name", "r")
	d.MustTether("sandbox", "create", "--name", "p", "--network", "pub")
	for _, s := range []string{subnet, "10.126.0.0/24"} {
		testutil.Must(t, "ip", "-n", out, "route", "add", s, "via", uplinkAddr)
	}
	if got, want := mustGet(t, d, "r", outsideURL), ip(t, d, "r", "bridge"); got != want {
		t.Errorf("the outside saw r as %q, want its own address %s", got, want)
	}
	if got, want := mustGet(t, d, "p", outsideURL), ip(t, d, "p", "pub"); got != want {
		t.Errorf("the outside saw p as %q, want its own address %s", got, want)
	}
	// Turning ip-masq back on is a restart, not a rebuild of the default
	// network (r is on it): both are masqueraded from then on.
	d.Stop()
	d.Args = nil
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	for _, sb := range []string{"r", "p"} {
		if got := mustGet(t, d, sb, outsideURL); got != uplinkAddr {
			t.Errorf("after ip-masq=true, the outside saw %s as %q, want %s", sb, got, uplinkAddr)
		}
	}
}

// Two networks cannot reach each other in either direction; a sandbox on
// both reaches both. The same holds after a daemon restart.
func TestFirewallIsolation(t *testing.T) {
	_, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.122.0.0/24", "n1")
	d.MustTether("network", "create", "--subnet", "10.123.0.0/24", "n2")
	httpServer(t, d, "s1", "n1")
	httpServer(t, d, "s2", "n2")
	d.MustTether("sandbox", "create", "--name", "both", "--network", "n1", "--network", "n2")
	u1, u2 := urlOf(ip(t, d, "s1", "n1"), 80), urlOf(ip(t, d, "s2", "n2"), 80)

	check := func(when string) {
		t.Helper()
		mustGet(t, d, "both", u1)
		mustGet(t, d, "both", u2)
		t.Run(when+"/n1->n2", func(t *testing.T) { mustTimeOut(t, d, "s1", u2) })
		t.Run(when+"/n2->n1", func(t *testing.T) { mustTimeOut(t, d, "s2", u1) })
	}
	check("running")
	d.Stop()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	check("restarted")
}

// An internal network: its sandboxes reach each other, nothing is routed
// out of it (even with a default route added by hand) or into it.
func TestFirewallInternal(t *testing.T) {
	hostNS, d := host(t)
	out := outside(t, hostNS)
	d.MustTether("network", "create", "--internal", "--subnet", "10.124.0.0/24", "priv")
	d.MustTether("network", "create", "--subnet", "10.125.0.0/24", "pub")
	httpServer(t, d, "i1", "priv")
	d.MustTether("sandbox", "create", "--name", "i2", "--network", "priv")
	d.MustTether("sandbox", "create", "--name", "x", "--network", "pub")
	u1 := urlOf(ip(t, d, "i1", "priv"), 80)

	mustGet(t, d, "i2", u1)
	mustGet(t, d, "x", outsideURL) // the outside is there for a normal network
	if r := d.MustTether("exec", "i2", "--", "ip", "route", "show", "default"); strings.TrimSpace(r) != "" {
		t.Errorf("sandbox on an internal network has a default route: %q", r)
	}
	d.MustTether("exec", "i2", "--", "ip", "route", "add", "default", "via", "10.124.0.1")
	mustTimeOut(t, d, "i2", outsideURL)
	mustTimeOut(t, d, "x", u1)

	// From the outside, with a route to the internal subnet through the
	// host: the host's own address on the bridge answers, the sandbox not.
	testutil.Must(t, "ip", "-n", out, "route", "add", "10.124.0.0/24", "via", uplinkAddr)
	serveWho(t, hostNS, "10.124.0.1:8081")
	if got := mustGet(t, nil, out, urlOf("10.124.0.1", 8081)); got != outsideAddr {
		t.Errorf("host saw the outside as %q", got)
	}
	if o, code := get(nil, out, u1); code != 28 {
		t.Errorf("the outside fetching %s: curl exit %d (%q), want 28 (dropped)", u1, code, short(o))
	}
}

// icc=false on the default network: sandboxes cannot reach each other; the
// gateway and the outside stay reachable.
func TestFirewallICCFalse(t *testing.T) {
	hostNS, d := host(t, "--icc=false")
	outside(t, hostNS)
	httpServer(t, d, "a")
	d.MustTether("sandbox", "create", "--name", "b")
	_, gw := defaultSubnet(t, d)
	ua := urlOf(ip(t, d, "a", "bridge"), 80)
	mustGet(t, nil, hostNS, ua) // a's server is up (the host reaches it)
	serveWho(t, hostNS, gw+":8081")
	mustGet(t, d, "b", urlOf(gw, 8081))
	if got := mustGet(t, d, "b", outsideURL); got != uplinkAddr {
		t.Errorf("the outside saw b as %q, want %s", got, uplinkAddr)
	}
	mustTimeOut(t, d, "b", ua)
}

// hostTables lists the nftables tables of a namespace (all families).
func hostTables(t *testing.T, ns string) []string {
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
	ts, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range ts {
		names = append(names, tb.Name)
	}
	return names
}

// iptables=false: no table, no NAT, no isolation. The last two prove the
// checks of the tests above can fail.
func TestFirewallDisabled(t *testing.T) {
	hostNS, d := host(t, "--iptables=false")
	out := outside(t, hostNS)
	if ts := hostTables(t, hostNS); len(ts) != 0 {
		t.Errorf("nftables tables in the host namespace: %v, want none", ts)
	}
	subnet, _ := defaultSubnet(t, d)
	d.MustTether("sandbox", "create", "--name", "r")
	mustTimeOut(t, d, "r", outsideURL) // not masqueraded, and the outside has no route back
	testutil.Must(t, "ip", "-n", out, "route", "add", subnet, "via", uplinkAddr)
	if got, want := mustGet(t, d, "r", outsideURL), ip(t, d, "r", "bridge"); got != want {
		t.Errorf("the outside saw r as %q, want its own address %s", got, want)
	}
	d.MustTether("network", "create", "--subnet", "10.127.0.0/24", "n1")
	d.MustTether("network", "create", "--subnet", "10.128.0.0/24", "n2")
	httpServer(t, d, "s2", "n2")
	d.MustTether("sandbox", "create", "--name", "s1", "--network", "n1")
	mustGet(t, d, "s1", urlOf(ip(t, d, "s2", "n2"), 80))
}

// ip-forward=false leaves a disabled net.ipv4.ip_forward alone and says
// so; nothing reaches the outside then.
func TestFirewallIPForwardFalse(t *testing.T) {
	testutil.RequireRoot(t)
	hostNS := testutil.NetNS(t, "tth-e2e")
	testutil.Must(t, "ip", "netns", "exec", hostNS, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
	d := testutil.StartDaemon(t, hostNS, "--ip-forward=false")
	outside(t, hostNS)
	d.MustTether("sandbox", "create", "--name", "r")
	if o, code := get(d, "r", outsideURL); code == 0 {
		t.Errorf("r reached the outside with forwarding off: %q", short(o))
	}
	if v, _ := testutil.InNS(hostNS, "cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(v) != "0" {
		t.Errorf("ip_forward = %q, want 0 (left alone)", v)
	}
	if !strings.Contains(d.Log(), "ip-forward is false") {
		t.Errorf("no ip-forward warning in the daemon log:\n%s", d.Log())
	}
}
