// Package dns measures the embedded resolver (scenario 6 of the benchmarks
// issue): queries per second and latency for local names, asked from inside
// a sandbox at 127.0.0.11, against a baseline measured in the same run: a
// static zone with the same names served by the same DNS library
// (miekg/dns) from a bare namespace, with no daemon logic (no scoping per
// network, no aliases, no forwarding).
//
//	sudo bench/run.sh dns     # JSON in bench/results/dns-<date>.json
package dns

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
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
	ns := testutil.NetNS(tb, "tth-dnsbase")
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

// Report is the JSON written by TestDNSReport.
type Report struct {
	Date     time.Time `json:"date"`
	Names    int       `json:"names"`
	Clients  int       `json:"clients"`
	Seconds  float64   `json:"seconds_per_run"`
	Tether   []Result  `json:"tether"`
	Baseline []Result  `json:"baseline"`
}

func measure(tb testing.TB, sandboxes, reps int, l Load) Report {
	t := attach.StartTether(tb)
	var names []string
	var addrs []netip.Addr
	var client string
	for i := range sandboxes {
		sb, _, err := t.Create(fmt.Sprintf("s%d", i))
		if err != nil {
			tb.Fatal(err)
		}
		if i == 0 {
			client = sb.NetNS
			// the resolver starts with the sandbox's first process
			if _, _, err := t.Exec(sb.Name, "true"); err != nil {
				tb.Fatal(err)
			}
		}
		names = append(names, fmt.Sprintf("s%d.", i))
		addrs = append(addrs, sb.Networks["bench"].IPAddress)
	}
	base := baseline(tb, names, addrs)
	rep := Report{Date: time.Now().UTC(), Names: sandboxes, Clients: l.Clients, Seconds: l.Duration.Seconds()}
	for r := range reps {
		// alternate the order so neither system always runs first
		if r%2 == 0 {
			rep.Tether = append(rep.Tether, drive(tb, "tether", client, names, addrs, l))
			rep.Baseline = append(rep.Baseline, drive(tb, "baseline", base, names, addrs, l))
		} else {
			rep.Baseline = append(rep.Baseline, drive(tb, "baseline", base, names, addrs, l))
			rep.Tether = append(rep.Tether, drive(tb, "tether", client, names, addrs, l))
		}
	}
	return rep
}

// TestDNSSmoke runs the scenario small: every answer must be the right
// address, from both servers.
func TestDNSSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	rep := measure(t, 5, 1, Load{Clients: 2, Duration: 200 * time.Millisecond})
	for _, r := range slices.Concat(rep.Tether, rep.Baseline) {
		if r.Queries == 0 || r.Wrong != 0 {
			t.Errorf("%s: %d queries, %d wrong answers", r.System, r.Queries, r.Wrong)
		}
	}
}

// TestDNSReport is the full run (BENCH_REPORT=1): 50 names, 8 clients,
// 3 s per run, 5 runs per system, interleaved.
func TestDNSReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh dns)")
	}
	testutil.RequireRoot(t)
	rep := measure(t, attach.EnvInt("BENCH_N", 50), attach.EnvInt("BENCH_REPS", 5),
		Load{Clients: attach.EnvInt("BENCH_CLIENTS", 8), Duration: 3 * time.Second})
	qps := func(r Result) float64 { return r.QPS }
	p50 := func(r Result) float64 { return r.Latency.P50 * 1000 }
	p99 := func(r Result) float64 { return r.Latency.P99 * 1000 }
	var b strings.Builder
	fmt.Fprintf(&b, "| %d names, %d clients (median of %d runs of %.0f s) | qps | p50 | p99 | wrong |\n|---|---:|---:|---:|---:|\n",
		rep.Names, rep.Clients, len(rep.Tether), rep.Seconds)
	wrong := func(rs []Result) (n int) {
		for _, r := range rs {
			n += r.Wrong
		}
		return n
	}
	for _, s := range []struct {
		name string
		rs   []Result
	}{{"Tether (embedded resolver, in a sandbox)", rep.Tether}, {"baseline (static zone, same library)", rep.Baseline}} {
		fmt.Fprintf(&b, "| %s | %.0f | %.0f µs | %.0f µs | %d |\n", s.name, stats.MedianOf(s.rs, qps), stats.MedianOf(s.rs, p50), stats.MedianOf(s.rs, p99), wrong(s.rs))
	}
	fmt.Fprintf(&b, "| **ratio** | **%.2f×** | %.2f× | %.2f× | |\n", stats.MedianOf(rep.Tether, qps)/stats.MedianOf(rep.Baseline, qps),
		stats.MedianOf(rep.Tether, p50)/stats.MedianOf(rep.Baseline, p50), stats.MedianOf(rep.Tether, p99)/stats.MedianOf(rep.Baseline, p99))
	t.Log("\n" + b.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
