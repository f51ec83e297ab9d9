package nsenter

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tether-net/tether/internal/testutil/gate"
)

// The test binary re-executes itself: as a probe that prints the namespaces
// it was started in, or as a holder that keeps new namespaces alive.
func TestMain(m *testing.M) {
	switch os.Getenv("NSENTER_TEST_MODE") {
	case "probe":
		probe()
		os.Exit(0)
	case "hold":
		os.Stdout.WriteString("ready\n")
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func probe() {
	for _, kind := range []string{"net", "uts", "mnt"} {
		l, _ := os.Readlink("/proc/self/ns/" + kind)
		os.Stdout.WriteString(kind + " " + l + "\n")
	}
	for _, v := range []string{"_TETHER_NSENTER", "_TETHER_NSENTER_ERRFD"} {
		if _, set := os.LookupEnv(v); set {
			os.Stdout.WriteString("leaked " + v + "\n")
		}
	}
}

// holder starts a child in new net, uts and mount namespaces and returns its
// pid; cleanup ends it (by closing its stdin) and reaps it.
func holder(t *testing.T) int {
	t.Helper()
	gate.RequireRoot(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{"NSENTER_TEST_MODE=hold"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		_ = cmd.Wait()
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("holder: %q %v", line, err)
	}
	return cmd.Process.Pid
}

func nsLinks(t *testing.T, pid string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, kind := range []string{"net", "uts", "mnt"} {
		l, err := os.Readlink("/proc/" + pid + "/ns/" + kind)
		if err != nil {
			t.Fatal(err)
		}
		m[kind] = l
	}
	return m
}

// runProbe runs the probe binary with _TETHER_NSENTER=spec.
func runProbe(t *testing.T, bin, spec string) (map[string]string, string, error) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{"NSENTER_TEST_MODE=probe", "_TETHER_NSENTER=" + spec}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			got[k] = v
		}
	}
	return got, stderr.String(), err
}

func TestEnter(t *testing.T) {
	pid := holder(t)
	p := "/proc/" + itoa(pid) + "/ns/"
	self := nsLinks(t, "self")
	target := nsLinks(t, itoa(pid))
	for _, tc := range []struct {
		spec  string
		moved []string
	}{
		{"net=" + p + "net,uts=" + p + "uts,mnt=" + p + "mnt", []string{"net", "uts", "mnt"}},
		{"mnt=" + p + "mnt,net=" + p + "net", []string{"net", "mnt"}},
		{"uts=" + p + "uts", []string{"uts"}},
	} {
		got, stderr, err := runProbe(t, os.Args[0], tc.spec)
		if err != nil {
			t.Fatalf("%s: %v %s", tc.spec, err, stderr)
		}
		for _, kind := range []string{"net", "uts", "mnt"} {
			want := self[kind]
			for _, m := range tc.moved {
				if m == kind {
					want = target[kind]
				}
			}
			if got[kind] != want {
				t.Errorf("%s: %s = %s, want %s", tc.spec, kind, got[kind], want)
			}
		}
		for k := range got {
			if k == "leaked" {
				t.Errorf("%s: nsenter variables left in the environment", tc.spec)
			}
		}
	}
}

// Errors are caught before any setns, so these need no root.
func TestEnterFailures(t *testing.T) {
	stale := filepath.Join(t.TempDir(), "stale")
	if err := os.WriteFile(stale, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ spec, want string }{
		{"", "is empty"},
		{"net", "want kind=/path"},
		{"net=", "want kind=/path"},
		{"pid=/proc/self/ns/pid", "unknown namespace kind pid"},
		{"net=/proc/self/ns/net,net=/proc/self/ns/net", "given twice"},
		{"net=/nonexistent/tether", "open net namespace /nonexistent/tether: No such file or directory"},
		{"uts=/proc/self/ns/uts,net=" + stale, "enter net namespace"},
	} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0])
		cmd.Env = []string{"NSENTER_TEST_MODE=probe", "_TETHER_NSENTER=" + tc.spec, "_TETHER_NSENTER_ERRFD=3"}
		cmd.ExtraFiles = []*os.File{w}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		w.Close()
		viaFD, _ := io.ReadAll(r)
		r.Close()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 125 {
			t.Errorf("%q: err %v, want exit 125", tc.spec, err)
		}
		if len(out) > 0 {
			t.Errorf("%q: Go code ran: %q", tc.spec, out)
		}
		msg := "tether-nsenter: "
		if !strings.HasPrefix(stderr.String(), msg) || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: stderr %q, want %q", tc.spec, stderr.String(), tc.want)
		}
		if string(viaFD) != stderr.String() {
			t.Errorf("%q: error fd got %q, stderr %q", tc.spec, viaFD, stderr.String())
		}
	}
}

func TestNoEnvNoEffect(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{"NSENTER_TEST_MODE=probe"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	self := nsLinks(t, "self")
	for _, kind := range []string{"net", "uts", "mnt"} {
		if !strings.Contains(string(out), kind+" "+self[kind]) {
			t.Errorf("%s moved without _TETHER_NSENTER: %s", kind, out)
		}
	}
}

// The constructor must also run in a statically linked binary (glibc).
func TestStaticBinary(t *testing.T) {
	if os.Getenv("TETHER_E2E") != "1" {
		t.Skip("builds a binary; runs with TETHER_E2E=1")
	}
	pid := holder(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go not in PATH")
	}
	bin := filepath.Join(t.TempDir(), "nsprobe")
	build := exec.Command(goBin, "build", "-o", bin, "-ldflags", `-extldflags "-static"`, "./testdata/nsprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	if out, _ := exec.Command("file", bin).Output(); len(out) > 0 && !strings.Contains(string(out), "statically linked") {
		t.Fatalf("not static: %s", out)
	}
	p := "/proc/" + itoa(pid) + "/ns/"
	cmd := exec.Command(bin)
	cmd.Env = []string{"_TETHER_NSENTER=net=" + p + "net,uts=" + p + "uts,mnt=" + p + "mnt"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	target := nsLinks(t, itoa(pid))
	for _, kind := range []string{"net", "uts", "mnt"} {
		if !strings.Contains(string(out), kind+" "+target[kind]) {
			t.Errorf("static binary not in target %s namespace: %s", kind, out)
		}
	}
	if !strings.Contains(string(out), "env false") {
		t.Errorf("variable left in the environment: %s", out)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
