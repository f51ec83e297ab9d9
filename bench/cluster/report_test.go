package clustersim

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/testutil"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// heap is the live heap after a forced collection.
func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestClusterSimReport runs the scale scenario of issue 21 against one
// real etcd (BENCH_REPORT=1, root): BENCH_HOSTS agents (50) start one by
// one; agent 0 creates an overlay network; each agent in turn attaches
// BENCH_ENDPOINTS endpoints (10), one after another, each answered when
// its record is in the store. Then: convergence (record written -> last
// other agent programmed it), store calls and watch events per endpoint,
// heap per remote entry, the exact state of every fake datapath, and the
// time until a killed agent's endpoints are gone from every other one
// (lease TTL BENCH_TTL, 3s). The JSON goes to bench/results (BENCH_OUT
// overrides); BENCH_CPUPROFILE=FILE writes a CPU profile of the attach
// phase.
func TestClusterSimReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("BENCH_REPORT=1 runs the cluster simulation report")
	}
	testutil.RequireRoot(t)
	hosts, perHost := envInt("BENCH_HOSTS", 50), envInt("BENCH_ENDPOINTS", 10)
	ttl := envDuration("BENCH_TTL", 3*time.Second)
	if hosts < 2 || hosts > 1000 || perHost > 60 {
		t.Fatalf("BENCH_HOSTS must be 2..1000 and BENCH_ENDPOINTS at most 60 (one /26 block per host in a /16)")
	}
	report := map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "commit": gitCommit(), "machine": attach.Machine(),
		"loadavg_before": testutil.LoadAvg(), "hosts": hosts, "endpoints_per_host": perHost, "ttl_s": ttl.Seconds(), "store": "etcd " + etcdVersion()}

	e := StartEtcd(t)
	counts := &Counts{}
	tr := NewTracker(hosts - 1)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := AgentConfig{Etcd: e, Prefix: "t21s/", TTL: ttl, Counts: counts, Tracker: tr, Logger: logger, RunID: "t21s-" + testutil.Suffix()}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	heap0 := heap()
	var agents []*Agent
	t.Cleanup(func() {
		for _, a := range agents {
			a.Kill()
		}
	})
	start := time.Now()
	for i := range hosts {
		a, err := StartAgent(ctx, i, cfg)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	report["agents_start_s"] = time.Since(start).Seconds()
	t.Logf("%d agents started in %v", hosts, time.Since(start).Round(time.Millisecond))

	netStart := time.Now()
	n, err := agents[0].CreateNetwork(ctx, "simnet", netip.MustParsePrefix("10.96.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "every agent installs the network", func() bool { return tr.Networks(n.ID) == hosts })
	report["network_everywhere_ms"] = ms(time.Since(netStart))
	t.Logf("network installed everywhere in %v", time.Since(netStart).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // let the node registrations' events settle
	heapBase := heap()
	report["heap_per_agent_idle_kib"] = float64(heapBase-heap0) / float64(hosts) / 1024

	// attach phase
	if f := os.Getenv("BENCH_CPUPROFILE"); f != "" {
		pf, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			t.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); pf.Close() }()
	}
	c0, cpu0, etcdCPU0 := counts.Snapshot(), selfCPU(), procCPU(e.PID())
	var recs []cluster.EndpointRecord
	var attachTimes []time.Duration
	start = time.Now()
	budget := envDuration("BENCH_BUDGET", 4*time.Minute)
attaching:
	for i, a := range agents {
		for j := range perHost {
			if time.Since(start) > budget {
				t.Logf("attach budget %v spent: %d of %d endpoints attached", budget, len(recs), hosts*perHost)
				report["attach_budget_spent"] = budget.Seconds()
				break attaching
			}
			t0 := time.Now()
			rec, err := a.Attach(ctx, n, fmt.Sprintf("sb%04d-%02d", i, j), tr)
			if err != nil {
				t.Fatal(err)
			}
			attachTimes = append(attachTimes, time.Since(t0))
			recs = append(recs, rec)
			if len(recs)%250 == 0 {
				t.Logf("%d endpoints attached in %v", len(recs), time.Since(start).Round(time.Millisecond))
			}
		}
	}
	attachWall := time.Since(start)
	if len(recs) == 0 {
		t.Fatal("no endpoint attached within the budget")
	}
	t.Logf("%d endpoints attached in %v; waiting for convergence", len(recs), attachWall.Round(time.Millisecond))
	select {
	case <-tr.AllSeen():
	case <-time.After(5 * time.Minute):
		t.Fatalf("not every endpoint programmed everywhere within 5 min after the last attach")
	}
	convergedWall := time.Since(start)
	c1, cpu1, etcdCPU1 := counts.Snapshot(), selfCPU(), procCPU(e.PID())
	time.Sleep(time.Second)
	heapFull := heap()
	changes := float64(len(recs))
	remote := float64(len(recs) * (hosts - 1))
	report["endpoints_attached"] = len(recs)
	fromWrite, fromAttach, incomplete := tr.Convergence()
	d := c1.Sub(c0)
	report["attach"] = attach.Summarize(attachTimes)
	report["attach_phase_s"] = attachWall.Seconds()
	report["converged_after_s"] = convergedWall.Seconds()
	report["convergence_from_write"] = attach.Summarize(fromWrite)
	report["convergence_from_attach"] = attach.Summarize(fromAttach)
	report["convergence_incomplete"] = incomplete
	report["store_calls_attach_phase"] = d
	report["per_endpoint_change"] = map[string]float64{
		"writes":                 float64(d.Writes) / changes,
		"key_writes":             float64(d.KeyWrites) / changes,
		"reads":                  float64(d.Gets+d.Lists) / changes,
		"listed_keys":            float64(d.ListedKeys) / changes,
		"watch_events_delivered": float64(d.WatchEvents) / changes,
		"agent_cpu_ms":           ms(cpu1-cpu0) / changes,
		"etcd_cpu_ms":            ms(etcdCPU1-etcdCPU0) / changes,
	}
	report["keepalives_per_s"] = float64(d.KeepAlives) / convergedWall.Seconds()
	report["agents_cpu_s_attach_phase"] = (cpu1 - cpu0).Seconds()
	report["etcd_cpu_s_attach_phase"] = (etcdCPU1 - etcdCPU0).Seconds()
	report["heap_per_remote_endpoint_bytes"] = float64(heapFull-heapBase) / remote
	report["etcd_db_bytes"] = e.DBSize()
	report["etcd_rss_kib"] = rssKiB(e.PID())
	report["spurious_removals"] = removals(agents)
	checkState(t, agents, recs)

	// a killed agent: the last that attached (all of them when the attach
	// budget let every one attach), so it has endpoints to lose
	var victim *Agent
	for _, a := range agents {
		if a.Node.ID == recs[len(recs)-1].Node {
			victim = a
		}
	}
	var victimEps []string
	for _, r := range recs {
		if r.Node == victim.Node.ID {
			victimEps = append(victimEps, r.ID)
		}
	}
	killed := time.Now()
	victim.Kill()
	var gone []time.Duration
	t.Logf("killing agent %d (%d endpoints)", victim.Index, len(victimEps))
	waitFor(t, ttl+time.Minute, "the killed agent's endpoints are gone everywhere", func() bool {
		gone = gone[:0]
		for _, a := range agents[:len(agents)-1] {
			ok, last := a.DP.GoneOf(victim.Node.ID, victimEps)
			if !ok {
				return false
			}
			gone = append(gone, last.Sub(killed))
		}
		return true
	})
	report["killed_agent_gone_everywhere"] = attach.Summarize(gone)
	report["loadavg_after"] = testutil.LoadAvg()

	b, _ := json.MarshalIndent(report, "", "  ")
	t.Logf("%s", b)
	out := os.Getenv("BENCH_OUT")
	if out == "" {
		out = filepath.Join("..", "results", "cluster-sim-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	}
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", out)
}

// checkState: every agent's datapath holds exactly the other agents'
// endpoints, each with its published MAC, VTEP and address.
func checkState(t *testing.T, agents []*Agent, recs []cluster.EndpointRecord) {
	t.Helper()
	own := map[string]int{}
	for _, r := range recs {
		own[r.Node]++
	}
	for _, a := range agents {
		peers := a.DP.Peers()
		if want := len(recs) - own[a.Node.ID]; len(peers) != want {
			t.Errorf("agent %d programs %d remote endpoints, want %d", a.Index, len(peers), want)
		}
		for _, r := range recs {
			got, ok := peers[r.ID]
			switch {
			case r.Node == a.Node.ID && ok:
				t.Errorf("agent %d programs its own endpoint %s", a.Index, r.SandboxName)
			case r.Node != a.Node.ID && got != entryOf(r):
				t.Errorf("agent %d: endpoint %s programmed as %+v, want %+v", a.Index, r.SandboxName, got, entryOf(r))
			}
		}
	}
}

func removals(agents []*Agent) int {
	sum := 0
	for _, a := range agents {
		r, _ := a.DP.Counters()
		sum += r
	}
	return sum
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func procCPU(pid int) time.Duration {
	st, err := testutil.ReadProcStat(pid)
	if err != nil {
		return 0
	}
	return st.CPU
}

func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	var kib int64
	for _, l := range strings.Split(string(b), "\n") {
		if _, err := fmt.Sscanf(l, "VmRSS: %d kB", &kib); err == nil {
			return kib
		}
	}
	return -1
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return string(out[:len(out)-1])
}

func etcdVersion() string {
	out, err := exec.Command(testutil.EtcdBinary, "--version").Output()
	if err != nil {
		return ""
	}
	var v string
	fmt.Sscanf(string(out), "etcd Version: %s", &v)
	return v
}
