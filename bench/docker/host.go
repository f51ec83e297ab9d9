package docker

// A Host is where one reference engine runs: a network namespace made with
// `ip netns add` and a private mount namespace held open by one sleeping
// process. The holder is started as
//
//	unshare --mount --propagation private -- nsenter --net=/run/netns/NS -- sh -c holderScript
//
// and the script, before it execs `sleep infinity`, sets the namespace's
// ip_forward (a per-namespace sysctl), mounts private tmpfs on /run and
// /var/lib/containers (paths the engines use whatever their flags say:
// namespace files, lock files, podman's blob cache), and mounts a sysfs of
// the bench namespace on /sys with the host's cgroup mounts moved beneath it
// (dockerd and runc need them; `ip netns exec` would remount /sys without
// them). The engine's processes enter both namespaces with
// `nsenter --target HOLDER --mount --net`, so their mounts never reach the
// host's mount table and go away with the namespace.
//
// What the engine leaves behind is found by identity, not by name: the
// processes whose mount namespace is the holder's (daemons, shims, proxies,
// conmon) and those in the run's cgroup parent (containers).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

const holderScript = `set -e
echo 1 > /proc/sys/net/ipv4/ip_forward
mount -t tmpfs -o mode=755 tether-bench /run
mkdir -p /var/lib/containers
mount -t tmpfs -o mode=700 tether-bench /var/lib/containers
mkdir /run/cgroup
mount --rbind /sys/fs/cgroup /run/cgroup
umount -l /sys
mount -t sysfs sysfs /sys
mount --move /run/cgroup /sys/fs/cgroup
rmdir /run/cgroup
echo ready
exec sleep infinity
`

// Host is a test-owned host for one reference engine.
type Host struct {
	NS     string // network namespace (/run/netns/NS)
	Cgroup string // cgroup parent for the engine's containers, "/tether-bench-<suffix>"
	tb     testing.TB
	holder *exec.Cmd
	exited chan struct{}
	mntNS  string // the holder's mount namespace, as readlink /proc/PID/ns/mnt shows it
	closed sync.Once
}

// NewHost creates the network namespace and starts the holder. The test's
// cleanup deletes the namespace after closing the Host (the engine's own
// cleanup, which runs first, normally has).
func NewHost(tb testing.TB, prefix string) *Host {
	tb.Helper()
	return NewHostIn(tb, testutil.NetNS(tb, prefix))
}

// NewHostIn starts the holder in an existing network namespace ns (an
// underlay member's, testutil.Underlay.Join, for multi-host runs); whoever
// made ns deletes it. The holder sets ns's ip_forward.
func NewHostIn(tb testing.TB, ns string) *Host {
	tb.Helper()
	h := &Host{NS: ns, Cgroup: "/tether-bench-" + testutil.Suffix(), tb: tb, exited: make(chan struct{})}
	h.holder = exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"nsenter", "--net=/run/netns/"+ns, "--", "sh", "-c", holderScript)
	var errOut bytes.Buffer
	h.holder.Stderr = &errOut
	out, err := h.holder.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.holder.Start(); err != nil {
		tb.Fatalf("start namespace holder: %v", err)
	}
	tb.Cleanup(func() {
		if err := h.Close(); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
		_ = h.holder.Wait()
		close(h.exited)
	}()
	select {
	case line := <-ready:
		if strings.TrimSpace(line) != "ready" {
			<-h.exited
			tb.Fatalf("namespace holder for %s failed: %s", ns, errOut.String())
		}
	case <-time.After(10 * time.Second):
		_ = h.holder.Process.Kill()
		tb.Fatalf("namespace holder for %s: not ready after 10s: %s", ns, errOut.String())
	}
	h.mntNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", h.holder.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	if self, _ := os.Readlink("/proc/self/ns/mnt"); self == h.mntNS {
		tb.Fatalf("namespace holder shares the test's mount namespace %s", self)
	}
	return h
}

// Command prepares name with args inside the host's network and mount
// namespaces (nsenter --target HOLDER --mount --net).
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	pid := strconv.Itoa(h.holder.Process.Pid)
	return exec.CommandContext(ctx, "nsenter", append([]string{"--target", pid, "--mount", "--net", "--", name}, args...)...)
}

// Run runs a command inside the host (2-minute limit) and returns its
// combined output.
func (h *Host) Run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Leftovers lists the processes the engine started that still run: those
// in the holder's mount namespace (but the holder) and those in the run's
// cgroup parent.
func (h *Host) Leftovers() []int {
	seen := map[int]bool{}
	var pids []int
	add := func(pid int) {
		if pid > 0 && pid != h.holder.Process.Pid && pid != os.Getpid() && !seen[pid] {
			seen[pid] = true
			pids = append(pids, pid)
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns == h.mntNS {
			add(pid)
		}
	}
	for _, dir := range h.cgroupDirs() {
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				pid, _ := strconv.Atoi(f)
				add(pid)
			}
			return nil
		})
	}
	return pids
}

// KillLeftovers sends SIGKILL to Leftovers and waits (bounded) until they
// are gone; it returns a description of each process it killed.
func (h *Host) KillLeftovers() []string {
	pids := h.Leftovers()
	var killed []string
	for _, pid := range pids {
		d, ok := describe(pid)
		if !ok {
			continue // gone (and reaped) since the sweep read it
		}
		killed = append(killed, d)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(10 * time.Second); len(h.Leftovers()) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	return killed
}

// describe is "PID cmdline", or "PID [comm]" for a process without a
// command line (one that has exited and is not yet reaped, a zombie, has
// none).
// false when the process is gone.
func describe(pid int) (string, bool) {
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if c := strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")); c != "" {
		return fmt.Sprintf("%d %s", pid, c), true
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "", false
	}
	return fmt.Sprintf("%d [%s]", pid, strings.TrimSpace(string(comm))), true
}

// referenceTool: a killed process ("PID cmdline" or "PID [comm]") is
// Podman's own (podman, conmon), not one Tether or a test started.
func referenceTool(killed string) bool {
	f := strings.Fields(killed)
	if len(f) < 2 {
		return false
	}
	base := filepath.Base(strings.TrimSuffix(strings.TrimPrefix(f[1], "["), "]"))
	return base == "podman" || base == "conmon"
}

// Close kills what the engine left running, stops the holder (the mount
// namespace and every mount in it go with it), removes the run's cgroups
// and reports what it had to clean up. The namespace itself is deleted by
// the cleanup NewHost registered. Only the first call does anything.
func (h *Host) Close() error {
	var err error
	h.closed.Do(func() { err = h.close() })
	return err
}

func (h *Host) close() error {
	var errs []error
	if killed := h.KillLeftovers(); len(killed) > 0 {
		errs = append(errs, fmt.Errorf("processes left in %s, killed: %s", h.NS, strings.Join(killed, "; ")))
	}
	_ = h.holder.Process.Kill()
	select {
	case <-h.exited:
	case <-time.After(10 * time.Second):
		errs = append(errs, fmt.Errorf("namespace holder %d of %s did not exit", h.holder.Process.Pid, h.NS))
	}
	if len(h.Leftovers()) > 0 {
		// Podman's conmon runs a container's exit command (`podman ...
		// container cleanup`) when the container ends, which can be after
		// the first sweep: late processes of the reference tools are
		// killed too; any other late process is reported.
		for _, k := range h.KillLeftovers() {
			if !referenceTool(k) {
				errs = append(errs, fmt.Errorf("process appeared in %s after the first sweep, killed: %s", h.NS, k))
			}
		}
	}
	if left := h.Leftovers(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes of %s still running after SIGKILL: %v", h.NS, left))
	}
	if err := h.removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cgroupDirs lists the run's cgroup parent in every cgroup hierarchy
// mounted on the host (one per v1 controller, or the v2 tree), where present.
func (h *Host) cgroupDirs() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// mountinfo: ... mount-point(4) ... "-" fstype source options
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				dir := filepath.Join(fields[4], h.Cgroup)
				if st, err := os.Stat(dir); err == nil && st.IsDir() {
					dirs = append(dirs, dir)
				}
			}
		}
	}
	return dirs
}

// removeCgroups removes the run's cgroup parent, deepest first, in every
// hierarchy (rmdir: cgroups hold no files to delete).
func (h *Host) removeCgroups() error {
	var errs []error
	for _, dir := range h.cgroupDirs() {
		var sub []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				sub = append(sub, p)
			}
			return nil
		})
		for i := len(sub) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(sub[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", sub[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
