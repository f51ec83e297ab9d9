package overlay_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/driver/overlay"
	ot "github.com/tether-net/tether/internal/driver/overlay/overlaytest"
	"github.com/tether-net/tether/internal/testutil"
)

// The driver keeps each network's bridge (index and MTU) so an attach does
// not look it up again. A bridge deleted and made again behind its back (a
// new index) still gets the next sandbox: the stale index fails the
// enslaving, and the bridge is looked up afresh. Traffic across hosts
// proves the new port is on the new bridge.
func TestJoinAfterBridgeRemade(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	const vni = 4711
	a, b := twoSandboxes(t, h1, h2, vni, "10.94.0.0/24", "10.94.0.2/24", "10.94.0.3/24")
	ot.MustPing(t, a.NS, b.Addr())

	br, vx := overlay.BridgeName(vni), overlay.VxlanName(vni)
	mtu := strconv.Itoa(linkByName(t, h1.H, br).Attrs().MTU)
	before := testutil.Must(t, "ip", "-n", h1.NS, "-o", "link", "show", br)
	testutil.Must(t, "ip", "-n", h1.NS, "link", "del", br)
	testutil.Must(t, "ip", "-n", h1.NS, "link", "add", br, "mtu", mtu, "type", "bridge")
	testutil.Must(t, "ip", "-n", h1.NS, "link", "set", br, "alias", overlay.NetworkAlias(a.Net.ID))
	testutil.Must(t, "ip", "-n", h1.NS, "link", "set", vx, "master", br)
	testutil.Must(t, "ip", "-n", h1.NS, "link", "set", br, "up")
	after := testutil.Must(t, "ip", "-n", h1.NS, "-o", "link", "show", br)
	if strings.Fields(before)[0] == strings.Fields(after)[0] {
		t.Fatalf("the bridge kept its index (%s): the test needs a new one", strings.Fields(after)[0])
	}

	c := h1.Join(t, a.Net, "10.94.0.4/24")
	if l := testutil.Must(t, "ip", "-n", h1.NS, "-o", "link", "show", c.EP.HostIfName); !strings.Contains(l, "master "+br) {
		t.Fatalf("host end of the new sandbox: %s, want it on %s", l, br)
	}
	ot.Mesh(t, c, b)
	ot.MustPing(t, c.NS, b.Addr())
}
