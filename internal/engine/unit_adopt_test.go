package engine

// Adoption of namespaces another runtime made (CreateSandbox with a
// netns path or a PID).

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/tether-net/tether/internal/portmap"
)

// Adoption by path: the namespace is the runtime's, never deleted; a path
// that is no namespace file, or relative, is refused.
func TestAdoptByPath(t *testing.T) {
	r := newRig(t)
	path := r.adoptable()
	for _, tc := range []struct {
		name string
		spec SandboxSpec
	}{
		{"relative", SandboxSpec{Name: "x", NetNSPath: "run/netns/x"}},
		{"not a namespace", SandboxSpec{Name: "x", NetNSPath: "/etc/hostname"}},
		{"path and pid", SandboxSpec{Name: "x", NetNSPath: path, PID: 1}},
		{"negative pid", SandboxSpec{Name: "x", PID: -1}},
	} {
		_, err := r.e.CreateSandbox(r.ctx, tc.spec)
		wantKind(t, err, KindInvalid, tc.name)
	}
	sb, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "adopted", NetNSPath: path})
	if err != nil {
		t.Fatal(err)
	}
	if !sb.Adopted || len(sb.Endpoints) != 0 {
		t.Errorf("sandbox %+v: want adopted, on no network (an adopted namespace has its own)", sb)
	}
	r.restart()
	if _, err := r.e.Sandbox("adopted"); err != nil {
		t.Fatal("adopted sandbox lost on restart:", err)
	}
	if err := r.e.RemoveSandbox(r.ctx, "adopted", false); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(r.nsx.Files(), path) {
		t.Error("the adopted namespace was deleted")
	}
}

// The daemon's own namespace is refused, by identity, whatever names it.
func TestAdoptRefusesDaemonNamespace(t *testing.T) {
	r := newRig(t)
	_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "byfile", NetNSPath: r.e.hostNSPath()})
	wantKind(t, err, KindInvalid, "adopt the daemon's namespace by its file")
	_, err = r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "bypid", PID: os.Getpid()})
	wantKind(t, err, KindInvalid, "adopt the daemon's namespace by its pid")
}

// A CNI attachment: an adopted namespace, the interface named by the
// runtime, labels kept across a restart, Tether's resolver asked for.
func TestAdoptForCNI(t *testing.T) {
	r := newRig(t)
	r.network("cnet", "bridge", "198.19.20.0/24")
	path := r.adoptable()
	spec := SandboxSpec{Name: "pod", NetNSPath: path, ServeDNS: true, Labels: map[string]string{"k": "v"},
		Networks: []AttachSpec{{Network: "cnet", IfName: "net1"}}}
	sb, err := r.e.CreateSandbox(r.ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Endpoints[0].IfName != "net1" || !sb.ServeDNS || sb.Labels["k"] != "v" {
		t.Fatalf("sandbox %+v endpoint %+v", sb, sb.Endpoints[0])
	}
	if j := r.drv["bridge"].Endpoints()[sb.Endpoints[0].ID]; j.Endpoint.IfName != "net1" || j.NSPath != path {
		t.Errorf("driver joined %+v", j)
	}
	r.restart()
	if got := r.getSandbox("pod"); got.Labels["k"] != "v" || !got.ServeDNS {
		t.Errorf("after restart: %+v", got)
	}
	for _, tc := range []struct {
		name string
		spec SandboxSpec
		kind Kind
	}{
		{"ServeDNS without adoption", SandboxSpec{Name: "x", ServeDNS: true, Networks: []AttachSpec{{Network: "cnet"}}}, KindInvalid},
		{"bad interface name", SandboxSpec{Name: "x", NetNSPath: r.adoptable(), Networks: []AttachSpec{{Network: "cnet", IfName: "a/b"}}}, KindInvalid},
		{"interface name too long", SandboxSpec{Name: "x", NetNSPath: r.adoptable(), Networks: []AttachSpec{{Network: "cnet", IfName: "abcdefghijklmnop"}}}, KindInvalid},
	} {
		_, err := r.e.CreateSandbox(r.ctx, tc.spec)
		wantKind(t, err, tc.kind, tc.name)
	}
	r.network("cnet2", "bridge", "198.19.21.0/24")
	err = r.e.Connect(r.ctx, "cnet2", "pod", AttachSpec{IfName: "net1"})
	wantKind(t, err, KindConflict, "a second interface of the same name")
}

// Ports a runtime holds itself (Podman binds published ports): the kernel
// path only; the daemon leaves the host port free, also after a restart.
func TestPortsUnheld(t *testing.T) {
	r := newRig(t)
	r.network("pnet", "bridge", "198.19.22.0/24")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	spec := portmap.Spec{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: port, ContainerPort: 80}
	_, err = r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "p", NetNSPath: r.adoptable(),
		Networks: []AttachSpec{{Network: "pnet", Ports: []portmap.Spec{spec}, PortsUnheld: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.fw.portList()) != 1 {
		t.Fatalf("firewall ports %v, want the one", r.fw.portList())
	}
	for range 2 {
		l, err := net.Listen("tcp", netip.AddrPortFrom(spec.HostIP, port).String())
		if err != nil {
			t.Fatalf("the runtime cannot bind its port: %v", err)
		}
		l.Close()
		r.restart()
	}
	spec.HostPort = 0
	_, err = r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "q", NetNSPath: r.adoptable(),
		Networks: []AttachSpec{{Network: "pnet", Ports: []portmap.Spec{spec}, PortsUnheld: true}}})
	wantKind(t, err, KindInvalid, "an ephemeral port nobody holds")
}
