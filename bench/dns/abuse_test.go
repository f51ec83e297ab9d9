package dns

// Resolver abuse (issue 13, attack 7): the latency of a victim sandbox's
// local-name queries while another sandbox on the same daemon abuses its own
// 127.0.0.11, against the same measurement with no abuse in the same run,
// and the daemon's CPU time during each window (utime + stime of
// /proc/<daemon pid>/stat).
//
//	sudo bench/run.sh dns-abuse   # JSON in bench/results/dns-abuse-<date>.json

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

// abuseHost is a daemon whose only upstream is a fake in the outside
// namespace (never a real server), with an attacker, a victim and a
// target sandbox on one network.
type abuseHost struct {
	d                *testutil.Daemon
	pid              int
	attacker, victim string // namespace paths
	target           string // the victim asks for this name
	want             string // and expects this address
	upstream         *atomic.Int64
}

// fakeUpstream serves DNS on addr:53 (UDP) in namespace ns: names under
// blackhole.test. are never answered, names under slow.test. after a
// second, the rest at once with A 203.0.113.7. It counts the queries.
func fakeUpstream(tb testing.TB, ns, addr string) *atomic.Int64 {
	tb.Helper()
	var n atomic.Int64
	var pc net.PacketConn
	if err := netns.Do("/run/netns/"+ns, func() (err error) {
		pc, err = net.ListenPacket("udp4", addr+":53")
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		n.Add(1)
		name := strings.ToLower(q.Question[0].Name)
		switch {
		case strings.HasSuffix(name, ".blackhole.test."):
			return
		case strings.HasSuffix(name, ".slow.test."):
			time.Sleep(time.Second)
		}
		m := new(mdns.Msg).SetReply(q)
		rr, _ := mdns.NewRR(q.Question[0].Name + " 60 IN A 203.0.113.7")
		m.Answer = []mdns.RR{rr}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	tb.Cleanup(func() { _ = srv.Shutdown() })
	return &n
}

func startAbuseHost(tb testing.TB) *abuseHost {
	tb.Helper()
	ns := testutil.NetNS(tb, "tth-dnsab")
	out := testutil.Outside(tb, ns)
	up := fakeUpstream(tb, out, testutil.OutsideAddr)
	d := testutil.StartDaemon(tb, ns, "--dns", testutil.OutsideAddr)
	d.MustTether("network", "create", "--subnet", "10.183.0.0/24", "app")
	for _, sb := range []string{"attacker", "victim", "target"} {
		d.MustTether("sandbox", "create", "--name", sb, "--network", "app")
	}
	h := &abuseHost{d: d, pid: d.PID(), target: "target.", upstream: up}
	for _, sb := range []string{"attacker", "victim"} {
		d.MustTether("exec", sb, "--", "true") // the resolver starts with the first process
	}
	var s struct {
		NetNS    string
		Networks map[string]struct{ IPAddress string }
	}
	d.InspectJSON(&s, "sandbox", "inspect", "attacker")
	h.attacker = s.NetNS
	d.InspectJSON(&s, "sandbox", "inspect", "victim")
	h.victim = s.NetNS
	d.InspectJSON(&s, "sandbox", "inspect", "target")
	h.want = s.Networks["app"].IPAddress
	return h
}

// An abuse runs from the attacker's namespace until stop is closed.
type abuse func(nsPath string, stop <-chan struct{}) (actions int64)

// holdTCP keeps n connections to 127.0.0.11:53 open, writing first on each
// (nothing: idle; a partial message: half-sent), and opens new ones as the
// server closes or resets them (every 50 ms, up to n).
func holdTCP(n int, first []byte) abuse {
	return func(nsPath string, stop <-chan struct{}) int64 {
		var open, dials atomic.Int64
		var conns sync.Map
		defer conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		for {
			missing := int64(n) - open.Load()
			_ = netns.Do(nsPath, func() error {
				for range missing {
					c, err := net.DialTimeout("tcp4", "127.0.0.11:53", time.Second)
					dials.Add(1)
					if errors.Is(err, syscall.ECONNRESET) {
						continue
					}
					if err != nil {
						return err
					}
					if len(first) > 0 {
						_, _ = c.Write(first)
					}
					open.Add(1)
					conns.Store(c, nil)
					go func() { // until the server closes or resets it
						_, _ = c.Read(make([]byte, 512))
						conns.Delete(c)
						c.Close()
						open.Add(-1)
					}()
				}
				return nil
			})
			select {
			case <-stop:
				return dials.Load()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// truncatedReset opens connections, sends part of a query and resets.
func truncatedReset(nsPath string, stop <-chan struct{}) int64 {
	var n int64
	_ = netns.Do(nsPath, func() error {
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			c, err := net.DialTimeout("tcp4", "127.0.0.11:53", time.Second)
			if err != nil {
				continue
			}
			_, _ = c.Write([]byte{0x00, 0x30, 0xab, 0xcd, 0x01, 0x00, 0x00})
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
			n++
		}
	})
	return n
}

// forwardFlood sends queries for fresh names under zone from 4 UDP
// sockets, ~1000 per second each, without waiting for answers.
func forwardFlood(zone string) abuse {
	return func(nsPath string, stop <-chan struct{}) int64 {
		var sent atomic.Int64
		var wg sync.WaitGroup
		for g := range 4 {
			var c net.Conn
			if err := netns.Do(nsPath, func() (err error) {
				c, err = net.Dial("udp4", "127.0.0.11:53")
				return err
			}); err != nil {
				return 0
			}
			wg.Go(func() {
				buf := make([]byte, 512)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			})
			wg.Go(func() {
				defer c.Close()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					b, _ := new(mdns.Msg).SetQuestion(fmt.Sprintf("q%d-%d.%s.", g, i, zone), mdns.TypeA).Pack()
					_, _ = c.Write(b)
					sent.Add(1)
					time.Sleep(time.Millisecond)
				}
			})
		}
		wg.Wait()
		return sent.Load()
	}
}

// AbuseResult is one window: the victim's local-name latency over UDP and
// TCP during the abuse, and the daemon's CPU time in the window.
type AbuseResult struct {
	Abuse      string       `json:"abuse"`
	Seconds    float64      `json:"seconds"`
	UDP        attach.Stats `json:"victim_udp"`
	TCP        attach.Stats `json:"victim_tcp"`
	Failed     int          `json:"victim_failed"` // errors and wrong answers
	CPUSeconds float64      `json:"daemon_cpu_s"`
	FDs        int          `json:"daemon_fds"`       // open at the end of the window (before the abuse stops)
	Actions    int64        `json:"attacker_actions"` // connections, queries: what the abuse did
}

// victimInterval paces the victim's queries (1000 per second), so that
// the daemon's CPU in a window is mostly the abuse's, not the victim's.
const victimInterval = time.Millisecond

// window runs abuse a (nil: none) while the victim asks for the target
// name, alternately over UDP and TCP, one query at a time every
// victimInterval, for d.
func (h *abuseHost) window(tb testing.TB, name string, a abuse, d time.Duration) AbuseResult {
	tb.Helper()
	stop := make(chan struct{})
	actions := make(chan int64, 1)
	if a != nil {
		go func() { actions <- a(h.attacker, stop) }()
		time.Sleep(500 * time.Millisecond) // the abuse reaches its steady state
	} else {
		actions <- 0
	}
	var udp, tcp []time.Duration
	failed := 0
	cpu0, t0 := testutil.ProcCPU(tb, h.pid), time.Now()
	_ = netns.Do(h.victim, func() error {
		cu := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
		ct := &mdns.Client{Net: "tcp", Timeout: 2 * time.Second}
		for i := 0; time.Since(t0) < d; i++ {
			if wait := time.Until(t0.Add(time.Duration(i) * victimInterval)); wait > 0 {
				time.Sleep(wait)
			}
			c, lat := cu, &udp
			if i%2 == 1 {
				c, lat = ct, &tcp
			}
			q := new(mdns.Msg).SetQuestion(h.target, mdns.TypeA)
			s := time.Now()
			r, _, err := c.Exchange(q, "127.0.0.11:53")
			el := time.Since(s)
			if err != nil || len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != h.want {
				failed++
				continue
			}
			*lat = append(*lat, el)
		}
		return nil
	})
	wall := time.Since(t0)
	used := testutil.ProcCPU(tb, h.pid) - cpu0
	fds := testutil.OpenFDs(tb, h.pid)
	close(stop)
	res := AbuseResult{Abuse: name, Seconds: wall.Seconds(), UDP: attach.Summarize(udp), TCP: attach.Summarize(tcp),
		Failed: failed, CPUSeconds: used.Seconds(), FDs: fds, Actions: <-actions}
	time.Sleep(2500 * time.Millisecond) // in-flight forwards and held connections time out
	return res
}

// AbuseReport is the JSON written by TestDNSAbuseReport.
type AbuseReport struct {
	Date    time.Time     `json:"date"`
	Seconds float64       `json:"seconds_per_window"`
	Windows []AbuseResult `json:"windows"`
}

var abuses = []struct {
	name string
	a    abuse
}{
	{"none", nil},
	{"500 idle TCP connections", holdTCP(500, nil)},
	{"500 half-sent TCP queries", holdTCP(500, []byte{0x00, 0x40, 0x12, 0x34, 0x01})},
	{"truncated TCP queries + reset", truncatedReset},
	{"forward flood, upstream never answers", forwardFlood("blackhole.test")},
	{"forward flood, upstream answers in 1 s", forwardFlood("slow.test")},
}

func measureAbuse(tb testing.TB, reps int, d time.Duration) AbuseReport {
	h := startAbuseHost(tb)
	rep := AbuseReport{Date: time.Now().UTC(), Seconds: d.Seconds()}
	for range reps {
		for _, ab := range abuses {
			rep.Windows = append(rep.Windows, h.window(tb, ab.name, ab.a, d))
		}
	}
	return rep
}

// TestDNSAbuseSmoke runs every abuse briefly: the victim must get every
// answer right.
func TestDNSAbuseSmoke(t *testing.T) {
	testutil.RequireRoot(t)
	rep := measureAbuse(t, 1, 300*time.Millisecond)
	for _, w := range rep.Windows {
		if w.Failed != 0 || w.UDP.N == 0 || w.TCP.N == 0 {
			t.Errorf("%s: victim %d UDP and %d TCP answers, %d failed", w.Abuse, w.UDP.N, w.TCP.N, w.Failed)
		}
	}
}

// TestDNSAbuseReport is the full run (BENCH_REPORT=1): every abuse for 3 s,
// BENCH_REPS rounds (default 3), the no-abuse window in each round.
func TestDNSAbuseReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh dns-abuse)")
	}
	testutil.RequireRoot(t)
	rep := measureAbuse(t, attach.EnvInt("BENCH_REPS", 3), 3*time.Second)
	by := map[string][]AbuseResult{}
	for _, w := range rep.Windows {
		by[w.Abuse] = append(by[w.Abuse], w)
	}
	med := stats.MedianOf[AbuseResult, float64]
	p50 := func(r AbuseResult) float64 { return r.UDP.P50 }
	p99 := func(r AbuseResult) float64 { return r.UDP.P99 }
	tp50 := func(r AbuseResult) float64 { return r.TCP.P50 }
	tp99 := func(r AbuseResult) float64 { return r.TCP.P99 }
	cores := func(r AbuseResult) float64 { return r.CPUSeconds / r.Seconds }
	none := by["none"]
	var b strings.Builder
	fmt.Fprintf(&b, "| abuse (median of %d windows of %.0f s) | victim UDP p50 / p99 | ratio p50 / p99 | victim TCP p50 / p99 | failed | daemon CPU | daemon fds |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
		len(none), rep.Seconds)
	for _, ab := range abuses {
		rs := by[ab.name]
		failed := 0
		for _, r := range rs {
			failed += r.Failed
		}
		fmt.Fprintf(&b, "| %s | %.3f / %.3f ms | %.2f× / %.2f× | %.3f / %.3f ms | %d | %.0f%% of a core | %.0f |\n", ab.name,
			med(rs, p50), med(rs, p99), med(rs, p50)/med(none, p50), med(rs, p99)/med(none, p99),
			med(rs, tp50), med(rs, tp99), failed, 100*med(rs, cores), med(rs, func(r AbuseResult) float64 { return float64(r.FDs) }))
	}
	t.Log("\n" + b.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
