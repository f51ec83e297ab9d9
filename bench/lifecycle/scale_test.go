package lifecycle

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/testutil"
)

// ScaleReport is the JSON written by TestScaleReport: N sandboxes on one
// network, the attach time of the last window against the first, the
// daemon's memory, and its restore time with all N attached. The floor
// attaches its N in the same run, interleaved with Tether's (attach i of
// each one after the other, in turn first), so its first/last windows show
// how much of the growth is the kernel's (a bridge with N ports, N
// namespaces) under the same load.
type ScaleReport struct {
	Date time.Time `json:"date"`
	// Label names the build under test (BENCH_LABEL, e.g. in an A/B run of
	// two binaries); Commit is git's HEAD where the run started, if any.
	Label        string         `json:"label,omitempty"`
	Commit       string         `json:"commit,omitempty"`
	Machine      map[string]any `json:"machine"`
	LoadBefore   string         `json:"loadavg_before"`
	LoadAfter    string         `json:"loadavg_after"`
	Sandboxes    int            `json:"sandboxes"`
	Window       int            `json:"window"`
	TetherFirst  attach.Stats   `json:"tether_first"`
	TetherLast   attach.Stats   `json:"tether_last"`
	FloorFirst   attach.Stats   `json:"floor_first"`
	FloorLast    attach.Stats   `json:"floor_last"`
	RSSIdleKiB   int64          `json:"rss_idle_kib"`
	RSSFullKiB   int64          `json:"rss_full_kib"`
	RestoreIdle  attach.Stats   `json:"restore_idle"`
	RestoreFull  attach.Stats   `json:"restore_full"`
	TetherRemove attach.Stats   `json:"tether_remove"`
	// TetherLinksGone: from each DELETE until its host-side veth's
	// RTM_DELLINK (the namespace's teardown deletes it after the answer);
	// TetherRemoveComplete: the later of the two per sandbox.
	TetherLinksGone      attach.Stats `json:"tether_links_gone"`
	TetherRemoveComplete attach.Stats `json:"tether_remove_complete"`
	// Own: Tether's own share of an attach, the attach p50 minus the
	// floor's p50 of the same window, first and last; OwnRatio is
	// (tether_last - floor_last) / (tether_first - floor_first), the scale
	// target of issue 19 (<= 1.1). TetherRatio and FloorRatio are last ÷
	// first of each.
	// OwnPair: per attach, Tether's minus the floor's of the same index
	// (taken one right after the other), summarised per window.
	OwnPairFirst attach.Stats `json:"own_pair_first"`
	OwnPairLast  attach.Stats `json:"own_pair_last"`
	OwnFirstMS   float64      `json:"own_first_ms"`
	OwnLastMS    float64      `json:"own_last_ms"`
	OwnRatio     float64      `json:"own_ratio"`
	TetherRatio  float64      `json:"tether_ratio"`
	FloorRatio   float64      `json:"floor_ratio"`
}

// ownShare fills the ratios from the windows' p50s.
func (r *ScaleReport) ownShare() {
	r.OwnFirstMS = r.TetherFirst.P50 - r.FloorFirst.P50
	r.OwnLastMS = r.TetherLast.P50 - r.FloorLast.P50
	if r.OwnFirstMS > 0 {
		r.OwnRatio = r.OwnLastMS / r.OwnFirstMS
	}
	if r.TetherFirst.P50 > 0 {
		r.TetherRatio = r.TetherLast.P50 / r.TetherFirst.P50
	}
	if r.FloorFirst.P50 > 0 {
		r.FloorRatio = r.FloorLast.P50 / r.FloorFirst.P50
	}
}

// gitHead is the short commit of HEAD, "" outside a git tree.
func gitHead() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// scaleFloor is the raw-netlink floor's row of the scale scenario, in a
// host namespace of its own, attached one sandbox at a time between
// Tether's attaches.
type scaleFloor struct {
	tb  testing.TB
	f   *attach.Floor
	sbs []*attach.FloorSandbox
}

func newScaleFloor(tb testing.TB, n int) *scaleFloor {
	tb.Helper()
	ns := testutil.NetNS(tb, "tth-floor")
	f, err := attach.NewFloor("/run/netns/"+ns, filepath.Join(attach.NSParent(tb), "ns"))
	if err != nil {
		tb.Fatal(err)
	}
	s := &scaleFloor{tb: tb, f: f, sbs: make([]*attach.FloorSandbox, n)}
	tb.Cleanup(func() { // after a failure: what is left
		for _, sb := range s.sbs {
			if sb != nil {
				_ = f.Remove(sb)
			}
		}
		_ = f.Close()
	})
	return s
}

// attach attaches floor sandbox i and returns how long it took.
func (s *scaleFloor) attach(i int) time.Duration {
	t0 := time.Now()
	sb, _, err := s.f.Attach(i)
	took := time.Since(t0)
	s.sbs[i] = sb
	if err != nil {
		s.tb.Fatalf("floor sandbox %d: %v", i, err)
	}
	return took
}

// removeAll removes the floor's sandboxes and its bridge.
func (s *scaleFloor) removeAll(tb testing.TB) {
	for i, sb := range s.sbs {
		if err := s.f.Remove(sb); err != nil {
			tb.Error(err)
		}
		s.sbs[i] = nil
	}
}

// pairDiff is Tether's attach minus the floor's attach of the same index.
func pairDiff(tether, floor []time.Duration) []time.Duration {
	out := make([]time.Duration, len(tether))
	for i := range tether {
		out[i] = tether[i] - floor[i]
	}
	return out
}

func windows(ds []time.Duration, w int) (first, last attach.Stats) {
	return attach.Summarize(ds[:w]), attach.Summarize(ds[len(ds)-w:])
}

func measureScale(tb testing.TB, n, window, reps int) ScaleReport {
	rep := ScaleReport{Date: time.Now().UTC(), Sandboxes: n, Window: window, Label: os.Getenv("BENCH_LABEL"),
		Commit: gitHead(), Machine: attach.Machine(), LoadBefore: testutil.LoadAvg()}
	t := attach.StartTether(tb)
	rep.RestoreIdle = attach.Summarize(restartTimes(tb, t.D, reps))
	var err error
	if rep.RSSIdleKiB, err = attach.RSS(t.D.PID()); err != nil {
		tb.Fatal(err)
	}
	f := newScaleFloor(tb, n)
	took, fd := make([]time.Duration, n), make([]time.Duration, n)
	sbs := make([]api.Sandbox, n)
	for i := range n {
		// Interleaved, in turn first: the i-th attach of each sees the
		// same kernel (both rows' namespaces and ports so far) and the
		// same load on a shared machine.
		tether := func() {
			if sbs[i], took[i], err = t.Create(fmt.Sprintf("s%d", i)); err != nil {
				tb.Fatalf("sandbox %d: %v", i, err)
			}
		}
		if i%2 == 0 {
			tether()
			fd[i] = f.attach(i)
		} else {
			fd[i] = f.attach(i)
			tether()
		}
	}
	if rep.RSSFullKiB, err = attach.RSS(t.D.PID()); err != nil {
		tb.Fatal(err)
	}
	rep.TetherFirst, rep.TetherLast = windows(took, window)
	rep.FloorFirst, rep.FloorLast = windows(fd, window)
	rep.OwnPairFirst, rep.OwnPairLast = windows(pairDiff(took, fd), window)
	rep.RestoreFull = attach.Summarize(restartTimes(tb, t.D, reps))
	if sbs, err := t.List(); err != nil || len(sbs) != n {
		tb.Fatalf("after restarts: %d sandboxes, %v", len(sbs), err)
	}
	w := attach.WatchLinksT(tb, "/run/netns/"+t.NS)
	links := make([][]int, n)
	for i, sb := range sbs {
		if links[i], err = attach.TetherHostLinks(w, sb); err != nil {
			tb.Fatal(err)
		}
	}
	removes, _, gone, _, err := attach.RemoveRow(n, 1, w, links, attach.GoneTimeout,
		func(i int) (time.Duration, error) { return t.Remove(fmt.Sprintf("s%d", i)) })
	if err != nil {
		tb.Fatal(err)
	}
	rep.TetherRemove, rep.TetherLinksGone = attach.Summarize(removes), attach.Summarize(gone)
	rep.TetherRemoveComplete = attach.Summarize(attach.Complete(removes, gone))
	f.removeAll(tb)
	rep.LoadAfter = testutil.LoadAvg()
	rep.ownShare()
	return rep
}

// TestScaleSmoke runs the scale scenario small so it does not rot.
func TestScaleSmoke(t *testing.T) {
	rep := measureScale(t, 20, 5, 1)
	if rep.TetherFirst.N != 5 || rep.TetherLast.N != 5 || rep.FloorLast.N != 5 || rep.RSSFullKiB <= 0 || rep.RestoreFull.N != 1 ||
		rep.TetherLinksGone.N != 20 || rep.OwnFirstMS != rep.TetherFirst.P50-rep.FloorFirst.P50 || rep.LoadAfter == "" {
		t.Errorf("incomplete report: %+v", rep)
	}
}

// TestScaleReport is the full run (BENCH_REPORT=1, bench/run.sh scale):
// 1000 sandboxes, windows of 100, 3 restarts each way.
func TestScaleReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh scale)")
	}
	n := attach.EnvInt("BENCH_N", 1000)
	rep := measureScale(t, n, max(n/10, 1), attach.EnvInt("BENCH_REPS", 3))
	var b strings.Builder
	fmt.Fprintf(&b, "| %d sandboxes on one network | first %d (p50) | last %d (p50) | last ÷ first |\n|---|---:|---:|---:|\n",
		n, rep.Window, rep.Window)
	fmt.Fprintf(&b, "| Tether attach | %.2f ms | %.2f ms | **%.2f×** |\n", rep.TetherFirst.P50, rep.TetherLast.P50, rep.TetherLast.P50/rep.TetherFirst.P50)
	fmt.Fprintf(&b, "| floor attach | %.2f ms | %.2f ms | %.2f× |\n", rep.FloorFirst.P50, rep.FloorLast.P50, rep.FloorLast.P50/rep.FloorFirst.P50)
	fmt.Fprintf(&b, "| Tether's own share (attach − floor) | %.2f ms | %.2f ms | **%.2f×** (target ≤ 1.1) |\n", rep.OwnFirstMS, rep.OwnLastMS, rep.OwnRatio)
	fmt.Fprintf(&b, "| per attach, Tether − floor of the same index (p50) | %.2f ms | %.2f ms | %.2f× |\n",
		rep.OwnPairFirst.P50, rep.OwnPairLast.P50, rep.OwnPairLast.P50/rep.OwnPairFirst.P50)
	fmt.Fprintf(&b, "\n| figure | reference | Tether | |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| daemon RSS | %.1f MiB idle | %.1f MiB with %d | %.1f KiB per sandbox |\n",
		float64(rep.RSSIdleKiB)/1024, float64(rep.RSSFullKiB)/1024, n, float64(rep.RSSFullKiB-rep.RSSIdleKiB)/float64(n))
	fmt.Fprintf(&b, "| restore at start (p50 of %d) | %.1f ms with 0 | %.1f ms with %d | %.3f ms per sandbox |\n",
		rep.RestoreFull.N, rep.RestoreIdle.P50, rep.RestoreFull.P50, n, (rep.RestoreFull.P50-rep.RestoreIdle.P50)/float64(n))
	fmt.Fprintf(&b, "| remove (p50): answer / links gone / both | | %.2f / %.2f / %.2f ms | |\n",
		rep.TetherRemove.P50, rep.TetherLinksGone.P50, rep.TetherRemoveComplete.P50)
	t.Log("\n" + b.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
