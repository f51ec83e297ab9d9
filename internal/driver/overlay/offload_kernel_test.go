package overlay_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver/overlay"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// TestZeroUDPChecksum: over an IPv4 underlay the VXLAN device is made with
// a zero outer UDP checksum and otherwise as documented, 16 MiB of random
// data cross the overlay in one TCP stream intact (the inner checksums
// still guard it), CreateNetwork again keeps the device, and a device an
// older Tether made with the checksum is kept too (not recreated).
func TestZeroUDPChecksum(t *testing.T) {
	_, h1, h2 := setup(t, 1500)
	a, b := twoSandboxes(t, h1, h2, 4300, "10.230.0.0/24", "10.230.0.2/24", "10.230.0.3/24")
	vx := linkByName(t, h1.H, overlay.VxlanName(4300)).(*netlink.Vxlan)
	under := linkByName(t, h1.H, "eth0")
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"UDPCSum", vx.UDPCSum, false}, {"Learning", vx.Learning, false}, {"Proxy", vx.Proxy, true},
		{"Port", vx.Port, overlay.Port}, {"VNI", vx.VxlanId, 4300}, {"SrcAddr", vx.SrcAddr.String(), h1.VTEP.String()},
		{"VtepDevIndex", vx.VtepDevIndex, under.Attrs().Index}, {"MTU", vx.MTU, 1450},
		{"alias", vx.Alias, overlay.NetworkAlias(a.Net.ID)},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if out := testutil.Must(t, "ip", "-n", h1.NS, "-d", "link", "show", overlay.VxlanName(4300)); !bytes.Contains([]byte(out), []byte("noudpcsum")) {
		t.Errorf("ip -d link show: no noudpcsum:\n%s", out)
	}

	sendIntact(t, a.Path, b.Path, b.Addr(), 16<<20)

	h1.CreateNetwork(t, a.Net)
	if again := linkByName(t, h1.H, overlay.VxlanName(4300)); again.Attrs().Index != vx.Index {
		t.Errorf("CreateNetwork again made a new device (index %d, was %d)", again.Attrs().Index, vx.Index)
	}

	// a device with the checksum, as an older Tether made it: kept
	name := overlay.VxlanName(4300)
	testutil.Must(t, "ip", "-n", h2.NS, "link", "del", name)
	testutil.Must(t, "ip", "-n", h2.NS, "link", "add", name, "mtu", "1450", "type", "vxlan", "id", "4300", "dstport", "4789",
		"local", h2.VTEP.String(), "dev", "eth0", "nolearning", "proxy", "udpcsum")
	testutil.Must(t, "ip", "-n", h2.NS, "link", "set", name, "alias", overlay.NetworkAlias(b.Net.ID))
	old := linkByName(t, h2.H, name)
	h2.CreateNetwork(t, b.Net)
	kept := linkByName(t, h2.H, name).(*netlink.Vxlan)
	if kept.Index != old.Attrs().Index || !kept.UDPCSum {
		t.Errorf("device with udpcsum: index %d (was %d), UDPCSum %v: want kept as it is", kept.Index, old.Attrs().Index, kept.UDPCSum)
	}
}

// sendIntact sends n random bytes over TCP from the namespace at from to
// addr in the namespace at to, and fails unless they arrive unchanged.
func sendIntact(t *testing.T, from, to, addr string, n int) {
	t.Helper()
	var ln net.Listener
	if err := tns.Do(to, func() (err error) { ln, err = net.Listen("tcp", net.JoinHostPort(addr, "43100")); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		h := sha256.New()
		m, _ := io.Copy(h, c)
		if m != int64(n) {
			got <- nil
			return
		}
		got <- h.Sum(nil)
	}()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	var c net.Conn
	if err := tns.Do(from, func() (err error) { c, err = net.Dial("tcp", net.JoinHostPort(addr, "43100")); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	want := sha256.Sum256(data)
	if h := <-got; !bytes.Equal(h, want[:]) {
		t.Errorf("%d bytes to %s: received data differs (or is short)", n, addr)
	}
}
