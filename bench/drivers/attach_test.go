package drivers

// The attach figure: a sandbox created on the bridge, the macvlan and the
// OVS network, a link between two existing sandboxes and the link's raw
// floor, interleaved one for one.

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/testutil"
)

// What is timed, in the order of round 0's first i.
const (
	kBridge  = "bridge"
	kMacvlan = "macvlan"
	kOVS     = "ovs"
	kLink    = "link"
	kFloor   = "link floor"
)

var kinds = []string{kBridge, kMacvlan, kOVS, kLink, kFloor}

// sandboxKinds are the kinds that create a sandbox on a network: the
// network and the sandbox names' prefix.
var sandboxKinds = map[string]struct{ network, prefix string }{
	kBridge: {netBridge, "b"}, kMacvlan: {netMacvlan, "m"}, kOVS: {netOVS, "o"},
}

// AttachReport is the attach half of the report.
type AttachReport struct {
	// Per kind: per round, pooled over the rounds, and the removals (API
	// answer of DELETE; the floor's is not timed).
	Rounds map[string][]attach.Stats `json:"rounds"`
	Pooled map[string]attach.Stats   `json:"pooled"`
	Remove map[string]attach.Stats   `json:"remove"`
	// Pooled ratios to the bridge attach (macvlan, ovs, link), and per round
	// [p50, p90].
	OverBridgeP50    map[string]float64      `json:"over_bridge_p50"`
	OverBridgeP90    map[string]float64      `json:"over_bridge_p90"`
	RoundsOverBridge map[string][][2]float64 `json:"rounds_over_bridge_p50_p90"`
	// The like-for-like figure: the API's link ÷ the raw floor's.
	LinkOverFloorP50 float64 `json:"link_over_floor_p50"`
	LinkOverFloorP90 float64 `json:"link_over_floor_p90"`
	// The floor's steps, p50 over all rounds, ms.
	FloorSteps map[string]float64 `json:"floor_steps_p50"`
	// Raw samples per kind and round, ms.
	MS map[string][][]float64 `json:"ms"`
}

// round is one round's samples per kind.
type round struct {
	took, rm map[string][]time.Duration
	steps    [3][]time.Duration
}

// attachRound: first (untimed) 2n sandboxes on --network none and n floor
// pairs; then per i one of each kind, rotating which goes first; the checks
// (verify: traffic on each); then the removals, the four daemon kinds
// interleaved and timed, the none sandboxes and the floor's pairs not.
func attachRound(tb testing.TB, rg *rig, fl *LinkFloor, n, r int, verify bool) round {
	tb.Helper()
	t := rg.t
	rd := round{took: map[string][]time.Duration{}, rm: map[string][]time.Duration{}}
	pairs := make([]*LinkPair, n)
	var firstA string // the namespace file of la0, A end of the first link
	for i := range n {
		for _, name := range []string{fmt.Sprintf("la%d", i), fmt.Sprintf("lb%d", i)} {
			sb, _, err := createOn(t, netNone, name)
			if err != nil {
				tb.Fatal(err)
			}
			if i == 0 && firstA == "" {
				firstA = sb.NetNS
			}
		}
		p, err := fl.Prepare(i)
		if err != nil {
			tb.Fatal(err)
		}
		pairs[i] = p
	}
	sbs := map[string][]types.Sandbox{}
	var links []types.Link
	step := func(kind string, i int) error {
		var took time.Duration
		var err error
		switch kind {
		case kLink:
			var l types.Link
			l, took, err = createLink(t, fmt.Sprintf("l%d", i), fmt.Sprintf("la%d", i), fmt.Sprintf("lb%d", i))
			links = append(links, l)
		case kFloor:
			var st [3]time.Duration
			t0 := time.Now()
			st, err = fl.Link(pairs[i])
			took = time.Since(t0)
			for k := range st {
				rd.steps[k] = append(rd.steps[k], st[k])
			}
		default:
			sk := sandboxKinds[kind]
			var sb types.Sandbox
			sb, took, err = createOn(t, sk.network, fmt.Sprintf("%s%d", sk.prefix, i))
			sbs[kind] = append(sbs[kind], sb)
		}
		rd.took[kind] = append(rd.took[kind], took)
		return err
	}
	for i := range n {
		for j := range kinds {
			if err := step(kinds[(i+r+j)%len(kinds)], i); err != nil {
				tb.Fatalf("%v\ndaemon log:\n%s", err, t.D.Log())
			}
		}
	}
	if verify && n > 1 {
		verifyTraffic(tb, sbs, firstA, links[0], pairs[0])
	}
	removeRound(tb, rg, fl, pairs, r, &rd)
	return rd
}

// removeRound removes round r's sandboxes and links (timed, the four kinds
// rotated), then the none sandboxes and the floor's pairs, and checks the
// daemon has no sandbox left.
func removeRound(tb testing.TB, rg *rig, fl *LinkFloor, pairs []*LinkPair, r int, rd *round) {
	tb.Helper()
	t := rg.t
	order := []string{kBridge, kMacvlan, kOVS, kLink}
	for i := range pairs {
		for j := range order {
			kind := order[(i+r+j)%len(order)]
			var took time.Duration
			var err error
			if kind == kLink {
				took, err = removeLink(t, fmt.Sprintf("l%d", i))
			} else {
				took, err = t.Remove(fmt.Sprintf("%s%d", sandboxKinds[kind].prefix, i))
			}
			if err != nil {
				tb.Fatal(err)
			}
			rd.rm[kind] = append(rd.rm[kind], took)
		}
		for _, name := range []string{fmt.Sprintf("la%d", i), fmt.Sprintf("lb%d", i)} {
			if _, err := t.Remove(name); err != nil {
				tb.Fatal(err)
			}
		}
		if err := fl.Remove(pairs[i]); err != nil {
			tb.Error(err)
		}
	}
	if left, err := t.List(); err != nil || len(left) != 0 {
		tb.Fatalf("after removal: %d sandboxes left, %v", len(left), err)
	}
}

// verifyTraffic pings, for each sandbox kind, from its first sandbox to its
// second (and to the macvlan LAN host and the OVS gateway), across the
// first link (from its A end, whose namespace file is linkA) and across the
// first floor pair.
func verifyTraffic(tb testing.TB, sbs map[string][]types.Sandbox, linkA string, l types.Link, p *LinkPair) {
	tb.Helper()
	type ping struct{ what, from, to string }
	var pings []ping
	for _, kind := range []string{kBridge, kMacvlan, kOVS} {
		net := sandboxKinds[kind].network
		s := sbs[kind]
		pings = append(pings, ping{kind + " sandbox to sandbox", s[0].NetNS, s[1].Networks[net].IPAddress.String()})
	}
	pings = append(pings,
		ping{"macvlan sandbox to the LAN host", sbs[kMacvlan][0].NetNS, lanHost.String()},
		ping{"ovs sandbox to its gateway", sbs[kOVS][0].NetNS, ovsGateway.String()},
		ping{"link " + l.Name + " A to B", linkA, l.B.Address.Addr().String()},
		ping{"link floor A to B", p.A, p.AddrB.String()},
	)
	for _, pg := range pings {
		if out, err := nsenter(pg.from, "ping", "-n", "-c1", "-W2", pg.to); err != nil {
			tb.Errorf("%s: ping %s from %s: %v\n%s", pg.what, pg.to, pg.from, err, out)
		}
	}
}

// measureAttach runs reps rounds of n and summarises them.
func measureAttach(tb testing.TB, rg *rig, n, reps int, verify bool) AttachReport {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "linkfloor")
	fl, err := NewLinkFloor(dir)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if err := fl.Close(); err != nil {
			tb.Error(err)
		}
		if m := testutil.Mounted(dir); len(m) != 0 {
			tb.Errorf("link floor: mounts left under %s: %v", dir, m)
		}
	}()
	rep := AttachReport{Rounds: map[string][]attach.Stats{}, Pooled: map[string]attach.Stats{}, Remove: map[string]attach.Stats{},
		OverBridgeP50: map[string]float64{}, OverBridgeP90: map[string]float64{}, RoundsOverBridge: map[string][][2]float64{},
		FloorSteps: map[string]float64{}, MS: map[string][][]float64{}}
	all := round{took: map[string][]time.Duration{}, rm: map[string][]time.Duration{}}
	for r := range reps {
		rd := attachRound(tb, rg, fl, n, r, verify)
		for _, k := range kinds {
			rep.Rounds[k] = append(rep.Rounds[k], attach.Summarize(rd.took[k]))
			rep.MS[k] = append(rep.MS[k], ms(rd.took[k]))
			all.took[k] = append(all.took[k], rd.took[k]...)
			all.rm[k] = append(all.rm[k], rd.rm[k]...)
		}
		for _, k := range kinds[1:4] {
			b, x := rep.Rounds[kBridge][r], rep.Rounds[k][r]
			rep.RoundsOverBridge[k] = append(rep.RoundsOverBridge[k], [2]float64{attach.Ratio(x.P50, b.P50), attach.Ratio(x.P90, b.P90)})
		}
		for s := range all.steps {
			all.steps[s] = append(all.steps[s], rd.steps[s]...)
		}
		if r < reps-1 {
			settle()
		}
	}
	for _, k := range kinds {
		rep.Pooled[k] = attach.Summarize(all.took[k])
		if k != kFloor {
			rep.Remove[k] = attach.Summarize(all.rm[k])
		}
	}
	for _, k := range kinds[1:4] {
		rep.OverBridgeP50[k] = attach.Ratio(rep.Pooled[k].P50, rep.Pooled[kBridge].P50)
		rep.OverBridgeP90[k] = attach.Ratio(rep.Pooled[k].P90, rep.Pooled[kBridge].P90)
	}
	rep.LinkOverFloorP50 = attach.Ratio(rep.Pooled[kLink].P50, rep.Pooled[kFloor].P50)
	rep.LinkOverFloorP90 = attach.Ratio(rep.Pooled[kLink].P90, rep.Pooled[kFloor].P90)
	for s, name := range LinkFloorSteps {
		rep.FloorSteps[name] = attach.Summarize(all.steps[s]).P50
	}
	return rep
}
