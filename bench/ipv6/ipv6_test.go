package ipv6

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
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
	N         int // sandboxes per network (and per floor) per round
	Reps      int // attach rounds
	IperfSecs int // iperf3 -t
	IperfReps int // runs per path
	Verify    bool
}

// Report is the JSON written by TestIPv6Report.
type Report struct {
	Scenario string         `json:"scenario"`
	Date     time.Time      `json:"date"`
	Machine  map[string]any `json:"machine"`
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

// maxN: a Linux bridge holds at most 1023 ports.
const maxN = 1000

func measure(tb testing.TB, o Options) Report {
	tb.Helper()
	if o.N < 2 || o.N > maxN {
		tb.Fatalf("N = %d: must be 2..%d", o.N, maxN)
	}
	rep := Report{Scenario: "ipv6", Date: time.Now().UTC(), Machine: attach.Machine(), LoadBefore: testutil.LoadAvg(), N: o.N, Reps: o.Reps}
	t := attach.StartTether(tb) // network "bench": the IPv4-only one
	rep.Attach = measureAttach(tb, t, o.N, o.Reps, o.Verify)
	rep.LoadMid = testutil.LoadAvg()
	settle()
	rep.Traffic = measureTraffic(tb, t, o.IperfSecs, o.IperfReps)
	rep.LoadAfter = testutil.LoadAvg()
	for _, r := range rep.Traffic.Iperf {
		if r.ProxySeen {
			tb.Errorf("%s: an established socket on :%d in the host namespace: the userland proxy carried it", r.Path, iperfPort)
		}
	}
	// forced: the iperf3 server goes with its sandbox
	if code, out, err := t.Call(http.MethodDelete, "/tether/v1/sandboxes/ipf?force=1", nil); err != nil || code != http.StatusNoContent {
		tb.Errorf("remove sandbox ipf: %d %s %v", code, out, err)
	}
	if left, err := t.List(); err != nil || len(left) != 0 {
		tb.Errorf("at the end: %d sandboxes left, %v", len(left), err)
	}
	return rep
}

// TestIPv6Smoke runs the scenario small so the benchmark does not rot; it
// checks correctness only: every sandbox got the families of its network,
// IPv6 traffic between dual-stack sandboxes (Tether's and the floor's),
// both published ports, every iperf3 path carried data and none went
// through the userland proxy, nothing left afterwards.
func TestIPv6Smoke(t *testing.T) {
	testutil.RequireRoot(t)
	attach.RequireIperf3(t)
	rep := measure(t, Options{N: 5, Reps: 2, IperfSecs: 1, IperfReps: 1, Verify: true})
	t.Log("\n" + tables(rep))
	a := rep.Attach
	if a.V4.N != 10 || a.DS.N != 10 || a.Floor.N != 10 || a.Floor6.N != 10 || a.RemoveV4.N != 10 || a.RemoveDS.N != 10 || len(a.RoundRatios) != 2 {
		t.Errorf("incomplete attach report: %+v", a)
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

// TestIPv6Report is the full run (BENCH_REPORT=1, bench/run.sh ipv6):
// BENCH_REPS (3) rounds of BENCH_N (200) sandboxes per network and floor,
// then iperf3 BENCH_IPERF_SECS (5) s × BENCH_IPERF_REPS (3) per path.
func TestIPv6Report(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (sudo bench/run.sh ipv6)")
	}
	testutil.RequireRoot(t)
	attach.RequireIperf3(t)
	rep := measure(t, Options{N: attach.EnvInt("BENCH_N", 200), Reps: attach.EnvInt("BENCH_REPS", 3),
		IperfSecs: attach.EnvInt("BENCH_IPERF_SECS", 5), IperfReps: attach.EnvInt("BENCH_IPERF_REPS", 3)})
	t.Log("\n" + tables(rep))
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Println("results:", out)
	}
}

// tables renders the report as the README's Markdown tables.
func tables(rep Report) string {
	var b strings.Builder
	a, tr := rep.Attach, rep.Traffic
	fmt.Fprintf(&b, "%v CPUs, kernel %v, %v; load %s → %s → %s\n\n", rep.Machine["nproc"], rep.Machine["kernel"], rep.Machine["go"],
		rep.LoadBefore, rep.LoadMid, rep.LoadAfter)
	fmt.Fprintf(&b, "| attach, %d × %d each, interleaved | p50 | p90 | rounds p50 |\n|---|---:|---:|---|\n", rep.Reps, rep.N)
	row := func(name string, s attach.Stats, rounds []attach.Stats) {
		var rs []string
		for _, r := range rounds {
			rs = append(rs, fmt.Sprintf("%.2f", r.P50))
		}
		fmt.Fprintf(&b, "| %s | %.2f ms | %.2f ms | %s |\n", name, s.P50, s.P90, strings.Join(rs, " / "))
	}
	row("Tether, IPv4-only network", a.V4, a.RoundsV4)
	row("Tether, dual-stack network", a.DS, a.RoundsDS)
	var rr []string
	for _, r := range a.RoundRatios {
		rr = append(rr, fmt.Sprintf("%.2f", r[0]))
	}
	fmt.Fprintf(&b, "| **dual ÷ IPv4** | **%.2f×** | **%.2f×** | %s |\n", a.RatioP50, a.RatioP90, strings.Join(rr, " / "))
	row(floorLabel, a.Floor, a.RoundsFloor)
	row("floor, dual-stack (floor6.go)", a.Floor6, a.RoundsFloor6)
	fmt.Fprintf(&b, "| floor dual ÷ floor IPv4 | %.2f× | %.2f× | |\n", a.Floor6OverFloor, attach.Ratio(a.Floor6.P90, a.Floor.P90))
	fmt.Fprintf(&b, "| Tether dual ÷ floor dual | %.2f× | | (IPv4: %.2f×) |\n", a.DSOverFloor6, a.V4OverFloor)
	fmt.Fprintf(&b, "| remove (API answer), IPv4 / dual | %.2f / %.2f ms | %.2f / %.2f ms | |\n\n", a.RemoveV4.P50, a.RemoveDS.P50, a.RemoveV4.P90, a.RemoveDS.P90)
	fmt.Fprintf(&b, "| floor step p50 | IPv4 floor | dual floor |\n|---|---:|---:|\n")
	for k, name := range Floor6Steps {
		v4 := "—"
		if k < len(attach.FloorSteps) {
			v4 = fmt.Sprintf("%.3f ms", a.FloorSteps[attach.FloorSteps[k]])
		}
		fmt.Fprintf(&b, "| %s | %s | %.3f ms |\n", name, v4, a.Floor6Steps[name])
	}
	fmt.Fprintf(&b, "\n| iperf3, %d s × %d | best Gbit/s | median | runs | daemon CPUs | machine busy CPUs |\n|---|---:|---:|---|---|---|\n", tr.Secs, tr.Reps)
	for _, p := range pathOrder {
		var runs, dcpu, busy []string
		for _, r := range tr.Iperf {
			if r.Path == p {
				runs = append(runs, fmt.Sprintf("%.2f", r.Gbps))
				dcpu = append(dcpu, fmt.Sprintf("%.2f", r.DaemonCPU))
				busy = append(busy, fmt.Sprintf("%.2f", r.BusyCPU))
			}
		}
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %s | %s | %s |\n", p, tr.IperfBest[p], tr.IperfMedian[p], strings.Join(runs, ", "), strings.Join(dcpu, ", "), strings.Join(busy, ", "))
	}
	fmt.Fprintf(&b, "| **IPv6 kernel ÷ direct** | **%.3f** | %.3f | | | |\n", tr.KernelRatio, tr.KernelRatioMedian)
	fmt.Fprintf(&b, "| IPv4 kernel ÷ direct | %.3f | %.3f | | | |\n", tr.KernelRatio4, tr.KernelRatio4Median)
	return b.String()
}
