package clustersim

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/driver/overlay"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// The smoke run of issue 21.
const (
	smokeAgents   = 20
	smokePerAgent = 3
	smokeDaemons  = 2
	smokeTTL      = 3 * time.Second
	smokeNetwork  = "smoke"
	// converge bounds every wait for the cluster to agree.
	converge = 30 * time.Second
)

var smokeSubnet = netip.MustParsePrefix("10.123.0.0/16")

// TestClusterSmoke is the smoke run of issue 21, under every daemon start
// mode: 20 simulated hosts (the real control plane, fake datapaths) and 2
// real daemons in one cluster on one etcd. A real daemon creates an
// overlay network; each agent attaches 3 endpoints and each daemon makes 2
// sandboxes. Then: the agents and both daemons agree on the network; every
// agent's datapath holds exactly the other hosts' endpoints; each daemon's
// VXLAN device holds exactly one FDB entry and one permanent neighbour
// entry per remote endpoint, and its VXLAN guard exactly the live nodes'
// addresses; a sandbox pings and resolves one on the other daemon (real
// traffic over the underlay) and resolves a simulated one (DNS only:
// nothing is ever sent to a simulated endpoint, whose VTEP in
// 198.19.0.0/16 is configured nowhere). Then two agents withdraw an
// endpoint, a daemon removes a sandbox and an agent dies (its lease
// expires): every datapath, fake and real, loses exactly those entries.
// Last, no namespace and no process of the run is left. As root:
//
//	TETHER_E2E=1 go test ./bench/cluster -run TestClusterSmoke -v
func TestClusterSmoke(t *testing.T) {
	for _, mode := range testutil.StartModes() {
		t.Run(string(mode), func(t *testing.T) { clusterSmoke(t, mode) })
	}
}

// smokeRun is one smoke run's cluster: the real daemons, the agents, and
// every endpoint on the network by ID, as peers must program it.
type smokeRun struct {
	r      *Real
	agents []*Agent
	tr     *Tracker
	net    cluster.NetworkRecord
	eps    map[string]Entry
	sims   map[string]cluster.EndpointRecord // the agents' endpoints (a subset of eps)
	nodes  []string                          // the daemons' node IDs
	dead   map[string]bool                   // node IDs of killed agents
}

func clusterSmoke(t *testing.T, mode testutil.StartMode) {
	start := time.Now()
	s := &smokeRun{eps: map[string]Entry{}, sims: map[string]cluster.EndpointRecord{}, dead: map[string]bool{}}
	leftovers := &leftovers{}
	t.Cleanup(func() { leftovers.check(t) }) // first registered: runs after every other cleanup
	s.r = StartReal(t, smokeDaemons, smokeTTL, mode)
	leftovers.note(t, s.r)
	for i := range smokeDaemons {
		id, err := s.r.NodeID(i)
		if err != nil {
			t.Fatal(err)
		}
		s.nodes = append(s.nodes, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s.startAgents(t, ctx)
	t.Logf("%s: etcd, %d daemons and %d agents up in %v", mode, smokeDaemons, smokeAgents, time.Since(start).Round(time.Millisecond))

	s.createNetwork(t, ctx)
	s.attach(t, ctx)
	t.Logf("%s: %d endpoints attached after %v", mode, len(s.eps), time.Since(start).Round(time.Millisecond))
	s.checkConverged(t)
	s.checkTraffic(t)

	// churn: withdrawals, a removed sandbox, a dead host
	gone := s.churn(t, ctx)
	s.checkConverged(t)
	s.checkTraffic(t)
	for _, name := range gone {
		if a, err := resolve(s.r.C.D[0], "real0a", name); err == nil {
			t.Errorf("real0a still resolves %s (gone) to %s", name, a)
		}
	}
	t.Logf("%s: %d endpoints left after the churn; run took %v", mode, len(s.eps), time.Since(start).Round(time.Millisecond))
}

// startAgents starts the simulated hosts on the daemons' etcd, under the
// daemons' key prefix: one cluster.
func (s *smokeRun) startAgents(t *testing.T, ctx context.Context) {
	t.Helper()
	s.tr = NewTracker(smokeAgents - 1 + smokeDaemons)
	cfg := AgentConfig{Etcd: s.r.Etcd(), Prefix: s.r.Prefix(), TTL: smokeTTL, Counts: &Counts{},
		Tracker: s.tr, RunID: "smk-" + testutil.Suffix(),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	t.Cleanup(func() {
		for _, a := range s.agents {
			a.Kill()
		}
	})
	for i := range smokeAgents {
		a, err := StartAgent(ctx, i, cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.agents = append(s.agents, a)
	}
}

// createNetwork has daemon 0 create the overlay network and checks that
// the store's record, both daemons and every agent agree on it.
func (s *smokeRun) createNetwork(t *testing.T, ctx context.Context) {
	t.Helper()
	s.r.C.D[0].MustTether("network", "create", "-d", "overlay", "--subnet", smokeSubnet.String(), smokeNetwork)
	id, err := s.r.NetworkID(0, smokeNetwork)
	if err != nil {
		t.Fatal(err)
	}
	nets, err := s.agents[0].cl.Networks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		if n.ID == id {
			s.net = n
		}
	}
	if s.net.ID == "" || s.net.Name != smokeNetwork || s.net.Driver != "overlay" || s.net.Subnet != smokeSubnet || s.net.VNI < 1 {
		t.Fatalf("the store's record of network %s (%.12s): %+v; records: %+v", smokeNetwork, id, s.net, nets)
	}
	waitUntil(t, "both daemons and every agent install the network", converge, func() error {
		for i := range smokeDaemons {
			if got, _ := s.r.NetworkID(i, smokeNetwork); got != id {
				return fmt.Errorf("daemon %d: network %s has ID %q, want %.12s", i, smokeNetwork, got, id)
			}
			if sub, err := s.r.NetworkSubnet(i, smokeNetwork); sub != smokeSubnet {
				return fmt.Errorf("daemon %d: network %s has subnet %v (%v), want %v", i, smokeNetwork, sub, err, smokeSubnet)
			}
			if _, _, err := KernelPeers(s.r.C.Hosts[i].NS, overlay.VxlanName(s.net.VNI)); err != nil {
				return fmt.Errorf("daemon %d: %w", i, err)
			}
		}
		for _, a := range s.agents {
			if !a.DP.HasNetwork(id) {
				return fmt.Errorf("agent %d has not installed network %.12s", a.Index, id)
			}
		}
		return nil
	})
}

// attach attaches smokePerAgent endpoints on every agent and makes 2
// sandboxes on every daemon (real0a, real0b, real1a, ...).
func (s *smokeRun) attach(t *testing.T, ctx context.Context) {
	t.Helper()
	for _, a := range s.agents {
		for j := range smokePerAgent {
			rec, err := a.Attach(ctx, s.net, fmt.Sprintf("sim%02d-%d", a.Index, j), s.tr)
			if err != nil {
				t.Fatal(err)
			}
			s.sims[rec.ID] = rec
			s.eps[rec.ID] = entryOf(rec)
		}
	}
	for i := range smokeDaemons {
		for _, suffix := range []string{"a", "b"} {
			id, e := s.r.Sandbox(t, i, fmt.Sprintf("real%d%s", i, suffix), smokeNetwork, s.net.ID)
			if !smokeSubnet.Contains(e.Address.Addr()) {
				t.Errorf("sandbox %s got %v, outside %v", e.Name, e.Address, smokeSubnet)
			}
			s.eps[id] = e
		}
	}
}

// remoteOf is what a host with node ID node must program: every live
// endpoint of another node.
func (s *smokeRun) remoteOf(node string) map[string]Entry {
	out := map[string]Entry{}
	for id, e := range s.eps {
		if e.Node != node {
			out[id] = e
		}
	}
	return out
}

// checkConverged waits until every live agent's fake datapath and both
// daemons' VXLAN devices hold exactly the remote endpoints, and both
// daemons' VXLAN guards exactly the live nodes' addresses; it fails with
// the differences when they do not within converge.
func (s *smokeRun) checkConverged(t *testing.T) {
	t.Helper()
	waitUntil(t, "every live agent programs exactly the other hosts' endpoints", converge, func() error {
		for _, a := range s.agents {
			if s.dead[a.Node.ID] {
				continue
			}
			if err := diffEntries(a.DP.Peers(), s.remoteOf(a.Node.ID)); err != nil {
				return fmt.Errorf("agent %d: %w", a.Index, err)
			}
		}
		return nil
	})
	waitUntil(t, "each daemon's VXLAN device holds exactly the other hosts' endpoints", converge, func() error {
		for i := range smokeDaemons {
			fdb, neigh, err := KernelPeers(s.r.C.Hosts[i].NS, overlay.VxlanName(s.net.VNI))
			if err != nil {
				return fmt.Errorf("daemon %d: %w", i, err)
			}
			wantFDB, wantNeigh := kernelEntries(s.remoteOf(s.nodes[i]))
			if err := diffCounts("FDB entries", fdb, wantFDB); err != nil {
				return fmt.Errorf("daemon %d: %w", i, err)
			}
			if err := diffCounts("permanent neighbour entries", neigh, wantNeigh); err != nil {
				return fmt.Errorf("daemon %d: %w", i, err)
			}
		}
		return nil
	})
	waitUntil(t, "each daemon's VXLAN guard holds exactly the live nodes' addresses", converge, func() error {
		want := map[netip.Addr]int{}
		for i := range smokeDaemons {
			want[s.r.VTEP(i)] = 1
		}
		for _, a := range s.agents {
			if !s.dead[a.Node.ID] {
				want[a.Node.Addr] = 1
			}
		}
		for i := range smokeDaemons {
			got, err := GuardNodes(s.r.C.Hosts[i].NS)
			if err != nil {
				return fmt.Errorf("daemon %d: %w", i, err)
			}
			if err := diffCounts("guarded node addresses", got, want); err != nil {
				return fmt.Errorf("daemon %d: %w", i, err)
			}
		}
		return nil
	})
}

// checkTraffic: real0a pings real1a by the address name resolution gives,
// which must be real1a's; real1a does the same back; real0a resolves a
// simulated endpoint (the first live one by name) to its address without
// sending it anything.
func (s *smokeRun) checkTraffic(t *testing.T) {
	t.Helper()
	byName := map[string]Entry{}
	for _, e := range s.eps {
		byName[e.Name] = e
	}
	for _, p := range [][2]int{{0, 1}, {1, 0}} {
		from, to := fmt.Sprintf("real%da", p[0]), fmt.Sprintf("real%da", p[1])
		d, want := s.r.C.D[p[0]], byName[to].Address.Addr()
		var got netip.Addr
		waitUntil(t, from+" resolves "+to, converge, func() (err error) {
			got, err = resolve(d, from, to)
			return err
		})
		if got != want {
			t.Errorf("%s resolves %s to %s, want %s", from, to, got, want)
		}
		waitUntil(t, from+" pings "+to, converge, func() error {
			out, err := d.Tether("exec", from, "--", "ping", "-c1", "-W1", want.String())
			if err != nil {
				return fmt.Errorf("ping %s: %v: %s", want, err, out)
			}
			return nil
		})
	}
	names := slices.Sorted(maps.Keys(byName))
	for _, name := range names {
		e := byName[name]
		if !strings.HasPrefix(name, "sim") {
			continue
		}
		if got, err := resolve(s.r.C.D[0], "real0a", name); err != nil || got != e.Address.Addr() {
			t.Errorf("real0a resolves %s to %v (%v), want %v", name, got, err, e.Address.Addr())
		}
		break
	}
}

// churn: agents 1 and 2 withdraw their first endpoint, daemon 1 removes
// real1b, agent 3 is killed (nothing withdrawn; its lease expires). It
// returns the names of the endpoints gone.
func (s *smokeRun) churn(t *testing.T, ctx context.Context) []string {
	t.Helper()
	var gone []string
	for _, i := range []int{1, 2} {
		a := s.agents[i]
		rec := s.simNamed(t, fmt.Sprintf("sim%02d-0", i))
		if err := a.cl.Allocator(nil).Withdraw(ctx, rec, false); err != nil {
			t.Fatalf("agent %d: withdraw %s: %v", i, rec.SandboxName, err)
		}
		delete(s.eps, rec.ID)
		gone = append(gone, rec.SandboxName)
	}
	for id, e := range s.eps {
		if e.Name == "real1b" {
			s.r.C.D[1].MustTether("sandbox", "rm", "real1b")
			delete(s.eps, id)
			gone = append(gone, e.Name)
		}
	}
	victim := s.agents[3]
	victim.Kill()
	s.dead[victim.Node.ID] = true
	for id, e := range s.eps {
		if e.Node == victim.Node.ID {
			delete(s.eps, id)
			gone = append(gone, e.Name)
		}
	}
	return gone
}

func (s *smokeRun) simNamed(t *testing.T, name string) cluster.EndpointRecord {
	t.Helper()
	for _, r := range s.sims {
		if r.SandboxName == name {
			return r
		}
	}
	t.Fatalf("no simulated endpoint %s", name)
	return cluster.EndpointRecord{}
}

// kernelEntries is the FDB and neighbour entries that eps need: per
// endpoint one of each.
func kernelEntries(eps map[string]Entry) (map[FDB]int, map[Neigh]int) {
	fdb, neigh := map[FDB]int{}, map[Neigh]int{}
	for _, e := range eps {
		fdb[FDB{MAC: canonicalMAC(e.MAC), VTEP: e.VTEP}]++
		neigh[Neigh{IP: e.Address.Addr(), MAC: canonicalMAC(e.MAC)}]++
	}
	return fdb, neigh
}

// diffEntries lists what got lacks, has more, or has otherwise than want.
func diffEntries(got, want map[string]Entry) error {
	var d []string
	for _, id := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[id]; !ok {
			d = append(d, fmt.Sprintf("missing %s %+v", want[id].Name, want[id]))
		} else if g != want[id] {
			d = append(d, fmt.Sprintf("%s is %+v, want %+v", want[id].Name, g, want[id]))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[id]; !ok {
			d = append(d, fmt.Sprintf("unexpected %s %+v", got[id].Name, got[id]))
		}
	}
	return differences(fmt.Sprintf("%d peers, want %d", len(got), len(want)), d)
}

// diffCounts compares the entries got (as the kernel lists them) with the
// multiset want.
func diffCounts[K comparable](what string, got []K, want map[K]int) error {
	have := map[K]int{}
	for _, k := range got {
		have[k]++
	}
	var d []string
	for k, n := range want {
		if have[k] != n {
			d = append(d, fmt.Sprintf("%+v listed %d times, want %d", k, have[k], n))
		}
	}
	for k, n := range have {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("unexpected %+v (%d times)", k, n))
		}
	}
	slices.Sort(d)
	return differences(fmt.Sprintf("%d %s, want %d", len(got), what, len(want)), d)
}

func differences(head string, d []string) error {
	if len(d) == 0 {
		return nil
	}
	if len(d) > 8 {
		d = append(d[:8], fmt.Sprintf("... %d more", len(d)-8))
	}
	return fmt.Errorf("%s:\n\t%s", head, strings.Join(d, "\n\t"))
}

// resolve looks name up inside sandbox from (getent hosts: the sandbox's
// resolv.conf, so the daemon's DNS server).
func resolve(d *testutil.Daemon, from, name string) (netip.Addr, error) {
	out, err := d.Tether("exec", from, "--", "getent", "hosts", name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("getent hosts %s in %s: %v: %s", name, from, err, out)
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return netip.Addr{}, fmt.Errorf("getent hosts %s in %s: empty answer", name, from)
	}
	return netip.ParseAddr(f[0])
}

// waitUntil polls check every 50 ms until it returns nil; after limit it
// fails the test with check's last error.
func waitUntil(t *testing.T, what string, limit time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leftovers checks, after every other cleanup of a run, that none of its
// namespaces is listed by `ip netns` and none of its daemons and etcd
// still runs.
type leftovers struct {
	namespaces []string
	procs      map[int]uint64 // PID -> start time
}

func (l *leftovers) note(t *testing.T, r *Real) {
	t.Helper()
	l.namespaces = append([]string{r.C.U.NS, r.C.Etcd.NS}, l.namespaces...)
	l.procs = map[int]uint64{}
	for i, h := range r.C.Hosts {
		l.namespaces = append(l.namespaces, h.NS)
		l.noteProc(t, r.C.D[i].PID())
	}
	id, err := netns.IDOf("/run/netns/" + r.C.Etcd.NS)
	if err != nil {
		t.Fatal(err)
	}
	pid := netns.FindProcessIn("net", id)
	if pid == 0 {
		t.Fatalf("no process in etcd's namespace %s", r.C.Etcd.NS)
	}
	l.noteProc(t, pid)
}

func (l *leftovers) noteProc(t *testing.T, pid int) {
	t.Helper()
	st, err := testutil.ReadProcStat(pid)
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	l.procs[pid] = st.StartTime
}

func (l *leftovers) check(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Errorf("ip netns list: %v: %s", err, out)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			listed[f[0]] = true
		}
	}
	for _, ns := range l.namespaces {
		if listed[ns] {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	for pid, started := range l.procs {
		if st, err := testutil.ReadProcStat(pid); err == nil && st.StartTime == started {
			t.Errorf("process %d (a daemon or etcd) still runs", pid)
		}
	}
}
