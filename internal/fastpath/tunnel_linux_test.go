package fastpath_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/fastpath"
	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
	"github.com/tether-net/tether/internal/testutil"
)

const (
	tunSeg  = 4711
	tunPort = 4789
)

// tunHost is a host namespace on the underlay (eth0, addr) with a VXLAN
// device vx0 (VNI tunSeg, port tunPort) and one sandbox whose host end is
// not on any bridge: only the program connects it to anything.
type tunHost struct {
	ns, addr         string
	under, vx, end   int // interface indexes in ns
	sb, sbAddr       string
	mac              net.HardwareAddr
	p                *fastpath.Path
	remote, remoteIP string // the other host's sandbox MAC and VTEP
}

func index(t *testing.T, ns, name string) int {
	t.Helper()
	h, err := tns.NewHandle("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

// rxStats is h's underlay interface's counters.
func rxStats(t *testing.T, h *tunHost) *netlink.LinkStatistics {
	t.Helper()
	hd, err := tns.NewHandle("/run/netns/" + h.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()
	l, err := hd.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics
}

// tunRig is two such hosts joined by a veth underlay (198.18.77.1 and .2).
func tunRig(t *testing.T) [2]*tunHost {
	t.Helper()
	testutil.RequireRoot(t)
	var hs [2]*tunHost
	for i := range hs {
		h := &tunHost{ns: testutil.NetNS(t, "tfp-u"), sb: testutil.NetNS(t, "tfp-us"),
			addr: "198.18.77." + strconv.Itoa(1+i), sbAddr: "10.79.0." + strconv.Itoa(2+i)}
		h.mac, _ = net.ParseMAC("02:79:00:00:00:0" + strconv.Itoa(2+i))
		hs[i] = h
	}
	testutil.Must(t, "ip", "-n", hs[0].ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", hs[1].ns)
	for i, h := range hs {
		o := hs[1-i]
		testutil.Must(t, "ip", "-n", h.ns, "addr", "add", h.addr+"/24", "dev", "eth0")
		testutil.Must(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
		testutil.Must(t, "ip", "-n", h.ns, "link", "add", "vx0", "type", "vxlan", "id", strconv.Itoa(tunSeg),
			"local", h.addr, "dev", "eth0", "dstport", strconv.Itoa(tunPort), "nolearning")
		testutil.Must(t, "ip", "-n", h.ns, "link", "set", "vx0", "mtu", "1450")
		testutil.Must(t, "bridge", "-n", h.ns, "fdb", "append", o.mac.String(), "dev", "vx0", "dst", o.addr, "self", "permanent")
		testutil.Must(t, "ip", "-n", h.ns, "link", "add", "end0", "mtu", "1450", "type", "veth", "peer", "name", "eth0", "netns", h.sb)
		testutil.Must(t, "ip", "-n", h.ns, "link", "set", "end0", "up")
		testutil.Must(t, "ip", "-n", h.sb, "link", "set", "eth0", "address", h.mac.String(), "mtu", "1450", "up")
		testutil.Must(t, "ip", "-n", h.sb, "addr", "add", h.sbAddr+"/24", "dev", "eth0")
		testutil.Must(t, "ip", "-n", h.sb, "link", "set", "lo", "up")
		testutil.Must(t, "ip", "-n", h.sb, "neigh", "add", o.sbAddr, "lladdr", o.mac.String(), "dev", "eth0", "nud", "permanent")
		h.under, h.vx, h.end = index(t, h.ns, "eth0"), index(t, h.ns, "vx0"), index(t, h.ns, "end0")
		p, err := fastpath.New("/run/netns/"+h.ns, tunPort)
		if err != nil {
			t.Fatalf("fast path: %v", err)
		}
		t.Cleanup(func() { p.Close() })
		h.p = p
		if err := p.Attach(h.end, tunSeg); err != nil {
			t.Fatal(err)
		}
		if err := p.SetDest(tunSeg, h.mac, h.end, true); err != nil {
			t.Fatal(err)
		}
	}
	return hs
}

// tunnel gives h the other host's sandbox as a remote endpoint behind vtep.
func (h *tunHost) tunnel(t *testing.T, o *tunHost, vtep string) {
	t.Helper()
	err := h.p.SetRemote(tunSeg, o.mac, h.vx, fastpath.Tunnel{VNI: tunSeg, Under: h.under,
		Local: netip.MustParseAddr(h.addr), Remote: netip.MustParseAddr(vtep)})
	if err != nil {
		t.Fatal(err)
	}
}

// transfer sends n pseudo-random bytes over TCP from a's sandbox to b's
// and fails unless b receives them intact (large GSO frames, encapsulated
// and decapsulated with their checksums left to the receiver).
func transfer(t *testing.T, a, b *tunHost, n int) {
	t.Helper()
	var ln net.Listener
	if err := tns.Do("/run/netns/"+b.sb, func() (err error) {
		ln, err = net.Listen("tcp4", b.sbAddr+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		h := sha256.New()
		_, _ = io.Copy(h, c)
		got <- [32]byte(h.Sum(nil))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := testutil.DialInNS(ctx, a.sb, "tcp4", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial %s: %v", ln.Addr(), err)
	}
	data := make([]byte, n)
	r := rand.NewChaCha8([32]byte{7})
	_, _ = r.Read(data)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(c, bytes.NewReader(data)); err != nil {
		t.Fatalf("send: %v", err)
	}
	c.Close()
	if sum := <-got; sum != sha256.Sum256(data) {
		t.Fatalf("%d bytes from %s to %s arrived changed or incomplete", n, a.sbAddr, b.sbAddr)
	}
}

// TestTunnelWithoutDevice: with both VXLAN devices down, sandboxes on two
// hosts reach each other only through the programs' own encapsulation and
// decapsulation; a spoofed or unknown VTEP, or an underlay without the
// decapsulation program, gets nothing through.
func TestTunnelWithoutDevice(t *testing.T) {
	hs := tunRig(t)
	a, b := hs[0], hs[1]
	if err := ping(a.sb, b.sbAddr); err == nil {
		t.Fatal("the rig is wrong: ping with nothing between the hosts' sandboxes")
	}
	for i, h := range hs {
		h.tunnel(t, hs[1-i], hs[1-i].addr)
	}
	if err := ping(a.sb, b.sbAddr); err == nil {
		t.Fatal("ping answered without a decapsulation program (vx0 is down)")
	}
	for _, h := range hs {
		if err := h.p.AttachUnderlay(h.under, tunSeg); err != nil {
			t.Fatal(err)
		}
	}
	if err := ping(a.sb, b.sbAddr); err != nil {
		t.Fatalf("ping through the programs' tunnel: %v", err)
	}
	transfer(t, a, b, 16<<20)
	transfer(t, b, a, 4<<20)

	// As over a NIC that can neither segment nor checksum VXLAN: a's
	// underlay makes the kernel do both in software, from the inner
	// headers the program declared; b receives frames of at most 1514
	// bytes, each decapsulated on its own, and the data arrives intact.
	if err := tns.Do("/run/netns/"+a.ns, func() error {
		return nlutil.SetFeatures("eth0", map[string]bool{"tx-checksum-ip-generic": false,
			"tx-udp_tnl-segmentation": false, "tx-udp_tnl-csum-segmentation": false})
	}); err != nil {
		t.Fatal(err)
	}
	before := rxStats(t, b)
	transfer(t, a, b, 16<<20)
	after := rxStats(t, b)
	if n := after.RxPackets - before.RxPackets; n == 0 || (after.RxBytes-before.RxBytes)/n > 1514 {
		t.Errorf("b's underlay received %d packets, %d bytes: not segmented", n, after.RxBytes-before.RxBytes)
	}
	if got := b.p.Underlays(); len(got) != 1 || got[0] != b.under {
		t.Errorf("Underlays = %v, want [%d]", got, b.under)
	}

	// b expects a's sandbox behind another VTEP: a's packets are not
	// decapsulated (and vx0, down, does not take them either).
	b.tunnel(t, a, "198.18.77.9")
	if err := ping(a.sb, b.sbAddr); err == nil {
		t.Fatal("a packet from a VTEP the sender does not live behind was decapsulated")
	}
	b.tunnel(t, a, a.addr)
	if err := ping(a.sb, b.sbAddr); err != nil {
		t.Fatalf("ping with the VTEP right again: %v", err)
	}

	// DropSegment takes the decapsulation program off.
	if err := b.p.DropSegment(tunSeg); err != nil {
		t.Fatal(err)
	}
	if got := b.p.Underlays(); len(got) != 0 {
		t.Errorf("Underlays after DropSegment = %v, want none", got)
	}
	if err := ping(a.sb, b.sbAddr); err == nil {
		t.Fatal("ping answered after DropSegment")
	}
}

// TestTunnelIsVXLAN: the programs' packets are standard VXLAN. With vx0
// up on one host and no decapsulation program there, that host's kernel
// decapsulates what the other host's program encapsulated, and the other
// host's program decapsulates what the kernel's device encapsulated.
func TestTunnelIsVXLAN(t *testing.T) {
	hs := tunRig(t)
	a, b := hs[0], hs[1]
	a.tunnel(t, b, b.addr)
	if err := a.p.AttachUnderlay(a.under, tunSeg); err != nil {
		t.Fatal(err)
	}
	// b: the kernel's device; the program on vx0 puts decapsulated frames
	// for b's sandbox into it, and b's sandbox's frames go to vx0.
	testutil.Must(t, "ip", "-n", b.ns, "link", "set", "vx0", "up")
	if err := b.p.Attach(b.vx, tunSeg); err != nil {
		t.Fatal(err)
	}
	if err := b.p.SetDest(tunSeg, a.mac, b.vx, false); err != nil {
		t.Fatal(err)
	}
	if err := ping(a.sb, b.sbAddr); err != nil {
		t.Fatalf("ping between the program's tunnel and the kernel's VXLAN device: %v", err)
	}
	transfer(t, a, b, 8<<20)
	transfer(t, b, a, 8<<20)

	// The outer header is the device's: no DF, the inner ECN bits copied
	// out (b's stack sees a's packets: count them before anything else).
	nft := func(args ...string) string {
		return testutil.Must(t, "ip", append([]string{"netns", "exec", b.ns, "nft"}, args...)...)
	}
	nft("add", "table", "ip", "tfp")
	nft("add", "chain", "ip", "tfp", "pre", "{ type filter hook prerouting priority -300; }")
	nft("add", "rule", "ip", "tfp", "pre", "udp", "dport", strconv.Itoa(tunPort), "ip", "ecn", "ect0", "counter")
	nft("add", "rule", "ip", "tfp", "pre", "udp", "dport", strconv.Itoa(tunPort), "ip", "frag-off", "&", "0x4000", "!=", "0", "counter")
	if out, err := testutil.InNS(a.sb, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-Q", "2", b.sbAddr); err != nil {
		t.Fatalf("ping with ECT(0): %v\n%s", err, out)
	}
	counts := map[string]int{}
	for _, line := range strings.Split(nft("list", "chain", "ip", "tfp", "pre"), "\n") {
		if m := regexp.MustCompile(`(ecn|frag-off).* counter packets (\d+)`).FindStringSubmatch(line); m != nil {
			counts[m[1]], _ = strconv.Atoi(m[2])
		}
	}
	if counts["ecn"] < 3 || counts["frag-off"] != 0 {
		t.Errorf("outer headers of 3 ECT(0) pings: %d with ECT(0) (want 3 or more), %d with DF (want 0)", counts["ecn"], counts["frag-off"])
	}
	// Without a's decapsulation program, b's device's packets reach a's
	// stack, where vx0 is down: nothing answers.
	if err := a.p.DropSegment(tunSeg); err != nil {
		t.Fatal(err)
	}
	a.tunnel(t, b, b.addr)
	if err := ping(a.sb, b.sbAddr); err == nil {
		t.Fatal("ping answered with a's vx0 down and no decapsulation program")
	}
}
