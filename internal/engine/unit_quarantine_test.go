package engine

// Addresses of removed endpoints whose veth may live on (quarantine.go):
// held until the driver says the link is gone, or until the engine
// deletes it itself after the grace period.

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// When rm returns, the address of each endpoint whose link may outlive
// the sandbox is already held (an attach asking for it waits), or free;
// never neither, or an attach right after rm misses its sticky address
// and a static one is refused as taken.
func TestRemoveHoldsAddressAtOnce(t *testing.T) {
	// was an engine bug: rm returned before the address was held
	r := newRig(t)
	r.nsx.OnDelete = nil // the links outlive the namespace file: a stray process holds it
	r.network("n1", "bridge", "10.10.0.0/24")
	r.sandbox("web", "n1")
	if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if !r.held("n1", "10.10.0.2") && r.ns("n1").subnet.InUse(netip.MustParseAddr("10.10.0.2")) {
		t.Fatal("rm returned with the address neither held nor free")
	}
}

// A veth that outlives its sandbox's namespace (a stray process holds the
// namespace) is cut off the network at once, its address held; an attach
// asking for that address waits until the engine deletes the link after
// the grace period, and then gets it.
func TestHeldAddressWaitsForLink(t *testing.T) {
	r := newRig(t)
	r.nsx.OnDelete = nil
	r.network("n1", "bridge", "10.10.0.0/24")
	sb := r.sandbox("web", "n1")
	ep := sb.Endpoints[0]
	if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if j, ok := r.drv["bridge"].Endpoints()[ep.ID]; !ok || !j.Detached {
		t.Fatalf("endpoint %+v (present %v): want it detached, its link still there", j, ok)
	}
	// rm holds the address in the background (TestRemoveHoldsAddressAtOnce).
	for deadline := time.Now().Add(time.Minute); !r.held("n1", "10.10.0.2"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("address never held")
		}
	}
	if !r.inUse("n1", "10.10.0.2") {
		t.Fatal("held address free in the bitmap")
	}
	from := len(r.drv["bridge"].Calls())
	if got := attachIP(t, r, "again", AttachSpec{Network: "n1", IP: "10.10.0.2"}); got != "10.10.0.2" {
		t.Fatalf("got %s", got)
	}
	if calls := r.drv["bridge"].Calls()[from:]; len(calls) < 2 || calls[0] != "Leave" {
		t.Errorf("calls %v: want the old link deleted (Leave) before the new join", calls)
	}
	if _, ok := r.drv["bridge"].Endpoints()[ep.ID]; ok {
		t.Error("the old endpoint's link is still there")
	}
	if r.held("n1", "10.10.0.2") {
		t.Error("address still held by the old endpoint")
	}
}

// A daemon that stops while an address is held leaves it reserved in the
// store; the next start frees it (the link is swept, the bitmap fixed).
func TestHeldAddressFreedOnRestart(t *testing.T) {
	r := newRig(t)
	r.nsx.OnDelete = nil
	r.network("n1", "bridge", "10.10.0.0/24")
	sb := r.sandbox("web", "n1")
	if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	r.restart()
	if r.inUse("n1", "10.10.0.2") {
		t.Error("address of a removed sandbox still taken after a restart")
	}
	if links := r.drv["bridge"].Links(); slices.Contains(slices.Collect(maps.Values(links)), sb.Endpoints[0].HostIfName) {
		t.Errorf("the removed sandbox's link survived the restart: %v", links)
	}
}

// held reports whether addr on network name is held in quarantine.
func (r *rig) held(name, addr string) bool {
	id := r.ns(name).rec.ID
	q := r.e.quarantine
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.byAddr[id+"/"+addr] != nil
}
