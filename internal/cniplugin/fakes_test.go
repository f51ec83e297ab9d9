package cniplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	cnitypes "github.com/containernetworking/cni/pkg/types"

	apitypes "github.com/tether-net/tether/internal/api/types"
)

// The test binary is also the plugin, as cmd/tether is: the subprocess
// test runs it with CNI_COMMAND set.
func TestMain(m *testing.M) {
	if os.Getenv("CNI_COMMAND") != "" {
		os.Exit(Main())
	}
	os.Exit(m.Run())
}

// reply is the fake daemon's answer to one route: a status and a JSON body
// (nil: none).
type reply struct {
	status int
	body   any
}

// request is one request the fake daemon received.
type request struct {
	Method, Path string
	Body         []byte
}

// fakeDaemon answers the CNI routes on a unix socket in the test's
// directory with canned replies ("METHOD PATH" -> reply) and records every
// request. Routes it has no reply for answer 404 as the daemon's mux does.
type fakeDaemon struct {
	socket string
	mu     sync.Mutex
	routes map[string]reply
	got    []request
}

func startDaemon(t *testing.T, routes map[string]reply) *fakeDaemon {
	t.Helper()
	d := &fakeDaemon{socket: filepath.Join(t.TempDir(), "tether.sock"), routes: routes}
	l, err := net.Listen("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(d.serve))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return d
}

func (d *fakeDaemon) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	d.mu.Lock()
	d.got = append(d.got, request{Method: r.Method, Path: r.URL.EscapedPath(), Body: body})
	rp, ok := d.routes[r.Method+" "+r.URL.EscapedPath()]
	d.mu.Unlock()
	if !ok {
		rp = reply{http.StatusNotFound, map[string]string{"message": "404 page not found"}}
	}
	if rp.body == nil {
		w.WriteHeader(rp.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rp.status)
	_ = json.NewEncoder(w).Encode(rp.body)
}

func (d *fakeDaemon) requests() []request {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]request(nil), d.got...)
}

// only is the one request the daemon got; the test fails otherwise.
func (d *fakeDaemon) only(t *testing.T) request {
	t.Helper()
	got := d.requests()
	if len(got) != 1 {
		t.Fatalf("the daemon got %d requests, want 1: %+v", len(got), got)
	}
	return got[0]
}

// missingSocket is a socket path where nothing is: the daemon never ran.
func missingSocket(t *testing.T) string {
	return filepath.Join(t.TempDir(), "tether.sock")
}

// staleSocket is a socket file nothing listens on: the daemon died
// (connect: connection refused).
func staleSocket(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// testAttachment is what the fake daemon answers to ADD.
var testAttachment = apitypes.CNIAttachment{
	ContainerID: "ctr1", IfName: "eth0", NetNS: "/run/netns/test-ctr1",
	SandboxID: "0123456789ab", SandboxName: "web", NetworkID: "fedcba987654", Network: "front",
	MAC: "02:42:0a:0b:00:05", Address: "10.11.0.5/24", Gateway: "10.11.0.1", DefaultRoute: true, MTU: 1450,
	HostIfName: "vethTth01", DNS: []string{"127.0.0.11"}, Search: []string{"example.test"},
}

const attachPath = "/tether/v1/cni/attachments/ctr1/eth0"

// conf is a network configuration for socket: the base fields with extra
// merged over them (a nil value deletes a key).
func conf(t *testing.T, cniVersion, socket string, extra map[string]any) []byte {
	t.Helper()
	m := map[string]any{"cniVersion": cniVersion, "name": "tether-front", "type": "tether",
		"network": "front", "socket": "unix://" + socket}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cmdArgs are the arguments of a command on container ctr1's eth0.
func cmdArgs(stdin []byte, cniArgs string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "ctr1", Netns: "/run/netns/test-ctr1", IfName: "eth0",
		Args: cniArgs, Path: "/opt/cni/bin", StdinData: stdin}
}

// testPlugin is a plugin printing to out and logging to the test.
func testPlugin(t *testing.T, out *bytes.Buffer) *plugin {
	return &plugin{stdout: out, log: slog.New(slog.NewTextHandler(testWriter{t}, nil)), timeout: requestTimeout}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(b)))
	return len(b), nil
}

// cniError is err as the CNI error skel would print; the test fails when
// err is nil or another kind.
func cniError(t *testing.T, err error) *cnitypes.Error {
	t.Helper()
	var e *cnitypes.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want a *types.Error", err, err)
	}
	return e
}

// hangingDaemon is a daemon's socket that accepts requests and answers
// none until the test ends.
func hangingDaemon(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)                 // runs second: no request is left
	t.Cleanup(func() { close(release) }) // runs first
	return path
}
