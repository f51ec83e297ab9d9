package docker

// Tether as Docker's network and IPAM plugin (issue 15), beside a dockerd
// on the same Host: a Node is one "host" running containerd, dockerd and a
// Tether daemon in one network namespace.
//
// The Tether daemon is a testutil.Daemon in the Host's network namespace
// (started with nsenter --net or ip netns exec, so it is NOT in the
// holder's mount namespace) with
//
//	--docker-plugin --docker-plugin-socket DIR/plugins/tether.sock --docker-host unix://DOCKERD-SOCKET
//
// and the plugin's two sockets (tether.sock, tether-overlay.sock, which the
// daemon makes in the same directory) are made visible to dockerd by
// symlinks in the holder's private /run/docker/plugins (dockerd's discovery
// stat()s /run/docker/plugins/NAME.sock, following symlinks; the host's own
// /run/docker/plugins is never touched). dockerd's daemon.json gets
// "dns": [the plugin's DNS address] so Docker's resolver forwards the names
// it does not know (other hosts' containers) to Tether.
//
// Either daemon may start first. When Tether starts first its --docker-host
// is a symlink in its own directory that is pointed at dockerd's socket once
// dockerd runs. Teardown removes every container (and the user's networks)
// through Docker's API while Tether still answers, then stops Tether, then
// dockerd and containerd (a plugin that is gone would make each removal
// wait out Docker's 30 s plugin retry budget).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/tether-net/tether/internal/testutil"
)

// PluginDNS is the Tether daemon's default --docker-plugin-dns address,
// which dockerd's daemon.json must list as "dns". It is not loopback:
// Docker 29 dials a "dns" of daemon.json (an override) from the container's
// namespace (libnetwork/internal/resolvconf TransformForIntNS: HostLoopback
// is !NSOverride); only nameservers read from the host's resolv.conf are
// dialled from dockerd's.
const PluginDNS = "169.254.77.77"

// PluginNames are the plugin's socket names under /run/docker/plugins:
// the driver and IPAM "tether" and the global-scope driver "tether-overlay".
var PluginNames = []string{"tether", "tether-overlay"}

// TetherOptions says how a Node starts its Tether daemon.
type TetherOptions struct {
	Mode        testutil.StartMode // how the daemon enters the namespace ("" = nsenter)
	Args        []string           // more daemon flags (e.g. the cluster store's)
	TetherFirst bool               // start Tether before containerd and dockerd
	// DNS is --docker-plugin-dns ("" = the default, PluginDNS; "none"
	// turns it off and dockerd's daemon.json then gets no "dns").
	DNS string
	// DockerExtra adds or overrides daemon.json keys of dockerd.
	DockerExtra map[string]any
}

// Node is one test host: a Host with containerd, dockerd and Tether.
type Node struct {
	Host      *Host
	Docker    *Docker
	Tether    *testutil.Daemon
	PluginDir string // directory of the plugin sockets (test's mount namespace)
	tb        testing.TB
}

// StartNode starts dockerd and Tether (in the order o says) on h and waits
// until the plugin socket answers /Plugin.Activate.
func StartNode(tb testing.TB, h *Host, refs Refs, o TetherOptions) *Node {
	tb.Helper()
	n := &Node{Host: h, tb: tb}
	extra := map[string]any{}
	if dns := o.DNS; dns != "none" {
		if dns == "" {
			dns = PluginDNS
		}
		extra["dns"] = []string{dns}
	}
	for k, v := range o.DockerExtra {
		extra[k] = v
	}
	if o.TetherFirst {
		// Tether's cleanup (registered first) then runs after Docker's, which
		// removes every container while the plugin still answers
		dockerLink := n.newTether(o, "")
		n.Docker = StartDockerOn(tb, h, refs, extra)
		if err := os.Symlink(n.Docker.Socket, dockerLink); err != nil {
			tb.Fatal(err)
		}
	} else {
		n.Docker = StartDockerOn(tb, h, refs, extra)
		n.newTether(o, n.Docker.Socket)
		// registered after the Tether daemon's cleanup: runs before it
		tb.Cleanup(n.removeAll)
	}
	n.linkPlugins()
	if _, err := n.Activate(); err != nil {
		tb.Fatalf("plugin socket: %v\ntether log:\n%s", err, n.Tether.Log())
	}
	return n
}

// newTether prepares the plugin directory and starts the Tether daemon with
// --docker-host unix://sock, or, with sock "", a symlink in its directory
// that the caller points at dockerd's socket later; it returns the
// docker-host path given.
func (n *Node) newTether(o TetherOptions, sock string) string {
	tb := n.tb
	tb.Helper()
	d := testutil.NewDaemon(tb, n.Host.NS, o.Args...)
	d.Mode = o.Mode
	n.Tether = d
	n.PluginDir = filepath.Join(d.Dir, "plugins")
	if err := os.MkdirAll(n.PluginDir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if sock == "" {
		sock = filepath.Join(d.Dir, "docker.sock")
	}
	d.Args = append(d.Args, "--docker-plugin", "--docker-plugin-socket", n.Socket("tether"),
		"--docker-host", "unix://"+sock)
	if o.DNS != "" {
		d.Args = append(d.Args, "--docker-plugin-dns", o.DNS)
	}
	if err := d.Start(); err != nil {
		tb.Fatal(err)
	}
	return sock
}

// Socket is the path of plugin name's socket (test's mount namespace).
func (n *Node) Socket(name string) string { return filepath.Join(n.PluginDir, name+".sock") }

// linkPlugins links the Tether daemon's plugin sockets into the holder.
func (n *Node) linkPlugins() {
	n.tb.Helper()
	if err := n.Host.LinkPlugins(n.PluginDir, PluginNames...); err != nil {
		n.tb.Fatal(err)
	}
}

// LinkPlugins makes /run/docker/plugins/NAME.sock in the holder's mount
// namespace a symlink to dir/NAME.sock for each name (the holder's /run is
// a private tmpfs: the host's /run/docker/plugins is not this directory).
// The targets need not exist yet.
func (h *Host) LinkPlugins(dir string, names ...string) error {
	script := "set -e; mkdir -p /run/docker/plugins"
	for _, name := range names {
		script += fmt.Sprintf("; ln -sfn %s /run/docker/plugins/%s.sock", filepath.Join(dir, name+".sock"), name)
	}
	if out, err := h.Run("sh", "-c", script); err != nil {
		return fmt.Errorf("plugin symlinks in %s: %w %s", h.NS, err, out)
	}
	return nil
}

// PluginLinks lists /run/docker/plugins as dockerd sees it (ls -lL).
func (n *Node) PluginLinks() (string, error) {
	return n.Host.Run("ls", "-lL", "/run/docker/plugins")
}

// Activate posts /Plugin.Activate to the tether socket (retrying for 10 s
// while it does not accept) and returns the Implements list.
func (n *Node) Activate() ([]string, error) {
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var res struct{ Implements []string }
		code, body, err := n.Plugin("tether", "/Plugin.Activate", nil)
		if err != nil {
			last = err
			continue
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("/Plugin.Activate: %d %s", code, body)
		}
		if err := json.Unmarshal(body, &res); err != nil {
			return nil, fmt.Errorf("/Plugin.Activate: %w: %s", err, body)
		}
		return res.Implements, nil
	}
	return nil, fmt.Errorf("/Plugin.Activate on %s: %w", n.Socket("tether"), last)
}

// Plugin posts one plugin call (path like "/NetworkDriver.GetCapabilities")
// to socket name as dockerd does (Accept v1.2, no Content-Type) and returns
// the status and body.
func (n *Node) Plugin(name, path string, req any) (int, []byte, error) {
	var body io.Reader = http.NoBody
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return 0, nil, err
		}
		body = bytes.NewReader(b)
	}
	sock := n.Socket(name)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	r, err := http.NewRequest(http.MethodPost, "http://plugin"+path, body)
	if err != nil {
		return 0, nil, err
	}
	r.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	resp, err := c.Do(r)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// removeAll removes every container and every user-defined network through
// dockerd's API, while the plugin still answers (teardown).
func (n *Node) removeAll() {
	d := n.Docker
	if d == nil || d.Client == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if l, err := d.Client.ContainerList(ctx, client.ContainerListOptions{All: true}); err == nil {
		for _, c := range l.Items {
			if _, err := d.Client.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
				n.tb.Errorf("cleanup: docker rm -f %s: %v", c.ID, err)
			}
		}
	}
	if l, err := d.Client.NetworkList(ctx, client.NetworkListOptions{}); err == nil {
		for _, nw := range l.Items {
			if nw.Driver == "tether" || nw.Driver == "tether-overlay" {
				// best effort: a global network may be in use on another host
				_, _ = d.Client.NetworkRemove(ctx, nw.ID, client.NetworkRemoveOptions{})
			}
		}
	}
}

// RunOn is `docker run -d` through the API (ContainerCreate then
// ContainerStart) of Image running cmd on network, with address ip ("" =
// IPAM's choice). It returns the container's ID and the time of the two
// calls.
func (d *Docker) RunOn(name, netName string, ip netip.Addr, cmd ...string) (string, time.Duration, error) {
	es := &network.EndpointSettings{}
	if ip.IsValid() {
		es.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: ip}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cr, err := d.Client.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:             name,
		Config:           &container.Config{Image: Image, Cmd: cmd},
		HostConfig:       &container.HostConfig{NetworkMode: container.NetworkMode(netName)},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: es}},
	})
	if err != nil {
		return "", time.Since(start), fmt.Errorf("docker create %q on %q: %w", name, netName, err)
	}
	if _, err := d.Client.ContainerStart(ctx, cr.ID, client.ContainerStartOptions{}); err != nil {
		return cr.ID, time.Since(start), fmt.Errorf("docker start %q: %w", name, err)
	}
	return cr.ID, time.Since(start), nil
}

// PID is a running container's process ID (host PID namespace: dockerd
// shares the test's), for entering its network namespace.
func (d *Docker) PID(id string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := d.Client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return 0, err
	}
	if r.Container.State == nil || r.Container.State.Pid == 0 {
		return 0, fmt.Errorf("container %q is not running", id)
	}
	return r.Container.State.Pid, nil
}

// Addr is a container's IPv4 address on network netName (inspect).
func (d *Docker) Addr(id, netName string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := d.Client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return netip.Addr{}, err
	}
	if ns := r.Container.NetworkSettings; ns != nil {
		if es, ok := ns.Networks[netName]; ok && es != nil && es.IPAddress.IsValid() {
			return es.IPAddress, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("container %q has no address on %q", id, netName)
}

// Diagnose gathers what helps explain a plugin failure: the tail of the
// dockerd and Tether logs and the plugin directory as dockerd sees it.
func (n *Node) Diagnose() string {
	var b strings.Builder
	links, err := n.PluginLinks()
	fmt.Fprintf(&b, "/run/docker/plugins in %s: %s %v\n", n.Host.NS, links, err)
	fmt.Fprintf(&b, "dockerd log (tail):\n%s\n", tail(n.Docker.Log("dockerd"), 6000))
	fmt.Fprintf(&b, "tether log (tail):\n%s\n", tail(n.Tether.Log(), 6000))
	return b.String()
}
