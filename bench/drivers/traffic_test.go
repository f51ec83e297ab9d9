package drivers

// The throughput figure: iperf3 between two sandboxes over the Linux
// bridge network, over a point-to-point link and over the OVS network
// (userspace datapath), interleaved.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/testutil/stats"
)

const iperfPort = 5201

// iperf3 paths, in the order of the first round.
const (
	pathBridge = "bridge: sandbox → sandbox on a Linux bridge network"
	pathLink   = "link: sandbox → sandbox over a point-to-point link"
	pathOVS    = "ovs: sandbox → sandbox on an OVS network (netdev datapath)"
)

var pathOrder = []string{pathBridge, pathLink, pathOVS}

// Iperf is one iperf3 client run.
type Iperf struct {
	Path  string  `json:"path"`
	Round int     `json:"round"`
	To    string  `json:"to"`
	Gbps  float64 `json:"gbit_per_s"` // receiver side
	Error string  `json:"error,omitempty"`
	// CPU during the run, in CPUs: the whole machine's busy time and
	// ovs-vswitchd's (the OVS datapath runs in it, in user space).
	BusyCPU    float64 `json:"machine_busy_cpus"`
	VSwitchCPU float64 `json:"ovs_vswitchd_cpus"`
}

// TrafficReport is the throughput half of the report.
type TrafficReport struct {
	Secs        int                `json:"iperf_secs"`
	Reps        int                `json:"iperf_reps"`
	MTU         int                `json:"mtu"`
	Iperf       []Iperf            `json:"iperf"`
	IperfBest   map[string]float64 `json:"iperf_best_gbit_per_s"`
	IperfMedian map[string]float64 `json:"iperf_median_gbit_per_s"`
	// Link ÷ bridge and OVS ÷ bridge, of the best runs and of the medians.
	LinkOverBridge       float64 `json:"link_over_bridge"`
	LinkOverBridgeMedian float64 `json:"link_over_bridge_median"`
	OVSOverBridge        float64 `json:"ovs_over_bridge"`
	OVSOverBridgeMedian  float64 `json:"ovs_over_bridge_median"`
	// Errors: paths whose runs failed (their runs carry the error).
	Errors map[string]string `json:"errors,omitempty"`
}

// trafficPair is a path's two sandboxes: the server's address and the
// client's namespace file.
type trafficPair struct{ to, from string }

// setupTraffic creates, per path, a server and a client sandbox (the link's
// on --network none, joined by link "tl") and starts iperf3 -s in each
// server.
func setupTraffic(tb testing.TB, rg *rig) map[string]trafficPair {
	tb.Helper()
	t := rg.t
	out := map[string]trafficPair{}
	mk := func(network, name string) types.Sandbox {
		sb, _, err := createOn(t, network, name)
		if err != nil {
			tb.Fatal(err)
		}
		return sb
	}
	for _, p := range []struct{ path, network, prefix string }{{pathBridge, netBridge, "tb"}, {pathOVS, netOVS, "to"}} {
		srv, cli := mk(p.network, p.prefix+"-s"), mk(p.network, p.prefix+"-c")
		out[p.path] = trafficPair{to: srv.Networks[p.network].IPAddress.String(), from: cli.NetNS}
	}
	mk(netNone, "tl-s")
	cli := mk(netNone, "tl-c")
	l, _, err := createLink(t, "tl", "tl-s", "tl-c")
	if err != nil {
		tb.Fatal(err)
	}
	out[pathLink] = trafficPair{to: l.A.Address.Addr().String(), from: cli.NetNS}
	for _, srv := range []string{"tb-s", "to-s", "tl-s"} {
		if _, _, err := t.Exec(srv, "iperf3", "-s", "-p", strconv.Itoa(iperfPort)); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// measureTraffic runs each path reps times, in reversed order every other
// round. A failing path is recorded (and the test fails) but does not stop
// the others.
func measureTraffic(tb testing.TB, rg *rig, secs, reps int) TrafficReport {
	tb.Helper()
	pairs := setupTraffic(tb, rg)
	vsPID := vswitchdPID(rg.t.NS)
	if vsPID == 0 {
		tb.Log("ovs-vswitchd not found in the daemon's namespace: its CPU is not reported")
	}
	rep := TrafficReport{Secs: secs, Reps: reps, MTU: 1500, IperfBest: map[string]float64{}, IperfMedian: map[string]float64{}}
	for r := range reps {
		order := slices.Clone(pathOrder)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, p := range order {
			if rep.Errors[p] != "" {
				continue // failed once: not again
			}
			run, err := iperf(Iperf{Path: p, Round: r, To: pairs[p].to}, pairs[p].from, secs, vsPID)
			if err != nil {
				run.Error = err.Error()
				if rep.Errors == nil {
					rep.Errors = map[string]string{}
				}
				rep.Errors[p] = run.Error
				tb.Errorf("%s: %v", p, err)
			}
			rep.Iperf = append(rep.Iperf, run)
			rep.IperfBest[p] = max(rep.IperfBest[p], run.Gbps)
		}
	}
	for _, p := range pathOrder {
		var v []float64
		for _, r := range rep.Iperf {
			if r.Path == p && r.Error == "" {
				v = append(v, r.Gbps)
			}
		}
		if len(v) > 0 {
			rep.IperfMedian[p] = stats.Median(v)
		}
	}
	rep.LinkOverBridge = attach.Ratio(rep.IperfBest[pathLink], rep.IperfBest[pathBridge])
	rep.LinkOverBridgeMedian = attach.Ratio(rep.IperfMedian[pathLink], rep.IperfMedian[pathBridge])
	rep.OVSOverBridge = attach.Ratio(rep.IperfBest[pathOVS], rep.IperfBest[pathBridge])
	rep.OVSOverBridgeMedian = attach.Ratio(rep.IperfMedian[pathOVS], rep.IperfMedian[pathBridge])
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

// iperf runs `iperf3 -c r.To -p 5201 -t secs -J` inside the namespace file
// from and fills in r. A refused or busy start (the server needs a moment
// between tests, or is still starting) is retried, bounded.
func iperf(r Iperf, from string, secs, vsPID int) (Iperf, error) {
	var lastErr error
	for range 10 {
		var out string
		var err error
		r, out, err = iperfOnce(r, from, secs, vsPID)
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

func iperfOnce(r Iperf, from string, secs, vsPID int) (Iperf, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+20)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+from, "iperf3", "-c", r.To, "-p", strconv.Itoa(iperfPort),
		"-t", strconv.Itoa(secs), "-J", "--connect-timeout", "2000")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	v0, b0, t0 := attach.ProcTicks(vsPID), attach.BusyTicks(), time.Now()
	err := cmd.Run()
	el := time.Since(t0).Seconds()
	r.BusyCPU = float64(attach.BusyTicks()-b0) / attach.ClockTicks / el
	if vsPID > 0 {
		r.VSwitchCPU = float64(attach.ProcTicks(vsPID)-v0) / attach.ClockTicks / el
	}
	return r, out.String(), err
}

// vswitchdPID finds the ovs-vswitchd running in the named network
// namespace (the rig's private one) by its command name and namespace
// inode; 0 when there is none.
func vswitchdPID(ns string) int {
	want, err := os.Stat("/run/netns/" + ns)
	if err != nil {
		return 0
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(d + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "ovs-vswitchd" {
			continue
		}
		st, err := os.Stat(d + "/ns/net")
		if err != nil || !sameInode(st, want) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		return pid
	}
	return 0
}

func sameInode(a, b os.FileInfo) bool {
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && sa.Ino == sb.Ino && sa.Dev == sb.Dev
}
