package docker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// The engines' own smoke tests: each starts on its Host, publishes busybox
// httpd's port 8080 as 18080, and the port answers from the outside
// namespace (uplink address: the kernel path) and from the host's loopback
// (Docker: docker-proxy; Podman: netavark's localhost DNAT); after removal
// it no longer answers; the cleanup checks (processes, cgroups, mounts,
// namespaces) run as in every benchmark.

const page = "bench\n" // /var/www/index.html in the image (bench/refs/busybox.sh)

var httpd = []string{"httpd", "-f", "-p", "8080", "-h", "/var/www"}

func TestDockerSmoke(t *testing.T) {
	refs := RequireRefs(t)
	before := defaultNS(t)
	t.Cleanup(func() { checkDefaultNS(t, before) })
	d := StartDocker(t, refs, nil)
	if d.Version == "" {
		t.Error("dockerd reported no version")
	}
	if out, err := d.Host.Run("nft", "list", "tables"); err != nil || !strings.Contains(out, "docker-bridges") {
		t.Errorf("no nftables table docker-bridges in %s (firewall-backend nftables): %v %s", d.Host.NS, err, out)
	}
	out := testutil.Outside(t, d.Host.NS)
	id, took, err := d.Run("web", []Binding{{18080, 8080}}, httpd...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("docker create+start with 1 port: %v", took)
	if n, err := d.Published(id); err != nil || n != 1 {
		t.Fatalf("published ports: %d, %v; want 1", n, err)
	}
	testutil.ExpectPage(t, out, testutil.UplinkAddr+":18080", page, true)
	testutil.ExpectPage(t, d.Host.NS, "127.0.0.1:18080", page, true)
	if _, err := d.Remove(id); err != nil {
		t.Fatal(err)
	}
	testutil.ExpectPage(t, out, testutil.UplinkAddr+":18080", page, false)
}

func TestPodmanSmoke(t *testing.T) {
	refs := RequireRefs(t)
	before := defaultNS(t)
	t.Cleanup(func() { checkDefaultNS(t, before) })
	p := StartPodman(t, refs)
	if p.Version == "" || p.Netavark == "" {
		t.Errorf("versions: podman %q, netavark %q", p.Version, p.Netavark)
	}
	out := testutil.Outside(t, p.Host.NS)
	_, took, err := p.Run("web", []Binding{{18080, 8080}}, httpd...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("podman run -d with 1 port: %v (launch overhead %v)", took, p.LaunchOverhead())
	if n, err := p.Published("web"); err != nil || n != 1 {
		t.Fatalf("published ports: %d, %v; want 1", n, err)
	}
	if o, err := p.Host.Run("iptables", "-t", "nat", "-S"); err != nil || !strings.Contains(o, "NETAVARK") {
		t.Errorf("no netavark rules in %s: %v %s", p.Host.NS, err, o)
	}
	testutil.ExpectPage(t, out, testutil.UplinkAddr+":18080", page, true)
	testutil.ExpectPage(t, p.Host.NS, "127.0.0.1:18080", page, true)
	if _, err := p.Remove("web"); err != nil {
		t.Fatal(err)
	}
	testutil.ExpectPage(t, out, testutil.UplinkAddr+":18080", page, false)
}

// nsState is what an engine could change in the default namespace if it
// escaped its Host: forwarding, its bridges, its firewall tables.
type nsState struct {
	forward string
	links   []string
	tables  string
}

func defaultNS(t *testing.T) nsState {
	t.Helper()
	f, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	s := nsState{forward: strings.TrimSpace(string(f))}
	for _, l := range []string{"docker0", "podman0"} {
		if _, err := net.InterfaceByName(l); err == nil {
			s.links = append(s.links, l)
		}
	}
	out, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v %s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "docker") || strings.Contains(l, "netavark") || strings.Contains(l, "NETAVARK") {
			s.tables += l + "\n"
		}
	}
	return s
}

func checkDefaultNS(t *testing.T, before nsState) {
	after := defaultNS(t)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("default namespace changed: before %+v, after %+v", before, after)
	}
}

// TestHostLeftovers checks that Close finds, kills and reports a process
// left in a Host's mount namespace and removes the run's cgroups.
func TestHostLeftovers(t *testing.T) {
	testutil.RequireRoot(t)
	h := NewHost(t, "tth-hostlo")
	cmd := h.Command(context.Background(), "sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var pids []int
	for deadline := time.Now().Add(5 * time.Second); len(pids) == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // until nsenter has entered the namespaces
		pids = h.Leftovers()
	}
	if len(pids) != 1 || pids[0] != cmd.Process.Pid {
		t.Fatalf("leftovers %v, want [%d]", pids, cmd.Process.Pid)
	}
	err := h.Close()
	if err == nil || !strings.Contains(err.Error(), "sleep 300") {
		t.Errorf("Close: %v; want the sleep reported", err)
	}
	var ee *exec.ExitError
	if err := <-done; !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("sleep ended with %v, want SIGKILL", err)
	}
}

// Late processes are tolerated only when they are Podman's own.
func TestReferenceTool(t *testing.T) {
	for _, tt := range []struct {
		killed string
		want   bool
	}{
		{"15139 /usr/bin/podman --root /tmp/x container cleanup abc", true},
		{"15140 /usr/libexec/podman/conmon --api-version 1", true},
		{"15141 /tmp/tether-e2e/tether daemon", false},
		{"15142 sleep 600", false},
		{"15143", false},
		{"15144 [podman]", true}, // a zombie: no command line, its comm
		{"15145 [conmon]", true},
		{"15146 [sleep]", false},
		{"15147 []", false},
	} {
		if got := referenceTool(tt.killed); got != tt.want {
			t.Errorf("referenceTool(%q) = %v, want %v", tt.killed, got, tt.want)
		}
	}
}
