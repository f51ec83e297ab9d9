package nlutil

import (
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// TestIfreqLayout: the request is struct ifreq's size (40 bytes on 64-bit)
// with the data pointer right after the name.
func TestIfreqLayout(t *testing.T) {
	var r ifreqData
	if got, want := unsafe.Sizeof(r), uintptr(unix.IFNAMSIZ+24); unsafe.Sizeof(uintptr(0)) == 8 && got != want {
		t.Errorf("sizeof ifreqData = %d, want %d", got, want)
	}
	if got := unsafe.Offsetof(r.data); got != unix.IFNAMSIZ {
		t.Errorf("offset of data = %d, want %d", got, unix.IFNAMSIZ)
	}
	if unsafe.Sizeof(ethtoolValue{}) != 8 {
		t.Errorf("sizeof ethtoolValue = %d, want 8", unsafe.Sizeof(ethtoolValue{}))
	}
}

func TestEthtoolBadName(t *testing.T) {
	for _, name := range []string{"", "a-name-too-long-for-linux"} {
		if err := SetTxChecksum(name, false); err == nil {
			t.Errorf("SetTxChecksum(%q): no error", name)
		}
	}
}

// TestTxChecksum turns a veth's transmit checksum offload off and on again
// in a test namespace, reading it back each time; a missing device is
// ENODEV.
func TestTxChecksum(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NetNS(t, "tth-et")
	testutil.Must(t, "ip", "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb")
	path := "/run/netns/" + ns
	get := func() bool {
		t.Helper()
		var on bool
		if err := tns.Do(path, func() (err error) { on, err = TxChecksum("va"); return err }); err != nil {
			t.Fatal(err)
		}
		return on
	}
	if !get() {
		t.Fatal("a new veth has tx checksum offload off; the test cannot tell a change")
	}
	for _, on := range []bool{false, false, true} {
		if err := tns.Do(path, func() error { return SetTxChecksum("va", on) }); err != nil {
			t.Fatalf("set %v: %v", on, err)
		}
		if got := get(); got != on {
			t.Errorf("after set %v: %v", on, got)
		}
	}
	err := tns.Do(path, func() error { return SetTxChecksum("nosuch0", false) })
	if !errors.Is(err, unix.ENODEV) {
		t.Errorf("missing device: %v, want ENODEV", err)
	}
}
