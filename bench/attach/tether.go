package attach

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/testutil"
)

// Tether is a real tether daemon in its own host namespace with the network
// "bench" (10.123.0.0/16), driven over its unix socket by a plain net/http
// client, so what is timed is the API round trip, not a CLI's start-up.
type Tether struct {
	NS       string
	D        *testutil.Daemon
	PID      int
	ExecRoot string
	c        *http.Client
}

// StartTether creates a host namespace, starts the daemon in it and creates
// the network. The test's cleanup stops the daemon and deletes the namespace.
// With BENCH_EXEC_ROOT=DIR the daemon's exec-root (namespace files, sandbox
// files) is a fresh directory under DIR instead of under the harness's temp
// directory, e.g. /dev/shm to price a tmpfs /run. With BENCH_DATA_ROOT=DIR
// its data-root (the store) is a fresh directory under DIR: /dev/shm prices
// the store's fdatasyncs (tmpfs makes them free).
func StartTether(tb testing.TB) *Tether {
	tb.Helper()
	return StartTetherMode(tb, testutil.StartNsenter)
}

// StartTetherMode is StartTether with the daemon started the way mode says
// (testutil.StartNsenter, StartIPNetns, StartUnshare), on every start. Under
// the modes other than nsenter the daemon's namespace files live in its own
// mount namespace: a sandbox's NetNS path cannot be opened from the test
// (use /proc/PID/ns/net of a process in the sandbox).
func StartTetherMode(tb testing.TB, mode testutil.StartMode) *Tether {
	tb.Helper()
	ns := testutil.NetNS(tb, "tth-bench")
	var args []string
	exec := ""
	if parent := os.Getenv("BENCH_EXEC_ROOT"); parent != "" {
		exec = execRoot(tb, parent)
		args = []string{"--exec-root", exec}
	}
	if parent := os.Getenv("BENCH_DATA_ROOT"); parent != "" {
		args = append(args, "--data-root", execRoot(tb, parent))
	}
	d := testutil.NewDaemon(tb, ns, args...)
	d.Mode = mode
	if err := d.Start(); err != nil {
		tb.Fatal(err)
	}
	if exec == "" {
		exec = filepath.Join(d.Dir, "exec")
	}
	d.MustTether("network", "create", "--subnet", "10.123.0.0/16", "bench")
	b, err := os.ReadFile(filepath.Join(d.Dir, "tether.pid"))
	if err != nil {
		tb.Fatalf("daemon pidfile: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		tb.Fatalf("daemon pidfile: %v", err)
	}
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}
	return &Tether{NS: ns, D: d, PID: pid, ExecRoot: exec, c: c}
}

// Create sends POST /tether/v1/sandboxes for a sandbox on "bench" and returns
// the answer and the round-trip time. Each publish value is a `-p` form
// ("20000:80") published on that endpoint.
func (t *Tether) Create(name string, publish ...string) (api.Sandbox, time.Duration, error) {
	pm, err := types.ParsePublish(publish)
	if err != nil {
		return api.Sandbox{}, 0, err
	}
	body, _ := json.Marshal(api.SandboxCreateRequest{Name: name,
		Networks: []api.NetworkAttach{{Network: "bench", PortBindings: pm}}})
	var sb api.Sandbox
	start := time.Now()
	code, out, err := t.call(http.MethodPost, "/tether/v1/sandboxes", body)
	took := time.Since(start)
	if err != nil {
		return sb, took, err
	}
	if code != http.StatusCreated {
		return sb, took, fmt.Errorf("create sandbox %q: %d %s", name, code, out)
	}
	if err := json.Unmarshal(out, &sb); err != nil {
		return sb, took, fmt.Errorf("create sandbox %q: decode: %w", name, err)
	}
	return sb, took, nil
}

// Exec sends POST /tether/v1/sandboxes/NAME/exec for a detached process
// running args and returns its PID and the round-trip time.
func (t *Tether) Exec(name string, args ...string) (int, time.Duration, error) {
	body, _ := json.Marshal(api.ExecRequest{Cmd: args, Detach: true})
	start := time.Now()
	code, out, err := t.call(http.MethodPost, "/tether/v1/sandboxes/"+name+"/exec", body)
	took := time.Since(start)
	if err != nil {
		return 0, took, err
	}
	if code != http.StatusCreated {
		return 0, took, fmt.Errorf("exec in sandbox %q: %d %s", name, code, out)
	}
	var r api.ExecResponse
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, took, fmt.Errorf("exec in sandbox %q: decode: %w", name, err)
	}
	return r.Pid, took, nil
}

// Remove sends DELETE /tether/v1/sandboxes/NAME and returns the round-trip time.
func (t *Tether) Remove(name string) (time.Duration, error) {
	start := time.Now()
	code, out, err := t.call(http.MethodDelete, "/tether/v1/sandboxes/"+name, nil)
	took := time.Since(start)
	if err != nil {
		return took, err
	}
	if code != http.StatusNoContent {
		return took, fmt.Errorf("remove sandbox %q: %d %s", name, code, out)
	}
	return took, nil
}

// Run starts a detached main process in sandbox name, as `tether run -d`
// does after the create, and returns its PID.
func (t *Tether) Run(name string, args ...string) (int, error) {
	body, _ := json.Marshal(api.ExecRequest{Cmd: args, Detach: true, Main: true})
	code, out, err := t.call(http.MethodPost, "/tether/v1/sandboxes/"+name+"/exec", body)
	if err != nil {
		return 0, err
	}
	if code != http.StatusCreated {
		return 0, fmt.Errorf("exec in sandbox %q: %d %s", name, code, out)
	}
	var r api.ExecResponse
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("exec in sandbox %q: decode: %w", name, err)
	}
	return r.Pid, nil
}

// Inspect returns sandbox name as GET /tether/v1/sandboxes/NAME answers.
func (t *Tether) Inspect(name string) (api.Sandbox, error) {
	var sb api.Sandbox
	code, out, err := t.call(http.MethodGet, "/tether/v1/sandboxes/"+name, nil)
	if err != nil {
		return sb, err
	}
	if code != http.StatusOK {
		return sb, fmt.Errorf("inspect sandbox %q: %d %s", name, code, out)
	}
	return sb, json.Unmarshal(out, &sb)
}

// List returns the daemon's sandboxes.
func (t *Tether) List() ([]api.Sandbox, error) {
	code, out, err := t.call(http.MethodGet, "/tether/v1/sandboxes", nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("list sandboxes: %d %s", code, out)
	}
	var sbs []api.Sandbox
	return sbs, json.Unmarshal(out, &sbs)
}

func (t *Tether) call(method, path string, body []byte) (int, []byte, error) {
	return Call(t.c, method, path, body)
}

// Call sends one JSON request to a daemon's API through c (a client whose
// transport dials the daemon's socket) and returns the status and body.
func Call(c *http.Client, method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://tether"+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// RSS returns the resident set size (VmRSS) of process pid in KiB.
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// execRoot makes a fresh directory under parent (an exec-root, or the
// floor's namespace directory's parent); the cleanup, which runs after
// the daemon's (it is registered first), unmounts what is left and removes it.
func execRoot(tb testing.TB, parent string) string {
	tb.Helper()
	dir, err := os.MkdirTemp(parent, "tether-bench-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := testutil.UnmountUnder(dir); err != nil {
			tb.Error(err)
		}
		if m := testutil.Mounted(dir); len(m) > 0 {
			tb.Errorf("mounts left under %s: %v", dir, m)
		}
		os.RemoveAll(dir)
	})
	return dir
}

// Call sends one API request (body already JSON) and returns the status and body.
func (t *Tether) Call(method, path string, body []byte) (int, []byte, error) {
	return t.call(method, path, body)
}

// EnvInt reads a positive integer setting of a benchmark (BENCH_N, ...)
// from the environment, or def.
func EnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
