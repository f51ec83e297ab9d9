package docker

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/testutil"
)

// Refs locates what bench/refs/docker.sh and bench/refs/podman.sh install.
type Refs struct {
	Dir         string // $TETHER_BENCH_REFS, default /opt/tether-bench
	Dockerd     string // Dir/docker/bin/dockerd
	DockerProxy string // Dir/docker/bin/docker-proxy
	Containerd  string // Debian's, on PATH
	Podman      string // Debian's, on PATH
	DockerCLI   string // the stock docker CLI on PATH ("" if none): CLI rows only
	Image       string // Dir/busybox.tar, the rootfs both engines import
}

// FindRefs looks the references up; missing lists what is not there.
func FindRefs() (r Refs, missing []string) {
	r.Dir = os.Getenv("TETHER_BENCH_REFS")
	if r.Dir == "" {
		r.Dir = "/opt/tether-bench"
	}
	file := func(p string) string {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
		missing = append(missing, p)
		return ""
	}
	path := func(name string) string {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, name+" (PATH)")
		}
		return p
	}
	r.Dockerd = file(filepath.Join(r.Dir, "docker/bin/dockerd"))
	r.DockerProxy = file(filepath.Join(r.Dir, "docker/bin/docker-proxy"))
	r.Image = file(filepath.Join(r.Dir, "busybox.tar"))
	r.Containerd = path("containerd")
	for _, tool := range []string{"runc", "containerd-shim-runc-v2", "nft", "unshare", "nsenter"} {
		path(tool)
	}
	r.Podman = path("podman")
	for _, tool := range []string{"conmon", "iptables"} {
		path(tool)
	}
	r.DockerCLI, _ = exec.LookPath("docker")
	return r, missing
}

// RequireRefs returns the references or, when any is missing, fails the
// test under TETHER_E2E=1 (a missing reference is a failure there) and
// skips it otherwise. It also requires root.
func RequireRefs(tb testing.TB) Refs {
	tb.Helper()
	testutil.RequireRoot(tb)
	r, missing := FindRefs()
	if len(missing) == 0 {
		return r
	}
	msg := "benchmark references missing (install: sudo bench/refs/docker.sh && sudo bench/refs/podman.sh): " +
		strings.Join(missing, ", ")
	if testutil.E2E() {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return r
}
