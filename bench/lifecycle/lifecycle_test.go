// Package lifecycle measures what the firewall-and-lifecycle issue and the
// sandbox-lifecycle-safety issue ask for, each against a reference taken in
// the same run:
//   - restore: daemon start-up with N sandboxes attached vs with none;
//   - restore under each start mode (nsenter --net, ip netns exec, unshare -m
//     --propagation slave): N sandboxes each with a running process vs none,
//     on the same daemon, and whether every sandbox survived the restarts;
//   - network add: creating a network when 100 exist vs when none do
//     (ratio; the target is about 1: set elements, not rule rewrites);
//   - restart gap: a ping every 10 ms between two sandboxes across a daemon
//     restart (lost packets; the target is none), under each start mode.
//
// sudo bench/run.sh lifecycle writes bench/results/lifecycle-<date>.json.
package lifecycle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
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

// Report is the JSON written by TestLifecycleReport. The fields up to
// Restart come from one daemon started with nsenter --net, its sandboxes
// without processes; Modes has the restore and restart figures per start
// mode, with a process in every sandbox.
type Report struct {
	Date        time.Time      `json:"date"`
	Machine     map[string]any `json:"machine,omitempty"`
	LoadBefore  string         `json:"loadavg_before,omitempty"`
	LoadAfter   string         `json:"loadavg_after,omitempty"`
	Tether      string         `json:"tether,omitempty"` // git describe of the tree measured
	Sandboxes   int            `json:"sandboxes"`
	RestoreIdle attach.Stats   `json:"restore_idle"`
	RestoreFull attach.Stats   `json:"restore_full"`
	NetAddFirst attach.Stats   `json:"network_add_first"`
	NetAddLater attach.Stats   `json:"network_add_after_100"`
	// The same with an explicit --subnet (no route-aware choice).
	NetAddFirstExplicit attach.Stats  `json:"network_add_first_explicit"`
	NetAddLaterExplicit attach.Stats  `json:"network_add_after_100_explicit"`
	PingSent            int           `json:"ping_sent"`
	PingLost            int           `json:"ping_lost"`
	Restart             time.Duration `json:"restart_ns"`
	PingMaxGapMS        float64       `json:"ping_max_gap_ms"`
	Modes               []ModeReport  `json:"modes,omitempty"`
}

var readyRE = regexp.MustCompile(`msg="engine ready" took=([0-9.]+[a-zµ]+)`)

// restartTimes stops and starts the daemon reps times and returns the
// engine's restore time of each start (the daemon logs it: loading records,
// checking the kernel, reconciling).
func restartTimes(tb testing.TB, d *testutil.Daemon, reps int) []time.Duration {
	var out []time.Duration
	for range reps {
		d.Stop()
		if err := d.Start(); err != nil {
			tb.Fatal(err)
		}
		m := readyRE.FindAllStringSubmatch(d.Log(), -1)
		if m == nil {
			tb.Fatalf("no \"engine ready\" line in the daemon log:\n%s", d.Log())
		}
		took, err := time.ParseDuration(m[len(m)-1][1])
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, took)
	}
	return out
}

// netAdds creates count networks through the API and returns each round
// trip. With octet 0 the daemon chooses the subnet (the route-aware choice is
// part of the cost); otherwise network i gets 10.<octet+i>.0.0/24.
func netAdds(tb testing.TB, t *attach.Tether, prefix string, count, octet int) []time.Duration {
	var out []time.Duration
	for i := range count {
		cfg := ""
		if octet > 0 {
			cfg = fmt.Sprintf(`{"Subnet":"10.%d.0.0/24"}`, octet+i)
		}
		body := fmt.Sprintf(`{"Name":"%s%d","Driver":"bridge","IPAM":{"Config":[%s]}}`, prefix, i, cfg)
		start := time.Now()
		code, resp, err := t.Call("POST", "/networks/create", []byte(body))
		if err != nil || code != 201 {
			tb.Fatalf("network create %s%d: %d %s %v", prefix, i, code, resp, err)
		}
		out = append(out, time.Since(start))
	}
	return out
}

// PingGap is what a ping every 10 ms saw across a daemon restart.
type PingGap struct {
	Sent, Received int
	// MaxGap: the longest run of unanswered echo requests, times the
	// interval; LastSeq: the last sequence number answered (of 1..Sent).
	MaxGap  time.Duration
	LastSeq int
	Restart time.Duration // from the stop's start until the daemon answered again
}

var (
	pingSummaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	pingSeqRE     = regexp.MustCompile(`icmp_seq=(\d+) `)
)

// pingAcrossRestart pings addr from inside the network namespace file
// nsPath (a sandbox's: its NetNS under nsenter, /proc/PID/ns/net of its
// process under any mode) every 10 ms for count packets while the daemon
// stops and starts a quarter of the way in.
func pingAcrossRestart(tb testing.TB, t *attach.Tether, nsPath string, addr netip.Addr, count int) PingGap {
	tb.Helper()
	const interval = 10 * time.Millisecond
	ping := exec.Command("nsenter", "--net="+nsPath, "ping", "-n", "-i", "0.01", "-c", strconv.Itoa(count), "-W", "1", addr.String())
	var out bytes.Buffer
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = ping.Process.Kill(); _ = ping.Wait() }()
	time.Sleep(time.Duration(count/4) * interval)
	stop := time.Now()
	t.D.Stop()
	if err := t.D.Start(); err != nil {
		tb.Fatal(err)
	}
	g := PingGap{Restart: time.Since(stop)}
	_ = ping.Wait()
	m := pingSummaryRE.FindStringSubmatch(out.String())
	if m == nil {
		tb.Fatalf("ping output: %s", out.String())
	}
	g.Sent, _ = strconv.Atoi(m[1])
	g.Received, _ = strconv.Atoi(m[2])
	answered := map[int]bool{}
	for _, s := range pingSeqRE.FindAllStringSubmatch(out.String(), -1) {
		seq, _ := strconv.Atoi(s[1])
		answered[seq] = true
		g.LastSeq = max(g.LastSeq, seq)
	}
	run := 0
	for seq := 1; seq <= g.Sent; seq++ {
		if answered[seq] {
			run = 0
			continue
		}
		run++
		g.MaxGap = max(g.MaxGap, time.Duration(run)*interval)
	}
	return g
}

// measure is the nsenter daemon's part of the report: restore with n
// sandboxes (no process) vs none, network creation with nets networks, the
// ping across a restart (pings packets).
func measure(tb testing.TB, n, reps, nets, pings int) Report {
	rep := Report{Date: time.Now().UTC(), Sandboxes: n}
	t := attach.StartTether(tb)
	rep.RestoreIdle = attach.Summarize(restartTimes(tb, t.D, reps))
	for i := range n {
		if _, _, err := t.Create(fmt.Sprintf("s%d", i)); err != nil {
			tb.Fatal(err)
		}
	}
	rep.RestoreFull = attach.Summarize(restartTimes(tb, t.D, reps))
	if sbs, err := t.List(); err != nil || len(sbs) != n {
		tb.Fatalf("after restarts: %d sandboxes, %v", len(sbs), err)
	}
	const sample = 10
	rep.NetAddFirst = attach.Summarize(netAdds(tb, t, "first", sample, 0))
	rep.NetAddFirstExplicit = attach.Summarize(netAdds(tb, t, "firstx", sample, 60))
	netAdds(tb, t, "fill", nets-2*sample, 0)
	rep.NetAddLater = attach.Summarize(netAdds(tb, t, "later", sample, 0))
	rep.NetAddLaterExplicit = attach.Summarize(netAdds(tb, t, "laterx", sample, 80))
	a, _, err := t.Create("pa")
	if err != nil {
		tb.Fatal(err)
	}
	b, _, err := t.Create("pb")
	if err != nil {
		tb.Fatal(err)
	}
	g := pingAcrossRestart(tb, t, a.NetNS, b.Networks["bench"].IPAddress, pings)
	rep.PingSent, rep.PingLost, rep.Restart, rep.PingMaxGapMS = g.Sent, g.Sent-g.Received, g.Restart, ms(g.MaxGap)
	return rep
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// TestLifecycleSmoke runs the scenario small so the benchmark does not rot:
// the nsenter part, then every start mode with 5 sandboxes, each with a
// process. It checks correctness only (every sandbox and process survives
// the restarts, the ping is answered again after the restart), no timing.
func TestLifecycleSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	rep := measure(t, 5, 1, 25, 100)
	if rep.PingSent == 0 || rep.RestoreFull.N != 1 || rep.NetAddLater.N != 10 {
		t.Errorf("incomplete report: %+v", rep)
	}
	for _, mode := range testutil.StartModes() {
		t.Run(string(mode), func(t *testing.T) {
			m := measureMode(t, mode, 5, 1, 100)
			if m.RestoreIdle.N != 1 || m.RestoreFull.N != 1 || m.PingSent == 0 {
				t.Errorf("incomplete report: %+v", m)
			}
			checkMode(t, m)
		})
	}
}

// checkMode reports, as test errors, what a start mode's run found wrong:
// sandboxes, processes or host links lost across the restarts, a ping not
// answered again after the restart.
func checkMode(t *testing.T, m ModeReport) {
	t.Helper()
	if m.Kept != m.Sandboxes || m.ProcsKept != m.Sandboxes || m.LinksKept != m.Sandboxes {
		t.Errorf("%s: after %d restarts %d of %d sandboxes listed, %d processes running, %d host veths unchanged",
			m.Mode, m.RestoreFull.N, m.Kept, m.Sandboxes, m.ProcsKept, m.LinksKept)
	}
	if m.PingSent > 0 && m.PingLastSeq < m.PingSent*9/10 {
		t.Errorf("%s: ping across the restart: last answer to echo %d of %d (%d received)", m.Mode, m.PingLastSeq, m.PingSent, m.PingSent-m.PingLost)
	}
	for _, e := range m.Errors {
		t.Errorf("%s: %s", m.Mode, e)
	}
}

// TestLifecycleReport is the full run (BENCH_REPORT=1): 200 sandboxes, 100
// networks, 5 restarts each way on an nsenter daemon, then per start mode
// 200 sandboxes with a process each, 5 restarts each way, and a ping across
// a restart.
func TestLifecycleReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh lifecycle)")
	}
	testutil.RequireRoot(t)
	n, reps := attach.EnvInt("BENCH_N", 200), attach.EnvInt("BENCH_REPS", 5)
	load := testutil.LoadAvg()
	var rep Report
	t.Run("nsenter-no-process", func(t *testing.T) { rep = measure(t, n, reps, 100, 500) })
	rep.Machine, rep.LoadBefore, rep.Tether = attach.Machine(), load, tetherVersion()
	for _, mode := range testutil.StartModes() {
		m := ModeReport{Mode: mode, Sandboxes: n}
		if !t.Run(string(mode), func(t *testing.T) { fillMode(t, &m, reps, 500) }) {
			m.Errors = append(m.Errors, "the run failed (see the test log); figures may be incomplete")
		}
		m.LoadAfter = testutil.LoadAvg()
		rep.Modes = append(rep.Modes, m)
	}
	rep.LoadAfter = testutil.LoadAvg()
	var b strings.Builder
	fmt.Fprintf(&b, "load %s → %s; tether %s\n\n", rep.LoadBefore, rep.LoadAfter, rep.Tether)
	fmt.Fprintf(&b, "| figure | reference | Tether | ratio |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| daemon start (p50 of %d) | %.1f ms with 0 sandboxes | %.1f ms with %d sandboxes | %.2f× |\n",
		rep.RestoreFull.N, rep.RestoreIdle.P50, rep.RestoreFull.P50, rep.Sandboxes, rep.RestoreFull.P50/rep.RestoreIdle.P50)
	fmt.Fprintf(&b, "| network create, subnet chosen (p50 of 10) | %.2f ms with 0 networks | %.2f ms with 100 networks | %.2f× |\n",
		rep.NetAddFirst.P50, rep.NetAddLater.P50, rep.NetAddLater.P50/rep.NetAddFirst.P50)
	fmt.Fprintf(&b, "| network create, --subnet given (p50 of 10) | %.2f ms with 10 networks | %.2f ms with 110 networks | %.2f× |\n",
		rep.NetAddFirstExplicit.P50, rep.NetAddLaterExplicit.P50, rep.NetAddLaterExplicit.P50/rep.NetAddFirstExplicit.P50)
	fmt.Fprintf(&b, "| ping every 10 ms across a restart (%v) | %d sent | %d lost | longest gap %.0f ms |\n",
		rep.Restart.Round(time.Millisecond), rep.PingSent, rep.PingLost, rep.PingMaxGapMS)
	writeModes(&b, rep.Modes)
	t.Log("\n" + b.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range rep.Modes {
		checkMode(t, m)
	}
}
