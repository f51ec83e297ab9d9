package e2e

// A real runtime on Tether's CNI plugin: Debian's Podman 4.3 with its CNI
// backend (network_backend "cni", a conflist in a private network config
// dir, cni_plugin_dirs naming the test's bin dir), rootful, in a
// bench/docker Host (its own network namespace and a private mount
// namespace with tmpfs on /run and /var/lib/containers). Podman makes its
// containers' namespace files under /run/netns, which exists only in that
// mount namespace, so the Tether daemon runs in the Host's network AND
// mount namespaces (as on a real host, where the runtime and the daemon
// share the mount table). libcni's cache (/var/lib/cni) is a test
// directory bound on /var/lib inside the Host.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bdocker "github.com/tether-net/tether/bench/docker"
	"github.com/tether-net/tether/internal/testutil"
)

// podmanRefs are what the Podman test runs: Debian's podman, conmon,
// runc, and the busybox rootfs tarball of bench/refs/busybox.sh.
type podmanRefs struct {
	podman, image string
}

func requirePodman(t *testing.T) podmanRefs {
	t.Helper()
	root := os.Getenv("TETHER_BENCH_REFS")
	if root == "" {
		root = "/opt/tether-bench"
	}
	r := podmanRefs{image: filepath.Join(root, "busybox.tar")}
	var missing []string
	if _, err := os.Stat(r.image); err != nil {
		missing = append(missing, r.image)
	}
	for _, tool := range []string{"podman", "conmon", "runc"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			missing = append(missing, tool+" (PATH)")
		}
		if tool == "podman" {
			r.podman = p
		}
	}
	if len(missing) > 0 {
		msg := "Podman test references missing (sudo bench/refs/podman.sh): " + strings.Join(missing, ", ")
		if testutil.E2E() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return r
}

// hostTether is a Tether daemon run inside a Host's network and mount
// namespaces (nsenter --target HOLDER --mount --net). d serves the CLI and
// the harness directories; d.Start is not used.
type hostTether struct {
	d      *testutil.Daemon
	cmd    *exec.Cmd
	log    *testutil.SyncBuffer
	exited chan struct{}
}

func startTetherOn(t *testing.T, h *bdocker.Host) *hostTether {
	t.Helper()
	d := testutil.NewDaemon(t, h.NS)
	cf := filepath.Join(d.Dir, "empty.json")
	if err := os.WriteFile(cf, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	ht := &hostTether{d: d, log: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	ht.cmd = h.Command(context.Background(), d.Bin, "daemon", "--data-root", filepath.Join(d.Dir, "data"),
		"--exec-root", filepath.Join(d.Dir, "exec"), "-H", "unix://"+d.Socket,
		"--pidfile", filepath.Join(d.Dir, "tether.pid"), "--config-file", cf)
	ht.cmd.Stdout, ht.cmd.Stderr = ht.log, ht.log
	if err := ht.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = ht.cmd.Wait(); close(ht.exited) }()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := d.Tether("version"); err == nil {
			return ht
		}
		select {
		case <-ht.exited:
			t.Fatalf("tether daemon in %s exited:\n%s", h.NS, ht.log.String())
		default:
		}
		if time.Now().After(deadline) {
			ht.stop()
			t.Fatalf("tether daemon in %s does not answer after 15s:\n%s", h.NS, ht.log.String())
		}
	}
}

// stop removes every sandbox, then stops the daemon (SIGTERM, SIGKILL
// after 10 s); it returns what went wrong.
func (ht *hostTether) stop() []string {
	var errs []string
	if out, err := ht.d.Tether("sandbox", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			if o, err := ht.d.Tether("rm", "-f", id); err != nil {
				errs = append(errs, fmt.Sprintf("rm -f %s: %v %s", id, err, o))
			}
		}
	}
	_ = ht.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ht.exited:
	case <-time.After(10 * time.Second):
		_ = ht.cmd.Process.Kill()
		<-ht.exited
		errs = append(errs, "tether daemon ignored SIGTERM for 10s")
	}
	return errs
}

// cniPodman is rootful podman with the CNI backend on a Host.
type cniPodman struct {
	t      *testing.T
	h      *bdocker.Host
	dir    string
	global []string // env and podman's global flags
}

// startCNIPodman writes the private containers.conf (CNI backend, plugins
// from binDir, configs in confDir), binds dir/varlib on /var/lib inside
// the Host (libcni's cache and Podman's blob cache land there) and imports
// the busybox image.
func startCNIPodman(t *testing.T, h *bdocker.Host, refs podmanRefs, dir, binDir, confDir string) *cniPodman {
	t.Helper()
	p := &cniPodman{t: t, h: h, dir: dir}
	tmp, varLib := filepath.Join(dir, "tmp"), filepath.Join(dir, "varlib")
	for _, d := range []string{tmp, filepath.Join(varLib, "cni"), filepath.Join(varLib, "containers")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := h.Run("mount", "--bind", varLib, "/var/lib"); err != nil {
		t.Fatalf("bind %s on /var/lib in %s: %v %s", varLib, h.NS, err, out)
	}
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
tmp_dir = %q
image_copy_tmp_dir = %q
runtime = "runc"
[network]
network_backend = "cni"
network_config_dir = %q
cni_plugin_dirs = [%q]
`, filepath.Join(dir, "events.log"), tmp, tmp, confDir, binDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	p.global = []string{"CONTAINERS_CONF=" + conf, "TMPDIR=" + tmp, refs.podman,
		"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "runroot"), "--storage-driver", "overlay",
		"--network-backend", "cni", "--network-config-dir", confDir}
	t.Logf("%s", p.must("version", "--format", "podman {{.Client.Version}}"))
	p.must("import", "-q", refs.image, bdocker.PodmanImage)
	return p
}

// run runs one podman command in the Host and returns its output.
func (p *cniPodman) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := p.h.Command(ctx, "env", append(append([]string{}, p.global...), args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func (p *cniPodman) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// TestCNIPodman: two busybox containers on a Tether network through
// Podman's CNI backend ping each other by name and a `tether run` sandbox
// by name (and it them), a published port answers from outside, and
// `podman rm -f` leaves nothing in Tether.
func TestCNIPodman(t *testing.T) {
	refs := requireCNIRefs(t)
	prefs := requirePodman(t)
	h := bdocker.NewHost(t, "tth-cpod")
	out := testutil.Outside(t, h.NS)
	ht := startTetherOn(t, h)
	d := ht.d
	dir, err := os.MkdirTemp("", "tether-cpod-")
	if err != nil {
		t.Fatal(err)
	}
	k := newCNIKit(t, d, h.NS, refs)
	var p *cniPodman
	t.Cleanup(func() {
		if p != nil {
			if out, err := p.run("rm", "-a", "-f", "-t", "0"); err != nil {
				t.Errorf("cleanup: %v %s", err, out)
			}
		}
		for _, e := range ht.stop() {
			t.Errorf("cleanup: %s", e)
		}
		if t.Failed() {
			t.Logf("tether daemon log:\n%s", ht.log.String())
		}
		if err := h.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if m := testutil.Mounted(dir); len(m) > 0 {
			t.Errorf("cleanup: mounts left under %s: %v", dir, m)
		}
		_ = os.RemoveAll(dir)
	})

	d.MustTether("network", "create", "--subnet", "10.134.0.0/24", "tnet")
	runDetached(t, d, "web", "--network", "tnet", "--", "sleep", "3600")
	// Podman 4.3 vendors libcni 1.1: configurations up to cniVersion 1.0.0
	k.conflist(t, "tnet", "1.0.0", k.tether("tnet"))
	p = startCNIPodman(t, h, prefs, dir, k.binDir, k.confDir)
	t.Logf("podman network ls:\n%s", p.must("network", "ls"))

	for _, name := range []string{"c1", "c2"} {
		p.runHTTPD(t, ht, name)
	}
	var sbs []string
	for n := range listed(t, d) {
		sbs = append(sbs, n)
	}
	t.Logf("tether sandboxes: %v; attachments: %s", sbs, attachmentsJSON(t, d))
	t.Logf("c1 /etc/resolv.conf: %s", p.must("exec", "c1", "cat", "/etc/resolv.conf"))
	for _, pair := range [][2]string{{"c1", "c2"}, {"c2", "c1"}, {"c1", "web"}, {"c2", "web"}} {
		if out, err := p.run("exec", pair[0], "ping", "-c1", "-W2", pair[1]); err != nil {
			t.Errorf("%s cannot ping %s by name: %v %s", pair[0], pair[1], err, out)
		}
	}
	for _, c := range []string{"c1", "c2"} {
		if !ping(d, "web", c) {
			t.Errorf("sandbox web cannot ping %s by name", c)
		}
	}

	// -p: Podman (rootful) binds every published host port itself after
	// the CNI ADD and hands the sockets to conmon, as it does with its own
	// backends; the port must still reach the container from outside.
	t.Run("publish", func(t *testing.T) {
		p.runHTTPD(t, ht, "c3", "-p", "18090:80")
		testutil.ExpectPage(t, out, fmt.Sprintf("%s:18090", uplinkAddr), "bench\n", true)
		p.must("rm", "-f", "-t", "0", "c3")
		testutil.ExpectPage(t, out, fmt.Sprintf("%s:18090", uplinkAddr), "", false)
	})

	p.must("rm", "-f", "-t", "0", "c1", "c2")
	if got := listed(t, d); len(got) != 1 || !got["web"] {
		t.Errorf("after podman rm -f, tether sandboxes %v, want only web", got)
	}
	if ids := attachedIDs(t, d); len(ids) != 0 {
		t.Errorf("after podman rm -f, CNI attachments %v", ids)
	}
}

// runHTTPD runs busybox httpd (serving "bench\n") as container name on
// tnet, with more podman run flags; a failure fails t with the daemon's log.
func (p *cniPodman) runHTTPD(t *testing.T, ht *hostTether, name string, flags ...string) {
	t.Helper()
	args := append([]string{"run", "-d", "--name", name, "--network", "tnet", "--ulimit", "host", "--cgroup-parent", p.h.Cgroup}, flags...)
	if _, err := p.run(append(args, bdocker.PodmanImage, "httpd", "-f", "-p", "80", "-h", "/var/www")...); err != nil {
		t.Fatalf("%v\ntether daemon log (tail):\n%s", err, tailLines(ht.log.String(), 20))
	}
}

func attachmentsJSON(t *testing.T, d *testutil.Daemon) string {
	b, _ := json.Marshal(cniAttachments(t, d))
	return string(b)
}
