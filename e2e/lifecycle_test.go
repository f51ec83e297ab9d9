package e2e

// Crash safety and stale state (docs/lifecycle.md). The daemon is killed
// with SIGKILL at every fault point of network creation and removal, sandbox
// creation, attach, detach and removal (TETHER_TEST_FAULT), and with kill -9
// in the middle of 200 concurrent attaches; after a restart nothing it owns
// may be left over, no address may be lost or given twice, and the
// operation must work when tried again, with traffic.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/testutil"
)

// crashAt restarts the daemon with a fault point armed, runs op (which must
// reach the point, so the daemon kills itself and op fails), and starts the
// daemon again without the fault.
func crashAt(t *testing.T, d *testutil.Daemon, point string, op ...string) {
	t.Helper()
	d.Stop()
	d.Env = []string{engine.FaultEnv + "=" + point}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := d.Tether(op...); err == nil {
		t.Fatalf("tether %s succeeded although the daemon was to die at %s:\n%s", strings.Join(op, " "), point, out)
	}
	if !d.WaitExit(30 * time.Second) {
		t.Fatalf("daemon still runs after tether %s; fault %s not reached", strings.Join(op, " "), point)
	}
	if log := d.Log(); !strings.Contains(log, "test fault injected at "+point) {
		t.Fatalf("the daemon did not die at %s:\n%s", point, log)
	}
	d.Env = nil
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
}

// lcNetwork is the part of a Docker network listing the checks use.
type lcNetwork struct {
	Name    string
	ID      string `json:"Id"`
	Driver  string
	Options map[string]string
}

func lcGet(t *testing.T, d *testutil.Daemon, path string, v any) {
	t.Helper()
	code, body := newAPI(t, d).call("GET", path, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// ownedLinks lists the host links carrying Tether's marker: name -> alias.
func ownedLinks(t *testing.T, ns string) map[string]string {
	t.Helper()
	// stdout only, and again when iproute2 says on stderr that the dump was
	// interrupted ("Dump was interrupted and may be inconsistent."): links
	// change under it while a restarted daemon cleans up.
	var out []byte
	var err error
	var stderr bytes.Buffer
	for range 5 {
		stderr.Reset()
		cmd := exec.Command("ip", "-n", ns, "-j", "link", "show")
		cmd.Stderr = &stderr
		if out, err = cmd.Output(); err == nil && !strings.Contains(stderr.String(), "interrupted") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("ip link: %v %s", err, stderr.String())
	}
	var links []struct {
		Name  string `json:"ifname"`
		Alias string `json:"ifalias"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatalf("ip -j link: %v (stderr %q)", err, stderr.String())
	}
	got := map[string]string{}
	for _, l := range links {
		if strings.HasPrefix(l.Alias, "tether:") {
			got[l.Name] = l.Alias
		}
	}
	return got
}

// checkNoLeaks compares the daemon's records with the kernel and the disk:
// the links marked as Tether's are exactly the bridges of its networks and
// the host ends of its endpoints; the namespace files and mounts under
// exec-root are exactly those of its sandboxes; every sandbox file directory
// has a sandbox; no address is held by two endpoints.
func checkNoLeaks(t *testing.T, ns string, d *testutil.Daemon) {
	t.Helper()
	var nets []lcNetwork
	lcGet(t, d, "/networks", &nets)
	var sbs []api.Sandbox
	lcGet(t, d, "/tether/v1/sandboxes", &sbs)

	want := map[string]string{}
	for _, n := range nets {
		if n.Driver == "bridge" {
			br := n.Options[engine.OptBridgeName]
			if br == "" {
				br = "tth-" + n.ID[:11]
			}
			want[br] = "tether:" + n.ID
		}
	}
	held := map[string]string{}
	ids := map[string]bool{}
	for _, sb := range sbs {
		ids[sb.ID] = true
		for name, ep := range sb.Networks {
			if ep.HostIfName != "" {
				want[ep.HostIfName] = "tether:" + ep.EndpointID
			}
			if !ep.IPAddress.IsValid() {
				continue
			}
			key := name + " " + ep.IPAddress.String()
			if other, dup := held[key]; dup {
				t.Errorf("address %s on %s held by %s and %s", ep.IPAddress, name, other, sb.Name)
			}
			held[key] = sb.Name
		}
	}
	// A removed sandbox's veths go with its namespace, which the kernel
	// frees in the background: allow it a few seconds.
	got := ownedLinks(t, ns)
	for deadline := time.Now().Add(5 * time.Second); !maps.Equal(got, want) && time.Now().Before(deadline); got = ownedLinks(t, ns) {
		time.Sleep(50 * time.Millisecond)
	}
	if !maps.Equal(got, want) {
		t.Errorf("links marked as Tether's:\n got %v\nwant %v", got, want)
	}

	exec := filepath.Join(d.Dir, "exec")
	nsDir := filepath.Join(exec, "ns")
	entries, err := os.ReadDir(nsDir)
	if err != nil {
		t.Fatal(err)
	}
	wantMounts := []string{nsDir}
	for _, e := range entries {
		wantMounts = append(wantMounts, filepath.Join(nsDir, e.Name()))
		id, kind, _ := strings.Cut(e.Name(), ".")
		if !(e.Name() == "host.net" || ids[id] && (kind == "net" || kind == "mnt" || kind == "uts")) {
			t.Errorf("namespace file %s belongs to no sandbox", e.Name())
		}
	}
	for _, sb := range sbs {
		if _, err := os.Stat(sb.NetNS); err != nil {
			t.Errorf("sandbox %s: %v", sb.Name, err)
		}
	}
	gotMounts := slices.Compact(slices.Sorted(slices.Values(testutil.Mounted(exec))))
	slices.Sort(wantMounts)
	if !slices.Equal(gotMounts, wantMounts) {
		t.Errorf("mounts under %s:\n got %v\nwant %v", exec, gotMounts, wantMounts)
	}
	dirs, _ := os.ReadDir(filepath.Join(exec, "sandboxes"))
	for _, e := range dirs {
		if !ids[e.Name()] {
			t.Errorf("sandbox directory %s belongs to no sandbox", e.Name())
		}
	}
}

func lcMustFail(t *testing.T, d *testutil.Daemon, want string, args ...string) {
	t.Helper()
	out, err := d.Tether(args...)
	if err == nil || !strings.Contains(out, want) {
		t.Errorf("tether %s: %v %s; want an error with %q", strings.Join(args, " "), err, out, want)
	}
}

func lcMustPing(t *testing.T, d *testutil.Daemon, from, to string) {
	t.Helper()
	if !ping(d, from, to) {
		t.Errorf("%s cannot ping %s", from, to)
	}
}

// faultCase is one fault point: setup runs on a host with network "app"
// (10.77.0.0/24) and sandbox "pa" (10.77.0.2); op is the command the daemon
// dies in; after checks the state after the restart and retries.
type faultCase struct {
	name  string
	point string
	setup func(t *testing.T, d *testutil.Daemon)
	op    []string
	after func(t *testing.T, d *testutil.Daemon)
}

const (
	crashBridge = "brcrash"
	crashSubnet = "10.78.0.0/24"
)

var createCrashNet = []string{"network", "create", "--subnet", crashSubnet, "-o", engine.OptBridgeName + "=" + crashBridge, "crash"}

// lcUsable: two sandboxes on the network reach each other.
func lcUsable(t *testing.T, d *testutil.Daemon, network string) {
	t.Helper()
	d.MustTether("sandbox", "create", "--name", "u1", "--network", network)
	d.MustTether("sandbox", "create", "--name", "u2", "--network", network)
	lcMustPing(t, d, "u1", ip(t, d, "u2", network))
}

func bOnApp(t *testing.T, d *testutil.Daemon) {
	d.MustTether("sandbox", "create", "--name", "vb", "--network", "app")
}

// claimB: 10.77.0.3, which b held or the failed operation took, is free:
// a static claim of it succeeds and the new sandbox has traffic.
func claimB(t *testing.T, d *testutil.Daemon) {
	t.Helper()
	d.MustTether("sandbox", "create", "--name", "nc", "--network", "app", "--ip", "10.77.0.3")
	lcMustPing(t, d, "pa", "10.77.0.3")
}

var faultCases = []faultCase{{
	point: "network.create.after-bridge",
	op:    createCrashNet,
	after: func(t *testing.T, d *testutil.Daemon) {
		lcMustFail(t, d, "not found", "network", "inspect", "crash")
		d.MustTether(createCrashNet...) // same name, bridge name and subnet
		lcUsable(t, d, "crash")
	},
}, {
	point: "network.create.after-commit",
	op:    createCrashNet,
	after: func(t *testing.T, d *testutil.Daemon) {
		lcMustFail(t, d, "already exists", createCrashNet...) // it was created
		lcUsable(t, d, "crash")
	},
}, {
	point: "network.remove.after-bridge",
	setup: func(t *testing.T, d *testutil.Daemon) { d.MustTether(createCrashNet...) },
	op:    []string{"network", "rm", "crash"},
	after: func(t *testing.T, d *testutil.Daemon) {
		// Not removed: the record is the truth and its bridge is back.
		d.MustTether("network", "inspect", "crash")
		d.MustTether("network", "rm", "crash")
		d.MustTether(createCrashNet...)
		lcUsable(t, d, "crash")
	},
}, {
	point: "sandbox.create.after-netns",
	op:    []string{"sandbox", "create", "--name", "vb", "--network", "app"},
	after: func(t *testing.T, d *testutil.Daemon) {
		lcMustFail(t, d, "not found", "sandbox", "inspect", "vb")
		d.MustTether("sandbox", "create", "--name", "vb", "--network", "app", "--ip", "10.77.0.3")
		lcMustPing(t, d, "pa", "10.77.0.3")
	},
}, {
	name:  "attach.after-reserve/new-sandbox",
	point: "attach.after-reserve",
	op:    []string{"sandbox", "create", "--name", "vb", "--network", "app"},
	after: func(t *testing.T, d *testutil.Daemon) {
		// The address was taken in memory only; nothing in the kernel.
		lcMustFail(t, d, "not found", "sandbox", "inspect", "vb")
		d.MustTether("sandbox", "create", "--name", "vb", "--network", "app", "--ip", "10.77.0.3")
		lcMustPing(t, d, "pa", "10.77.0.3")
	},
}, {
	name:  "attach.after-publish/new-sandbox",
	point: "attach.after-publish",
	op:    []string{"sandbox", "create", "--name", "vb", "--network", "app", "-p", "127.0.0.1:18777:80"},
	after: func(t *testing.T, d *testutil.Daemon) {
		// The port was held by the daemon that died and mapped in the
		// firewall: both are free again, and the same create works.
		lcMustFail(t, d, "not found", "sandbox", "inspect", "vb")
		d.MustTether("sandbox", "create", "--name", "vb", "--network", "app", "--ip", "10.77.0.3", "-p", "127.0.0.1:18777:80")
		lcMustPing(t, d, "pa", "10.77.0.3")
	},
}, {
	// A bridge attach without ports is recorded beside the join
	// (engine/early.go): a crash after the join finds the endpoint
	// recorded, and the start keeps it, as after the commit. (An attach
	// with ports is recorded only at the commit: after-publish above.)
	name:  "attach.after-join/new-sandbox",
	point: "attach.after-join",
	op:    []string{"sandbox", "create", "--name", "vb", "--network", "app"},
	after: func(t *testing.T, d *testutil.Daemon) {
		if got := ip(t, d, "vb", "app"); got != "10.77.0.3" {
			t.Errorf("vb has %s, want 10.77.0.3", got)
		}
		lcMustPing(t, d, "pa", "10.77.0.3")
		lcMustPing(t, d, "vb", "10.77.0.2")
		lcMustFail(t, d, "in use", "sandbox", "create", "--name", "vb", "--network", "app")
	},
}, {
	name:  "attach.after-join/connect",
	point: "attach.after-join",
	setup: func(t *testing.T, d *testutil.Daemon) {
		d.MustTether("network", "create", "--subnet", "10.79.0.0/24", "more")
		d.MustTether("sandbox", "create", "--name", "vb", "--network", "more")
	},
	op: []string{"network", "connect", "app", "vb"},
	after: func(t *testing.T, d *testutil.Daemon) {
		if sb := sandbox(t, d, "vb"); len(sb.Networks) != 2 || sb.Networks["more"] == nil || sb.Networks["app"] == nil {
			t.Errorf("vb's networks after the crash: %v, want app and more", slices.Collect(maps.Keys(sb.Networks)))
		}
		lcMustPing(t, d, "pa", ip(t, d, "vb", "app"))
		// The recorded endpoint is an ordinary one: disconnect, connect
		// again, rm, then network rm (no "active endpoints" left).
		d.MustTether("network", "disconnect", "app", "vb")
		d.MustTether("network", "connect", "--ip", "10.77.0.3", "app", "vb")
		lcMustPing(t, d, "pa", "10.77.0.3")
		d.MustTether("rm", "vb")
		d.MustTether("network", "rm", "more")
	},
}, {
	point: "attach.after-commit",
	op:    []string{"sandbox", "create", "--name", "vb", "--network", "app"},
	after: func(t *testing.T, d *testutil.Daemon) {
		if got := ip(t, d, "vb", "app"); got != "10.77.0.3" {
			t.Errorf("vb has %s, want 10.77.0.3", got)
		}
		lcMustPing(t, d, "pa", "10.77.0.3")
		lcMustPing(t, d, "vb", "10.77.0.2")
	},
}, {
	point: "detach.after-leave",
	setup: bOnApp,
	op:    []string{"network", "disconnect", "app", "vb"},
	after: func(t *testing.T, d *testutil.Daemon) {
		// Not committed: b is still connected, and its endpoint is rebuilt.
		lcMustPing(t, d, "pa", ip(t, d, "vb", "app"))
		d.MustTether("network", "disconnect", "app", "vb")
		claimB(t, d)
	},
}, {
	point: "detach.after-commit",
	setup: bOnApp,
	op:    []string{"network", "disconnect", "app", "vb"},
	after: func(t *testing.T, d *testutil.Daemon) {
		if sb := sandbox(t, d, "vb"); len(sb.Networks) != 0 {
			t.Errorf("vb still has networks %v", slices.Collect(maps.Keys(sb.Networks)))
		}
		claimB(t, d)
		d.MustTether("network", "connect", "app", "vb")
		lcMustPing(t, d, "pa", ip(t, d, "vb", "app"))
	},
}, {
	point: "sandbox.remove.after-detach",
	setup: bOnApp,
	op:    []string{"rm", "vb"},
	after: func(t *testing.T, d *testutil.Daemon) {
		// Its namespace lives, so it is still there, endpoint rebuilt.
		lcMustPing(t, d, "pa", ip(t, d, "vb", "app"))
		d.MustTether("rm", "vb")
		claimB(t, d)
	},
}, {
	point: "sandbox.remove.after-netns",
	setup: bOnApp,
	op:    []string{"rm", "vb"},
	after: func(t *testing.T, d *testutil.Daemon) {
		lcMustFail(t, d, "not found", "sandbox", "inspect", "vb")
		claimB(t, d)
	},
}, {
	point: "exec.after-start",
	setup: bOnApp,
	op:    []string{"exec", "vb", "--", "true"},
	after: func(t *testing.T, d *testutil.Daemon) {
		// The first process ran in new mount and UTS namespaces that no
		// record names; they went with it, and the next exec makes new ones.
		if got := strings.TrimSpace(d.MustTether("exec", "vb", "--", "hostname")); got != sandbox(t, d, "vb").Hostname {
			t.Errorf("hostname in b = %q", got)
		}
		lcMustPing(t, d, "vb", "10.77.0.2")
	},
}}

// Every fault point, one fresh host each: crash there, restart, check
// nothing leaked, retry with traffic.
func TestCrashAtEveryFaultPoint(t *testing.T) {
	testutil.RequireRoot(t)
	covered := map[string]bool{}
	for _, fc := range faultCases {
		covered[fc.point] = true
		name := fc.name
		if name == "" {
			name = fc.point
		}
		t.Run(name, func(t *testing.T) {
			ns, d := host(t)
			d.MustTether("network", "create", "--subnet", "10.77.0.0/24", "app")
			d.MustTether("sandbox", "create", "--name", "pa", "--network", "app")
			if fc.setup != nil {
				fc.setup(t, d)
			}
			crashAt(t, d, fc.point, fc.op...)
			checkNoLeaks(t, ns, d)
			fc.after(t, d)
			checkNoLeaks(t, ns, d)
		})
	}
	for _, p := range engine.FaultPoints {
		if !covered[p] {
			t.Errorf("fault point %s has no test", p)
		}
	}
}

// A crash during an attach, after the veth pair was made in the sandbox but
// before its host end was marked (so no marker tells it is Tether's): the
// next start removes the half-made pair from the sandbox's namespace, and
// the same connect works ("endpoint with name X already exists" cannot
// happen); rm and network rm work afterwards.
func TestStaleVethFromCrashedAttach(t *testing.T) {
	ns, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.77.0.0/24", "app")
	d.MustTether("network", "create", "--subnet", "10.79.0.0/24", "more")
	d.MustTether("sandbox", "create", "--name", "pa", "--network", "app")
	d.MustTether("sandbox", "create", "--name", "vb", "--network", "more")
	sbNS := sandbox(t, d, "vb").NetNS
	if err := d.Kill(); err != nil {
		t.Fatal(err)
	}
	// What the crashed `network connect app b` left: eth1 in b, its peer in
	// the host, unmarked and on no bridge.
	testutil.Must(t, "nsenter", "--net="+sbNS, "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "vthstale", "netns", ns)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.InNS(ns, "ip", "link", "show", "vthstale"); err == nil {
		t.Errorf("the half-made pair survived the restart: %s", out)
	}
	d.MustTether("network", "connect", "app", "vb")
	if got := sandbox(t, d, "vb").Networks["app"]; got == nil || got.IfName != "eth1" {
		t.Errorf("vb's endpoint on app: %+v, want eth1", got)
	}
	lcMustPing(t, d, "pa", ip(t, d, "vb", "app"))
	checkNoLeaks(t, ns, d)
	d.MustTether("rm", "pa")
	d.MustTether("rm", "vb")
	d.MustTether("network", "rm", "app")
	d.MustTether("network", "rm", "more")
	checkNoLeaks(t, ns, d)
}

// A bridge deleted behind the daemon's back (a user network's and the
// default one) is re-created on start with its sandboxes' ports on it: the
// host ends of their veths survived but lost their master.
func TestBridgeDeletedWhileStopped(t *testing.T) {
	ns, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.77.0.0/24", "-o", engine.OptBridgeName+"=brapp", "app")
	for _, name := range []string{"pa", "vb"} {
		d.MustTether("sandbox", "create", "--name", name, "--network", "app")
		d.MustTether("network", "connect", "bridge", name)
	}
	d.Stop()
	testutil.Must(t, "ip", "-n", ns, "link", "del", "brapp")
	testutil.Must(t, "ip", "-n", ns, "link", "del", engine.DefaultBridge)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	checkNoLeaks(t, ns, d)
	lcMustPing(t, d, "pa", ip(t, d, "vb", "app"))
	lcMustPing(t, d, "pa", ip(t, d, "vb", "bridge"))
}

// deleteNamespace does what a careless operator or another tool does to a
// sandbox's namespace: unmount and remove its file.
func deleteNamespace(t *testing.T, path string) {
	t.Helper()
	if err := testutil.UnmountUnder(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// A sandbox's namespace deleted behind the daemon's back while it is
// stopped: the next start drops the sandbox and frees its address; run,
// rm and network rm work. Only a namespace that is provably gone counts: a
// sandbox whose file was deleted too but whose process still runs in the
// namespace is kept, with its link and traffic, in the same start.
func TestNamespaceDeletedWhileStopped(t *testing.T) {
	ns, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.77.0.0/24", "app")
	d.MustTether("sandbox", "create", "--name", "pa", "--network", "app")
	d.MustTether("sandbox", "create", "--name", "vb", "--network", "app")
	runDetached(t, d, "live", "--network", "app", "--", "sleep", "600")
	old := ip(t, d, "vb", "app")
	path := sandbox(t, d, "vb").NetNS
	liveEP := sandbox(t, d, "live").Networks["app"]
	livePath := sandbox(t, d, "live").NetNS
	liveIdx := hostLinks(t, ns)[liveEP.HostIfName]
	d.Stop()
	deleteNamespace(t, path)
	deleteNamespace(t, livePath)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	lcMustFail(t, d, "not found", "sandbox", "inspect", "vb")
	if got := sandbox(t, d, "live").Networks["app"]; got == nil || got.IPAddress != liveEP.IPAddress {
		t.Errorf("live's endpoint after the start: %+v, want %+v", got, liveEP)
	}
	if idx := hostLinks(t, ns)[liveEP.HostIfName]; idx != liveIdx {
		t.Errorf("live's host link %s: ifindex %d -> %d (0: gone)", liveEP.HostIfName, liveIdx, idx)
	}
	lcMustPing(t, d, "pa", liveEP.IPAddress.String())
	checkNoLeaks(t, ns, d)
	// The name and the address are free again.
	out := d.MustTether("run", "--rm", "--name", "vb", "--network", "app", "--ip", old, "--", "ping", "-c1", "-W2", ip(t, d, "pa", "app"))
	if !strings.Contains(out, "1 received") {
		t.Errorf("run: %s", out)
	}
	d.MustTether("rm", "pa")
	d.MustTether("rm", "-f", "live")
	d.MustTether("network", "rm", "app")
	checkNoLeaks(t, ns, d)
}

// A sandbox's namespace deleted behind the daemon's back while it runs:
// network rm, rm and run (with the same name) each work, and the dead
// sandbox's address is free again.
func TestNamespaceDeletedWhileRunning(t *testing.T) {
	ns, d := host(t)
	for i, n := range []string{"n1", "n2", "n3"} {
		d.MustTether("network", "create", "--subnet", fmt.Sprintf("10.7%d.0.0/24", i+1), n)
	}
	d.MustTether("sandbox", "create", "--name", "x", "--network", "n1")
	d.MustTether("sandbox", "create", "--name", "y", "--network", "n2")
	d.MustTether("sandbox", "create", "--name", "p", "--network", "n3")
	d.MustTether("sandbox", "create", "--name", "z", "--network", "n3")
	zIP := ip(t, d, "z", "n3")
	for _, name := range []string{"x", "y", "z"} {
		deleteNamespace(t, sandbox(t, d, name).NetNS)
	}
	// network rm: the dead sandbox does not keep the network "in use".
	d.MustTether("network", "rm", "n1")
	lcMustFail(t, d, "not found", "sandbox", "inspect", "x")
	// rm of the dead sandbox works, and then its network goes too.
	d.MustTether("rm", "y")
	d.MustTether("network", "rm", "n2")
	// A new sandbox with the dead one's name gets its address back (sticky,
	// so it was freed) and has traffic.
	d.MustTether("sandbox", "create", "--name", "z", "--network", "n3")
	if got := ip(t, d, "z", "n3"); got != zIP {
		t.Errorf("new z has %s, want the dead z's %s", got, zIP)
	}
	lcMustPing(t, d, "p", zIP)
	out := d.MustTether("run", "--rm", "--network", "n3", "--", "ping", "-c1", "-W2", zIP)
	if !strings.Contains(out, "1 received") {
		t.Errorf("run: %s", out)
	}
	checkNoLeaks(t, ns, d)
}

// lcClient posts to the daemon's socket from many goroutines; transport
// errors are returned (the daemon is killed under it).
type lcClient struct{ c *http.Client }

func newLCClient(d *testutil.Daemon) *lcClient {
	return &lcClient{c: &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{
		MaxIdleConnsPerHost: 256,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}}
}

func (c *lcClient) createSandbox(name, network string) (int, string, error) {
	b, _ := json.Marshal(api.SandboxCreateRequest{Name: name, Networks: []api.NetworkAttach{{Network: network}}})
	resp, err := c.c.Post("http://tether/tether/v1/sandboxes", "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// kill -9 of the daemon (by PID) while 200 attaches to one network run in
// parallel, then a restart: every sandbox has a working endpoint, no address
// is held twice, the links and namespace files match the records, and the
// network can then be filled to its last address (none was lost).
func TestKillDuringConcurrentAttaches(t *testing.T) {
	const (
		workers   = 200
		killAfter = 50
		subnet    = "10.88.0.0/24"
		hosts     = 253 // .2 to .254
	)
	ns, d := host(t)
	d.MustTether("network", "create", "--subnet", subnet, "busy")
	c := newLCClient(d)
	var ok, failed, cut atomic.Int32
	var kill sync.Once
	killDaemon := func() {
		if err := d.Kill(); err != nil {
			t.Error(err)
		}
	}
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, err := c.createSandbox(fmt.Sprintf("c%03d", i), "busy")
			switch {
			case err != nil:
				cut.Add(1)
			case code != http.StatusCreated:
				failed.Add(1)
				t.Errorf("create before the kill: %d %s", code, body)
			case ok.Add(1) >= killAfter:
				kill.Do(killDaemon)
			}
		}()
	}
	wg.Wait()
	kill.Do(killDaemon) // in case fewer than killAfter succeeded
	t.Logf("before kill -9: %d attaches answered, %d cut off", ok.Load(), cut.Load())
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("the restart's garbage collection:\n%s", gcLines(d.Log()))
	checkNoLeaks(t, ns, d)

	var sbs []api.Sandbox
	lcGet(t, d, "/tether/v1/sandboxes", &sbs)
	t.Logf("after the restart: %d sandboxes", len(sbs))
	if len(sbs) < int(ok.Load()) {
		t.Errorf("%d sandboxes after the restart, but %d creations were answered", len(sbs), ok.Load())
	}
	var addrs []string
	for _, sb := range sbs {
		ep := sb.Networks["busy"]
		if len(sb.Networks) != 1 || ep == nil || !ep.IPAddress.IsValid() {
			t.Errorf("sandbox %s: networks %v, want one endpoint on busy", sb.Name, sb.Networks)
			continue
		}
		addrs = append(addrs, ep.IPAddress.String())
	}
	// Every endpoint carries traffic.
	d.MustTether("sandbox", "create", "--name", "probe", "--network", "busy")
	if slices.Contains(addrs, ip(t, d, "probe", "busy")) {
		t.Errorf("probe got an address already held: %s", ip(t, d, "probe", "busy"))
	}
	script := "for a in " + strings.Join(addrs, " ") + "; do ping -c1 -W2 $a >/dev/null || echo unreachable $a; done"
	if out := d.MustTether("exec", "probe", "--", "sh", "-c", script); strings.TrimSpace(out) != "" {
		t.Errorf("endpoints without traffic:\n%s", out)
	}
	// Fill the network: every address not held must be free.
	n := fillNetwork(t, c, "busy")
	lcGet(t, d, "/tether/v1/sandboxes", &sbs)
	if len(sbs) != hosts {
		t.Errorf("network full at %d sandboxes (%d created after the restart), want %d: addresses leaked", len(sbs), n, hosts)
	}
	checkNoLeaks(t, ns, d)
	d.Stop() // the host namespace and the namespace files go at cleanup; no need to remove 253 sandboxes one by one
}

// gcLines summarises a daemon log's garbage collection: how many lines of
// each kind.
func gcLines(log string) string {
	count := map[string]int{}
	for _, l := range strings.Split(log, "\n") {
		if _, msg, ok := strings.Cut(l, `msg="garbage collection: `); ok {
			msg, _, _ = strings.Cut(msg, `"`)
			count[msg]++
		}
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(count)) {
		fmt.Fprintf(&b, "%4d × %s\n", count[k], k)
	}
	for _, key := range []string{`freed=`, `msg="engine ready"`} {
		if i := strings.Index(log, key); i >= 0 {
			end := strings.IndexByte(log[i:], '\n')
			b.WriteString(log[i:i+end] + "\n")
		}
	}
	return b.String()
}

// fillNetwork creates sandboxes on a network in parallel until it reports
// that no address is left; it returns how many it created.
func fillNetwork(t *testing.T, c *lcClient, network string) int {
	t.Helper()
	var created atomic.Int32
	var next atomic.Int32
	var full atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !full.Load() {
				code, body, err := c.createSandbox(fmt.Sprintf("f%03d", next.Add(1)), network)
				switch {
				case err != nil:
					errs <- err.Error()
					return
				case code == http.StatusCreated:
					created.Add(1)
				case code == http.StatusForbidden && strings.Contains(body, "no free address"):
					full.Store(true)
				default:
					errs <- fmt.Sprintf("%d %s", code, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("filling %s: %s", network, e)
	}
	return int(created.Load())
}
