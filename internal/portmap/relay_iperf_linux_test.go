package portmap

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// iperfPair is a "host" namespace linked by a veth pair to a "sandbox"
// namespace running iperf3 -s, the layout a published port serves.
type iperfPair struct {
	host, sandbox string // namespace names
	sandboxAddr   string
	port          int
}

func newIperfPair(t testing.TB, port int) *iperfPair {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not found")
	}
	p := &iperfPair{host: testutil.NetNS(t, "t19a-h"), sandbox: testutil.NetNS(t, "t19a-s"), sandboxAddr: "10.219.0.2", port: port}
	for _, c := range [][]string{
		{"-n", p.host, "link", "add", "v0", "type", "veth", "peer", "name", "eth0", "netns", p.sandbox},
		{"-n", p.host, "addr", "add", "10.219.0.1/24", "dev", "v0"},
		{"-n", p.host, "link", "set", "v0", "up"},
		{"-n", p.sandbox, "addr", "add", p.sandboxAddr + "/24", "dev", "eth0"},
		{"-n", p.sandbox, "link", "set", "eth0", "up"},
	} {
		testutil.Must(t, "ip", c...)
	}
	srv := exec.Command("ip", "netns", "exec", p.sandbox, "iperf3", "-s", "-p", strconv.Itoa(port))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	time.Sleep(300 * time.Millisecond)
	return p
}

type iperfRun struct {
	Path    string  `json:"path"`
	Gbps    float64 `json:"gbit_per_s"`
	SelfCPU float64 `json:"proxy_cpus"`
	Busy    float64 `json:"machine_busy_cpus"`
}

func selfTicks() int64 {
	b, _ := os.ReadFile("/proc/self/stat")
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

func busyTicks() int64 {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	var busy int64
	for i, v := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 {
			busy += n
		}
	}
	return busy
}

func (p *iperfPair) run(t testing.TB, path, to string, port, secs int, extra ...string) iperfRun {
	t.Helper()
	for try := 0; ; try++ {
		args := append([]string{"netns", "exec", p.host, "iperf3", "-c", to, "-p", strconv.Itoa(port), "-t", strconv.Itoa(secs), "-J"}, extra...)
		s0, b0, t0 := selfTicks(), busyTicks(), time.Now()
		out, err := exec.Command("ip", args...).Output()
		el := time.Since(t0).Seconds()
		var j iperfJSON
		if jerr := json.Unmarshal(out, &j); jerr == nil && err == nil && j.Error == "" {
			return iperfRun{Path: path, Gbps: j.End.SumReceived.BitsPerSecond / 1e9,
				SelfCPU: float64(selfTicks()-s0) / 100 / el, Busy: float64(busyTicks()-b0) / 100 / el}
		}
		if try == 5 {
			t.Fatalf("iperf3 %s: %v %s", path, err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

type iperfJSON struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// TestRelayIperf (PORTMAP_IPERF=1) compares iperf3 through the proxy with
// iperf3 straight to the sandbox, interleaved, per relay mode.
func TestRelayIperf(t *testing.T) {
	if os.Getenv("PORTMAP_IPERF") == "" {
		t.Skip("set PORTMAP_IPERF=1")
	}
	p := newIperfPair(t, 41201)
	modes := strings.Fields(os.Getenv("PORTMAP_MODES"))
	if len(modes) == 0 {
		modes = []string{relayGoSplice, relaySplice}
	}
	secs := 3
	if s, err := strconv.Atoi(os.Getenv("PORTMAP_SECS")); err == nil {
		secs = s
	}
	reps := 3
	if s, err := strconv.Atoi(os.Getenv("PORTMAP_REPS")); err == nil {
		reps = s
	}
	var hs []*Held
	for i, m := range modes {
		if m == "sockmap" {
			rel, err := newSockRelay(1024)
			if err != nil {
				t.Fatalf("sockmap relay: %v", err)
			}
			t.Cleanup(rel.close)
			var ln *net.TCPListener
			in(t, "/run/netns/"+p.host, func() error {
				l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", 41080+i))
				ln, _ = l.(*net.TCPListener)
				return err
			})
			t.Cleanup(func() { ln.Close() })
			sockmapProxy(t, rel, "/run/netns/"+p.host, ln, fmt.Sprintf("%s:%d", p.sandboxAddr, p.port))
			hs = append(hs, nil)
			continue
		}
		var h *Held
		in(t, "/run/netns/"+p.host, func() (err error) {
			h, err = Hold("tcp", netip.MustParseAddr("127.0.0.1"), uint16(41080+i))
			return err
		})
		t.Cleanup(func() { h.Close() })
		hs = append(hs, h)
	}
	extra := strings.Fields(os.Getenv("PORTMAP_IPERF_ARGS"))
	for r := range reps {
		d := p.run(t, "direct", p.sandboxAddr, p.port, secs, extra...)
		t.Logf("round %d direct %.2f Gbit/s busy %.2f", r, d.Gbps, d.Busy)
		for i, m := range modes {
			if hs[i] != nil {
				relayMode = m
			}
			if r == 0 && hs[i] != nil {
				if err := hs[i].Proxy(netip.MustParseAddrPort(fmt.Sprintf("%s:%d", p.sandboxAddr, p.port))); err != nil {
					t.Fatal(err)
				}
			}
			x := p.run(t, m, "127.0.0.1", 41080+i, secs, extra...)
			t.Logf("round %d %-8s %.2f Gbit/s ratio %.3f proxy CPU %.2f busy %.2f", r, m, x.Gbps, x.Gbps/d.Gbps, x.SelfCPU, x.Busy)
		}
	}
}
