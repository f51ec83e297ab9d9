package dockerplugin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/tether-net/tether/bench/attach"
	bdocker "github.com/tether-net/tether/bench/docker"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// Report is the JSON a report run writes.
type Report struct {
	Date    time.Time `json:"date"`
	Load    string    `json:"loadavg_start"`
	LoadEnd string    `json:"loadavg_end"`
	Tether  string    `json:"tether_commit"` // git describe of the tree the test ran in
	Kernel  string    `json:"kernel"`
	Dockerd string    `json:"dockerd"`
	Store   string    `json:"store"`

	N          int          `json:"runs_per_network"`
	RunTether  attach.Stats `json:"run_returned_tether"`  // docker run -d returned, Tether local network
	RunDocker  attach.Stats `json:"run_returned_docker"`  // same, Docker's own bridge network
	PingTether attach.Stats `json:"ping_answers_tether"`  // from the run's start until the first echo reply
	PingDocker attach.Stats `json:"ping_answers_docker"`  // same
	RatioP50   float64      `json:"ping_ratio_p50"`       // Tether ÷ Docker
	RatioP90   float64      `json:"ping_ratio_p90"`       // Tether ÷ Docker
	RunOverlay attach.Stats `json:"run_returned_overlay"` // docker run -d on the overlay (host A)
	Resolve    attach.Stats `json:"resolve_after_run"`    // from the run's return until host B's resolver answers

	MiB              int       `json:"nc_transfer_mib"`
	OverlayMBps      []float64 `json:"nc_overlay_mb_s"`  // busybox dd | nc, container to container across hosts
	UnderlayMBps     []float64 `json:"nc_underlay_mb_s"` // the same busybox, host namespace to host namespace
	Throughput       float64   `json:"nc_ratio_median"`  // overlay ÷ underlay
	HTTPMiB          int       `json:"http_transfer_mib"`
	OverlayHTTPMBps  []float64 `json:"http_overlay_mb_s"`  // busybox httpd → wget, container to container
	UnderlayHTTPMBps []float64 `json:"http_underlay_mb_s"` // the same, host namespace to host namespace
	ThroughputHTTP   float64   `json:"http_ratio_median"`  // overlay ÷ underlay
}

// config is one measurement's size.
type config struct {
	n, reps, mib, httpMiB int
	store                 string
}

func measure(tb testing.TB, cfg config) Report {
	refs := bdocker.RequireRefs(tb)
	rep := Report{Date: time.Now().UTC(), Load: testutil.LoadAvg(), N: cfg.n, MiB: cfg.mib, HTTPMiB: cfg.httpMiB}
	c := bdocker.StartCluster(tb, refs, cfg.store, 2, bdocker.TetherOptions{})
	a, b := c.Nodes[0], c.Nodes[1]
	rep.Dockerd, rep.Store = a.Docker.Version, c.StoreURL()
	rep.Tether, rep.Kernel = command("git", "describe", "--always", "--dirty"), command("uname", "-r")

	runToPing(tb, a, cfg.n, &rep)
	ov := overlay(tb, a, b)
	resolveAcross(tb, a, b, ov, cfg.n, &rep)
	throughput(tb, c, ov, cfg, &rep)
	rep.LoadEnd = testutil.LoadAvg()
	return rep
}

// command is a command's trimmed output ("" on failure).
func command(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// cli runs the docker CLI on a node and fails the benchmark on error.
func cli(tb testing.TB, n *bdocker.Node, args ...string) string {
	tb.Helper()
	out, _, err := n.Docker.CLI(args...)
	if err != nil {
		tb.Fatalf("%v\n%s", err, n.Diagnose())
	}
	return out
}

// runToPing is figure (a): Tether's local network vs Docker's bridge.
func runToPing(tb testing.TB, a *bdocker.Node, n int, rep *Report) {
	tb.Helper()
	nets := []struct {
		name   string
		subnet netip.Prefix
		create []string
	}{
		{"tnet", netip.MustParsePrefix("10.160.0.0/24"), []string{"-d", "tether", "--ipam-driver", "tether"}},
		{"dnet", netip.MustParsePrefix("10.161.0.0/24"), []string{"-d", "bridge"}},
	}
	for _, x := range nets {
		cli(tb, a, append(append([]string{"network", "create"}, x.create...), "--subnet", x.subnet.String(), x.name)...)
	}
	p := newPinger(tb, "/run/netns/"+a.Host.NS)
	var run, ping [2][]time.Duration
	for i := -1; i < n; i++ { // i = -1: one warm-up each, not recorded
		for k := range 2 {
			j := k
			if i%2 != 0 {
				j = 1 - k // alternate which network goes first
			}
			x := nets[j]
			ip := nth(x.subnet, 11+i) // .10, .11, ...: a fresh address (no neighbour entry) each run
			name := fmt.Sprintf("%s-%d", x.name, i+1)
			start := time.Now()
			id, took, err := a.Docker.RunOn(name, x.name, ip, "sleep", "3600")
			if err != nil {
				tb.Fatalf("%v\n%s", err, a.Diagnose())
			}
			if _, err := p.firstReply(ip, time.Millisecond, 30*time.Second); err != nil {
				tb.Fatalf("%s (%s) on %s: %v", name, ip, x.name, err)
			}
			answered := time.Since(start)
			if i >= 0 {
				run[j], ping[j] = append(run[j], took), append(ping[j], answered)
			}
			if _, err := a.Docker.Remove(id); err != nil {
				tb.Fatal(err)
			}
		}
	}
	rep.RunTether, rep.RunDocker = attach.Summarize(run[0]), attach.Summarize(run[1])
	rep.PingTether, rep.PingDocker = attach.Summarize(ping[0]), attach.Summarize(ping[1])
	if rep.PingDocker.P50 > 0 && rep.PingDocker.P90 > 0 {
		rep.RatioP50, rep.RatioP90 = rep.PingTether.P50/rep.PingDocker.P50, rep.PingTether.P90/rep.PingDocker.P90
	}
}

// nth is the k-th address of p (k >= 0; p's own address is the 0th).
func nth(p netip.Prefix, k int) netip.Addr {
	a := p.Masked().Addr()
	for range k {
		a = a.Next()
	}
	return a
}

// overlay creates the global network "ov" on host A and waits until host
// B's dockerd lists it; it returns the name.
func overlay(tb testing.TB, a, b *bdocker.Node) string {
	tb.Helper()
	const ov = "ov"
	cli(tb, a, "network", "create", "-d", "tether", "-o", "tether.scope=global", "--ipam-driver", "tether", "--subnet", "10.162.0.0/24", ov)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _, err := b.Docker.CLI("network", "ls", "--filter", "name="+ov, "--format", "{{.Name}}")
		if err == nil && strings.TrimSpace(out) == ov {
			return ov
		}
		if time.Now().After(deadline) {
			tb.Fatalf("host B's dockerd does not list %s: %q %v\n%s", ov, out, err, b.Diagnose())
		}
	}
}

// resolveAcross is figure (b): containers run on host A, resolved from a
// container on host B.
func resolveAcross(tb testing.TB, a, b *bdocker.Node, ov string, n int, rep *Report) {
	tb.Helper()
	probeID, _, err := b.Docker.RunOn("probe", ov, netip.Addr{}, "sleep", "3600")
	if err != nil {
		tb.Fatalf("%v\n%s", err, b.Diagnose())
	}
	pid, err := b.Docker.PID(probeID)
	if err != nil {
		tb.Fatal(err)
	}
	r := newResolver(tb, netns.ProcNSPath(pid, "net"))
	var run, res []time.Duration
	for i := -1; i < n; i++ { // i = -1: warm-up
		name := fmt.Sprintf("r%d", i+1)
		id, took, err := a.Docker.RunOn(name, ov, netip.Addr{}, "sleep", "3600")
		if err != nil {
			tb.Fatalf("%v\n%s", err, a.Diagnose())
		}
		returned := time.Now()
		var got netip.Addr
		for got = r.lookup(name); !got.IsValid(); got = r.lookup(name) {
			if time.Since(returned) > 30*time.Second {
				tb.Fatalf("%s not resolved on host B within 30 s\nhost A:\n%s\nhost B:\n%s", name, a.Diagnose(), b.Diagnose())
			}
			time.Sleep(2 * time.Millisecond)
		}
		took2 := time.Since(returned)
		if want, err := a.Docker.Addr(id, ov); err != nil || want != got {
			tb.Fatalf("host B resolved %s to %s; host A's dockerd says %s (%v)", name, got, want, err)
		}
		if i >= 0 {
			run, res = append(run, took), append(res, took2)
		}
		if _, err := a.Docker.Remove(id); err != nil {
			tb.Fatal(err)
		}
	}
	rep.RunOverlay, rep.Resolve = attach.Summarize(run), attach.Summarize(res)
}

var realTime = regexp.MustCompile(`real\s+(\d+)m\s*([0-9.]+)s`)

// throughput is figure (c): busybox to busybox across the hosts, overlay
// (container to container) vs underlay (host namespace to host namespace),
// interleaved, with two tools: dd | nc (which moves 1 KiB per read and
// write, so it is bound by the tool's system calls more than by the
// network), and httpd serving a sparse file to wget -O /dev/null (httpd
// sends with sendfile, wget reads up to 64 KiB at a time; one untimed
// transfer first puts the file in the page cache).
func throughput(tb testing.TB, c *bdocker.Cluster, ov string, cfg config, rep *Report) {
	tb.Helper()
	a, b := c.Nodes[0], c.Nodes[1]
	if _, _, err := a.Docker.RunOn("tx", ov, netip.Addr{}, "sleep", "3600"); err != nil {
		tb.Fatal(err)
	}
	httpBytes := int64(cfg.httpMiB) << 20
	rxID, _, err := b.Docker.RunOn("rx", ov, netip.Addr{}, "sh", "-c",
		fmt.Sprintf("mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/big bs=1 count=0 seek=%d 2>/dev/null && exec httpd -f -p 80 -h /tmp/www", httpBytes))
	if err != nil {
		tb.Fatal(err)
	}
	rxAddr, err := b.Docker.Addr(rxID, ov)
	if err != nil {
		tb.Fatal(err)
	}
	hostA, hostB := "--net=/run/netns/"+c.Members[0].NS, "--net=/run/netns/"+c.Members[1].NS
	docker := func(args ...string) *exec.Cmd {
		return exec.Command(a.Docker.Refs.DockerCLI, append([]string{"-H", "unix://" + a.Docker.Socket}, args...)...)
	}

	// dd | nc
	count := cfg.mib * 16 // 64 KiB blocks
	ncBytes := float64(cfg.mib) * (1 << 20)
	ncOverlay := func() float64 {
		// sleep keeps nc's stdin open: at EOF on stdin busybox nc shuts
		// its side and the client, reading EOF, stops sending
		cli(tb, b, "exec", "-d", "rx", "sh", "-c", "sleep 3600 | nc -l -p 5001 >/dev/null")
		return transfer(tb, ncBytes, func() *exec.Cmd {
			return docker("exec", "tx", "time", "sh", "-c",
				fmt.Sprintf("dd if=/dev/zero bs=65536 count=%d 2>/dev/null | nc %s 5001; echo xfer-exit=$?", count, rxAddr))
		})
	}
	ncUnderlay := func() float64 {
		srv := exec.Command("nsenter", hostB, "busybox", "nc", "-l", "-p", "5002")
		stdin, err := srv.StdinPipe() // kept open: see ncOverlay
		if err != nil {
			tb.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			tb.Fatal(err)
		}
		defer func() { stdin.Close(); _ = srv.Process.Kill(); _ = srv.Wait() }()
		return transfer(tb, ncBytes, func() *exec.Cmd {
			return exec.Command("nsenter", hostA, "busybox", "time", "busybox", "sh", "-c",
				fmt.Sprintf("busybox dd if=/dev/zero bs=65536 count=%d 2>/dev/null | busybox nc %s 5002; echo xfer-exit=$?", count, c.Members[1].Addr))
		})
	}
	rep.OverlayMBps, rep.UnderlayMBps = interleave(cfg.reps, ncOverlay, ncUnderlay)

	// httpd | wget
	dir := tb.TempDir()
	if err := os.Truncate(sparse(tb, dir), httpBytes); err != nil {
		tb.Fatal(err)
	}
	srv := exec.Command("nsenter", hostB, "busybox", "httpd", "-f", "-p", "8082", "-h", dir)
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	httpOverlay := func() float64 {
		return transfer(tb, float64(httpBytes), func() *exec.Cmd {
			return docker("exec", "tx", "time", "sh", "-c", fmt.Sprintf("wget -q -O /dev/null http://%s/big; echo xfer-exit=$?", rxAddr))
		})
	}
	httpUnderlay := func() float64 {
		return transfer(tb, float64(httpBytes), func() *exec.Cmd {
			return exec.Command("nsenter", hostA, "busybox", "time", "busybox", "sh", "-c",
				fmt.Sprintf("busybox wget -q -O /dev/null http://%s:8082/big; echo xfer-exit=$?", c.Members[1].Addr))
		})
	}
	httpOverlay() // warm-up: page cache, ARP, routes
	httpUnderlay()
	rep.OverlayHTTPMBps, rep.UnderlayHTTPMBps = interleave(cfg.reps, httpOverlay, httpUnderlay)

	if u := stats.Median(rep.UnderlayMBps); u > 0 {
		rep.Throughput = stats.Median(rep.OverlayMBps) / u
	}
	if u := stats.Median(rep.UnderlayHTTPMBps); u > 0 {
		rep.ThroughputHTTP = stats.Median(rep.OverlayHTTPMBps) / u
	}
}

// sparse creates dir/big (empty) and returns its path.
func sparse(tb testing.TB, dir string) string {
	p := filepath.Join(dir, "big")
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	f.Close()
	return p
}

// interleave runs reps rounds of x and y, alternating which goes first.
func interleave(reps int, x, y func() float64) (xs, ys []float64) {
	for r := range reps {
		if r%2 == 0 {
			ys = append(ys, y())
			xs = append(xs, x())
		} else {
			xs = append(xs, x())
			ys = append(ys, y())
		}
	}
	return xs, ys
}

// transfer runs the client (retrying while the server is not listening
// yet) and returns MB/s (10^6 bytes) from busybox time's "real". The
// client's script echoes its transfer's exit status (busybox time does
// not pass it on).
func transfer(tb testing.TB, bytes float64, client func() *exec.Cmd) float64 {
	tb.Helper()
	var out []byte
	var err error
	for range 50 {
		out, err = client().CombinedOutput()
		if err == nil && strings.Contains(string(out), "xfer-exit=0") {
			break
		}
		time.Sleep(100 * time.Millisecond) // the server is not listening yet
	}
	m := realTime.FindStringSubmatch(string(out))
	if err != nil || m == nil || !strings.Contains(string(out), "xfer-exit=0") {
		tb.Fatalf("transfer: %v %s", err, out)
	}
	mins, _ := strconv.Atoi(m[1])
	secs, _ := strconv.ParseFloat(m[2], 64)
	secs += float64(mins) * 60
	if secs <= 0 {
		tb.Fatalf("transfer took %s (below busybox time's resolution): transfer more", m[0])
	}
	return bytes / secs / 1e6
}

// pinger sends ICMP echoes from one network namespace.
type pinger struct {
	c   *icmp.PacketConn
	id  int
	seq int
}

func newPinger(tb testing.TB, nsPath string) *pinger {
	tb.Helper()
	p := &pinger{id: os.Getpid() & 0xffff}
	if err := netns.Do(nsPath, func() error {
		var err error
		p.c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.c.Close() })
	return p
}

// firstReply sends an echo request to a every interval until one is
// answered or limit passes; it returns the time until the first reply.
func (p *pinger) firstReply(a netip.Addr, interval, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	buf := make([]byte, 1500)
	dst := &net.IPAddr{IP: a.AsSlice()}
	for time.Since(start) < limit {
		p.seq++
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: p.seq & 0xffff, Data: []byte("tether")}}
		b, _ := msg.Marshal(nil)
		if _, err := p.c.WriteTo(b, dst); err != nil && !isUnreachable(err) {
			return 0, fmt.Errorf("echo to %s: %w", a, err)
		}
		_ = p.c.SetReadDeadline(time.Now().Add(interval))
		for {
			n, from, err := p.c.ReadFrom(buf)
			if err != nil {
				break // deadline: send the next one
			}
			rm, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || rm.Type != ipv4.ICMPTypeEchoReply || from.String() != a.String() {
				continue
			}
			if e, ok := rm.Body.(*icmp.Echo); ok && e.ID == p.id {
				return time.Since(start), nil
			}
		}
	}
	return 0, fmt.Errorf("no echo reply from %s within %v", a, limit)
}

// isUnreachable: sending to an address whose neighbour failed resolution
// reports EHOSTUNREACH; keep trying.
func isUnreachable(err error) bool {
	return strings.Contains(err.Error(), "host is unreachable") || strings.Contains(err.Error(), "no route")
}

// resolver asks Docker's embedded DNS of one container (127.0.0.11 in its
// network namespace) from a socket opened there.
type resolver struct{ conn *mdns.Conn }

func newResolver(tb testing.TB, nsPath string) *resolver {
	tb.Helper()
	r := &resolver{}
	if err := netns.Do(nsPath, func() error {
		c, err := net.Dial("udp", "127.0.0.11:53")
		r.conn = &mdns.Conn{Conn: c}
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.conn.Close() })
	return r
}

// lookup is one A query for name (as nslookup in a container sends it:
// ndots:0, so NAME.); the zero Addr when there is no answer within 50 ms.
func (r *resolver) lookup(name string) netip.Addr {
	m := new(mdns.Msg).SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	c := &mdns.Client{Timeout: 50 * time.Millisecond}
	resp, _, err := c.ExchangeWithConn(m, r.conn)
	if err != nil || resp.Rcode != mdns.RcodeSuccess {
		return netip.Addr{}
	}
	for _, rr := range resp.Answer {
		if a, ok := rr.(*mdns.A); ok {
			if addr, ok := netip.AddrFromSlice(a.A.To4()); ok {
				return addr
			}
		}
	}
	return netip.Addr{}
}

// TestDockerPluginSmoke runs the scenario small: every figure must be there.
func TestDockerPluginSmoke(t *testing.T) {
	rep := measure(t, config{n: 3, reps: 1, mib: 32, httpMiB: 256, store: "etcd"})
	if rep.PingTether.N != 3 || rep.PingDocker.N != 3 || rep.Resolve.N != 3 || len(rep.OverlayMBps) != 1 ||
		rep.OverlayMBps[0] <= 0 || rep.UnderlayMBps[0] <= 0 || len(rep.OverlayHTTPMBps) != 1 || rep.OverlayHTTPMBps[0] <= 0 {
		t.Errorf("incomplete report: %+v", rep)
	}
	t.Logf("%s", summary(rep))
}

// TestDockerPluginReport is the full run (BENCH_REPORT=1).
func TestDockerPluginReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1")
	}
	store := os.Getenv("BENCH_STORE")
	if store == "" {
		store = "etcd"
	}
	rep := measure(t, config{n: attach.EnvInt("BENCH_N", 20), reps: attach.EnvInt("BENCH_REPS", 3), mib: attach.EnvInt("BENCH_MIB", 1024), httpMiB: attach.EnvInt("BENCH_HTTP_MIB", 4096), store: store})
	t.Log("\n" + summary(rep))
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// summary is the report as Markdown tables.
func summary(rep Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Tether %s, dockerd %s, kernel %s, store %s, load %s → %s\n\n", rep.Tether, rep.Dockerd, rep.Kernel, rep.Store, rep.Load, rep.LoadEnd)
	fmt.Fprintf(&b, "| %d runs per network | run returned p50 | p90 | ping answers p50 | p90 | p99 |\n|---|---:|---:|---:|---:|---:|\n", rep.N)
	for _, r := range []struct {
		name      string
		run, ping attach.Stats
	}{{"Tether local network", rep.RunTether, rep.PingTether}, {"Docker bridge network", rep.RunDocker, rep.PingDocker}} {
		fmt.Fprintf(&b, "| %s | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms |\n", r.name, r.run.P50, r.run.P90, r.ping.P50, r.ping.P90, r.ping.P99)
	}
	fmt.Fprintf(&b, "\nping answers, Tether ÷ Docker: p50 **%.2f**, p90 %.2f\n", rep.RatioP50, rep.RatioP90)
	fmt.Fprintf(&b, "overlay: docker run returned p50 %.1f ms; resolved on the other host after the run returned p50 **%.1f ms**, p99 %.1f ms, max %.1f ms\n",
		rep.RunOverlay.P50, rep.Resolve.P50, rep.Resolve.P99, rep.Resolve.Max)
	fmt.Fprintf(&b, "throughput (%d MiB, busybox dd | nc, 1 KiB system calls): overlay %.0f MB/s, underlay %.0f MB/s (medians of %d), ratio **%.2f** (rounds %.0f / %.0f)\n",
		rep.MiB, stats.Median(rep.OverlayMBps), stats.Median(rep.UnderlayMBps), len(rep.OverlayMBps), rep.Throughput, rep.OverlayMBps, rep.UnderlayMBps)
	fmt.Fprintf(&b, "throughput (%d MiB, busybox httpd → wget): overlay %.0f MB/s, underlay %.0f MB/s (medians of %d), ratio **%.2f** (rounds %.0f / %.0f)\n",
		rep.HTTPMiB, stats.Median(rep.OverlayHTTPMBps), stats.Median(rep.UnderlayHTTPMBps), len(rep.OverlayHTTPMBps), rep.ThroughputHTTP, rep.OverlayHTTPMBps, rep.UnderlayHTTPMBps)
	return b.String()
}
