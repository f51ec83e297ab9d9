package bridge_test

import (
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/testutil"
)

// The driver keeps each bridge's index so an attach does not look the
// bridge up again. A bridge deleted and made again behind its back (a new
// index) still gets the next sandbox: the stale index fails the enslaving,
// and the bridge is looked up afresh. Traffic proves the new port is on
// the new bridge.
func TestJoinAfterBridgeRemade(t *testing.T) {
	hs := newHost(t)
	n := hs.network(t, "10.93.0.0/24", "10.93.0.1", "", "")
	a := hs.join(t, n, "10.93.0.2/24", "", true)
	mustPing(t, a.ns, "10.93.0.1")

	// Someone deletes the bridge (its ports go with it) and the network
	// is made again, as a restart's restore does: a new index.
	before := testutil.Must(t, "ip", "-n", hs.ns, "-o", "link", "show", n.BridgeName)
	testutil.Must(t, "ip", "-n", hs.ns, "link", "del", n.BridgeName)
	testutil.Must(t, "ip", "-n", hs.ns, "link", "add", n.BridgeName, "type", "bridge")
	testutil.Must(t, "ip", "-n", hs.ns, "link", "set", n.BridgeName, "alias", "tether:"+n.ID)
	testutil.Must(t, "ip", "-n", hs.ns, "addr", "add", "10.93.0.1/24", "dev", n.BridgeName)
	testutil.Must(t, "ip", "-n", hs.ns, "link", "set", n.BridgeName, "up")
	after := testutil.Must(t, "ip", "-n", hs.ns, "-o", "link", "show", n.BridgeName)
	if strings.Fields(before)[0] == strings.Fields(after)[0] {
		t.Fatalf("the bridge kept its index (%s): the test needs a new one", strings.Fields(after)[0])
	}

	b := hs.join(t, n, "10.93.0.3/24", "", true)
	master := testutil.Must(t, "ip", "-n", hs.ns, "-o", "link", "show", b.ep.HostIfName)
	if !strings.Contains(master, "master "+n.BridgeName) {
		t.Fatalf("host end of the new sandbox: %s, want it on %s", master, n.BridgeName)
	}
	mustPing(t, b.ns, "10.93.0.1")
}
