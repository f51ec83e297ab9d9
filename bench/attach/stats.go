package attach

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

// Stats summarises a series of durations, in milliseconds.
type Stats struct {
	N     int     `json:"n"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
	Total float64 `json:"total_ms"`
}

// Summarize computes nearest-rank percentiles, mean and sum of ds.
func Summarize(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Stats{
		N: len(s), P50: ms(stats.Percentile(s, 50)), P90: ms(stats.Percentile(s, 90)), P99: ms(stats.Percentile(s, 99)),
		Max: ms(s[len(s)-1]), Mean: ms(sum / time.Duration(len(s))), Total: ms(sum),
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = ms(d)
	}
	return out
}

// Run is one system's result for one round of N sandboxes.
type Run struct {
	System string `json:"system"` // "tether", "floor", "cni", ...
	N      int    `json:"n"`
	// Publish: each sandbox published one port; Clients: attaches issued
	// by that many goroutines at once (0: one after the other).
	Publish bool `json:"publish,omitempty"`
	Clients int  `json:"clients,omitempty"`
	// Attach: create + attach of each sandbox (Tether: POST round trip).
	Attach Stats `json:"attach"`
	// Wall is the time from the first attach's start to the last's end.
	WallMS float64 `json:"wall_ms"`
	// Remove: removal of each sandbox (Tether: DELETE round trip);
	// RemoveWallMS: from the first removal's start to the last one's end.
	Remove       Stats   `json:"remove"`
	RemoveWallMS float64 `json:"remove_wall_ms"`
	// LinksGone: from the start of each removal until the last of the
	// sandbox's host-side veths was deleted (its RTM_DELLINK seen in the
	// host namespace, LinkWatch); LinksGoneWallMS: from the first removal's
	// start to the last deletion. Complete: per sandbox the later of the
	// answer and the links gone, the work a synchronous remover's answer
	// includes (the floor, CNI and Docker delete their veths before they
	// answer; Tether's namespace teardown takes them after it answered).
	LinksGone       Stats   `json:"links_gone,omitzero"`
	Complete        Stats   `json:"remove_complete,omitzero"`
	LinksGoneWallMS float64 `json:"links_gone_wall_ms,omitempty"`
	// RSS of the daemon (Tether only), KiB: after the network was created and
	// before the first attach, and with all N attached.
	RSSIdleKiB     int64 `json:"rss_idle_kib,omitempty"`
	RSSAttachedKiB int64 `json:"rss_attached_kib,omitempty"`
	// Steps: per-step times (the floor's own steps; the CNI plugins' execs).
	Steps    map[string]Stats `json:"steps,omitempty"`
	AttachMS []float64        `json:"attach_ms"`
	// stepSamples are the raw per-step times behind Steps.
	stepSamples map[string][]time.Duration
	RemoveMS    []float64 `json:"remove_ms"`
	LinksGoneMS []float64 `json:"links_gone_ms,omitempty"`
	// With a first process (system "tether-run"), per sandbox: Exec is the
	// round trip of a detached exec of `true` right after the sandbox was
	// created (its mount and UTS namespaces, files and the process), FirstProc
	// the whole create + attach + first exec, from the create request to the
	// exec's answer.
	Exec        Stats     `json:"exec,omitzero"`
	FirstProc   Stats     `json:"first_process,omitzero"`
	ExecMS      []float64 `json:"exec_ms,omitempty"`
	FirstProcMS []float64 `json:"first_process_ms,omitempty"`
}

// NewRun summarises one round: per-sandbox attach and removal times and the
// attach wall time.
func NewRun(system string, attach, remove []time.Duration, wall time.Duration) Run {
	return Run{System: system, N: len(attach), Attach: Summarize(attach), Remove: Summarize(remove),
		WallMS: ms(wall), AttachMS: millis(attach), RemoveMS: millis(remove)}
}

// SetLinksGone records, per removal in the order of RemoveMS, the time
// until its links were gone, and the wall time until the last one was.
func (r *Run) SetLinksGone(gone []time.Duration, wall time.Duration) {
	r.LinksGone, r.LinksGoneMS, r.LinksGoneWallMS = Summarize(gone), millis(gone), ms(wall)
	r.Complete = Summarize(Complete(durations(r.RemoveMS), gone))
}

// Complete is, per removal, the later of its answer and its links gone.
func Complete(answer, gone []time.Duration) []time.Duration {
	out := make([]time.Duration, min(len(answer), len(gone)))
	for i := range out {
		out[i] = max(answer[i], gone[i])
	}
	return out
}

// poolLinksGone sets p's links-gone figures from the samples of runs
// (wall: the median round), when every run has them.
func poolLinksGone(p *Run, runs []Run) {
	var answer, gone []time.Duration
	var walls []float64
	for _, r := range runs {
		if len(r.LinksGoneMS) != len(r.RemoveMS) || len(r.RemoveMS) == 0 {
			return
		}
		answer, gone = append(answer, durations(r.RemoveMS)...), append(gone, durations(r.LinksGoneMS)...)
		walls = append(walls, r.LinksGoneWallMS)
	}
	if len(gone) == 0 {
		return
	}
	p.LinksGone, p.Complete, p.LinksGoneWallMS = Summarize(gone), Summarize(Complete(answer, gone)), stats.Median(walls)
}

// SetSteps records per-step samples (step name → one duration per sample)
// and their summaries.
func (r *Run) SetSteps(samples map[string][]time.Duration) {
	r.Steps, r.stepSamples = map[string]Stats{}, samples
	for name, ds := range samples {
		r.Steps[name] = Summarize(ds)
	}
}

// PooledSteps merges the per-step samples of several runs, for the given
// step names.
func PooledSteps(runs []Run, names []string) map[string]Stats {
	out := map[string]Stats{}
	for _, name := range names {
		var all []time.Duration
		for _, r := range runs {
			all = append(all, r.stepSamples[name]...)
		}
		if len(all) > 0 {
			out[name] = Summarize(all)
		}
	}
	return out
}

// Pooled merges several rounds of one system into one Run (percentiles over
// all samples, the median wall time and RSS, no per-sample lists).
func Pooled(system string, runs []Run) Run {
	attach, remove := pooled(runs)
	p := NewRun(system, attach, remove, 0)
	p.AttachMS, p.RemoveMS = nil, nil
	var walls []float64
	for _, r := range runs {
		walls = append(walls, r.WallMS)
	}
	p.WallMS = stats.Median(walls)
	walls = walls[:0]
	for _, r := range runs {
		walls = append(walls, r.RemoveWallMS)
	}
	p.RemoveWallMS = stats.Median(walls)
	poolLinksGone(&p, runs)
	if len(runs) > 0 {
		p.Publish, p.Clients = runs[0].Publish, runs[0].Clients
		if runs[0].RSSAttachedKiB > 0 {
			p.RSSIdleKiB, p.RSSAttachedKiB = medianRSS(runs)
		}
	}
	return p
}

// pooled merges the samples of several runs of one system.
func pooled(runs []Run) (attach, remove []time.Duration) {
	for _, r := range runs {
		attach = append(attach, durations(r.AttachMS)...)
		remove = append(remove, durations(r.RemoveMS)...)
	}
	return attach, remove
}

// pooledFirstProc merges the exec and first-process samples of several runs.
func pooledFirstProc(runs []Run) (exec, first []time.Duration) {
	for _, r := range runs {
		exec = append(exec, durations(r.ExecMS)...)
		first = append(first, durations(r.FirstProcMS)...)
	}
	return exec, first
}

// Row is one line of the comparison table.
type Row struct {
	Label                      string
	Tether, Floor              Stats
	TetherRemove, FloorRemove  Stats
	TetherGone, FloorGone      Stats // links gone after the removal started
	TetherDone, FloorDone      Stats // the later of the answer and the links gone
	TetherWallMS, FloorWallMS  float64
	RSSIdleKiB, RSSAttachedKiB int64
}

// Ratio is a / b, or 0 when b is 0.
func Ratio(a, b float64) float64 { return ratio(a, b) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// WriteTable prints the rows as a Markdown table: Tether, floor and their
// ratio for the attach percentiles, the total, and the removal medians: the
// API answer, the links gone, and the later of both (the like-with-like
// figure: the floor's answer already includes its veth's deletion).
func WriteTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| round | system | attach p50 | p90 | p99 | sum of attaches | remove: answer p50 | links gone p50 | answer and links gone p50 | daemon RSS idle → N attached |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | Tether | %.2f ms | %.2f ms | %.2f ms | %.0f ms | %.2f ms | %.2f ms | %.2f ms | %.1f → %.1f MiB |\n", r.Label,
			r.Tether.P50, r.Tether.P90, r.Tether.P99, r.Tether.Total, r.TetherRemove.P50, r.TetherGone.P50, r.TetherDone.P50,
			float64(r.RSSIdleKiB)/1024, float64(r.RSSAttachedKiB)/1024)
		fmt.Fprintf(w, "| %s | floor | %.2f ms | %.2f ms | %.2f ms | %.0f ms | %.2f ms | %.2f ms | %.2f ms | — |\n", r.Label,
			r.Floor.P50, r.Floor.P90, r.Floor.P99, r.Floor.Total, r.FloorRemove.P50, r.FloorGone.P50, r.FloorDone.P50)
		fmt.Fprintf(w, "| %s | **ratio** | **%.2f×** | %.2f× | %.2f× | %.2f× | %.2f× (not like for like) | %.2f× | **%.2f×** | |\n", r.Label,
			ratio(r.Tether.P50, r.Floor.P50), ratio(r.Tether.P90, r.Floor.P90), ratio(r.Tether.P99, r.Floor.P99),
			ratio(r.Tether.Total, r.Floor.Total), ratio(r.TetherRemove.P50, r.FloorRemove.P50),
			ratio(r.TetherGone.P50, r.FloorGone.P50), ratio(r.TetherDone.P50, r.FloorDone.P50))
	}
}

// WriteFirstProc prints Tether's first-process figures (no floor equivalent)
// as absolute times and as multiples of the floor's attach.
func WriteFirstProc(w io.Writer, n int, run Run, floorAttach Stats) {
	fmt.Fprintf(w, "| Tether, first process (%d in a row; the floor has no equivalent) | p50 | p90 | p99 | p50 ÷ floor attach p50 |\n", n)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, l := range []struct {
		name string
		s    Stats
	}{
		{"run: create + attach + first exec of `true`", run.FirstProc},
		{"of which: create + attach", run.Attach},
		{"of which: first exec (detached)", run.Exec},
	} {
		fmt.Fprintf(w, "| %s | %.2f ms | %.2f ms | %.2f ms | %.2f× |\n", l.name, l.s.P50, l.s.P90, l.s.P99, ratio(l.s.P50, floorAttach.P50))
	}
}

// WriteSteps prints per-step statistics as a Markdown table, in the given order.
func WriteSteps(w io.Writer, title string, steps map[string]Stats, order []string) {
	fmt.Fprintf(w, "| %s | p50 | mean | p99 |\n|---|---:|---:|---:|\n", title)
	var sum float64
	for _, k := range order {
		s, ok := steps[k]
		if !ok {
			continue
		}
		sum += s.Mean
		fmt.Fprintf(w, "| %s | %.3f ms | %.3f ms | %.3f ms |\n", k, s.P50, s.Mean, s.P99)
	}
	fmt.Fprintf(w, "| (sum of means) | | %.3f ms | |\n", sum)
}

// Quarters splits each series (one per round, in attach order) into four
// quarters and returns the median of each quarter's samples over all
// series: how a step's cost moves as sandboxes accumulate.
func Quarters(series ...[]time.Duration) [4]float64 {
	var out [4]float64
	for q := range 4 {
		var all []time.Duration
		for _, s := range series {
			all = append(all, s[q*len(s)/4:(q+1)*len(s)/4]...)
		}
		if len(all) > 0 {
			out[q] = Summarize(all).P50
		}
	}
	return out
}

// WriteQuarters prints medians per quarter of the attach order as a Markdown table.
func WriteQuarters(w io.Writer, n int, names []string, q map[string][4]float64) {
	fmt.Fprintf(w, "| p50 by position in the row of %d | 1st quarter | 2nd | 3rd | 4th |\n|---|---:|---:|---:|---:|\n", n)
	for _, k := range names {
		v, ok := q[k]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "| %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms |\n", k, v[0], v[1], v[2], v[3])
	}
}

func durations(msv []float64) []time.Duration {
	out := make([]time.Duration, len(msv))
	for i, v := range msv {
		out[i] = time.Duration(v * 1e6)
	}
	return out
}

func medianRSS(runs []Run) (idle, attached int64) {
	return stats.MedianOf(runs, func(r Run) int64 { return r.RSSIdleKiB }),
		stats.MedianOf(runs, func(r Run) int64 { return r.RSSAttachedKiB })
}

// Machine describes the machine for a report: CPUs, CPU model, memory,
// kernel, Go version and the load average when called.
func Machine() map[string]any {
	m := map[string]any{"nproc": runtime.NumCPU(), "go": runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m["kernel"] = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			m["memtotal"] = strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	if l := testutil.LoadAvg(); l != "" {
		m["loadavg"] = l
	}
	return m
}
