// Package lifecycle measures what the firewall-and-lifecycle issue asks for,
// each against a reference taken in the same run:
//   - restore: daemon start-up with N sandboxes attached vs with none;
//   - network add: creating a network when 100 exist vs when none do
//     (ratio; the target is about 1: set elements, not rule rewrites);
//   - restart gap: a ping every 10 ms between two sandboxes across a daemon
//     restart (lost packets; the target is none).
//
// sudo bench/run.sh lifecycle writes bench/results/lifecycle-<date>.json.
package lifecycle

import (
	"bytes"
	"encoding/json"
	"fmt"
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

// Report is the JSON written by TestLifecycleReport.
type Report struct {
	Date        time.Time    `json:"date"`
	Sandboxes   int          `json:"sandboxes"`
	RestoreIdle attach.Stats `json:"restore_idle"`
	RestoreFull attach.Stats `json:"restore_full"`
	NetAddFirst attach.Stats `json:"network_add_first"`
	NetAddLater attach.Stats `json:"network_add_after_100"`
	// The same with an explicit --subnet (no route-aware choice).
	NetAddFirstExplicit attach.Stats  `json:"network_add_first_explicit"`
	NetAddLaterExplicit attach.Stats  `json:"network_add_after_100_explicit"`
	PingSent            int           `json:"ping_sent"`
	PingLost            int           `json:"ping_lost"`
	Restart             time.Duration `json:"restart_ns"`
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

// pingAcrossRestart pings b from a every 10 ms for count packets while the
// daemon restarts, and returns sent, received and the restart time.
func pingAcrossRestart(tb testing.TB, t *attach.Tether, count int) (int, int, time.Duration) {
	a, _, err := t.Create("pa")
	if err != nil {
		tb.Fatal(err)
	}
	b, _, err := t.Create("pb")
	if err != nil {
		tb.Fatal(err)
	}
	ping := exec.Command("nsenter", "--net="+a.NetNS, "ping", "-n", "-i", "0.01", "-c", strconv.Itoa(count), "-W", "1",
		b.Networks["bench"].IPAddress.String())
	var out bytes.Buffer
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = ping.Process.Kill(); _ = ping.Wait() }()
	time.Sleep(time.Duration(count/4) * 10 * time.Millisecond)
	stop := time.Now()
	t.D.Stop()
	if err := t.D.Start(); err != nil {
		tb.Fatal(err)
	}
	restart := time.Since(stop)
	_ = ping.Wait()
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String())
	if m == nil {
		tb.Fatalf("ping output: %s", out.String())
	}
	sent, _ := strconv.Atoi(m[1])
	got, _ := strconv.Atoi(m[2])
	return sent, got, restart
}

func measure(tb testing.TB, n, reps, nets int) Report {
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
	sent, got, restart := pingAcrossRestart(tb, t, 500)
	rep.PingSent, rep.PingLost, rep.Restart = sent, sent-got, restart
	return rep
}

// TestLifecycleSmoke runs the scenario small so the benchmark does not rot.
func TestLifecycleSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	rep := measure(t, 5, 1, 25)
	if rep.PingSent == 0 || rep.RestoreFull.N != 1 || rep.NetAddLater.N != 10 {
		t.Errorf("incomplete report: %+v", rep)
	}
}

// TestLifecycleReport is the full run (BENCH_REPORT=1): 200 sandboxes, 100
// networks, 5 restarts each way.
func TestLifecycleReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh lifecycle)")
	}
	testutil.RequireRoot(t)
	rep := measure(t, attach.EnvInt("BENCH_N", 200), attach.EnvInt("BENCH_REPS", 5), 100)
	var b strings.Builder
	fmt.Fprintf(&b, "| figure | reference | Tether | ratio |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| daemon start (p50 of %d) | %.1f ms with 0 sandboxes | %.1f ms with %d sandboxes | %.2f× |\n",
		rep.RestoreFull.N, rep.RestoreIdle.P50, rep.RestoreFull.P50, rep.Sandboxes, rep.RestoreFull.P50/rep.RestoreIdle.P50)
	fmt.Fprintf(&b, "| network create, subnet chosen (p50 of 10) | %.2f ms with 0 networks | %.2f ms with 100 networks | %.2f× |\n",
		rep.NetAddFirst.P50, rep.NetAddLater.P50, rep.NetAddLater.P50/rep.NetAddFirst.P50)
	fmt.Fprintf(&b, "| network create, --subnet given (p50 of 10) | %.2f ms with 10 networks | %.2f ms with 110 networks | %.2f× |\n",
		rep.NetAddFirstExplicit.P50, rep.NetAddLaterExplicit.P50, rep.NetAddLaterExplicit.P50/rep.NetAddFirstExplicit.P50)
	fmt.Fprintf(&b, "| ping every 10 ms across a restart (%v) | %d sent | %d lost | |\n", rep.Restart.Round(time.Millisecond), rep.PingSent, rep.PingLost)
	t.Log("\n" + b.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
