package clustersim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
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

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil && v > 0 {
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

// datapathHeap is the heap the agents' fake datapaths hold for their
// peers: measured on a copy of their maps, dropped afterwards.
func datapathHeap(agents []*Agent) uint64 {
	before := heap()
	copies := make([]map[string]Entry, 0, len(agents))
	for _, a := range agents {
		if a == nil || a.DP == nil {
			continue
		}
		a.DP.mu.Lock()
		c := make(map[string]Entry, len(a.DP.peers))
		for id, e := range a.DP.peers {
			c[id] = e
		}
		a.DP.mu.Unlock()
		copies = append(copies, c)
	}
	after := heap()
	runtime.KeepAlive(copies)
	if after < before {
		return 0
	}
	return after - before
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

// knobs are the scenario's settings (env vars; defaults in doc.go).
type knobs struct {
	Store          string        `json:"store"`
	Hosts          int           `json:"-"`
	PerHost        int           `json:"-"`
	TTL            time.Duration `json:"-"`
	AttachBudget   time.Duration `json:"-"`
	AttachParallel int           `json:"attach_parallel"`
	Churn          time.Duration `json:"-"`
	ChurnPct       float64       `json:"churn_pct_per_s"`
	RestartChurn   time.Duration `json:"-"`
	StoreDown      time.Duration `json:"-"`
	Settle         time.Duration `json:"-"`
	KillPct        float64       `json:"kill_pct"`
	Shortened      string        `json:"shortened,omitempty"` // defaults cut for a big run
}

func (k knobs) MarshalJSON() ([]byte, error) {
	type plain knobs
	return json.Marshal(struct {
		plain
		TTL          float64 `json:"ttl_s"`
		AttachBudget float64 `json:"attach_budget_s"`
		Churn        float64 `json:"churn_s"`
		RestartChurn float64 `json:"restart_churn_s"`
		StoreDown    float64 `json:"store_down_s"`
		Settle       float64 `json:"settle_s"`
	}{plain(k), k.TTL.Seconds(), k.AttachBudget.Seconds(), k.Churn.Seconds(), k.RestartChurn.Seconds(),
		k.StoreDown.Seconds(), k.Settle.Seconds()})
}

// bigRun is the size from which the churn phases are shorter by default,
// so that the whole matrix (scale.sh) fits its time.
const bigRun = 300

func readKnobs() knobs {
	k := knobs{Store: os.Getenv("BENCH_STORE"), Hosts: envInt("BENCH_HOSTS", 50), PerHost: envInt("BENCH_ENDPOINTS", 10)}
	if k.Store == "" {
		k.Store = "etcd"
	}
	churn, restart := 60*time.Second, 20*time.Second
	if k.Hosts >= bigRun {
		churn, restart = 30*time.Second, 15*time.Second
		var cut []string
		if os.Getenv("BENCH_CHURN") == "" {
			cut = append(cut, "churn 30 s (not 60 s)")
		}
		if os.Getenv("BENCH_RESTART_CHURN") == "" {
			cut = append(cut, "store-restart churn 15 s (not 20 s)")
		}
		if len(cut) > 0 {
			k.Shortened = fmt.Sprintf("defaults at %d hosts or more, so the matrix fits its time: %s", bigRun, strings.Join(cut, ", "))
		}
	}
	k.TTL = envDuration("BENCH_TTL", 3*time.Second)
	k.AttachBudget = envDuration("BENCH_BUDGET", 4*time.Minute)
	k.AttachParallel = envInt("BENCH_ATTACH_PARALLEL", 1)
	k.Churn = envDuration("BENCH_CHURN", churn)
	k.ChurnPct = envFloat("BENCH_CHURN_PCT", 1)
	k.RestartChurn = envDuration("BENCH_RESTART_CHURN", restart)
	k.StoreDown = envDuration("BENCH_STORE_DOWN", 2*time.Second)
	k.Settle = envDuration("BENCH_SETTLE", 2*time.Minute)
	k.KillPct = envFloat("BENCH_KILL_PCT", 10)
	return k
}

// sim is the simulated cluster a report runs its phases on.
type sim struct {
	t       *testing.T
	k       knobs
	srv     Server
	counts  *Counts
	tr      *Tracker
	agents  []*Agent
	dead    []bool
	net     cluster.NetworkRecord
	live    map[string]cluster.EndpointRecord // endpoints attached now
	planner *Planner
	// heap0 is the heap before the agents, heapIdle with them started
	heap0, heapIdle uint64
}

// meter is the counters at a phase's start.
type meter struct {
	start      time.Time
	c          CountsSnapshot
	cpu, store time.Duration
	stray      int
}

func (s *sim) meter() meter {
	return meter{start: time.Now(), c: s.counts.Snapshot(), cpu: selfCPU(), store: s.srv.CPU(), stray: s.tr.Stray()}
}

// figures adds what every phase reports: the store calls and watch events,
// the agents' and the store's CPU, each also per change (changes: the
// endpoint additions and removals, or networks, the phase made).
func (s *sim) figures(m meter, changes int, ph map[string]any) {
	d := s.counts.Snapshot().Sub(m.c)
	cpu, st := selfCPU()-m.cpu, s.srv.CPU()-m.store
	ph["seconds"] = time.Since(m.start).Seconds()
	ph["changes"] = changes
	ph["store_calls"] = d
	ph["agents_cpu_s"] = cpu.Seconds()
	ph["store_cpu_s"] = st.Seconds()
	ph["store_db_bytes"] = s.srv.DBSize()
	ph["store_rss_kib"] = s.srv.RSSKiB()
	ph["keepalives_per_s"] = float64(d.KeepAlives) / time.Since(m.start).Seconds()
	ph["removals_not_withdrawn"] = s.tr.Stray() - m.stray
	if changes > 0 {
		n := float64(changes)
		ph["per_change"] = map[string]float64{
			"store_writes": float64(d.Writes) / n, "key_writes": float64(d.KeyWrites) / n,
			"reads": float64(d.Gets+d.Lists) / n, "listed_keys": float64(d.ListedKeys) / n,
			"watch_events": float64(d.WatchEvents) / n,
			"agent_cpu_ms": ms(cpu) / n, "store_cpu_ms": ms(st) / n,
		}
	}
}

// phaseError is a phase that did not do what it must (not converged
// within its deadline, a datapath not exact): reported, and the test
// fails.
type phaseError struct{ msg string }

func (e phaseError) Error() string { return e.msg }

func failf(format string, a ...any) error { return phaseError{fmt.Sprintf(format, a...)} }

// TestClusterSimReport runs the scale scenarios of issue 21 against one
// real store (BENCH_REPORT=1, root; BENCH_STORE=etcd or zk), each a phase of
// the report: attach, network, churn, store_restart, dead_host, kill10
// (doc.go says what each does and its knobs). A phase that does not
// converge within its deadline, or leaves a datapath not exact, is a
// failure in the JSON (ok: false) and of the test; the phases after it are
// not run. The JSON goes to bench/results (BENCH_OUT overrides).
func TestClusterSimReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("BENCH_REPORT=1 runs the cluster simulation report")
	}
	testutil.RequireRoot(t)
	k := readKnobs()
	if k.Hosts < 2 || k.Hosts > 1000 || k.PerHost > 60 {
		t.Fatalf("BENCH_HOSTS must be 2..1000 and BENCH_ENDPOINTS at most 60 (one /26 block per host in a /16)")
	}
	report := map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "commit": gitCommit(), "machine": attach.Machine(),
		"loadavg_before": testutil.LoadAvg(), "hosts": k.Hosts, "endpoints_per_host": k.PerHost, "ttl_s": k.TTL.Seconds(),
		"store_kind": k.Store, "knobs": k}
	phases := map[string]any{}
	report["phases"] = phases
	var srv Server
	switch k.Store {
	case "etcd":
		srv = StartEtcd(t)
	case "zk":
		srv = StartZooKeeper(t)
	default:
		t.Fatalf("BENCH_STORE=%q: etcd or zk", k.Store)
	}
	report["store"] = srv.Name()
	var failures []string
	defer func() { writeReport(t, report, failures) }()
	s, err := setUp(t, k, srv, report)
	if err != nil {
		failures = append(failures, "set-up: "+err.Error())
		t.Errorf("set-up: %v", err)
	}

	for _, p := range []struct {
		name string
		run  func(ph map[string]any) error
	}{
		{"attach", func(ph map[string]any) error { return s.attachPhase(ph, report) }},
		{"network", s.networkPhase},
		{"churn", s.churnPhase},
		{"store_restart", s.restartPhase},
		{"dead_host", s.deadHostPhase},
		{"kill10", s.killPhase},
	} {
		ph := map[string]any{}
		phases[p.name] = ph
		if len(failures) > 0 {
			ph["ok"], ph["failure"] = false, "not run: an earlier phase failed"
			continue
		}
		t.Logf("phase %s", p.name)
		err := p.run(ph)
		ph["ok"] = err == nil
		if err != nil {
			ph["failure"] = err.Error()
			failures = append(failures, p.name+": "+err.Error())
			t.Errorf("phase %s: %v", p.name, err)
		}
	}
}

func writeReport(t *testing.T, report map[string]any, failures []string) {
	report["ok"] = len(failures) == 0 && !t.Failed()
	report["failures"] = failures
	report["loadavg_after"] = testutil.LoadAvg()
	b, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	t.Logf("%s", b)
	out := os.Getenv("BENCH_OUT")
	if out == "" {
		kind, _ := report["store_kind"].(string)
		out = filepath.Join("..", "results", fmt.Sprintf("cluster-sim-%s-%d-%s.json", kind, report["hosts"],
			time.Now().UTC().Format("20060102T150405Z")))
	}
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Error(err)
		return
	}
	t.Logf("wrote %s", out)
}

// setUp starts the agents one by one, each with its node registered and
// its watcher synced, and has agent 0 create the overlay network.
func setUp(t *testing.T, k knobs, srv Server, report map[string]any) (*sim, error) {
	s := &sim{t: t, k: k, srv: srv, counts: &Counts{}, tr: NewTracker(k.Hosts - 1), dead: make([]bool, k.Hosts),
		live: map[string]cluster.EndpointRecord{}, planner: NewPlanner(uint64(time.Now().UnixNano()), k.Hosts, 2*k.PerHost)}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	cfg := AgentConfig{Server: srv, Prefix: "t21s/", TTL: k.TTL, Counts: s.counts, Tracker: s.tr, Logger: logger,
		RunID: "t21s-" + testutil.Suffix()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	heap0 := heap()
	t.Cleanup(func() { // (the store stops after: cleanups run last first)
		var wg sync.WaitGroup
		for _, a := range s.agents {
			wg.Go(a.Kill)
		}
		wg.Wait()
	})
	start := time.Now()
	for i := range k.Hosts {
		a, err := StartAgent(ctx, i, cfg)
		if err != nil {
			return nil, err
		}
		s.agents = append(s.agents, a)
	}
	report["agents_start_s"] = time.Since(start).Seconds()
	t.Logf("%d agents started in %v", k.Hosts, time.Since(start).Round(time.Millisecond))
	netStart := time.Now()
	n, err := s.agents[0].CreateNetwork(ctx, "simnet", netip.MustParsePrefix("10.96.0.0/16"))
	if err != nil {
		return nil, err
	}
	s.net = n
	if err := within(2*time.Minute, func() bool { return s.tr.Networks(n.ID) == k.Hosts }); err != nil {
		return nil, fmt.Errorf("%d of %d agents installed the network within 2m", s.tr.Networks(n.ID), k.Hosts)
	}
	report["network_everywhere_ms"] = ms(time.Since(netStart))
	time.Sleep(2 * time.Second) // let the node registrations' events settle
	s.heapIdle = heap()
	report["heap_per_agent_idle_kib"] = float64(s.heapIdle-heap0) / float64(k.Hosts) / 1024
	s.heap0 = heap0
	return s, nil
}

// attachPhase: each agent in turn attaches BENCH_ENDPOINTS endpoints, one
// after another (BENCH_ATTACH_PARALLEL agents at a time), each answered
// when its record is in the store, until every one is attached or
// BENCH_BUDGET is spent; then every record must be programmed everywhere
// within BENCH_SETTLE, and every datapath be exact.
func (s *sim) attachPhase(ph, report map[string]any) error {
	if f := os.Getenv("BENCH_CPUPROFILE"); f != "" {
		pf, err := os.Create(f)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); pf.Close() }()
	}
	ctx := context.Background()
	m := s.meter()
	type job struct{ agent, j int }
	jobs := make(chan job)
	var mu sync.Mutex
	var ids []string
	var attachTimes []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	for range s.k.AttachParallel {
		wg.Go(func() {
			for jb := range jobs {
				t0 := time.Now()
				rec, err := s.agents[jb.agent].Attach(ctx, s.net, fmt.Sprintf("sb%04d-%02d", jb.agent, jb.j), s.tr)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					attachTimes = append(attachTimes, time.Since(t0))
					ids = append(ids, rec.ID)
					s.live[rec.ID] = rec
					s.planner.Add(rec.ID, jb.agent)
				}
				mu.Unlock()
			}
		})
	}
	budgetSpent := false
feed:
	for i := range s.agents {
		for j := range s.k.PerHost {
			if time.Since(m.start) > s.k.AttachBudget {
				budgetSpent = true
				break feed
			}
			mu.Lock()
			failed := firstErr != nil
			mu.Unlock()
			if failed {
				break feed
			}
			jobs <- job{i, j}
		}
	}
	close(jobs)
	wg.Wait()
	attachWall := time.Since(m.start)
	ph["attached"] = len(ids)
	ph["attach"] = attach.Summarize(attachTimes)
	ph["attach_wall_s"] = attachWall.Seconds()
	if budgetSpent {
		ph["attach_budget_spent"] = fmt.Sprintf("%v spent: %d of %d endpoints attached", s.k.AttachBudget, len(ids), len(s.agents)*s.k.PerHost)
		s.t.Logf("attach budget %v spent: %d of %d endpoints attached", s.k.AttachBudget, len(ids), len(s.agents)*s.k.PerHost)
	}
	if firstErr != nil {
		return failf("attach: %v", firstErr)
	}
	if len(ids) == 0 {
		return failf("no endpoint attached within the budget")
	}
	s.t.Logf("%d endpoints attached in %v; waiting for convergence", len(ids), attachWall.Round(time.Millisecond))
	err := s.settle(ids, nil)
	ph["converged_after_s"] = time.Since(m.start).Seconds()
	s.convergence(ph, ids, nil)
	s.figures(m, len(ids), ph)
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	full := heap()
	remote := float64(len(ids) * (len(s.agents) - 1))
	report["heap_per_host_kib"] = float64(full-s.heap0) / float64(len(s.agents)) / 1024
	report["heap_per_remote_endpoint_bytes"] = float64(full-s.heapIdle) / remote
	// The fake datapaths' own maps are the harness's, not the agents': a
	// copy of them (sharing their strings, as they share the records')
	// measures what they hold, and the agents' figure leaves it out.
	dp := datapathHeap(s.agents)
	report["heap_fake_datapath_per_remote_endpoint_bytes"] = float64(dp) / remote
	report["heap_agent_per_remote_endpoint_bytes"] = (float64(full-s.heapIdle) - float64(dp)) / remote
	report["endpoints_attached"] = len(ids)
	return s.exact()
}

// networkPhase: a second overlay network is created while every agent
// watches (and holds the first network's endpoints); each agent's delay
// from the network record's write (the create's Txn returned) to its
// NetworkAdded, over agents.
func (s *sim) networkPhase(ph map[string]any) error {
	m := s.meter()
	a := s.agents[len(s.agents)/2]
	called := time.Now()
	n, err := a.CreateNetwork(context.Background(), "simnet2", netip.MustParsePrefix("10.97.0.0/16"))
	if err != nil {
		return err
	}
	created := time.Now()
	live := s.alive()
	err = within(s.k.Settle, func() bool { return s.tr.Networks(n.ID) >= live })
	written := s.tr.NetworkWritten(n.ID)
	if written.IsZero() {
		return failf("the network's record write was not seen")
	}
	var fromWrite, fromCall []time.Duration
	for _, at := range s.tr.NetworkTimes(n.ID) {
		fromWrite, fromCall = append(fromWrite, at.Sub(written)), append(fromCall, at.Sub(called))
	}
	ph["everywhere"] = attach.Summarize(fromWrite)
	ph["everywhere_from_call"] = attach.Summarize(fromCall)
	ph["create_call_ms"] = ms(created.Sub(called))
	ph["agents_installed"] = len(fromWrite)
	s.figures(m, 1, ph)
	if err != nil {
		return failf("%d of %d agents installed the network within %v", s.tr.Networks(n.ID), live, s.k.Settle)
	}
	return nil
}

// churnPhase: BENCH_CHURN_PCT (1) % of the endpoints replaced per second
// for BENCH_CHURN; every addition and removal must be seen everywhere
// within BENCH_SETTLE after the churn, and every datapath be exact.
func (s *sim) churnPhase(ph map[string]any) error {
	return s.churn(ph, s.k.Churn, nil)
}

// restartPhase: churn for BENCH_RESTART_CHURN with the store killed a
// third of the way in and started again (same data, same port) after
// BENCH_STORE_DOWN; how long after it answered again every change begun
// before then was seen everywhere; then as churnPhase.
func (s *sim) restartPhase(ph map[string]any) error {
	var once sync.Once
	var wg sync.WaitGroup
	var killed, up time.Time
	var rerr error
	at := func(el time.Duration) {
		if el < s.k.RestartChurn/3 {
			return
		}
		once.Do(func() {
			wg.Go(func() {
				s.t.Logf("store killed; down for %v", s.k.StoreDown)
				killed, up, rerr = s.srv.Restart(s.k.StoreDown)
				s.t.Logf("store up again after %v", up.Sub(killed).Round(time.Millisecond))
			})
		})
	}
	var adds, dels []string
	err := s.churnWith(ph, s.k.RestartChurn, at, func(a, d []string) { adds, dels = a, d; wg.Wait() })
	if rerr != nil {
		return failf("restart the store: %v", rerr)
	}
	if up.IsZero() {
		return failf("the store was not restarted (churn too short?)")
	}
	ph["outage_ms"] = ms(up.Sub(killed))
	last, n, ok := s.tr.LastBy(up, adds, dels)
	ph["changes_begun_before_up"] = n
	if ok {
		ph["recovered_after_up_ms"] = ms(max(last.Sub(up), 0))
	}
	if err != nil {
		return err
	}
	if !ok {
		return failf("changes begun before the store came back not seen everywhere")
	}
	return nil
}

func (s *sim) churn(ph map[string]any, d time.Duration, at func(time.Duration)) error {
	return s.churnWith(ph, d, at, nil)
}

// churnWith runs a churn phase; ended is called with its changes once the
// churn ended, before waiting for them.
func (s *sim) churnWith(ph map[string]any, d time.Duration, at func(time.Duration), ended func(adds, dels []string)) error {
	m := s.meter()
	total := len(s.live)
	iv := churnInterval(total, s.k.ChurnPct)
	perSec := float64(time.Second) / float64(iv)
	c := &Churn{Agents: s.agents, Network: s.net, Tracker: s.tr, Planner: s.planner, Interval: iv,
		MaxInFlight: max(16, int(4*perSec)), Live: s.live}
	s.t.Logf("churn: %d endpoints, a replacement every %v for %v", total, iv, d)
	// a replacement begun at the end may wait for the store that long
	ctx, cancel := context.WithTimeout(context.Background(), d+s.k.Settle+time.Minute)
	defer cancel()
	res := c.Run(ctx, d, at)
	churned := time.Since(m.start)
	if ended != nil {
		ended(res.Adds, res.Dels)
	}
	ph["target_per_s"] = perSec
	ph["replacements"] = res.Planned
	ph["achieved_per_s"] = float64(res.Planned) / churned.Seconds()
	ph["ticks_skipped"] = res.Skipped
	ph["replacements_failed"] = res.Failed
	if len(res.Failures) > 0 {
		ph["failures"] = res.Failures
	}
	s.t.Logf("churn: %d replacements (%d failed, %d ticks skipped) in %v; waiting for convergence",
		res.Planned, res.Failed, res.Skipped, churned.Round(time.Millisecond))
	err := s.settle(res.Adds, res.Dels)
	ph["converged_after_churn_s"] = (time.Since(m.start) - churned).Seconds()
	s.convergence(ph, res.Adds, res.Dels)
	s.figures(m, len(res.Adds)+len(res.Dels), ph)
	if err != nil {
		return err
	}
	if res.Failed > 0 {
		return failf("%d replacements failed: %s", res.Failed, strings.Join(res.Failures, "; "))
	}
	return s.exact()
}

// deadHostPhase: the live agent with the most endpoints is killed (its
// lease left to expire); the time until its endpoints are gone from every
// other agent, over agents, against BENCH_TTL.
func (s *sim) deadHostPhase(ph map[string]any) error {
	return s.kill(ph, 1)
}

// killPhase: BENCH_KILL_PCT (10) % of the live agents, those with the most
// endpoints, killed at once; as deadHostPhase.
func (s *sim) killPhase(ph map[string]any) error {
	return s.kill(ph, int(math.Ceil(float64(s.alive())*s.k.KillPct/100)))
}

func (s *sim) kill(ph map[string]any, n int) error {
	m := s.meter()
	victims := s.victims(n)
	eps := map[string][]string{} // node -> its endpoints
	gone := 0
	for id, r := range s.live {
		for _, v := range victims {
			if r.Node == v.Node.ID {
				eps[r.Node] = append(eps[r.Node], id)
				delete(s.live, id)
				gone++
			}
		}
	}
	s.t.Logf("killing %d agents (%d endpoints)", len(victims), gone)
	killed := time.Now()
	var wg sync.WaitGroup
	for _, v := range victims {
		s.dead[v.Index] = true
		s.planner.Kill(v.Index)
		wg.Go(v.Kill)
	}
	wg.Wait()
	s.tr.SetWant(s.alive() - 1)
	var after []time.Duration
	err := within(s.k.TTL+s.k.Settle, func() bool {
		after = after[:0]
		for i, a := range s.agents {
			if s.dead[i] {
				continue
			}
			var last time.Time
			for _, v := range victims {
				ok, l := a.DP.GoneOf(v.Node.ID, eps[v.Node.ID])
				if !ok {
					return false
				}
				last = later(last, l)
			}
			after = append(after, last.Sub(killed))
		}
		return true
	})
	ph["killed_agents"] = len(victims)
	ph["endpoints_lost"] = gone
	ph["ttl_ms"] = ms(s.k.TTL)
	if err == nil {
		st := attach.Summarize(after)
		ph["gone_everywhere"] = st
		ph["max_over_ttl"] = st.Max / ms(s.k.TTL)
	}
	s.figures(m, gone, ph)
	if err != nil {
		return failf("the killed agents' endpoints not gone everywhere within TTL + %v", s.k.Settle)
	}
	return s.exact()
}

// victims are the n live agents with the most endpoints (agent 0, which
// created the network, last).
func (s *sim) victims(n int) []*Agent {
	per := map[string]int{}
	for _, r := range s.live {
		per[r.Node]++
	}
	var cand []*Agent
	for i, a := range s.agents {
		if !s.dead[i] && i != 0 {
			cand = append(cand, a)
		}
	}
	sort.SliceStable(cand, func(i, j int) bool { return per[cand[i].Node.ID] > per[cand[j].Node.ID] })
	return cand[:min(n, len(cand))]
}

func (s *sim) alive() int {
	n := 0
	for _, d := range s.dead {
		if !d {
			n++
		}
	}
	return n
}

// settle waits until every addition and removal is seen everywhere, at
// most BENCH_SETTLE.
func (s *sim) settle(adds, dels []string) error {
	if err := within(s.k.Settle, func() bool { return s.tr.Pending(adds, dels) == 0 }); err != nil {
		return failf("%d of %d changes not seen everywhere within %v", s.tr.Pending(adds, dels), len(adds)+len(dels), s.k.Settle)
	}
	return nil
}

// convergence reports the phase's additions (record written -> last agent
// programmed it) and removals (record deleted -> last agent removed it).
func (s *sim) convergence(ph map[string]any, adds, dels []string) {
	fromWrite, fromAttach, inc := s.tr.AddConvergence(adds)
	ph["convergence_add"] = attach.Summarize(fromWrite)
	ph["convergence_add_from_attach"] = attach.Summarize(fromAttach)
	ph["convergence_add_incomplete"] = inc
	if len(dels) > 0 || adds == nil {
		fromDelete, inc := s.tr.RemovalConvergence(dels)
		ph["convergence_remove"] = attach.Summarize(fromDelete)
		ph["convergence_remove_incomplete"] = inc
	}
}

// exact checks that every live agent's datapath holds exactly the other
// live agents' endpoints, each with its published MAC, VTEP and address.
func (s *sim) exact() error {
	var errs []string
	for i, a := range s.agents {
		if !s.dead[i] {
			errs = append(errs, checkDatapath(a, s.live)...)
		}
	}
	if len(errs) > 0 {
		return failf("%d datapath errors: %s", len(errs), strings.Join(errs[:min(len(errs), 10)], "; "))
	}
	return nil
}

// checkDatapath lists how a's datapath differs from live: it must hold
// every endpoint of another node, as published, and nothing else.
func checkDatapath(a *Agent, live map[string]cluster.EndpointRecord) []string {
	var errs []string
	peers := a.DP.Peers()
	want := 0
	for id, r := range live {
		got, ok := peers[id]
		switch {
		case r.Node == a.Node.ID && ok:
			errs = append(errs, fmt.Sprintf("agent %d programs its own endpoint %s", a.Index, r.SandboxName))
		case r.Node == a.Node.ID:
		case !ok:
			want++
			errs = append(errs, fmt.Sprintf("agent %d lacks endpoint %s", a.Index, r.SandboxName))
		case got != entryOf(r):
			want++
			errs = append(errs, fmt.Sprintf("agent %d: endpoint %s programmed as %+v, want %+v", a.Index, r.SandboxName, got, entryOf(r)))
		default:
			want++
		}
	}
	for id, e := range peers {
		if _, ok := live[id]; !ok {
			errs = append(errs, fmt.Sprintf("agent %d programs %s (%s), not attached", a.Index, e.Name, id[:8]))
		}
	}
	return errs
}

// within polls ok every 20 ms until it holds, at most limit.
func within(limit time.Duration, ok func() bool) error {
	for deadline := time.Now().Add(limit); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("deadline passed")
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return string(out[:len(out)-1])
}
