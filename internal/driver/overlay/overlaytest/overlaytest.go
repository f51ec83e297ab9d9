// Package overlaytest is the harness of the overlay driver's kernel tests,
// reusable by engine and end-to-end tests: simulated hosts on a
// testutil.Underlay, each running an overlay.Driver on a netlink handle
// bound to its namespace, sandboxes joined to overlay networks, a full mesh
// of peers, ping and iperf3 probes, and the overlay-vs-underlay throughput
// measurement (Throughput).
//
// Everything lives in namespaces the test creates; the test's cleanup
// deletes them, and with them every link, address, FDB and neighbour entry.
package overlaytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/overlay"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
	"github.com/tether-net/tether/internal/testutil/stats"
)

// Host is a simulated host: an underlay member namespace, a netlink handle
// bound to it and an overlay driver working through that handle.
type Host struct {
	testutil.Member
	Path   string          // namespace file (/run/netns/NS)
	H      *netlink.Handle // bound to the host namespace
	Driver *overlay.Driver
	VTEP   netip.Addr // its underlay address
}

// NewHost joins a new host to the underlay. The handle is closed when the
// test ends (before the namespace is deleted).
func NewHost(tb testing.TB, u *testutil.Underlay) *Host {
	tb.Helper()
	m := u.Join("h")
	path := "/run/netns/" + m.NS
	h, err := tns.NewHandle(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Close)
	d := overlay.NewAt(h, path)
	tb.Cleanup(func() { _ = d.Close() }) // the bypass's links and maps
	return &Host{Member: m, Path: path, H: h, Driver: d, VTEP: netip.MustParseAddr(m.Addr)}
}

// NewID returns a random 64-hex-digit ID like the engine's.
func NewID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Network returns the host's view of the overlay network id: the same ID
// and VNI on every host, the host's own VTEP.
func (h *Host) Network(id string, vni int, subnet string) *driver.Network {
	return &driver.Network{
		ID: id, Name: "ov" + strconv.Itoa(vni), Subnet: netip.MustParsePrefix(subnet),
		MTU: 1500, ICC: true, VNI: vni, VTEP: h.VTEP,
	}
}

// DualStackNetwork is Network with the IPv6 subnet subnet6 (its gateway6
// left zero, as the overlay driver does not use it).
func (h *Host) DualStackNetwork(id string, vni int, subnet, subnet6 string) *driver.Network {
	n := h.Network(id, vni, subnet)
	n.Subnet6 = netip.MustParsePrefix(subnet6)
	return n
}

// CreateNetwork creates n on h and fails the test on error.
func (h *Host) CreateNetwork(tb testing.TB, n *driver.Network) {
	tb.Helper()
	if err := h.Driver.CreateNetwork(context.Background(), n); err != nil {
		tb.Fatalf("create network %q on %s: %v", n.Name, h.NS, err)
	}
}

// Sandbox is a namespace joined to an overlay network on a host.
type Sandbox struct {
	NS   string // ip netns name
	Path string
	Host *Host
	Net  *driver.Network
	EP   *driver.Endpoint
}

// Addr is the sandbox's overlay address.
func (s *Sandbox) Addr() string { return s.EP.Address.Addr().String() }

// Addr6 is the sandbox's overlay IPv6 address ("invalid IP" without one).
func (s *Sandbox) Addr6() string { return s.EP.Address6.Addr().String() }

// Join creates a sandbox namespace and joins it to n on h as eth0 with
// address addr (a prefix, e.g. "10.77.0.2/24") and the MAC derived from it.
func (h *Host) Join(tb testing.TB, n *driver.Network, addr string) *Sandbox {
	tb.Helper()
	return h.Join6(tb, n, addr, "")
}

// Join6 is Join with the IPv6 address addr6 too ("" for none), on a
// dual-stack network.
func (h *Host) Join6(tb testing.TB, n *driver.Network, addr, addr6 string) *Sandbox {
	tb.Helper()
	ns := testutil.NetNS(tb, "tth-sb")
	p := netip.MustParsePrefix(addr)
	s := &Sandbox{NS: ns, Path: "/run/netns/" + ns, Host: h, Net: n, EP: &driver.Endpoint{
		ID: NewID(), IfName: "eth0", Address: p, MAC: driver.MACFromIP(p.Addr()), DisableIPv6: true,
	}}
	if addr6 != "" {
		s.EP.Address6 = netip.MustParsePrefix(addr6)
		// as the engine's sandboxes: IPv6 off on new interfaces, which the
		// driver must turn on for the endpoint
		testutil.Must(tb, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
	}
	if err := h.Driver.Join(context.Background(), n, s.EP, s.Path); err != nil {
		tb.Fatalf("join %s to %q on %s: %v", ns, n.Name, h.NS, err)
	}
	return s
}

// Peer is the sandbox as other hosts program it.
func (s *Sandbox) Peer() overlay.Peer {
	return overlay.Peer{IP: s.EP.Address.Addr(), IP6: s.EP.Address6.Addr(), MAC: s.EP.MAC, VTEP: s.Host.VTEP}
}

// Mesh programs every sandbox as a peer on every other host that has a
// sandbox on the same network (by network ID), as the engine's store watch
// would. It returns the number of AddPeer calls.
func Mesh(tb testing.TB, sbs ...*Sandbox) int {
	tb.Helper()
	calls := 0
	for _, a := range sbs {
		for _, b := range sbs {
			if a.Host == b.Host || a.Net.ID != b.Net.ID {
				continue
			}
			if err := a.Host.Driver.AddPeer(context.Background(), a.Net, b.Peer()); err != nil {
				tb.Fatalf("add peer %v on %s: %v", b.Peer(), a.Host.NS, err)
			}
			calls++
		}
	}
	return calls
}

// Ping sends count pings from namespace ns to addr (1 s timeout each) with
// extra ping arguments, and returns ping's error and output.
func Ping(ns, addr string, count int, extra ...string) (string, error) {
	args := append([]string{"-n", "-q", "-c", strconv.Itoa(count), "-W", "1"}, extra...)
	return testutil.InNS(ns, "ping", append(args, addr)...)
}

// MustPing fails the test unless a ping from ns to addr gets through.
func MustPing(tb testing.TB, ns, addr string, extra ...string) {
	tb.Helper()
	var out string
	var err error
	for range 3 { // the first packet may wait for ARP
		if out, err = Ping(ns, addr, 1, extra...); err == nil {
			return
		}
	}
	tb.Fatalf("ping %s from %s %v: %v\n%s", addr, ns, extra, err, out)
}

// MustNotPing fails the test if a ping from ns to addr gets through.
func MustNotPing(tb testing.TB, ns, addr string, extra ...string) {
	tb.Helper()
	if out, err := Ping(ns, addr, 2, extra...); err == nil {
		tb.Fatalf("ping %s from %s %v got through, want unreachable\n%s", addr, ns, extra, out)
	}
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// PingLoss parses ping's summary: packets sent and received.
func PingLoss(out string) (sent, received int, err error) {
	m := pingStats.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("no ping summary in %q", out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, nil
}

// BackgroundPing starts `ping -i interval -c count` from ns to addr and
// returns a function that waits for it and returns packets sent and
// received.
func BackgroundPing(tb testing.TB, ns, addr string, interval time.Duration, count int) func() (sent, received int) {
	tb.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "ping", "-n", "-q", "-i", fmt.Sprintf("%.3f", interval.Seconds()),
		"-c", strconv.Itoa(count), "-W", "1", addr)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start ping: %v", err)
	}
	done := false
	tb.Cleanup(func() {
		if !done {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return func() (int, int) {
		tb.Helper()
		_ = cmd.Wait() // loss makes ping exit non-zero; the summary says how much
		done = true
		sent, received, err := PingLoss(out.String())
		if err != nil {
			tb.Fatal(err)
		}
		return sent, received
	}
}

// Iperf3 runs an iperf3 server in serverNS bound to addr and a client in
// clientNS for seconds, and returns what the receiver got in Gbit/s.
func Iperf3(tb testing.TB, serverNS, clientNS, addr string, seconds int) float64 {
	tb.Helper()
	srv := exec.Command("ip", "netns", "exec", serverNS, "iperf3", "-s", "-1", "-B", addr)
	var srvOut strings.Builder
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		tb.Fatalf("start iperf3 server: %v", err)
	}
	defer func() {
		_ = srv.Process.Kill() // gone already after one test (-1): harmless
		_ = srv.Wait()
	}()
	var out string
	var err error
	for try := 0; try < 50; try++ { // until the server listens
		out, err = testutil.InNS(clientNS, "iperf3", "-c", addr, "-t", strconv.Itoa(seconds), "-J")
		// iperf3 -J may exit 0 with the error in its JSON.
		if !strings.Contains(out, "unable to connect") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("iperf3 -c %s from %s: %v\n%s\nserver: %s", addr, clientNS, err, out, srvOut.String())
	}
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		tb.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	if res.Error != "" || res.End.SumReceived.BitsPerSecond <= 0 {
		tb.Fatalf("iperf3 -c %s from %s: no result (%s)\n%s\nserver: %s", addr, clientNS, res.Error, out, srvOut.String())
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}

// ThroughputResult compares sandbox-to-sandbox over the overlay with
// host-to-host over the underlay, both receiver Gbit/s (iperf3, one TCP
// stream), on the same machine in the same run.
type ThroughputResult struct {
	Underlay float64 // host namespace to host namespace (median of the rounds)
	Overlay  float64 // sandbox to sandbox through VXLAN (median of the rounds)
	Ratio    float64 // Overlay / Underlay; the target is >= 0.85
	Rounds   [][2]float64
}

func (r ThroughputResult) String() string {
	return fmt.Sprintf("underlay %.2f Gbit/s, overlay %.2f Gbit/s, ratio %.3f (medians; rounds underlay/overlay %v)",
		r.Underlay, r.Overlay, r.Ratio, r.Rounds)
}

// Throughput builds two hosts on an underlay of MTU 1500, one overlay
// network with a sandbox on each, and measures both paths with iperf3 -t
// seconds, alternating underlay and overlay for rounds rounds so that load
// from elsewhere on the machine hits both alike; it reports the medians.
func Throughput(tb testing.TB, seconds, rounds int) ThroughputResult {
	tb.Helper()
	u := testutil.NewUnderlay(tb, 1500)
	h1, h2 := NewHost(tb, u), NewHost(tb, u)
	id := NewID()
	n1, n2 := h1.Network(id, 4242, "10.231.0.0/24"), h2.Network(id, 4242, "10.231.0.0/24")
	h1.CreateNetwork(tb, n1)
	h2.CreateNetwork(tb, n2)
	a, b := h1.Join(tb, n1, "10.231.0.2/24"), h2.Join(tb, n2, "10.231.0.3/24")
	Mesh(tb, a, b)
	MustPing(tb, a.NS, b.Addr())
	var r ThroughputResult
	var under, over []float64
	for range max(rounds, 1) {
		ug := Iperf3(tb, h2.NS, h1.NS, h2.Addr, seconds)
		og := Iperf3(tb, b.NS, a.NS, b.Addr(), seconds)
		under, over = append(under, ug), append(over, og)
		r.Rounds = append(r.Rounds, [2]float64{round2(ug), round2(og)})
	}
	r.Underlay, r.Overlay = stats.Median(under), stats.Median(over)
	if r.Underlay > 0 {
		r.Ratio = r.Overlay / r.Underlay
	}
	return r
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
