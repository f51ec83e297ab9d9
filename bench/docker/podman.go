package docker

// Podman as the issue asks for it: Debian's podman, rootful, with netavark
// (which programs iptables in the bench namespace and reserves the host
// ports in conmon), run as a command on a Host with every path in one
// temporary directory: --root, --runroot, and a containers.conf
// (CONTAINERS_CONF) with cgroupfs, file events, tmp_dir, runtime runc and
// network_backend netavark. Containers use the default network "podman"
// (10.88.0.0/16, no DNS), like docker0 and Tether's "bridge".
//
// Two settings differ from a stock run, both to fit the VM, neither on the
// measured path: runtime runc (Debian's crun refuses a hybrid cgroup v1/v2
// host: "cgroups in hybrid mode not supported") and --ulimit host (podman
// otherwise asks the runtime for RLIMIT_NOFILE/NPROC of 1048576/4194304,
// which fails here, the sandbox lacking CAP_SYS_RESOURCE; Docker sets no
// rlimits by default, which is what --ulimit host gives).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// PodmanImage is the reference image's name in Podman's store.
const PodmanImage = "localhost/" + Image

// Podman is a rootful podman configuration on its own Host.
type Podman struct {
	Host     *Host
	Dir      string
	Version  string // podman's
	Netavark string // netavark --version
	Refs     Refs
	tb       testing.TB
	global   []string // flags before the podman subcommand
}

// StartPodman prepares podman on a new Host, imports the busybox image and
// registers a cleanup that removes every container, kills what is left of
// the run and checks nothing is left mounted or running.
func StartPodman(tb testing.TB, refs Refs) *Podman {
	tb.Helper()
	h := NewHost(tb, "tth-podm")
	dir, err := os.MkdirTemp("", "tpm-")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Podman{Host: h, Dir: dir, Refs: refs, tb: tb}
	tb.Cleanup(p.cleanup)
	conf := filepath.Join(dir, "containers.conf")
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		tb.Fatal(err)
	}
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
network_backend = "netavark"
network_config_dir = %q
`, filepath.Join(dir, "events.log"), tmp, tmp, filepath.Join(dir, "networks"))), 0o644); err != nil {
		tb.Fatal(err)
	}
	p.global = []string{"CONTAINERS_CONF=" + conf, "TMPDIR=" + tmp, refs.Podman,
		"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "runroot"), "--storage-driver", "overlay"}
	out, _, err := p.Podman("version", "--format", "{{.Client.Version}}")
	if err != nil {
		tb.Fatal(err)
	}
	p.Version = strings.TrimSpace(out)
	if out, err := h.Run("/usr/lib/podman/netavark", "--version"); err == nil {
		p.Netavark = strings.TrimSpace(out)
	}
	if out, _, err := p.Podman("import", "-q", refs.Image, PodmanImage); err != nil {
		tb.Fatalf("podman import: %v %s", err, out)
	}
	return p
}

// Podman runs one podman command on the host and returns its output and
// the time of the whole process (nsenter included: LaunchOverhead).
func (p *Podman) Podman(args ...string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := p.Host.Command(ctx, "env", append(append([]string{}, p.global...), args...)...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return string(out), took, fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), took, nil
}

// LaunchOverhead times what Podman's figures include besides podman itself:
// `nsenter … env true` on the host.
func (p *Podman) LaunchOverhead() time.Duration {
	start := time.Now()
	_, _ = p.Host.Run("env", "true")
	return time.Since(start)
}

// Run is `podman run -d` of PodmanImage running cmd on the default network
// with the bindings published; it returns the container ID and the time.
func (p *Podman) Run(name string, bs []Binding, cmd ...string) (string, time.Duration, error) {
	args := []string{"run", "-d", "--name", name, "--ulimit", "host", "--cgroup-parent", p.Host.Cgroup}
	args = append(append(append(args, Flags(bs)...), PodmanImage), cmd...)
	out, took, err := p.Podman(args...)
	return strings.TrimSpace(out), took, err
}

// Remove is `podman rm -f -t 0` (kill at once, as docker rm -f does).
func (p *Podman) Remove(name string) (time.Duration, error) {
	_, took, err := p.Podman("rm", "-f", "-t", "0", name)
	return took, err
}

// Published counts a running container's published host ports (podman port).
func (p *Podman) Published(name string) (int, error) {
	out, _, err := p.Podman("inspect", "--format", "{{.State.Running}}", name)
	if err != nil {
		return 0, err
	}
	if strings.TrimSpace(out) != "true" {
		return 0, fmt.Errorf("container %q is not running: %s", name, out)
	}
	out, _, err = p.Podman("port", name)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "->") {
			n++
		}
	}
	return n, nil
}

// cleanup removes every container, closes the Host (killing and reporting
// anything of the run still running, e.g. a conmon) and checks no mount is
// left under Dir before deleting it.
func (p *Podman) cleanup() {
	tb := p.tb
	if p.global != nil {
		if out, _, err := p.Podman("rm", "-a", "-f", "-t", "0"); err != nil {
			tb.Errorf("cleanup: %v %s", err, out)
		}
	}
	if err := p.Host.Close(); err != nil {
		tb.Errorf("cleanup: %v", err)
	}
	if m := testutil.Mounted(p.Dir); len(m) > 0 {
		tb.Errorf("cleanup: mounts left under %s: %v", p.Dir, m)
		if err := testutil.UnmountUnder(p.Dir); err != nil {
			tb.Error(err)
		}
	}
	if err := os.RemoveAll(p.Dir); err != nil {
		tb.Errorf("cleanup: %v", err)
	}
}
