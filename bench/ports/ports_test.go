// Package ports measures what the port-publishing issue asks for, each
// figure against a reference taken in the same run:
//   - publish: N sandboxes created one at a time, each publishing one port
//     (-p 20000+i:80), time per create for the first 100 vs the last 100
//     (target ≤ 1.2); the references are the same N creates without a port
//     on a second daemon, so the port's own cost shows, and the raw netlink
//     floor of bench/attach (the kernel's share), interleaved one for one;
//   - connection rate from an "outside" namespace to the first and to the
//     N-th published port (ratio, target about 1: map elements, not rules);
//   - iperf3 throughput through a published port: kernel path (outside →
//     uplink, DNAT) vs sandbox to sandbox, and userland proxy (host →
//     127.0.0.1) vs host to sandbox (targets ≥ 0.95 and ≥ 0.9).
//
// sudo bench/run.sh ports writes bench/results/ports-<date>.json.
package ports

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

const (
	basePort  = 20000 // sandbox i publishes basePort+i:80
	iperfPort = 5201
	// A Linux bridge holds at most 1023 ports: N sandboxes plus the two
	// iperf3 ones must fit on "bench".
	maxN = 1021
)

// Options sizes one run.
type Options struct {
	N         int // sandboxes with a published port (and as many without)
	Conns     int // connections per series
	ConnReps  int // series per target
	IperfSecs int // iperf3 -t
	IperfReps int // runs per path (the better one counts)
}

// Report is the JSON written by TestPortsReport.
type Report struct {
	Date       time.Time `json:"date"`
	Machine    string    `json:"machine"`
	LoadBefore string    `json:"loadavg_before"`
	LoadAfter  string    `json:"loadavg_after"`
	N          int       `json:"n"`
	// Window: how many creates at each end of the row are compared.
	Window       int          `json:"window"`
	PublishFirst attach.Stats `json:"publish_first"`
	PublishLast  attach.Stats `json:"publish_last"`
	PlainFirst   attach.Stats `json:"plain_first"`
	PlainLast    attach.Stats `json:"plain_last"`
	PublishRatio float64      `json:"publish_last_over_first_p50"`
	PlainRatio   float64      `json:"plain_last_over_first_p50"`
	PublishAll   attach.Stats `json:"publish_all"`
	PlainAll     attach.Stats `json:"plain_all"`
	PublishMS    []float64    `json:"publish_ms"`
	PlainMS      []float64    `json:"plain_ms"`
	// The raw netlink floor (bench/attach), its steps' p50 first and last.
	FloorFirst attach.Stats          `json:"floor_first"`
	FloorLast  attach.Stats          `json:"floor_last"`
	FloorRatio float64               `json:"floor_last_over_first_p50"`
	FloorSteps map[string][2]float64 `json:"floor_steps_p50_first_last"`
	FloorMS    []float64             `json:"floor_ms"`

	ConnFirst       []ConnRun `json:"conn_first"`
	ConnLast        []ConnRun `json:"conn_last"`
	ConnFirstPerSec float64   `json:"conn_first_per_s_median"`
	ConnLastPerSec  float64   `json:"conn_last_per_s_median"`
	ConnRatio       float64   `json:"conn_last_over_first"` // of the medians
	ConnFirstBest   float64   `json:"conn_first_per_s_best"`
	ConnLastBest    float64   `json:"conn_last_per_s_best"`

	Iperf       []Iperf            `json:"iperf"`
	IperfBest   map[string]float64 `json:"iperf_best_gbit_per_s"`
	KernelRatio float64            `json:"kernel_over_direct"`
	ProxyRatio  float64            `json:"proxy_over_host_direct"`
}

// iperf3 paths, in the order of the first round.
const (
	pathDirect     = "direct: sandbox → sandbox"
	pathKernel     = "kernel: outside → uplink:5201 (DNAT)"
	pathProxy      = "proxy: host → 127.0.0.1:5201"
	pathHostDirect = "host → sandbox address"
)

// created is the create answer.
type created struct{ api.Sandbox }

func (c created) ports() api.PortMap { return c.NetworkSettings.Ports }

// create sends POST /tether/v1/sandboxes for a sandbox on "bench",
// publishing the given -p values, and returns the answer and round trip.
func create(t *attach.Tether, name string, publish ...string) (created, time.Duration, error) {
	pm, err := types.ParsePublish(publish)
	if err != nil {
		return created{}, 0, err
	}
	body, _ := json.Marshal(api.SandboxCreateRequest{Name: name,
		Networks: []api.NetworkAttach{{Network: "bench", PortBindings: pm}}})
	var sb created
	start := time.Now()
	code, out, err := t.Call(http.MethodPost, "/tether/v1/sandboxes", body)
	took := time.Since(start)
	if err != nil {
		return sb, took, err
	}
	if code != http.StatusCreated {
		return sb, took, fmt.Errorf("create sandbox %q: %d %s", name, code, out)
	}
	return sb, took, json.Unmarshal(out, &sb)
}

// removeAll force-deletes every sandbox of t through the API, four at a time, and
// checks none is left.
func removeAll(tb testing.TB, t *attach.Tether) {
	tb.Helper()
	sbs, err := t.List()
	if err != nil {
		tb.Fatal(err)
	}
	names := make(chan string)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for n := range names {
				// forced: the servers' processes go with their sandboxes
				code, out, err := t.Call(http.MethodDelete, "/tether/v1/sandboxes/"+n+"?force=1", nil)
				if err == nil && code != http.StatusNoContent {
					err = fmt.Errorf("remove sandbox %q: %d %s", n, code, out)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, sb := range sbs {
		names <- sb.Name
	}
	close(names)
	wg.Wait()
	if len(errs) > 0 {
		tb.Fatalf("%d removals failed, first: %v", len(errs), errs[0])
	}
	if left, err := t.List(); err != nil || len(left) != 0 {
		tb.Fatalf("after removal: %d sandboxes left, %v", len(left), err)
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func ms(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Microseconds()) / 1000
	}
	return out
}

func machine() string {
	k, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d CPUs, kernel %s, %s", runtime.NumCPU(), strings.TrimSpace(string(k)), runtime.Version())
}

// floorRow is bench/attach's raw netlink floor in its own host namespace.
type floorRow struct {
	tb    testing.TB
	f     *attach.Floor
	dir   string
	sbs   []*attach.FloorSandbox
	times []time.Duration
	steps [][]time.Duration // per step, in attach.FloorSteps order
	done  bool
}

func startFloor(tb testing.TB) *floorRow {
	tb.Helper()
	ns := testutil.NetNS(tb, "tth-bfloor")
	dir := filepath.Join(tb.TempDir(), "ns")
	f, err := attach.NewFloor("/run/netns/"+ns, dir)
	if err != nil {
		tb.Fatal(err)
	}
	fr := &floorRow{tb: tb, f: f, dir: dir, steps: make([][]time.Duration, len(attach.FloorSteps))}
	tb.Cleanup(fr.close) // before the namespace and the directory go
	return fr
}

func (fr *floorRow) attach(i int) error {
	t0 := time.Now()
	sb, st, err := fr.f.Attach(i)
	fr.times = append(fr.times, time.Since(t0))
	if sb != nil {
		fr.sbs = append(fr.sbs, sb)
	}
	for k, d := range st {
		fr.steps[k] = append(fr.steps[k], d)
	}
	return err
}

// close removes the floor's sandboxes and bridge and checks no mount is left.
func (fr *floorRow) close() {
	if fr.done {
		return
	}
	fr.done = true
	for _, sb := range fr.sbs {
		if err := fr.f.Remove(sb); err != nil {
			fr.tb.Error(err)
		}
	}
	if err := fr.f.Close(); err != nil {
		fr.tb.Error(err)
	}
	if m := testutil.Mounted(fr.dir); len(m) != 0 {
		fr.tb.Errorf("floor: mounts left under %s: %v", fr.dir, m)
	}
}

// publishRow creates the N sandboxes on both daemons and on the floor, one
// for one (which goes first rotates), and records each create's time.
func publishRow(tb testing.TB, pub, plain *attach.Tether, floor *floorRow, n int) (withPort, without []time.Duration) {
	for i := range n {
		name := fmt.Sprintf("p%d", i)
		hostPort := strconv.Itoa(basePort + i)
		steps := []func(){
			func() {
				sb, took, err := create(pub, name, hostPort+":80")
				if err != nil {
					tb.Fatal(err)
				}
				if b := sb.ports()["80/tcp"]; len(b) != 1 || b[0].HostPort != hostPort {
					tb.Fatalf("sandbox %s: ports %+v, want 80/tcp -> %s", name, sb.ports(), hostPort)
				}
				withPort = append(withPort, took)
			},
			func() {
				sb, took, err := create(plain, name)
				if err != nil {
					tb.Fatal(err)
				}
				if len(sb.ports()) != 0 {
					tb.Fatalf("reference sandbox %s has ports %+v", name, sb.ports())
				}
				without = append(without, took)
			},
			func() {
				if err := floor.attach(i); err != nil {
					tb.Fatal(err)
				}
			},
		}
		for j := range steps {
			steps[(i+j)%len(steps)]()
		}
	}
	return withPort, without
}

func measure(tb testing.TB, o Options) Report {
	if o.N < 2 || o.N > maxN {
		tb.Fatalf("N = %d: must be 2..%d (a bridge holds at most 1023 ports)", o.N, maxN)
	}
	rep := Report{Date: time.Now().UTC(), Machine: machine(), LoadBefore: testutil.LoadAvg(), N: o.N}
	// The proxy path here is the userland proxy: the connect redirect that
	// serves loopback publishes by default has its own scenario (proxy).
	pub := startTetherEnv(tb, kindSplice.env)
	plain := startTetherEnv(tb, kindSplice.env)
	floor := startFloor(tb)
	out := outside(tb, pub.NS)

	// 1. N creates with a published port, N without, N floor attaches, interleaved.
	withPort, without := publishRow(tb, pub, plain, floor, o.N)
	k := min(100, o.N/2)
	rep.Window = k
	rep.PublishFirst, rep.PublishLast = attach.Summarize(withPort[:k]), attach.Summarize(withPort[o.N-k:])
	rep.PlainFirst, rep.PlainLast = attach.Summarize(without[:k]), attach.Summarize(without[o.N-k:])
	rep.PublishAll, rep.PlainAll = attach.Summarize(withPort), attach.Summarize(without)
	rep.PublishRatio = ratio(rep.PublishLast.P50, rep.PublishFirst.P50)
	rep.PlainRatio = ratio(rep.PlainLast.P50, rep.PlainFirst.P50)
	rep.PublishMS, rep.PlainMS = ms(withPort), ms(without)
	rep.FloorFirst, rep.FloorLast = attach.Summarize(floor.times[:k]), attach.Summarize(floor.times[o.N-k:])
	rep.FloorRatio = ratio(rep.FloorLast.P50, rep.FloorFirst.P50)
	rep.FloorMS = ms(floor.times)
	rep.FloorSteps = map[string][2]float64{}
	for j, name := range attach.FloorSteps {
		st := floor.steps[j]
		rep.FloorSteps[name] = [2]float64{attach.Summarize(st[:k]).P50, attach.Summarize(st[len(st)-k:]).P50}
	}
	removeAll(tb, plain) // the references have done their part
	floor.close()

	// 2. Connection rate from outside to the first and the N-th port.
	first, last := "p0", fmt.Sprintf("p%d", o.N-1)
	startAnswer(tb, pub, first)
	startAnswer(tb, pub, last)
	firstAddr := fmt.Sprintf("%s:%d", uplinkAddr, basePort)
	lastAddr := fmt.Sprintf("%s:%d", uplinkAddr, basePort+o.N-1)
	waitAnswer(tb, out, firstAddr, first)
	waitAnswer(tb, out, lastAddr, last)
	for _, warm := range [][2]string{{firstAddr, first}, {lastAddr, last}} {
		if _, err := connRate(out, warm[0], warm[1], min(100, o.Conns)); err != nil {
			tb.Fatal(err)
		}
	}
	for r := range o.ConnReps {
		order := []bool{true, false}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, isFirst := range order {
			addr, want := lastAddr, last
			if isFirst {
				addr, want = firstAddr, first
			}
			run, err := connRate(out, addr, want, o.Conns)
			if err != nil {
				tb.Fatal(err)
			}
			if isFirst {
				rep.ConnFirst = append(rep.ConnFirst, run)
			} else {
				rep.ConnLast = append(rep.ConnLast, run)
			}
		}
	}
	perSec := func(rs []ConnRun) []float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, r.PerSec)
		}
		return v
	}
	rep.ConnFirstPerSec, rep.ConnLastPerSec = stats.Median(perSec(rep.ConnFirst)), stats.Median(perSec(rep.ConnLast))
	rep.ConnRatio = ratio(rep.ConnLastPerSec, rep.ConnFirstPerSec)
	rep.ConnFirstBest, rep.ConnLastBest = slices.Max(perSec(rep.ConnFirst)), slices.Max(perSec(rep.ConnLast))

	// 3. iperf3: a server sandbox publishing 5201, a client sandbox.
	srv, _, err := create(pub, "ipf-s", fmt.Sprintf("%d:%d", iperfPort, iperfPort))
	if err != nil {
		tb.Fatal(err)
	}
	cli, _, err := create(pub, "ipf-c")
	if err != nil {
		tb.Fatal(err)
	}
	if _, _, err := pub.Exec("ipf-s", "iperf3", "-s", "-p", strconv.Itoa(iperfPort)); err != nil {
		tb.Fatal(err)
	}
	srvAddr := srv.Networks["bench"].IPAddress.String()
	hostNS, outNS := "/run/netns/"+pub.NS, "/run/netns/"+out
	paths := []struct {
		name, from, to, watch string
	}{
		{pathDirect, cli.NetNS, srvAddr, ""},
		{pathKernel, outNS, uplinkAddr, pub.NS},
		{pathProxy, hostNS, "127.0.0.1", pub.NS},
		{pathHostDirect, hostNS, srvAddr, ""},
	}
	rep.IperfBest = map[string]float64{}
	for r := range o.IperfReps {
		order := slices.Clone(paths)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, p := range order {
			run, err := iperf(Iperf{Path: p.name, From: p.from, To: p.to}, iperfPort, o.IperfSecs, p.watch, pub.PID)
			if err != nil {
				tb.Fatalf("%s: %v", p.name, err)
			}
			rep.Iperf = append(rep.Iperf, run)
			rep.IperfBest[p.name] = max(rep.IperfBest[p.name], run.Gbps)
		}
	}
	rep.KernelRatio = ratio(rep.IperfBest[pathKernel], rep.IperfBest[pathDirect])
	rep.ProxyRatio = ratio(rep.IperfBest[pathProxy], rep.IperfBest[pathHostDirect])
	rep.LoadAfter = testutil.LoadAvg()
	removeAll(tb, pub)
	return rep
}

// TestPortsSmoke runs the scenario small so the benchmark does not rot; it
// checks correctness only: every create got its port, every connection was
// answered by the sandbox behind the port, every iperf3 path carried data,
// the proxy path went through the daemon's proxy and the kernel path not.
func TestPortsSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	attach.RequireIperf3(t)
	rep := measure(t, Options{N: 5, Conns: 50, ConnReps: 1, IperfSecs: 1, IperfReps: 1})
	if len(rep.PublishMS) != 5 || len(rep.PlainMS) != 5 || len(rep.FloorMS) != 5 || len(rep.ConnFirst) != 1 || len(rep.ConnLast) != 1 {
		t.Errorf("incomplete report: %+v", rep)
	}
	if len(rep.Iperf) != 4 {
		t.Fatalf("iperf3 runs: %+v", rep.Iperf)
	}
	for _, r := range rep.Iperf {
		if want := r.Path == pathProxy; r.ProxySeen != want {
			t.Errorf("%s: proxy socket seen in the host namespace = %v, want %v", r.Path, r.ProxySeen, want)
		}
	}
}

// TestPortsReport is the full run (BENCH_REPORT=1): BENCH_N (1000)
// published ports, BENCH_CONNS (2000) connections × BENCH_CONN_REPS (10)
// series per target, alternating, iperf3 BENCH_IPERF_SECS (5) s ×
// BENCH_IPERF_REPS (2) per path.
func TestPortsReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh ports)")
	}
	testutil.RequireRoot(t)
	attach.RequireIperf3(t)
	rep := measure(t, Options{N: attach.EnvInt("BENCH_N", 1000), Conns: attach.EnvInt("BENCH_CONNS", 2000),
		ConnReps: attach.EnvInt("BENCH_CONN_REPS", 10), IperfSecs: attach.EnvInt("BENCH_IPERF_SECS", 5), IperfReps: attach.EnvInt("BENCH_IPERF_REPS", 2)})
	for _, r := range rep.Iperf {
		if want := r.Path == pathProxy; r.ProxySeen != want {
			t.Errorf("%s: proxy socket seen in the host namespace = %v, want %v", r.Path, r.ProxySeen, want)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s; load %s → %s\n\n", rep.Machine, rep.LoadBefore, rep.LoadAfter)
	fmt.Fprintf(&b, "| create, %d in a row (p50) | first %d | last %d | last ÷ first |\n|---|---:|---:|---:|\n", rep.N, rep.Window, rep.Window)
	fmt.Fprintf(&b, "| with -p %d+i:80 | %.2f ms | %.2f ms | %.2f× |\n", basePort, rep.PublishFirst.P50, rep.PublishLast.P50, rep.PublishRatio)
	fmt.Fprintf(&b, "| without a port (reference) | %.2f ms | %.2f ms | %.2f× |\n", rep.PlainFirst.P50, rep.PlainLast.P50, rep.PlainRatio)
	fmt.Fprintf(&b, "| the port's own cost (difference of p50s) | %.2f ms | %.2f ms | %.2f× |\n",
		rep.PublishFirst.P50-rep.PlainFirst.P50, rep.PublishLast.P50-rep.PlainLast.P50,
		ratio(rep.PublishLast.P50-rep.PlainLast.P50, rep.PublishFirst.P50-rep.PlainFirst.P50))
	fmt.Fprintf(&b, "| raw netlink floor (kernel only) | %.2f ms | %.2f ms | %.2f× |\n", rep.FloorFirst.P50, rep.FloorLast.P50, rep.FloorRatio)
	for _, name := range attach.FloorSteps {
		v := rep.FloorSteps[name]
		fmt.Fprintf(&b, "| … floor: %s | %.2f ms | %.2f ms | %.2f× |\n", name, v[0], v[1], ratio(v[1], v[0]))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "| outside → published port, %d connections × %d series | conns/s, median | best | per conn p50 (median of series) | p99 (median) |\n|---|---:|---:|---:|---:|\n",
		rep.ConnFirst[0].N, len(rep.ConnFirst))
	for _, s := range []struct {
		name       string
		rs         []ConnRun
		rate, best float64
	}{{"1st port", rep.ConnFirst, rep.ConnFirstPerSec, rep.ConnFirstBest},
		{fmt.Sprintf("%dth port", rep.N), rep.ConnLast, rep.ConnLastPerSec, rep.ConnLastBest}} {
		var p50, p99 []float64
		for _, r := range s.rs {
			p50, p99 = append(p50, r.PerConn.P50), append(p99, r.PerConn.P99)
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.3f ms | %.3f ms |\n", s.name, s.rate, s.best, stats.Median(p50), stats.Median(p99))
	}
	fmt.Fprintf(&b, "| **ratio** | **%.2f×** | %.2f× | | |\n\n", rep.ConnRatio, ratio(rep.ConnLastBest, rep.ConnFirstBest))
	fmt.Fprintf(&b, "| iperf3, %d s, best of %d | Gbit/s | runs | daemon CPUs | machine busy CPUs |\n|---|---:|---|---:|---:|\n",
		attach.EnvInt("BENCH_IPERF_SECS", 5), attach.EnvInt("BENCH_IPERF_REPS", 2))
	for _, p := range []string{pathDirect, pathKernel, pathHostDirect, pathProxy} {
		var runs, dcpu, busy []string
		for _, r := range rep.Iperf {
			if r.Path == p {
				runs = append(runs, fmt.Sprintf("%.2f", r.Gbps))
				dcpu = append(dcpu, fmt.Sprintf("%.2f", r.DaemonCPU))
				busy = append(busy, fmt.Sprintf("%.2f", r.BusyCPU))
			}
		}
		fmt.Fprintf(&b, "| %s | %.2f | %s | %s | %s |\n", p, rep.IperfBest[p], strings.Join(runs, ", "), strings.Join(dcpu, ", "), strings.Join(busy, ", "))
	}
	fmt.Fprintf(&b, "| **kernel ÷ direct** | **%.2f×** | | | |\n| **proxy ÷ host direct** | **%.2f×** | | | |\n", rep.KernelRatio, rep.ProxyRatio)
	t.Log("\n" + b.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
