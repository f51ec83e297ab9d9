package attach

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// TestMain removes the daemon binary testutil builds.
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// benchN is the number of sandboxes attached in a row (BENCH_N, default 200).
func benchN() int { return EnvInt("BENCH_N", 200) }

// settle gives the kernel time to free the namespaces and veths of the
// previous round (it does so in the background), so that work does not land
// in the next round's figures.
func settle() { time.Sleep(3 * time.Second) }

func reportMetrics(b *testing.B, runs []Run) {
	attach, remove := pooled(runs)
	a, r := Summarize(attach), Summarize(remove)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(a.P50, "ms/attach-p50")
	b.ReportMetric(a.P90, "ms/attach-p90")
	b.ReportMetric(a.P99, "ms/attach-p99")
	b.ReportMetric(a.Total/float64(len(runs)), "ms/total")
	b.ReportMetric(r.P50, "ms/remove-p50")
	if rss := runs[len(runs)-1].RSSAttachedKiB; rss > 0 {
		b.ReportMetric(float64(rss)/1024, "MiB-rss-attached")
	}
}

// BenchmarkAttachTether: BENCH_N sandboxes created and attached in a row
// through the daemon's API, per iteration.
func BenchmarkAttachTether(b *testing.B) {
	testutil.RequireRoot(b)
	var runs []Run
	for range b.N {
		runs = append(runs, RunTether(b, Options{N: benchN()}))
	}
	reportMetrics(b, runs)
}

// BenchmarkAttachFloor: the same through raw netlink, per iteration.
func BenchmarkAttachFloor(b *testing.B) {
	testutil.RequireRoot(b)
	var runs []Run
	for range b.N {
		runs = append(runs, RunFloor(b, Options{N: benchN()}))
	}
	reportMetrics(b, runs)
}

// TestAttachSmoke keeps the benchmark code honest: five sandboxes through
// Tether (attach only, then with a first process each) and through the
// floor, each with its address, everything gone afterwards. It asserts
// correctness only.
func TestAttachSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("tether", func(t *testing.T) {
		r := RunTether(t, Options{N: 5, Verify: true})
		if r.Attach.N != 5 || r.Remove.N != 5 || r.RSSAttachedKiB <= 0 || !removeComplete(r) {
			t.Errorf("result %+v", r)
		}
		logRemove(t, r)
	})
	t.Run("tether-run", func(t *testing.T) {
		r := RunTether(t, Options{N: 5, Verify: true, FirstProc: true})
		if r.Attach.N != 5 || r.Exec.N != 5 || r.FirstProc.N != 5 || r.Remove.N != 5 || !removeComplete(r) {
			t.Errorf("result %+v", r)
		}
		logRemove(t, r)
	})
	t.Run("floor", func(t *testing.T) {
		r := RunFloor(t, Options{N: 5, Verify: true})
		if r.Attach.N != 5 || r.Remove.N != 5 || !removeComplete(r) {
			t.Errorf("result %+v", r)
		}
		logRemove(t, r)
	})
	t.Run("parallel", func(t *testing.T) {
		for _, run := range []func(testing.TB, Options) Run{RunTether, RunFloor} {
			r := run(t, Options{N: 6, Clients: 3, Verify: true})
			if r.Attach.N != 6 || r.Remove.N != 6 || !removeComplete(r) {
				t.Errorf("result %+v", r)
			}
			logRemove(t, r)
		}
	})
}

// removeComplete reports whether every removal of r has its links-gone
// time (a deletion event was seen for each of its host-side links).
func removeComplete(r Run) bool {
	return r.LinksGone.N == r.Remove.N && len(r.LinksGoneMS) == r.Remove.N && r.Complete.N == r.Remove.N &&
		r.LinksGone.Max > 0 && r.LinksGoneWallMS > 0
}

func logRemove(t *testing.T, r Run) {
	t.Logf("%s: remove answer p50 %.2f ms, links gone p50 %.2f ms (max %.2f), both p50 %.2f ms",
		r.System, r.Remove.P50, r.LinksGone.P50, r.LinksGone.Max, r.Complete.P50)
}

// Report is what TestAttachReport writes to BENCH_OUT.
type Report struct {
	Scenario string         `json:"scenario"`
	Date     time.Time      `json:"date"`
	Machine  map[string]any `json:"machine"`
	N        int            `json:"n"`
	Reps     int            `json:"reps"`
	ExecRoot string         `json:"exec_root_parent,omitempty"` // BENCH_EXEC_ROOT
	Runs     []Run          `json:"runs"`
	Pooled   map[string]Run `json:"pooled"`
	// Growth: p50 of each quarter of the row (1st to 4th 50 of 200).
	Growth map[string][4]float64 `json:"growth"`
}

// TestAttachReport runs, BENCH_REPS times (default 3) with BENCH_N
// sandboxes each: the floor, Tether (attach only) and Tether with a first
// process per sandbox ("tether-run"), in reversed order every other round. It
// prints Markdown tables and writes the JSON report to BENCH_OUT when set.
// Only with BENCH_REPORT=1 (bench/run.sh).
func TestAttachReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (sudo bench/run.sh attach)")
	}
	testutil.RequireRoot(t)
	n, reps := benchN(), EnvInt("BENCH_REPS", 3)
	rep := Report{Scenario: "attach", Date: time.Now().UTC(), Machine: Machine(), N: n, Reps: reps, ExecRoot: os.Getenv("BENCH_EXEC_ROOT"), Pooled: map[string]Run{}}
	var rows []Row
	var tethers, floors, firsts []Run
	for i := range reps {
		var tr, fr, xr Run
		systems := []func(){
			func() { t.Run(fmt.Sprintf("rep%d/floor", i+1), func(t *testing.T) { fr = RunFloor(t, Options{N: n}) }) },
			func() {
				t.Run(fmt.Sprintf("rep%d/tether", i+1), func(t *testing.T) { tr = RunTether(t, Options{N: n}) })
			},
			func() {
				t.Run(fmt.Sprintf("rep%d/tether-run", i+1), func(t *testing.T) { xr = RunTether(t, Options{N: n, FirstProc: true}) })
			},
		}
		if i%2 == 1 {
			slices.Reverse(systems)
		}
		for _, run := range systems {
			run()
			settle()
		}
		if t.Failed() {
			t.FailNow()
		}
		tethers, floors, firsts = append(tethers, tr), append(floors, fr), append(firsts, xr)
		rep.Runs = append(rep.Runs, tr, fr, xr)
		rows = append(rows, row(fmt.Sprint(i+1), tr, fr))
	}
	ta, trm := pooled(tethers)
	fa, frm := pooled(floors)
	pt, pf := NewRun("tether", ta, trm, 0), NewRun("floor", fa, frm, 0)
	pt.AttachMS, pt.RemoveMS, pf.AttachMS, pf.RemoveMS = nil, nil, nil, nil
	poolLinksGone(&pt, tethers)
	poolLinksGone(&pf, floors)
	pt.RSSIdleKiB, pt.RSSAttachedKiB = medianRSS(tethers)
	pf.Steps = PooledSteps(floors, FloorSteps)
	xa, xrm := pooled(firsts)
	xe, xf := pooledFirstProc(firsts)
	px := NewRun("tether-run", xa, xrm, 0)
	px.AttachMS, px.RemoveMS = nil, nil
	poolLinksGone(&px, firsts)
	px.RSSIdleKiB, px.RSSAttachedKiB = medianRSS(firsts)
	px.Exec, px.FirstProc = Summarize(xe), Summarize(xf)
	rep.Pooled["tether"], rep.Pooled["floor"], rep.Pooled["tether-run"] = pt, pf, px
	rows = append(rows, row("all", pt, pf))
	rep.Growth = growth(tethers, floors, firsts)

	var out bytes.Buffer
	fmt.Fprintf(&out, "\n## attach: %d sandboxes in a row, %d rounds (%s, %d CPUs, kernel %s)\n\n", n, reps,
		rep.Date.Format(time.RFC3339), runtime.NumCPU(), rep.Machine["kernel"])
	WriteTable(&out, rows)
	fmt.Fprintln(&out)
	WriteFirstProc(&out, n, px, pf.Attach)
	fmt.Fprintln(&out)
	WriteSteps(&out, "floor step (all rounds)", pf.Steps, FloorSteps)
	fmt.Fprintln(&out)
	WriteQuarters(&out, n, growthOrder, rep.Growth)
	os.Stdout.Write(out.Bytes())
	if path := os.Getenv("BENCH_OUT"); path != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Println("results:", path)
	}
}

// Rows of the growth table, in order.
const (
	growthTether = "Tether attach (API round trip)"
	growthFirst  = "Tether run: create + attach + first exec"
	growthFloor  = "floor attach"
)

var growthOrder = []string{growthTether, growthFirst, growthFloor}

// growth is the p50 per quarter of the row of each system's attach (and of
// Tether's create + attach + first exec), over all rounds.
func growth(tethers, floors, firsts []Run) map[string][4]float64 {
	series := func(runs []Run, samples func(Run) []float64) [4]float64 {
		var ss [][]time.Duration
		for _, r := range runs {
			ss = append(ss, durations(samples(r)))
		}
		return Quarters(ss...)
	}
	attach := func(r Run) []float64 { return r.AttachMS }
	return map[string][4]float64{
		growthTether: series(tethers, attach),
		growthFirst:  series(firsts, func(r Run) []float64 { return r.FirstProcMS }),
		growthFloor:  series(floors, attach),
	}
}

func row(label string, tr, fr Run) Row {
	return Row{Label: label, Tether: tr.Attach, Floor: fr.Attach, TetherRemove: tr.Remove, FloorRemove: fr.Remove,
		TetherGone: tr.LinksGone, FloorGone: fr.LinksGone, TetherDone: tr.Complete, FloorDone: fr.Complete,
		TetherWallMS: tr.WallMS, FloorWallMS: fr.WallMS, RSSIdleKiB: tr.RSSIdleKiB, RSSAttachedKiB: tr.RSSAttachedKiB}
}
