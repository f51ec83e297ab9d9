package dockerapi

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// reply is one canned answer of the fake dockerd.
type reply struct {
	status int
	body   string // sent as is
	ctype  string // default application/json (dockerd's Content-Type)
}

// request is what the fake dockerd received.
type request struct {
	method, path, rawQuery, body, ctype string
}

// fakeDockerd replays canned answers, keyed "METHOD /escaped/path", on a
// unix socket in a temporary directory, and records every request. Unknown
// routes get dockerd's 404 {"message":"page not found"}.
type fakeDockerd struct {
	socket string
	routes map[string]reply
	mu     sync.Mutex
	got    []request
}

func startDockerd(t *testing.T, routes map[string]reply) *fakeDockerd {
	t.Helper()
	f := &fakeDockerd{socket: filepath.Join(t.TempDir(), "docker.sock"), routes: routes}
	serveUnix(t, f.socket, http.HandlerFunc(f.serve))
	return f
}

// serveUnix serves h on a unix socket at path until the test ends.
func serveUnix(t *testing.T, path string, h http.Handler) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
}

func (f *fakeDockerd) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.got = append(f.got, request{method: r.Method, path: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery,
		body: string(b), ctype: r.Header.Get("Content-Type")})
	f.mu.Unlock()
	rep, ok := f.routes[r.Method+" "+r.URL.EscapedPath()]
	if !ok {
		rep = reply{status: http.StatusNotFound, body: `{"message":"page not found"}`}
	}
	ctype := rep.ctype
	if ctype == "" {
		ctype = "application/json"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Api-Version", "1.52")
	w.Header().Set("Server", "Docker/29.0.0 (linux)")
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

func (f *fakeDockerd) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.got...)
}

func (f *fakeDockerd) client(t *testing.T) *Client {
	t.Helper()
	c, err := New("unix://" + f.socket)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
