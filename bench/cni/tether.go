package cni

// Tether through CNI: the same libcni calls as the reference plugins' rows,
// with a conflist whose one plugin is `tether` (issue 16). The tether binary
// the harness builds (testutil.Binary) is linked as `tether` in a temporary
// CNI bin dir; each ADD and DEL execs it, and it makes one request to a
// daemon running in the row's host namespace (attach.StartTether: network
// "bench", 10.123.0.0/16), which creates the veth, address and ports. The
// plugin is exec'd from a thread inside that host namespace, as the
// reference plugins are; it needs only the daemon's socket.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/testutil"
)

// TetherSubnet is the subnet of the daemon's network "bench"
// (attach.StartTether).
var TetherSubnet = netip.MustParsePrefix("10.123.0.0/16")

// TetherNetwork is the Tether network the conflist names.
const TetherNetwork = "bench"

// TetherConfList is a conflist with the one plugin tether on network, whose
// daemon listens on the unix socket file socket, with the portMappings
// capability (the runtime's port mappings arrive as runtimeConfig).
func TetherConfList(name, network, socket string) []byte {
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": name, "plugins": []map[string]any{{
		"type": "tether", "network": network, "socket": "unix://" + socket,
		"capabilities": map[string]bool{"portMappings": true},
	}}})
	return b
}

// TetherBinDir makes a CNI bin dir under the test's temporary directory
// holding `tether`, a symbolic link to bin.
func TetherBinDir(tb testing.TB, bin string) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "cni-bin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(dir, "tether")); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// StartTetherCNI starts a daemon with its network in a fresh host namespace
// and opens a CNI network on it whose plugin is tether (with publish, each
// ADD passes one port mapping). The test's cleanup removes what is left,
// stops the daemon and deletes the namespace.
func StartTetherCNI(tb testing.TB, publish bool) (*Net, *attach.Tether) {
	tb.Helper()
	t := attach.StartTether(tb)
	name := "tbench-" + testutil.Suffix()
	n, err := Open(Config{HostNS: "/run/netns/" + t.NS, BinDir: TetherBinDir(tb, t.D.Bin), Dir: attach.NSParent(tb),
		Name: name, Publish: publish, List: TetherConfList(name, TetherNetwork, t.D.Socket)})
	if err != nil {
		tb.Fatal(err)
	}
	return n, t
}

// RunTetherCNI is RunCNI with the tether plugin: o.N sandboxes attached
// through libcni (with o.Publish, each with one port mapping in its
// runtimeConfig; with o.Clients, that many at once), then removed in the
// same order. The run's steps are the plugin's exec times and libcni's own
// share.
func RunTetherCNI(tb testing.TB, o attach.Options) attach.Run {
	tb.Helper()
	n, t := StartTetherCNI(tb, o.Publish)
	return runRow(tb, o, libcniRow{system: "tether-cni", n: n, ns: t.NS, steps: TetherStepOrder,
		verify: func(tb testing.TB, sbs []*Sandbox) { verifyTetherCNIRow(tb, n, t, o, sbs) },
		clean:  func(tb testing.TB, sbs []*Sandbox) { verifyTetherCNIClean(tb, n, t, sbs) }})
}

// verifyTetherCNIRow checks each sandbox's address (fresh, in the network's
// subnet, on its eth0), that the daemon lists exactly these attachments
// with the results' addresses and host interfaces, traffic from the first
// sandbox to the gateway and to the second, and (o.Publish) the first and
// last published ports from an outside namespace.
func verifyTetherCNIRow(tb testing.TB, n *Net, t *attach.Tether, o attach.Options, sbs []*Sandbox) {
	tb.Helper()
	seen := map[netip.Addr]bool{}
	for _, sb := range sbs {
		a := sb.Addr
		if a.Bits() != TetherSubnet.Bits() || !TetherSubnet.Contains(a.Addr()) || seen[a.Addr()] || a.Addr() == sb.Gateway {
			tb.Fatalf("tether-cni sandbox %s: address %s, want a fresh one in %s", sb.ID, a, TetherSubnet)
		}
		seen[a.Addr()] = true
		out, err := exec.Command("nsenter", "--net="+sb.Path, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), a.String()) {
			tb.Fatalf("tether-cni sandbox %s: eth0: %v %q, want %s", sb.ID, err, out, a)
		}
	}
	atts, err := attachments(t)
	if err != nil {
		tb.Fatal(err)
	}
	if len(atts) != len(sbs) {
		tb.Errorf("daemon lists %d CNI attachments, want %d", len(atts), len(sbs))
	}
	for _, sb := range sbs {
		a, ok := atts[sb.ID]
		if !ok || a.Address != sb.Addr.String() || len(sb.HostIfs) != 1 || a.HostIfName != sb.HostIfs[0] || a.NetNS != sb.Path {
			tb.Errorf("tether-cni sandbox %s: daemon's attachment %+v, result %s host %v in %s", sb.ID, a, sb.Addr, sb.HostIfs, sb.Path)
		}
	}
	if !sbs[0].Gateway.IsValid() {
		tb.Errorf("tether-cni sandbox %s: no gateway in the result", sbs[0].ID)
	} else if err := attach.Ping(sbs[0].Path, sbs[0].Gateway); err != nil {
		tb.Error(err)
	}
	if len(sbs) > 1 {
		if err := attach.Ping(sbs[0].Path, sbs[1].Addr.Addr()); err != nil {
			tb.Error(err)
		}
	}
	if o.Publish {
		out := testutil.Outside(tb, t.NS)
		for _, sb := range []*Sandbox{sbs[0], sbs[len(sbs)-1]} {
			if err := attach.CheckPublished(out, sb.Path, sb.ID, sb.Port); err != nil {
				tb.Error(err)
			}
		}
	}
}

// verifyTetherCNIClean checks that removal left no CNI attachment or
// sandbox in the daemon, no host-side veth (the kernel may free a
// namespace's links in the background: a few seconds are allowed), no
// namespace file, no libcni cache entry, no nftables rule naming a sandbox
// address and no plugin process.
func verifyTetherCNIClean(tb testing.TB, n *Net, t *attach.Tether, sbs []*Sandbox) {
	tb.Helper()
	if atts, err := attachments(t); err != nil || len(atts) != 0 {
		tb.Errorf("after removal: daemon's CNI attachments %v (%v), want none", atts, err)
	}
	if left, err := t.List(); err != nil || len(left) != 0 {
		tb.Errorf("after removal: daemon's sandboxes %v (%v), want none", left, err)
	}
	hostIfs := map[string]bool{}
	for _, sb := range sbs {
		for _, h := range sb.HostIfs {
			hostIfs[h] = true
		}
	}
	left := presentLinks(tb, t.NS, hostIfs)
	for deadline := time.Now().Add(5 * time.Second); len(left) > 0 && time.Now().Before(deadline); left = presentLinks(tb, t.NS, hostIfs) {
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) > 0 {
		tb.Errorf("after removal: host-side links %v left in the host namespace", left)
	}
	if m := testutil.Mounted(n.nsDir); len(m) != 1 {
		tb.Errorf("after removal: mounts under %s: %v, want the directory only", n.nsDir, m)
	}
	if cached, _ := filepath.Glob(filepath.Join(n.c.Dir, "cache", "results", "*")); len(cached) > 0 {
		tb.Errorf("after removal: libcni cache still holds %v", cached)
	}
	var addrs []netip.Addr
	for _, sb := range sbs {
		addrs = append(addrs, sb.Addr.Addr())
	}
	if hits, err := attach.RulesMentioning(t.NS, addrs); err != nil || len(hits) > 0 {
		tb.Errorf("after removal: nftables still names sandbox addresses (%v): %q", err, hits)
	}
	if ps := PluginCommands(t.D.Bin); len(ps) > 0 {
		tb.Errorf("after removal: tether plugin processes still running: %v", ps)
	}
}

// attachments returns the daemon's CNI attachments by container ID
// (GET /tether/v1/cni/attachments).
func attachments(t *attach.Tether) (map[string]types.CNIAttachment, error) {
	code, body, err := t.Call("GET", "/tether/v1/cni/attachments", nil)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("list CNI attachments: %d %s", code, body)
	}
	var list []types.CNIAttachment
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("list CNI attachments: %w", err)
	}
	out := map[string]types.CNIAttachment{}
	for _, a := range list {
		out[a.ContainerID] = a
	}
	return out, nil
}

// presentLinks returns which of names are links in namespace ns now.
func presentLinks(tb testing.TB, ns string, names map[string]bool) []string {
	tb.Helper()
	var out []string
	for _, l := range strings.Split(testutil.Must(tb, "ip", "-n", ns, "-o", "link", "show"), "\n") {
		if f := strings.Fields(l); len(f) > 1 && names[strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]] {
			out = append(out, f[1])
		}
	}
	return out
}

// PluginCommands lists the PIDs of running processes of executable bin that
// run a CNI command (CNI_COMMAND in their environment): the plugin, not
// the daemon or its helpers, which run the same binary.
func PluginCommands(bin string) []string {
	var out []string
	if real, err := filepath.EvalSymlinks(bin); err == nil {
		bin = real // /proc/PID/exe names the file, not the way to it
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || exe != bin {
			continue
		}
		env, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		for _, kv := range strings.Split(string(env), "\x00") {
			if strings.HasPrefix(kv, "CNI_COMMAND=") {
				out = append(out, e.Name()+" "+kv)
			}
		}
	}
	return out
}

// VersionExec runs plugin (in dir) with CNI_COMMAND=VERSION through libcni,
// as a runtime asks a plugin's versions, and returns how long the call
// took: the plugin process's start and exit with no daemon and no kernel
// work.
func VersionExec(dir, plugin string) (time.Duration, error) {
	c := libcni.NewCNIConfig([]string{dir}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t := time.Now()
	_, err := c.GetVersionInfo(ctx, plugin)
	took := time.Since(t)
	if err != nil {
		return took, fmt.Errorf("VERSION of %s in %s: %w", plugin, dir, err)
	}
	return took, nil
}
