// Package doctor measures `tether doctor` (issue 20): its run time on a
// host with BENCH_N sandboxes (default 200) on one bridge network, against
// a reference taken on the same daemon in the same run, interleaved:
// `tether sandbox ls` (the CLI: both are one process start and one API
// round trip), and the API's own answers (GET /tether/v1/doctor against
// GET /tether/v1/sandboxes) without the process start.
//
// The daemon's DNS upstream answers at once (a responder in its namespace),
// so the figure is the checks' own cost, not a probe's timeout.
//
// sudo BENCH_REPORT=1 BENCH_OUT=<file> bench/run.sh doctor. Without
// BENCH_REPORT (the suite, under TETHER_E2E=1) it is a smoke run: 10
// sandboxes, 3 rounds, and the doctor must find nothing broken.
package doctor

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/doctor/report"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// Report is the JSON TestDoctorReport writes.
type Report struct {
	Scenario   string         `json:"scenario"`
	Date       time.Time      `json:"date"`
	Commit     string         `json:"commit"`
	Machine    map[string]any `json:"machine"` // nproc, kernel, cpu, loadavg
	LoadBefore string         `json:"loadavg_before"`
	LoadAfter  string         `json:"loadavg_after"`
	Sandboxes  int            `json:"sandboxes"`
	Reps       int            `json:"reps"`
	// CLI: `tether doctor` and `tether sandbox ls`, each a process.
	CLIDoctor attach.Stats `json:"cli_doctor"`
	CLIList   attach.Stats `json:"cli_sandbox_ls"`
	CLIRatio  float64      `json:"cli_ratio_p50"`
	// API: GET /tether/v1/doctor and GET /tether/v1/sandboxes.
	APIDoctor attach.Stats `json:"api_doctor"`
	APIList   attach.Stats `json:"api_sandboxes"`
	APIRatio  float64      `json:"api_ratio_p50"`
	// APIPair: GET /tether/v1/doctor?a=s0&b=s1 (the host checks and one
	// same-bridge path), against the same reference.
	APIPair      attach.Stats   `json:"api_doctor_pair"`
	APIPairRatio float64        `json:"api_pair_ratio_p50"`
	Checks       []report.Check `json:"checks"`
	Note         string         `json:"note"`
}

// serveDNS answers every query (echoed with the response bit) on
// 127.0.0.1:53 inside the namespace at nsPath until the test ends.
func serveDNS(tb testing.TB, nsPath string) {
	tb.Helper()
	var pc net.PacketConn
	if err := netns.Do(nsPath, func() (err error) {
		pc, err = net.ListenPacket("udp4", "127.0.0.1:53")
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n >= 12 {
				buf[2] |= 0x80
				binary.BigEndian.PutUint16(buf[6:], 0)
				pc.WriteTo(buf[:n], from)
			}
		}
	}()
}

type host struct {
	d *testutil.Daemon
	c *http.Client
}

// newHost starts a daemon in a namespace of its own (prefix t20d) with n
// sandboxes on network "bench".
func newHost(tb testing.TB, n int) *host {
	tb.Helper()
	testutil.RequireRoot(tb)
	ns := testutil.NetNS(tb, "t20d")
	serveDNS(tb, "/run/netns/"+ns)
	d := testutil.NewDaemon(tb, ns, "--dns", "127.0.0.1")
	if err := d.Start(); err != nil {
		tb.Fatal(err)
	}
	d.MustTether("network", "create", "--subnet", "10.124.0.0/16", "bench")
	h := &host{d: d, c: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}}
	for i := range n {
		body, _ := json.Marshal(api.SandboxCreateRequest{Name: fmt.Sprint("s", i), Networks: []api.NetworkAttach{{Network: "bench"}}})
		if code, resp, err := attach.Call(h.c, http.MethodPost, "/tether/v1/sandboxes", body); err != nil || code != http.StatusCreated {
			tb.Fatalf("create s%d: %d %s %v", i, code, resp, err)
		}
	}
	return h
}

// cli times one CLI command; it must exit 0.
func (h *host) cli(tb testing.TB, args ...string) time.Duration {
	tb.Helper()
	start := time.Now()
	out, err := h.d.Tether(args...)
	took := time.Since(start)
	if err != nil {
		tb.Fatalf("tether %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return took
}

// get times one API GET; it must answer 200.
func (h *host) get(tb testing.TB, path string) (time.Duration, []byte) {
	tb.Helper()
	start := time.Now()
	code, body, err := attach.Call(h.c, http.MethodGet, path, nil)
	took := time.Since(start)
	if err != nil || code != http.StatusOK {
		tb.Fatalf("GET %s: %d %s %v", path, code, body, err)
	}
	return took, body
}

func measure(tb testing.TB, n, reps int) Report {
	tb.Helper()
	rep := Report{Scenario: "doctor", Date: time.Now().UTC(), Commit: gitCommit(), Machine: attach.Machine(),
		LoadBefore: testutil.LoadAvg(), Sandboxes: n, Reps: reps,
		Note: "noisy unless the machine is quiet: compare the ratios of one run, not times across runs"}
	h := newHost(tb, n)
	var cd, cl, ad, al, ap []time.Duration
	for r := range reps { // interleaved, the order alternating, so load hits both alike
		pair := []func(){
			func() { cd = append(cd, h.cli(tb, "doctor")) },
			func() { cl = append(cl, h.cli(tb, "sandbox", "ls")) },
		}
		apiPair := []func(){
			func() {
				took, body := h.get(tb, "/tether/v1/doctor")
				ad = append(ad, took)
				var rp report.Report
				if err := json.Unmarshal(body, &rp); err != nil || rp.Broken {
					tb.Fatalf("doctor on the bench host: broken %v (%v): %s", rp.Broken, err, body)
				}
				rep.Checks = rp.Checks
			},
			func() { took, _ := h.get(tb, "/tether/v1/sandboxes"); al = append(al, took) },
		}
		if n >= 2 {
			apiPair = append(apiPair, func() {
				took, body := h.get(tb, "/tether/v1/doctor?a=s0&b=s1")
				ap = append(ap, took)
				var rp report.Report
				if err := json.Unmarshal(body, &rp); err != nil || rp.Pair == nil || rp.Pair.BreaksAt != "" || rp.Pair.Path != report.PathSameBridge {
					tb.Fatalf("doctor s0 s1 on the bench host: %v %s", err, body)
				}
			})
		}
		if r%2 == 1 {
			pair[0], pair[1] = pair[1], pair[0]
			apiPair[0], apiPair[1] = apiPair[1], apiPair[0]
		}
		for _, f := range append(pair, apiPair...) {
			f()
		}
	}
	rep.CLIDoctor, rep.CLIList = attach.Summarize(cd), attach.Summarize(cl)
	rep.APIDoctor, rep.APIList = attach.Summarize(ad), attach.Summarize(al)
	rep.CLIRatio = rep.CLIDoctor.P50 / rep.CLIList.P50
	rep.APIRatio = rep.APIDoctor.P50 / rep.APIList.P50
	if len(ap) > 0 {
		rep.APIPair = attach.Summarize(ap)
		rep.APIPairRatio = rep.APIPair.P50 / rep.APIList.P50
	}
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
	return fmt.Sprintf("tether doctor on a host with %d sandboxes, %d rounds\n"+
		"  CLI: doctor p50 %.2f ms p90 %.2f ms; sandbox ls p50 %.2f ms p90 %.2f ms; ratio p50 %.2f\n"+
		"  API: doctor p50 %.2f ms p90 %.2f ms; sandboxes p50 %.2f ms p90 %.2f ms; ratio p50 %.2f\n"+
		"  API: doctor s0 s1 p50 %.2f ms p90 %.2f ms; ratio p50 %.2f  (load %s -> %s)",
		rep.Sandboxes, rep.Reps, rep.CLIDoctor.P50, rep.CLIDoctor.P90, rep.CLIList.P50, rep.CLIList.P90, rep.CLIRatio,
		rep.APIDoctor.P50, rep.APIDoctor.P90, rep.APIList.P50, rep.APIList.P90, rep.APIRatio,
		rep.APIPair.P50, rep.APIPair.P90, rep.APIPairRatio, rep.LoadBefore, rep.LoadAfter)
}

// TestDoctorSmoke is the suite's small run: 10 sandboxes, 3 rounds; the
// doctor must find the bench host healthy (measure fails otherwise).
func TestDoctorSmoke(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "" {
		t.Skip("the report run is TestDoctorReport")
	}
	rep := measure(t, 10, 3)
	t.Log(summary(rep))
}

// TestDoctorReport is the figure: BENCH_N sandboxes (default 200),
// BENCH_REPS rounds (default 3; run.sh passes 20), the JSON to BENCH_OUT.
func TestDoctorReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") == "" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh doctor)")
	}
	rep := measure(t, attach.EnvInt("BENCH_N", 200), attach.EnvInt("BENCH_REPS", 3))
	t.Log(summary(rep))
	if out := os.Getenv("BENCH_OUT"); out != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
