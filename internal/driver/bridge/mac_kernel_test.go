package bridge_test

import (
	"bytes"
	"net"
	"testing"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	"github.com/tether-net/tether/internal/testutil"
)

// TestBridgeMAC: a network's bridge keeps its address (BridgeMAC, from the
// network's ID) when a port with a lower address joins, and so does a
// bridge made by an older version, found at create, which keeps the
// address it had. Without an address of its own the kernel would give
// the bridge the port's.
func TestBridgeMAC(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing bool // the bridge is there before CreateNetwork, as an older version left it
	}{{"new", false}, {"made by an older version", true}} {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHost(t)
			n := &driver.Network{ID: newID(), Name: "m" + testutil.Suffix(), BridgeName: "tb-" + testutil.Suffix(), MTU: 1500, ICC: true}
			var before net.HardwareAddr
			if tc.existing {
				testutil.Must(t, "ip", "-n", hs.ns, "link", "add", n.BridgeName, "type", "bridge")
				testutil.Must(t, "ip", "-n", hs.ns, "link", "set", n.BridgeName, "alias", bridge.AliasPrefix+n.ID)
				before = hs.mac(t, n.BridgeName)
			}
			if err := hs.d.CreateNetwork(ctx, n); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = hs.d.DeleteNetwork(ctx, n) })
			want := bridge.BridgeMAC(n.ID)
			if tc.existing {
				want = before
			}
			if got := hs.mac(t, n.BridgeName); !bytes.Equal(got, want) {
				t.Fatalf("bridge address %v, want %v", got, want)
			}
			if want[0]&1 != 0 || want[0]&2 == 0 && !tc.existing {
				t.Errorf("%v is not a unicast, locally administered address", want)
			}
			testutil.Must(t, "ip", "-n", hs.ns, "link", "add", "lowp", "address", "00:00:00:00:00:01", "type", "veth", "peer", "name", "lowq")
			testutil.Must(t, "ip", "-n", hs.ns, "link", "set", "lowp", "master", n.BridgeName, "up")
			if got := hs.mac(t, n.BridgeName); !bytes.Equal(got, want) {
				t.Errorf("after a port with a lower address joined, the bridge's is %v, want %v", got, want)
			}
			testutil.Must(t, "ip", "-n", hs.ns, "link", "del", "lowp")
		})
	}
}

func (hs *host) mac(t *testing.T, name string) net.HardwareAddr {
	t.Helper()
	l, err := hs.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}

// TestBridgeMACStable: the address is a function of the network's ID.
func TestBridgeMACStable(t *testing.T) {
	a, b := bridge.BridgeMAC("n1"), bridge.BridgeMAC("n2")
	if !bytes.Equal(a, bridge.BridgeMAC("n1")) || bytes.Equal(a, b) || len(a) != 6 {
		t.Errorf("BridgeMAC: n1 %v, again %v, n2 %v", a, bridge.BridgeMAC("n1"), b)
	}
	for _, m := range []net.HardwareAddr{a, b} {
		if m[0]&1 != 0 || m[0]&2 == 0 {
			t.Errorf("%v: not unicast and locally administered", m)
		}
	}
}
