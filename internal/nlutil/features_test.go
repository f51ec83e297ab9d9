package nlutil

import (
	"strings"
	"testing"

	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

func TestFeaturesBadName(t *testing.T) {
	for _, name := range []string{"", "a-name-too-long-for-linux"} {
		if _, err := Features(name); err == nil {
			t.Errorf("Features(%q): no error", name)
		}
		if err := SetFeatures(name, map[string]bool{"rx-gro-list": true}); err == nil {
			t.Errorf("SetFeatures(%q): no error", name)
		}
	}
}

// TestKernelFeatures reads a veth's features by name and turns GRO-related
// ones on and off in a test namespace, reading each back; an unknown
// feature name and a fixed feature are errors naming them.
func TestKernelFeatures(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "t19c-ft")
	testutil.Must(t, "ip", "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb")
	path := "/run/netns/" + ns
	get := func() map[string]Feature {
		t.Helper()
		var fs map[string]Feature
		if err := tns.Do(path, func() (err error) { fs, err = Features("va"); return err }); err != nil {
			t.Fatal(err)
		}
		return fs
	}
	fs := get()
	// a veth's transmit checksum offload is on and changeable (TestTxChecksum)
	if f := fs["tx-checksum-ip-generic"]; !f.Active || !f.Available {
		t.Fatalf("tx-checksum-ip-generic = %+v, want on and changeable (%d features read)", f, len(fs))
	}
	for _, c := range []struct {
		feature string
		on      bool
	}{
		{"rx-gro", true}, {"rx-udp-gro-forwarding", true}, {"rx-gro-list", true},
		{"rx-gro-list", false}, {"rx-udp-gro-forwarding", false}, {"rx-gro", false},
	} {
		if err := tns.Do(path, func() error { return SetFeatures("va", map[string]bool{c.feature: c.on}) }); err != nil {
			t.Fatalf("set %s %v: %v", c.feature, c.on, err)
		}
		if got := get()[c.feature]; got.Active != c.on || got.Requested != c.on {
			t.Errorf("after set %s %v: %+v", c.feature, c.on, got)
		}
	}
	for _, c := range []struct{ feature, want string }{
		{"no-such-feature", `no feature "no-such-feature"`},
		{"loopback", "not in effect: loopback"}, // fixed off on a veth
	} {
		err := tns.Do(path, func() error { return SetFeatures("va", map[string]bool{c.feature: true}) })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("set %s: %v, want an error with %q", c.feature, err, c.want)
		}
	}
}
