package ipv6

// The attach figure: IPv4-only vs dual-stack attach on one daemon, with the
// raw floors of both beside it, interleaved one for one.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/testutil"
)

// The networks: "bench" is bench/attach's (IPv4-only, 10.123.0.0/16);
// "bench6" is the dual-stack one, created here.
const (
	netV4      = "bench"
	netDS      = "bench6"
	dsSubnet   = "10.125.0.0/16"
	dsSubnet6  = "fd00:125::/64"
	floorLabel = "floor (bench/attach, IPv4)"
)

// AttachReport is the attach half of the report.
type AttachReport struct {
	// Per round, then pooled over the rounds: Tether's create on the
	// IPv4-only network and on the dual-stack one (the API round trip),
	// their removals (DELETE round trip), and the two raw floors.
	RoundsV4     []attach.Stats `json:"rounds_ipv4"`
	RoundsDS     []attach.Stats `json:"rounds_dual"`
	RoundsFloor  []attach.Stats `json:"rounds_floor"`
	RoundsFloor6 []attach.Stats `json:"rounds_floor_dual"`
	V4           attach.Stats   `json:"ipv4"`
	DS           attach.Stats   `json:"dual"`
	Floor        attach.Stats   `json:"floor"`
	Floor6       attach.Stats   `json:"floor_dual"`
	RemoveV4     attach.Stats   `json:"remove_ipv4"`
	RemoveDS     attach.Stats   `json:"remove_dual"`
	// Ratios of the pooled figures: dual ÷ IPv4 (the target), per round too.
	RatioP50        float64      `json:"dual_over_ipv4_p50"`
	RatioP90        float64      `json:"dual_over_ipv4_p90"`
	RoundRatios     [][2]float64 `json:"rounds_dual_over_ipv4_p50_p90"`
	DSOverFloor6    float64      `json:"dual_over_floor_dual_p50"`
	V4OverFloor     float64      `json:"ipv4_over_floor_p50"`
	Floor6OverFloor float64      `json:"floor_dual_over_floor_p50"`
	// The floors' steps, p50 over all rounds.
	FloorSteps  map[string]float64 `json:"floor_steps_p50"`
	Floor6Steps map[string]float64 `json:"floor_dual_steps_p50"`
	// Raw samples per round, ms.
	V4MS     [][]float64 `json:"ipv4_ms"`
	DSMS     [][]float64 `json:"dual_ms"`
	FloorMS  [][]float64 `json:"floor_ms"`
	Floor6MS [][]float64 `json:"floor_dual_ms"`
}

// createOn sends POST /tether/v1/sandboxes for a sandbox on one network,
// publishing the given -p values, and returns the answer and round trip:
// bench/attach's call with the network named.
func createOn(t *attach.Tether, network, name string, publish ...string) (types.Sandbox, time.Duration, error) {
	pm, err := types.ParsePublish(publish)
	if err != nil {
		return types.Sandbox{}, 0, err
	}
	body, _ := json.Marshal(types.SandboxCreateRequest{Name: name,
		Networks: []types.NetworkAttach{{Network: network, PortBindings: pm}}})
	var sb types.Sandbox
	start := time.Now()
	code, out, err := t.Call(http.MethodPost, "/tether/v1/sandboxes", body)
	took := time.Since(start)
	if err != nil {
		return sb, took, err
	}
	if code != http.StatusCreated {
		return sb, took, fmt.Errorf("create sandbox %q on %q: %d %s", name, network, code, out)
	}
	if err := json.Unmarshal(out, &sb); err != nil {
		return sb, took, fmt.Errorf("create sandbox %q: decode: %w", name, err)
	}
	return sb, took, nil
}

// floors are the two raw floors, each in its own host namespace.
type floors struct {
	tb  testing.TB
	f4  *attach.Floor
	f6  *Floor6
	d4  string
	d6  string
	sb4 []*attach.FloorSandbox
	sb6 []*Floor6Sandbox
	// per step, pooled over the rounds
	steps4, steps6 [][]time.Duration
}

func startFloors(tb testing.TB) *floors {
	tb.Helper()
	ns4, ns6 := testutil.NetNS(tb, "tth-bfloor"), testutil.NetNS(tb, "tth-bfloor6")
	dir := tb.TempDir()
	fl := &floors{tb: tb, d4: filepath.Join(dir, "ns4"), d6: filepath.Join(dir, "ns6"),
		steps4: make([][]time.Duration, len(attach.FloorSteps)), steps6: make([][]time.Duration, len(Floor6Steps))}
	var err error
	if fl.f4, err = attach.NewFloor("/run/netns/"+ns4, fl.d4); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(fl.close) // before the namespaces and the directory go
	if fl.f6, err = NewFloor6("/run/netns/"+ns6, fl.d6); err != nil {
		tb.Fatal(err)
	}
	return fl
}

func (fl *floors) attach4(i int) (time.Duration, error) {
	t0 := time.Now()
	sb, st, err := fl.f4.Attach(i)
	took := time.Since(t0)
	if sb != nil {
		fl.sb4 = append(fl.sb4, sb)
	}
	for k, d := range st {
		fl.steps4[k] = append(fl.steps4[k], d)
	}
	return took, err
}

func (fl *floors) attach6(i int) (time.Duration, error) {
	t0 := time.Now()
	sb, st, err := fl.f6.Attach(i)
	took := time.Since(t0)
	if sb != nil {
		fl.sb6 = append(fl.sb6, sb)
	}
	for k, d := range st {
		fl.steps6[k] = append(fl.steps6[k], d)
	}
	return took, err
}

// clear removes the floors' sandboxes (not timed).
func (fl *floors) clear() {
	for _, sb := range fl.sb4 {
		if err := fl.f4.Remove(sb); err != nil {
			fl.tb.Error(err)
		}
	}
	for _, sb := range fl.sb6 {
		if err := fl.f6.Remove(sb); err != nil {
			fl.tb.Error(err)
		}
	}
	fl.sb4, fl.sb6 = nil, nil
}

// close removes the sandboxes and the bridges and checks no mount is left.
func (fl *floors) close() {
	if fl.f4 == nil {
		return
	}
	fl.clear()
	if err := fl.f4.Close(); err != nil {
		fl.tb.Error(err)
	}
	if fl.f6 != nil {
		if err := fl.f6.Close(); err != nil {
			fl.tb.Error(err)
		}
	}
	fl.f4, fl.f6 = nil, nil
	for _, d := range []string{fl.d4, fl.d6} {
		if m := testutil.Mounted(d); len(m) != 0 {
			fl.tb.Errorf("floor: mounts left under %s: %v", d, m)
		}
	}
}

// round is one round's samples.
type round struct {
	v4, ds, f4, f6 []time.Duration
	rm4, rm6       []time.Duration
}

// attachRound creates n sandboxes on each network and attaches n on each
// floor, one of each per i, rotating which goes first; checks each answer
// (verify: also traffic over IPv6 on the dual-stack network and the
// dual-stack floor); then removes the daemon's sandboxes, the two kinds
// interleaved, and the floors' (untimed).
func attachRound(tb testing.TB, t *attach.Tether, fl *floors, n, r int, verify bool) round {
	tb.Helper()
	var rd round
	var ds []types.Sandbox
	for i := range n {
		steps := []func() error{
			func() error {
				sb, took, err := createOn(t, netV4, fmt.Sprintf("v%d", i))
				if err == nil && (!sb.Networks[netV4].IPAddress.IsValid() || sb.Networks[netV4].GlobalIPv6Address.IsValid()) {
					err = fmt.Errorf("sandbox v%d on %s: %+v, want IPv4 only", i, netV4, sb.Networks[netV4])
				}
				rd.v4 = append(rd.v4, took)
				return err
			},
			func() error {
				sb, took, err := createOn(t, netDS, fmt.Sprintf("d%d", i))
				if err == nil {
					err = checkDual(sb)
				}
				rd.ds, ds = append(rd.ds, took), append(ds, sb)
				return err
			},
			func() error { d, err := fl.attach4(i); rd.f4 = append(rd.f4, d); return err },
			func() error { d, err := fl.attach6(i); rd.f6 = append(rd.f6, d); return err },
		}
		for j := range steps {
			if err := steps[(i+r+j)%len(steps)](); err != nil {
				tb.Fatalf("%v\ndaemon log:\n%s", err, t.D.Log())
			}
		}
	}
	if verify && n > 1 {
		verifyTraffic(tb, ds, fl)
	}
	for i := range n {
		names := []string{fmt.Sprintf("v%d", i), fmt.Sprintf("d%d", i)}
		if (i+r)%2 == 1 {
			slices.Reverse(names)
		}
		for _, name := range names {
			took, err := t.Remove(name)
			if err != nil {
				tb.Fatal(err)
			}
			if name[0] == 'v' {
				rd.rm4 = append(rd.rm4, took)
			} else {
				rd.rm6 = append(rd.rm6, took)
			}
		}
	}
	fl.clear()
	if left, err := t.List(); err != nil || len(left) != 0 {
		tb.Fatalf("after removal: %d sandboxes left, %v", len(left), err)
	}
	return rd
}

// checkDual checks a dual-stack answer: an IPv4 and an IPv6 address in the
// network's subnets, the IPv6 gateway.
func checkDual(sb types.Sandbox) error {
	ep := sb.Networks[netDS]
	if ep == nil || !netip.MustParsePrefix(dsSubnet).Contains(ep.IPAddress) ||
		!netip.MustParsePrefix(dsSubnet6).Contains(ep.GlobalIPv6Address) || ep.GlobalIPv6PrefixLen != 64 ||
		ep.IPv6Gateway != netip.MustParseAddr("fd00:125::1") {
		return fmt.Errorf("sandbox %s on %s: %+v, want both families", sb.Name, netDS, ep)
	}
	return nil
}

// verifyTraffic pings over IPv6 from the first dual-stack sandbox to the
// second, and likewise between the first two sandboxes of the dual floor.
func verifyTraffic(tb testing.TB, ds []types.Sandbox, fl *floors) {
	tb.Helper()
	for _, p := range []struct{ from, to string }{
		{ds[0].NetNS, ds[1].Networks[netDS].GlobalIPv6Address.String()},
		{fl.sb6[0].Path, fl.sb6[1].Addr6.String()},
		{fl.sb6[0].Path, floorGW6.String()},
	} {
		if out, err := nsenter(p.from, "ping", "-6", "-n", "-c1", "-W2", p.to); err != nil {
			tb.Errorf("ping -6 %s from %s: %v\n%s", p.to, p.from, err, out)
		}
	}
}

// measureAttach runs reps rounds of n and summarises them.
func measureAttach(tb testing.TB, t *attach.Tether, n, reps int, verify bool) AttachReport {
	tb.Helper()
	t.D.MustTether("network", "create", "--ipv6", "--subnet", dsSubnet, "--subnet", dsSubnet6, netDS)
	fl := startFloors(tb)
	var rep AttachReport
	var all round
	for r := range reps {
		rd := attachRound(tb, t, fl, n, r, verify)
		rep.RoundsV4 = append(rep.RoundsV4, attach.Summarize(rd.v4))
		rep.RoundsDS = append(rep.RoundsDS, attach.Summarize(rd.ds))
		rep.RoundsFloor = append(rep.RoundsFloor, attach.Summarize(rd.f4))
		rep.RoundsFloor6 = append(rep.RoundsFloor6, attach.Summarize(rd.f6))
		rep.RoundRatios = append(rep.RoundRatios, [2]float64{
			attach.Ratio(rep.RoundsDS[r].P50, rep.RoundsV4[r].P50), attach.Ratio(rep.RoundsDS[r].P90, rep.RoundsV4[r].P90)})
		rep.V4MS, rep.DSMS = append(rep.V4MS, ms(rd.v4)), append(rep.DSMS, ms(rd.ds))
		rep.FloorMS, rep.Floor6MS = append(rep.FloorMS, ms(rd.f4)), append(rep.Floor6MS, ms(rd.f6))
		all.v4, all.ds = append(all.v4, rd.v4...), append(all.ds, rd.ds...)
		all.f4, all.f6 = append(all.f4, rd.f4...), append(all.f6, rd.f6...)
		all.rm4, all.rm6 = append(all.rm4, rd.rm4...), append(all.rm6, rd.rm6...)
		if r < reps-1 {
			settle()
		}
	}
	rep.V4, rep.DS = attach.Summarize(all.v4), attach.Summarize(all.ds)
	rep.Floor, rep.Floor6 = attach.Summarize(all.f4), attach.Summarize(all.f6)
	rep.RemoveV4, rep.RemoveDS = attach.Summarize(all.rm4), attach.Summarize(all.rm6)
	rep.RatioP50, rep.RatioP90 = attach.Ratio(rep.DS.P50, rep.V4.P50), attach.Ratio(rep.DS.P90, rep.V4.P90)
	rep.DSOverFloor6 = attach.Ratio(rep.DS.P50, rep.Floor6.P50)
	rep.V4OverFloor = attach.Ratio(rep.V4.P50, rep.Floor.P50)
	rep.Floor6OverFloor = attach.Ratio(rep.Floor6.P50, rep.Floor.P50)
	rep.FloorSteps, rep.Floor6Steps = stepsP50(attach.FloorSteps, fl.steps4), stepsP50(Floor6Steps, fl.steps6)
	fl.close()
	return rep
}

func stepsP50(names []string, samples [][]time.Duration) map[string]float64 {
	m := map[string]float64{}
	for k, name := range names {
		m[name] = attach.Summarize(samples[k]).P50
	}
	return m
}

// settle gives the kernel time to free the previous round's namespaces and
// veths (it does so in the background), as bench/attach does between rounds.
func settle() { time.Sleep(3 * time.Second) }

// nsenter runs a command inside the network namespace file path.
func nsenter(path string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + path, "--"}, args...)...).CombinedOutput()
	return string(out), err
}

func ms(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Microseconds()) / 1000
	}
	return out
}
