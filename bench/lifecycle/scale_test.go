package lifecycle

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api"
)

// ScaleReport is the JSON written by TestScaleReport: N sandboxes on one
// network, the attach time of the last window against the first, the
// daemon's memory, and its restore time with all N attached. The floor's
// own first/last windows, measured in the same run, show how much of the
// growth is the kernel's (a bridge with N ports, N namespaces).
type ScaleReport struct {
	Date         time.Time    `json:"date"`
	Sandboxes    int          `json:"sandboxes"`
	Window       int          `json:"window"`
	TetherFirst  attach.Stats `json:"tether_first"`
	TetherLast   attach.Stats `json:"tether_last"`
	FloorFirst   attach.Stats `json:"floor_first"`
	FloorLast    attach.Stats `json:"floor_last"`
	RSSIdleKiB   int64        `json:"rss_idle_kib"`
	RSSFullKiB   int64        `json:"rss_full_kib"`
	RestoreIdle  attach.Stats `json:"restore_idle"`
	RestoreFull  attach.Stats `json:"restore_full"`
	TetherRemove attach.Stats `json:"tether_remove"`
	// TetherLinksGone: from each DELETE until its host-side veth's
	// RTM_DELLINK (the namespace's teardown deletes it after the answer);
	// TetherRemoveComplete: the later of the two per sandbox.
	TetherLinksGone      attach.Stats `json:"tether_links_gone"`
	TetherRemoveComplete attach.Stats `json:"tether_remove_complete"`
}

func windows(ds []time.Duration, w int) (first, last attach.Stats) {
	return attach.Summarize(ds[:w]), attach.Summarize(ds[len(ds)-w:])
}

func measureScale(tb testing.TB, n, window, reps int) ScaleReport {
	rep := ScaleReport{Date: time.Now().UTC(), Sandboxes: n, Window: window}
	t := attach.StartTether(tb)
	rep.RestoreIdle = attach.Summarize(restartTimes(tb, t.D, reps))
	var err error
	if rep.RSSIdleKiB, err = attach.RSS(t.D.PID()); err != nil {
		tb.Fatal(err)
	}
	took := make([]time.Duration, n)
	sbs := make([]api.Sandbox, n)
	for i := range n {
		if sbs[i], took[i], err = t.Create(fmt.Sprintf("s%d", i)); err != nil {
			tb.Fatalf("sandbox %d: %v", i, err)
		}
	}
	if rep.RSSFullKiB, err = attach.RSS(t.D.PID()); err != nil {
		tb.Fatal(err)
	}
	rep.TetherFirst, rep.TetherLast = windows(took, window)
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
	floor := attach.RunFloor(tb, attach.Options{N: n})
	fd := make([]time.Duration, len(floor.AttachMS))
	for i, m := range floor.AttachMS {
		fd[i] = time.Duration(m * float64(time.Millisecond))
	}
	rep.FloorFirst, rep.FloorLast = windows(fd, window)
	return rep
}

// TestScaleSmoke runs the scale scenario small so it does not rot.
func TestScaleSmoke(t *testing.T) {
	rep := measureScale(t, 20, 5, 1)
	if rep.TetherFirst.N != 5 || rep.TetherLast.N != 5 || rep.FloorLast.N != 5 || rep.RSSFullKiB <= 0 || rep.RestoreFull.N != 1 ||
		rep.TetherLinksGone.N != 20 {
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
