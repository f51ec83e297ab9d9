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
	Verify bool // check addresses and cleanup (smoke test); not timed
	// FirstProc (Tether only): each sandbox gets its first process, a
	// detached `true`, right after it is created (what `tether run` does).
	FirstProc bool
}

// RunTether starts a daemon in a fresh host namespace, creates N sandboxes on
// the "bench" network one after the other (with o.FirstProc, each followed
// by its first exec), reads the daemon's RSS, then removes them in the same
// order.
func RunTether(tb testing.TB, o Options) Run {
	tb.Helper()
	t := StartTether(tb)
	idle, err := RSS(t.PID)
	if err != nil {
		tb.Fatal(err)
	}
	names := make([]string, o.N)
	attach := make([]time.Duration, o.N)
	var execs, firsts []time.Duration
	seen := map[netip.Addr]bool{}
	start := time.Now()
	for i := range o.N {
		names[i] = fmt.Sprintf("s%d", i)
		t0 := time.Now()
		sb, took, err := t.Create(names[i])
		if err != nil {
			tb.Fatalf("%v\ndaemon log:\n%s", err, t.D.Log())
		}
		attach[i] = took
		if o.FirstProc {
			pid, took, err := t.Exec(names[i], "true")
			if err != nil || pid <= 0 {
				tb.Fatalf("pid %d, %v\ndaemon log:\n%s", pid, err, t.D.Log())
			}
			execs, firsts = append(execs, took), append(firsts, time.Since(t0))
		}
		if o.Verify {
			verifyTetherSandbox(tb, sb, seen)
			if o.FirstProc {
				verifyFirstProc(tb, t, sb)
			}
		}
	}
	wall := time.Since(start)
	rss, err := RSS(t.PID)
	if err != nil {
		tb.Fatal(err)
	}
	if o.Verify {
		if got := countLinks(tb, t.NS, "vth"); got != o.N {
			tb.Errorf("host namespace has %d vth links, want %d", got, o.N)
		}
	}
	remove := make([]time.Duration, o.N)
	for i, name := range names {
		if remove[i], err = t.Remove(name); err != nil {
			tb.Fatal(err)
		}
	}
	if o.Verify {
		verifyTetherClean(tb, t)
	}
	r := newRun("tether", attach, remove, wall)
	r.RSSIdleKiB, r.RSSAttachedKiB = idle, rss
	if o.FirstProc {
		r.System = "tether-run"
		r.Exec, r.FirstProc, r.ExecMS, r.FirstProcMS = Summarize(execs), Summarize(firsts), millis(execs), millis(firsts)
	}
	return r
}

// verifyFirstProc checks that the first exec gave the sandbox its mount and
// UTS namespace files.
func verifyFirstProc(tb testing.TB, t *Tether, sb api.Sandbox) {
	tb.Helper()
	mounted := testutil.Mounted(filepath.Join(t.ExecRoot, "ns"))
	for _, kind := range []string{".mnt", ".uts"} {
		if !slices.ContainsFunc(mounted, func(m string) bool { return filepath.Base(m) == sb.ID+kind }) {
			tb.Errorf("sandbox %s after its first exec: no %s namespace file mounted", sb.Name, kind)
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

func verifyTetherClean(tb testing.TB, t *Tether) {
	tb.Helper()
	sbs, err := t.List()
	if err != nil || len(sbs) != 0 {
		tb.Errorf("after removal: sandboxes %v (%v), want none", sbs, err)
	}
	if got := countLinks(tb, t.NS, "vth"); got != 0 {
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
// one after the other, then removes them in the same order.
func RunFloor(tb testing.TB, o Options) Run {
	tb.Helper()
	ns := testutil.NetNS(tb, "tth-floor")
	parent := tb.TempDir()
	if p := os.Getenv("BENCH_EXEC_ROOT"); p != "" { // same filesystem as Tether's namespace files
		parent = execRoot(tb, p)
	}
	dir := filepath.Join(parent, "ns")
	f, err := NewFloor("/run/netns/"+ns, dir)
	if err != nil {
		tb.Fatal(err)
	}
	sbs := make([]*FloorSandbox, o.N)
	removed, closed := 0, false
	tb.Cleanup(func() { // after a failure: undo what is left
		for _, sb := range sbs[removed:] {
			if sb != nil {
				_ = f.Remove(sb)
			}
		}
		if !closed {
			_ = f.Close()
		}
	})
	attach := make([]time.Duration, o.N)
	steps := make([][]time.Duration, len(FloorSteps))
	start := time.Now()
	for i := range o.N {
		t0 := time.Now()
		sb, st, err := f.Attach(i)
		attach[i] = time.Since(t0)
		sbs[i] = sb
		if err != nil {
			tb.Fatal(err)
		}
		for k, d := range st {
			steps[k] = append(steps[k], d)
		}
	}
	wall := time.Since(start)
	if o.Verify {
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
	}
	remove := make([]time.Duration, o.N)
	for i, sb := range sbs {
		t0 := time.Now()
		err := f.Remove(sb)
		remove[i] = time.Since(t0)
		removed = i + 1
		if err != nil {
			tb.Fatal(err)
		}
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
	r := newRun("floor", attach, remove, wall)
	r.Steps, r.stepSamples = map[string]Stats{}, map[string][]time.Duration{}
	for k, name := range FloorSteps {
		r.Steps[name], r.stepSamples[name] = Summarize(steps[k]), steps[k]
	}
	return r
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
