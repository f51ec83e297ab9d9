package drivers

// The rig: one daemon with a bridge, a macvlan and an OVS network, and the
// API calls the figures time.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/ovsdb/ovstest"
	"github.com/tether-net/tether/internal/testutil"
)

// The networks: "bench" is bench/attach's Linux bridge (10.123.0.0/16); the
// macvlan one has the LAN host as its gateway; "none" is the daemon's.
const (
	netBridge  = "bench"
	netMacvlan = "mvbench"
	netOVS     = "ovsbench"
	netNone    = "none"
	parent     = "blan0"
)

var (
	subnetOf = map[string]netip.Prefix{
		netBridge:  netip.MustParsePrefix("10.123.0.0/16"),
		netMacvlan: netip.MustParsePrefix("10.97.0.0/16"),
		netOVS:     netip.MustParsePrefix("10.96.0.0/16"),
	}
	lanHost    = netip.MustParseAddr("10.97.0.1") // the macvlan network's gateway
	ovsGateway = netip.MustParseAddr("10.96.0.1")
)

// rig is the daemon and what surrounds it.
type rig struct {
	t   *attach.Tether
	lan string // the LAN host's namespace, on the other end of the parent
}

// startRig starts bench/attach's daemon, a private OVS in its host
// namespace, restarts the daemon with --ovs-db pointing at it, and creates
// the macvlan and OVS networks. A cleanup that runs before OVS stops
// removes every sandbox, link and network the run left.
func startRig(tb testing.TB) *rig {
	tb.Helper()
	t := attach.StartTether(tb)
	db, _ := ovstest.Start(tb, t.NS)
	t.D.Stop()
	t.D.Args = append(t.D.Args, "--ovs-db", db)
	if err := t.D.Start(); err != nil {
		tb.Fatal(err)
	}
	t.PID = t.D.PID()
	rg := &rig{t: t, lan: lanSegment(tb, t.NS)}
	t.D.MustTether("network", "create", "-d", "macvlan", "-o", "parent="+parent,
		"--subnet", subnetOf[netMacvlan].String(), "--gateway", lanHost.String(), netMacvlan)
	t.D.MustTether("network", "create", "-d", "ovs", "--subnet", subnetOf[netOVS].String(), netOVS)
	tb.Cleanup(func() { rg.clear(tb) })
	return rg
}

// lanSegment links the daemon's host namespace to a "LAN host" namespace by
// a veth: host end parent (no address: the macvlan parent), LAN end eth0
// with the macvlan network's gateway address (as e2e/macvlan_test.go).
func lanSegment(tb testing.TB, hostNS string) string {
	tb.Helper()
	lan := testutil.NetNS(tb, "tth-blan")
	testutil.Must(tb, "ip", "-n", hostNS, "link", "add", parent, "type", "veth", "peer", "name", "eth0", "netns", lan)
	for _, c := range [][]string{
		{"-n", hostNS, "link", "set", parent, "up"},
		{"-n", lan, "addr", "add", netip.PrefixFrom(lanHost, 16).String(), "dev", "eth0"},
		{"-n", lan, "link", "set", "eth0", "up"},
	} {
		testutil.Must(tb, "ip", c...)
	}
	return lan
}

// clear removes what is left (forced: processes go with their sandbox),
// then the macvlan and OVS networks.
func (rg *rig) clear(tb testing.TB) {
	sbs, err := rg.t.List()
	if err != nil {
		tb.Errorf("list sandboxes: %v", err)
	}
	for _, sb := range sbs {
		if code, out, err := rg.t.Call(http.MethodDelete, "/tether/v1/sandboxes/"+sb.Name+"?force=1", nil); err != nil || code != http.StatusNoContent {
			tb.Errorf("remove sandbox %s: %d %s %v", sb.Name, code, out, err)
		}
	}
	for _, n := range []string{netMacvlan, netOVS} {
		if out, err := rg.t.D.Tether("network", "rm", n); err != nil {
			tb.Errorf("network rm %s: %v %s", n, err, out)
		}
	}
}

// createOn sends POST /tether/v1/sandboxes for a sandbox on one network and
// returns the answer and the round trip (bench/attach's call with the
// network named).
func createOn(t *attach.Tether, network, name string) (types.Sandbox, time.Duration, error) {
	body, _ := json.Marshal(types.SandboxCreateRequest{Name: name, Networks: []types.NetworkAttach{{Network: network}}})
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
	if sub, ok := subnetOf[network]; ok {
		if ep := sb.Networks[network]; ep == nil || !sub.Contains(ep.IPAddress) {
			return sb, took, fmt.Errorf("sandbox %q on %q: endpoint %+v, want an address in %s", name, network, ep, sub)
		}
	}
	return sb, took, nil
}

// createLink sends POST /tether/v1/links for a link called name between
// sandboxes a and b (addresses from the daemon's link-pool) and returns the
// answer and the round trip.
func createLink(t *attach.Tether, name, a, b string) (types.Link, time.Duration, error) {
	body, _ := json.Marshal(types.LinkCreateRequest{Name: name, A: a, B: b})
	var l types.Link
	start := time.Now()
	code, out, err := t.Call(http.MethodPost, "/tether/v1/links", body)
	took := time.Since(start)
	if err != nil {
		return l, took, err
	}
	if code != http.StatusCreated {
		return l, took, fmt.Errorf("create link %q between %q and %q: %d %s", name, a, b, code, out)
	}
	if err := json.Unmarshal(out, &l); err != nil {
		return l, took, fmt.Errorf("create link %q: decode: %w", name, err)
	}
	if !l.A.Address.IsValid() || !l.B.Address.IsValid() || l.A.Address.Bits() != 32 {
		return l, took, fmt.Errorf("link %q: ends %+v and %+v, want /32 addresses", name, l.A, l.B)
	}
	return l, took, nil
}

// removeLink sends DELETE /tether/v1/links/NAME and returns the round trip.
func removeLink(t *attach.Tether, name string) (time.Duration, error) {
	start := time.Now()
	code, out, err := t.Call(http.MethodDelete, "/tether/v1/links/"+name, nil)
	took := time.Since(start)
	if err != nil {
		return took, err
	}
	if code != http.StatusNoContent {
		return took, fmt.Errorf("remove link %q: %d %s", name, code, out)
	}
	return took, nil
}

// settle gives the kernel time to free the previous round's namespaces and
// veths (it does so in the background), as bench/attach does between rounds.
func settle() { time.Sleep(3 * time.Second) }

func ms(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Microseconds()) / 1000
	}
	return out
}
