package e2e

// Issue 13, attack 4 and "Coexistence": the firewall table is flushed,
// deleted or replaced by another tool's reload (CVE-2025-54388,
// CVE-2025-54410: Docker's published ports and isolation were silently gone
// after a firewalld reload), and another table's forward chain drops by
// policy (Docker's iptables, firewalld, ufw). Everything is checked with
// real traffic between namespaces the test creates.

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// restoreBound is how long the test waits for the table to come back: a
// generous bound, not the figure (bench/firewall measures that).
const restoreBound = 10 * time.Second

// nftIn runs nft in namespace ns and fails the test when it fails.
func nftIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := testutil.InNS(ns, "nft", args...)
	if err != nil {
		t.Fatalf("nft %s in %s: %v\n%s", strings.Join(args, " "), ns, err, out)
	}
	return out
}

// nftScript feeds script to `nft -f -` in namespace ns (one transaction).
func nftScript(t *testing.T, ns, script string) {
	t.Helper()
	testutil.Must(t, "sh", "-c", "ip netns exec "+ns+" nft -f - <<'EOF'\n"+script+"\nEOF")
}

// tableWords is `nft list table ip tether` as a sorted list of words: equal
// for two listings with the same sets, elements, chains and rules whatever
// order the kernel lists elements in. "" words when the table is missing.
func tableWords(ns string) []string {
	out, err := testutil.InNS(ns, "nft", "list", "table", "ip", "tether")
	if err != nil {
		return nil
	}
	w := strings.Fields(strings.NewReplacer(",", " ", "{", " ", "}", " ").Replace(out))
	slices.Sort(w)
	return w
}

// waitTable waits (bounded) until table ip tether lists as want; it returns
// how long that took and whether it happened.
func waitTable(ns string, want []string) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < restoreBound {
		if slices.Equal(tableWords(ns), want) {
			return time.Since(start), true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start), false
}

// flushWorld is a host with three networks and the traffic that shows
// every wall of the firewall.
type flushWorld struct {
	ns, out string
	d       *testutil.Daemon
	u2, ui  string // servers on n2 and on the internal network
}

func newFlushWorld(t *testing.T) *flushWorld {
	// userland-proxy=false: a published port works only through the
	// kernel's DNAT (no proxy listening on the host hides a missing rule),
	// and the loopback protections are in the table too.
	ns, d := host(t, "--userland-proxy=false")
	w := &flushWorld{ns: ns, out: outside(t, ns), d: d}
	d.MustTether("network", "create", "--subnet", "10.170.0.0/24", "n1")
	d.MustTether("network", "create", "--subnet", "10.171.0.0/24", "n2")
	d.MustTether("network", "create", "--internal", "--subnet", "10.172.0.0/24", "priv")
	d.MustTether("run", "-d", "--name", "web", "--network", "n1", "-p", "8080:80", "--", "python3", "-m", "http.server", "80")
	reapProcesses(t, d, "web")
	httpServer(t, d, "s2", "n2")
	httpServer(t, d, "i1", "priv")
	d.MustTether("exec", "i1", "--", "ip", "route", "add", "default", "via", "10.172.0.1")
	w.u2, w.ui = urlOf(ip(t, d, "s2", "n2"), 80), urlOf(ip(t, d, "i1", "priv"), 80)
	return w
}

// check sends the traffic: NAT out, a published port from outside,
// isolation between n1 and n2, and the internal network's walls.
func (w *flushWorld) check(t *testing.T) {
	t.Helper()
	if got := mustGet(t, w.d, "web", outsideURL); got != uplinkAddr {
		t.Errorf("NAT: the outside saw web as %q, want %s", got, uplinkAddr)
	}
	mustGet(t, nil, w.out, urlOf(uplinkAddr, 8080))
	mustTimeOut(t, w.d, "web", w.u2)
	mustTimeOut(t, w.d, "i1", outsideURL)
	mustTimeOut(t, w.d, "web", w.ui)
}

// The table is flushed, deleted, emptied or replaced by a firewalld/ufw
// style reload: it comes back, equal to what it was, and every wall holds
// again.
func TestSecurityFirewallFlushRestores(t *testing.T) {
	w := newFlushWorld(t)
	w.check(t)
	want := tableWords(w.ns)
	if len(want) == 0 {
		t.Fatal("no table ip tether before the attack")
	}
	attacks := []struct{ name, script string }{
		{"flush-ruleset", "flush ruleset"},
		{"delete-table", "delete table ip tether"},
		{"flush-table", "flush table ip tether"},
		{"reload", "flush ruleset\ntable inet fw {\n chain input { type filter hook input priority 0; policy accept; }\n}"},
	}
	for _, a := range attacks {
		restored := true
		t.Run(a.name, func(t *testing.T) {
			nftScript(t, w.ns, a.script)
			took, ok := waitTable(w.ns, want)
			if !ok {
				t.Errorf("table ip tether not restored %v after %q; now: %q", took, a.script, strings.Join(tableWords(w.ns), " "))
			} else {
				t.Logf("restored %v after %q (poll step 20 ms)", took.Round(time.Millisecond), a.script)
			}
			restored = ok
			w.check(t)
		})
		if !restored {
			break // the next attacks need the table back
		}
	}
	if strings.Contains(w.d.Log(), "level=ERROR") {
		t.Errorf("daemon logged errors:\n%s", w.d.Log())
	}
}

// blockingFilter is the other firewall: a forward chain that drops
// everything it does not accept (what firewalld, ufw and Docker's iptables
// leave in place).
const blockingFilter = "table inet filter {\n chain forward { type filter hook forward priority 0; policy drop; }\n}"

// A table inet filter whose forward chain drops by policy: without the
// option, traffic from a sandbox to the outside fails and the daemon says
// why and how to fix it (at start and when the chain appears later); with
// forward-accept-other-tables the daemon inserts marked accept rules into
// that chain for its bridges, traffic works, isolation and internal walls
// still hold, and the rules go when the daemon stops.
// The daemon restarts with the option, under nsenter and ip netns exec.
func TestSecurityFirewallCoexistence(t *testing.T) {
	for _, mode := range []testutil.StartMode{testutil.StartNsenter, testutil.StartIPNetns} {
		t.Run(string(mode), func(t *testing.T) { coexistence(t, mode) })
	}
}

func coexistence(t *testing.T, mode testutil.StartMode) {
	ns, d := hostMode(t, mode)
	out := outside(t, ns)
	d.MustTether("network", "create", "--subnet", "10.173.0.0/24", "n")
	d.MustTether("network", "create", "--subnet", "10.174.0.0/24", "m")
	d.MustTether("network", "create", "--internal", "--subnet", "10.175.0.0/24", "priv")
	runDetached(t, d, "c", "--network", "n", "--", "sleep", "600")
	httpServer(t, d, "s", "m")
	httpServer(t, d, "i", "priv")
	d.MustTether("exec", "i", "--", "ip", "route", "add", "default", "via", "10.175.0.1")
	us, ui := urlOf(ip(t, d, "s", "m"), 80), urlOf(ip(t, d, "i", "priv"), 80)
	mustGet(t, d, "c", outsideURL)

	// The chain appears while the daemon runs: traffic breaks, the log says why.
	nftScript(t, ns, blockingFilter)
	mustTimeOut(t, d, "c", outsideURL)
	waitLog(t, d, "table inet filter", "forward-accept-other-tables")

	// With the option: the daemon accepts its own bridges' traffic there.
	d.Stop()
	d.Args = append(d.Args, "--forward-accept-other-tables")
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, d, "c", outsideURL); got != uplinkAddr {
		t.Errorf("with the option, the outside saw c as %q, want %s", got, uplinkAddr)
	}
	mustTimeOut(t, d, "c", us) // isolation holds: Tether's own drop is final
	mustTimeOut(t, d, "i", outsideURL)
	testutil.Must(t, "ip", "-n", out, "route", "add", "10.175.0.0/24", "via", uplinkAddr)
	if o, code := get(nil, out, ui); code != 28 {
		t.Errorf("the outside fetching the internal sandbox: curl exit %d (%q), want 28", code, short(o))
	}
	if chain := nftIn(t, ns, "list", "chain", "inet", "filter", "forward"); !strings.Contains(chain, `comment "tether`) {
		t.Errorf("no rule marked tether in the blocking chain:\n%s", chain)
	}
	// A network created later gets its rules too.
	d.MustTether("network", "create", "--subnet", "10.176.0.0/24", "late")
	d.MustTether("sandbox", "create", "--name", "l", "--network", "late")
	mustGet(t, d, "l", outsideURL)

	// The other firewall reloads: Tether's table and its accept rules are back.
	nftScript(t, ns, "flush ruleset\n"+blockingFilter)
	mustGet(t, d, "c", outsideURL)

	d.Stop()
	if chain := nftIn(t, ns, "list", "chain", "inet", "filter", "forward"); strings.Contains(chain, "tether") {
		t.Errorf("the daemon stopped but its rules stay in the other table:\n%s", chain)
	}
}

// waitLog waits (bounded) until the daemon's log has a line holding every
// one of words.
func waitLog(t *testing.T, d *testutil.Daemon, words ...string) {
	t.Helper()
	for deadline := time.Now().Add(restoreBound); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, line := range strings.Split(d.Log(), "\n") {
			if containsAll(line, words) {
				return
			}
		}
	}
	t.Errorf("no daemon log line with %q; log:\n%s", words, d.Log())
}

func containsAll(s string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}
