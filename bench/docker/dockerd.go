package docker

// Docker as the issue asks for it: containerd (Debian's, CRI plugin off) and
// dockerd (built from the module proxy) started on a Host, every root in one
// temporary directory, and a daemon.json with
//
//	"features": {"containerd-snapshotter": false, "time-namespaces": false},
//	"firewall-backend": "nftables", "bip": "10.126.0.1/16",
//	"cgroup-parent": "/tether-bench-<suffix>", "exec-opts": ["native.cgroupdriver=cgroupfs"],
//	"userland-proxy-path": ".../docker-proxy", "storage-driver": "overlay2"
//
// so docker0, its nftables tables and every docker-proxy are in the bench
// namespace. The userland proxy stays on (Docker's default: one docker-proxy
// process per published port) unless the caller's extra keys turn it off.
// Containers use the default bridge network and the busybox image imported
// at start.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/tether-net/tether/internal/testutil"
)

// Image is the reference image's name in both engines.
const Image = "busybox:bench"

// Binding is one published TCP port: host 0.0.0.0:HostPort to the
// container's ContainerPort. The host address is explicit in every engine,
// so none of them also publishes on [::] (Docker does for an empty one).
type Binding struct{ HostPort, ContainerPort int }

// Bindings returns n bindings: host hostBase+i to container ctrBase+i.
func Bindings(n, hostBase, ctrBase int) []Binding {
	b := make([]Binding, n)
	for i := range b {
		b[i] = Binding{hostBase + i, ctrBase + i}
	}
	return b
}

// Flags returns the bindings as -p values (0.0.0.0:H:C).
func Flags(bs []Binding) []string {
	var out []string
	for _, b := range bs {
		out = append(out, "-p", fmt.Sprintf("0.0.0.0:%d:%d", b.HostPort, b.ContainerPort))
	}
	return out
}

// Docker is a running containerd + dockerd pair on its own Host.
type Docker struct {
	Host    *Host
	Dir     string // every root; socket files
	Socket  string // dockerd's API socket (unix)
	Client  *client.Client
	Version string // dockerd's, from /version
	Refs    Refs
	tb      testing.TB

	mu    sync.Mutex
	procs []*daemonProc // containerd, dockerd (started in this order)
}

type daemonProc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

// StartDocker starts containerd and dockerd on a new Host, imports the
// busybox image and registers a cleanup that removes every container,
// stops both daemons, kills what is left of the run and checks nothing is
// left mounted or running. extra adds or overrides daemon.json keys (e.g.
// "userland-proxy": false).
func StartDocker(tb testing.TB, refs Refs, extra map[string]any) *Docker {
	tb.Helper()
	return StartDockerOn(tb, NewHost(tb, "tth-dock"), refs, extra)
}

// StartDockerOn is StartDocker on a Host the caller made (NewHost,
// NewHostIn). The Docker's cleanup closes h.
func StartDockerOn(tb testing.TB, h *Host, refs Refs, extra map[string]any) *Docker {
	tb.Helper()
	dir, err := os.MkdirTemp("", "tdk-") // short: socket paths
	if err != nil {
		tb.Fatal(err)
	}
	d := &Docker{Host: h, Dir: dir, Socket: filepath.Join(dir, "docker.sock"), Refs: refs, tb: tb}
	tb.Cleanup(d.cleanup)
	ctrd := filepath.Join(dir, "containerd.sock")
	d.write("containerd.toml", fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "containerd/root"), filepath.Join(dir, "containerd/state"), ctrd, filepath.Join(dir, "containerd/opt")))
	cfg := map[string]any{
		"features":            map[string]bool{"containerd-snapshotter": false, "time-namespaces": false},
		"firewall-backend":    "nftables",
		"bip":                 "10.126.0.1/16",
		"cgroup-parent":       h.Cgroup,
		"exec-opts":           []string{"native.cgroupdriver=cgroupfs"},
		"userland-proxy-path": refs.DockerProxy,
		"storage-driver":      "overlay2",
	}
	for k, v := range extra {
		cfg[k] = v
	}
	conf, _ := json.MarshalIndent(cfg, "", "  ")
	d.write("daemon.json", string(conf))

	d.start("containerd", ctrd, refs.Containerd, "--config", filepath.Join(dir, "containerd.toml"))
	d.start("dockerd", d.Socket, refs.Dockerd, d.dockerdArgs()...)
	d.Client, err = client.New(client.WithHost("unix://" + d.Socket))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := d.Client.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		tb.Fatalf("dockerd version: %v\n%s", err, d.Log("dockerd"))
	}
	d.Version = v.Version
	d.importImage(ctx)
	return d
}

// dockerdArgs is dockerd's command line after the binary: every root in Dir.
func (d *Docker) dockerdArgs() []string {
	return []string{"--data-root", filepath.Join(d.Dir, "data"), "--exec-root", filepath.Join(d.Dir, "exec"),
		"--pidfile", filepath.Join(d.Dir, "dockerd.pid"), "-H", "unix://" + d.Socket,
		"--containerd", filepath.Join(d.Dir, "containerd.sock"), "--config-file", filepath.Join(d.Dir, "daemon.json")}
}

func (d *Docker) write(name, content string) {
	if err := os.WriteFile(filepath.Join(d.Dir, name), []byte(content), 0o644); err != nil {
		d.tb.Fatal(err)
	}
}

// start launches a daemon on the host (its log in Dir/NAME.log) and waits
// until sock accepts connections.
func (d *Docker) start(name, sock, bin string, args ...string) {
	d.tb.Helper()
	// appended: a restarted daemon's log follows its previous run's
	logf, err := os.OpenFile(filepath.Join(d.Dir, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		d.tb.Fatal(err)
	}
	cmd := d.Host.Command(context.Background(), bin, args...)
	// dockerd finds docker-proxy through the config, runc and the shim on PATH
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(d.Refs.DockerProxy)+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// its own process group: a ^C of the test does not reach it first
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		d.tb.Fatalf("start %s: %v", name, err)
	}
	p := &daemonProc{name: name, cmd: cmd, log: logf, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	d.mu.Lock()
	d.procs = append(d.procs, p)
	d.mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case <-p.done:
			d.tb.Fatalf("%s exited: %s", name, d.Log(name))
		default:
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.tb.Fatalf("%s did not answer on %s within 30s: %s", name, sock, d.Log(name))
}

// Log returns what daemon name ("containerd", "dockerd") printed so far.
func (d *Docker) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, name+".log"))
	return string(b)
}

func (d *Docker) importImage(ctx context.Context) {
	f, err := os.Open(d.Refs.Image)
	if err != nil {
		d.tb.Fatal(err)
	}
	defer f.Close()
	rc, err := d.Client.ImageImport(ctx, client.ImageImportSource{Source: f, SourceName: "-"}, Image, client.ImageImportOptions{})
	if err != nil {
		d.tb.Fatalf("docker import: %v", err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || strings.Contains(string(b), `"error"`) {
		d.tb.Fatalf("docker import: %v %s", err, b)
	}
}

// Run is `docker run -d` through the API: ContainerCreate then
// ContainerStart of Image running cmd on the default bridge network, with
// the bindings published. It returns the container's ID and the time of
// the two calls.
func (d *Docker) Run(name string, bs []Binding, cmd ...string) (string, time.Duration, error) {
	exposed := network.PortSet{}
	ports := network.PortMap{}
	any4 := netip.IPv4Unspecified()
	for _, b := range bs {
		p, err := network.ParsePort(strconv.Itoa(b.ContainerPort) + "/tcp")
		if err != nil {
			return "", 0, err
		}
		exposed[p] = struct{}{}
		ports[p] = append(ports[p], network.PortBinding{HostIP: any4, HostPort: strconv.Itoa(b.HostPort)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cr, err := d.Client.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:       name,
		Config:     &container.Config{Image: Image, Cmd: cmd, ExposedPorts: exposed},
		HostConfig: &container.HostConfig{PortBindings: ports},
	})
	if err != nil {
		return "", time.Since(start), fmt.Errorf("docker create %q: %w", name, err)
	}
	if _, err := d.Client.ContainerStart(ctx, cr.ID, client.ContainerStartOptions{}); err != nil {
		return cr.ID, time.Since(start), fmt.Errorf("docker start %q: %w", name, err)
	}
	return cr.ID, time.Since(start), nil
}

// Remove is `docker rm -f` through the API (ContainerRemove, Force).
func (d *Docker) Remove(id string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	_, err := d.Client.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true})
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("docker rm -f %q: %w", id, err)
	}
	return took, nil
}

// Published counts a running container's published host ports (inspect).
func (d *Docker) Published(id string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := d.Client.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return 0, err
	}
	c := r.Container
	if c.State == nil || !c.State.Running {
		return 0, fmt.Errorf("container %q is not running", id)
	}
	n := 0
	if c.NetworkSettings != nil {
		for _, bs := range c.NetworkSettings.Ports {
			for _, b := range bs {
				if b.HostPort != "" {
					n++
				}
			}
		}
	}
	return n, nil
}

// CLI runs the stock docker CLI against this daemon (from the test's
// namespace: the socket is a file) and returns its output and run time.
func (d *Docker) CLI(args ...string) (string, time.Duration, error) {
	if d.Refs.DockerCLI == "" {
		return "", 0, errors.New("no docker CLI on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Refs.DockerCLI, append([]string{"-H", "unix://" + d.Socket}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(d.Dir, "cli"))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return string(out), took, fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), took, nil
}

// cleanup removes every container through the API, stops dockerd then
// containerd (SIGTERM, then SIGKILL after 20 s), closes the Host (which
// kills and reports anything of the run still running, e.g. a shim) and
// checks no mount is left under Dir before deleting it.
func (d *Docker) cleanup() {
	tb := d.tb
	if d.Client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if l, err := d.Client.ContainerList(ctx, client.ContainerListOptions{All: true}); err == nil {
			for _, c := range l.Items {
				if _, err := d.Client.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
					tb.Errorf("cleanup: docker rm -f %s: %v", c.ID, err)
				}
			}
		}
		cancel()
		d.Client.Close()
	}
	d.mu.Lock()
	procs := d.procs
	d.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			tb.Errorf("cleanup: %s did not stop within 20s of SIGTERM; killing it", p.name)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		p.log.Close()
	}
	if err := d.Host.Close(); err != nil {
		tb.Errorf("cleanup: %v", err)
	}
	if m := testutil.Mounted(d.Dir); len(m) > 0 {
		tb.Errorf("cleanup: mounts left under %s: %v", d.Dir, m)
		if err := testutil.UnmountUnder(d.Dir); err != nil {
			tb.Error(err)
		}
	}
	if tb.Failed() {
		tb.Logf("dockerd log:\n%s", tail(d.Log("dockerd"), 4000))
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		tb.Errorf("cleanup: %v", err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
