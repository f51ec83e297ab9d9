package e2e

// Attacks from a neighbour on the host's uplink (issue 13, attacks 1 and 2):
// direct routing to sandbox addresses, and ports published on 127.0.0.1
// reached from the LAN (moby#45610, the CVE-2020-8558 class). The
// neighbour is the "outside" namespace of firewall_test.go; it routes a
// sandbox subnet, or 127.0.0.0/8, via the host's uplink address.

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/testutil"
)

// routeVia makes namespace ns send traffic for prefix to the host's
// uplink address, as a neighbour with a static route does.
func routeVia(t *testing.T, ns, prefix string) {
	t.Helper()
	testutil.Must(t, "ip", "-n", ns, "route", "add", prefix, "via", uplinkAddr)
}

// routeLoopbackVia makes namespace ns send 127.0.0.0/8 to the host's uplink
// address (so, at the host's MAC): the local table's loopback routes are
// moved behind a rule that looks 127.0.0.0/8 up in a table of its own, and
// route_localnet=1 lets ns send such packets out of a non-loopback link.
func routeLoopbackVia(t *testing.T, ns string) {
	t.Helper()
	testutil.Must(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
	for _, c := range [][]string{
		{"rule", "del", "pref", "0"},
		{"rule", "add", "pref", "100", "lookup", "local"},
		{"route", "add", "127.0.0.0/8", "via", uplinkAddr, "table", "160"},
		{"rule", "add", "pref", "10", "to", "127.0.0.0/8", "lookup", "160"},
	} {
		testutil.Must(t, "ip", append([]string{"-n", ns}, c...)...)
	}
	if r, _ := testutil.InNS(ns, "ip", "route", "get", "127.0.0.1"); !strings.Contains(r, "via "+uplinkAddr) {
		t.Fatalf("%s does not route 127.0.0.1 via the host: %s", ns, r)
	}
}

// webPair runs two HTTP servers (port 80) on network: "<prefix>pub"
// publishing 80 on host port hostPort, "<prefix>priv" publishing nothing.
// It returns their addresses.
func webPair(t *testing.T, d *testutil.Daemon, network, prefix string, hostPort int) (pub, priv string) {
	t.Helper()
	runDetached(t, d, prefix+"pub", "--network", network, "-p", fmt.Sprintf("%d:80", hostPort), "--", "python3", "-m", "http.server", "80")
	httpServer(t, d, prefix+"priv", network)
	return ip(t, d, prefix+"pub", network), ip(t, d, prefix+"priv", network)
}

// Attack 1, default gateway mode (nat): a neighbour that routes the
// sandbox subnets via the host reaches no sandbox directly, published or
// not, masqueraded network or not; published ports stay reachable
// through the host's address, and sandboxes still reach the neighbour.
func TestDirectRoutingBlocked(t *testing.T) {
	hostNS, d := host(t)
	out := outside(t, hostNS)
	d.MustTether("network", "create", "--subnet", "10.160.0.0/24", "natnet")
	d.MustTether("network", "create", "--subnet", "10.161.0.0/24",
		"-o", "com.docker.network.bridge.enable_ip_masquerade=false", "nomasq")
	pub, priv := webPair(t, d, "natnet", "a", 8160)
	npub, npriv := webPair(t, d, "nomasq", "b", 8161)
	routeVia(t, out, "10.160.0.0/24")
	routeVia(t, out, "10.161.0.0/24")

	mustGet(t, nil, out, urlOf(uplinkAddr, 8160)) // published, through the host's address
	mustGet(t, nil, out, urlOf(uplinkAddr, 8161))
	mustGet(t, nil, hostNS, urlOf(priv, 80)) // the host itself reaches every port
	for _, a := range []string{priv, pub, npriv, npub} {
		mustTimeOut(t, nil, out, urlOf(a, 80))
	}
	// Replies to what sandboxes start are not direct routing.
	if got := mustGet(t, d, "apriv", outsideURL); got != uplinkAddr {
		t.Errorf("the outside saw apriv as %q, want %s", got, uplinkAddr)
	}
	if got := mustGet(t, d, "bpriv", outsideURL); got != npriv {
		t.Errorf("the outside saw bpriv as %q, want its own address %s", got, npriv)
	}
}

// Attack 1, the knobs: nat-unprotected opens everything (Docker's legacy
// behaviour), routed opens published sandbox ports and ICMP and does not
// masquerade, trusted_host_interfaces opens published sandbox ports to
// traffic arriving on the listed interfaces only.
func TestDirectRoutingGatewayModes(t *testing.T) {
	hostNS, d := host(t)
	out := outside(t, hostNS)
	d.MustTether("network", "create", "--subnet", "10.162.0.0/24",
		"-o", "com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected", "unprot")
	d.MustTether("network", "create", "--subnet", "10.163.0.0/24",
		"-o", "com.docker.network.bridge.gateway_mode_ipv4=routed", "routed")
	d.MustTether("network", "create", "--subnet", "10.164.0.0/24",
		"-o", "com.docker.network.bridge.trusted_host_interfaces=eth9:up0", "trusted")
	d.MustTether("network", "create", "--subnet", "10.165.0.0/24",
		"-o", "com.docker.network.bridge.trusted_host_interfaces=eth9", "untrusted")
	upub, upriv := webPair(t, d, "unprot", "u", 8162)
	rpub, rpriv := webPair(t, d, "routed", "r", 8163)
	tpub, tpriv := webPair(t, d, "trusted", "t", 8164)
	xpub, _ := webPair(t, d, "untrusted", "x", 8165)
	for _, s := range []string{"10.162.0.0/24", "10.163.0.0/24", "10.164.0.0/24", "10.165.0.0/24"} {
		routeVia(t, out, s)
	}

	mustGet(t, nil, out, urlOf(upub, 80))
	mustGet(t, nil, out, urlOf(upriv, 80))

	mustGet(t, nil, out, urlOf(rpub, 80))
	mustTimeOut(t, nil, out, urlOf(rpriv, 80))
	if _, err := testutil.InNS(out, "ping", "-c1", "-W2", rpriv); err != nil {
		t.Errorf("ping from outside to %s on a routed network: %v", rpriv, err)
	}
	if got := mustGet(t, d, "rpriv", outsideURL); got != rpriv {
		t.Errorf("routed: the outside saw rpriv as %q, want its own address %s (no masquerade)", got, rpriv)
	}

	mustGet(t, nil, out, urlOf(tpub, 80))
	mustTimeOut(t, nil, out, urlOf(tpriv, 80))
	mustTimeOut(t, nil, out, urlOf(xpub, 80))
	mustGet(t, nil, out, urlOf(uplinkAddr, 8165))
}

// Attack 1, daemon option allow-direct-routing: published sandbox ports of
// every network are open to direct routing, unpublished ones are not.
func TestDirectRoutingAllowed(t *testing.T) {
	hostNS, d := host(t, "--allow-direct-routing")
	out := outside(t, hostNS)
	d.MustTether("network", "create", "--subnet", "10.166.0.0/24", "natnet")
	pub, priv := webPair(t, d, "natnet", "a", 8166)
	routeVia(t, out, "10.166.0.0/24")
	mustGet(t, nil, out, urlOf(pub, 80))
	mustTimeOut(t, nil, out, urlOf(priv, 80))
}

// Bad values of the new options are refused with 400 naming the option,
// and create nothing.
func TestDirectRoutingBadOptions(t *testing.T) {
	hostNS, d := host(t)
	a := newAPI(t, d)
	for _, c := range []struct {
		opts     map[string]string
		internal bool
		want     string
	}{
		{map[string]string{"com.docker.network.bridge.gateway_mode_ipv4": "bogus"}, false, "gateway_mode_ipv4"},
		{map[string]string{"com.docker.network.bridge.gateway_mode_ipv4": "isolated"}, false, "gateway_mode_ipv4"},
		{map[string]string{"com.docker.network.bridge.trusted_host_interfaces": "eth0:"}, false, "trusted_host_interfaces"},
		{map[string]string{"com.docker.network.bridge.trusted_host_interfaces": "a-very-long-interface-name"}, false, "trusted_host_interfaces"},
		{map[string]string{"com.docker.network.bridge.trusted_host_interfaces": "eth 0"}, false, "trusted_host_interfaces"},
	} {
		code, body := a.json("POST", "/networks/create", map[string]any{"Name": "bad", "Options": c.opts, "Internal": c.internal})
		if code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("create with %v: %d %s, want 400 naming %s", c.opts, code, body, c.want)
		}
	}
	if out := d.MustTether("network", "ls", "--format", "{{.Name}}"); strings.Contains(out, "bad") {
		t.Errorf("a refused network exists: %s", out)
	}
	d.MustTether("network", "create", "--internal", "--subnet", "10.167.0.0/24",
		"-o", "com.docker.network.bridge.gateway_mode_ipv4=isolated", "iso")
	// isolated, as Docker: no address on the bridge, so the host is not on
	// the network; its sandboxes still reach each other.
	id := strings.TrimSpace(d.MustTether("network", "inspect", "-f", "{{.Id}}", "iso"))
	br := "tth-" + id[:11] // the bridge driver's name for a network's bridge
	if out, err := testutil.InNS(hostNS, "ip", "-4", "-o", "addr", "show", "dev", br); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("isolated network's bridge %s has IPv4 addresses (%v): %s", br, err, out)
	}
	runDetached(t, d, "iso1", "--network", "iso", "--", "python3", "-m", "http.server", "80")
	d.MustTether("sandbox", "create", "--name", "iso2", "--network", "iso")
	iso1 := ip(t, d, "iso1", "iso")
	if err := httpGet(d, "iso2", iso1, 25); err != nil {
		t.Errorf("sandboxes on an isolated network cannot reach each other: %v", err)
	}
	if out, err := testutil.InNS(hostNS, "curl", "-sS", "-m", "2", urlOf(iso1, 80)); err == nil {
		t.Errorf("the host reached %s on an isolated network: %s", iso1, short(out))
	}
}

// Attack 2 (moby#45610): a port published on 127.0.0.1 is reachable from
// the host only. A neighbour sending to 127.0.0.1 at the host's MAC (its
// route for 127.0.0.0/8 points at the host) gets nothing, with the
// userland proxy on and off; nor does a sandbox that routes 127.0.0.0/8 to
// its gateway (route_localnet=1 is on the bridges without the proxy: the
// CVE-2020-8558 class), for the published port or a host service on
// 127.0.0.1.
func TestLoopbackPublishedFromLAN(t *testing.T) {
	for i, proxy := range []string{"true", "false"} {
		t.Run("userland-proxy="+proxy, func(t *testing.T) {
			hostNS, d := host(t, "--userland-proxy="+proxy)
			out := outside(t, hostNS)
			subnet := fmt.Sprintf("10.%d.0.0/24", 168+i)
			d.MustTether("network", "create", "--subnet", subnet, "lonet")
			runDetached(t, d, "lo", "--network", "lonet", "-p", "127.0.0.1:8168:80", "--", "python3", "-m", "http.server", "80")
			serveWho(t, hostNS, "127.0.0.1:8169") // a host service bound to loopback
			mustGet(t, nil, hostNS, urlOf("127.0.0.1", 8168))
			mustGet(t, nil, hostNS, urlOf("127.0.0.1", 8169))

			routeLoopbackVia(t, out)
			mustTimeOut(t, nil, out, urlOf("127.0.0.1", 8168))
			mustTimeOut(t, nil, out, urlOf("127.0.0.1", 8169))

			d.MustTether("sandbox", "create", "--name", "evil", "--network", "lonet")
			gw := strings.TrimSuffix(subnet, "0/24") + "1"
			d.MustTether("exec", "evil", "--", "sh", "-c", "sysctl -qw net.ipv4.conf.all.route_localnet=1 && "+
				"ip rule del pref 0 && ip rule add pref 100 lookup local && "+
				"ip route add 127.0.0.0/8 via "+gw+" table 160 && ip rule add pref 10 to 127.0.0.0/8 lookup 160")
			mustTimeOut(t, d, "evil", urlOf("127.0.0.1", 8168))
			mustTimeOut(t, d, "evil", urlOf("127.0.0.1", 8169))
			mustGet(t, nil, hostNS, urlOf("127.0.0.1", 8168)) // still served on loopback
		})
	}
}
