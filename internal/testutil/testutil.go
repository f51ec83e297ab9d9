// Package testutil is the namespace harness of Tether's integration tests:
// test-owned network namespaces standing for hosts, the real tether binary
// run as a daemon inside one, a CLI runner, and cleanup that leaves nothing
// behind (namespaces, mounts, processes).
//
// Tests that need root call RequireRoot: without root they skip, except when
// TETHER_E2E=1, where a missing privilege is a failure.
package testutil

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil/gate"
)

// E2E reports whether the run demands integration tests (TETHER_E2E=1).
// It is gate.E2E (packages testutil cannot serve use gate directly).
func E2E() bool { return gate.E2E() }

// RequireRoot fails (TETHER_E2E=1) or skips the test without root: gate.RequireRoot.
func RequireRoot(t testing.TB) {
	t.Helper()
	gate.RequireRoot(t)
}

// Suffix returns a short random suffix for names of namespaces, links and
// sockets, so parallel tests never collide.
func Suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NetNS creates a named network namespace (ip netns add) with loopback up and
// deletes it when the test ends. It returns the name.
func NetNS(t testing.TB, prefix string) string {
	t.Helper()
	name := prefix + "-" + Suffix()
	Must(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete namespace %s: %v: %s", name, err, out)
		}
	})
	Must(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// Must runs a command and fails the test on error; it returns the output.
func Must(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InNS runs a command inside a named namespace (ip netns exec).
func InNS(ns string, name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	return string(out), err
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/tether once per test binary and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "tether-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "tether")
		cmd := exec.Command("go", "build", "-tags", "osusergo,netgo", "-o", binPath, "./cmd/tether")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build tether: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// RemoveBinary deletes the binary Binary built; call it from TestMain.
func RemoveBinary() {
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// UnmountUnder lazily unmounts every mount at or below dir (deepest first).
func UnmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			mounts = append(mounts, fields[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return fmt.Errorf("unmount %s: %w", mounts[i], err)
		}
	}
	return nil
}

// Mounted lists the mounts at or below dir.
func Mounted(dir string) []string {
	m, _ := netns.MountedUnder(dir)
	return m
}
