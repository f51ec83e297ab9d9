package ovs

import (
	"context"
	"testing"

	"github.com/tether-net/tether/internal/ovsdb"
	"github.com/tether-net/tether/internal/ovsdb/ovstest"
)

// TestUserspaceDatapath: checksum offload is turned off only for bridges
// whose datapath_type the database says is netdev (a database alone, no
// ovs-vswitchd: no root needed).
func TestUserspaceDatapath(t *testing.T) {
	ctx := context.Background()
	c, err := ovsdb.Dial(ctx, ovstest.StartDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	for _, tc := range []struct {
		bridge, datapath string
		want             bool
	}{
		{"br-user", "netdev", true},
		{"br-kernel", "", false},
		{"br-system", "system", false},
	} {
		if _, _, err := c.EnsureBridge(ctx, ovsdb.BridgeSpec{Name: tc.bridge, DatapathType: tc.datapath, Port: ovsdb.PortSpec{Tag: -1}}); err != nil {
			t.Fatal(err)
		}
		if got, err := userspaceDatapath(ctx, c, tc.bridge); err != nil || got != tc.want {
			t.Errorf("%s (datapath_type %q): %v %v, want %v", tc.bridge, tc.datapath, got, err, tc.want)
		}
	}
	if got, err := userspaceDatapath(ctx, c, "br-missing"); err != nil || got {
		t.Errorf("missing bridge: %v %v, want false", got, err)
	}
}
