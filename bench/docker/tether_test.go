package docker

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// stubPlugin is a minimal legacy network driver named "stubdrv" served in
// the test process: enough for `docker network create -d stubdrv` and
// `docker network rm` with Docker's own IPAM. It records the calls.
type stubPlugin struct {
	mu    sync.Mutex
	calls []string
}

func (s *stubPlugin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	s.mu.Lock()
	s.calls = append(s.calls, r.URL.Path)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	switch r.URL.Path {
	case "/Plugin.Activate":
		_ = json.NewEncoder(w).Encode(map[string][]string{"Implements": {"NetworkDriver"}})
	case "/NetworkDriver.GetCapabilities":
		_ = json.NewEncoder(w).Encode(map[string]string{"Scope": "local"})
	case "/NetworkDriver.CreateNetwork", "/NetworkDriver.DeleteNetwork":
		_, _ = w.Write([]byte("{}"))
	default:
		http.NotFound(w, r)
	}
}

func (s *stubPlugin) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// TestPluginDiscoveryThroughHolder checks the harness's plugin plumbing:
// a socket in a directory of the test's mount namespace, linked by
// Host.LinkPlugins into the holder's private /run/docker/plugins, is found
// and used by that host's dockerd, and the host's own /run/docker/plugins
// gets nothing.
func TestPluginDiscoveryThroughHolder(t *testing.T) {
	refs := RequireRefs(t)
	const name = "stubdrv"
	hostLink := filepath.Join("/run/docker/plugins", name+".sock")
	if _, err := os.Lstat(hostLink); err == nil {
		t.Fatalf("%s exists in the test's mount namespace before the test", hostLink)
	}
	dir := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(dir, name+".sock"))
	if err != nil {
		t.Fatal(err)
	}
	stub := &stubPlugin{}
	srv := &http.Server{Handler: stub}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })

	d := StartDocker(t, refs, nil)
	if err := d.Host.LinkPlugins(dir, name); err != nil {
		t.Fatal(err)
	}
	if out, err := d.Host.Run("ls", "-lL", "/run/docker/plugins"); err != nil || !strings.Contains(out, name+".sock") {
		t.Fatalf("holder's /run/docker/plugins: %v %s", err, out)
	}
	if _, err := os.Lstat(hostLink); err == nil {
		t.Errorf("%s appeared in the test's mount namespace", hostLink)
	}
	if out, _, err := d.CLI("network", "create", "-d", name, "stubnet"); err != nil {
		t.Fatalf("network create through the stub: %v %s\n%s", err, out, tail(d.Log("dockerd"), 3000))
	}
	if out, _, err := d.CLI("network", "rm", "stubnet"); err != nil {
		t.Fatalf("network rm: %v %s", err, out)
	}
	got := stub.seen()
	for _, want := range []string{"/Plugin.Activate", "/NetworkDriver.GetCapabilities", "/NetworkDriver.CreateNetwork", "/NetworkDriver.DeleteNetwork"} {
		if !slices.Contains(got, want) {
			t.Errorf("dockerd never called %s; calls: %v", want, got)
		}
	}
}
