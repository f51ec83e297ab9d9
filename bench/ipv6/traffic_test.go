package ipv6

// The throughput figure: iperf3 from the outside to a published port on the
// host's uplink address (kernel DNAT) and to the sandbox's address directly
// (routed), IPv6 and, beside it, IPv4.

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

// The outside's IPv6 (2001:db8::/32, the documentation prefix, lives only on
// the veth between the host namespace and its outside), as in e2e/ipv6_test.go.
const (
	uplink6  = "2001:db8:ff::1"
	outside6 = "2001:db8:ff::2"
)

// The published network: dual-stack, open to direct routing
// (nat-unprotected applies to both families), so the outside can reach the
// sandbox's own addresses through the host as well as the published port.
const (
	netPub      = "pub6"
	pubSubnet   = "10.126.0.0/24"
	pubSubnet6  = "fd00:126::/64"
	iperfPort   = 5201
	gatewayMode = "com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected"
)

// iperf3 paths, in the order of the first round.
const (
	pathDirect6 = "IPv6 direct: outside → [sandbox]:5201 (routed)"
	pathKernel6 = "IPv6 kernel: outside → [uplink]:5201 (DNAT)"
	pathDirect4 = "IPv4 direct: outside → sandbox:5201 (routed)"
	pathKernel4 = "IPv4 kernel: outside → uplink:5201 (DNAT)"
)

var pathOrder = []string{pathDirect6, pathKernel6, pathDirect4, pathKernel4}

// outsideDual is testutil.Outside with IPv6 on the link too (the host's
// uplink up0 has uplink6/64 and its IPv6 default route via outside6) and
// routes in the outside to the published network's two subnets via the
// host's uplink addresses.
func outsideDual(tb testing.TB, hostNS string) string {
	tb.Helper()
	out := testutil.Outside(tb, hostNS)
	for _, c := range [][]string{
		{"-n", hostNS, "addr", "add", uplink6 + "/64", "dev", "up0", "nodad"},
		{"-n", hostNS, "-6", "route", "add", "default", "via", outside6},
		{"-n", out, "addr", "add", outside6 + "/64", "dev", "wan0", "nodad"},
		{"-n", out, "-6", "route", "add", pubSubnet6, "via", uplink6},
		{"-n", out, "route", "add", pubSubnet, "via", testutil.UplinkAddr},
	} {
		testutil.Must(tb, "ip", c...)
	}
	return out
}

// Iperf is one iperf3 client run (bench/ports' shape).
type Iperf struct {
	Path string  `json:"path"`
	From string  `json:"from"` // network namespace file the client ran in
	To   string  `json:"to"`
	Gbps float64 `json:"gbit_per_s"` // receiver side
	// ProxySeen: an established socket on the published port in the host
	// namespace during the run, i.e. the userland proxy accepted it (never,
	// on these paths: both kernel paths are DNAT).
	ProxySeen bool `json:"proxy_seen,omitempty"`
	// CPU during the run, in CPUs: the daemon's and the whole machine's busy time.
	DaemonCPU float64 `json:"daemon_cpus"`
	BusyCPU   float64 `json:"machine_busy_cpus"`
}

// TrafficReport is the throughput half of the report.
type TrafficReport struct {
	Secs        int                `json:"iperf_secs"`
	Reps        int                `json:"iperf_reps"`
	Iperf       []Iperf            `json:"iperf"`
	IperfBest   map[string]float64 `json:"iperf_best_gbit_per_s"`
	IperfMedian map[string]float64 `json:"iperf_median_gbit_per_s"`
	// IPv6 kernel ÷ direct (the target), of the best runs and of the medians;
	// the same for IPv4.
	KernelRatio        float64 `json:"kernel_over_direct"`
	KernelRatioMedian  float64 `json:"kernel_over_direct_median"`
	KernelRatio4       float64 `json:"kernel_over_direct_ipv4"`
	KernelRatio4Median float64 `json:"kernel_over_direct_ipv4_median"`
}

// measureTraffic creates the published network and the iperf3 server
// sandbox and runs each path reps times, in reversed order every other round.
func measureTraffic(tb testing.TB, t *attach.Tether, secs, reps int) TrafficReport {
	tb.Helper()
	out := outsideDual(tb, t.NS)
	t.D.MustTether("network", "create", "--ipv6", "--subnet", pubSubnet, "--subnet", pubSubnet6, "-o", gatewayMode, netPub)
	port := strconv.Itoa(iperfPort)
	srv, _, err := createOn(t, netPub, "ipf", port+":"+port)
	if err != nil {
		tb.Fatal(err)
	}
	var hosts []string
	for _, b := range srv.NetworkSettings.Ports[port+"/tcp"] {
		hosts = append(hosts, b.HostIP+":"+b.HostPort)
	}
	if got := strings.Join(hosts, " "); got != "0.0.0.0:"+port+" :::"+port {
		tb.Fatalf("published ports of ipf: %q, want 0.0.0.0:%s and [::]:%s", got, port, port)
	}
	if _, _, err := t.Exec("ipf", "iperf3", "-s", "-p", port); err != nil {
		tb.Fatal(err)
	}
	ep := srv.Networks[netPub]
	outNS := "/run/netns/" + out
	to := map[string]string{
		pathDirect6: ep.GlobalIPv6Address.String(), pathKernel6: uplink6,
		pathDirect4: ep.IPAddress.String(), pathKernel4: testutil.UplinkAddr,
	}
	rep := TrafficReport{Secs: secs, Reps: reps, IperfBest: map[string]float64{}, IperfMedian: map[string]float64{}}
	for r := range reps {
		order := slices.Clone(pathOrder)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, p := range order {
			run, err := iperf(Iperf{Path: p, From: outNS, To: to[p]}, secs, t.NS, t.PID)
			if err != nil {
				tb.Fatalf("%s: %v\ndaemon log:\n%s", p, err, t.D.Log())
			}
			rep.Iperf = append(rep.Iperf, run)
			rep.IperfBest[p] = max(rep.IperfBest[p], run.Gbps)
		}
	}
	for _, p := range pathOrder {
		var v []float64
		for _, r := range rep.Iperf {
			if r.Path == p {
				v = append(v, r.Gbps)
			}
		}
		rep.IperfMedian[p] = stats.Median(v)
	}
	rep.KernelRatio = attach.Ratio(rep.IperfBest[pathKernel6], rep.IperfBest[pathDirect6])
	rep.KernelRatioMedian = attach.Ratio(rep.IperfMedian[pathKernel6], rep.IperfMedian[pathDirect6])
	rep.KernelRatio4 = attach.Ratio(rep.IperfBest[pathKernel4], rep.IperfBest[pathDirect4])
	rep.KernelRatio4Median = attach.Ratio(rep.IperfMedian[pathKernel4], rep.IperfMedian[pathDirect4])
	return rep
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

// iperf runs `iperf3 -c r.To -p 5201 -t secs -J` inside the network
// namespace file r.From and fills in r. The server serves one test at a time
// and needs a moment between tests, so a refused or busy start is retried
// (bounded). The host namespace hostNS is checked once, halfway through, for
// an established socket on the port (the userland proxy's side); daemonPID's
// CPU time is read around the run.
func iperf(r Iperf, secs int, hostNS string, daemonPID int) (Iperf, error) {
	var lastErr error
	for range 10 {
		var out string
		var err error
		r, out, err = iperfOnce(r, secs, hostNS, daemonPID)
		var j iperfJSON
		if jerr := json.Unmarshal([]byte(out), &j); jerr != nil {
			lastErr = fmt.Errorf("iperf3 to %s: %v, output: %.300s", r.To, err, out)
		} else if j.Error != "" || err != nil {
			lastErr = fmt.Errorf("iperf3 to %s: %v %s", r.To, err, j.Error)
		} else if j.End.SumReceived.Bytes <= 0 {
			return r, fmt.Errorf("iperf3 to %s: nothing received", r.To)
		} else {
			r.Gbps = j.End.SumReceived.BitsPerSecond / 1e9
			return r, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return r, lastErr
}

func iperfOnce(r Iperf, secs int, hostNS string, daemonPID int) (Iperf, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+20)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+r.From, "iperf3", "-c", r.To, "-p", strconv.Itoa(iperfPort),
		"-t", strconv.Itoa(secs), "-J", "--connect-timeout", "2000")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	d0, b0, t0 := attach.ProcTicks(daemonPID), attach.BusyTicks(), time.Now()
	if err := cmd.Start(); err != nil {
		return r, "", err
	}
	var wg sync.WaitGroup
	wg.Go(func() { // one look, halfway through the run
		time.Sleep(time.Duration(secs) * time.Second / 2)
		s, err := testutil.InNS(hostNS, "ss", "-Htn", "state", "established", "sport", "=", ":"+strconv.Itoa(iperfPort))
		r.ProxySeen = err == nil && strings.TrimSpace(s) != ""
	})
	err := cmd.Wait()
	wg.Wait()
	el := time.Since(t0).Seconds()
	r.DaemonCPU = float64(attach.ProcTicks(daemonPID)-d0) / attach.ClockTicks / el
	r.BusyCPU = float64(attach.BusyTicks()-b0) / attach.ClockTicks / el
	return r, out.String(), err
}
