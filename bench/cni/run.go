package cni

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/testutil"
)

// Subnet is the CNI network's subnet (Tether's bench network is
// 10.123.0.0/16, the floor's 10.124.0.0/16).
var Subnet = netip.MustParsePrefix("10.125.0.0/16")

// Require returns the plugin directory, or ends the test when a plugin is
// missing: a failure under TETHER_E2E=1, a skip otherwise.
func Require(tb testing.TB) string {
	tb.Helper()
	dir := BinDir()
	if missing, _ := Installed(dir); len(missing) > 0 {
		msg := fmt.Sprintf("CNI reference plugins %v missing in %s: run bench/refs/cni.sh (as root; TETHER_BENCH_REFS moves it)", missing, dir)
		if testutil.E2E() {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return dir
}

// Start creates a fresh host namespace and opens a network in it (with
// portmap when publish); the test's cleanup closes it and deletes the
// namespace. It returns the network and the namespace's name.
func Start(tb testing.TB, publish bool) (*Net, string) {
	tb.Helper()
	bin := Require(tb)
	ns := testutil.NetNS(tb, "tth-cni")
	sfx := testutil.Suffix()
	n, err := Open(Config{HostNS: "/run/netns/" + ns, BinDir: bin, Dir: attach.NSParent(tb),
		Name: "tbench-" + sfx, Bridge: "cbr" + sfx, Subnet: Subnet, Publish: publish})
	if err != nil {
		tb.Fatal(err)
	}
	return n, ns
}

// RunCNI attaches o.N sandboxes through the CNI plugins in a fresh host
// namespace (with o.Publish, each publishing one port through portmap; with
// o.Clients, that many at once), then removes them in the same order. The
// run's steps are the plugins' exec times and libcni's own share.
func RunCNI(tb testing.TB, o attach.Options) attach.Run {
	tb.Helper()
	n, ns := Start(tb, o.Publish)
	steps := StepOrder
	if !o.Publish {
		steps = slices.DeleteFunc(slices.Clone(StepOrder), func(s string) bool { return s == StepPortmap || s == StepDelPort })
	}
	return runRow(tb, o, libcniRow{system: "cni", n: n, ns: ns, steps: steps,
		verify: func(tb testing.TB, sbs []*Sandbox) { verifyRow(tb, n, ns, o, sbs) },
		clean:  func(tb testing.TB, sbs []*Sandbox) { verifyClean(tb, n, ns, sbs) }})
}

// libcniRow is one system driven through libcni: its network, the host
// namespace its plugins run in, and the smoke test's checks.
type libcniRow struct {
	system string // the run's System; "-port" is appended under o.Publish
	n      *Net
	ns     string                       // the host namespace's name
	steps  []string                     // the steps recorded (StepOrder, TetherStepOrder)
	verify func(testing.TB, []*Sandbox) // after the attaches, under o.Verify
	clean  func(testing.TB, []*Sandbox) // after the removals, under o.Verify
}

// runRow attaches o.N sandboxes through s.n (from o.Clients goroutines),
// then removes them in the same order, timing each call and, from the link
// events of s.ns, the time until each sandbox's host-side links are gone.
func runRow(tb testing.TB, o attach.Options, s libcniRow) attach.Run {
	tb.Helper()
	n, ns := s.n, s.ns
	sbs := make([]*Sandbox, o.N)
	removed, closed := make([]bool, o.N), false
	tb.Cleanup(func() { // after a failure: undo what is left
		for i, sb := range sbs {
			if sb != nil && !removed[i] {
				_, _ = n.Remove(sb)
			}
		}
		if !closed {
			_ = n.Close()
		}
	})
	steps := map[string][]time.Duration{}
	for _, name := range s.steps {
		steps[name] = make([]time.Duration, o.N)
	}
	record := func(i int, st map[string]time.Duration) {
		for k, d := range st {
			if v, ok := steps[k]; ok {
				v[i] = d
			}
		}
	}
	attachT, wall, err := attach.Parallel(o.N, o.Clients, func(i int) (time.Duration, error) {
		t0 := time.Now()
		sb, st, err := n.Attach(i)
		took := time.Since(t0)
		sbs[i] = sb
		record(i, st)
		return took, err
	})
	if err != nil {
		tb.Fatal(err)
	}
	if o.Verify {
		s.verify(tb, sbs)
	}
	w := attach.WatchLinksT(tb, "/run/netns/"+ns)
	links := make([][]int, o.N)
	for i, sb := range sbs {
		if len(sb.HostIfs) == 0 {
			tb.Fatalf("%s sandbox %s: no host-side interface in the result", s.system, sb.ID)
		}
		for _, name := range sb.HostIfs {
			idx, err := w.Index(name)
			if err != nil {
				tb.Fatal(err)
			}
			links[i] = append(links[i], idx)
		}
	}
	removeT, rwall, gone, gwall, err := attach.RemoveRow(o.N, o.Clients, w, links, attach.GoneTimeout, func(i int) (time.Duration, error) {
		t0 := time.Now()
		st, err := n.Remove(sbs[i])
		took := time.Since(t0)
		removed[i] = true
		record(i, st)
		return took, err
	})
	if err != nil {
		tb.Fatal(err)
	}
	if o.Verify {
		s.clean(tb, sbs)
	}
	closed = true
	if err := n.Close(); err != nil {
		tb.Error(err)
	}
	name := s.system
	if o.Publish {
		name += "-port"
	}
	r := attach.NewRun(name, attachT, removeT, wall)
	r.Publish, r.Clients, r.RemoveWallMS = o.Publish, o.Clients, float64(rwall.Microseconds())/1000
	r.SetLinksGone(gone, gwall)
	r.SetSteps(steps)
	return r
}

// verifyRow checks each sandbox's address (fresh, in the subnet, on its
// eth0), traffic from the first sandbox to the gateway and to the second,
// and (o.Publish) the first and last published ports from an outside
// namespace through portmap's DNAT.
func verifyRow(tb testing.TB, n *Net, ns string, o attach.Options, sbs []*Sandbox) {
	tb.Helper()
	seen := map[netip.Addr]bool{}
	for _, sb := range sbs {
		a := sb.Addr
		if a.Bits() != Subnet.Bits() || !Subnet.Contains(a.Addr()) || seen[a.Addr()] || a.Addr() == n.Gateway() {
			tb.Fatalf("cni sandbox %s: address %s, want a fresh one in %s", sb.ID, a, Subnet)
		}
		seen[a.Addr()] = true
		out, err := exec.Command("nsenter", "--net="+sb.Path, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), a.String()) {
			tb.Fatalf("cni sandbox %s: eth0: %v %q, want %s", sb.ID, err, out, a)
		}
	}
	if got := countLinks(tb, ns, "veth"); got != len(sbs) {
		tb.Errorf("cni host namespace has %d veth links, want %d", got, len(sbs))
	}
	if err := attach.Ping(sbs[0].Path, n.Gateway()); err != nil {
		tb.Error(err)
	}
	if len(sbs) > 1 {
		if err := attach.Ping(sbs[0].Path, sbs[1].Addr.Addr()); err != nil {
			tb.Error(err)
		}
	}
	if o.Publish {
		out := testutil.Outside(tb, ns)
		for _, sb := range []*Sandbox{sbs[0], sbs[len(sbs)-1]} {
			if err := attach.CheckPublished(out, sb.Path, sb.ID, sb.Port); err != nil {
				tb.Error(err)
			}
		}
	}
}

// verifyClean checks that removal left no veth, no namespace file, no
// address held by host-local, no libcni cache entry and no nftables rule
// naming a sandbox's address, and that no plugin process is running.
func verifyClean(tb testing.TB, n *Net, ns string, sbs []*Sandbox) {
	tb.Helper()
	if got := countLinks(tb, ns, "veth"); got != 0 {
		tb.Errorf("after removal: %d veth links left in the cni host namespace", got)
	}
	if m := testutil.Mounted(n.nsDir); len(m) != 1 {
		tb.Errorf("after removal: mounts under %s: %v, want the directory only", n.nsDir, m)
	}
	held, _ := filepath.Glob(filepath.Join(n.c.Dir, "ipam", n.c.Name, "10.*"))
	if len(held) > 0 {
		tb.Errorf("after removal: host-local still holds %v", held)
	}
	cached, _ := filepath.Glob(filepath.Join(n.c.Dir, "cache", "results", "*"))
	if len(cached) > 0 {
		tb.Errorf("after removal: libcni cache still holds %v", cached)
	}
	var addrs []netip.Addr
	for _, sb := range sbs {
		addrs = append(addrs, sb.Addr.Addr())
	}
	if hits, err := attach.RulesMentioning(ns, addrs); err != nil || len(hits) > 0 {
		tb.Errorf("after removal: nftables still names sandbox addresses (%v): %q", err, hits)
	}
	if ps := PluginProcesses(n.c.BinDir); len(ps) > 0 {
		tb.Errorf("after removal: plugin processes still running: %v", ps)
	}
}

// PluginProcesses lists the PIDs of running processes whose executable is in
// dir.
func PluginProcesses(dir string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && filepath.Dir(exe) == dir {
			out = append(out, e.Name()+" "+exe)
		}
	}
	return out
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
