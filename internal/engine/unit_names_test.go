package engine

import (
	"testing"
)

// TestSandboxNameIndex: the name index (byName) answers a create's name
// check and a lookup by name as the scan of every sandbox did: a live name
// is refused, a removed or dead sandbox's name is free again, and the
// index is rebuilt on restart.
func TestSandboxNameIndex(t *testing.T) {
	r := newRig(t)
	r.network("n", "bridge", "10.77.0.0/24")
	first := r.sandbox("web", "n")
	steps := []struct {
		name string
		do   func(t *testing.T)
	}{
		{"a live name is refused", func(t *testing.T) {
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "web", Networks: []AttachSpec{{Network: "n"}}})
			wantKind(t, err, KindConflict, "second web")
			if got := r.getSandbox("web").ID; got != first.ID {
				t.Errorf("web is %.12s, want %.12s", got, first.ID)
			}
		}},
		{"a removed name is free", func(t *testing.T) {
			if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
				t.Fatal(err)
			}
			if _, err := r.e.Sandbox("web"); err == nil {
				t.Fatal("web still found after its removal")
			}
			again := r.sandbox("web", "n")
			if got := r.getSandbox("web").ID; got != again.ID || again.ID == first.ID {
				t.Errorf("web is %.12s, want the new %.12s", got, again.ID)
			}
		}},
		{"a dead sandbox's name is free", func(t *testing.T) {
			dead := r.sandbox("db", "n")
			if err := r.nsx.Delete(dead.NetNS); err != nil { // ip netns delete, say
				t.Fatal(err)
			}
			again := r.sandbox("db", "n")
			if got := r.getSandbox("db").ID; got != again.ID {
				t.Errorf("db is %.12s, want the new %.12s", got, again.ID)
			}
			if _, err := r.e.Sandbox(dead.ID); err == nil {
				t.Error("the dead db is still known by its ID")
			}
		}},
		{"the index survives a restart", func(t *testing.T) {
			want := r.getSandbox("web").ID
			r.restart()
			if got := r.getSandbox("web").ID; got != want {
				t.Errorf("web after restart is %.12s, want %.12s", got, want)
			}
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "web", Networks: []AttachSpec{{Network: "n"}}})
			wantKind(t, err, KindConflict, "web after restart")
		}},
	}
	for _, s := range steps {
		t.Run(s.name, s.do)
	}
}
