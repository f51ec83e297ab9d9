package drivers

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// Options sizes one run.
type Options struct {
	N         int // per round: sandboxes per network, links, floor links
	Reps      int // attach rounds
	IperfSecs int // iperf3 -t
	IperfReps int // runs per path
	Verify    bool
}

// Report is the JSON written by TestDriversReport.
type Report struct {
	Scenario string         `json:"scenario"`
	Date     time.Time      `json:"date"`
	Machine  map[string]any `json:"machine"`
	// The daemon is built from the working tree: its commit, and the files
	// of the product (cmd/, internal/) that differed from it.
	Commit string   `json:"commit"`
	Dirty  []string `json:"dirty_product_files,omitempty"`
	// The load average (/proc/loadavg) at the start, after the attach rounds
	// and at the end.
	LoadBefore string        `json:"loadavg_before"`
	LoadMid    string        `json:"loadavg_after_attach"`
	LoadAfter  string        `json:"loadavg_after"`
	N          int           `json:"n"`
	Reps       int           `json:"reps"`
	Attach     AttachReport  `json:"attach"`
	Traffic    TrafficReport `json:"traffic"`
}

// maxN: the link floor's addresses (a /31 per pair from 10.252.0.0) and a
// Linux bridge's 1023 ports bound a round.
const maxN = 1000

func measure(tb testing.TB, o Options) Report {
	tb.Helper()
	if o.N < 2 || o.N > maxN {
		tb.Fatalf("N = %d: must be 2..%d", o.N, maxN)
	}
	rep := Report{Scenario: "drivers", Date: time.Now().UTC(), Machine: attach.Machine(), LoadBefore: testutil.LoadAvg(), N: o.N, Reps: o.Reps}
	rep.Commit, rep.Dirty = tree()
	rg := startRig(tb)
	rep.Attach = measureAttach(tb, rg, o.N, o.Reps, o.Verify)
	rep.LoadMid = testutil.LoadAvg()
	settle()
	rep.Traffic = measureTraffic(tb, rg, o.IperfSecs, o.IperfReps)
	rep.LoadAfter = testutil.LoadAvg()
	return rep
}

// TestDriversSmoke runs the scenario small so the benchmark does not rot; it
// checks correctness only: every sandbox got an address in its network,
// every link /32 ends, traffic on each network, across a link and across
// the floor's link, every iperf3 path carried data, nothing left afterwards.
func TestDriversSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	attach.RequireIperf3(t)
	rep := measure(t, Options{N: 3, Reps: 2, IperfSecs: 1, IperfReps: 1, Verify: true})
	t.Log("\n" + tables(rep))
	a := rep.Attach
	for _, k := range kinds {
		if a.Pooled[k].N != 6 || len(a.Rounds[k]) != 2 {
			t.Errorf("%s: incomplete attach report: %+v %+v", k, a.Pooled[k], a.Rounds[k])
		}
	}
	if len(rep.Traffic.Iperf) != len(pathOrder) {
		t.Fatalf("iperf3 runs: %+v", rep.Traffic.Iperf)
	}
	for _, p := range pathOrder {
		if rep.Traffic.IperfBest[p] <= 0 {
			t.Errorf("%s: no throughput", p)
		}
	}
}

// TestDriversReport is the full run (BENCH_REPORT=1, bench/run.sh drivers):
// BENCH_REPS (3) rounds of BENCH_N (100) of each kind, then iperf3
// BENCH_IPERF_SECS (5) s × BENCH_IPERF_REPS (4) per path.
func TestDriversReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (sudo bench/run.sh drivers)")
	}
	testutil.RequireRoot(t)
	attach.RequireIperf3(t)
	rep := measure(t, Options{N: attach.EnvInt("BENCH_N", 100), Reps: attach.EnvInt("BENCH_REPS", 3),
		IperfSecs: attach.EnvInt("BENCH_IPERF_SECS", 5), IperfReps: attach.EnvInt("BENCH_IPERF_REPS", 4)})
	t.Log("\n" + tables(rep))
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Println("results:", out)
	}
}

// kindLabels name the kinds in the tables.
var kindLabels = map[string]string{
	kBridge:  "sandbox on the Linux bridge network",
	kMacvlan: "sandbox on the macvlan network",
	kOVS:     "sandbox on the OVS network (netdev)",
	kLink:    "link between two existing sandboxes",
	kFloor:   "link floor (raw netlink, floor.go)",
}

// tables renders the report as the README's Markdown tables.
func tables(rep Report) string {
	var b strings.Builder
	a, tr := rep.Attach, rep.Traffic
	fmt.Fprintf(&b, "%v CPUs, kernel %v, %v; load %s → %s → %s; Tether %s, %d product files changed in the tree %v\n\n",
		rep.Machine["nproc"], rep.Machine["kernel"], rep.Machine["go"], rep.LoadBefore, rep.LoadMid, rep.LoadAfter,
		rep.Commit, len(rep.Dirty), rep.Dirty)
	fmt.Fprintf(&b, "| %d × %d of each, interleaved | p50 | p90 | rounds p50 | ÷ bridge p50 | ÷ bridge p90 | rounds ÷ bridge p50 | remove p50 |\n|---|---:|---:|---|---:|---:|---|---:|\n", rep.Reps, rep.N)
	for _, k := range kinds {
		var rs, rr []string
		for _, r := range a.Rounds[k] {
			rs = append(rs, fmt.Sprintf("%.2f", r.P50))
		}
		for _, r := range a.RoundsOverBridge[k] {
			rr = append(rr, fmt.Sprintf("%.2f", r[0]))
		}
		over50, over90, remove := "", "", "—"
		if k != kBridge && k != kFloor {
			over50, over90 = fmt.Sprintf("**%.2f×**", a.OverBridgeP50[k]), fmt.Sprintf("%.2f×", a.OverBridgeP90[k])
		}
		if k != kFloor {
			remove = fmt.Sprintf("%.2f ms", a.Remove[k].P50)
		}
		p := a.Pooled[k]
		fmt.Fprintf(&b, "| %s | %.2f ms | %.2f ms | %s | %s | %s | %s | %s |\n", kindLabels[k], p.P50, p.P90,
			strings.Join(rs, " / "), over50, over90, strings.Join(rr, " / "), remove)
	}
	fmt.Fprintf(&b, "| **link ÷ link floor** (like for like) | **%.2f×** | %.2f× | | | | | |\n\n", a.LinkOverFloorP50, a.LinkOverFloorP90)
	fmt.Fprintf(&b, "| link floor step | p50 |\n|---|---:|\n")
	for _, s := range LinkFloorSteps {
		fmt.Fprintf(&b, "| %s | %.3f ms |\n", s, a.FloorSteps[s])
	}
	fmt.Fprintf(&b, "\n| iperf3, %d s × %d, MTU %d | best Gbit/s | median | runs | machine busy CPUs | ovs-vswitchd CPUs |\n|---|---:|---:|---|---|---|\n", tr.Secs, tr.Reps, tr.MTU)
	for _, p := range pathOrder {
		var runs, busy, vs []string
		for _, r := range tr.Iperf {
			if r.Path != p {
				continue
			}
			if r.Error != "" {
				runs = append(runs, "failed")
			} else {
				runs = append(runs, fmt.Sprintf("%.2f", r.Gbps))
			}
			busy, vs = append(busy, fmt.Sprintf("%.2f", r.BusyCPU)), append(vs, fmt.Sprintf("%.2f", r.VSwitchCPU))
		}
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %s | %s | %s |\n", p, tr.IperfBest[p], tr.IperfMedian[p], strings.Join(runs, ", "), strings.Join(busy, ", "), strings.Join(vs, ", "))
	}
	fmt.Fprintf(&b, "| **link ÷ bridge** | **%.3f** | %.3f | | | |\n", tr.LinkOverBridge, tr.LinkOverBridgeMedian)
	fmt.Fprintf(&b, "| **OVS ÷ bridge** | **%.3f** | %.3f | | | |\n", tr.OVSOverBridge, tr.OVSOverBridgeMedian)
	for p, e := range tr.Errors {
		fmt.Fprintf(&b, "\n%s failed: %s\n", p, e)
	}
	return b.String()
}

// tree returns HEAD's short commit and the product files (cmd/, internal/)
// the working tree changes or adds ("" and nil when git cannot tell).
func tree() (string, []string) {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "", nil
	}
	out, err := exec.Command("git", "status", "--porcelain", "--", ":/cmd", ":/internal").Output()
	if err != nil {
		return strings.TrimSpace(string(head)), nil
	}
	var dirty []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			dirty = append(dirty, l)
		}
	}
	return strings.TrimSpace(string(head)), dirty
}

// nsenter runs a command inside the network namespace file path.
func nsenter(path string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + path, "--"}, args...)...).CombinedOutput()
	return string(out), err
}
