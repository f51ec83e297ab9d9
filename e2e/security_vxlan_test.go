package e2e

// VXLAN injection: VXLAN has no authentication, so any host that can send
// UDP to a node's port 4789 can put a frame on an overlay network's bridge
// by guessing the VNI. A node takes VXLAN only from the underlay addresses
// of live cluster members (table ip tether_vxlan, set "nodes").

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/testutil"
)

// vxlanScript sends one hand-built VXLAN packet over UDP: to VTEP:4789, an
// 8-byte VXLAN header (flag I, the VNI), then an inner Ethernet frame
// (DSTMAC, SRCMAC, IPv4) holding an IPv4 header (SRCIP -> DSTIP, checksum
// computed) and a UDP datagram to port 9999 (checksum 0) carrying PAYLOAD.
// argv: VTEP VNI DSTMAC SRCMAC SRCIP DSTIP PAYLOAD
const vxlanScript = `
import socket, struct, sys
vtep, vni, dmac, smac, sip, dip, payload = sys.argv[1:8]
mac = lambda m: bytes.fromhex(m.replace(':', ''))
def csum(b):
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
udp = struct.pack('!HHHH', 5555, 9999, 8 + len(payload), 0) + payload.encode()
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(sip), socket.inet_aton(dip))
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
inner = mac(dmac) + mac(smac) + b'\x08\x00' + ip + udp
hdr = struct.pack('!II', 0x08 << 24, int(vni) << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(hdr + inner, (vtep, 4789))
`

// udpListener is a python3 UDP server on 0.0.0.0:9999 in a namespace; it
// prints every payload it receives.
type udpListener struct {
	mu  sync.Mutex
	out strings.Builder
}

func (l *udpListener) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.Write(p)
}

func (l *udpListener) got(payload string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.out.String(), payload+"\n")
}

func listenUDP(t *testing.T, netnsPath string) *udpListener {
	t.Helper()
	l := &udpListener{}
	cmd := exec.Command("nsenter", "--net="+netnsPath, "python3", "-u", "-c",
		"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',9999))\nprint('ready',flush=True)\n"+
			"while True: print(s.recv(2048).decode(),flush=True)")
	cmd.Stdout, cmd.Stderr = l, l
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, "UDP listener ready", 5*time.Second, func() bool { return l.got("ready") })
	return l
}

// injectVXLAN sends vxlanScript's packet from namespace ns.
func injectVXLAN(t *testing.T, ns string, args ...string) {
	t.Helper()
	out, err := testutil.InNS(ns, "python3", append([]string{"-c", vxlanScript}, args...)...)
	if err != nil {
		t.Fatalf("send VXLAN from %s: %v\n%s", ns, err, out)
	}
}

// arrives sends a packet with a unique payload and reports whether l got it
// within 1.5 s.
func arrives(l *udpListener, send func(payload string)) bool {
	payload := "p-" + testutil.Suffix()
	send(payload)
	for range 75 {
		if l.got(payload) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestSecurityVXLANInjection(t *testing.T) {
	// Host 1 restarts at the end: under nsenter and ip netns exec.
	for _, mode := range []testutil.StartMode{testutil.StartNsenter, testutil.StartIPNetns} {
		t.Run(string(mode), func(t *testing.T) { vxlanInjection(t, mode) })
	}
}

func vxlanInjection(t *testing.T, mode testutil.StartMode) {
	c := testutil.StartClusterIn(t, "etcd", 2, 3*time.Second, mode)
	h1, h2 := c.D[0], c.D[1]
	const vni = "4193"
	h1.MustTether("network", "create", "-d", "overlay", "--subnet", "10.192.0.0/24", "-o", "com.docker.network.driver.overlay.vxlanid_list="+vni, "vx")
	waitFor(t, "network on host 2", 5*time.Second, func() bool { return netID(h2, "vx") != "" })
	runDetached(t, h1, "src", "--network", "vx", "--", "sleep", "600")
	runDetached(t, h2, "dst", "--network", "vx", "--", "sleep", "600")
	waitFor(t, "src reaches dst", 5*time.Second, func() bool { return ping(h1, "src", "dst") })
	dstIP, dstMAC := ip(t, h2, "dst", "vx"), sandbox(t, h2, "dst").Networks["vx"].MacAddress
	l := listenUDP(t, procNetNS(t, h2, "dst"))
	// inner frame: from an address of the subnet that no sandbox has
	frame := func(payload string) []string {
		return []string{c.Hosts[1].Addr, vni, dstMAC, "02:42:0a:c0:00:42", "10.192.0.66", dstIP, payload}
	}

	// Members' traffic: a sandbox's datagram, and the same hand-built
	// VXLAN packet from a member's underlay address, both arrive.
	if !arrives(l, func(p string) {
		h1.MustTether("exec", "src", "--", "python3", "-c",
			fmt.Sprintf("import socket; socket.socket(2,2).sendto(b'%s', ('%s', 9999))", p, dstIP))
	}) {
		t.Fatal("a datagram from a sandbox on a member host did not arrive")
	}
	if !arrives(l, func(p string) { injectVXLAN(t, c.Hosts[0].NS, frame(p)...) }) {
		t.Fatal("control: the hand-built VXLAN packet from a member host did not arrive (the attack proves nothing)")
	}

	// The attack: the same packet from a host on the underlay that is no
	// cluster member.
	rogue := c.U.Join("rogue")
	if arrives(l, func(p string) { injectVXLAN(t, rogue.NS, frame(p)...) }) {
		t.Errorf("a VXLAN packet from %s, not a cluster member, reached sandbox dst", rogue.Addr)
	}
	if out, err := testutil.InNS(c.Hosts[1].NS, "nft", "list", "table", "ip", "tether_vxlan"); err == nil {
		t.Logf("host 2:\n%s", out)
	}
	// A flushed ruleset takes the filter with it; the firewall watcher puts
	// it back (with table ip tether), members and all.
	testutil.Must(t, "ip", "netns", "exec", c.Hosts[1].NS, "nft", "flush", "ruleset")
	if !waitNodes(t, c.Hosts[1].NS, c.Hosts[0].Addr, true) {
		t.Errorf("table ip tether_vxlan not back on host 2 with host 1 (%s) in it after nft flush ruleset", c.Hosts[0].Addr)
	}
	if arrives(l, func(p string) { injectVXLAN(t, rogue.NS, frame(p)...) }) {
		t.Errorf("after nft flush ruleset, a VXLAN packet from %s, not a cluster member, reached sandbox dst", rogue.Addr)
	}

	// A member that leaves (its lease expires) is a stranger again.
	if err := h1.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "host 2 drops host 1's endpoints", 3*c.TTL, func() bool {
		out, _ := h2.Tether("exec", "dst", "--", "getent", "hosts", "src")
		return strings.TrimSpace(out) == ""
	})
	if !waitNodes(t, c.Hosts[1].NS, c.Hosts[0].Addr, false) {
		t.Errorf("host 1 (%s) is still in host 2's VXLAN node set after its lease expired", c.Hosts[0].Addr)
	}
	if arrives(l, func(p string) { injectVXLAN(t, c.Hosts[0].NS, frame(p)...) }) {
		t.Errorf("a VXLAN packet from %s, a node whose lease expired, reached sandbox dst", c.Hosts[0].Addr)
	}
	// ... and a member again when it comes back.
	if err := h1.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "src reaches dst again", 10*time.Second, func() bool { return ping(h1, "src", "dst") })
	if !waitNodes(t, c.Hosts[1].NS, c.Hosts[0].Addr, true) {
		t.Errorf("host 1 (%s) is not in host 2's VXLAN node set after it came back", c.Hosts[0].Addr)
	}
}

// waitNodes waits up to 2 s for addr to be in (or out of) the set of live
// nodes in ns's table ip tether_vxlan, and reports whether it got there.
func waitNodes(t *testing.T, ns, addr string, in bool) bool {
	t.Helper()
	for range 100 {
		out, err := testutil.InNS(ns, "nft", "list", "set", "ip", "tether_vxlan", "nodes")
		if err == nil && strings.Contains(out, addr) == in {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
