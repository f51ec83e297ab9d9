package engine

// Networks and sandboxes through their lifecycle: faults in network
// creation and removal, detach and sandbox removal that fail half way and
// are finished by the next try, prune, and sandboxes whose namespace was
// deleted behind Tether's back.

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// A network whose creation fails after its bridge was made leaves no
// bridge, no firewall entry and no record.
func TestCreateNetworkRollback(t *testing.T) {
	r := newRig(t)
	arm(t, "network.create.after-bridge")
	_, err := r.e.CreateNetwork(r.ctx, NetworkSpec{Name: "n1", Subnets: []SubnetSpec{{Subnet: "10.10.0.0/24"}}})
	disarm()
	if !errors.Is(err, errInjected) {
		t.Fatalf("create: %v, want the injected fault", err)
	}
	if _, err := r.e.Network("n1"); KindOf(err) != KindNotFound {
		t.Errorf("network: %v, want none", err)
	}
	if got := len(r.drv["bridge"].Networks()); got != 1 { // the default network
		t.Errorf("driver holds %d networks, want the default one", got)
	}
	r.fw.mu.Lock()
	fwNets := len(r.fw.nets)
	r.fw.mu.Unlock()
	if fwNets != 1 {
		t.Errorf("firewall holds %d networks, want the default one", fwNets)
	}
	kvs, err := r.st.List(r.ctx, keyNetworks)
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 3 { // bridge, host, none
		t.Errorf("%d network records, want the 3 predefined", len(kvs))
	}
	r.network("n1", "bridge", "10.10.0.0/24") // the name and subnet are free
	// A driver that fails leaves nothing either.
	r.drv["bridge"].FailNext("CreateNetwork", errors.New("no space"))
	if _, err := r.e.CreateNetwork(r.ctx, NetworkSpec{Name: "n2", Subnets: []SubnetSpec{{Subnet: "10.10.2.0/24"}}}); err == nil {
		t.Fatal("created through a failing driver")
	}
	if _, err := r.e.Network("n2"); KindOf(err) != KindNotFound {
		t.Errorf("network of a failed create: %v", err)
	}
}

// A removal that stops after the bridge went keeps the records; the next
// removal finishes it.
func TestRemoveNetworkFinishedByRetry(t *testing.T) {
	r := newRig(t)
	n := r.network("n1", "bridge", "10.10.0.0/24")
	arm(t, "network.remove.after-bridge")
	err := r.e.RemoveNetwork(r.ctx, "n1")
	disarm()
	if !errors.Is(err, errInjected) {
		t.Fatalf("remove: %v, want the injected fault", err)
	}
	if _, err := r.e.Network("n1"); err != nil {
		t.Fatal("records went with a failed remove:", err)
	}
	if err := r.e.RemoveNetwork(r.ctx, "n1"); err != nil {
		t.Fatal("second remove:", err)
	}
	if slices.Contains(r.drv["bridge"].Networks(), n.ID) || r.fw.has(n.ID) {
		t.Error("network left in the driver or the firewall")
	}
	for _, prefix := range []string{keyNetworks + n.ID, keyIPAM + n.ID, keySticky + n.ID} {
		if kvs, _ := r.st.List(r.ctx, prefix); len(kvs) != 0 {
			t.Errorf("store keeps %s", prefix)
		}
	}
}

// A detach that stops after the driver left keeps the record; the next
// detach finishes it (leaving twice is harmless).
func TestDetachFinishedByRetry(t *testing.T) {
	for _, point := range []string{"detach.after-leave", "detach.after-commit"} {
		t.Run(point, func(t *testing.T) {
			r := newRig(t)
			r.network("n1", "bridge", "10.10.0.0/24")
			sb := r.sandbox("web", "n1")
			arm(t, point)
			err := r.e.Disconnect(r.ctx, "n1", "web", false)
			disarm()
			if !errors.Is(err, errInjected) {
				t.Fatalf("disconnect: %v, want the injected fault", err)
			}
			if _, ok := r.drv["bridge"].Endpoints()[sb.Endpoints[0].ID]; ok {
				t.Error("driver still holds the endpoint")
			}
			if err := r.e.Disconnect(r.ctx, "n1", "web", false); err != nil && !(point == "detach.after-commit" && KindOf(err) == KindNotFound) {
				t.Fatal("second disconnect:", err)
			}
			if got := r.getSandbox("web").Endpoints; len(got) != 0 {
				t.Errorf("endpoints %+v", got)
			}
			if r.inUse("n1", "10.10.0.2") {
				t.Error("address still taken")
			}
			if err := r.e.RemoveNetwork(r.ctx, "n1"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A sandbox removal that stops half way keeps what the next one needs to
// finish it (fault.go: "namespaces and record kept"), or leaves nothing.
func TestRemoveSandboxFinishedByRetry(t *testing.T) {
	for _, tc := range []struct{ point string }{
		{"sandbox.remove.after-detach"},
		{"sandbox.remove.after-netns"},
	} {
		point := tc.point
		t.Run(point, func(t *testing.T) {
			r := newRig(t)
			r.network("n1", "bridge", "10.10.0.0/24")
			sb := r.sandbox("web", "n1")
			arm(t, point)
			err := r.e.RemoveSandbox(r.ctx, "web", false)
			disarm()
			if !errors.Is(err, errInjected) {
				t.Fatalf("remove: %v, want the injected fault", err)
			}
			if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil && KindOf(err) != KindNotFound {
				t.Fatal("second remove:", err)
			}
			if _, err := r.e.Sandbox("web"); KindOf(err) != KindNotFound {
				t.Fatalf("sandbox: %v, want it gone", err)
			}
			if _, ok := r.stored(sb.ID); ok {
				t.Error("record kept")
			}
			if slices.Contains(r.nsx.Files(), sb.NetNS) {
				t.Error("namespace kept")
			}
			r.awaitFree("n1", "10.10.0.2")
		})
	}
}

// A sandbox whose namespace was deleted outside Tether while the daemon
// runs is removed when it is next touched; its name and its network are
// free again.
func TestNamespaceDeletedBehindTethersBack(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(r *rig) error
		want Kind // of the operation's error; -1 for success
	}{
		{"connect", func(r *rig) error { return r.e.Connect(r.ctx, "n2", "web", AttachSpec{}) }, KindNotFound},
		{"remove sandbox", func(r *rig) error { return r.e.RemoveSandbox(r.ctx, "web", false) }, -1},
		{"create under its name", func(r *rig) error {
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "web", Networks: []AttachSpec{{Network: "n2"}}})
			return err
		}, -1},
		{"remove its network", func(r *rig) error { return r.e.RemoveNetwork(r.ctx, "n1") }, -1},
		{"prune", func(r *rig) error {
			got, err := r.e.PruneNetworks(r.ctx, func(n *Network) bool { return n.Name != "n1" })
			if err == nil && !slices.Equal(got, []string{"n1"}) {
				err = errors.New("pruned " + strings.Join(got, ","))
			}
			return err
		}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.network("n1", "bridge", "10.10.1.0/24")
			r.network("n2", "bridge", "10.10.2.0/24")
			sb := r.sandbox("web", "n1")
			if err := r.nsx.Delete(sb.NetNS); err != nil {
				t.Fatal(err)
			}
			err := tc.do(r)
			if tc.want < 0 && err != nil || tc.want >= 0 && KindOf(err) != tc.want {
				t.Fatalf("%v, want kind %d", err, tc.want)
			}
			if got, err := r.e.Sandbox(sb.ID); err == nil {
				t.Fatalf("dead sandbox kept: %+v", got)
			}
			if _, ok := r.stored(sb.ID); ok {
				t.Error("dead sandbox's record kept")
			}
		})
	}
}

// Prune removes the user's networks nothing uses and keep does not keep.
func TestPruneNetworks(t *testing.T) {
	r := newRig(t, withCluster())
	r.network("idle", "bridge", "10.10.1.0/24")
	r.network("kept", "bridge", "10.10.2.0/24")
	r.network("used", "bridge", "10.10.3.0/24")
	r.network("global", "overlay", "10.20.0.0/24", func(s *NetworkSpec) { s.Internal = true })
	r.sandbox("web", "used")
	got, err := r.e.PruneNetworks(r.ctx, func(n *Network) bool { return n.Name == "kept" })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"idle"}) {
		t.Fatalf("pruned %v, want [idle]", got)
	}
	var left []string
	for _, n := range r.e.Networks() {
		left = append(left, n.Name)
	}
	if want := []string{"bridge", "global", "host", "kept", "none", "used"}; !slices.Equal(left, want) {
		t.Errorf("networks %v, want %v", left, want)
	}
}

// Network events: create, connect, disconnect, destroy, in order.
func TestNetworkEvents(t *testing.T) {
	r := newRig(t)
	events, cancel := r.e.Events().Subscribe()
	defer cancel()
	n := r.network("n1", "bridge", "10.10.0.0/24")
	sb := r.sandbox("web", "n1")
	if err := r.e.Disconnect(r.ctx, "n1", "web", false); err != nil {
		t.Fatal(err)
	}
	if err := r.e.RemoveNetwork(r.ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"create", "connect", "disconnect", "destroy"} {
		ev := <-events
		for ev.Type == TypeContainer { // the sandbox's own events (TestSandboxEvents)
			ev = <-events
		}
		if ev.Type != "network" || ev.Action != want || ev.ID != n.ID || ev.Attrs["name"] != "n1" || ev.Attrs["type"] != "bridge" {
			t.Fatalf("event %+v, want %s of n1", ev, want)
		}
		if (want == "connect" || want == "disconnect") && ev.Attrs["container"] != sb.ID {
			t.Errorf("%s event names container %q", want, ev.Attrs["container"])
		}
	}
}
