package e2e

// Point-to-point links (docs/links.md) through the real binary: traffic
// between sandboxes that have no other interface, a triangle routed by
// host routes, names over a link, a restart under every start mode with a
// ping every 10 ms that must lose nothing, removal with a sandbox, and bad
// input.

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/testutil"
)

func inspectLink(t *testing.T, d *testutil.Daemon, name string) api.Link {
	t.Helper()
	var l api.Link
	d.InspectJSON(&l, "link", "inspect", name)
	return l
}

func TestLinkTrafficTriangleAndNames(t *testing.T) {
	_, d := host(t)
	for _, n := range []string{"a", "b", "c"} {
		runDetached(t, d, n, "--network", "none", "--", "sleep", "600")
	}
	d.MustTether("link", "create", "--dns-name", "a", "b")
	d.MustTether("link", "create", "--name", "bc", "--ip", "192.0.2.1", "--peer-ip", "192.0.2.2", "--mtu", "9000", "b", "c")
	d.MustTether("link", "create", "c", "a")
	ab, bc, ca := inspectLink(t, d, "a-b"), inspectLink(t, d, "bc"), inspectLink(t, d, "c-a")
	if ab.A.SandboxName != "a" || ab.B.SandboxName != "b" || ab.A.IfName != "p2p0" || ab.A.Address.Bits() != 32 || !ab.DNSName {
		t.Errorf("link a-b: %+v", ab)
	}
	if bc.A.Address.String() != "192.0.2.1/32" || bc.B.Address.String() != "192.0.2.2/32" || bc.MTU != 9000 || bc.A.IfName != "p2p1" {
		t.Errorf("link bc: %+v", bc)
	}
	// a has only lo and its two link ends: no network at all.
	links := d.MustTether("exec", "a", "--", "ip", "-o", "link", "show")
	if strings.Count(links, "\n") != 3 || !strings.Contains(links, "p2p0") || !strings.Contains(links, "p2p1") {
		t.Errorf("a's interfaces:\n%s", links)
	}
	if out := d.MustTether("exec", "c", "--", "ip", "-o", "link", "show", "p2p0"); !strings.Contains(out, "mtu 9000") {
		t.Errorf("c's end of bc: %s", out)
	}
	// Each pair, both ways, over its own link (host routes, no gateway).
	for _, p := range []struct {
		from, to string
	}{{"a", ab.B.Address.Addr().String()}, {"b", ab.A.Address.Addr().String()}, {"b", "192.0.2.2"},
		{"c", "192.0.2.1"}, {"c", ca.B.Address.Addr().String()}, {"a", ca.A.Address.Addr().String()}} {
		if !ping(d, p.from, p.to) {
			t.Errorf("%s cannot reach %s over a link", p.from, p.to)
		}
	}
	route := d.MustTether("exec", "a", "--", "ip", "route")
	if !strings.Contains(route, ab.B.Address.Addr().String()+" dev p2p0") || strings.Contains(route, "default") {
		t.Errorf("a's routes:\n%s", route)
	}
	// TCP across a link.
	d.MustTether("exec", "-d", "b", "--", "python3", "-m", "http.server", "--bind", ab.B.Address.Addr().String(), "80")
	if err := httpGet(d, "a", ab.B.Address.Addr().String(), 25); err != nil {
		t.Errorf("TCP over the link: %v", err)
	}
	// Names over a --dns-name link; none over the others.
	if !ping(d, "a", "b") {
		t.Errorf("a cannot reach b by name over the --dns-name link")
	}
	if out, err := d.Tether("exec", "c", "--", "getent", "hosts", "b"); err == nil {
		t.Errorf("c resolves b over a link without --dns-name: %s", out)
	}
	if got := d.MustTether("link", "ls", "--format", "{{.Name}}"); got != "a-b\nbc\nc-a\n" {
		t.Errorf("link ls: %q", got)
	}

	// Bad input: named, nothing changes.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"link", "create", "a", "a"}, "two different sandboxes"},
		{[]string{"link", "create", "a", "nosuch"}, "nosuch"},
		{[]string{"link", "create", "--ip", "10.9.9.1", "a", "b"}, "ip/peer-ip"},
		{[]string{"link", "create", "--ip", "fd00::1", "--peer-ip", "fd00::2", "a", "b"}, "not an IPv4"},
		{[]string{"link", "create", "--ip", "192.0.2.1", "--peer-ip", "192.0.2.9", "a", "b"}, "already used"},
		{[]string{"link", "create", "--mtu", "10", "a", "b"}, "mtu"},
		{[]string{"link", "create", "--name", "bc", "a", "b"}, "already in use"},
		{[]string{"link", "rm", "nosuch"}, "not found"},
	} {
		if out, err := d.Tether(c.args...); err == nil || !strings.Contains(out, c.want) {
			t.Errorf("tether %v: %v %q, want an error containing %q", c.args, err, out, c.want)
		}
	}
	if got := d.MustTether("link", "ls", "-q"); strings.Count(got, "\n") != 3 {
		t.Errorf("refused creates changed the links:\n%s", got)
	}

	// rm of a link; rm of a sandbox takes its links.
	d.MustTether("link", "rm", "c-a")
	if ping(d, "c", ca.B.Address.Addr().String()) {
		t.Errorf("c still reaches a after link rm")
	}
	reapProcesses(t, d, "b")
	d.MustTether("rm", "-f", "b")
	if got := d.MustTether("link", "ls", "-q"); strings.TrimSpace(got) != "" {
		t.Errorf("links of the removed sandbox b remain:\n%s", got)
	}
	if out := d.MustTether("exec", "a", "--", "ip", "-o", "link", "show"); strings.Contains(out, "p2p") {
		t.Errorf("a still has a link end after b was removed:\n%s", out)
	}
}

// A link survives a restart of the daemon, in every start mode, with a
// ping every 10 ms across it losing nothing.
func TestLinkSurvivesRestart(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		_, d := hostMode(t, mode)
		runDetached(t, d, "a", "--network", "none", "--", "sleep", "600")
		runDetached(t, d, "b", "--network", "none", "--", "sleep", "600")
		d.MustTether("link", "create", "--dns-name", "a", "b")
		l := inspectLink(t, d, "a-b")
		peer := l.B.Address.Addr().String()
		// The ping runs in a's namespace from outside the daemon, so the
		// daemon's stop does not touch it.
		ns := procNetNS(t, d, "a")
		pinger := exec.Command("nsenter", "--net="+ns, "ping", "-n", "-i", "0.01", "-w", "6", peer)
		var out strings.Builder
		pinger.Stdout, pinger.Stderr = &out, &out
		if err := pinger.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- pinger.Wait() }()
		t.Cleanup(func() { _ = pinger.Process.Kill() })
		time.Sleep(500 * time.Millisecond)
		restart(t, d)
		if err := <-done; err != nil && !strings.Contains(out.String(), "packets transmitted") {
			t.Fatalf("ping across the restart: %v\n%s", err, out.String())
		}
		sent, recv := pingCounts(t, out.String())
		if sent < 100 || recv != sent {
			t.Errorf("ping every 10 ms across a restart (%s): %d sent, %d received", mode, sent, recv)
		}
		if got := inspectLink(t, d, "a-b"); got.ID != l.ID || got.A.Address != l.A.Address {
			t.Errorf("the link changed across the restart: %+v -> %+v", l, got)
		}
		if !ping(d, "a", "b") {
			t.Errorf("a cannot reach b by name after the restart")
		}
	})
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

func pingCounts(t *testing.T, out string) (sent, recv int) {
	t.Helper()
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no ping summary in:\n%s", out)
	}
	sent, _ = strconv.Atoi(m[1])
	recv, _ = strconv.Atoi(m[2])
	return sent, recv
}
