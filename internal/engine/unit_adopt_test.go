package engine

// Adoption of namespaces another runtime made (CreateSandbox with a
// netns path or a PID).

import (
	"os"
	"slices"
	"testing"
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
