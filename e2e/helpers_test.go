// Package e2e runs the real tether binary as a daemon inside test-owned
// network namespaces and checks behaviour with real traffic.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/testutil"
)

// host is a test namespace standing for a host, with a daemon in it
// (started with nsenter --net, in the test's mount namespace).
func host(t *testing.T, args ...string) (string, *testutil.Daemon) {
	t.Helper()
	return hostMode(t, testutil.StartNsenter, args...)
}

// hostMode is host with the daemon started the way mode says: under
// StartIPNetns and StartUnshare every start of it gets a mount namespace of
// its own, so its namespace files are not visible to the test.
func hostMode(t *testing.T, mode testutil.StartMode, args ...string) (string, *testutil.Daemon) {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-e2e")
	d := testutil.NewDaemon(t, ns, args...)
	d.Mode = mode
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return ns, d
}

// forModes runs fn as one subtest per start mode (testutil.StartModes).
func forModes(t *testing.T, fn func(t *testing.T, mode testutil.StartMode)) {
	t.Helper()
	for _, m := range testutil.StartModes() {
		t.Run(string(m), func(t *testing.T) { fn(t, m) })
	}
}

// restart stops the daemon and starts it again (into a new mount namespace
// under every mode but StartNsenter).
func restart(t *testing.T, d *testutil.Daemon) {
	t.Helper()
	d.Stop()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
}

// runDetached runs `tether run -d --name name args...` and makes sure its
// processes do not outlive the test even when the daemon lost the sandbox
// (see reapProcesses).
func runDetached(t *testing.T, d *testutil.Daemon, name string, args ...string) {
	t.Helper()
	d.MustTether(append([]string{"run", "-d", "--name", name}, args...)...)
	reapProcesses(t, d, name)
}

// reapProcesses kills, when the test ends, every process the sandbox has now
// that still runs then: a daemon that lost the sandbox (the bug these tests
// look for) cannot remove it. Only by PID, and only when the PID still
// names the same process (its start time is unchanged).
func reapProcesses(t *testing.T, d *testutil.Daemon, name string) {
	t.Helper()
	type started struct {
		pid   int
		start string
	}
	var procs []started
	for _, p := range sandbox(t, d, name).Processes {
		if st := procStart(p.Pid); st != "" {
			procs = append(procs, started{p.Pid, st})
		}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if procStart(p.pid) == p.start {
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
	})
}

// procStart is the start time of process pid (field 22 of /proc/PID/stat),
// "" when it does not run.
func procStart(pid int) string {
	st, err := testutil.ReadProcStat(pid)
	if err != nil {
		return ""
	}
	return strconv.FormatUint(st.StartTime, 10)
}

// sandboxPID is the PID of a running process of a sandbox.
func sandboxPID(t *testing.T, d *testutil.Daemon, name string) int {
	t.Helper()
	procs := sandbox(t, d, name).Processes
	if len(procs) == 0 {
		t.Fatalf("sandbox %s has no process", name)
	}
	return procs[0].Pid
}

// procNetNS is the sandbox's network namespace as the test can always reach
// it: /proc/PID/ns/net of one of its processes. Its NetNS file is only
// visible in the daemon's mount namespace, which is not the test's under
// StartIPNetns and StartUnshare.
func procNetNS(t *testing.T, d *testutil.Daemon, name string) string {
	t.Helper()
	return fmt.Sprintf("/proc/%d/ns/net", sandboxPID(t, d, name))
}

// health is the part of `tether sandbox inspect` that says whether a
// sandbox could be recovered only in part (decoded separately, so the
// tests build before api.Sandbox has the fields).
type health struct {
	Name     string
	Degraded bool
	Warnings []string
}

func sandboxHealth(t *testing.T, d *testutil.Daemon, name string) health {
	t.Helper()
	var h health
	d.InspectJSON(&h, "sandbox", "inspect", name)
	return h
}

// listed is the set of sandbox names `tether sandbox ls` shows.
func listed(t *testing.T, d *testutil.Daemon) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	for _, n := range strings.Fields(d.MustTether("sandbox", "ls", "--format", "{{.Name}}")) {
		got[n] = true
	}
	return got
}

// linkIndexes maps interface name to ifindex as `ip -j link` prints them,
// run by prefix (e.g. ip -n NS, or tether exec X --).
func linkIndexes(out string) (map[string]int, error) {
	var links []struct {
		Index int    `json:"ifindex"`
		Name  string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("decode ip -j link: %v: %s", err, short(out))
	}
	m := map[string]int{}
	for _, l := range links {
		m[l.Name] = l.Index
	}
	return m, nil
}

// hostLinks maps the links of namespace ns to their ifindex.
func hostLinks(t *testing.T, ns string) map[string]int {
	t.Helper()
	m, err := linkIndexes(testutil.Must(t, "ip", "-n", ns, "-j", "link", "show"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sandboxLinks maps the links inside a sandbox to their ifindex, read by a
// process run with tether exec (sysfs inside is the host's, ip is not).
func sandboxLinks(d *testutil.Daemon, name string) (map[string]int, error) {
	out, err := d.Tether("exec", name, "--", "ip", "-j", "link", "show")
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %v %s", name, err, out)
	}
	return linkIndexes(out)
}

// sandbox decodes `tether sandbox inspect`.
func sandbox(t *testing.T, d *testutil.Daemon, name string) api.Sandbox {
	t.Helper()
	var sb api.Sandbox
	d.InspectJSON(&sb, "sandbox", "inspect", name)
	return sb
}

// ip returns a sandbox's address on a network.
func ip(t *testing.T, d *testutil.Daemon, name, network string) string {
	t.Helper()
	ep := sandbox(t, d, name).Networks[network]
	if ep == nil || !ep.IPAddress.IsValid() {
		t.Fatalf("sandbox %s has no address on %s", name, network)
	}
	return ep.IPAddress.String()
}

// ping sends one ICMP echo from a sandbox; it reports whether a reply came.
func ping(d *testutil.Daemon, from, to string) bool {
	_, err := d.Tether("exec", from, "--", "ping", "-c1", "-W2", to)
	return err == nil
}

// httpServer runs a Python HTTP server in a new detached sandbox.
func httpServer(t *testing.T, d *testutil.Daemon, name string, networks ...string) {
	t.Helper()
	args := []string{"run", "-d", "--name", name}
	for _, n := range networks {
		args = append(args, "--network", n)
	}
	d.MustTether(append(args, "--", "python3", "-m", "http.server", "80")...)
	reapProcesses(t, d, name)
}

// httpGet fetches http://addr/ from inside a sandbox with curl; retries
// (bounded) cover the server's start-up.
func httpGet(d *testutil.Daemon, from, addr string, tries int) error {
	var out string
	var err error
	for range tries {
		out, err = d.Tether("exec", from, "--", "curl", "-sS", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", "http://"+addr+"/")
		if err == nil && strings.TrimSpace(out) == "200" {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("GET http://%s/ from %s: %v %s", addr, from, err, out)
}

// apiClient speaks HTTP to the daemon's socket directly, to check status
// codes and bodies.
type apiClient struct {
	t *testing.T
	c *http.Client
}

func newAPI(t *testing.T, d *testutil.Daemon) *apiClient {
	return &apiClient{t: t, c: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}}
}

// call sends a request with a raw body and returns status and body.
func (a *apiClient) call(method, path string, body []byte) (int, string) {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://tether"+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (a *apiClient) json(method, path string, v any) (int, string) {
	a.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		a.t.Fatal(err)
	}
	return a.call(method, path, b)
}
