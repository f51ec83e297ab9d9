package proc_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/netns"
	_ "github.com/tether-net/tether/internal/nsenter"
	"github.com/tether-net/tether/internal/proc"
	"github.com/tether-net/tether/internal/testutil"
)

// The test binary is also the helper that Setup and Start re-execute.
func TestMain(m *testing.M) {
	proc.Main()
	os.Exit(m.Run())
}

// fixture is a temp dir with a hosts file and a PrepareDir'd ns dir
// (testutil.NSDir: cleanup deletes every namespace file, releases the dir,
// and checks that no mount under it is left); no mount may be left under
// the temp dir either.
type fixture struct {
	dir, nsDir, hosts string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), nsDir: testutil.NSDir(t)}
	f.hosts = filepath.Join(f.dir, "hosts")
	t.Cleanup(func() {
		if ms := testutil.Mounted(f.dir); len(ms) > 0 {
			t.Errorf("mounts left under %q: %v", f.dir, ms)
		}
	})
	return f
}

// sandbox creates netns NAME-net. With setup it also writes the hosts file
// and starts a holder process (sleep) in new mount and UTS namespaces, and
// returns a spec that joins them, as the engine does for every process after
// a sandbox's first; the holder is killed (by PID) at cleanup.
func (f *fixture) sandbox(t testing.TB, name, hosts string, setup bool) proc.Spec {
	t.Helper()
	spec := proc.Spec{NetNS: filepath.Join(f.nsDir, name+"-net")}
	if err := netns.Create(spec.NetNS); err != nil {
		t.Fatal(err)
	}
	if !setup {
		return spec
	}
	if err := os.WriteFile(f.hosts, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	holder := spec
	holder.New = f.newNS(name)
	holder.Args = []string{"sleep", "3600"}
	p, err := proc.Start(holder)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Signal(syscall.SIGKILL); _, _ = p.Wait() })
	return join(t, spec, p.Pid)
}

// newNS describes new namespaces with the fixture's hosts file.
func (f *fixture) newNS(hostname string) *proc.NewNS {
	return &proc.NewNS{Hostname: hostname, Files: map[string]string{"/etc/hosts": f.hosts}, NSDir: f.nsDir}
}

// join returns spec set to join the mount and UTS namespaces of pid.
func join(t testing.TB, spec proc.Spec, pid int) proc.Spec {
	t.Helper()
	for kind, dst := range map[string]**os.File{"mnt": &spec.MntNS, "uts": &spec.UTSNS} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		*dst = f
	}
	return spec
}

// run runs args in the sandbox and returns stdout, stderr and exit code.
func run(t testing.TB, spec proc.Spec, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	spec.Args, spec.Stdout, spec.Stderr = args, &out, &errb
	p, err := proc.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func uniqueName(t testing.TB) string {
	return fmt.Sprintf("tt%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
}

// netDevNames lists the interfaces in /proc/net/dev output.
func netDevNames(dev string) []string {
	var names []string
	for _, line := range strings.Split(dev, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, "|") {
			names = append(names, strings.TrimSpace(name))
		}
	}
	return names
}

func TestSandbox(t *testing.T) {
	f := newFixture(t)
	name := uniqueName(t)
	hosts := "127.0.0.1\tlocalhost\n10.99.0.2\t" + name + "\n"
	hostHostsBefore, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	hostName, _ := os.Hostname()
	spec := f.sandbox(t, name, hosts, true)

	t.Run("hosts", func(t *testing.T) {
		if out, errs, code := run(t, spec, "cat", "/etc/hosts"); out != hosts || code != 0 {
			t.Fatalf("cat /etc/hosts = %q (code %d, stderr %q), want %q", out, code, errs, hosts)
		}
	})
	t.Run("hostname", func(t *testing.T) {
		if out, _, code := run(t, spec, "hostname"); strings.TrimSpace(out) != name || code != 0 {
			t.Fatalf("hostname = %q (code %d), want %q", out, code, name)
		}
		if now, _ := os.Hostname(); now != hostName {
			t.Fatalf("host hostname changed to %q", now)
		}
	})
	t.Run("only lo", func(t *testing.T) {
		out, _, code := run(t, spec, "cat", "/proc/self/net/dev")
		if got := netDevNames(out); code != 0 || len(got) != 1 || got[0] != "lo" {
			t.Fatalf("interfaces = %v (code %d), want [lo]", got, code)
		}
	})
	t.Run("exit code", func(t *testing.T) {
		if _, _, code := run(t, spec, "sh", "-c", "exit 3"); code != 3 {
			t.Fatalf("exit code %d, want 3", code)
		}
	})
	t.Run("not found", func(t *testing.T) {
		_, errs, code := run(t, spec, "tether-no-such-command")
		if code != proc.ExitNotFound || !strings.Contains(errs, `exec: "tether-no-such-command": executable file not found in $PATH`) {
			t.Fatalf("code %d stderr %q, want 127 and Docker's message", code, errs)
		}
	})
	t.Run("not executable", func(t *testing.T) {
		if _, _, code := run(t, spec, "/etc/hosts"); code != proc.ExitCannotInvoke {
			t.Fatalf("code %d, want 126", code)
		}
	})
	t.Run("env dir", func(t *testing.T) {
		s := spec
		s.Env, s.Dir = []string{"FOO=bar"}, "/tmp"
		out, _, _ := run(t, s, "sh", "-c", "echo $FOO; pwd; env")
		lines := strings.Split(out, "\n")
		if len(lines) < 2 || lines[0] != "bar" || lines[1] != "/tmp" {
			t.Fatalf("output %q, want FOO=bar and /tmp", out)
		}
		if strings.Contains(out, "_TETHER") {
			t.Fatalf("helper variables leaked into the command: %q", out)
		}
		if !strings.Contains(out, "PATH=") {
			t.Fatalf("no default PATH: %q", out)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		s := spec
		s.Stdin = strings.NewReader("piped\n")
		if out, _, _ := run(t, s, "cat"); out != "piped\n" {
			t.Fatalf("cat = %q", out)
		}
	})
	t.Run("in-place update visible", func(t *testing.T) {
		updated := hosts + "10.99.0.3\tpeer\n"
		if err := os.WriteFile(f.hosts, []byte(updated), 0o644); err != nil { // O_TRUNC, same inode
			t.Fatal(err)
		}
		if out, _, _ := run(t, spec, "cat", "/etc/hosts"); out != updated {
			t.Fatalf("after update: %q, want %q", out, updated)
		}
	})
	t.Run("ns dir not visible", func(t *testing.T) {
		out, _, _ := run(t, spec, "cat", "/proc/self/mountinfo")
		if strings.Contains(out, f.nsDir) {
			t.Fatalf("sandbox still has mounts of the ns dir:\n%s", out)
		}
		// nsfs mounts under /run/netns may appear: / is a slave of the host,
		// so `ip netns add` elsewhere propagates in (and its removal does too,
		// so they pin nothing). Only our private ns dir must be gone.
	})
	t.Run("signal and setsid", func(t *testing.T) {
		var errb bytes.Buffer
		s := spec
		s.Args, s.Stderr = []string{"sleep", "60"}, &errb
		p, err := proc.Start(s)
		if err != nil {
			t.Fatal(err)
		}
		if sid := sessionOf(t, p.Pid); sid != p.Pid {
			t.Errorf("session %d, want its own (%d)", sid, p.Pid)
		}
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, err := p.Wait(); code != 128+int(syscall.SIGTERM) || err != nil {
			t.Fatalf("Wait = %d, %v; want 143", code, err)
		}
	})

	after, _ := os.ReadFile("/etc/hosts")
	if !bytes.Equal(after, hostHostsBefore) {
		t.Fatal("host /etc/hosts changed")
	}
}

func sessionOf(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	fields := strings.Fields(rest) // state ppid pgrp session ...
	sid, _ := strconv.Atoi(fields[3])
	return sid
}

// A sandbox adopted from another runtime has only a netns: Start enters
// just that.
func TestStartNetNSOnly(t *testing.T) {
	f := newFixture(t)
	spec := f.sandbox(t, uniqueName(t), "", false)
	out, _, _ := run(t, spec, "cat", "/proc/self/net/dev")
	if got := netDevNames(out); len(got) != 1 || got[0] != "lo" {
		t.Fatalf("interfaces = %v, want [lo]", got)
	}
	host, _ := os.Hostname()
	if out, _, _ := run(t, spec, "hostname"); strings.TrimSpace(out) != host {
		t.Fatalf("hostname %q, want the host's %q", out, host)
	}
	want, _ := os.ReadFile("/etc/hosts")
	if out, _, _ := run(t, spec, "cat", "/etc/hosts"); out != string(want) {
		t.Fatal("/etc/hosts differs from the host's")
	}
}

func TestStartEnterFails(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale")
	if err := os.WriteFile(stale, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ netNS, want string }{
		{filepath.Join(dir, "missing"), "open net namespace"},
		{stale, "enter net namespace"},
	} {
		_, err := proc.Start(proc.Spec{NetNS: tc.netNS, Args: []string{"true"}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(NetNS=%q) = %v, want error containing %q", tc.netNS, err, tc.want)
		}
	}
}

func TestStartRejectsBadSpec(t *testing.T) {
	for _, s := range []proc.Spec{
		{NetNS: "/x"},
		{Args: []string{"true"}},
		{NetNS: "/x", Args: []string{"true"}, Dir: "relative"},
	} {
		if _, err := proc.Start(s); err == nil {
			t.Errorf("Start(%+v) succeeded", s)
		}
	}
}

// Making new namespaces fails before the command runs, with the reason, and
// creates nothing on the host.
func TestNewNSFailsCleanly(t *testing.T) {
	f := newFixture(t)
	spec := f.sandbox(t, uniqueName(t), "", false)
	if err := os.WriteFile(f.hosts, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Args = []string{"touch", "/tmp/tether-proc-ran-" + uniqueName(t)}
	for name, tc := range map[string]struct {
		mutate func(*proc.Spec)
		want   string
	}{
		"missing target": {func(s *proc.Spec) { s.New.Files = map[string]string{"/etc/tether-no-such-file": f.hosts} }, "target must exist"},
		"long hostname":  {func(s *proc.Spec) { s.New.Hostname = strings.Repeat("h", 65) }, "longer than 64"},
		"unprepared dir": {func(s *proc.Spec) { s.New.NSDir = f.dir }, "not a private mount point"},
		"stale netns":    {func(s *proc.Spec) { s.NetNS = f.hosts }, "enter net namespace"},
	} {
		t.Run(name, func(t *testing.T) {
			s := spec
			s.New = f.newNS("x")
			tc.mutate(&s)
			p, err := proc.Start(s)
			if err == nil {
				_, _ = p.Wait()
				t.Fatalf("Start succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start = %v, want error containing %q", err, tc.want)
			}
			if _, err := os.Stat("/etc/tether-no-such-file"); err == nil {
				t.Fatal("Start created a file on the host")
			}
			if _, err := os.Stat(s.Args[1]); err == nil {
				t.Fatal("the command ran although its namespaces could not be made")
			}
		})
	}
}

// Each Start with New makes namespaces of its own: a second first-process
// does not see the first's hostname, and joins are by open file only.
func TestNewNamespacesAreSeparate(t *testing.T) {
	f := newFixture(t)
	a := f.sandbox(t, uniqueName(t)+"a", "x\n", true)
	fresh := proc.Spec{NetNS: a.NetNS, New: f.newNS("other")}
	if out, _, _ := run(t, fresh, "hostname"); strings.TrimSpace(out) != "other" {
		t.Fatalf("new namespaces: hostname %q, want other", out)
	}
	if out, _, _ := run(t, a, "hostname"); !strings.HasSuffix(strings.TrimSpace(out), "a") {
		t.Fatalf("joined namespaces: hostname %q", out)
	}
	if _, err := proc.Start(proc.Spec{NetNS: a.NetNS, MntNS: a.MntNS, Args: []string{"true"}}); err == nil {
		t.Fatal("Start with MntNS but no UTSNS succeeded")
	}
}

// Two sandboxes in one ns dir: deleting one leaves the other working, and
// neither's mount namespace holds the other's files.
func TestTwoSandboxes(t *testing.T) {
	f := newFixture(t)
	a := f.sandbox(t, uniqueName(t)+"a", "a\n", true)
	b := f.sandbox(t, uniqueName(t)+"b", "b\n", true)
	if err := netns.Delete(b.NetNS); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := run(t, a, "cat", "/etc/hosts"); out != "b\n" { // one hosts file in the fixture
		t.Fatalf("a: %q", out)
	}
	if out, _, _ := run(t, a, "hostname"); !strings.HasSuffix(strings.TrimSpace(out), "a") {
		t.Fatalf("a hostname %q", out)
	}
}

// BenchmarkStartNew is a sandbox's first process: new mount and UTS
// namespaces with one file and a hostname, then `true`.
func BenchmarkStartNew(b *testing.B) {
	f := newFixture(b)
	if err := os.WriteFile(f.hosts, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	spec := proc.Spec{NetNS: filepath.Join(f.nsDir, "bench-net"), New: f.newNS("bench"), Args: []string{"true"}}
	if err := netns.Create(spec.NetNS); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p, err := proc.Start(spec)
		if err != nil {
			b.Fatal(err)
		}
		if code, err := p.Wait(); code != 0 || err != nil {
			b.Fatal(code, err)
		}
	}
}

// BenchmarkStart joins a running process's namespaces.
func BenchmarkStart(b *testing.B) {
	f := newFixture(b)
	spec := f.sandbox(b, "bench", "127.0.0.1 localhost\n", true)
	spec.Args = []string{"true"}
	for b.Loop() {
		p, err := proc.Start(spec)
		if err != nil {
			b.Fatal(err)
		}
		if code, err := p.Wait(); code != 0 || err != nil {
			b.Fatal(code, err)
		}
	}
}

// A binary that forgot `import _ ".../internal/nsenter"` must fail Start,
// not run the command in the daemon's namespaces.
func TestStartWithoutNSEnter(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not in PATH")
	}
	bin := filepath.Join(t.TempDir(), "nonsenter")
	if out, err := exec.Command(goBin, "build", "-o", bin, "./testdata/nonsenter").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "does not import internal/nsenter") {
		t.Fatalf("got %q (%v), want the missing-nsenter error", out, err)
	}
}

func TestConcurrentNew(t *testing.T) {
	f := newFixture(t)
	if err := os.WriteFile(f.hosts, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const n = 8
	specs := make([]proc.Spec, n)
	for i := range specs {
		specs[i] = proc.Spec{NetNS: filepath.Join(f.nsDir, fmt.Sprintf("c%d-net", i)), New: f.newNS(fmt.Sprintf("c%d", i))}
		if err := netns.Create(specs[i].NetNS); err != nil {
			t.Fatal(err)
		}
	}
	type result struct{ want, got string }
	res := make(chan result, n)
	for _, s := range specs {
		go func() {
			var out bytes.Buffer
			s.Args, s.Stdout = []string{"hostname"}, &out
			p, err := proc.Start(s)
			if err != nil {
				res <- result{s.New.Hostname, err.Error()}
				return
			}
			_, _ = p.Wait()
			res <- result{s.New.Hostname, strings.TrimSpace(out.String())}
		}()
	}
	for range n {
		if r := <-res; r.got != r.want {
			t.Errorf("hostname %q, want %q", r.got, r.want)
		}
	}
}

// The whole flow from a statically linked binary (glibc), as cmd/tether is
// built.
func TestStaticBinary(t *testing.T) {
	if os.Getenv("TETHER_E2E") != "1" {
		t.Skip("builds a static binary; runs with TETHER_E2E=1")
	}
	testutil.RequireRoot(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go not in PATH")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sandbox")
	build := exec.Command(goBin, "build", "-o", bin, "-ldflags", `-extldflags "-static"`, "./testdata/sandbox")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	nsDir := filepath.Join(dir, "ns")
	out, err := exec.Command(bin, nsDir).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "static-sandbox" {
		t.Fatalf("got %q (%v), want static-sandbox", out, err)
	}
	if ms, _ := netns.MountedUnder(dir); len(ms) > 0 {
		t.Fatalf("mounts left: %v", ms)
	}
}
