package ports

// The proxy scenario (issue 19): iperf3, one stream, through a port
// published on 127.0.0.1 ÷ iperf3 from the same host namespace straight to
// the sandbox's address, interleaved round by round. Two daemons run side
// by side: "redirect" (the default: a connect() to 127.0.0.1:P from the
// daemon's host namespace is rewritten to the sandbox by the cgroup/connect4
// program, internal/portmap/redirect_linux.go, so nothing is proxied) and
// "splice" (started with TETHER_PROXY_REDIRECT=0: the userland proxy's
// splice relay serves the port, the path before the redirect). BENCH_PROXY_GOSPLICE=1
// adds a third, "gosplice" (TETHER_PROXY_RELAY=gosplice as well: the relay
// before issue 19). Besides Gbit/s each run records CPU seconds per Gbit:
// the daemon's (the relay) and the iperf3 client's + server's + the
// daemon's (the path's whole cost, softirq included where it ran in those
// processes' context).
//
// sudo bench/run.sh proxy writes bench/results/proxy-<date>.json.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

const (
	proxyHostPort = 41201 // 127.0.0.1:41201 in each daemon's host namespace
	proxySrvPort  = 5201
)

// ProxyRun is one iperf3 client run.
type ProxyRun struct {
	Round  int     `json:"round"`
	Relay  string  `json:"relay"` // the daemon: redirect, splice or gosplice
	Path   string  `json:"path"`  // "direct" or "proxy"
	Gbps   float64 `json:"gbit_per_s"`
	Gbit   float64 `json:"gbit"` // received
	Secs   float64 `json:"wall_s"`
	Daemon float64 `json:"daemon_cpu_s"`
	Client float64 `json:"client_cpu_s"`
	Server float64 `json:"server_cpu_s"`
	Busy   float64 `json:"machine_busy_cpus"`
	// DaemonPerGbit and PathPerGbit are CPU seconds per Gbit received.
	DaemonPerGbit float64 `json:"daemon_cpu_s_per_gbit"`
	PathPerGbit   float64 `json:"path_cpu_s_per_gbit"`
	ProxySeen     bool    `json:"proxy_seen"`
}

// RelaySummary is one daemon's figures over the rounds.
type RelaySummary struct {
	Ratios []float64 `json:"ratio_per_round"` // proxy ÷ direct, same round
	Best   float64   `json:"ratio_best"`
	Median float64   `json:"ratio_median"`
	// Medians over the rounds.
	DirectGbps        float64 `json:"direct_gbit_per_s_median"`
	ProxyGbps         float64 `json:"proxy_gbit_per_s_median"`
	DaemonPerGbit     float64 `json:"daemon_cpu_s_per_gbit_median"`
	DirectPathPerGbit float64 `json:"direct_path_cpu_s_per_gbit_median"`
	ProxyPathPerGbit  float64 `json:"proxy_path_cpu_s_per_gbit_median"`
	CostRatio         float64 `json:"direct_over_proxy_path_cpu_per_gbit"`
}

// ProxyReport is the JSON written by TestProxyReport.
type ProxyReport struct {
	Date      time.Time               `json:"date"`
	Commit    string                  `json:"commit"`
	Dirty     []string                `json:"dirty,omitempty"`
	Kernel    string                  `json:"kernel"`
	NProc     int                     `json:"nproc"`
	Go        string                  `json:"go"`
	LoadStart string                  `json:"loadavg_start"`
	LoadEnd   string                  `json:"loadavg_end"`
	Secs      int                     `json:"iperf_secs"`
	Rounds    int                     `json:"rounds"`
	Method    string                  `json:"method"`
	Runs      []ProxyRun              `json:"runs"`
	Relays    map[string]RelaySummary `json:"relays"`
}

// proxyDaemon is one daemon with an iperf3 server sandbox publishing
// 127.0.0.1:proxyHostPort.
type proxyDaemon struct {
	relay   string
	t       *attach.Tether
	srvAddr string
	srvPID  int
}

// proxyKind is a daemon to start: its name and environment.
type proxyKind struct {
	name string
	env  map[string]string
}

var (
	kindRedirect = proxyKind{"redirect", map[string]string{"TETHER_PROXY_REDIRECT": "", "TETHER_PROXY_RELAY": ""}}
	kindSplice   = proxyKind{"splice", map[string]string{"TETHER_PROXY_REDIRECT": "0", "TETHER_PROXY_RELAY": ""}}
	kindGoSplice = proxyKind{"gosplice", map[string]string{"TETHER_PROXY_REDIRECT": "0", "TETHER_PROXY_RELAY": "gosplice"}}
)

// proxyKinds is what a run measures.
func proxyKinds() []proxyKind {
	ks := []proxyKind{kindRedirect, kindSplice}
	if os.Getenv("BENCH_PROXY_GOSPLICE") == "1" {
		ks = append(ks, kindGoSplice)
	}
	return ks
}

// startTetherEnv starts a daemon with env set in its environment (the
// daemon inherits the test's at start); the test's own is restored.
func startTetherEnv(tb testing.TB, env map[string]string) *attach.Tether {
	tb.Helper()
	restore := map[string]*string{}
	for key, v := range env {
		if old, had := os.LookupEnv(key); had {
			restore[key] = &old
		} else {
			restore[key] = nil
		}
		os.Setenv(key, v)
	}
	t := attach.StartTether(tb)
	for key, old := range restore {
		if old != nil {
			os.Setenv(key, *old)
		} else {
			os.Unsetenv(key)
		}
	}
	return t
}

// startProxyDaemon starts a daemon with k's environment and its iperf3
// server.
func startProxyDaemon(tb testing.TB, k proxyKind) *proxyDaemon {
	tb.Helper()
	t := startTetherEnv(tb, k.env)
	relay := k.name
	srv, _, err := create(t, "ipf", fmt.Sprintf("127.0.0.1:%d:%d", proxyHostPort, proxySrvPort))
	if err != nil {
		tb.Fatal(err)
	}
	pid, _, err := t.Exec("ipf", "iperf3", "-s", "-p", strconv.Itoa(proxySrvPort))
	if err != nil {
		tb.Fatal(err)
	}
	return &proxyDaemon{relay: relay, t: t, srvAddr: srv.Networks["bench"].IPAddress.String(), srvPID: pid}
}

// run is one iperf3 client run from the daemon's host namespace, retried
// (bounded) while the server is busy or not yet listening.
func (d *proxyDaemon) run(path string, secs int) (ProxyRun, error) {
	r := ProxyRun{Relay: d.relay, Path: path}
	to, port := d.srvAddr, proxySrvPort
	if path == "proxy" {
		to, port = "127.0.0.1", proxyHostPort
	}
	var lastErr error
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+20)*time.Second)
		cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+d.t.NS, "iperf3", "-c", to,
			"-p", strconv.Itoa(port), "-t", strconv.Itoa(secs), "-J", "--connect-timeout", "2000")
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		d0, s0, b0, t0 := attach.ProcTicks(d.t.PID), attach.ProcTicks(d.srvPID), attach.BusyTicks(), time.Now()
		seen := make(chan bool, 1)
		if err := cmd.Start(); err != nil {
			cancel()
			return r, err
		}
		go func() { // one look, halfway: an established socket on the published port
			time.Sleep(time.Duration(secs) * time.Second / 2)
			s, err := testutil.InNS(d.t.NS, "ss", "-Htn", "state", "established", "sport", "=", ":"+strconv.Itoa(proxyHostPort))
			seen <- err == nil && strings.TrimSpace(s) != ""
		}()
		err := cmd.Wait()
		r.Secs = time.Since(t0).Seconds()
		r.Daemon = float64(attach.ProcTicks(d.t.PID)-d0) / attach.ClockTicks
		r.Server = float64(attach.ProcTicks(d.srvPID)-s0) / attach.ClockTicks
		r.Busy = float64(attach.BusyTicks()-b0) / attach.ClockTicks / r.Secs
		if cmd.ProcessState != nil {
			r.Client = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
		}
		r.ProxySeen = <-seen
		cancel()
		var j iperfJSON
		if jerr := json.Unmarshal([]byte(out.String()), &j); jerr != nil {
			lastErr = fmt.Errorf("iperf3 to %s:%d: %v, output: %.300s", to, port, err, out.String())
		} else if j.Error != "" || err != nil {
			lastErr = fmt.Errorf("iperf3 to %s:%d: %v %s", to, port, err, j.Error)
		} else if j.End.SumReceived.Bytes <= 0 {
			return r, fmt.Errorf("iperf3 to %s:%d: nothing received", to, port)
		} else {
			r.Gbps = j.End.SumReceived.BitsPerSecond / 1e9
			r.Gbit = float64(j.End.SumReceived.Bytes) * 8 / 1e9
			r.DaemonPerGbit = r.Daemon / r.Gbit
			r.PathPerGbit = (r.Daemon + r.Client + r.Server) / r.Gbit
			return r, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return r, lastErr
}

// measureProxy runs rounds × (direct, proxy) on every daemon, the order of
// daemons and of the two paths rotated by round.
func measureProxy(tb testing.TB, kinds []proxyKind, rounds, secs int) ProxyReport {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	rep := ProxyReport{Date: time.Now().UTC(), Commit: gitOut("rev-parse", "HEAD"), Dirty: dirtyProduct(),
		Kernel: strings.TrimSpace(string(kernel)), NProc: runtime.NumCPU(), Go: runtime.Version(),
		LoadStart: testutil.LoadAvg(), Secs: secs, Rounds: rounds, Relays: map[string]RelaySummary{},
		Method: "per round and daemon: iperf3 -c (one stream, client sends) from the daemon's host namespace to " +
			"the sandbox address (direct) and to 127.0.0.1:41201 published as 127.0.0.1:41201:5201 (path \"proxy\": " +
			"the connect redirect on daemon \"redirect\", the userland proxy's splice relay on daemon \"splice\" " +
			"started with TETHER_PROXY_REDIRECT=0); " +
			"order of daemons and paths rotated by round; ratio = proxy ÷ direct of the same round and daemon; " +
			"CPU from /proc/PID/stat of the daemon and the iperf3 server, the client's rusage"}
	var ds []*proxyDaemon
	for _, k := range kinds {
		ds = append(ds, startProxyDaemon(tb, k))
	}
	for round := range rounds {
		order := slices.Clone(ds)
		for range round % len(order) {
			order = append(order[1:], order[0])
		}
		for _, d := range order {
			paths := []string{"direct", "proxy"}
			if round%2 == 1 {
				slices.Reverse(paths)
			}
			for _, p := range paths {
				run, err := d.run(p, secs)
				if err != nil {
					tb.Fatalf("%s %s: %v", d.relay, p, err)
				}
				run.Round = round
				rep.Runs = append(rep.Runs, run)
			}
		}
	}
	for _, d := range ds {
		rep.Relays[d.relay] = summarize(rep.Runs, d.relay, rounds)
	}
	rep.LoadEnd = testutil.LoadAvg()
	return rep
}

func summarize(runs []ProxyRun, relay string, rounds int) RelaySummary {
	var s RelaySummary
	direct, proxy := make([]ProxyRun, rounds), make([]ProxyRun, rounds)
	for _, r := range runs {
		if r.Relay != relay {
			continue
		}
		if r.Path == "direct" {
			direct[r.Round] = r
		} else {
			proxy[r.Round] = r
		}
	}
	var dg, pg, dc, dp, pp []float64
	for i := range rounds {
		s.Ratios = append(s.Ratios, ratio(proxy[i].Gbps, direct[i].Gbps))
		dg, pg = append(dg, direct[i].Gbps), append(pg, proxy[i].Gbps)
		dc = append(dc, proxy[i].DaemonPerGbit)
		dp, pp = append(dp, direct[i].PathPerGbit), append(pp, proxy[i].PathPerGbit)
	}
	s.Best, s.Median = slices.Max(s.Ratios), stats.Median(s.Ratios)
	s.DirectGbps, s.ProxyGbps = stats.Median(dg), stats.Median(pg)
	s.DaemonPerGbit, s.DirectPathPerGbit, s.ProxyPathPerGbit = stats.Median(dc), stats.Median(dp), stats.Median(pp)
	s.CostRatio = ratio(s.DirectPathPerGbit, s.ProxyPathPerGbit)
	return s
}

func gitOut(args ...string) string {
	out, _ := exec.Command("git", args...).Output()
	return strings.TrimSpace(string(out))
}

// dirtyProduct lists uncommitted changes under internal/ and cmd/.
func dirtyProduct() []string {
	var dirty []string
	for _, l := range strings.Split(gitOut("status", "--porcelain", "--", "../../internal", "../../cmd"), "\n") {
		if l != "" {
			dirty = append(dirty, l)
		}
	}
	return dirty
}

// checkProxyRuns: every run carried data; the proxy path of a proxying
// daemon went through its proxy (an established socket on the published
// port in the host namespace), the redirect daemon's did not (the client
// was connected to the sandbox), nor did any direct run.
func checkProxyRuns(tb testing.TB, rep ProxyReport, want int) {
	tb.Helper()
	if len(rep.Runs) != want {
		tb.Fatalf("%d runs, want %d", len(rep.Runs), want)
	}
	for _, r := range rep.Runs {
		if r.Gbps <= 0 {
			tb.Errorf("%s %s round %d: no throughput", r.Relay, r.Path, r.Round)
		}
		if want := r.Path == "proxy" && r.Relay != kindRedirect.name; r.ProxySeen != want {
			tb.Errorf("%s %s round %d: proxy socket seen = %v, want %v", r.Relay, r.Path, r.Round, r.ProxySeen, want)
		}
	}
}

// TestProxySmoke runs the scenario small (one round, 1-s runs, both
// daemons) so it does not rot; it checks correctness only.
func TestProxySmoke(t *testing.T) {
	testutil.RequireRoot(t)
	attach.RequireIperf3(t)
	ks := proxyKinds()
	rep := measureProxy(t, ks, 1, 1)
	checkProxyRuns(t, rep, 2*len(ks))
}

// TestProxyReport is the full run (BENCH_REPORT=1): BENCH_REPS (7) rounds
// of BENCH_IPERF_SECS (4) s runs, the redirect and the splice relay (and
// gosplice with BENCH_PROXY_GOSPLICE=1).
func TestProxyReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh proxy)")
	}
	testutil.RequireRoot(t)
	attach.RequireIperf3(t)
	rounds, secs := attach.EnvInt("BENCH_REPS", 7), attach.EnvInt("BENCH_IPERF_SECS", 4)
	ks := proxyKinds()
	rep := measureProxy(t, ks, rounds, secs)
	checkProxyRuns(t, rep, rounds*2*len(ks))
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %d CPUs, %s; commit %s; load %s → %s\n\n", rep.Kernel, rep.NProc, rep.Go, rep.Commit, rep.LoadStart, rep.LoadEnd)
	fmt.Fprintf(&b, "| daemon | loopback ÷ direct, median | best | per round | direct Gbit/s | proxy Gbit/s | daemon CPU s/Gbit | path CPU s/Gbit direct / proxy | cost ratio |\n|---|---:|---:|---|---:|---:|---:|---:|---:|\n")
	for _, k := range ks {
		name := k.name
		s := rep.Relays[name]
		var rs []string
		for _, v := range s.Ratios {
			rs = append(rs, fmt.Sprintf("%.2f", v))
		}
		fmt.Fprintf(&b, "| %s | **%.2f** | %.2f | %s | %.2f | %.2f | %.4f | %.4f / %.4f | %.2f |\n", name, s.Median, s.Best,
			strings.Join(rs, ", "), s.DirectGbps, s.ProxyGbps, s.DaemonPerGbit, s.DirectPathPerGbit, s.ProxyPathPerGbit, s.CostRatio)
	}
	t.Log("\n" + b.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
