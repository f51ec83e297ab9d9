package e2e

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/doctor/report"
	"github.com/tether-net/tether/internal/testutil"
)

// doctorHost is a test host (namespace prefix t20d) with an outside that
// answers DNS, and a daemon using it as its upstream: a host on which
// nothing is broken.
func doctorHost(t *testing.T) (string, *testutil.Daemon) {
	t.Helper()
	return doctorHostMode(t, testutil.StartNsenter)
}

// doctorHostMode is doctorHost with the daemon started as mode says (its
// reads of /proc/sys, netlink and nftables must see the host namespace
// under every launcher).
func doctorHostMode(t *testing.T, mode testutil.StartMode) (string, *testutil.Daemon) {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "t20d")
	out := outside(t, ns)
	serveFakeDNS(t, out, fakeUpstream)
	d := testutil.NewDaemon(t, ns, "--dns", fakeUpstream)
	d.Mode = mode
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return ns, d
}

// doctor runs `tether doctor --format json [args]` and returns the report
// and the exit status.
func doctor(t *testing.T, d *testutil.Daemon, args ...string) (report.Report, int) {
	t.Helper()
	out, err := d.Tether(append([]string{"doctor", "--format", "json"}, args...)...)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("tether doctor: %v", err)
	}
	var rep report.Report
	if code < 2 {
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("decode the doctor's report: %v\n%s", err, out)
		}
	}
	return rep, code
}

// finding returns the findings of check whose text mentions every want.
func finding(rep report.Report, check string, want ...string) *report.Finding {
	for _, f := range rep.Findings {
		text := f.Subject + " " + f.What + " " + f.Why + " " + f.Fix
		ok := f.Check == check
		for _, w := range want {
			ok = ok && strings.Contains(text, w)
		}
		if ok {
			return &f
		}
	}
	return nil
}

// expectFinding fails unless the doctor exits 1 with an error finding of
// check that mentions want (in what, why or fix) and has a fix.
func expectFinding(t *testing.T, d *testutil.Daemon, check string, want ...string) report.Report {
	t.Helper()
	rep, code := doctor(t, d)
	f := finding(rep, check, want...)
	if code != 1 || !rep.Broken || f == nil || f.Severity != report.Error || f.Fix == "" {
		t.Fatalf("doctor exit %d, want 1 with an error finding of %s mentioning %q and a fix; findings:\n%s", code, check, want, dump(rep.Findings))
	}
	t.Logf("%s: %s\n  fix: %s", check, f.What, f.Fix)
	return rep
}

func expectHealthy(t *testing.T, d *testutil.Daemon, args ...string) report.Report {
	t.Helper()
	rep, code := doctor(t, d, args...)
	if code != 0 || rep.Broken {
		t.Fatalf("doctor %v exit %d broken %v, want 0 on a healthy host; findings:\n%s", args, code, rep.Broken, dump(rep.Findings))
	}
	return rep
}

// pingLost pings addr once from sandbox from and reports whether ping ran
// and its packet was lost or had no route (an exec that fails for another
// reason is not a loss).
func pingLost(d *testutil.Daemon, from, addr string) (string, bool) {
	out, err := d.Tether("exec", from, "--", "ping", "-c1", "-W2", addr)
	return out, err != nil && (strings.Contains(out, "100% packet loss") || strings.Contains(out, "Network is unreachable"))
}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// A healthy host: nothing broken, exit 0, in table and JSON form; a pair on
// one bridge has a path that does not break. Under every start mode, and
// with ip_forward off seen under each (the daemon reads its own namespace's
// sysctls whatever launched it).
func TestDoctorHealthy(t *testing.T) { forModes(t, doctorHealthy) }

func doctorHealthy(t *testing.T, mode testutil.StartMode) {
	ns, d := doctorHostMode(t, mode)
	d.MustTether("network", "create", "--subnet", "10.70.0.0/24", "app")
	d.MustTether("sandbox", "create", "--name", "web", "--network", "app")
	d.MustTether("sandbox", "create", "--name", "db", "--network", "app")
	rep := expectHealthy(t, d)
	for _, c := range rep.Checks {
		if c.Severity == report.Error || c.Severity == report.Warning {
			t.Errorf("check %+v on a healthy host", c)
		}
	}
	if out := d.MustTether("doctor"); !strings.Contains(out, "nothing broken") || !strings.Contains(out, "ip_forward") {
		t.Errorf("table output:\n%s", out)
	}
	rep = expectHealthy(t, d, "web", "db")
	if p := rep.Pair; p == nil || p.Path != report.PathSameBridge || p.BreaksAt != "" || p.Network != "app" {
		t.Fatalf("pair %+v, want a same-bridge path on app that does not break", p)
	}
	// by address: the doctor is about the datapath, not names
	if out, err := d.Tether("exec", "web", "--", "ping", "-c1", "-W2", ip(t, d, "db", "app")); err != nil {
		t.Errorf("web does not reach db, yet the doctor finds nothing: %v\n%s", err, out)
	}
	testutil.Must(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	expectFinding(t, d, "ip_forward", "IPv4 forwarding is off")
}

// Each host check provoked in the daemon's namespace is reported with its
// fix, and once undone, the host is healthy again.
func TestDoctorHostChecks(t *testing.T) {
	ns, d := doctorHost(t)
	d.MustTether("network", "create", "--subnet", "10.71.0.0/24", "app")
	d.MustTether("sandbox", "create", "--name", "web", "--network", "app")
	expectHealthy(t, d)
	nft := func(t *testing.T, args ...string) {
		testutil.Must(t, "ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
	}
	ipn := func(t *testing.T, args ...string) { testutil.Must(t, "ip", append([]string{"-n", ns}, args...)...) }
	sysctl := func(t *testing.T, kv string) { testutil.Must(t, "ip", "netns", "exec", ns, "sysctl", "-qw", kv) }

	t.Run("forward policy drop in another table", func(t *testing.T) {
		nft(t, "add table inet t20d")
		nft(t, "add chain inet t20d t20dfw { type filter hook forward priority 0; policy drop; }")
		expectFinding(t, d, "forward_chains", "table inet t20d chain t20dfw", "policy drop", "forward-accept-other-tables", `nft insert rule inet t20d t20dfw iifname "`)
		nft(t, "delete table inet t20d")
		expectHealthy(t, d)
	})
	t.Run("rule dropping a subnet in another table", func(t *testing.T) {
		nft(t, "add table ip t20dx")
		nft(t, "add chain ip t20dx t20dfw { type filter hook forward priority 10; policy accept; }")
		nft(t, "add rule ip t20dx t20dfw ip saddr 10.71.0.0/24 drop")
		expectFinding(t, d, "forward_chains", "table ip t20dx chain t20dfw", "saddr 10.71.0.0/24 drop", "nft delete rule ip t20dx t20dfw handle")
		nft(t, "delete table ip t20dx")
		expectHealthy(t, d)
	})
	t.Run("bridge family forward policy drop", func(t *testing.T) {
		d.MustTether("sandbox", "create", "--name", "db", "--network", "app")
		nft(t, "add table bridge t20db")
		nft(t, "add chain bridge t20db t20dfw { type filter hook forward priority 0; policy drop; }")
		expectFinding(t, d, "forward_chains", "table bridge t20db chain t20dfw", "cannot reach each other", "meta ibrname")
		rep, _ := doctor(t, d, "web", "db")
		if p := rep.Pair; p == nil || p.BreaksAt != "table bridge t20db chain t20dfw" {
			t.Errorf("pair web db: %s", dump(p))
		}
		if out, lost := pingLost(d, "web", ip(t, d, "db", "app")); !lost {
			t.Errorf("web reaches db through a bridge chain that drops (the doctor says it breaks):\n%s", out)
		}
		nft(t, "delete table bridge t20db")
		expectHealthy(t, d, "web", "db")
	})
	t.Run("ip_forward off", func(t *testing.T) {
		sysctl(t, "net.ipv4.ip_forward=0")
		expectFinding(t, d, "ip_forward", "IPv4 forwarding is off", "sysctl -w net.ipv4.ip_forward=1", "app")
		sysctl(t, "net.ipv4.ip_forward=1")
		expectHealthy(t, d)
	})
	t.Run("route added after the network", func(t *testing.T) {
		ipn(t, "link", "add", "t20dva", "type", "veth", "peer", "name", "t20dvb")
		ipn(t, "link", "set", "t20dva", "up")
		ipn(t, "link", "set", "t20dvb", "up")
		ipn(t, "route", "add", "10.71.0.128/25", "dev", "t20dva")
		expectFinding(t, d, "route_overlap", "10.71.0.128/25", "t20dva", "network app", "ip route del 10.71.0.128/25")
		ipn(t, "link", "del", "t20dva")
		expectHealthy(t, d)
	})
}

// Pairs broken by an internal network and by isolation between networks:
// the path is routed between bridges and breaks at the rule that drops it,
// as real traffic shows. Bad input changes nothing and names the field.
func TestDoctorPairs(t *testing.T) {
	_, d := doctorHost(t)
	d.MustTether("network", "create", "--subnet", "10.72.0.0/24", "app")
	d.MustTether("network", "create", "--subnet", "10.73.0.0/24", "--internal", "back")
	d.MustTether("network", "create", "--subnet", "10.74.0.0/24", "other")
	for sb, net := range map[string]string{"web": "app", "cache": "back", "api": "other"} {
		d.MustTether("sandbox", "create", "--name", sb, "--network", net)
	}
	for _, tc := range []struct{ a, b, breaks string }{
		{"web", "cache", `"nothing enters an internal network"`},
		{"cache", "web", "cache's routes"},
		{"web", "api", `"no traffic between networks"`},
	} {
		rep, code := doctor(t, d, tc.a, tc.b)
		p := rep.Pair
		if code != 1 || p == nil || p.Path != report.PathRouted || !strings.Contains(p.BreaksAt, tc.breaks) || finding(rep, "path", tc.breaks) == nil {
			t.Errorf("doctor %s %s: exit %d pair %s, want exit 1, routed, breaking at %s", tc.a, tc.b, code, dump(p), tc.breaks)
		}
		if out, lost := pingLost(d, tc.a, ip(t, d, tc.b, map[string]string{"web": "app", "cache": "back", "api": "other"}[tc.b])); !lost {
			t.Errorf("%s reaches %s (the doctor says the path breaks):\n%s", tc.a, tc.b, out)
		}
	}

	// the sandboxes as they stand (as JSON: the table's relative "created"
	// time may tick between the two listings)
	ls := func() string { return d.MustTether("sandbox", "ls", "--format", "json") }
	before := ls()
	if out, err := d.Tether("doctor", "web", "ghost"); err == nil || !strings.Contains(out, "ghost") {
		t.Errorf("doctor web ghost: %v %q, want an error naming ghost", err, out)
	} else if code := err.(*exec.ExitError).ExitCode(); code != 2 {
		t.Errorf("doctor web ghost: exit %d, want 2", code)
	}
	api := newAPI(t, d)
	for path, want := range map[string]struct {
		status int
		text   string
	}{
		"/tether/v1/doctor?a=web&b=ghost": {404, "ghost"},
		"/tether/v1/doctor?a=web":         {400, `\"b\"`},
		"/tether/v1/doctor?a=web&b=api&x": {400, `\"x\"`},
	} {
		if status, body := api.call("GET", path, nil); status != want.status || !strings.Contains(body, want.text) {
			t.Errorf("GET %s: %d %s, want %d naming %s", path, status, body, want.status, want.text)
		}
	}
	if after := ls(); after != before {
		t.Errorf("bad doctor requests changed the sandboxes:\n%s\n%s", before, after)
	}
}

// Overlay (two hosts over etcd): a deleted FDB entry of a remote peer is
// reported on the host that lost it (and breaks the pair's path there);
// a stopped store is reported as unreachable.
func TestDoctorOverlay(t *testing.T) {
	m := newMultiHost(t, "etcd", 2)
	h1, h2 := m.d[0], m.d[1]
	const vx = "tvx-4520"
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.75.0.0/24", "-o", "com.docker.network.driver.overlay.vxlanid_list=4520", "ov")
	waitFor(t, "network on host 2", 10*time.Second, func() bool { return netID(h2, "ov") != "" })
	h1.MustTether("sandbox", "create", "--name", "a", "--network", "ov")
	h2.MustTether("sandbox", "create", "--name", "b", "--network", "ov")
	waitFor(t, "a reaches b", 10*time.Second, func() bool { return ping(h1, "a", "b") })

	peerChecks := func(rep report.Report) []report.Finding {
		var out []report.Finding
		for _, f := range rep.Findings {
			if f.Check == "overlay_peers" || f.Check == "cluster_store" || f.Check == "overlay_mtu" || f.Check == "overlay_bypass" {
				out = append(out, f)
			}
		}
		return out
	}
	if rep, _ := doctor(t, h1); len(peerChecks(rep)) != 0 {
		t.Fatalf("healthy overlay: %s", dump(peerChecks(rep)))
	}
	if rep, _ := doctor(t, h1, "a", "b"); rep.Pair == nil || rep.Pair.Path != report.PathOverlayX || rep.Pair.BreaksAt != "" {
		t.Fatalf("pair a b on a healthy overlay: %s", dump(rep.Pair))
	}

	bMAC, vtep := sandbox(t, h2, "b").Networks["ov"].MacAddress, m.hosts[1].Addr
	testutil.Must(t, "bridge", "-n", m.hosts[0].NS, "fdb", "del", bMAC, "dev", vx, "dst", vtep, "self")
	expectFinding(t, h1, "overlay_peers", "peer b", "FDB entry", "bridge fdb replace "+bMAC+" dev "+vx+" dst "+vtep)
	rep, _ := doctor(t, h1, "a", "b")
	if p := rep.Pair; p == nil || p.Path != report.PathOverlayX || !strings.HasPrefix(p.BreaksAt, "VXLAN device "+vx) {
		t.Errorf("pair a b without b's FDB entry: %s", dump(p))
	}
	if out, lost := pingLost(h1, "a", ip(t, h2, "b", "ov")); !lost {
		t.Errorf("a reaches b without b's FDB entry (the doctor says the path breaks):\n%s", out)
	}
	// the fix it prints works
	testutil.Must(t, "bridge", "-n", m.hosts[0].NS, "fdb", "replace", bMAC, "dev", vx, "dst", vtep, "self", "permanent")
	if rep, _ := doctor(t, h1); len(peerChecks(rep)) != 0 {
		t.Errorf("after the fix: %s", dump(peerChecks(rep)))
	}
	if !ping(h1, "a", ip(t, h2, "b", "ov")) {
		t.Error("after the fix, a does not reach b")
	}

	m.store.Stop()
	expectFinding(t, h1, "cluster_store", "does not answer", "etcdctl")
}
