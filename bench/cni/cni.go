package cni

// The driver: one CNI network (a conflist) in a bench-owned host namespace,
// plugins run through libcni from a thread inside that namespace.
//
// Layout: the host namespace gets, from the bridge plugin, a bridge with the
// gateway address 10.125.0.1/16, one veth per sandbox enslaved to it (the
// plugin creates the pair inside the sandbox and moves the host end out),
// net.ipv4.ip_forward on, and an "inet cni_plugins_masquerade" table with a
// rule per sandbox; with ports, portmap's "ip cni_hostport" table with a DNAT
// rule per mapping. Sandbox namespace files live in a private bind-mounted
// directory, as the floor's. IPv6 is off for new links in the host namespace
// and in every sandbox (set once per namespace, as the floor and Tether have
// it), so no system pays for IPv6 link-local addresses and DAD.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	vnetns "github.com/vishvananda/netns"

	"github.com/tether-net/tether/bench/attach"
)

// Version is the plugins' release bench/refs/cni.sh installs.
const Version = "v1.9.1"

// Plugins are the plugin binaries the benchmark needs.
var Plugins = []string{"bridge", "host-local", "portmap"}

// BinDir is where bench/refs/cni.sh installs the plugins:
// ${TETHER_BENCH_REFS:-/opt/tether-bench}/cni/bin.
func BinDir() string {
	root := os.Getenv("TETHER_BENCH_REFS")
	if root == "" {
		root = "/opt/tether-bench"
	}
	return filepath.Join(root, "cni", "bin")
}

// Installed reports which plugins are missing from dir (none: all there and
// executable) and the version its stamp file records.
func Installed(dir string) (missing []string, stamp string) {
	for _, p := range Plugins {
		if st, err := os.Stat(filepath.Join(dir, p)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(dir), "VERSION"))
	return missing, strings.TrimSpace(string(b))
}

// Config describes one network.
type Config struct {
	HostNS string       // path of the host namespace file (e.g. /run/netns/NAME)
	BinDir string       // plugin binaries
	Dir    string       // a fresh directory for state: namespace files, IPAM data, cache
	Name   string       // network name (host-local keys its data by it)
	Bridge string       // bridge name, ≤ 15 bytes
	Subnet netip.Prefix // the bridge's subnet; the gateway is its first address
	// Publish: every ADD passes one port mapping (runtimeConfig
	// portMappings), and ConfList adds portmap (nftables backend).
	Publish bool
	// List, when set, is the conflist instead of ConfList(c): a network of
	// another plugin (TetherConfList); Bridge and Subnet are then unused.
	List []byte
}

// Net is a CNI network ready to attach sandboxes.
type Net struct {
	c      Config
	hostNS vnetns.NsHandle
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
	exec   *timedExec
	nsDir  string
}

// Sandbox is one sandbox attached through CNI.
type Sandbox struct {
	ID   string       // CNI container ID (ContainerID)
	Path string       // namespace file
	Addr netip.Prefix // eth0's address, as the IPAM result gave it
	Port int          // published host port (0: none)
	// Gateway is the result's gateway of that address (invalid: none).
	Gateway netip.Addr
	// HostIfs are the host-side interfaces of the sandbox's veths, as the
	// result lists them (no sandbox, not the bridge).
	HostIfs []string
	rt      *libcni.RuntimeConf
}

// Open prepares the network: IPv6 off for new links in the host namespace,
// the conflist parsed, libcni with its cache under c.Dir, and a private
// directory for namespace files. The bridge itself is made by the first ADD.
func Open(c Config) (_ *Net, err error) {
	n := &Net{c: c, exec: newTimedExec(), nsDir: filepath.Join(c.Dir, "ns")}
	list := c.List
	if list == nil {
		list = ConfList(c)
	}
	if n.list, err = libcni.NetworkConfFromBytes(list); err != nil {
		return nil, fmt.Errorf("conflist of %q: %w", c.Name, err)
	}
	if n.hostNS, err = vnetns.GetFromPath(c.HostNS); err != nil {
		return nil, fmt.Errorf("open host namespace %q: %w", c.HostNS, err)
	}
	defer func() {
		if err != nil {
			n.hostNS.Close()
		}
	}()
	err = attach.InNS(n.hostNS, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0o644)
	})
	if err != nil {
		return nil, fmt.Errorf("host namespace %q: %w", c.HostNS, err)
	}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{c.BinDir}, filepath.Join(c.Dir, "cache"), n.exec)
	if err := attach.PrivateDir(n.nsDir); err != nil {
		return nil, err
	}
	return n, nil
}

// ConfList is the network's conflist: bridge (gateway, masquerade through
// nftables, hairpin) with host-local IPAM and a default route, then portmap
// with the nftables backend when c.Publish.
func ConfList(c Config) []byte {
	gw := c.Subnet.Addr().Next()
	plugins := []map[string]any{{
		"type": "bridge", "bridge": c.Bridge, "isGateway": true,
		"ipMasq": true, "ipMasqBackend": "nftables", "hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": c.Subnet.String(), "gateway": gw.String()}}},
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			"dataDir": filepath.Join(c.Dir, "ipam"),
		},
	}}
	if c.Publish {
		plugins = append(plugins, map[string]any{
			"type": "portmap", "backend": "nftables",
			"capabilities": map[string]bool{"portMappings": true},
		})
	}
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": c.Name, "plugins": plugins})
	return b
}

// Gateway is the bridge's address, the sandboxes' default gateway.
func (n *Net) Gateway() netip.Addr { return n.c.Subnet.Addr().Next() }

// Steps of an attach and a removal, as SetSteps names them.
const (
	StepNS       = "netns create+bind"
	StepBridge   = "bridge ADD (runs host-local ADD)"
	StepPortmap  = "portmap ADD"
	StepLibcni   = "libcni: config, result cache"
	StepDelPort  = "portmap DEL"
	StepDelBr    = "bridge DEL (runs host-local DEL)"
	StepDelNS    = "netns unmount+delete"
	StepDelCache = "libcni DEL: cache"
	// The tether plugin's execs (TetherConfList): the process's start and
	// its one request to the daemon, which does the work.
	StepTetherAdd = "tether ADD (plugin exec: start + daemon request)"
	StepTetherDel = "tether DEL (plugin exec: start + daemon request)"
)

// StepOrder lists the steps in order, attach then removal.
var StepOrder = []string{StepNS, StepBridge, StepPortmap, StepLibcni, StepDelPort, StepDelBr, StepDelCache, StepDelNS}

// TetherStepOrder lists the steps of a network whose plugin is tether.
var TetherStepOrder = []string{StepNS, StepTetherAdd, StepLibcni, StepTetherDel, StepDelCache, StepDelNS}

// ContainerID is the CNI container ID of sandbox i of network name: 64 hex
// digits, as containerd, CRI-O and Podman give (a digest of name and i, so
// that IDs differ from their first characters on).
func ContainerID(name string, i int) string {
	return fmt.Sprintf("%x", sha256.Sum256(fmt.Appendf(nil, "%s-%d", name, i)))
}

// Attach creates sandbox i's namespace and runs ADD for the whole chain
// inside the host namespace (with c.Publish, mapping host port
// attach.BasePort+i to 80/tcp). It returns the sandbox and the time each step
// took; on failure the sandbox returned (if any) holds what to remove.
func (n *Net) Attach(i int) (*Sandbox, map[string]time.Duration, error) {
	steps := map[string]time.Duration{}
	sb := &Sandbox{ID: ContainerID(n.c.Name, i), Path: filepath.Join(n.nsDir, fmt.Sprintf("s%d", i))}
	sb.rt = &libcni.RuntimeConf{ContainerID: sb.ID, NetNS: sb.Path, IfName: "eth0"}
	if n.c.Publish {
		sb.Port = attach.BasePort + i
		sb.rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{
			{"hostPort": sb.Port, "containerPort": 80, "protocol": "tcp"}}}
	}
	t := time.Now()
	if err := attach.CreateNS(sb.Path, nil); err != nil {
		return nil, steps, err
	}
	steps[StepNS] = time.Since(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t = time.Now()
	var res *current.Result
	err := attach.InNS(n.hostNS, func() error {
		r, err := n.cni.AddNetworkList(ctx, n.list, sb.rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	add := time.Since(t)
	execs := n.exec.take(sb.ID)
	steps[StepBridge], steps[StepLibcni] = execs["bridge ADD"], add-sum(execs)
	steps[StepTetherAdd] = execs["tether ADD"]
	if n.c.Publish {
		steps[StepPortmap] = execs["portmap ADD"]
	}
	if err != nil {
		return sb, steps, fmt.Errorf("cni add %q: %w", sb.ID, err)
	}
	if len(res.IPs) == 0 {
		return sb, steps, fmt.Errorf("cni add %q: no address in the result", sb.ID)
	}
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox == "" && ifc.Name != n.c.Bridge {
			sb.HostIfs = append(sb.HostIfs, ifc.Name)
		}
	}
	a := res.IPs[0].Address
	sb.Gateway, _ = netip.AddrFromSlice(res.IPs[0].Gateway.To4())
	ip, _ := netip.AddrFromSlice(a.IP.To4())
	ones, _ := a.Mask.Size()
	sb.Addr = netip.PrefixFrom(ip, ones)
	return sb, steps, nil
}

// Remove runs DEL for the whole chain (in reverse) inside the host
// namespace, then deletes the namespace file. Both are tried; errors are
// joined.
func (n *Net) Remove(sb *Sandbox) (map[string]time.Duration, error) {
	steps := map[string]time.Duration{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t := time.Now()
	err := attach.InNS(n.hostNS, func() error { return n.cni.DelNetworkList(ctx, n.list, sb.rt) })
	del := time.Since(t)
	execs := n.exec.take(sb.ID)
	steps[StepDelBr], steps[StepDelCache] = execs["bridge DEL"], del-sum(execs)
	steps[StepTetherDel] = execs["tether DEL"]
	if n.c.Publish {
		steps[StepDelPort] = execs["portmap DEL"]
	}
	if err != nil {
		err = fmt.Errorf("cni del %q: %w", sb.ID, err)
	}
	t = time.Now()
	nerr := attach.RemoveNS(sb.Path)
	steps[StepDelNS] = time.Since(t)
	return steps, errors.Join(err, nerr)
}

// Close unmounts the namespace directory (detaching any namespace file left)
// and closes the host namespace handle. The host namespace's own objects go
// with it when its owner deletes it.
func (n *Net) Close() error {
	err := attach.UnmountDir(n.nsDir)
	n.hostNS.Close()
	return err
}

// NSDir is the directory holding the sandboxes' namespace files.
func (n *Net) NSDir() string { return n.nsDir }

// timedExec runs plugins as libcni's default does and adds up, per
// container ID, the time of each plugin's exec ("bridge ADD").
type timedExec struct {
	invoke.Exec
	mu   sync.Mutex
	byID map[string]map[string]time.Duration
}

func newTimedExec() *timedExec {
	return &timedExec{Exec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}},
		byID: map[string]map[string]time.Duration{}}
}

func (e *timedExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	t := time.Now()
	out, err := e.Exec.ExecPlugin(ctx, path, stdin, environ)
	took := time.Since(t)
	id, cmd := envValue(environ, "CNI_CONTAINERID"), envValue(environ, "CNI_COMMAND")
	e.mu.Lock()
	if e.byID[id] == nil {
		e.byID[id] = map[string]time.Duration{}
	}
	e.byID[id][filepath.Base(path)+" "+cmd] += took
	e.mu.Unlock()
	return out, err
}

// take returns and forgets the exec times recorded for container id.
func (e *timedExec) take(id string) map[string]time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.byID[id]
	delete(e.byID, id)
	if m == nil {
		m = map[string]time.Duration{}
	}
	return m
}

// sum adds up a sandbox's exec times: the plugins libcni ran (what they ran
// themselves, host-local under bridge, is inside their own times).
func sum(execs map[string]time.Duration) time.Duration {
	var t time.Duration
	for _, d := range execs {
		t += d
	}
	return t
}

// envValue is the value of key in env (KEY=value entries; the last wins).
func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}
