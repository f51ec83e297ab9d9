package e2e

// Sandbox lifecycle safety (issue 12): a restart never cuts a live sandbox
// off, whatever mount namespace the daemon runs in; an address is never
// live twice after rm; the daemon never adopts its own network namespace.
// Daemons are started with nsenter --net (the test's mount namespace), ip
// netns exec and unshare -m --propagation slave (a new mount namespace per
// start, as systemd's PrivateMounts= gives one). Sandboxes that must survive
// a restart under the latter two run a process: their namespace files die
// with the old daemon's mount namespace, the namespaces live on in the
// processes.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// 50 `run -d` in a row on a daemon in a mount namespace of its own (ip netns
// exec, unshare) all succeed: creating a sandbox's namespaces does not
// depend on the mount namespace the daemon runs in. The bug this guards
// against came and went with daemon starts, so the 50 are made over two
// starts (25, restart, 25), and the first 25 must survive the restart.
func TestManyRunsInOwnMountNamespace(t *testing.T) {
	for _, mode := range []testutil.StartMode{testutil.StartIPNetns, testutil.StartUnshare} {
		t.Run(string(mode), func(t *testing.T) {
			_, d := hostMode(t, mode)
			d.MustTether("network", "create", "--subnet", "10.140.0.0/24", "many")
			var names, failed []string
			runs := func(from, to int) {
				for i := from; i < to; i++ {
					name := fmt.Sprintf("r%d", i)
					if out, err := d.Tether("run", "-d", "--name", name, "--network", "many", "--", "sleep", "600"); err != nil {
						failed = append(failed, fmt.Sprintf("%s: %v %s", name, err, strings.TrimSpace(out)))
						continue
					}
					reapProcesses(t, d, name)
					names = append(names, name)
				}
			}
			runs(0, 25)
			mustWarnOwnMountNS(t, d, true)
			restart(t, d)
			l := listed(t, d)
			for _, n := range names {
				if !l[n] {
					t.Errorf("sandbox %s is gone after the restart", n)
				}
			}
			runs(25, 50)
			if len(failed) > 0 {
				t.Errorf("%d of 50 runs failed; first: %s", len(failed), failed[0])
			}
			// exec works in sandboxes of both starts.
			for _, n := range []string{"r0", "r24", "r25", "r49"} {
				if !slices.Contains(names, n) {
					continue
				}
				if out, err := d.Tether("exec", n, "--", "hostname"); err != nil || strings.TrimSpace(out) != sandbox(t, d, n).Hostname {
					t.Errorf("exec hostname in %s: %v %q", n, err, out)
				}
			}
		})
	}
}

// mustWarnOwnMountNS checks that GET /info carries the daemon's warning
// about running in a mount namespace of its own exactly when it should.
func mustWarnOwnMountNS(t *testing.T, d *testutil.Daemon, want bool) {
	t.Helper()
	var info struct{ Warnings []string }
	lcGet(t, d, "/info", &info)
	got := slices.ContainsFunc(info.Warnings, func(w string) bool { return strings.Contains(w, "mount namespace of its own") })
	if got != want {
		t.Errorf("info warns of an own mount namespace: %v, want %v (warnings %q)", got, want, info.Warnings)
	}
}

// Three restarts in a row, each into a new mount namespace (nsenter for
// comparison), with 20 running sandboxes on two networks and two published
// ports: after each, every sandbox is listed, exec works in each, TCP works
// between sandboxes, by DNS name and through the published ports, and no
// link was deleted or recreated, on the host or inside a sandbox (same
// ifindexes).
func TestRestartsKeepSandboxes(t *testing.T) {
	forModes(t, func(t *testing.T, mode testutil.StartMode) {
		ns, d := hostMode(t, mode)
		if mode == testutil.StartNsenter {
			// The daemon shares the test's mount namespace.
			own, err := netns.IDOf("/proc/self/ns/mnt")
			if err != nil {
				t.Fatal(err)
			}
			if initial, known := netns.IsInitial("mnt", own); known {
				mustWarnOwnMountNS(t, d, !initial)
			}
		} else {
			mustWarnOwnMountNS(t, d, true)
		}
		out := outside(t, ns)
		d.MustTether("network", "create", "--subnet", "10.141.0.0/24", "ra")
		d.MustTether("network", "create", "--subnet", "10.142.0.0/24", "rb")
		// s0 and s1 serve HTTP, published on 8100 (ra) and 8101 (rb); s2 is
		// on both networks and is the client; the rest alternate.
		runDetached(t, d, "s0", "--network", "ra", "-p", "8100:80", "--", "python3", "-m", "http.server", "80")
		runDetached(t, d, "s1", "--network", "rb", "-p", "8101:80", "--", "python3", "-m", "http.server", "80")
		runDetached(t, d, "s2", "--network", "ra", "--network", "rb", "--", "sleep", "600")
		names := []string{"s0", "s1", "s2"}
		for i := 3; i < 20; i++ {
			name := fmt.Sprintf("s%d", i)
			runDetached(t, d, name, "--network", []string{"ra", "rb"}[i%2], "--", "sleep", "600")
			names = append(names, name)
		}
		s0, s1 := ip(t, d, "s0", "ra"), ip(t, d, "s1", "rb")

		inside := func() map[string]map[string]int {
			m := map[string]map[string]int{}
			for _, n := range names {
				links, err := sandboxLinks(d, n)
				if err != nil {
					t.Error(err)
					continue
				}
				m[n] = links
			}
			return m
		}
		traffic := func() {
			if err := httpGet(d, "s2", s0, 25); err != nil {
				t.Error(err)
			}
			if err := httpGet(d, "s2", s1, 25); err != nil {
				t.Error(err)
			}
			resolves(t, d, "s2", "s0", s0)
			mustGet(t, nil, out, urlOf(uplinkAddr, 8100))
			mustGet(t, nil, out, urlOf(uplinkAddr, 8101))
			mustGet(t, nil, ns, urlOf("127.0.0.1", 8100))
		}
		traffic()
		hostBefore, inBefore := hostLinks(t, ns), inside()
		if t.Failed() {
			t.FailNow()
		}
		for round := 1; round <= 3; round++ {
			restart(t, d)
			l := listed(t, d)
			for _, n := range names {
				if !l[n] {
					t.Errorf("restart %d: sandbox %s is not listed", round, n)
				}
			}
			if t.Failed() {
				t.FailNow() // the rest would only repeat it
			}
			if got := hostLinks(t, ns); !mapsEqual(got, hostBefore) {
				t.Errorf("restart %d: host links (name: ifindex) changed:\n got %v\nwant %v", round, got, hostBefore)
			}
			for n, got := range inside() { // exec works in every sandbox
				if !mapsEqual(got, inBefore[n]) {
					t.Errorf("restart %d: links in %s changed: %v -> %v", round, n, inBefore[n], got)
				}
			}
			traffic()
		}
	})
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// ipLink is one entry of `ip -j addr show`.
type ipLink struct {
	Name      string   `json:"ifname"`
	Flags     []string `json:"flags"`
	OperState string   `json:"operstate"`
	Master    string   `json:"master"`
	AddrInfo  []struct {
		Local string `json:"local"`
	} `json:"addr_info"`
}

// linksIn lists the links of the network namespace of a file (e.g.
// /proc/PID/ns/net) with their addresses.
func linksIn(nsPath string) ([]ipLink, error) {
	return ipAddrShow("nsenter", "--net="+nsPath, "ip", "-j", "addr", "show")
}

// linksOfHost lists the links of test namespace ns with their addresses.
func linksOfHost(t *testing.T, ns string) []ipLink {
	t.Helper()
	l, err := ipAddrShow("ip", "-n", ns, "-j", "addr", "show")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ipAddrShow(args ...string) ([]ipLink, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s: %v %s", strings.Join(args, " "), err, out)
	}
	var links []ipLink
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("decode %s: %v %s", strings.Join(args, " "), err, short(string(out)))
	}
	return links, nil
}

// findLink returns the link named name, or nil.
func findLink(links []ipLink, name string) *ipLink {
	for i := range links {
		if links[i].Name == name {
			return &links[i]
		}
	}
	return nil
}

// carries reports whether a link is up with carrier (it can pass traffic).
func (l *ipLink) carries() bool {
	return l != nil && slices.Contains(l.Flags, "UP") && !slices.Contains(l.Flags, "NO-CARRIER")
}

// holds reports whether any link has address addr.
func holds(links []ipLink, addr string) string {
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Local == addr {
				return l.Name
			}
		}
	}
	return ""
}

// holdNamespace starts, outside Tether, a process in network namespace
// netnsPath (nsenter --net) that serves HTTP on port 8000 and so keeps the
// namespace alive; it is killed by PID when the test ends. It returns the
// process's /proc/PID/ns/net.
func holdNamespace(t *testing.T, netnsPath string) string {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+netnsPath, "--", "python3", "-m", "http.server", "--bind", "0.0.0.0", "8000")
	cmd.Dir = t.TempDir()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
}

// rm -f of a sandbox whose network namespace a stray process holds (one the
// test started with nsenter, which Tether does not know): when rm answers,
// the host end of its veth is down and off the bridge, so the stray process
// is cut off (its HTTP server no longer answers on the old address); the
// address is not handed out again while the old veth has it, neither by
// next-fit (20 sandboxes created and removed on a /28 wrap around the
// subnet and reach it) nor to a static claim made right after rm; the
// daemon deletes the held veth itself soon after. Before that, the plain
// case: a sandbox re-created by name right after rm gets its sticky address.
func TestRemoveWithHeldNamespace(t *testing.T) {
	for _, mode := range []testutil.StartMode{testutil.StartNsenter, testutil.StartIPNetns} {
		t.Run(string(mode), func(t *testing.T) {
			ns, d := hostMode(t, mode)
			// .2-.14 for sandboxes: the next-fit allocator wraps within a dozen.
			d.MustTether("network", "create", "--subnet", "10.143.0.0/28", "held")

			runDetached(t, d, "quick", "--network", "held", "--", "sleep", "600")
			quickIP := ip(t, d, "quick", "held")
			d.MustTether("rm", "-f", "quick")
			runDetached(t, d, "quick", "--network", "held", "--", "sleep", "600")
			if got := ip(t, d, "quick", "held"); got != quickIP {
				t.Errorf("quick re-created right after rm got %s, want its sticky %s", got, quickIP)
			}
			d.MustTether("rm", "-f", "quick")
			runDetached(t, d, "probe", "--network", "held", "--", "sleep", "600")
			// Six long-lived fillers leave five addresses besides the
			// victim's to cycle through: the allocator wraps around to it
			// within about six creations, well before the daemon deletes
			// the held veth.
			for i := range 6 {
				d.MustTether("sandbox", "create", "--name", fmt.Sprintf("fill%d", i), "--network", "held")
			}

			// Next-fit allocation after rm.
			v := holdAndRemove(t, d, ns, "victim")
			reused, whileHeld := 0, 0
			for i := range 20 {
				if in, err := linksIn(v.held); err == nil && holds(in, v.ip) != "" {
					whileHeld++
				}
				name := fmt.Sprintf("n%d", i)
				d.MustTether("sandbox", "create", "--name", name, "--network", "held")
				if ip(t, d, name, "held") == v.ip {
					reused++
					v.mustNotHold(t, name)
				}
				d.MustTether("rm", name)
			}
			t.Logf("20 creations after rm, %d of them while the held veth still had %s; %d got that address", whileHeld, v.ip, reused)
			v.checkCutOff(t)
			v.waitGone(t, ns)

			// A static claim of the address right after rm: refused, or
			// granted only once the held veth is gone.
			v2 := holdAndRemove(t, d, ns, "victim2")
			if out, err := d.Tether("sandbox", "create", "--name", "claim", "--network", "held", "--ip", v2.ip); err == nil {
				v2.mustNotHold(t, "claim")
			} else {
				t.Logf("static claim of %s right after rm refused: %s", v2.ip, strings.TrimSpace(out))
			}
			v2.checkCutOff(t)
			v2.waitGone(t, ns)
			if mode == testutil.StartNsenter {
				checkNoLeaks(t, ns, d)
			}
		})
	}
}

// heldVictim is a removed sandbox whose namespace a stray process holds.
type heldVictim struct {
	name, ip, veth string
	held           string // /proc/PID/ns/net of the stray process
	// fetched is the outcome of an HTTP request to the stray server sent
	// from "probe" right after rm (it takes the connect timeout to fail,
	// so it runs while the test goes on).
	fetched chan string
}

// holdAndRemove runs sandbox name on network "held", has a stray process
// hold its namespace and serve HTTP there (reached from sandbox "probe"),
// removes the sandbox with rm -f, and checks that the stray process is cut
// off at once: host veth down and off the bridge (or gone), eth0 without
// carrier (or gone); an HTTP request to it is sent at once, its outcome
// checked by checkCutOff.
func holdAndRemove(t *testing.T, d *testutil.Daemon, ns, name string) heldVictim {
	t.Helper()
	runDetached(t, d, name, "--network", "held", "--", "sleep", "600")
	v := heldVictim{name: name, ip: ip(t, d, name, "held"), veth: sandbox(t, d, name).Networks["held"].HostIfName}
	v.held = holdNamespace(t, procNetNS(t, d, name))
	mustGet(t, d, "probe", urlOf(v.ip, 8000)) // the stray server answers while the sandbox exists
	if t.Failed() {
		t.FailNow()
	}
	d.MustTether("rm", "-f", name)
	if l := findLink(linksOfHost(t, ns), v.veth); l != nil && (slices.Contains(l.Flags, "UP") || l.Master != "") {
		t.Errorf("when rm -f %s answered, host veth %s was still up or on a bridge: flags %v master %q", name, v.veth, l.Flags, l.Master)
	}
	if in, err := linksIn(v.held); err != nil {
		t.Fatal(err)
	} else if l := findLink(in, "eth0"); l.carries() {
		t.Errorf("when rm -f %s answered, eth0 in the held namespace still had carrier: flags %v", name, l.Flags)
	}
	v.fetched = make(chan string, 1)
	go func() {
		body, code := get(d, "probe", urlOf(v.ip, 8000))
		if code == 0 {
			v.fetched <- body
		}
		close(v.fetched)
	}()
	return v
}

// checkCutOff fails the test when the stray process answered HTTP after rm.
func (v heldVictim) checkCutOff(t *testing.T) {
	t.Helper()
	if body, ok := <-v.fetched; ok {
		t.Errorf("after rm -f %s the stray process still answered on %s: %s", v.name, v.ip, short(body))
	}
}

// mustNotHold fails the test when the held namespace still has the
// victim's address although sandbox got it: the address is live twice.
func (v heldVictim) mustNotHold(t *testing.T, sandbox string) {
	t.Helper()
	in, err := linksIn(v.held)
	if err != nil {
		t.Fatal(err)
	}
	if dev := holds(in, v.ip); dev != "" {
		t.Errorf("%s got %s while %s in %s's held namespace still has it: the address is live twice", sandbox, v.ip, dev, v.name)
	}
}

// waitGone waits (bounded) until the daemon has deleted the held veth: eth0
// gone from the held namespace, the host end gone.
func (v heldVictim) waitGone(t *testing.T, ns string) {
	t.Helper()
	var in []ipLink
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if in, err = linksIn(v.held); err != nil || findLink(in, "eth0") == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if l := findLink(in, "eth0"); l != nil {
		t.Errorf("eth0 is still in %s's held namespace 10 s after rm: %+v", v.name, *l)
	}
	if l := findLink(linksOfHost(t, ns), v.veth); l != nil {
		t.Errorf("%s's host veth %s still exists 10 s after rm", v.name, v.veth)
	}
}

// Adopting the daemon's own network namespace, by its PID and by a path to
// it, is refused with a clear error (CLI and API: 400), and nothing changes
// in it: no link, no route (a wrong adoption would add eth0 and replace the
// default route of the host the daemon serves). The host here is the
// test's namespace; the real host's namespace and PID 1 are never tried.
func TestAdoptRefusesDaemonNamespace(t *testing.T) {
	for _, mode := range []testutil.StartMode{testutil.StartNsenter, testutil.StartIPNetns} {
		t.Run(string(mode), func(t *testing.T) {
			ns, d := hostMode(t, mode)
			testutil.Outside(t, ns) // a default route the adoption could replace
			d.MustTether("network", "create", "--subnet", "10.144.0.0/24", "adopt")
			// The premise: the daemon's PID is in ns.
			daemonNet := fmt.Sprintf("/proc/%d/ns/net", d.PID())
			if dn, hn := statOrFail(t, daemonNet), statOrFail(t, "/run/netns/"+ns); !os.SameFile(dn, hn) {
				t.Fatalf("daemon %d is not in namespace %s", d.PID(), ns)
			}
			const want = "daemon's own network namespace"
			a := newAPI(t, d)
			cli := func(args ...string) func() (bool, string) {
				return func() (bool, string) {
					out, err := d.Tether(append([]string{"sandbox", "create", "--network", "adopt"}, args...)...)
					return err != nil && strings.Contains(out, want), fmt.Sprintf("%v %q", err, out)
				}
			}
			post := func(req api.SandboxCreateRequest) func() (bool, string) {
				return func() (bool, string) {
					req.Networks = []api.NetworkAttach{{Network: "adopt"}}
					code, body := a.json("POST", "/tether/v1/sandboxes", req)
					return code == http.StatusBadRequest && strings.Contains(body, want), fmt.Sprintf("%d %s", code, body)
				}
			}
			for _, c := range []struct {
				name string
				try  func() (refused bool, detail string)
			}{
				{"tether sandbox create --pid DAEMON", cli("--name", "bypid", "--pid", itoa(d.PID()))},
				{"tether sandbox create --netns /run/netns/HOST", cli("--name", "bypath", "--netns", "/run/netns/"+ns)},
				{"POST Pid=DAEMON", post(api.SandboxCreateRequest{Name: "apipid", PID: d.PID()})},
				{"POST NetNS=/run/netns/HOST", post(api.SandboxCreateRequest{Name: "apipath", NetNS: "/run/netns/" + ns})},
			} {
				routes := testutil.Must(t, "ip", "-n", ns, "route")
				links := testutil.Must(t, "ip", "-n", ns, "-o", "link")
				if refused, detail := c.try(); !refused {
					t.Errorf("%s: %s; want a refusal (CLI error, API 400) with %q", c.name, detail, want)
				}
				if got := testutil.Must(t, "ip", "-n", ns, "route"); got != routes {
					t.Fatalf("%s changed the host's routes:\nbefore:\n%s\nafter:\n%s", c.name, routes, got)
				}
				if got := testutil.Must(t, "ip", "-n", ns, "-o", "link"); got != links {
					t.Fatalf("%s changed the host's links:\nbefore:\n%s\nafter:\n%s", c.name, links, got)
				}
			}
			if l := listed(t, d); len(l) != 0 {
				t.Errorf("refused adoptions left sandboxes: %v", l)
			}
		})
	}
}

func statOrFail(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// A sandbox whose network namespace is alive (its process runs in it) but
// whose namespace file cannot be bound again after a restart (it was
// unmounted and a directory put in its place) is kept untouched and marked
// degraded with a warning: its veth is the same link, its neighbour still
// reaches it, exec works (through its process's namespaces), and rm -f
// removes it, its veth and its file. (A sandbox without a process whose
// namespace file was deleted is reaped: TestNamespaceDeletedWhileStopped.)
func TestDegradedSandboxKept(t *testing.T) {
	ns, d := host(t) // the namespace files are visible to the test only under nsenter
	d.MustTether("network", "create", "--subnet", "10.145.0.0/24", "deg")
	runDetached(t, d, "lame", "--network", "deg", "--", "sleep", "600")
	runDetached(t, d, "peer", "--network", "deg", "--", "sleep", "600")
	sb := sandbox(t, d, "lame")
	ep := sb.Networks["deg"]
	idx := hostLinks(t, ns)[ep.HostIfName]
	d.Stop()
	if err := testutil.UnmountUnder(sb.NetNS); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(sb.NetNS); err != nil {
		t.Fatal(err)
	}
	// A directory with an entry: nothing can be bound over it, and neither
	// unlink nor rmdir removes it.
	if err := os.Mkdir(sb.NetNS, 0o700); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(sb.NetNS, "blocker")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}

	if l := listed(t, d); !l["lame"] || !l["peer"] {
		t.Fatalf("sandboxes after the restart: %v, want lame and peer", l)
	}
	h := sandboxHealth(t, d, "lame")
	if !h.Degraded || !slices.ContainsFunc(h.Warnings, func(w string) bool { return strings.Contains(w, "network namespace file") }) {
		t.Errorf("lame: Degraded=%v Warnings=%q; want degraded with a warning about its network namespace file", h.Degraded, h.Warnings)
	}
	if h := sandboxHealth(t, d, "peer"); h.Degraded || len(h.Warnings) > 0 {
		t.Errorf("peer: Degraded=%v Warnings=%q; want neither", h.Degraded, h.Warnings)
	}
	if got := sandbox(t, d, "lame").Networks["deg"]; got == nil || got.IPAddress != ep.IPAddress || got.HostIfName != ep.HostIfName {
		t.Errorf("lame's endpoint: %+v, want %+v", got, ep)
	}
	if got := hostLinks(t, ns)[ep.HostIfName]; got != idx {
		t.Errorf("lame's host veth %s: ifindex %d -> %d (0: gone)", ep.HostIfName, idx, got)
	}
	lcMustPing(t, d, "peer", ep.IPAddress.String())
	if got, err := d.Tether("exec", "lame", "--", "hostname"); err != nil || strings.TrimSpace(got) != sb.Hostname {
		t.Errorf("exec in the degraded sandbox: %v %q, want hostname %s", err, got, sb.Hostname)
	}

	// rm -f: the directory is emptied first, so that removing the path is
	// only a question of whether rm tries.
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	d.MustTether("rm", "-f", "lame")
	lcMustFail(t, d, "not found", "sandbox", "inspect", "lame")
	if _, err := os.Lstat(sb.NetNS); err == nil {
		t.Errorf("rm -f left %s", sb.NetNS)
	}
	checkNoLeaks(t, ns, d) // lame's veth is gone (bounded wait inside)
	if _, ok := hostLinks(t, ns)[ep.HostIfName]; ok {
		t.Errorf("lame's veth %s outlived rm -f", ep.HostIfName)
	}
}
