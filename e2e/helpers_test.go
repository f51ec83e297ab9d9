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
	"strings"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/testutil"
)

// host is a test namespace standing for a host, with a daemon in it.
func host(t *testing.T, args ...string) (string, *testutil.Daemon) {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-e2e")
	return ns, testutil.StartDaemon(t, ns, args...)
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
