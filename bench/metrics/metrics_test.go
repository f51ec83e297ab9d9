package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/metrics"
	"github.com/tether-net/tether/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// Report is the JSON TestMetricsReport writes.
type Report struct {
	Scenario   string         `json:"scenario"`
	Date       time.Time      `json:"date"`
	Commit     string         `json:"commit"`
	Machine    map[string]any `json:"machine"` // nproc, kernel, cpu, loadavg
	LoadBefore string         `json:"loadavg_before"`
	LoadAfter  string         `json:"loadavg_after"`
	N          int            `json:"n"`
	Reps       int            `json:"reps"`
	// With and Without: every attach (sandbox create round trip) of all
	// rounds, metrics on and off.
	With    attach.Stats `json:"with_metrics"`
	Without attach.Stats `json:"without_metrics"`
	// Ratio: median with / median without, all rounds pooled; RoundRatios
	// the same per round (each round runs both daemons back to back).
	Ratio       float64   `json:"ratio_p50"`
	RatioMean   float64   `json:"ratio_mean"`
	RoundRatios []float64 `json:"round_ratios_p50"`
	Order       []string  `json:"order"` // which daemon ran first, per round
	// HookNS: what the attach hooks do per attach (countOp and
	// timedConnect: two clock readings, a histogram observation, a
	// counter increment), timed in this process with testing.Benchmark;
	// HookShare: that over the median attach without metrics. Quieter
	// than the ratio, which the daemons' noise dominates.
	HookNS    float64 `json:"hook_ns_per_attach"`
	HookShare float64 `json:"hook_share_of_p50"`
	Note      string  `json:"note"`
}

// hookCost times what an attach's metrics hooks do, in ns per attach.
func hookCost() float64 {
	r := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			t0 := time.Now()
			metrics.Operations.WithLabelValues("sandbox_create").Inc()
			metrics.AttachSeconds.WithLabelValues("bridge").Observe(time.Since(t0).Seconds())
		}
	})
	return float64(r.T.Nanoseconds()) / float64(r.N)
}

// daemon is a tether daemon in its own namespace with network "bench".
type daemon struct {
	d *testutil.Daemon
	c *http.Client
}

func startDaemon(tb testing.TB, metricsOn bool) *daemon {
	tb.Helper()
	ns := testutil.NetNS(tb, "t20m")
	d := testutil.NewDaemon(tb, ns)
	if !metricsOn {
		d.Env = []string{"TETHER_METRICS=0"}
	}
	if err := d.Start(); err != nil {
		tb.Fatal(err)
	}
	d.MustTether("network", "create", "--subnet", "10.123.0.0/16", "bench")
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}
	return &daemon{d: d, c: c}
}

// attachRow creates n sandboxes on "bench" one after the other and returns
// each create's round trip, then removes them.
func (x *daemon) attachRow(tb testing.TB, n int) []time.Duration {
	tb.Helper()
	out := make([]time.Duration, 0, n)
	for i := range n {
		body, _ := json.Marshal(api.SandboxCreateRequest{Name: fmt.Sprint("s", i), Networks: []api.NetworkAttach{{Network: "bench"}}})
		start := time.Now()
		code, resp, err := attach.Call(x.c, http.MethodPost, "/tether/v1/sandboxes", body)
		took := time.Since(start)
		if err != nil || code != http.StatusCreated {
			tb.Fatalf("create s%d: %d %s %v", i, code, resp, err)
		}
		out = append(out, took)
	}
	for i := range n {
		if code, resp, err := attach.Call(x.c, http.MethodDelete, fmt.Sprintf("/tether/v1/sandboxes/s%d", i), nil); err != nil || code != http.StatusNoContent {
			tb.Fatalf("remove s%d: %d %s %v", i, code, resp, err)
		}
	}
	return out
}

// attachesCounted is tether_attach_duration_seconds{driver="bridge"}'s
// sample count, or -1 when GET /metrics does not answer 200 (metrics off).
func (x *daemon) attachesCounted(tb testing.TB) int {
	tb.Helper()
	code, body, err := attach.Call(x.c, http.MethodGet, "/metrics", nil)
	if err != nil {
		tb.Fatal(err)
	}
	if code != http.StatusOK {
		return -1
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		tb.Fatalf("parse /metrics: %v", err)
	}
	n := 0
	for _, m := range mfs["tether_attach_duration_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "driver" && l.GetValue() == "bridge" {
				n += int(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return n
}

// round runs one daemon with metrics and one without, first as first says,
// each in its own namespace, stopped and deleted before the next starts.
func round(tb testing.TB, n int, withFirst bool) (with, without []time.Duration) {
	tb.Helper()
	for _, on := range []bool{withFirst, !withFirst} {
		var row []time.Duration
		func() {
			x := startDaemon(tb, on)
			defer x.d.Stop()
			row = x.attachRow(tb, n)
			got := x.attachesCounted(tb)
			switch {
			case on && got != n:
				tb.Errorf("metrics on: %d attaches counted, want %d", got, n)
			case !on && got != -1:
				tb.Errorf("metrics off: GET /metrics answered (%d attaches counted), want 404", got)
			}
		}()
		if on {
			with = row
		} else {
			without = row
		}
	}
	return with, without
}

func median(ds []time.Duration) float64 { return attach.Summarize(ds).P50 }

func measure(tb testing.TB, n, reps int) Report {
	tb.Helper()
	rep := Report{Scenario: "metrics", Date: time.Now().UTC(), Commit: gitCommit(), Machine: attach.Machine(),
		LoadBefore: testutil.LoadAvg(), N: n, Reps: reps,
		Note: "noisy unless the machine is quiet: compare ratios of one run, not times across runs"}
	var with, without []time.Duration
	for r := range reps {
		withFirst := r%2 == 0
		w, wo := round(tb, n, withFirst)
		with, without = append(with, w...), append(without, wo...)
		rep.RoundRatios = append(rep.RoundRatios, median(w)/median(wo))
		rep.Order = append(rep.Order, map[bool]string{true: "with", false: "without"}[withFirst]+" first")
	}
	rep.With, rep.Without = attach.Summarize(with), attach.Summarize(without)
	rep.Ratio = rep.With.P50 / rep.Without.P50
	rep.RatioMean = rep.With.Mean / rep.Without.Mean
	rep.HookNS = hookCost()
	rep.HookShare = rep.HookNS / (rep.Without.P50 * 1e6)
	rep.LoadAfter = testutil.LoadAvg()
	return rep
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func summary(rep Report) string {
	rr := slices.Clone(rep.RoundRatios)
	return fmt.Sprintf("attach (create + 1 bridge attach, API round trip), %d × %d per side\n"+
		"  with metrics:    p50 %.2f ms  p90 %.2f ms  mean %.2f ms\n"+
		"  without metrics: p50 %.2f ms  p90 %.2f ms  mean %.2f ms\n"+
		"  ratio p50 %.3f  mean %.3f  per round %.3f  (load %s -> %s)\n"+
		"  the hooks alone: %.0f ns per attach, %.4f%% of the median attach",
		rep.Reps, rep.N, rep.With.P50, rep.With.P90, rep.With.Mean, rep.Without.P50, rep.Without.P90, rep.Without.Mean,
		rep.Ratio, rep.RatioMean, rr, rep.LoadBefore, rep.LoadAfter, rep.HookNS, 100*rep.HookShare)
}

// TestMetricsSmoke is the small run of the suite: both daemons, a few
// attaches each, the checks of round (every attach counted with metrics,
// 404 without); no figure.
func TestMetricsSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	rep := measure(t, 10, 1)
	t.Log("\n" + summary(rep))
	if rep.With.N != 10 || rep.Without.N != 10 || len(rep.RoundRatios) != 1 {
		t.Errorf("incomplete report: %+v", rep)
	}
}

// TestMetricsReport is the full run (BENCH_REPORT=1, bench/run.sh metrics):
// BENCH_REPS rounds (default 12: 6 with each daemon first) of BENCH_N (200)
// attaches per daemon.
func TestMetricsReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (sudo bench/run.sh metrics)")
	}
	testutil.RequireRoot(t)
	rep := measure(t, attach.EnvInt("BENCH_N", 200), attach.EnvInt("BENCH_REPS", 12))
	t.Log("\n" + summary(rep))
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Println("results:", out)
	}
}
