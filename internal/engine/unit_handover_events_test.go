package engine

import (
	"testing"
	"time"

	"github.com/tether-net/tether/internal/portmap"
)

// Ports a runtime publishes or revokes after the attach (Docker's
// ProgramExternalConnectivity and RevokeExternalConnectivity) are announced
// as port events, as an attach's are.
func TestHandoverPortEvents(t *testing.T) {
	r := newRig(t)
	r.network("dnet", "bridge", "198.19.9.0/24")
	if _, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "web", Handover: true,
		Networks: []AttachSpec{{Network: "dnet"}}}); err != nil {
		t.Fatal(err)
	}
	_, ch, cancel := r.e.SubscribeEvents(time.Time{})
	defer cancel()
	next := func() Event {
		t.Helper()
		select {
		case ev := <-ch:
			return ev
		case <-time.After(10 * time.Second): // a hang, not a performance threshold
			t.Fatal("no event")
			return Event{}
		}
	}
	port := portmap.Spec{Proto: "tcp", ContainerPort: 80}
	if err := r.e.PublishPorts(r.ctx, "dnet", "web", []portmap.Spec{port}); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Type != TypePort || ev.Action != ActionPublish || ev.Attrs["network"] != "dnet" {
		t.Fatalf("after PublishPorts: %+v, want a port publish on dnet", ev)
	}
	if err := r.e.UnpublishPorts(r.ctx, "dnet", "web"); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Type != TypePort || ev.Action != ActionUnpublish || ev.Attrs["name"] != "web" {
		t.Fatalf("after UnpublishPorts: %+v, want a port unpublish of web", ev)
	}
	// Revoking again changes nothing and announces nothing.
	if err := r.e.UnpublishPorts(r.ctx, "dnet", "web"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		t.Fatalf("revoking no ports announced %+v", ev)
	default:
	}
}
