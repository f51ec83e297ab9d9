package engine

// Handed-over sandboxes (Docker's remote driver): pairs left in the host
// namespace, no namespace of Tether's, reaped when the runtime's namespace
// takes the pair.

import (
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/portmap"
)

func TestHandoverAttach(t *testing.T) {
	r := newRig(t)
	r.network("dnet", "bridge", "198.19.7.0/24")
	sb, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "web", Handover: true,
		Networks: []AttachSpec{{Network: "dnet", IP: "198.19.7.9", Aliases: []string{"www"}, MAC: "02:aa:bb:cc:dd:ee"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !sb.Handover || sb.NetNS != "" || len(r.nsx.Files()) != 0 && containsPrefix(r.nsx.Files(), sb.ID) {
		t.Fatalf("sandbox %+v: want handed over, no namespace of its own", sb)
	}
	ep := sb.Endpoints[0]
	if !strings.HasPrefix(ep.IfName, handoverIfPrefix) || len(ep.IfName) != 15 {
		t.Errorf("sandbox end %q: want a temporary %s name of 15 characters", ep.IfName, handoverIfPrefix)
	}
	if ep.Address.String() != "198.19.7.9/24" || ep.MAC != "02:aa:bb:cc:dd:ee" {
		t.Errorf("endpoint %s %s: want the static address and the MAC asked for", ep.Address, ep.MAC)
	}
	j := r.drv["bridge"].Endpoints()[ep.ID]
	if !j.Pair || j.NSPath != "" {
		t.Errorf("driver saw %+v: want JoinPair, no namespace", j)
	}
	// No process can run in it, and no gateway network is joined for it.
	if _, err := r.e.Exec(r.ctx, "web", ExecSpec{Args: []string{"true"}}); KindOf(err) != KindForbidden {
		t.Errorf("exec in a handed-over sandbox: %v, want forbidden", err)
	}
	// Restart keeps it while its pair lives.
	r.restart()
	if got := r.getSandbox("web"); len(got.Endpoints) != 1 {
		t.Fatalf("after restart: %+v", got)
	}
	// Ports published after the attach, then revoked.
	port := portmap.Spec{Proto: "tcp", ContainerPort: 80}
	if err := r.e.PublishPorts(r.ctx, "dnet", "web", []portmap.Spec{port}); err != nil {
		t.Fatal(err)
	}
	got := r.getSandbox("web").Endpoints[0].Ports
	if len(got) != 1 || got[0].HostPort == 0 || len(r.fw.portList()) != 1 {
		t.Fatalf("published %+v (firewall %v): want one held port", got, r.fw.portList())
	}
	if err := r.e.PublishPorts(r.ctx, "dnet", "web", []portmap.Spec{port}); err != nil || len(r.fw.portList()) != 1 {
		t.Fatalf("publishing the same again: %v, firewall %v", err, r.fw.portList())
	}
	if err := r.e.UnpublishPorts(r.ctx, "dnet", "web"); err != nil {
		t.Fatal(err)
	}
	if p := r.getSandbox("web").Endpoints[0].Ports; len(p) != 0 || len(r.fw.portList()) != 0 {
		t.Fatalf("after unpublish: %+v, firewall %v", p, r.fw.portList())
	}
	// Removal deletes the pair and frees the address at once.
	if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.drv["bridge"].Endpoints()[ep.ID]; ok {
		t.Error("the pair outlived the sandbox")
	}
	if r.inUse("dnet", "198.19.7.9") {
		t.Error("the address is still in use")
	}
}

func TestHandoverRefused(t *testing.T) {
	r := newRig(t)
	r.network("dnet", "bridge", "198.19.8.0/24")
	for _, tc := range []struct {
		name string
		spec SandboxSpec
		kind Kind
	}{
		{"no network", SandboxSpec{Name: "a", Handover: true}, KindInvalid},
		{"host network", SandboxSpec{Name: "a", Handover: true, Networks: []AttachSpec{{Network: "host"}}}, KindForbidden},
		{"adopted too", SandboxSpec{Name: "a", Handover: true, PID: 1, Networks: []AttachSpec{{Network: "dnet"}}}, KindInvalid},
		{"bad MAC", SandboxSpec{Name: "a", Handover: true, Networks: []AttachSpec{{Network: "dnet", MAC: "01:00:5e:00:00:01"}}}, KindInvalid},
		{"zero MAC", SandboxSpec{Name: "a", Handover: true, Networks: []AttachSpec{{Network: "dnet", MAC: "00:00:00:00:00:00"}}}, KindInvalid},
		{"not a MAC", SandboxSpec{Name: "a", Handover: true, Networks: []AttachSpec{{Network: "dnet", MAC: "zz"}}}, KindInvalid},
	} {
		_, err := r.e.CreateSandbox(r.ctx, tc.spec)
		if KindOf(err) != tc.kind {
			t.Errorf("%s: %v (kind %d), want kind %d", tc.name, err, KindOf(err), tc.kind)
		}
	}
	_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "a", Handover: true, Networks: []AttachSpec{{Network: "none"}}})
	wantKind(t, err, KindForbidden, "a network whose sandboxes have no interface of theirs")
	if len(r.e.Sandboxes()) != 0 {
		t.Errorf("refused creations left sandboxes: %v", r.e.Sandboxes())
	}
}

// A pair deleted behind the engine's back (the runtime's namespace went,
// dockerd killed with its containers) is forgotten by the next reap and by
// a restart; the sandbox goes with its last endpoint.
func TestHandoverReap(t *testing.T) {
	r := newRig(t)
	r.network("dnet", "bridge", "198.19.10.0/24")
	mk := func(name string) *Sandbox {
		sb, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: name, Handover: true, Networks: []AttachSpec{{Network: "dnet"}}})
		if err != nil {
			t.Fatal(err)
		}
		return sb
	}
	a, b, c := mk("a"), mk("b"), mk("c")
	r.drv["bridge"].DropPair(a.Endpoints[0].ID)
	if gone := r.e.ReapHandedOver(r.ctx); len(gone) != 1 || gone[0] != a.ID {
		t.Fatalf("reaped %v, want only %s", gone, a.ID)
	}
	if r.inUse("dnet", a.Endpoints[0].Address.Addr().String()) {
		t.Error("the dead endpoint's address is still in use")
	}
	r.stop()
	r.drv["bridge"].DropPair(b.Endpoints[0].ID)
	r.start()
	if _, err := r.e.Sandbox(b.ID); err == nil { // by ID: "b" may prefix another sandbox's ID
		t.Error("a sandbox whose pair went while the daemon was down survived the restart")
	}
	if _, err := r.e.Sandbox("c"); err != nil {
		t.Errorf("a live handed-over sandbox was lost: %v", err)
	}
	_ = c
}

func containsPrefix(files []string, s string) bool {
	for _, f := range files {
		if strings.Contains(f, s) {
			return true
		}
	}
	return false
}

// Names learned after the attach (Docker's aliases) replace the
// endpoint's, in the resolver's table and, on a global network, in the
// endpoint's published record.
func TestHandoverSetAliases(t *testing.T) {
	r := newRig(t, withCluster())
	r.network("ov", "overlay", "10.80.0.0/24")
	sb, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "web", Handover: true, Networks: []AttachSpec{{Network: "ov", Aliases: []string{"web"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.e.SetAliases(r.ctx, "ov", "web", []string{"api", "web", "api"}); err != nil {
		t.Fatal(err)
	}
	if got := r.getSandbox("web").Endpoints[0].Aliases; strings.Join(got, ",") != "api,web" {
		t.Errorf("aliases %v", got)
	}
	if addrs, ok := r.e.names.LookupHost("api.ov"); !ok || len(addrs) != 1 || addrs[0] != sb.Endpoints[0].Address.Addr() {
		t.Errorf("api.ov resolves to %v %v", addrs, ok)
	}
	if err := r.e.FlushGlobal(r.ctx); err != nil { // the record follows in the background
		t.Fatal(err)
	}
	eps, err := r.cl.Endpoints(r.ctx, r.ns("ov").rec.ID)
	if err != nil || len(eps) != 1 || strings.Join(eps[0].Aliases, ",") != "api,web" {
		t.Errorf("published record %+v %v", eps, err)
	}
	wantKind(t, r.e.SetAliases(r.ctx, "ov", "web", []string{"bad name"}), KindInvalid, "an alias that is no DNS label")
	wantKind(t, r.e.SetAliases(r.ctx, "ov", "nobody", nil), KindNotFound, "an unknown sandbox")
}
