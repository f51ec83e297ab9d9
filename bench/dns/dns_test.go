// Package dns measures the embedded resolver (scenario 6 of the benchmarks
// issue, row 5 of issue 19): queries per second and latency for local
// names, asked from inside a sandbox at 127.0.0.11, against references
// measured in the same run: a static zone with the same names served by the
// same DNS library (miekg/dns) from a bare namespace, with no daemon logic
// (no scoping per network, no aliases, no forwarding); CoreDNS with its
// hosts plugin and dnsmasq with a hosts file (peers_test.go); and, when
// BENCH_TETHER_BEFORE names a tether binary of an older commit, that
// daemon. Two load generators: our Go client and Debian's dnsperf, both
// run inside the namespace of the server they load.
//
//	sudo bench/run.sh dns     # JSON in bench/results/dns-<date>.json
package dns

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// resolverAddr is where both servers answer, inside their namespaces.
const resolverAddr = "127.0.0.11:53"

// Load is one measurement: clients goroutines, each with its own UDP socket
// in the namespace, sending queries one at a time for duration.
type Load struct {
	Clients  int
	Duration time.Duration
}

// Result of one load run.
type Result struct {
	System  string       `json:"system"`
	Queries int          `json:"queries"`
	QPS     float64      `json:"qps"`
	Latency attach.Stats `json:"latency"`
	Wrong   int          `json:"wrong"` // answers that were not the expected address
}

// drive runs the load against the server in nsPath, asking names[i] and
// expecting want[i].
func drive(tb testing.TB, system, nsPath string, names []string, want []netip.Addr, l Load) Result {
	tb.Helper()
	conns := make([]*mdns.Conn, l.Clients)
	if err := netns.Do(nsPath, func() error {
		for i := range conns {
			c, err := net.Dial("udp", resolverAddr)
			if err != nil {
				return err
			}
			conns[i] = &mdns.Conn{Conn: c}
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	lat := make([][]time.Duration, l.Clients)
	wrong := make([]int, l.Clients)
	errs := make([]error, l.Clients)
	deadline := time.Now().Add(l.Duration)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c := &mdns.Client{Timeout: 2 * time.Second}
			for k := i; time.Now().Before(deadline); k++ {
				j := k % len(names)
				m := new(mdns.Msg).SetQuestion(names[j], mdns.TypeA)
				t0 := time.Now()
				resp, _, err := c.ExchangeWithConn(m, conns[i])
				if err != nil {
					errs[i] = fmt.Errorf("%s: query %s: %w", system, names[j], err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
				if len(resp.Answer) != 1 || resp.Answer[0].(*mdns.A).A.String() != want[j].String() {
					wrong[i]++
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
	all := slices.Concat(lat...)
	r := Result{System: system, Queries: len(all), QPS: float64(len(all)) / elapsed.Seconds(), Latency: attach.Summarize(all)}
	for _, w := range wrong {
		r.Wrong += w
	}
	return r
}

// baseline serves a static zone (names → addresses) at 127.0.0.11:53 in a
// fresh namespace and returns the namespace's path.
func baseline(tb testing.TB, names []string, addrs []netip.Addr) string {
	tb.Helper()
	ns := testutil.NetNS(tb, "t19e-base")
	path := "/run/netns/" + ns
	zone := map[string]net.IP{}
	for i, n := range names {
		zone[n] = net.IP(addrs[i].AsSlice())
	}
	var pc net.PacketConn
	if err := netns.Do(path, func() error {
		var err error
		pc, err = net.ListenPacket("udp", resolverAddr)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg).SetReply(q)
		m.Authoritative = true
		if ip, ok := zone[q.Question[0].Name]; ok && q.Question[0].Qtype == mdns.TypeA {
			m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 600}, A: ip}}
		} else {
			m.Rcode = mdns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	tb.Cleanup(func() { _ = srv.Shutdown() })
	return path
}

// system is one server under load: where its clients run and what it
// must answer.
type system struct {
	name  string
	ns    string // namespace path the clients run in
	names []string
	addrs []netip.Addr
}

// tetherSystem starts a daemon from binary bin ("" = this tree's) with n
// sandboxes s0..s<n-1> on one network, starts the resolver of s0 (its
// first process) and returns s0's namespace as the client's.
func tetherSystem(tb testing.TB, name, bin string, n int) system {
	tb.Helper()
	d := testutil.NewDaemon(tb, testutil.NetNS(tb, "t19e-"+name))
	if bin != "" {
		d.Bin = bin
	}
	if err := d.Start(); err != nil {
		tb.Fatal(err)
	}
	d.MustTether("network", "create", "--subnet", "10.123.0.0/16", "bench")
	sys := system{name: name}
	for i := range n {
		sb := fmt.Sprintf("s%d", i)
		d.MustTether("sandbox", "create", "--name", sb, "--network", "bench")
		var s struct {
			NetNS    string
			Networks map[string]struct{ IPAddress string }
		}
		d.InspectJSON(&s, "sandbox", "inspect", sb)
		if i == 0 {
			d.MustTether("exec", sb, "--", "true") // the resolver starts with the first process
			sys.ns = s.NetNS
		}
		sys.names = append(sys.names, sb+".")
		sys.addrs = append(sys.addrs, netip.MustParseAddr(s.Networks["bench"].IPAddress))
	}
	return sys
}

// Report is the JSON written by TestDNSReport.
type Report struct {
	Date      time.Time         `json:"date"`
	Commit    string            `json:"commit"`
	Kernel    string            `json:"kernel"`
	NProc     int               `json:"nproc"`
	LoadStart string            `json:"loadavg_start"`
	LoadEnd   string            `json:"loadavg_end"`
	Names     int               `json:"names"`
	Clients   int               `json:"clients"`
	Seconds   float64           `json:"seconds_per_run"`
	Perf      string            `json:"dnsperf"` // its version, "" when not installed
	Systems   []string          `json:"systems"`
	Missing   map[string]string `json:"missing,omitempty"` // system or client left out, and why
	Go        []Result          `json:"go_client"`
	Dnsperf   []Perf            `json:"dnsperf_runs"`
}

// setup starts every system: Tether (this tree), Tether before
// (BENCH_TETHER_BEFORE, a tether binary built from an older commit), the
// static zone on the same library, CoreDNS (hosts) and dnsmasq when
// installed.
func setup(tb testing.TB, n int, rep *Report) []system {
	tb.Helper()
	tether := tetherSystem(tb, "tether", "", n)
	systems := []system{tether}
	if before := os.Getenv("BENCH_TETHER_BEFORE"); before != "" {
		systems = append(systems, tetherSystem(tb, "tether-before", before, n))
	} else {
		rep.Missing["tether-before"] = "BENCH_TETHER_BEFORE not set"
	}
	names, addrs := tether.names, tether.addrs
	systems = append(systems, system{name: "baseline", ns: baseline(tb, names, addrs), names: names, addrs: addrs})
	if bin := corednsBin(); bin != "" {
		systems = append(systems, system{name: "coredns", ns: startCoreDNS(tb, bin, names, addrs), names: names, addrs: addrs})
	} else {
		rep.Missing["coredns"] = "no coredns binary (bench/dns/refs.sh)"
	}
	if bin, err := exec.LookPath("dnsmasq"); err == nil {
		systems = append(systems, system{name: "dnsmasq", ns: startDnsmasq(tb, bin, names, addrs), names: names, addrs: addrs})
	} else {
		rep.Missing["dnsmasq"] = "dnsmasq not installed (bench/dns/refs.sh)"
	}
	for _, s := range systems {
		rep.Systems = append(rep.Systems, s.name)
	}
	return systems
}

// measure loads every system reps times with our client (l) and dnsperf
// (same clients, perfThreads threads), in an order rotated every round.
func measure(tb testing.TB, sandboxes, reps int, l Load, perfThreads int) Report {
	rep := Report{Date: time.Now().UTC(), Commit: gitCommit(), Kernel: readTrim("/proc/sys/kernel/osrelease"), NProc: runtime.NumCPU(),
		LoadStart: readTrim("/proc/loadavg"), Names: sandboxes, Clients: l.Clients, Seconds: l.Duration.Seconds(), Missing: map[string]string{}}
	systems := setup(tb, sandboxes, &rep)
	_, perfErr := exec.LookPath("dnsperf")
	if perfErr == nil {
		out, _ := exec.Command("dpkg-query", "-W", "-f", "${Version}", "dnsperf").Output()
		rep.Perf = "dnsperf " + string(out)
	} else {
		rep.Missing["dnsperf"] = "dnsperf not installed (bench/dns/refs.sh)"
	}
	for r := range reps {
		order := slices.Clone(systems)
		rotate(order, r)
		for _, s := range order {
			rep.Go = append(rep.Go, drive(tb, s.name, s.ns, s.names, s.addrs, l))
		}
		if perfErr != nil {
			continue
		}
		for _, s := range order {
			rep.Dnsperf = append(rep.Dnsperf, dnsperf(tb, s.name, s.ns, s.names, l.Duration, l.Clients, perfThreads))
		}
	}
	rep.LoadEnd = readTrim("/proc/loadavg")
	return rep
}

func rotate[T any](s []T, k int) {
	if len(s) > 0 {
		k %= len(s)
		slices.Reverse(s[:k])
		slices.Reverse(s[k:])
		slices.Reverse(s)
	}
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// TestDNSSmoke runs the scenario small: every answer must be the right
// address, from every system, and every dnsperf answer NOERROR.
func TestDNSSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	rep := measure(t, 5, 1, Load{Clients: 2, Duration: 200 * time.Millisecond}, 1)
	for _, r := range rep.Go {
		if r.Queries == 0 || r.Wrong != 0 {
			t.Errorf("%s: %d queries, %d wrong answers", r.System, r.Queries, r.Wrong)
		}
	}
	for _, p := range rep.Dnsperf {
		if p.Completed == 0 || p.NoError != p.Completed {
			t.Errorf("%s under dnsperf: %d completed, %d NOERROR", p.System, p.Completed, p.NoError)
		}
	}
	t.Logf("systems %v, left out %v", rep.Systems, rep.Missing)
	if os.Getenv("TETHER_E2E") == "1" { // the peers are part of the suite (.ci/run installs them)
		for _, need := range []string{"coredns", "dnsmasq", "dnsperf"} {
			if why, ok := rep.Missing[need]; ok {
				t.Errorf("%s missing under TETHER_E2E=1: %s", need, why)
			}
		}
	}
}

// TestDNSReport is the full run (BENCH_REPORT=1): 50 names, 8 clients,
// 3 s per run, 5 rounds; in each round every system under our client, then
// every system under dnsperf (-c 8 -T BENCH_DNSPERF_THREADS, default 1),
// in an order rotated every round.
func TestDNSReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh dns)")
	}
	testutil.RequireRoot(t)
	rep := measure(t, attach.EnvInt("BENCH_N", 50), attach.EnvInt("BENCH_REPS", 5),
		Load{Clients: attach.EnvInt("BENCH_CLIENTS", 8), Duration: 3 * time.Second}, attach.EnvInt("BENCH_DNSPERF_THREADS", 1))
	t.Log("\n" + table(rep))
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// table is the report's markdown: per system the medians under each
// client and their ratios to the static zone and to CoreDNS.
func table(rep Report) string {
	goQPS := func(sys string) float64 {
		return stats.MedianOf(filter(rep.Go, func(r Result) bool { return r.System == sys }), func(r Result) float64 { return r.QPS })
	}
	perfQPS := func(sys string) float64 {
		return stats.MedianOf(filter(rep.Dnsperf, func(p Perf) bool { return p.System == sys }), func(p Perf) float64 { return p.QPS })
	}
	ratio := func(a, b float64) string {
		if a == 0 || b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d names; our client %d UDP sockets, dnsperf -c %d; median of %d runs of %.0f s; load %s → %s\n\n",
		rep.Names, rep.Clients, rep.Clients, len(rep.Go)/max(1, len(rep.Systems)), rep.Seconds, rep.LoadStart, rep.LoadEnd)
	b.WriteString("| system | qps (our client) | p50 / p99 | wrong | qps (dnsperf) | avg latency | lost | ÷ static zone (ours / dnsperf) | ÷ CoreDNS (ours / dnsperf) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, sys := range rep.Systems {
		gs := filter(rep.Go, func(r Result) bool { return r.System == sys })
		ps := filter(rep.Dnsperf, func(p Perf) bool { return p.System == sys })
		wrong, lost := 0, 0
		for _, r := range gs {
			wrong += r.Wrong
		}
		for _, p := range ps {
			lost += p.Lost
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.0f / %.0f µs | %d | %.0f | %.3f ms | %d | %s / %s | %s / %s |\n", sys, goQPS(sys),
			stats.MedianOf(gs, func(r Result) float64 { return r.Latency.P50 * 1000 }), stats.MedianOf(gs, func(r Result) float64 { return r.Latency.P99 * 1000 }),
			wrong, perfQPS(sys), stats.MedianOf(ps, func(p Perf) float64 { return p.AvgLatMS }), lost,
			ratio(goQPS(sys), goQPS("baseline")), ratio(perfQPS(sys), perfQPS("baseline")),
			ratio(goQPS(sys), goQPS("coredns")), ratio(perfQPS(sys), perfQPS("coredns")))
	}
	return b.String()
}

func filter[T any](s []T, keep func(T) bool) []T {
	var out []T
	for _, v := range s {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}
