package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/testutil"
)

// Report is what TestCNIReport writes to BENCH_OUT.
type Report struct {
	Scenario   string         `json:"scenario"`
	Date       time.Time      `json:"date"`
	Machine    map[string]any `json:"machine"`
	LoadBefore string         `json:"loadavg_before"`
	LoadAfter  string         `json:"loadavg_after"`
	N          int            `json:"n"`
	Reps       int            `json:"reps"`
	Clients    int            `json:"clients"`
	Plugins    string         `json:"cni_plugins"` // the stamp of bench/refs/cni.sh
	ExecRoot   string         `json:"exec_root_parent,omitempty"`
	Runs       []RoundRun     `json:"runs"`
	// Pooled: "scenario/system" → all rounds' samples pooled (wall: median round).
	Pooled  map[string]attach.Run `json:"pooled"`
	Targets []Target              `json:"targets"`
	// Tether: the commit HEAD named when the run started (the tether
	// binary is built from the working tree right after) and the changes
	// to Go files the working tree had then (the build includes them).
	Tether    string   `json:"tether_commit,omitempty"`
	TreeDirty []string `json:"tree_changes,omitempty"`
	// PluginStart: a VERSION exec of each plugin through libcni (no
	// daemon, no kernel work): what starting the process costs, the floor
	// of every ADD and DEL. Keyed by plugin.
	PluginStart map[string]attach.Stats `json:"plugin_start,omitempty"`
	// DelRatios: the tether plugin's removal against the reference's in
	// the same run, like with like (see writeReport).
	DelRatios []Target `json:"del_ratios,omitempty"`
}

// RoundRun is one row of one round.
type RoundRun struct {
	Scenario string `json:"scenario"`
	Round    int    `json:"round"`
	attach.Run
}

// Target is one of the ratio targets, as measured.
type Target struct {
	Name  string  `json:"name"`
	Ratio float64 `json:"ratio"`
	Limit float64 `json:"limit"`
	Met   bool    `json:"met"`
}

// reportScenarios are the rows of a round, scenario by scenario; inside a
// scenario the order rotates from round to round.
var reportScenarios = []scenario{
	{"attach", []row{
		{"tether", attach.RunTether, attach.Options{}},
		{"cni", RunCNI, attach.Options{}},
		{"floor", attach.RunFloor, attach.Options{}},
		{"tether-cni", RunTetherCNI, attach.Options{}},
	}},
	{"attach-port", []row{
		{"tether", attach.RunTether, attach.Options{Publish: true}},
		{"cni", RunCNI, attach.Options{Publish: true}},
		{"tether-cni", RunTetherCNI, attach.Options{Publish: true}},
	}},
	{"parallel", []row{
		{"tether", attach.RunTether, attach.Options{Clients: clients}},
		{"cni", RunCNI, attach.Options{Clients: clients}},
		{"floor", attach.RunFloor, attach.Options{Clients: clients}},
		{"tether-cni", RunTetherCNI, attach.Options{Clients: clients}},
	}},
}

// TestCNIReport runs BENCH_REPS rounds (default 3); each round runs every
// scenario's rows with BENCH_N sandboxes (default 200): attach (Tether, CNI
// bridge + host-local, floor), attach with one published port (Tether, CNI
// + portmap nftables), and the same three as attach from 8 clients at once;
// removals are timed in every row. It prints Markdown tables and writes the
// JSON report to BENCH_OUT when set. Every scenario also has the row
// "tether-cni": the same libcni calls with the tether plugin and a daemon. Only with BENCH_REPORT=1 (bench/run.sh
// cni).
func TestCNIReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (sudo bench/run.sh cni)")
	}
	testutil.RequireRoot(t)
	Require(t)
	n, reps := attach.EnvInt("BENCH_N", 200), attach.EnvInt("BENCH_REPS", 3)
	_, stamp := Installed(BinDir())
	rep := Report{Scenario: "cni", Date: time.Now().UTC(), Machine: attach.Machine(), LoadBefore: testutil.LoadAvg(),
		N: n, Reps: reps, Clients: clients, Plugins: stamp, ExecRoot: os.Getenv("BENCH_EXEC_ROOT"),
		Pooled: map[string]attach.Run{}}
	rep.Tether, rep.TreeDirty = treeState()
	byKey := map[string][]attach.Run{}
	for round := range reps {
		for _, sc := range reportScenarios {
			for k := range sc.rows {
				rw := sc.rows[(k+round)%len(sc.rows)]
				var r attach.Run
				t.Run(fmt.Sprintf("rep%d/%s/%s", round+1, sc.name, rw.system), func(t *testing.T) {
					o := rw.opts
					o.N = n
					r = rw.run(t, o)
				})
				if t.Failed() {
					t.FailNow()
				}
				key := sc.name + "/" + rw.system
				byKey[key] = append(byKey[key], r)
				rep.Runs = append(rep.Runs, RoundRun{Scenario: sc.name, Round: round + 1, Run: r})
				settle()
			}
		}
	}
	for key, runs := range byKey {
		p := attach.Pooled(runs[0].System, runs)
		p.Steps = attach.PooledSteps(runs, slices.Concat(StepOrder, TetherStepOrder, attach.FloorSteps))
		rep.Pooled[key] = p
	}
	rep.PluginStart = pluginStart(t, n)
	rep.LoadAfter = testutil.LoadAvg()
	rep.Targets = targets(rep.Pooled)
	rep.DelRatios = delRatios(rep.Pooled)

	var out bytes.Buffer
	writeReport(&out, &rep, byKey)
	os.Stdout.Write(out.Bytes())
	if path := os.Getenv("BENCH_OUT"); path != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Println("results:", path)
	}
}

// settle gives the kernel time to free the previous row's namespaces and
// veths (it does so in the background) before the next row is timed.
func settle() { time.Sleep(3 * time.Second) }

func targets(p map[string]attach.Run) []Target {
	t := func(name, a, b string, limit float64) Target {
		r := attach.Ratio(p[a].Attach.P50, p[b].Attach.P50)
		return Target{Name: name, Ratio: r, Limit: limit, Met: r <= limit}
	}
	return []Target{
		t("attach p50: Tether ÷ CNI bridge+host-local", "attach/tether", "attach/cni", 0.1),
		t("attach p50: Tether ÷ raw floor", "attach/tether", "attach/floor", 2),
		t("attach with a port p50: Tether ÷ CNI bridge+portmap (nftables)", "attach-port/tether", "attach-port/cni", 0.05),
		t("ADD p50: Tether through CNI ÷ CNI bridge+host-local", "attach/tether-cni", "attach/cni", 0.2),
		t("ADD with a port p50: Tether through CNI ÷ CNI bridge+host-local+portmap (nftables)", "attach-port/tether-cni", "attach-port/cni", 0.2),
	}
}

// delRatios compares the tether plugin's DEL with the reference's, like
// with like: per removal the later of the answer (DelNetworkList and the
// namespace file's deletion) and the host-side veth's RTM_DELLINK; no
// target (the issue asks for the figure). Limit 0: none.
func delRatios(p map[string]attach.Run) []Target {
	var out []Target
	for _, sc := range []string{"attach", "attach-port", "parallel"} {
		x, y := p[sc+"/tether-cni"], p[sc+"/cni"]
		out = append(out,
			Target{Name: sc + ": DEL, later of answer and links gone, p50: Tether through CNI ÷ CNI reference", Ratio: attach.Ratio(x.Complete.P50, y.Complete.P50)},
			Target{Name: sc + ": DEL answer p50: Tether through CNI ÷ CNI reference", Ratio: attach.Ratio(x.Remove.P50, y.Remove.P50)},
			Target{Name: sc + ": DEL links gone p50: Tether through CNI ÷ CNI reference", Ratio: attach.Ratio(x.LinksGone.P50, y.LinksGone.P50)})
	}
	return out
}

// pluginStart times n VERSION execs of the tether plugin and of bridge,
// alternating, through libcni.
func pluginStart(t *testing.T, n int) map[string]attach.Stats {
	t.Helper()
	dirs := map[string]string{"tether": TetherBinDir(t, testutil.Binary(t)), "bridge": BinDir()}
	took := map[string][]time.Duration{}
	for range n {
		for _, p := range []string{"tether", "bridge"} {
			d, err := VersionExec(dirs[p], p)
			if err != nil {
				t.Fatal(err)
			}
			took[p] = append(took[p], d)
		}
	}
	return map[string]attach.Stats{"tether": attach.Summarize(took["tether"]), "bridge": attach.Summarize(took["bridge"])}
}

// treeState is the commit HEAD names and the Go files the working tree
// changes (git status), both "" / nil when git cannot tell.
func treeState() (string, []string) {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "", nil
	}
	st, _ := exec.Command("git", "status", "--porcelain", "--", "*.go").Output()
	var dirty []string
	for _, l := range strings.Split(strings.TrimSpace(string(st)), "\n") {
		if l != "" {
			dirty = append(dirty, strings.TrimSpace(l))
		}
	}
	return strings.TrimSpace(string(head)), dirty
}

// Labels of the systems in the tables.
var labels = map[string]string{
	"attach/tether":      "Tether",
	"attach/cni":         "CNI bridge + host-local",
	"attach/floor":       "raw netlink floor",
	"attach-port/tether": "Tether, `-p 20000+i:80`",
	"attach-port/cni":    "CNI bridge + host-local + portmap (nftables)",
	"parallel/tether":    "Tether",
	"parallel/cni":       "CNI bridge + host-local",
	"parallel/floor":     "raw netlink floor",

	"attach/tether-cni":      "Tether through CNI (libcni → `tether` plugin → daemon)",
	"attach-port/tether-cni": "Tether through CNI, `portMappings` 20000+i:80",
	"parallel/tether-cni":    "Tether through CNI",
}

func writeReport(w io.Writer, rep *Report, byKey map[string][]attach.Run) {
	p := rep.Pooled
	fmt.Fprintf(w, "\n## cni: %d sandboxes per row, %d rounds (%s; %v CPUs, %v; kernel %v; load %s → %s; plugins %s)\n",
		rep.N, rep.Reps, rep.Date.Format(time.RFC3339), rep.Machine["nproc"], rep.Machine["cpu"], rep.Machine["kernel"],
		rep.LoadBefore, rep.LoadAfter, rep.Plugins)

	fmt.Fprintf(w, "\n### 1. attach, %d in a row (all rounds pooled; total: sum of %d, median round)\n\n", rep.N, rep.N)
	latencyTable(w, p, []string{"attach/tether", "attach/cni", "attach/floor", "attach/tether-cni"})
	ratioLines(w, p, "attach/tether", []string{"attach/cni", "attach/floor"})
	ratioLines(w, p, "attach/tether-cni", []string{"attach/cni", "attach/tether"})

	fmt.Fprintf(w, "\n### 2. attach with one published port, %d in a row\n\n", rep.N)
	latencyTable(w, p, []string{"attach-port/tether", "attach-port/cni", "attach-port/tether-cni"})
	ratioLines(w, p, "attach-port/tether", []string{"attach-port/cni", "attach/tether"})
	ratioLines(w, p, "attach-port/tether-cni", []string{"attach-port/cni", "attach-port/tether", "attach/tether-cni"})

	fmt.Fprintf(w, "\n### 3. remove (detach + delete), %d in a row\n\n", rep.N)
	fmt.Fprintln(w, "API answer; links gone (the host-side veth's RTM_DELLINK, from the removal's start); both: the later of the two per")
	fmt.Fprintln(w, "sandbox. CNI and the floor delete the veth before they answer, Tether's namespace teardown after: the ratios")
	fmt.Fprintln(w, "compare \"both\" (like with like); the answer ratio compares different work.")
	fmt.Fprintln(w)
	removeTable(w, p, []string{"attach/tether", "attach/cni", "attach/floor", "attach/tether-cni",
		"attach-port/tether", "attach-port/cni", "attach-port/tether-cni",
		"parallel/tether", "parallel/cni", "parallel/floor", "parallel/tether-cni"})
	removeRatios(w, p, "attach/tether", []string{"attach/cni", "attach/floor"})
	removeRatios(w, p, "attach-port/tether", []string{"attach-port/cni"})
	removeRatios(w, p, "parallel/tether", []string{"parallel/cni", "parallel/floor"})
	removeRatios(w, p, "attach/tether-cni", []string{"attach/cni", "attach/tether"})
	removeRatios(w, p, "attach-port/tether-cni", []string{"attach-port/cni"})
	removeRatios(w, p, "parallel/tether-cni", []string{"parallel/cni"})

	fmt.Fprintf(w, "\n### 5. parallel: %d clients at once, %d attaches (wall: first start to last end, median round)\n\n", rep.Clients, rep.N)
	parallelTable(w, p, rep.N, "parallel/tether", []string{"parallel/cni", "parallel/floor"})
	fmt.Fprintln(w)
	parallelTable(w, p, rep.N, "parallel/tether-cni", []string{"parallel/cni", "parallel/tether"})

	fmt.Fprintf(w, "\n### per round: Tether ÷ reference, attach p50\n\n")
	fmt.Fprintln(w, "| round | ÷ CNI | ÷ floor | port: ÷ CNI+portmap | parallel: ÷ CNI | parallel: ÷ floor | parallel wall ÷ CNI |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for i := range rep.Reps {
		g := func(k string) attach.Run { return byKey[k][i] }
		fmt.Fprintf(w, "| %d | %.3f | %.2f | %.3f | %.3f | %.2f | %.3f |\n", i+1,
			attach.Ratio(g("attach/tether").Attach.P50, g("attach/cni").Attach.P50),
			attach.Ratio(g("attach/tether").Attach.P50, g("attach/floor").Attach.P50),
			attach.Ratio(g("attach-port/tether").Attach.P50, g("attach-port/cni").Attach.P50),
			attach.Ratio(g("parallel/tether").Attach.P50, g("parallel/cni").Attach.P50),
			attach.Ratio(g("parallel/tether").Attach.P50, g("parallel/floor").Attach.P50),
			attach.Ratio(g("parallel/tether").WallMS, g("parallel/cni").WallMS))
	}

	fmt.Fprintf(w, "\n### per round: Tether through CNI ÷ CNI reference, p50\n\n")
	fmt.Fprintln(w, "| round | ADD | ADD with a port | ADD, 8 clients | DEL (later of answer and links gone) | with a port | 8 clients |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for i := range rep.Reps {
		g := func(sc string) (attach.Run, attach.Run) { return byKey[sc+"/tether-cni"][i], byKey[sc+"/cni"][i] }
		a, b := g("attach")
		pa, pb := g("attach-port")
		qa, qb := g("parallel")
		fmt.Fprintf(w, "| %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", i+1,
			attach.Ratio(a.Attach.P50, b.Attach.P50), attach.Ratio(pa.Attach.P50, pb.Attach.P50), attach.Ratio(qa.Attach.P50, qb.Attach.P50),
			attach.Ratio(a.Complete.P50, b.Complete.P50), attach.Ratio(pa.Complete.P50, pb.Complete.P50), attach.Ratio(qa.Complete.P50, qb.Complete.P50))
	}

	fmt.Fprintf(w, "\n### where CNI's time goes (p50 / mean per sandbox, all rounds)\n\n")
	for _, k := range []string{"attach/cni", "attach-port/cni", "parallel/cni"} {
		attach.WriteSteps(w, labels[k]+", "+k, p[k].Steps, StepOrder)
		fmt.Fprintln(w)
	}
	for _, k := range []string{"attach/tether-cni", "attach-port/tether-cni", "parallel/tether-cni"} {
		attach.WriteSteps(w, labels[k]+", "+k, p[k].Steps, TetherStepOrder)
		fmt.Fprintln(w)
	}
	attach.WriteSteps(w, "floor step, attach/floor", p["attach/floor"].Steps, attach.FloorSteps)
	if ps := rep.PluginStart; ps != nil {
		fmt.Fprintf(w, "\nplugin start (VERSION through libcni, no daemon, %d each): tether p50 %.2f ms (p90 %.2f), bridge p50 %.2f ms (p90 %.2f)\n",
			ps["tether"].N, ps["tether"].P50, ps["tether"].P90, ps["bridge"].P50, ps["bridge"].P90)
	}

	fmt.Fprintf(w, "\n### targets\n\n")
	for _, t := range rep.Targets {
		verdict := "met"
		if !t.Met {
			verdict = fmt.Sprintf("MISSED by %.0f%%", (t.Ratio/t.Limit-1)*100)
		}
		fmt.Fprintf(w, "- %s = %.3f (target ≤ %g): %s\n", t.Name, t.Ratio, t.Limit, verdict)
	}
	for _, t := range rep.DelRatios {
		fmt.Fprintf(w, "- %s = %.3f (no target)\n", t.Name, t.Ratio)
	}
}

func latencyTable(w io.Writer, p map[string]attach.Run, keys []string) {
	fmt.Fprintf(w, "| system | attach p50 | p90 | p99 | total of N | max |\n|---|---:|---:|---:|---:|---:|\n")
	for _, k := range keys {
		s, total := p[k].Attach, p[k].WallMS
		fmt.Fprintf(w, "| %s | %.2f ms | %.2f ms | %.2f ms | %.0f ms | %.2f ms |\n", labels[k], s.P50, s.P90, s.P99, total, s.Max)
	}
}

// removeLabel is the system's label in the remove table.
func removeLabel(k string) string {
	switch {
	case strings.HasPrefix(k, "attach-port/"):
		return labels[k] + " (with its port)"
	case strings.HasPrefix(k, "parallel/"):
		return labels[k] + fmt.Sprintf(" (%d clients)", clients)
	}
	return labels[k]
}

func parallelTable(w io.Writer, p map[string]attach.Run, n int, a string, refs []string) {
	fmt.Fprintln(w, "| system | attach p50 | p90 | p99 | wall | attaches/s | remove (answer and links gone) p50 | remove wall (to the last link gone) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range append([]string{a}, refs...) {
		r := p[k]
		fmt.Fprintf(w, "| %s | %.2f ms | %.2f ms | %.2f ms | %.0f ms | %.0f | %.2f ms | %.0f ms |\n", labels[k],
			r.Attach.P50, r.Attach.P90, r.Attach.P99, r.WallMS, attach.Ratio(float64(n)*1000, r.WallMS), r.Complete.P50, removeWall(r))
	}
	for _, b := range refs {
		x, y := p[a], p[b]
		fmt.Fprintf(w, "| **%s ÷ %s** | **%.3f×** | %.3f× | %.3f× | %.3f× | | %.3f× | %.3f× |\n", labels[a], labels[b],
			attach.Ratio(x.Attach.P50, y.Attach.P50), attach.Ratio(x.Attach.P90, y.Attach.P90), attach.Ratio(x.Attach.P99, y.Attach.P99),
			attach.Ratio(x.WallMS, y.WallMS), attach.Ratio(x.Complete.P50, y.Complete.P50), attach.Ratio(removeWall(x), removeWall(y)))
	}
}

// ratioLines prints the attach ratios of system a to each reference b.
func ratioLines(w io.Writer, p map[string]attach.Run, a string, bs []string) {
	for _, b := range bs {
		x, y := p[a].Attach, p[b].Attach
		tx, ty := p[a].WallMS, p[b].WallMS
		fmt.Fprintf(w, "| **%s ÷ %s** | **%.3f×** | %.3f× | %.3f× | %.3f× | |\n", labels[a], labels[b],
			attach.Ratio(x.P50, y.P50), attach.Ratio(x.P90, y.P90), attach.Ratio(x.P99, y.P99), attach.Ratio(tx, ty))
	}
}

// removeTable prints each system's removal: the API answer, the links gone
// and the later of both per sandbox, with the row's wall times.
func removeTable(w io.Writer, p map[string]attach.Run, keys []string) {
	fmt.Fprintln(w, "| system | answer p50 | p99 | links gone p50 | p99 | **both p50** | p99 | answer wall | links-gone wall |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range keys {
		r := p[k]
		name := removeLabel(k)
		fmt.Fprintf(w, "| %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms | **%.2f ms** | %.2f ms | %.0f ms | %.0f ms |\n", name,
			r.Remove.P50, r.Remove.P99, r.LinksGone.P50, r.LinksGone.P99, r.Complete.P50, r.Complete.P99, r.RemoveWallMS, r.LinksGoneWallMS)
	}
}

// removeRatios prints system a's removal against each reference b: like
// with like (the later of answer and links gone, p50 and p99, and the wall
// until the last link was gone), and the answers alone.
func removeRatios(w io.Writer, p map[string]attach.Run, a string, bs []string) {
	suffix := ""
	if strings.HasPrefix(a, "parallel/") {
		suffix = fmt.Sprintf(", %d clients", clients)
	}
	for _, b := range bs {
		x, y := p[a], p[b]
		fmt.Fprintf(w, "| **%s ÷ %s%s** | %.3f× (not like for like) | | | | **%.3f×** | %.3f× | | %.3f× (both walls) |\n", labels[a], labels[b], suffix,
			attach.Ratio(x.Remove.P50, y.Remove.P50), attach.Ratio(x.Complete.P50, y.Complete.P50),
			attach.Ratio(x.Complete.P99, y.Complete.P99), attach.Ratio(removeWall(x), removeWall(y)))
	}
}

// removeWall is a row's removal wall time until its last answer and its
// last link gone, whichever came later.
func removeWall(r attach.Run) float64 { return max(r.RemoveWallMS, r.LinksGoneWallMS) }
