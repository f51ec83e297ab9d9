package e2e

// Tether's CNI plugin (issue 16) driven by real clients: cnitool, the CNI
// project's reference client (built by bench/refs/cnitool.sh), and libcni
// run in-process. Each test has its own host namespace with a Tether daemon
// in it, a CNI bin dir holding `tether` (a symlink to the binary the harness
// built) and Debian's reference plugins (containernetworking-plugins), and
// a conf dir of its own. Plugins run in the namespace they are started in:
// cnitool is started with nsenter --net into the test host namespace, and
// libcni calls run on a thread inside it (netns.Do), never in the default
// namespace. cnitool keeps libcni's cache in /var/lib/cni: each cnitool
// run gets a private mount namespace with a test directory bound on
// /var/lib, so the host's /var/lib is never written.
//
//	TETHER_E2E=1 go test ./e2e -run TestCNI -count=1 -v
//
// A missing tool (cnitool, Debian's plugins, podman) fails these tests
// under TETHER_E2E=1.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	mdns "github.com/miekg/dns"

	apitypes "github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// cniVersions are the versions the plugin answers (issue 16).
var cniVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// debianPlugins are the reference plugins chained after Tether, from
// Debian's containernetworking-plugins (/usr/lib/cni).
var debianPlugins = []string{"tuning", "bandwidth", "firewall"}

// cniRefs are the tools the CNI tests run.
type cniRefs struct {
	cnitool string // ${TETHER_BENCH_REFS:-/opt/tether-bench}/cnitool/bin/cnitool
	debian  string // /usr/lib/cni
}

// requireCNIRefs finds the tools; a missing one fails the test under
// TETHER_E2E=1 and skips it otherwise. It also requires root.
func requireCNIRefs(t *testing.T) cniRefs {
	t.Helper()
	testutil.RequireRoot(t)
	root := os.Getenv("TETHER_BENCH_REFS")
	if root == "" {
		root = "/opt/tether-bench"
	}
	r := cniRefs{cnitool: filepath.Join(root, "cnitool", "bin", "cnitool"), debian: "/usr/lib/cni"}
	var missing []string
	for _, f := range append([]string{r.cnitool}, prefixed(r.debian+"/", debianPlugins)...) {
		if st, err := os.Stat(f); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, f)
		}
	}
	for _, tool := range []string{"iptables-save", "tc", "unshare", "nsenter", "python3", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" (PATH)")
		}
	}
	if len(missing) > 0 {
		msg := "CNI test tools missing (bench/refs/cnitool.sh; apt-get install containernetworking-plugins): " +
			strings.Join(missing, ", ")
		if testutil.E2E() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return r
}

func prefixed(p string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = p + n
	}
	return out
}

// cniKit is one test's CNI setup against one daemon.
type cniKit struct {
	d       *testutil.Daemon
	hostNS  string // the test host namespace the plugins run in
	refs    cniRefs
	dir     string
	binDir  string // CNI_PATH: tether + Debian's plugins
	confDir string // NETCONFPATH of cnitool
	varLib  string // bound on /var/lib for cnitool (its cache: varLib/cni)
	resolv  string // a resolv.conf naming 127.0.0.11
}

func newCNIKit(t *testing.T, d *testutil.Daemon, hostNS string, refs cniRefs) *cniKit {
	t.Helper()
	dir := t.TempDir()
	k := &cniKit{d: d, hostNS: hostNS, refs: refs, dir: dir, binDir: filepath.Join(dir, "bin"),
		confDir: filepath.Join(dir, "net.d"), varLib: filepath.Join(dir, "varlib"), resolv: filepath.Join(dir, "resolv.conf")}
	for _, p := range []string{k.binDir, k.confDir, filepath.Join(k.varLib, "cni")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{"tether": d.Bin}
	for _, p := range debianPlugins {
		links[p] = filepath.Join(refs.debian, p)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(k.binDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(k.resolv, []byte("nameserver 127.0.0.11\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

// tether is the plugin entry for Tether network network.
func (k *cniKit) tether(network string) map[string]any {
	return map[string]any{"type": "tether", "network": network, "socket": "unix://" + k.d.Socket,
		"capabilities": map[string]bool{"portMappings": true, "ips": true, "mac": true, "aliases": true}}
}

// conflist writes name.conflist (cniVersion v, the plugins in order) to
// the conf dir and returns it parsed.
func (k *cniKit) conflist(t *testing.T, name, v string, plugins ...map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	b, err := json.MarshalIndent(map[string]any{"cniVersion": v, "name": name, "plugins": plugins}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(k.confDir, name+".conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatalf("parse conflist %s: %v", name, err)
	}
	return list
}

// cnitoolScript binds the test's directory on /var/lib (libcni's cache)
// inside cnitool's private mount namespace and enters the host namespace.
const cnitoolScript = `set -e
mount --bind "$1" /var/lib
ns=$2
shift 2
exec nsenter --net="$ns" -- "$@"`

// cnitool runs `cnitool verb network nsPath` in the host namespace with
// CNI_ARGS args and CAP_ARGS caps (nil: none); it returns stdout, stderr.
func (k *cniKit) cnitool(verb, network, nsPath, args string, caps map[string]any) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", cnitoolScript, "sh",
		k.varLib, "/run/netns/"+k.hostNS, k.refs.cnitool, verb, network, nsPath)
	cmd.Env = append(os.Environ(), "NETCONFPATH="+k.confDir, "CNI_PATH="+k.binDir, "CNI_ARGS="+args, "CNI_IFNAME=eth0")
	if caps != nil {
		b, _ := json.Marshal(caps)
		cmd.Env = append(cmd.Env, "CAP_ARGS="+string(b))
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// mustCnitool is cnitool that fails the test (with the daemon's log) on error.
func (k *cniKit) mustCnitool(t *testing.T, verb, network, nsPath, args string, caps map[string]any) string {
	t.Helper()
	out, errOut, err := k.cnitool(verb, network, nsPath, args, caps)
	if err != nil {
		t.Fatalf("cnitool %s %s %s: %v\nstdout: %s\nstderr: %s\ndaemon log (tail):\n%s", verb, network, nsPath, err, out, errOut, tailLines(k.d.Log(), 30))
	}
	return out
}

// lib is libcni run in-process with its cache in dir, recording what each
// plugin printed.
type lib struct {
	k    *cniKit
	cni  *libcni.CNIConfig
	exec *recExec
}

// libcni returns a libcni client whose cache is cacheDir (a fresh one per
// name: a runtime that lost its cache gets another name).
func (k *cniKit) libcni(name string) *lib {
	rec := &recExec{out: map[string][]byte{}}
	return &lib{k: k, exec: rec,
		cni: libcni.NewCNIConfigWithCacheDir([]string{k.binDir}, filepath.Join(k.dir, "cache-"+name), rec)}
}

// inHost runs fn on a thread inside the test host namespace, where the
// plugins libcni starts then run.
func (l *lib) inHost(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return netns.Do("/run/netns/"+l.k.hostNS, func() error { return fn(ctx) })
}

func (l *lib) add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (cnitypes.Result, error) {
	var res cnitypes.Result
	err := l.inHost(func(ctx context.Context) (err error) {
		res, err = l.cni.AddNetworkList(ctx, list, rt)
		return err
	})
	return res, err
}

func (l *lib) check(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return l.inHost(func(ctx context.Context) error { return l.cni.CheckNetworkList(ctx, list, rt) })
}

func (l *lib) del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return l.inHost(func(ctx context.Context) error { return l.cni.DelNetworkList(ctx, list, rt) })
}

func (l *lib) gc(list *libcni.NetworkConfigList, valid ...cnitypes.GCAttachment) error {
	args := &libcni.GCArgs{ValidAttachments: append([]cnitypes.GCAttachment{}, valid...)}
	return l.inHost(func(ctx context.Context) error { return l.cni.GCNetworkList(ctx, list, args) })
}

func (l *lib) status(list *libcni.NetworkConfigList) error {
	return l.inHost(func(ctx context.Context) error { return l.cni.GetStatusNetworkList(ctx, list) })
}

// recExec is libcni's plugin executor that keeps each plugin's last
// stdout per command and everything plugins wrote on stderr.
type recExec struct {
	version.PluginDecoder
	mu     sync.Mutex
	out    map[string][]byte // "PLUGIN COMMAND" -> stdout
	stderr bytes.Buffer
}

func (r *recExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	var errOut bytes.Buffer
	out, err := (&invoke.RawExec{Stderr: &errOut}).ExecPlugin(ctx, path, stdin, env)
	cmd := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "CNI_COMMAND="); ok {
			cmd = v
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out[filepath.Base(path)+" "+cmd] = out
	r.stderr.Write(errOut.Bytes())
	return out, err
}

func (r *recExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// last is what plugin printed for its last command cmd.
func (r *recExec) last(plugin, cmd string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out[plugin+" "+cmd]
}

// ctrNS creates a named namespace standing for a container (loopback up);
// the test's end deletes it unless the test already did.
func ctrNS(t *testing.T, prefix string) string {
	t.Helper()
	name := prefix + "-" + testutil.Suffix()
	testutil.Must(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("delete namespace %s: %v: %s", name, err, out)
			}
		}
	})
	testutil.Must(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// cniAttach is what an ADD result says about the container interface.
type cniAttach struct {
	Addr netip.Prefix
	GW   netip.Addr
	MAC  string
	Host string // the host end's name (an interface without sandbox)
}

// checkResultShape checks an ADD result printed for cniVersion v against
// the spec's shape of that version (SPEC.md "Success" and the 0.3.x/0.4.0
// result types): exactly the keys cniVersion, interfaces, ips, routes, dns;
// the container interface ifname with its sandbox path and MAC; a host
// interface; one IPv4 address whose "interface" indexes the container
// interface, with "version": "4" before 1.0.0 and without it from 1.0.0;
// a default route (route true: the attachment carries the namespace's;
// false: none, as a container's second attachment); 127.0.0.11 as
// nameserver.
func checkResultShape(t *testing.T, v string, raw []byte, ifname, sandbox string, route bool) cniAttach {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatalf("%s result is not a JSON object: %v\n%s", v, err, raw)
	}
	for key := range top {
		if !slices.Contains([]string{"cniVersion", "interfaces", "ips", "routes", "dns"}, key) {
			t.Errorf("%s result has key %q, not in the spec's result: %s", v, key, raw)
		}
	}
	var r struct {
		CNIVersion string `json:"cniVersion"`
		Interfaces []struct {
			Name    string `json:"name"`
			Mac     string `json:"mac"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
		IPs    []map[string]json.RawMessage `json:"ips"`
		Routes []struct {
			Dst string `json:"dst"`
			GW  string `json:"gw"`
		} `json:"routes"`
		DNS struct {
			Nameservers []string `json:"nameservers"`
		} `json:"dns"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s result: %v\n%s", v, err, raw)
	}
	var a cniAttach
	if r.CNIVersion != v {
		t.Errorf("result cniVersion %q, want %q: %s", r.CNIVersion, v, raw)
	}
	ctr := -1
	for i, itf := range r.Interfaces {
		switch {
		case itf.Sandbox == "" && a.Host == "":
			a.Host = itf.Name // the first: later plugins may add theirs (bandwidth's ifb)
		case itf.Name == ifname && itf.Sandbox == sandbox:
			ctr, a.MAC = i, itf.Mac
		}
	}
	if ctr < 0 {
		t.Fatalf("%s result: no interface %q with sandbox %q: %s", v, ifname, sandbox, raw)
	}
	if _, err := net.ParseMAC(a.MAC); err != nil {
		t.Errorf("%s result: container interface mac %q: %v", v, a.MAC, err)
	}
	if a.Host == "" {
		t.Errorf("%s result lists no host interface (no sandbox): %s", v, raw)
	}
	if len(r.IPs) != 1 {
		t.Fatalf("%s result: %d ips, want 1: %s", v, len(r.IPs), raw)
	}
	ip := r.IPs[0]
	var addr, gw, ver string
	var idx *int
	_ = json.Unmarshal(ip["address"], &addr)
	_ = json.Unmarshal(ip["gateway"], &gw)
	_ = json.Unmarshal(ip["interface"], &idx)
	var err error
	if a.Addr, err = netip.ParsePrefix(addr); err != nil || !a.Addr.Addr().Is4() {
		t.Errorf("%s result: ips[0].address %q: %v", v, addr, err)
	}
	if a.GW, err = netip.ParseAddr(gw); err != nil {
		t.Errorf("%s result: ips[0].gateway %q: %v", v, gw, err)
	}
	if idx == nil || *idx != ctr {
		t.Errorf("%s result: ips[0].interface %v, want %d (the container interface): %s", v, idx, ctr, raw)
	}
	verRaw, hasVer := ip["version"]
	_ = json.Unmarshal(verRaw, &ver)
	if before1 := v < "1.0.0"; before1 && ver != "4" {
		t.Errorf("%s result: ips[0].version %q, want \"4\" (required before 1.0.0): %s", v, ver, raw)
	} else if !before1 && hasVer {
		t.Errorf("%s result: ips[0] has \"version\", which 1.0.0 removed: %s", v, raw)
	}
	for key := range ip {
		if !slices.Contains([]string{"version", "interface", "address", "gateway"}, key) {
			t.Errorf("%s result: ips[0] has key %q: %s", v, key, raw)
		}
	}
	hasRoute := slices.ContainsFunc(r.Routes, func(rt struct {
		Dst string `json:"dst"`
		GW  string `json:"gw"`
	}) bool {
		return rt.Dst == "0.0.0.0/0" && (rt.GW == "" || rt.GW == gw)
	})
	if hasRoute != route {
		t.Errorf("%s result: default route via %s: %v, want %v: %s", v, gw, hasRoute, route, raw)
	}
	if !slices.Contains(r.DNS.Nameservers, "127.0.0.11") {
		t.Errorf("%s result: dns.nameservers %v lacks 127.0.0.11", v, r.DNS.Nameservers)
	}
	return a
}

// expectKernel checks that namespace ns has interface ifname with the
// result's address and MAC, and its default route via the gateway.
func expectKernel(t *testing.T, ns, ifname string, a cniAttach) {
	t.Helper()
	var links []struct {
		Address  string `json:"address"`
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	out := testutil.Must(t, "ip", "-n", ns, "-j", "addr", "show", "dev", ifname)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -n %s addr show %s: %v %s", ns, ifname, err, out)
	}
	if !strings.EqualFold(links[0].Address, a.MAC) {
		t.Errorf("%s %s: mac %s, result says %s", ns, ifname, links[0].Address, a.MAC)
	}
	if !slices.ContainsFunc(links[0].AddrInfo, func(ai struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
	}) bool {
		return ai.Family == "inet" && fmt.Sprintf("%s/%d", ai.Local, ai.PrefixLen) == a.Addr.String()
	}) {
		t.Errorf("%s %s lacks %s: %s", ns, ifname, a.Addr, out)
	}
	route := testutil.Must(t, "ip", "-n", ns, "route", "show", "default")
	if want := fmt.Sprintf("default via %s dev %s", a.GW, ifname); !strings.Contains(route, want) {
		t.Errorf("%s routes %q, want %q", ns, route, want)
	}
}

// pingNS sends one echo from namespace ns to target (an address).
func pingNS(ns, target string) error {
	out, err := testutil.InNS(ns, "ping", "-c1", "-W2", target)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v %s", target, ns, err, out)
	}
	return nil
}

// pingByName pings name from namespace ns the way a container would
// resolve it: /etc/resolv.conf naming 127.0.0.11 (bound in a private mount
// namespace of the ping only).
func (k *cniKit) pingByName(ns, name string) error {
	const script = `mount --bind "$1" /etc/resolv.conf && exec nsenter --net="$2" -- ping -c1 -W2 "$3"`
	out, err := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
		k.resolv, "/run/netns/"+ns, name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s by name from %s: %v %s", name, ns, err, out)
	}
	return nil
}

// nsResolves checks that name resolves to want through 127.0.0.11 inside ns.
func nsResolves(t *testing.T, ns, name string, want netip.Addr) {
	t.Helper()
	if got := aRecords(query(t, "/run/netns/"+ns, name, mdns.TypeA, "udp")); !slices.Equal(got, []string{want.String()}) {
		t.Errorf("%s resolves %s to %v, want [%s]", ns, name, got, want)
	}
}

// serveHTTP runs python's HTTP server on port 80 inside namespace ns,
// serving page at /; the test's end kills it.
func serveHTTP(t *testing.T, ns, page string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+ns, "--", "python3", "-m", "http.server", "80", "--directory", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

// cniAttachments is the daemon's list of CNI attachments.
func cniAttachments(t *testing.T, d *testutil.Daemon) []apitypes.CNIAttachment {
	t.Helper()
	code, body := newAPI(t, d).call("GET", "/tether/v1/cni/attachments", nil)
	var out []apitypes.CNIAttachment
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("GET /tether/v1/cni/attachments: %d %s", code, body)
	}
	return out
}

// attachedIDs lists the container IDs of the daemon's CNI attachments.
func attachedIDs(t *testing.T, d *testutil.Daemon) []string {
	t.Helper()
	var ids []string
	for _, a := range cniAttachments(t, d) {
		ids = append(ids, a.ContainerID)
	}
	slices.Sort(ids)
	return ids
}

// cniCode is the CNI error code of err (0: not a CNI error).
func cniCode(err error) uint {
	var e *cnitypes.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestCNIVersions drives the plugin with cnitool and libcni for every
// cniVersion it answers: result shapes, the kernel state, traffic between
// two CNI containers and a `tether run` sandbox, names through 127.0.0.11
// both ways, a published port from outside, CHECK (passing, then failing
// once the interface is deleted by hand), DEL twice, STATUS and GC.
func TestCNIVersions(t *testing.T) {
	refs := requireCNIRefs(t)
	hostNS, d := host(t)
	out := outside(t, hostNS)
	d.MustTether("network", "create", "--subnet", "10.131.0.0/24", "cnet")
	runDetached(t, d, "web", "--network", "cnet", "--", "sleep", "3600")
	k := newCNIKit(t, d, hostNS, refs)
	for i, v := range cniVersions {
		t.Run(v, func(t *testing.T) { k.versionRound(t, out, i, v) })
	}
	if ids := attachedIDs(t, d); len(ids) > 0 {
		t.Errorf("CNI attachments left after every round: %v", ids)
	}
}

// versionRound is one cniVersion of TestCNIVersions: container A through
// cnitool (with a published port), container B through libcni.
func (k *cniKit) versionRound(t *testing.T, outNS string, i int, v string) {
	d := k.d
	tag := strings.ReplaceAll(v, ".", "")
	name := "cnet-" + tag
	list := k.conflist(t, name, v, k.tether("cnet"))
	a, b := ctrNS(t, "tth-ca"), ctrNS(t, "tth-cb")
	podA, podB := "pod-a-"+tag, "pod-b-"+tag
	port := 18080 + i

	caps := map[string]any{"portMappings": []map[string]any{{"hostPort": port, "containerPort": 80, "protocol": "tcp"}}}
	argsA := "IgnoreUnknown=1;K8S_POD_NAME=" + podA
	stdout := k.mustCnitool(t, "add", name, "/run/netns/"+a, argsA, caps)
	resA := checkResultShape(t, v, []byte(stdout), "eth0", "/run/netns/"+a, true)

	l := k.libcni(tag)
	rtB := &libcni.RuntimeConf{ContainerID: "ctr-b-" + tag, NetNS: "/run/netns/" + b, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", podB}}}
	if _, err := l.add(list, rtB); err != nil {
		t.Fatalf("libcni ADD %s: %v\nplugin stderr: %s\ndaemon log:\n%s", rtB.ContainerID, err, l.exec.stderr.String(), tailLines(d.Log(), 30))
	}
	rawB := l.exec.last("tether", "ADD")
	t.Logf("ADD result (%s, as the plugin printed it): %s", v, rawB)
	resB := checkResultShape(t, v, rawB, "eth0", "/run/netns/"+b, true)
	expectKernel(t, a, "eth0", resA)
	expectKernel(t, b, "eth0", resB)

	// traffic and names: A <-> B by address, both to the sandbox by name,
	// the sandbox to both by their K8S_POD_NAME
	webIP := netip.MustParseAddr(ip(t, d, "web", "cnet"))
	for _, err := range []error{pingNS(a, resB.Addr.Addr().String()), pingNS(b, resA.Addr.Addr().String()),
		k.pingByName(a, "web"), k.pingByName(b, podA)} {
		if err != nil {
			t.Error(err)
		}
	}
	nsResolves(t, a, "web", webIP)
	nsResolves(t, b, podA, resA.Addr.Addr())
	nsResolves(t, a, podB, resB.Addr.Addr())
	resolves(t, d, "web", podA, resA.Addr.Addr().String())
	for _, pod := range []string{podA, podB} {
		if !ping(d, "web", pod) {
			t.Errorf("sandbox web cannot ping %s by name", pod)
		}
	}

	// the published port, from outside
	serveHTTP(t, a, "cni "+v+"\n")
	hostPort := fmt.Sprintf("%s:%d", uplinkAddr, port)
	testutil.ExpectPage(t, outNS, hostPort, "cni "+v+"\n", true)

	// CHECK (libcni refuses it before 0.4.0) and STATUS (from 1.1.0)
	canCheck := v >= "0.4.0"
	if canCheck {
		k.mustCnitool(t, "check", name, "/run/netns/"+a, argsA, caps)
		if err := l.check(list, rtB); err != nil {
			t.Errorf("libcni CHECK %s: %v\n%s", rtB.ContainerID, err, l.exec.stderr.String())
		}
	}
	if v >= "1.1.0" {
		k.mustCnitool(t, "status", name, "/run/netns/"+a, "", nil)
		if err := l.status(list); err != nil {
			t.Errorf("libcni STATUS: %v", err)
		}
	}

	// CHECK fails once the interface is gone; DEL twice succeeds and frees
	// the port
	testutil.Must(t, "ip", "-n", a, "link", "del", "eth0")
	if canCheck {
		if out, errOut, err := k.cnitool("check", name, "/run/netns/"+a, argsA, caps); err == nil {
			t.Errorf("cnitool check after `ip link del eth0` in %s succeeded: %s %s", a, out, errOut)
		} else {
			t.Logf("CHECK without the interface fails as it must: %v: %s", err, firstLine(errOut))
		}
	}
	k.mustCnitool(t, "del", name, "/run/netns/"+a, argsA, caps)
	k.mustCnitool(t, "del", name, "/run/netns/"+a, argsA, caps)
	testutil.ExpectPage(t, outNS, hostPort, "", false)

	if v >= "1.1.0" {
		// GC from a runtime with no cache: B stays while listed valid and
		// goes with an empty list; then cnitool's GC (no list at all)
		fresh := k.libcni(tag + "-gc")
		gcKey := cnitypes.GCAttachment{ContainerID: rtB.ContainerID, IfName: "eth0"}
		if err := fresh.gc(list, gcKey); err != nil {
			t.Errorf("libcni GC keeping %s: %v", rtB.ContainerID, err)
		}
		if ids := attachedIDs(t, d); !slices.Equal(ids, []string{rtB.ContainerID}) {
			t.Errorf("after GC with %s valid, attachments %v", rtB.ContainerID, ids)
		}
		if err := fresh.gc(list); err != nil {
			t.Errorf("libcni GC with an empty valid list: %v", err)
		}
		if ids := attachedIDs(t, d); len(ids) != 0 {
			t.Errorf("after GC with an empty valid list, attachments %v", ids)
		}
		k.mustCnitool(t, "gc", name, "/run/netns/"+a, "", nil)
	}
	for range 2 {
		if err := l.del(list, rtB); err != nil {
			t.Errorf("libcni DEL %s: %v\n%s", rtB.ContainerID, err, l.exec.stderr.String())
		}
	}
	if ids := attachedIDs(t, d); len(ids) != 0 {
		t.Errorf("after DEL of both containers, attachments %v", ids)
	}
}

// TestCNICapabilitiesAndInterfaces: one container with two attachments
// (eth0 and eth1 on two Tether networks), the first with the ips, mac and
// aliases capabilities (aliases as a list), the second with aliases in
// Podman's {"<network configuration>": [...]} form. Each network's
// sandboxes resolve the container by its K8S_POD_NAME and its aliases
// there; the namespace keeps one default route; removing one attachment
// leaves the other working.
func TestCNICapabilitiesAndInterfaces(t *testing.T) {
	refs := requireCNIRefs(t)
	hostNS, d := host(t)
	d.MustTether("network", "create", "--subnet", "10.135.0.0/24", "capa")
	d.MustTether("network", "create", "--subnet", "10.136.0.0/24", "capb")
	runDetached(t, d, "wa", "--network", "capa", "--", "sleep", "3600")
	runDetached(t, d, "wb", "--network", "capb", "--", "sleep", "3600")
	k := newCNIKit(t, d, hostNS, refs)
	listA := k.conflist(t, "capa-conf", "1.1.0", k.tether("capa"))
	listB := k.conflist(t, "capb-conf", "1.1.0", k.tether("capb"))
	ns := ctrNS(t, "tth-cx")
	l := k.libcni("caps")
	const mac = "02:00:5e:00:53:50"
	args := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "pod-x"}}
	rtA := &libcni.RuntimeConf{ContainerID: "ctr-x", NetNS: "/run/netns/" + ns, IfName: "eth0", Args: args,
		CapabilityArgs: map[string]any{"ips": []string{"10.135.0.50/24"}, "mac": mac, "aliases": []string{"svc-x"}}}
	rtB := &libcni.RuntimeConf{ContainerID: "ctr-x", NetNS: "/run/netns/" + ns, IfName: "eth1", Args: args,
		CapabilityArgs: map[string]any{"aliases": map[string][]string{"capb-conf": {"svc-x-b"}, "other": {"not-this"}}}}

	if _, err := l.add(listA, rtA); err != nil {
		t.Fatalf("ADD eth0: %v\n%s\ndaemon log:\n%s", err, l.exec.stderr.String(), tailLines(d.Log(), 30))
	}
	a := checkResultShape(t, "1.1.0", l.exec.last("tether", "ADD"), "eth0", rtA.NetNS, true)
	if a.Addr.String() != "10.135.0.50/24" || !strings.EqualFold(a.MAC, mac) {
		t.Errorf("eth0: %s %s, want 10.135.0.50/24 %s (ips and mac capabilities)", a.Addr, a.MAC, mac)
	}
	expectKernel(t, ns, "eth0", a)
	if _, err := l.add(listB, rtB); err != nil {
		t.Fatalf("ADD eth1 (second attachment of the container): %v\n%s\ndaemon log:\n%s", err, l.exec.stderr.String(), tailLines(d.Log(), 30))
	}
	rawB := l.exec.last("tether", "ADD")
	t.Logf("eth1 result: %s", rawB)
	b := checkResultShape(t, "1.1.0", rawB, "eth1", rtB.NetNS, false)
	if !netip.MustParsePrefix("10.136.0.0/24").Contains(b.Addr.Addr()) {
		t.Errorf("eth1 address %s outside capb", b.Addr)
	}
	// the first attachment keeps the namespace's one default route
	if routes := testutil.Must(t, "ip", "-n", ns, "route", "show", "default"); strings.Count(routes, "default") != 1 || !strings.Contains(routes, "dev eth0") {
		t.Errorf("default routes in %s: %q, want one, through eth0 (the first attachment)", ns, routes)
	}

	for _, c := range []struct{ from, name, want string }{
		{"wa", "pod-x", "10.135.0.50"}, {"wa", "svc-x", "10.135.0.50"},
		{"wb", "pod-x", b.Addr.Addr().String()}, {"wb", "svc-x-b", b.Addr.Addr().String()},
	} {
		resolves(t, d, c.from, c.name, c.want)
	}
	if out, err := d.Tether("exec", "wb", "--", "getent", "hosts", "not-this"); err == nil {
		t.Errorf("wb resolves not-this (another network configuration's alias): %s", out)
	}
	if err := l.check(listA, rtA); err != nil {
		t.Errorf("CHECK eth0: %v", err)
	}
	if err := l.del(listA, rtA); err != nil {
		t.Errorf("DEL eth0: %v", err)
	}
	if err := l.check(listB, rtB); err != nil {
		t.Errorf("CHECK eth1 after DEL of eth0: %v", err)
	}
	if !ping(d, "wb", b.Addr.Addr().String()) {
		t.Errorf("wb cannot reach eth1 (%s) after DEL of eth0", b.Addr.Addr())
	}
	t.Logf("default route after DEL of eth0: %q", strings.TrimSpace(testutil.Must(t, "ip", "-n", ns, "route", "show", "default")))
	if err := l.del(listB, rtB); err != nil {
		t.Errorf("DEL eth1: %v", err)
	}
	if ids := attachedIDs(t, d); len(ids) != 0 {
		t.Errorf("attachments after DEL of both: %v", ids)
	}
}
