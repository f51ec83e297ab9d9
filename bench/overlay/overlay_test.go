// Package overlay measures multi-host overlay networks (the overlay issue's
// figures), on test hosts made of namespaces (testutil.Cluster: an
// underlay switch, etcd, one daemon per host), each against a reference in
// the same run:
//
//   - convergence: from an attach returning on host A until a sandbox on
//     host B reaches the new sandbox by address (ICMP echo) and by name
//     (its embedded resolver answers);
//
//   - throughput: sandbox to sandbox over the overlay vs host to host over
//     the underlay (iperf3, one TCP stream);
//
//   - attach latency on an overlay network vs on a bridge network;
//
//   - how long a dead host's endpoints stay in the others' DNS, vs the TTL.
//
//     sudo bench/run.sh overlay      # JSON in bench/results/overlay-<date>.json
package overlay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api"
	ovl "github.com/tether-net/tether/internal/driver/overlay"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// client speaks to one daemon's socket.
type client struct {
	d *testutil.Daemon
	c *http.Client
}

func newClient(d *testutil.Daemon) *client {
	return &client{d: d, c: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}}
}

// create makes a sandbox on network and returns it with the round trip.
func (c *client) create(tb testing.TB, name, network string) (api.Sandbox, time.Duration) {
	tb.Helper()
	body, _ := json.Marshal(api.SandboxCreateRequest{Name: name, Networks: []api.NetworkAttach{{Network: network}}})
	start := time.Now()
	resp, err := c.c.Post("http://tether/tether/v1/sandboxes", "application/json", bytes.NewReader(body))
	took := time.Since(start)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var sb api.Sandbox
	if resp.StatusCode != 201 {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		tb.Fatalf("create %s on %s: %d %s", name, network, resp.StatusCode, b.String())
	}
	if err := json.NewDecoder(resp.Body).Decode(&sb); err != nil {
		tb.Fatal(err)
	}
	return sb, took
}

// waitListed polls the daemon's inspect of a global network (Docker API)
// until it lists a sandbox of that name, which its watch delivered.
func (c *client) waitListed(tb testing.TB, network, name string) {
	tb.Helper()
	want := []byte(`"Name":"` + name + `"`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.c.Get("http://tether/networks/" + network)
		if err != nil {
			tb.Fatal(err)
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		if bytes.Contains(b.Bytes(), want) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s not listed on %s within 10 s: %s", name, network, b.String())
		}
		time.Sleep(time.Millisecond)
	}
}

// probe asks, from inside a sandbox's namespace, for a name (its resolver)
// and an address (ICMP echo).
type probe struct {
	dns  *mdns.Conn
	icmp *icmp.PacketConn
	seq  int
}

func newProbe(tb testing.TB, nsPath string) *probe {
	tb.Helper()
	p := &probe{}
	if err := netns.Do(nsPath, func() error {
		c, err := net.Dial("udp", "127.0.0.11:53")
		if err != nil {
			return err
		}
		p.dns = &mdns.Conn{Conn: c}
		p.icmp, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.dns.Close(); p.icmp.Close() })
	return p
}

// resolves reports whether name resolves to want (one query, 20 ms).
func (p *probe) resolves(name string, want netip.Addr) bool {
	m := new(mdns.Msg).SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	c := &mdns.Client{Timeout: 20 * time.Millisecond}
	r, _, err := c.ExchangeWithConn(m, p.dns)
	if err != nil {
		return false
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok && a.A.String() == want.String() {
			return true
		}
	}
	return false
}

// reaches sends one echo request to a and waits up to wait for its reply.
func (p *probe) reaches(a netip.Addr, wait time.Duration) bool {
	p.seq++
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: p.seq, Data: []byte("tether")}}
	b, _ := msg.Marshal(nil)
	if _, err := p.icmp.WriteTo(b, &net.IPAddr{IP: a.AsSlice()}); err != nil {
		return false
	}
	deadline := time.Now().Add(wait)
	buf := make([]byte, 1500)
	for {
		_ = p.icmp.SetReadDeadline(deadline)
		n, from, err := p.icmp.ReadFrom(buf)
		if err != nil {
			return false
		}
		rm, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || rm.Type != ipv4.ICMPTypeEchoReply || from.String() != a.String() {
			continue
		}
		if e, ok := rm.Body.(*icmp.Echo); ok && e.Seq == p.seq {
			return true
		}
	}
}

// Convergence is one attach's result.
type Convergence struct {
	Attach, ByAddr, ByName time.Duration
}

// converge attaches n sandboxes on host A one by one and times, from each
// attach's answer, until host B's probe reaches it by address and by name;
// between two, each
// function of between runs (the references, interleaved).
func converge(tb testing.TB, a *client, p *probe, network string, n int, between ...func(i int)) []Convergence {
	out := make([]Convergence, 0, n)
	for i := range n {
		for _, f := range between {
			f(i)
		}
		name := fmt.Sprintf("c%d", i)
		sb, took := a.create(tb, name, network)
		addr := sb.Networks[network].IPAddress
		t0 := time.Now()
		var c Convergence
		c.Attach = took
		for c.ByAddr == 0 || c.ByName == 0 {
			if time.Since(t0) > 10*time.Second {
				tb.Fatalf("%s (%s) not reached from host B within 10 s (by address %v, by name %v)", name, addr, c.ByAddr, c.ByName)
			}
			if c.ByAddr == 0 && p.reaches(addr, 5*time.Millisecond) {
				c.ByAddr = time.Since(t0)
			}
			if c.ByName == 0 && p.resolves(name, addr) {
				c.ByName = time.Since(t0)
			}
		}
		out = append(out, c)
	}
	return out
}

// iperf runs an iperf3 server in serverNS (a namespace file) on addr and a
// client in clientNS; it returns the receiver's Gbit/s.
func iperf(tb testing.TB, serverNS, clientNS, addr string, seconds int) float64 {
	tb.Helper()
	srv := exec.Command("nsenter", "--net="+serverNS, "iperf3", "-s", "-1", "-B", addr)
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var out []byte
	var err error
	for range 50 {
		out, err = exec.Command("nsenter", "--net="+clientNS, "iperf3", "-c", addr, "-t", fmt.Sprint(seconds), "-J").CombinedOutput()
		if !strings.Contains(string(out), "unable to connect") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err != nil || json.Unmarshal(out, &res) != nil || res.Error != "" || res.End.SumReceived.BitsPerSecond <= 0 {
		tb.Fatalf("iperf3 to %s: %v %s", addr, err, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}

// Report is the JSON written by TestOverlayReport.
type Report struct {
	Date          time.Time    `json:"date"`
	Commit        string       `json:"commit"`
	LoadStart     string       `json:"loadavg_start"`
	LoadEnd       string       `json:"loadavg_end"`
	NProc         int          `json:"nproc"`
	Kernel        string       `json:"kernel"`
	Store         string       `json:"store"`
	TTLSeconds    float64      `json:"ttl_s"`
	Attaches      int          `json:"attaches"`
	ConvergeAddr  attach.Stats `json:"converge_by_address"`
	ConvergeName  attach.Stats `json:"converge_by_name"`
	AttachOverlay attach.Stats `json:"attach_overlay"`
	AttachBridge  attach.Stats `json:"attach_bridge"`
	// AttachInternal is an attach to an internal overlay network (no
	// default route; before the distributed gateway: no second interface
	// on tether_gwbridge), AttachNone a sandbox with no network: with the
	// two above they split an overlay attach into the sandbox and the
	// overlay join. All four are interleaved, one of each per round.
	AttachInternal attach.Stats `json:"attach_overlay_internal"`
	AttachNone     attach.Stats `json:"attach_none"`
	// StoreWrite is one write of an endpoint-sized value to the cluster
	// store from host A's namespace, interleaved with the attaches: the
	// floor of an overlay attach, which answers once its record is stored.
	StoreWrite      attach.Stats `json:"store_write"`
	RatioP50        float64      `json:"overlay_over_bridge_p50"`
	UnderlayGbps    []float64    `json:"underlay_gbps"`
	OverlayGbps     []float64    `json:"overlay_gbps"`
	DeadHostDropped float64      `json:"dead_host_dropped_s"`
	// Bypass is the daemons' overlay bridge bypass (the daemons inherit
	// TETHER_OVERLAY_BYPASS): "tunnel" (the default since the VXLAN tunnel
	// in BPF: the bypass and the tunnel), "bridge" (=bridge: the bypass,
	// VXLAN devices encapsulate), "off" (=0). Runs before the tunnel
	// recorded "on" for the bypass alone.
	Bypass string `json:"overlay_bypass"`
}

func measure(tb testing.TB, n, reps, seconds int) Report {
	const ttl = 3 * time.Second
	kind := os.Getenv("BENCH_STORE") // etcd (default) or zk
	if kind == "" {
		kind = "etcd"
	}
	c := testutil.StartClusterWith(tb, kind, 2, ttl)
	a, b := newClient(c.D[0]), newClient(c.D[1])
	rep := Report{Date: time.Now().UTC(), Store: c.StoreURL(), TTLSeconds: ttl.Seconds(), Attaches: n,
		Commit: attachCommit(), LoadStart: attachLoadavg(), NProc: runtime.NumCPU(), Kernel: attachKernel(), Bypass: "tunnel"}
	switch os.Getenv(ovl.BypassEnv) {
	case "0":
		rep.Bypass = "off"
	case "bridge":
		rep.Bypass = "bridge"
	}
	c.D[0].MustTether("network", "create", "-d", "overlay", "--subnet", "10.10.0.0/16", "ov")
	c.D[0].MustTether("network", "create", "-d", "overlay", "--internal", "--subnet", "10.12.0.0/16", "ovi")
	c.D[0].MustTether("network", "create", "--subnet", "10.11.0.0/16", "br")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.D[1].Tether("network", "inspect", "ov"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("host B never saw the overlay network")
		}
		time.Sleep(20 * time.Millisecond)
	}
	pb, _ := b.create(tb, "probe", "ov")
	c.D[1].MustTether("exec", "probe", "--", "true") // its resolver starts with its first process
	p := newProbe(tb, pb.NetNS)

	var brAttach, inAttach, noAttach, storeWrite []time.Duration
	sw := newStoreWriter(tb, c, c.D[0].NS)
	defer sw.close()
	sw.write(tb, -1) // the connection is made
	refs := []func(int){
		func(i int) { storeWrite = append(storeWrite, sw.write(tb, i)) },
		func(i int) { _, took := a.create(tb, fmt.Sprintf("b%d", i), "br"); brAttach = append(brAttach, took) },
		func(i int) {
			_, took := a.create(tb, fmt.Sprintf("i%d", i), "ovi")
			inAttach = append(inAttach, took)
			// as the overlay attaches wait for host B to reach theirs: the
			// next timed step starts once host B has this one, not while
			// its record is on its way (which would count against that step)
			b.waitListed(tb, "ovi", fmt.Sprintf("i%d", i))
		},
		func(i int) { _, took := a.create(tb, fmt.Sprintf("n%d", i), "none"); noAttach = append(noAttach, took) },
	}
	conv := converge(tb, a, p, "ov", n, refs...)
	var byAddr, byName, ovAttach []time.Duration
	for _, x := range conv {
		byAddr, byName, ovAttach = append(byAddr, x.ByAddr), append(byName, x.ByName), append(ovAttach, x.Attach)
	}
	rep.ConvergeAddr, rep.ConvergeName = attach.Summarize(byAddr), attach.Summarize(byName)
	rep.AttachOverlay, rep.AttachBridge = attach.Summarize(ovAttach), attach.Summarize(brAttach)
	rep.AttachInternal, rep.AttachNone = attach.Summarize(inAttach), attach.Summarize(noAttach)
	rep.StoreWrite = attach.Summarize(storeWrite)
	rep.RatioP50 = rep.AttachOverlay.P50 / rep.AttachBridge.P50

	// throughput: c0 (host A) -> probe (host B) over the overlay; host A ->
	// host B over the underlay; interleaved
	c0 := sandboxNS(tb, c.D[0], "c0")
	hostA, hostB := "/run/netns/"+c.Hosts[0].NS, "/run/netns/"+c.Hosts[1].NS
	for r := range reps {
		if r%2 == 0 {
			rep.UnderlayGbps = append(rep.UnderlayGbps, iperf(tb, hostB, hostA, c.Hosts[1].Addr, seconds))
			rep.OverlayGbps = append(rep.OverlayGbps, iperf(tb, pb.NetNS, c0, pb.Networks["ov"].IPAddress.String(), seconds))
		} else {
			rep.OverlayGbps = append(rep.OverlayGbps, iperf(tb, pb.NetNS, c0, pb.Networks["ov"].IPAddress.String(), seconds))
			rep.UnderlayGbps = append(rep.UnderlayGbps, iperf(tb, hostB, hostA, c.Hosts[1].Addr, seconds))
		}
	}

	// a dead host: kill host A's daemon; how long host B still resolves c0
	addr := mustAddr(tb, c.D[0], "c0", "ov")
	if err := c.D[0].Kill(); err != nil {
		tb.Fatal(err)
	}
	killed := time.Now()
	for p.resolves("c0", addr) {
		if time.Since(killed) > 4*ttl {
			tb.Fatalf("host B still resolves c0 %v after host A died", time.Since(killed))
		}
		time.Sleep(10 * time.Millisecond)
	}
	rep.DeadHostDropped = time.Since(killed).Seconds()
	rep.LoadEnd = attachLoadavg()
	return rep
}

func attachLoadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

func attachKernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func attachCommit() string {
	out, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	return strings.TrimSpace(string(out))
}

func sandboxNS(tb testing.TB, d *testutil.Daemon, name string) string {
	var sb api.Sandbox
	d.InspectJSON(&sb, "sandbox", "inspect", name)
	return sb.NetNS
}

func mustAddr(tb testing.TB, d *testutil.Daemon, name, network string) netip.Addr {
	var sb api.Sandbox
	d.InspectJSON(&sb, "sandbox", "inspect", name)
	return sb.Networks[network].IPAddress
}

// TestOverlaySmoke runs the scenario small: every number must be there.
func TestOverlaySmoke(t *testing.T) {
	rep := measure(t, 5, 1, 1)
	if rep.ConvergeAddr.N != 5 || rep.ConvergeName.N != 5 || len(rep.OverlayGbps) != 1 || rep.DeadHostDropped <= 0 {
		t.Errorf("incomplete report: %+v", rep)
	}
}

// TestOverlayReport is the full run (BENCH_REPORT=1, bench/run.sh overlay):
// 100 attaches, 3 rounds of 5-s iperf3 each way.
func TestOverlayReport(t *testing.T) {
	if os.Getenv("BENCH_REPORT") != "1" {
		t.Skip("set BENCH_REPORT=1 (bench/run.sh overlay)")
	}
	rep := measure(t, attach.EnvInt("BENCH_N", 100), attach.EnvInt("BENCH_REPS", 3), 5)
	var b strings.Builder
	fmt.Fprintf(&b, "| %d attaches on host A, seen from host B (%s) | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|\n", rep.Attaches, rep.Store)
	for _, r := range []struct {
		name string
		s    attach.Stats
	}{{"reached by address", rep.ConvergeAddr}, {"reached by name", rep.ConvergeName},
		{"attach, overlay network", rep.AttachOverlay}, {"attach, bridge network", rep.AttachBridge},
		{"attach, internal overlay network", rep.AttachInternal}, {"sandbox, no network", rep.AttachNone},
		{"store write (the floor of an overlay attach)", rep.StoreWrite}} {
		fmt.Fprintf(&b, "| %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms |\n", r.name, r.s.P50, r.s.P90, r.s.P99, r.s.Max)
	}
	fmt.Fprintf(&b, "\nattach overlay ÷ bridge (p50): **%.2f×**\n", rep.AttachOverlay.P50/rep.AttachBridge.P50)
	fmt.Fprintf(&b, "throughput (median of %d × 5 s): overlay %.2f Gbit/s, underlay %.2f Gbit/s, **ratio %.2f** (rounds %v / %v)\n",
		len(rep.OverlayGbps), stats.Median(rep.OverlayGbps), stats.Median(rep.UnderlayGbps), stats.Median(rep.OverlayGbps)/stats.Median(rep.UnderlayGbps), rep.OverlayGbps, rep.UnderlayGbps)
	fmt.Fprintf(&b, "dead host: its endpoint left host B's DNS %.2f s after its daemon was killed (TTL %.0f s)\n", rep.DeadHostDropped, rep.TTLSeconds)
	t.Log("\n" + b.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
