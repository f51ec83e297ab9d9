package attach

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/testutil"
)

// Options of one round.
type Options struct {
	N      int  // sandboxes attached in a row
	Verify bool // check addresses, traffic and cleanup (smoke test); not timed
	// FirstProc (Tether only): each sandbox gets its first process, a
	// detached `true`, right after it is created (what `tether run` does).
	FirstProc bool
	// Publish (Tether, CNI): sandbox i publishes host port BasePort+i to its
	// port 80/tcp.
	Publish bool
	// Clients: attaches (and removals) are issued by this many goroutines at
	// once, each taking the next sandbox; 0 or 1: one after the other.
	Clients int
}

// PublishSpec is the `-p` value of sandbox i under Options.Publish.
func PublishSpec(i int) string { return fmt.Sprintf("%d:80", BasePort+i) }

// RunTether starts a daemon in a fresh host namespace, creates N sandboxes on
// the "bench" network (with o.FirstProc, each followed by its first exec;
// with o.Publish, each publishing one port; with o.Clients, that many at
// once), reads the daemon's RSS, then removes them in the same order.
func RunTether(tb testing.TB, o Options) Run {
	tb.Helper()
	t := StartTether(tb)
	idle, err := RSS(t.PID)
	if err != nil {
		tb.Fatal(err)
	}
	names := make([]string, o.N)
	sbs := make([]api.Sandbox, o.N)
	var execs, firsts []time.Duration
	if o.FirstProc {
		execs, firsts = make([]time.Duration, o.N), make([]time.Duration, o.N)
	}
	for i := range names {
		names[i] = fmt.Sprintf("s%d", i)
	}
	attach, wall, err := Parallel(o.N, o.Clients, func(i int) (time.Duration, error) {
		var publish []string
		if o.Publish {
			publish = []string{PublishSpec(i)}
		}
		t0 := time.Now()
		sb, took, err := t.Create(names[i], publish...)
		if err != nil {
			return took, err
		}
		sbs[i] = sb
		if o.FirstProc {
			pid, took, err := t.Exec(names[i], "true")
			if err != nil || pid <= 0 {
				return took, fmt.Errorf("first exec in %s: pid %d, %v", names[i], pid, err)
			}
			execs[i], firsts[i] = took, time.Since(t0)
		}
		return took, nil
	})
	if err != nil {
		tb.Fatalf("%v\ndaemon log:\n%s", err, t.D.Log())
	}
	rss, err := RSS(t.PID)
	if err != nil {
		tb.Fatal(err)
	}
	if o.Verify {
		verifyTetherRow(tb, t, o, sbs)
	}
	w := watchLinks(tb, "/run/netns/"+t.NS)
	links := make([][]int, o.N)
	for i, sb := range sbs {
		if links[i], err = TetherHostLinks(w, sb); err != nil {
			tb.Fatal(err)
		}
	}
	remove, rwall, gone, gwall, err := RemoveRow(o.N, o.Clients, w, links, GoneTimeout,
		func(i int) (time.Duration, error) { return t.Remove(names[i]) })
	if err != nil {
		tb.Fatalf("%v\ndaemon log:\n%s", err, t.D.Log())
	}
	if o.Verify {
		verifyTetherClean(tb, t, sbs)
	}
	r := NewRun("tether", attach, remove, wall)
	r.Publish, r.Clients, r.RemoveWallMS = o.Publish, o.Clients, ms(rwall)
	r.SetLinksGone(gone, gwall)
	r.RSSIdleKiB, r.RSSAttachedKiB = idle, rss
	if o.FirstProc {
		r.System = "tether-run"
		r.Exec, r.FirstProc, r.ExecMS, r.FirstProcMS = Summarize(execs), Summarize(firsts), millis(execs), millis(firsts)
	}
	return r
}

// verifyTetherRow checks every sandbox's address (fresh, in the subnet, on
// its eth0), the first process's namespace files, traffic from the first
// sandbox to the second, and (o.Publish) the first and last published ports
// from an outside namespace.
func verifyTetherRow(tb testing.TB, t *Tether, o Options, sbs []api.Sandbox) {
	tb.Helper()
	seen := map[netip.Addr]bool{}
	for _, sb := range sbs {
		verifyTetherSandbox(tb, sb, seen)
		if o.FirstProc {
			verifyFirstProc(tb, t, sb)
		}
	}
	if got := countLinks(tb, t.NS, "vth"); got != o.N {
		tb.Errorf("host namespace has %d vth links, want %d", got, o.N)
	}
	if len(sbs) > 1 {
		if err := Ping(sbs[0].NetNS, sbs[1].Networks["bench"].IPAddress); err != nil {
			tb.Error(err)
		}
	}
	if o.Publish {
		out := testutil.Outside(tb, t.NS)
		for _, i := range []int{0, len(sbs) - 1} {
			if err := CheckPublished(out, sbs[i].NetNS, sbs[i].Name, BasePort+i); err != nil {
				tb.Error(err)
			}
		}
	}
}

// verifyFirstProc checks what the first exec gave the sandbox: its hosts,
// resolv.conf and hostname files (bind-mounted into the new mount namespace
// of its first process), and no namespace file but the network one (the
// mount and UTS namespaces live in the sandbox's processes).
func verifyFirstProc(tb testing.TB, t *Tether, sb api.Sandbox) {
	tb.Helper()
	for _, f := range []string{"hosts", "resolv.conf", "hostname"} {
		if _, err := os.Stat(filepath.Join(t.ExecRoot, "sandboxes", sb.ID, f)); err != nil {
			tb.Errorf("sandbox %s after its first exec: %v", sb.Name, err)
		}
	}
	for _, m := range testutil.Mounted(filepath.Join(t.ExecRoot, "ns")) {
		if base := filepath.Base(m); strings.HasPrefix(base, sb.ID) && base != sb.ID && filepath.Ext(base) != ".net" {
			tb.Errorf("sandbox %s after its first exec: namespace file %s mounted; only the network namespace is a file", sb.Name, m)
		}
	}
}

func verifyTetherSandbox(tb testing.TB, sb api.Sandbox, seen map[netip.Addr]bool) {
	tb.Helper()
	ep := sb.Networks["bench"]
	subnet := netip.MustParsePrefix("10.123.0.0/16")
	if ep == nil || !subnet.Contains(ep.IPAddress) || ep.IPPrefixLen != 16 || seen[ep.IPAddress] {
		tb.Fatalf("sandbox %s: endpoint on bench = %+v, want a fresh address in %s", sb.Name, ep, subnet)
	}
	seen[ep.IPAddress] = true
	out, err := nsenterIP(sb.NetNS, "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(out, ep.IPAddress.String()+"/16") {
		tb.Fatalf("sandbox %s: eth0 in %s: %v %q, want %s/16", sb.Name, sb.NetNS, err, out, ep.IPAddress)
	}
}

func verifyTetherClean(tb testing.TB, t *Tether, sbs []api.Sandbox) {
	tb.Helper()
	var addrs []netip.Addr
	for _, sb := range sbs {
		addrs = append(addrs, sb.Networks["bench"].IPAddress)
	}
	if hits, err := RulesMentioning(t.NS, addrs); err != nil || len(hits) > 0 {
		tb.Errorf("after removal: nftables still names sandbox addresses (%v): %q", err, hits)
	}
	sbs, err := t.List()
	if err != nil || len(sbs) != 0 {
		tb.Errorf("after removal: sandboxes %v (%v), want none", sbs, err)
	}
	// The kernel frees a removed sandbox's namespace, and its veth pairs
	// with it, in the background: allow it a few seconds.
	got := countLinks(tb, t.NS, "vth")
	for deadline := time.Now().Add(5 * time.Second); got != 0 && time.Now().Before(deadline); got = countLinks(tb, t.NS, "vth") {
		time.Sleep(50 * time.Millisecond)
	}
	if got != 0 {
		tb.Errorf("after removal: %d vth links left in the host namespace", got)
	}
	nsDir := filepath.Join(t.ExecRoot, "ns")
	for _, m := range testutil.Mounted(nsDir) {
		if m != nsDir && filepath.Base(m) != "host.net" {
			tb.Errorf("after removal: namespace file still mounted: %s", m)
		}
	}
}

// RunFloor prepares the floor in a fresh host namespace, attaches N sandboxes
// (with o.Clients, that many at once), then removes them in the same order.
func RunFloor(tb testing.TB, o Options) Run {
	tb.Helper()
	ns := testutil.NetNS(tb, "tth-floor")
	dir := filepath.Join(NSParent(tb), "ns")
	f, err := NewFloor("/run/netns/"+ns, dir)
	if err != nil {
		tb.Fatal(err)
	}
	sbs := make([]*FloorSandbox, o.N)
	removed, closed := make([]bool, o.N), false
	tb.Cleanup(func() { // after a failure: undo what is left
		for i, sb := range sbs {
			if sb != nil && !removed[i] {
				_ = f.Remove(sb)
			}
		}
		if !closed {
			_ = f.Close()
		}
	})
	steps := make([][]time.Duration, len(FloorSteps))
	for k := range steps {
		steps[k] = make([]time.Duration, o.N)
	}
	attach, wall, err := Parallel(o.N, o.Clients, func(i int) (time.Duration, error) {
		t0 := time.Now()
		sb, st, err := f.Attach(i)
		took := time.Since(t0)
		sbs[i] = sb
		for k, d := range st {
			steps[k][i] = d
		}
		return took, err
	})
	if err != nil {
		tb.Fatal(err)
	}
	if o.Verify {
		verifyFloorRow(tb, ns, sbs)
	}
	w := watchLinks(tb, "/run/netns/"+ns)
	links := make([][]int, o.N)
	for i, sb := range sbs {
		links[i] = []int{sb.peer.Attrs().Index}
	}
	remove, rwall, gone, gwall, err := RemoveRow(o.N, o.Clients, w, links, GoneTimeout, func(i int) (time.Duration, error) {
		t0 := time.Now()
		err := f.Remove(sbs[i])
		removed[i] = true
		return time.Since(t0), err
	})
	if err != nil {
		tb.Fatal(err)
	}
	if o.Verify {
		links, err := f.HostLinks()
		if err != nil || !slices.Equal(sortedCopy(links), []string{"fbr0", "lo"}) {
			tb.Errorf("floor host namespace after removal: links %v (%v), want fbr0 and lo", links, err)
		}
		if m := testutil.Mounted(dir); len(m) != 1 {
			tb.Errorf("floor: mounts under %s after removal: %v, want the directory only", dir, m)
		}
	}
	closed = true
	if err := f.Close(); err != nil {
		tb.Error(err)
	}
	if m := testutil.Mounted(dir); len(m) != 0 {
		tb.Errorf("floor: mounts left under %s: %v", dir, m)
	}
	r := NewRun("floor", attach, remove, wall)
	r.Clients, r.RemoveWallMS = o.Clients, ms(rwall)
	r.SetLinksGone(gone, gwall)
	samples := map[string][]time.Duration{}
	for k, name := range FloorSteps {
		samples[name] = steps[k]
	}
	r.SetSteps(samples)
	return r
}

// verifyFloorRow checks each floor sandbox's address, IPv6 off on both ends
// of the first veth, and traffic from the first sandbox to the second.
func verifyFloorRow(tb testing.TB, ns string, sbs []*FloorSandbox) {
	tb.Helper()
	for _, sb := range sbs {
		got, err := sb.Addrs()
		if err != nil || !slices.Contains(got, sb.Addr) {
			tb.Fatalf("floor sandbox %s: addresses %v (%v), want %s", sb.Path, got, err, sb.Addr)
		}
	}
	// IPv6 is off on both ends, as Tether has it.
	host, err1 := testutil.InNS(ns, "cat", "/proc/sys/net/ipv6/conf/fv0/disable_ipv6")
	inside, err2 := runCmd("nsenter", "--net="+sbs[0].Path, "--", "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6")
	if strings.TrimSpace(host) != "1" || strings.TrimSpace(inside) != "1" {
		tb.Errorf("floor: disable_ipv6 host end %q (%v), sandbox end %q (%v), want 1 and 1", host, err1, inside, err2)
	}
	if len(sbs) > 1 {
		if err := Ping(sbs[0].Path, sbs[1].Addr.Addr()); err != nil {
			tb.Error(err)
		}
	}
}

// NSParent returns a fresh directory for a row's namespace files: under the
// test's temporary directory, or with BENCH_EXEC_ROOT=DIR under DIR, so that
// every system's namespace files live on the same filesystem as Tether's.
func NSParent(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("BENCH_EXEC_ROOT"); p != "" {
		return execRoot(tb, p)
	}
	return tb.TempDir()
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// countLinks counts the links of namespace ns whose name starts with prefix.
func countLinks(tb testing.TB, ns, prefix string) int {
	tb.Helper()
	out := testutil.Must(tb, "ip", "-n", ns, "-o", "link", "show")
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], prefix) {
			n++
		}
	}
	return n
}

// nsenterIP runs ip inside the network namespace file path.
func nsenterIP(path string, args ...string) (string, error) {
	return runCmd("nsenter", append([]string{"--net=" + path, "--", "ip"}, args...)...)
}

// GoneTimeout bounds the wait for a row's links to be deleted after its
// last removal answered.
const GoneTimeout = 30 * time.Second

// watchLinks subscribes to link events in the namespace file nsPath for the
// rest of the test.
func watchLinks(tb testing.TB, nsPath string) *LinkWatch {
	tb.Helper()
	w, err := WatchLinks(nsPath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(w.Close)
	return w
}

// WatchLinksT is WatchLinks for the rest of the test (closed by its cleanup).
func WatchLinksT(tb testing.TB, nsPath string) *LinkWatch {
	tb.Helper()
	return watchLinks(tb, nsPath)
}

// TetherHostLinks returns the host-side link indexes of a Tether sandbox's
// endpoints (their HostIfName, looked up in w's namespace).
func TetherHostLinks(w *LinkWatch, sb api.Sandbox) ([]int, error) {
	var out []int
	for net, ep := range sb.Networks {
		if ep.HostIfName == "" {
			return nil, fmt.Errorf("sandbox %s: endpoint on %s has no host interface name", sb.Name, net)
		}
		i, err := w.Index(ep.HostIfName)
		if err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", sb.Name, err)
		}
		out = append(out, i)
	}
	return out, nil
}
