package memory

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/testutil"
)

// TestMain removes the daemon binary testutil builds.
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// Per is a step's growth over the idle daemon, per sandbox.
type Per struct {
	Sandboxes     int     `json:"sandboxes"`
	RSSKiB        float64 `json:"rss_kib"`
	RSSNoGCKiB    float64 `json:"rss_before_gc_kib"`
	RSSAnonKiB    float64 `json:"rss_anon_kib"`
	RSSFileKiB    float64 `json:"rss_file_kib"`
	HeapInuseKiB  float64 `json:"heap_inuse_kib"`
	StackInuseKiB float64 `json:"stack_inuse_kib"`
	StoreKiB      float64 `json:"store_kib"`
	Threads       float64 `json:"threads"`
	Goroutines    float64 `json:"goroutines"`
	FDs           float64 `json:"fds"`
}

func per(idle, s Snapshot) Per {
	n := float64(s.Sandboxes)
	d := func(a, b int64) float64 { return float64(b-a) / n }
	return Per{Sandboxes: s.Sandboxes, RSSKiB: d(idle.RSSKiB, s.RSSKiB), RSSNoGCKiB: d(idle.RSSBeforeGCKiB, s.RSSBeforeGCKiB), RSSAnonKiB: d(idle.RSSAnonKiB, s.RSSAnonKiB),
		RSSFileKiB: d(idle.RSSFileKiB, s.RSSFileKiB), HeapInuseKiB: d(idle.HeapInuseKiB, s.HeapInuseKiB),
		StackInuseKiB: d(idle.StackInuseKiB, s.StackInuseKiB), StoreKiB: d(idle.StoreKiB, s.StoreKiB),
		Threads: d(int64(idle.Threads), int64(s.Threads)), Goroutines: d(int64(idle.Goroutines), int64(s.Goroutines)),
		FDs: d(int64(idle.FDs), int64(s.FDs))}
}

// Run is one daemon's measurement: idle, then at each step.
type Run struct {
	Round     int        `json:"round"`
	Binary    string     `json:"binary"` // "tree" (this working tree), "base" (BENCH_BASE_BIN) or a BENCH_BINS label
	Kind      string     `json:"kind"`
	Snapshots []Snapshot `json:"snapshots"` // [0] idle
	Per       []Per      `json:"per_sandbox"`
	// Goroutines at the last step, by where they wait.
	GoroutineGroups map[string]int `json:"goroutine_groups"`
}

// measure starts a daemon, makes n sandboxes of kind k measuring at each
// step, removes them (checking their processes are gone) and stops it.
func measure(tb testing.TB, bin, label string, k Kind, n, round int) Run {
	r := startRig(tb, bin)
	run := Run{Round: round, Binary: label, Kind: k.Name}
	idle, err := r.snapshot(0)
	if err != nil {
		tb.Fatal(err)
	}
	run.Snapshots = append(run.Snapshots, idle)
	made := 0
	for _, step := range steps(n) {
		for ; made < step; made++ {
			if err := r.add(k, fmt.Sprintf("m%d", made)); err != nil {
				tb.Fatalf("%s/%s: sandbox %d: %v", label, k.Name, made, err)
			}
		}
		s, err := r.snapshot(made)
		if err != nil {
			tb.Fatal(err)
		}
		run.Snapshots = append(run.Snapshots, s)
		run.Per = append(run.Per, per(idle, s))
	}
	if run.GoroutineGroups, err = r.goroutineGroups(); err != nil {
		tb.Fatal(err)
	}
	if dir := os.Getenv("BENCH_PROFILE_DIR"); dir != "" {
		if err := r.saveHeap(filepath.Join(dir, fmt.Sprintf("heap-%s-%s-%d-r%d.pb.gz", label, k.Name, made, round))); err != nil {
			tb.Fatal(err)
		}
	}
	for i := range made {
		if err := r.remove(fmt.Sprintf("m%d", i)); err != nil {
			tb.Fatalf("%s/%s: %v", label, k.Name, err)
		}
	}
	if k.Process {
		checkNoSleepers(tb, r.pid)
	}
	// Stopped here, not deferred: after a failure the harness's cleanup
	// removes what is left (rm -f needs the daemon running).
	r.d.Stop()
	return run
}

// checkNoSleepers fails when a child of the daemon still runs after every
// sandbox was removed (rm kills a sandbox's processes).
func checkNoSleepers(tb testing.TB, daemon int) {
	tb.Helper()
	out, _ := exec.Command("pgrep", "-P", fmt.Sprint(daemon)).Output()
	for _, pid := range strings.Fields(string(out)) {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err == nil && !strings.Contains(string(st), ") Z ") {
			tb.Errorf("process %s of the daemon still runs after every sandbox was removed", pid)
		}
	}
}

// Report is the JSON written by TestMemoryReport.
type Report struct {
	Date      time.Time `json:"date"`
	Commit    string    `json:"commit"`
	Dirty     []string  `json:"dirty,omitempty"` // product files changed in the tree the daemon is built from
	BaseBin   string    `json:"base_bin,omitempty"`
	Bins      []string  `json:"bins,omitempty"` // BENCH_BINS: more binaries, label=path
	Kernel    string    `json:"kernel"`
	NProc     int       `json:"nproc"`
	LoadStart string    `json:"load_start"`
	LoadEnd   string    `json:"load_end"`
	N         int       `json:"n"`
	Reps      int       `json:"reps"`
	GODEBUG   string    `json:"godebug"` // the daemon's (inherited) GODEBUG, GOGC, GOMEMLIMIT
	GOGC      string    `json:"gogc"`
	MemLimit  string    `json:"gomemlimit"`
	Method    string    `json:"method"`
	Runs      []Run     `json:"runs"`
	// Summary: per binary and kind, the median over rounds of the last
	// step's per-sandbox figures; Split: the shares (run − run-default:
	// the resolver; run-default − bare: the process).
	Summary map[string]Per `json:"summary"`
	Split   map[string]Per `json:"split"`
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

func gitOut(args ...string) string {
	out, _ := exec.Command("git", args...).Output()
	return strings.TrimSpace(string(out))
}

func newReport(n, reps int, base string) Report {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	var dirty []string
	for _, l := range strings.Split(gitOut("status", "--porcelain", "--", "../../internal", "../../cmd"), "\n") {
		if l != "" {
			dirty = append(dirty, l)
		}
	}
	return Report{Date: time.Now().UTC(), Commit: gitOut("rev-parse", "HEAD"), Dirty: dirty, BaseBin: base,
		Kernel: strings.TrimSpace(string(kernel)), NProc: runtime.NumCPU(), LoadStart: loadavg(), N: n, Reps: reps,
		GODEBUG: os.Getenv("GODEBUG"), GOGC: os.Getenv("GOGC"), MemLimit: os.Getenv("GOMEMLIMIT"),
		Method: "daemon -D; each figure after GET /debug/pprof/heap?gc=1 twice (runtime.GC) and 1 s; " +
			"per sandbox = (step - idle) / sandboxes; VmRSS/RssAnon/RssFile/Threads from /proc/PID/status, " +
			"runtime.MemStats from /debug/vars, goroutines from /debug/pprof/goroutine"}
}

// collect runs reps rounds; in each, every kind on every binary, the
// order rotated by round.
func collect(tb testing.TB, n, reps int, base string) Report {
	rep := newReport(n, reps, base)
	bins := [][2]string{{"", "tree"}}
	if base != "" {
		bins = append(bins, [2]string{base, "base"})
	}
	for _, lp := range strings.Split(os.Getenv("BENCH_BINS"), ",") {
		if label, path, ok := strings.Cut(lp, "="); ok {
			bins = append(bins, [2]string{path, label})
			rep.Bins = append(rep.Bins, lp)
		}
	}
	type job struct {
		bin, label string
		k          Kind
	}
	var jobs []job
	for _, b := range bins {
		for _, k := range Kinds {
			jobs = append(jobs, job{b[0], b[1], k})
		}
	}
	for round := range reps {
		for i := range jobs {
			j := jobs[(i+round)%len(jobs)]
			rep.Runs = append(rep.Runs, measure(tb, j.bin, j.label, j.k, n, round))
		}
	}
	rep.LoadEnd = loadavg()
	rep.Summary, rep.Split = summarize(rep.Runs)
	return rep
}

func summarize(runs []Run) (map[string]Per, map[string]Per) {
	by := map[string][]Per{}
	for _, r := range runs {
		key := r.Binary + "/" + r.Kind
		by[key] = append(by[key], r.Per[len(r.Per)-1])
	}
	sum := map[string]Per{}
	for key, ps := range by {
		sum[key] = medianPer(ps)
	}
	split := map[string]Per{}
	labels := map[string]bool{}
	for _, r := range runs {
		labels[r.Binary] = true
	}
	for b := range labels {
		run, okR := sum[b+"/run"]
		def, okD := sum[b+"/run-default"]
		bare, okB := sum[b+"/bare"]
		if okR && okD {
			split[b+"/resolver"] = sub(run, def)
		}
		if okD && okB {
			split[b+"/process"] = sub(def, bare)
		}
	}
	return sum, split
}

func medianPer(ps []Per) Per {
	med := func(f func(Per) float64) float64 {
		v := make([]float64, len(ps))
		for i, p := range ps {
			v[i] = f(p)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	return Per{Sandboxes: ps[0].Sandboxes,
		RSSKiB:        med(func(p Per) float64 { return p.RSSKiB }),
		RSSNoGCKiB:    med(func(p Per) float64 { return p.RSSNoGCKiB }),
		RSSAnonKiB:    med(func(p Per) float64 { return p.RSSAnonKiB }),
		RSSFileKiB:    med(func(p Per) float64 { return p.RSSFileKiB }),
		HeapInuseKiB:  med(func(p Per) float64 { return p.HeapInuseKiB }),
		StackInuseKiB: med(func(p Per) float64 { return p.StackInuseKiB }),
		StoreKiB:      med(func(p Per) float64 { return p.StoreKiB }),
		Threads:       med(func(p Per) float64 { return p.Threads }),
		Goroutines:    med(func(p Per) float64 { return p.Goroutines }),
		FDs:           med(func(p Per) float64 { return p.FDs })}
}

func sub(a, b Per) Per {
	return Per{Sandboxes: a.Sandboxes, RSSKiB: a.RSSKiB - b.RSSKiB, RSSNoGCKiB: a.RSSNoGCKiB - b.RSSNoGCKiB, RSSAnonKiB: a.RSSAnonKiB - b.RSSAnonKiB,
		RSSFileKiB: a.RSSFileKiB - b.RSSFileKiB, HeapInuseKiB: a.HeapInuseKiB - b.HeapInuseKiB,
		StackInuseKiB: a.StackInuseKiB - b.StackInuseKiB, StoreKiB: a.StoreKiB - b.StoreKiB,
		Threads: a.Threads - b.Threads, Goroutines: a.Goroutines - b.Goroutines, FDs: a.FDs - b.FDs}
}

func table(rep Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| %d sandboxes, per sandbox (median of %d) | RSS KiB | before GC | anon | file | heap in use | stacks | store | threads | goroutines | fds |\n", rep.N, rep.Reps)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	row := func(name string, p Per) {
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f |\n", name, p.RSSKiB, p.RSSNoGCKiB, p.RSSAnonKiB,
			p.RSSFileKiB, p.HeapInuseKiB, p.StackInuseKiB, p.StoreKiB, p.Threads, p.Goroutines, p.FDs)
	}
	for _, k := range slices.Sorted(maps.Keys(rep.Summary)) {
		row(k, rep.Summary[k])
	}
	for _, k := range slices.Sorted(maps.Keys(rep.Split)) {
		row(k+" (share)", rep.Split[k])
	}
	return b.String()
}

// TestMemorySmoke runs every kind with 20 sandboxes once, checking the
// figures are there and the processes are gone after rm.
func TestMemorySmoke(t *testing.T) {
	testutil.RequireRoot(t)
	rep := collect(t, 20, 1, "")
	if len(rep.Runs) != len(Kinds) {
		t.Fatalf("%d runs", len(rep.Runs))
	}
	for _, r := range rep.Runs {
		last := r.Snapshots[len(r.Snapshots)-1]
		if last.Sandboxes != 20 || last.RSSKiB <= 0 || last.Threads <= 0 || last.Goroutines <= 0 || last.HeapInuseKiB <= 0 {
			t.Errorf("%s: incomplete snapshot %+v", r.Kind, last)
		}
	}
	t.Log("\n" + table(rep))
}

// TestMemoryReport is the full run (BENCH_REPORT=1, bench/run.sh memory):
// BENCH_N sandboxes (default 400; measured at 50, 200 and 400) of each kind,
// BENCH_REPS rounds. BENCH_BASE_BIN=PATH and BENCH_BINS=LABEL=PATH,...
// add daemons built elsewhere to every round. BENCH_PROFILE_DIR=DIR saves each daemon's heap profile
// at the last step there (go tool pprof -sample_index=inuse_space).
func TestMemoryReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh memory)")
	}
	testutil.RequireRoot(t)
	rep := collect(t, attach.EnvInt("BENCH_N", 400), attach.EnvInt("BENCH_REPS", 3), os.Getenv("BENCH_BASE_BIN"))
	t.Log("\n" + table(rep))
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
