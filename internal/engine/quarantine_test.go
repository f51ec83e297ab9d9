package engine

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/sandbox"
	"github.com/tether-net/tether/internal/store/bolt"
)

// testEngine is an engine over a bolt store in a temporary directory, with
// one bridge network 10.9.0.0/24 in memory; nothing touches the kernel.
func testEngine(t *testing.T) (*Engine, *netState) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e, err := New(Options{Config: &config.Config{ExecRoot: t.TempDir()}, Store: st,
		Drivers: []driver.Driver{bridge.New(nil)}, DefaultDriver: "bridge"})
	if err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix("10.9.0.0/24")
	sub, err := ipam.NewSubnet(ipam.SubnetConfig{Subnet: pfx, Gateway: netip.MustParseAddr("10.9.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	ns := &netState{rec: &Network{ID: "n1", Name: "n1", Driver: "bridge", Subnet: pfx}, subnet: sub}
	e.networks["n1"] = ns
	return e, ns
}

// A held address stays taken until its link is gone; then it is free again
// and a waiter for it wakes. Here the link never existed (no such index),
// so hold finds it gone at once, as after a namespace torn down before the
// link subscription started.
func TestHoldReleasesWhenLinkIsGone(t *testing.T) {
	e, ns := testEngine(t)
	addr, err := ns.subnet.Allocate(netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	linkGone := make(chan struct{})
	close(linkGone)
	h := &held{netID: "n1", addr: addr, drv: e.drivers["bridge"], net: &driver.Network{ID: "n1"},
		ep: &driver.Endpoint{ID: "ep", HostIfName: "vth-none"}, linkGone: linkGone, gone: make(chan struct{})}
	e.hold([]*held{h})
	select {
	case <-h.gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the address of a link that is gone was not released")
	}
	if ns.subnet.InUse(addr) {
		t.Fatalf("%s still taken after its link went", addr)
	}
	start := time.Now()
	e.awaitRelease(context.Background(), "n1", addr)
	if time.Since(start) > time.Second {
		t.Fatal("awaitRelease waited for an address that is not held")
	}
	if len(e.quarantine.byAddr) != 0 {
		t.Fatal("quarantine not empty")
	}
}

// Adoption refuses the daemon's own network namespace, by identity.
func TestRefuseHostNS(t *testing.T) {
	own, err := netns.IDOf("/proc/self/ns/net")
	if err != nil {
		t.Fatal("read our own network namespace:", err)
	}
	e := &Engine{nsx: sandbox.Kernel{}}
	if err := e.refuseHostNS(own); err == nil {
		t.Fatal("own network namespace accepted")
	}
	if err := e.refuseHostNS(netns.ID{Dev: own.Dev, Ino: own.Ino + 1}); err != nil {
		t.Fatalf("another namespace refused: %v", err)
	}
}
