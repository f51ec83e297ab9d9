package nlutil

import (
	"bytes"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	tns "github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/testutil"
)

// attrs parses the attributes that follow a 16-byte ifinfomsg in b.
func attrs(t *testing.T, b []byte) (*nl.IfInfomsg, map[uint16][]byte) {
	t.Helper()
	if len(b) < unix.SizeofIfInfomsg {
		t.Fatalf("message of %d bytes", len(b))
	}
	msg := nl.DeserializeIfInfomsg(b)
	return msg, nested(t, b[unix.SizeofIfInfomsg:])
}

// nested parses a run of attributes by type (the nested flag cleared).
func nested(t *testing.T, b []byte) map[uint16][]byte {
	t.Helper()
	as, err := nl.ParseRouteAttr(b)
	if err != nil {
		t.Fatal(err)
	}
	m := map[uint16][]byte{}
	for _, a := range as {
		m[a.Attr.Type&^unix.NLA_F_NESTED] = a.Value
	}
	return m
}

func serialize(ds []nl.NetlinkRequestData) []byte {
	var b []byte
	for _, d := range ds {
		b = append(b, d.Serialize()...)
	}
	return b
}

func u32(b []byte) uint32 { return nl.NativeEndian().Uint32(b) }

// TestLinkOf reads a peer's index from an echoed RTM_NEWLINK body, and
// only from one about the link asked for.
func TestLinkOf(t *testing.T) {
	body := func(name string, link uint32, withLink bool) []byte {
		ds := []nl.NetlinkRequestData{nl.NewIfInfomsg(unix.AF_UNSPEC), nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name))}
		if withLink {
			ds = append(ds, nl.NewRtAttr(unix.IFLA_LINK, nl.Uint32Attr(link)))
		}
		return serialize(ds)
	}
	for _, tc := range []struct {
		name string
		m    []byte
		want int
	}{
		{"the link", body("vth1", 7, true), 7},
		{"another link", body("vth2", 7, true), 0},
		{"a longer name", body("vth10", 7, true), 0},
		{"no IFLA_LINK", body("vth1", 0, false), 0},
		{"short", []byte{1, 2, 3}, 0},
	} {
		if got := linkOf(tc.m, "vth1"); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestVethPairMessage checks the attributes of the one-request veth pair:
// each optional one present exactly when asked for.
func TestVethPairMessage(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0, 2}
	for _, tc := range []struct {
		name string
		p    VethPair
	}{
		{"all", VethPair{Name: "vth1", MTU: 1450, Master: 7, Peer: "eth0", PeerMAC: mac, PeerNS: 9, Dormant: true}},
		{"bare", VethPair{Name: "vth2", Peer: "eth1", PeerNS: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, top := attrs(t, serialize(vethPairMessage(tc.p)))
			if got := string(top[unix.IFLA_IFNAME]); got != tc.p.Name+"\x00" {
				t.Errorf("name %q", got)
			}
			if v, ok := top[unix.IFLA_MTU]; ok != (tc.p.MTU > 0) || ok && u32(v) != uint32(tc.p.MTU) {
				t.Errorf("mtu %v (present %v)", v, ok)
			}
			if v, ok := top[unix.IFLA_MASTER]; ok != (tc.p.Master > 0) || ok && u32(v) != uint32(tc.p.Master) {
				t.Errorf("master %v (present %v)", v, ok)
			}
			if v, ok := top[unix.IFLA_OPERSTATE]; ok != tc.p.Dormant || ok && (len(v) != 1 || v[0] != uint8(netlink.OperDormant)) {
				t.Errorf("operstate %v (present %v), want IF_OPER_DORMANT (5) only when asked", v, ok)
			}
			info := nested(t, top[unix.IFLA_LINKINFO])
			if string(info[nl.IFLA_INFO_KIND]) != "veth" {
				t.Errorf("kind %q", info[nl.IFLA_INFO_KIND])
			}
			peerMsg, peer := attrs(t, nested(t, info[nl.IFLA_INFO_DATA])[nl.VETH_INFO_PEER])
			if peerMsg.Flags != 0 || peerMsg.Change != 0 {
				t.Errorf("peer flags %#x change %#x: a veth peer is born down", peerMsg.Flags, peerMsg.Change)
			}
			if got := string(peer[unix.IFLA_IFNAME]); got != tc.p.Peer+"\x00" {
				t.Errorf("peer name %q", got)
			}
			if v, ok := peer[unix.IFLA_ADDRESS]; ok != (tc.p.PeerMAC != nil) || !bytes.Equal(v, tc.p.PeerMAC) {
				t.Errorf("peer address %v", v)
			}
			if v, ok := peer[unix.IFLA_NET_NS_FD]; ok != (tc.p.PeerNS >= 0) || ok && u32(v) != uint32(tc.p.PeerNS) {
				t.Errorf("peer namespace %v (present %v)", v, ok)
			}
		})
	}
}

// TestLinkChangeMessage checks each change's attribute, and that nothing
// is sent for a change not asked for.
func TestLinkChangeMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		ch   LinkChange
	}{
		{"all", LinkChange{Port: &PortFlags{Hairpin: true, Isolated: true}, Alias: "tether:ab", Up: true, AddrGenModeNone: true}},
		{"port only", LinkChange{Port: &PortFlags{Hairpin: true}}},
		{"nothing", LinkChange{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, top := attrs(t, serialize(linkChangeMessage("vth9", tc.ch)))
			if up := msg.Flags&unix.IFF_UP != 0 && msg.Change&unix.IFF_UP != 0; up != tc.ch.Up || msg.Flags&^unix.IFF_UP != 0 {
				t.Errorf("flags %#x change %#x, want up %v", msg.Flags, msg.Change, tc.ch.Up)
			}
			if string(top[unix.IFLA_IFNAME]) != "vth9\x00" {
				t.Errorf("name %q", top[unix.IFLA_IFNAME])
			}
			if v, ok := top[unix.IFLA_IFALIAS]; ok != (tc.ch.Alias != "") || string(v) != tc.ch.Alias {
				t.Errorf("alias %q (present %v)", v, ok)
			}
			af, ok := top[unix.IFLA_AF_SPEC]
			if ok != tc.ch.AddrGenModeNone {
				t.Errorf("af spec present %v", ok)
			}
			if ok {
				if m := nested(t, nested(t, af)[unix.AF_INET6])[unix.IFLA_INET6_ADDR_GEN_MODE]; !bytes.Equal(m, []byte{addrGenModeNone}) {
					t.Errorf("addrgenmode %v", m)
				}
			}
			li, ok := top[unix.IFLA_LINKINFO]
			if ok != (tc.ch.Port != nil) {
				t.Fatalf("linkinfo present %v", ok)
			}
			if !ok {
				return
			}
			info := nested(t, li)
			if string(info[nl.IFLA_INFO_SLAVE_KIND]) != "bridge" {
				t.Errorf("slave kind %q", info[nl.IFLA_INFO_SLAVE_KIND])
			}
			port := nested(t, info[nl.IFLA_INFO_SLAVE_DATA])
			for typ, want := range map[uint16]bool{nl.IFLA_BRPORT_MODE: tc.ch.Port.Hairpin, nl.IFLA_BRPORT_ISOLATED: tc.ch.Port.Isolated} {
				if v := port[typ]; len(v) != 1 || (v[0] == 1) != want {
					t.Errorf("port attribute %d = %v, want %v", typ, v, want)
				}
			}
		})
	}
}

// kernelRig is a "host" namespace holding a bridge br0 (down) and a
// "sandbox" namespace, both the test's own, with a handle in the host and a
// descriptor of the sandbox's namespace.
type kernelRig struct {
	host, sand         string // namespace names
	hostPath, sandPath string
	h                  *netlink.Handle // in the host namespace
	br                 netlink.Link
	sandNS             vnetns.NsHandle
}

func newKernelRig(t *testing.T, prefix string) *kernelRig {
	t.Helper()
	testutil.RequireRoot(t)
	r := &kernelRig{host: testutil.NetNS(t, "tth-"+prefix+"-h"), sand: testutil.NetNS(t, "tth-"+prefix+"-s")}
	r.hostPath, r.sandPath = "/run/netns/"+r.host, "/run/netns/"+r.sand
	testutil.Must(t, "ip", "-n", r.host, "link", "add", "br0", "type", "bridge")
	var err error
	if r.h, err = tns.NewHandle(r.hostPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.h.Close)
	if r.br, err = r.h.LinkByName("br0"); err != nil {
		t.Fatal(err)
	}
	if r.sandNS, err = tns.Open(r.sandPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.sandNS.Close() })
	return r
}

// TestConnOnKernel drives a Conn in a test namespace: a pair born
// enslaved with its peer in another namespace, then finished in one
// request; and the errors that leave nothing behind.
func TestConnOnKernel(t *testing.T) {
	r := newKernelRig(t, "cn")
	host, hostPath, h, br, sandNS := r.host, r.hostPath, r.h, r.br, r.sandNS
	sh, err := tns.NewHandle(r.sandPath)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	pool := NewConnPool(hostPath)
	c, err := pool.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Put(c)

	mac := net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0, 9}
	p := VethPair{Name: "vthc0", MTU: 1400, Master: br.Attrs().Index, Peer: "eth0", PeerMAC: mac, PeerNS: int(sandNS)}
	echoed, err := c.AddVethPair(p)
	if err != nil {
		t.Fatal(err)
	}
	hostEnd, err := h.LinkByName("vthc0")
	if err != nil {
		t.Fatal(err)
	}
	a := hostEnd.Attrs()
	if a.MasterIndex != br.Attrs().Index || a.MTU != 1400 || a.Flags&net.FlagUp != 0 {
		t.Errorf("host end: master %d mtu %d flags %v; want master %d, mtu 1400, down", a.MasterIndex, a.MTU, a.Flags, br.Attrs().Index)
	}
	end, err := sh.LinkByName("eth0")
	if err != nil {
		t.Fatalf("sandbox end: %v", err)
	}
	if e := end.Attrs(); e.MTU != 1400 || !bytes.Equal(e.HardwareAddr, mac) || e.Flags&net.FlagUp != 0 || e.ParentIndex != a.Index {
		t.Errorf("sandbox end: mtu %d mac %v flags %v peer %d", e.MTU, e.HardwareAddr, e.Flags, e.ParentIndex)
	}
	// This kernel (6.18) echoes the new link: the sandbox end's index
	// comes back with the creation.
	if echoed != end.Attrs().Index {
		t.Errorf("AddVethPair gave the peer's index as %d; it is %d", echoed, end.Attrs().Index)
	}

	ch := LinkChange{Port: &PortFlags{Hairpin: true, Isolated: true}, Alias: "tether:c0", Up: true, AddrGenModeNone: true}
	if err := c.ChangeLink("vthc0", ch); err != nil {
		t.Fatal(err)
	}
	hostEnd, err = h.LinkByName("vthc0")
	if err != nil {
		t.Fatal(err)
	}
	if a := hostEnd.Attrs(); a.Alias != "tether:c0" || a.Flags&net.FlagUp == 0 {
		t.Errorf("after the change: alias %q flags %v", a.Alias, a.Flags)
	}
	pi, err := h.LinkGetProtinfo(hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	if !pi.Hairpin || !pi.Isolated {
		t.Errorf("port flags: hairpin %v isolated %v", pi.Hairpin, pi.Isolated)
	}
	var mode []byte
	if err := tns.Do(hostPath, func() (err error) {
		mode, err = os.ReadFile("/proc/sys/net/ipv6/conf/vthc0/addr_gen_mode")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(mode)) != "1" {
		t.Errorf("addr_gen_mode %q, want 1 (none)", mode)
	}
	if err := c.ChangeLink("vthc0", LinkChange{Port: &PortFlags{Hairpin: false, Isolated: false}}); err != nil {
		t.Fatal(err)
	}
	if pi, err := h.LinkGetProtinfo(hostEnd); err != nil || pi.Hairpin || pi.Isolated {
		t.Errorf("port flags cleared: %+v, %v", pi, err)
	}

	// Errors: each fails naming its link, and leaves no link behind.
	before := linkNames(t, h)
	for _, tc := range []struct {
		name string
		run  func() error
		want error
	}{
		{"host name taken", func() error {
			_, err := c.AddVethPair(VethPair{Name: "vthc0", Peer: "eth5", PeerNS: int(sandNS)})
			return err
		}, unix.EEXIST},
		{"no such master", func() error {
			_, err := c.AddVethPair(VethPair{Name: "vthc1", Master: 100000, Peer: "eth6", PeerNS: -1})
			return err
		}, unix.EINVAL},
		{"no such link", func() error { return c.ChangeLink("vthnone", LinkChange{Up: true}) }, unix.ENODEV},
		{"port flags off a bridge", func() error {
			testutil.Must(t, "ip", "-n", host, "link", "add", "lone", "type", "veth", "peer", "name", "lonep")
			return c.ChangeLink("lone", LinkChange{Port: &PortFlags{Hairpin: true}})
		}, unix.EOPNOTSUPP},
		{"no names", func() error { _, err := c.AddVethPair(VethPair{PeerNS: -1}); return err }, nil},
	} {
		err := tc.run()
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := c.DeleteLink("lone"); err != nil {
		t.Fatal(err)
	}
	if after := linkNames(t, h); after != before {
		t.Errorf("links after the failures:\n%s\nbefore:\n%s", after, before)
	}
	if err := c.DeleteLink("vthc0"); err != nil {
		t.Fatal(err)
	}
	if _, err := sh.LinkByName("eth0"); err == nil {
		t.Error("deleting the host end left the sandbox end")
	}
	if err := c.DeleteLink("vthc0"); !errors.Is(err, unix.ENODEV) {
		t.Errorf("deleting a deleted link: %v", err)
	}
}

// TestDormantPort checks, on the kernel, what the bridge driver relies on
// when it creates a host end dormant (VethPair.Dormant): brought up while
// its sandbox end is down, the port is not enabled (without the attribute
// the kernel, reading the new link's operational state as "unknown",
// enables it there and then, scanning every port of the bridge, though no
// frame can pass: this test then fails, in 4 of 5 runs here, the others
// being those where the watcher's batch ran between create and up); once
// the sandbox end is up, the kernel's link watcher enables it.
func TestDormantPort(t *testing.T) {
	r := newKernelRig(t, "dp")
	sand, br, sandNS := r.sand, r.br, r.sandNS
	testutil.Must(t, "ip", "-n", r.host, "link", "set", "br0", "up")
	c, err := OpenConn(r.hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := testutil.NewPortWatcher(r.hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	state := func() int {
		st, err := w.State("vthd0")
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	if _, err := c.AddVethPair(VethPair{Name: "vthd0", Master: br.Attrs().Index, Peer: "eth0", PeerNS: int(sandNS), Dormant: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.ChangeLink("vthd0", LinkChange{Up: true}); err != nil {
		t.Fatal(err)
	}
	if st := state(); st != testutil.BridgePortDisabled {
		t.Errorf("a dormant port up without carrier is in state %d, want %d (disabled)", st, testutil.BridgePortDisabled)
	}
	testutil.Must(t, "ip", "-n", sand, "link", "set", "eth0", "up")
	var st int
	for range 1000 { // ~10 s: the link watcher runs within milliseconds
		if st = state(); st == testutil.BridgePortForwarding {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st != testutil.BridgePortForwarding {
		t.Errorf("with both ends up the port stayed in state %d, want %d (forwarding)", st, testutil.BridgePortForwarding)
	}
}

func linkNames(t *testing.T, h *netlink.Handle) string {
	t.Helper()
	links, err := Dump("links", h.LinkList)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return strings.Join(names, " ")
}
