package portmap

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
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
	serverPID     int
	cgroup        string // the client of a "connect4" run goes here
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
	p.serverPID = srv.Process.Pid // ip netns exec execs iperf3 in place
	time.Sleep(300 * time.Millisecond)
	return p
}

type iperfRun struct {
	Path    string  `json:"path"`
	Gbps    float64 `json:"gbit_per_s"`
	SelfCPU float64 `json:"proxy_cpus"`
	Busy    float64 `json:"machine_busy_cpus"`
	// CPU seconds of iperf3 client + server + proxy per GB received.
	CPUPerGB   float64 `json:"cpu_s_per_gbyte"`
	ProxyPerGB float64 `json:"proxy_cpu_s_per_gbyte"`
}

func selfTicks() int64 { return pidTicks("self") }

func pidTicks(pid string) int64 {
	b, _ := os.ReadFile("/proc/" + pid + "/stat")
	if len(b) == 0 {
		return 0
	}
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
		srvPID := strconv.Itoa(p.serverPID)
		s0, v0, b0, t0 := selfTicks(), pidTicks(srvPID), busyTicks(), time.Now()
		cmd := exec.Command("ip", args...)
		if path == "connect4" {
			cmd = exec.Command("sh", append([]string{"-c", `echo $$ > "$0"/cgroup.procs && exec ip "$@"`, p.cgroup}, args...)...)
		}
		out, err := cmd.Output()
		el := time.Since(t0).Seconds()
		var j iperfJSON
		if jerr := json.Unmarshal(out, &j); jerr == nil && err == nil && j.Error == "" {
			proxy := float64(selfTicks()-s0) / 100
			cli := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
			gb := float64(j.End.SumReceived.Bytes) / 1e9
			all := proxy + cli + float64(pidTicks(srvPID)-v0)/100
			return iperfRun{Path: path, Gbps: j.End.SumReceived.BitsPerSecond / 1e9,
				SelfCPU: proxy / el, Busy: float64(busyTicks()-b0) / 100 / el, CPUPerGB: all / gb, ProxyPerGB: proxy / gb}
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
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// relayIperfReport is what TestRelayIperf writes to PORTMAP_IPERF_OUT.
type relayIperfReport struct {
	Date      time.Time                 `json:"date"`
	Commit    string                    `json:"commit"`
	Kernel    string                    `json:"kernel"`
	NProc     int                       `json:"nproc"`
	LoadStart string                    `json:"loadavg_start"`
	LoadEnd   string                    `json:"loadavg_end"`
	Secs      int                       `json:"iperf_secs"`
	Method    string                    `json:"method"`
	Runs      [][]iperfRun              `json:"runs_per_round"`
	Modes     map[string]relayIperfMode `json:"modes"`
}

type relayIperfMode struct {
	Ratios []float64 `json:"ratio_per_round"` // mode ÷ direct, same round
	Median float64   `json:"ratio_median"`
	Best   float64   `json:"ratio_best"`
	// CostRatios: direct's CPU s/GB ÷ the mode's (client + server + proxy).
	CostRatios []float64 `json:"cost_ratio_per_round"`
	CostMedian float64   `json:"cost_ratio_median"`
	ProxyPerGB float64   `json:"proxy_cpu_s_per_gbyte_median"`
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// TestRelayIperf (PORTMAP_IPERF=1) compares iperf3 (one stream) through
// each relay in PORTMAP_MODES (default "gosplice splice sockmap connect4")
// with iperf3 straight to the sandbox, PORTMAP_REPS rounds of PORTMAP_SECS
// s, the order rotated by round: "splice"/"gosplice" are the product relay
// (a Held), "sockmap" and "connect4" the prototypes in
// sockmap_linux_test.go. With PORTMAP_IPERF_OUT the JSON goes there.
func TestRelayIperf(t *testing.T) {
	if os.Getenv("PORTMAP_IPERF") == "" {
		t.Skip("set PORTMAP_IPERF=1")
	}
	p := newIperfPair(t, 41201)
	modes := strings.Fields(os.Getenv("PORTMAP_MODES"))
	if len(modes) == 0 {
		modes = []string{relayGoSplice, relaySplice, "sockmap", "connect4"}
	}
	secs := 3
	if s, err := strconv.Atoi(os.Getenv("PORTMAP_SECS")); err == nil {
		secs = s
	}
	reps := 3
	if s, err := strconv.Atoi(os.Getenv("PORTMAP_REPS")); err == nil {
		reps = s
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	commit, _ := exec.Command("git", "rev-parse", "HEAD").Output()
	rep := relayIperfReport{Date: time.Now().UTC(), Commit: strings.TrimSpace(string(commit)),
		Kernel: strings.TrimSpace(string(kernel)), NProc: runtime.NumCPU(), LoadStart: loadavg(), Secs: secs,
		Method: "namespaces t19a-h (client, proxy) and t19a-s (iperf3 -s) joined by a veth; iperf3 -c one stream " +
			"to the sandbox address (direct) and to 127.0.0.1:41080+i (each mode); order rotated by round; " +
			"CPU: iperf3 client rusage, server and test process /proc/PID/stat",
		Modes: map[string]relayIperfMode{}}
	backend := netip.MustParseAddrPort(fmt.Sprintf("%s:%d", p.sandboxAddr, p.port))
	for i, m := range modes {
		from := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(41080+i))
		switch m {
		case "connect4":
			p.cgroup = newConnectRedirect(t, from, backend).cgroup
		case "sockmap":
			rel, err := newSockRelay(1024)
			if err != nil {
				t.Fatalf("sockmap relay: %v", err)
			}
			t.Cleanup(rel.close)
			var ln *net.TCPListener
			in(t, "/run/netns/"+p.host, func() error {
				l, err := net.Listen("tcp4", from.String())
				ln, _ = l.(*net.TCPListener)
				return err
			})
			t.Cleanup(func() { ln.Close() })
			sockmapProxy(t, rel, "/run/netns/"+p.host, ln, backend.String())
		default:
			defer setRelayMode(m)()
			h := holdIn(t, "/run/netns/"+p.host, "tcp", "127.0.0.1", from.Port())
			if err := h.Proxy(backend); err != nil { // the relay mode is taken now
				t.Fatal(err)
			}
		}
	}
	extra := strings.Fields(os.Getenv("PORTMAP_IPERF_ARGS"))
	names := append([]string{"direct"}, modes...)
	for r := range reps {
		order := slices.Clone(names)
		for range r % len(order) {
			order = append(order[1:], order[0])
		}
		byName := map[string]iperfRun{}
		var runs []iperfRun
		for _, m := range order {
			to, port := "127.0.0.1", 41080+slices.Index(modes, m)
			if m == "direct" {
				to, port = p.sandboxAddr, p.port
			}
			x := p.run(t, m, to, port, secs, extra...)
			byName[m] = x
			runs = append(runs, x)
		}
		rep.Runs = append(rep.Runs, runs)
		d := byName["direct"]
		for _, m := range modes {
			x := byName[m]
			s := rep.Modes[m]
			s.Ratios = append(s.Ratios, x.Gbps/d.Gbps)
			s.CostRatios = append(s.CostRatios, d.CPUPerGB/x.CPUPerGB)
			rep.Modes[m] = s
			t.Logf("round %d %-8s %.2f Gbit/s (direct %.2f) ratio %.3f; CPU s/GB %.3f (direct %.3f, proxy %.3f) cost ratio %.3f",
				r, m, x.Gbps, d.Gbps, x.Gbps/d.Gbps, x.CPUPerGB, d.CPUPerGB, x.ProxyPerGB, d.CPUPerGB/x.CPUPerGB)
		}
	}
	for m, s := range rep.Modes {
		var proxy []float64
		for _, runs := range rep.Runs {
			for _, x := range runs {
				if x.Path == m {
					proxy = append(proxy, x.ProxyPerGB)
				}
			}
		}
		s.Median, s.Best, s.CostMedian, s.ProxyPerGB = median(s.Ratios), slices.Max(s.Ratios), median(s.CostRatios), median(proxy)
		rep.Modes[m] = s
		t.Logf("%-8s ratio median %.3f best %.3f; cost ratio median %.3f; proxy CPU %.3f s/GB", m, s.Median, s.Best, s.CostMedian, s.ProxyPerGB)
	}
	rep.LoadEnd = loadavg()
	if out := os.Getenv("PORTMAP_IPERF_OUT"); out != "" {
		js, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(out, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
